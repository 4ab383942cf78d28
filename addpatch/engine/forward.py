"""Run a decoder stack layer by layer over part of a sequence, with a KV cache.

Sequences are left-padded. `attention` (batch, total) marks real tokens (1) and pads (0) over
every position seen so far, cached and new. A call processes the query positions
`start .. start + q - 1` of that padded sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from addpatch.engine.architecture import DecoderStack
from addpatch.engine.kv_cache import KVCache


def left_pad(
    rows: list[tuple[int, ...]] | list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Token rows -> ids (batch, T) and attention (batch, T) padded on the left, pads per row."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    pads = []
    for index, row in enumerate(rows):
        pad = width - len(row)
        ids[index, pad:] = torch.tensor(row)
        attention[index, pad:] = 1
        pads.append(pad)
    return ids.to(device), attention.to(device), pads


def position_ids_from(attention: torch.Tensor) -> torch.Tensor:
    """(batch, total) 0/1 -> (batch, total) positions counted over real tokens only."""
    return (attention.long().cumsum(-1) - 1).clamp(min=0)


def additive_mask(
    attention: torch.Tensor,  # (batch, kv) 0/1 over all positions up to the last query
    start: int,
    window: int | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(batch, 1, q, kv) mask: 0 where a query may attend, the dtype's minimum elsewhere."""
    kv = attention.shape[-1]
    device = attention.device
    query_index = torch.arange(start, kv, device=device)[:, None]  # (q, 1)
    key_index = torch.arange(kv, device=device)[None, :]  # (1, kv)
    allowed = key_index <= query_index
    if window is not None:
        allowed = allowed & (query_index - key_index < window)
    allowed = allowed[None, None] & attention.bool()[:, None, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def run_layers(
    stack: DecoderStack,
    hidden: torch.Tensor,  # (batch, q, d_model): residual stream entering layer `first`
    attention: torch.Tensor,  # (batch, start + q)
    start: int,
    first: int,
    cache: KVCache,
    keep_hidden: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run layers first..N-1 on query positions start..; returns the last layer's output.

    With keep_hidden, also returns each layer's output (batch, q, d_model) from `first` on.
    """
    positions = position_ids_from(attention)[:, start:]
    rotary = stack.position_embeddings(hidden, positions)  # per layer
    masks: dict[int | None, torch.Tensor] = {}
    outputs: list[torch.Tensor] = []
    for index in range(first, stack.num_layers):
        window = stack.sliding_windows[index]
        if window not in masks:
            masks[window] = additive_mask(attention, start, window, hidden.dtype)
        hidden = stack.run_layer(index, hidden, masks[window], positions, rotary[index], cache)
        if keep_hidden:
            outputs.append(hidden)
    return hidden, outputs


def greedy_continue(
    stack: DecoderStack,
    first_token: torch.Tensor,  # (batch,) the first generated token
    attention: torch.Tensor,  # (batch, prompt_len)
    cache: KVCache,  # holds every layer's keys/values for the whole prompt
    steps: int,
    eos_id: int | None = None,
    on_logits: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Generate `steps` more tokens greedily after `first_token`: returns (batch, 1 + steps).

    Once every row has produced `eos_id`, the remaining steps are filled with it unrun.
    `on_logits` receives the logits (batch, vocab) of every step that runs, in order.
    """
    tokens = [first_token]
    for step in range(steps):
        if eos_id is not None and bool((torch.stack(tokens, 1) == eos_id).any(1).all()):
            tokens += [torch.full_like(first_token, eos_id)] * (steps - step)
            break
        attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=-1)
        start = attention.shape[-1] - 1
        positions = position_ids_from(attention)[:, start:]
        hidden = stack.embed(tokens[-1][:, None], positions)
        hidden, _ = run_layers(stack, hidden, attention, start, 0, cache)
        logits = stack.logits(hidden[:, -1:])[:, -1]  # (batch, vocab)
        if on_logits is not None:
            on_logits(logits)
        tokens.append(logits.argmax(-1))
    return torch.stack(tokens, dim=1)
