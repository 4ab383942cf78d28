-- Interchange-intervention accuracy (IIA) per run, target, layer, position, component and head
-- (component resid, attn, mlp or heads; head NULL but for heads).
-- A cell's IIA is the share of examples whose patched answer equals the counterfactual label.
-- (The computation is the catalog's iia_cells macro, created by migration 0002.)
-- `baseline` is the IIA of a patch that changes nothing (label = base answer): a cell
-- localizes a variable only where its IIA rises above it.
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets, e.g. ['C_1', 'raw_output'] (unset: all labelled)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
SELECT *
FROM iia_cells(getvariable('run_id'), getvariable('targets'))
WHERE getvariable('component') IS NULL OR component = getvariable('component')
ORDER BY run_id, target, list_position(['resid', 'attn', 'mlp', 'heads'], component), layer, head, position;
