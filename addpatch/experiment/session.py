"""A loaded model registered in a store: what every model-using step starts from."""

from __future__ import annotations

from dataclasses import dataclass

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
    provenance: dict


def load_into_store(
    store: Store,
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    resolved = resolve_model(model)
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen_device)
    if threads:
        torch.set_num_threads(threads)
    hf_model, tokenizer = load_model(resolved, chosen_device, chosen_dtype, trust_remote_code)
    record = model_record(resolved, hf_model.config)
    with store.writer(), store.connect() as conn:
        model_id = catalog.upsert_model(conn=conn, record=record)
    return LoadedModel(
        resolved,
        PatchEngine(hf_model, tokenizer),
        model_id,
        torch_dtype_name(chosen_dtype),
        model_provenance(record),
    )


def model_provenance(record: ModelRecord) -> dict:
    """The model's part of a run's provenance."""
    return {
        "model_name": record.name,
        "model_path": record.source,
        "model_revision": record.revision or "",
        "weights_sha256": record.weights_sha256,
        "tokenizer_sha256": record.tokenizer_sha256,
        "architecture": record.architecture,
    }
