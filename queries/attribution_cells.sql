-- Cells ranked by attribution patching's mean estimated effect, per run, target and component
-- (runs made with --method attribution). A cell's estimate for one example is
-- (a_cf - a_base) . dM/da, where M = logit(label's digit token) - logit(base answer's digit
-- token) at the first answer step where the target's label and the base answer differ: a
-- first-order guess of how much patching the cell moves the answer toward the label.
-- `mean_estimate` averages it over the examples that have a metric for the target (`n`);
-- examples whose label equals the base answer have none (see attribution_metrics).
-- `rank` 1 is the largest mean estimate of its run, target and component.
-- param run_id INTEGER      only this run (unset: every attribution run)
-- param targets VARCHAR[]   only these targets (unset: every one the run scored)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
-- param top INTEGER         cells per run, target and component (unset: all)
SELECT e.run_id, e.target, e.component, e.layer, e.head, e.position, p.name AS position_name,
       p.token_text AS position_label,
       avg(e.estimate) AS mean_estimate, avg(abs(e.estimate)) AS mean_abs_estimate,
       count(*) AS n,
       row_number() OVER (
           PARTITION BY e.run_id, e.target, e.component
           ORDER BY avg(e.estimate) DESC, e.layer, e.head, e.position
       ) AS rank
FROM attribution_estimates AS e
LEFT JOIN run_positions AS p ON p.run_id = e.run_id AND p.position = e.position
WHERE (getvariable('run_id') IS NULL OR e.run_id = getvariable('run_id'))
  AND (getvariable('targets') IS NULL OR list_contains(getvariable('targets'), e.target))
  AND (getvariable('component') IS NULL OR e.component = getvariable('component'))
GROUP BY e.run_id, e.target, e.component, e.layer, e.head, e.position, p.name, p.token_text
QUALIFY getvariable('top') IS NULL OR rank <= getvariable('top')
ORDER BY e.run_id, e.target, list_position(['resid', 'attn', 'mlp', 'heads'], e.component), rank;
