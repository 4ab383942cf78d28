-- Filtering keep rates: the share of generated pairs a model answers right on both prompts.
-- param model VARCHAR       only this model name (unset: every model)
SELECT
    m.name AS model,
    d.name AS dataset,
    d.kind,
    d.num_addends,
    d.num_digits,
    count(*) AS pairs,
    count(*) FILTER (WHERE f.base_correct) AS base_correct,
    count(*) FILTER (WHERE f.cf_correct) AS cf_correct,
    count(*) FILTER (WHERE f.base_correct AND f.cf_correct) AS kept,
    round(count(*) FILTER (WHERE f.base_correct AND f.cf_correct) / count(*), 4) AS keep_rate
FROM filter_results AS f
JOIN models AS m ON m.id = f.model_id
JOIN datasets AS d ON d.id = f.dataset_id
WHERE getvariable('model') IS NULL OR m.name = getvariable('model')
GROUP BY ALL
ORDER BY model, dataset;
