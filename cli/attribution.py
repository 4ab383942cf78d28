"""What `addpatch run --method attribution` prints: the estimates, the screen, the report."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cli.output import best_cells_view, console, print_frame

if TYPE_CHECKING:
    from addpatch.pipeline import RunOutcome


def print_attribution(outcome: RunOutcome, started: float) -> None:
    from addpatch.experiment.attribution import examples_without_metric

    result = outcome.result
    console.print(f"Patched: {result.highlighted}")
    if result.batches_run:
        console.print(
            f"Run {outcome.run_id} (attribution): {result.examples} examples x "
            f"({', '.join(result.components)}) x {len(result.positions)} positions, "
            f"{result.interventions:,} rows stored in {result.wall_time_s:.1f} s"
        )
    else:
        console.print(f"Run {outcome.run_id}: already complete in the store, nothing recomputed")
    missing = examples_without_metric(outcome.store, outcome.run_id)
    print_frame(
        missing.select("target", "examples", "without_metric"),
        title="Examples without a metric (label = base answer, or as attribution_metrics says)",
    )
    screen = outcome.screen
    if screen is not None and screen.run_id is not None and not outcome.screened:
        console.print(
            f"Validation: run {screen.run_id} patched a random sample of cells exactly "
            f"({screen.interventions:,} interventions this time)"
        )
    if screen is not None and screen.run_id is not None and outcome.screened:
        console.print(
            f"Screen: run {screen.run_id} patched the screened cells exactly "
            f"({screen.interventions:,} interventions this time)"
        )
        columns = ["target", "component", "head", "layer", "position_label", "iia", "n"]
        print_frame(
            best_cells_view(outcome.best, columns),
            title=f"Best screened cell per variable (run {screen.run_id}, exact IIA over "
            "informative examples)",
        )
    if not outcome.screened and outcome.best.height:
        columns = ["target", "component", "head", "layer", "position_name", "mean_estimate", "n"]
        print_frame(
            outcome.best.select(columns),
            title=f"Best cell per variable and component (run {outcome.run_id}, mean estimate)",
        )
    if outcome.agreement.height:
        print_frame(
            outcome.agreement,
            title="Estimate vs exact IIA per variable and component (cells with both)",
        )
    console.print(f"Store:  {outcome.store.root.resolve()}")
    if outcome.report is not None:
        console.print(
            f"Report: {outcome.report.html.resolve()}  (+ {len(outcome.report.pngs)} PNG "
            "estimate-vs-exact plots)"
        )
    console.print(f"Done in {time.perf_counter() - started:.1f} s")
