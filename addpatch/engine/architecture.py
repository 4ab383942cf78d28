"""Find a Hugging Face decoder's pieces (embedding, layers, final norm, head) from its modules.

The engine runs decoder layers one by one, so it needs, for any causal LM:
  embed(ids, position_ids)      -> (batch, pos, d_model)  the residual stream entering layer 0
  layer i                       a module called on (batch, pos, d_model)
  logits(hidden)                -> (batch, pos, vocab)    final norm, head, soft-capping
No per-model table: the pieces are found by the module names the architectures share.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from addpatch.errors import BadInput

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class DecoderStack:
    """The parts of a causal LM that the engine drives directly."""

    family: str
    embed_tokens: nn.Module
    position_embedding: nn.Module | None  # learned absolute positions (GPT-2); None for RoPE
    rotary: nn.Module | None  # rotary embedding module producing (cos, sin); None for GPT-2
    rotary_layer_types: list[str] | None  # per layer: the RoPE kind its rotary call names
    # (Gemma-3: local and global RoPE per layer type); None when one RoPE serves every layer
    layers: list[nn.Module]
    final_norm: nn.Module
    head: nn.Module
    cache_kwarg: str  # the keyword a layer takes its KV cache under
    sliding_windows: list[int | None]  # per layer: attention window, None for full attention
    final_logit_softcap: float | None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Residual stream entering layer 0 ("layer -1"): (batch, pos) -> (batch, pos, d_model)."""
        hidden: torch.Tensor = self.embed_tokens(input_ids)
        if self.position_embedding is not None:
            hidden = hidden + self.position_embedding(position_ids)
        return hidden

    def position_embeddings(
        self, hidden: torch.Tensor, position_ids: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per layer: the (cos, sin) its attention takes (each (batch, pos, head_dim)), computed
        once per RoPE kind; None for every layer of a model without rotary embeddings."""
        if self.rotary is None:
            return [None] * self.num_layers
        if self.rotary_layer_types is None:
            return [self.rotary(hidden, position_ids)] * self.num_layers
        by_type = {
            kind: self.rotary(hidden, position_ids, kind) for kind in set(self.rotary_layer_types)
        }
        return [by_type[kind] for kind in self.rotary_layer_types]

    def run_layer(
        self,
        index: int,
        hidden: torch.Tensor,  # (batch, q, d_model)
        mask: torch.Tensor,  # (batch, 1, q, kv) additive
        position_ids: torch.Tensor,  # (batch, q)
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        cache: object,
    ) -> torch.Tensor:
        kwargs = {
            "attention_mask": mask,
            "position_ids": position_ids,
            "use_cache": True,
            self.cache_kwarg: cache,
        }
        if rotary is not None:
            kwargs["position_embeddings"] = rotary
        out = self.layers[index](hidden, **kwargs)
        first: torch.Tensor = out[0] if isinstance(out, tuple) else out
        return first

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, pos, d_model) -> (batch, pos, vocab)."""
        logits: torch.Tensor = self.head(self.final_norm(hidden))
        if self.final_logit_softcap is not None:
            logits = torch.tanh(logits / self.final_logit_softcap) * self.final_logit_softcap
        return logits


def _sliding_windows(config: object, num_layers: int) -> list[int | None]:
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return [window if kind == "sliding_attention" else None for kind in layer_types]
    if window is not None and getattr(config, "use_sliding_window", True):
        return [window] * num_layers
    return [None] * num_layers


def _rotary_layer_types(rotary: nn.Module | None, config: object) -> list[str] | None:
    """The per-layer RoPE kinds when the rotary module takes one (its forward has `layer_type`)."""
    if rotary is None or "layer_type" not in inspect.signature(rotary.forward).parameters:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:
        raise BadInput(
            f"{type(rotary).__name__} takes a layer type but the config has no layer_types"
        )
    return list(layer_types)


def _llama_like(model: PreTrainedModel) -> DecoderStack | None:
    base = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm")
    if base is not None and not hasattr(base, "embed_tokens"):
        # a multimodal wrapper (Gemma-3 4B+): the text decoder is its language model
        base = getattr(base, "language_model", None)
    if base is None or not all(hasattr(base, name) for name in needed):
        return None
    config = model.config.get_text_config()
    layers = list(base.layers)
    rotary = getattr(base, "rotary_emb", None)
    return DecoderStack(
        family="llama-like",
        embed_tokens=base.embed_tokens,
        position_embedding=None,
        rotary=rotary,
        rotary_layer_types=_rotary_layer_types(rotary, config),
        layers=layers,
        final_norm=base.norm,
        head=model.get_output_embeddings(),
        cache_kwarg="past_key_values",
        sliding_windows=_sliding_windows(config, len(layers)),
        final_logit_softcap=getattr(config, "final_logit_softcapping", None),
    )


def _gpt2(model: PreTrainedModel) -> DecoderStack | None:
    base = getattr(model, "transformer", None)
    if base is None or not all(hasattr(base, name) for name in ("wte", "wpe", "h", "ln_f")):
        return None
    layers = list(base.h)
    return DecoderStack(
        family="gpt2",
        embed_tokens=base.wte,
        position_embedding=base.wpe,
        rotary=None,
        rotary_layer_types=None,
        layers=layers,
        final_norm=base.ln_f,
        head=model.get_output_embeddings(),
        cache_kwarg="past_key_values",
        sliding_windows=[None] * len(layers),
        final_logit_softcap=None,
    )


def _gpt_neox(model: PreTrainedModel) -> DecoderStack | None:
    base = getattr(model, "gpt_neox", None)
    if base is None or not all(
        hasattr(base, n) for n in ("embed_in", "layers", "final_layer_norm")
    ):
        return None
    layers = list(base.layers)
    return DecoderStack(
        family="gpt-neox",
        embed_tokens=base.embed_in,
        position_embedding=None,
        rotary=base.rotary_emb,
        rotary_layer_types=None,
        layers=layers,
        final_norm=base.final_layer_norm,
        head=model.get_output_embeddings(),
        cache_kwarg="layer_past",
        sliding_windows=[None] * len(layers),
        final_logit_softcap=None,
    )


_FINDERS: list[Callable[[PreTrainedModel], DecoderStack | None]] = [_llama_like, _gpt2, _gpt_neox]


def find_decoder(model: PreTrainedModel) -> DecoderStack:
    """The decoder stack of a Hugging Face causal LM, or BadInput naming what is supported."""
    for finder in _FINDERS:
        stack = finder(model)
        if stack is not None:
            return stack
    raise BadInput(
        f"cannot find the decoder layers of {type(model).__name__}; addpatch supports models laid out "
        "like Llama/Gemma-2/Gemma-3/OLMo-2/Qwen2/Qwen3/Mistral (model.layers), GPT-2 (transformer.h) or "
        "GPT-NeoX (gpt_neox.layers)"
    )
