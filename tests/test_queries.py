"""Each query in queries/ against the same computation done independently in polars."""

from __future__ import annotations

import polars as pl
import pytest

from addpatch.errors import BadInput
from addpatch.pipeline import RunSpec, run_experiment
from addpatch.queries import get_query, run_query
from addpatch.scoring import best_cells, scores
from addpatch.store.store import Store
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import generate_pairs
from addpatch.task.labels import label_many

TARGETS = ["digit_0_1", "C_1", "O_2", "raw_output", "digit_0_0+digit_1_1"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("q") / "store", create=True)
    task = AdditionTask(num_addends=2, num_digits=2)
    spec = RunSpec(size=24, seed=3, layers="-1,0,1", batch_size=10, interventions_only=True)
    outcome = run_experiment(store, spec)
    return store, task, outcome.run_id


def _outputs(store: Store) -> pl.DataFrame:
    with store.connect(read_only=True) as conn:
        paths = [
            store.root / r[0] for r in conn.execute("SELECT path FROM output_files").fetchall()
        ]
    return pl.concat([pl.read_parquet(p) for p in paths])


def _labels(task: AdditionTask, target: str) -> pl.DataFrame:
    pairs = generate_pairs("random", task, 24, 3)
    return pl.DataFrame(
        {
            "example_id": list(range(len(pairs))),
            "label": [v for _, v in label_many(task, pairs, target)],
        }
    )


def _expected_iia(store: Store, task: AdditionTask) -> pl.DataFrame:
    outputs = _outputs(store)
    frames = []
    for target in TARGETS:
        joined = outputs.join(_labels(task, target), on="example_id")
        frames.append(
            joined.group_by("layer", "position")
            .agg(
                ((pl.col("answer") == pl.col("label")).fill_null(False)).mean().alias("iia"),
                pl.len().alias("n"),
            )
            .with_columns(pl.lit(target).alias("target"))
        )
    return pl.concat(frames)


def test_iia_by_cell_equals_polars(small_run):
    store, task, run_id = small_run
    got = scores(store, run_id=run_id, targets=TARGETS)
    expected = _expected_iia(store, task)
    merged = got.join(expected, on=["target", "layer", "position"], suffix="_polars")
    assert merged.height == expected.height == got.height
    assert (merged["iia"] - merged["iia_polars"]).abs().max() < 1e-12
    assert (merged["n"] == merged["n_polars"]).all()


def test_best_cells_equals_polars(small_run):
    store, task, run_id = small_run
    got = best_cells(store, run_id=run_id, targets=TARGETS, top=1)
    expected = (
        _expected_iia(store, task)
        .sort(["target", "iia", "layer", "position"], descending=[False, True, False, False])
        .group_by("target", maintain_order=True)
        .first()
    )
    merged = got.join(expected, on="target", suffix="_polars")
    assert merged.height == len(TARGETS)
    assert (merged["layer"] == merged["layer_polars"]).all()
    assert (merged["position"] == merged["position_polars"]).all()


def test_keep_rates_equals_polars(small_run):
    store, task, _ = small_run
    with store.connect(read_only=True) as conn:
        got = run_query(conn, get_query("keep_rates"), {"model": "tiny-adder-digits"})
        filt = conn.execute("SELECT base_correct, cf_correct FROM filter_results").pl()
    kept = filt.filter(pl.col("base_correct") & pl.col("cf_correct")).height
    assert got["kept"].to_list() == [kept]
    assert got["keep_rate"].to_list() == [round(kept / filt.height, 4)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"run_id": "1; DROP TABLE runs"}, "must be integer"),
        ({"nope": "1"}, "has no parameter"),
        ({"top": "x"}, "must be integer"),
    ],
)
def test_malformed_parameters_are_rejected_before_any_sql(small_run, params, message):
    store, _, _ = small_run
    with store.connect(read_only=True) as conn, pytest.raises(BadInput, match=message):
        run_query(conn, get_query("best_cells"), params)


def test_string_parameters_are_bound_not_pasted(small_run):
    store, _, _ = small_run
    with store.connect(read_only=True) as conn:
        frame = run_query(conn, get_query("keep_rates"), {"model": "x' OR '1'='1"})
        assert frame.height == 0
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_target_across_models_equals_polars(small_run):
    store, task, run_id = small_run
    with store.connect(read_only=True) as conn:
        got = run_query(conn, get_query("target_across_models"), {"target": "C_1"})
    expected = _expected_iia(store, task).filter(pl.col("target") == "C_1")
    assert got.height == 1
    assert got["best_iia"][0] == pytest.approx(expected["iia"].max())
    assert got["mean_iia"][0] == pytest.approx(expected["iia"].mean())
    assert got["run_id"][0] == run_id


def _digit_credit(answer: int | None, label: int) -> float:
    got, want = ("" if answer is None else str(answer)), str(label)
    hits = sum(1 for i in range(1, len(want) + 1) if i <= len(got) and got[-i] == want[-i])
    return hits / len(want)


def test_digit_partial_credit_equals_python(small_run):
    store, task, run_id = small_run
    with store.connect(read_only=True) as conn:
        got = run_query(
            conn, get_query("digit_partial_credit"), {"run_id": run_id, "targets": "O_2"}
        )
    outputs = _outputs(store).join(_labels(task, "O_2"), on="example_id")
    expected = (
        outputs.with_columns(
            pl.struct("answer", "label")
            .map_elements(lambda r: _digit_credit(r["answer"], r["label"]), return_dtype=pl.Float64)
            .alias("credit")
        )
        .group_by("layer", "position")
        .agg(pl.col("credit").mean())
    )
    merged = got.join(expected, on=["layer", "position"])
    assert merged.height == expected.height == got.height
    assert (merged["digit_credit"] - merged["credit"]).abs().max() < 1e-12


def test_distinguishability_equals_the_causal_model(small_run):
    from addpatch.task.labels import distinguishability, resolve_target

    store, task, _ = small_run
    scores(store, targets=["C_1", "O_2"])  # stores both targets' labels
    with store.connect(read_only=True) as conn:
        dataset_id = conn.execute("SELECT id FROM datasets").fetchone()[0]
        got = run_query(
            conn,
            get_query("distinguishability"),
            {"dataset_id": dataset_id, "target_a": "C_1", "target_b": "O_2"},
        )
        against_base = run_query(
            conn, get_query("distinguishability"), {"dataset_id": dataset_id, "target_a": "C_1"}
        )
    model, _ = resolve_target(task, "C_1")
    pairs = generate_pairs("random", task, 24, 3)
    share, count = distinguishability(model, pairs, "C_1", "O_2")
    assert got["differ"][0] == count and got["share_differ"][0] == pytest.approx(share)
    share_base, count_base = distinguishability(model, pairs, "C_1")
    assert against_base["differ"][0] == count_base


def test_query_files_run_unchanged_in_the_duckdb_shell(small_run):
    """The .sql file, read by the `duckdb` CLI inside the store, gives what addpatch gives."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from addpatch.resources import queries_dir

    store, _, run_id = small_run
    duckdb_cli = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    assert duckdb_cli, "the duckdb shell (pip package duckdb-cli) is part of the dev set-up"
    script = (
        f"SET VARIABLE run_id = {run_id};\n"
        "SET VARIABLE targets = ['C_1', 'digit_0_1'];\n"
        f".read {queries_dir() / 'best_cells.sql'}\n"
    )
    shell = subprocess.run(
        [duckdb_cli, "-csv", "-readonly", "catalog.duckdb"],
        input=script,
        cwd=store.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    from_shell = pl.read_csv(shell.stdout.encode())
    with store.connect(read_only=True) as conn:
        from_addpatch = run_query(
            conn, get_query("best_cells"), {"run_id": run_id, "targets": "C_1,digit_0_1"}
        )
    assert from_shell.columns == from_addpatch.columns
    assert from_shell["target"].to_list() == from_addpatch["target"].to_list()
    assert from_shell["iia"].to_list() == pytest.approx(from_addpatch["iia"].to_list())
    assert from_shell["layer"].to_list() == from_addpatch["layer"].to_list()
