-- One target across models and digit widths: its best cell and IIA in every run.
-- param target VARCHAR      the target variable, e.g. 'C_1' (required)
WITH cells AS (
    SELECT
        o.run_id,
        m.name AS model,
        d.num_digits,
        o.layer,
        o.position,
        p.token_text AS position_label,
        avg(CASE WHEN o.answer = l.label THEN 1.0 ELSE 0.0 END) AS iia,
        count(*) AS n
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    JOIN models AS m ON m.id = r.model_id
    JOIN datasets AS d ON d.id = r.dataset_id
    JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
    JOIN run_positions AS p ON p.run_id = o.run_id AND p.position = o.position
    WHERE l.target = getvariable('target')
    GROUP BY ALL
)
SELECT
    model,
    num_digits,
    run_id,
    arg_max(layer, iia) AS best_layer,
    arg_max(position, iia) AS best_position,
    arg_max(position_label, iia) AS best_position_label,
    max(iia) AS best_iia,
    avg(iia) AS mean_iia,
    max(n) AS examples
FROM cells
GROUP BY ALL
ORDER BY model, num_digits, run_id;
