"""Token positions of an addition prompt, derived from the tokenizer's character offsets.

Every prompt token gets a name that means the same thing in the base and the counterfactual
prompt, so the counterfactual's vector is taken from "the same named position":

  bos          a special token before the text
  w{s}.{j}     token j of the s-th stretch of template text (s = 0 before the first addend)
  a{k}.t{j}    token j of addend k
  a{k}.d{d}    the token holding digit d of addend k (d = 0 is the most significant digit)
  last         the last prompt token

Those name the query (`The sum of 23 and 45 is` and its suffix) only. The rest of a longer
prompt has names of its own kind, so that it never shifts the query's names:

  p.{j}        token j of the prompt prefix (--prefix)
  s{i}.{j}     token j of worked example i (--shots); under --chat, where each example is a
               user and an assistant turn, the tokens from its question up to the next question
  c0.{j}       token j of the chat template before the prompt (--chat)
  c1.{j}       token j of the chat template after it (the generation prompt)
  r.{j}        token j of the answer prefix (--answer-prefix), the start of the reply: after
               the generation prompt, or at the very end of a prompt without --chat

A token that holds any character of the query is the query's (one that overlaps an addend's
digits belongs to the addend); any other is named by the part its first character falls in.
The position set `query` is the query's tokens and `last` (the answer prefix's last token when
there is one).

A token that overlaps an addend's digits belongs to that addend (a BPE token ` 23` holds the
space and the number). Equal addends (`44 and 44`) are told apart by their character spans, not
by searching for the text.

A unit is several named positions joined by `+` (`a1.d0+last`), patched together: the
counterfactual's vectors at all of them replace the base's in the same forward pass. It is
listed, stored and scored as one position, named as written (docs/units.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from transformers import PreTrainedTokenizerBase

from addpatch.errors import BadInput
from addpatch.task.templates import PLACEHOLDER

if TYPE_CHECKING:
    from addpatch.task.addition import AdditionInput


def render_with_spans(
    template: str, numbers: list[int], prefix: str = "", suffix: str = ""
) -> tuple[str, dict[int, tuple[int, int]]]:
    """The prompt text and, per addend index, the character span of its digits."""
    parts: list[str] = [prefix]
    spans: dict[int, tuple[int, int]] = {}
    cursor = len(prefix)
    last = 0
    for match in PLACEHOLDER.finditer(template):
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


Region = tuple[str, int, int]  # (name prefix, first character, end character) of a prompt part


@dataclass(frozen=True)
class PromptText:
    """A prompt as the model sees it: its text, the query's addend spans, and the other parts."""

    text: str
    spans: dict[int, tuple[int, int]]  # query addend -> character span of its digits
    regions: tuple[Region, ...] = ()  # prefix, shots, chat wrapper, answer prefix (not the query)
    special_tokens: bool = True  # False when a chat template already wrote BOS etc.


def render_input(inp: AdditionInput) -> PromptText:
    """The input's prompt (prefix, worked examples, query, suffix) with its parts' spans; the
    answer prefix is not in it (see `with_answer_prefix`)."""
    from addpatch.task.templates import render_shot

    regions: list[Region] = []
    if inp.prefix:
        regions.append(("p", 0, len(inp.prefix)))
    cursor = len(inp.prefix)
    for i, shot in enumerate(inp.shots):
        text = render_shot(inp.template, shot)
        regions.append((f"s{i}", cursor, cursor + len(text)))
        cursor += len(text)
    head = inp.prefix + inp.shots_text
    text, spans = render_with_spans(inp.template, list(inp.numbers), head, inp.suffix)
    return PromptText(text, spans, tuple(regions))


def chat_wrap(tokenizer: PreTrainedTokenizerBase, prompt: PromptText) -> PromptText:
    """The prompt as the user turn of the tokenizer's chat template, with the generation prompt."""
    _require_chat_template(tokenizer)
    messages = [{"role": "user", "content": prompt.text}]
    text = cast(
        str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
    start = text.find(prompt.text)
    if start < 0:
        raise BadInput(
            "the tokenizer's chat template changes the prompt text, so its tokens cannot be "
            "placed; drop --chat"
        )
    end = start + len(prompt.text)
    spans = {k: (s + start, e + start) for k, (s, e) in prompt.spans.items()}
    regions = [("c0", 0, start)] if start else []
    regions += [(name, s + start, e + start) for name, s, e in prompt.regions]
    if end < len(text):
        regions.append(("c1", end, len(text)))
    return PromptText(text, spans, tuple(regions), special_tokens=False)


def chat_turns(tokenizer: PreTrainedTokenizerBase, inp: AdditionInput) -> PromptText:
    """The input as a conversation in the tokenizer's chat template: each worked example a user
    turn (its question, the prefix before the first) and an assistant turn (its answer), then
    the query's user turn and the generation prompt.

    Regions: `c0` the template before the first turn's text, `p` the prefix, `s{i}` worked
    example i from its question up to the next question (its answer and the template between),
    `c1` the template after the query's text.
    """
    _require_chat_template(tokenizer)
    exchanges = inp.shot_exchanges
    messages: list[dict[str, str]] = []
    for i, (question, reply) in enumerate(exchanges):
        messages.append({"role": "user", "content": (inp.prefix if i == 0 else "") + question})
        messages.append({"role": "assistant", "content": reply})
    query, query_spans = render_with_spans(inp.template, list(inp.numbers), suffix=inp.suffix)
    messages.append({"role": "user", "content": query})
    text = cast(
        str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
    starts: list[int] = []  # where each message's text is in the conversation
    cursor = 0
    for message in messages:
        start = text.find(message["content"], cursor)
        if start < 0:
            raise BadInput(
                "the tokenizer's chat template changes the prompt text, so its tokens cannot be "
                "placed; drop --chat"
            )
        starts.append(start)
        cursor = start + len(message["content"])
    regions: list[Region] = [("c0", 0, starts[0])] if starts[0] else []
    if inp.prefix:
        regions.append(("p", starts[0], starts[0] + len(inp.prefix)))
    questions_at = [
        starts[2 * i] + (len(inp.prefix) if i == 0 else 0) for i in range(len(exchanges))
    ]
    ends = questions_at[1:] + [starts[-1]]
    regions += [
        (f"s{i}", start, end) for i, (start, end) in enumerate(zip(questions_at, ends, strict=True))
    ]
    query_at = starts[-1]
    spans = {k: (s + query_at, e + query_at) for k, (s, e) in query_spans.items()}
    if query_at + len(query) < len(text):
        regions.append(("c1", query_at + len(query), len(text)))
    return PromptText(text, spans, tuple(regions), special_tokens=False)


def _require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise BadInput(
            "--chat needs a tokenizer with a chat template, and this model's has none; "
            "drop --chat (or use the model's Instruct/chat variant)"
        )


def with_answer_prefix(prompt: PromptText, answer_prefix: str) -> PromptText:
    """The prompt followed by the start of the reply (region `r`), if there is one."""
    if not answer_prefix:
        return prompt
    end = len(prompt.text)
    region = ("r", end, end + len(answer_prefix))
    return PromptText(
        prompt.text + answer_prefix, prompt.spans, prompt.regions + (region,), prompt.special_tokens
    )


def model_prompt(tokenizer: PreTrainedTokenizerBase, inp: AdditionInput) -> PromptText:
    """The input's prompt as the model sees it: in the chat template when the input asks for it
    (worked examples as turns of their own when it asks for that), with the answer prefix at
    the end (after the chat template's generation prompt)."""
    if inp.in_turns:
        prompt = chat_turns(tokenizer, inp)
    else:
        prompt = render_input(inp)
        if inp.chat:
            prompt = chat_wrap(tokenizer, prompt)
    return with_answer_prefix(prompt, inp.answer_prefix)


def layout_input(tokenizer: PreTrainedTokenizerBase, inp: AdditionInput) -> PromptLayout:
    """Tokenize and name the input's prompt as the model sees it (`model_prompt`)."""
    prompt = model_prompt(tokenizer, inp)
    return layout_prompt(
        tokenizer,
        prompt.text,
        prompt.spans,
        regions=prompt.regions,
        add_special_tokens=prompt.special_tokens,
    )


def _region_of(regions: tuple[Region, ...], start: int, end: int) -> str | None:
    """The part a token lies in: the one its first character is in, if none of its characters
    are the query's (a BPE token ` The` that starts with the prefix's space is the query's)."""
    if not all(any(s <= c < e for _, s, e in regions) for c in range(start, end)):
        return None
    return next(r for r, s, e in regions if s <= start < e)


@dataclass(frozen=True)
class PromptLayout:
    """Named positions of one tokenized prompt (indices count from the first token, no padding)."""

    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]  # each token's text
    canonical: tuple[str, ...]  # one name per token, in order
    aliases: dict[str, int]  # every name (canonical and alias) -> token index
    query: tuple[str, ...] = field(default=())  # canonical names of the query's tokens

    def index(self, name: str) -> int | None:
        return self.aliases.get(name)

    def indices(self, name: str) -> tuple[int, ...] | None:
        """Token indices of every part of a unit (`a1.d0+last`), in the unit's order (a single
        name: a 1-tuple); None when any part is not in this prompt."""
        found = tuple(self.aliases.get(part) for part in unit_parts(name))
        if any(index is None for index in found):
            return None
        return cast("tuple[int, ...]", found)


UNIT_JOIN = "+"  # joins the positions of a unit: a1.d0+last


def unit_parts(name: str) -> tuple[str, ...]:
    """The position names of a unit in the order written (`a1.d0+last` -> ("a1.d0", "last"));
    a single name is a unit of one."""
    return tuple(part.strip() for part in name.split(UNIT_JOIN))


def unit_text(layout: PromptLayout, name: str) -> str:
    """The text of a unit's tokens, joined by `+` (a single position: its token's text)."""
    indices = layout.indices(name)
    assert indices is not None, name
    return UNIT_JOIN.join(layout.tokens[i] for i in indices)


def check_units(layouts: Iterable[PromptLayout], names: list[str]) -> None:
    """BadInput when a unit of several positions names one that a prompt lacks, or names one
    token twice (a unit must exist, whole, in every prompt; single positions may be missing
    from some, which then have no output there)."""
    units = [name for name in names if UNIT_JOIN in name]
    if not units:
        return
    for layout in layouts:
        for unit in units:
            indices = layout.indices(unit)
            if indices is None:
                missing = next(p for p in unit_parts(unit) if layout.index(p) is None)
                separate = ",".join(unit_parts(unit))
                raise BadInput(
                    f"unit {unit!r} names {missing!r}, which the prompt {_prompt(layout)!r} "
                    "does not have; a unit needs all its positions in every prompt, so name "
                    f"positions all the templates and widths share, or list them apart "
                    f"({separate}: a prompt without one has no output there)"
                )
            if len(set(indices)) < len(indices):
                raise BadInput(
                    f"unit {unit!r} names the same token twice in {_prompt(layout)!r}; name "
                    "each token of a unit once"
                )


def _prompt(layout: PromptLayout) -> str:
    return "".join(layout.tokens)


def layout_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    spans: dict[int, tuple[int, int]],
    *,
    regions: tuple[Region, ...] = (),
    add_special_tokens: bool = True,
) -> PromptLayout:
    """Tokenize `text` (special tokens included, as the model sees it) and name every token.

    `regions` name the parts of the text that are not the query (see the module docstring).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(
            "the tokenizer gives no character offsets, so digits cannot be placed; save the model "
            "with a fast tokenizer (tokenizer.json)"
        )
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    ids: list[int] = encoded["input_ids"]
    offsets: list[tuple[int, int]] = encoded["offset_mapping"]
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    canonical: list[str] = []
    aliases: dict[str, int] = {}
    addend_tokens: dict[int, int] = {}
    text_tokens: dict[int, int] = {}
    region_tokens: dict[str, int] = {}
    query: list[str] = []
    for index, (start, end) in enumerate(offsets):
        if start == end:  # special token (BOS etc.): no characters of the text
            name = "bos" if index == 0 else f"special{index}"
        else:
            owner = next((k for k, (s, e) in ordered if start < e and end > s), None)
            region = _region_of(regions, start, end)
            if owner is None and region is not None:
                j = region_tokens.get(region, 0)
                region_tokens[region] = j + 1
                name = f"{region}.{j}"
            elif owner is not None:
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
            if region is None or owner is not None:
                query.append(name)
        canonical.append(name)
        aliases[name] = index
    for addend, (start, end) in spans.items():
        for digit in range(end - start):
            if f"a{addend}.d{digit}" not in aliases:
                raise BadInput(
                    f"the tokenizer gives no token for digit {digit} of addend {addend} in {text!r} "
                    "(it drops or merges it away); use a template that keeps the numbers apart "
                    "(e.g. '{num0} + {num1} =') or a tokenizer whose tokens cover every digit"
                )
    aliases["last"] = len(ids) - 1
    tokens = tuple(cast(str, tokenizer.decode([i])) for i in ids)
    return PromptLayout(tuple(ids), tokens, tuple(canonical), aliases, tuple(query))


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


POSITION_SETS = ("all", "query", "numbers", "digits", "last")
AUTO_POSITIONS = "auto"


def resolve_position_set(which: str, task: object) -> str:
    """`auto`: the query's tokens when the prompt has a prefix, worked examples, a chat wrapper
    or an answer prefix (they would multiply the grid), else `all` (the plain prompt's every
    token)."""
    if which != AUTO_POSITIONS:
        return which
    extra = getattr(task, "prompt_prefix", "") or getattr(task, "num_shots", 0)
    extra = extra or getattr(task, "answer_prefix", "")
    return "query" if extra or getattr(task, "chat", False) else "all"


def select_positions(
    layout: PromptLayout, which: str, num_addends: int, num_digits: int
) -> list[str]:
    """Position names to patch: a named set's in prompt order, or a comma-separated list's as
    written, where an item may be a unit of positions joined by `+` (kept in its order)."""
    if which == "all":
        return list(layout.canonical)
    if which == "query":  # the query's tokens, and `last` unless it is one of them
        names = list(layout.query)
        ends_query = bool(names) and layout.aliases[names[-1]] == layout.aliases["last"]
        return names if ends_query else names + ["last"]
    if which == "numbers":
        names = [n for n in layout.canonical if n.startswith("a")]
        return names + ["last"]
    if which == "digits":
        names = [f"a{k}.d{d}" for k in range(num_addends) for d in range(num_digits)]
        return names + ["last"]
    if which == "last":
        return ["last"]
    names = [UNIT_JOIN.join(unit_parts(n)) for n in which.split(",") if n.strip()]
    unknown = [(n, p) for n in names for p in unit_parts(n) if layout.index(p) is None]
    if unknown or not names:
        unit, part = unknown[0] if unknown else (which, which)
        where = f"unit {unit!r} names unknown position {part!r}" if unit != part else ""
        raise BadInput(
            f"{where or f'unknown position {part!r}'}; use one of {', '.join(POSITION_SETS)}, "
            f"names like {', '.join(list(layout.aliases)[:6])}, or units of them joined by "
            f"{UNIT_JOIN} (a1.d0{UNIT_JOIN}last)"
        )
    repeated = [n for n in names if len(set(unit_parts(n))) < len(unit_parts(n))]
    if repeated:
        raise BadInput(f"unit {repeated[0]!r} names a position twice; name each position once")
    check_units([layout], names)
    return names


def highlight(layout: PromptLayout, names: list[str]) -> str:
    """The prompt with the chosen tokens (every token of a unit) wrapped in [brackets], for a
    quick visual check."""
    chosen = {i for n in names for i in layout.indices(n) or ()}
    return "".join(f"[{tok}]" if i in chosen else tok for i, tok in enumerate(layout.tokens))
