"""Ad-hoc SQL on a store that can write nothing: one SELECT-like statement on a read-only
connection (the catalog is safe by the connection; files by refusing every other statement
type, COPY ... TO, EXPORT, ATTACH, INSTALL and SET included)."""

from __future__ import annotations

import duckdb
import polars as pl

from addpatch.errors import BadInput
from addpatch.store.read_check import check_outputs_on, reads_outputs
from addpatch.store.store import Store

ALLOWED = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


def check_read_only(statement: str) -> str:
    """The one read-only statement in `statement`; BadInput otherwise."""
    if not statement.strip():
        raise BadInput('the SQL is empty; give a query, e.g. "SELECT count(*) FROM runs"')
    try:
        parsed = duckdb.extract_statements(statement)
    except duckdb.Error as error:
        raise BadInput(f"the SQL failed: {str(error).splitlines()[0]}") from None
    if len(parsed) != 1:
        raise BadInput(f"give one SQL statement, not {len(parsed)}")
    kind = parsed[0].type
    explained = kind == duckdb.StatementType.EXPLAIN and "analyze" in statement.lower()
    if kind not in ALLOWED or explained:
        raise BadInput(
            f"addpatch sql runs read-only queries (SELECT, WITH, SHOW, DESCRIBE), not "
            f"{kind.name}; save a result with --format csv/json/parquet --output FILE"
        )
    return statement


def run_read_only(store: Store, statement: str) -> pl.DataFrame:
    """The statement's result; one that names the outputs first checks every registered file's
    footer (`addpatch.store.read_check`): StoreError naming a damaged file."""
    check_read_only(statement)
    with store.connect(read_only=True) as conn:
        if reads_outputs(statement):
            check_outputs_on(conn, store.root)
        try:
            return conn.execute(statement).pl()
        except duckdb.Error as error:
            raise BadInput(f"the SQL failed: {str(error).splitlines()[0]}") from None
