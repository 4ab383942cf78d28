"""The model work of a sweep, as plain functions a worker runs (in this process or on Ray).

Tasks never touch the catalog: `answer_task` returns the model's answers for the driver to
store, and `patch_task` writes each batch's Parquet file under the store's `outputs/` and
returns what it wrote, for the driver alone to register. A batch's file path depends only on
(model, run, batch), so a retried task replaces its files instead of adding copies.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch

from addpatch.das.cells import DasCellOutput, DasShard, das_cells_to_files
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.experiment.filtering import answer_pairs
from addpatch.experiment.interventions import OutputFile, patch_batch_to_file
from addpatch.models.loading import load_model, pick_dtype, resolve_model
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import CounterfactualPair


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the model: `--model` as given, and an explicit device and dtype."""

    model: str
    device: str  # cpu, cuda, cuda:N (never auto: the driver decides where the work runs)
    dtype: str
    trust_remote_code: bool = False


# One loaded model per worker process: a worker that gets several tasks of the same model
# (the usual case, in this process or in a Ray worker) loads it once.
_LOADED: dict[ModelSpec, PatchEngine] = {}


def forget_loaded_models() -> None:
    """Drop the model this process keeps loaded (frees its memory; the next task loads again)."""
    _LOADED.clear()
    gc.collect()


def engine_for(spec: ModelSpec) -> PatchEngine:
    if spec not in _LOADED:
        _LOADED.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        device = torch.device(spec.device)
        if device.type == "cuda" and torch.cuda.is_available() and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        model, tokenizer = load_model(
            resolve_model(spec.model),
            device,
            pick_dtype(spec.dtype, device),
            spec.trust_remote_code,
        )
        _LOADED[spec] = PatchEngine(model, tokenizer)
    return _LOADED[spec]


def answer_task(
    spec: ModelSpec,
    task: AdditionTask,
    ids: list[int],
    pairs: list[CounterfactualPair],
    batch_size: int,
) -> pa.Table:
    """The model's answers to every base and counterfactual prompt (`filter_results` rows)."""
    return answer_pairs(engine_for(spec), task, ids, pairs, batch_size=batch_size)


@dataclass(frozen=True)
class PatchShard:
    """Consecutive batches of one run, patched by one task."""

    model_id: int
    run_id: int
    batches: list[tuple[int, list[PromptPair]]]  # (batch index, pairs)
    layers: list[int]
    positions: list[str]
    max_new_tokens: int
    components: tuple[str, ...] = ("resid",)
    only: frozenset[tuple[str, int, int, int | None]] | None = None  # a screen's cells


def patch_task(spec: ModelSpec, store_root: str, shard: PatchShard) -> list[OutputFile]:
    """Patch every cell of the shard's batches; one Parquet file per batch, none registered."""
    engine = engine_for(spec)
    return [
        patch_batch_to_file(
            Path(store_root),
            engine,
            model_id=shard.model_id,
            run_id=shard.run_id,
            batch_index=index,
            batch=batch,
            layers=shard.layers,
            positions=shard.positions,
            max_new_tokens=shard.max_new_tokens,
            components=shard.components,
            only=shard.only,
        )
        for index, batch in shard.batches
    ]


def das_task(spec: ModelSpec, store_root: str, shard: DasShard) -> list[DasCellOutput]:
    """Train and evaluate each cell of a DAS shard; one safetensors and one Parquet file per
    cell, none registered."""
    return das_cells_to_files(Path(store_root), engine_for(spec), shard)
