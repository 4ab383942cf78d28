"""Multi-position units (`a1.d0+last`): named, laid out, patched together (the engine against
the naive hooked loop that replaces every position of the unit in one forward), and refused
when a prompt lacks one of their positions."""

from __future__ import annotations

import pytest
import torch

from addpatch.engine.patching import PatchEngine
from addpatch.engine.positions import (
    UNIT_JOIN,
    check_units,
    highlight,
    layout_prompt,
    render_with_spans,
    select_positions,
    unit_parts,
    unit_text,
)
from addpatch.errors import BadInput
from addpatch.models.tiny_tokenizers import build_tokenizer
from tests.conftest import tiny_model
from tests.test_components import COMPONENTS, _compare_components, _expected_rows
from tests.test_engine import TEMPLATE, _mixed_numbers, _pairs

# across both addends, the answer slot, written out of prompt order, three positions, and one
# within the first addend (pair 1 shares the base's first addend: answered from the base run)
UNITS = ["a0.d0+a1.d0", "a1.d1+last", "last+a0.d1", "w1.0+a0.d0+last", "a0.d0+a0.d1"]


def _layout(numbers: list[int], template: str = TEMPLATE):
    return layout_prompt(build_tokenizer("digits"), *render_with_spans(template, numbers))


def test_unit_parts_and_indices_keep_the_order_written():
    layout = _layout([23, 45])
    assert UNIT_JOIN == "+"
    assert unit_parts("a1.d0+last") == ("a1.d0", "last")
    assert unit_parts("last") == ("last",)
    last = len(layout.token_ids) - 1
    a1 = layout.index("a1.d0")
    assert layout.indices("a1.d0+last") == (a1, last)
    assert layout.indices("last+a1.d0") == (last, a1)
    assert layout.indices("last") == (last,)
    assert layout.indices("a1.d0+a9.d0") is None
    assert unit_text(layout, "a1.d0+last") == layout.tokens[a1] + "+" + layout.tokens[last]
    assert unit_text(layout, "a1.d0") == layout.tokens[a1]
    marked = highlight(layout, ["a0.d1+last"])
    assert marked.count("[") == 2 and marked.endswith(f"[{layout.tokens[last]}]")


def test_select_positions_mixes_units_with_single_positions():
    layout = _layout([23, 45])
    chosen = select_positions(layout, "a0.d0, a1.d1 + last ,last", 2, 2)
    assert chosen == ["a0.d0", "a1.d1+last", "last"]


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("a0.d0+a0.d0", "unit 'a0.d0+a0.d0' names a position twice"),
        ("a1.d1+last", "names the same token twice"),  # a1.d1 is not last: ` is` is
        ("a1.t1+a1.d1", "unit 'a1.t1+a1.d1' names the same token twice"),
        ("a0.d0+a9.d0", "unit 'a0.d0+a9.d0' names unknown position 'a9.d0'"),
        ("a0.d0+", "unit 'a0.d0+' names unknown position ''"),
    ],
)
def test_bad_units_are_refused(which, message):
    layout = _layout([23, 45], "{num0}+{num1}")  # the prompt ends on the second addend
    if which == "a1.d1+last":
        assert layout.index("a1.d1") == layout.index("last")
    with pytest.raises(BadInput, match=message.replace("+", r"\+")):
        select_positions(layout, which, 2, 2)


def test_a_unit_some_prompts_lack_is_refused_naming_it():
    layouts = [_layout([23, 45]), _layout([7, 45])]  # the second has no a0.d1
    check_units(layouts, ["a0.d1", "last"])  # single positions: missing where absent
    with pytest.raises(BadInput, match=r"unit 'a0\.d1\+last' names 'a0\.d1'"):
        check_units(layouts, ["a0.d0", "a0.d1+last"])


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_units_equal_naive_loop_on_every_cell_and_component(family):
    model, tokenizer = tiny_model(family, "digits", seed=13)
    pairs = _pairs(tokenizer, _mixed_numbers(1, 3))
    compared = _compare_components(model, tokenizer, pairs, UNITS)
    assert compared == _expected_rows(PatchEngine(model, tokenizer), pairs, UNITS)


def test_units_equal_naive_loop_with_chunked_tokenizer():
    model, tokenizer = tiny_model("llama", "chunks", seed=3)
    pairs = _pairs(tokenizer, _mixed_numbers(2, 4))
    units = ["a0.t0+a1.t1", "a1.t0+last", "a0.t0+a0.t1"]
    compared = _compare_components(model, tokenizer, pairs, units)
    assert all(count > 0 for count in compared.values())


def _rows(engine: PatchEngine, pairs, positions: list[str]) -> dict[tuple, dict]:
    layers = list(range(-1, engine.num_layers))
    tables = engine.sweep(pairs, layers, positions, 4, components=COMPONENTS)
    return {
        (r["example_id"], r["layer"], positions[r["position"]], r["component"], r["head"]): r
        for table in tables
        for r in table.to_pylist()
    }


def test_a_unit_patches_more_than_any_of_its_positions():
    """The unit's answers are not those of either position alone (patching is not a no-op on
    the extra positions)."""
    model, tokenizer = tiny_model("llama", "digits", seed=13)
    pairs = _pairs(tokenizer, _mixed_numbers(1, 3))
    rows = _rows(PatchEngine(model, tokenizer), pairs, ["a0.d0", "a1.d0", "a0.d0+a1.d0"])
    differs = {"a0.d0": 0, "a1.d0": 0}
    for (example, layer, name, component, head), row in rows.items():
        if name == "a0.d0+a1.d0":
            for single in differs:
                other = rows[(example, layer, single, component, head)]
                differs[single] += other["top_logprobs"] != pytest.approx(
                    row["top_logprobs"], abs=1e-4
                )
    assert all(count > 0 for count in differs.values()), differs


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_unit_whose_other_positions_cannot_change_equals_its_one_position(family):
    """`bos`, `w0.1` come before any number: their vectors are the same in base and
    counterfactual, so the unit is its one position that differs, though its rerun starts
    earlier."""
    model, tokenizer = tiny_model(family, "digits", seed=5)
    pairs = _pairs(tokenizer, _mixed_numbers(3, 4))
    units = ["w0.1+a1.d0", "a1.d0+bos+w0.2"]
    rows = _rows(PatchEngine(model, tokenizer), pairs, ["a1.d0", *units])
    compared = 0
    for (example, layer, name, component, head), row in rows.items():
        if name in units:
            single = rows[(example, layer, "a1.d0", component, head)]
            assert row["token_ids"] == single["token_ids"]
            assert row["top_ids"] == single["top_ids"]
            assert row["top_logprobs"] == pytest.approx(single["top_logprobs"], abs=1e-4)
            compared += 1
    assert compared == 2 * len(rows) // 3


def test_units_equal_naive_loop_on_the_shipped_adder():
    from addpatch.models.loading import load_model, resolve_model

    model, tokenizer = load_model(
        resolve_model("tiny-adder-digits"), torch.device("cpu"), torch.float32
    )
    pairs = _pairs(tokenizer, [([23, 45], [71, 38]), ([50, 57], [76, 82]), ([19, 91], [19, 27])])
    units = ["a1.d1+last", "a0.d1+a1.d1+last"]
    compared = _compare_components(model, tokenizer, pairs, units)
    assert compared == _expected_rows(PatchEngine(model, tokenizer), pairs, units)
