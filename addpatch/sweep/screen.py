"""After an attribution run, patch some of its cells exactly: the N best of each target
(--screen N) and a random sample of each component to check the estimates against (--validate)."""

from __future__ import annotations

from dataclasses import replace

from addpatch.experiment.attribution import screen_selection
from addpatch.experiment.progress import Progress, no_progress
from addpatch.store.store import Store
from addpatch.sweep.driver import CombinationResult, Echo, SweepSpec, run_sweep
from addpatch.sweep.executors import Executor


def run_screen(
    store: Store,
    sweep: SweepSpec,
    result: CombinationResult,
    top: int | None,
    executor: Executor,
    echo: Echo = lambda _: None,
    progress: Progress = no_progress,
    checked: tuple[str, str] | None = None,
    *,
    sample: int = 0,
) -> CombinationResult:
    """Patch exactly the `top` best cells per target (their union; none when None) and `sample`
    cells per component drawn with the sweep's seed, of the attribution run `result` of
    `sweep`, as one exact run of that combination that records the screened cells."""
    assert result.run_id is not None
    selection = screen_selection(
        store, result.run_id, top, required=sweep.targets, sample=sample, seed=sweep.seed
    )
    parts = []
    if top is not None:
        parts.append(f"{top} best per target by mean estimate")
    if sample:
        parts.append(f"{sample} per component at random, all of a component with fewer")
    kind = "Screen" if top is not None else "Validation"
    echo(f"{kind}: {len(selection.cells)} cells ({'; '.join(parts)}) to patch exactly")
    exact = replace(
        sweep, method="patch", screen=selection, models=[result.model], digits=[result.digits]
    )
    (screened,) = run_sweep(store, exact, executor, echo=echo, progress=progress, checked=checked)
    return screened
