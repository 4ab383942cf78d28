"""The Parquet schema of patched outputs: defined once, here.

The engine writes batches in `ENGINE_OUTPUT_SCHEMA` (every column but `run_id`, which the store
adds when it writes a file); the `patched_outputs` view and the migrations that define it spell
their typed empty row set from the column lists below. Each migration uses the frozen list of its
own revision, so a later change to the current columns never rewrites an old migration:

* `OUTPUT_COLUMNS_0002`: the first view (revision 0002);
* `OUTPUT_COLUMNS_0005`: component and head after position, the digit-step log-probs at the end;
* `OUTPUT_COLUMNS_0009`: `method`, `k`, `trained_for`, `subspace_id` at the end (trained
  subspaces; files of full-vector runs have none of them);
* `OUTPUT_COLUMNS`: the current columns (add a new frozen list, and a migration, to change it).
"""

from __future__ import annotations

import pyarrow as pa

OutputColumn = tuple[str, pa.DataType]

OUTPUT_COLUMNS_0002: tuple[OutputColumn, ...] = (
    ("run_id", pa.int32()),
    ("example_id", pa.int64()),
    ("layer", pa.int16()),
    ("position", pa.int16()),
    ("token_ids", pa.list_(pa.int32())),
    ("text", pa.string()),
    ("answer", pa.int64()),
    ("top_ids", pa.list_(pa.int32())),
    ("top_logprobs", pa.list_(pa.float32())),
)
COMPONENT_COLUMNS: tuple[OutputColumn, ...] = (
    ("component", pa.string()),  # resid | attn | mlp | heads
    ("head", pa.int16()),  # the head of a `heads` cell; null for other components
)
DIGIT_STEP_COLUMNS: tuple[OutputColumn, ...] = (
    ("digit_step", pa.int16()),
    ("digit_top_ids", pa.list_(pa.int32())),
    ("digit_top_logprobs", pa.list_(pa.float32())),
)
OUTPUT_COLUMNS_0005: tuple[OutputColumn, ...] = (
    OUTPUT_COLUMNS_0002[:4] + COMPONENT_COLUMNS + OUTPUT_COLUMNS_0002[4:] + DIGIT_STEP_COLUMNS
)
METHOD_COLUMNS: tuple[OutputColumn, ...] = (
    ("method", pa.string()),  # patch | das; null (read as patch) in full-vector files
    ("k", pa.int16()),  # the trained subspace's rank (das)
    ("trained_for", pa.string()),  # the target the subspace was trained for (das)
    ("subspace_id", pa.int32()),  # the subspace within its run (subspaces.subspace_id)
)
OUTPUT_COLUMNS_0009: tuple[OutputColumn, ...] = OUTPUT_COLUMNS_0005 + METHOD_COLUMNS
OUTPUT_COLUMNS: tuple[OutputColumn, ...] = OUTPUT_COLUMNS_0009

RUN_ID_FIELD = pa.field(*OUTPUT_COLUMNS[0])
# what the engine writes: full-vector files have no method columns (read as NULL: method patch)
ENGINE_OUTPUT_SCHEMA = pa.schema([c for c in OUTPUT_COLUMNS_0005 if c[0] != "run_id"])
METHOD_SCHEMA = pa.schema(list(METHOD_COLUMNS))

_SQL_TYPES = {
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.string(): "VARCHAR",
}


def sql_type(arrow_type: pa.DataType) -> str:
    """DuckDB's name for a column type of the output files."""
    if pa.types.is_list(arrow_type):
        return sql_type(arrow_type.value_type) + "[]"
    return _SQL_TYPES[arrow_type]


def empty_outputs_select(columns: tuple[OutputColumn, ...]) -> str:
    """`SELECT NULL::type AS name, ... LIMIT 0`: a typed empty row set with `columns`."""
    nulls = ", ".join(f"NULL::{sql_type(t)} AS {name}" for name, t in columns)
    return f"SELECT {nulls} LIMIT 0"
