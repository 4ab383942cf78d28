"""The steps of an attribution run, and of a screen (attribution, then exact patching of the
best cells): plan it, open it, score a batch to a file, register it, pick the screened cells.

An attribution run is a run like any other (`runs` row, positions, provenance, resume by
registered batches), with `method: attribution` and its targets in its configuration; its
batches are Parquet files under attributions/ registered in `attribution_files`. The sweep
driver (addpatch/sweep/driver.py) calls these steps when `SweepSpec.method` is `attribution`,
and `SweepSpec.screen` makes a patch run exact on the screened cells only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from addpatch.engine.attribution import attribute
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.errors import BadInput
from addpatch.experiment.interventions import (
    OutputFile,
    RunPlan,
    halving_on_oom,
    open_run,
    register_output,
)
from addpatch.experiment.labels import ensure_labels
from addpatch.queries import get_query, run_query
from addpatch.store import attribution_reads as reads
from addpatch.store import runs
from addpatch.store.attribution_reads import labels_of
from addpatch.store.attributions import (
    METHOD,
    Cell,
    attribution_relpath,
    insert_screened_cells,
    register_attribution_file,
    registered_attribution_batches,
    unreadable_attribution_files,
    unregister_attribution_files,
    write_attribution_file,
)
from addpatch.store.store import Store
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import generate_pairs
from addpatch.task.labels import default_targets, label_many

METHODS = ("patch", "attribution", "das")  # `--method`; patch: exact interchange interventions
DEFAULT_VALIDATE = 64  # cells per component patched exactly at random, when there is no screen


def check_method(method: str, screen: int | None, validate: int | None = None) -> None:
    """BadInput for an unknown method, or a screen or validation sample without attribution's
    prerequisites."""
    if method not in METHODS:
        raise BadInput(f"unknown method {method!r}; use one of: {', '.join(METHODS)}")
    if validate is not None:
        if validate < 0:
            raise BadInput(
                f"--validate {validate}: give a number of cells per component, 0 for none "
                "(e.g. --validate 64)"
            )
        if method != "attribution":
            raise BadInput(
                "--validate checks attribution's estimates against exact patching: add "
                "--method attribution"
            )
    if screen is None:
        return
    if screen < 1:
        raise BadInput(f"--screen {screen}: screen at least 1 cell per target (e.g. --screen 20)")
    if method != "attribution":
        raise BadInput(
            "--screen ranks cells by attribution patching first: add --method attribution"
        )


def validation_size(screen: int | None, validate: int | None) -> int:
    """Cells per component an attribution run patches exactly at random to check its estimates:
    `validate` when given, else `DEFAULT_VALIDATE` without a screen and none with one (the
    screen's cells are checked already, and `--screen N` patches those cells and no others)."""
    if validate is not None:
        return validate
    return 0 if screen is not None else DEFAULT_VALIDATE


def check_informative(
    task: AdditionTask, kind: str, size: int, seed: int, targets: list[str]
) -> None:
    """BadInput when a named target's label equals the base answer in every pair the dataset
    will hold (generated here in memory, nothing stored): attribution has no metric for it."""
    pairs = generate_pairs(kind, task, size, seed)
    for target in targets:
        labels = label_many(task, pairs, target)
        if all(value == sum(p.base.numbers) for p, (_, value) in zip(pairs, labels, strict=True)):
            raise BadInput(
                f"target {target} has no informative example: its label equals the base answer "
                f"in all {len(pairs)} pairs, so attribution has no metric for it; drop it from "
                "--targets, or use another --kind"
            )


@dataclass(frozen=True)
class AttributionPlan(RunPlan):
    """A run plan whose cells are scored by attribution patching for `targets`."""

    targets: tuple[str, ...] = ()

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "method": METHOD, "targets": list(self.targets)}


@dataclass(frozen=True)
class ScreenSelection:
    """The cells to patch exactly after an attribution run: those it ranked best (target, cell,
    rank, mean estimate each; --screen N) and a seeded random sample of `sample_size` cells per
    component (all of a component with fewer) to check the estimates against (--validate N)."""

    attribution_run_id: int
    ranked: tuple[tuple[str, Cell, int, float], ...]
    sampled: tuple[Cell, ...] = ()
    sample_size: int = 0

    @property
    def cells(self) -> frozenset[Cell]:
        return frozenset(cell for _, cell, _, _ in self.ranked) | frozenset(self.sampled)

    @property
    def sample_record(self) -> dict[str, int]:
        """What the exact run's config and provenance say of the validation sample."""
        return {"validation_sample": self.sample_size} if self.sample_size else {}


@dataclass(frozen=True)
class ScreenPlan(RunPlan):
    """A patch run of only the screened cells."""

    screen: ScreenSelection | None = None

    @property
    def config(self) -> dict[str, Any]:
        assert self.screen is not None
        cells = sorted(self.screen.cells, key=_cell_order)
        return {
            **super().config,
            "screened_from": self.screen.attribution_run_id,
            "cells": [list(c) for c in cells],
            **self.screen.sample_record,
        }


def _cell_order(cell: Cell) -> tuple[str, int, int, int]:
    component, layer, position, head = cell
    return component, layer, position, -1 if head is None else head


def attribution_plan(store: Store, plan: RunPlan, targets: list[str] | None) -> AttributionPlan:
    """The plan with its targets (default: the task's, with its digit tokens), labels stored."""
    with store.connect(read_only=True) as conn:
        from addpatch.experiment.datasets import dataset_task

        task = dataset_task(conn, plan.dataset_id)
    chosen = targets or default_targets(task, plan.digit_tokens)
    canonical = ensure_labels(store, plan.dataset_id, chosen)
    fields = {name: getattr(plan, name) for name in plan.__dataclass_fields__}
    return AttributionPlan(**fields, targets=tuple(canonical))


def screen_plan(plan: RunPlan, screen: ScreenSelection) -> ScreenPlan:
    fields = {name: getattr(plan, name) for name in plan.__dataclass_fields__}
    return ScreenPlan(**fields, screen=screen)


def plan_labels(store: Store, plan: AttributionPlan) -> dict[str, dict[int, int]]:
    """target -> example id -> label, for the plan's targets and examples."""
    wanted = {p.example_id for batch in plan.batches for p in batch}
    with store.connect(read_only=True) as conn:
        labels = labels_of(conn, plan.dataset_id, list(plan.targets))
    return {t: {i: v for i, v in by.items() if i in wanted} for t, by in labels.items()}


def open_attribution_run(
    store: Store, plan: AttributionPlan, *, device: str, seed: int, provenance: dict[str, Any]
) -> tuple[int, str | None, set[int]]:
    """The run's id, its status, and its registered batches (damaged files are unregistered)."""
    run_id, status, _ = open_run(
        store,
        plan,
        device=device,
        seed=seed,
        model_provenance={**provenance, "method": METHOD, "targets": list(plan.targets)},
    )
    with store.connect(read_only=True) as conn:
        damaged = unreadable_attribution_files(conn=conn, root=store.root, run_id=run_id)
    if damaged:
        with store.writer(), store.connect() as conn:
            unregister_attribution_files(conn=conn, root=store.root, paths=damaged)
        status = "running"
    with store.connect(read_only=True) as conn:
        return run_id, status, registered_attribution_batches(conn=conn, run_id=run_id)


def open_screen_run(
    store: Store, plan: ScreenPlan, *, device: str, seed: int, provenance: dict[str, Any]
) -> tuple[int, str | None, set[int]]:
    """`open_run` for the screened cells, recording which cells were screened in (and, in the
    run's provenance, the validation sample's size per component)."""
    assert plan.screen is not None
    opened = open_run(
        store,
        plan,
        device=device,
        seed=seed,
        model_provenance={
            **provenance,
            "method": "patch",
            "screened_from": plan.screen.attribution_run_id,
            **plan.screen.sample_record,
        },
    )
    with store.writer(), store.connect() as conn:
        insert_screened_cells(
            conn=conn,
            run_id=opened[0],
            attribution_run_id=plan.screen.attribution_run_id,
            ranked=list(plan.screen.ranked),
        )
    return opened


def attribute_batch_to_file(
    root: Path,
    engine: PatchEngine,
    *,
    model_id: int,
    run_id: int,
    batch_index: int,
    batch: list[PromptPair],
    labels: dict[str, dict[int, int]],
    layers: list[int],
    positions: list[str],
    max_new_tokens: int,
    components: tuple[str, ...] | list[str],
) -> OutputFile:
    """Score every cell of one batch and write it as the batch's Parquet file (not registered).
    When the device runs out of memory, the batch is scored in halves (down to one example)."""
    tables, halvings, smallest = _attribute_halving_on_oom(
        engine, batch, labels, layers, positions, max_new_tokens, components
    )
    relpath = attribution_relpath(model_id, run_id, batch_index)
    rows, sha = write_attribution_file(root, relpath, run_id, pa.concat_tables(tables))
    return OutputFile(batch_index, relpath, rows, sha, halvings, smallest if halvings else 0)


def _attribute_halving_on_oom(
    engine: PatchEngine,
    batch: list[PromptPair],
    labels: dict[str, dict[int, int]],
    layers: list[int],
    positions: list[str],
    max_new_tokens: int,
    components: tuple[str, ...] | list[str],
) -> tuple[list[pa.Table], int, int]:
    """The batch's tables, the halvings made and the smallest piece scored (`halving_on_oom`)."""
    return halving_on_oom(
        batch,
        lambda pairs: [
            attribute(
                engine, pairs, labels, layers, positions, max_new_tokens, components=components
            )
        ],
    )


def register_attribution(store: Store, run_id: int, output: OutputFile) -> None:
    register_output(store, run_id, output, register_attribution_file)


def ranked_cells(store: Store, run_id: int, *, top: int | None = None) -> pl.DataFrame:
    """queries/attribution_cells.sql for one run: cells by mean estimate per target/component."""
    params: dict[str, object] = {"run_id": run_id}
    if top is not None:
        params["top"] = top
    with store.connect(read_only=True) as conn:
        return run_query(conn, get_query("attribution_cells"), params)


def screen_selection(
    store: Store,
    run_id: int,
    top: int | None,
    required: list[str] | None = None,
    *,
    sample: int = 0,
    seed: int = 0,
) -> ScreenSelection:
    """The `top` cells of each target by mean estimate (over every component of the run; none
    when `top` is None), and `sample` cells per component drawn at random with `seed`; or
    BadInput naming a `required` target that no example has a metric for (with `top`)."""
    with store.connect(read_only=True) as conn:
        counts = reads.examples_without_metric(conn, run_id)
        best = reads.best_by_estimate(conn, run_id, top) if top is not None else []
        sampled = sample_cells(reads.cells_of_run(conn, run_id), sample, seed) if sample else ()
    screened_for = required if top is not None else None  # a sample alone needs no metric
    empty = [
        str(row["target"])
        for row in counts.iter_rows(named=True)
        if row["examples"] == row["without_metric"]
        and screened_for
        and row["target"] in screened_for
    ]
    if empty:
        raise BadInput(
            f"target {empty[0]} has no informative example in attribution run {run_id} (its "
            "label equals the base answer in every example): drop it from --targets, or use "
            "more pairs (--size)"
        )
    ranked = []
    rank: dict[str, int] = {}
    for target, cell, mean in best:
        rank[target] = rank.get(target, 0) + 1
        ranked.append((target, cell, rank[target], mean))
    return ScreenSelection(run_id, tuple(ranked), sampled, sample)


def sample_cells(cells: list[Cell], per_component: int, seed: int) -> tuple[Cell, ...]:
    """`per_component` cells of each component drawn at random (all of them where there are
    fewer): the same cells for the same cells, count and seed, whatever order they come in."""
    chosen: list[Cell] = []
    for component in sorted({c[0] for c in cells}):
        pool = sorted((c for c in cells if c[0] == component), key=_cell_order)
        rng = random.Random(f"validation:{seed}:{component}")
        chosen += pool if len(pool) <= per_component else rng.sample(pool, per_component)
    return tuple(sorted(chosen, key=_cell_order))


def examples_without_metric(store: Store, run_id: int) -> pl.DataFrame:
    """Per target: examples scored, and those without a metric (and why)."""
    with store.connect(read_only=True) as conn:
        return reads.examples_without_metric(conn, run_id)


def run_methods(store: Store, run_ids: list[int]) -> dict[int, str]:
    """Each run's method (`patch` for runs made before methods existed)."""
    import json

    with store.connect(read_only=True) as conn:
        summaries = runs.run_summaries(conn, run_ids)
    return {s.run_id: str(json.loads(s.provenance_json).get("method", "patch")) for s in summaries}
