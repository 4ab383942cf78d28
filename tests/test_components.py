"""Attention, MLP and per-head patching: the engine against the naive hooked loop."""

from __future__ import annotations

import pytest
import torch

from addpatch.engine.components import find_layer_parts, parse_components
from addpatch.engine.naive import CounterfactualCache, naive_patch_batch
from addpatch.engine.patching import PatchEngine
from addpatch.errors import BadInput
from tests.conftest import tiny_model
from tests.naive_rows import naive_answers, row_key
from tests.test_engine import _mixed_numbers, _pairs

COMPONENTS = ("resid", "attn", "mlp", "heads")


def _compare_components(model, tokenizer, pairs, positions, max_new_tokens=4) -> dict[str, int]:
    """Every cell of every component: engine row == naive hooked loop. Rows compared per
    component."""
    engine = PatchEngine(model, tokenizer)
    layers = list(range(-1, engine.num_layers))
    compared = dict.fromkeys(COMPONENTS, 0)
    tables = engine.sweep(pairs, layers, positions, max_new_tokens, components=COMPONENTS)
    rows = [row for table in tables for row in table.to_pylist()]
    naive = naive_answers(model, tokenizer, pairs, rows, positions, max_new_tokens)
    for row in rows:
        tokens, top_ids, top_logprobs, *_ = expected = naive[row_key(row)]
        assert row["token_ids"] == tokens, (row, expected)
        assert row["top_ids"] == top_ids
        assert row["top_logprobs"] == pytest.approx(top_logprobs, abs=1e-4)
        compared[row["component"]] += 1
    return compared


def _expected_rows(engine: PatchEngine, pairs, positions) -> dict[str, int]:
    """Rows per component when every prompt has every position."""
    cells = len(pairs) * len(positions)
    layers = engine.num_layers
    return {
        "resid": cells * (layers + 1),
        "attn": cells * layers,
        "mlp": cells * layers,
        "heads": cells * layers * engine.num_heads,
    }


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "olmo2", "gpt_neox"])
def test_components_equal_naive_loop_on_every_cell(family):
    model, tokenizer = tiny_model(family, "digits", seed=11)
    pairs = _pairs(tokenizer, _mixed_numbers(1, 3))
    positions = ["a0.d0", "a0.d1", "a1.d0", "w1.0", "last"]  # in every prompt of the batch
    compared = _compare_components(model, tokenizer, pairs, positions)
    assert compared == _expected_rows(PatchEngine(model, tokenizer), pairs, positions)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_components_equal_naive_loop_with_chunked_tokenizer(family):
    model, tokenizer = tiny_model(family, "chunks", seed=3)
    pairs = _pairs(tokenizer, _mixed_numbers(2, 4))
    positions = ["a0.t0", "a1.d0", "w1.0", "last"]
    compared = _compare_components(model, tokenizer, pairs, positions)
    assert all(compared[c] > 0 for c in COMPONENTS), compared


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_patching_own_activation_changes_nothing(family, monkeypatch):
    model, tokenizer = tiny_model(family, "digits", seed=7)
    numbers = [(b, b) for b, _ in _mixed_numbers(5, 4)]
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
    layers = list(range(-1, engine.num_layers))
    rows = 0
    for table in engine.sweep(pairs, layers, positions, 4, components=COMPONENTS):
        for row in table.to_pylist():
            assert row["token_ids"] == plain[row["example_id"]][0]
            assert row["top_ids"][0] == plain[row["example_id"]][0][0]
            rows += 1
    assert rows == sum(_expected_rows(engine, pairs, positions).values())
    # every row of every cell went through the patch path, none took the base's answer
    assert cells and all(not c.unchanged and len(c.active) == len(pairs) for c in cells)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_every_head_of_a_layer_equals_the_attention_output(family):
    model, tokenizer = tiny_model(family, "digits", seed=5)
    pairs = _pairs(tokenizer, _mixed_numbers(3, 3))
    engine = PatchEngine(model, tokenizer)
    positions = ["a0.d1", "a1.d0", "last"]
    # the engine's attention patch against the naive loop patching all heads at once
    [table] = list(engine.sweep(pairs, [0, 1], positions, 4, components=("attn",)))
    rows = table.to_pylist()
    cache = CounterfactualCache()
    for row in rows:
        [(tokens, top_ids, top_logprobs, *_)] = naive_patch_batch(
            model,
            tokenizer,
            [pairs[row["example_id"]]],
            row["layer"],
            positions[row["position"]],
            4,
            "heads",
            None,
            cache,
        )
        assert row["token_ids"] == tokens
        assert row["top_ids"] == top_ids
        assert row["top_logprobs"] == pytest.approx(top_logprobs, abs=1e-4)
    assert len(rows) == 2 * len(positions) * len(pairs)
    # and the parts: every head's output through the output projection is the attention output
    run = engine._forward([p.base for p in pairs], keep_cache=False, record={"attn", "heads"})
    assert run.parts is not None
    for layer, part in enumerate(find_layer_parts(model, engine.stack.layers)):
        heads, attention = run.parts.heads[layer], run.parts.attn[layer]
        assert heads is not None and attention is not None
        torch.testing.assert_close(part.attention_from_heads(heads), attention)


def test_component_list_parses_and_rejects_unknown_names():
    assert parse_components("heads, resid,mlp") == ["resid", "mlp", "heads"]
    assert parse_components("attn") == ["attn"]
    with pytest.raises(BadInput, match="resid, attn, mlp, heads"):
        parse_components("resid,neurons")
    with pytest.raises(BadInput):
        parse_components("")


def test_resid_outputs_carry_component_and_null_head():
    model, tokenizer = tiny_model("llama", "digits", seed=2)
    pairs = _pairs(tokenizer, _mixed_numbers(6, 2))
    engine = PatchEngine(model, tokenizer)
    [table] = list(engine.sweep(pairs, [-1, 0], ["a0.d0", "last"], 3))
    assert set(table.column("component").to_pylist()) == {"resid"}
    assert set(table.column("head").to_pylist()) == {None}
