"""The naive reference: one fresh counterfactual forward and one patched `generate` per cell.

This is what activation-patching utilities built on hooks do (TransformerLens' patching loop,
pyvene with dynamic indices): correct and slow. Components are patched the hooks' way too: the
module whose output is the component (attention, MLP, their post-norms) or, for a head, the
input of the attention's output projection, replaced during the prompt's forward pass. Tests check the engine against it on every cell,
and `benchmarks/patch_sweep.py` measures how much faster the engine is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.utils import GenerateDecoderOnlyOutput

from addpatch.engine.architecture import find_decoder
from addpatch.engine.forward import left_pad
from addpatch.engine.patching import TOP_K, PromptPair


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
    """Patched greedy answer of one example and cell; None when the prompt has no such
    position."""
    if pair.base.index(name) is None or pair.counterfactual.index(name) is None:
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
) -> list[NaiveAnswer]:
    """One cell for a whole batch, as TransformerLens' patching loop does it: a counterfactual
    forward over the batch, then a hooked `generate` over the batch (left-padded).

    Per example: answer tokens cut at EOS, the top-k ids and log-probs of the first step, and
    those of the first step whose generated token's text holds a digit.
    """
    stack = find_decoder(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id

    cf_ids, cf_mask, cf_pads = left_pad([p.counterfactual.token_ids for p in pairs], pad, device)
    base_ids, base_mask, base_pads = left_pad([p.base.token_ids for p in pairs], pad, device)
    rows = torch.arange(len(pairs), device=device)
    cf_at = torch.tensor([cf_pads[i] + p.counterfactual.aliases[name] for i, p in enumerate(pairs)])
    base_at = torch.tensor([base_pads[i] + p.base.aliases[name] for i, p in enumerate(pairs)])
    captured: dict[str, torch.Tensor] = {}

    def columns(hidden: torch.Tensor) -> slice:
        """The part of the vector patched: all of it, or one head's slice (every head: None)."""
        if component != "heads" or head is None:
            return slice(None)
        head_dim = hidden.shape[-1] // model.config.get_text_config().num_attention_heads
        return slice(head * head_dim, (head + 1) * head_dim)

    def capture(hidden: torch.Tensor) -> None:
        captured["vectors"] = hidden[rows, cf_at][:, columns(hidden)].clone()  # (batch, width)

    def patch(hidden: torch.Tensor) -> torch.Tensor | None:
        if hidden.shape[1] == 1:  # generated tokens are not patched
            return None
        hidden = hidden.clone()
        patched = hidden[rows, base_at]
        patched[:, columns(hidden)] = captured["vectors"]
        hidden[rows, base_at] = patched
        return hidden

    if component == "resid":
        module, reads_input = (stack.layers[0] if layer == -1 else stack.layers[layer]), layer == -1
    else:
        module, reads_input = _hooked_module(stack.layers[layer], component)

    def pre_hook(fn: Callable[[torch.Tensor], torch.Tensor | None]) -> RemovableHandle:
        def hook(
            mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            hidden = args[0] if args else kwargs["hidden_states"]
            new = fn(hidden)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(hook, with_kwargs=True)

    def post_hook(fn: Callable[[torch.Tensor], torch.Tensor | None]) -> RemovableHandle:
        def hook(mod: nn.Module, args: tuple[Any, ...], output: object) -> object:
            new = fn(_hidden_of(output))
            return None if new is None else _replace_hidden(output, new)

        return module.register_forward_hook(hook)

    register = pre_hook if reads_input else post_hook
    handle = register(capture)
    try:
        # positions count from each prompt's first real token, as `generate` counts them for
        # the base run (absolute position embeddings, GPT-2's, see the padding otherwise)
        cf_positions = (cf_mask.long().cumsum(-1) - 1).clamp(min=0)
        model(input_ids=cf_ids, attention_mask=cf_mask, position_ids=cf_positions)
    finally:
        handle.remove()
    handle = register(patch)
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
