"""The naive reference for every row an engine sweep wrote, one batched hooked loop per cell."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from addpatch.engine.naive import CounterfactualCache, NaiveAnswer, naive_patch_batch
from addpatch.engine.patching import PromptPair

# (example_id, layer, position index, component, head) of an engine output row
RowKey = tuple[int, int, int, str, int | None]


def row_key(row: dict) -> RowKey:
    return (
        row["example_id"],
        row["layer"],
        row["position"],
        row.get("component", "resid"),
        row.get("head"),
    )


def naive_answers(
    model, tokenizer, pairs: list[PromptPair], rows: Iterable[dict], positions: list[str], steps
) -> dict[RowKey, NaiveAnswer]:
    """The naive loop's answer for each row: per cell (layer, position, component, head), one
    hooked `generate` over the examples that have a row there, patching in their counterfactual
    run's activation (one counterfactual forward per batch of examples and component, kept)."""
    cache = CounterfactualCache()
    cells: dict[tuple[int, int, str, int | None], list[int]] = defaultdict(list)
    for row in rows:
        example, layer, position, component, head = row_key(row)
        cells[(layer, position, component, head)].append(example)
    answers: dict[RowKey, NaiveAnswer] = {}
    for (layer, position, component, head), examples in cells.items():
        batch = naive_patch_batch(
            model,
            tokenizer,
            [pairs[e] for e in examples],
            layer,
            positions[position],
            steps,
            component,
            head,
            cache,
        )
        for example, answer in zip(examples, batch, strict=True):
            answers[(example, layer, position, component, head)] = answer
    return answers
