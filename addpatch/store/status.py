"""A summary of what a store holds."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from addpatch.store.store import Store


@dataclass
class StoreStatus:
    revision: str | None
    size_mb: float
    tables: dict[str, pl.DataFrame]


# A dataset's prompt settings in one column: its templates, and prefix/suffix/shots/chat/shot
# turns/answer prefix if set.
PROMPT_SQL = """concat_ws(' ',
    'template=' || coalesce(templates_json, to_json([template])),
    CASE WHEN coalesce(prompt_prefix, '') <> '' THEN 'prefix=' || to_json(prompt_prefix) END,
    CASE WHEN coalesce(prompt_suffix, '') <> '' THEN 'suffix=' || to_json(prompt_suffix) END,
    CASE WHEN coalesce(num_shots, 0) > 0 THEN 'shots=' || num_shots END,
    CASE WHEN coalesce(chat, false) THEN 'chat' END,
    CASE WHEN coalesce(shot_turns, false) THEN 'shots-as-turns' END,
    CASE WHEN coalesce(answer_prefix, '') <> '' THEN 'answer_prefix=' || to_json(answer_prefix) END
    ) AS prompt"""


def store_status(store: Store) -> StoreStatus:
    size = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
    with store.connect(read_only=True) as conn:
        tables = {
            "Models": conn.execute(
                "SELECT id, name, architecture, num_layers, left(weights_sha256, 12) AS weights FROM models ORDER BY id"
            ).pl(),
            "Datasets": conn.execute(
                f"SELECT id, name, kind, num_addends AS k, num_digits AS d, size, {PROMPT_SQL} "
                "FROM datasets ORDER BY id"
            ).pl(),
            "Runs": conn.execute(
                """SELECT r.id, m.name AS model, d.name AS dataset, r.status, r.num_examples AS examples,
                          coalesce(json_extract_string(r.provenance_json, '$.method'), 'patch') AS method,
                          (SELECT count(*) FROM output_files f WHERE f.run_id = r.id)
                          + (SELECT count(*) FROM attribution_files f WHERE f.run_id = r.id)
                          || '/' || r.num_batches AS batches,
                          (SELECT coalesce(sum(rows), 0) FROM output_files f WHERE f.run_id = r.id)
                          + (SELECT coalesce(sum(rows), 0) FROM attribution_files f WHERE f.run_id = r.id)
                          AS output_rows,
                          CASE WHEN coalesce(json_extract(r.provenance_json, '$.filtered')::BOOLEAN, true)
                               THEN 'kept' ELSE 'all (--no-filter)' END AS pairs,
                          r.wall_time_s, r.interventions_per_s
                   FROM runs r JOIN models m ON m.id = r.model_id JOIN datasets d ON d.id = r.dataset_id
                   ORDER BY r.id"""
            ).pl(),
        }
    return StoreStatus(store.revision(), size / 1e6, tables)
