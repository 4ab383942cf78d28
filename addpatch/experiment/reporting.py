"""Build the report of runs from the store's SQL results (never from a run's memory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from addpatch.errors import BadInput
from addpatch.probabilities import MetricUnavailable, label_logprobs
from addpatch.queries import get_query, run_query
from addpatch.report import CellExamples, ReportFiles, build_report
from addpatch.report.components import check_heads_position, component_facets
from addpatch.report.subspaces import best_rank_per_cell
from addpatch.scoring import scores
from addpatch.store import catalog, runs
from addpatch.store.read_check import check_outputs, check_outputs_on
from addpatch.store.store import Store
from addpatch.store.subspaces import run_subspaces
from addpatch.task.addition import AdditionTask
from addpatch.task.labels import default_targets, resolve_target


def runs_info(store: Store, run_ids: list[int]) -> list[dict[str, Any]]:
    with store.connect(read_only=True) as conn:
        summaries = runs.run_summaries(conn, run_ids)
    info = []
    for summary in summaries:
        prov, keep, ds = summary.provenance_json, summary.keep_rate, summary.dataset_id
        provenance = json.loads(prov)
        with store.connect(read_only=True) as conn:
            prompt = catalog.dataset_prompt(conn=conn, dataset_id=ds)
        filtered = provenance.pop("filtered", True)
        keep = None if keep is None or keep != keep else keep  # NaN: no answers stored
        if not filtered:  # every pair was patched; the model's own keep rate, if known, aside
            provenance["model_keep_rate"] = keep
            keep = 1.0
        provenance.update(
            {
                "dataset": summary.dataset,
                "prompt_templates": prompt["templates"],
                "prompt_prefix": prompt["prefix"],
                "prompt_suffix": prompt["suffix"],
                "prompt_shots": prompt["shots"],
                "prompt_chat": prompt["chat"],
                "prompt_answer_prefix": prompt["answer_prefix"],
                "filter": "kept pairs only"
                if filtered
                else "none (--no-filter): every pair patched, right or wrong",
                "seed": summary.seed,
                "batch_size": summary.batch_size,
                "wall_time_s": summary.wall_time_s,
                "interventions_per_s": summary.interventions_per_s,
            }
        )
        with store.connect(read_only=True) as conn:
            trained = run_subspaces(conn=conn, run_id=summary.run_id)
        info.append(
            {
                "run_id": summary.run_id,
                "model": summary.model,
                "num_digits": summary.num_digits,
                "examples": summary.num_examples,
                "keep_rate": float(keep or 0.0),
                "provenance": provenance,
                "subspaces": trained,  # a DAS run's trained subspaces (none for others)
            }
        )
    return info


def run_tasks(store: Store, run_ids: list[int]) -> dict[int, AdditionTask]:
    """The addition task (addends, digits) each run patched."""
    with store.connect(read_only=True) as conn:
        shapes = runs.run_shapes(conn, run_ids)
    return {run_id: AdditionTask(num_addends=k, num_digits=d) for run_id, (k, d) in shapes.items()}


def run_default_targets(store: Store, run_ids: list[int]) -> dict[int, list[str]]:
    """Each run's default targets: its task's variables, plus the joint digits of each token
    that holds several (recorded with the run; a chunked `579` gives `digit_0_0+...+digit_0_2`).
    """
    tasks = run_tasks(store, run_ids)
    with store.connect(read_only=True) as conn:
        groups = runs.run_digit_tokens(conn, run_ids)
    return {run_id: default_targets(task, groups[run_id]) for run_id, task in tasks.items()}


def targets_per_run(
    store: Store, run_ids: list[int], targets: list[str] | None
) -> dict[int, list[str]]:
    """Each run's targets: the given ones that its task has (default: all of its task's)."""
    if targets is None:
        return run_default_targets(store, run_ids)
    tasks = run_tasks(store, run_ids)
    chosen = {
        run_id: [t for t in targets if _has_target(task, t)] for run_id, task in tasks.items()
    }
    if not any(chosen.values()):
        resolve_target(next(iter(tasks.values())), targets[0])  # raises its error
    return chosen


def _has_target(task: AdditionTask, target: str) -> bool:
    try:
        resolve_target(task, target)
    except BadInput:
        return False
    return True


MAX_EXAMPLES_PER_CELL = 8
"""The drill-down embeds at most this many examples per heatmap cell..."""
MAX_EMBEDDED_EXAMPLES = 24_000
"""...and at most this many in all: with more cells, fewer per cell (at least 1). Each example
shown costs ~30 bytes (prompts are stored once per run), so the drill-down adds < 1 MB."""


def examples_per_cell(cells: int) -> int:
    """Examples embedded per cell for a report of `cells` heatmap cells."""
    return max(1, min(MAX_EXAMPLES_PER_CELL, MAX_EMBEDDED_EXAMPLES // max(1, cells)))


def cell_examples(
    store: Store,
    run_targets: list[tuple[int, str]],
    *,
    per_cell: int,
    informative: bool = False,
) -> pl.DataFrame:
    """`queries/cell_examples.sql` for every cell of each (run, target), on one connection."""
    query = get_query("cell_examples")
    with store.connect(read_only=True) as conn:
        check_outputs_on(conn, store.root, {run_id for run_id, _ in run_targets})
        frames = [
            run_query(
                conn,
                query,
                {
                    "run_id": run_id,
                    "target": target,
                    "per_cell": per_cell,
                    "informative": informative,
                },
                check_files=False,  # checked once above
            )
            for run_id, target in run_targets
        ]
    return pl.concat(frames) if frames else pl.DataFrame()


def report_runs(
    store: Store,
    run_ids: list[int],
    targets: list[str] | None,
    out_dir: Path,
    *,
    informative: bool = False,
    heads_position: str | None = None,
) -> ReportFiles:
    """One report over `run_ids`; runs of different widths each get the targets they have.
    `informative`: IIA over the examples whose label differs from the base answer only.

    Each component patched gets its own heatmaps (`report.components`); the heads' layer x head
    heatmaps are drawn at `heads_position` (default: each target's best residual position)."""
    check_heads_position(heads_position)  # before anything is scored or stored
    check_outputs(store, run_ids)  # damaged output files: refused before labels are stored
    per_run = targets_per_run(store, run_ids, targets)
    frames = [
        scores(store, run_id=run_id, targets=per_run[run_id], informative=informative)
        for run_id in run_ids
        if per_run.get(run_id)
    ]
    scored = best_rank_per_cell(pl.concat(frames)) if frames else pl.DataFrame()
    table = component_facets(scored, heads_position) if frames else pl.DataFrame()
    per_cell = examples_per_cell(table.height)
    run_targets = [(run_id, t) for run_id in run_ids for t in scores_targets(scored, run_id)]
    samples = cell_examples(store, run_targets, per_cell=per_cell, informative=informative)
    examples = CellExamples.from_frame(samples, per_cell)
    logprobs, notes = [], {}
    for run_id in run_ids:
        if not scores_targets(scored, run_id):
            continue
        try:
            logprobs.append(
                label_logprobs(
                    store,
                    run_id=run_id,
                    targets=scores_targets(scored, run_id),
                    informative=informative,
                )
            )
        except MetricUnavailable as error:
            notes[run_id] = str(error)
    if logprobs or notes:
        examples = examples.with_logprobs(
            pl.concat(logprobs) if logprobs else pl.DataFrame(), notes
        )
    return build_report(
        table, runs_info(store, run_ids), out_dir, examples=examples, informative=informative
    )


def scores_targets(table: pl.DataFrame, run_id: int) -> list[str]:
    """The canonical target names scored for one run."""
    if table.height == 0:
        return []
    part = table.filter(pl.col("run_id") == run_id)
    return part.get_column("target").unique(maintain_order=True).to_list()
