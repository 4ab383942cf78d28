-- The best cells per run, target and component: where the variable lives, by IIA (ties: earlier
-- layer, then lower head). Compare `iia` with `baseline` (the IIA of a patch that changes
-- nothing): `localized` is true where the cell's 95% Wilson interval lies above it
-- (iia_low > baseline). Localized cells rank first, so a target whose first row has
-- localized = false is localized nowhere (in that component).
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets (unset: all labelled)
-- param top INTEGER         cells per run, target and component (unset: 1)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
SELECT *, coalesce(iia_low > baseline, false) AS localized
FROM iia_cells(
    getvariable('run_id'), getvariable('targets'),
    informative := coalesce(getvariable('informative'), false)
)
WHERE (getvariable('component') IS NULL OR component = getvariable('component'))
  -- a DAS run's cells count for the target their subspace was trained for (not its control)
  AND (method = 'patch' OR (trained_for = target AND control IS NULL))
QUALIFY row_number() OVER (
    PARTITION BY run_id, target, component
    ORDER BY coalesce(iia_low > baseline, false) DESC, iia DESC NULLS LAST, layer, head, position
) <= coalesce(getvariable('top'), 1)
ORDER BY run_id, target, list_position(['resid', 'attn', 'mlp', 'heads'], component),
    localized DESC, iia DESC NULLS LAST, layer, head, position;
