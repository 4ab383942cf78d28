"""addpatch.report.charts: the report's heatmaps returned as altair charts, and the offline
renderer that draws them in Jupyter (synthetic scores, no model)."""

from __future__ import annotations

import json

import altair as alt
import polars as pl
import pytest

from addpatch.errors import BadInput
from addpatch.report import charts
from addpatch.report.charts import (
    OFFLINE_RENDERER,
    enable_offline_charts,
    heatmap_chart,
    heatmap_charts,
    offline_chart_html,
)
from addpatch.report.heatmaps import heatmap_rows
from addpatch.report.labels import with_labels
from addpatch.report.validate import check_scores
from tests.test_report import PLANS, synthetic_scores


@pytest.fixture(scope="module")
def scores() -> pl.DataFrame:
    return synthetic_scores()


def _rows(spec: dict) -> list[dict]:
    """The chart's data rows, wherever altair put them."""
    if "datasets" in spec:
        [rows] = spec["datasets"].values()
        return rows
    return spec["data"]["values"]


def test_heatmap_chart_is_the_report_heatmap_of_one_target(scores):
    chart = heatmap_chart(scores, "digit_0_1")
    assert isinstance(chart, alt.TopLevelMixin)
    spec = chart.to_dict()  # validates against the Vega-Lite schema
    assert spec["title"]["text"] == "digit_0_1"
    labelled = with_labels(check_scores(scores)).filter(pl.col("target") == "digit_0_1")
    expected = heatmap_rows(labelled)
    got = _rows(spec)
    key = lambda r: (r["run_id"], r["layer"], r["position"])  # noqa: E731
    assert sorted(got, key=key) == sorted(json.loads(json.dumps(expected)), key=key)
    # two runs: one panel per run, as in the report
    assert spec["facet"]["column"]["field"] == "panel"


def test_heatmap_charts_give_every_target_in_the_reports_order(scores):
    got = heatmap_charts(scores)
    assert list(got) == list(PLANS)
    for target, chart in got.items():
        assert chart.to_dict(validate=False)["title"]["text"] == target


def test_component_scores_become_their_own_charts(scores):
    both = pl.concat(
        [
            scores.with_columns(
                pl.lit("resid").alias("component"), pl.lit(None, pl.Int16).alias("head")
            ),
            scores.with_columns(
                pl.lit("attn").alias("component"), pl.lit(None, pl.Int16).alias("head")
            ),
        ]
    )
    names = list(heatmap_charts(both))
    assert names[:2] == ["digit_0_1", "digit_0_1 [attn]"]
    attn = heatmap_chart(both, "digit_0_1 [attn]").to_dict(validate=False)
    assert attn["title"]["text"] == "digit_0_1 [attn]"


def test_an_unknown_target_names_the_ones_there(scores):
    with pytest.raises(BadInput, match=r"no target 'C_9'; it has: digit_0_1, C_1\+O_2"):
        heatmap_chart(scores, "C_9")


def test_bad_scores_are_refused_as_the_report_refuses_them(scores):
    with pytest.raises(BadInput, match="lacks column"):
        heatmap_chart(scores.drop("iia"), "digit_0_1")
    with pytest.raises(BadInput, match="scores is empty"):
        heatmap_charts(scores.clear())


def test_offline_html_inlines_the_bundle_and_the_spec(monkeypatch):
    monkeypatch.setattr(charts, "javascript_bundle", lambda: "window.vegaEmbed = function () {};")
    spec = {"mark": "rect", "title": "a </script> title"}
    page = offline_chart_html(spec)
    assert "<script>window.vegaEmbed = function () {};</script>" in page
    assert "</script> title" not in page  # cannot close the script element early
    call = page.split('vegaEmbed("#', 1)[1]
    element, rest = call.split('", ', 1)
    assert f'<div id="{element}"></div>' in page
    assert json.loads(rest.rsplit(', {"actions": false})', 1)[0]) == spec
    assert offline_chart_html(spec).split('id="')[1] != page.split('id="')[1]  # unique ids


def test_enable_offline_charts_makes_charts_render_offline(monkeypatch, scores):
    monkeypatch.setattr(charts, "javascript_bundle", lambda: "/* bundle */")
    before = alt.renderers.active
    try:
        enable_offline_charts()
        assert alt.renderers.active == OFFLINE_RENDERER
        bundle = heatmap_chart(scores, "digit_0_1")._repr_mimebundle_()
        html = (bundle[0] if isinstance(bundle, tuple) else bundle)["text/html"]
        assert "<script>/* bundle */</script>" in html
        assert "cdn.jsdelivr" not in html
        assert '"text": "digit_0_1"' in html
    finally:
        alt.renderers.enable(before)
