"""addpatch.task.tables: the causal models and their labels as tables, against the models."""

from __future__ import annotations

import polars as pl
import pytest

from addpatch.errors import BadInput
from addpatch.task.addition import AdditionTask, basic_model, carry_model
from addpatch.task.generators import CounterfactualPair, generate_pairs
from addpatch.task.labels import interchange_label, resolve_target
from addpatch.task.tables import (
    informative_shares,
    labels_table,
    problem_text,
    trace_table,
    variables_table,
)

TASK = AdditionTask(num_addends=2, num_digits=2)


def test_variables_table_lists_every_variable_with_its_role_values_and_parents():
    model = carry_model(TASK)
    table = variables_table(model)
    assert table["variable"].to_list() == list(model.variables)
    rows = {r["variable"]: r for r in table.iter_rows(named=True)}
    assert rows["digit_0_0"] == {
        "variable": "digit_0_0",
        "role": "input",
        "values": "0..9",
        "parents": "",
    }
    assert rows["C_1"]["role"] == "intermediate" and rows["C_1"]["values"] == "0..1"
    assert rows["O_3"]["parents"] == "C_2"
    assert rows["raw_output"]["role"] == "output" and rows["raw_output"]["values"] == "any text"
    assert rows["template"]["values"] == "'The sum of {num0} and {num1} is'"
    basic = variables_table(basic_model(TASK))
    assert "num_addends" in basic["variable"].to_list()
    assert "C_1" not in basic["variable"].to_list()


def test_trace_table_holds_the_models_values():
    model = carry_model(TASK)
    inputs = [TASK.make_input(n) for n in ([23, 45], [27, 48], [99, 99])]
    table = trace_table(model, inputs)
    assert table["problem"].to_list() == ["23 + 45", "27 + 48", "99 + 99"]
    assert "template" not in table.columns and "raw_input" not in table.columns
    for inp, row in zip(inputs, table.iter_rows(named=True), strict=True):
        trace = model.trace(inp)
        assert {k: v for k, v in row.items() if k != "problem"} == {
            k: trace[k] for k in table.columns[1:]
        }
    # the reference's worked values
    assert (table["C_1"].to_list(), table["O_1"].to_list()) == ([0, 1, 1], [8, 5, 8])
    assert table["raw_output"].to_list() == [" 68", " 75", " 198"]
    assert trace_table(model, inputs[:1], ["C_1"]).columns == ["problem", "C_1"]


def test_trace_table_refuses_no_inputs_and_unknown_variables():
    with pytest.raises(BadInput, match="at least one input"):
        trace_table(carry_model(TASK), [])
    with pytest.raises(BadInput, match="unknown variable 'C_9'"):
        trace_table(carry_model(TASK), [TASK.make_input([1, 2])], ["C_9"])


def test_labels_table_equals_interchange_labels_for_single_joint_and_cross_targets():
    pairs = [
        CounterfactualPair(TASK.make_input([70, 58]), TASK.make_input([74, 85])),
        *generate_pairs("random", TASK, 20, 4),
    ]
    targets = ["digit_0_1", "digit_0_0+digit_1_1", "C_1", "O_2<-C_1", "raw_output"]
    table = labels_table(TASK, pairs, targets)
    assert table.columns == ["pair", "base", "counterfactual", "base_answer", "cf_answer", *targets]
    assert table.row(0, named=True) == {
        "pair": 0,
        "base": "70 + 58",
        "counterfactual": "74 + 85",
        "base_answer": 128,
        "cf_answer": 159,
        "digit_0_1": 132,
        "digit_0_0+digit_1_1": 125,
        "C_1": 128,
        "O_2<-C_1": 108,
        "raw_output": 159,
    }
    for target in targets:
        model, canonical = resolve_target(TASK, target)
        assert table[target].to_list() == [
            interchange_label(model, p.base, p.counterfactual, canonical)[1] for p in pairs
        ]
    assert table["base"].to_list() == [problem_text(p.base) for p in pairs]


def test_labels_table_refuses_bad_arguments():
    pairs = generate_pairs("random", TASK, 2, 0)
    with pytest.raises(BadInput, match="at least one pair"):
        labels_table(TASK, [], ["C_1"])
    with pytest.raises(BadInput, match="at least one target"):
        labels_table(TASK, pairs, [])
    with pytest.raises(BadInput, match="target twice"):
        labels_table(TASK, pairs, ["C_1", "C_1"])
    with pytest.raises(BadInput, match="unknown variable 'C_9'"):
        labels_table(TASK, pairs, ["C_9"])


def test_informative_shares_count_pairs_whose_label_is_not_the_base_answer():
    datasets = {
        "random": generate_pairs("random", TASK, 60, 0),
        "one_digit": generate_pairs("one_digit", TASK, 60, 0, addend=0, digit=1),
        "carry_flip": generate_pairs("carry_flip", TASK, 60, 0, carry=1),
    }
    targets = ["digit_0_0", "digit_0_1", "C_1"]
    table = informative_shares(TASK, datasets, targets)
    assert table.columns == ["dataset", "pairs", *targets]
    for name, pairs in datasets.items():
        row = table.row(by_predicate=pl.col("dataset") == name, named=True)
        assert row["pairs"] == 60
        for target in targets:
            labels = labels_table(TASK, pairs, [target])
            changed = (labels[target] != labels["base_answer"]).sum()
            assert row[target] == changed / 60
    one_digit = table.row(by_predicate=pl.col("dataset") == "one_digit", named=True)
    assert (one_digit["digit_0_0"], one_digit["digit_0_1"]) == (0.0, 1.0)
    assert table.row(by_predicate=pl.col("dataset") == "carry_flip", named=True)["C_1"] == 1.0
    with pytest.raises(BadInput, match="has no pairs"):
        informative_shares(TASK, {"empty": []}, targets)
