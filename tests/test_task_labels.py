"""Interchange labels, target syntax, model resolution and distinguishability."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addpatch.errors import BadInput
from addpatch.task.addition import AdditionTask, basic_model, carry_model
from addpatch.task.generators import CounterfactualPair, generate_pairs
from addpatch.task.labels import (
    default_targets,
    distinguishability,
    interchange_label,
    label_many,
    label_table,
    parse_target,
    resolve_target,
)
from addpatch.task.templates import number_from_digits

FAST = settings(max_examples=60, deadline=None)
TASK = AdditionTask(2, 2)


def _label(target: str, base=(70, 58), cf=(74, 85), task=TASK, model=None):
    model = model or resolve_target(task, target)[0]
    return interchange_label(model, task.make_input(base), task.make_input(cf), target)


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("digit_0_0", " 128"),  # the counterfactual's digit equals the base's: no change
        ("digit_0_1", " 132"),
        ("digit_1_0", " 158"),
        ("digit_0_0+digit_1_1", " 125"),
        ("raw_output", " 159"),  # "answer what the counterfactual answers"
        ("raw_input", " 128"),  # no effect
    ],
)
def test_reference_interchange_examples(target, text):
    assert _label(target) == (text, int(text))


def test_reference_output_digit_and_carry_examples():
    assert _label("output_digit_0", (23, 45), (99, 99)) == (" 168", 168)
    assert _label("output_digit_1", (23, 45), (99, 99)) == (" 98", 98)
    assert _label("C_1", (23, 45), (27, 45)) == (" 78", 78)
    assert _label("O_1", (23, 45), (27, 45)) == (" 62", 62)


def test_cross_assignment_and_combinations():
    # base 70+58, cf 74+85: digit_0_1<-digit_1_1 gives 75+58
    assert _label("digit_0_1<-digit_1_1") == (" 133", 133)
    # addend 1's tens digit from cf's 7 of addend 0, addend 0's ones from cf's 4: 74+78
    assert _label("digit_1_0<-digit_0_0+digit_0_1") == (" 152", 152)
    # carry model: base 23+45's C_1 set from cf 27+45's C_1, read through O_2<-C_1 too
    assert _label("O_2<-C_1", (23, 45), (27, 45)) == (" 18", 18)
    assert _label("digit_0_1+C_1", (23, 45), (27, 45)) == (" 72", 72)
    assert _label("digit_0_1+C_1<-C_2", (23, 45), (27, 45)) == (" 62", 62)


def test_canonical_targets_and_model_choice():
    basic, carry = basic_model(TASK), carry_model(TASK)
    assert resolve_target(TASK, "digit_1_1 + digit_0_0") == (basic, "digit_0_0+digit_1_1")
    assert resolve_target(TASK, "digit_0_0+digit_0_0") == (basic, "digit_0_0")
    assert resolve_target(TASK, "digit_0_0<-digit_0_0") == (basic, "digit_0_0")
    assert resolve_target(TASK, "raw_output") == (basic, "raw_output")
    assert resolve_target(TASK, "C_2+C_1") == (carry, "C_1+C_2")
    assert resolve_target(TASK, "O_3+digit_1_0") == (carry, "digit_1_0+O_3")
    assert resolve_target(TASK, "O_2<-C_1") == (carry, "O_2<-C_1")
    assert parse_target(carry, "O_2<-C_1").assignments == (("O_2", "C_1"),)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("digit_9_9", "unknown variable 'digit_9_9'.*valid variables: digit_0_0"),
        ("", "non-empty"),
        ("digit_0_0+", "malformed"),
        ("a<-b<-c", "malformed"),
        ("output_digit_0+C_1", "mixes"),
        ("C_1+C_1<-O_2", "twice"),
        ("C_1<-O_2", "compatible"),
        ("raw_output<-raw_input", "compatible"),
    ],
)
def test_bad_targets(target, message):
    with pytest.raises(BadInput, match=message):
        resolve_target(TASK, target)


def test_carry_targets_need_two_addends():
    task = AdditionTask(3, 2)
    with pytest.raises(BadInput, match="only for 2-addend"):
        resolve_target(task, "C_1")
    assert "C_1" not in default_targets(task)


def test_default_targets():
    assert default_targets(AdditionTask(2, 2)) == [
        "digit_0_0",
        "digit_0_1",
        "digit_1_0",
        "digit_1_1",
        "C_1",
        "C_2",
        "O_1",
        "O_2",
        "O_3",
        "raw_output",
    ]
    three = default_targets(AdditionTask(3, 2))
    assert three[-1] == "raw_output" and len(three) == 7
    task = AdditionTask(2, 3)
    for target in default_targets(task):
        resolve_target(task, target)


def test_default_targets_add_the_joint_digits_of_multi_digit_tokens():
    task = AdditionTask(2, 4)
    # `1234` as `123` + `4`: digits 0-2 of each addend share a token
    chunked = default_targets(task, [(0, (0, 1, 2)), (1, (0, 1, 2))])
    joint = ["digit_0_0+digit_0_1+digit_0_2", "digit_1_0+digit_1_1+digit_1_2"]
    assert chunked == default_targets(task)[:8] + joint + default_targets(task)[8:]
    for target in joint:
        resolve_target(task, target)
    assert default_targets(AdditionTask(2, 2), [(0, (0, 1, 2))]) == default_targets(
        AdditionTask(2, 2)
    )  # a group the task has no digits for is left out


@st.composite
def basic_pairs(draw):
    k = draw(st.integers(2, 4))
    d = draw(st.integers(1, 5))
    width = draw(st.integers(1, d))
    numbers = st.lists(st.integers(0, 10**width - 1), min_size=k, max_size=k)
    task = AdditionTask(k, d)
    base = task.make_input(draw(numbers), num_digits=width)
    cf = task.make_input(draw(numbers), num_digits=width)
    return task, base, cf


@FAST
@given(basic_pairs(), st.data())
def test_joint_digit_interchange_is_arithmetic(problem, data):
    task, base, cf = problem
    slots = [(k, d) for k in range(task.num_addends) for d in range(base.num_digits)]
    chosen = data.draw(st.lists(st.sampled_from(slots), min_size=1, max_size=4, unique=True))
    digits = [list(base.digits(k)) for k in range(task.num_addends)]
    for k, d in chosen:
        digits[k][d] = cf.digits(k)[d]
    expected = sum(number_from_digits(row) for row in digits)
    target = "+".join(f"digit_{k}_{d}" for k, d in chosen)
    model, _ = resolve_target(task, target)
    assert interchange_label(model, base, cf, target) == (f" {expected}", expected)
    pair = CounterfactualPair(base, cf)
    assert label_many(task, [pair], target) == [(f" {expected}", expected)]
    assert interchange_label(model, base, cf, "raw_output") == (cf.answer, cf.total)


@FAST
@given(basic_pairs(), st.data())
def test_cross_digit_assignment_is_arithmetic(problem, data):
    task, base, cf = problem
    slots = [(k, d) for k in range(task.num_addends) for d in range(base.num_digits)]
    (ka, da), (kb, db) = data.draw(st.lists(st.sampled_from(slots), min_size=2, max_size=2))
    digits = [list(base.digits(k)) for k in range(task.num_addends)]
    digits[ka][da] = cf.digits(kb)[db]
    expected = sum(number_from_digits(row) for row in digits)
    target = f"digit_{ka}_{da}<-digit_{kb}_{db}"
    assert interchange_label(basic_model(task), base, cf, target)[1] == expected


@FAST
@given(st.integers(1, 4), st.data())
def test_carry_interchange_is_arithmetic(d, data):
    task = AdditionTask(2, d)
    numbers = st.tuples(st.integers(0, 10**d - 1), st.integers(0, 10**d - 1))
    (a, b), (c, e) = data.draw(numbers), data.draw(numbers)
    i = data.draw(st.integers(1, d))
    place = 10**i
    cf_carry = int(c % place + e % place >= place)
    expected = (a // place + b // place + cf_carry) * place + (a % place + b % place) % place
    label = interchange_label(
        carry_model(task), task.make_input((a, b)), task.make_input((c, e)), f"C_{i}"
    )
    assert label == (f" {expected}", expected)


def _random_pairs(size: int, digits: int, seed: int) -> list[CounterfactualPair]:
    return generate_pairs("random", AdditionTask(2, digits), size, seed)


def test_distinguishability_matches_reference_numbers():
    task = AdditionTask(2, 3)
    pairs = _random_pairs(2000, 3, seed=7)
    model = carry_model(task)
    share, count = distinguishability(model, pairs, "C_1", "O_2")
    assert 0.85 <= share <= 0.97 and count == round(share * 2000)  # reference: 92%
    share, _ = distinguishability(model, pairs, "C_1", "C_2")
    assert 0.62 <= share <= 0.82  # reference: 70%
    assert distinguishability(model, pairs, "raw_input") == (0.0, 0)
    share, _ = distinguishability(model, pairs, "C_1")
    assert 0.3 <= share <= 0.7  # C_1 changes the answer iff base and cf carries differ
    with pytest.raises(BadInput):
        distinguishability(model, [], "C_1")


def test_label_many_and_table_agree_with_single_labels():
    task = AdditionTask(2, 3)
    pairs = _random_pairs(50, 3, seed=3)
    table = label_table(task, pairs, default_targets(task))
    assert list(table) == default_targets(task)
    for target, labels in table.items():
        model, _ = resolve_target(task, target)
        expected = [interchange_label(model, p.base, p.counterfactual, target) for p in pairs]
        assert labels == expected
        assert all(int(text) == value for text, value in labels)
    assert table["raw_output"] == [(p.counterfactual.answer, p.counterfactual.total) for p in pairs]


def test_label_table_agrees_with_single_labels_on_four_digits():
    """The batched labeller on 300 four-digit pairs, every target (its speed against the
    one-pair-at-a-time labeller is measured by benchmarks/labelling.py)."""
    task = AdditionTask(2, 4)
    pairs = _random_pairs(300, 4, seed=random.Random(1).randrange(10**6))
    table = label_table(task, pairs, default_targets(task))
    assert list(table) == default_targets(task)
    for target, labels in table.items():
        model, _ = resolve_target(task, target)
        assert labels == [
            interchange_label(model, p.base, p.counterfactual, target) for p in pairs
        ], target
