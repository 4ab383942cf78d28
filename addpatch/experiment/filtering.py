"""Keep the pairs a model answers right: the integer at the start of its greedy answer must
equal the sum, on the base prompt and on the counterfactual prompt."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from addpatch.engine.patching import PatchEngine
from addpatch.engine.positions import layout_input, model_prompt
from addpatch.errors import NothingToDo
from addpatch.experiment.progress import Progress, no_progress
from addpatch.store import catalog
from addpatch.store.store import Store
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import CounterfactualPair
from addpatch.task.templates import answer_text, parse_answer

KEEP_RATE_WARNING = 0.5
SAMPLES_SHOWN = 5
HELPFUL_OPTIONS = (
    "options that help: --shots N (worked examples), --chat (Instruct models), --answer-prefix "
    "'The answer is' (the reply's start, for a model that answers with words first), fewer "
    "--digits, another --template; --no-filter patches every pair anyway"
)


@dataclass(frozen=True)
class FilterSummary:
    total: int
    kept: int

    @property
    def keep_rate(self) -> float:
        return self.kept / self.total if self.total else 0.0

    @property
    def low(self) -> bool:
        return self.keep_rate < KEEP_RATE_WARNING


def answer_budget(tokenizer: PreTrainedTokenizerBase, largest_sum: int) -> int:
    """New tokens enough for the longest answer this tokenizer can give (a spare for EOS)."""
    widest = int("9" * len(str(largest_sum)))
    ids = tokenizer(answer_text(widest), add_special_tokens=False)["input_ids"]
    return len(ids) + 1


def answer_pairs(
    engine: PatchEngine,
    task: AdditionTask,
    ids: list[int],
    pairs: list[CounterfactualPair],
    *,
    batch_size: int,
    progress: Progress = no_progress,
) -> pa.Table:
    """The model's greedy answer to each base and counterfactual prompt, and whether it is right.

    Columns: example_id, base_text, cf_text, base_correct, cf_correct (what `filter_results` holds).
    """
    largest = task.num_addends * (10**task.num_digits - 1)
    budget = answer_budget(engine.tokenizer, largest)
    inputs = [p.base for p in pairs] + [p.counterfactual for p in pairs]
    texts: list[str] = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        texts += [
            text
            for _, text in engine.generate(
                [layout_input(engine.tokenizer, i) for i in chunk], budget
            )
        ]
        progress("filter", min(start + batch_size, len(inputs)), len(inputs))
    base_texts, cf_texts = texts[: len(pairs)], texts[len(pairs) :]
    return pa.table(
        {
            "example_id": ids,
            "base_text": base_texts,
            "cf_text": cf_texts,
            "base_correct": [
                parse_answer(t) == p.base.total for t, p in zip(base_texts, pairs, strict=True)
            ],
            "cf_correct": [
                parse_answer(t) == p.counterfactual.total
                for t, p in zip(cf_texts, pairs, strict=True)
            ],
        }
    )


def store_filter(store: Store, *, model_id: int, dataset_id: int, results: pa.Table) -> None:
    """Keep `results` as this model's answers on the dataset, unless the store has them already."""
    with store.writer(), store.connect() as conn:
        if not catalog.has_filter(conn=conn, model_id=model_id, dataset_id=dataset_id):
            catalog.insert_filter(
                conn=conn, model_id=model_id, dataset_id=dataset_id, results=results
            )


SHOWN_HEAD, SHOWN_TAIL = 24, 96  # characters of a long prompt shown: its start and its end


def shortened(prompt: str) -> str:
    """A long prompt's start (the chat template's, say) and end (the query and what follows)."""
    if len(prompt) <= SHOWN_HEAD + SHOWN_TAIL + 5:
        return prompt
    return prompt[:SHOWN_HEAD] + " ... " + prompt[-SHOWN_TAIL:]


def wrong_answers(
    store: Store,
    *,
    model_id: int,
    dataset_id: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    count: int = SAMPLES_SHOWN,
) -> list[str]:
    """A handful of prompts the model got wrong and what it answered: `'... is' -> ' 7' (want 12)`.

    With the model's `tokenizer`, each prompt as the model saw it (chat template, worked
    examples and answer prefix included; shortened); without, the prompt as stored."""
    with store.connect(read_only=True) as conn:
        rows = catalog.wrong_answers(
            conn=conn, model_id=model_id, dataset_id=dataset_id, count=count
        )
    seen = {}
    if tokenizer is not None and rows:
        from addpatch.experiment.datasets import load_pairs

        _, ids, pairs = load_pairs(store, dataset_id)
        by_id = dict(zip(ids, pairs, strict=True))
        for example, is_cf, *_ in rows:
            pair = by_id[example]
            inp = pair.counterfactual if is_cf else pair.base
            seen[(example, is_cf)] = model_prompt(tokenizer, inp).text
    return [
        f"{shortened(seen.get((example, is_cf), prompt))!r} -> {text!r} (want {total})"
        for example, is_cf, prompt, text, total in rows
    ]


def low_keep_rate_hint(
    store: Store,
    *,
    model_id: int,
    dataset_id: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> str:
    """What the model answered on a few pairs it got wrong (each prompt as the model saw it,
    given its `tokenizer`), and the options that help."""
    samples = wrong_answers(store, model_id=model_id, dataset_id=dataset_id, tokenizer=tokenizer)
    return "\n".join(["It answered, e.g.:", *(f"  {s}" for s in samples), HELPFUL_OPTIONS])


def filter_summary(
    store: Store,
    *,
    model_id: int,
    dataset_id: int,
    total: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> FilterSummary:
    """How many pairs the model kept; NothingToDo when it kept none (naming what it answered,
    each prompt as the model saw it given its `tokenizer`)."""
    with store.connect(read_only=True) as conn:
        kept = catalog.kept_example_ids(conn=conn, model_id=model_id, dataset_id=dataset_id)
    summary = FilterSummary(total=total, kept=len(kept))
    if summary.kept == 0:
        samples = wrong_answers(
            store, model_id=model_id, dataset_id=dataset_id, tokenizer=tokenizer
        )
        raise NothingToDo(
            f"the model answered none of the {total} pairs correctly on both prompts, so there is "
            f"nothing to patch; it answered {'; '.join(samples)}; use a model that can add, or "
            + HELPFUL_OPTIONS
        )
    return summary


def filter_dataset(
    store: Store,
    engine: PatchEngine,
    *,
    model_id: int,
    dataset_id: int,
    batch_size: int,
    progress: Progress = no_progress,
) -> FilterSummary:
    """Answer every prompt once (skipped when the store has this model's answers already)."""
    from addpatch.experiment.datasets import load_pairs

    task, ids, pairs = load_pairs(store, dataset_id)
    with store.connect(read_only=True) as conn:
        done = catalog.has_filter(conn=conn, model_id=model_id, dataset_id=dataset_id)
    if not done:
        results = answer_pairs(engine, task, ids, pairs, batch_size=batch_size, progress=progress)
        store_filter(store, model_id=model_id, dataset_id=dataset_id, results=results)
    return filter_summary(
        store, model_id=model_id, dataset_id=dataset_id, total=len(ids), tokenizer=engine.tokenizer
    )
