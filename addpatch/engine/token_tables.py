"""How prompts tokenize, as polars tables: each token's position name, and each number's pieces.

    from addpatch.engine.token_tables import positions_table, number_tokens
    positions_table(layout_input(tokenizer, task.make_input([23, 45])))
    number_tokens(tokenizer, [7, 42, 123, 1234])   # `1234` -> `123|4` on Llama-3

Token text is shown as the report shows it (`addpatch.report.labels.visible_token`: a space is
`·`, a newline `\\n`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl
from transformers import PreTrainedTokenizerBase

from addpatch.engine.positions import PromptLayout, layout_prompt, render_with_spans
from addpatch.errors import BadInput
from addpatch.report.labels import visible_token
from addpatch.task.templates import placeholders, template_for

_PARTS = (  # canonical name pattern -> the part of the prompt it names
    (re.compile(r"bos|special\d+"), "special token"),
    (re.compile(r"a(\d+)\.t\d+"), "addend {0}"),
    (re.compile(r"w\d+\.\d+"), "template"),
    (re.compile(r"p\.\d+"), "prefix"),
    (re.compile(r"s(\d+)\.\d+"), "worked example {0}"),
    (re.compile(r"c0\.\d+"), "chat template (before)"),
    (re.compile(r"c1\.\d+"), "chat template (after)"),
    (re.compile(r"r\.\d+"), "answer prefix"),
)


def part_of(name: str) -> str:
    """The part of the prompt a canonical position name belongs to: `a1.t0` -> `addend 1`."""
    for pattern, part in _PARTS:
        match = pattern.fullmatch(name)
        if match:
            return part.format(*match.groups())
    raise BadInput(f"{name!r} is not a canonical position name (see addpatch.engine.positions)")


def positions_table(layout: PromptLayout) -> pl.DataFrame:
    """One row per token of a laid-out prompt: `index`, `token` (visible text), `name` (its
    canonical position name), `aliases` (the other names that point at it: the digits it holds,
    `a0.d1`, and `last`), `part` (template, addend k, prefix, worked example i, chat template,
    ...) and `in_query` (whether `--positions query` patches it)."""
    others: dict[int, list[str]] = {}
    canonical = set(layout.canonical)
    for name, index in layout.aliases.items():
        if name not in canonical:
            others.setdefault(index, []).append(name)
    query = set(layout.query)
    return pl.DataFrame(
        {
            "index": list(range(len(layout.tokens))),
            "token": [visible_token(t) for t in layout.tokens],
            "name": list(layout.canonical),
            "aliases": [", ".join(others.get(i, [])) for i in range(len(layout.tokens))],
            "part": [part_of(name) for name in layout.canonical],
            "in_query": [name in query for name in layout.canonical],
        },
        schema={
            "index": pl.Int64,
            "token": pl.String,
            "name": pl.String,
            "aliases": pl.String,
            "part": pl.String,
            "in_query": pl.Boolean,
        },
    )


def number_tokens(
    tokenizer: PreTrainedTokenizerBase, numbers: Sequence[int], template: str | None = None
) -> pl.DataFrame:
    """How each number tokenizes where a prompt puts it: in `template` (default: the two-addend
    `The sum of {num0} and {num1} is`) with every addend set to the number.

    One row per number: `number`, `tokens` (the visible text of the first addend's tokens,
    joined by `|`: `·23` for a BPE that keeps the space, `12|3` for chunks), `num_tokens`, and
    `digits_per_token` (`3+1` for `1234` in chunks of three).
    """
    template = template_for(2) if template is None else template
    slots = sorted(set(placeholders(template)))
    if not slots or slots != list(range(len(slots))):
        raise BadInput(
            f"template {template!r} must use {{num0}}..{{numK}}; e.g. 'The sum of {{num0}} and "
            "{num1} is'"
        )
    rows: dict[str, list[object]] = {
        "number": [],
        "tokens": [],
        "num_tokens": [],
        "digits_per_token": [],
    }
    for number in numbers:
        if not isinstance(number, int) or number < 0:
            raise BadInput(f"numbers must be non-negative integers, got {number!r}")
        text, spans = render_with_spans(template, [number] * len(slots))
        layout = layout_prompt(tokenizer, text, spans)
        held: dict[int, int] = {}  # token index -> digits of addend 0 it holds
        for digit in range(len(str(number))):
            index = layout.index(f"a0.d{digit}")
            assert index is not None  # layout_prompt raises when a digit has no token
            held[index] = held.get(index, 0) + 1
        indices = [i for i, name in enumerate(layout.canonical) if name.startswith("a0.t")]
        rows["number"].append(number)
        rows["tokens"].append("|".join(visible_token(layout.tokens[i]) for i in indices))
        rows["num_tokens"].append(len(indices))
        rows["digits_per_token"].append("+".join(str(held.get(i, 0)) for i in indices))
    return pl.DataFrame(
        rows,
        schema={
            "number": pl.Int64,
            "tokens": pl.String,
            "num_tokens": pl.Int64,
            "digits_per_token": pl.String,
        },
    )
