"""Counterfactual-pair generators: invariants, determinism, filtering and bad requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addpatch.errors import BadInput
from addpatch.task.addition import AdditionInput, AdditionTask, carry_model
from addpatch.task.generators import GENERATORS, CounterfactualPair, generate_pairs
from addpatch.task.labels import label_many

FAST = settings(max_examples=25, deadline=None)


def _assert_well_formed(task: AdditionTask, pairs: list[CounterfactualPair], width: int) -> None:
    for pair in pairs:
        for inp in (pair.base, pair.counterfactual):
            assert isinstance(inp, AdditionInput)
            assert inp.num_digits == width
            assert len(inp.numbers) == task.num_addends
            assert inp.template in task.templates
            for n in inp.numbers:
                assert len(str(n)) == width  # exact width, no leading zeros


def _digits(inp: AdditionInput) -> list[tuple[int, ...]]:
    return [inp.digits(k) for k in range(len(inp.numbers))]


def _carries(a: int, b: int, width: int) -> list[int]:
    return [int(a % 10**i + b % 10**i >= 10**i) for i in range(1, width + 1)]


def test_registry_has_descriptions_and_options():
    assert set(GENERATORS) == {"random", "sum_to_nine", "one_digit", "carry_flip"}
    for generator in GENERATORS.values():
        assert generator.description and "\n" not in generator.description
        assert {"num_digits", "drop_uninformative_for"} <= set(generator.options)
    task = AdditionTask(2, 2)
    assert GENERATORS["random"](task, 3, 0) == generate_pairs("random", task, 3, 0)
    with pytest.raises(BadInput, match="no option 'carry'"):
        GENERATORS["one_digit"](task, 3, 0, carry=1)


@FAST
@given(
    kind=st.sampled_from(["random", "sum_to_nine", "one_digit"]),
    k=st.integers(2, 4),
    d=st.integers(1, 5),
    seed=st.integers(0, 10**6),
    data=st.data(),
)
def test_generators_are_well_formed_and_deterministic(kind, k, d, seed, data):
    task = AdditionTask(k, d)
    width = data.draw(st.integers(1, d))
    pairs = generate_pairs(kind, task, 8, seed, num_digits=width)
    assert len(pairs) == 8
    _assert_well_formed(task, pairs, width)
    assert generate_pairs(kind, task, 8, seed, num_digits=width) == pairs


def test_seeds_give_different_datasets():
    task = AdditionTask(2, 3)
    assert generate_pairs("random", task, 20, 1) != generate_pairs("random", task, 20, 2)


def test_templates_come_from_the_task():
    task = AdditionTask(2, 2, templates=("The sum of {num0} and {num1} is", "{num0} + {num1} ="))
    pairs = generate_pairs("random", task, 200, 0)
    used = {p.base.template for p in pairs} | {p.counterfactual.template for p in pairs}
    assert used == set(task.templates)


@FAST
@given(k=st.integers(2, 4), d=st.integers(1, 5), seed=st.integers(0, 10**6), data=st.data())
def test_sum_to_nine_column(k, d, seed, data):
    task = AdditionTask(k, d)
    column = data.draw(st.integers(0, d - 1))
    pairs = generate_pairs("sum_to_nine", task, 10, seed, column=column)
    _assert_well_formed(task, pairs, d)
    for pair in pairs:
        digits = _digits(pair.base)
        assert digits[0][column] + digits[1][column] == 9
        assert digits[0][0] != 0 and digits[1][0] != 0


def test_sum_to_nine_defaults_to_the_ones_column():
    for pair in generate_pairs("sum_to_nine", AdditionTask(2, 3), 20, 0):
        assert pair.base.numbers[0] % 10 + pair.base.numbers[1] % 10 == 9


@FAST
@given(k=st.integers(2, 4), d=st.integers(1, 5), seed=st.integers(0, 10**6), data=st.data())
def test_one_digit_changes_exactly_the_chosen_digit(k, d, seed, data):
    task = AdditionTask(k, d)
    addend = data.draw(st.one_of(st.none(), st.integers(0, k - 1)))
    digit = data.draw(st.one_of(st.none(), st.integers(0, d - 1)))
    pairs = generate_pairs("one_digit", task, 10, seed, addend=addend, digit=digit)
    _assert_well_formed(task, pairs, d)
    for pair in pairs:
        base, cf = _digits(pair.base), _digits(pair.counterfactual)
        diffs = [(a, i) for a in range(k) for i in range(d) if base[a][i] != cf[a][i]]
        assert len(diffs) == 1
        if addend is not None:
            assert diffs[0][0] == addend
        if digit is not None:
            assert diffs[0][1] == digit


@FAST
@given(d=st.integers(1, 5), seed=st.integers(0, 10**6), data=st.data())
def test_carry_flip_flips_the_carry_and_holds_other_columns(d, seed, data):
    task = AdditionTask(2, d)
    carry = data.draw(st.one_of(st.none(), st.integers(1, d)))
    pairs = generate_pairs("carry_flip", task, 10, seed, carry=carry)
    _assert_well_formed(task, pairs, d)
    for pair in pairs:
        a, b = pair.base.numbers
        c, e = pair.counterfactual.numbers
        flipped = [
            i
            for i, (x, y) in enumerate(zip(_carries(a, b, d), _carries(c, e, d), strict=True), 1)
            if x != y
        ]
        base, cf = _digits(pair.base), _digits(pair.counterfactual)
        changed_columns = {d - i for k in range(2) for i in range(d) if base[k][i] != cf[k][i]}
        assert len(changed_columns) == 1  # only the column producing the flipped carry
        column = changed_columns.pop()
        assert column in flipped
        if carry is not None:
            assert column == carry


def test_carry_flip_ones_column_keeps_tens_digits():
    task = AdditionTask(2, 2)
    for pair in generate_pairs("carry_flip", task, 50, 11, carry=1):
        assert pair.base.numbers[0] // 10 == pair.counterfactual.numbers[0] // 10
        assert pair.base.numbers[1] // 10 == pair.counterfactual.numbers[1] // 10
        model = carry_model(task)
        assert model.trace(pair.base)["C_1"] != model.trace(pair.counterfactual)["C_1"]


def test_carry_flip_with_explicit_hold():
    task = AdditionTask(2, 3)
    hold = ["digit_0_0", "digit_1_0", "digit_0_2", "digit_1_2"]  # free: the middle column
    for pair in generate_pairs("carry_flip", task, 30, 5, carry=3, hold=hold):
        base, cf = _digits(pair.base), _digits(pair.counterfactual)
        assert all(base[k][i] == cf[k][i] for k in range(2) for i in (0, 2))
        assert _carries(*pair.base.numbers, 3)[2] != _carries(*pair.counterfactual.numbers, 3)[2]
    pairs = generate_pairs("carry_flip", task, 10, 5, carry=2, hold="digit_0_0+digit_1_0")
    assert all(
        _carries(*p.base.numbers, 3)[1] != _carries(*p.counterfactual.numbers, 3)[1] for p in pairs
    )


@pytest.mark.parametrize(
    ("kind", "target", "options"),
    [
        ("random", "digit_0_1", {}),
        ("random", "C_1", {}),
        ("sum_to_nine", "C_1", {"column": 1}),
        ("one_digit", "digit_1_0+digit_1_1", {"addend": 1}),
        ("carry_flip", "C_2", {}),
    ],
)
def test_drop_uninformative_keeps_only_pairs_that_change_the_answer(kind, target, options):
    task = AdditionTask(2, 2)
    pairs = generate_pairs(kind, task, 40, 3, drop_uninformative_for=target, **options)
    assert len(pairs) == 40
    labels = label_many(task, pairs, target)
    assert all(label != pair.base.answer for (label, _), pair in zip(labels, pairs, strict=True))


@pytest.mark.parametrize(
    ("kind", "task", "options", "message"),
    [
        ("nope", AdditionTask(2, 2), {}, "choose one of: random, sum_to_nine"),
        ("random", AdditionTask(2, 2), {"colum": 1}, "no option 'colum'"),
        ("random", AdditionTask(2, 2), {"num_digits": 3}, "num_digits must be 1..2"),
        ("sum_to_nine", AdditionTask(2, 2), {"column": 2}, "column must be 0..1"),
        ("sum_to_nine", AdditionTask(2, 3), {"column": 2, "num_digits": 2}, "column must be"),
        ("one_digit", AdditionTask(2, 2), {"addend": 2}, "addend must be 0..1"),
        ("one_digit", AdditionTask(3, 2), {"digit": -1}, "digit must be 0..1"),
        ("carry_flip", AdditionTask(3, 2), {}, "2-addend"),
        ("carry_flip", AdditionTask(2, 2), {"carry": 3}, "carry must be 1..2"),
        ("carry_flip", AdditionTask(2, 2), {"hold": ["digit_5_0"]}, "unknown digit variable"),
        (
            "carry_flip",
            AdditionTask(2, 2),
            {"carry": 1, "hold": ["digit_0_1", "digit_1_1"]},
            "never flip",
        ),
        ("random", AdditionTask(2, 2), {"drop_uninformative_for": "raw_input"}, "found only 0"),
        ("random", AdditionTask(2, 2), {"drop_uninformative_for": "bogus"}, "unknown variable"),
    ],
)
def test_bad_requests_raise_bad_input(kind, task, options, message):
    with pytest.raises(BadInput, match=message):
        generate_pairs(kind, task, 5, 0, **options)


def test_bad_size():
    with pytest.raises(BadInput, match=r"--size must be 1\.\.100,000, got 0"):
        generate_pairs("random", AdditionTask(2, 2), 0, 0)
