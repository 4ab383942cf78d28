"""Seeded counterfactual-pair generators for the addition task.

Every generator is `(task, size, seed, **options) -> list[CounterfactualPair]` and draws from its
own `random.Random(seed)`: the same arguments always give the same pairs. Shared options:

* `num_digits` (1..D, default D): width of every addend of the pair. Addends have exactly that
  many digits: the leading digit is drawn from 1..9, so 1-digit addends are 1..9 (the seed's
  rule; 0 never appears as an addend).
* `drop_uninformative_for`: a target (see labels.py); a pair whose label for it equals the base
  answer is redrawn.

Base and counterfactual always have the task's K addends and the same num_digits. With several
templates, the minimal-pair generators (one_digit, carry_flip) give the counterfactual the
base's template; random and sum_to_nine draw it independently, as every other variable of
their counterfactual. A task with `num_shots` gets that many worked examples per pair, drawn
from their own seeded stream (`shots_rng`) with the pair's width, never equal to the base's or
the counterfactual's addends; base and counterfactual share them. A generator that cannot meet
its constraints within a bounded number of draws raises BadInput instead of looping.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from addpatch.errors import BadInput
from addpatch.task.addition import AdditionInput, AdditionTask, digit_var
from addpatch.task.labels import interchange_label, resolve_target
from addpatch.task.templates import number_from_digits


@dataclass(frozen=True)
class CounterfactualPair:
    """A base input and the counterfactual input whose values are interchanged into it."""

    base: AdditionInput
    counterfactual: AdditionInput


Digits = list[list[int]]  # digits[k][d]: addend k, digit d (most significant first)
Draw = Callable[[random.Random], "CounterfactualPair | None"]


_PROBE = 1_000  # give up early when none of the first _PROBE draws is accepted


def _max_attempts(size: int) -> int:
    return _PROBE + 200 * size


def _width(task: AdditionTask, num_digits: int | None) -> int:
    if num_digits is None:
        return task.num_digits
    if not isinstance(num_digits, int) or not 1 <= num_digits <= task.num_digits:
        raise BadInput(f"num_digits must be 1..{task.num_digits} for this task, got {num_digits!r}")
    return num_digits


def _random_digits(rng: random.Random, addends: int, width: int) -> Digits:
    """Digits of `addends` numbers of exactly `width` digits (leading digit 1..9)."""
    return [
        [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(width - 1)] for _ in range(addends)
    ]


def _make(
    task: AdditionTask,
    rng: random.Random,
    digits: Digits,
    width: int,
    keep_template: AdditionInput | None = None,
) -> AdditionInput:
    """An input with these digits; its template is drawn, or `keep_template`'s (the draw is made
    either way, so a one-template task gives the same pairs as before templates were kept)."""
    drawn = rng.choice(task.templates)  # type: ignore[arg-type]
    return AdditionInput(
        numbers=tuple(number_from_digits(row) for row in digits),
        num_digits=width,
        template=drawn if keep_template is None else keep_template.template,
        prefix=task.prompt_prefix,
        suffix=task.prompt_suffix,
        chat=task.chat,
        answer_prefix=task.answer_prefix,
        shot_turns=task.shot_turns,
    )


def shots_rng(seed: int) -> random.Random:
    """The stream the worked examples are drawn from: its own, so shots never shift the pairs."""
    return random.Random(f"addpatch-shots-{seed}")


def with_shots(
    task: AdditionTask, pairs: list[CounterfactualPair], seed: int
) -> list[CounterfactualPair]:
    """The pairs with `task.num_shots` worked examples each (unchanged when it is 0)."""
    if not task.num_shots:
        return pairs
    rng = shots_rng(seed)
    out = []
    for pair in pairs:
        width = pair.base.num_digits
        taken = {pair.base.numbers, pair.counterfactual.numbers}
        shots: list[tuple[int, ...]] = []
        for _ in range(1000 * task.num_shots):
            shot = tuple(
                number_from_digits(row) for row in _random_digits(rng, task.num_addends, width)
            )
            if shot not in taken:
                taken.add(shot)
                shots.append(shot)
                if len(shots) == task.num_shots:
                    break
        else:
            raise BadInput(
                f"cannot draw {task.num_shots} distinct worked examples of {width} digit(s); "
                "use fewer --shots or more --digits"
            )
        out.append(
            CounterfactualPair(
                replace(pair.base, shots=tuple(shots)),
                replace(pair.counterfactual, shots=tuple(shots)),
            )
        )
    return out


def _collect(
    task: AdditionTask, size: int, seed: int, draw: Draw, drop_uninformative_for: str | None
) -> list[CounterfactualPair]:
    """Call `draw` until `size` pairs are accepted, within a bounded number of attempts."""
    if not isinstance(size, int) or size < 1:
        raise BadInput(f"size must be a positive integer, got {size!r}")
    accept: Callable[[CounterfactualPair], bool] | None = None
    if drop_uninformative_for is not None:
        model, canonical = resolve_target(task, drop_uninformative_for)

        def accept(pair: CounterfactualPair) -> bool:
            label, _ = interchange_label(model, pair.base, pair.counterfactual, canonical)
            return label != model.answer(model.trace(pair.base))

    rng = random.Random(seed)
    pairs: list[CounterfactualPair] = []
    limit = _max_attempts(size)
    for attempt in range(limit):
        if attempt == _PROBE and not pairs:
            limit = _PROBE
            break
        pair = draw(rng)
        if pair is not None and (accept is None or accept(pair)):
            pairs.append(pair)
            if len(pairs) == size:
                return pairs
    why = (
        f" that change the answer for {drop_uninformative_for!r}" if drop_uninformative_for else ""
    )
    raise BadInput(
        f"found only {len(pairs)} of {size} pairs{why} in {limit} draws; relax the generator "
        "options or choose another target"
    )


def random_pairs(
    task: AdditionTask,
    size: int,
    seed: int,
    *,
    num_digits: int | None = None,
    drop_uninformative_for: str | None = None,
) -> list[CounterfactualPair]:
    """Base and counterfactual drawn independently (they may coincide)."""
    width = _width(task, num_digits)
    k = task.num_addends

    def draw(rng: random.Random) -> CounterfactualPair:
        base = _make(task, rng, _random_digits(rng, k, width), width)
        return CounterfactualPair(base, _make(task, rng, _random_digits(rng, k, width), width))

    return _collect(task, size, seed, draw, drop_uninformative_for)


def sum_to_nine_pairs(
    task: AdditionTask,
    size: int,
    seed: int,
    *,
    column: int | None = None,
    num_digits: int | None = None,
    drop_uninformative_for: str | None = None,
) -> list[CounterfactualPair]:
    """Base digits of addends 0 and 1 sum to 9 at left-indexed `column`; random counterfactual.

    `column` (0 = most significant, default num_digits - 1, the ones column) must be below
    num_digits. At the leading column both digits stay non-zero (addend 0 draws 1..8). Further
    addends (K > 2) are unconstrained.
    """
    width = _width(task, num_digits)
    column = width - 1 if column is None else column
    if not isinstance(column, int) or not 0 <= column < width:
        raise BadInput(
            f"column must be 0..{width - 1} (left-indexed, 0 = most significant), got {column!r}"
        )
    k = task.num_addends

    def draw(rng: random.Random) -> CounterfactualPair:
        digits = _random_digits(rng, k, width)
        first = rng.randint(1, 8) if column == 0 else rng.randint(0, 9)
        digits[0][column], digits[1][column] = first, 9 - first
        base = _make(task, rng, digits, width)
        return CounterfactualPair(base, _make(task, rng, _random_digits(rng, k, width), width))

    return _collect(task, size, seed, draw, drop_uninformative_for)


def one_digit_pairs(
    task: AdditionTask,
    size: int,
    seed: int,
    *,
    addend: int | None = None,
    digit: int | None = None,
    num_digits: int | None = None,
    drop_uninformative_for: str | None = None,
) -> list[CounterfactualPair]:
    """Counterfactual = base with exactly one digit changed (`digit_{addend}_{digit}`).

    `addend` (0..K-1) and `digit` (0..num_digits-1, 0 = most significant) default to a random
    choice per pair. The new digit differs from the old one; a leading digit stays in 1..9.
    """
    width = _width(task, num_digits)
    k = task.num_addends
    if addend is not None and (not isinstance(addend, int) or not 0 <= addend < k):
        raise BadInput(f"addend must be 0..{k - 1}, got {addend!r}")
    if digit is not None and (not isinstance(digit, int) or not 0 <= digit < width):
        raise BadInput(f"digit must be 0..{width - 1} (0 = most significant), got {digit!r}")

    def draw(rng: random.Random) -> CounterfactualPair:
        digits = _random_digits(rng, k, width)
        base = _make(task, rng, digits, width)
        a = rng.randrange(k) if addend is None else addend
        d = rng.randrange(width) if digit is None else digit
        choices = [v for v in range(1 if d == 0 else 0, 10) if v != digits[a][d]]
        digits[a][d] = rng.choice(choices)
        return CounterfactualPair(base, _make(task, rng, digits, width, keep_template=base))

    return _collect(task, size, seed, draw, drop_uninformative_for)


def _carries(digits: Digits) -> list[int]:
    """Carries C_1..C_n of two addends' digit rows (index i - 1 holds C_i)."""
    carries, carry = [], 0
    for a, b in zip(reversed(digits[0]), reversed(digits[1]), strict=True):
        carry = int(a + b + carry >= 10)
        carries.append(carry)
    return carries


def carry_flip_pairs(
    task: AdditionTask,
    size: int,
    seed: int,
    *,
    carry: int | None = None,
    hold: Collection[str] | None = None,
    num_digits: int | None = None,
    drop_uninformative_for: str | None = None,
) -> list[CounterfactualPair]:
    """Counterfactual flips carry C_`carry` of the base while the `hold` digits stay equal.

    Needs K == 2. `carry` is 1-based (1 = out of the ones column, at most num_digits; default
    random per pair). `hold` names digit variables that must keep the base's value; by default
    every digit outside the column producing C_i (MIB style: a ones-carry counterfactual
    redraws the two ones digits so that C_1 flips and keeps all other digits). Free digits are
    redrawn at random until C_i differs from the base's.
    """
    if task.num_addends != 2:
        raise BadInput(f"carry_flip needs a 2-addend task, got num_addends={task.num_addends}")
    width = _width(task, num_digits)
    if carry is not None and (not isinstance(carry, int) or not 1 <= carry <= width):
        raise BadInput(f"carry must be 1..{width} (1 = ones column), got {carry!r}")
    names = {digit_var(a, d): (a, d) for a in range(2) for d in range(width)}
    held: set[tuple[int, int]] | None = None
    if hold is not None:
        if isinstance(hold, str):
            hold = [h for h in hold.replace(",", "+").split("+") if h.strip()]
        unknown = sorted(h for h in hold if h.strip() not in names)
        if unknown:
            raise BadInput(
                f"hold names unknown digit variable {unknown[0]!r}; valid: " + ", ".join(names)
            )
        held = {names[h.strip()] for h in hold}
        # C_i can flip only if some digit in column i or below is free.
        flippable = [
            i
            for i in range(1, width + 1)
            if any(d >= width - i and (a, d) not in held for a, d in names.values())
        ]
        wanted = [carry] if carry is not None else list(range(1, width + 1))
        if not set(wanted) & set(flippable):
            raise BadInput(
                f"hold keeps every digit that C_{wanted[0]} depends on, so it can never flip; "
                "hold fewer digits"
            )

    def draw(rng: random.Random) -> CounterfactualPair | None:
        i = rng.randint(1, width) if carry is None else carry
        keep = (
            held
            if held is not None
            else {(a, d) for a in range(2) for d in range(width) if d != width - i}
        )
        base_digits = _random_digits(rng, 2, width)
        target = 1 - _carries(base_digits)[i - 1]
        for _ in range(50):
            fresh = _random_digits(rng, 2, width)
            digits = [
                [base_digits[a][d] if (a, d) in keep else fresh[a][d] for d in range(width)]
                for a in range(2)
            ]
            if _carries(digits)[i - 1] == target:
                base = _make(task, rng, base_digits, width)
                return CounterfactualPair(base, _make(task, rng, digits, width, keep_template=base))
        return None  # this base cannot flip C_i with these digits held; draw another

    return _collect(task, size, seed, draw, drop_uninformative_for)


@dataclass(frozen=True)
class Generator:
    """A registered generator: its name, the function and a one-line description."""

    name: str
    function: Callable[..., list[CounterfactualPair]]
    description: str

    def __call__(
        self, task: AdditionTask, size: int, seed: int, **options: object
    ) -> list[CounterfactualPair]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise BadInput(
                f"generator {self.name!r} has no option {unknown[0]!r}; its options: "
                + ", ".join(self.options)
            )
        return with_shots(task, self.function(task, size, seed, **options), seed)

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the keyword options the generator accepts."""
        params = inspect.signature(self.function).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


GENERATORS: dict[str, Generator] = {
    "random": Generator("random", random_pairs, "base and counterfactual drawn independently"),
    "sum_to_nine": Generator(
        "sum_to_nine",
        sum_to_nine_pairs,
        "base digits sum to 9 at one column (almost a carry); random cf",
    ),
    "one_digit": Generator(
        "one_digit", one_digit_pairs, "counterfactual differs from the base in one digit"
    ),
    "carry_flip": Generator(
        "carry_flip",
        carry_flip_pairs,
        "counterfactual flips one carry C_i, other digits held (2 addends)",
    ),
}


def generate_pairs(
    kind: str, task: AdditionTask, size: int, seed: int, **options: object
) -> list[CounterfactualPair]:
    """Run the generator called `kind`; BadInput for unknown kinds, options or bad values."""
    from addpatch.limits import check_dataset_numbers

    generator = GENERATORS.get(kind)
    if generator is None:
        raise BadInput(f"unknown generator {kind!r}; choose one of: " + ", ".join(GENERATORS))
    check_dataset_numbers(size=size, seed=seed)
    return generator(task, size, seed, **options)
