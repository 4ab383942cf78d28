"""Check a run's arguments against the model's config and tokenizer before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from addpatch.engine.architecture import find_decoder
from addpatch.engine.components import find_layer_parts
from addpatch.engine.positions import PromptLayout, layout_input, select_positions
from addpatch.errors import BadInput, ModelNotFound
from addpatch.experiment.interventions import parse_layers
from addpatch.models.loading import ResolvedModel, pick_device, pick_dtype, resolve_model
from addpatch.task.addition import AdditionTask


def sample_layouts(tokenizer: PreTrainedTokenizerBase, task: AdditionTask) -> list[PromptLayout]:
    """Lay out sample prompts of the task in every template, at width 1 and D, with the task's
    worked examples and chat template: BadInput when a digit gets no token of its own."""
    layouts = []
    for template in task.templates:  # type: ignore[union-attr]
        for width in sorted({1, task.num_digits}):
            low, high = 10 ** (width - 1), 10**width - 1
            shots = [[high] * task.num_addends] * task.num_shots
            for number in (low, high):
                sample = task.make_input(
                    [number] * task.num_addends, num_digits=width, template=template, shots=shots
                )
                layouts.append(layout_input(tokenizer, sample))
    return layouts


def preflight(
    *,
    model: str,
    task: AdditionTask,
    layers: str,
    positions: str,
    device: str,
    dtype: str,
    trust_remote_code: bool = False,
    components: tuple[str, ...] | list[str] = ("resid",),
) -> None:
    """BadInput/ModelNotFound for anything wrong that can be known without loading weights."""
    resolved = resolve_model(model)
    pick_dtype(dtype, pick_device(device))
    config = checked_config(resolved, trust_remote_code)
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    parse_layers(layers, int(num_layers))
    if any(c != "resid" for c in components):
        _check_components(config)
    check_weight_files(resolved, num_layers=int(num_layers))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.path, trust_remote_code=trust_remote_code
        )
    except Exception as error:
        raise _remote_code_error(resolved, error) or ModelNotFound(
            f"{resolved.name} has no usable tokenizer ({_first_line(error)}); save the "
            "tokenizer (tokenizer.json) with the model"
        ) from None
    layouts = sample_layouts(tokenizer, task)
    select_positions(layouts[-1], positions, task.num_addends, task.num_digits)


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] or type(error).__name__


def _remote_code_error(resolved: ResolvedModel, error: BaseException) -> BadInput | None:
    if "trust_remote_code" not in str(error):
        return None
    return BadInput(
        f"{resolved.name} needs its own Python code (auto_map in config.json); read it, then "
        "pass --trust-remote-code to let addpatch run it"
    )


def checked_config(resolved: ResolvedModel, trust_remote_code: bool) -> PretrainedConfig:
    """The checkpoint's config, refused with a clear error when unreadable or not a decoder."""
    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(
            resolved.path, trust_remote_code=trust_remote_code
        )
    except Exception as error:
        raise _remote_code_error(resolved, error) or ModelNotFound(
            f"cannot read {Path(resolved.path) / 'config.json'} ({_first_line(error)}); point "
            "--model at a Hugging Face checkpoint with a valid config.json"
        ) from None
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise BadInput(
            f"{resolved.name} is a {architectures[0]}, not a decoder language model; addpatch "
            "patches causal LMs (Llama, Gemma-2, OLMo-2, Qwen2, Mistral, GPT-2, GPT-NeoX, ...)"
        )
    return config


_LAYER_INDEX = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def check_weight_files(resolved: ResolvedModel, num_layers: int | None = None) -> None:
    """Every safetensors file is whole (its header and the data it promises; no data read), and
    holds weights for each of the config's `num_layers` layers (loading checks every weight)."""
    from safetensors import safe_open

    indices: set[int] = set()
    for path in sorted(Path(resolved.path).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key).get_shape()
                    found = _LAYER_INDEX.search(key)
                    if found:
                        indices.add(int(found.group(1)))
        except Exception as error:
            raise ModelNotFound(
                f"{path} is not a readable safetensors file ({_first_line(error)}); it may be "
                "truncated: download or convert it again"
            ) from None
    if num_layers is not None and indices and len(indices) < num_layers:
        raise BadInput(
            f"{resolved.name}: its config.json and weights disagree (num_hidden_layers is "
            f"{num_layers}, the weights hold {len(indices)} layers); fix config.json or the "
            "checkpoint"
        )


def _check_components(config: object) -> None:
    """BadInput unless the model's layers have the attention and MLP parts components need
    (checked on a weightless copy of the model built on the meta device)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    find_layer_parts(model, find_decoder(model).layers)
