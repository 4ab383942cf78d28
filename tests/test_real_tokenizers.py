"""Position labels on the real tokenizers of Llama-3.1, Gemma-3, Qwen3 and cl100k (OLMo-2's family).

Every 1-3 digit number (0..999) appears in every addend slot, for K = 2 and 3, plus 4-digit
edge cases; each label `a{k}.d{d}` is checked against a labelling made here independently from
the tokenizer's offsets (one batched tokenizer call per set of prompts), and the offsets
themselves against the tokens' own text. The real tokenizers come from tests/real_parts.py.
"""

from __future__ import annotations

import bisect
from functools import cache

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from addpatch.engine.patching import digit_token_mask
from addpatch.engine.positions import layout_input, layout_prompt, render_with_spans
from addpatch.errors import BadInput
from addpatch.task.addition import AdditionTask
from addpatch.task.templates import template_for
from tests.real_parts import TOKENIZERS, tokenizer_dir

FOUR_DIGIT_EDGES = [1000, 1001, 1010, 1099, 1100, 1234, 2024, 4321, 5000, 5555, 9000, 9099, 9999]


@cache
@cache
def real_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """A real tokenizer as addpatch loads one (fetched into the cache the first time); loaded
    once per process (Gemma's 262k-token vocabulary takes seconds), and never changed by tests."""
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_dir(name), clean_up_tokenization_spaces=False
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _numbers(num_addends: int) -> list[list[int]]:
    """Every 0..999 in every addend slot (each slot a different rotation), then 4-digit edges."""
    rows = [[(n + 337 * k) % 1000 for k in range(num_addends)] for n in range(1000)]
    edges = FOUR_DIGIT_EDGES
    rows += [[edges[(i + k) % len(edges)] for k in range(num_addends)] for i in range(len(edges))]
    rows += [[e, 7, 45][:num_addends] for e in edges]  # mixed widths next to a 4-digit number
    return rows


def _expected_digit_tokens(
    offsets: list[tuple[int, int]], span: tuple[int, int]
) -> tuple[list[int], list[int]]:
    """From the offsets alone: the token holding each digit of the span, and the tokens that
    overlap the span (in order)."""
    real = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    starts = [s for _, s, _ in real]
    holders = []
    for char in range(*span):
        at = bisect.bisect_right(starts, char) - 1
        index, start, end = real[at]
        assert start <= char < end, "a digit no token covers"
        holders.append(index)
    overlapping = [i for i, s, e in real if s < span[1] and e > span[0]]
    return holders, overlapping


def _check_offsets_tell_the_truth(tokenizer, text: str, ids: list[int], offsets) -> None:
    """The offsets tile the text in order, and each digit-bearing token's own text holds exactly
    the digits its offsets say (decoded from the id, not read from the offsets)."""
    cursor = 0
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        if start == end:
            continue
        assert start >= cursor, (text, offsets)
        cursor = end
        covered = text[start:end]
        if any(c.isdigit() for c in covered):
            decoded = tokenizer.decode([token_id])
            assert [c for c in decoded if c.isdigit()] == [c for c in covered if c.isdigit()]
    assert cursor == len(text)


def _check_labels(tokenizer, template: str, rows: list[list[int]]) -> int:
    rendered = [render_with_spans(template, row) for row in rows]
    texts = [text for text, _ in rendered]
    batch = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
    checked = 0
    for row, (text, spans), ids, offsets in zip(
        rows, rendered, batch["input_ids"], batch["offset_mapping"], strict=True
    ):
        _check_offsets_tell_the_truth(tokenizer, text, ids, offsets)
        layout = layout_prompt(tokenizer, text, spans)
        assert list(layout.token_ids) == ids
        for addend, number in enumerate(row):
            # the span of the digits, found here by counting characters of the template
            span = spans[addend]
            assert text[span[0] : span[1]] == str(number)
            holders, overlapping = _expected_digit_tokens(offsets, span)
            for digit, holder in enumerate(holders):
                assert layout.index(f"a{addend}.d{digit}") == holder, (text, addend, digit)
                checked += 1
            assert layout.index(f"a{addend}.d{len(holders)}") is None
            named = [layout.index(f"a{addend}.t{j}") for j in range(len(overlapping))]
            assert named == overlapping, (text, addend)
            assert layout.index(f"a{addend}.t{len(overlapping)}") is None
        assert layout.index("last") == len(ids) - 1
        assert all(
            not name.startswith("a") or name.split(".")[0] in {f"a{k}" for k in range(len(row))}
            for name in layout.canonical
        )
    return checked


@pytest.mark.parametrize("name", list(TOKENIZERS))
@pytest.mark.parametrize("num_addends", [2, 3])
def test_digit_labels_match_an_independent_labelling(name, num_addends):
    tokenizer = real_tokenizer(name)
    rows = _numbers(num_addends)
    checked = _check_labels(tokenizer, template_for(num_addends), rows)
    assert checked == sum(len(str(n)) for row in rows for n in row)


def _query_spans(text: str, query: str, numbers: list[int]) -> dict[int, tuple[int, int]]:
    """Digit spans of the query's addends in the full prompt, found by searching for the query
    (the last occurrence: worked examples come before it and never equal it)."""
    start = text.rfind(query)
    assert start >= 0
    spans = {}
    cursor = start
    for k, number in enumerate(numbers):
        at = text.index(str(number), cursor)
        spans[k] = (at, at + len(str(number)))
        cursor = spans[k][1]
    return spans


def _conversation(tokenizer, prefix: str, shots: list[list[int]], query: str) -> str:
    """Worked examples as chat turns, written out independently of addpatch's layout code."""
    messages = []
    for i, (x, y) in enumerate(shots):
        question = f"{prefix if i == 0 else ''}The sum of {x} and {y} is"
        messages += [{"role": "user", "content": question}]
        messages += [{"role": "assistant", "content": str(x + y)}]
    messages.append({"role": "user", "content": query})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("shot_turns", [True, False])
@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_labels_with_prefix_shots_and_chat_template(name, shot_turns):
    tokenizer = real_tokenizer(name)
    has_chat = bool(tokenizer.chat_template)
    prefix = "Add the numbers.\n"
    task = AdditionTask(
        num_addends=2,
        num_digits=3,
        prompt_prefix=prefix,
        num_shots=2,
        chat=has_chat,
        shot_turns=shot_turns,
    )
    assert task.shot_turns == (shot_turns and has_chat)  # turns need a chat template
    rows = [[n, (n * 7 + 5) % 1000] for n in range(0, 1000, 7)]
    shots = [[(n + 11) % 1000, (n + 500) % 1000] for n in range(0, 1000, 7)]
    for row, shot in zip(rows, shots, strict=True):
        inp = task.make_input(row, shots=[shot, [shot[1], 3]])
        layout = layout_input(tokenizer, inp)
        text = tokenizer.decode(list(layout.token_ids))
        query = f"The sum of {row[0]} and {row[1]} is"
        if task.shot_turns:  # the examples are turns of their own, each answered by the assistant
            assert text == _conversation(tokenizer, prefix, [shot, [shot[1], 3]], query)
        encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        assert encoded["input_ids"] == list(layout.token_ids)
        spans = _query_spans(text, query, row)
        for addend, span in spans.items():
            holders, _ = _expected_digit_tokens(encoded["offset_mapping"], span)
            for digit, holder in enumerate(holders):
                assert layout.index(f"a{addend}.d{digit}") == holder, (text, addend, digit)
        # the prefix, worked examples and chat wrapper never take the query's names
        query_names = {n for n in layout.canonical if n[0] in "aw"}
        assert set(layout.query) == query_names
        assert any(n.startswith("s1.") for n in layout.canonical)
        assert any(n.startswith("p.") for n in layout.canonical)
        assert any(n.startswith("c1.") for n in layout.canonical) == has_chat
        # worked examples and the wrapper run in order: c0, p, s0, s1, the query, c1
        kinds = [n.split(".")[0] if n[0] in "cps" else "query" for n in layout.canonical]
        order = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
        chat_parts = ["c0"] if has_chat and order[0] == "c0" else []
        assert order == chat_parts + ["p", "s0", "s1", "query"] + (["c1"] if has_chat else [])
    if not has_chat:  # cl100k ships no chat template: --chat is refused, not guessed
        chat_task = AdditionTask(num_addends=2, num_digits=3, chat=True)
        with pytest.raises(BadInput, match="chat template"):
            layout_input(tokenizer, chat_task.make_input([1, 2]))


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_digit_token_mask_equals_decoding_every_token(name):
    """The engine's digit-token mask decodes only entries holding a digit; decoding every token
    of the real vocabulary (byte-level BPE, SentencePiece with byte fallback) finds the same."""
    tokenizer = real_tokenizer(name)
    size = len(tokenizer)
    texts = tokenizer.backend_tokenizer.decode_batch(
        [[i] for i in range(size)], skip_special_tokens=False
    )
    expected = torch.tensor([any(ch in "0123456789" for ch in text) for text in texts])
    mask = digit_token_mask(tokenizer, size + 7)  # a model's embedding may be padded past it
    assert torch.equal(mask[:size], expected) and not mask[size:].any()
    assert expected.any()
