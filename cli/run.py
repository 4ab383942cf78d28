"""`addpatch run`: dataset, filter, interventions, scores and report in one command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from addpatch.store.store import Store
    from addpatch.task.addition import AdditionTask

from addpatch.errors import BadInput
from addpatch.settings import DEFAULT_MODEL
from cli.options import (
    STORE_DEFAULT,
    AddendsOption,
    BatchOption,
    ChatOption,
    DeviceOption,
    DigitsOption,
    DtypeOption,
    KindOption,
    LayersOption,
    ModelOption,
    NoFilterOption,
    PositionsOption,
    PrefixOption,
    SeedOption,
    ShotsOption,
    SizeOption,
    StoreOption,
    SuffixOption,
    TargetsOption,
    TemplateOption,
    prompt_task,
    split_targets,
)
from cli.output import console, errors, print_frame, progress_bars


def run(
    model: ModelOption = DEFAULT_MODEL,
    digits: DigitsOption = 2,
    addends: AddendsOption = 2,
    kind: KindOption = "random",
    size: SizeOption = 256,
    seed: SeedOption = 0,
    layers: LayersOption = "all",
    positions: PositionsOption = "auto",
    targets: TargetsOption = None,
    template: TemplateOption = None,
    prefix: PrefixOption = "",
    suffix: SuffixOption = "",
    shots: ShotsOption = 0,
    chat: ChatOption = False,
    no_filter: NoFilterOption = False,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
    interventions_only: Annotated[
        bool,
        typer.Option(
            "--interventions-only", help="Stop after storing patched outputs (score later)."
        ),
    ] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="Where to write the report (default: STORE/reports/run-ID).")
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the model's own Python code (off by default).")
    ] = False,
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Run everything: pairs, filter, patching, SQL scores and the report.

    Generates counterfactual pairs, keeps those the model answers right on both prompts,
    patches every (layer, position) cell, streams each example's patched answer into the
    store, scores the target variables with SQL and writes the report.

    Rerunning the same command resumes: finished batches are not recomputed.

    \b
    Example:
        addpatch run                                  # tiny-adder-digits, 2 digits, 256 pairs
        addpatch run --model ~/models/Llama-3.1-8B --digits 3 --batch-size 256
        addpatch run --digits 1 --shots 2 --template '{num0}+{num1}=' --size 64
        addpatch run --model ~/models/SmolLM2-135M-Instruct --digits 1 --shots 3 --chat
        addpatch run --model ~/models/random-init --no-filter --size 32
    """
    from addpatch.engine.positions import resolve_position_set
    from addpatch.task.generators import GENERATORS
    from addpatch.task.labels import resolve_target

    started = time.perf_counter()
    # Check everything that needs no model first: bad input fails fast and touches nothing.
    task = prompt_task(
        addends=addends,
        digits=digits,
        template=template,
        prefix=prefix,
        suffix=suffix,
        shots=shots,
        chat=chat,
    )
    positions = resolve_position_set(positions, task)
    target_list = split_targets(targets)  # None: the run's defaults, known once it is planned
    for target in target_list or []:
        resolve_target(task, target)
    if kind not in GENERATORS:
        raise BadInput(f"unknown generator {kind!r}; choose one of: {', '.join(GENERATORS)}")
    if size < 1 or batch_size < 1:
        raise BadInput("--size and --batch-size must be at least 1")

    from addpatch.experiment.preflight import preflight
    from addpatch.models.loading import model_for_width
    from addpatch.store.store import Store

    model = model_for_width(model, digits)  # a per-width family picks its checkpoint

    # a model that is not there, or layers/positions it does not have, fail before any writing
    preflight(
        model=model,
        task=task,
        layers=layers,
        positions=positions,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    opened = Store.open(store, create=True)
    with opened.writer():
        _run_locked(
            opened,
            model=model,
            device=device,
            dtype=dtype,
            threads=threads,
            trust_remote_code=trust_remote_code,
            layers=layers,
            kind=kind,
            task=task,
            size=size,
            seed=seed,
            positions=positions,
            batch_size=batch_size,
            interventions_only=interventions_only,
            target_list=target_list,
            report_dir=report_dir,
            started=started,
            filtered=not no_filter,
        )


def _run_locked(
    opened: Store,
    *,
    model: str,
    device: str,
    dtype: str,
    threads: int,
    trust_remote_code: bool,
    layers: str,
    kind: str,
    task: AdditionTask,
    size: int,
    seed: int,
    positions: str,
    batch_size: int,
    interventions_only: bool,
    target_list: list[str] | None,
    report_dir: Path | None,
    started: float,
    filtered: bool = True,
) -> None:
    """The steps of `run`, while this process holds the store's writer lock."""
    from addpatch.experiment.datasets import create_dataset
    from addpatch.experiment.filtering import filter_dataset, low_keep_rate_hint
    from addpatch.experiment.interventions import parse_layers, run_interventions
    from addpatch.experiment.reporting import report_runs, run_default_targets
    from addpatch.experiment.session import load_into_store
    from addpatch.scoring import best_cells

    console.print(f"Loading [bold]{model}[/] ...")
    loaded = load_into_store(
        opened,
        model,
        device=device,
        dtype=dtype,
        threads=threads or None,
        trust_remote_code=trust_remote_code,
    )
    engine = loaded.engine
    console.print(
        f"  {loaded.provenance['architecture']}, {engine.num_layers} layers, on {engine.device} "
        f"({loaded.dtype})"
    )
    layer_list = parse_layers(layers, engine.num_layers)
    info = create_dataset(opened, kind=kind, task=task, size=size, seed=seed)
    console.print(
        f"Dataset [bold]{info.name}[/] ({'generated' if info.created else 'already stored'})"
    )
    with progress_bars() as progress:
        if filtered:
            summary = filter_dataset(
                opened,
                engine,
                model_id=loaded.model_id,
                dataset_id=info.id,
                batch_size=max(batch_size, 256),
                progress=progress,
            )
            console.print(
                f"Filter: kept {summary.kept}/{summary.total} pairs "
                f"(keep rate {summary.keep_rate:.1%})"
            )
            if summary.low:
                errors.print(
                    f"Warning: keep rate {summary.keep_rate:.1%} is under 50%; the model often "
                    "adds wrong"
                )
                errors.print(
                    low_keep_rate_hint(opened, model_id=loaded.model_id, dataset_id=info.id)
                )
        else:
            console.print("Filter: skipped (--no-filter), every pair is patched")
        result = run_interventions(
            opened,
            engine,
            model_id=loaded.model_id,
            model_provenance=loaded.provenance,
            dataset_id=info.id,
            layers=layer_list,
            position_set=positions,
            batch_size=batch_size,
            seed=seed,
            dtype=loaded.dtype,
            progress=progress,
            filtered=filtered,
        )
    console.print(f"Patched: {result.highlighted}")
    cells = len(result.layers) * len(result.positions)
    if result.batches_run:
        console.print(
            f"Run {result.run_id}: {result.examples} examples x {len(result.layers)} layers x "
            f"{len(result.positions)} positions = {result.examples * cells:,} interventions, "
            f"{result.interventions_per_s:,.0f}/s"
        )
    else:
        console.print(f"Run {result.run_id}: already complete in the store, nothing recomputed")
    if interventions_only:
        console.print(
            f"Store: {opened.root}  (score with `addpatch score --run-id {result.run_id}`)"
        )
        return
    chosen = target_list or run_default_targets(opened, [result.run_id])[result.run_id]
    best = best_cells(opened, run_id=result.run_id, targets=chosen)
    print_frame(
        best.select("target", "layer", "position", "position_label", "iia", "baseline", "n"),
        title=f"Best cell per variable (run {result.run_id}, IIA over {result.examples} examples)",
    )
    out_dir = report_dir or opened.root / "reports" / f"run-{result.run_id}"
    files = report_runs(opened, [result.run_id], target_list, out_dir)
    console.print(f"Store:  {opened.root.resolve()}")
    console.print(f"Report: {files.html.resolve()}  (+ {len(files.pngs)} PNG heatmaps)")
    console.print(f"Done in {time.perf_counter() - started:.1f} s")
