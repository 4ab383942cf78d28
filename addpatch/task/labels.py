"""Interchange labels: what the answer should become after an interchange intervention.

A *target* is a string (it is stored as text): terms joined by `+`, each term either a variable
`X` (the base's X takes the counterfactual's value of X) or a cross assignment `A<-B` (the base's
A takes the counterfactual's value of B). All terms read the one counterfactual of a pair, so
`digit_0_0+digit_1_1` is a joint interchange. Each assignment is a hard intervention on the base
run; the label is the resulting `raw_output`. Hence `raw_output` as a target means "answer what
the counterfactual answers", and `raw_input` changes nothing.

Canonical target text: spaces removed, duplicate terms dropped, terms sorted by the model's
variable order, `A<-A` written `A`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from addpatch.errors import BadInput
from addpatch.task.addition import (
    AdditionInput,
    AdditionModel,
    AdditionTask,
    basic_model,
    carry_model,
    carry_var,
    digit_var,
    sum_digit_var,
)
from addpatch.task.causal_model import Trace

if TYPE_CHECKING:
    from addpatch.task.generators import CounterfactualPair

Label = tuple[str, int]
"""An answer text (" 78") and the integer it spells (78)."""

_CARRY_NAME = re.compile(r"^[CO]_\d+$")


@dataclass(frozen=True)
class Target:
    """A parsed target: `(base variable, counterfactual variable)` assignments, canonical text."""

    assignments: tuple[tuple[str, str], ...]
    text: str


def _split(target: str) -> list[tuple[str, str]]:
    """Syntax only: `"A+B<-C"` -> `[("A", "A"), ("B", "C")]`."""
    if not isinstance(target, str) or not target.strip():
        raise BadInput("a target must be a non-empty string such as 'C_1' or 'digit_0_0+digit_1_1'")
    terms = []
    for term in target.replace(" ", "").split("+"):
        parts = term.split("<-")
        if len(parts) > 2 or not all(parts):
            raise BadInput(
                f"malformed term {term!r} in target {target!r}; write 'X', 'A<-B' or join "
                "terms with '+'"
            )
        terms.append((parts[0], parts[-1]))
    return terms


def parse_target(model: AdditionModel, target: str) -> Target:
    """Check a target against `model` and put it in canonical form (see the module docstring)."""
    cached = model.target_cache.get(target)
    if isinstance(cached, Target):
        return cached
    chosen: dict[str, str] = {}
    for dst, src in _split(target):
        dst_var, src_var = model.variable(dst), model.variable(src)
        if chosen.get(dst, src) != src:
            raise BadInput(
                f"target {target!r} sets {dst} twice ({dst}<-{chosen[dst]} and {dst}<-{src}); "
                "keep one"
            )
        if dst != src:
            compatible = (
                dst_var.values is not None
                and src_var.values is not None
                and set(src_var.values) <= set(dst_var.values)
            )
            if not compatible:
                raise BadInput(
                    f"cannot set {dst} from {src} in target {target!r}: {src}'s values do not "
                    f"all fit {dst}; cross-assign between variables with compatible values"
                )
        chosen[dst] = src
    ordered = sorted(chosen.items(), key=lambda item: model.order_index(item[0]))
    text = "+".join(dst if dst == src else f"{dst}<-{src}" for dst, src in ordered)
    parsed = Target(tuple(ordered), text)
    if len(model.target_cache) > 10_000:
        model.target_cache.clear()
    model.target_cache[target] = parsed
    return parsed


def resolve_target(task: AdditionTask, target: str) -> tuple[AdditionModel, str]:
    """The causal model that defines a target's variables, and the canonical target text.

    Digit variables, `num_addends`, `output_digit_*`, `raw_input` and `raw_output` resolve to
    the basic model; any `C_i`/`O_i` (alone or mixed with digit variables) to the carry model,
    which exists only when K == 2.
    """
    basic = basic_model(task)
    carry = carry_model(task) if task.num_addends == 2 else None
    names = {name for pair in _split(target) for name in pair}
    unknown = sorted(n for n in names if n not in basic and (carry is None or n not in carry))
    if unknown:
        valid = list(basic.variables)
        if carry is not None:
            valid += [v for v in carry.variables if v not in basic]
        hint = ""
        if carry is None and any(_CARRY_NAME.match(n) for n in unknown):
            hint = " (C_i/O_i exist only for 2-addend tasks)"
        raise BadInput(
            f"unknown variable {unknown[0]!r} in target {target!r}{hint}; valid variables: "
            + ", ".join(valid)
        )
    carry_only = sorted(n for n in names if n not in basic)
    basic_only = sorted(n for n in names if carry is None or n not in carry)
    if carry_only and basic_only:
        raise BadInput(
            f"target {target!r} mixes basic-model variable {basic_only[0]} with carry-model "
            f"variable {carry_only[0]}; use digit variables with C_i/O_i, or output_digit_* alone"
        )
    model = carry if carry_only else basic
    assert model is not None
    return model, parse_target(model, target).text


def default_targets(
    task: AdditionTask, digit_tokens: Iterable[tuple[int, Iterable[int]]] = ()
) -> list[str]:
    """Every `digit_k_d`, then the joint digits each multi-digit token holds (`digit_tokens`:
    (addend, digits) pairs, e.g. `digit_0_0+digit_0_1+digit_0_2` for a `579` chunk), then
    (K == 2 only) `C_1..C_D` and `O_1..O_{D+1}`, then `raw_output`.

    A token holding several digits swaps them all when patched, so a single digit's variable
    cannot localize there; the joint variable can.
    """
    k_max, d_max = task.num_addends, task.num_digits
    targets = [digit_var(k, d) for k in range(k_max) for d in range(d_max)]
    targets += [
        "+".join(digit_var(k, d) for d in digits)
        for k, digits in digit_tokens
        if k < k_max and all(d < d_max for d in digits)
    ]
    if k_max == 2:
        targets += [carry_var(i) for i in range(1, d_max + 1)]
        targets += [sum_digit_var(i) for i in range(1, d_max + 2)]
    return targets + ["raw_output"]


def _label(model: AdditionModel, target: Target, base: Trace, counterfactual: Trace) -> Label:
    interventions = {dst: counterfactual[src] for dst, src in target.assignments}
    if all(base[name] == value for name, value in interventions.items()):
        text = base["raw_output"]
    else:
        text = model.intervene(base, interventions, ("raw_output",))["raw_output"]
    return text, int(text)


def interchange_label(
    model: AdditionModel,
    base: AdditionInput,
    counterfactual: AdditionInput,
    target: str,
) -> Label:
    """The answer after interchanging `target` from `counterfactual` into `base`: (" 78", 78)."""
    return _label(
        model, parse_target(model, target), model.trace(base), model.trace(counterfactual)
    )


def label_many(task: AdditionTask, pairs: Iterable[CounterfactualPair], target: str) -> list[Label]:
    """Labels of many pairs for one target (the model and input runs are reused across calls)."""
    model, canonical = resolve_target(task, target)
    parsed = parse_target(model, canonical)
    trace = model.trace
    return [_label(model, parsed, trace(p.base), trace(p.counterfactual)) for p in pairs]


def label_table(
    task: AdditionTask, pairs: Sequence[CounterfactualPair], targets: Iterable[str]
) -> dict[str, list[Label]]:
    """Labels of many pairs for many targets, keyed by the target text as given."""
    return {target: label_many(task, pairs, target) for target in targets}


def distinguishability(
    model: AdditionModel,
    pairs: Sequence[CounterfactualPair],
    target_a: str,
    target_b: str | None = None,
) -> tuple[float, int]:
    """Share and count of pairs whose label under `target_a` differs from that under `target_b`.

    With `target_b` None the comparison is against the base answer, i.e. the share of pairs on
    which interchanging `target_a` changes the answer at all.
    """
    if not pairs:
        raise BadInput("distinguishability needs at least one pair")
    parsed_a = parse_target(model, target_a)
    parsed_b = parse_target(model, target_b) if target_b is not None else None
    count = 0
    for pair in pairs:
        base, cf = model.trace(pair.base), model.trace(pair.counterfactual)
        label_a = _label(model, parsed_a, base, cf)
        label_b = _label(model, parsed_b, base, cf) if parsed_b else (base["raw_output"], 0)
        count += label_a[0] != label_b[0]
    return count / len(pairs), count
