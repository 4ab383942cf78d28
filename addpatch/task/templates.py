"""Prompt templates and answer text for the addition task.

A template holds placeholders `{num0}`, `{num1}`, ...; numbers are printed in decimal without
leading zeros, and the answer a model should give is a space followed by the decimal sum.
"""

from __future__ import annotations

import re

from addpatch.errors import BadInput

TWO_ADDEND_TEMPLATE = "The sum of {num0} and {num1} is"
PLACEHOLDER = re.compile(r"\{num(\d+)\}")  # {num0}, {num1}, ... in a template
DIGITS = frozenset("0123456789")


def template_for(num_addends: int) -> str:
    """The seed's template for K addends: `The sum of 12, 34, and 56 is` for K >= 3."""
    if num_addends < 1:
        raise BadInput(f"num_addends must be at least 1, got {num_addends}")
    if num_addends == 1:
        return "The sum of {num0} is"
    if num_addends == 2:
        return TWO_ADDEND_TEMPLATE
    head = " ".join(f"{{num{k}}}," for k in range(num_addends - 1))
    return f"The sum of {head} and {{num{num_addends - 1}}} is"


def placeholders(template: str) -> list[int]:
    """Addend indices named in a template, in the order they appear."""
    return [int(m.group(1)) for m in PLACEHOLDER.finditer(template)]


def render_prompt(template: str, numbers: list[int], prefix: str = "", suffix: str = "") -> str:
    """Fill `{numK}` with the K-th number, printed without leading zeros."""
    needed = placeholders(template)
    missing = [k for k in needed if k >= len(numbers)]
    if missing:
        raise BadInput(
            f"template {template!r} needs {{num{missing[0]}}} but only {len(numbers)} "
            "numbers were given; use a template with one placeholder per addend"
        )
    body = PLACEHOLDER.sub(lambda m: str(int(numbers[int(m.group(1))])), template)
    return f"{prefix}{body}{suffix}"


SHOT_SEPARATOR = "\n"


def render_shot(template: str, numbers: list[int] | tuple[int, ...]) -> str:
    """One worked example in `template`, with its answer and a full stop, then a newline:
    `The sum of 12 and 34 is 46.\n`."""
    return f"{render_prompt(template, list(numbers))}{answer_text(sum(numbers))}.{SHOT_SEPARATOR}"


def shot_reply(total: int, answer_prefix: str = "") -> str:
    """A worked example's reply when it is a chat turn of its own: its answer after the answer
    prefix (`The answer is 9`), or the bare number (`9`)."""
    return f"{answer_prefix.rstrip()}{answer_text(total)}".lstrip()


def answer_text(total: int) -> str:
    """What the model should generate: a space, then the decimal sum (`' 68'`)."""
    return f" {int(total)}"


_LEADING_INT = re.compile(r"\s*(\d+)")


def parse_answer(generated: str) -> int | None:
    """The integer at the start of a generated text (after whitespace), or None."""
    match = _LEADING_INT.match(generated)
    return int(match.group(1)) if match else None


def digits_of(number: int, width: int) -> list[int]:
    """Decimal digits of `number`, most significant first, left-zero-padded to `width`.

    `digits_of(68, 3) == [0, 6, 8]`. A number wider than `width` is an error (the reference
    silently dropped its high digits).
    """
    number = int(number)
    if number < 0 or number >= 10**width:
        raise BadInput(f"{number} does not fit in {width} digit(s); use a wider num_digits")
    return [(number // 10 ** (width - 1 - i)) % 10 for i in range(width)]


def number_from_digits(digits: list[int] | tuple[int, ...]) -> int:
    """The number whose decimal digits (most significant first) are `digits`: [1, 2, 3] -> 123."""
    total = 0
    for digit in digits:
        total = 10 * total + int(digit)
    return total
