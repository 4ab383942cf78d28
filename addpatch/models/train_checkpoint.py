"""Resumable training: the whole state of a training run at a checkpoint step, no pickles.

`OUT/checkpoint/` holds the weights (`model.safetensors`), AdamW's moments (`optimizer.safetensors`)
and `state.json` (step, data RNG state, accuracy history, wall time so far, config, device).
A fine-tune (`trainable_only`) keeps only the weights it trains: a LoRA adapter's, not the base's.
A run resumed from it continues bit-identically to one that never stopped (same machine and
thread count), so a schedule longer than one sitting can be trained over several.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from addpatch.errors import BadInput

CHECKPOINT = "checkpoint"

if TYPE_CHECKING:
    from _typeshed import DataclassInstance as TrainConfig  # any frozen training config


@dataclass
class TrainingState:
    step: int
    history: list[dict[str, Any]]
    wall_time_s: float


def _config_json(config: TrainConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def save_checkpoint(
    out_dir: Path,
    *,
    config: TrainConfig,
    device: torch.device,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: random.Random,
    state: TrainingState,
    trainable_only: bool = False,
) -> None:
    """Write the checkpoint to a new folder, then swap it in (a kill leaves the old one whole)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh, final, old = (out_dir / f"{CHECKPOINT}{s}" for s in (".tmp", "", ".old"))
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    if trainable_only:
        save_file(_trainable(model), str(fresh / "model.safetensors"))
    else:
        save_model(model, str(fresh / "model.safetensors"))
    moments = {
        f"{index}.{name}": value.detach().to("cpu").contiguous()
        for index, entry in optimizer.state_dict()["state"].items()
        for name, value in entry.items()
    }
    save_file(moments, str(fresh / "optimizer.safetensors"))
    version, internal, gauss = rng.getstate()
    (fresh / "state.json").write_text(
        json.dumps(
            {
                "step": state.step,
                "history": state.history,
                "wall_time_s": state.wall_time_s,
                "rng": [version, list(internal), gauss],
                "config": json.loads(_config_json(config)),
                "device": device.type,
            }
        )
    )
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    out_dir: Path,
    *,
    config: TrainConfig,
    device: torch.device,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: random.Random,
    trainable_only: bool = False,
) -> TrainingState | None:
    """Restore model, optimizer and data RNG from OUT/checkpoint; None when there is none."""
    folder = out_dir / CHECKPOINT
    if not (folder / "state.json").exists():
        return None
    saved = json.loads((folder / "state.json").read_text())
    if json.dumps(saved["config"], sort_keys=True) != _config_json(config):
        raise BadInput(
            f"{out_dir} holds a checkpoint of another training config; use another --out, "
            f"or delete {folder} to start over"
        )
    if saved["device"] != device.type:
        raise BadInput(
            f"the checkpoint in {out_dir} was trained on {saved['device']}; resume it with "
            f"--device {saved['device']} (runs on other devices give other weights)"
        )
    if trainable_only:
        _load_trainable(model, load_file(str(folder / "model.safetensors"), device=str(device)))
    else:
        load_model(model, str(folder / "model.safetensors"), device=str(device))
    moments = load_file(str(folder / "optimizer.safetensors"), device=str(device))
    template = optimizer.state_dict()
    entries: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": entries, "param_groups": template["param_groups"]})
    version, internal, gauss = saved["rng"]
    rng.setstate((version, tuple(internal), gauss))
    history = [
        {**entry, "accuracy": {int(w): a for w, a in entry["accuracy"].items()}}
        for entry in saved["history"]
    ]
    return TrainingState(saved["step"], history, saved["wall_time_s"])


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _load_trainable(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != expected:
        raise BadInput(
            "the checkpoint's trained weights are not this model's; delete the checkpoint folder "
            "to start over"
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in saved:
                p.copy_(saved[name])


def remove_checkpoint(out_dir: Path) -> None:
    shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)
