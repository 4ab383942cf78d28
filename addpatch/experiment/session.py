"""A loaded model registered in a store: what every model-using step starts from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from addpatch.engine.patching import PatchEngine
from addpatch.experiment.interventions import torch_dtype_name
from addpatch.models.loading import (
    ResolvedModel,
    load_model,
    model_record,
    pick_device,
    pick_dtype,
    resolve_model,
)
from addpatch.store import catalog
from addpatch.store.catalog import ModelRecord
from addpatch.store.store import Store


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    engine: PatchEngine
    model_id: int
    dtype: str
    provenance: dict[str, Any]


@dataclass
class PreparedModel:
    """A model loaded and checked (weights agree with its config), not yet in any store."""

    resolved: ResolvedModel
    engine: PatchEngine
    record: ModelRecord
    dtype: str


def prepare_model(
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    trust_remote_code: bool = False,
) -> PreparedModel:
    """Load the model; everything that can be wrong with it fails here, before any writing."""
    resolved = resolve_model(model)
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen_device)
    if threads:
        torch.set_num_threads(threads)
    hf_model, tokenizer = load_model(resolved, chosen_device, chosen_dtype, trust_remote_code)
    record = model_record(resolved, hf_model.config)
    return PreparedModel(
        resolved, PatchEngine(hf_model, tokenizer), record, torch_dtype_name(chosen_dtype)
    )


def register_model(store: Store, prepared: PreparedModel) -> LoadedModel:
    with store.writer(), store.connect() as conn:
        model_id = catalog.upsert_model(conn=conn, record=prepared.record)
    return LoadedModel(
        prepared.resolved,
        prepared.engine,
        model_id,
        prepared.dtype,
        model_provenance(prepared.record),
    )


def load_into_store(
    store: Store,
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    prepared = prepare_model(
        model, device=device, dtype=dtype, threads=threads, trust_remote_code=trust_remote_code
    )
    return register_model(store, prepared)


def model_provenance(record: ModelRecord) -> dict[str, Any]:
    """The model's part of a run's provenance."""
    return {
        "model_name": record.name,
        "model_path": record.source,
        "model_revision": record.revision or "",
        "weights_sha256": record.weights_sha256,
        "tokenizer_sha256": record.tokenizer_sha256,
        "architecture": record.architecture,
    }
