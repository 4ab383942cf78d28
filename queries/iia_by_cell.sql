-- Interchange-intervention accuracy (IIA) per run, target, layer, position, component and head
-- (component resid, attn, mlp or heads; head NULL but for heads).
-- A cell's IIA is the share of examples whose patched answer equals the counterfactual label
-- (hits / n), with its 95% Wilson score interval iia_low .. iia_high.
-- (The computation is the catalog's iia_cells macro, created by the migrations.)
-- `baseline` is the IIA of a patch that changes nothing (label = base answer): a cell
-- localizes a variable only where its interval lies above it (iia_low > baseline).
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets, e.g. ['C_1', 'raw_output'] (unset: all labelled)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
SELECT *
FROM iia_cells(
    getvariable('run_id'), getvariable('targets'),
    informative := coalesce(getvariable('informative'), false)
)
WHERE getvariable('component') IS NULL OR component = getvariable('component')
ORDER BY run_id, target, list_position(['resid', 'attn', 'mlp', 'heads'], component), layer, head,
    position;
