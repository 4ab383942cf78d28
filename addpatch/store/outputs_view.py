"""The `patched_outputs` view: every registered Parquet file of patched outputs, and no other.

Files written but not (yet) registered — a run killed between writing and registering — stay
invisible to queries. Paths in the view are relative to the store, so a moved store still works
(addpatch sets DuckDB's file_search_path; in the DuckDB shell, start it inside the store).

Each output is keyed by run, example, layer, position, component and head. Files written before
a column existed read it as NULL (component as 'resid'): before components, files have neither
`component` nor `head`; before the digit-step log-probs, no `digit_step`, `digit_top_ids`,
`digit_top_logprobs`; full-vector files have no `method` (read as 'patch'), `k`,
`trained_for` or `subspace_id` (trained subspaces, addpatch/das). The files are read by column name and stacked under a typed empty row set
that has every column.
"""

from __future__ import annotations

import duckdb

from addpatch.store.output_schema import OUTPUT_COLUMNS, empty_outputs_select

EMPTY_OUTPUTS = empty_outputs_select(OUTPUT_COLUMNS)
_DEFAULTS = {"component": "'resid'", "method": "'patch'"}  # what files without them mean
COLUMNS = ", ".join(
    f"coalesce({name}, {_DEFAULTS[name]}) AS {name}" if name in _DEFAULTS else name
    for name, _ in OUTPUT_COLUMNS
)


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def refresh_outputs_view(conn: duckdb.DuckDBPyConnection) -> None:
    paths = [row[0] for row in conn.execute("SELECT path FROM output_files ORDER BY id").fetchall()]
    if paths:
        files = ", ".join(_quote(p) for p in paths)
        body = (
            f"SELECT {COLUMNS} FROM (({EMPTY_OUTPUTS}) UNION ALL BY NAME "
            f"(SELECT * FROM read_parquet([{files}], union_by_name = true)))"
        )
    else:
        body = EMPTY_OUTPUTS
    conn.execute(f"CREATE OR REPLACE VIEW patched_outputs AS {body}")
    from addpatch.store.attributions import refresh_attribution_views

    refresh_attribution_views(conn)  # the attribution views, made and refreshed alongside
