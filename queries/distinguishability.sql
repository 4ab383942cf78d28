-- How often two targets predict different answers on a dataset (labels must be stored, e.g.
-- by `addpatch score --targets A,B`): a pair a run cannot tell apart is no evidence either way.
-- param dataset_id INTEGER  the dataset (required)
-- param target_a VARCHAR    first target (required)
-- param target_b VARCHAR    second target (unset: compare with the base answer)
SELECT
    a.dataset_id,
    getvariable('target_a') AS target_a,
    coalesce(getvariable('target_b'), '(base answer)') AS target_b,
    count(*) AS examples,
    count(*) FILTER (WHERE a.label <> coalesce(b.label, e.base_sum)) AS differ,
    avg(CASE WHEN a.label <> coalesce(b.label, e.base_sum) THEN 1.0 ELSE 0.0 END) AS share_differ
FROM labels AS a
JOIN examples AS e ON e.dataset_id = a.dataset_id AND e.example_id = a.example_id
LEFT JOIN labels AS b
    ON b.dataset_id = a.dataset_id AND b.example_id = a.example_id AND b.target = getvariable('target_b')
WHERE a.dataset_id = getvariable('dataset_id')
  AND a.target = getvariable('target_a')
  AND (getvariable('target_b') IS NULL OR b.label IS NOT NULL)
GROUP BY ALL;
