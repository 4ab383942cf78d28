"""Generate counterfactual datasets and keep them in the store (idempotent by name)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from addpatch.store import catalog
from addpatch.store.store import Store
from addpatch.task.addition import AdditionInput, AdditionTask
from addpatch.task.generators import CounterfactualPair, generate_pairs


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    kind: str
    task: AdditionTask
    size: int
    seed: int
    options: dict
    created: bool  # False when the store already held it


def dataset_name(kind: str, task: AdditionTask, size: int, seed: int, options: dict) -> str:
    extra = "".join(f"-{k}={options[k]}" for k in sorted(options))
    return f"{kind}-k{task.num_addends}-d{task.num_digits}-n{size}-s{seed}{extra}"


def _examples_table(pairs: list[CounterfactualPair]) -> pa.Table:
    return pa.table(
        {
            "example_id": list(range(len(pairs))),
            "base_addends": [json.dumps(list(p.base.numbers)) for p in pairs],
            "base_prompt": [p.base.prompt for p in pairs],
            "base_sum": [p.base.total for p in pairs],
            "cf_addends": [json.dumps(list(p.counterfactual.numbers)) for p in pairs],
            "cf_prompt": [p.counterfactual.prompt for p in pairs],
            "cf_sum": [p.counterfactual.total for p in pairs],
        }
    )


def create_dataset(
    store: Store,
    *,
    kind: str,
    task: AdditionTask,
    size: int,
    seed: int,
    options: dict | None = None,
    pairs: list[CounterfactualPair] | None = None,
) -> DatasetInfo:
    """Generate `size` pairs with generator `kind` (or find the identical dataset in the store).

    `pairs`, when given, must be what `generate_pairs` returns for these arguments (a caller
    that generated them to validate its input passes them on instead of generating twice).
    """
    options = {k: v for k, v in (options or {}).items() if v is not None}
    name = dataset_name(kind, task, size, seed, options)
    with store.connect(read_only=True) as conn:
        existing = catalog.find_dataset(conn=conn, name=name)
    if existing is not None:
        return DatasetInfo(existing, name, kind, task, size, seed, options, created=False)
    if pairs is None:
        pairs = generate_pairs(kind, task, size, seed, **options)
    with store.writer(), store.connect() as conn:
        existing = catalog.find_dataset(conn=conn, name=name)
        if existing is not None:  # stored meanwhile
            return DatasetInfo(existing, name, kind, task, size, seed, options, created=False)
        dataset_id = catalog.insert_dataset(
            conn=conn,
            name=name,
            kind=kind,
            num_addends=task.num_addends,
            num_digits=task.num_digits,
            template=task.templates[0],
            seed=seed,  # type: ignore[index]
            options=options,
            examples=_examples_table(pairs),
        )
    return DatasetInfo(dataset_id, name, kind, task, size, seed, options, created=True)


def load_pairs(
    store: Store, dataset_id: int
) -> tuple[AdditionTask, list[int], list[CounterfactualPair]]:
    """The dataset's task and its pairs, ordered by example id."""
    with store.connect(read_only=True) as conn:
        meta = conn.execute(
            "SELECT num_addends, num_digits, template, options_json FROM datasets WHERE id = ?",
            [dataset_id],
        ).fetchone()
        rows = conn.execute(
            "SELECT example_id, base_addends, cf_addends FROM examples WHERE dataset_id = ? "
            "ORDER BY example_id",
            [dataset_id],
        ).fetchall()
    num_addends, num_digits, template, options_json = meta
    task = AdditionTask(num_addends=num_addends, num_digits=num_digits, templates=(template,))
    width = json.loads(options_json).get("num_digits", num_digits)

    def make(numbers: str) -> AdditionInput:
        return task.make_input(json.loads(numbers), num_digits=width)

    ids = [int(r[0]) for r in rows]
    pairs = [CounterfactualPair(make(r[1]), make(r[2])) for r in rows]
    return task, ids, pairs
