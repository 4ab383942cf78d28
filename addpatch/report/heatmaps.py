"""Altair heatmaps of IIA: layers (Embed at the bottom) x token positions.

Every chart uses the same colour scale (viridis, fixed domain 0..1) and legend, so
colours compare across targets and runs. Each cell shows its IIA (two decimals; ``*`` where
its 95% interval lies above the baseline); the tooltip adds the interval, n and baseline.
The best cell of each run (the best whose interval lies above the baseline) is outlined.
Cells are sized for a laptop screen: 34 px high and 40-64 px wide (narrower with many
positions).
With several runs the chart is faceted into one column per run (model / digit width),
each with its own axes because models may differ in layers and tokens.
Cells whose IIA is null (not scored) are not drawn and show as blank.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import altair as alt
import polars as pl

from addpatch.report.components import HEADS_FACET
from addpatch.report.labels import layer_label
from addpatch.report.summary import clears_baseline, localized_best_cells
from addpatch.report.validate import with_intervals

CELL_MARK = "cells"
"""Vega mark name of the heatmap cells; rendered SVG groups carry class ``cells_marks``."""
BEST_MARK = "best"
"""Vega mark name of the best-cell outline; class ``best_marks``."""

_FIELDS = [
    "run_id",
    "panel",
    "target",
    "layer",
    "layer_label",
    "position",
    "x_label",
    "iia",
    "n",
    "iia_low",
    "iia_high",
    "baseline",
    "localized",
    "iia_text",
    "is_best",
    "k",
]
TEXT_MARK = "values"
"""Vega mark name of the IIA written in each cell; class ``values_marks``."""
CELL_HEIGHT = 34
CELL_WIDTH = (40, 64)  # narrowest and widest cell, px
CHART_WIDTH = 1000  # cells are narrowed (down to CELL_WIDTH[0]) to fit about this width
_COLOR = alt.Color(
    "iia:Q",
    title="IIA",
    scale=alt.Scale(domain=[0.0, 1.0], scheme="viridis", clamp=True),
    legend=alt.Legend(values=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], format=".1f", gradientLength=160),
)
_TOOLTIP = [
    alt.Tooltip("target:N", title="Target"),
    alt.Tooltip("panel:N", title="Run"),
    alt.Tooltip("layer_label:N", title="Layer"),
    alt.Tooltip("x_label:N", title="Position"),
    alt.Tooltip("iia:Q", title="IIA", format=".3f"),
    alt.Tooltip("iia_low:Q", title="95% interval from", format=".3f"),
    alt.Tooltip("iia_high:Q", title="95% interval to", format=".3f"),
    alt.Tooltip("baseline:Q", title="Baseline", format=".3f"),
    alt.Tooltip("n:Q", title="Examples (n)", format=",d"),
    alt.Tooltip("k:Q", title="Subspace rank k (DAS)"),
]


def heatmap_rows(labelled: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of one target's labelled scores; ``is_best`` marks each run's best cell.

    A run where no cell's interval lies above the baseline has no best cell (nothing is
    outlined).
    """
    labelled = with_intervals(labelled)
    if "baseline" not in labelled.columns:
        labelled = labelled.with_columns(pl.lit(None, pl.Float64).alias("baseline"))
    if "k" not in labelled.columns:  # full-vector cells have no rank
        labelled = labelled.with_columns(pl.lit(None, pl.Int64).alias("k"))
    best = (
        localized_best_cells(labelled)
        .select("run_id", "layer", "position")
        .with_columns(pl.lit(True).alias("is_best"))
    )
    df = labelled.join(best, on=["run_id", "layer", "position"], how="left").with_columns(
        pl.col("is_best").fill_null(False),
        clears_baseline(labelled).alias("localized"),
        pl.when(pl.col("iia").is_not_null())
        .then(
            pl.col("iia").round(2).map_elements(lambda v: f"{v:.2f}", return_dtype=pl.String)
            + pl.when(clears_baseline(labelled)).then(pl.lit("*")).otherwise(pl.lit(""))
        )
        .alias("iia_text"),
    )
    return df.sort("run_id", "layer", "position").select(_FIELDS).to_dicts()


def heatmap(
    labelled: pl.DataFrame, target: str, rows: list[dict[str, Any]] | None = None
) -> alt.TopLevelMixin:
    """Heatmap chart of one target; faceted by run when `labelled` holds several runs.

    `labelled` is the target's slice of the scores frame after `labels.with_labels`; `rows`,
    the chart's data, default to its `heatmap_rows`.
    """
    rows = heatmap_rows(labelled) if rows is None else rows
    layers = sorted(labelled.get_column("layer").unique().to_list(), reverse=True)
    y_order = [layer_label(layer) for layer in layers]
    x_order = (
        (labelled.select("position", "x_label").unique().sort("position", "x_label"))
        .get_column("x_label")
        .unique(maintain_order=True)
        .to_list()
    )
    heads = f"[{HEADS_FACET}" in target  # a layer x head facet (report.components)
    x = alt.X(
        "x_label:N",
        title="Head" if heads else "Token position",
        sort=x_order,
        axis=alt.Axis(labelAngle=-45, labelAlign="right", labelLimit=160, labelFontSize=13),
    )
    y = alt.Y("layer_label:N", title="Layer", sort=y_order, axis=alt.Axis(labelFontSize=13))
    base = alt.Chart().encode(x=x, y=y, tooltip=_TOOLTIP)
    cells = base.properties(name=CELL_MARK).mark_rect(cursor="pointer").encode(color=_COLOR)
    values = (
        base.properties(name=TEXT_MARK)
        .mark_text(fontSize=11, cursor="pointer")
        .encode(
            text="iia_text:N",
            color=alt.condition("datum.iia > 0.6", alt.value("#1d1d1f"), alt.value("white")),
        )
        .transform_filter("datum.iia != null")
    )
    best = (
        base.properties(name=BEST_MARK)
        .mark_rect(fill=None, stroke="#e4002b", strokeWidth=3, cursor="pointer")
        .transform_filter("datum.is_best")
    )
    width = max(CELL_WIDTH[0], min(CELL_WIDTH[1], CHART_WIDTH // max(1, len(x_order))))
    layered = alt.layer(cells, values, best, data=alt.InlineData(values=rows)).properties(
        width=alt.Step(width), height=alt.Step(CELL_HEIGHT)
    )
    what = "head, at one token position" if heads else "token position"
    title = alt.Title(
        target,
        subtitle=[
            f"IIA by layer and {what} (* : 95% interval above the baseline); "
            "best such cell outlined; click a cell for its examples",
            _baseline_line(labelled),
        ],
    )
    panels = labelled.sort("run_id").get_column("panel").unique(maintain_order=True).to_list()
    if len(panels) == 1:
        chart: alt.TopLevelMixin = layered.properties(title=title)
    else:
        chart = (
            layered.facet(column=alt.Column("panel:N", title=None, sort=panels))
            .resolve_scale(x="independent", y="independent")
            .properties(title=title)
        )
    configured: alt.TopLevelMixin = (
        chart.configure_axis(labelFontSize=11, titleFontSize=12)
        .configure_title(anchor="start")
        .configure_view(strokeWidth=0)
    )
    return configured


def _baseline_line(labelled: pl.DataFrame) -> str:
    """``Baseline (no-op patch): 0.078`` (per run when several), or a note that it is unknown."""
    if "baseline" not in labelled.columns or labelled.get_column("baseline").is_null().all():
        return "Baseline unknown (compared with 0)"
    per_run = (
        labelled.group_by("run_id", maintain_order=True)
        .agg(pl.col("panel").first(), pl.col("baseline").drop_nulls().first())
        .sort("run_id")
    )
    if per_run.height == 1:
        return f"Baseline (IIA of a patch that changes nothing): {per_run['baseline'][0]:.3f}"
    parts = [
        f"{panel} {value:.3f}" if value is not None else f"{panel} —"
        for panel, value in per_run.select("panel", "baseline").iter_rows()
    ]
    return "Baseline: " + "; ".join(parts)


def heatmap_spec(labelled: pl.DataFrame, target: str, validate: bool = False) -> dict[str, Any]:
    """Vega-Lite spec (a JSON-ready dict) of `heatmap`.

    Altair copies and checks inline data value by value, so the chart is built without its
    rows, which go into the spec afterwards (the same spec, in a fraction of the time); checking
    the spec against the Vega-Lite schema takes Altair as long again, so reports skip it (the
    tests check every kind of heatmap).
    """
    spec = heatmap(labelled, target, rows=[]).to_dict(validate=validate)
    rows = heatmap_rows(labelled)
    # as Altair names a chart's data: after a hash of its values, kept in the spec's `datasets`
    text = json.dumps(rows, sort_keys=True, default=str)
    name = "data-" + hashlib.sha256(text.encode()).hexdigest()[:32]
    spec["data"] = {"name": name}
    spec["datasets"] = {name: rows}
    return spec
