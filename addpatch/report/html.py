"""Assembly of the single, offline report page.

The page inlines the Vega/Vega-Lite/Vega-Embed bundle and every chart spec, and a
Content-Security-Policy forbids loading anything from elsewhere. After all charts
have rendered, the page writes a JSON status into ``<pre id="render-status">``
(``{"views": int, "charts": [{"target", "expected", "cells", "best"}], "errors": [...],
"csp": [...]}``) so headless-browser tests can check the rendering.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import polars as pl

from addpatch.report.labels import layer_label, visible_token

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
)
NEVER = "—"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem 2rem;
       color: #1d1d1f; }
h1 { margin-bottom: 0.2rem; } .note { color: #555; max-width: 60rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2rem; }
.chart { overflow-x: auto; margin-bottom: 2rem; } .files { font-size: 0.85rem; }
#render-status { display: none; }
"""

_HEAD_SCRIPT = """
window.__addpatchStatus = {views: 0, charts: [], errors: [], csp: []};
document.addEventListener("securitypolicyviolation", function (e) {
  window.__addpatchStatus.csp.push(e.violatedDirective + " " + e.blockedURI);
});
window.addEventListener("error", function (e) {
  window.__addpatchStatus.errors.push(String(e.message));
});
"""

_RENDER_SCRIPT = """
(function () {
  const status = window.__addpatchStatus;
  const blocks = Array.from(document.querySelectorAll("section[data-target]"));
  const options = {renderer: "svg",
                   actions: {export: true, source: false, compiled: false, editor: false}};
  const jobs = blocks.map(async function (block) {
    const spec = JSON.parse(block.querySelector("script.spec").textContent);
    const host = block.querySelector(".chart");
    const entry = {target: block.dataset.target, expected: Number(block.dataset.cells),
                   cells: 0, best: 0};
    try {
      const result = await vegaEmbed(host, spec, options);
      await result.view.runAsync();
      status.views += 1;
      entry.cells = host.querySelectorAll("g.cells_marks > path").length;
      entry.best = host.querySelectorAll("g.best_marks > path").length;
    } catch (err) {
      status.errors.push(block.dataset.target + ": " + err);
    }
    return entry;
  });
  Promise.all(jobs).then(function (entries) {
    status.charts = entries;
    const out = document.getElementById("render-status");
    out.textContent = JSON.stringify(status);
    out.setAttribute("data-done", "1");
  });
})();
"""


@dataclass(frozen=True)
class ChartBlock:
    """One target's chart as placed on the page; `cells` counts cells with an IIA."""

    target: str
    spec: dict[str, Any]
    cells: int
    png_name: str
    svg_name: str


def render_page(
    *,
    title: str,
    charts: Sequence[ChartBlock],
    summary: pl.DataFrame,
    runs: Sequence[Mapping[str, Any]],
    threshold: float,
    bundle: str,
) -> str:
    """Return the complete HTML document of the report."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_HEAD_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{escape(title)}</h1>",
        '<p class="note">Interchange-intervention accuracy (IIA) per layer and token position. '
        "All heatmaps share one colour scale from 0 to 1; the best cell of each run is "
        f"outlined. &ldquo;Carried by last token&rdquo; is the first layer whose IIA at the "
        f"prompt's last token is at least {threshold:.2f} ({NEVER} if none). Baseline is the "
        "IIA of a patch that changes nothing (the share of examples whose label already is "
        "the base answer): a variable is localized only where IIA rises above it. Spaces in "
        "tokens are shown as <code>·</code>.</p>",
        "<h2>Summary</h2>",
        _summary_table(summary, threshold),
        "<h2>Heatmaps</h2>",
        *(_chart_section(i, block) for i, block in enumerate(charts)),
        "<h2>Runs</h2>",
        *(_run_section(run) for run in runs),
        '<pre id="render-status"></pre>',
        f"<script>{bundle}</script>",
        f"<script>{_RENDER_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _json_for_script(value: Any) -> str:
    """JSON text safe inside a ``<script>`` element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _chart_section(index: int, block: ChartBlock) -> str:
    """``<section>`` holding one target's chart, its spec and links to its image files."""
    return (
        f'<section id="chart-{index}" data-target="{escape(block.target)}" '
        f'data-cells="{block.cells}">'
        f'<h3>{escape(block.target)}</h3><div class="chart"></div>'
        f'<p class="files">Files: <a href="{escape(block.png_name)}">PNG</a> · '
        f'<a href="{escape(block.svg_name)}">SVG</a></p>'
        f'<script type="application/json" class="spec">{_json_for_script(block.spec)}</script>'
        "</section>"
    )


def _cell(value: Any, *, num: bool = False) -> str:
    """One ``<td>``, HTML-escaped."""
    cls = ' class="num"' if num else ""
    return f"<td{cls}>{escape(str(value))}</td>"


def _summary_table(summary: pl.DataFrame, threshold: float) -> str:
    """The per (run, target) summary table."""
    head = (
        "<tr><th>Run</th><th>Model</th><th>Digits</th><th>Target</th><th>Best layer</th>"
        "<th>Best position</th><th>Best IIA</th><th>Baseline</th><th>n</th>"
        f"<th>Carried by last token from layer (IIA &ge; {threshold:.2f})</th></tr>"
    )
    rows = []
    for r in summary.iter_rows(named=True):
        found = r["best_iia"] is not None and r["best_iia"] > 0
        rows.append(
            "<tr>"
            + _cell(r["run_id"], num=True)
            + _cell(r["model"])
            + _cell(r["num_digits"], num=True)
            + _cell(r["target"])
            + _cell(layer_label(r["best_layer"]) if found else NEVER)
            + _cell(f"{r['best_position']}: {visible_token(r['best_label'])}" if found else NEVER)
            + _cell(NEVER if r["best_iia"] is None else f"{r['best_iia']:.3f}", num=True)
            + _cell(NEVER if r.get("baseline") is None else f"{r['baseline']:.3f}", num=True)
            + _cell(r["best_n"] if found else NEVER, num=True)
            + _cell(NEVER if r["carried_from"] is None else layer_label(r["carried_from"]))
            + "</tr>"
        )
    return f'<table id="summary">{head}{"".join(rows)}</table>'


def _run_section(run: Mapping[str, Any]) -> str:
    """A run's headline figures and its provenance table."""
    digits = escape(str(run["num_digits"]))
    rows = [
        ("examples", f"{int(run['examples']):,}"),
        ("filter keep rate", f"{float(run['keep_rate']):.1%}"),
    ]
    prov = "".join(
        f"<tr><th>{escape(str(k))}</th>{_cell(_show(v))}</tr>" for k, v in run["provenance"].items()
    )
    head = "".join(f"<tr><th>{k}</th>{_cell(v)}</tr>" for k, v in rows)
    return (
        f'<section class="run" id="run-{int(run["run_id"])}">'
        f"<h3>Run {int(run['run_id'])}: {escape(str(run['model']))}, {digits} digits</h3>"
        f'<table>{head}</table><h4>Provenance</h4><table class="provenance">{prov}</table>'
        "</section>"
    )


def _show(value: Any) -> str:
    """Text of a provenance value; containers are shown as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
