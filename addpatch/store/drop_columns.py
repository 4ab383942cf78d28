"""Drop columns of a catalog table that other tables reference, keeping every row.

DuckDB refuses `ALTER TABLE ... DROP COLUMN` on a table a foreign key points at (`datasets`,
`runs`, ...). The migrations' downgrades drop such columns here instead: the table and every
table that references it (directly or through others) are copied aside, dropped, created again
from their own CREATE statements (less the dropped columns) and filled back, in one transaction.

    drop_columns(conn, "datasets", ["shot_turns"])   # conn: a DuckDB or SQLAlchemy connection
"""

from __future__ import annotations

import re
from typing import Any


def _rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    result = conn.exec_driver_sql(sql) if hasattr(conn, "exec_driver_sql") else conn.execute(sql)
    return [tuple(row) for row in result.fetchall()]


def _run(conn: Any, sql: str) -> None:
    if hasattr(conn, "exec_driver_sql"):
        conn.exec_driver_sql(sql)
    else:
        conn.execute(sql)


def _references(create_sql: str) -> set[str]:
    return set(re.findall(r"REFERENCES\s+\"?(\w+)\"?\s*\(", create_sql))


def _without_columns(create_sql: str, table: str, columns: list[str]) -> str:
    """The CREATE statement less the definitions of `columns` (plain `name TYPE` ones, as the
    migrations add them)."""
    for column in columns:
        pattern = (
            rf',\s*"?{re.escape(column)}"?\s+[A-Z]+(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?(?=\s*[,)])'
        )
        create_sql, found = re.subn(pattern, "", create_sql, count=1)
        if not found:
            raise ValueError(f"{table} has no plain column {column} to drop")
    return create_sql


def drop_columns(conn: Any, table: str, columns: list[str]) -> None:
    """Drop `columns` of `table`, rebuilding it and the tables that reference it; rows kept."""
    creates = dict(_rows(conn, "SELECT table_name, sql FROM duckdb_tables()"))
    affected = [table]
    changed = True
    while changed:  # every table referencing one in `affected`
        changed = False
        for name, sql in creates.items():
            if name not in affected and _references(sql) & set(affected):
                affected.append(name)
                changed = True
    kept = {}
    for name in affected:
        names = [r[0] for r in _rows(conn, f'SELECT * FROM (DESCRIBE "{name}")')]
        kept[name] = [c for c in names if not (name == table and c in columns)]
        _run(conn, f'CREATE TEMP TABLE "_kept_{name}" AS SELECT * FROM "{name}"')
    order = _referenced_first(affected, creates)
    for name in reversed(order):  # referencing tables first
        _run(conn, f'DROP TABLE "{name}"')
    for name in order:
        sql = creates[name]
        _run(conn, _without_columns(sql, name, columns) if name == table else sql)
        listed = ", ".join(f'"{c}"' for c in kept[name])
        _run(conn, f'INSERT INTO "{name}" ({listed}) SELECT {listed} FROM "_kept_{name}"')
        _run(conn, f'DROP TABLE "_kept_{name}"')


def _referenced_first(names: list[str], creates: dict[str, str]) -> list[str]:
    """`names` ordered so that each comes after every table among them it references."""
    order: list[str] = []
    while len(order) < len(names):
        ready = [
            n
            for n in names
            if n not in order and _references(creates[n]) & set(names) <= set(order) | {n}
        ]
        assert ready, f"a cycle of foreign keys among {names}"
        order += ready
    return order
