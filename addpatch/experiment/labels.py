"""Counterfactual labels in the store: computed once per (dataset, target), then joined by SQL."""

from __future__ import annotations

import pyarrow as pa

from addpatch.experiment.datasets import dataset_task, load_pairs
from addpatch.store import catalog
from addpatch.store.store import Store
from addpatch.task.addition import AdditionModel, AdditionTask
from addpatch.task.generators import CounterfactualPair
from addpatch.task.labels import label_many, resolve_target


def ensure_labels(store: Store, dataset_id: int, targets: list[str]) -> list[str]:
    """Store labels for any of `targets` the dataset lacks; returns the canonical target texts."""
    with store.connect(read_only=True) as conn:
        task = dataset_task(conn, dataset_id)
        have = catalog.labelled_targets(conn=conn, dataset_id=dataset_id)
    resolved = [(target, *resolve_target(task, target)) for target in targets]
    canonical = [text for _, _, text in resolved]
    missing = [(model, text) for _, model, text in resolved if text not in have]
    if missing:
        with store.writer():  # a reader (score, report) writes only what is missing
            task, ids, pairs = load_pairs(store, dataset_id)
            _store_labels(store, dataset_id, task, ids, pairs, missing)
    return list(dict.fromkeys(canonical))


def _store_labels(
    store: Store,
    dataset_id: int,
    task: AdditionTask,
    ids: list[int],
    pairs: list[CounterfactualPair],
    missing: list[tuple[AdditionModel, str]],
) -> None:
    """Compute and insert the labels of `missing` targets; the caller holds the writer lock."""
    with store.connect(read_only=True) as conn:
        seen = catalog.labelled_targets(conn=conn, dataset_id=dataset_id)  # stored meanwhile
    tables = []
    for model, text in missing:
        if text in seen:
            continue
        seen.add(text)
        labels = label_many(task, pairs, text)
        tables.append(
            pa.table(
                {
                    "target": [text] * len(ids),
                    "example_id": ids,
                    "causal_model": [model.id] * len(ids),
                    "label_text": [t for t, _ in labels],
                    "label": [v for _, v in labels],
                }
            )
        )
    if not tables:
        return
    with store.connect() as conn:  # one statement: every target's labels or none
        catalog.insert_labels(conn=conn, dataset_id=dataset_id, labels=pa.concat_tables(tables))
