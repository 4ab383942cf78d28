"""Residual-stream interchange interventions over a grid of (layer, position) cells.

For a batch of (base, counterfactual) prompts the engine
  1. runs the base prompts once, keeping every layer's residual stream and KV cache, and
     generates the base answer;
  2. runs the counterfactual prompts once, keeping every layer's residual stream;
  3. for each cell (layer L, named position p): takes the base stream after layer L from the
     first patched token on, puts the counterfactual's vector at p, and runs only layers L+1..
     over only the tokens from p on; earlier tokens and layers come from the base run's cache.
     The answer is then generated greedily with that cache.
Rows whose counterfactual prompt equals the base prompt up to p cannot change: they take the
base answer without any compute. Layer -1 is the embedding output (the stream entering layer 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from addpatch.engine.architecture import DecoderStack, find_decoder
from addpatch.engine.forward import greedy_continue, position_ids_from, run_layers
from addpatch.engine.kv_cache import KVCache
from addpatch.engine.positions import PromptLayout
from addpatch.task.templates import parse_answer

TOP_K = 5

OUTPUT_SCHEMA = pa.schema(
    [
        ("example_id", pa.int64()),
        ("layer", pa.int16()),
        ("position", pa.int16()),
        ("token_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("answer", pa.int64()),
        ("top_ids", pa.list_(pa.int32())),
        ("top_logprobs", pa.list_(pa.float32())),
    ]
)


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


@dataclass
class _Answers:
    tokens: torch.Tensor  # (rows, steps)
    top_ids: torch.Tensor  # (rows, TOP_K)
    top_logprobs: torch.Tensor  # (rows, TOP_K)


class PatchEngine:
    """Interchange interventions on one loaded model; stateless between batches."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stack: DecoderStack = find_decoder(model)
        self.device = next(model.parameters()).device
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @property
    def num_layers(self) -> int:
        return self.stack.num_layers

    # -- batch forward passes -------------------------------------------------------------
    def _left_pad(
        self, layouts: list[PromptLayout]
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        width = max(len(layout.token_ids) for layout in layouts)
        ids = torch.full((len(layouts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(layouts), width), dtype=torch.long)
        pads = []
        for row, layout in enumerate(layouts):
            pad = width - len(layout.token_ids)
            ids[row, pad:] = torch.tensor(layout.token_ids)
            attention[row, pad:] = 1
            pads.append(pad)
        return ids.to(self.device), attention.to(self.device), pads

    def _forward(self, layouts: list[PromptLayout], keep_cache: bool) -> _Run:
        ids, attention, pads = self._left_pad(layouts)
        hidden = self.stack.embed(ids, position_ids_from(attention))
        cache = KVCache(self.num_layers)
        out, per_layer = run_layers(self.stack, hidden, attention, 0, 0, cache, keep_hidden=True)
        last_logits = self.stack.logits(out[:, -1:])[:, -1].float()
        return _Run(
            ids, attention, pads, [hidden, *per_layer], cache if keep_cache else None, last_logits
        )

    def _answers_from(
        self, last_logits: torch.Tensor, attention: torch.Tensor, cache: KVCache, steps: int
    ) -> _Answers:
        logprobs = torch.log_softmax(last_logits.float(), dim=-1)
        top = logprobs.topk(TOP_K, dim=-1)
        first = last_logits.argmax(-1)
        tokens = greedy_continue(self.stack, first, attention, cache, steps - 1)
        return _Answers(tokens, top.indices, top.values)

    @staticmethod
    def _fork_cache(cache: KVCache, rows: torch.Tensor, layer: int, keep_until: int) -> KVCache:
        """Rows' cache: full prompt for layers <= `layer`, positions < keep_until above it."""
        forked = KVCache(len(cache.keys))
        for index, (keys, values) in enumerate(zip(cache.keys, cache.values, strict=True)):
            assert keys is not None and values is not None
            if index <= layer:
                forked.seed(index, keys[rows], values[rows])
            else:
                forked.seed(index, keys[rows, :, :keep_until], values[rows, :, :keep_until])
        return forked

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
        return [self._decode(row) for row in answers.tokens.tolist()]

    def _decode(self, tokens: list[int]) -> tuple[list[int], str]:
        if self.eos_id is not None and self.eos_id in tokens:
            tokens = tokens[: tokens.index(self.eos_id)]
        return tokens, self.tokenizer.decode(tokens, skip_special_tokens=True)

    @torch.no_grad()
    def sweep(
        self,
        pairs: list[PromptPair],
        layers: list[int],
        positions: list[str],
        max_new_tokens: int,
    ) -> Iterator[pa.Table]:
        """Patched outputs of every (layer, position) cell for one batch, one table per layer."""
        base = self._forward([p.base for p in pairs], keep_cache=True)
        counterfactual = self._forward([p.counterfactual for p in pairs], keep_cache=False)
        assert base.cache is not None
        base_answers = self._answers_from(
            base.last_logits, base.attention, base.cache.copy(), max_new_tokens
        )
        base_decoded = [self._decode(row) for row in base_answers.tokens.tolist()]
        example_ids = [p.example_id for p in pairs]
        for layer in layers:
            if not -1 <= layer < self.num_layers:
                raise ValueError(f"layer {layer} outside -1..{self.num_layers - 1}")
            columns: dict[str, list] = {name: [] for name in OUTPUT_SCHEMA.names}
            for position_index, name in enumerate(positions):
                self._cell(
                    pairs,
                    base,
                    counterfactual,
                    base_answers,
                    base_decoded,
                    layer,
                    name,
                    max_new_tokens,
                    position_index,
                    example_ids,
                    columns,
                )
            yield pa.table(columns, schema=OUTPUT_SCHEMA)

    def _cell(
        self,
        pairs: list[PromptPair],
        base: _Run,
        counterfactual: _Run,
        base_answers: _Answers,
        base_decoded: list[tuple[list[int], str]],
        layer: int,
        name: str,
        max_new_tokens: int,
        position_index: int,
        example_ids: list[int],
        columns: dict[str, list],
    ) -> None:
        active: list[int] = []
        base_at: list[int] = []
        cf_at: list[int] = []
        unchanged: list[int] = []
        for row, pair in enumerate(pairs):
            b, c = pair.base.index(name), pair.counterfactual.index(name)
            if b is None or c is None:
                continue  # this prompt has no such position: no output for the cell
            if b == c and pair.base.token_ids[: b + 1] == pair.counterfactual.token_ids[: c + 1]:
                unchanged.append(row)
                continue
            active.append(row)
            base_at.append(base.pad[row] + b)
            cf_at.append(counterfactual.pad[row] + c)

        results: dict[int, tuple[list[int], str, list[int], list[float]]] = {}
        for row in unchanged:
            tokens, text = base_decoded[row]
            results[row] = (
                tokens,
                text,
                base_answers.top_ids[row].tolist(),
                base_answers.top_logprobs[row].tolist(),
            )
        if active:
            rows = torch.tensor(active, device=self.device)
            patched = self._patched_answers(
                base, counterfactual, rows, base_at, cf_at, layer, max_new_tokens
            )
            for i, row in enumerate(active):
                tokens, text = self._decode(patched.tokens[i].tolist())
                results[row] = (
                    tokens,
                    text,
                    patched.top_ids[i].tolist(),
                    patched.top_logprobs[i].tolist(),
                )
        for row in sorted(results):
            tokens, text, top_ids, top_logprobs = results[row]
            columns["example_id"].append(example_ids[row])
            columns["layer"].append(layer)
            columns["position"].append(position_index)
            columns["token_ids"].append(tokens)
            columns["text"].append(text)
            columns["answer"].append(parse_answer(text))
            columns["top_ids"].append(top_ids)
            columns["top_logprobs"].append(top_logprobs)

    def _patched_answers(
        self,
        base: _Run,
        counterfactual: _Run,
        rows: torch.Tensor,  # (R,) batch rows to patch
        base_at: list[int],  # (R,) padded index of the position in the base prompt
        cf_at: list[int],  # (R,) padded index of the same-named position in the counterfactual
        layer: int,
        max_new_tokens: int,
    ) -> _Answers:
        start = min(base_at)
        stream = layer + 1  # index into hidden: 0 = embeddings, L + 1 = output of layer L
        hidden = base.hidden[stream][rows, start:].clone()  # (R, T - start, d_model)
        local = torch.arange(len(base_at), device=self.device)
        source = counterfactual.hidden[stream][rows, torch.tensor(cf_at, device=self.device)]
        assert source.shape == (len(base_at), hidden.shape[-1])  # (R, d_model)
        hidden[local, torch.tensor(base_at, device=self.device) - start] = source
        assert base.cache is not None
        cache = self._fork_cache(base.cache, rows, layer, start)
        attention = base.attention[rows]
        out, _ = run_layers(self.stack, hidden, attention, start, layer + 1, cache)
        last_logits = self.stack.logits(out[:, -1:])[:, -1].float()
        return self._answers_from(last_logits, attention, cache, max_new_tokens)
