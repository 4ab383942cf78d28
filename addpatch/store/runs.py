"""Reading runs back from the catalog: their ids, tasks, models, summaries and digit tokens."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

DigitGroup = tuple[int, tuple[int, ...]]  # (addend, its digits held by one token)


def run_ids(conn: duckdb.DuckDBPyConnection) -> list[int]:
    """Every run's id, in order."""
    return [int(r[0]) for r in conn.execute("SELECT id FROM runs ORDER BY id").fetchall()]


def run_dataset_ids(conn: duckdb.DuckDBPyConnection, run_id: int | None = None) -> list[int]:
    """The datasets that run `run_id` (default: any run) patched."""
    if run_id is None:
        rows = conn.execute("SELECT DISTINCT dataset_id FROM runs ORDER BY dataset_id").fetchall()
    else:
        rows = conn.execute("SELECT dataset_id FROM runs WHERE id = ?", [run_id]).fetchall()
    return [int(r[0]) for r in rows]


def run_shapes(conn: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, tuple[int, int]]:
    """Each run's task shape: (number of addends, digits per addend) of its dataset."""
    rows = conn.execute(
        "SELECT r.id, d.num_addends, d.num_digits FROM runs r "
        "JOIN datasets d ON d.id = r.dataset_id WHERE list_contains(?, r.id)",
        [ids],
    ).fetchall()
    return {int(run_id): (int(k), int(d)) for run_id, k, d in rows}


def run_model(conn: duckdb.DuckDBPyConnection, run_id: int) -> tuple[str, str]:
    """The name of the run's model and where it was loaded from."""
    row = conn.execute(
        "SELECT m.name, m.source FROM runs r JOIN models m ON m.id = r.model_id WHERE r.id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        raise KeyError(run_id)
    return str(row[0]), str(row[1])


@dataclass(frozen=True)
class RunSummary:
    """What a report says about a run."""

    run_id: int
    model: str
    num_digits: int
    num_examples: int
    provenance_json: str
    wall_time_s: float | None
    interventions_per_s: float | None
    batch_size: int
    seed: int
    dataset: str
    keep_rate: float | None  # share of the dataset's pairs the model kept; None: none answered
    dataset_id: int


def run_summaries(conn: duckdb.DuckDBPyConnection, ids: list[int]) -> list[RunSummary]:
    rows = conn.execute(
        """
        SELECT r.id, m.name, d.num_digits, r.num_examples, r.provenance_json, r.wall_time_s,
               r.interventions_per_s, r.batch_size, r.seed, d.name,
               (SELECT count(*) FILTER (WHERE base_correct AND cf_correct) / count(*)
                  FROM filter_results f WHERE f.model_id = r.model_id AND f.dataset_id = r.dataset_id),
               r.dataset_id
        FROM runs r JOIN models m ON m.id = r.model_id JOIN datasets d ON d.id = r.dataset_id
        WHERE list_contains(?, r.id) ORDER BY r.id
        """,
        [ids],
    ).fetchall()
    return [RunSummary(*row) for row in rows]


# -- digit tokens ------------------------------------------------------------------------------
def insert_digit_tokens(
    conn: duckdb.DuckDBPyConnection, run_id: int, groups: list[DigitGroup]
) -> None:
    """Record the digits that share one token in every prompt of the run (one row per digit)."""
    rows = [
        [run_id, index, addend, digit]
        for index, (addend, digits) in enumerate(groups)
        for digit in digits
    ]
    if rows:
        conn.executemany(
            "INSERT INTO run_digit_tokens (run_id, group_index, addend, digit) VALUES (?, ?, ?, ?)",
            rows,
        )


def run_digit_tokens(
    conn: duckdb.DuckDBPyConnection, ids: list[int]
) -> dict[int, list[DigitGroup]]:
    """Each run's digit-token groups, in the order they were recorded (empty: none)."""
    rows = conn.execute(
        "SELECT run_id, group_index, addend, list(digit ORDER BY digit) FROM run_digit_tokens "
        "WHERE list_contains(?, run_id) GROUP BY ALL ORDER BY run_id, group_index",
        [ids],
    ).fetchall()
    groups: dict[int, list[DigitGroup]] = {int(i): [] for i in ids}
    for run_id, _, addend, digits in rows:
        groups[int(run_id)].append((int(addend), tuple(int(d) for d in digits)))
    return groups
