"""Multi-position units (`a1.d0+last`): named, laid out, patched together (the engine against
the naive hooked loop that replaces every position of the unit in one forward), and refused
when a prompt lacks one of their positions."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from addpatch.engine.naive import naive_patch_batch
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import (
    UNIT_JOIN,
    check_units,
    highlight,
    layout_input,
    layout_prompt,
    render_with_spans,
    select_positions,
    unit_parts,
    unit_text,
)
from addpatch.errors import BadInput
from addpatch.experiment.datasets import load_pairs
from addpatch.models.tiny_tokenizers import build_tokenizer
from addpatch.report.components import check_heads_position
from addpatch.report.summary import carried_from_layer
from addpatch.scoring import scores
from addpatch.store.store import Store
from cli.main import app
from tests.conftest import tiny_model
from tests.store_files import store_snapshot
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


# -- through the CLI: run, store, score ----------------------------------------------------------

UNIT_RUN = ["run", "--size", "12", "--layers", "-1,0", "--positions", "a0.d1,a1.d1+last"]


@pytest.fixture(scope="module")
def unit_store(tmp_path_factory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("units") / "store"
    result = CliRunner().invoke(app, [*UNIT_RUN, "--store", str(store)])
    assert result.exit_code == 0, result.output
    return store, result.stdout


def test_run_stores_a_unit_as_one_position(unit_store):
    store, out = unit_store
    opened = Store.open(store)
    with opened.connect(read_only=True) as conn:
        positions = conn.execute(
            "SELECT position, name, token_text FROM run_positions ORDER BY position"
        ).fetchall()
        examples, rows, cells = conn.execute(
            "SELECT (SELECT num_examples FROM runs), count(*), "
            "count(DISTINCT (example_id, layer, position)) FROM patched_outputs"
        ).fetchone()
    (_, first, digit), (_, unit, text) = positions
    assert (first, unit) == ("a0.d1", "a1.d1+last")
    tokens = text.split("+")
    assert len(tokens) == 2 and tokens[0].strip().isdigit() and tokens[1] == " is"
    assert rows == cells == examples * 2 * 2  # two layers x two positions, one row each
    patched = next(line for line in out.splitlines() if line.startswith("Patched: "))
    assert patched.count("[") == 3 and patched.endswith("[ is]")  # a0.d1, a1.d1, last


def test_stored_unit_rows_equal_the_naive_loop(unit_store):
    """The rows the run stored for the unit are the naive loop's, patching both positions."""
    from addpatch.models.loading import load_model, resolve_model

    store, _ = unit_store
    opened = Store.open(store)
    _, ids, pairs = load_pairs(opened, 1)
    with opened.connect(read_only=True) as conn:
        [steps] = conn.execute("SELECT max_new_tokens FROM runs").fetchone()
        stored = dict(
            conn.execute(
                "SELECT example_id, token_ids FROM patched_outputs "
                "WHERE layer = 0 AND position = 1 ORDER BY example_id"
            ).fetchall()
        )
    model, tokenizer = load_model(
        resolve_model("tiny-adder-digits"), torch.device("cpu"), torch.float32
    )
    chosen = [
        PromptPair(i, layout_input(tokenizer, p.base), layout_input(tokenizer, p.counterfactual))
        for i, p in zip(ids, pairs, strict=True)
        if i in stored
    ]
    naive = naive_patch_batch(model, tokenizer, chosen, 0, "a1.d1+last", steps)
    assert len(chosen) == len(stored) > 0
    for pair, answer in zip(chosen, naive, strict=True):
        assert list(stored[pair.example_id]) == answer.tokens


def test_score_reads_a_unit_as_a_position(unit_store):
    store, _ = unit_store
    frame = scores(Store.open(store), run_id=1, targets=["digit_1_1", "C_1"])
    units = frame.filter(pl.col("position") == 1)
    assert set(units.get_column("position_name")) == {"a1.d1+last"}
    assert units.height == 2 * 2  # targets x layers
    assert units.get_column("position_label").str.ends_with("+ is").all()
    assert units.get_column("n").min() > 0
    result = CliRunner().invoke(app, ["score", "--targets", "digit_1_1", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "digit_1_1" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--positions", "a0.d2+last"], "unit 'a0.d2+last' names unknown position 'a0.d2'"),
        (["--positions", "a0.d1,a0.d1+a0.d1"], "unit 'a0.d1+a0.d1' names a position twice"),
        (
            [
                "--template",
                "{num0} + {num1} =",
                "--template",
                "The sum of {num0} and {num1} is",
                "--positions",
                "a1.d1+w0.1",
            ],
            "unit 'a1.d1+w0.1' names 'w0.1', which the prompt",
        ),
    ],
)
def test_a_bad_unit_is_one_error_line_and_leaves_the_store_unchanged(unit_store, args, message):
    store, _ = unit_store
    before = store_snapshot(store)
    result = CliRunner().invoke(app, ["run", "--size", "12", *args, "--store", str(store)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert store_snapshot(store) == before


def test_the_report_reads_the_last_token_by_name_not_from_a_unit_after_it():
    frame = pl.DataFrame(
        {
            "run_id": [1] * 6,
            "target": ["C_1"] * 6,
            "layer": [-1, 0] * 3,
            "position": [0, 0, 1, 1, 2, 2],
            "position_name": ["a0.d1", "a0.d1", "last", "last", "a1.d1+last", "a1.d1+last"],
            "position_label": ["3", "3", " is", " is", "4+ is", "4+ is"],
            "iia": [0.1, 0.1, 0.2, 0.9, 1.0, 1.0],
        }
    )
    [carried] = carried_from_layer(frame, 0.8).to_dicts()
    assert (carried["last_position"], carried["last_label"], carried["carried_from"]) == (
        1,
        " is",
        0,
    )
    unnamed = carried_from_layer(frame.drop("position_name"), 0.8).to_dicts()[0]
    assert (unnamed["last_position"], unnamed["carried_from"]) == (2, -1)


def test_heads_position_takes_a_unit():
    check_heads_position("a1.d0+last")
    check_heads_position("r.0")
    with pytest.raises(BadInput, match="cannot read --heads-position"):
        check_heads_position("a1.d0+")
