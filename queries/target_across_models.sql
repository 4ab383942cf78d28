-- One target across models and digit widths: its best cell and IIA in every run (and component),
-- with the best cell's 95% Wilson interval (best_iia_low .. best_iia_high). The best cell is
-- ranked as in best_cells.sql (localized first, then IIA; ties: earlier layer, lower head, then
-- earlier position), so both queries name the same cell.
-- param target VARCHAR      the target variable, e.g. 'C_1' (required)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
WITH cells AS (
    SELECT *, coalesce(iia_low > baseline, false) AS localized
    FROM iia_cells(
        NULL, [getvariable('target')], informative := coalesce(getvariable('informative'), false)
    )
    WHERE getvariable('component') IS NULL OR component = getvariable('component')
),
ranked AS (
    SELECT *,
        row_number() OVER per_run_ranked AS rank,
        avg(iia) OVER per_run AS mean_iia,
        max(n) OVER per_run AS examples
    FROM cells
    WINDOW per_run AS (PARTITION BY run_id, component),
        per_run_ranked AS (
            PARTITION BY run_id, component
            ORDER BY localized DESC, iia DESC NULLS LAST, layer, head, position
        )
)
SELECT
    model,
    num_digits,
    run_id,
    component,
    layer AS best_layer,
    position AS best_position,
    position_label AS best_position_label,
    head AS best_head,
    iia AS best_iia,
    mean_iia,
    baseline,
    examples,
    iia_low AS best_iia_low,
    iia_high AS best_iia_high,
    localized
FROM ranked
WHERE rank = 1
ORDER BY model, num_digits, run_id, list_position(['resid', 'attn', 'mlp', 'heads'], component);
