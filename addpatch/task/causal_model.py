"""A small deterministic causal model: variables, forward evaluation and hard interventions.

A model is a DAG of named variables. Input variables have no parents and get their values from an
input assignment; every other variable has a mechanism, a function called with its parents'
values (positionally, in the order of `parents`). Running the model evaluates the variables in
topological order.

A *hard intervention* replaces a variable's mechanism by a constant: the variable takes the given
value whatever its parents are, and everything downstream is recomputed from it. Intervening on an
input variable simply overrides its input value.

Variables are ordered by timestep, the length of the longest path from an input (inputs are at
timestep 0). As in the reference library, output variables (those nothing depends on) are listed
last, after every intermediate variable; ties keep declaration order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from addpatch.errors import BadInput

Trace = dict[str, Any]
"""The value of every variable after one run, keyed by variable name."""


@dataclass(frozen=True)
class Variable:
    """One variable of a causal model.

    `values` is the set of values the variable may take (None: unconstrained, e.g. a text).
    `parents` and `mechanism` are empty/None for input variables; for any other variable,
    `mechanism(*parent_values)` computes its value.
    """

    name: str
    values: tuple[Any, ...] | None = None
    parents: tuple[str, ...] = ()
    mechanism: Callable[..., Any] | None = None
    _allowed: frozenset[Any] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parents", tuple(self.parents))
        if self.values is not None:
            object.__setattr__(self, "values", tuple(self.values))
            object.__setattr__(self, "_allowed", frozenset(self.values))
        if self.parents and self.mechanism is None:
            raise ValueError(f"variable {self.name!r} has parents but no mechanism")

    @property
    def is_input(self) -> bool:
        """True for variables without parents (their value comes from the input assignment)."""
        return not self.parents

    def allows(self, value: Any) -> bool:
        """Whether `value` is in this variable's value set (always True when unconstrained)."""
        return self._allowed is None or value in self._allowed


Plan = tuple[Variable, ...]
"""Variables to evaluate, in order."""


class CausalModel:
    """A DAG of `Variable`s with forward evaluation and hard interventions.

    Attributes: `id`, `variables` (names in evaluation order), `inputs`, `outputs`,
    `timestep` (name -> longest path length from an input), `parents`, `children`.
    """

    def __init__(self, model_id: str, variables: Iterable[Variable]) -> None:
        declared = list(variables)
        self.id = model_id
        self._vars: dict[str, Variable] = {}
        for var in declared:
            if var.name in self._vars:
                raise ValueError(f"variable {var.name!r} declared twice in model {model_id!r}")
            self._vars[var.name] = var
        self.parents: dict[str, tuple[str, ...]] = {v.name: v.parents for v in declared}
        self.children: dict[str, tuple[str, ...]] = {v.name: () for v in declared}
        for var in declared:
            for parent in var.parents:
                if parent not in self._vars:
                    raise ValueError(f"{var.name!r} has unknown parent {parent!r}")
                self.children[parent] += (var.name,)
        self.timestep = self._longest_paths(declared)
        self.inputs: tuple[str, ...] = tuple(v.name for v in declared if v.is_input)
        self.outputs: tuple[str, ...] = tuple(
            v.name for v in declared if not v.is_input and not self.children[v.name]
        )
        outputs = set(self.outputs)
        rank = {v.name: i for i, v in enumerate(declared)}
        self.variables: tuple[str, ...] = tuple(
            sorted(self._vars, key=lambda n: (n in outputs, self.timestep[n], rank[n]))
        )
        self._index = {name: i for i, name in enumerate(self.variables)}
        self._plan = tuple(self._vars[name] for name in self.variables)
        self._input_set = frozenset(self.inputs)
        self._schedules: dict[tuple[tuple[str, ...], tuple[str, ...] | None], Plan] = {}

    def _longest_paths(self, declared: list[Variable]) -> dict[str, int]:
        steps: dict[str, int] = {}
        visiting: set[str] = set()

        def visit(name: str) -> int:
            if name in steps:
                return steps[name]
            if name in visiting:
                raise ValueError(f"model {self.id!r} has a cycle through {name!r}")
            visiting.add(name)
            parents = self.parents[name]
            steps[name] = 1 + max(visit(p) for p in parents) if parents else 0
            visiting.discard(name)
            return steps[name]

        for var in declared:
            visit(var.name)
        return steps

    # -- introspection -------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._vars

    def variable(self, name: str) -> Variable:
        """The `Variable` called `name`; BadInput listing the valid names otherwise."""
        try:
            return self._vars[name]
        except KeyError:
            raise BadInput(
                f"unknown variable {name!r} in model {self.id}; valid variables: "
                + ", ".join(self.variables)
            ) from None

    def values(self, name: str) -> tuple[Any, ...] | None:
        """The value set of a variable (None when unconstrained)."""
        return self.variable(name).values

    def order_index(self, name: str) -> int:
        """Position of a variable in evaluation order (used to sort names canonically)."""
        return self._index[name]

    def descendants(self, names: Iterable[str]) -> set[str]:
        """Every variable downstream of any of `names` (the names themselves excluded)."""
        seen: set[str] = set()
        stack = [c for n in names for c in self.children[n]]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.children[name])
        return seen

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """Every variable upstream of any of `names` (the names themselves excluded)."""
        seen: set[str] = set()
        stack = [p for n in names for p in self.parents[n]]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.parents[name])
        return seen

    # -- evaluation ----------------------------------------------------------------------------

    def check_value(self, name: str, value: Any) -> None:
        """BadInput unless `value` is allowed for variable `name`."""
        var = self.variable(name)
        if not var.allows(value):
            raise BadInput(
                f"value {value!r} is not allowed for {name} in model {self.id}; "
                f"allowed: {_describe_values(var.values)}"
            )

    def run(
        self, inputs: Mapping[str, Any], interventions: Mapping[str, Any] | None = None
    ) -> Trace:
        """Evaluate every variable from an input assignment, with optional hard interventions.

        `inputs` must give every input variable that is not intervened on (extra keys naming
        non-input variables are rejected: use `interventions` for those). An intervened variable
        takes its given value instead of running its mechanism or reading `inputs`.
        """
        interventions = interventions or {}
        for name, value in interventions.items():
            self.check_value(name, value)
        for name in inputs:
            if name not in self._input_set:
                raise BadInput(
                    f"{name!r} is not an input variable of {self.id}; inputs: "
                    + ", ".join(self.inputs)
                )
        trace: Trace = {}
        for var in self._plan:
            name = var.name
            if name in interventions:
                trace[name] = interventions[name]
            elif var.mechanism is not None:
                trace[name] = var.mechanism(*[trace[p] for p in var.parents])
            elif name not in inputs:
                raise BadInput(f"input variable {name!r} is missing for model {self.id}")
            else:
                value = inputs[name]
                if not var.allows(value):
                    self.check_value(name, value)
                trace[name] = value
        return trace

    def intervene(
        self,
        trace: Mapping[str, Any],
        interventions: Mapping[str, Any],
        wanted: tuple[str, ...] | None = None,
    ) -> Trace:
        """Apply hard interventions to a finished trace and recompute what lies downstream.

        Returns a new trace (the given one is not modified). With `wanted` (a tuple of variable
        names), only the variables those depend on are recomputed; the others keep their
        pre-intervention values in the returned trace, so read only `wanted` from it.
        """
        for name, value in interventions.items():
            var = self._vars.get(name)
            if var is None or not var.allows(value):
                self.check_value(name, value)
        result = dict(trace)
        result.update(interventions)
        for var in self.schedule(tuple(interventions), wanted):
            result[var.name] = var.mechanism(*[result[p] for p in var.parents])  # type: ignore[misc]
        return result

    def schedule(self, fixed: tuple[str, ...], wanted: tuple[str, ...] | None = None) -> Plan:
        """Variables to recompute, in order, after intervening on `fixed` (memoised).

        These are the descendants of `fixed` that are not themselves fixed, restricted to the
        ancestors of `wanted` (and `wanted` itself) when it is given.
        """
        key = (fixed, wanted)
        plan = self._schedules.get(key)
        if plan is None:
            for name in fixed + (wanted or ()):
                self.variable(name)
            todo = self.descendants(fixed) - set(fixed)
            if wanted is not None:
                todo &= self.ancestors(wanted) | set(wanted)
            plan = tuple(var for var in self._plan if var.name in todo)
            self._schedules[key] = plan
        return plan


def _describe_values(values: tuple[Any, ...] | None) -> str:
    if values is None:
        return "anything"
    if values and all(isinstance(v, int) for v in values):
        lo, hi = min(values), max(values)
        if len(values) == hi - lo + 1:
            return f"{lo}..{hi}"
    return ", ".join(repr(v) for v in values)
