"""The causal models and their labels as polars tables, for exploring the task in a notebook.

    from addpatch.task.tables import variables_table, trace_table, labels_table
    variables_table(carry_model(task))                     # name, role, values, parents
    trace_table(carry_model(task), [task.make_input([27, 45])])   # every variable's value
    labels_table(task, pairs, ["C_1", "digit_0_1+digit_1_1"])     # one label column per target
    informative_shares(task, {"random": pairs_a, "carry_flip": pairs_b}, ["C_1", "O_2"])

The tables only arrange what `addpatch.task.labels` computes; nothing here changes a label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from addpatch.errors import BadInput
from addpatch.task.addition import AdditionInput, AdditionModel, AdditionTask
from addpatch.task.generators import CounterfactualPair
from addpatch.task.labels import label_table

_VALUES_SHOWN = 12  # a longer value set is shown by its range or its size


def problem_text(inp: AdditionInput) -> str:
    """The problem an input poses, without its template: `23 + 45`."""
    return " + ".join(str(n) for n in inp.numbers)


def _role(model: AdditionModel, name: str) -> str:
    if name in model.inputs:
        return "input"
    return "output" if name in model.outputs else "intermediate"


def _values_text(values: tuple[Any, ...] | None) -> str:
    if values is None:
        return "any text"
    if all(isinstance(v, int) for v in values) and list(values) == list(
        range(min(values), max(values) + 1)
    ):
        return f"{min(values)}..{max(values)}"
    if len(values) > _VALUES_SHOWN:
        return f"{len(values)} values"
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)


def variables_table(model: AdditionModel) -> pl.DataFrame:
    """One row per variable of `model`, in evaluation order: `variable`, `role` (input,
    intermediate or output), `values` (as text: `0..9`, `any text`) and `parents`."""
    return pl.DataFrame(
        {
            "variable": list(model.variables),
            "role": [_role(model, name) for name in model.variables],
            "values": [_values_text(model.values(name)) for name in model.variables],
            "parents": [", ".join(model.parents[name]) for name in model.variables],
        },
        schema={
            "variable": pl.String,
            "role": pl.String,
            "values": pl.String,
            "parents": pl.String,
        },
    )


def trace_table(
    model: AdditionModel, inputs: Sequence[AdditionInput], variables: Sequence[str] | None = None
) -> pl.DataFrame:
    """One row per input: `problem` (`23 + 45`), then the value of each of `variables`
    (default: every variable but the prompt's `template` and `raw_input`) after running
    `model` on it."""
    if not inputs:
        raise BadInput("trace_table needs at least one input; build one with task.make_input")
    names = (
        [v for v in model.variables if v not in ("template", "raw_input")]
        if variables is None
        else list(variables)
    )
    for name in names:
        model.variable(name)  # BadInput naming the valid variables
    traces = [model.trace(inp) for inp in inputs]
    columns: dict[str, list[Any]] = {"problem": [problem_text(inp) for inp in inputs]}
    for name in names:
        columns[name] = [trace[name] for trace in traces]
    return pl.DataFrame(columns)


def labels_table(
    task: AdditionTask, pairs: Sequence[CounterfactualPair], targets: Sequence[str]
) -> pl.DataFrame:
    """One row per pair: `pair` (its index), `base` and `counterfactual` (`23 + 45`),
    `base_answer`, `cf_answer`, then per target (column named as given) the label: the answer
    after interchanging that target from the counterfactual into the base."""
    if not pairs:
        raise BadInput("labels_table needs at least one pair; generate some with generate_pairs")
    if not targets:
        raise BadInput("labels_table needs at least one target, e.g. ['C_1', 'raw_output']")
    if len(set(targets)) != len(targets):
        raise BadInput("labels_table got a target twice; list each target once")
    labels = label_table(task, pairs, targets)
    columns: dict[str, list[Any]] = {
        "pair": list(range(len(pairs))),
        "base": [problem_text(p.base) for p in pairs],
        "counterfactual": [problem_text(p.counterfactual) for p in pairs],
        "base_answer": [p.base.total for p in pairs],
        "cf_answer": [p.counterfactual.total for p in pairs],
    }
    for target in targets:
        if target in columns:
            raise BadInput(f"target {target!r} clashes with a column of the table; rename it")
        columns[target] = [value for _, value in labels[target]]
    return pl.DataFrame(columns)


def informative_shares(
    task: AdditionTask,
    datasets: Mapping[str, Sequence[CounterfactualPair]],
    targets: Sequence[str],
) -> pl.DataFrame:
    """Per dataset (a row, named by its key) and target (a column): the share of pairs whose
    label differs from the base answer, i.e. the pairs on which interchanging the target can be
    seen at all (the examples `--informative` keeps). A generator *isolates* a target when
    that share is high for it and low for the others."""
    if not datasets:
        raise BadInput("informative_shares needs at least one dataset of pairs")
    rows: list[dict[str, Any]] = []
    for name, pairs in datasets.items():
        if not pairs:
            raise BadInput(f"dataset {name!r} has no pairs; generate at least one")
        labels = label_table(task, pairs, targets)
        row: dict[str, Any] = {"dataset": name, "pairs": len(pairs)}
        for target in targets:
            changed = sum(
                value != pair.base.total
                for pair, (_, value) in zip(pairs, labels[target], strict=True)
            )
            row[target] = changed / len(pairs)
        rows.append(row)
    return pl.DataFrame(rows)
