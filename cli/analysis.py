"""Commands that read the store: score, report, query, sql, shell. None of them loads a model."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from addpatch.store.store import Store

from addpatch.errors import BadInput, StoreError
from cli.options import (
    STORE_DEFAULT,
    HeadsPositionOption,
    InformativeOption,
    StoreOption,
    TargetsOption,
    split_targets,
)
from cli.output import (
    best_cells_view,
    console,
    print_frame,
    without_unused_method_columns,
    write_frame,
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, csv, json or parquet.")]
OutputOption = Annotated[str | None, typer.Option("--output", "-o", help="Write to this file.")]
_FORMATS = ("table", "csv", "json", "parquet")


def _check_format(fmt: str, output: str | None) -> None:
    from addpatch.output_paths import output_file_check

    if fmt not in _FORMATS:
        raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(_FORMATS)}")
    if fmt == "parquet" and not output:
        raise BadInput("--format parquet writes a file: add --output FILE.parquet")
    if output is not None and not output.strip():
        raise BadInput("--output is empty; give a file name")
    output_file_check(output)


def _runs(store: Store, run_id: int | None) -> list[int]:
    from addpatch.store.runs import run_ids

    with store.connect(read_only=True) as conn:
        ids = run_ids(conn)
    if not ids:
        raise StoreError(f"the store at {store.root} has no runs yet; run `addpatch run` first")
    if run_id is not None and run_id not in ids:
        raise BadInput(f"no run {run_id} in the store; runs: {', '.join(map(str, ids))}")
    return [run_id] if run_id is not None else ids


def score(
    run_id: Annotated[int | None, typer.Option(help="Run to score (default: every run).")] = None,
    targets: TargetsOption = None,
    top: Annotated[int, typer.Option(help="Best cells per target.")] = 1,
    informative: InformativeOption = False,
    logprob: Annotated[
        bool,
        typer.Option(
            "--logprob",
            help="Add each cell's mean log-prob of the label's first digit token and its "
            "coverage (share of examples whose label token is in the stored top 5).",
        ),
    ] = False,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Score target variables on stored outputs with SQL; no model is loaded, nothing re-runs.

    Each IIA comes with its 95% Wilson interval; a target whose best interval does not lie
    above the baseline (the IIA of a patch that changes nothing) is "not localized".
    Labels for new targets are computed from the causal models and stored once.

    \b
    Example:
        addpatch score --targets C_1,C_2,O_3
        addpatch score --targets C_1,C_2 --informative
        addpatch score --targets O_3,C_2 --logprob
        addpatch score --run-id 1 --targets digit_0_0+digit_1_0 --top 3 --format csv
    """
    from addpatch.scoring import best_cells
    from addpatch.store.store import Store

    _check_format(fmt, output)
    from addpatch.limits import check_range

    check_range("--top", top, 1, 10_000)
    target_list = split_targets(targets)
    opened = Store.open(store)
    from addpatch.experiment.reporting import run_default_targets

    runs = _runs(opened, run_id)
    defaults = run_default_targets(opened, runs) if target_list is None else {}
    frames = [
        best_cells(
            opened,
            run_id=run,
            targets=target_list or defaults[run],
            top=top,
            informative=informative,
        )
        for run in runs
    ]
    import polars as pl

    frame = without_unused_method_columns(pl.concat(frames))
    components = ["component", "head"] if set(frame.get_column("component")) != {"resid"} else []
    columns = ["run_id", "model", "target", *components, "layer", "position", "position_label"]
    columns += ["k"] if "k" in frame.columns else []  # a DAS run's: the subspace's rank
    columns += ["iia", "iia_low", "iia_high", "baseline", "n"]
    if logprob:
        from addpatch.probabilities import label_logprobs

        per_run = [
            label_logprobs(
                opened,
                run_id=run,
                targets=frame.filter(pl.col("run_id") == run)["target"].unique().to_list(),
                informative=informative,
            ).drop("n")
            for run in runs
        ]
        keys = ["run_id", "target", "layer", "position"]
        frame = frame.join(pl.concat(per_run), on=keys, how="left")
        columns += ["label_logprob", "coverage"]
    if fmt == "table":
        examples = "informative examples (label ≠ base answer)" if informative else "all examples"
        print_frame(
            best_cells_view(frame, columns),
            title=f"Best cells (IIA over {examples}; 95% Wilson interval iia_low..iia_high)",
        )
    else:
        write_frame(frame, fmt, output)


def report(
    run_id: Annotated[
        int | None, typer.Option(help="Run to report (default: every run, side by side).")
    ] = None,
    targets: TargetsOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: STORE/reports/...).")
    ] = None,
    informative: InformativeOption = False,
    heads_position: HeadsPositionOption = None,
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Write the HTML report (offline, self-contained) and PNG/SVG heatmaps from stored scores.

    Click a heatmap cell for a sample of its examples (embedded when the report is built).

    \b
    Example:
        addpatch report --run-id 1 --targets C_1,C_2,raw_output --out ./report
        addpatch report --informative      # IIA over examples whose label <> base answer
        addpatch report --run-id 2 --heads-position last    # heads heatmaps at the last token
    """
    from addpatch.experiment.reporting import report_runs
    from addpatch.output_paths import output_dir_check
    from addpatch.store.store import Store

    target_list = split_targets(targets)
    output_dir_check(out)
    opened = Store.open(store)
    runs = _runs(opened, run_id)
    runs = _attribution_reports(opened, runs, out if run_id is not None else None)
    if not runs:  # attribution runs only: their reports are written
        return
    name = f"run-{runs[0]}" if len(runs) == 1 else "all-runs"
    if informative:
        name += "-informative"
    out_dir = out or opened.root / "reports" / name
    output_dir_check(out_dir)
    files = report_runs(
        opened,
        runs,
        target_list,
        out_dir,
        informative=informative,
        heads_position=heads_position,
    )
    console.print(
        f"Report: {files.html.resolve()}  (+ {len(files.pngs)} PNG, {len(files.svgs)} SVG)"
    )


def _attribution_reports(opened: Store, runs: list[int], out: Path | None) -> list[int]:
    """Write the estimate-vs-exact report of each attribution run among `runs` (they have no
    patched outputs to draw heatmaps of); the other runs, for the heatmap report."""
    from addpatch.experiment.attribution import run_methods
    from addpatch.report.attribution import attribution_report

    methods = run_methods(opened, runs)
    for run in runs:
        if methods[run] == "attribution":
            files = attribution_report(opened, run, out or opened.root / "reports" / f"run-{run}")
            console.print(
                f"Report: {files.html.resolve()}  (attribution run {run}: "
                f"{len(files.pngs)} estimate-vs-exact PNG)"
            )
    return [run for run in runs if methods[run] != "attribution"]


def query(
    name: Annotated[
        str | None, typer.Argument(help="Query name (a file in queries/); omit to list them.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="name=value; lists as a,b,c.")
    ] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Run one of the shipped SQL queries on the store.

    The same .sql file runs unchanged in the DuckDB shell after `SET VARIABLE name = value;`.

    \b
    Example:
        addpatch query                      # list queries and their parameters
        addpatch query best_cells -p run_id=1 -p targets=C_1,C_2 -p top=3 --format csv
    """
    from addpatch.queries import available_queries, get_query, parse_param_args, run_query
    from addpatch.store.store import Store

    if name is None:
        for q in available_queries().values():
            listed = ", ".join(f"{p.name} {p.type}" for p in q.params.values()) or "no parameters"
            console.print(f"{q.name}: {q.description}  ({listed})")
        return
    _check_format(fmt, output)
    chosen = get_query(name)
    params = parse_param_args(param or [])
    opened = Store.open(store)
    with opened.connect(read_only=True) as conn:
        frame = run_query(conn, chosen, params)
    write_frame(without_unused_method_columns(frame), fmt, output)


def sql(
    statement: Annotated[str, typer.Argument(help="A SQL statement (read-only).")],
    fmt: FormatOption = "table",
    output: OutputOption = None,
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Run ad-hoc SQL on the store: one read-only query (SELECT, WITH, SHOW, DESCRIBE ...).

    Nothing is written: no catalog change and no file (COPY ... TO and the like are refused);
    save a result with --format csv/json/parquet --output FILE.

    \b
    Example:
        addpatch sql "SELECT layer, avg(answer IS NOT NULL) FROM patched_outputs GROUP BY layer"
    """
    from addpatch.store.readonly_sql import check_read_only, run_read_only
    from addpatch.store.store import Store

    check_read_only(statement)
    _check_format(fmt, output)
    opened = Store.open(store)
    frame = run_read_only(opened, statement)
    write_frame(frame, fmt, output)


def shell(store: StoreOption = STORE_DEFAULT) -> None:
    """Open the DuckDB shell on the store (inside the store directory, so views resolve).

    It first prints where the shipped queries are, to `.read` them.

    \b
    Example:
        addpatch shell
        Queries: /path/to/queries  (.read /path/to/queries/best_cells.sql)
        D SET VARIABLE run_id = 1;
        D .read /path/to/queries/best_cells.sql
    """
    from addpatch.resources import queries_dir
    from addpatch.store.read_check import check_outputs
    from addpatch.store.store import Store

    opened = Store.open(store)
    check_outputs(opened)  # the shell reads the files unchecked: refuse damaged ones first
    beside = Path(sys.executable).parent / "duckdb"  # installed with addpatch (duckdb-cli)
    duckdb_cli = str(beside) if beside.is_file() else shutil.which("duckdb")
    if duckdb_cli is None:
        raise BadInput(
            "the duckdb shell is not installed; pip install duckdb-cli (same version as duckdb)"
        )
    print(f"Queries: {queries_dir()}  (.read {queries_dir() / 'best_cells.sql'})", flush=True)
    os.chdir(opened.root)
    os.execv(duckdb_cli, [duckdb_cli, "catalog.duckdb"])
