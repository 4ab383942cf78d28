"""Run every (model, digit width) combination of a sweep: pairs, filter, patching, labels.

The driver alone writes the catalog: it creates datasets, stores the answers that
`answer_task` returns, opens runs and registers the Parquet files that `patch_task` wrote.
Work the store holds already (datasets, answers, registered batches) is never submitted again,
so a sweep that was stopped resumes where it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedTokenizerBase

from addpatch.das.cells import DasCellOutput, DasShard
from addpatch.das.plan import (
    DasOptions,
    DasPlan,
    check_numbers,
    check_options,
    check_ranks,
    plan_das,
)
from addpatch.engine.patching import PromptPair
from addpatch.errors import BadInput, NothingToDo
from addpatch.experiment import attribution
from addpatch.experiment.datasets import create_dataset, load_pairs
from addpatch.experiment.filtering import KEEP_RATE_WARNING, filter_summary, store_filter
from addpatch.experiment.interventions import (
    OutputFile,
    RunPlan,
    finish,
    open_run,
    parse_layers,
    plan_run,
    register_output,
    torch_dtype_name,
)
from addpatch.experiment.labels import ensure_labels
from addpatch.experiment.preflight import check_model, check_prompts
from addpatch.experiment.progress import Progress, no_progress
from addpatch.experiment.reporting import run_default_targets
from addpatch.experiment.session import model_provenance
from addpatch.limits import check_run_numbers
from addpatch.models.loading import (
    load_tokenizer,
    model_for_width,
    model_record,
    pick_dtype,
    resolve_model,
)
from addpatch.store import catalog
from addpatch.store.catalog import ModelRecord
from addpatch.store.store import Store, writes_store
from addpatch.store.subspaces import register_subspace
from addpatch.sweep.attribution_tasks import AttributionShard, attribution_task
from addpatch.sweep.executors import Executor
from addpatch.sweep.tasks import ModelSpec, PatchShard, answer_task, das_task, patch_task
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import GENERATORS
from addpatch.task.labels import resolve_target


@dataclass(frozen=True)
class SweepSpec:
    models: list[str]
    digits: list[int]
    addends: int = 2
    kind: str = "random"
    size: int = 256
    seed: int = 0
    layers: str = "all"
    positions: str = "all"
    components: tuple[str, ...] = ("resid",)
    targets: list[str] | None = None  # None: each width's default targets
    batch_size: int = 64
    batches_per_task: int = 4
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    templates: tuple[str, ...] | None = None  # None: the plain template for `addends`
    prefix: str = ""
    suffix: str = ""
    shots: int = 0
    chat: bool = False
    answer_prefix: str = ""  # the start of the reply (assistant prefill)
    filtered: bool = True  # False: patch every pair (--no-filter)
    method: str = "patch"  # patch: full vectors; das: trained subspaces (addpatch/das)
    das: DasOptions = field(default_factory=DasOptions)
    screen: attribution.ScreenSelection | None = None  # patch only these cells (--screen N)

    def task(self, digits: int) -> AdditionTask:
        """The addition task of one width, with the sweep's prompt settings."""
        return AdditionTask(
            num_addends=self.addends,
            num_digits=digits,
            templates=self.templates,
            prompt_prefix=self.prefix,
            prompt_suffix=self.suffix,
            num_shots=self.shots,
            chat=self.chat,
            answer_prefix=self.answer_prefix,
        )


@dataclass
class CombinationResult:
    model: str
    digits: int
    dataset: str
    kept: int = 0
    total: int = 0
    run_id: int | None = None
    batches_run: int = 0
    batches_skipped: int = 0
    interventions: int = 0
    skipped_reason: str = ""  # set when the model kept no pair at this width
    targets: list[str] = field(default_factory=list)
    dataset_created: bool = False
    filtered: bool = True  # False: every pair patched (--no-filter)
    components: tuple[str, ...] = ("resid",)
    model_id: int = 0
    dataset_id: int = 0
    examples: int = 0  # kept pairs the run patches
    layers: list[int] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)
    highlighted: str = ""  # the first example's prompt with the patched tokens marked
    wall_time_s: float = 0.0  # patching time of this invocation (0 when nothing ran)

    @property
    def keep_rate(self) -> float:
        return self.kept / self.total if self.total else 0.0

    @property
    def low_keep_rate(self) -> bool:
        return self.run_id is not None and self.filtered and self.keep_rate < KEEP_RATE_WARNING

    @property
    def interventions_per_s(self) -> float:
        """Patched outputs stored per second of patching: the one figure runs record."""
        return self.interventions / self.wall_time_s if self.wall_time_s > 0 else 0.0


@dataclass
class _Combination:
    """A combination's state while the sweep runs."""

    result: CombinationResult
    spec: ModelSpec
    model_id: int
    provenance: dict[str, Any]
    dataset_id: int
    tokenizer: PreTrainedTokenizerBase
    num_layers: int
    width: int = 0  # the residual stream's (hidden size)
    plan: RunPlan | None = None
    das: DasPlan | None = None  # the cells of a DAS run (its batches)
    registered: set[int] = field(default_factory=set)
    status: str | None = None
    started: float = 0.0

    @property
    def num_batches(self) -> int:
        """What the run stores a file for: batches of pairs, or a DAS run's cells."""
        if self.das is not None:
            return len(self.das.cells)
        return len(self.plan.batches) if self.plan is not None else 0


Echo = Callable[[str], None]


def validate_sweep(spec: SweepSpec, *, numbers_checked: bool = False) -> None:
    """BadInput for anything wrong that can be known before loading weights or writing.

    `numbers_checked`: the caller checked size, seed, batch size and batches per task already
    (`addpatch run` checks them first, with --threads)."""
    check_numbers(spec.das)  # every option's value is checked, whatever the method
    if spec.method == "das":
        check_options(spec.das, spec.targets, tuple(spec.components))
    if not spec.models or not spec.digits:
        raise BadInput("a sweep needs at least one model (--models) and one width (--digits)")
    if spec.kind not in GENERATORS:
        raise BadInput(f"unknown generator {spec.kind!r}; choose one of: {', '.join(GENERATORS)}")
    attribution.check_method(spec.method, None)
    if not numbers_checked:
        check_run_numbers(
            size=spec.size,
            seed=spec.seed,
            batch_size=spec.batch_size,
            batches_per_task=spec.batches_per_task,
        )
    if spec.device != "auto":
        _device_type(spec.device)
    tokenizers: dict[str, PreTrainedTokenizerBase] = {}  # each checkpoint is checked once
    for digits in spec.digits:
        task = spec.task(digits)
        for target in spec.targets or []:
            resolve_target(task, target)
        for model in spec.models:
            checkpoint = model_for_width(model, digits)
            if checkpoint not in tokenizers:
                tokenizers[checkpoint] = check_model(
                    model=checkpoint,
                    layers=spec.layers,
                    device="cpu",  # the workers' devices are checked against the executor's
                    dtype=spec.dtype,
                    trust_remote_code=spec.trust_remote_code,
                    components=spec.components,
                )
            check_prompts(tokenizers[checkpoint], task, spec.positions)
            if spec.method == "das":
                check_ranks(spec.das, _width_of(checkpoint, spec.trust_remote_code))
        if spec.method == "attribution" and spec.targets:
            attribution.check_informative(task, spec.kind, spec.size, spec.seed, spec.targets)


@writes_store
def run_sweep(
    store: Store,
    spec: SweepSpec,
    executor: Executor,
    echo: Echo = lambda _: None,
    progress: Progress = no_progress,
    *,
    checked: tuple[str, str] | None = None,
) -> list[CombinationResult]:
    """Run (or resume) the sweep, holding the store's writer lock.

    `echo` gets a line per step (datasets, filter, runs); `progress(stage, done, total)` counts
    each run's registered batches (stage: `run N`). `checked`: the workers' (device, dtype)
    from `sweep_device`, when the caller ran it and `validate_sweep` on this spec already.
    """
    if checked is None:
        validate_sweep(spec)
        checked = sweep_device(spec, executor)
    device, dtype = checked
    combos = _prepare(store, spec, ModelSpecs(device, dtype, spec.trust_remote_code), echo)

    tickets: dict[Any, tuple[_Combination, str]] = {}
    for combo in combos:
        if spec.filtered and combo.result.total == 0:  # the model's answers are not stored yet
            task, ids, pairs = load_pairs(store, combo.dataset_id)
            ticket = executor.submit(
                answer_task, combo.spec, task, ids, pairs, max(spec.batch_size, 256)
            )
            tickets[ticket] = (combo, "answers")
        else:
            _submit_patching(store, spec, executor, combo, tickets, echo, progress)
    while tickets:
        ticket = executor.next_done(list(tickets))
        combo, kind = tickets.pop(ticket)
        value = executor.result(ticket)
        if kind == "answers":
            store_filter(store, model_id=combo.model_id, dataset_id=combo.dataset_id, results=value)
            combo.result.total = value.num_rows
            _submit_patching(store, spec, executor, combo, tickets, echo, progress)
        else:
            assert combo.result.run_id is not None  # patching is submitted once the run is open
            for output in value:
                if output.batch_index not in combo.registered:
                    _register(store, kind, combo.result.run_id, output)
                    combo.registered.add(output.batch_index)
                    combo.result.batches_run += 1
                    combo.result.interventions += output.rows
                    _report_progress(combo, progress)
            _finish_if_complete(store, combo, echo)
    # a combination with a plan has its run open: the run id is set with the plan
    planned = [
        (c, c.result.run_id) for c in combos if c.plan is not None and c.result.run_id is not None
    ]
    defaults = {} if spec.targets else run_default_targets(store, [run_id for _, run_id in planned])
    for combo, run_id in planned:
        targets = spec.targets or defaults[run_id]
        combo.result.targets = ensure_labels(store, combo.dataset_id, targets)
    return [c.result for c in combos]


def _register(store: Store, kind: str, run_id: int, output: OutputFile | DasCellOutput) -> None:
    """Register what a task wrote: a batch of patched outputs or of attribution estimates, or
    a DAS cell (its outputs and its subspace, together)."""
    if isinstance(output, DasCellOutput):
        with store.writer(), store.connect() as conn:
            register_subspace(
                conn=conn,
                run_id=run_id,
                subspace_id=output.batch_index,
                output_path=output.relpath,
                rows=output.rows,
                sha256=output.sha256,
                record=output.subspace,
            )
    elif kind == "attribution":
        attribution.register_attribution(store, run_id, output)
    else:
        register_output(store, run_id, output)


def _width_of(checkpoint: str, trust_remote_code: bool) -> int:
    config = AutoConfig.from_pretrained(
        resolve_model(checkpoint).path, trust_remote_code=trust_remote_code
    )
    return int(config.get_text_config().hidden_size)


def sweep_device(spec: SweepSpec, executor: Executor) -> tuple[str, str]:
    """Where the workers run (cuda when the executor has GPUs, unless told) and the dtype."""
    device = spec.device
    if device == "auto":
        device = "cuda" if executor.gpus else "cpu"
    elif _device_type(device) == "cuda" and not executor.gpus:
        raise BadInput(
            f"--device {device} was asked for but {executor.describe()} has no GPU; "
            "use --device auto or cpu"
        )
    return device, torch_dtype_name(pick_dtype(spec.dtype, torch.device(device)))


def _device_type(device: str) -> str:
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        kind = ""
    if kind not in ("cpu", "cuda"):
        raise BadInput(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return kind


@dataclass(frozen=True)
class ModelSpecs:
    device: str
    dtype: str
    trust_remote_code: bool

    def of(self, model: str) -> ModelSpec:
        return ModelSpec(model, self.device, self.dtype, self.trust_remote_code)


def _prepare(store: Store, spec: SweepSpec, specs: ModelSpecs, echo: Echo) -> list[_Combination]:
    """Register models and datasets (driver side, no weights loaded) for every combination."""
    datasets = {}
    for digits in spec.digits:
        task = spec.task(digits)
        datasets[digits] = create_dataset(
            store, kind=spec.kind, task=task, size=spec.size, seed=spec.seed
        )
        info = datasets[digits]
        echo(f"Dataset {info.name} ({'generated' if info.created else 'already stored'})")
    registered: dict[str, tuple[ModelRecord, int, PreTrainedTokenizerBase]] = {}
    combos = []
    for model in spec.models:
        for digits in spec.digits:
            name = model_for_width(model, digits)  # a per-width family picks its checkpoint
            if name not in registered:
                registered[name] = _register_model(store, name, spec.trust_remote_code)
                record = registered[name][0]
                echo(
                    f"Model {name}: {record.architecture}, {record.num_layers} layers, "
                    f"on {specs.device} ({specs.dtype})"
                )
            record, model_id, tokenizer = registered[name]
            info = datasets[digits]
            with store.connect(read_only=True) as conn:
                answered = catalog.count_answered(conn=conn, model_id=model_id, dataset_id=info.id)
            combos.append(
                _Combination(
                    CombinationResult(
                        name,
                        digits,
                        info.name,
                        total=answered,
                        dataset_created=info.created,
                        filtered=spec.filtered,
                        components=tuple(spec.components),
                        model_id=model_id,
                        dataset_id=info.id,
                    ),
                    specs.of(name),
                    model_id,
                    model_provenance(record),
                    info.id,
                    tokenizer,
                    num_layers=record.num_layers,
                    width=record.hidden_size,
                )
            )
    return combos


def _register_model(
    store: Store, name: str, trust_remote_code: bool
) -> tuple[ModelRecord, int, PreTrainedTokenizerBase]:
    """The model's record and id in the store, and its tokenizer (its weights stay unloaded)."""
    resolved = resolve_model(name)
    config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(resolved, trust_remote_code)
    record = model_record(resolved, config)
    with store.writer(), store.connect() as conn:
        return record, catalog.upsert_model(conn=conn, record=record), tokenizer


def _submit_patching(
    store: Store,
    spec: SweepSpec,
    executor: Executor,
    combo: _Combination,
    tickets: dict[Any, tuple[_Combination, str]],
    echo: Echo,
    progress: Progress,
) -> None:
    """Open the combination's run and submit its batches that the store does not hold."""
    result = combo.result
    if spec.filtered:
        try:
            summary = filter_summary(
                store,
                model_id=combo.model_id,
                dataset_id=combo.dataset_id,
                total=result.total,
                tokenizer=combo.tokenizer,
            )
        except NothingToDo as reason:
            result.skipped_reason = str(reason)
            echo(f"{result.model}, {result.digits} digits: skipped, {reason}")
            return
        result.kept = summary.kept
    plan = plan_run(
        store,
        combo.tokenizer,
        model_id=combo.model_id,
        dataset_id=combo.dataset_id,
        layers=parse_layers(spec.layers, combo.num_layers),
        position_set=spec.positions,
        batch_size=spec.batch_size,
        dtype=combo.spec.dtype,
        filtered=spec.filtered,
        components=spec.components,
    )
    if not spec.filtered:
        result.kept = result.total = plan.num_examples
    if spec.method == "attribution":
        plan = attribution.attribution_plan(store, plan, spec.targets)
        run_id, status, done = attribution.open_attribution_run(
            store, plan, device=combo.spec.device, seed=spec.seed, provenance=combo.provenance
        )
    elif spec.screen is not None:
        plan = attribution.screen_plan(plan, spec.screen)
        run_id, status, done = attribution.open_screen_run(
            store, plan, device=combo.spec.device, seed=spec.seed, provenance=combo.provenance
        )
    else:
        if spec.method == "das":
            assert spec.targets
            targets = ensure_labels(store, combo.dataset_id, spec.targets)
            combo.das = plan_das(store, plan, spec.das, targets, combo.width)
        run_id, status, done = open_run(
            store,
            plan,
            device=combo.spec.device,
            seed=spec.seed,
            model_provenance=combo.provenance,
            das=combo.das,
        )
    combo.plan, combo.status, combo.registered = plan, status, set(done)
    result.run_id = run_id
    result.batches_skipped = len(done)
    result.examples = plan.num_examples if combo.das is None else len(combo.das.test)
    result.layers, result.positions = plan.layers, plan.positions
    result.highlighted = plan.highlighted
    combo.started = time.perf_counter()
    if combo.das is not None:
        _submit_das(store, spec, executor, combo, tickets, echo, progress)
        return
    missing = [(i, b) for i, b in enumerate(plan.batches) if i not in done]
    echo(
        f"{result.model}, {result.digits} digits: "
        + (
            f"kept {result.kept}/{result.total} pairs (keep rate {result.keep_rate:.1%}), "
            if spec.filtered
            else "unfiltered (--no-filter): every pair is patched, "
        )
        + f"run {run_id}, {len(missing)} of {len(plan.batches)} batches to patch"
    )
    _report_progress(combo, progress)
    if isinstance(plan, attribution.AttributionPlan):
        _submit_attribution(store, spec, executor, combo, plan, missing, tickets)
        _finish_if_complete(store, combo, echo)
        return
    for start in range(0, len(missing), spec.batches_per_task):
        shard = PatchShard(
            model_id=combo.model_id,
            run_id=run_id,
            batches=missing[start : start + spec.batches_per_task],
            layers=plan.layers,
            positions=plan.positions,
            max_new_tokens=plan.max_new_tokens,
            components=plan.components,
            only=spec.screen.cells if spec.screen is not None else None,
        )
        ticket = executor.submit(patch_task, combo.spec, str(store.root.resolve()), shard)
        tickets[ticket] = (combo, "patch")
    _finish_if_complete(store, combo, echo)


def _submit_das(
    store: Store,
    spec: SweepSpec,
    executor: Executor,
    combo: _Combination,
    tickets: dict[Any, tuple[_Combination, str]],
    echo: Echo,
    progress: Progress,
) -> None:
    """Submit the DAS run's cells that the store does not hold, `batches_per_task` a task."""
    das, result, plan = combo.das, combo.result, combo.plan
    assert das is not None and plan is not None and result.run_id is not None
    missing = [cell for cell in das.cells if cell.subspace_id not in combo.registered]
    echo(
        f"{result.model}, {result.digits} digits: kept {result.kept}/{result.total} pairs, "
        f"{len(das.train)} to train and {len(das.test)} to test (split {das.split}); "
        f"DAS run {result.run_id}, {len(missing)} of {len(das.cells)} subspaces to train"
    )
    _report_progress(combo, progress)
    for start in range(0, len(missing), spec.batches_per_task):
        shard = DasShard(
            model_id=combo.model_id,
            run_id=result.run_id,
            cells=missing[start : start + spec.batches_per_task],
            train=das.train,
            test=das.test,
            labels=das.labels,
            settings=das.options.settings(),
            max_new_tokens=plan.max_new_tokens,
            split_sha256=das.split_sha256,
            eval_batch_size=spec.batch_size,
        )
        ticket = executor.submit(das_task, combo.spec, str(store.root.resolve()), shard)
        tickets[ticket] = (combo, "das")
    _finish_if_complete(store, combo, echo)


def _submit_attribution(
    store: Store,
    spec: SweepSpec,
    executor: Executor,
    combo: _Combination,
    plan: attribution.AttributionPlan,
    missing: list[tuple[int, list[PromptPair]]],
    tickets: dict[Any, tuple[_Combination, str]],
) -> None:
    """Submit the attribution run's missing batches, with their examples' labels."""
    assert combo.result.run_id is not None
    labels = attribution.plan_labels(store, plan)
    for start in range(0, len(missing), spec.batches_per_task):
        batches = missing[start : start + spec.batches_per_task]
        ids = {p.example_id for _, batch in batches for p in batch}
        shard = AttributionShard(
            model_id=combo.model_id,
            run_id=combo.result.run_id,
            batches=batches,
            labels={t: {i: v for i, v in by.items() if i in ids} for t, by in labels.items()},
            layers=plan.layers,
            positions=plan.positions,
            max_new_tokens=plan.max_new_tokens,
            components=plan.components,
        )
        ticket = executor.submit(attribution_task, combo.spec, str(store.root.resolve()), shard)
        tickets[ticket] = (combo, "attribution")


def _finish_if_complete(store: Store, combo: _Combination, echo: Echo) -> None:
    plan, result = combo.plan, combo.result
    if plan is None or len(combo.registered) < combo.num_batches:
        return
    if result.batches_run or combo.status != "complete":
        assert result.run_id is not None
        result.wall_time_s = time.perf_counter() - combo.started
        finish(
            store,
            result.run_id,
            wall_time_s=result.wall_time_s,
            interventions=result.interventions,
        )
        combo.status = "complete"
        echo(f"{result.model}, {result.digits} digits: run {result.run_id} complete")


def _report_progress(combo: _Combination, progress: Progress) -> None:
    if combo.plan is not None:
        progress(f"run {combo.result.run_id}", len(combo.registered), combo.num_batches)


def sweep_report_dir(store: Store, results: list[CombinationResult]) -> Path:
    runs = sorted(r.run_id for r in results if r.run_id is not None)
    return store.root / "reports" / ("sweep-" + "-".join(str(r) for r in runs))
