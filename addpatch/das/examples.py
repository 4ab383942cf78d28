"""Training examples for DAS: a prompt pair, the label's answer tokens, and fixed batches.

The loss is teacher-forced cross-entropy over the *label's* answer as the model's tokenizer
writes answers: a space, the decimal digits, EOS (`answer_text`, what the filter checks the
model's greedy answer against), without the space when the prompt already ends in one
(`--answer-prefix ' '`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from addpatch.engine.patching import PromptPair
from addpatch.engine.positions import PromptLayout, unit_parts
from addpatch.errors import BadInput
from addpatch.task.templates import answer_text


@dataclass(frozen=True)
class DasExample:
    pair: PromptPair
    label: int  # the counterfactual label (an integer answer)
    label_ids: tuple[int, ...]  # its answer tokens, EOS last


def label_token_ids(
    tokenizer: PreTrainedTokenizerBase, layout: PromptLayout, label: int
) -> tuple[int, ...]:
    """The tokens of `label` as the model writes its answer after this prompt, EOS last."""
    text = answer_text(label)
    if layout.tokens and layout.tokens[-1][-1:].isspace():
        text = text.lstrip()
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return tuple(ids) + (() if eos is None else (int(eos),))


def make_examples(
    tokenizer: PreTrainedTokenizerBase, pairs: list[PromptPair], labels: dict[int, int]
) -> list[DasExample]:
    """One example per pair, with its label (by example id) rendered as answer tokens."""
    return [
        DasExample(
            p, labels[p.example_id], label_token_ids(tokenizer, p.base, labels[p.example_id])
        )
        for p in pairs
    ]


def unit_indices(layout: PromptLayout, unit: str) -> tuple[int, ...]:
    """Token indices of every position of `unit` in this prompt (BadInput when one is missing)."""
    found = layout.indices(unit)
    if found is None:
        missing = [p for p in unit_parts(unit) if layout.index(p) is None]
        raise BadInput(
            f"position {missing[0] if missing else unit!r} of unit {unit!r} is missing in some "
            "prompts; choose positions every prompt has (e.g. a digit of the narrowest addend, "
            "or last)"
        )
    return found


def fixed_batches(examples: list[DasExample], batch_size: int, seed: int) -> list[list[DasExample]]:
    """Examples shuffled once (seeded) into batches of `batch_size`: each batch is laid out and
    its frozen part computed once; training reshuffles the batches' order every epoch."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [examples[i] for i in order]
    return [shuffled[s : s + batch_size] for s in range(0, len(shuffled), batch_size)]


def epoch_order(num_batches: int, seed: int, epoch: int) -> list[int]:
    """The batches' order in one epoch (seeded by the run's seed and the epoch)."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch + 1)
    return torch.randperm(num_batches, generator=generator).tolist()
