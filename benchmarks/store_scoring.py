"""Scoring speed on a synthetic store of 10 million patched outputs.

    python benchmarks/store_scoring.py              # 10M rows, 20 targets
    python benchmarks/store_scoring.py --rows 2000000

Builds a real store (catalog via the migrations, Parquet files registered like a run's), stores
the labels of 20 targets for its dataset, then times `iia_by_cell.sql` scoring all 20 targets:
the figure to beat is 0.2 s per million rows. It also times the check every read of outputs
makes first (each registered file's Parquet footer: rows, columns, run), as a share of the
scoring time: the goal is under 5%. More --files (a run writes one per batch) cost the check more.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from addpatch.experiment.datasets import create_dataset
from addpatch.experiment.labels import ensure_labels
from addpatch.queries import get_query, run_query
from addpatch.store import catalog
from addpatch.store.outputs import output_relpath, write_output_file
from addpatch.store.read_check import check_outputs_on
from addpatch.store.store import Store
from addpatch.task.addition import AdditionTask
from addpatch.task.labels import default_targets


def build(root: Path, rows: int, examples: int, layers: int, files: int) -> tuple[Store, list[str]]:
    store = Store.open(root, create=True)
    task = AdditionTask(num_addends=2, num_digits=4)
    info = create_dataset(store, kind="random", task=task, size=examples, seed=0)
    # every digit, carry and output digit, raw_output, and two joint targets: 20 in all
    targets = default_targets(task) + ["digit_0_3+digit_1_3", "C_1+C_2"]
    ensure_labels(store, info.id, targets)
    positions = rows // (examples * layers)
    with store.connect() as conn:
        model_id = catalog.upsert_model(
            conn=conn,
            record=catalog.ModelRecord(
                "synthetic", "-", None, "0" * 64, "0" * 64, "Llama", layers, 64
            ),
        )
        run_id = catalog.insert_run(
            conn=conn,
            model_id=model_id,
            dataset_id=info.id,
            config_sha256="synthetic",
            layers=list(range(-1, layers - 1)),
            position_set="all",
            positions=[(f"p{i}", f"t{i}") for i in range(positions)],
            max_new_tokens=3,
            dtype="float32",
            device="cpu",
            batch_size=examples // files,
            seed=0,
            num_examples=examples,
            num_batches=files,
            provenance={},
        )
        sums = np.array(
            [
                r[0]
                for r in conn.execute(
                    "SELECT base_sum FROM examples WHERE dataset_id = ? ORDER BY example_id",
                    [info.id],
                ).fetchall()
            ]
        )
    rng = np.random.default_rng(0)
    per_file = examples // files
    for index in range(files):
        ex = np.arange(index * per_file, (index + 1) * per_file)
        grid_ex = np.repeat(ex, layers * positions)
        grid_layer = np.tile(np.repeat(np.arange(-1, layers - 1), positions), per_file)
        grid_pos = np.tile(np.arange(positions), per_file * layers)
        n = grid_ex.size
        answer = np.where(rng.random(n) < 0.5, sums[grid_ex], rng.integers(0, 20000, n))
        table = pa.table(
            {
                "example_id": pa.array(grid_ex, pa.int64()),
                "layer": pa.array(grid_layer, pa.int16()),
                "position": pa.array(grid_pos, pa.int16()),
                "token_ids": pa.array([[1, 2, 3]] * n, pa.list_(pa.int32())),
                "text": pa.array([" 1"] * n),
                "answer": pa.array(answer, pa.int64()),
                "top_ids": pa.array([[1, 2, 3, 4, 5]] * n, pa.list_(pa.int32())),
                "top_logprobs": pa.array([[0.0] * 5] * n, pa.list_(pa.float32())),
            }
        )
        relpath = output_relpath(model_id, run_id, index)
        count, sha = write_output_file(store.root, relpath, run_id, table)
        with store.connect() as conn:
            catalog.register_output_file(
                conn=conn, run_id=run_id, batch_index=index, path=relpath, rows=count, sha256=sha
            )
    return store, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store, targets = build(
            Path(tmp) / "store", args.rows, args.examples, args.layers, args.files
        )
        with store.connect(read_only=True) as conn:
            rows = conn.execute("SELECT count(*) FROM patched_outputs").fetchone()[0]
        print(f"built a store of {rows:,} patched outputs in {time.perf_counter() - started:.0f} s")
        times, checks = [], []
        for _ in range(args.repeats):
            with store.connect(read_only=True) as conn:
                started = time.perf_counter()
                check_outputs_on(conn, store.root)
                checks.append(time.perf_counter() - started)
                started = time.perf_counter()
                query = get_query("iia_by_cell")
                frame = run_query(conn, query, {"targets": targets}, check_files=False)
                times.append(time.perf_counter() - started)
        best, check = min(times), min(checks)
        print(
            f"scored {len(targets)} targets -> {frame.height:,} cells: best of {args.repeats} "
            f"{best:.2f} s = {best / (rows / 1e6):.3f} s per million rows (goal: under 0.2)"
        )
        print(
            f"checked the footers of {args.files} files: best of {args.repeats} {check * 1e3:.1f} ms"
            f" = {check / best:.2%} of the scoring time (goal: under 5%)"
        )


if __name__ == "__main__":
    main()
