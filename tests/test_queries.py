"""Each query in queries/ against the same computation done independently in polars."""

from __future__ import annotations

import polars as pl
import pytest

from addpatch.errors import BadInput
from addpatch.experiment.labels import ensure_labels
from addpatch.pipeline import RunSpec, run_experiment
from addpatch.queries import get_query, run_query
from addpatch.scoring import best_cells, cell_examples, scores
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
    # the queries read stored labels, as in the DuckDB shell: store those of every target here
    # (not as a side effect of whichever test scores first)
    ensure_labels(store, outcome.result.dataset_id, TARGETS)
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
        ({"informative": "maybe"}, "must be true or false"),
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
    for target in TARGETS:
        with store.connect(read_only=True) as conn:
            got = run_query(conn, get_query("target_across_models"), {"target": target})
        expected = _expected_iia(store, task).filter(pl.col("target") == target)
        # the best cell as best_cells ranks it: highest IIA, ties to the earlier layer, then
        # the earlier position (one example count per cell, so localized cells come first too)
        best = expected.sort(["iia", "layer", "position"], descending=[True, False, False]).row(
            0, named=True
        )
        assert got.height == 1, target
        row = got.row(0, named=True)
        assert row["run_id"] == run_id
        assert (row["best_layer"], row["best_position"]) == (best["layer"], best["position"])
        assert row["best_iia"] == pytest.approx(best["iia"])
        assert row["mean_iia"] == pytest.approx(expected["iia"].mean())
        assert row["examples"] == expected["n"].max()
        first = best_cells(store, run_id=run_id, targets=[target], top=1).row(0, named=True)
        assert (row["best_layer"], row["best_position"], row["localized"]) == (
            first["layer"],
            first["position"],
            first["localized"],
        )


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


# ---------------------------------------------------------------- intervals, informative, metric


def _wilson_by_quadratic(hits: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson interval as the roots in p of (hits/n - p)^2 = z^2 p (1 - p) / n."""
    import math

    phat = hits / n
    a = 1 + z * z / n
    b = -(2 * phat + z * z / n)
    c = phat * phat
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def test_wilson_interval_equals_independent_computation_on_known_counts():
    from statistics import NormalDist

    from addpatch.intervals import wilson_exprs, wilson_interval

    z = NormalDist().inv_cdf(0.975)
    # published 95% Wilson intervals (e.g. Newcombe 1998, table I; Brown, Cai & DasGupta 2001)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    counts = [(0, 1), (1, 1), (0, 24), (3, 24), (12, 24), (24, 24), (13, 256), (126, 256)]
    frame = pl.DataFrame(counts, schema={"hits": pl.Int64, "n": pl.Int64}, orient="row")
    low, high = wilson_exprs(pl.col("hits"), pl.col("n"))
    polars_bounds = frame.select(low.alias("low"), high.alias("high")).rows()
    for (hits, n), bounds in zip(counts, polars_bounds, strict=True):
        expected = _wilson_by_quadratic(hits, n, z)
        assert wilson_interval(hits, n) == pytest.approx(expected, abs=1e-12)
        assert bounds == pytest.approx(expected, abs=1e-12)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("informative", [False, True])
def test_sql_intervals_equal_independent_computation(small_run, informative):
    from statistics import NormalDist

    store, _, run_id = small_run
    z = NormalDist().inv_cdf(0.975)
    got = scores(store, run_id=run_id, targets=TARGETS, informative=informative)
    assert got.height > 0
    for row in got.iter_rows(named=True):
        hits = round(row["iia"] * row["n"])
        assert row["hits"] == hits
        low, high = _wilson_by_quadratic(hits, row["n"], z)
        assert row["iia_low"] == pytest.approx(low, abs=1e-12)
        assert row["iia_high"] == pytest.approx(high, abs=1e-12)
        assert row["iia_low"] <= row["iia"] <= row["iia_high"]


def _base_sums() -> pl.DataFrame:
    pairs = generate_pairs("random", AdditionTask(num_addends=2, num_digits=2), 24, 3)
    return pl.DataFrame(
        {"example_id": list(range(len(pairs))), "base_sum": [sum(p.base.numbers) for p in pairs]}
    )


def test_informative_equals_polars_on_stored_rows(small_run):
    store, task, run_id = small_run
    got = scores(store, run_id=run_id, targets=TARGETS, informative=True)
    outputs = _outputs(store).join(_base_sums(), on="example_id")
    for target in TARGETS:
        rows = outputs.join(_labels(task, target), on="example_id").filter(
            pl.col("label") != pl.col("base_sum")
        )
        expected = rows.group_by("layer", "position").agg(
            ((pl.col("answer") == pl.col("label")).fill_null(False)).mean().alias("iia_polars"),
            pl.len().alias("n_polars"),
        )
        mine = got.filter(pl.col("target") == target).join(expected, on=["layer", "position"])
        assert mine.height == expected.height == got.filter(pl.col("target") == target).height
        assert (mine["n"] == mine["n_polars"]).all()
        assert (mine["iia"] - mine["iia_polars"]).abs().max() < 1e-12
        assert (mine["baseline"] == 0.0).all()  # no informative example has label = base answer
    everything = scores(store, run_id=run_id, targets=TARGETS)
    assert everything["n"].min() >= got["n"].max()
    assert (everything["n"] == everything["n"].max()).all()


def test_informative_and_cell_examples_run_in_the_duckdb_shell(small_run):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from addpatch.resources import queries_dir

    store, _, run_id = small_run
    expected = scores(store, run_id=run_id, targets=["C_1"], informative=True)  # stores labels
    duckdb_cli = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    assert duckdb_cli
    script = (
        f"SET VARIABLE run_id = {run_id};\nSET VARIABLE targets = ['C_1'];\n"
        f"SET VARIABLE informative = true;\n.read {queries_dir() / 'iia_by_cell.sql'}\n"
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
    assert from_shell.height == expected.height > 0
    assert from_shell["n"].to_list() == expected["n"].to_list()
    assert from_shell["iia_low"].to_list() == pytest.approx(expected["iia_low"].to_list())

    drill = (
        f"SET VARIABLE run_id = {run_id};\nSET VARIABLE target = 'C_1';\n"
        "SET VARIABLE layer = 0;\nSET VARIABLE per_cell = 3;\n"
        f".read {queries_dir() / 'cell_examples.sql'}\n"
    )
    shell = subprocess.run(
        [duckdb_cli, "-csv", "-readonly", "catalog.duckdb"],
        input=drill,
        cwd=store.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    from_shell = pl.read_csv(shell.stdout.encode())
    with store.connect(read_only=True) as conn:
        params = {"run_id": run_id, "target": "C_1", "layer": 0, "per_cell": 3}
        from_addpatch = run_query(conn, get_query("cell_examples"), params)
    assert from_shell.height == from_addpatch.height == 3 * from_addpatch["position"].n_unique()
    assert from_shell["example_id"].to_list() == from_addpatch["example_id"].to_list()
    assert from_shell["correct"].to_list() == from_addpatch["correct"].to_list()


def test_not_localized_exactly_when_no_interval_clears_the_baseline(small_run):
    from typer.testing import CliRunner

    from addpatch.report.summary import summary_table
    from addpatch.report.validate import check_scores
    from cli.main import app

    store, _, run_id = small_run
    for informative in (False, True):
        cells = scores(store, run_id=run_id, targets=TARGETS, informative=informative)
        clears = {
            t: any(
                r["iia_low"] > r["baseline"]
                for r in cells.filter(pl.col("target") == t).iter_rows(named=True)
            )
            for t in TARGETS
        }
        best = best_cells(store, run_id=run_id, targets=TARGETS, informative=informative)
        assert dict(zip(best["target"], best["localized"], strict=True)) == clears
        summary = summary_table(check_scores(cells))
        assert dict(zip(summary["target"], summary["localized"], strict=True)) == clears
        for row in summary.iter_rows(named=True):
            assert (row["best_layer"] is None) == (not clears[row["target"]])
        if not informative:
            assert not all(clears.values()) and any(clears.values()), "both kinds expected"
            table = CliRunner().invoke(
                app, ["score", "--store", str(store.root), "--targets", ",".join(TARGETS)]
            )
            assert table.exit_code == 0, table.output
            printed = {
                line.split("│")[3].strip(): line
                for line in table.output.splitlines()
                if "│" in line
            }
            for target, localized in clears.items():
                assert ("not localized" in printed[target]) == (not localized)


def test_label_logprob_equals_direct_computation_from_stored_logprobs(small_run):
    from addpatch.models.tiny_tokenizers import build_tokenizer
    from addpatch.probabilities import label_logprobs

    store, task, run_id = small_run
    tokenizer = build_tokenizer("digits")  # the shipped tiny-adder-digits tokenizer
    got = label_logprobs(store, run_id=run_id, targets=["O_3", "C_2"])
    outputs = _outputs(store)
    assert outputs["digit_step"].drop_nulls().len() > 0
    for target in ["O_3", "C_2"]:
        labels = dict(_labels(task, target).iter_rows())
        sums: dict[tuple[int, int], list[float]] = {}
        totals: dict[tuple[int, int], int] = {}
        for row in outputs.iter_rows(named=True):
            key = (row["layer"], row["position"])
            totals[key] = totals.get(key, 0) + 1
            token = tokenizer.convert_tokens_to_ids(str(labels[row["example_id"]])[0])
            if row["digit_top_ids"] and token in row["digit_top_ids"]:
                index = row["digit_top_ids"].index(token)
                sums.setdefault(key, []).append(row["digit_top_logprobs"][index])
        mine = got.filter(pl.col("target") == target)
        assert mine.height == len(totals)
        for row in mine.iter_rows(named=True):
            key = (row["layer"], row["position"])
            values = sums.get(key, [])
            assert row["coverage"] == pytest.approx(len(values) / totals[key])
            if values:
                assert row["label_logprob"] == pytest.approx(sum(values) / len(values), abs=1e-6)
            else:
                assert row["label_logprob"] is None


def test_outputs_without_digit_logprobs_still_score_and_say_the_metric_is_unavailable(
    small_run, tmp_path
):
    import shutil

    import pyarrow.parquet as pq

    from addpatch.probabilities import MetricUnavailable, label_logprobs

    store, _, run_id = small_run
    old_root = tmp_path / "old-store"
    shutil.copytree(store.root, old_root)
    for path in old_root.glob("outputs/**/*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop(["digit_step", "digit_top_ids", "digit_top_logprobs"]), path)
    old = Store.open(old_root)
    before = scores(store, run_id=run_id, targets=["C_1"])
    after = scores(old, run_id=run_id, targets=["C_1"])
    assert after["iia"].to_list() == before["iia"].to_list()
    with pytest.raises(MetricUnavailable, match="cannot be computed"):
        label_logprobs(old, run_id=run_id, targets=["C_1"])


def test_cell_examples_equal_the_stored_rows_of_the_cell(small_run):
    store, task, run_id = small_run
    scores(store, run_id=run_id, targets=["O_2"])  # stores O_2's labels
    layer, position = 0, 11
    with store.connect(read_only=True) as conn:
        got = run_query(
            conn,
            get_query("cell_examples"),
            {
                "run_id": run_id,
                "target": "O_2",
                "layer": layer,
                "position": position,
                "per_cell": 6,
            },
        )
    cell = (
        _outputs(store)
        .filter((pl.col("layer") == layer) & (pl.col("position") == position))
        .join(_labels(task, "O_2"), on="example_id")
        .with_columns((pl.col("answer") == pl.col("label")).fill_null(False).alias("right"))
    )
    assert got.height == min(6, cell.height)
    assert set(got["cell_n"]) == {cell.height}
    assert set(got["cell_right"]) == {cell["right"].sum()}
    by_id = {r["example_id"]: r for r in cell.iter_rows(named=True)}
    for row in got.iter_rows(named=True):
        stored = by_id[row["example_id"]]
        assert row["patched_text"] == stored["text"]
        assert row["label"] == stored["label"]
        assert row["correct"] == stored["right"]
    right = sorted(cell.filter(pl.col("right"))["example_id"])
    wrong = sorted(cell.filter(~pl.col("right"))["example_id"])
    half = min(3, len(right), len(wrong))
    assert sorted(got.filter(pl.col("correct"))["example_id"])[:half] == right[:half]
    assert sorted(got.filter(~pl.col("correct"))["example_id"])[:half] == wrong[:half]


def test_macro_called_as_before_returns_the_old_columns_first(small_run):
    """Queries written for the 0002 macro (two arguments) keep their columns and figures."""
    store, _, run_id = small_run
    old_columns = [
        "run_id",
        "model",
        "num_digits",
        "target",
        "layer",
        "position",
        "position_name",
        "position_label",
        "iia",
        "n",
        "baseline",
    ]
    with store.connect(read_only=True) as conn:
        plain = conn.execute(
            "SELECT * FROM iia_cells(?, ['C_1']) ORDER BY layer, position", [run_id]
        ).pl()
        named = conn.execute(
            "SELECT * FROM iia_cells(?, ['C_1'], informative := false) ORDER BY layer, position",
            [run_id],
        ).pl()
    assert plain.columns[: len(old_columns)] == old_columns
    new_columns = ["component", "head", "hits", "iia_low", "iia_high"]  # 0005, then 0004's
    das_columns = ["method", "subspace_id", "k", "trained_for", "control"]  # 0009, after them
    assert plain.columns[len(old_columns) :] == new_columns + das_columns
    assert plain["method"].unique().to_list() == ["patch"]
    assert plain.select(das_columns[1:]).null_count().row(0) == (plain.height,) * 4
    assert plain.equals(named)
    expected = _expected_iia(store, small_run[1]).filter(pl.col("target") == "C_1")
    merged = plain.join(expected, on=["layer", "position"], suffix="_polars")
    assert merged.height == plain.height
    assert (merged["iia"] - merged["iia_polars"]).abs().max() < 1e-12


def test_scoring_cell_examples_is_the_query_with_labels_stored_first(small_run):
    store, _task, run_id = small_run
    got = cell_examples(store, run_id=run_id, target="digit_1_1+digit_0_0", layer=0, position=5)
    with store.connect(read_only=True) as conn:
        labelled = conn.execute(
            "SELECT count(*) FROM labels WHERE target = 'digit_0_0+digit_1_1'"
        ).fetchone()[0]
        expected = run_query(
            conn,
            get_query("cell_examples"),
            {"run_id": run_id, "target": "digit_0_0+digit_1_1", "layer": 0, "position": 5},
        )
    assert labelled == 24  # the canonical target's labels, stored by the call
    assert got.equals(expected)
    assert got.height == 10 and set(got["target"]) == {"digit_0_0+digit_1_1"}
    every_cell = cell_examples(store, run_id=run_id, target="C_1", per_cell=2)
    assert every_cell.group_by("layer", "position").len()["len"].to_list() == [2] * (
        every_cell.select("layer", "position").unique().height
    )
    with pytest.raises(BadInput, match="per_cell must be a positive number"):
        cell_examples(store, run_id=run_id, target="C_1", per_cell=0)


def test_a_parameter_given_as_none_is_unset(small_run):
    store, _task, run_id = small_run
    scores(store, run_id=run_id, targets=["C_1"])
    with store.connect(read_only=True) as conn:
        dataset_id = conn.execute("SELECT dataset_id FROM runs WHERE id = ?", [run_id]).fetchone()[
            0
        ]
        query = get_query("distinguishability")
        left_out = run_query(conn, query, {"dataset_id": dataset_id, "target_a": "C_1"})
        as_none = run_query(
            conn, query, {"dataset_id": dataset_id, "target_a": "C_1", "target_b": None}
        )
    assert left_out.height == 1 and left_out["target_b"][0] == "(base answer)"
    assert as_none.equals(left_out)
