"""Run the intervention sweep of a model over a dataset's kept pairs, streaming to the store.

Each batch of examples becomes one Parquet file, written atomically and then registered; a run
with the same configuration resumes by skipping the batches already registered.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import pyarrow as pa
import torch

from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import highlight, select_positions
from addpatch.errors import BadInput
from addpatch.experiment.datasets import load_pairs
from addpatch.experiment.filtering import answer_budget, layout_of
from addpatch.experiment.progress import Progress, no_progress
from addpatch.experiment.provenance import environment
from addpatch.store import catalog
from addpatch.store.outputs import output_relpath, write_output_file
from addpatch.store.store import Store

ENGINE_VERSION = 1  # bump when a change to the engine changes its outputs


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    examples: int
    layers: list[int]
    positions: list[str]
    highlighted: str  # the first example's prompt with the patched tokens marked
    batches_run: int
    batches_skipped: int
    interventions: int
    wall_time_s: float

    @property
    def interventions_per_s(self) -> float:
        return self.interventions / self.wall_time_s if self.wall_time_s > 0 else 0.0


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """`all` (embeddings -1 and every layer), or a list like `-1,0,5` or a range `0-11`."""
    if spec == "all":
        return list(range(-1, num_layers))
    layers: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                layers += list(range(int(lo), int(hi) + 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise BadInput(
            f"cannot read layers {spec!r}; use all, a list like -1,0,3 or a range 0-11"
        ) from None
    bad = [x for x in layers if not -1 <= x < num_layers]
    if bad or not layers:
        raise BadInput(
            f"layer {bad[0] if bad else spec} is outside -1..{num_layers - 1} for this model "
            "(-1 is the embedding output)"
        )
    return sorted(set(layers))


def run_interventions(
    store: Store,
    engine: PatchEngine,
    *,
    model_id: int,
    model_provenance: dict,
    dataset_id: int,
    layers: list[int],
    position_set: str,
    batch_size: int,
    seed: int,
    dtype: str,
    progress: Progress = no_progress,
) -> RunSummary:
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {batch_size}")
    task, ids, pairs = load_pairs(store, dataset_id)
    with store.connect(read_only=True) as conn:
        kept = set(catalog.kept_example_ids(conn=conn, model_id=model_id, dataset_id=dataset_id))
    chosen = [(i, p) for i, p in zip(ids, pairs, strict=True) if i in kept]
    if not chosen:
        raise BadInput(
            "no filtered examples for this model and dataset; run `addpatch dataset` first"
        )
    prompt_pairs = [
        PromptPair(i, layout_of(engine, p.base), layout_of(engine, p.counterfactual))
        for i, p in chosen
    ]
    first = prompt_pairs[0].base
    positions = select_positions(first, position_set, task.num_addends, task.num_digits)
    largest = task.num_addends * (10**task.num_digits - 1)
    max_new_tokens = answer_budget(engine, largest)
    batches = [prompt_pairs[s : s + batch_size] for s in range(0, len(prompt_pairs), batch_size)]
    config = {
        "engine": ENGINE_VERSION,
        "model_id": model_id,
        "dataset_id": dataset_id,
        "examples": [p.example_id for p in prompt_pairs],
        "layers": layers,
        "positions": positions,
        "max_new_tokens": max_new_tokens,
        "dtype": dtype,
        "batch_size": batch_size,
    }
    config_sha = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    device = str(engine.device)
    with store.connect() as conn:
        found = catalog.find_run(conn=conn, config_sha256=config_sha)
        if found is None:
            run_id = catalog.insert_run(
                conn=conn,
                model_id=model_id,
                dataset_id=dataset_id,
                config_sha256=config_sha,
                layers=layers,
                position_set=position_set,
                positions=[(n, first.tokens[first.aliases[n]]) for n in positions],
                max_new_tokens=max_new_tokens,
                dtype=dtype,
                device=device,
                batch_size=batch_size,
                seed=seed,
                num_examples=len(prompt_pairs),
                num_batches=len(batches),
                provenance={**environment(), **model_provenance, "device": device, "dtype": dtype},
            )
        else:
            run_id = found[0]
        done = catalog.registered_batches(conn=conn, run_id=run_id)

    cells = len(layers) * len(positions)
    started = time.perf_counter()
    ran = 0
    for index, batch in enumerate(batches):
        if index in done:
            progress("interventions", index + 1, len(batches))
            continue
        tables = list(engine.sweep(batch, layers, positions, max_new_tokens))
        relpath = output_relpath(model_id, run_id, index)
        rows, sha = write_output_file(store.root, relpath, run_id, pa.concat_tables(tables))
        with store.connect() as conn:
            catalog.register_output_file(
                conn=conn, run_id=run_id, batch_index=index, path=relpath, rows=rows, sha256=sha
            )
        ran += 1
        progress("interventions", index + 1, len(batches))
    wall = time.perf_counter() - started
    interventions = sum(len(b) for i, b in enumerate(batches) if i not in done) * cells
    with store.connect() as conn:
        if ran or found is None or found[1] != "complete":
            catalog.finish_run(
                conn=conn,
                run_id=run_id,
                wall_time_s=round(wall, 3),
                interventions_per_s=round(interventions / wall, 1) if wall > 0 else 0.0,
            )
    return RunSummary(
        run_id=run_id,
        examples=len(prompt_pairs),
        layers=layers,
        positions=positions,
        highlighted=highlight(first, positions),
        batches_run=ran,
        batches_skipped=len(batches) - ran,
        interventions=interventions,
        wall_time_s=wall,
    )


def torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
