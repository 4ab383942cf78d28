"""Alembic environment for the addpatch catalog (a DuckDB file inside the store directory).

The database URL comes from the caller: `addpatch` passes a connection in
`config.attributes["connection"]`; the `alembic` command takes `-x store=DIR`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from alembic.ddl.impl import DefaultImpl
from sqlalchemy import create_engine

from addpatch.store.schema import Base


class AlembicDuckDBImpl(DefaultImpl):
    """Lets alembic drive DuckDB (as duckdb-engine's README describes)."""

    __dialect__ = "duckdb"


def _same_type(context, inspected_column, metadata_column, inspected_type, metadata_type):
    """duckdb-engine reflects TEXT as VARCHAR and DOUBLE as FLOAT: compare type families."""
    families = (sa.String, sa.Float, sa.Integer, sa.Boolean, sa.DateTime)
    for family in families:
        if isinstance(metadata_type, family):
            return not isinstance(inspected_type, family)
    return None  # alembic's default comparison


def _include(obj, name, type_, reflected, compare_to) -> bool:
    """duckdb-engine cannot reflect unique constraints; they are created by the migrations."""
    return not (type_ == "unique_constraint" and not reflected)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=_same_type,
        include_object=_include,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    store = context.get_x_argument(as_dictionary=True).get("store")
    if not store:
        raise SystemExit("pass the store directory: alembic -x store=./addpatch-store upgrade head")
    engine = create_engine(f"duckdb:///{store}/catalog.duckdb")
    with engine.begin() as conn:
        conn.exec_driver_sql("SET file_search_path = ?", (str(store),))
        _run(conn)


main()
