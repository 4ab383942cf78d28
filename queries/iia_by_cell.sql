-- Interchange-intervention accuracy (IIA) per run, target, layer and position.
-- A cell's IIA is the share of examples whose patched answer equals the counterfactual label.
-- (The computation is the catalog's iia_cells macro, created by migration 0002.)
-- `baseline` is the IIA of a patch that changes nothing (label = base answer): a cell
-- localizes a variable only where its IIA rises above it.
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets, e.g. ['C_1', 'raw_output'] (unset: all labelled)
SELECT *
FROM iia_cells(getvariable('run_id'), getvariable('targets'))
ORDER BY run_id, target, layer, position;
