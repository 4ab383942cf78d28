"""One experiment, end to end: pairs, filter, patching, labels, scores and the report.

`run_experiment` is what `addpatch run` does, and it is the one-combination case of the sweep
driver (`addpatch.sweep.driver.run_sweep`, in this process): one code path, one record of
interventions per second. From Python:

    from addpatch.pipeline import RunSpec, run_experiment
    outcome = run_experiment("addpatch-store", RunSpec(model="tiny-adder-digits", digits=2))
    outcome.best            # polars DataFrame: the best cell per target
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl
import torch

from addpatch.das.plan import DasOptions
from addpatch.engine.positions import resolve_position_set
from addpatch.errors import BadInput, NothingToDo
from addpatch.experiment.attribution import check_method, validation_size
from addpatch.experiment.filtering import low_keep_rate_hint
from addpatch.experiment.progress import Progress, no_progress
from addpatch.experiment.reporting import report_runs
from addpatch.limits import check_run_numbers
from addpatch.models.loading import model_for_width, pick_device
from addpatch.output_paths import output_dir_check
from addpatch.report.build import ReportFiles
from addpatch.report.components import check_heads_position
from addpatch.scoring import best_cells
from addpatch.settings import DEFAULT_MODEL
from addpatch.store.attributions import METHOD
from addpatch.store.store import Store
from addpatch.sweep.driver import (
    CombinationResult,
    Echo,
    SweepSpec,
    run_sweep,
    sweep_device,
    validate_sweep,
)
from addpatch.sweep.executors import LocalExecutor
from addpatch.sweep.screen import run_screen
from addpatch.sweep.tasks import ModelSpec, engine_for


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one experiment (one model, one digit width)."""

    model: str = DEFAULT_MODEL
    digits: int = 2
    addends: int = 2
    kind: str = "random"
    size: int = 256
    seed: int = 0
    layers: str = "all"
    positions: str = "auto"  # auto: every token, or the query's when the prompt has more
    targets: list[str] | None = None  # None: the run's default targets
    templates: tuple[str, ...] | None = None  # None: the plain template for `addends`
    prefix: str = ""
    suffix: str = ""
    shots: int = 0  # worked examples before each prompt
    chat: bool = False  # wrap the prompt in the tokenizer's chat template
    answer_prefix: str = ""  # the start of the reply (assistant prefill)
    filtered: bool = True  # False: patch every pair, right or wrong (--no-filter)
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default)
    trust_remote_code: bool = False
    interventions_only: bool = False  # stop after storing the patched outputs
    informative: bool = False  # score only examples whose label differs from the base answer
    components: tuple[str, ...] = ("resid",)  # resid, attn, mlp, heads
    heads_position: str | None = None  # where heads heatmaps are drawn (default: best resid)
    report_dir: Path | None = None  # default: STORE/reports/run-ID
    method: str = "patch"  # patch: full vectors; das: trained subspaces (needs targets)
    das: DasOptions = field(default_factory=DasOptions)
    screen: int | None = None  # with attribution: then patch exactly the N best cells per target
    validate: int | None = None  # with attribution: cells per component patched exactly at random

    def as_sweep(self) -> SweepSpec:
        sweep = SweepSpec(
            models=[self.model],
            digits=[self.digits],
            addends=self.addends,
            kind=self.kind,
            size=self.size,
            seed=self.seed,
            layers=self.layers,
            positions=self.positions,
            targets=self.targets,
            batch_size=self.batch_size,
            batches_per_task=1,  # one task per batch: progress and resume per batch
            device=self.device,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
            templates=self.templates,
            prefix=self.prefix,
            suffix=self.suffix,
            shots=self.shots,
            chat=self.chat,
            answer_prefix=self.answer_prefix,
            filtered=self.filtered,
            components=self.components,
            method=self.method,
            das=self.das,
        )
        positions = resolve_position_set(self.positions, sweep.task(self.digits))
        return replace(sweep, positions=positions)


@dataclass
class RunOutcome:
    store: Store
    result: CombinationResult
    best: pl.DataFrame = field(default_factory=pl.DataFrame)  # empty with interventions_only
    report: ReportFiles | None = None
    keep_rate_hint: str = ""  # with a low keep rate: what the model answered, what may help
    screen: CombinationResult | None = None  # the exact run of the screened / sampled cells
    screened: bool = False  # --screen N: `screen` holds each target's N best cells
    agreement: pl.DataFrame = field(default_factory=pl.DataFrame)  # attribution vs exact

    @property
    def run_id(self) -> int:
        assert self.result.run_id is not None
        return self.result.run_id


def validate_run(spec: RunSpec) -> None:
    """BadInput for anything wrong that can be known before loading weights or writing."""
    _validated(spec, LocalExecutor())


def _validated(spec: RunSpec, executor: LocalExecutor) -> tuple[SweepSpec, str, str]:
    """`validate_run`, and what it worked out: the run as a sweep, its device and dtype."""
    pick_device(spec.device)  # this process runs the work: its devices are what count
    check_run_numbers(
        size=spec.size, seed=spec.seed, batch_size=spec.batch_size, threads=spec.threads
    )
    output_dir_check(spec.report_dir)
    check_heads_position(spec.heads_position)
    check_method(spec.method, spec.screen, spec.validate)
    if spec.heads_position is not None and "heads" not in spec.components:
        raise BadInput("--heads-position places the heads heatmaps: add --components heads")
    sweep = spec.as_sweep()
    validate_sweep(sweep, numbers_checked=True)  # size, seed, batch size: checked just above
    device, dtype = sweep_device(sweep, executor)
    return sweep, device, dtype


def attribution_outcome(outcome: RunOutcome, report_dir: Path | None) -> RunOutcome:
    """The best cells by mean estimate (by exact IIA with --screen) and the attribution report."""
    from addpatch.experiment.attribution import ranked_cells
    from addpatch.report.attribution import attribution_report

    run_id = outcome.run_id
    if outcome.screened and outcome.screen is not None and outcome.screen.run_id is not None:
        outcome.best = best_cells(
            outcome.store,
            run_id=outcome.screen.run_id,
            targets=outcome.screen.targets,
            informative=True,
        )
    else:
        outcome.best = ranked_cells(outcome.store, run_id, top=1)
    out_dir = report_dir or outcome.store.root / "reports" / f"run-{run_id}"
    report = attribution_report(outcome.store, run_id, out_dir)
    outcome.report, outcome.agreement = report, report.agreement
    return outcome


def run_experiment(
    store: Store | str | Path,
    spec: RunSpec,
    *,
    echo: Echo = lambda _: None,
    progress: Progress = no_progress,
) -> RunOutcome:
    """Run (or resume) the experiment under the store's writer lock, then score and report.

    Raises NothingToDo when the model keeps no pair; everything checkable without weights is
    checked before the store is created or touched.
    """
    executor = LocalExecutor()
    sweep, device, dtype = _validated(spec, executor)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    # Load the weights before the store is touched: a checkpoint whose weights disagree with its
    # config is refused here. The tasks then find the model loaded (one per worker process).
    name = model_for_width(spec.model, spec.digits)
    existing: Store | None
    if isinstance(store, Store):
        root, existing = store.root, store
    else:  # a path: the store there if its creation is complete (else it is created below)
        root, existing = Path(store), Store.open_if_created(store)
    with ExitStack() as held:
        if existing is not None:  # a store another process writes is refused before loading
            held.enter_context(existing.writer())
        echo(f"Loading {name} ...")
        engine = engine_for(ModelSpec(name, device, dtype, spec.trust_remote_code))
        opened = existing if existing is not None else Store.open(root, create=True)
        with opened.writer():  # re-entrant: held already when the store existed
            (result,) = run_sweep(
                opened, sweep, executor, echo=echo, progress=progress, checked=(device, dtype)
            )
            screened = None
            sample = validation_size(spec.screen, spec.validate) if spec.method == METHOD else 0
            if (spec.screen is not None or sample) and result.run_id is not None:
                screened = run_screen(
                    opened,
                    sweep,
                    result,
                    spec.screen,
                    executor,
                    echo,
                    progress,
                    (device, dtype),
                    sample=sample,
                )
    if result.run_id is None:
        raise NothingToDo(result.skipped_reason)
    outcome = RunOutcome(opened, result, screen=screened, screened=spec.screen is not None)
    if result.low_keep_rate:
        outcome.keep_rate_hint = low_keep_rate_hint(
            opened,
            model_id=result.model_id,
            dataset_id=result.dataset_id,
            tokenizer=engine.tokenizer,
        )
    if spec.interventions_only:
        return outcome
    if spec.method == "attribution":
        return attribution_outcome(outcome, spec.report_dir)
    outcome.best = best_cells(
        opened, run_id=result.run_id, targets=result.targets, informative=spec.informative
    )
    out_dir = spec.report_dir or opened.root / "reports" / f"run-{result.run_id}"
    outcome.report = report_runs(
        opened,
        [result.run_id],
        spec.targets,
        out_dir,
        informative=spec.informative,
        heads_position=spec.heads_position,
    )
    return outcome
