"""The steps of a run of interventions: plan it, open it, patch a batch to a file, register it.

Each batch of examples becomes one Parquet file, written atomically and then registered; a run
with the same configuration resumes by skipping the batches already registered. The sweep
driver (addpatch/sweep/driver.py) orchestrates these steps for `addpatch run` and `sweep`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import (
    DigitGroup,
    check_units,
    highlight,
    layout_input,
    select_positions,
    shared_digit_tokens,
    unit_text,
)
from addpatch.errors import BadInput
from addpatch.experiment.datasets import load_pairs
from addpatch.experiment.filtering import answer_budget
from addpatch.experiment.provenance import environment
from addpatch.store import catalog
from addpatch.store.outputs import output_relpath, write_output_file
from addpatch.store.store import Store
from addpatch.store.verify import unreadable_files, unregister_files

if TYPE_CHECKING:
    from addpatch.das.plan import DasPlan

ENGINE_VERSION = 1  # bump when a change to the engine changes its outputs


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
    position_tokens: list[tuple[str, str]]  # (name, token text in the first example; a unit's
    # texts joined by +)
    max_new_tokens: int
    layers: list[int]
    dtype: str
    batch_size: int
    batches: list[list[PromptPair]]
    highlighted: str  # the first example's prompt with the patched tokens marked
    digit_tokens: list[DigitGroup]  # (addend, digits) that share one token in every prompt
    filtered: bool = True  # False: every pair is patched (--no-filter)
    components: tuple[str, ...] = ("resid",)  # what is patched (components.COMPONENTS)

    @property
    def config(self) -> dict[str, Any]:
        # plain runs keep the configuration (and so the hash) they had before these options
        unfiltered = {} if self.filtered else {"unfiltered": True}
        extra = {} if self.components == ("resid",) else {"components": list(self.components)}
        return {
            **unfiltered,
            **extra,
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

    def cells(self, num_heads: int) -> int:
        """Cells per example: layers x positions per component (and x heads for heads)."""
        return len(self.positions) * sum(
            component_cells(c, self.layers, num_heads) for c in self.components
        )


def component_cells(component: str, layers: list[int], num_heads: int) -> int:
    """(layer[, head]) sites of a component: attn/mlp/heads have no layer -1 (embeddings)."""
    if component == "resid":
        return len(layers)
    per_layer = num_heads if component == "heads" else 1
    return sum(1 for layer in layers if layer >= 0) * per_layer


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
    components: tuple[str, ...] | list[str] = ("resid",),
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
        PromptPair(i, layout_input(tokenizer, p.base), layout_input(tokenizer, p.counterfactual))
        for i, p in chosen
    ]
    first = prompt_pairs[0].base
    positions = select_positions(first, position_set, task.num_addends, task.num_digits)
    check_units((layout for p in prompt_pairs for layout in (p.base, p.counterfactual)), positions)
    largest = task.num_addends * (10**task.num_digits - 1)
    return RunPlan(
        model_id=model_id,
        dataset_id=dataset_id,
        position_set=position_set,
        positions=positions,
        position_tokens=[(n, unit_text(first, n)) for n in positions],
        max_new_tokens=answer_budget(tokenizer, largest),
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
        components=tuple(components),
    )


def open_run(
    store: Store,
    plan: RunPlan,
    *,
    device: str,
    seed: int,
    model_provenance: dict[str, Any],
    das: DasPlan | None = None,
) -> tuple[int, str | None, set[int]]:
    """The run's id (inserted the first time), its stored status, and its registered batches
    (those whose files are whole: a missing or damaged one is unregistered, to be recomputed).
    With `das`, the run is that DAS run: its batches are its cells, its examples the test pairs.
    """
    config_sha256 = plan.config_sha256 if das is None else das.config_sha256
    with store.writer(), store.connect() as conn:
        found = catalog.find_run(conn=conn, config_sha256=config_sha256)
        if found is None:
            run_id = catalog.insert_run(
                conn=conn,
                model_id=plan.model_id,
                dataset_id=plan.dataset_id,
                config_sha256=config_sha256,
                layers=plan.layers,
                position_set=plan.position_set,
                positions=plan.position_tokens,
                max_new_tokens=plan.max_new_tokens,
                dtype=plan.dtype,
                device=device,
                batch_size=plan.batch_size,
                seed=seed,
                num_examples=plan.num_examples if das is None else len(das.test),
                num_batches=len(plan.batches) if das is None else len(das.cells),
                provenance={
                    **environment(),
                    **model_provenance,
                    "device": device,
                    "dtype": plan.dtype,
                    "digit_tokens": plan.digit_tokens,
                    "filtered": plan.filtered,
                    "components": list(plan.components),
                    **({} if das is None else {"method": "das", "das": das.config["das"]}),
                },
                digit_tokens=plan.digit_tokens,
                method=None if das is None else "das",
            )
            return run_id, None, set()
        run_id, status = found
    damaged = unreadable_files(store, run_id)
    if damaged:  # deleted or damaged since: recompute exactly those batches
        unregister_files(store, damaged)
        status = "running"
    with store.connect(read_only=True) as conn:
        return run_id, status, catalog.registered_batches(conn=conn, run_id=run_id)


@dataclass(frozen=True)
class OutputFile:
    batch_index: int
    relpath: str
    rows: int
    sha256: str
    halvings: int = 0  # times the batch was halved after running out of GPU memory
    smallest: int = 0  # examples in the smallest piece it ran in (when halved)


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError)


def halving_on_oom(
    batch: list[PromptPair], run: Callable[[list[PromptPair]], list[pa.Table]]
) -> tuple[list[pa.Table], int, int]:
    """`run(batch)`'s tables; when the device runs out of memory, the batch is split in halves
    (again and again, down to single examples) and each half runs on its own.

    Returns the tables, the number of halvings and the size of the smallest piece run.
    """
    try:
        return run(batch), 0, len(batch)
    except Exception as error:
        if not _is_out_of_memory(error) or len(batch) == 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    middle = len(batch) // 2
    tables, halvings, smallest = [], 1, len(batch)
    for half in (batch[:middle], batch[middle:]):
        part, more, least = halving_on_oom(half, run)
        tables += part
        halvings += more
        smallest = min(smallest, least)
    return tables, halvings, smallest


def sweep_halving_on_oom(
    engine: PatchEngine,
    batch: list[PromptPair],
    layers: list[int],
    positions: list[str],
    max_new_tokens: int,
    components: tuple[str, ...] | list[str],
    only: AbstractSet[tuple[str, int, int, int | None]] | None = None,
) -> tuple[list[pa.Table], int, int]:
    """The batch's output tables, patched in halves when the device runs out of memory
    (`halving_on_oom`): the tables, the number of halvings, the smallest piece run."""
    return halving_on_oom(
        batch,
        lambda pairs: list(
            engine.sweep(pairs, layers, positions, max_new_tokens, components=components, only=only)
        ),
    )


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
    components: tuple[str, ...] | list[str] = ("resid",),
    only: AbstractSet[tuple[str, int, int, int | None]] | None = None,
) -> OutputFile:
    """Patch every cell of one batch and write it as the batch's Parquet file (not registered).

    The file's path depends only on (model, run, batch), so doing a batch again replaces its file
    atomically: a retried worker never leaves a second copy.
    """
    tables, halvings, smallest = sweep_halving_on_oom(
        engine, batch, layers, positions, max_new_tokens, components, only
    )
    relpath = output_relpath(model_id, run_id, batch_index)
    rows, sha = write_output_file(root, relpath, run_id, pa.concat_tables(tables))
    return OutputFile(batch_index, relpath, rows, sha, halvings, smallest if halvings else 0)


class FileRegistrar(Protocol):
    def __call__(
        self,
        *,
        conn: duckdb.DuckDBPyConnection,
        run_id: int,
        batch_index: int,
        path: str,
        rows: int,
        sha256: str,
    ) -> None: ...


def register_output(
    store: Store,
    run_id: int,
    output: OutputFile,
    register_file: FileRegistrar | None = None,
) -> None:
    """Register a batch's file (patched outputs, or with `register_file` another kind) and,
    when the batch ran out of memory and was split, say so in the run's provenance."""
    register = register_file or catalog.register_output_file  # looked up when called
    with store.writer(), store.connect() as conn:
        register(
            conn=conn,
            run_id=run_id,
            batch_index=output.batch_index,
            path=output.relpath,
            rows=output.rows,
            sha256=output.sha256,
        )
        if output.halvings:
            catalog.record_oom_retry(
                conn=conn,
                run_id=run_id,
                retry={
                    "batch": output.batch_index,
                    "halvings": output.halvings,
                    "smallest_batch": output.smallest,
                },
            )


def finish(store: Store, run_id: int, *, wall_time_s: float, interventions: int) -> None:
    with store.writer(), store.connect() as conn:
        catalog.finish_run(
            conn=conn,
            run_id=run_id,
            wall_time_s=round(wall_time_s, 3),
            interventions_per_s=round(interventions / wall_time_s, 1) if wall_time_s > 0 else 0.0,
        )


def torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
