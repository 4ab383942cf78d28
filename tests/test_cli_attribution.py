"""`addpatch run --method attribution [--screen N] [--validate N]` on the shipped default model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from addpatch.resources import queries_dir
from cli.main import app
from tests.store_files import store_snapshot

TARGETS = "C_1,O_1,digit_0_1"
RUN = ["run", "--size", "8", "--batch-size", "4", "--targets", TARGETS]
ATTRIBUTION = ["--method", "attribution", "--components", "resid,heads"]
SCREEN = 3


def _invoke(*args: str, store: Path):
    return CliRunner().invoke(app, [*args, "--store", str(store)])


def _sql(store: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def screened(tmp_path_factory) -> tuple[Path, object]:
    store = tmp_path_factory.mktemp("attribution") / "store"
    return store, _invoke(*RUN, *ATTRIBUTION, "--screen", str(SCREEN), store=store)


def test_attribution_run_stores_an_estimate_per_example_target_and_cell(screened):
    store, result = screened
    assert result.exit_code == 0, result.output
    assert "Run 1 (attribution): 8 examples x (resid, heads)" in result.output
    ((layers, positions),) = _sql(
        store,
        "SELECT len(json_extract(layers_json, '$[*]')), (SELECT count(*) FROM run_positions "
        "WHERE run_id = 1) FROM runs WHERE id = 1",
    )
    heads, model_layers = 4, layers - 1  # tiny-adder-digits: 4 heads, layers -1..N-1
    cells = positions * (layers + model_layers * heads)
    ((with_metric, metrics),) = _sql(
        store, "SELECT count(*) FILTER (WHERE no_metric IS NULL), count(*) FROM attribution_metrics"
    )
    assert metrics == 8 * 3  # one metric row per example and target
    ((estimates, distinct),) = _sql(
        store,
        "SELECT count(*), count(DISTINCT (example_id, target, component, layer, position, head)) "
        "FROM attribution_estimates WHERE run_id = 1",
    )
    assert estimates == distinct == with_metric * cells
    assert _sql(store, "SELECT count(*) FROM attribution_files WHERE run_id = 1") == [(2,)]
    # the examples without a metric are those whose label is the base answer (filtered: the sum)
    (same,) = _sql(
        store,
        "SELECT count(*) FROM attribution_metrics m JOIN labels l ON l.target = m.target "
        "AND l.example_id = m.example_id JOIN examples e ON e.example_id = m.example_id "
        "AND e.dataset_id = l.dataset_id WHERE m.run_id = 1 AND l.label = e.base_sum",
    )
    assert same == (metrics - with_metric,)
    assert "without_metric" in result.output


def test_screen_patches_exactly_the_best_cells_of_each_target(screened):
    store, result = screened
    assert result.exit_code == 0, result.output
    best = _sql(
        store,
        "SELECT target, component, layer, position, coalesce(head, -1) FROM ("
        "  SELECT target, component, layer, position, head, avg(estimate) AS mean"
        "  FROM attribution_estimates WHERE run_id = 1 GROUP BY ALL) "
        "QUALIFY row_number() OVER (PARTITION BY target ORDER BY mean DESC, "
        "list_position(['resid', 'attn', 'mlp', 'heads'], component), layer, head, position) <= ?",
        [SCREEN],
    )
    screened_in = _sql(
        store,
        "SELECT target, component, layer, position, head FROM screened_cells WHERE run_id = 2",
    )
    assert sorted(screened_in) == sorted(best)
    assert len(screened_in) == 3 * SCREEN
    patched = _sql(
        store,
        "SELECT DISTINCT component, layer, position, coalesce(head, -1) FROM patched_outputs "
        "WHERE run_id = 2",
    )
    assert sorted(patched) == sorted({cell[1:] for cell in best})  # the union, and no other
    assert _sql(store, "SELECT count(*) FROM patched_outputs WHERE run_id <> 2") == [(0,)]
    assert "Screen: run 2 patched the screened cells exactly" in result.output


def test_report_plots_estimate_against_exact_effect(screened):
    store, result = screened
    assert result.exit_code == 0, result.output
    report = store / "reports" / "run-1"
    page = (report / "attribution.html").read_text()
    pairs = _sql(
        store,
        "SELECT DISTINCT target, component FROM screened_cells WHERE run_id = 2 ORDER BY ALL",
    )
    for target, component in pairs:
        assert (report / f"attribution_{target}_{component}.png").stat().st_size > 0
        assert f"<td>{target}</td><td>{component}</td>" in page
    assert "Spearman rho" in page


def test_rerun_adds_no_rows(screened):
    store, result = screened
    assert result.exit_code == 0, result.output
    before = {k: v for k, v in store_snapshot(store).items() if not k.startswith("reports/")}
    again = _invoke(*RUN, *ATTRIBUTION, "--screen", str(SCREEN), store=store)
    assert again.exit_code == 0, again.output
    assert "already complete in the store, nothing recomputed" in again.output
    after = store_snapshot(store)
    assert {k for k in after if k.endswith(".parquet")} == {
        k for k in before if k.endswith(".parquet")
    }
    assert all(after[k] == v for k, v in before.items() if k.endswith(".parquet"))
    assert _sql(store, "SELECT count(*) FROM runs") == [(2,)]
    assert _sql(store, "SELECT count(*) FROM screened_cells") == [(3 * SCREEN,)]


def test_ranking_query_runs_unchanged_in_the_duckdb_shell(screened):
    store, result = screened
    assert result.exit_code == 0, result.output
    duckdb_cli = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    assert duckdb_cli, "the duckdb shell (pip package duckdb-cli) is part of the dev set-up"
    script = f"SET VARIABLE run_id = 1;\n.read {queries_dir() / 'attribution_cells.sql'}\n"
    shell = subprocess.run(
        [duckdb_cli, "-csv", "-readonly", "catalog.duckdb"],
        input=script,
        cwd=store,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    ranked = pl.read_csv(shell.stdout.encode())
    means = _sql(
        store,
        "SELECT target, component, avg(estimate) AS mean FROM attribution_estimates "
        "GROUP BY target, component, layer, position, head ORDER BY target, component, mean DESC",
    )
    for (target, component), part in ranked.group_by(["target", "component"]):
        expected = [m for t, c, m in means if (t, c) == (target, component)]
        assert part["rank"].to_list() == list(range(1, len(expected) + 1))
        assert part["mean_estimate"].to_list() == pytest.approx(expected, rel=1e-5)


VALIDATE = 60  # heads cells to draw (the tiny adder has 144), resid cells (it has 48: all)


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> tuple[Path, object]:
    """A plain attribution run: its validation sample is patched exactly, with no screen."""
    store = tmp_path_factory.mktemp("validated") / "store"
    return store, _invoke(*RUN, *ATTRIBUTION, "--validate", str(VALIDATE), store=store)


def test_plain_attribution_run_patches_a_random_sample_and_plots_it(validated):
    store, result = validated
    assert result.exit_code == 0, result.output
    assert "Validation: run 2 patched a random sample of cells exactly" in result.output
    cells = _sql(
        store,
        "SELECT DISTINCT component, layer, position, head FROM attribution_estimates "
        "WHERE run_id = 1",
    )
    patched = _sql(
        store,
        "SELECT DISTINCT component, layer, position, head FROM patched_outputs WHERE run_id = 2",
    )
    assert set(patched) <= set(cells)
    by_component = {c: sum(1 for p in patched if p[0] == c) for c in ("resid", "heads")}
    resid_cells = sum(1 for c in cells if c[0] == "resid")
    assert resid_cells < VALIDATE < sum(1 for c in cells if c[0] == "heads")
    assert by_component == {"resid": resid_cells, "heads": VALIDATE}  # all of resid, N heads
    assert _sql(store, "SELECT count(*) FROM screened_cells") == [(0,)]  # none screened in
    ((config,),) = _sql(store, "SELECT provenance_json FROM runs WHERE id = 2")
    assert f'"validation_sample": {VALIDATE}' in config
    report = store / "reports" / "run-1"
    page = (report / "attribution.html").read_text()
    for target in TARGETS.split(","):
        for component in ("resid", "heads"):
            assert (report / f"attribution_{target}_{component}.png").stat().st_size > 0
    assert "No cell has an exact result yet" not in page
    assert "Estimate vs exact IIA per variable and component" in result.output


def test_the_validation_sample_is_the_same_on_a_rerun_and_adds_no_rows(validated):
    store, result = validated
    assert result.exit_code == 0, result.output
    before = {k: v for k, v in store_snapshot(store).items() if not k.startswith("reports/")}
    again = _invoke(*RUN, *ATTRIBUTION, "--validate", str(VALIDATE), store=store)
    assert again.exit_code == 0, again.output
    assert "run 2, 0 of 2 batches to patch" in again.output
    after = {k: v for k, v in store_snapshot(store).items() if not k.startswith("reports/")}
    assert {k: v for k, v in after.items() if k.endswith(".parquet")} == {
        k: v for k, v in before.items() if k.endswith(".parquet")
    }
    assert _sql(store, "SELECT count(*) FROM runs") == [(2,)]


def test_sample_cells_draws_per_component_whatever_the_order():
    from addpatch.experiment.attribution import sample_cells

    cells = [("resid", layer, p, None) for layer in range(-1, 2) for p in range(4)]
    cells += [("heads", layer, p, h) for layer in range(2) for p in range(4) for h in range(4)]
    drawn = sample_cells(cells, 5, seed=3)
    assert sum(c[0] == "resid" for c in drawn) == 5 and sum(c[0] == "heads" for c in drawn) == 5
    assert sample_cells(list(reversed(cells)), 5, seed=3) == drawn
    assert sample_cells(cells, 5, seed=4) != drawn
    assert set(sample_cells(cells, 12, seed=3)) >= {c for c in cells if c[0] == "resid"}


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    """A store holding one exact run, copied by each bad-input test."""
    store = tmp_path_factory.mktemp("base") / "store"
    first = _invoke("run", "--size", "4", "--interventions-only", store=store)
    assert first.exit_code == 0, first.output
    return store


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*ATTRIBUTION, "--screen", "0"], "--screen 0: screen at least 1 cell per target"),
        (["--screen", "5"], "--screen ranks cells by attribution patching first"),
        (["--method", "exact"], "unknown method 'exact'; use one of: patch, attribution"),
        ([*ATTRIBUTION, "--validate", "-1"], "--validate -1: give a number of cells"),
        (["--validate", "5"], "--validate checks attribution's estimates against exact patching"),
        (
            [*ATTRIBUTION, "--kind", "one_digit", "--size", "4", "--targets", "C_2"],
            "target C_2 has no informative example",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_the_store_unchanged(base_store, tmp_path, args, message):
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    before = store_snapshot(store)
    result = _invoke("run", "--size", "8", *args, store=store)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert store_snapshot(store) == before


def test_report_command_writes_the_attribution_report(screened):
    store, result = screened
    assert result.exit_code == 0, result.output
    out = store.parent / "again"
    done = _invoke("report", "--run-id", "1", "--out", str(out), store=store)
    assert done.exit_code == 0, done.output
    assert "attribution run 1" in done.output
    assert (out / "attribution.html").exists() and list(out.glob("attribution_*.png"))
    status = _invoke("store", "status", store=store)
    assert status.exit_code == 0, status.output
    assert "attribution" in status.stdout and "2/2" in status.stdout  # its batches counted


def test_a_damaged_batch_is_recomputed_and_nothing_else(screened):
    """Runs last in this module: it damages the shared store's second batch file."""
    store, result = screened
    assert result.exit_code == 0, result.output
    estimates = "SELECT * FROM attribution_estimates ORDER BY ALL"
    before = _sql(store, estimates)
    (path,) = _sql(store, "SELECT path FROM attribution_files WHERE batch_index = 1")[0]
    (store / path).write_bytes(b"not parquet")
    again = _invoke(*RUN, *ATTRIBUTION, "--screen", str(SCREEN), store=store)
    assert again.exit_code == 0, again.output
    assert "run 1, 1 of 2 batches to patch" in again.output
    assert "run 2, 0 of 2 batches to patch" in again.output  # the same cells screened in
    assert _sql(store, estimates) == before
