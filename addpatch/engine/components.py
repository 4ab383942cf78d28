"""The parts of a decoder layer that component patching reads and recomputes.

Components (what a patch replaces, at one layer and token position):
  resid  the residual stream after the layer (layer -1: the embeddings)
  attn   what the attention block adds to the stream: the attention output, or for post-norm
         layers (Gemma-2, OLMo-2) the post-attention norm of it, which is what is added
  mlp    what the MLP block adds to the stream, likewise (post-feedforward norm included)
  heads  one attention head's output: its slice of the input to the output projection

A layer's output at a position depends on the attention output there only through
`after_attention`, and on the MLP output only through `after_mlp`; keys and values of the layer
do not depend on either. So a patch of attn, mlp or a head at layer L changes layer L's output
at the patched position alone, and the engine reruns from there. Found from each layer's own
modules (Llama-like `self_attn`/`mlp`, GPT-2 `attn`/`mlp`, GPT-NeoX `attention`/`mlp`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from addpatch.errors import BadInput

if TYPE_CHECKING:
    from transformers import PreTrainedModel

COMPONENTS = ("resid", "attn", "mlp", "heads")


def parse_components(spec: str) -> list[str]:
    """`resid`, `attn`, `mlp`, `heads`, or a comma-separated list of them (canonical order)."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    bad = [n for n in names if n not in COMPONENTS]
    if bad or not names:
        raise BadInput(
            f"unknown component {bad[0] if bad else spec!r}; use one or more of "
            f"{', '.join(COMPONENTS)} separated by commas (e.g. resid,attn,mlp,heads)"
        )
    return [c for c in COMPONENTS if c in names]


def _first(output: object) -> torch.Tensor:
    return cast(torch.Tensor, output[0] if isinstance(output, tuple) else output)


def _sub(module: nn.Module, name: str) -> nn.Module:
    """`module.<name>`, a submodule (torch types attribute access as `Tensor | Module`)."""
    return cast(nn.Module, getattr(module, name))


@dataclass
class LayerParts:
    """One decoder layer's modules, seen as attention block + MLP block around the stream."""

    attention: nn.Module  # self-attention; its (first) output, post-normed, is added to the stream
    attention_post: nn.Module | None  # post-attention norm of post-norm layers (else None)
    output_projection: nn.Module  # its input (batch, q, heads * head_dim) holds every head
    mlp_output: nn.Module  # the module whose output the MLP block adds to the stream
    mlp_block: Callable[[torch.Tensor], torch.Tensor]  # MLP input stream -> its contribution
    num_heads: int
    parallel: bool  # GPT-NeoX parallel residual: the MLP reads the layer's input

    @property
    def attention_output(self) -> nn.Module:
        """The module whose output is the attention block's contribution to the stream."""
        return self.attention_post if self.attention_post is not None else self.attention

    def attention_from_heads(self, heads: torch.Tensor) -> torch.Tensor:
        """(..., heads * head_dim) -> the attention contribution (..., d_model)."""
        out: torch.Tensor = self.output_projection(heads)
        return self.attention_post(out) if self.attention_post is not None else out

    def after_attention(self, stream: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The layer's output from its input `stream` and attention contribution (..., d_model),
        with the additions in the order the Hugging Face layers do them."""
        if self.parallel:
            return (self.mlp_block(stream) + attention) + stream
        middle = stream + attention
        return middle + self.mlp_block(middle)

    def after_mlp(
        self, stream: torch.Tensor, attention: torch.Tensor, mlp: torch.Tensor
    ) -> torch.Tensor:
        """The layer's output from its input, attention and MLP contributions (..., d_model)."""
        if self.parallel:
            return (mlp + attention) + stream
        return (stream + attention) + mlp


def layer_parts(layer: nn.Module, num_heads: int) -> LayerParts:
    """The attention/MLP parts of a Llama-, Gemma-2-, OLMo-2-, GPT-2- or GPT-NeoX-style layer."""
    if hasattr(layer, "self_attn") and hasattr(layer, "mlp"):
        attention = _sub(layer, "self_attn")
        post_ff: nn.Module | None = getattr(layer, "post_feedforward_layernorm", None)
        if post_ff is not None:  # post-norm: Gemma-2 (with a pre-MLP norm too) or OLMo-2
            pre_ff: nn.Module | None = getattr(layer, "pre_feedforward_layernorm", None)
            mlp = _sub(layer, "mlp")

            def block(h: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = post_ff(mlp(pre_ff(h) if pre_ff is not None else h))
                return out

            return LayerParts(
                attention, _sub(layer, "post_attention_layernorm"), _sub(attention, "o_proj"),
                post_ff, block, num_heads, parallel=False,
            )  # fmt: skip
        norm, mlp = _sub(layer, "post_attention_layernorm"), _sub(layer, "mlp")
        return LayerParts(
            attention, None, _sub(attention, "o_proj"), mlp, lambda h: mlp(norm(h)), num_heads,
            False,
        )  # fmt: skip
    if hasattr(layer, "attn") and hasattr(layer, "ln_2"):  # GPT-2
        norm, mlp = _sub(layer, "ln_2"), _sub(layer, "mlp")
        attention = _sub(layer, "attn")
        return LayerParts(
            attention, None, _sub(attention, "c_proj"), mlp, lambda h: mlp(norm(h)), num_heads,
            False,
        )  # fmt: skip
    if hasattr(layer, "attention") and hasattr(layer, "post_attention_layernorm"):  # GPT-NeoX
        norm, mlp = _sub(layer, "post_attention_layernorm"), _sub(layer, "mlp")
        dropout = _sub(layer, "post_mlp_dropout")
        attention = _sub(layer, "attention")
        return LayerParts(
            attention, None, _sub(attention, "dense"), mlp,
            lambda h: dropout(mlp(norm(h))), num_heads,
            parallel=bool(getattr(layer, "use_parallel_residual", False)),
        )  # fmt: skip
    raise BadInput(
        f"cannot find the attention and MLP of {type(layer).__name__}; patch the residual "
        "stream only (--components resid)"
    )


def find_layer_parts(model: PreTrainedModel, layers: list[nn.Module]) -> list[LayerParts]:
    heads = int(model.config.get_text_config().num_attention_heads)
    return [layer_parts(layer, heads) for layer in layers]


class ComponentRecorder:
    """Forward hooks that keep what each layer's parts produce during one full forward pass.

    attn[i], mlp[i]: (batch, T, d_model) contributions; heads[i]: (batch, T, heads * head_dim).
    Use as a context manager around the forward; only the requested kinds are kept.
    """

    def __init__(self, parts: list[LayerParts], kinds: set[str]) -> None:
        self.parts, self.kinds = parts, kinds
        self.attn: list[torch.Tensor | None] = [None] * len(parts)
        self.mlp: list[torch.Tensor | None] = [None] * len(parts)
        self.heads: list[torch.Tensor | None] = [None] * len(parts)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ComponentRecorder:
        for index, part in enumerate(self.parts):
            if "attn" in self.kinds:
                self._handles.append(
                    part.attention_output.register_forward_hook(self._keep(self.attn, index))
                )
            if "mlp" in self.kinds:
                self._handles.append(
                    part.mlp_output.register_forward_hook(self._keep(self.mlp, index))
                )
            if "heads" in self.kinds:
                self._handles.append(
                    part.output_projection.register_forward_pre_hook(
                        self._keep_input(self.heads, index)
                    )
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _keep(
        store: list[torch.Tensor | None], index: int
    ) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            store[index] = _first(output)

        return hook

    @staticmethod
    def _keep_input(
        store: list[torch.Tensor | None], index: int
    ) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            store[index] = args[0]

        return hook
