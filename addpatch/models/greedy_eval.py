"""Greedy exact-match accuracy on addition problems: what the tiny adders' and the LoRA
adapters' trainings log and their cards report, by plain transformers `generate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from addpatch.task.templates import TWO_ADDEND_TEMPLATE, answer_text, parse_answer, render_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[int, int]],
    batch_size: int = 100,
) -> list[int | None]:
    """The integer each problem's greedy continuation starts with (plain `generate`, left
    padding), None where it starts with none."""
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    budget = len(tokenizer(answer_text(2 * 10**7), add_special_tokens=False)["input_ids"]) + 1
    answers: list[int | None] = []
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                prompts = [render_prompt(TWO_ADDEND_TEMPLATE, [a, b]) for a, b in chunk]
                enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
                out = model.generate(  # type: ignore[operator]  # transformers types self oddly
                    **enc,
                    max_new_tokens=budget,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                texts = tokenizer.batch_decode(
                    out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
                )
                answers += [parse_answer(t) for t in texts]
    finally:
        tokenizer.padding_side = side
    return answers


def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[int, int]],
    batch_size: int = 100,
) -> float:
    """Share of problems whose greedy continuation starts with the correct sum."""
    answers = greedy_answers(model, tokenizer, pairs, batch_size)
    return sum(x == a + b for x, (a, b) in zip(answers, pairs, strict=True)) / len(pairs)
