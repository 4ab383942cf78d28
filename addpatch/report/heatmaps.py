"""Altair heatmaps of IIA: layers (Embed at the bottom) x token positions.

Every chart uses the same colour scale (viridis, fixed domain 0..1) and legend, so
colours compare across targets and runs. The best cell of each run is outlined.
With several runs the chart is faceted into one column per run (model / digit width),
each with its own axes because models may differ in layers and tokens.
Cells whose IIA is null (not scored) are not drawn and show as blank.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from addpatch.report.components import HEADS_FACET
from addpatch.report.labels import layer_label
from addpatch.report.summary import best_cells

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
    "is_best",
]
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
    alt.Tooltip("n:Q", title="Examples (n)", format=",d"),
]


def heatmap_rows(labelled: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of one target's labelled scores; ``is_best`` marks each run's best cell.

    A run whose IIA is 0 everywhere has no best cell (nothing is outlined).
    """
    best = (
        best_cells(labelled)
        .filter(pl.col("iia") > 0)
        .select("run_id", "layer", "position")
        .with_columns(pl.lit(True).alias("is_best"))
    )
    df = labelled.join(best, on=["run_id", "layer", "position"], how="left").with_columns(
        pl.col("is_best").fill_null(False)
    )
    return df.sort("run_id", "layer", "position").select(_FIELDS).to_dicts()


def heatmap(labelled: pl.DataFrame, target: str) -> alt.TopLevelMixin:
    """Heatmap chart of one target; faceted by run when `labelled` holds several runs.

    `labelled` is the target's slice of the scores frame after `labels.with_labels`.
    """
    rows = heatmap_rows(labelled)
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
        axis=alt.Axis(labelAngle=-45, labelAlign="right", labelLimit=140),
    )
    y = alt.Y("layer_label:N", title="Layer", sort=y_order)
    base = alt.Chart().encode(x=x, y=y, tooltip=_TOOLTIP)
    cells = base.properties(name=CELL_MARK).mark_rect().encode(color=_COLOR)
    best = (
        base.properties(name=BEST_MARK)
        .mark_rect(fill=None, stroke="#e4002b", strokeWidth=2.5)
        .transform_filter("datum.is_best")
    )
    layered = alt.layer(cells, best, data=alt.InlineData(values=rows)).properties(
        width=alt.Step(30), height=alt.Step(20)
    )
    what = "head, at one token position" if heads else "token position"
    title = alt.Title(target, subtitle=f"IIA by layer and {what}; best cell outlined")
    panels = labelled.sort("run_id").get_column("panel").unique(maintain_order=True).to_list()
    if len(panels) == 1:
        chart: alt.TopLevelMixin = layered.properties(title=title)
    else:
        chart = (
            layered.facet(column=alt.Column("panel:N", title=None, sort=panels))
            .resolve_scale(x="independent", y="independent")
            .properties(title=title)
        )
    return (
        chart.configure_axis(labelFontSize=11, titleFontSize=12)
        .configure_title(anchor="start")
        .configure_view(strokeWidth=0)
    )


def heatmap_spec(labelled: pl.DataFrame, target: str) -> dict[str, Any]:
    """Vega-Lite spec (a JSON-ready dict) of `heatmap`."""
    return heatmap(labelled, target).to_dict()
