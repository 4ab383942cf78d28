"""The naive reference: the counterfactual run's activations, then one patched `generate` per cell.

This is what activation-patching utilities built on hooks do (TransformerLens' patching loop
takes a cache of the counterfactual run and runs one hooked forward per cell; pyvene with
dynamic indices): correct and slow. With a `CounterfactualCache` the counterfactual run is one
forward per batch, kept for every cell (as TransformerLens' `run_with_cache`); without one, each
cell runs its own. Components are patched the hooks' way too: the module whose output is the
component (attention, MLP, their post-norms) or, for a head, the input of the attention's output
projection, replaced during the prompt's forward pass. Tests check the engine against it on
every cell, and `benchmarks/patch_sweep.py` measures how much faster the engine is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.utils import GenerateDecoderOnlyOutput

from addpatch.engine.architecture import DecoderStack, find_decoder
from addpatch.engine.forward import left_pad
from addpatch.engine.patching import TOP_K, PromptPair
from addpatch.engine.positions import PromptLayout


class NaiveAnswer(NamedTuple):
    """One example's patched answer: tokens cut at EOS, the first step's top-k, and the top-k of
    the first step whose token's text holds a digit (step None when none does)."""

    tokens: list[int]
    top_ids: list[int]
    top_logprobs: list[float]
    digit_step: int | None
    digit_top_ids: list[int] | None
    digit_top_logprobs: list[float] | None


def _replace_hidden(output: object, new_hidden: torch.Tensor) -> object:
    if isinstance(output, tuple):
        return (new_hidden, *output[1:])
    return new_hidden


def _hidden_of(output: object) -> torch.Tensor:
    return cast(torch.Tensor, output[0] if isinstance(output, tuple) else output)


def naive_patch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pair: PromptPair,
    layer: int,
    name: str,
    max_new_tokens: int,
    component: str = "resid",
    head: int | None = None,
) -> NaiveAnswer | None:
    """Patched greedy answer of one example and cell (`name` a position or a unit like
    `a1.d0+last`); None when the prompt has no such position."""
    if pair.base.indices(name) is None or pair.counterfactual.indices(name) is None:
        return None
    [answer] = naive_patch_batch(
        model, tokenizer, [pair], layer, name, max_new_tokens, component, head
    )
    return answer


def _attention_module(layer: nn.Module) -> nn.Module:
    for name in ("self_attn", "attn", "attention"):
        if hasattr(layer, name):
            return cast(nn.Module, getattr(layer, name))
    raise ValueError(f"no attention module in {type(layer).__name__}")


def _hooked_module(layer: nn.Module, component: str) -> tuple[nn.Module, bool]:
    """The module to hook for a component, and whether the hook reads its input (heads)."""
    post_norm = hasattr(layer, "post_feedforward_layernorm")  # Gemma-2, OLMo-2
    if component == "attn":
        attention = layer.post_attention_layernorm if post_norm else _attention_module(layer)
        return cast(nn.Module, attention), False
    if component == "mlp":
        return cast(nn.Module, layer.post_feedforward_layernorm if post_norm else layer.mlp), False
    if component == "heads":
        attention = _attention_module(layer)
        for name in ("o_proj", "c_proj", "dense"):
            if hasattr(attention, name):
                return cast(nn.Module, getattr(attention, name)), True
    raise ValueError(f"no {component} in {type(layer).__name__}")


def hook_point(stack: DecoderStack, layer: int, component: str) -> tuple[nn.Module, bool]:
    """The module hooked for (layer, component), and whether the hook reads its input: the
    residual stream after layer L is layer L's output, the embeddings (-1) the first layer's
    input."""
    if component == "resid":
        return (stack.layers[0], True) if layer == -1 else (stack.layers[layer], False)
    return _hooked_module(stack.layers[layer], component)


def register_hook(
    module: nn.Module, reads_input: bool, fn: Callable[[torch.Tensor], torch.Tensor | None]
) -> RemovableHandle:
    """A hook on `module` that passes the hidden states (its input or output) to `fn` and, when
    `fn` returns a tensor, puts that in their place."""
    if reads_input:

        def pre_hook(
            mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            hidden = args[0] if args else kwargs["hidden_states"]
            new = fn(hidden)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(mod: nn.Module, args: tuple[Any, ...], output: object) -> object:
        new = fn(_hidden_of(output))
        return None if new is None else _replace_hidden(output, new)

    return module.register_forward_hook(post_hook)


@torch.no_grad()
def counterfactual_run(
    model: PreTrainedModel, pad: int, pairs: list[PromptPair], layers: list[int], component: str
) -> dict[int, torch.Tensor]:
    """One forward of the counterfactual prompts (left-padded), keeping the component's
    activation at each of `layers`: {layer: (batch, padded seq, width)}."""
    stack = find_decoder(model)
    device = next(model.parameters()).device
    cf_ids, cf_mask, _ = left_pad([p.counterfactual.token_ids for p in pairs], pad, device)
    captured: dict[int, torch.Tensor] = {}

    def keeper(layer: int) -> Callable[[torch.Tensor], None]:
        def keep(hidden: torch.Tensor) -> None:
            captured[layer] = hidden.clone()

        return keep

    handles = [
        register_hook(*hook_point(stack, layer, component), keeper(layer)) for layer in layers
    ]
    try:
        # positions count from each prompt's first real token, as `generate` counts them for
        # the base run (absolute position embeddings, GPT-2's, see the padding otherwise)
        cf_positions = (cf_mask.long().cumsum(-1) - 1).clamp(min=0)
        model(input_ids=cf_ids, attention_mask=cf_mask, position_ids=cf_positions)
    finally:
        for handle in handles:
            handle.remove()
    return captured


class CounterfactualCache:
    """The counterfactual run of each batch, once per component, every layer kept: what
    TransformerLens' patching utilities take (`run_with_cache`), reused for every cell."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, tuple[tuple[int, ...], ...]], dict[int, torch.Tensor]] = {}

    def activations(
        self, model: PreTrainedModel, pad: int, pairs: list[PromptPair], component: str
    ) -> dict[int, torch.Tensor]:
        """{layer: (batch, padded seq, width)} of the batch's counterfactual run."""
        key = (component, tuple(tuple(p.counterfactual.token_ids) for p in pairs))
        if key not in self._runs:
            first = -1 if component == "resid" else 0
            layers = list(range(first, len(find_decoder(model).layers)))
            self._runs[key] = counterfactual_run(model, pad, pairs, layers, component)
        return self._runs[key]


@torch.no_grad()
def naive_patch_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PromptPair],
    layer: int,
    name: str,
    max_new_tokens: int,
    component: str = "resid",
    head: int | None = None,
    cache: CounterfactualCache | None = None,
) -> list[NaiveAnswer]:
    """One cell for a whole batch, as TransformerLens' patching loop does it: the batch's
    counterfactual activation (from `cache`, or a counterfactual forward of its own), then a
    hooked `generate` over the batch (left-padded).

    A unit (`a1.d0+last`) is patched at all its positions by the one hook, in the same forward.
    Per example: answer tokens cut at EOS, the top-k ids and log-probs of the first step, and
    those of the first step whose generated token's text holds a digit.
    """
    stack = find_decoder(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    _, _, cf_pads = left_pad([p.counterfactual.token_ids for p in pairs], pad, device)
    base_ids, base_mask, base_pads = left_pad([p.base.token_ids for p in pairs], pad, device)
    rows = torch.arange(len(pairs), device=device)[:, None]  # (batch, 1)

    def padded(layout: PromptLayout, offset: int) -> list[int]:
        indices = layout.indices(name)
        assert indices is not None, f"{name} is not in {layout.tokens}"
        return [offset + index for index in indices]

    # (batch, parts): every position of the unit (one for a single position)
    cf_at = torch.tensor(
        [padded(p.counterfactual, cf_pads[i]) for i, p in enumerate(pairs)], device=device
    )
    base_at = torch.tensor(
        [padded(p.base, base_pads[i]) for i, p in enumerate(pairs)], device=device
    )
    if cache is None:
        hidden = counterfactual_run(model, pad, pairs, [layer], component)[layer]
    else:
        hidden = cache.activations(model, pad, pairs, component)[layer]

    def columns(width: int) -> slice:
        """The part of the vector patched: all of it, or one head's slice (every head: None)."""
        if component != "heads" or head is None:
            return slice(None)
        head_dim = width // model.config.get_text_config().num_attention_heads
        return slice(head * head_dim, (head + 1) * head_dim)

    vectors = hidden[rows, cf_at][..., columns(hidden.shape[-1])]  # (batch, parts, width)

    def patch(hidden: torch.Tensor) -> torch.Tensor | None:
        if hidden.shape[1] == 1:  # generated tokens are not patched
            return None
        hidden = hidden.clone()
        patched = hidden[rows, base_at]
        patched[..., columns(hidden.shape[-1])] = vectors
        hidden[rows, base_at] = patched
        return hidden

    handle = register_hook(*hook_point(stack, layer, component), patch)
    try:
        # transformers types generate's `self` as a private protocol that no model class meets
        out = cast(GenerationMixin, model).generate(  # type: ignore[misc]
            input_ids=base_ids,
            attention_mask=base_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=pad,
        )
    finally:
        handle.remove()
    assert isinstance(out, GenerateDecoderOnlyOutput) and out.scores is not None
    tops = [torch.log_softmax(step.float(), dim=-1).topk(TOP_K, dim=-1) for step in out.scores]
    results = []
    eos = tokenizer.eos_token_id
    generated = out.sequences[:, base_ids.shape[1] :].tolist()
    for index, row in enumerate(generated):
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        digit_step = next(
            (
                s
                for s, tok in enumerate(row)
                if any(ch in "0123456789" for ch in tokenizer.decode([tok]))
            ),
            None,
        )
        results.append(
            NaiveAnswer(
                row,
                tops[0].indices[index].tolist(),
                tops[0].values[index].tolist(),
                digit_step,
                None if digit_step is None else tops[digit_step].indices[index].tolist(),
                None if digit_step is None else tops[digit_step].values[index].tolist(),
            )
        )
    return results
