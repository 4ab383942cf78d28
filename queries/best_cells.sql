-- The best cells per run, target and component: where the variable lives, by IIA (ties: earlier
-- layer, then lower head).
-- Compare `iia` with `baseline` (the IIA of a patch that changes nothing).
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets (unset: all labelled)
-- param top INTEGER         cells per run, target and component (unset: 1)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
SELECT *
FROM iia_cells(getvariable('run_id'), getvariable('targets'))
WHERE getvariable('component') IS NULL OR component = getvariable('component')
QUALIFY row_number() OVER (
    PARTITION BY run_id, target, component ORDER BY iia DESC, layer, head, position
) <= coalesce(getvariable('top'), 1)
ORDER BY run_id, target, list_position(['resid', 'attn', 'mlp', 'heads'], component), iia DESC, layer, head, position;
