"""The causal-model core and the two addition models, checked against integer arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addpatch.errors import BadInput
from addpatch.task.addition import (
    AdditionInput,
    AdditionTask,
    basic_model,
    carry_model,
)
from addpatch.task.causal_model import CausalModel, Variable
from addpatch.task.templates import (
    TWO_ADDEND_TEMPLATE,
    digits_of,
    number_from_digits,
    render_prompt,
)

FAST = settings(max_examples=60, deadline=None)


# -- the generic core -------------------------------------------------------------------------


def _toy() -> CausalModel:
    return CausalModel(
        "toy",
        [
            Variable("w", None, ("x", "z"), lambda x, z: x + z),
            Variable("x", tuple(range(10))),
            Variable("z", None, ("y",), lambda y: 2 * y),
            Variable("y", None, ("x",), lambda x: x + 1),
        ],
    )


def test_core_orders_by_timestep_and_finds_inputs_and_outputs():
    model = _toy()
    assert model.variables == ("x", "y", "z", "w")
    assert model.timestep == {"x": 0, "y": 1, "z": 2, "w": 3}
    assert model.inputs == ("x",)
    assert model.outputs == ("w",)


def test_core_run_and_hard_intervention_recompute_downstream():
    model = _toy()
    assert model.run({"x": 3}) == {"x": 3, "y": 4, "z": 8, "w": 11}
    assert model.run({"x": 3}, {"y": 10}) == {"x": 3, "y": 10, "z": 20, "w": 23}
    trace = model.run({"x": 3})
    assert model.intervene(trace, {"y": 10}) == {"x": 3, "y": 10, "z": 20, "w": 23}
    assert model.intervene(trace, {"x": 1, "z": 0}) == {"x": 1, "y": 2, "z": 0, "w": 1}
    assert trace["w"] == 11  # the original trace is untouched


def test_core_rejects_bad_inputs_and_cycles():
    model = _toy()
    with pytest.raises(BadInput, match="missing"):
        model.run({})
    with pytest.raises(BadInput, match="allowed: 0..9"):
        model.run({"x": 12})
    with pytest.raises(BadInput, match="valid variables: x, y, z, w"):
        model.run({"x": 1}, {"q": 1})
    with pytest.raises(BadInput, match="not an input"):
        model.run({"x": 1, "y": 2})
    with pytest.raises(ValueError, match="cycle"):
        CausalModel(
            "loop",
            [
                Variable("a", None, ("b",), lambda b: b),
                Variable("b", None, ("a",), lambda a: a),
            ],
        )


# -- task config, inputs and template helpers -------------------------------------------------


def test_task_defaults_and_validation():
    task = AdditionTask(2, 2)
    assert task.templates == (TWO_ADDEND_TEMPLATE,)
    assert AdditionTask(3, 4).templates == ("The sum of {num0}, {num1}, and {num2} is",)
    assert AdditionTask(4, 6).output_width == 7
    assert AdditionTask(2, 3).output_width == 4
    for k in (1, 5):
        with pytest.raises(BadInput, match="num_addends must be 2..4"):
            AdditionTask(k, 2)
    for d in (0, 7):
        with pytest.raises(BadInput, match="num_digits must be 1..6"):
            AdditionTask(2, d)
    with pytest.raises(BadInput, match="exactly"):
        AdditionTask(3, 2, templates=(TWO_ADDEND_TEMPLATE,))
    with pytest.raises(BadInput, match="empty"):
        AdditionTask(2, 2, templates=())


def test_input_prompt_total_answer_and_validation():
    task = AdditionTask(2, 2, prompt_prefix="Q: ", prompt_suffix="")
    inp = task.make_input((23, 45))
    assert inp.prompt == "Q: The sum of 23 and 45 is"
    assert (inp.total, inp.answer) == (68, " 68")
    assert inp.digits(0) == (2, 3)
    assert AdditionInput((5, 7), 2, TWO_ADDEND_TEMPLATE).digits(0) == (0, 5)
    with pytest.raises(BadInput, match="does not fit"):
        AdditionInput((123, 4), 2, TWO_ADDEND_TEMPLATE)
    with pytest.raises(BadInput, match="num1"):
        AdditionInput((12,), 2, TWO_ADDEND_TEMPLATE)
    with pytest.raises(BadInput, match="num_digits must be"):
        AdditionInput((1, 2), 0, TWO_ADDEND_TEMPLATE)
    with pytest.raises(BadInput, match="at most 2"):
        basic_model(AdditionTask(2, 2)).trace(AdditionInput((1, 2), 3, TWO_ADDEND_TEMPLATE))
    with pytest.raises(BadInput, match="prefix"):
        basic_model(task).trace(AdditionInput((1, 2), 2, TWO_ADDEND_TEMPLATE))


def test_reference_template_helpers():
    # spec section 11, test_templates
    assert number_from_digits([1, 2, 3]) == 123
    assert digits_of(23, 3) == [0, 2, 3]
    assert render_prompt(TWO_ADDEND_TEMPLATE, [number_from_digits([0, 2, 3]), 45]) == (
        "The sum of 23 and 45 is"
    )
    with pytest.raises(BadInput):
        digits_of(1234, 3)


# -- the basic model --------------------------------------------------------------------------


def test_basic_model_reference_trace():
    task = AdditionTask(2, 2)
    model = basic_model(task)
    assert model.id == "addition_basic_2n_2d"
    trace = model.trace(task.make_input((70, 58)))
    assert trace["raw_input"] == "The sum of 70 and 58 is"
    assert trace["raw_output"] == " 128"
    assert [trace[f"output_digit_{d}"] for d in range(3)] == [1, 2, 8]
    assert model.trace(task.make_input((0, 0)))["raw_output"] == " 0"
    assert model.inputs == (
        "digit_0_0",
        "digit_0_1",
        "digit_1_0",
        "digit_1_1",
        "num_addends",
        "num_digits",
        "template",
    )
    assert model.outputs == ("raw_input", "raw_output")


def test_basic_model_narrow_inputs_are_right():
    # spec 10.2 item 13: the reference answered " 1440" for 92+52 with D=3
    task = AdditionTask(2, 3)
    trace = basic_model(task).trace(task.make_input((92, 52), num_digits=2))
    assert trace["raw_output"] == " 144"
    assert [trace[f"output_digit_{d}"] for d in range(4)] == [0, 1, 4, 4]
    assert trace["raw_input"] == "The sum of 92 and 52 is"


def test_basic_model_three_addends_id_and_prompt():
    task = AdditionTask(3, 2)
    model = basic_model(task)
    assert model.id == "addition_basic_3n_2d"
    trace = model.trace(task.make_input((99, 98, 97)))
    assert trace["raw_input"] == "The sum of 99, 98, and 97 is"
    assert trace["raw_output"] == " 294"


@st.composite
def problems(draw, addends=None, max_digits=6):
    k = addends if addends is not None else draw(st.integers(2, 4))
    d = draw(st.integers(1, max_digits))
    width = draw(st.integers(1, d))
    numbers = draw(st.lists(st.integers(0, 10**width - 1), min_size=k, max_size=k))
    task = AdditionTask(k, d)
    return task, task.make_input(numbers, num_digits=width)


@FAST
@given(problems())
def test_basic_model_matches_integer_sum(problem):
    task, inp = problem
    trace = basic_model(task).trace(inp)
    assert trace["raw_output"] == f" {sum(inp.numbers)}"
    assert int(trace["raw_output"]) == inp.total
    assert trace["raw_input"] == inp.prompt


@FAST
@given(problems(), st.data())
def test_basic_output_digit_intervention_replaces_one_place(problem, data):
    task, inp = problem
    model = basic_model(task)
    width = task.output_width
    slot = data.draw(st.integers(0, width - 1))
    value = data.draw(st.integers(0, 9))
    place = 10 ** (width - 1 - slot)
    total = inp.total
    expected = total - (total // place % 10) * place + value * place
    after = model.run(model.encode(inp), {f"output_digit_{slot}": value})
    assert int(after["raw_output"]) == expected


@FAST
@given(problems(), st.data())
def test_basic_digit_intervention_is_arithmetic_on_modified_numbers(problem, data):
    task, inp = problem
    model = basic_model(task)
    k = data.draw(st.integers(0, task.num_addends - 1))
    d = data.draw(st.integers(0, inp.num_digits - 1))
    value = data.draw(st.integers(0, 9))
    digits = [list(inp.digits(i)) for i in range(len(inp.numbers))]
    digits[k][d] = value
    expected = sum(number_from_digits(row) for row in digits)
    trace = model.intervene(model.trace(inp), {f"digit_{k}_{d}": value})
    assert int(trace["raw_output"]) == expected


# -- the carry model --------------------------------------------------------------------------


def _carry(a: int, b: int, digits: int = 2, **interventions: int) -> dict:
    task = AdditionTask(2, digits)
    model = carry_model(task)
    return model.run(model.encode(task.make_input((a, b))), interventions)


@pytest.mark.parametrize(
    ("a", "b", "carries", "outs", "answer"),
    [
        (23, 45, (0, 0), (8, 6, 0), " 68"),
        (27, 45, (1, 0), (2, 7, 0), " 72"),
        (27, 48, (1, 0), (5, 7, 0), " 75"),
        (58, 67, (1, 1), (5, 2, 1), " 125"),
        (0, 0, (0, 0), (0, 0, 0), " 0"),
        (99, 99, (1, 1), (8, 9, 1), " 198"),
        (19, 81, (1, 1), (0, 0, 1), " 100"),
    ],
)
def test_carry_model_reference_cases(a, b, carries, outs, answer):
    trace = _carry(a, b)
    assert (trace["C_1"], trace["C_2"]) == carries
    assert (trace["O_1"], trace["O_2"], trace["O_3"]) == outs
    assert trace["raw_output"] == answer


def test_carry_model_three_digit_reference_cases():
    trace = _carry(123, 456, 3)
    assert [trace[f"C_{i}"] for i in (1, 2, 3)] == [0, 0, 0]
    assert [trace[f"O_{i}"] for i in (1, 2, 3, 4)] == [9, 7, 5, 0]
    trace = _carry(789, 876, 3)
    assert [trace[f"O_{i}"] for i in (1, 2, 3, 4)] == [5, 6, 6, 1]
    assert trace["raw_output"] == " 1665"


def test_carry_model_reference_interventions():
    forced = _carry(23, 45, C_1=1)
    assert (forced["O_1"], forced["O_2"], forced["raw_output"]) == (8, 7, " 78")
    forced = _carry(23, 45, O_1=9)
    assert (forced["O_2"], forced["raw_output"]) == (6, " 69")
    forced = _carry(29, 40, C_1=1)
    assert (forced["O_2"], forced["C_2"], forced["raw_output"]) == (7, 0, " 79")
    forced = _carry(29, 70, C_1=1)
    assert (forced["O_2"], forced["C_2"], forced["O_3"], forced["raw_output"]) == (0, 1, 1, " 109")
    forced = _carry(369, 630, 3, C_1=1)
    assert [forced[f"C_{i}"] for i in (1, 2, 3)] == [1, 1, 1]
    assert forced["raw_output"] == " 1009"


def test_carry_model_names_order_and_errors():
    model = carry_model(AdditionTask(2, 3))
    assert model.id == "addition_carry_2n_3d"
    assert model.variables == (
        "digit_0_0",
        "digit_0_1",
        "digit_0_2",
        "digit_1_0",
        "digit_1_1",
        "digit_1_2",
        "num_digits",
        "template",
        "C_1",
        "O_1",
        "C_2",
        "O_2",
        "C_3",
        "O_3",
        "O_4",
        "raw_input",
        "raw_output",
    )
    assert "C_0" not in model and "O_0" not in model and "num_addends" not in model
    assert not any(name.startswith("sum_") for name in model.variables)
    with pytest.raises(BadInput, match="exactly 2 addends"):
        carry_model(AdditionTask(3, 2))
    with pytest.raises(BadInput, match="allowed: 0..1"):
        _carry(23, 45, C_1=2)


def test_carry_model_narrow_inputs_are_right():
    # spec 10.2 item 14: the reference answered " 460" for 12+34 with D=3
    task = AdditionTask(2, 3)
    model = carry_model(task)
    trace = model.trace(task.make_input((12, 34), num_digits=2))
    assert trace["raw_output"] == " 46"
    assert (trace["O_1"], trace["O_2"], trace["O_3"], trace["O_4"]) == (6, 4, 0, 0)
    forced = model.intervene(model.trace(task.make_input((95, 17), num_digits=2)), {"C_1": 0})
    assert forced["raw_output"] == " 102"


@FAST
@given(problems(addends=2))
def test_carry_model_matches_integer_sum_and_carries(problem):
    task, inp = problem
    a, b = inp.numbers
    trace = carry_model(task).trace(inp)
    assert int(trace["raw_output"]) == a + b
    for i in range(1, task.num_digits + 1):
        low = 10**i
        assert trace[f"C_{i}"] == int(a % low + b % low >= low)
        assert trace[f"O_{i}"] == (a + b) // 10 ** (i - 1) % 10
    assert trace[f"O_{task.num_digits + 1}"] == (a + b) // 10**task.num_digits % 10


@FAST
@given(problems(addends=2), st.data())
def test_forcing_a_carry_is_arithmetic(problem, data):
    task, inp = problem
    a, b = inp.numbers
    i = data.draw(st.integers(1, task.num_digits))
    value = data.draw(st.integers(0, 1))
    place = 10**i
    expected = (a // place + b // place + value) * place + (a % place + b % place) % place
    model = carry_model(task)
    trace = model.intervene(model.trace(inp), {f"C_{i}": value})
    assert int(trace["raw_output"]) == expected
    assert model.run(model.encode(inp), {f"C_{i}": value})["raw_output"] == trace["raw_output"]


@FAST
@given(problems(addends=2), st.data())
def test_forcing_a_sum_digit_replaces_that_place(problem, data):
    task, inp = problem
    i = data.draw(st.integers(1, task.num_digits + 1))
    value = data.draw(st.integers(0, 9))
    place = 10 ** (i - 1)
    total = inp.total
    expected = total - (total // place % 10) * place + value * place
    model = carry_model(task)
    assert int(model.intervene(model.trace(inp), {f"O_{i}": value})["raw_output"]) == expected
