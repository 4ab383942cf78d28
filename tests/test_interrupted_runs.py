"""A real `addpatch run` killed (SIGKILL) while it starts and while it patches, resumed each time,
ends with exactly the rows of an uninterrupted run: nothing lost, nothing duplicated, nothing
half-written visible."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from cli.main import app

# one thread everywhere, so the killed processes and the in-process runs compute alike
ARGS = ["run", "--size", "24", "--batch-size", "1", "--interventions-only", "--threads", "1"]

# A fork server: one interpreter imports the CLI and PyTorch once, then forks a process per run
# it is sent (a JSON argv per line; it answers the child's pid, then `done` once the child has
# ended). Each run is a real process of its own, in its own session, that SIGKILL ends; only
# the ~10 s of imports is not paid again per run.
_FORK_SERVER = r"""
import json, os, sys
import addpatch.pipeline
from cli.main import main

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.setsid()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        sys.argv = ["addpatch", *json.loads(line)]
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        os._exit(code)
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("done", flush=True)
"""


class ForkServer:
    def __init__(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def start(self, args: list[str]) -> int:
        """Fork a process running `addpatch ARGS`; its pid (also its process group)."""
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(json.dumps(args) + "\n")
        self._server.stdin.flush()
        return int(self._server.stdout.readline())

    def wait(self) -> None:
        """Until the last process started has ended (and been reaped)."""
        assert self._server.stdout is not None
        assert self._server.stdout.readline().strip() == "done"

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.wait(timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"


def _batch_files(store: Path) -> int:
    """Batches a run has stored (whole files: a batch is renamed into outputs/ when written)."""
    return len(list((store / "outputs").rglob("batch-*.parquet")))


def _rows(store: Path) -> list[tuple]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        return conn.execute(
            "SELECT example_id, layer, position, token_ids, text, answer FROM patched_outputs "
            "ORDER BY example_id, layer, position"
        ).fetchall()
    finally:
        conn.close()


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    # the reference, the last resume and the check run in-process (through the app's error
    # boundary, as the script does); the runs that are killed are real processes
    reference = tmp_path / "reference"
    done = CliRunner().invoke(app, [*ARGS, "--store", str(reference)])
    assert done.exit_code == 0, done.output
    expected = _rows(reference)
    assert expected and len(expected) == len(set((r[0], r[1], r[2]) for r in expected))

    store = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    server = ForkServer()
    try:
        for attempt in range(4):
            pid = server.start([*ARGS, "--store", str(store)])
            if attempt == 0:  # while it starts up: model, store creation
                time.sleep(rng.uniform(0.05, 1.0))
            else:  # while it patches: just after it has stored one more batch
                before = _batch_files(store)
                deadline = time.monotonic() + 300
                while _alive(pid) and _batch_files(store) <= before:
                    assert time.monotonic() < deadline, "the run stored no batch in 300 s"
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.02))
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
                kills += 1
            server.wait()
    finally:
        server.close()
    assert kills >= 3  # the run really was interrupted, mid-patching too
    assert _batch_files(store) > 0
    final = CliRunner().invoke(app, [*ARGS, "--store", str(store)])
    assert final.exit_code == 0, final.output
    # the resume patched only what the killed runs had not stored
    [(left, total)] = re.findall(r"(\d+) of (\d+) batches to patch", final.output)
    assert int(left) < int(total)
    assert _rows(store) == expected

    check = CliRunner().invoke(app, ["store", "verify", "--repair", "--store", str(store)])
    assert check.exit_code == 0, check.output


def test_a_run_finishes_a_store_whose_creation_was_killed(tmp_path):
    """A kill between the catalog file appearing and its creation marker going (what the killed
    runs above can hit) leaves a half-made catalog: the next run completes it and patches."""
    from addpatch.pipeline import RunSpec, run_experiment
    from addpatch.store.store import CATALOG_FILE, CREATING_MARKER

    store = tmp_path / "half"
    store.mkdir()
    duckdb.connect(str(store / CATALOG_FILE)).close()  # the file is there, no table in it yet
    (store / CREATING_MARKER).write_text("addpatch pid 1\n")
    outcome = run_experiment(
        store, RunSpec(size=8, layers="0", positions="digits", interventions_only=True)
    )
    assert not (store / CREATING_MARKER).exists()
    assert outcome.run_id == 1 and len(_rows(store)) == outcome.result.interventions > 0
