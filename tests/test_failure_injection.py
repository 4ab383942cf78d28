"""Failures injected into a real `addpatch run` at several moments, from each layer (model loading,
DuckDB, the filesystem, Ctrl-C): one line, the right exit code, no traceback, nothing stored
half-way; rerunning the same command resumes to exactly the uninterrupted run's rows."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app

ARGS = [
    "run", "--size", "12", "--batch-size", "4", "--layers", "0", "--positions", "digits",
    "--interventions-only",
]  # fmt: skip


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[tuple]:
    store = tmp_path_factory.mktemp("reference") / "store"
    result = CliRunner().invoke(app, [*ARGS, "--store", str(store)])
    assert result.exit_code == 0, result.output
    rows = _rows(store)
    assert rows and len(rows) == len({r[:3] for r in rows})
    return rows


def _failing_on(call: int, original: Callable, error: BaseException) -> Callable:
    """`original`, except that its `call`-th call raises `error`."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return original(*args, **kwargs)

    return wrapper


def _patch_loading(monkeypatch, error):
    from addpatch.models import loading

    real = loading.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        loading.AutoModelForCausalLM, "from_pretrained", _failing_on(1, real, error)
    )


def _patch_register(call: int):
    def patch(monkeypatch, error):
        from addpatch.store import catalog

        monkeypatch.setattr(
            catalog,
            "register_output_file",
            _failing_on(call, catalog.register_output_file, error),
        )

    return patch


def _patch_inside_commit(call: int):
    """Fail inside the registration transaction, after its INSERT (the view refresh)."""

    def patch(monkeypatch, error):
        from addpatch.store import outputs_view

        monkeypatch.setattr(
            outputs_view,
            "refresh_outputs_view",
            _failing_on(call, outputs_view.refresh_outputs_view, error),
        )

    return patch


def _patch_parquet_write(call: int):
    def patch(monkeypatch, error):
        from addpatch.store import outputs

        monkeypatch.setattr(
            outputs.pq, "write_table", _failing_on(call, outputs.pq.write_table, error)
        )

    return patch


def _patch_patching(call: int):
    def patch(monkeypatch, error):
        from addpatch.engine.patching import PatchEngine

        monkeypatch.setattr(PatchEngine, "sweep", _failing_on(call, PatchEngine.sweep, error))

    return patch


# (id, patch, error, exit code, text in the one line, whether the store exists afterwards)
CASES = [
    ("loading-crash", _patch_loading, RuntimeError("simulated loader crash"), 1, "a bug", False),
    ("loading-ctrl-c", _patch_loading, KeyboardInterrupt(), 130, "Interrupted", False),
    (
        "duckdb-register",
        _patch_register(2),
        duckdb.IOException("simulated"),
        1,
        "IOException",
        True,
    ),
    ("ctrl-c-in-commit", _patch_inside_commit(3), KeyboardInterrupt(), 130, "Interrupted", True),
    (
        "duckdb-interrupt-in-commit",
        _patch_inside_commit(2),
        duckdb.InterruptException("INTERRUPT Error: Interrupted!"),
        130,
        "Interrupted",
        True,
    ),
    (
        "disk-full",
        _patch_parquet_write(3),
        OSError(errno.ENOSPC, "No space left on device"),
        1,
        "no space left on device",
        True,
    ),
    (
        "permission",
        _patch_parquet_write(2),
        PermissionError(errno.EACCES, "Permission denied", "outputs/batch.parquet"),
        1,
        "Permission denied",
        True,
    ),
    ("ctrl-c-while-patching", _patch_patching(2), KeyboardInterrupt(), 130, "Interrupted", True),
]


@pytest.mark.parametrize(
    ("patch", "error", "code", "text", "store_exists"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_injected_failure_is_one_line_and_the_rerun_resumes(
    reference, tmp_path, monkeypatch, patch, error, code, text, store_exists
):
    from addpatch.store.store import Store
    from addpatch.store.verify import verify_store
    from addpatch.sweep.tasks import forget_loaded_models

    forget_loaded_models()  # the reference run left its model loaded in this process
    store = tmp_path / "store"
    with monkeypatch.context() as injected:
        patch(injected, error)
        failed = CliRunner().invoke(app, [*ARGS, "--store", str(store)])
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.exit_code == code, failed.output
    assert len(lines) == 1 and text in lines[0], failed.stderr
    assert "Traceback" not in failed.output and "rollback" not in failed.output
    assert isinstance(failed.exception, SystemExit | None)
    assert store.exists() == store_exists
    if store_exists:  # what is stored is whole: registered files only, none damaged
        assert not verify_store(Store.open(store)).damaged

    resumed = CliRunner().invoke(app, [*ARGS, "--store", str(store)])
    assert resumed.exit_code == 0, resumed.output
    assert _rows(store) == reference
    assert verify_store(Store.open(store), repair=True).ok
    assert verify_store(Store.open(store)).ok
