-- Interchange-intervention accuracy (IIA) per run, target, layer and position.
-- A cell's IIA is the share of examples whose patched answer equals the counterfactual label.
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets, e.g. ['C_1', 'raw_output'] (unset: all labelled)
SELECT
    o.run_id,
    m.name AS model,
    d.num_digits,
    l.target,
    o.layer,
    o.position,
    p.name AS position_name,
    p.token_text AS position_label,
    avg(CASE WHEN o.answer = l.label THEN 1.0 ELSE 0.0 END) AS iia,
    count(*) AS n
FROM patched_outputs AS o
JOIN runs AS r ON r.id = o.run_id
JOIN models AS m ON m.id = r.model_id
JOIN datasets AS d ON d.id = r.dataset_id
JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
JOIN run_positions AS p ON p.run_id = o.run_id AND p.position = o.position
WHERE (getvariable('run_id') IS NULL OR o.run_id = getvariable('run_id'))
  AND (getvariable('targets') IS NULL OR list_contains(getvariable('targets'), l.target))
GROUP BY ALL
ORDER BY o.run_id, l.target, o.layer, o.position;
