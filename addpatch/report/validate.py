"""Checks on the inputs of `build_report`; each failure is one `BadInput` naming the fix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from addpatch.errors import BadInput
from addpatch.intervals import wilson_exprs

SCORE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "model",
    "num_digits",
    "target",
    "layer",
    "position",
    "position_label",
    "iia",
    "n",
)
OPTIONAL_SCORE_COLUMNS: tuple[str, ...] = (
    "baseline",  # IIA of a patch that changes nothing
    "hits",  # examples whose patched answer is the label (iia = hits / n)
    "iia_low",  # 95% Wilson interval of iia; computed from hits (or iia x n) when absent
    "iia_high",
    "position_name",  # the run's name of the position (a0.d1, last, a unit a1.d0+last)
    "k",  # a DAS cell's rank (its best subspace's; addpatch.report.subspaces)
)
RUN_KEYS: tuple[str, ...] = ("run_id", "model", "num_digits", "keep_rate", "examples", "provenance")


def check_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Validate `scores` and return it with the expected dtypes (NaN IIA becomes null).

    Raises:
        BadInput: a column is missing, the frame is empty, a layer is below -1,
            an IIA is outside 0..1, or a target name is empty.
    """
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise BadInput(
            f"scores lacks column(s) {', '.join(missing)}; select them in the scoring query "
            f"(expected: {', '.join(SCORE_COLUMNS)})"
        )
    if scores.height == 0:
        raise BadInput("scores is empty; score at least one run before building a report")
    try:
        optional = [c for c in OPTIONAL_SCORE_COLUMNS if c in scores.columns]
        df = scores.select(*SCORE_COLUMNS, *optional).with_columns(
            pl.col("run_id", "num_digits", "layer", "position", "n").cast(pl.Int64),
            pl.col("model", "target", "position_label").cast(pl.String),
            pl.col("iia").cast(pl.Float64).fill_nan(None),
            *[
                pl.col(c).cast(pl.Float64)
                for c in ("baseline", "iia_low", "iia_high")
                if c in optional
            ],
        )
    except pl.exceptions.PolarsError as exc:
        raise BadInput(f"scores has a column of the wrong type ({exc}); cast it first") from exc
    if df.select(pl.col("layer").min()).item() < -1:
        raise BadInput("scores has a layer below -1; use -1 for the embeddings and 0.. for layers")
    bad_iia = df.filter((pl.col("iia") < 0) | (pl.col("iia") > 1))
    if bad_iia.height:
        raise BadInput(
            f"scores has {bad_iia.height} IIA value(s) outside 0..1; pass accuracies, not counts"
        )
    if df.filter(pl.col("target").is_null() | (pl.col("target") == "")).height:
        raise BadInput("scores has an empty target name; name every target variable")
    dupes = df.group_by("run_id", "target", "layer", "position").len().filter(pl.col("len") > 1)
    if dupes.height:
        raise BadInput(
            "scores has several rows for one (run_id, target, layer, position); "
            "aggregate them to one row per cell first"
        )
    return with_intervals(df)


def with_intervals(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with iia_low and iia_high: as given, else the Wilson interval of hits (or of
    round(iia x n) when the frame has no hits column) over n."""
    if "iia_low" in df.columns and "iia_high" in df.columns:
        return df
    hits = pl.col("hits") if "hits" in df.columns else (pl.col("iia") * pl.col("n")).round()
    low, high = wilson_exprs(hits, pl.col("n"))
    valid = pl.col("iia").is_not_null()
    return df.with_columns(
        pl.when(valid).then(low).alias("iia_low"), pl.when(valid).then(high).alias("iia_high")
    )


def check_runs(runs: Sequence[Mapping[str, Any]], run_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Validate `runs` against the run ids found in scores; return them keyed by run_id.

    Raises:
        BadInput: a run lacks a key, a run_id repeats, a keep rate is outside 0..1,
            provenance is not a dict, or scores holds a run_id that `runs` lacks.
    """
    by_id: dict[int, dict[str, Any]] = {}
    for run in runs:
        missing = [k for k in RUN_KEYS if k not in run]
        if missing:
            raise BadInput(
                f"a run dict lacks key(s) {', '.join(missing)}; give each run {', '.join(RUN_KEYS)}"
            )
        run_id = int(run["run_id"])
        if run_id in by_id:
            raise BadInput(f"runs lists run_id {run_id} twice; pass each run once")
        keep = float(run["keep_rate"])
        if math.isnan(keep) or not 0.0 <= keep <= 1.0:
            raise BadInput(f"run {run_id} has keep_rate {keep}; pass a share between 0 and 1")
        if not isinstance(run["provenance"], Mapping):
            raise BadInput(f"run {run_id} provenance is not a dict; pass a dict of str to value")
        by_id[run_id] = dict(run)
    lacking = sorted(run_ids - by_id.keys())
    if lacking:
        raise BadInput(
            f"scores has run_id(s) {', '.join(map(str, lacking))} that runs lacks; "
            "pass a run dict for every run in scores"
        )
    return by_id
