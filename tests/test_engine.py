"""The engine against the naive loop (fresh counterfactual forward + hooked generate per cell)."""

from __future__ import annotations

import random

import pytest
import torch

from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_prompt, render_with_spans, shared_digit_tokens
from tests.conftest import FAMILIES, tiny_model
from tests.naive_rows import naive_answers, row_key

TEMPLATE = "The sum of {num0} and {num1} is"


def _pairs(tokenizer, numbers: list[tuple[list[int], list[int]]]) -> list[PromptPair]:
    return [
        PromptPair(
            i,
            layout_prompt(tokenizer, *render_with_spans(TEMPLATE, base)),
            layout_prompt(tokenizer, *render_with_spans(TEMPLATE, cf)),
        )
        for i, (base, cf) in enumerate(numbers)
    ]


def _mixed_numbers(seed: int, count: int) -> list[tuple[list[int], list[int]]]:
    """Mixed widths (prompts of different token lengths: left padding), equal addends, and a
    counterfactual sharing the base's first addend (cells answered from the base run)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        base = [rng.randint(10, 9999), rng.randint(10, 9999)]
        cf = [rng.randint(10, 9999), rng.randint(10, 9999)]
        if i == 0:
            base = [44, 44]
        if i == 1:
            cf = [base[0], cf[1]]
        out.append((base, cf))
    return out


def _compare_all_cells(model, tokenizer, pairs, positions, max_new_tokens=4):
    """Every row the engine writes == the naive loop's answer for its cell (batched per cell)."""
    engine = PatchEngine(model, tokenizer)
    layers = list(range(-1, engine.num_layers))
    tables = engine.sweep(pairs, layers, positions, max_new_tokens)
    rows = [row for table in tables for row in table.to_pylist()]
    naive = naive_answers(model, tokenizer, pairs, rows, positions, max_new_tokens)
    for row in rows:
        expected = naive[row_key(row)]
        assert row["token_ids"] == expected.tokens, (row, expected)
        assert row["top_ids"] == expected.top_ids
        assert row["top_logprobs"] == pytest.approx(expected.top_logprobs, abs=1e-4)
        assert row["digit_step"] == expected.digit_step
        assert row["digit_top_ids"] == expected.digit_top_ids
        if expected.digit_step is not None:
            assert row["digit_top_logprobs"] == pytest.approx(expected.digit_top_logprobs, abs=1e-4)
    return len(rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_naive_loop_on_every_cell(family):
    model, tokenizer = tiny_model(family, "digits")
    pairs = _pairs(tokenizer, _mixed_numbers(1, 3))
    positions = list(pairs[0].base.canonical) + ["a1.d0", "last"]
    compared = _compare_all_cells(model, tokenizer, pairs, positions)
    # positions that exist in every prompt of the batch: all of them exist in pair 0
    assert compared >= len(positions) * (model.config.get_text_config().num_hidden_layers + 1)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_engine_equals_naive_loop_with_chunked_tokenizer(family):
    model, tokenizer = tiny_model(family, "chunks", seed=3)
    pairs = _pairs(tokenizer, _mixed_numbers(2, 5))
    positions = ["a0.t0", "a0.t1", "a0.d2", "a1.d0", "w1.0", "last"]
    assert _compare_all_cells(model, tokenizer, pairs, positions) > 0


def test_last_layer_last_position_gives_counterfactual_first_token():
    model, tokenizer = tiny_model("llama", "digits", seed=5)
    pairs = _pairs(tokenizer, _mixed_numbers(4, 6))
    engine = PatchEngine(model, tokenizer)
    last = engine.num_layers - 1
    [table] = list(engine.sweep(pairs, [last], ["last"], 3))
    cf_answers = engine.generate([p.counterfactual for p in pairs], 3)
    for row in table.to_pylist():
        cf_tokens = engine.tokenizer(cf_answers[row["example_id"]][1], add_special_tokens=False)
        patched_first = row["top_ids"][0]
        cf_first = (
            engine.model(torch.tensor([pairs[row["example_id"]].counterfactual.token_ids]))
            .logits[0, -1]
            .argmax()
            .item()
        )
        assert patched_first == cf_first, cf_tokens


def test_patching_base_onto_itself_changes_nothing(monkeypatch):
    model, tokenizer = tiny_model("olmo2", "digits", seed=7)
    numbers = [(b, b) for b, _ in _mixed_numbers(5, 5)]
    pairs = _pairs(tokenizer, numbers)
    engine = PatchEngine(model, tokenizer)
    engine.same_prefix_shortcut = False  # else no cell is patched: each takes the base's answer
    cells = []
    split = PatchEngine._cell_rows

    def recorded(self, *args):
        cells.append(split(self, *args))
        return cells[-1]

    monkeypatch.setattr(PatchEngine, "_cell_rows", recorded)
    plain = engine.generate([p.base for p in pairs], 4)
    positions = list(pairs[0].base.canonical)
    rows = 0
    for table in engine.sweep(pairs, list(range(-1, engine.num_layers)), positions, 4):
        for row in table.to_pylist():
            assert row["token_ids"] == plain[row["example_id"]][0]
            rows += 1
    assert rows == len(pairs) * len(positions) * (engine.num_layers + 1)
    # every row of every cell went through the patch path, none took the base's answer
    assert cells and all(not c.unchanged and len(c.active) == len(pairs) for c in cells)


def test_the_same_prefix_shortcut_answers_as_the_patch_path():
    """A counterfactual that differs from the base only in the second addend: the cells before
    it take the shortcut, and give what patching them gives."""
    model, tokenizer = tiny_model("llama", "digits", seed=7)
    numbers = [(base, [base[0], cf[1]]) for base, cf in _mixed_numbers(6, 4)]
    pairs = _pairs(tokenizer, numbers)
    positions = ["a0.d0", "a0.d1", "a1.d0", "last"]
    engine = PatchEngine(model, tokenizer)
    layers = list(range(-1, engine.num_layers))

    def rows() -> list[dict]:
        found = [r for t in engine.sweep(pairs, layers, positions, 4) for r in t.to_pylist()]
        return sorted(found, key=lambda r: row_key(r)[:3])

    shortcut = rows()
    engine.same_prefix_shortcut = False
    patched = rows()
    assert len(shortcut) == len(patched) == len(pairs) * len(positions) * len(layers)
    for a, b in zip(shortcut, patched, strict=True):
        assert row_key(a) == row_key(b)
        assert a["token_ids"] == b["token_ids"] and a["top_ids"] == b["top_ids"]
        assert a["top_logprobs"] == pytest.approx(b["top_logprobs"], abs=1e-4)


def test_shared_digit_tokens_follow_the_tokenizer():
    from addpatch.models.tiny_tokenizers import build_tokenizer

    def layouts(grouping: str, numbers: list[tuple[int, int]]):
        tokenizer = build_tokenizer(grouping)
        for pair in numbers:
            text, spans = render_with_spans("The sum of {num0} and {num1} is", list(pair))
            yield layout_prompt(tokenizer, text, spans)

    four = [(1234, 5678), (9999, 1000)]
    assert shared_digit_tokens(layouts("chunks", four), 2) == [(0, (0, 1, 2)), (1, (0, 1, 2))]
    assert shared_digit_tokens(layouts("chunks", [(12, 345)]), 2) == [(0, (0, 1)), (1, (0, 1, 2))]
    assert shared_digit_tokens(layouts("chunks", [(12, 345), (345, 12)]), 2) == []
    assert shared_digit_tokens(layouts("digits", four), 2) == []


def test_digit_step_top_k_is_taken_after_the_leading_space():
    """The shipped model answers ` 68` as ` `, `6`, `8`: the digit step is 1, and its top-1
    token is the answer's first digit."""
    from addpatch.models.loading import load_model, resolve_model

    model, tokenizer = load_model(
        resolve_model("tiny-adder-digits"), torch.device("cpu"), torch.float32
    )
    engine = PatchEngine(model, tokenizer)
    pairs = _pairs(tokenizer, [([23, 45], [71, 38]), ([50, 57], [76, 82])])
    [table] = list(engine.sweep(pairs, [0], ["last"], 4))
    for row in table.to_pylist():
        assert tokenizer.decode(row["token_ids"][:1]) == " "
        assert row["digit_step"] == 1
        first_digit = tokenizer.decode(row["token_ids"][1:2])
        assert tokenizer.decode([row["digit_top_ids"][0]]) == first_digit
        assert row["digit_top_logprobs"] == sorted(row["digit_top_logprobs"], reverse=True)
