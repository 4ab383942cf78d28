"""--screen N: after an attribution run, patch exactly the N best cells of each target."""

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
    top: int,
    executor: Executor,
    echo: Echo = lambda _: None,
    progress: Progress = no_progress,
    checked: tuple[str, str] | None = None,
) -> CombinationResult:
    """Patch exactly the `top` best cells per target (their union) of the attribution run
    `result` of `sweep`, as an exact run of that combination that records the screened cells."""
    assert result.run_id is not None
    selection = screen_selection(store, result.run_id, top, required=sweep.targets)
    echo(
        f"Screen: {len(selection.cells)} cells ({top} best per target by mean estimate) "
        "to patch exactly"
    )
    exact = replace(
        sweep, method="patch", screen=selection, models=[result.model], digits=[result.digits]
    )
    (screened,) = run_sweep(store, exact, executor, echo=echo, progress=progress, checked=checked)
    return screened
