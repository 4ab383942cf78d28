-- Per-digit partial credit: the share of answer digits (aligned from the ones place) that match
-- the counterfactual label, per run, target, layer, position, component and head. 1.0 means the
-- whole label.
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets (unset: all labelled)
-- param component VARCHAR   only this component: resid, attn, mlp or heads (unset: every one)
WITH scored AS (
    SELECT
        o.run_id,
        l.target,
        o.layer,
        o.position,
        o.component,
        o.head,
        l.label::VARCHAR AS want,
        coalesce(o.answer::VARCHAR, '') AS got
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
    WHERE (getvariable('run_id') IS NULL OR o.run_id = getvariable('run_id'))
      AND (getvariable('targets') IS NULL OR list_contains(getvariable('targets'), l.target))
      AND (getvariable('component') IS NULL OR o.component = getvariable('component'))
)
SELECT
    run_id,
    target,
    layer,
    position,
    component,
    head,
    avg(
        list_sum(
            list_transform(
                range(1, length(want) + 1),
                i -> CASE WHEN i <= length(got)
                          AND substr(got, length(got) - i + 1, 1) = substr(want, length(want) - i + 1, 1)
                     THEN 1 ELSE 0 END
            )
        ) / length(want)
    ) AS digit_credit,
    count(*) AS n
FROM scored
GROUP BY run_id, target, layer, position, component, head
ORDER BY run_id, target, list_position(['resid', 'attn', 'mlp', 'heads'], component), layer, head, position;
