"""Build the report of runs from the store's SQL results (never from a run's memory)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from addpatch.report import build_report
from addpatch.scoring import scores
from addpatch.store.store import Store


def runs_info(store: Store, run_ids: list[int]) -> list[dict]:
    with store.connect(read_only=True) as conn:
        rows = conn.execute(
            """
            SELECT r.id, m.name, d.num_digits, r.num_examples, r.provenance_json, r.wall_time_s,
                   r.interventions_per_s, r.batch_size, r.seed, d.name,
                   (SELECT count(*) FILTER (WHERE base_correct AND cf_correct) / count(*)
                      FROM filter_results f WHERE f.model_id = r.model_id AND f.dataset_id = r.dataset_id)
            FROM runs r JOIN models m ON m.id = r.model_id JOIN datasets d ON d.id = r.dataset_id
            WHERE list_contains(?, r.id) ORDER BY r.id
            """,
            [run_ids],
        ).fetchall()
    info = []
    for run_id, model, digits, examples, prov, wall, speed, batch, seed, dataset, keep in rows:
        provenance = json.loads(prov)
        provenance.update(
            {
                "dataset": dataset,
                "seed": seed,
                "batch_size": batch,
                "wall_time_s": wall,
                "interventions_per_s": speed,
            }
        )
        info.append(
            {
                "run_id": run_id,
                "model": model,
                "num_digits": digits,
                "examples": examples,
                "keep_rate": float(keep or 0.0),
                "provenance": provenance,
            }
        )
    return info


def report_runs(store: Store, run_ids: list[int], targets: list[str] | None, out_dir: Path):
    frames = [scores(store, run_id=run_id, targets=targets) for run_id in run_ids]
    table = pl.concat(frames) if frames else pl.DataFrame()
    return build_report(table, runs_info(store, run_ids), out_dir)
