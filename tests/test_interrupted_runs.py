"""A real `addpatch run` killed (SIGKILL) at random moments, resumed each time, ends with exactly
the rows of an uninterrupted run: nothing lost, nothing duplicated, nothing half-written visible."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ADDPATCH = str(Path(sys.executable).parent / "addpatch")
ARGS = ["run", "--size", "24", "--batch-size", "4", "--interventions-only"]


def _start(store: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [ADDPATCH, *ARGS, "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


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
    reference = tmp_path / "reference"
    done = subprocess.run(
        [ADDPATCH, *ARGS, "--store", str(reference)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    expected = _rows(reference)
    assert expected and len(expected) == len(set((r[0], r[1], r[2]) for r in expected))

    store = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        process = _start(store)
        time.sleep(rng.uniform(0.5, 12.0))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2  # the run really was interrupted
    final = subprocess.run([ADDPATCH, *ARGS, "--store", str(store)], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _rows(store) == expected

    check = subprocess.run(
        [ADDPATCH, "store", "verify", "--repair", "--store", str(store)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


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
