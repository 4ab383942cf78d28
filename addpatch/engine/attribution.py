"""Attribution patching: a first-order estimate of every cell's effect, from two forwards.

For a batch of (base, counterfactual) pairs and a set of target variables, the engine
  1. generates the base answer greedily (as exact patching does);
  2. runs the counterfactual prompts once, keeping what every cell would patch in;
  3. runs the base prompts once with the base answer appended (teacher forcing), keeping the
     same activations in the autograd graph;
  4. per target and example, takes the metric
        M = logit(label's token) - logit(base answer's token)
     at the first answer step where the target's label and the base answer differ, and gets
     dM/da for every activation a from one backward per metric *slot* (an example's metrics
     for different targets that ask the same step and tokens are one metric; slot k holds each
     example's k-th distinct metric, so the backwards are as many as the most distinct metrics
     one example has, not one per target);
  5. estimates each cell's effect on M for each example as (a_cf - a_base) . dM/da_base,
     summed over the patched vector (for `heads`, over the head's slice).

Cells are those of exact patching (`addpatch.engine.patching`): `resid` at layer -1 (the
embeddings) .. N-1, `attn`, `mlp` and `heads` at 0 .. N-1, at each named position; a cell
whose counterfactual prompt equals the base prompt up to the position changes nothing, and its
estimate is 0 (exact patching answers it from the base run too). An example whose label equals
its base answer has no metric for that target: it gets no estimate, and a metric row saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from addpatch.engine.components import ComponentRecorder
from addpatch.engine.forward import left_pad, position_ids_from, run_layers
from addpatch.engine.kv_cache import KVCache
from addpatch.engine.patching import PatchEngine, PromptPair, _recorded_parts, _Run
from addpatch.engine.positions import PromptLayout
from addpatch.store.attribution_schema import ATTRIBUTION_SCHEMA
from addpatch.task.templates import DIGITS, parse_answer

# why an (example, target) has no metric
SAME_ANSWER = "label equals the base answer"
NO_BASE_NUMBER = "base answer holds no number"
SHORTER_LABEL = "label runs out of digits at the base answer token where they differ"
LONGER_LABEL = "base answer is a prefix of the label"
NO_TOKEN = "no single token spells the label's digits"
NOT_SPELLED = "base answer tokens do not spell its number"


@dataclass(frozen=True)
class AnswerMetric:
    """Where an example's metric for one target is read: logits predicting answer step `step`
    (0: the first answer token), teacher-forced on the base answer's earlier tokens."""

    step: int
    label_token: int
    base_token: int


def answer_metric(
    tokenizer: PreTrainedTokenizerBase, answer_tokens: list[int], label: int
) -> AnswerMetric | str:
    """The metric of one example for one label, or why it has none (one of the reasons above).

    The base answer's number is spelled by its tokens' digits in order; at the first token whose
    digits differ from the label's digits at the same places, the label's token is the base
    token's vocabulary entry with those digits replaced (`▁5` -> `▁6`, `57` -> `67`).
    """
    entries: list[str | None] = list(tokenizer.convert_ids_to_tokens(answer_tokens))
    base = parse_answer(str(tokenizer.decode(answer_tokens, skip_special_tokens=True)))
    if base is None:
        return NO_BASE_NUMBER
    if base == label:
        return SAME_ANSWER
    base_digits, label_digits = str(base), str(label)
    done = 0
    for step, entry in enumerate(entries):
        if done == len(base_digits):
            break
        held = [ch for ch in (entry or "") if ch in DIGITS]
        if not held:
            if done:  # the number ended (a token without digits after its first digits)
                break
            continue
        chunk = base_digits[done : done + len(held)]
        if "".join(held) != chunk:
            return NOT_SPELLED
        wanted = label_digits[done : done + len(held)]
        if wanted != chunk:
            if len(wanted) < len(chunk):
                return SHORTER_LABEL
            swapped = iter(wanted)
            new_entry = "".join(next(swapped) if ch in DIGITS else ch for ch in entry or "")
            token = tokenizer.convert_tokens_to_ids(new_entry)
            if not isinstance(token, int) or tokenizer.convert_ids_to_tokens(token) != new_entry:
                return NO_TOKEN
            return AnswerMetric(step, token, answer_tokens[step])
        done += len(held)
    return LONGER_LABEL if done == len(base_digits) else NOT_SPELLED


@dataclass
class _Slot:
    """One backward: each listed example's metric (its row, logit index, tokens)."""

    rows: list[int]
    at: list[int]  # padded index of the logits that predict the metric's step
    label_tokens: list[int]
    base_tokens: list[int]


def attribute(
    engine: PatchEngine,
    pairs: list[PromptPair],
    labels: Mapping[str, Mapping[int, int]],
    layers: list[int],
    positions: list[str],
    max_new_tokens: int,
    components: tuple[str, ...] | list[str] = ("resid",),
    answers: list[list[int]] | None = None,
) -> pa.Table:
    """Estimates of every (component, layer, position, head) cell for every example and target
    of `labels` (target -> example id -> label), and one metric row per (example, target), as a
    table in `ATTRIBUTION_SCHEMA` (no run_id and method).

    `answers`: the base answers' tokens per example (default: generated greedily, up to
    `max_new_tokens`); the metric is read teacher-forced on them."""
    for layer in layers:
        if not -1 <= layer < engine.num_layers:
            raise ValueError(f"layer {layer} outside -1..{engine.num_layers - 1}")
    if answers is None:
        answers = [t for t, _ in engine.generate([p.base for p in pairs], max_new_tokens)]
    columns: dict[str, list[object]] = {name: [] for name in ATTRIBUTION_SCHEMA.names}
    metrics: dict[str, list[AnswerMetric | None]] = {}
    for target, by_example in labels.items():
        metrics[target] = []
        for pair, tokens in zip(pairs, answers, strict=True):
            found = answer_metric(engine.tokenizer, tokens, by_example[pair.example_id])
            metrics[target].append(found if isinstance(found, AnswerMetric) else None)
            _append_metric(columns, pair.example_id, target, found)
    # each example's distinct metrics, in order of first use; slot k: the k-th of every example
    distinct: list[list[AnswerMetric]] = [[] for _ in pairs]
    for per_example in metrics.values():
        for row, metric in enumerate(per_example):
            if metric is not None and metric not in distinct[row]:
                distinct[row].append(metric)
    if not any(distinct):
        return pa.table(columns, schema=ATTRIBUTION_SCHEMA)
    # teacher-forced base rows: prompt + the base answer's tokens before the last metric step
    forced = [
        list(pair.base.token_ids) + answers[row][: max((m.step for m in distinct[row]), default=0)]
        for row, pair in enumerate(pairs)
    ]
    record = _recorded_parts(components)
    with torch.no_grad():
        counterfactual = engine._forward([p.counterfactual for p in pairs], False, record)
    ids, attention, pads = left_pad(forced, engine.pad_id, engine.device)
    slots = []
    for k in range(max(len(d) for d in distinct)):
        rows = [row for row, d in enumerate(distinct) if len(d) > k]
        slots.append(
            _Slot(
                rows,
                [pads[r] + len(pairs[r].base.token_ids) + distinct[r][k].step - 1 for r in rows],
                [distinct[r][k].label_token for r in rows],
                [distinct[r][k].base_token for r in rows],
            )
        )
    base_at = {
        name: [_padded(p.base, name, pads[r]) for r, p in enumerate(pairs)] for name in positions
    }
    cf_at = {
        name: [_padded(p.counterfactual, name, counterfactual.pad[r]) for r, p in enumerate(pairs)]
        for name in positions
    }
    with torch.enable_grad():
        activations = _BaseActivations(engine, ids, attention, record)
        cells = []
        for component in components:
            component_layers = layers if component == "resid" else [x for x in layers if x >= 0]
            for layer in component_layers:
                cf_values = _counterfactual_values(counterfactual, component, layer)
                for position_index, name in enumerate(positions):
                    cell = _Cell.at(
                        engine, pairs, activations, cf_values, component, layer,
                        position_index, name, base_at[name], cf_at[name],
                    )  # fmt: skip
                    if cell is not None:
                        cells.append(cell)
        for index, slot in enumerate(slots):  # one backward each; only (R, heads) per cell kept
            gradient = activations.gradient(slot, retain=index < len(slots) - 1)
            for cell in cells:
                cell.add_slot(gradient[cell.key])
            del gradient
    # per target and example: the slot of its metric (-1: none)
    slot_of = {
        target: torch.tensor(
            [distinct[r].index(m) if m is not None else -1 for r, m in enumerate(per_example)]
        )
        for target, per_example in metrics.items()
    }
    example_ids = torch.tensor([p.example_id for p in pairs])
    tables = [pa.table(columns, schema=ATTRIBUTION_SCHEMA)]
    for cell in cells:
        per_slot = torch.stack(cell.per_slot).cpu()  # (slots, R, heads or 1)
        per_slot[:, cell.unchanged] = 0.0  # exact patching answers these with the base answer
        for target in metrics:
            slot_index = slot_of[target][cell.rows]  # (R,)
            has = slot_index >= 0
            if not bool(has.any()):
                continue
            chosen = per_slot[slot_index.clamp(min=0), torch.arange(len(cell.rows))]  # (R, heads)
            tables.append(
                _estimate_table(
                    example_ids[cell.rows][has],
                    target,
                    cell.key[1],
                    cell.position,
                    cell.key[0],
                    chosen[has],
                )
            )
    return pa.concat_tables(tables)


@dataclass
class _Cell:
    """One (component, layer, position) cell of a batch: the rows that have the position, the
    change a patch makes there (R, width), and its estimate per slot (R, heads or 1) each."""

    key: tuple[str, int]  # (component, layer)
    position: int
    rows: torch.Tensor  # (R,) batch rows, on the CPU
    unchanged: torch.Tensor  # (R,) bool: the same prefix in both prompts (estimate 0)
    base_at: torch.Tensor  # (R,) padded index of the position in the teacher-forced base
    change: torch.Tensor  # (R, width) a_cf - a_base, float32
    heads: int  # heads for `heads` (the estimate per head), else 1
    per_slot: list[torch.Tensor]

    @classmethod
    def at(
        cls,
        engine: PatchEngine,
        pairs: list[PromptPair],
        activations: _BaseActivations,
        cf_values: torch.Tensor,  # (batch, T_cf, width)
        component: str,
        layer: int,
        position: int,
        name: str,
        base_at: list[int | None],
        cf_at: list[int | None],
    ) -> _Cell | None:
        rows = [r for r in range(len(pairs)) if base_at[r] is not None and cf_at[r] is not None]
        if not rows:
            return None
        device = engine.device
        index = torch.tensor(rows, device=device)
        b = torch.tensor([base_at[r] for r in rows], device=device)
        c = torch.tensor([cf_at[r] for r in rows], device=device)
        base_values = activations.values[(component, layer)]  # (batch, T, width)
        change = cf_values[index, c].float() - base_values[index, b].detach().float()
        return cls(
            (component, layer),
            position,
            torch.tensor(rows),
            torch.tensor([_unchanged(pairs[r], name) for r in rows]),
            b,
            change,
            engine.num_heads if component == "heads" else 1,
            [],
        )

    def add_slot(self, gradient: torch.Tensor) -> None:
        """gradient: (batch, T, width) of one slot's metric -> this cell's (R, heads) estimates."""
        at = gradient[self.rows.to(gradient.device), self.base_at].float()  # (R, width)
        product = self.change * at
        self.per_slot.append(product.reshape(product.shape[0], self.heads, -1).sum(-1))


def _estimate_table(
    example_ids: torch.Tensor,  # (R,)
    target: str,
    layer: int,
    position: int,
    component: str,
    estimates: torch.Tensor,  # (R, heads or 1)
) -> pa.Table:
    """Estimate rows of one cell (one per head for `heads`) in `ATTRIBUTION_SCHEMA`."""
    rows, heads = estimates.shape
    count = rows * heads
    head_column = (
        pa.array(torch.arange(heads).repeat(rows).numpy(), pa.int16())
        if component == "heads"
        else pa.nulls(count, pa.int16())
    )
    columns = {
        "example_id": pa.array(example_ids.repeat_interleave(heads).numpy(), pa.int64()),
        "target": pa.array([target] * count, pa.string()),
        "layer": pa.array([layer] * count, pa.int16()),
        "position": pa.array([position] * count, pa.int16()),
        "component": pa.array([component] * count, pa.string()),
        "head": head_column,
        "estimate": pa.array(estimates.reshape(-1).numpy(), pa.float32()),
    }
    return pa.table(
        {
            name: columns.get(name, pa.nulls(count, ATTRIBUTION_SCHEMA.field(name).type))
            for name in ATTRIBUTION_SCHEMA.names
        },
        schema=ATTRIBUTION_SCHEMA,
    )


class _BaseActivations:
    """The teacher-forced base forward with every cell's activation kept in the graph.

    values[(component, layer)]: (batch, T, width), width d_model (heads: heads * head_dim).
    """

    def __init__(
        self, engine: PatchEngine, ids: torch.Tensor, attention: torch.Tensor, record: set[str]
    ) -> None:
        stack = engine.stack
        # a leaf, so that no parameter needs a gradient: the graph starts at the embeddings
        embeddings = stack.embed(ids, position_ids_from(attention)).detach().requires_grad_(True)
        recorder = ComponentRecorder(engine.parts, record) if record else None
        with recorder if recorder is not None else nullcontext():
            self.last, hidden = run_layers(
                stack, embeddings, attention, 0, 0, KVCache(engine.num_layers), keep_hidden=True
            )
        self.stack = stack
        self.values: dict[tuple[str, int], torch.Tensor] = {}
        for layer, tensor in enumerate([embeddings, *hidden]):
            self.values[("resid", layer - 1)] = tensor
        if recorder is not None:
            for kind, recorded in (
                ("attn", recorder.attn),
                ("mlp", recorder.mlp),
                ("heads", recorder.heads),
            ):
                for layer, part in enumerate(recorded):
                    if part is not None:
                        self.values[(kind, layer)] = part

    def gradient(self, slot: _Slot, retain: bool) -> dict[tuple[str, int], torch.Tensor]:
        """d(sum of the slot's examples' metrics)/d(every kept activation), each (batch, T, width);
        `retain`: keep the graph for another slot's backward."""
        keys = list(self.values)
        inputs = [self.values[k] for k in keys]
        rows = torch.tensor(slot.rows, device=self.last.device)
        at = torch.tensor(slot.at, device=self.last.device)
        logits = self.stack.logits(self.last[rows, at][:, None])[:, 0].float()  # (n, vocab)
        pick = torch.arange(len(slot.rows), device=logits.device)
        label = torch.tensor(slot.label_tokens, device=logits.device)
        base = torch.tensor(slot.base_tokens, device=logits.device)
        metric = (logits[pick, label] - logits[pick, base]).sum()
        grads = torch.autograd.grad(metric, inputs, retain_graph=retain, allow_unused=True)
        return {
            k: g if g is not None else torch.zeros_like(v)
            for k, v, g in zip(keys, inputs, grads, strict=True)
        }


def _counterfactual_values(run: _Run, component: str, layer: int) -> torch.Tensor:
    """The counterfactual run's (batch, T, width) activation of a component at a layer."""
    if component == "resid":
        return run.hidden[layer + 1]
    assert run.parts is not None
    recorded: torch.Tensor | None = getattr(run.parts, component)[layer]
    assert recorded is not None
    return recorded


def _padded(layout: PromptLayout, name: str, pad: int) -> int | None:
    index = layout.index(name)
    return None if index is None else pad + index


def _unchanged(pair: PromptPair, name: str) -> bool:
    """Same prefix up to the position in both prompts: patching there changes nothing."""
    b, c = pair.base.index(name), pair.counterfactual.index(name)
    assert b is not None and c is not None
    return b == c and pair.base.token_ids[: b + 1] == pair.counterfactual.token_ids[: c + 1]


def _append_metric(
    columns: dict[str, list[object]], example_id: int, target: str, found: AnswerMetric | str
) -> None:
    metric = found if isinstance(found, AnswerMetric) else None
    for name, value in (
        ("example_id", example_id),
        ("target", target),
        ("layer", None),
        ("position", None),
        ("component", None),
        ("head", None),
        ("estimate", None),
        ("step", metric.step if metric else None),
        ("label_token", metric.label_token if metric else None),
        ("base_token", metric.base_token if metric else None),
        ("no_metric", None if metric else found),
    ):
        columns[name].append(value)
