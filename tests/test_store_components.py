"""A store written before components (revision 0002) upgrades, and reads and scores the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from addpatch.queries import get_query, run_query
from addpatch.store.outputs import write_output_file
from addpatch.store.store import CATALOG_FILE, Store, head_revision

FIXTURE_0002 = Path(__file__).parent / "data" / "store-0002"
EXPORTED_AT = "/tmp/addpatch-store-0002-export"  # the directory `EXPORT DATABASE` wrote to

# best_cells.sql as it was before components: a query written for residual-only stores
OLD_BEST_CELLS = """
SELECT *
FROM iia_cells(getvariable('run_id'), getvariable('targets'))
QUALIFY row_number() OVER (
    PARTITION BY run_id, target ORDER BY iia DESC, layer, position
) <= coalesce(getvariable('top'), 1)
ORDER BY run_id, target, iia DESC, layer, position
"""
FIGURES = "run_id, model, num_digits, target, layer, position, position_label, iia, n, baseline"


def store_at_0002(tmp_path: Path) -> Path:
    """The fixture store (written by addpatch at revision 0002: a run of 8 examples, its Parquet
    outputs, labels), its catalog rebuilt from the DuckDB export kept in git."""
    root = tmp_path / "store-0002"
    shutil.copytree(FIXTURE_0002, root)
    export = root / "catalog-export"
    load = export / "load.sql"
    load.write_text(load.read_text().replace(EXPORTED_AT, str(export)))
    conn = duckdb.connect(str(root / CATALOG_FILE))
    conn.execute(f"SET file_search_path = '{root}'")
    conn.execute(f"IMPORT DATABASE '{export}'")
    conn.close()
    return root


def _figures(conn: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[tuple]]:
    """Every cell's figures, and the best cells by the query written before components."""
    cells = conn.execute(
        f"SELECT {FIGURES} FROM iia_cells(NULL, NULL) ORDER BY run_id, target, layer, position"
    ).fetchall()
    conn.execute("SET VARIABLE top = 1")
    best = conn.execute(f"SELECT {FIGURES} FROM ({OLD_BEST_CELLS})").fetchall()
    return cells, best


def _old_figures(root: Path) -> tuple[list[tuple], list[tuple]]:
    conn = duckdb.connect(str(root / CATALOG_FILE), read_only=True)
    conn.execute(f"SET file_search_path = '{root}'")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)
    figures = _figures(conn)
    conn.close()
    return figures


def test_store_at_0002_upgrades_and_scores_the_same(tmp_path):
    root = store_at_0002(tmp_path)
    before, best_before = _old_figures(root)
    assert len(before) > 0 and len(best_before) > 0
    store = Store(root)
    assert store.upgrade() is not None
    assert store.revision() == head_revision() != "0002"
    with store.connect(read_only=True) as conn:
        # old files read as the residual stream, no head
        kinds = conn.execute(
            "SELECT component, head, count(*) FROM patched_outputs GROUP BY ALL"
        ).fetchall()
        assert kinds == [("resid", None, 72)]
        # the macro, and the query as written before components, give the same figures
        assert _figures(conn) == (before, best_before)
        by_cell = run_query(conn, get_query("iia_by_cell"), {})
        assert by_cell.select(FIGURES.split(", ")).rows() == before
        assert set(by_cell.get_column("component")) == {"resid"}
        best = run_query(conn, get_query("best_cells"), {"top": 1})
        assert best.select(FIGURES.split(", ")).rows() == best_before
        for query in ("digit_partial_credit", "target_across_models"):
            params = {"target": "C_1"} if query == "target_across_models" else {}
            frame = run_query(conn, get_query(query), params)
            assert frame.height > 0 and set(frame.get_column("component")) == {"resid"}


def _table(component: str | None, head: int | None, answers: list[int]) -> pa.Table:
    n = len(answers)
    columns = {
        "example_id": pa.array(list(range(n)), pa.int64()),
        "layer": pa.array([0] * n, pa.int16()),
        "position": pa.array([0] * n, pa.int16()),
        "token_ids": pa.array([[1]] * n, pa.list_(pa.int32())),
        "text": [str(a) for a in answers],
        "answer": pa.array(answers, pa.int64()),
        "top_ids": pa.array([[1]] * n, pa.list_(pa.int32())),
        "top_logprobs": pa.array([[0.0]] * n, pa.list_(pa.float32())),
    }
    if component is not None:
        columns["component"] = pa.array([component] * n, pa.string())
        columns["head"] = pa.array([head] * n, pa.int16())
    return pa.table(columns)


def test_view_reads_old_and_new_files_together(tmp_path):
    root = store_at_0002(tmp_path)
    store = Store(root)
    store.upgrade()
    extra = [
        ("outputs/model=1/run=1/batch-00090.parquet", _table("heads", 3, [1, 2])),
        ("outputs/model=1/run=1/batch-00091.parquet", _table("mlp", None, [5])),
    ]
    with store.connect() as conn:
        for index, (relpath, table) in enumerate(extra):
            rows, sha = write_output_file(root, relpath, 1, table)
            conn.execute(
                "INSERT INTO output_files VALUES (?, 1, ?, ?, ?, ?, now())",
                [100 + index, 90 + index, relpath, rows, sha],
            )
        from addpatch.store.outputs_view import refresh_outputs_view

        refresh_outputs_view(conn)
        counts = conn.execute(
            "SELECT component, head, count(*) FROM patched_outputs GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert counts == [("heads", 3, 2), ("mlp", None, 1), ("resid", None, 72)]


@pytest.mark.parametrize("component", ["attn", "heads"])
def test_queries_filter_by_component(tmp_path, component):
    root = store_at_0002(tmp_path)
    store = Store(root)
    store.upgrade()
    with store.connect(read_only=True) as conn:
        frame = run_query(conn, get_query("best_cells"), {"component": component})
        assert frame.height == 0  # the old store has residual-stream outputs only
        frame = run_query(conn, get_query("best_cells"), {"component": "resid"})
        assert frame.height > 0


def test_digit_tokens_recorded_in_provenance_move_to_their_table_on_upgrade(tmp_path):
    """A run stored before run_digit_tokens (its groups in provenance_json only) upgrades: the
    groups are copied to the table and the report's default targets stay what they were."""
    import json

    from addpatch.experiment.reporting import run_default_targets
    from addpatch.store.runs import run_digit_tokens
    from addpatch.task.addition import AdditionTask
    from addpatch.task.labels import default_targets

    root = store_at_0002(tmp_path)
    conn = duckdb.connect(str(root / CATALOG_FILE))
    (prov,) = conn.execute("SELECT provenance_json FROM runs WHERE id = 1").fetchone()
    provenance = {**json.loads(prov), "digit_tokens": [[0, [0, 1]], [1, [0, 1]]]}
    conn.execute(
        "UPDATE runs SET provenance_json = ? WHERE id = 1", [json.dumps(provenance, sort_keys=True)]
    )
    (k, d) = conn.execute(
        "SELECT num_addends, num_digits FROM datasets JOIN runs r ON r.dataset_id = datasets.id "
        "WHERE r.id = 1"
    ).fetchone()
    conn.close()
    # what the report chose before: the groups read back from the provenance
    before = default_targets(AdditionTask(k, d), provenance["digit_tokens"])
    assert "digit_0_0+digit_0_1" in before and "digit_1_0+digit_1_1" in before

    store = Store(root)
    assert store.upgrade() is not None
    assert store.revision() == head_revision()
    with store.connect(read_only=True) as conn:
        assert run_digit_tokens(conn, [1]) == {1: [(0, (0, 1)), (1, (0, 1))]}
        (kept,) = conn.execute("SELECT provenance_json FROM runs WHERE id = 1").fetchone()
    assert json.loads(kept)["digit_tokens"] == provenance["digit_tokens"]  # the record stays
    assert run_default_targets(store, [1]) == {1: before}
