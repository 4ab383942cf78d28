"""The naive reference: one fresh counterfactual forward and one patched `generate` per cell.

This is what activation-patching utilities built on hooks do (TransformerLens' patching loop,
pyvene with dynamic indices): correct and slow. Tests check the engine against it on every cell,
and `benchmarks/patch_sweep.py` measures how much faster the engine is.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from addpatch.engine.architecture import find_decoder
from addpatch.engine.patching import TOP_K, PromptPair


def _replace_hidden(output: object, new_hidden: torch.Tensor) -> object:
    if isinstance(output, tuple):
        return (new_hidden, *output[1:])
    return new_hidden


def _hidden_of(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index,return-value]


@torch.no_grad()
def naive_patch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pair: PromptPair,
    layer: int,
    name: str,
    max_new_tokens: int,
) -> tuple[list[int], list[int], list[float]] | None:
    """Patched greedy answer tokens (cut at EOS) and first-step top-k for one example and cell."""
    stack = find_decoder(model)
    b, c = pair.base.index(name), pair.counterfactual.index(name)
    if b is None or c is None:
        return None
    device = next(model.parameters()).device
    captured: dict[str, torch.Tensor] = {}

    # layer -1 is the stream entering layer 0; layer L >= 0 is layer L's output
    def capture_pre(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        captured["vector"] = hidden[0, c].clone()

    def capture_post(module, args, output):
        captured["vector"] = _hidden_of(output)[0, c].clone()

    def patch_pre(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] > 1:  # the prompt pass only; generated tokens are not patched
            hidden = hidden.clone()
            hidden[0, b] = captured["vector"]
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return None

    def patch_post(module, args, output):
        hidden = _hidden_of(output)
        if hidden.shape[1] > 1:
            hidden = hidden.clone()
            hidden[0, b] = captured["vector"]
            return _replace_hidden(output, hidden)
        return None

    module = stack.layers[0] if layer == -1 else stack.layers[layer]
    cf_ids = torch.tensor([pair.counterfactual.token_ids], device=device)
    if layer == -1:
        handle = module.register_forward_pre_hook(capture_pre, with_kwargs=True)
    else:
        handle = module.register_forward_hook(capture_post)
    try:
        model(input_ids=cf_ids)
    finally:
        handle.remove()

    base_ids = torch.tensor([pair.base.token_ids], device=device)
    if layer == -1:
        handle = module.register_forward_pre_hook(patch_pre, with_kwargs=True)
    else:
        handle = module.register_forward_hook(patch_post)
    try:
        out = model.generate(
            input_ids=base_ids,
            attention_mask=torch.ones_like(base_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id,
        )
    finally:
        handle.remove()
    tokens = out.sequences[0, base_ids.shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    if eos is not None and eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    logprobs = torch.log_softmax(out.scores[0][0].float(), dim=-1)
    top = logprobs.topk(TOP_K)
    return tokens, top.indices.tolist(), top.values.tolist()


@torch.no_grad()
def naive_patch_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PromptPair],
    layer: int,
    name: str,
    max_new_tokens: int,
) -> list[list[int]]:
    """One cell for a whole batch, as TransformerLens' patching loop does it: a counterfactual
    forward over the batch, then a hooked `generate` over the batch (left-padded)."""
    stack = find_decoder(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id

    def left_pad(rows: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        pads = []
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
            pads.append(width - len(r))
        return ids.to(device), mask.to(device), pads

    cf_ids, cf_mask, cf_pads = left_pad([p.counterfactual.token_ids for p in pairs])
    base_ids, base_mask, base_pads = left_pad([p.base.token_ids for p in pairs])
    rows = torch.arange(len(pairs), device=device)
    cf_at = torch.tensor([cf_pads[i] + p.counterfactual.aliases[name] for i, p in enumerate(pairs)])
    base_at = torch.tensor([base_pads[i] + p.base.aliases[name] for i, p in enumerate(pairs)])
    captured: dict[str, torch.Tensor] = {}

    def capture(hidden: torch.Tensor) -> None:
        captured["vectors"] = hidden[rows, cf_at].clone()  # (batch, d_model)

    def patch(hidden: torch.Tensor) -> torch.Tensor | None:
        if hidden.shape[1] == 1:  # generated tokens are not patched
            return None
        hidden = hidden.clone()
        hidden[rows, base_at] = captured["vectors"]
        return hidden

    module = stack.layers[0] if layer == -1 else stack.layers[layer]

    def pre_hook(fn):
        def hook(mod, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            new = fn(hidden)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(hook, with_kwargs=True)

    def post_hook(fn):
        def hook(mod, args, output):
            new = fn(_hidden_of(output))
            return None if new is None else _replace_hidden(output, new)

        return module.register_forward_hook(hook)

    register = pre_hook if layer == -1 else post_hook
    handle = register(capture)
    try:
        model(input_ids=cf_ids, attention_mask=cf_mask)
    finally:
        handle.remove()
    handle = register(patch)
    try:
        out = model.generate(
            input_ids=base_ids,
            attention_mask=base_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    finally:
        handle.remove()
    results = []
    eos = tokenizer.eos_token_id
    for row in out[:, base_ids.shape[1] :].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        results.append(row)
    return results
