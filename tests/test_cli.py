"""The CLI invoked as a user would: `addpatch run` end to end on the shipped model, reruns,
re-scoring without a model, and one-line errors.

The end-to-end run (`demo_store`) is a real process through the installed `addpatch` console
script; the other commands run in-process with typer's CliRunner, which sees the same exit codes
and stderr (the error boundary sits in the app's top-level group).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from cli.main import app
from cli.output import best_cells_view
from tests.printed_tables import as_printed, printed_table

ADDPATCH = str(Path(sys.executable).parent / "addpatch")


def addpatch(*args: str, store: Path) -> subprocess.CompletedProcess:
    """A real process: the installed console script, as a user runs it."""
    return subprocess.run(
        [ADDPATCH, *args, "--store", str(store)], capture_output=True, text=True, timeout=600
    )


def invoke(*args: str, store: Path) -> Result:
    """In-process, through the same top-level group (and error boundary) as the script."""
    return CliRunner().invoke(app, [*args, "--store", str(store)])


def _counts(store: Path) -> tuple:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        return (
            conn.execute("SELECT count(*) FROM runs").fetchone()[0],
            conn.execute("SELECT count(*) FROM output_files").fetchone()[0],
            conn.execute("SELECT count(*) FROM patched_outputs").fetchone()[0],
            conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT run_id, example_id, layer, position FROM patched_outputs)"
            ).fetchone()[0],
            conn.execute("SELECT count(*) FROM examples").fetchone()[0],
            conn.execute("SELECT count(*) FROM labels").fetchone()[0],
        )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    store = tmp_path_factory.mktemp("demo") / "store"
    result = addpatch("run", "--size", "40", "--batch-size", "16", store=store)
    return store, result


def test_run_end_to_end_writes_store_scores_and_report(demo_store):
    store, result = demo_store
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"kept \d+/40 pairs \(keep rate", out) and "Best cell per variable" in out
    for target in ("digit_0_0", "digit_1_1", "C_1", "C_2", "O_1", "O_3", "raw_output"):
        assert target in out
    runs, files, rows, distinct, examples, labels = _counts(store)
    assert runs == 1 and examples == 40
    assert rows == distinct > 0  # one row per (example, layer, position)
    report = store / "reports" / "run-1"
    assert (report / "report.html").exists()
    assert (report / "heatmap_C_1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (report / "report.html").read_text()
    assert "<th>Baseline</th>" in html
    from addpatch.scoring import best_cells
    from addpatch.store.store import Store

    best = best_cells(Store.open(store), run_id=1, targets=["C_1"])
    row = best.row(0, named=True)
    interval = f"{row['iia']:.3f} [{row['iia_low']:.3f}, {row['iia_high']:.3f}]"
    shown = interval if row["localized"] else f"highest {interval}"
    assert f'<td class="num">{shown}</td><td class="num">{row["baseline"]:.3f}</td>' in html
    # the printed table, whole: every row and column as the store's best cells give them
    header, rows = printed_table(out, "Best cell per variable (run 1, IIA over 40 examples")
    printed_targets = [r[0] for r in rows]
    assert set(printed_targets) >= {"digit_0_0", "C_1", "O_3", "raw_output"}
    expected = best_cells_view(
        best_cells(Store.open(store), run_id=1, targets=printed_targets),
        ["target", "layer", "position", "position_label", "iia", "iia_low", "iia_high"]
        + ["baseline", "n"],
    )
    assert (header, rows) == as_printed(expected)
    c_1 = next(r for r in rows if r[0] == "C_1")
    assert (c_1[3] == "not localized") == (not row["localized"])
    assert str(store.resolve()) in out


def test_run_records_interventions_per_second_as_stored_rows_over_patching_time(demo_store):
    store, _ = demo_store
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        wall, speed = conn.execute(
            "SELECT wall_time_s, interventions_per_s FROM runs WHERE id = 1"
        ).fetchone()
        rows = conn.execute("SELECT sum(rows) FROM output_files WHERE run_id = 1").fetchone()[0]
    finally:
        conn.close()
    assert wall > 0 and speed == pytest.approx(rows / wall, rel=0.01)


def test_rerun_adds_no_rows(demo_store):
    store, _ = demo_store
    before = _counts(store)
    again = invoke("run", "--size", "40", "--batch-size", "16", store=store)
    assert again.exit_code == 0, again.output
    assert "already complete" in again.stdout
    assert _counts(store) == before


def test_score_other_targets_reuses_outputs_without_loading_a_model(demo_store, monkeypatch):
    store, _ = demo_store

    def no_model(*args, **kwargs):
        raise AssertionError("score must not load a model")

    # session first: importing it while loading.load_model is patched would keep the patch
    monkeypatch.setattr("addpatch.experiment.session.load_model", no_model)
    monkeypatch.setattr("addpatch.models.loading.load_model", no_model)
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--store",
            str(store),
            "--targets",
            "digit_0_1+digit_1_1,O_2<-C_1",
            "--format",
            "csv",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("run_id,model,num_digits,target,layer,position")
    assert {line.split(",")[3] for line in lines[1:]} == {"digit_0_1+digit_1_1", "O_2<-C_1"}


def test_score_prints_the_best_cells_table_whole(demo_store):
    from addpatch.scoring import best_cells
    from addpatch.store.store import Store

    store, _ = demo_store
    result = CliRunner().invoke(
        app, ["score", "--targets", "C_1,O_2", "--top", "2", "--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    expected = best_cells_view(
        best_cells(Store.open(store), run_id=1, targets=["C_1", "O_2"], top=2),
        ["run_id", "model", "target", "layer", "position", "position_label"]
        + ["iia", "iia_low", "iia_high", "baseline", "n"],
    )
    assert expected.height == 4
    assert printed_table(result.output, "Best cells (IIA over all examples") == as_printed(expected)


def test_store_status_lists_the_run(demo_store):
    store, _ = demo_store
    result = invoke("store", "status", store=store)
    assert result.exit_code == 0, result.output
    assert "tiny-adder-digits" in result.stdout and "complete" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--digits", "9"], "num_digits must be 1..6"),
        (["run", "--model", "no-such-model"], "is not a shipped model"),
        (["run", "--layers", "7"], "is outside -1.."),
        (["dataset", "--kind", "nonsense"], "unknown generator"),
        (["score", "--targets", "C_9"], "unknown variable"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(args, message, demo_store, tmp_path):
    store = demo_store[0] if args[0] == "score" else tmp_path / "fresh"
    result = invoke(*args, store=store)
    assert result.exit_code == 1
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("Error: "), result.stderr
    assert message in error_lines[0]


def _command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every leaf command of the CLI, as the words that call it (derived from the app)."""
    paths = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, TyperGroup):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append([*prefix, name])
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))  # type: ignore[arg-type]


def test_the_command_list_covers_the_cli():
    assert ["store", "verify"] in COMMANDS and ["run"] in COMMANDS and len(COMMANDS) >= 14


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("random", []),
        ("sum_to_nine", ["-o", "column=1"]),
        ("one_digit", ["-o", "addend=0", "-o", "digit=1"]),
        ("carry_flip", ["-o", "carry=1"]),
        ("random", ["-o", "drop_uninformative_for=C_1"]),
    ],
)
def test_every_generator_is_reachable_from_the_cli(kind, options, tmp_path):
    store = tmp_path / "s"
    result = CliRunner().invoke(
        app, ["dataset", "--kind", kind, *options, "--size", "16", "--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert "16 pairs, generated" in result.output
    assert "keep rate" in result.output
    assert result.output.count("cf 'The sum of") == 3  # a few examples shown
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM examples").fetchone()[0] == 16
        assert conn.execute("SELECT count(*) FROM filter_results").fetchone()[0] == 16
    finally:
        conn.close()


def test_bad_generator_option_leaves_no_store(tmp_path):
    store = tmp_path / "s"
    result = invoke("dataset", "--kind", "sum_to_nine", "-o", "column=5", store=store)
    assert result.exit_code == 1 and result.stderr.startswith("Error: column must be")
    assert not store.exists()


def test_no_pair_kept_is_a_clear_error(tmp_path):
    # the shipped adder was trained on 2-4 digit addends: it gets no 5-digit sum right
    result = invoke("dataset", "--digits", "5", "--size", "16", store=tmp_path / "s")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the model answered none of the 16 pairs")


def test_keep_rate_under_half_warns_and_continues(tmp_path, monkeypatch):
    from addpatch.engine.patching import PatchEngine

    real_generate = PatchEngine.generate

    def wrong_on_most(self, layouts, max_new_tokens):
        answers = real_generate(self, layouts, max_new_tokens)
        return [(ids, text if i % 4 == 0 else " 0") for i, (ids, text) in enumerate(answers)]

    monkeypatch.setattr(PatchEngine, "generate", wrong_on_most)
    result = CliRunner().invoke(app, ["dataset", "--size", "16", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "Warning: keep rate" in result.output and "under 50%" in result.output
    assert "kept " in result.output
    # what the model answered on a few of the pairs it got wrong, and the options that help
    assert result.output.count("-> ' 0' (want ") == 5 and "--shots" in result.output


def test_run_warns_on_a_low_keep_rate_and_patches_the_kept_pairs(tmp_path, monkeypatch):
    from addpatch.engine.patching import PatchEngine

    real_generate = PatchEngine.generate

    def wrong_on_most(self, layouts, max_new_tokens):
        answers = real_generate(self, layouts, max_new_tokens)
        return [(ids, text if i % 4 == 0 else " 0") for i, (ids, text) in enumerate(answers)]

    monkeypatch.setattr(PatchEngine, "generate", wrong_on_most)
    store = tmp_path / "s"
    result = CliRunner().invoke(
        app,
        ["run", "--size", "16", "--layers", "-1", "--interventions-only", "--store", str(store)],
    )
    assert result.exit_code == 0, result.output
    assert "Warning: keep rate" in result.output and "under 50%" in result.output
    kept = int(re.search(r"kept (\d+)/16 pairs", result.output).group(1))
    assert 0 < kept < 8
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        patched = conn.execute("SELECT count(DISTINCT example_id) FROM patched_outputs").fetchone()
    finally:
        conn.close()
    assert patched[0] == kept
