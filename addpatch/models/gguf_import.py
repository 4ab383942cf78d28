"""Turn a GGUF file (llama.cpp's format) into a plain Hugging Face checkpoint addpatch can load.

transformers reads a GGUF file with `gguf_file=` (dequantizing its tensors) but refuses to
`save_pretrained` the model it builds, so the weights are copied into a model built from the same
config without the GGUF quantization settings, and that one is saved: config.json,
model.safetensors, generation_config.json, the tokenizer (tokenizer.json, tokenizer_config.json,
its chat template) and card.json naming the source file and its sha256.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from addpatch.errors import BadInput
from addpatch.models.checkpoint_dir import write_checkpoint_dir
from addpatch.models.weights import sha256_file

GGUF_MAGIC = b"GGUF"
GGUF_EXTRA = "pip install 'addpatch[gguf]'"


def _require_packages() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise BadInput(
            f"reading GGUF files needs the {' and '.join(missing)} package(s); "
            f"install them with `{GGUF_EXTRA}`"
        )


def _check_source(gguf_file: Path) -> None:
    if not gguf_file.is_file():
        raise BadInput(f"{gguf_file} is not a file; give the path of a .gguf file")
    with gguf_file.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise BadInput(f"{gguf_file} is not a GGUF file (it does not start with 'GGUF')")


def _check_destination(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"{out} already exists and is not empty; choose a new output directory")


@contextlib.contextmanager
def _quiet_dequantizing() -> Iterator[None]:
    """transformers draws its own tqdm bar over the GGUF tensors; addpatch prints its own lines."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if not hasattr(gguf_utils, "tqdm"):
        yield
        return
    with mock.patch.object(gguf_utils, "tqdm", lambda items, **_: items):
        yield


def import_gguf(gguf_file: Path, out: Path, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Write the GGUF model as a safetensors checkpoint in `out`; returns the card written there.

    `out` appears whole or not at all: everything is written into a temporary directory next to
    it and renamed at the end.
    """
    _check_source(gguf_file)
    _check_destination(out)
    _require_packages()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    source_sha256 = sha256_file(gguf_file)
    folder, name = gguf_file.resolve().parent, gguf_file.name
    try:
        with _quiet_dequantizing():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    except (ValueError, KeyError, NotImplementedError) as error:
        raise BadInput(f"transformers cannot read {gguf_file}: {error}") from error

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy holds plain dequantized weights
    config.name_or_path = ""
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.eval()
    del loaded

    card: dict[str, Any] = {}

    def write(staging: Path) -> None:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        card.update(
            {
                "source_file": gguf_file.name,
                "source_sha256": source_sha256,
                "source_bytes": gguf_file.stat().st_size,
                "source_format": "gguf",
                "architecture": type(plain).__name__,
                "parameters": sum(p.numel() for p in plain.parameters()),
                "dtype": str(dtype).removeprefix("torch."),
                "num_layers": int(config.num_hidden_layers),
                "hidden_size": int(config.hidden_size),
                "vocab_size": int(config.vocab_size),
                "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                "imported_with": "addpatch model import-gguf",
                "wall_time_s": round(time.perf_counter() - started, 1),
            }
        )
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")

    write_checkpoint_dir(out, write)
    return card
