"""Run the intervention sweep of a model over a dataset's kept pairs, streaming to the store.

Each batch of examples becomes one Parquet file, written atomically and then registered; a run
with the same configuration resumes by skipping the batches already registered.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import DigitGroup, highlight, select_positions, shared_digit_tokens
from addpatch.errors import BadInput
from addpatch.experiment.datasets import load_pairs
from addpatch.experiment.filtering import answer_budget_of, layout_with
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


@dataclass(frozen=True)
class RunPlan:
    """What a run computes, fixed before any patching; its hash identifies the run for resuming."""

    model_id: int
    dataset_id: int
    position_set: str
    positions: list[str]
    position_tokens: list[tuple[str, str]]  # (name, token text in the first example)
    max_new_tokens: int
    layers: list[int]
    dtype: str
    batch_size: int
    batches: list[list[PromptPair]]
    highlighted: str  # the first example's prompt with the patched tokens marked
    digit_tokens: list[DigitGroup]  # (addend, digits) that share one token in every prompt
    filtered: bool = True  # False: every pair is patched (--no-filter)

    @property
    def config(self) -> dict:
        unfiltered = {} if self.filtered else {"unfiltered": True}  # plain runs keep their hash
        return {
            **unfiltered,
            "engine": ENGINE_VERSION,
            "model_id": self.model_id,
            "dataset_id": self.dataset_id,
            "examples": [p.example_id for b in self.batches for p in b],
            "layers": self.layers,
            "positions": self.positions,
            "max_new_tokens": self.max_new_tokens,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
        }

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()

    @property
    def num_examples(self) -> int:
        return sum(len(b) for b in self.batches)


def plan_run(
    store: Store,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_id: int,
    dataset_id: int,
    layers: list[int],
    position_set: str,
    batch_size: int,
    dtype: str,
    filtered: bool = True,
) -> RunPlan:
    """Lay out the model's kept pairs of the dataset (every pair when not `filtered`) and split
    them into batches (tokenizer only)."""
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {batch_size}")
    task, ids, pairs = load_pairs(store, dataset_id)
    if filtered:
        with store.connect(read_only=True) as conn:
            kept = set(
                catalog.kept_example_ids(conn=conn, model_id=model_id, dataset_id=dataset_id)
            )
    else:
        kept = set(ids)
    chosen = [(i, p) for i, p in zip(ids, pairs, strict=True) if i in kept]
    if not chosen:
        raise BadInput(
            "no filtered examples for this model and dataset; run `addpatch dataset` first"
        )
    prompt_pairs = [
        PromptPair(i, layout_with(tokenizer, p.base), layout_with(tokenizer, p.counterfactual))
        for i, p in chosen
    ]
    first = prompt_pairs[0].base
    positions = select_positions(first, position_set, task.num_addends, task.num_digits)
    largest = task.num_addends * (10**task.num_digits - 1)
    return RunPlan(
        model_id=model_id,
        dataset_id=dataset_id,
        position_set=position_set,
        positions=positions,
        position_tokens=[(n, first.tokens[first.aliases[n]]) for n in positions],
        max_new_tokens=answer_budget_of(tokenizer, largest),
        layers=layers,
        dtype=dtype,
        batch_size=batch_size,
        batches=[prompt_pairs[s : s + batch_size] for s in range(0, len(prompt_pairs), batch_size)],
        highlighted=highlight(first, positions),
        digit_tokens=shared_digit_tokens(
            (layout for p in prompt_pairs for layout in (p.base, p.counterfactual)),
            task.num_addends,
        ),
        filtered=filtered,
    )


def open_run(
    store: Store, plan: RunPlan, *, device: str, seed: int, model_provenance: dict
) -> tuple[int, str | None, set[int]]:
    """The run's id (inserted the first time), its stored status, and its registered batches."""
    with store.connect() as conn:
        found = catalog.find_run(conn=conn, config_sha256=plan.config_sha256)
        if found is None:
            run_id = catalog.insert_run(
                conn=conn,
                model_id=plan.model_id,
                dataset_id=plan.dataset_id,
                config_sha256=plan.config_sha256,
                layers=plan.layers,
                position_set=plan.position_set,
                positions=plan.position_tokens,
                max_new_tokens=plan.max_new_tokens,
                dtype=plan.dtype,
                device=device,
                batch_size=plan.batch_size,
                seed=seed,
                num_examples=plan.num_examples,
                num_batches=len(plan.batches),
                provenance={
                    **environment(),
                    **model_provenance,
                    "device": device,
                    "dtype": plan.dtype,
                    "digit_tokens": plan.digit_tokens,
                    "filtered": plan.filtered,
                },
            )
            return run_id, None, set()
        run_id, status = found
        return run_id, status, catalog.registered_batches(conn=conn, run_id=run_id)


@dataclass(frozen=True)
class OutputFile:
    batch_index: int
    relpath: str
    rows: int
    sha256: str


def patch_batch_to_file(
    root: Path,
    engine: PatchEngine,
    *,
    model_id: int,
    run_id: int,
    batch_index: int,
    batch: list[PromptPair],
    layers: list[int],
    positions: list[str],
    max_new_tokens: int,
) -> OutputFile:
    """Patch every cell of one batch and write it as the batch's Parquet file (not registered).

    The file's path depends only on (model, run, batch), so doing a batch again replaces its file
    atomically: a retried worker never leaves a second copy.
    """
    tables = list(engine.sweep(batch, layers, positions, max_new_tokens))
    relpath = output_relpath(model_id, run_id, batch_index)
    rows, sha = write_output_file(root, relpath, run_id, pa.concat_tables(tables))
    return OutputFile(batch_index, relpath, rows, sha)


def register_output(store: Store, run_id: int, output: OutputFile) -> None:
    with store.connect() as conn:
        catalog.register_output_file(
            conn=conn,
            run_id=run_id,
            batch_index=output.batch_index,
            path=output.relpath,
            rows=output.rows,
            sha256=output.sha256,
        )


def finish(store: Store, run_id: int, *, wall_time_s: float, interventions: int) -> None:
    with store.connect() as conn:
        catalog.finish_run(
            conn=conn,
            run_id=run_id,
            wall_time_s=round(wall_time_s, 3),
            interventions_per_s=round(interventions / wall_time_s, 1) if wall_time_s > 0 else 0.0,
        )


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
    filtered: bool = True,
) -> RunSummary:
    plan = plan_run(
        store,
        engine.tokenizer,
        model_id=model_id,
        dataset_id=dataset_id,
        layers=layers,
        position_set=position_set,
        batch_size=batch_size,
        dtype=dtype,
        filtered=filtered,
    )
    run_id, status, done = open_run(
        store, plan, device=str(engine.device), seed=seed, model_provenance=model_provenance
    )
    started = time.perf_counter()
    ran = 0
    for index, batch in enumerate(plan.batches):
        if index not in done:
            output = patch_batch_to_file(
                store.root,
                engine,
                model_id=model_id,
                run_id=run_id,
                batch_index=index,
                batch=batch,
                layers=plan.layers,
                positions=plan.positions,
                max_new_tokens=plan.max_new_tokens,
            )
            register_output(store, run_id, output)
            ran += 1
        progress("interventions", index + 1, len(plan.batches))
    wall = time.perf_counter() - started
    cells = len(plan.layers) * len(plan.positions)
    interventions = sum(len(b) for i, b in enumerate(plan.batches) if i not in done) * cells
    if ran or status != "complete":
        finish(store, run_id, wall_time_s=wall, interventions=interventions)
    return RunSummary(
        run_id=run_id,
        examples=plan.num_examples,
        layers=plan.layers,
        positions=plan.positions,
        highlighted=plan.highlighted,
        batches_run=ran,
        batches_skipped=len(plan.batches) - ran,
        interventions=interventions,
        wall_time_s=wall,
    )


def torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
