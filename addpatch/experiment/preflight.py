"""Check a run's arguments against the model's config and tokenizer before anything is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from addpatch.engine.architecture import find_decoder
from addpatch.engine.components import find_layer_parts
from addpatch.engine.positions import (
    PromptLayout,
    check_units,
    layout_input,
    select_positions,
)
from addpatch.errors import BadInput, ModelNotFound
from addpatch.experiment.interventions import parse_layers
from addpatch.models.loading import (
    ResolvedModel,
    load_tokenizer,
    pick_device,
    pick_dtype,
    resolve_model,
    weights_mismatch,
)
from addpatch.task.addition import AdditionTask


def sample_layouts(tokenizer: PreTrainedTokenizerBase, task: AdditionTask) -> list[PromptLayout]:
    """Lay out sample prompts of the task in every template, at width 1 and D, with the task's
    worked examples and chat template: BadInput when a digit gets no token of its own."""
    return [layout for _, layout in _samples(tokenizer, task)]


def _samples(
    tokenizer: PreTrainedTokenizerBase, task: AdditionTask
) -> list[tuple[int, PromptLayout]]:
    """(width, layout) of the sample prompts of `sample_layouts`, in its order."""
    layouts = []
    for template in task.templates:  # type: ignore[union-attr]
        for width in sorted({1, task.num_digits}):
            low, high = 10 ** (width - 1), 10**width - 1
            shots = [[high] * task.num_addends] * task.num_shots
            for number in (low, high):
                sample = task.make_input(
                    [number] * task.num_addends, num_digits=width, template=template, shots=shots
                )
                layouts.append((width, layout_input(tokenizer, sample)))
    return layouts


def check_model(
    *,
    model: str,
    layers: str,
    device: str,
    dtype: str,
    trust_remote_code: bool = False,
    components: tuple[str, ...] | list[str] = ("resid",),
) -> PreTrainedTokenizerBase:
    """BadInput/ModelNotFound for anything wrong with the checkpoint that can be known without
    loading weights (config, layers, components, weight files against the config); its
    tokenizer, for `check_prompts` of each task run on it."""
    resolved = resolve_model(model)
    pick_dtype(dtype, pick_device(device))
    config = checked_config(resolved, trust_remote_code)
    text = config.get_text_config()  # the decoder's own config (Gemma-3 4B+ nest it)
    num_layers = getattr(text, "num_hidden_layers", None) or text.n_layer
    parse_layers(layers, int(num_layers))
    meta_model = _meta_model(resolved, config, trust_remote_code)
    if any(c != "resid" for c in components):
        find_layer_parts(meta_model, find_decoder(meta_model).layers)
    shapes = check_weight_files(resolved, num_layers=int(num_layers))
    check_weights_match_config(resolved, meta_model, shapes)
    try:
        tokenizer = load_tokenizer(resolved, trust_remote_code)
    except BadInput:
        raise
    except Exception as error:
        raise _remote_code_error(resolved, error) or ModelNotFound(
            f"{resolved.name} has no usable tokenizer ({_first_line(error)}); save the "
            "tokenizer (tokenizer.json) with the model"
        ) from None
    return tokenizer


def check_prompts(tokenizer: PreTrainedTokenizerBase, task: AdditionTask, positions: str) -> None:
    """BadInput when the task's prompts cannot be laid out by `tokenizer` (a digit without a
    token of its own) or `positions` names no token of them, or a unit of positions names one
    that a prompt of the task's width (in any of its templates) lacks."""
    samples = _samples(tokenizer, task)
    names = select_positions(samples[-1][1], positions, task.num_addends, task.num_digits)
    check_units([layout for width, layout in samples if width == task.num_digits], names)


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
    if architectures and not any(_is_causal_lm(config, a) for a in architectures):
        raise BadInput(
            f"{resolved.name} is a {architectures[0]}, not a decoder language model; addpatch "
            "patches causal LMs (Llama, Gemma-2, OLMo-2, Qwen2, Mistral, GPT-2, GPT-NeoX, ...)"
        )
    return config


def _is_causal_lm(config: PretrainedConfig, architecture: str) -> bool:
    """A causal LM class by its name, or the class AutoModelForCausalLM builds for this model
    type (Gemma-3 4B and up: Gemma3ForConditionalGeneration, a decoder with a vision tower)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if architecture.endswith(("ForCausalLM", "LMHeadModel")):
        return True
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type) == architecture


_LAYER_INDEX = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def check_weight_files(
    resolved: ResolvedModel, num_layers: int | None = None
) -> dict[str, dict[str, list[int]]]:
    """Every safetensors file is whole (its header and the data it promises; no data read), and
    holds weights for each of the config's `num_layers` layers (loading checks every weight).

    Returns each file's tensor shapes (file name -> tensor name -> shape), read from the headers.
    """
    from safetensors import safe_open

    shapes: dict[str, dict[str, list[int]]] = {}
    indices: set[int] = set()
    for path in sorted(Path(resolved.path).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                shapes[path.name] = {
                    key: list(handle.get_slice(key).get_shape()) for key in handle.keys()
                }
        except Exception as error:
            raise ModelNotFound(
                f"{path} is not a readable safetensors file ({_first_line(error)}); it may be "
                "truncated: download or convert it again"
            ) from None
        for key in shapes[path.name]:
            found = _LAYER_INDEX.search(key)
            if found:
                indices.add(int(found.group(1)))
    if num_layers is not None and indices and len(indices) < num_layers:
        raise BadInput(
            f"{resolved.name}: its config.json and weights disagree (num_hidden_layers is "
            f"{num_layers}, the weights hold {len(indices)} layers); fix config.json or the "
            "checkpoint"
        )
    return shapes


_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"


def _loaded_files(resolved: ResolvedModel, config: PretrainedConfig) -> list[str] | None:
    """The safetensors files `from_pretrained` reads, in its order of preference: the single
    file, else the shards the index names (None: neither, loading reports what is missing)."""
    folder = Path(resolved.path)
    if (folder / _SINGLE_FILE).is_file():
        files = [_SINGLE_FILE]
    elif (folder / _INDEX_FILE).is_file():
        try:
            weight_map = json.loads((folder / _INDEX_FILE).read_text())["weight_map"]
            files = sorted({str(name) for name in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelNotFound(
                f"{folder / _INDEX_FILE} is not a readable shard index ({_first_line(error)}); "
                "download or save the checkpoint again"
            ) from None
        absent = [name for name in files if not (folder / name).is_file()]
        if absent:
            raise ModelNotFound(
                f"{resolved.name}: {_INDEX_FILE} names {absent[0]}, which is not in {folder} "
                f"({len(absent)} of {len(files)} shards absent); download the missing shards"
            )
    else:
        return None
    extra = [str(name) for name in getattr(type(config), "extra_files", ()) or ()]
    return files + [name for name in extra if (folder / name).is_file() and name not in files]


def _shape(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def check_weights_match_config(
    resolved: ResolvedModel,
    model: PreTrainedModel,
    shapes: dict[str, dict[str, list[int]]],
) -> None:
    """BadInput unless the checkpoint's tensors (names and shapes, from the safetensors headers)
    are those the config builds: what `from_pretrained` would report as missing, unexpected or
    of another shape, found on a weightless copy of the model (`model`, on the meta device).

    Follows transformers' own loading rules: its key renamings and the base-model prefix, tied
    weights (e.g. `lm_head` when `tie_word_embeddings`), buffers a checkpoint may omit, and each
    model's keys to ignore. Quantized checkpoints are left to loading, which checks them."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    from transformers.utils.loading_report import LoadStateDictInfo

    files = _loaded_files(resolved, model.config)
    if files is None or getattr(model.config, "quantization_config", None) is not None:
        return
    expected = {key: list(value.shape) for key, value in model.state_dict().items()}
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    prefix = model.base_model_prefix
    found: set[str] = set()
    unexpected: list[str] = []
    mismatched: dict[str, list[int]] = {}
    for name in files:
        for key, shape in shapes.get(name, {}).items():
            target, pattern = rename_source_key(key, renamings, converters, prefix, expected)
            if target not in expected and key in expected:
                target, pattern = rename_source_key(key, [], [], prefix, expected)
            if target not in expected:
                unexpected.append(target)
            elif pattern is None:  # a tensor as it is: its shape is the parameter's
                found.add(target)
                if shape != expected[target]:
                    mismatched[target] = shape
            else:  # merged or split on load (its shape changes): loading checks the result
                converter = next(c for c in converters if pattern in c.source_patterns)
                first = converter.target_patterns[0]
                found.update(target.replace(first, t) for t in converter.target_patterns)
    missing = [key for key in expected if key not in found]
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    groups: dict[str, set[str]] = {}
    for tied_target, source in tied.items():
        groups.setdefault(source, {source}).add(tied_target)
    loaded_tied = {k for group in groups.values() if group & found for k in group}
    missing = [key for key in missing if key not in loaded_tied]
    info = LoadStateDictInfo(
        missing_keys=set(missing),
        unexpected_keys=set(unexpected),
        mismatched_keys=set(),
        error_msgs=[],
        conversion_errors={},
        skipped_pp_keys=set(),
    )
    model._adjust_missing_and_unexpected_keys(info)  # the model's keys to ignore on load
    missing = [key for key in missing if key in info.missing_keys]
    if model.is_custom_code():  # its own code may share modules: missing keys are not known here
        missing = []
    unexpected = sorted(key for key in set(unexpected) if key in info.unexpected_keys)
    if not (mismatched or missing or unexpected):
        return
    if mismatched:
        key = next(k for k in expected if k in mismatched)  # the first in the model's order
        first = (
            f"{key} is {_shape(mismatched[key])} in the weights, {_shape(expected[key])} by "
            "config.json"
        )
    elif missing:
        first = f"{missing[0]} is not in the weights"
    else:
        first = f"{unexpected[0]} is in the weights but not in the model config.json builds"
    raise weights_mismatch(
        resolved, first, len(mismatched), len(missing), len(unexpected), len(expected)
    )


def _meta_model(
    resolved: ResolvedModel, config: PretrainedConfig, trust_remote_code: bool = False
) -> PreTrainedModel:
    """A weightless copy of the model the config builds, on the meta device (no memory used)."""
    try:
        with torch.device("meta"):
            model: PreTrainedModel = AutoModelForCausalLM.from_config(
                config, trust_remote_code=trust_remote_code
            )
    except Exception as error:
        raise _remote_code_error(resolved, error) or BadInput(
            f"{resolved.name}: transformers cannot build the model its config.json describes "
            f"({_first_line(error)}); fix config.json or use a checkpoint this transformers "
            "supports"
        ) from None
    return model
