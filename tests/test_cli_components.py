"""`addpatch run --components resid,attn,mlp,heads` on the shipped default model."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from addpatch.report.naming import heatmap_stem
from cli.main import app

RUN = ["run", "--size", "4", "--batch-size", "4", "--targets", "C_1,O_1"]
ALL = ["--components", "resid,attn,mlp,heads"]


def _invoke(*args: str, store: Path):
    return CliRunner().invoke(app, [*args, "--store", str(store)])


def _rows(store: Path) -> dict[tuple[str, bool], tuple[int, int]]:
    """(component, has head) -> (rows, distinct cells x examples)."""
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        found = conn.execute(
            "SELECT component, head IS NOT NULL, count(*), count(DISTINCT (example_id, layer, "
            "position, head)) FROM patched_outputs GROUP BY ALL"
        ).fetchall()
    finally:
        conn.close()
    return {(c, h): (n, d) for c, h, n, d in found}


@pytest.fixture(scope="module")
def component_store(tmp_path_factory) -> tuple[Path, object]:
    store = tmp_path_factory.mktemp("components") / "store"
    return store, _invoke(*RUN, *ALL, store=store)


def test_component_run_stores_every_component_and_reports_them(component_store):
    store, result = component_store
    assert result.exit_code == 0, result.output
    examples, positions, layers, heads = 4, 12, 3, 4  # tiny-adder-digits: 3 layers, 4 heads
    assert _rows(store) == {
        ("resid", False): (examples * positions * (layers + 1),) * 2,
        ("attn", False): (examples * positions * layers,) * 2,
        ("mlp", False): (examples * positions * layers,) * 2,
        ("heads", True): (examples * positions * layers * heads,) * 2,
    }
    assert "component" in result.output and "heads" in result.output
    report = store / "reports" / "run-1"
    for facet in ("C_1", "C_1 [attn]", "C_1 [mlp]", "O_1 [mlp]"):
        assert (report / f"{heatmap_stem(facet)}.png").exists(), facet
    heads = [p.name for p in report.glob("*heads*.png")]
    assert len(heads) == 2, heads  # one layer x head heatmap per target
    html = (report / "report.html").read_text()
    assert "C_1 [attn]" in html and "[heads @" in html


def test_component_rerun_adds_no_rows(component_store):
    store, _ = component_store
    before = _rows(store)
    again = _invoke(*RUN, *ALL, store=store)
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output
    assert _rows(store) == before


def test_heads_position_picks_the_heads_heatmap_and_bad_one_is_an_error(component_store):
    store, _ = component_store
    out = store.parent / "report-last"
    result = _invoke("report", "--run-id", "1", "--heads-position", "last", "--out", str(out),
                     "--targets", "C_1", store=store)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "' is'" in (out / "report.html").read_text()  # the last token of the prompt
    bad = _invoke("report", "--run-id", "1", "--heads-position", "a9.d9", store=store)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("Error: ") and "--heads-position" in bad.stderr


def test_unknown_component_is_one_line_error_and_touches_nothing(tmp_path):
    store = tmp_path / "s"
    result = _invoke(*RUN, "--components", "resid,neurons", store=store)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "resid, attn, mlp, heads" in result.stderr
    assert not store.exists()


def test_residual_run_keeps_its_configuration_hash():
    from addpatch.experiment.interventions import RunPlan

    common = dict(
        model_id=1, dataset_id=1, position_set="all", positions=["last"],
        position_tokens=[("last", " is")], max_new_tokens=3, layers=[-1, 0], dtype="float32",
        batch_size=8, batches=[], highlighted="", digit_tokens=[],
    )  # fmt: skip
    resid = RunPlan(**common)
    assert "components" not in resid.config  # the hash of a run made before components
    both = RunPlan(**common, components=("resid", "attn"))
    assert both.config["components"] == ["resid", "attn"]
    assert both.config_sha256 != resid.config_sha256


def test_sweep_takes_components(tmp_path):
    store = tmp_path / "s"
    result = _invoke(
        "sweep", "--models", "tiny-adder-digits", "--digits", "2", "--size", "4",
        "--batch-size", "4", "--components", "attn", "--positions", "last", "--targets", "O_1",
        store=store,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _rows(store) == {("attn", False): (4 * 3, 4 * 3)}  # 4 examples x 3 layers x 1 position
    assert "attn" in result.output
