"""The store through its real components: DuckDB file, alembic migrations, Parquet files."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from addpatch.errors import SchemaMismatch, StoreError
from addpatch.store import catalog
from addpatch.store.outputs import output_relpath, write_output_file
from addpatch.store.schema import Base
from addpatch.store.store import CATALOG_FILE, Store, head_revision

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_0001 = Path(__file__).parent / "data" / "store-0001"


def _outputs_table(example_ids: list[int], answers: list[int | None]) -> pa.Table:
    """Patched-output rows in the engine's schema (one token each)."""
    n = len(example_ids)
    return pa.table(
        {
            "example_id": pa.array(example_ids, pa.int64()),
            "layer": pa.array([0] * n, pa.int16()),
            "position": pa.array([0] * n, pa.int16()),
            "token_ids": pa.array([[1]] * n, pa.list_(pa.int32())),
            "text": ["x"] * n,
            "answer": pa.array(answers, pa.int64()),
            "top_ids": pa.array([[1]] * n, pa.list_(pa.int32())),
            "top_logprobs": pa.array([[0.0]] * n, pa.list_(pa.float32())),
        }
    )


def test_blank_store_upgrades_to_head_with_every_model_table(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    assert store.revision() == head_revision()
    with store.connect(read_only=True) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        for table in Base.metadata.sorted_tables:
            columns = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                    [table.name],
                ).fetchall()
            }
            assert columns == {c.name for c in table.columns}, table.name
        assert "patched_outputs" in tables  # the view, empty but typed
        assert conn.execute("SELECT count(*) FROM patched_outputs").fetchone() == (0,)


def test_alembic_check_finds_no_drift(tmp_path):
    Store.open(tmp_path / "s", create=True)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"store={tmp_path / 's'}", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_store_written_at_first_revision_upgrades_with_data_intact(tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(FIXTURE_0001, copy)
    before = duckdb.connect(str(copy / CATALOG_FILE), read_only=True)
    datasets_before = before.execute("SELECT * FROM datasets ORDER BY id").fetchall()
    examples_before = before.execute("SELECT count(*) FROM examples").fetchone()
    before.close()
    store = Store(copy)
    backup = store.upgrade()
    assert backup is not None and backup.exists()
    assert store.revision() == head_revision() != "0001"
    with store.connect(read_only=True) as conn:
        after = conn.execute("SELECT * FROM datasets ORDER BY id").fetchall()
        assert [row[: len(datasets_before[0])] for row in after] == datasets_before
        assert conn.execute("SELECT count(*) FROM examples").fetchone() == examples_before
        dataset_ids = [row[0] for row in after]
    from addpatch.experiment.datasets import load_pairs

    for dataset_id in dataset_ids:  # old datasets reload to exactly their stored prompts
        _, _, pairs = load_pairs(store, dataset_id)
        assert pairs


def test_store_at_unknown_revision_is_refused_and_untouched(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.connect() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    before = (store.catalog).read_bytes()
    with pytest.raises(SchemaMismatch, match="newer addpatch"):
        Store.open(store.root)
    assert store.catalog.read_bytes() == before


def test_store_at_older_revision_names_the_upgrade_command(tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(FIXTURE_0001, copy)
    before = (copy / CATALOG_FILE).read_bytes()
    with pytest.raises(SchemaMismatch, match="addpatch store upgrade"):
        Store.open(copy)
    assert (copy / CATALOG_FILE).read_bytes() == before


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="addpatch run"):
        Store.open(tmp_path / "nowhere")


def _make_run(store: Store, digit_tokens: list[tuple[int, tuple[int, ...]]] | None = None) -> int:
    """A model, a one-example dataset and a run, through the catalog functions."""
    with store.connect() as conn:
        model_id = catalog.upsert_model(
            conn=conn,
            record=catalog.ModelRecord("m", "/m", None, "w" * 64, "t" * 64, "Llama", 2, 8),
        )
        examples = pa.table(
            {
                "example_id": [0],
                "base_addends": ["[1, 2]"],
                "base_prompt": ["p"],
                "base_sum": [3],
                "cf_addends": ["[3, 4]"],
                "cf_prompt": ["q"],
                "cf_sum": [7],
            }
        )
        dataset_id = catalog.insert_dataset(
            conn=conn,
            name="d",
            kind="random",
            num_addends=2,
            num_digits=1,
            template="t",
            seed=0,
            options={},
            examples=examples,
        )
        return catalog.insert_run(
            conn=conn,
            model_id=model_id,
            dataset_id=dataset_id,
            config_sha256="c",
            layers=[-1],
            position_set="all",
            positions=[("bos", "<bos>")],
            max_new_tokens=3,
            dtype="float32",
            device="cpu",
            batch_size=1,
            seed=0,
            num_examples=1,
            num_batches=1,
            provenance={"digit_tokens": digit_tokens or []},
            digit_tokens=digit_tokens,
        )


def test_registered_files_only_are_visible_and_appear_atomically(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    run_id = _make_run(store)
    table = _outputs_table([0, 1], [5, None])
    relpath = output_relpath(1, run_id, 0)
    rows, sha = write_output_file(store.root, relpath, run_id, table)
    assert rows == 2 and len(sha) == 64
    assert not list((store.root / "tmp").iterdir())  # nothing half-written left behind
    with store.connect() as conn:
        assert conn.execute("SELECT count(*) FROM patched_outputs").fetchone() == (0,)
        catalog.register_output_file(
            conn=conn, run_id=run_id, batch_index=0, path=relpath, rows=rows, sha256=sha
        )
        assert conn.execute(
            "SELECT run_id, count(*) FROM patched_outputs GROUP BY 1"
        ).fetchall() == [(run_id, 2)]
    assert f"model=1/run={run_id}/" in relpath


def test_view_paths_resolve_from_any_directory_and_a_moved_store(tmp_path, monkeypatch):
    store = Store.open(tmp_path / "s", create=True)
    run_id = _make_run(store)
    table = _outputs_table([3], [1])
    relpath = output_relpath(1, run_id, 0)
    rows, sha = write_output_file(store.root, relpath, run_id, table)
    with store.connect() as conn:
        catalog.register_output_file(
            conn=conn, run_id=run_id, batch_index=0, path=relpath, rows=rows, sha256=sha
        )
    moved = tmp_path / "elsewhere"
    shutil.move(store.root, moved)
    monkeypatch.chdir("/")
    with Store.open(moved).connect(read_only=True) as conn:
        assert conn.execute("SELECT example_id FROM patched_outputs").fetchall() == [(3,)]


def test_verify_reports_missing_corrupt_and_orphan_files_and_repairs_orphans(tmp_path):
    from addpatch.store.verify import verify_store

    store = Store.open(tmp_path / "s", create=True)
    run_id = _make_run(store)
    table = _outputs_table([0], [1])
    paths = []
    for index in range(3):  # one example per batch, each its own
        relpath = output_relpath(1, run_id, index)
        rows, sha = write_output_file(store.root, relpath, run_id, _outputs_table([index], [1]))
        with store.connect() as conn:
            catalog.register_output_file(
                conn=conn, run_id=run_id, batch_index=index, path=relpath, rows=rows, sha256=sha
            )
        paths.append(relpath)
    assert verify_store(store).ok
    (store.root / paths[0]).unlink()  # missing
    (store.root / paths[1]).write_bytes(b"garbage")  # corrupt
    orphan = store.root / output_relpath(1, run_id, 9)  # written, never registered
    write_output_file(store.root, output_relpath(1, run_id, 9), run_id, table)
    (store.root / "tmp" / "half.parquet.1.tmp").write_bytes(b"partial")
    result = verify_store(store)
    assert result.missing == [paths[0]] and result.corrupt == [paths[1]]
    assert sorted(result.orphans) == sorted(
        [orphan.relative_to(store.root).as_posix(), "tmp/half.parquet.1.tmp"]
    )
    repaired = verify_store(store, repair=True)
    assert sorted(repaired.removed) == sorted(result.orphans)
    assert not orphan.exists() and (store.root / paths[2]).exists()


def test_a_new_run_records_its_digit_tokens_in_their_table(tmp_path):
    from addpatch.store.runs import run_digit_tokens

    store = Store.open(tmp_path / "s", create=True)
    groups = [(0, (0, 1, 2)), (1, (0, 1))]  # e.g. `123` + `4` and `56` + `7`
    run_id = _make_run(store, digit_tokens=groups)
    with store.connect(read_only=True) as conn:
        assert run_digit_tokens(conn, [run_id, 99]) == {run_id: groups, 99: []}
        rows = conn.execute(
            "SELECT group_index, addend, digit FROM run_digit_tokens ORDER BY ALL"
        ).fetchall()
    assert rows == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (1, 1, 0), (1, 1, 1)]


# -- where SQL lives ---------------------------------------------------------------------------
SQL_LAYER = ("addpatch/store/", "addpatch/queries.py")
# an INSERT whose table name is followed by the rows, not by the list of columns they fill
POSITIONAL_INSERT = re.compile(
    r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+\S+\s+(?:VALUES|SELECT|WITH)\b", re.I
)
# a string that is an SQL statement (the project writes SQL keywords in capitals)
SQL_STATEMENT = re.compile(
    r"^\s*(?:SELECT\b.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b"
    r"|CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|VIEW|MACRO)\b|WITH\s+\w+\s+AS\s*\()",
    re.S,
)
SQL_CALLS = {"execute", "executemany", "sql", "exec_driver_sql"}


def _strings(tree: ast.AST) -> list[str]:
    """Every string literal, implicit concatenations joined, f-strings with `{}` for values."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            found.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            )
    return found


def _sources(*dirs: str) -> list[tuple[str, ast.AST]]:
    files = sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text(), str(p))) for p in files]


def test_the_source_checks_catch_what_they_look_for():
    assert POSITIONAL_INSERT.search("INSERT INTO runs VALUES (?, ?)")
    assert POSITIONAL_INSERT.search("insert into labels select ?, target FROM new_labels")
    assert not POSITIONAL_INSERT.search("INSERT INTO runs (id, status) VALUES (?, ?)")
    assert not POSITIONAL_INSERT.search("INSERT INTO {} ({}) VALUES ({})")
    assert SQL_STATEMENT.search("SELECT id FROM runs WHERE id = ?")
    assert SQL_STATEMENT.search("\n    WITH cells AS (SELECT 1)")
    assert not SQL_STATEMENT.search("Run ad-hoc SQL: SELECT layer FROM patched_outputs")
    assert not SQL_STATEMENT.search("SELECT a run to score")
    tree = ast.parse('conn.execute("SELECT id " "FROM runs")')
    assert any(SQL_STATEMENT.search(s) for s in _strings(tree))


def test_every_insert_names_its_columns():
    offenders = [
        f"{path}: {text.strip()[:80]!r}"
        for path, tree in _sources("addpatch", "cli", "migrations")
        for text in _strings(tree)
        if POSITIONAL_INSERT.search(text)
    ]
    offenders += [
        f"{p.relative_to(ROOT)}"
        for p in sorted((ROOT / "queries").glob("*.sql"))
        if POSITIONAL_INSERT.search(p.read_text())
    ]
    assert offenders == []


def test_catalog_sql_lives_in_the_store_and_query_layers():
    offenders = []
    for path, tree in _sources("addpatch", "cli"):
        if path.startswith(SQL_LAYER):
            continue
        offenders += [
            f"{path}:{node.lineno}: .{node.func.attr}()"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS
        ]
        offenders += [
            f"{path}: {s.strip()[:80]!r}" for s in _strings(tree) if SQL_STATEMENT.search(s)
        ]
    assert offenders == []
