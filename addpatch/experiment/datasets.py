"""Generate counterfactual datasets and keep them in the store (idempotent by name).

A dataset's name is its identity: generator, K, D, size, seed, generator options and, when the
prompt is not the seed's plain one, every prompt setting (templates, prefix, suffix, shots,
chat, answer prefix), so two different prompt sets never share a dataset. The stored prompt text is the
source of truth: `load_pairs` rebuilds every input from the stored settings, each example's
templates and worked examples, and refuses a store whose prompts it cannot reproduce exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from addpatch.errors import StoreError
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
    options: dict[str, Any]
    created: bool  # False when the store already held it


def prompt_tag(task: AdditionTask) -> str:
    """The part of a dataset's name that tells its prompts apart ('' for the plain prompt)."""
    if task.is_plain:
        return ""
    tag = f"-shots{task.num_shots}" if task.num_shots else ""
    tag += "-chat" if task.chat else ""
    tag += "-turns" if task.shot_turns else ""
    settings, plain = task.prompt_settings, AdditionTask(task.num_addends, 1).prompt_settings
    text = {k: settings[k] for k in ("templates", "prefix", "suffix")}
    if task.answer_prefix:  # only then: names of datasets stored before it existed stay the same
        text["answer_prefix"] = task.answer_prefix
    if any(text[k] != plain[k] for k in text):
        digest = hashlib.sha256(json.dumps(text, sort_keys=True).encode()).hexdigest()
        tag += f"-t{digest[:10]}"
    return tag


def dataset_name(
    kind: str, task: AdditionTask, size: int, seed: int, options: dict[str, Any]
) -> str:
    extra = "".join(f"-{k}={options[k]}" for k in sorted(options))
    return f"{kind}-k{task.num_addends}-d{task.num_digits}-n{size}-s{seed}{extra}{prompt_tag(task)}"


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
            "base_template": [p.base.template for p in pairs],
            "cf_template": [p.counterfactual.template for p in pairs],
            "shots_json": [json.dumps([list(s) for s in p.base.shots]) for p in pairs],
        }
    )


def create_dataset(
    store: Store,
    *,
    kind: str,
    task: AdditionTask,
    size: int,
    seed: int,
    options: dict[str, Any] | None = None,
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
            template=task.templates[0],  # type: ignore[index]
            seed=seed,
            options=options,
            prompt=task.prompt_settings,
            examples=_examples_table(pairs),
        )
    return DatasetInfo(dataset_id, name, kind, task, size, seed, options, created=True)


def dataset_task(conn: duckdb.DuckDBPyConnection, dataset_id: int) -> AdditionTask:
    """The task a stored dataset was generated for, with its prompt settings (read on an open
    catalog connection)."""
    meta = catalog.dataset_prompt(conn=conn, dataset_id=dataset_id)
    return AdditionTask(
        num_addends=meta["num_addends"],
        num_digits=meta["num_digits"],
        templates=tuple(meta["templates"]),
        prompt_prefix=meta["prefix"],
        prompt_suffix=meta["suffix"],
        num_shots=meta["shots"],
        chat=meta["chat"],
        answer_prefix=meta["answer_prefix"],
        shot_turns=meta["shot_turns"],
    )


def load_pairs(
    store: Store, dataset_id: int
) -> tuple[AdditionTask, list[int], list[CounterfactualPair]]:
    """The dataset's task and its pairs, ordered by example id, exactly as stored.

    StoreError when a rebuilt prompt differs from the stored text (a store edited by hand, or
    written by a version that did not record how it built its prompts).
    """
    with store.connect(read_only=True) as conn:
        task = dataset_task(conn, dataset_id)
        options = catalog.dataset_options(conn=conn, dataset_id=dataset_id)
        rows = catalog.dataset_examples(conn=conn, dataset_id=dataset_id)
    width = options.get("num_digits", task.num_digits)

    def make(numbers: str, template: str, shots: list[list[int]], stored: str) -> AdditionInput:
        inp = task.make_input(json.loads(numbers), num_digits=width, template=template, shots=shots)
        if inp.prompt != stored:
            raise StoreError(
                f"dataset {dataset_id}: the stored prompt {stored!r} differs from its rebuild "
                f"{inp.prompt!r}; generate the dataset again in a new store"
            )
        return inp

    ids, pairs = [], []
    for row in rows:
        shots = json.loads(row.shots_json)
        ids.append(int(row.example_id))
        pairs.append(
            CounterfactualPair(
                make(row.base_addends, row.base_template, shots, row.base_prompt),
                make(row.cf_addends, row.cf_template, shots, row.cf_prompt),
            )
        )
    return task, ids, pairs
