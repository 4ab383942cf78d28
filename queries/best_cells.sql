-- The best cells per run and target: where the variable lives, by IIA (ties: earlier layer).
-- Compare `iia` with `baseline` (the IIA of a patch that changes nothing): `localized` is true
-- where the cell's 95% Wilson interval lies above it (iia_low > baseline). Localized cells rank
-- first, so a target whose first row has localized = false is localized nowhere.
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets (unset: all labelled)
-- param top INTEGER         cells per run and target (unset: 1)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
SELECT *, coalesce(iia_low > baseline, false) AS localized
FROM iia_cells(
    getvariable('run_id'), getvariable('targets'),
    informative := coalesce(getvariable('informative'), false)
)
QUALIFY row_number() OVER (
    PARTITION BY run_id, target
    ORDER BY coalesce(iia_low > baseline, false) DESC, iia DESC NULLS LAST, layer, position
) <= coalesce(getvariable('top'), 1)
ORDER BY run_id, target, localized DESC, iia DESC NULLS LAST, layer, position;
