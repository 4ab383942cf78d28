"""The report's heatmaps as altair charts, straight from a scores frame (for notebooks).

    from addpatch.report.charts import heatmap_chart, heatmap_charts
    cells = scores(store, run_id=1, targets=["O_1"])   # addpatch.scoring
    heatmap_chart(cells, "O_1")       # an altair chart; Jupyter draws it inline
    heatmap_charts(cells)             # every target (and component), in the report's order

These are the charts `addpatch report` writes (the same `heatmaps.heatmap`, colour scale and
marks), returned instead of written to files. Jupyter draws altair charts with Vega loaded from
a CDN; `enable_offline_charts()` draws them with the Vega bundle addpatch keeps for its reports
instead, so charts show without internet.
"""

from __future__ import annotations

import html
import json
import uuid
from typing import Any

import altair as alt
import polars as pl

from addpatch.errors import BadInput
from addpatch.report.components import component_facets
from addpatch.report.export import javascript_bundle
from addpatch.report.heatmaps import heatmap
from addpatch.report.labels import with_labels
from addpatch.report.summary import target_order
from addpatch.report.validate import check_scores

OFFLINE_RENDERER = "addpatch-offline"


def _labelled(scores: pl.DataFrame, heads_position: str | None) -> pl.DataFrame:
    """Scores as the report draws them: one facet per target and component, with labels."""
    faceted = component_facets(scores, heads_position) if scores.height else scores
    return with_labels(check_scores(faceted))


def heatmap_chart(
    scores: pl.DataFrame, target: str, *, heads_position: str | None = None
) -> alt.TopLevelMixin:
    """The report's heatmap of one target: layers x token positions, IIA in each cell, `*`
    where its 95% interval lies above the baseline, the best such cell outlined; one panel per
    run when `scores` holds several.

    `scores` is a frame of `addpatch.scoring.scores` (or the `iia_by_cell` query). `target`
    names a target as scored (`C_1`), or a component's facet as the report names it
    (`C_1 [attn]`, `C_1 [heads @ ' is']`; heads at `heads_position`, default the target's best
    residual-stream position).
    """
    labelled = _labelled(scores, heads_position)
    known = target_order(labelled)
    if target not in known:
        raise BadInput(f"scores has no target {target!r}; it has: {', '.join(known)}")
    return heatmap(labelled.filter(pl.col("target") == target), target)


def heatmap_charts(
    scores: pl.DataFrame, *, heads_position: str | None = None
) -> dict[str, alt.TopLevelMixin]:
    """`heatmap_chart` of every target (and component facet) in `scores`, in the report's
    order, keyed by the chart's name."""
    labelled = _labelled(scores, heads_position)
    return {
        target: heatmap(labelled.filter(pl.col("target") == target), target)
        for target in target_order(labelled)
    }


def offline_chart_html(spec: dict[str, Any]) -> str:
    """HTML that draws a Vega-Lite spec with the inlined Vega bundle (no network)."""
    element = f"addpatch-chart-{uuid.uuid4().hex}"
    spec_json = json.dumps(spec).replace("</", "<\\/")
    return (
        f'<div id="{html.escape(element)}"></div>\n'
        f"<script>{javascript_bundle()}</script>\n"
        f'<script>vegaEmbed("#{element}", {spec_json}, {{"actions": false}})'
        ".catch(console.error);</script>"
    )


def _offline_renderer(spec: dict[str, Any], **metadata: Any) -> dict[str, str]:
    return {"text/html": offline_chart_html(spec)}


def enable_offline_charts() -> None:
    """Draw altair charts in Jupyter with addpatch's own Vega bundle (inlined in each chart's
    output, about 1 MB; built once into the cache, ~4 s) rather than from a CDN."""
    alt.renderers.register(OFFLINE_RENDERER, _offline_renderer)
    alt.renderers.enable(OFFLINE_RENDERER)
