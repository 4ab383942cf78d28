"""Run the SQL files in `queries/` with typed, bound parameters.

Each file declares its parameters in header comments (`-- param run_id INTEGER  what it is`) and
reads them with DuckDB's `getvariable('run_id')`, so the same file runs unchanged in the DuckDB
shell after `SET VARIABLE run_id = 3;`. Values given to addpatch are checked against the declared
type and bound as parameters, never pasted into the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from addpatch.errors import BadInput, StoreError
from addpatch.resources import queries_dir
from addpatch.store.read_check import check_outputs_on, connection_root, reads_outputs

_PARAM = re.compile(r"^--\s*param\s+(\w+)\s+([A-Z]+(?:\[\])?)\s*(.*)$")
_TYPES = {"INTEGER", "VARCHAR", "DOUBLE", "BOOLEAN", "INTEGER[]", "VARCHAR[]"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class QueryParam:
    name: str
    type: str
    help: str


@dataclass(frozen=True)
class Query:
    name: str
    path: Path
    description: str
    params: dict[str, QueryParam]

    @property
    def sql(self) -> str:
        return self.path.read_text()


def _parse(path: Path) -> Query:
    description: list[str] = []
    params: dict[str, QueryParam] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        match = _PARAM.match(line)
        if match:
            name, kind, help_text = match.groups()
            assert kind in _TYPES, f"{path.name}: unsupported parameter type {kind}"
            params[name] = QueryParam(name, kind, help_text.strip())
        else:
            description.append(line.removeprefix("--").strip())
    return Query(path.stem, path, " ".join(description), params)


def available_queries() -> dict[str, Query]:
    return {p.stem: _parse(p) for p in sorted(queries_dir().glob("*.sql"))}


def get_query(name: str) -> Query:
    queries = available_queries()
    if name not in queries:
        raise BadInput(f"unknown query {name!r}; available: {', '.join(queries)}")
    return queries[name]


def _convert(param: QueryParam, raw: object) -> object:
    if param.type.endswith("[]"):
        items = (
            raw if isinstance(raw, list | tuple) else [x for x in str(raw).split(",") if x.strip()]
        )
        if not items:
            raise BadInput(f"parameter {param.name} is empty; give values like a,b or leave it out")
        element = QueryParam(param.name, param.type[:-2], param.help)
        return [_convert(element, item) for item in items]
    if param.type == "BOOLEAN":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text not in _TRUE | _FALSE:
            raise BadInput(f"parameter {param.name} must be true or false, got {raw!r}")
        return text in _TRUE
    try:
        if param.type == "INTEGER":
            return int(str(raw).strip()) if not isinstance(raw, int) else raw
        if param.type == "DOUBLE":
            return float(str(raw).strip()) if not isinstance(raw, float) else raw
    except ValueError:
        raise BadInput(
            f"parameter {param.name} must be {param.type.lower()}, got {raw!r}"
        ) from None
    return str(raw).strip()


def bind_params(query: Query, params: Mapping[str, object]) -> dict[str, object]:
    unknown = sorted(set(params) - set(query.params))
    if unknown:
        accepted = ", ".join(query.params) or "none"
        raise BadInput(f"query {query.name} has no parameter {unknown[0]!r}; it takes: {accepted}")
    # None leaves a parameter unset (NULL: no filter), as leaving it out does
    return {
        name: _convert(query.params[name], value)
        for name, value in params.items()
        if value is not None
    }


def run_query(
    conn: duckdb.DuckDBPyConnection,
    query: Query,
    params: Mapping[str, object] | None = None,
    *,
    check_files: bool = True,
) -> pl.DataFrame:
    """The query's result as a polars DataFrame; unset parameters (left out or None) read as
    NULL (= no filter).

    A query of the outputs first checks the footers of the files it may read (its `run_id`'s,
    else every run's): StoreError naming a damaged file (`check_files=False` when the caller
    has checked them already)."""
    values = bind_params(query, params or {})
    if check_files and reads_outputs(query.sql):
        run_id = values.get("run_id")
        runs = None if run_id is None else [int(str(run_id))]
        check_outputs_on(conn, connection_root(conn), runs)
    for name in query.params:
        conn.execute(f"RESET VARIABLE {name}")
    for name, value in values.items():
        conn.execute(f"SET VARIABLE {name} = ?", [value])
    try:
        return conn.execute(query.sql).pl()
    except duckdb.Error as error:
        message = str(error).splitlines()[0]
        if "parquet" in message.lower() or isinstance(error, duckdb.IOException):
            raise StoreError(
                f"query {query.name} could not read the stored outputs ({message}); "
                "run `addpatch store verify` to find the damaged file"
            ) from None
        given = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "no parameters"
        raise BadInput(
            f"query {query.name} failed with {given} ({message}); check the parameters "
            "(`addpatch query` lists them)"
        ) from None


def parse_param_args(pairs: list[str]) -> dict[str, str]:
    """`["run_id=3", "targets=C_1,O_2"]` -> dict; BadInput for anything not `name=value`."""
    params: dict[str, str] = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"\w+", name.strip()):
            raise BadInput(f"cannot read parameter {item!r}; write --param name=value")
        params[name.strip()] = value
    return params
