"""Train a DAS subspace at one cell (layer x unit, residual stream) with the model frozen.

The model is frozen, so everything below the cell's layer, and every position before the
unit's first token, is the same at every step. Each batch is laid out once (base prompt and
the label's answer tokens, teacher-forced; the counterfactual prompt) and its frozen part
computed once: the stream after layer L from the unit's first token on, the keys and values
of the earlier tokens at the layers above, and the counterfactual's vectors at the unit. A
training step then runs only layers L+1.. over only those tokens, with the intervention
h' = h + Rᵀ(R h_cf − R h) at the unit's positions, and backpropagates into R.

`train_plain` is the loop pyvene and causalab run (both prompts through the whole model at
every step, the intervention in a hook): the reference the fast loop is tested and
benchmarked against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from addpatch.das.examples import DasExample, epoch_order, fixed_batches, unit_indices
from addpatch.das.subspace import TrainableSubspace, interchange
from addpatch.engine.architecture import DecoderStack, find_decoder
from addpatch.engine.forward import additive_mask, left_pad, position_ids_from
from addpatch.engine.kv_cache import KVCache
from addpatch.engine.naive import hook_point, register_hook

IGNORE = -100  # label id cross-entropy skips (right padding of the answers)


@dataclass(frozen=True)
class TrainSettings:
    """How one subspace is trained (defaults measured on the shipped adders: docs/das.md)."""

    k: int
    learning_rate: float = 1e-2
    epochs: int = 4
    batch_size: int = 32
    seed: int = 0

    def record(self) -> dict[str, Any]:
        return {
            "optimizer": "Adam",
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "schedule": "constant",
            "batches": "shuffled once into fixed batches; batch order reshuffled each epoch",
        }


@dataclass
class TrainedSubspace:
    basis: torch.Tensor  # (k, d) float32, orthonormal rows
    losses: list[float] = field(default_factory=list)  # per step
    final_loss: float = 0.0  # mean loss of the last epoch
    train_iia: float = 0.0  # teacher-forced exact match of the label's tokens, after training


@dataclass
class _Sequences:
    """A batch laid out for teacher forcing: [left pads][prompt][answer][right pads]."""

    ids: torch.Tensor  # (B, P + A)
    attention: torch.Tensor  # (B, P + A)
    prompt_end: int  # P: the first answer column
    targets: torch.Tensor  # (B, A) label ids, IGNORE past each answer's end
    base_at: torch.Tensor  # (B, n) padded column of each unit position in the base
    cf_ids: torch.Tensor  # (B, Tc)
    cf_attention: torch.Tensor  # (B, Tc)
    cf_at: torch.Tensor  # (B, n)


def _lay_out(batch: list[DasExample], unit: str, pad_id: int, device: torch.device) -> _Sequences:
    prompts = [e.pair.base.token_ids for e in batch]
    ids, attention, pads = left_pad(prompts, pad_id, device)
    width = max(len(e.label_ids) for e in batch)
    answers = torch.full((len(batch), width), pad_id, dtype=torch.long, device=device)
    targets = torch.full((len(batch), width), IGNORE, dtype=torch.long, device=device)
    answer_mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
    for row, example in enumerate(batch):
        n = len(example.label_ids)
        label = torch.tensor(example.label_ids, device=device)
        answers[row, :n], targets[row, :n], answer_mask[row, :n] = label, label, 1
    cf_ids, cf_attention, cf_pads = left_pad(
        [e.pair.counterfactual.token_ids for e in batch], pad_id, device
    )
    base_at = [
        [pads[row] + i for i in unit_indices(e.pair.base, unit)] for row, e in enumerate(batch)
    ]
    cf_at = [
        [cf_pads[row] + i for i in unit_indices(e.pair.counterfactual, unit)]
        for row, e in enumerate(batch)
    ]
    return _Sequences(
        ids=torch.cat([ids, answers], dim=1),
        attention=torch.cat([attention, answer_mask], dim=1),
        prompt_end=ids.shape[1],
        targets=targets,
        base_at=torch.tensor(base_at, device=device),
        cf_ids=cf_ids,
        cf_attention=cf_attention,
        cf_at=torch.tensor(cf_at, device=device),
    )


@dataclass
class _FrozenPart:
    """What no training step changes, for one batch and cell."""

    sequences: _Sequences
    start: int  # first column rerun: the unit's earliest position over the batch
    stream: torch.Tensor  # (B, q, d) layer L's output from `start` on
    at: torch.Tensor  # (B, n) unit columns counted from `start`
    source: torch.Tensor  # (B, n, d) the counterfactual's vectors at the unit
    prefix: KVCache  # layers above L: keys/values of the columns before `start`
    positions: torch.Tensor  # (B, q)
    rotary: list[Any]  # per layer
    masks: dict[int | None, torch.Tensor]


def _run_span(
    stack: DecoderStack,
    hidden: torch.Tensor,  # (B, q, d) entering layer `first`
    attention: torch.Tensor,  # (B, q): these columns only, from column 0
    first: int,
    stop: int,
    cache: KVCache,
) -> torch.Tensor:
    """Layers first..stop-1 over columns 0..q-1 (no earlier columns), writing their keys and
    values into `cache`; the stream after layer stop-1 (B, q, d)."""
    positions = position_ids_from(attention)
    rotary = stack.position_embeddings(hidden, positions)
    masks: dict[int | None, torch.Tensor] = {}
    for index in range(first, stop):
        window = stack.sliding_windows[index]
        if window not in masks:
            masks[window] = additive_mask(attention, 0, window, hidden.dtype)
        hidden = stack.run_layer(index, hidden, masks[window], positions, rotary[index], cache)
    return hidden


@torch.no_grad()
def _freeze(stack: DecoderStack, sequences: _Sequences, layer: int) -> _FrozenPart:
    """Only what the steps need: layers up to L over every column of the base (and of the
    counterfactual, for its unit vectors), and the layers above L over the columns before the
    unit only, for their keys and values."""
    attention = sequences.attention
    hidden = stack.embed(sequences.ids, position_ids_from(attention))
    hidden = _run_span(stack, hidden, attention, 0, layer + 1, KVCache(stack.num_layers))
    cf_hidden = stack.embed(sequences.cf_ids, position_ids_from(sequences.cf_attention))
    cf_hidden = _run_span(
        stack, cf_hidden, sequences.cf_attention, 0, layer + 1, KVCache(stack.num_layers)
    )
    start = int(sequences.base_at.min())
    rows = torch.arange(sequences.ids.shape[0], device=sequences.ids.device)[:, None]
    source = cf_hidden[rows, sequences.cf_at]  # (B, n, d)
    prefix = KVCache(stack.num_layers)
    if start > 0:  # the columns before the unit, through the layers above L
        _run_span(
            stack, hidden[:, :start], attention[:, :start], layer + 1, stack.num_layers, prefix
        )
    stream = hidden[:, start:]
    positions = position_ids_from(sequences.attention)[:, start:]
    masks: dict[int | None, torch.Tensor] = {}
    for index in range(layer + 1, stack.num_layers):
        window = stack.sliding_windows[index]
        if window not in masks:
            masks[window] = additive_mask(sequences.attention, start, window, stream.dtype)
    return _FrozenPart(
        sequences,
        start,
        stream,
        sequences.base_at - start,
        source,
        prefix,
        positions,
        stack.position_embeddings(stream, positions),
        masks,
    )


def _answer_logits_fast(
    stack: DecoderStack, frozen: _FrozenPart, layer: int, basis: torch.Tensor
) -> torch.Tensor:
    """(B, A, vocab) logits predicting each answer token, with the intervention at the unit."""
    rows = torch.arange(frozen.stream.shape[0], device=frozen.stream.device)[:, None]
    stream = frozen.stream.clone()
    base = stream[rows, frozen.at]  # (B, n, d)
    stream[rows, frozen.at] = interchange(base, frozen.source, basis)
    cache = frozen.prefix.copy()
    for index in range(layer + 1, stack.num_layers):
        stream = stack.run_layer(
            index,
            stream,
            frozen.masks[stack.sliding_windows[index]],
            frozen.positions,
            frozen.rotary[index],
            cache,
        )
    first = frozen.sequences.prompt_end - 1 - frozen.start  # predicts the first answer token
    width = frozen.sequences.targets.shape[1]
    return stack.logits(stream[:, first : first + width]).float()


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch's label tokens (B, A, vocab), (B, A)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def _exact(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) whether every label token is the argmax: greedy decoding would write the label."""
    hit = (logits.argmax(-1) == targets) | (targets == IGNORE)
    return hit.all(dim=1)


def _train(
    examples: list[DasExample],
    width: int,
    settings: TrainSettings,
    prepare: Callable[[list[DasExample]], Any],
    answer_logits: Callable[[Any, torch.Tensor], torch.Tensor],
) -> TrainedSubspace:
    """The loop both trainers share: seeded subspace and batches, Adam, constant rate."""
    subspace = TrainableSubspace(width, settings.k, settings.seed)
    optimizer = torch.optim.Adam(subspace.parameters(), lr=settings.learning_rate)
    batches = fixed_batches(examples, settings.batch_size, settings.seed)
    prepared = [prepare(batch) for batch in batches]
    losses: list[float] = []
    epoch_losses: list[float] = []
    for epoch in range(settings.epochs):
        epoch_losses = []
        for index in epoch_order(len(batches), settings.seed, epoch):
            logits = answer_logits(prepared[index], subspace.basis())
            loss = _loss(logits, _targets(prepared[index]))
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
            epoch_losses.append(float(loss.detach()))
    with torch.no_grad():
        basis = subspace.basis().detach().clone()
        hits = sum(int(_exact(answer_logits(p, basis), _targets(p)).sum()) for p in prepared)
    return TrainedSubspace(
        basis,
        losses,
        sum(epoch_losses) / len(epoch_losses) if epoch_losses else 0.0,
        hits / len(examples),
    )


def _targets(prepared: Any) -> torch.Tensor:
    sequences = prepared.sequences if isinstance(prepared, _FrozenPart) else prepared
    return cast(torch.Tensor, sequences.targets)


def _frozen(model: PreTrainedModel) -> tuple[DecoderStack, torch.device, int]:
    """The model frozen (eval, no gradients); its decoder stack, device and stream width."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    device = next(model.parameters()).device
    return find_decoder(model), device, int(model.config.get_text_config().hidden_size)


def train_subspace(
    model: PreTrainedModel,
    pad_id: int,
    examples: list[DasExample],
    layer: int,
    unit: str,
    settings: TrainSettings,
) -> TrainedSubspace:
    """Train R at (layer, unit) on the residual stream, running only what R can change."""
    stack, device, width = _frozen(model)

    def prepare(batch: list[DasExample]) -> _FrozenPart:
        return _freeze(stack, _lay_out(batch, unit, pad_id, device), layer)

    def logits(frozen: _FrozenPart, basis: torch.Tensor) -> torch.Tensor:
        return _answer_logits_fast(stack, frozen, layer, basis)

    return _train(examples, width, settings, prepare, logits)


# -- the plain loop: both prompts through the whole model at every step ------------------------
def _hook_stream(
    stack: DecoderStack, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]
) -> torch.utils.hooks.RemovableHandle:
    """Pass the residual stream after `layer` (-1: the embeddings, the first layer's input) to
    `fn`, putting what it returns in its place (the naive loop's hooks)."""
    return register_hook(*hook_point(stack, layer, "resid"), fn)


def _plain_answer_logits(
    model: PreTrainedModel,
    stack: DecoderStack,
    layer: int,
    sequences: _Sequences,
    basis: torch.Tensor,
) -> torch.Tensor:
    captured: dict[str, torch.Tensor] = {}

    def keep(hidden: torch.Tensor) -> None:
        captured["cf"] = hidden.detach()
        return None

    rows = torch.arange(sequences.ids.shape[0], device=sequences.ids.device)[:, None]
    handle = _hook_stream(stack, layer, keep)
    try:
        with torch.no_grad():
            model(
                input_ids=sequences.cf_ids,
                attention_mask=sequences.cf_attention,
                position_ids=position_ids_from(sequences.cf_attention),
            )
    finally:
        handle.remove()
    source = captured["cf"][rows, sequences.cf_at]  # (B, n, d)

    def patch(hidden: torch.Tensor) -> torch.Tensor:
        patched = hidden.clone()
        patched[rows, sequences.base_at] = interchange(
            hidden[rows, sequences.base_at], source, basis
        )
        return patched

    handle = _hook_stream(stack, layer, patch)
    try:
        logits = model(
            input_ids=sequences.ids,
            attention_mask=sequences.attention,
            position_ids=position_ids_from(sequences.attention),
        ).logits
    finally:
        handle.remove()
    first = sequences.prompt_end - 1
    return cast(torch.Tensor, logits[:, first : first + sequences.targets.shape[1]].float())


def train_plain(
    model: PreTrainedModel,
    pad_id: int,
    examples: list[DasExample],
    layer: int,
    unit: str,
    settings: TrainSettings,
) -> TrainedSubspace:
    """The reference loop: the same batches, steps and subspace as `train_subspace`, with both
    prompts run through the whole model at every step (as pyvene and causalab train)."""
    stack, device, width = _frozen(model)

    def prepare(batch: list[DasExample]) -> _Sequences:
        return _lay_out(batch, unit, pad_id, device)

    def logits(sequences: _Sequences, basis: torch.Tensor) -> torch.Tensor:
        return _plain_answer_logits(model, stack, layer, sequences, basis)

    return _train(examples, width, settings, prepare, logits)
