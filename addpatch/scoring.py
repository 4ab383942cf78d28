"""Scores as polars DataFrames: the Python face of the SQL in `queries/`.

    from addpatch.scoring import scores, best_cells
    scores(store, run_id=1, targets=["C_1", "raw_output"])   # IIA per cell, 95% interval
    best_cells(store, run_id=1)                               # best cell per target
    cell_examples(store, run_id=1, target="O_1", layer=0, position=11)  # one cell's examples
    scores(store, run_id=1, informative=True)   # only examples whose label <> base answer
Labels for the requested targets are computed and stored first if the store lacks them; before
that, the run's output files are checked (`addpatch.store.read_check`: StoreError if damaged).
"""

from __future__ import annotations

import polars as pl

from addpatch.errors import BadInput
from addpatch.experiment.labels import ensure_labels
from addpatch.queries import get_query, run_query
from addpatch.store.read_check import check_outputs
from addpatch.store.runs import run_dataset_ids
from addpatch.store.store import Store


def _label_runs(store: Store, run_id: int | None, targets: list[str] | None) -> list[str] | None:
    """Make sure every selected run's dataset has labels for `targets`; canonical target names."""
    with store.connect(read_only=True) as conn:
        datasets = run_dataset_ids(conn, run_id)
    if targets is None:
        return None
    canonical: list[str] = []
    for dataset_id in datasets:
        canonical = ensure_labels(store, dataset_id, targets)
    return canonical or targets


def _run(
    store: Store, name: str, run_id: int | None, targets: list[str] | None, **extra: object
) -> pl.DataFrame:
    check_outputs(store, None if run_id is None else [run_id])  # before labels are stored
    canonical = _label_runs(store, run_id, targets)
    params: dict[str, object] = dict(extra)
    if run_id is not None:
        params["run_id"] = run_id
    if canonical is not None:
        params["targets"] = canonical
    with store.connect(read_only=True) as conn:
        return run_query(conn, get_query(name), params, check_files=False)


def scores(
    store: Store,
    *,
    run_id: int | None = None,
    targets: list[str] | None = None,
    informative: bool = False,
) -> pl.DataFrame:
    """IIA per (run, target, layer, position) with its 95% Wilson interval (iia_low, iia_high),
    hits, n, baseline, model, digit width and position labels. `informative`: only examples
    whose label differs from the base answer for that target."""
    return _run(store, "iia_by_cell", run_id, targets, informative=informative)


def best_cells(
    store: Store,
    *,
    run_id: int | None = None,
    targets: list[str] | None = None,
    top: int = 1,
    informative: bool = False,
) -> pl.DataFrame:
    """The `top` best cells per (run, target); `localized` where iia_low > baseline (those
    first: a target whose first row is not localized is localized nowhere)."""
    return _run(store, "best_cells", run_id, targets, top=top, informative=informative)


def cell_examples(
    store: Store,
    *,
    run_id: int,
    target: str,
    layer: int | None = None,
    position: int | None = None,
    per_cell: int = 10,
    informative: bool = False,
) -> pl.DataFrame:
    """A sample of one cell's examples (every cell's when `layer`/`position` are None): the
    base and counterfactual prompts and answers, the label, the patched answer and whether it
    is right (`correct`), right and wrong examples in turn; `cell_right`/`cell_n` count the
    whole cell. `informative`: only examples whose label differs from the base answer."""
    if not isinstance(per_cell, int) or per_cell < 1:
        raise BadInput(f"per_cell must be a positive number of examples, got {per_cell!r}")
    [canonical] = _label_runs(store, run_id, [target]) or [target]
    params: dict[str, object] = {
        "run_id": run_id,
        "target": canonical,
        "per_cell": per_cell,
        "informative": informative,
    }
    if layer is not None:
        params["layer"] = layer
    if position is not None:
        params["position"] = position
    with store.connect(read_only=True) as conn:
        return run_query(conn, get_query("cell_examples"), params)
