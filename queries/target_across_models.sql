-- One target across models and digit widths: its best cell and IIA in every run (and component),
-- with the best cell's 95% Wilson interval (best_iia_low .. best_iia_high).
-- param target VARCHAR      the target variable, e.g. 'C_1' (required)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
SELECT
    model,
    num_digits,
    run_id,
    component,
    arg_max(layer, iia) AS best_layer,
    arg_max(position, iia) AS best_position,
    arg_max(position_label, iia) AS best_position_label,
    arg_max(head, iia) AS best_head,
    max(iia) AS best_iia,
    avg(iia) AS mean_iia,
    any_value(baseline) AS baseline,
    max(n) AS examples,
    arg_max(iia_low, iia) AS best_iia_low,
    arg_max(iia_high, iia) AS best_iia_high
FROM iia_cells(
    NULL, [getvariable('target')], informative := coalesce(getvariable('informative'), false)
)
WHERE getvariable('component') IS NULL OR component = getvariable('component')
GROUP BY model, num_digits, run_id, component
ORDER BY model, num_digits, run_id, list_position(['resid', 'attn', 'mlp', 'heads'], component);
