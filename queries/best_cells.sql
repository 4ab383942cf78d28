-- The best cells per run and target: where the variable lives, by IIA (ties: earlier layer).
-- Compare `iia` with `baseline` (the IIA of a patch that changes nothing).
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets (unset: all labelled)
-- param top INTEGER         cells per run and target (unset: 1)
SELECT *
FROM iia_cells(getvariable('run_id'), getvariable('targets'))
QUALIFY row_number() OVER (
    PARTITION BY run_id, target ORDER BY iia DESC, layer, position
) <= coalesce(getvariable('top'), 1)
ORDER BY run_id, target, iia DESC, layer, position;
