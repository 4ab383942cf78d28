"""The worker side of a DAS run: train one cell's subspace, then evaluate it on held-out pairs.

A cell is (target, control, k, layer, unit) on the residual stream. The task trains R on the
train pairs, writes R as a safetensors file, patches the test pairs with it by greedy
generation (the engine's own decoding, parsed and stored exactly as full-vector outputs are)
and writes their outputs as one Parquet file. Nothing is registered here: the driver
registers the file and the subspace together, so a cell is stored whole or not at all, and
a retried cell replaces its files (their paths depend only on model, run and cell).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from safetensors.torch import save_file

from addpatch.das.examples import make_examples
from addpatch.das.training import TrainedSubspace, TrainSettings, train_subspace
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.store.output_schema import METHOD_SCHEMA
from addpatch.store.outputs import output_relpath, write_atomically, write_output_file

SHUFFLED = "shuffled"  # the control: each train pair gets the label of another


@dataclass(frozen=True)
class DasCell:
    subspace_id: int  # the cell's index in its run (its batch index)
    target: str
    control: str | None
    k: int
    layer: int
    unit: str
    position: int  # the unit's index among the run's positions


@dataclass(frozen=True)
class DasShard:
    """Cells of one run, trained and evaluated by one task."""

    model_id: int
    run_id: int
    cells: list[DasCell]
    train: list[PromptPair]
    test: list[PromptPair]
    labels: dict[str, dict[int, int]]  # target -> example id -> label
    settings: TrainSettings  # k is each cell's
    max_new_tokens: int
    split_sha256: str
    eval_batch_size: int = 64


@dataclass(frozen=True)
class DasCellOutput:
    """What a cell task wrote, for the driver to register (output file + subspace record)."""

    batch_index: int
    relpath: str
    rows: int
    sha256: str
    subspace: dict[str, Any] = field(default_factory=dict)  # the `subspaces` row, sans run/time


def subspace_relpath(model_id: int, run_id: int, subspace_id: int) -> str:
    return f"subspaces/model={model_id}/run={run_id}/subspace-{subspace_id:05d}.safetensors"


def shuffled_labels(labels: dict[int, int], ids: list[int], seed: int) -> dict[int, int]:
    """The control's labels: the train pairs' labels permuted among them (seeded)."""
    values = [labels[i] for i in ids]
    random.Random(seed).shuffle(values)
    return dict(zip(ids, values, strict=True))


def _save_basis(root: Path, relpath: str, basis: torch.Tensor, meta: dict[str, str]) -> str:
    """Write the basis (k, d) float32 atomically; its sha256."""
    tensors = {"basis": basis.contiguous().cpu()}
    return write_atomically(root, relpath, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def evaluate(
    engine: PatchEngine,
    pairs: list[PromptPair],
    cell: DasCell,
    basis: torch.Tensor,
    max_new_tokens: int,
    batch_size: int,
) -> pa.Table:
    """Greedy answers of the held-out pairs patched in the subspace, in the output schema."""
    tables = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        for table in engine.sweep(batch, [cell.layer], [cell.unit], max_new_tokens, basis=basis):
            tables.append(table)
    table = pa.concat_tables(tables)
    # the engine numbers positions within its call: the unit's index in the run instead
    table = table.set_column(
        table.schema.get_field_index("position"),
        "position",
        pa.array([cell.position] * table.num_rows, pa.int16()),
    )
    values = {
        "method": ["das"] * table.num_rows,
        "k": [cell.k] * table.num_rows,
        "trained_for": [cell.target] * table.num_rows,
        "subspace_id": [cell.subspace_id] * table.num_rows,
    }
    for name in METHOD_SCHEMA.names:
        field_ = METHOD_SCHEMA.field(name)
        table = table.append_column(field_, pa.array(values[name], field_.type))
    return table


def run_cell(root: Path, engine: PatchEngine, shard: DasShard, cell: DasCell) -> DasCellOutput:
    """Train the cell's subspace, evaluate it on the test pairs, write both files."""
    settings = replace(shard.settings, k=cell.k)
    labels = shard.labels[cell.target]
    train_ids = [p.example_id for p in shard.train]
    if cell.control == SHUFFLED:
        labels = {**labels, **shuffled_labels(labels, train_ids, settings.seed)}
    examples = make_examples(engine.tokenizer, shard.train, labels)
    trained: TrainedSubspace = train_subspace(
        engine.model, engine.pad_id, examples, cell.layer, cell.unit, settings
    )
    basis_path = subspace_relpath(shard.model_id, shard.run_id, cell.subspace_id)
    record = {
        "target": cell.target,
        "control": cell.control,
        "k": cell.k,
        "layer": cell.layer,
        "position": cell.position,
        "component": "resid",
        "seed": settings.seed,
        "split_sha256": shard.split_sha256,
        "settings_json": json.dumps(settings.record(), sort_keys=True),
        "final_train_loss": trained.final_loss,
        "train_iia": trained.train_iia,
        "train_examples": len(shard.train),
        "test_examples": len(shard.test),
        "path": basis_path,
    }
    record["sha256"] = _save_basis(
        root,
        basis_path,
        trained.basis,
        {"unit": cell.unit, **{k: str(v) for k, v in record.items() if k != "path"}},
    )
    table = evaluate(
        engine, shard.test, cell, trained.basis, shard.max_new_tokens, shard.eval_batch_size
    )
    true_labels = shard.labels[cell.target]  # the control is scored on the real labels too
    answers = table.column("answer").to_pylist()
    ids = table.column("example_id").to_pylist()
    hits = sum(1 for i, a in zip(ids, answers, strict=True) if a == true_labels[i])
    record["test_iia"] = hits / len(ids) if ids else 0.0
    relpath = output_relpath(shard.model_id, shard.run_id, cell.subspace_id)
    rows, sha = write_output_file(root, relpath, shard.run_id, table)
    return DasCellOutput(cell.subspace_id, relpath, rows, sha, record)


def das_cells_to_files(root: Path, engine: PatchEngine, shard: DasShard) -> list[DasCellOutput]:
    return [run_cell(root, engine, shard, cell) for cell in shard.cells]
