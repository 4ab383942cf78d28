-- Whole-vector patching against trained subspaces (DAS), cell by cell: for each model, dataset,
-- target, layer and position name, the full-vector IIA and the best held-out IIA of a subspace
-- trained for that target (its rank k), each with its 95% interval, the baseline, and whether
-- each localizes the variable (interval above its baseline: over the whole-vector run's
-- examples, and over the DAS run's held-out ones). The shuffled-label control of
-- that rank (when trained) shows what a subspace of that size fits without the variable.
-- Cells are matched by position name, so runs with different position lists still compare.
-- param targets VARCHAR[]   only these targets, e.g. ['C_1', 'C_2'] (unset: every target)
-- param model VARCHAR       only this model name (unset: every model)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
WITH cells AS (
    SELECT c.*, r.dataset_id, coalesce(c.iia_low > c.baseline, false) AS localized
    FROM iia_cells(
        NULL, getvariable('targets'), informative := coalesce(getvariable('informative'), false)
    ) AS c
    JOIN runs AS r ON r.id = c.run_id
    WHERE c.component = 'resid'
      AND (getvariable('model') IS NULL OR c.model = getvariable('model'))
),
whole AS (
    SELECT model, dataset_id, target, layer, position_name,
           arg_max(iia, run_id) AS patch_iia, arg_max(iia_low, run_id) AS patch_low,
           arg_max(iia_high, run_id) AS patch_high, arg_max(localized, run_id) AS patch_localized,
           arg_max(run_id, run_id) AS patch_run, arg_max(baseline, run_id) AS baseline
    FROM cells WHERE method = 'patch'
    GROUP BY ALL
),
trained AS (
    SELECT model, dataset_id, target, layer, position_name,
           arg_max(k, iia) AS das_k, max(iia) AS das_iia, arg_max(iia_low, iia) AS das_low,
           arg_max(iia_high, iia) AS das_high, arg_max(localized, iia) AS das_localized,
           arg_max(run_id, iia) AS das_run, arg_max(n, iia) AS das_n,
           arg_max(baseline, iia) AS das_baseline
    FROM cells WHERE method = 'das' AND trained_for = target AND control IS NULL
    GROUP BY ALL
),
controls AS (
    SELECT model, dataset_id, target, layer, position_name, k, max(iia) AS control_iia
    FROM cells WHERE method = 'das' AND trained_for = target AND control IS NOT NULL
    GROUP BY ALL
)
SELECT
    t.model, d.name AS dataset, t.target, t.layer, t.position_name,
    w.patch_iia, w.patch_low, w.patch_high, w.patch_localized,
    t.das_k, t.das_iia, t.das_low, t.das_high, t.das_localized, t.das_n,
    c.control_iia, w.baseline AS patch_baseline, t.das_baseline, w.patch_run, t.das_run
FROM trained AS t
JOIN datasets AS d ON d.id = t.dataset_id
LEFT JOIN whole AS w USING (model, dataset_id, target, layer, position_name)
LEFT JOIN controls AS c
    ON c.model = t.model AND c.dataset_id = t.dataset_id AND c.target = t.target
   AND c.layer = t.layer AND c.position_name = t.position_name AND c.k = t.das_k
ORDER BY t.model, dataset, t.target, t.das_localized DESC, t.das_iia DESC, t.layer, t.position_name;
