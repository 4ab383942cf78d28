"""Interchange interventions over a grid of (component, layer, head, position) cells.

For a batch of (base, counterfactual) prompts the engine
  1. runs the base prompts once, keeping every layer's residual stream and KV cache, and
     generates the base answer;
  2. runs the counterfactual prompts once, keeping every layer's residual stream;
  3. for each cell (layer L, named position p): takes the base stream after layer L from the
     first patched token on, puts the counterfactual's vector at p, and runs only layers L+1..
     over only the tokens from p on; earlier tokens and layers come from the base run's cache.
     The answer is then generated greedily with that cache. A unit of several positions
     (`a1.d0+last`) puts the counterfactual's vector at each of them and runs from the
     earliest on.
Rows whose counterfactual prompt equals the base prompt up to p (a unit's latest position)
cannot change: they take the base answer without any compute. Layer -1 is the embedding output (the stream entering layer 0).

Each output keeps the top-k log-probabilities of two answer steps: the first (`top_ids`,
`top_logprobs`), and the first whose greedy token carries a digit (`digit_step`, counted from
0, `digit_top_ids`, `digit_top_logprobs`; null when the answer has no digit). For tokenizers
that answer with a space token first, only the latter says anything about the number.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import cast

import pyarrow as pa
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from addpatch.das.subspace import interchange
from addpatch.engine.architecture import DecoderStack, find_decoder
from addpatch.engine.components import ComponentRecorder, LayerParts, find_layer_parts
from addpatch.engine.forward import (
    additive_mask,
    greedy_continue,
    left_pad,
    position_ids_from,
    run_layers,
)
from addpatch.engine.kv_cache import KVCache
from addpatch.engine.positions import PromptLayout
from addpatch.store.output_schema import ENGINE_OUTPUT_SCHEMA
from addpatch.task.templates import DIGITS, parse_answer

TOP_K = 5

OUTPUT_SCHEMA = ENGINE_OUTPUT_SCHEMA  # defined in the store, with the view's columns


@dataclass(frozen=True)
class PromptPair:
    example_id: int
    base: PromptLayout
    counterfactual: PromptLayout


@dataclass
class _Run:
    """One forward pass over a left-padded batch."""

    ids: torch.Tensor  # (batch, T)
    attention: torch.Tensor  # (batch, T)
    pad: list[int]  # left padding per row
    hidden: list[torch.Tensor]  # N+1 tensors (batch, T, d_model); [0] = embeddings
    cache: KVCache | None
    last_logits: torch.Tensor  # (batch, vocab)
    parts: ComponentRecorder | None = (
        None  # per layer attn/mlp (batch, T, d), heads (batch, T, H*hd)
    )


@dataclass
class _Answers:
    tokens: torch.Tensor  # (rows, steps)
    top_ids: torch.Tensor  # (rows, TOP_K)
    top_logprobs: torch.Tensor  # (rows, TOP_K)
    digit_step: list[int | None]  # first step whose token carries a digit, per row
    digit_top_ids: list[list[int] | None]  # top-k at that step
    digit_top_logprobs: list[list[float] | None]


def digit_token_mask(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
    """(vocab_size,) bool: whether each token's text (decoded alone) holds a decimal digit.

    Only tokens whose vocabulary entry holds a digit are decoded: a digit in the text comes
    from one in the entry (byte-level BPE writes digit bytes as themselves; SentencePiece and
    WordPiece pieces hold them as text; a byte-fallback entry `<0x35>` holds digits too), so
    the others cannot hold one. Decoding all of a 262k vocabulary one token at a time takes
    seconds; this takes a fraction of that.
    """
    size = min(vocab_size, len(tokenizer))
    entries = tokenizer.convert_ids_to_tokens(list(range(size)))
    candidates = [
        i for i, entry in enumerate(entries) if entry is None or not DIGITS.isdisjoint(entry)
    ]
    texts = tokenizer.batch_decode([[i] for i in candidates])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    digit_ids = [
        i for i, text in zip(candidates, texts, strict=True) if not DIGITS.isdisjoint(text)
    ]
    mask[digit_ids] = True
    return mask


class _StepTops:
    """Collects the top-k log-probs of every decoding step (first step included)."""

    def __init__(self, first_ids: torch.Tensor, first_logprobs: torch.Tensor) -> None:
        self.ids = [first_ids]  # each (rows, TOP_K)
        self.logprobs = [first_logprobs]

    def __call__(self, logits: torch.Tensor) -> None:  # (rows, vocab)
        top = torch.log_softmax(logits.float(), dim=-1).topk(TOP_K, dim=-1)
        self.ids.append(top.indices)
        self.logprobs.append(top.values)

    def at_digit(
        self, tokens: torch.Tensor, digit_mask: torch.Tensor, eos_id: int | None
    ) -> tuple[list[int | None], list[list[int] | None], list[list[float] | None]]:
        """Per row of `tokens` (rows, steps): the first step before EOS whose token carries a
        digit, and the top-k ids and log-probs there (None when no step does)."""
        steps = len(self.ids)  # steps that ran; later ones are EOS filler
        tokens = tokens[:, :steps]
        is_digit = digit_mask.to(tokens.device)[tokens]  # (rows, steps)
        if eos_id is not None:  # a row's answer ends at its first EOS
            is_digit &= (tokens == eos_id).int().cumsum(dim=1) == 0
        has = is_digit.any(dim=1)
        first = is_digit.int().argmax(dim=1)  # (rows,)
        ids = torch.stack(self.ids, dim=1)  # (rows, steps, TOP_K)
        logprobs = torch.stack(self.logprobs, dim=1)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        chosen_ids = ids[rows, first].tolist()
        chosen_logprobs = logprobs[rows, first].tolist()
        out_steps: list[int | None] = []
        out_ids: list[list[int] | None] = []
        out_logprobs: list[list[float] | None] = []
        for row, found in enumerate(has.tolist()):
            out_steps.append(int(first[row]) if found else None)
            out_ids.append(chosen_ids[row] if found else None)
            out_logprobs.append(chosen_logprobs[row] if found else None)
        return out_steps, out_ids, out_logprobs


class PatchEngine:
    """Interchange interventions on one loaded model; stateless between batches."""

    same_prefix_shortcut = True
    """A cell whose counterfactual has the base's tokens up to the patched position would patch
    in the base's own vector: its rows take the base's answer without a patched forward. Tests
    turn this off to run every row through the patch path."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model: PreTrainedModel = model.eval()
        self.tokenizer = tokenizer
        self.stack: DecoderStack = find_decoder(model)
        self.device = next(model.parameters()).device
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        head = self.model.get_output_embeddings()
        vocab = head.weight.shape[0] if head is not None else len(tokenizer)
        self.digit_mask = digit_token_mask(tokenizer, vocab).to(self.device)  # (vocab,)
        self._parts: list[LayerParts] | None = None

    @property
    def parts(self) -> list[LayerParts]:
        """Each layer's attention/MLP parts (found on first use: resid needs none)."""
        if self._parts is None:
            self._parts = find_layer_parts(self.model, self.stack.layers)
        return self._parts

    @property
    def num_heads(self) -> int:
        return self.parts[0].num_heads

    @property
    def num_layers(self) -> int:
        return self.stack.num_layers

    # -- batch forward passes -------------------------------------------------------------
    def _forward(
        self, layouts: list[PromptLayout], keep_cache: bool, record: AbstractSet[str] = frozenset()
    ) -> _Run:
        """The full forward pass; `record` names the parts to keep (attn, mlp, heads)."""
        ids, attention, pads = left_pad(
            [lay.token_ids for lay in layouts], self.pad_id, self.device
        )
        hidden = self.stack.embed(ids, position_ids_from(attention))
        cache = KVCache(self.num_layers)
        recorder = ComponentRecorder(self.parts, set(record)) if record else None
        if recorder is not None:
            with recorder:
                out, per_layer = run_layers(
                    self.stack, hidden, attention, 0, 0, cache, keep_hidden=True
                )
        else:
            out, per_layer = run_layers(
                self.stack, hidden, attention, 0, 0, cache, keep_hidden=True
            )
        last_logits = self.stack.logits(out[:, -1:])[:, -1].float()
        return _Run(
            ids,
            attention,
            pads,
            [hidden, *per_layer],
            cache if keep_cache else None,
            last_logits,
            recorder,
        )

    @staticmethod
    def _first_step(last_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, vocab) -> first answer token (batch,), top-k ids and log-probs (batch, TOP_K)."""
        top = torch.log_softmax(last_logits.float(), dim=-1).topk(TOP_K, dim=-1)
        return last_logits.argmax(-1), top.indices, top.values

    def _answers_from(
        self, last_logits: torch.Tensor, attention: torch.Tensor, cache: KVCache, steps: int
    ) -> _Answers:
        first, top_ids, top_logprobs = self._first_step(last_logits)
        tops = _StepTops(top_ids, top_logprobs)
        tokens = greedy_continue(
            self.stack, first, attention, cache, steps - 1, self.eos_id, on_logits=tops
        )
        return _Answers(
            tokens, top_ids, top_logprobs, *tops.at_digit(tokens, self.digit_mask, self.eos_id)
        )

    # -- the sweep ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, layouts: list[PromptLayout], max_new_tokens: int
    ) -> list[tuple[list[int], str]]:
        """Plain greedy answers (no patching): token ids and text per prompt."""
        run = self._forward(layouts, keep_cache=True)
        assert run.cache is not None
        answers = self._answers_from(
            run.last_logits, run.attention, run.cache.copy(), max_new_tokens
        )
        return self._decode_many(answers.tokens.tolist())

    def _decode_many(self, rows: list[list[int]]) -> list[tuple[list[int], str]]:
        """Answer tokens cut at EOS, and their text, for many rows in one tokenizer call."""
        eos = self.eos_id
        kept = [r[: r.index(eos)] if eos is not None and eos in r else r for r in rows]
        texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        return list(zip(kept, texts, strict=True))

    @torch.no_grad()
    def sweep(
        self,
        pairs: list[PromptPair],
        layers: list[int],
        positions: list[str],
        max_new_tokens: int,
        max_decode_rows: int = 4096,
        components: tuple[str, ...] | list[str] = ("resid",),
        basis: torch.Tensor | None = None,
        only: AbstractSet[tuple[str, int, int, int | None]] | None = None,
    ) -> Iterator[pa.Table]:
        """Patched outputs of every (component, layer, head, position) cell for one batch, one
        table per component. Layer -1 (the embeddings) exists for `resid` only. `only`: patch
        just these (component, layer, position index, head) cells (a screen's), not the grid.

        With `basis` (k, d_model), a trained subspace's orthonormal rows (addpatch/das), only
        the stream's coordinates in that subspace are interchanged (`resid` only):
        h + Rᵀ(R h_cf − R h) instead of h_cf.

        The cells of one position share one prompt forward: stacked in order of their layer, each
        joins the batch at the layer after its own, so every layer runs once for all the cells
        patched below it. The answers of up to `max_decode_rows` rows are then decoded together,
        since their caches all have the prompt's length.
        """
        if basis is not None and tuple(components) != ("resid",):
            raise ValueError("a trained subspace patches the residual stream only")
        for layer in layers:
            if not -1 <= layer < self.num_layers:
                raise ValueError(f"layer {layer} outside -1..{self.num_layers - 1}")
        record = _recorded_parts(components)
        base = self._forward([p.base for p in pairs], keep_cache=True, record=record)
        counterfactual = self._forward(
            [p.counterfactual for p in pairs], keep_cache=False, record=record
        )
        assert base.cache is not None
        base_answers = self._answers_from(
            base.last_logits, base.attention, base.cache.copy(), max_new_tokens
        )
        base_decoded = self._decode_many(base_answers.tokens.tolist())
        cells = [self._cell_rows(pairs, base, counterfactual, name) for name in positions]
        for component in components:
            component_layers = layers if component == "resid" else [x for x in layers if x >= 0]
            heads: list[int | None] = (
                list(range(self.num_heads)) if component == "heads" else [None]
            )
            columns: dict[str, list[object]] = {name: [] for name in OUTPUT_SCHEMA.names}
            units: list[_Unit] = []
            for position_index, cell in enumerate(cells):
                for layer in component_layers:
                    for head in heads:
                        if (
                            only is not None
                            and (component, layer, position_index, head) not in only
                        ):
                            continue
                        site = _Unit(position_index, layer, head, cell)
                        for row in cell.unchanged:
                            tokens, text = base_decoded[row]
                            self._append(
                                columns,
                                pairs[row].example_id,
                                site,
                                component,
                                tokens,
                                text,
                                base_answers.top_ids[row].tolist(),
                                base_answers.top_logprobs[row].tolist(),
                                base_answers.digit_step[row],
                                base_answers.digit_top_ids[row],
                                base_answers.digit_top_logprobs[row],
                            )
                        if cell.active:
                            units.append(site)
            for group in _groups(units, max_decode_rows):
                self._patch_group(
                    pairs, base, counterfactual, component, group, max_new_tokens, columns, basis
                )
            yield pa.table(columns, schema=OUTPUT_SCHEMA)

    @staticmethod
    def _append(
        columns: dict[str, list[object]],
        example_id: int,
        site: _Unit,
        component: str,
        tokens: list[int],
        text: str,
        top_ids: list[int],
        top_logprobs: list[float],
        digit_step: int | None,
        digit_top_ids: list[int] | None,
        digit_top_logprobs: list[float] | None,
    ) -> None:
        columns["example_id"].append(example_id)
        columns["layer"].append(site.layer)
        columns["position"].append(site.position)
        columns["component"].append(component)
        columns["head"].append(site.head)
        columns["token_ids"].append(tokens)
        columns["text"].append(text)
        columns["answer"].append(parse_answer(text))
        columns["top_ids"].append(top_ids)
        columns["top_logprobs"].append(top_logprobs)
        columns["digit_step"].append(digit_step)
        columns["digit_top_ids"].append(digit_top_ids)
        columns["digit_top_logprobs"].append(digit_top_logprobs)

    def _cell_rows(
        self, pairs: list[PromptPair], base: _Run, counterfactual: _Run, name: str
    ) -> _CellRows:
        """Which rows have the position (every position of a unit), and which of those can
        change at all."""
        cell = _CellRows()
        for row, pair in enumerate(pairs):
            b, c = pair.base.indices(name), pair.counterfactual.indices(name)
            if b is None or c is None:
                continue  # this prompt has no such position: no output for the cell
            latest = max(b)  # a unit's vectors are all the same when the prompts agree up to it
            same = pair.base.token_ids[: latest + 1] == pair.counterfactual.token_ids[: latest + 1]
            if self.same_prefix_shortcut and b == c and same:
                cell.unchanged.append(row)  # same prefix: the same vectors, the base's answer
                continue
            cell.active.append(row)
            cell.base_at.append(tuple(base.pad[row] + i for i in b))
            cell.cf_at.append(tuple(counterfactual.pad[row] + i for i in c))
        return cell

    def _patch_group(
        self,
        pairs: list[PromptPair],
        base: _Run,
        counterfactual: _Run,
        component: str,
        group: list[_Unit],
        max_new_tokens: int,
        columns: dict[str, list[object]],
        basis: torch.Tensor | None = None,
    ) -> None:
        """Patch the prompts of a group of cells, then decode them all at once.

        The cells share one cache whose buffers hold every row's whole prompt and answer: each
        cell's rows get the base run's keys/values, its patched forward overwrites those from its
        first patched token on above its layer, and decoding goes on writing in place.
        """
        assert base.cache is not None
        total = sum(len(unit.cell.active) for unit in group)
        prompt_length = base.ids.shape[1]
        cache = KVCache.allocate(base.cache, total, prompt_length + max_new_tokens - 1)
        firsts, top_ids, top_logprobs, attentions = [], [], [], []
        id_tensors, logprob_tensors = [], []  # (rows, TOP_K) per cell
        offset = 0
        for chunk in _same_position(group):
            rows = len(chunk) * len(chunk[0].cell.active)
            first, ids, logprobs, attention = self._patch_prompts(
                base, counterfactual, component, chunk, cache.rows(offset, offset + rows), basis
            )
            firsts.append(first)
            top_ids += ids.tolist()
            top_logprobs += logprobs.tolist()
            id_tensors.append(ids)
            logprob_tensors.append(logprobs)
            attentions.append(attention)
            offset += rows
        cache.set_lengths(prompt_length)
        tops = _StepTops(torch.cat(id_tensors), torch.cat(logprob_tensors))
        generated = greedy_continue(
            self.stack,
            torch.cat(firsts),
            torch.cat(attentions),
            cache,
            max_new_tokens - 1,
            self.eos_id,
            on_logits=tops,
        )  # (rows, max_new_tokens)
        digit_steps, digit_ids, digit_logprobs = tops.at_digit(
            generated, self.digit_mask, self.eos_id
        )
        decoded = self._decode_many(generated.tolist())
        index = 0
        for unit in group:
            for row in unit.cell.active:
                kept, text = decoded[index]
                self._append(
                    columns,
                    pairs[row].example_id,
                    unit,
                    component,
                    kept,
                    text,
                    top_ids[index],
                    top_logprobs[index],
                    digit_steps[index],
                    digit_ids[index],
                    digit_logprobs[index],
                )
                index += 1

    def _patch_prompts(
        self,
        base: _Run,
        counterfactual: _Run,
        component: str,
        chunk: list[_Unit],
        cache: KVCache,
        basis: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the patched prompts of cells at one position (in order of layer) from the patched
        token on, into `cache` (their rows of the group's buffers, R rows per cell): first answer
        tokens (n R,), top-k ids and log-probs (n R, K), and the rows' attention (n R, T).

        Each cell joins the batch at the layer after its own, so layer i runs once over the rows
        of every cell patched below it (a prefix of the batch, since cells come in layer order).
        """
        assert base.cache is not None
        cell = chunk[0].cell
        rows = torch.tensor(cell.active, device=self.device)
        start = min(min(at) for at in cell.base_at)  # a unit's earliest position
        count = len(chunk)
        attention = base.attention[rows].repeat(count, 1)  # (n R, T)
        for index, (keys, values) in enumerate(
            zip(base.cache.keys, base.cache.values, strict=True)
        ):
            assert keys is not None and values is not None
            cache.fill(
                index, keys[rows].repeat(count, 1, 1, 1), values[rows].repeat(count, 1, 1, 1)
            )
        cache.set_lengths(start)  # layers that rerun overwrite from `start` on
        positions = position_ids_from(attention)[:, start:]  # (n R, q)
        rotary = self.stack.position_embeddings(  # per layer: (cos, sin) or None
            base.hidden[0][rows, start:].repeat(count, 1, 1), positions
        )
        masks: dict[int | None, torch.Tensor] = {}
        stream: torch.Tensor | None = None  # (active rows, q, d_model)
        joined = 0
        for index in range(chunk[0].layer + 1, self.num_layers + 1):
            joining = []
            while joined < count and chunk[joined].layer + 1 == index:
                joining.append(
                    self._patched_stream(
                        base, counterfactual, component, chunk[joined], start, basis
                    )
                )
                joined += 1
            if joining:
                stream = torch.cat(joining if stream is None else [stream, *joining])
            assert stream is not None
            if index == self.num_layers:
                break
            active = stream.shape[0]
            window = self.stack.sliding_windows[index]
            if window not in masks:
                masks[window] = additive_mask(attention, start, window, stream.dtype)
            stream = self.stack.run_layer(
                index,
                stream,
                masks[window][:active],
                positions[:active],
                cast(
                    "tuple[torch.Tensor, torch.Tensor] | None", _first_rows(rotary[index], active)
                ),
                cache.rows(0, active),
            )
        assert stream is not None and stream.shape[0] == attention.shape[0]
        last_logits = self.stack.logits(stream[:, -1:])[:, -1].float()
        first, top_ids, top_logprobs = self._first_step(last_logits)
        return first, top_ids, top_logprobs, attention

    def _patched_stream(
        self,
        base: _Run,
        counterfactual: _Run,
        component: str,
        unit: _Unit,
        start: int,
        basis: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The base run's output of the unit's layer from `start` on (R, q, d_model), with the
        patched vector at each row's position (at each of a multi-position unit's positions).

        A unit's positions are patched independently: layer L's input is the base's at every
        position, so each patched vector of layer L depends on its own position only.
        """
        cell, layer = unit.cell, unit.layer
        rows = torch.tensor(cell.active, device=self.device)
        every_base_at = torch.tensor(cell.base_at, device=self.device)  # (R, parts)
        every_cf_at = torch.tensor(cell.cf_at, device=self.device)  # (R, parts)
        hidden = base.hidden[layer + 1][rows, start:].clone()  # (R, q, d_model)
        arange = torch.arange(len(cell.active), device=self.device)
        for part in range(every_base_at.shape[1]):
            base_at, cf_at = every_base_at[:, part], every_cf_at[:, part]  # (R,) each
            source = self._patched_vector(
                base, counterfactual, component, unit, rows, base_at, cf_at
            )
            assert source.shape == (len(cell.active), hidden.shape[-1])  # (R, d_model)
            if basis is not None:  # only the subspace's coordinates come from the counterfactual
                source = interchange(hidden[arange, base_at - start], source, basis)
            hidden[arange, base_at - start] = source
        return hidden

    def _patched_vector(
        self,
        base: _Run,
        counterfactual: _Run,
        component: str,
        unit: _Unit,
        rows: torch.Tensor,  # (R,)
        base_at: torch.Tensor,  # (R,) padded index of the position in the base
        cf_at: torch.Tensor,  # (R,) and in the counterfactual
    ) -> torch.Tensor:
        """Layer L's output at the patched position (R, d_model), L = the unit's layer."""
        layer = unit.layer
        if component == "resid":
            return counterfactual.hidden[layer + 1][rows, cf_at]
        assert base.parts is not None and counterfactual.parts is not None
        part = self.parts[layer]
        stream = base.hidden[layer][rows, base_at]  # (R, d_model) entering the layer
        if component == "attn":
            return part.after_attention(stream, _at(counterfactual.parts.attn[layer], rows, cf_at))
        if component == "mlp":
            attention = _at(base.parts.attn[layer], rows, base_at)
            return part.after_mlp(
                stream, attention, _at(counterfactual.parts.mlp[layer], rows, cf_at)
            )
        assert component == "heads" and unit.head is not None
        heads = _at(base.parts.heads[layer], rows, base_at).clone()  # (R, heads * head_dim)
        width = heads.shape[-1] // part.num_heads
        own = slice(unit.head * width, (unit.head + 1) * width)
        heads[:, own] = _at(counterfactual.parts.heads[layer], rows, cf_at)[:, own]
        return part.after_attention(stream, part.attention_from_heads(heads))


def _at(recorded: torch.Tensor | None, rows: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """(batch, T, width) recorded in a forward pass -> (R, width) at each row's position."""
    assert recorded is not None
    return recorded[rows, at]


def _recorded_parts(components: tuple[str, ...] | list[str]) -> set[str]:
    """The layer parts the full forward passes must keep for these components."""
    record: set[str] = set()
    if "attn" in components or "mlp" in components:
        record.add("attn")  # an MLP patch adds to the stream after the base's attention
    if "mlp" in components:
        record.add("mlp")
    if "heads" in components:
        record.add("heads")
    return record


def _first_rows(rotary: object, rows: int) -> object:
    """The first `rows` rows of position embeddings (a tensor, or tuples/dicts of them)."""
    if rotary is None:
        return None
    if isinstance(rotary, torch.Tensor):
        return rotary[:rows]
    if isinstance(rotary, tuple):
        return tuple(_first_rows(r, rows) for r in rotary)
    if isinstance(rotary, dict):
        return {k: _first_rows(v, rows) for k, v in rotary.items()}
    return rotary


def _same_position(group: list[_Unit]) -> list[list[_Unit]]:
    """Consecutive units of a group split where the position (and so the rows) changes."""
    chunks: list[list[_Unit]] = []
    for unit in group:
        if chunks and chunks[-1][-1].position == unit.position:
            chunks[-1].append(unit)
        else:
            chunks.append([unit])
    return chunks


def _groups(units: list[_Unit], max_rows: int) -> list[list[_Unit]]:
    """Consecutive units in groups of at most `max_rows` rows (a unit larger than that alone)."""
    groups: list[list[_Unit]] = []
    rows = 0
    for unit in units:
        size = len(unit.cell.active)
        if not groups or rows + size > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(unit)
        rows += size
    return groups


@dataclass(frozen=True)
class _Unit:
    """One cell: a named position or multi-position unit (its index), a layer and, for `heads`,
    a head."""

    position: int
    layer: int
    head: int | None
    cell: _CellRows


@dataclass
class _CellRows:
    active: list[int] = field(default_factory=list)  # rows to patch
    # padded index of each of the unit's positions (one for a single position), per active row
    base_at: list[tuple[int, ...]] = field(default_factory=list)  # in the base
    cf_at: list[tuple[int, ...]] = field(default_factory=list)  # in the counterfactual
    unchanged: list[int] = field(default_factory=list)  # rows answered by the base run
