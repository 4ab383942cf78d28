"""`addpatch sweep`: every model x digit width, locally or on a Ray cluster, one combined report."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import (
    STORE_DEFAULT,
    AddendsOption,
    AnswerPrefixOption,
    BatchOption,
    ChatOption,
    ComponentsOption,
    ControlOption,
    DeviceOption,
    DtypeOption,
    EpochsOption,
    InterventionsOnlyOption,
    KindOption,
    KOption,
    LayersOption,
    LrOption,
    MethodOption,
    NoFilterOption,
    PositionsOption,
    PrefixOption,
    ScreenOption,
    SeedOption,
    ShotsOption,
    SizeOption,
    StoreOption,
    SuffixOption,
    TargetsOption,
    TemplateOption,
    TestShareOption,
    ValidateOption,
    das_options,
    split_targets,
)
from cli.output import best_cells_view, console, errors, print_frame

if TYPE_CHECKING:
    from addpatch.report import ReportFiles
    from addpatch.store.store import Store
    from addpatch.sweep.driver import CombinationResult, SweepSpec
    from addpatch.sweep.executors import Executor

RAY_LOCAL = "local"  # what a bare `--ray` means (see cli.main)
_RAY_ADDRESS = re.compile(r"local|auto|(ray://)?[A-Za-z0-9.\-]+:\d{1,5}")


def sweep(
    models: Annotated[
        str,
        typer.Option(
            "--models", help="Comma-separated models (shipped names, local paths or cached HF ids)."
        ),
    ],
    digits: Annotated[str, typer.Option("--digits", "-d", help="Comma-separated widths.")] = "2",
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run the tasks on Ray: a bare --ray starts a local Ray instance (or joins "
            "RAY_ADDRESS); --ray auto joins the cluster on this machine; --ray HOST:6379 or "
            "ray://HOST:10001 a remote one. Needs pip install 'addpatch[ray]'.",
            metavar="[ADDRESS]",
        ),
    ] = None,
    addends: AddendsOption = 2,
    kind: KindOption = "random",
    size: SizeOption = 256,
    seed: SeedOption = 0,
    layers: LayersOption = "all",
    positions: PositionsOption = "auto",
    components: ComponentsOption = "resid",
    method: MethodOption = "patch",
    screen: ScreenOption = None,
    validate: ValidateOption = None,
    k: KOption = "1,4,16",
    epochs: EpochsOption = 4,
    lr: LrOption = 1e-2,
    test_share: TestShareOption = 0.2,
    control: ControlOption = False,
    targets: TargetsOption = None,
    template: TemplateOption = None,
    prefix: PrefixOption = "",
    suffix: SuffixOption = "",
    shots: ShotsOption = 0,
    chat: ChatOption = False,
    answer_prefix: AnswerPrefixOption = "",
    no_filter: NoFilterOption = False,
    batch_size: BatchOption = 64,
    batches_per_task: Annotated[
        int, typer.Option(help="Batches one task patches (the unit a worker runs or retries).")
    ] = 4,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    interventions_only: InterventionsOnlyOption = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="Where to write the combined report.")
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the models' own Python code (off by default).")
    ] = False,
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Run every (model, digits) combination: pairs, filter, patching, scores, one report.

    Resumable: rerunning skips what the store already holds. With --ray, tasks (a run's
    batches, --batches-per-task at a time) run on Ray workers, one GPU each when the cluster
    has GPUs; workers write Parquet files into the store, which must be on a filesystem they
    all see, and only this process registers them.

    \b
    Example:
        addpatch sweep --models tiny-adder-digits,tiny-adder-chunks --digits 2 --ray
        addpatch sweep --models ~/models/Llama-3.1-8B,~/models/gemma-2-9b --digits 2,3 --ray auto
        addpatch sweep --models ~/models/Qwen3-0.6B --digits 1,2 --shots 3 --chat
        addpatch sweep --models ~/models/Qwen3-0.6B --digits 1 --chat --answer-prefix 'The sum is'
        addpatch sweep --models tiny-adder-digits --digits 2,3 --interventions-only
        addpatch sweep --models tiny-adder-digits --digits 2,3 --method attribution --screen 20
        addpatch sweep --digits 2,3 --method das --targets C_1 --k 4 --layers 1 --positions last
    """
    from addpatch.engine.components import parse_components
    from addpatch.engine.positions import resolve_position_set
    from addpatch.errors import BadInput
    from addpatch.experiment.attribution import check_method
    from addpatch.output_paths import output_dir_check
    from addpatch.store.store import Store
    from addpatch.sweep.driver import SweepSpec, run_sweep, sweep_device, validate_sweep
    from addpatch.sweep.executors import LocalExecutor, RayExecutor

    started = time.perf_counter()
    try:
        widths = [int(d) for d in digits.split(",") if d.strip()]
    except ValueError:
        raise BadInput(f"cannot read --digits {digits!r}; use a list like 2,3,4") from None
    spec = SweepSpec(
        models=[m.strip() for m in models.split(",") if m.strip()],
        digits=widths,
        addends=addends,
        kind=kind,
        size=size,
        seed=seed,
        layers=layers,
        positions=positions,
        components=tuple(parse_components(components)),
        targets=split_targets(targets),
        batch_size=batch_size,
        batches_per_task=batches_per_task,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        templates=tuple(template) if template else None,
        prefix=prefix,
        suffix=suffix,
        shots=shots,
        chat=chat,
        answer_prefix=answer_prefix,
        filtered=not no_filter,
        method=method,
        das=das_options(k, epochs, lr, test_share, control),
    )
    check_method(method, screen, validate)
    if ray is not None and not _RAY_ADDRESS.fullmatch(ray):
        raise BadInput(
            f"cannot read --ray {ray!r}; give no value (a local instance), auto, HOST:PORT or "
            "ray://HOST:PORT"
        )
    if widths:  # `auto` positions: the query's tokens when the prompt is more than the query
        spec = replace(spec, positions=resolve_position_set(positions, spec.task(widths[0])))
    validate_sweep(spec)  # bad input fails before Ray starts or the store is touched
    output_dir_check(report_dir)
    executor = (
        RayExecutor(None if ray == RAY_LOCAL else ray) if ray is not None else LocalExecutor()
    )
    try:
        checked = sweep_device(spec, executor)
        console.print(f"Sweep on {executor.describe()}")
        console.print(
            f"{len(spec.models) * len(spec.digits)} combinations: {', '.join(spec.models)} "
            f"x {spec.digits} digits"
        )
        opened = Store.open(store, create=True)
        files: ReportFiles | None
        with opened.writer():
            results = run_sweep(opened, spec, executor, echo=console.print, checked=checked)
            _check_some_run(results)  # warns about skipped combinations
            if method == "attribution":
                files = _attribution(
                    opened,
                    spec,
                    results,
                    executor,
                    (screen, validate),
                    checked,
                    not interventions_only,
                )
            else:
                files = None if interventions_only else _report(opened, spec, results, report_dir)
    finally:
        executor.shutdown()
    console.print(f"Store:  {opened.root.resolve()}")
    if files is None:
        run_ids = ",".join(str(r.run_id) for r in results if r.run_id is not None)
        console.print(
            f"Runs {run_ids}: score with `addpatch score --run-id ID`, "
            "report with `addpatch report`"
        )
    elif method == "attribution":
        console.print(f"Reports: {files.html.parent.parent.resolve()}/run-ID/attribution.html")
    else:
        console.print(f"Report: {files.html.resolve()}  (+ {len(files.pngs)} PNG heatmaps)")
    console.print(f"Done in {time.perf_counter() - started:.1f} s")


def _attribution(
    opened: Store,
    spec: SweepSpec,
    results: list[CombinationResult],
    executor: Executor,
    exact: tuple[int | None, int | None],  # --screen, --validate
    checked: tuple[str, str],
    write_reports: bool,
) -> ReportFiles | None:
    """Screen each attribution run (--screen) and patch its validation sample (--validate),
    print its best cells, write its report (unless --interventions-only)."""
    import polars as pl

    from addpatch.experiment.attribution import ranked_cells, validation_size
    from addpatch.report.attribution import attribution_report
    from addpatch.sweep.screen import run_screen

    files = None
    frames = []
    for result in results:
        if result.run_id is None:
            continue
        screen, sample = exact[0], validation_size(*exact)
        if screen is not None or sample:
            run_screen(
                opened,
                spec,
                result,
                screen,
                executor,
                console.print,
                checked=checked,
                sample=sample,
            )
        best = ranked_cells(opened, result.run_id, top=1)
        frames.append(best.with_columns(pl.lit(result.model).alias("model")))
        if write_reports:
            out_dir = opened.root / "reports" / f"run-{result.run_id}"
            files = attribution_report(opened, result.run_id, out_dir)
    columns = ["run_id", "model", "target", "component", "head", "layer", "position_name"]
    print_frame(
        pl.concat(frames).select([*columns, "mean_estimate", "n"]),
        title="Best cell per variable, component and run (attribution: mean estimate)",
    )
    return files


def _check_some_run(results: list[CombinationResult]) -> None:
    """Warn about skipped combinations; BadInput when every one was skipped."""
    from addpatch.errors import BadInput

    for result in results:
        if result.skipped_reason:
            errors.print(f"Warning: {result.model}, {result.digits} digits skipped")
    if all(r.run_id is None for r in results):
        raise BadInput("no combination kept any pair; use models that can add at these widths")


def _report(
    opened: Store, spec: SweepSpec, results: list[CombinationResult], out: Path | None
) -> ReportFiles:
    """Print each run's best cells, write the combined report."""
    import polars as pl

    from addpatch.experiment.reporting import report_runs
    from addpatch.scoring import best_cells
    from addpatch.sweep.driver import sweep_report_dir

    runs = [r for r in results if r.run_id is not None]
    best = pl.concat([best_cells(opened, run_id=r.run_id, targets=r.targets) for r in runs])
    shown = ["component", "head"] if spec.components != ("resid",) else []
    columns = ["run_id", "model", "num_digits", "target", *shown, "layer", "position_label"]
    print_frame(
        best_cells_view(best, [*columns, "iia", "iia_low", "iia_high", "baseline"]),
        title="Best cell per variable and run (95% interval; not localized: none above baseline)",
    )
    out_dir = out or sweep_report_dir(opened, results)
    run_ids = [r.run_id for r in runs if r.run_id is not None]  # all of them
    return report_runs(opened, run_ids, spec.targets, out_dir)
