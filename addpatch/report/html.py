"""Assembly of the single, offline report page.

The page inlines the Vega/Vega-Lite/Vega-Embed bundle and every chart spec, and a
Content-Security-Policy forbids loading anything from elsewhere. After all charts
have rendered, the page writes a JSON status into ``<pre id="render-status">``
(``{"views": int, "charts": [{"target", "expected", "cells", "best"}], "errors": [...],
"csp": [...]}``) so headless-browser tests can check the rendering.

Drill-down: clicking a heatmap cell fills ``<section id="cell-detail">`` with the cell's IIA,
95% interval, n, baseline and its sample of examples (base and counterfactual prompts, patched
answer, label, right or wrong), read from ``<script id="cell-examples">``: JSON embedded when
the report was built (see `CellExamples`), so it works offline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import polars as pl

from addpatch.report.labels import NEVER, layer_label, visible_token

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem 2rem;
       color: #1d1d1f; }
h1 { margin-bottom: 0.2rem; } .note { color: #555; max-width: 60rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; } #summary td { white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2rem; }
.chart { overflow-x: auto; margin-bottom: 2rem; } .files { font-size: 0.85rem; }
#render-status { display: none; }
.mode { background: #fff6d6; border: 1px solid #e6cf7a; padding: 0.4rem 0.8rem;
        max-width: 60rem; }
#cell-detail { position: fixed; right: 1rem; bottom: 1rem; width: min(46rem, 60vw);
               max-height: 60vh; overflow: auto; background: #fff; border: 1px solid #888;
               box-shadow: 0 4px 18px rgba(0, 0, 0, 0.25); padding: 0.6rem 1rem; z-index: 10; }
#cell-detail[hidden] { display: none; }
#cell-detail h3 { margin: 0.2rem 0; } #cell-detail table { font-size: 0.82rem; }
#cell-detail .close { float: right; cursor: pointer; border: none; background: none;
                      font-size: 1.2rem; }
tr.right td.mark { color: #0a7d24; } tr.wrong td.mark { color: #c21d1d; }
"""

_HEAD_SCRIPT = """
window.__addpatchStatus = {views: 0, charts: [], errors: [], csp: []};
window.__addpatchViews = {};
document.addEventListener("securitypolicyviolation", function (e) {
  window.__addpatchStatus.csp.push(e.violatedDirective + " " + e.blockedURI);
});
window.addEventListener("error", function (e) {
  window.__addpatchStatus.errors.push(String(e.message));
});
"""

_DRILL_SCRIPT = """
const CELL_DATA = JSON.parse(document.getElementById("cell-examples").textContent);
function fmt(value) { return value === null || value === undefined ? "—" : value.toFixed(3); }
function cellText(tag, text, cls) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (cls) { el.className = cls; }
  return el;
}
function showCell(d) {
  const panel = document.getElementById("cell-detail");
  const key = [d.run_id, d.target, d.layer, d.position].join("|");
  const rows = CELL_DATA.cells[key] || [];
  const prompts = CELL_DATA.runs[String(d.run_id)] || {};
  panel.dataset.run = d.run_id; panel.dataset.target = d.target;
  panel.dataset.layer = d.layer; panel.dataset.position = d.position;
  panel.dataset.examples = rows.length;
  panel.querySelector("h3").textContent =
    d.target + " \u00b7 " + d.panel + " \u00b7 layer " + d.layer_label + " \u00b7 position " +
    d.x_label;
  panel.querySelector(".figures").textContent =
    "IIA " + fmt(d.iia) + " (95% interval " + fmt(d.iia_low) + "\u2013" + fmt(d.iia_high) +
    "), n = " + d.n + ", baseline " + fmt(d.baseline) +
    (d.localized ? " \u2014 interval above the baseline" : " \u2014 not above the baseline");
  const lp = (CELL_DATA.logprobs || {})[key];
  const note = (CELL_DATA.logprob_notes || {})[String(d.run_id)];
  panel.querySelector(".logprob").textContent = lp ?
    "Mean log-prob of the label's first digit token: " +
    (lp[0] === null ? "\u2014" : lp[0].toFixed(3)) + " (over the " +
    (100 * lp[1]).toFixed(0) + "% of examples whose label token is in the stored top 5)" :
    "Label log-prob: " + (note || "not computed for this report");
  panel.querySelector(".shown").textContent = rows.length ?
    "Showing " + rows.length + " of its " + d.n + " examples (right and wrong in turn, " +
    "by example id)." : "No examples stored for this cell in the report.";
  const body = panel.querySelector("tbody");
  body.replaceChildren();
  for (const [example, label, text, answer, right] of rows) {
    const p = prompts[String(example)] || ["?", "?", null];
    const tr = document.createElement("tr");
    tr.className = "example " + (right ? "right" : "wrong");
    tr.dataset.exampleId = example; tr.dataset.correct = right ? "1" : "0";
    tr.append(cellText("td", String(example), "num"), cellText("td", p[0]),
              cellText("td", p[1]), cellText("td", String(p[2]), "num"),
              cellText("td", JSON.stringify(text)),
              cellText("td", answer === null ? "—" : String(answer), "num"),
              cellText("td", String(label), "num"),
              cellText("td", right ? "\u2713 right" : "\u2717 wrong", "mark"));
    body.append(tr);
  }
  panel.hidden = false;
}
document.querySelector("#cell-detail .close").addEventListener("click", function () {
  document.getElementById("cell-detail").hidden = true;
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
      window.__addpatchViews[block.dataset.target] = result.view;
      result.view.addEventListener("click", function (event, item) {
        const d = item && item.datum;
        if (d && d.target !== undefined && d.layer !== undefined) { showCell(d); }
      });
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


@dataclass(frozen=True)
class CellExamples:
    """The examples embedded for the drill-down, in a compact form.

    `prompts`: run_id -> example_id -> (base prompt, counterfactual prompt, base answer), each
    example once per run; `cells`: ``"run|target|layer|position"`` -> list of (example_id,
    label, patched text, patched answer, right). At most `per_cell` examples per cell.
    """

    prompts: dict[str, dict[str, tuple[str, str, int]]]
    cells: dict[str, list[tuple[int, int, str, int | None, bool]]]
    per_cell: int
    # same keys -> (mean log-prob of the label's first digit token, coverage); per run, why not
    logprobs: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    logprob_notes: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def empty() -> CellExamples:
        return CellExamples({}, {}, 0)

    def with_logprobs(self, frame: pl.DataFrame, notes: dict[int, str]) -> CellExamples:
        """Add the label log-prob per cell (rows of `addpatch.probabilities.label_logprobs`)
        and, per run, why it could not be computed."""
        values = {
            f"{r['run_id']}|{r['target']}|{r['layer']}|{r['position']}": (
                r["label_logprob"],
                r["coverage"],
            )
            for r in frame.iter_rows(named=True)
        }
        text = {str(k): v for k, v in notes.items()}
        return CellExamples(self.prompts, self.cells, self.per_cell, values, text)

    @staticmethod
    def from_frame(frame: pl.DataFrame, per_cell: int) -> CellExamples:
        """From rows of the `cell_examples` query (several runs and targets may be stacked)."""
        prompts: dict[str, dict[str, tuple[str, str, int]]] = {}
        cells: dict[str, list[tuple[int, int, str, int | None, bool]]] = {}
        for r in frame.iter_rows(named=True):
            run = prompts.setdefault(str(r["run_id"]), {})
            run.setdefault(
                str(r["example_id"]), (r["base_prompt"], r["cf_prompt"], r["base_answer"])
            )
            key = f"{r['run_id']}|{r['target']}|{r['layer']}|{r['position']}"
            cells.setdefault(key, []).append(
                (r["example_id"], r["label"], r["patched_text"], r["patched_answer"], r["correct"])
            )
        return CellExamples(prompts, cells, per_cell)


def render_page(
    *,
    title: str,
    charts: Sequence[ChartBlock],
    summary: pl.DataFrame,
    runs: Sequence[Mapping[str, Any]],
    threshold: float,
    bundle: str,
    examples: CellExamples | None = None,
    informative: bool = False,
) -> str:
    """Return the complete HTML document of the report."""
    examples = examples or CellExamples.empty()
    mode = (
        "IIA here counts only <strong>informative examples</strong>: for each target, those "
        "whose label differs from the base answer (so n differs between targets and the "
        "baseline is 0). <code>--informative</code> off counts every kept example."
        if informative
        else "IIA here counts <strong>every kept example</strong>. <code>addpatch report "
        "--informative</code> counts, per target, only the examples whose label differs from "
        "the base answer."
    )
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
        "outlined. Baseline is the IIA of a patch that changes nothing (the share of examples "
        "whose label already is the base answer). Every IIA comes with its 95% Wilson score "
        "interval; a cell localizes a variable only where that interval lies above the "
        "baseline (marked <code>*</code> in the heatmaps), and the best cell is the best such "
        "cell: a target with none is <strong>not localized</strong>. &ldquo;Carried by last "
        f"token&rdquo; is the first layer whose IIA at the prompt's last token is at least "
        f"{threshold:.2f} ({NEVER} if none). Spaces in tokens are shown as <code>·</code>. "
        "Hover a cell for its figures; click it for a sample of its examples "
        f"(up to {examples.per_cell} per cell, embedded in this file).</p>",
        f'<p class="mode" id="mode" data-informative="{int(informative)}">{mode}</p>',
        "<h2>Summary</h2>",
        _summary_table(summary, threshold),
        "<h2>Heatmaps</h2>",
        *(_chart_section(i, block) for i, block in enumerate(charts)),
        _detail_panel(),
        '<script type="application/json" id="cell-examples">'
        + _json_for_script(
            {
                "runs": examples.prompts,
                "cells": examples.cells,
                "per_cell": examples.per_cell,
                "logprobs": examples.logprobs,
                "logprob_notes": examples.logprob_notes,
            }
        )
        + "</script>",
        "<h2>Runs</h2>",
        *(_run_section(run) for run in runs),
        '<pre id="render-status"></pre>',
        f"<script>{bundle}</script>",
        f"<script>{_DRILL_SCRIPT}</script>",
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
    """The per (run, target) summary table; a target no cell localizes says so."""
    head = (
        "<tr><th>Run</th><th>Model</th><th>Digits</th><th>Target</th><th>Best layer</th>"
        "<th>Best position</th><th>Best IIA [95% interval]</th><th>Baseline</th><th>n</th>"
        f"<th>Carried by last token from layer (IIA &ge; {threshold:.2f})</th></tr>"
    )
    rows = []
    for r in summary.iter_rows(named=True):
        found = bool(r.get("localized"))
        if found:
            iia = f"{r['best_iia']:.3f} [{r['best_iia_low']:.3f}, {r['best_iia_high']:.3f}]"
        elif r.get("max_iia") is not None:
            iia = f"highest {r['max_iia']:.3f} [{r['max_iia_low']:.3f}, {r['max_iia_high']:.3f}]"
        else:
            iia = NEVER
        rows.append(
            f'<tr class="{"localized" if found else "not-localized"}">'
            + _cell(r["run_id"], num=True)
            + _cell(r["model"])
            + _cell(r["num_digits"], num=True)
            + _cell(r["target"])
            + _cell(layer_label(r["best_layer"]) if found else "not localized")
            + _cell(
                f"{r['best_position']}: {visible_token(r['best_label'])}"
                if found
                else "not localized"
            )
            + _cell(iia, num=True)
            + _cell(NEVER if r.get("baseline") is None else f"{r['baseline']:.3f}", num=True)
            + _cell(r["best_n"] if found else NEVER, num=True)
            + _cell(NEVER if r["carried_from"] is None else layer_label(r["carried_from"]))
            + "</tr>"
        )
    return f'<table id="summary">{head}{"".join(rows)}</table>'


def _detail_panel() -> str:
    """The drill-down panel, hidden until a cell is clicked."""
    columns = (
        "Example",
        "Base prompt",
        "Counterfactual prompt",
        "Base answer",
        "Patched text",
        "Patched answer",
        "Label",
        "",
    )
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    return (
        '<section id="cell-detail" hidden><button class="close" title="Close">&times;</button>'
        '<h3></h3><p class="figures"></p><p class="logprob"></p><p class="shown"></p>'
        f"<table><thead><tr>{head}</tr></thead><tbody></tbody></table></section>"
    )


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
        f"<table>{head}</table>{_subspace_table(run.get('subspaces') or [])}"
        f'<h4>Provenance</h4><table class="provenance">{prov}</table>'
        "</section>"
    )


def _subspace_table(subspaces: Sequence[Mapping[str, Any]]) -> str:
    """A DAS run's subspaces: where, trained for what, rank, train vs held-out IIA, loss."""
    if not subspaces:
        return ""
    columns = [
        ("target", "trained for"),
        ("control", "control"),
        ("k", "k"),
        ("layer", "layer"),
        ("unit", "position"),
        ("train_iia", "train IIA"),
        ("test_iia", "test IIA"),
        ("final_train_loss", "final loss"),
    ]
    head = "".join(f"<th>{title}</th>" for _, title in columns)
    rows = "".join(
        "<tr>"
        + "".join(
            _cell(f"{s[key]:.3f}" if isinstance(s[key], float) else _show(s[key] or "—"))
            for key, _ in columns
        )
        + "</tr>"
        for s in subspaces
    )
    return (
        '<h4>Trained subspaces</h4><p class="note">Train IIA: the label\'s tokens are the '
        "argmax at every step on the train pairs (teacher-forced); test IIA: greedy answers "
        "of the held-out pairs. A <em>shuffled</em> control was trained on other pairs' "
        "labels: what a subspace of that rank fits without the variable.</p>"
        f'<table class="subspaces"><tr>{head}</tr>{rows}</table>'
    )


def _show(value: Any) -> str:
    """Text of a provenance value; containers are shown as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
