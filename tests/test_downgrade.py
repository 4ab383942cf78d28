"""`alembic downgrade` works down to the first revision and back up, the rows and the scores of
a store with data intact (DuckDB cannot drop a column of a table others reference: those
downgrades rebuild the tables, `addpatch.store.drop_columns`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from addpatch.store.drop_columns import drop_columns
from addpatch.store.store import Store, head_revision
from cli.main import app

REPO = Path(__file__).resolve().parent.parent
TABLES = ["datasets", "examples", "filter_results", "labels", "models", "runs", "output_files"]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _alembic(store: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"store={store}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _counts(store: Path) -> dict[str, int]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def test_downgrade_to_the_first_revision_and_back_keeps_rows_and_scores(tmp_path):
    store = tmp_path / "store"
    made = _invoke(
        "run", "--size", "12", "--batch-size", "4", "--layers", "-1,0", "--positions", "digits",
        "--interventions-only", "--store", str(store),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    score = ["score", "--targets", "C_1,O_2", "--format", "csv", "--store", str(store)]
    before = _invoke(*score)
    assert before.exit_code == 0, before.output
    counts = _counts(store)
    assert all(counts[t] > 0 for t in TABLES), counts

    _alembic(store, "downgrade", "0001")
    assert Store(store).revision() == "0001"
    assert _counts(store) == counts
    upgraded = _invoke("store", "upgrade", "--store", str(store))
    assert upgraded.exit_code == 0, upgraded.output
    assert Store.open(store).revision() == head_revision()
    assert _counts(store) == counts
    after = _invoke(*score)
    assert after.exit_code == 0, after.output
    assert after.stdout == before.stdout


def test_dropping_a_referenced_column_keeps_every_row_and_key(tmp_path):
    conn = duckdb.connect(str(tmp_path / "c.duckdb"))
    conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, keep VARCHAR, gone INTEGER)")
    conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id))")
    conn.execute("CREATE TABLE b (a_id INTEGER REFERENCES a(id), c_id INTEGER REFERENCES c(id))")
    conn.execute("INSERT INTO a VALUES (1, 'x', 7), (2, 'y', 8)")
    conn.execute("INSERT INTO c VALUES (10, 1)")
    conn.execute("INSERT INTO b VALUES (2, 10)")
    with pytest.raises(duckdb.DependencyException):
        conn.execute("ALTER TABLE a DROP COLUMN gone")  # why the helper exists
    drop_columns(conn, "a", ["gone"])
    assert conn.execute("SELECT * FROM a ORDER BY id").fetchall() == [(1, "x"), (2, "y")]
    assert conn.execute("SELECT * FROM b").fetchall() == [(2, 10)]
    with pytest.raises(duckdb.ConstraintException):  # the foreign keys hold again
        conn.execute("INSERT INTO b VALUES (3, 10)")
    with pytest.raises(ValueError, match="no plain column"):
        drop_columns(conn, "a", ["absent"])
    conn.close()
