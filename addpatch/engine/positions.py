"""Token positions of an addition prompt, derived from the tokenizer's character offsets.

Every prompt token gets a name that means the same thing in the base and the counterfactual
prompt, so the counterfactual's vector is taken from "the same named position":

  bos          a special token before the text
  w{s}.{j}     token j of the s-th stretch of template text (s = 0 before the first addend)
  a{k}.t{j}    token j of addend k
  a{k}.d{d}    the token holding digit d of addend k (d = 0 is the most significant digit)
  last         the last prompt token

A token that overlaps an addend's digits belongs to that addend (a BPE token ` 23` holds the
space and the number). Equal addends (`44 and 44`) are told apart by their character spans, not
by searching for the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from addpatch.errors import BadInput

_PLACEHOLDER = re.compile(r"\{num(\d+)\}")


def render_with_spans(
    template: str, numbers: list[int], prefix: str = "", suffix: str = ""
) -> tuple[str, dict[int, tuple[int, int]]]:
    """The prompt text and, per addend index, the character span of its digits."""
    parts: list[str] = [prefix]
    spans: dict[int, tuple[int, int]] = {}
    cursor = len(prefix)
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[last : match.start()]
        parts.append(literal)
        cursor += len(literal)
        addend = int(match.group(1))
        digits = str(int(numbers[addend]))
        spans[addend] = (cursor, cursor + len(digits))
        parts.append(digits)
        cursor += len(digits)
        last = match.end()
    parts.append(template[last:])
    parts.append(suffix)
    return "".join(parts), spans


@dataclass(frozen=True)
class PromptLayout:
    """Named positions of one tokenized prompt (indices count from the first token, no padding)."""

    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]  # each token's text
    canonical: tuple[str, ...]  # one name per token, in order
    aliases: dict[str, int]  # every name (canonical and alias) -> token index

    def index(self, name: str) -> int | None:
        return self.aliases.get(name)


def layout_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    spans: dict[int, tuple[int, int]],
) -> PromptLayout:
    """Tokenize `text` (special tokens included, as the model sees it) and name every token."""
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(
            "the tokenizer gives no character offsets, so digits cannot be placed; save the model "
            "with a fast tokenizer (tokenizer.json)"
        )
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids: list[int] = encoded["input_ids"]
    offsets: list[tuple[int, int]] = encoded["offset_mapping"]
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    canonical: list[str] = []
    aliases: dict[str, int] = {}
    addend_tokens: dict[int, int] = {}
    text_tokens: dict[int, int] = {}
    for index, (start, end) in enumerate(offsets):
        if start == end:  # special token (BOS etc.): no characters of the text
            name = "bos" if index == 0 else f"special{index}"
        else:
            owner = next((k for k, (s, e) in ordered if start < e and end > s), None)
            if owner is not None:
                j = addend_tokens.get(owner, 0)
                addend_tokens[owner] = j + 1
                name = f"a{owner}.t{j}"
                span_start, span_end = spans[owner]
                for digit, char in enumerate(range(span_start, span_end)):
                    if start <= char < end:
                        aliases[f"a{owner}.d{digit}"] = index
            else:
                stretch = sum(1 for _, (s, _e) in ordered if s < start)
                j = text_tokens.get(stretch, 0)
                text_tokens[stretch] = j + 1
                name = f"w{stretch}.{j}"
        canonical.append(name)
        aliases[name] = index
    for addend, (start, end) in spans.items():
        for digit in range(end - start):
            if f"a{addend}.d{digit}" not in aliases:
                raise BadInput(
                    f"the tokenizer gives no token for digit {digit} of addend {addend} in {text!r} "
                    "(it drops or merges it away); use a tokenizer whose tokens cover every digit"
                )
    aliases["last"] = len(ids) - 1
    tokens = tuple(tokenizer.decode([i]) for i in ids)
    return PromptLayout(tuple(ids), tokens, tuple(canonical), aliases)


DigitGroup = tuple[int, tuple[int, ...]]  # (addend, its digits held by one token)


def shared_digit_tokens(layouts: Iterable[PromptLayout], num_addends: int) -> list[DigitGroup]:
    """Digits of one addend that a single token holds in every prompt (`579` -> (0, 1, 2)).

    A chunking tokenizer (Llama-3's `\\p{N}{1,3}`) gives the same groups for every D-digit
    number; a BPE whose merges depend on the digits gives groups that vary, and only those
    common to all prompts are returned.
    """
    common: set[DigitGroup] | None = None
    for layout in layouts:
        groups: set[DigitGroup] = set()
        for addend in range(num_addends):
            by_token: dict[int, list[int]] = {}
            digit = 0
            while (index := layout.index(f"a{addend}.d{digit}")) is not None:
                by_token.setdefault(index, []).append(digit)
                digit += 1
            groups |= {(addend, tuple(d)) for d in by_token.values() if len(d) > 1}
        common = groups if common is None else common & groups
    return sorted(common or ())


POSITION_SETS = ("all", "numbers", "digits", "last")


def select_positions(
    layout: PromptLayout, which: str, num_addends: int, num_digits: int
) -> list[str]:
    """Position names to patch, in prompt order, from a named set or a comma-separated list."""
    if which == "all":
        return list(layout.canonical)
    if which == "numbers":
        names = [n for n in layout.canonical if n.startswith("a")]
        return names + ["last"]
    if which == "digits":
        names = [f"a{k}.d{d}" for k in range(num_addends) for d in range(num_digits)]
        return names + ["last"]
    if which == "last":
        return ["last"]
    names = [n.strip() for n in which.split(",") if n.strip()]
    unknown = [n for n in names if layout.index(n) is None]
    if unknown or not names:
        raise BadInput(
            f"unknown position {unknown[0] if unknown else which!r}; use one of "
            f"{', '.join(POSITION_SETS)} or names like {', '.join(list(layout.aliases)[:6])}"
        )
    return names


def highlight(layout: PromptLayout, names: list[str]) -> str:
    """The prompt with the chosen tokens wrapped in [brackets], for a quick visual check."""
    chosen = {layout.aliases[n] for n in names if n in layout.aliases}
    return "".join(f"[{tok}]" if i in chosen else tok for i, tok in enumerate(layout.tokens))
