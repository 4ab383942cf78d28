"""Reading and writing catalog rows. Every function takes its connection explicitly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from addpatch.store.runs import DigitGroup, insert_digit_tokens
from addpatch.store.schema import Base, Dataset, Model, OutputFile, Run, RunPosition


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT; on any failure (Ctrl-C included) roll back if DuckDB has not already."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failed statement (or an interrupted COMMIT) ended the transaction
        raise
    conn.execute("COMMIT")


def _next_id(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    row = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()
    assert row is not None  # an aggregate returns one row
    return int(row[0])


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def _insert(conn: duckdb.DuckDBPyConnection, model: type[Base], row: dict[str, object]) -> None:
    """INSERT one row, naming its columns (checked against the schema's model of the table)."""
    table = Base.metadata.tables[model.__tablename__]
    unknown = set(row) - {c.name for c in table.columns}
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", list(row.values()))


# -- models ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRecord:
    name: str
    source: str
    revision: str | None
    weights_sha256: str
    tokenizer_sha256: str
    architecture: str
    num_layers: int
    hidden_size: int


def upsert_model(*, conn: duckdb.DuckDBPyConnection, record: ModelRecord) -> int:
    """The model's id, registering it the first time its weights are seen."""
    row = conn.execute(
        "SELECT id FROM models WHERE weights_sha256 = ?", [record.weights_sha256]
    ).fetchone()
    if row:
        return int(row[0])
    model_id = _next_id(conn, "models")
    _insert(
        conn,
        Model,
        {
            "id": model_id,
            "name": record.name,
            "source": record.source,
            "revision": record.revision,
            "weights_sha256": record.weights_sha256,
            "tokenizer_sha256": record.tokenizer_sha256,
            "architecture": record.architecture,
            "num_layers": record.num_layers,
            "hidden_size": record.hidden_size,
            "created_at": _now(),
        },
    )
    return model_id


# -- datasets ----------------------------------------------------------------------------------
def find_dataset(*, conn: duckdb.DuckDBPyConnection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchone()
    return int(row[0]) if row else None


def insert_dataset(
    *,
    conn: duckdb.DuckDBPyConnection,
    name: str,
    kind: str,
    num_addends: int,
    num_digits: int,
    template: str,
    seed: int,
    options: dict[str, Any],
    examples: pa.Table,
    prompt: dict[str, Any] | None = None,
) -> int:
    """Register a dataset and its examples in one transaction; returns its id.

    `prompt`: the task's prompt settings (templates, prefix, suffix, shots, chat, answer
    prefix, shot turns; an empty answer prefix and false shot turns are stored as NULL); `examples`
    may carry base_template, cf_template and shots_json columns.
    """
    prompt = prompt or {}
    dataset_id = _next_id(conn, "datasets")
    with transaction(conn):
        _insert(
            conn,
            Dataset,
            {
                "id": dataset_id,
                "name": name,
                "kind": kind,
                "num_addends": num_addends,
                "num_digits": num_digits,
                "template": template,
                "size": examples.num_rows,
                "seed": seed,
                "options_json": json.dumps(options, sort_keys=True),
                "created_at": _now(),
                "templates_json": json.dumps(prompt.get("templates", [template])),
                "prompt_prefix": prompt.get("prefix", ""),
                "prompt_suffix": prompt.get("suffix", ""),
                "num_shots": prompt.get("shots", 0),
                "chat": prompt.get("chat", False),
                "answer_prefix": prompt.get("answer_prefix") or None,
                "shot_turns": prompt.get("shot_turns") or None,
            },
        )
        conn.register("new_examples", examples)
        extra = [
            c for c in ("base_template", "cf_template", "shots_json") if c in examples.schema.names
        ]
        conn.execute(
            "INSERT INTO examples (dataset_id, example_id, base_addends, base_prompt, base_sum, "
            f"cf_addends, cf_prompt, cf_sum{''.join(', ' + c for c in extra)}) "
            "SELECT ?, example_id, base_addends, base_prompt, base_sum, cf_addends, cf_prompt, "
            f"cf_sum{''.join(', ' + c for c in extra)} FROM new_examples",
            [dataset_id],
        )
        conn.unregister("new_examples")
    return dataset_id


def dataset_prompt(*, conn: duckdb.DuckDBPyConnection, dataset_id: int) -> dict[str, Any]:
    """A dataset's K, D and prompt settings (defaults for rows written before they were kept)."""
    row = conn.execute(
        "SELECT num_addends, num_digits, template, templates_json, coalesce(prompt_prefix, ''), "
        "coalesce(prompt_suffix, ''), coalesce(num_shots, 0), coalesce(chat, false), "
        "coalesce(answer_prefix, ''), coalesce(shot_turns, false) "
        "FROM datasets WHERE id = ?",
        [dataset_id],
    ).fetchone()
    if row is None:
        from addpatch.errors import BadInput

        raise BadInput(f"no dataset {dataset_id} in the store; see `addpatch store status`")
    k, d, template, templates_json, prefix, suffix, shots, chat, answer_prefix, shot_turns = row
    return {
        "num_addends": int(k),
        "num_digits": int(d),
        "templates": json.loads(templates_json) if templates_json else [template],
        "prefix": prefix,
        "suffix": suffix,
        "shots": int(shots),
        "chat": bool(chat),
        "answer_prefix": answer_prefix,
        "shot_turns": bool(shot_turns),
    }


def dataset_options(*, conn: duckdb.DuckDBPyConnection, dataset_id: int) -> dict[str, Any]:
    """The generator options a dataset was made with."""
    row = conn.execute("SELECT options_json FROM datasets WHERE id = ?", [dataset_id]).fetchone()
    if row is None:
        from addpatch.errors import BadInput

        raise BadInput(f"no dataset {dataset_id} in the store; see `addpatch store status`")
    options: dict[str, Any] = json.loads(row[0])
    return options


@dataclass(frozen=True)
class StoredExample:
    """One stored pair as written: addends (JSON), prompts, templates and worked examples."""

    example_id: int
    base_addends: str
    cf_addends: str
    base_prompt: str
    cf_prompt: str
    base_template: str  # the dataset's template for rows written before revision 0003
    cf_template: str
    shots_json: str


def dataset_examples(*, conn: duckdb.DuckDBPyConnection, dataset_id: int) -> list[StoredExample]:
    """A dataset's examples, ordered by example id."""
    rows = conn.execute(
        "SELECT example_id, base_addends, cf_addends, base_prompt, cf_prompt, "
        "coalesce(base_template, d.template), coalesce(cf_template, d.template), "
        "coalesce(shots_json, '[]') FROM examples JOIN datasets AS d ON d.id = dataset_id "
        "WHERE dataset_id = ? ORDER BY example_id",
        [dataset_id],
    ).fetchall()
    return [StoredExample(*row) for row in rows]


# -- filtering ---------------------------------------------------------------------------------
def count_answered(*, conn: duckdb.DuckDBPyConnection, model_id: int, dataset_id: int) -> int:
    """How many of the dataset's examples the model has answered (0: not filtered yet)."""
    row = conn.execute(
        "SELECT count(*) FROM filter_results WHERE model_id = ? AND dataset_id = ?",
        [model_id, dataset_id],
    ).fetchone()
    assert row is not None  # an aggregate returns one row
    return int(row[0])


def has_filter(*, conn: duckdb.DuckDBPyConnection, model_id: int, dataset_id: int) -> bool:
    return count_answered(conn=conn, model_id=model_id, dataset_id=dataset_id) > 0


def insert_filter(
    *, conn: duckdb.DuckDBPyConnection, model_id: int, dataset_id: int, results: pa.Table
) -> None:
    conn.register("new_filter", results)
    conn.execute(
        "INSERT INTO filter_results (model_id, dataset_id, example_id, base_text, cf_text, "
        "base_correct, cf_correct) SELECT ?, ?, example_id, base_text, cf_text, base_correct, "
        "cf_correct FROM new_filter",
        [model_id, dataset_id],
    )
    conn.unregister("new_filter")


def kept_example_ids(
    *, conn: duckdb.DuckDBPyConnection, model_id: int, dataset_id: int
) -> list[int]:
    rows = conn.execute(
        "SELECT example_id FROM filter_results WHERE model_id = ? AND dataset_id = ? "
        "AND base_correct AND cf_correct ORDER BY example_id",
        [model_id, dataset_id],
    ).fetchall()
    return [int(r[0]) for r in rows]


def wrong_answers(
    *, conn: duckdb.DuckDBPyConnection, model_id: int, dataset_id: int, count: int
) -> list[tuple[int, bool, str, str, int]]:
    """Up to `count` (example id, whether the wrong prompt is the counterfactual, prompt,
    answer text, wanted sum) the model got wrong, by example id (the prompt as stored; under
    --chat the user turn's text, then the answer prefix if any)."""
    rows = conn.execute(
        "SELECT f.example_id, f.base_correct, "
        "CASE WHEN f.base_correct THEN e.cf_prompt ELSE e.base_prompt END "
        "|| CASE WHEN d.chat THEN coalesce(d.answer_prefix, '') ELSE '' END, "
        "CASE WHEN f.base_correct THEN f.cf_text ELSE f.base_text END, "
        "CASE WHEN f.base_correct THEN e.cf_sum ELSE e.base_sum END "
        "FROM filter_results AS f JOIN examples AS e "
        "ON e.dataset_id = f.dataset_id AND e.example_id = f.example_id "
        "JOIN datasets AS d ON d.id = f.dataset_id "
        "WHERE f.model_id = ? AND f.dataset_id = ? AND NOT (f.base_correct AND f.cf_correct) "
        "ORDER BY f.example_id LIMIT ?",
        [model_id, dataset_id, count],
    ).fetchall()
    return [
        (int(example), bool(is_cf), str(prompt), str(text), int(total))
        for example, is_cf, prompt, text, total in rows
    ]


# -- labels ------------------------------------------------------------------------------------
def labelled_targets(*, conn: duckdb.DuckDBPyConnection, dataset_id: int) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT target FROM labels WHERE dataset_id = ?", [dataset_id]
    ).fetchall()
    return {r[0] for r in rows}


def insert_labels(*, conn: duckdb.DuckDBPyConnection, dataset_id: int, labels: pa.Table) -> None:
    """labels columns: target, example_id, causal_model, label_text, label."""
    conn.register("new_labels", labels)
    conn.execute(
        "INSERT INTO labels (dataset_id, target, example_id, causal_model, label_text, label) "
        "SELECT ?, target, example_id, causal_model, label_text, label FROM new_labels",
        [dataset_id],
    )
    conn.unregister("new_labels")


# -- runs --------------------------------------------------------------------------------------
def find_run(*, conn: duckdb.DuckDBPyConnection, config_sha256: str) -> tuple[int, str] | None:
    row = conn.execute(
        "SELECT id, status FROM runs WHERE config_sha256 = ?", [config_sha256]
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def insert_run(
    *,
    conn: duckdb.DuckDBPyConnection,
    model_id: int,
    dataset_id: int,
    config_sha256: str,
    layers: list[int],
    position_set: str,
    positions: list[tuple[str, str]],
    max_new_tokens: int,
    dtype: str,
    device: str,
    batch_size: int,
    seed: int,
    num_examples: int,
    num_batches: int,
    provenance: dict[str, Any],
    digit_tokens: list[DigitGroup] | None = None,
    method: str | None = None,
) -> int:
    """Insert a run (status running), its positions and its digit-token groups; its id.
    `method`: das for trained subspaces; None for full-vector patching."""
    run_id = _next_id(conn, "runs")
    with transaction(conn):
        _insert(
            conn,
            Run,
            {
                "id": run_id,
                "model_id": model_id,
                "dataset_id": dataset_id,
                "config_sha256": config_sha256,
                "layers_json": json.dumps(layers),
                "position_set": position_set,
                "max_new_tokens": max_new_tokens,
                "dtype": dtype,
                "device": device,
                "batch_size": batch_size,
                "seed": seed,
                "num_examples": num_examples,
                "num_batches": num_batches,
                "status": "running",
                "provenance_json": json.dumps(provenance, sort_keys=True),
                "started_at": _now(),
                "method": method,
            },
        )
        for index, (name, text) in enumerate(positions):
            _insert(
                conn,
                RunPosition,
                {"run_id": run_id, "position": index, "name": name, "token_text": text},
            )
        insert_digit_tokens(conn, run_id, list(digit_tokens or []))
    return run_id


def finish_run(
    *, conn: duckdb.DuckDBPyConnection, run_id: int, wall_time_s: float, interventions_per_s: float
) -> None:
    conn.execute(
        "UPDATE runs SET status = 'complete', finished_at = ?, wall_time_s = ?, "
        "interventions_per_s = ? WHERE id = ?",
        [_now(), wall_time_s, interventions_per_s, run_id],
    )


def record_oom_retry(
    *, conn: duckdb.DuckDBPyConnection, run_id: int, retry: dict[str, Any]
) -> None:
    """Append one out-of-memory retry (batch, halvings, smallest piece) to the run's provenance."""
    row = conn.execute("SELECT provenance_json FROM runs WHERE id = ?", [run_id]).fetchone()
    assert row is not None
    provenance = json.loads(row[0])
    provenance.setdefault("oom_retries", []).append(retry)
    conn.execute(
        "UPDATE runs SET provenance_json = ? WHERE id = ?", [json.dumps(provenance), run_id]
    )


def registered_batches(*, conn: duckdb.DuckDBPyConnection, run_id: int) -> set[int]:
    rows = conn.execute(
        "SELECT batch_index FROM output_files WHERE run_id = ?", [run_id]
    ).fetchall()
    return {int(r[0]) for r in rows}


def register_output_file(
    *,
    conn: duckdb.DuckDBPyConnection,
    run_id: int,
    batch_index: int,
    path: str,
    rows: int,
    sha256: str,
) -> None:
    from addpatch.store.outputs_view import refresh_outputs_view

    with transaction(conn):
        insert_output_file(
            conn, run_id=run_id, batch_index=batch_index, path=path, rows=rows, sha256=sha256
        )
        refresh_outputs_view(conn)


def insert_output_file(
    conn: duckdb.DuckDBPyConnection,
    *,
    run_id: int,
    batch_index: int,
    path: str,
    rows: int,
    sha256: str,
) -> None:
    """The `output_files` row of a file (the caller holds the transaction, refreshes the view)."""
    _insert(
        conn,
        OutputFile,
        {
            "id": _next_id(conn, "output_files"),
            "run_id": run_id,
            "batch_index": batch_index,
            "path": path,
            "rows": rows,
            "sha256": sha256,
            "created_at": _now(),
        },
    )
