"""Resolve `--model` to local files and load it through the standard Hugging Face path.

`--model` takes a shipped model's name (`addpatch model list`), a local directory holding a
Hugging Face checkpoint, or a Hugging Face id already in the local cache. Nothing is downloaded,
weights load from safetensors only, and `trust_remote_code` stays off unless asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from addpatch.errors import BadInput, ModelNotFound
from addpatch.models.weights import sha256_files
from addpatch.resources import shipped_models_dir
from addpatch.store.catalog import ModelRecord

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    revision: str | None  # HF commit for cached hub models


def shipped_models() -> dict[str, Path]:
    """Shipped model name -> directory."""
    root = shipped_models_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").exists()}


def shipped_card(name: str) -> dict[str, Any]:
    card = shipped_models()[name] / "card.json"
    return json.loads(card.read_text()) if card.exists() else {}


def shipped_families() -> dict[str, dict[int, str]]:
    """Shipped models with one checkpoint per digit width: family -> {digits: checkpoint name}."""
    families: dict[str, dict[int, str]] = {}
    for name in shipped_models():
        family, sep, width = name.rpartition("-d")
        if sep and width.isdigit():
            families.setdefault(family, {})[int(width)] = name
    return families


def model_for_width(spec: str, digits: int) -> str:
    """`--model` for a run at `digits`: a family name (`tiny-adder-chunks`) becomes its checkpoint
    for that width (`tiny-adder-chunks-d3`); anything else is returned unchanged."""
    family = shipped_families().get(spec)
    if family is None or spec in shipped_models():
        return spec
    if digits not in family:
        widths = ", ".join(str(d) for d in sorted(family))
        raise ModelNotFound(
            f"{spec} has checkpoints for {widths} digits only; use --digits {widths.split(',')[0]}"
            f" or another model"
        )
    return family[digits]


def _weights(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def _from_hf_cache(model_id: str) -> ResolvedModel | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        return None
    return ResolvedModel(model_id, folder, folder.name)


def _built_from_adapter(spec: str) -> ResolvedModel | None:
    """A shipped adapter's name: the checkpoint `addpatch model build NAME` wrote."""
    from addpatch.models.adapters import built_model_dir, is_built, shipped_adapters

    if spec not in shipped_adapters():
        return None
    folder = built_model_dir(spec)
    if not is_built(folder, spec):
        raise ModelNotFound(
            f"{spec} is a shipped adapter merged into its base on this machine once (again after "
            f"an update of the adapter); run `addpatch model build {spec}` (it writes {folder})"
        )
    return ResolvedModel(spec, folder, None)


def resolve_model(spec: str) -> ResolvedModel:
    shipped = shipped_models()
    if spec in shipped:
        return ResolvedModel(spec, shipped[spec], None)
    built = _built_from_adapter(spec)
    if built is not None:
        return built
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(
                f"{path} has no config.json; point --model at a Hugging Face checkpoint directory"
            )
        if not _weights(path):
            raise ModelNotFound(
                f"{path} has no *.safetensors weights; addpatch loads safetensors only "
                "(convert the checkpoint with save_pretrained(..., safe_serialization=True))"
            )
        return ResolvedModel(path.resolve().name, path.resolve(), None)
    if "/" in spec:
        resolved = _from_hf_cache(spec)
        if resolved is not None:
            if not _weights(resolved.path):
                raise ModelNotFound(
                    f"{spec} is cached without safetensors weights; addpatch loads safetensors only"
                )
            return resolved
    if spec in shipped_families():
        raise ModelNotFound(
            f"{spec} has one checkpoint per digit width; name one ("
            + ", ".join(shipped_families()[spec].values())
            + ") or give --digits to a command that picks it"
        )
    from addpatch.models.adapters import shipped_adapters

    names = ", ".join([*shipped, *shipped_families(), *shipped_adapters()]) or "none"
    raise ModelNotFound(
        f"model {spec!r} is not a shipped model ({names}), a local directory, or a Hugging Face id "
        "in the local cache; pass a local path, or download it first where there is internet "
        f"(`hf download {spec}`)"
    )


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda"):
        raise BadInput(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but no GPU is visible; use --device cpu")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise BadInput(
            f"--device {device}: this machine has {torch.cuda.device_count()} GPUs "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )
    return chosen


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU, unless asked otherwise."""
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


_TOKENIZERS: dict[tuple[Any, ...], PreTrainedTokenizerBase] = {}
_TOKENIZERS_KEPT = 4
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def _tokenizer_key(resolved: ResolvedModel, trust_remote_code: bool) -> tuple[Any, ...]:
    """What a loaded tokenizer depends on: the checkpoint's directory and its small files (the
    tokenizer's and config files; the weights are left out, they are what is large)."""
    path = Path(resolved.path)
    small = (
        [f for f in path.iterdir() if f.is_file() and f.suffix not in _WEIGHT_SUFFIXES]
        if path.is_dir()
        else []
    )
    files = []
    for f in small:
        stat = f.stat()
        files.append((f.name, stat.st_size, stat.st_mtime_ns))
    return (str(path.resolve()), trust_remote_code, tuple(sorted(files)))


def load_tokenizer(
    resolved: ResolvedModel, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The model's fast tokenizer, padding on the left (a pad token borrowed from EOS if none).

    Loaded once per process while its files are unchanged: a large vocabulary (Gemma's 262k
    tokens) takes seconds to load, and a run needs the tokenizer in several steps.
    """
    key = _tokenizer_key(resolved, trust_remote_code)
    kept = _TOKENIZERS.get(key)
    if kept is not None:
        return kept
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput(
            f"{resolved.name} has no fast tokenizer; addpatch needs character offsets to place "
            "digits (save a tokenizer.json with the model)"
        )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(_TOKENIZERS) >= _TOKENIZERS_KEPT:
        _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
    _TOKENIZERS[key] = tokenizer
    return tokenizer


def load_model(
    resolved: ResolvedModel,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and its tokenizer; BadInput (the preflight's one line) when its weights and
    config.json disagree, for a caller that did not run the preflight."""
    hf_logging.disable_progress_bar()  # addpatch draws its own progress; keep stderr for errors
    tokenizer = load_tokenizer(resolved, trust_remote_code)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a mismatch is reported below, not as transformers' table
    try:
        # with output_loading_info it returns (model, loading info); mismatched sizes are listed
        # there (and refused below) instead of raised as a RuntimeError
        model, info = cast(
            "tuple[PreTrainedModel, dict[str, Any]]",
            AutoModelForCausalLM.from_pretrained(
                resolved.path,
                dtype=dtype,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
            ),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(resolved, info, order=list(model.state_dict()))
    # typed as a Module: transformers' `to` (functools.wraps of Module.to) confuses mypy's binding
    cast(torch.nn.Module, model).to(device).eval()
    return model, tokenizer


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def weights_mismatch(
    resolved: ResolvedModel, first: str, mismatched: int, missing: int, unexpected: int, of: int
) -> BadInput:
    """The one-line error for a checkpoint whose tensors are not those its config.json builds
    (the preflight's, from the safetensors headers, and loading's): `first` names one tensor."""
    counts = (
        f"of the {of} tensors config.json builds {mismatched} differ in shape "
        f"and {missing} are missing, {unexpected} unexpected"
    )
    return BadInput(
        f"{resolved.name}: the weights do not match config.json ({first}; {counts}); point "
        "--model (--models) at a directory whose config.json and weights belong together"
    )


def check_loading_info(
    resolved: ResolvedModel, info: dict[str, Any], order: list[str] | None = None
) -> None:
    """Refuse a checkpoint whose weights and config disagree: every parameter the config builds
    must be loaded, every weight in the checkpoint used, each in the config's shape (else
    results would be stored from randomly initialized layers). `order`: the model's tensor
    names, to name the first that differs in shape."""
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(info.get("unexpected_keys", ()))
    shapes = {str(k[0]): (k[1], k[2]) for k in info.get("mismatched_keys", ()) if len(k) == 3}
    if not (missing or unexpected or shapes):
        return
    if shapes:
        key = next((k for k in order or [] if k in shapes), min(shapes))
        weights, config = shapes[key]
        first = f"{key} is {_shape(weights)} in the weights, {_shape(config)} by config.json"
    elif missing:
        first = f"{missing[0]} is not in the weights"
    else:
        first = f"{unexpected[0]} is in the weights but not in the model config.json builds"
    of = len(order) if order is not None else len(shapes) + len(missing)
    raise weights_mismatch(resolved, first, len(shapes), len(missing), len(unexpected), of)


def causal_lm_class_name(config: PretrainedConfig) -> str:
    """The class `AutoModelForCausalLM` builds for this config (its own code's class otherwise)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    return name or (config.architectures or [type(config).__name__])[0]


def model_record(resolved: ResolvedModel, config: PretrainedConfig) -> ModelRecord:
    """What the store keeps about a model: read from its files, without loading its weights."""
    tokenizer_files = [resolved.path / f for f in _TOKENIZER_FILES if (resolved.path / f).exists()]
    return ModelRecord(
        name=resolved.name,
        source=str(resolved.path),
        revision=resolved.revision,
        weights_sha256=sha256_files(_weights(resolved.path), cached=True),
        tokenizer_sha256=sha256_files(tokenizer_files),
        architecture=causal_lm_class_name(config),
        num_layers=int(config.get_text_config().num_hidden_layers),
        hidden_size=int(config.get_text_config().hidden_size),
    )
