"""`addpatch run`: dataset, filter, interventions, scores and report in one command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from addpatch.settings import DEFAULT_MODEL
from cli.attribution import print_attribution
from cli.options import (
    STORE_DEFAULT,
    AddendsOption,
    AnswerPrefixOption,
    BatchOption,
    ChatOption,
    ComponentsOption,
    ControlOption,
    DeviceOption,
    DigitsOption,
    DtypeOption,
    EpochsOption,
    HeadsPositionOption,
    InformativeOption,
    InterventionsOnlyOption,
    KindOption,
    KOption,
    LayersOption,
    LrOption,
    MethodOption,
    ModelOption,
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
from cli.output import best_cells_view, console, errors, print_frame, progress_bars


def run(
    model: ModelOption = DEFAULT_MODEL,
    digits: DigitsOption = 2,
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
    heads_position: HeadsPositionOption = None,
    targets: TargetsOption = None,
    template: TemplateOption = None,
    prefix: PrefixOption = "",
    suffix: SuffixOption = "",
    shots: ShotsOption = 0,
    chat: ChatOption = False,
    answer_prefix: AnswerPrefixOption = "",
    no_filter: NoFilterOption = False,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
    interventions_only: InterventionsOnlyOption = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="Where to write the report (default: STORE/reports/run-ID).")
    ] = None,
    informative: InformativeOption = False,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the model's own Python code (off by default).")
    ] = False,
    k: KOption = "1,4,16",
    epochs: EpochsOption = 4,
    lr: LrOption = 1e-2,
    test_share: TestShareOption = 0.2,
    control: ControlOption = False,
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
        addpatch run --model ~/models/SmolLM2-135M-Instruct --digits 1 --chat --template 'What is {num0} + {num1}?' --answer-prefix 'The answer is'
        addpatch run --model ~/models/random-init --no-filter --size 32
        addpatch run --components resid,attn,mlp,heads   # also attention, MLP, each head
        addpatch run --method das --targets C_1 --k 1,4 --layers 1 --positions last,a1.d1+last
        addpatch run --method attribution --components resid,heads --screen 20
    """
    from addpatch.engine.components import parse_components
    from addpatch.pipeline import RunSpec, run_experiment

    started = time.perf_counter()
    spec = RunSpec(
        model=model,
        digits=digits,
        addends=addends,
        kind=kind,
        size=size,
        seed=seed,
        layers=layers,
        positions=positions,
        targets=split_targets(targets),
        templates=tuple(template) if template else None,
        prefix=prefix,
        suffix=suffix,
        shots=shots,
        chat=chat,
        answer_prefix=answer_prefix,
        filtered=not no_filter,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        threads=threads,
        trust_remote_code=trust_remote_code,
        interventions_only=interventions_only,
        informative=informative,
        components=tuple(parse_components(components)),
        heads_position=heads_position,
        report_dir=report_dir,
        method=method,
        das=das_options(k, epochs, lr, test_share, control),
        screen=screen,
        validate=validate,
    )
    with progress_bars() as progress:
        outcome = run_experiment(store, spec, echo=console.print, progress=progress)
    if method == "attribution":
        print_attribution(outcome, started)
        return
    result = outcome.result
    if result.low_keep_rate:
        errors.print(
            f"Warning: keep rate {result.keep_rate:.1%} is under 50%; the model often adds wrong"
        )
        errors.print(outcome.keep_rate_hint)
    console.print(f"Patched: {result.highlighted}")
    cells = len(result.layers) * len(result.positions)
    if result.batches_run and spec.method == "das":
        console.print(
            f"DAS run {outcome.run_id}: {result.batches_run} subspaces trained and evaluated on "
            f"{result.examples} held-out examples each = {result.interventions:,} patched "
            f"outputs in {result.wall_time_s:.1f} s"
        )
    elif result.batches_run and result.components == ("resid",):
        console.print(
            f"Run {outcome.run_id}: {result.examples} examples x {len(result.layers)} layers x "
            f"{len(result.positions)} positions = {result.examples * cells:,} interventions, "
            f"{result.interventions_per_s:,.0f}/s"
        )
    elif result.batches_run:
        console.print(
            f"Run {outcome.run_id}: {result.examples} examples x ({', '.join(result.components)}) "
            f"x {len(result.positions)} positions = {result.interventions:,} interventions, "
            f"{result.interventions_per_s:,.0f}/s"
        )
    else:
        console.print(f"Run {outcome.run_id}: already complete in the store, nothing recomputed")
    if outcome.report is None:
        console.print(
            f"Store: {outcome.store.root}  (score with `addpatch score --run-id {outcome.run_id}`)"
        )
        return
    over = "informative examples of " if spec.informative else ""
    shown = ["component", "head"] if result.components != ("resid",) else []  # best of each
    columns = [
        "target",
        *shown,
        "layer",
        "position",
        "position_label",
        "iia",
        "iia_low",
        "iia_high",
    ]
    print_frame(
        best_cells_view(outcome.best, [*columns, "baseline", "n"]),
        title=f"Best cell per variable (run {outcome.run_id}, IIA over {over}{result.examples} "
        "examples, 95% interval)",
    )
    console.print(f"Store:  {outcome.store.root.resolve()}")
    console.print(
        f"Report: {outcome.report.html.resolve()}  (+ {len(outcome.report.pngs)} PNG heatmaps)"
    )
    console.print(f"Done in {time.perf_counter() - started:.1f} s")
