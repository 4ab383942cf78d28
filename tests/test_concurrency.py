"""Two processes on one store: a second writer gets a clear error; readers keep working."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ADDPATCH = str(Path(sys.executable).parent / "addpatch")


def test_second_writer_is_refused_and_readers_keep_working(tmp_path):
    store = tmp_path / "s"
    first = subprocess.run(
        [ADDPATCH, "dataset", "--size", "8", "--no-filter", "--store", str(store)],
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    writer = subprocess.Popen(
        [
            ADDPATCH,
            "run",
            "--size",
            "96",
            "--batch-size",
            "4",
            "--interventions-only",
            "--store",
            str(store),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = store / "writer.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "pid" not in (
            lock.read_text() if lock.exists() else ""
        ):
            time.sleep(0.2)
        second = subprocess.run(
            [ADDPATCH, "run", "--size", "8", "--store", str(store)], capture_output=True, text=True
        )
        assert second.returncode == 1
        assert "is being written by addpatch pid" in second.stderr
        reader = subprocess.run(
            [ADDPATCH, "query", "keep_rates", "--format", "csv", "--store", str(store)],
            capture_output=True,
            text=True,
        )
        assert reader.returncode == 0, reader.stderr
        assert reader.stdout.startswith("model,dataset")
        assert writer.poll() is None, "the reader should have run while the writer was still busy"
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
