"""The addition task: its configuration, its inputs and its two causal models.

Digit naming (shared by both models): `digit_{k}_{d}` is digit d of addend k, where d = 0 is the
*most significant* digit of the addend written `num_digits` wide (the input's own width, which
may be smaller than the task's D). Slots d >= num_digits are inactive and hold 0; an addend
narrower than num_digits has leading zero digits (5 at width 2 is digits 0, 5).

* Basic model `addition_basic_{K}n_{D}d`: inputs, then `output_digit_0..output_digit_{W-1}`,
  the digits of the sum *right-aligned* in W = `task.output_width` slots (output_digit_{W-1} is
  always the ones digit, output_digit_0 the highest place), then `raw_input` (prompt text) and
  `raw_output` (answer text, " 128"). Right alignment makes every output digit keep one place
  value whatever num_digits is, so narrower inputs get correct answers (the reference
  left-aligned them and answered " 1440" for 92+52 at D=3). W is the width of the largest sum,
  K * (10**D - 1); that is D + 1 for every K the task allows (K <= 10 always fits in D + 1).
* Carry model `addition_carry_2n_{D}d` (K = 2 only): inputs, then carries `C_1..C_D` and output
  digits `O_1..O_{D+1}`, right-indexed from 1 (i = 1 is the ones column, O_{D+1} = C_D).
  Column i reads digit index d = num_digits - i, so columns above num_digits read zeros and the
  answer is right for narrow inputs too.

Every label is an answer text (" 68") and, equally, the integer it spells (68).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from addpatch.errors import BadInput
from addpatch.task.causal_model import CausalModel, Trace, Variable
from addpatch.task.templates import (
    SHOT_SEPARATOR,
    answer_text,
    digits_of,
    number_from_digits,
    placeholders,
    render_prompt,
    render_shot,
    shot_reply,
    template_for,
)

MIN_ADDENDS, MAX_ADDENDS = 2, 4
MIN_DIGITS, MAX_DIGITS = 1, 6
MAX_SHOTS = 32
DIGIT_VALUES = tuple(range(10))


def check_answer_prefix(text: str) -> None:
    """BadInput for an answer prefix with a digit: the model's answer would run on from it."""
    if any(c.isdigit() for c in text):
        raise BadInput(
            f"--answer-prefix must hold no digit (it would run into the answer), got {text!r}; "
            "use words only, e.g. --answer-prefix 'The answer is'"
        )


def digit_var(addend: int, digit: int) -> str:
    """Name of digit `digit` (0 = most significant) of addend `addend`: `digit_1_0`."""
    return f"digit_{addend}_{digit}"


def carry_var(column: int) -> str:
    """Name of the carry out of column `column` (1 = ones): `C_1`."""
    return f"C_{column}"


def sum_digit_var(column: int) -> str:
    """Name of the sum digit of column `column` (1 = ones) in the carry model: `O_1`."""
    return f"O_{column}"


def output_digit_var(slot: int) -> str:
    """Name of output slot `slot` of the basic model (0 = highest place): `output_digit_0`."""
    return f"output_digit_{slot}"


@dataclass(frozen=True)
class AdditionTask:
    """K addends of at most D digits, prompt templates and optional prompt prefix/suffix.

    `templates` defaults to the seed's template for K (`template_for(K)`); every template must
    name exactly the placeholders {num0}..{num(K-1)}. `num_shots` worked examples (drawn per
    pair by the generators) go between the prefix and the query; `chat` wraps the whole prompt
    in the model's own chat template (a user turn and the generation prompt) when it is laid out
    for a model, so the stored prompt text stays model-independent. `answer_prefix` is text the
    reply starts with (assistant prefill: `The answer is`), so the model continues with the
    number: after the generation prompt under `chat`, else at the very end of the prompt (after
    the suffix). It may hold no digit, which would run into the answer. `shot_turns` (under
    `chat`, with shots) shows each worked example as a conversation turn of its own, as chat
    models are shown examples: a user turn with its question, an assistant turn with its answer,
    then the query's user turn; false puts them inside the query's user turn (datasets stored
    before turns existed).
    """

    num_addends: int
    num_digits: int
    templates: tuple[str, ...] | None = None
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    num_shots: int = 0
    chat: bool = False
    answer_prefix: str = ""
    shot_turns: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "shot_turns", self.shot_turns and self.chat and self.num_shots > 0)
        k, d = self.num_addends, self.num_digits
        if not isinstance(k, int) or not MIN_ADDENDS <= k <= MAX_ADDENDS:
            raise BadInput(f"num_addends must be {MIN_ADDENDS}..{MAX_ADDENDS}, got {k!r}")
        if not isinstance(d, int) or not MIN_DIGITS <= d <= MAX_DIGITS:
            raise BadInput(f"num_digits must be {MIN_DIGITS}..{MAX_DIGITS}, got {d!r}")
        templates = (template_for(k),) if self.templates is None else tuple(self.templates)
        if not templates:
            raise BadInput("templates must not be empty; omit it to use the default template")
        for template in templates:
            if sorted(set(placeholders(template))) != list(range(k)):
                raise BadInput(
                    f"template {template!r} must use exactly {{num0}}..{{num{k - 1}}} "
                    f"for {k} addends"
                )
        if not isinstance(self.num_shots, int) or not 0 <= self.num_shots <= MAX_SHOTS:
            raise BadInput(f"shots must be 0..{MAX_SHOTS}, got {self.num_shots!r}")
        check_answer_prefix(self.answer_prefix)
        object.__setattr__(self, "templates", templates)

    @property
    def is_plain(self) -> bool:
        """True for the seed's prompt: default template, no prefix, suffix, shots, chat or
        answer prefix."""
        return self.prompt_settings == AdditionTask(self.num_addends, 1).prompt_settings

    @property
    def prompt_settings(self) -> dict[str, Any]:
        """Everything besides the addends that defines the prompt text (stored with a dataset)."""
        return {
            "templates": list(self.templates),  # type: ignore[arg-type]
            "prefix": self.prompt_prefix,
            "suffix": self.prompt_suffix,
            "shots": self.num_shots,
            "chat": self.chat,
            "answer_prefix": self.answer_prefix,
            "shot_turns": self.shot_turns,
        }

    @property
    def output_width(self) -> int:
        """Digits needed for the largest sum, K * (10**D - 1): D + 1 for every allowed K."""
        return len(str(self.num_addends * (10**self.num_digits - 1)))

    def make_input(
        self,
        numbers: Sequence[int],
        num_digits: int | None = None,
        template: str | None = None,
        shots: Sequence[Sequence[int]] = (),
    ) -> AdditionInput:
        """An input of this task: num_digits defaults to D, template to the first one."""
        return AdditionInput(
            numbers=tuple(numbers),
            num_digits=self.num_digits if num_digits is None else num_digits,
            template=self.templates[0] if template is None else template,  # type: ignore[index]
            prefix=self.prompt_prefix,
            suffix=self.prompt_suffix,
            shots=tuple(tuple(s) for s in shots),
            chat=self.chat,
            answer_prefix=self.answer_prefix,
            shot_turns=self.shot_turns,
        )


@dataclass(frozen=True)
class AdditionInput:
    """One addition problem: exact addends, the width of their digit slots, and a template.

    `numbers` are the addends; each must fit in `num_digits` digits. `prefix`/`suffix` wrap the
    prompt (use `AdditionTask.make_input` or the generators to copy them from the task).
    `shots` are the addends of the worked examples put between the prefix and the query, each
    in the input's template with its answer (`The sum of 12 and 34 is 46.` and a newline);
    `chat` asks for the model's chat template around the prompt when it is laid out;
    `answer_prefix` starts the reply and `shot_turns` puts worked examples in turns of their
    own under `chat` (see `AdditionTask`).
    """

    numbers: tuple[int, ...]
    num_digits: int
    template: str
    prefix: str = ""
    suffix: str = ""
    shots: tuple[tuple[int, ...], ...] = ()
    chat: bool = False
    answer_prefix: str = ""
    shot_turns: bool = False

    def __post_init__(self) -> None:
        check_answer_prefix(self.answer_prefix)
        numbers = tuple(int(n) for n in self.numbers)
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "shots", tuple(tuple(int(n) for n in s) for s in self.shots))
        if not numbers:
            raise BadInput("an addition input needs at least one number")
        if not isinstance(self.num_digits, int) or not MIN_DIGITS <= self.num_digits <= MAX_DIGITS:
            raise BadInput(
                f"num_digits must be {MIN_DIGITS}..{MAX_DIGITS}, got {self.num_digits!r}"
            )
        for n in numbers:
            if not 0 <= n < 10**self.num_digits:
                raise BadInput(
                    f"addend {n} does not fit in {self.num_digits} digit(s); "
                    "use a larger num_digits or a smaller number"
                )
        missing = [k for k in placeholders(self.template) if k >= len(numbers)]
        if missing:
            raise BadInput(
                f"template {self.template!r} needs {{num{missing[0]}}} but only "
                f"{len(numbers)} numbers were given"
            )

    def digits(self, addend: int) -> tuple[int, ...]:
        """Digits of one addend, most significant first, `num_digits` wide."""
        return tuple(digits_of(self.numbers[addend], self.num_digits))

    @property
    def prompt(self) -> str:
        """The prompt text, e.g. `The sum of 23 and 45 is` (before any chat template).

        It ends with the answer prefix, if any, unless `chat` puts that after the chat
        template's generation prompt (then this is the user turn's text, as the dataset stores).
        """
        tail = self.suffix if self.chat else self.suffix + self.answer_prefix
        return render_prompt(self.template, list(self.numbers), self.prefix + self.shots_text, tail)

    @property
    def in_turns(self) -> bool:
        """True when the worked examples are chat turns of their own (see `AdditionTask`)."""
        return self.shot_turns and self.chat and bool(self.shots)

    @property
    def shot_exchanges(self) -> list[tuple[str, str]]:
        """Each worked example as chat turns hold it: (question in this input's template with
        its suffix, reply: `The sum of 1 and 2 is`, `3`)."""
        return [
            (
                render_prompt(self.template, list(shot), suffix=self.suffix),
                shot_reply(sum(shot), self.answer_prefix),
            )
            for shot in self.shots
        ]

    @property
    def shots_text(self) -> str:
        """The worked examples, each in this input's template: `The sum of 1 and 2 is 3.\\n`;
        as chat turns, each question and its reply on lines of their own (`The sum of 1 and 2
        is\\n3\\n`), as the stored text lists them (the chat template makes them turns)."""
        if self.in_turns:
            return "".join(
                f"{question}{SHOT_SEPARATOR}{reply}{SHOT_SEPARATOR}"
                for question, reply in self.shot_exchanges
            )
        return "".join(render_shot(self.template, shot) for shot in self.shots)

    @property
    def total(self) -> int:
        """The exact sum of the addends."""
        return sum(self.numbers)

    @property
    def answer(self) -> str:
        """The expected answer text: a space and the decimal sum (`' 68'`)."""
        return answer_text(self.total)


class AdditionModel(CausalModel):
    """A causal model of the addition task that can encode `AdditionInput`s.

    `kind` is "basic" or "carry". `trace(inp)` runs the model on an input (memoised, since the
    same inputs are labelled for many targets); `answer(trace)` reads the answer text.
    """

    _CACHE_LIMIT = 20_000

    def __init__(
        self, model_id: str, variables: Sequence[Variable], task: AdditionTask, kind: str
    ) -> None:
        super().__init__(model_id, variables)
        self.task = task
        self.kind = kind
        self.max_addends = task.num_addends if kind == "basic" else 2
        self._trace_cache: dict[AdditionInput, Trace] = {}
        self.target_cache: dict[str, object] = {}  # parsed targets, filled by labels.py

    def encode(self, inp: AdditionInput) -> dict[str, Any]:
        """The input-variable assignment for an `AdditionInput` (inactive digit slots are 0)."""
        task = self.task
        if inp.num_digits > task.num_digits:
            raise BadInput(
                f"input has num_digits={inp.num_digits} but the task allows at most "
                f"{task.num_digits}; use a task with more digits"
            )
        if not 1 <= len(inp.numbers) <= self.max_addends:
            raise BadInput(
                f"model {self.id} takes 1..{self.max_addends} addends, got {len(inp.numbers)}"
            )
        ours = (task.prompt_prefix, task.prompt_suffix, task.answer_prefix)
        if (inp.prefix, inp.suffix, inp.answer_prefix) != ours:
            raise BadInput(
                "input prompt prefix/suffix/answer prefix differ from the task's; build inputs with "
                "AdditionTask.make_input or the generators"
            )
        assignment: dict[str, Any] = {
            digit_var(k, d): 0 for k in range(self.max_addends) for d in range(task.num_digits)
        }
        for k in range(len(inp.numbers)):
            for d, digit in enumerate(inp.digits(k)):
                assignment[digit_var(k, d)] = digit
        if self.kind == "basic":
            assignment["num_addends"] = len(inp.numbers)
        assignment["num_digits"] = inp.num_digits
        assignment["template"] = inp.template
        return assignment

    def trace(self, inp: AdditionInput) -> Trace:
        """Every variable's value on `inp` (do not modify the returned dict)."""
        cached = self._trace_cache.get(inp)
        if cached is None:
            if len(self._trace_cache) >= self._CACHE_LIMIT:
                self._trace_cache.clear()
            cached = self.run(self.encode(inp))
            self._trace_cache[inp] = cached
        return cached

    @staticmethod
    def answer(trace: Trace) -> str:
        """The answer text (`raw_output`) of a trace."""
        text: str = trace["raw_output"]
        return text


def _render(task: AdditionTask, addends: int) -> Any:
    """Mechanism for raw_input: parents are all digit slots, num_digits, template."""
    width = task.num_digits
    prefix, suffix = task.prompt_prefix, task.prompt_suffix
    if not task.chat:  # as AdditionInput.prompt: the answer prefix ends a prompt without chat
        suffix += task.answer_prefix

    def raw_input(*values: Any) -> str:
        num_digits, template = values[-2], values[-1]
        numbers = [
            number_from_digits(values[k * width : k * width + num_digits]) for k in range(addends)
        ]
        return render_prompt(template, numbers, prefix, suffix)

    return raw_input


def _format_answer(*digits: int) -> str:
    return answer_text(number_from_digits(digits))


def _input_variables(task: AdditionTask, addends: int) -> list[Variable]:
    return [
        Variable(digit_var(k, d), DIGIT_VALUES)
        for k in range(addends)
        for d in range(task.num_digits)
    ]


@lru_cache(maxsize=32)
def basic_model(task: AdditionTask) -> AdditionModel:
    """The input-output model `addition_basic_{K}n_{D}d` (see the module docstring)."""
    k_max, d_max, width = task.num_addends, task.num_digits, task.output_width
    variables = _input_variables(task, k_max)
    digit_names = tuple(v.name for v in variables)
    variables += [
        Variable("num_addends", tuple(range(1, k_max + 1))),
        Variable("num_digits", tuple(range(1, d_max + 1))),
        Variable("template", task.templates),
    ]

    last: list[Any] = [None, 0]  # (parent values, total) of the latest sum: all slots share it

    def addend_sum(values: tuple[int, ...]) -> int:
        if values != last[0]:
            num_addends, num_digits = values[-2], values[-1]
            total = 0
            for k in range(num_addends):
                total += number_from_digits(values[k * d_max : k * d_max + num_digits])
            last[0], last[1] = values, total
        latest: int = last[1]
        return latest

    def output_digit(slot: int) -> Any:
        place = 10 ** (width - 1 - slot)
        return lambda *values: (addend_sum(values) // place) % 10

    outputs = tuple(output_digit_var(s) for s in range(width))
    variables += [
        Variable(
            outputs[s], DIGIT_VALUES, digit_names + ("num_addends", "num_digits"), output_digit(s)
        )
        for s in range(width)
    ]
    variables += [
        Variable("raw_input", None, digit_names + ("num_digits", "template"), _render(task, k_max)),
        Variable("raw_output", None, outputs, _format_answer),
    ]
    return AdditionModel(f"addition_basic_{k_max}n_{d_max}d", variables, task, "basic")


@lru_cache(maxsize=32)
def carry_model(task: AdditionTask) -> AdditionModel:
    """The 2-addend carry model `addition_carry_2n_{D}d` (see the module docstring).

    C_i = 1 iff a + b + C_{i-1} >= 10 and O_i = (a + b + C_{i-1}) mod 10 for the column-i digits
    a, b (C_0 = 0, and a = b = 0 above num_digits); O_{D+1} = C_D.
    """
    if task.num_addends != 2:
        raise BadInput(
            f"the carry model needs exactly 2 addends, the task has {task.num_addends}; "
            "use num_addends=2"
        )
    d_max = task.num_digits
    variables = _input_variables(task, 2)
    digit_names = tuple(v.name for v in variables)
    variables += [
        Variable("num_digits", tuple(range(1, d_max + 1))),
        Variable("template", task.templates),
    ]

    def column_parents(i: int) -> tuple[str, ...]:
        # Column i can read digit index num_digits - i for any num_digits in i..D.
        slots = range(d_max - i + 1)
        carry_in = (carry_var(i - 1),) if i > 1 else ()
        return (
            ("num_digits",)
            + tuple(digit_var(0, d) for d in slots)
            + tuple(digit_var(1, d) for d in slots)
            + carry_in
        )

    def column_sum(i: int) -> Any:
        span = d_max - i + 1

        def total(values: tuple[int, ...]) -> int:
            d = values[0] - i
            carry = values[-1] if i > 1 else 0
            if d < 0:
                return carry
            return values[1 + d] + values[1 + span + d] + carry

        return total

    for i in range(1, d_max + 1):
        total = column_sum(i)
        parents = column_parents(i)
        variables.append(
            Variable(carry_var(i), (0, 1), parents, lambda *v, t=total: int(t(v) >= 10))
        )
        variables.append(
            Variable(sum_digit_var(i), DIGIT_VALUES, parents, lambda *v, t=total: t(v) % 10)
        )
    variables.append(
        Variable(sum_digit_var(d_max + 1), DIGIT_VALUES, (carry_var(d_max),), lambda c: c)
    )
    sum_digits = tuple(sum_digit_var(i) for i in range(d_max + 1, 0, -1))
    variables += [
        Variable("raw_input", None, digit_names + ("num_digits", "template"), _render(task, 2)),
        Variable("raw_output", None, sum_digits, _format_answer),
    ]
    return AdditionModel(f"addition_carry_2n_{d_max}d", variables, task, "carry")
