"""`addpatch sweep --method attribution [--screen N] [--validate N]`, in this process and on
Ray."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app

SWEEP = [
    "sweep", "--models", "tiny-adder-digits", "--size", "4", "--batch-size", "4",
    "--targets", "C_1,O_1", "--method", "attribution",
]  # fmt: skip


def _sql(store: Path, sql: str) -> list[tuple]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


ESTIMATES = (
    "SELECT d.num_digits, e.example_id, e.target, e.component, e.layer, e.position, "
    "e.head, round(e.estimate, 4) FROM attribution_estimates e JOIN runs r ON r.id = e.run_id "
    "JOIN datasets d ON d.id = r.dataset_id ORDER BY ALL"
)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("sweep") / "store"
    done = CliRunner().invoke(
        app, [*SWEEP, "--digits", "2,3", "--screen", "2", "--store", str(store)]
    )
    assert done.exit_code == 0, done.output
    return store


def test_local_sweep_scores_and_screens_every_width(local_sweep):
    store = local_sweep
    runs = _sql(store, "SELECT id, json_extract_string(provenance_json, '$.method') FROM runs")
    assert sorted(runs) == [(1, "attribution"), (2, "attribution"), (3, "patch"), (4, "patch")]
    # each exact run patched the union of its own attribution run's 2 best cells per target
    screened = _sql(
        store,
        "SELECT s.run_id, s.attribution_run_id, count(*), count(DISTINCT (component, layer, "
        "position, head)) FROM screened_cells s GROUP BY ALL ORDER BY ALL",
    )
    assert [(run, source, n) for run, source, n, _ in screened] == [(3, 1, 4), (4, 2, 4)]
    for run, _, _, cells in screened:
        patched = _sql(
            store,
            "SELECT count(DISTINCT (component, layer, position, coalesce(head, -1))) "
            f"FROM patched_outputs WHERE run_id = {run}",
        )
        assert patched == [(cells,)]
    for run in (1, 2):
        assert (store / "reports" / f"run-{run}" / "attribution.html").exists()


def test_ray_sweep_stores_the_estimates_of_the_local_sweep(local_sweep, tmp_path):
    """The 2-digit attribution run on Ray (no screen, no report): the local sweep's estimates,
    and its validation sample (--validate 2: 2 cells per component) patched exactly on Ray."""
    ray = tmp_path / "ray"
    args = ["--digits", "2", "--store", str(ray), "--ray", "--interventions-only"]
    done = CliRunner().invoke(app, [*SWEEP, *args, "--validate", "2"])
    assert done.exit_code == 0, done.output
    assert not (ray / "reports").exists()
    rows = _sql(ray, ESTIMATES)
    assert rows and rows == [r for r in _sql(local_sweep, ESTIMATES) if r[0] == 2]
    runs = _sql(
        ray,
        "SELECT id, json_extract_string(provenance_json, '$.method'), "
        "json_extract(provenance_json, '$.validation_sample')::INT FROM runs ORDER BY id",
    )
    assert runs == [(1, "attribution", None), (2, "patch", 2)]
    assert _sql(ray, "SELECT count(*) > 0 FROM patched_outputs WHERE run_id = 2") == [(True,)]
