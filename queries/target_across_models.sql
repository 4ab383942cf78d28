-- One target across models and digit widths: its best cell and IIA in every run.
-- param target VARCHAR      the target variable, e.g. 'C_1' (required)
SELECT
    model,
    num_digits,
    run_id,
    arg_max(layer, iia) AS best_layer,
    arg_max(position, iia) AS best_position,
    arg_max(position_label, iia) AS best_position_label,
    max(iia) AS best_iia,
    avg(iia) AS mean_iia,
    any_value(baseline) AS baseline,
    max(n) AS examples
FROM iia_cells(NULL, [getvariable('target')])
GROUP BY ALL
ORDER BY model, num_digits, run_id;
