"""Two processes on one store: a second writer gets a clear error; readers keep working."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.store_files import store_snapshot

ADDPATCH = str(Path(sys.executable).parent / "addpatch")


# holds the store's writer lock, as a writing `addpatch run` does, until its stdin closes: the
# refusal is then checked while a writer provably holds the store, whatever the machine's speed
HOLD_WRITER_LOCK = (
    "import sys\n"
    "from addpatch.store.store import Store\n"
    "with Store.open(sys.argv[1]).writer():\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


def test_second_writer_is_refused_and_readers_keep_working(tmp_path):
    """While another process writes the store, `addpatch run` (in-process, through the app's
    error boundary) is refused with one line naming that process, and a reader runs."""
    from typer.testing import CliRunner

    from cli.main import app

    store = tmp_path / "s"
    first = CliRunner().invoke(
        app, ["dataset", "--size", "8", "--no-filter", "--store", str(store)]
    )
    assert first.exit_code == 0, first.output
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITER_LOCK, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        before = store_snapshot(store)
        second = CliRunner().invoke(app, ["run", "--size", "8", "--store", str(store)])
        assert second.exit_code == 1
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert f"is being written by addpatch pid {holder.pid}" in lines[0]
        assert store_snapshot(store) == before  # the refused writer wrote nothing
        reader = CliRunner().invoke(
            app, ["query", "keep_rates", "--format", "csv", "--store", str(store)]
        )
        assert reader.exit_code == 0, reader.output
        assert reader.stdout.startswith("model,dataset")
        assert holder.poll() is None, "the reader should have run while the writer held the store"
    finally:
        _, err = holder.communicate(input="", timeout=60)
    assert holder.returncode == 0, err
    # the lock goes with its holder: the next writer gets in
    from addpatch.store.store import Store

    with Store.open(store).writer():
        assert "addpatch pid" in (store / "writer.lock").read_text()


def test_repair_score_and_report_are_refused_while_a_sweep_writes(tmp_path):
    """verify --repair, and score/report that would store labels, wait for no writer: they are
    refused with one line while a sweep writes, and the sweep completes with every row."""
    import duckdb
    from typer.testing import CliRunner

    from cli.main import app

    store = tmp_path / "s"
    # no scores or report in the sweeps: what is checked is the store, and the refusals
    cells = ["--layers", "-1,0", "--positions", "digits", "--interventions-only"]
    first = CliRunner().invoke(
        app,
        ["sweep", "--models", "tiny-adder-digits", "--size", "8", *cells, "--store", str(store)],
    )
    assert first.exit_code == 0, first.output
    sweep = subprocess.Popen(
        [ADDPATCH, "sweep", "--models", "tiny-adder-digits", "--digits", "3", "--size", "48"]
        + ["--batch-size", "4", "--batches-per-task", "16", *cells, "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = store / "writer.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "pid" not in lock.read_text():
            time.sleep(0.1)
        joint = "digit_0_0+digit_1_0"  # not labelled yet: scoring it would write labels
        for args in (
            ["store", "verify", "--repair"],
            ["score", "--run-id", "1", "--targets", joint],
            ["report", "--run-id", "1", "--targets", joint, "--out", str(tmp_path / "r")],
        ):
            refused = CliRunner().invoke(app, [*args, "--store", str(store)])
            lines = [line for line in refused.stderr.splitlines() if line.strip()]
            assert refused.exit_code == 1, refused.output
            assert len(lines) == 1 and "is being written by addpatch pid" in lines[0], lines
        reader = CliRunner().invoke(
            app, ["query", "keep_rates", "--format", "csv", "--store", str(store)]
        )
        assert reader.exit_code == 0 and reader.stdout.startswith("model,dataset"), reader.output
    finally:
        out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err
    check = CliRunner().invoke(app, ["store", "verify", "--store", str(store)])
    assert check.exit_code == 0 and "Store is consistent" in check.output, check.output
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        per_run = conn.execute(
            "SELECT r.id, r.num_examples * json_array_length(r.layers_json) * "
            "(SELECT count(*) FROM run_positions p WHERE p.run_id = r.id), "
            "(SELECT count(*) FROM patched_outputs o WHERE o.run_id = r.id), "
            "(SELECT count(DISTINCT (o.example_id, o.layer, o.position)) FROM patched_outputs o "
            " WHERE o.run_id = r.id) FROM runs r ORDER BY r.id"
        ).fetchall()
    finally:
        conn.close()
    assert len(per_run) == 2
    for run_id, expected, stored, distinct in per_run:
        assert expected == stored == distinct, run_id
