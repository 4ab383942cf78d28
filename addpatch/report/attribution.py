"""The attribution report: attribution's estimate against the exact effect, per target and
component, for the cells that have both.

The exact effect of a cell is its IIA from exact patching over the informative examples (those
whose label differs from the base answer: the examples attribution has a metric for), taken
from the exact runs of the same model and dataset (a --screen run's cells, or a full `addpatch
run`). Per target and component the page shows a scatter of mean estimate vs IIA, Spearman's
rank correlation and the overlap of the two top-10 lists, and how many examples had no metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from addpatch.report.build import ReportFiles
from addpatch.report.export import write_images
from addpatch.report.naming import safe_name
from addpatch.store.attribution_reads import estimate_vs_exact, examples_without_metric
from addpatch.store.store import Store

HTML_NAME = "attribution.html"
TOP = 10
SCREENED = "screened (a target's best)"
UNSCREENED = "random sample or full grid"


@dataclass(frozen=True)
class Agreement:
    target: str
    component: str
    cells: int
    screened: int  # of `cells`, those patched because a screen ranked them best for the target
    spearman: float | None  # None: fewer than 3 cells, or a constant column
    top_overlap: float | None  # share of the top-10 by IIA (IIA > 0) also top-10 by estimate


def agreement(part: pl.DataFrame, top: int = TOP) -> tuple[float | None, float | None]:
    """Spearman's rho of mean estimate vs IIA, and the overlap of the two top-k lists: k is
    `top`, or fewer when fewer cells have an IIA above 0 (None when none has: nothing to find);
    ties are broken by the cell (layer, head, position), the same way on both sides."""
    if part.height == 0:
        return None, None
    ranked = part.with_columns(
        pl.col("mean_estimate").rank("average").alias("r_est"),
        pl.col("iia").rank("average").alias("r_iia"),
    )
    rho = None
    if part.height >= 3:
        value = ranked.select(pl.corr("r_est", "r_iia")).item()
        rho = None if value is None or value != value else float(value)
    keys = ["layer", "head", "position_name"]
    k = min(top, part.filter(pl.col("iia") > 0).height)  # cells IIA ranks: those it moves
    if k == 0:
        return rho, None
    # ties (many cells have IIA 0) are broken by the cell, the same way on both sides
    ascending = [False] * len(keys)
    by_est = part.sort(["mean_estimate", *keys], descending=[True, *ascending]).head(k)
    by_iia = part.sort(["iia", *keys], descending=[True, *ascending]).head(k)
    overlap = (
        by_est.select(keys).join(by_iia.select(keys), on=keys, how="inner", nulls_equal=True).height
        / k
    )
    return rho, overlap


def agreements(pairs: pl.DataFrame) -> list[Agreement]:
    out: list[Agreement] = []
    if pairs.height == 0:
        return out
    for (target, component), part in pairs.group_by(["target", "component"], maintain_order=True):
        rho, overlap = agreement(part)
        screened = int(part["screened"].sum())
        out.append(Agreement(str(target), str(component), part.height, screened, rho, overlap))
    return out


@dataclass(frozen=True)
class AttributionReportFiles(ReportFiles):
    """The report's files, and its agreement table (`agreement_table`)."""

    agreement: pl.DataFrame = field(default_factory=pl.DataFrame)


def agreement_table(found: list[Agreement]) -> pl.DataFrame:
    """Per target and component with exact results: cells with both, of them screened,
    Spearman's rho and the top-10 overlap (what the report's table shows)."""
    schema = {
        "target": pl.String,
        "component": pl.String,
        "cells": pl.Int64,
        "screened": pl.Int64,
        "spearman": pl.Float64,
        f"top{TOP}_overlap": pl.Float64,
    }
    return pl.DataFrame(
        [(a.target, a.component, a.cells, a.screened, a.spearman, a.top_overlap) for a in found],
        schema=schema,
        orient="row",
    )


def _scatter(part: pl.DataFrame, title: str) -> dict[str, Any]:
    rows = part.with_columns(
        pl.when(pl.col("screened"))
        .then(pl.lit(SCREENED))
        .otherwise(pl.lit(UNSCREENED))
        .alias("patched_as")
    )
    chart = (
        alt.Chart(alt.InlineData(values=rows.to_dicts()))
        .mark_circle(size=40, opacity=0.7)
        .encode(
            x=alt.X("mean_estimate:Q", title="attribution: mean estimated change of M"),
            y=alt.Y("iia:Q", title="exact patching: IIA", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "patched_as:N",
                title="patched exactly as",
                scale=alt.Scale(domain=[SCREENED, UNSCREENED], range=["#d62728", "#1f77b4"]),
            ),
            tooltip=[
                "layer:Q",
                "head:Q",
                "position_name:N",
                "mean_estimate:Q",
                "iia:Q",
                "patched_as:N",
            ],
        )
        .properties(title=title, width=260, height=220)
    )
    spec: dict[str, Any] = chart.to_dict()
    return spec


def attribution_report(
    store: Store, attribution_run_id: int, out_dir: Path
) -> AttributionReportFiles:
    """Write attribution.html and one scatter PNG/SVG per target and component with both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("attribution_*.png"), *out_dir.glob("attribution_*.svg")]:
        stale.unlink()
    with store.connect(read_only=True) as conn:
        pairs = estimate_vs_exact(conn, attribution_run_id)
        missing = examples_without_metric(conn, attribution_run_id)
    found = agreements(pairs)
    pngs, svgs, blocks = [], [], []
    for item in found:
        part = pairs.filter(
            (pl.col("target") == item.target) & (pl.col("component") == item.component)
        )
        stem = f"attribution_{safe_name(item.target)}_{item.component}"
        png, svg = write_images(
            _scatter(part, f"{item.target}, {item.component}: {_describe(item)}"), out_dir, stem
        )
        pngs.append(png)
        svgs.append(svg)
        blocks.append(f'<figure><img src="{escape(png.name)}" alt="{escape(stem)}"></figure>')
    rows = "".join(
        f"<tr><td>{escape(a.target)}</td><td>{a.component}</td><td>{a.cells}</td>"
        f"<td>{a.screened}</td>"
        f"<td>{_number(a.spearman)}</td><td>{_number(a.top_overlap)}</td></tr>"
        for a in found
    )
    metric_rows = "".join(
        f"<tr><td>{escape(str(t))}</td><td>{n}</td><td>{w}</td></tr>"
        for t, n, w in missing.select("target", "examples", "without_metric").iter_rows()
    )
    note = (
        ""
        if found
        else "<p>No cell has an exact result yet: rerun with <code>--validate N</code> (a "
        "random sample of cells) or <code>--screen N</code>, or run <code>addpatch run</code> "
        "with the same options and no <code>--method</code>.</p>"
    )
    html = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Attribution run {attribution_run_id}</title>",
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px}"
            "figure{display:inline-block;margin:4px}</style></head><body>",
            f"<h1>Attribution run {attribution_run_id}: estimate vs exact effect</h1>",
            "<p>Each point is a cell with both an attribution estimate (mean over the "
            "examples with a metric) and an exact IIA (informative examples). Spearman's rho "
            f"ranks the two; the overlap is the share of the top {TOP} cells by IIA (those with "
            f"IIA above 0, if fewer) that are also in the top list by estimate. Cells drawn at "
            "random (<code>--validate</code>) or a whole exact grid show how far the estimate "
            "can be trusted across the grid; cells a screen picked are its best guesses only, "
            "so rho among them says how well it orders the top. Attribution is a first-order "
            "guess: it fails where attention saturates, at MLP0 and where paths cancel "
            "(docs/attribution.md).</p>",
            note,
            "<table><tr><th>target</th><th>component</th><th>cells</th><th>of them screened</th>"
            "<th>Spearman rho</th>"
            f"<th>top-{TOP} overlap</th></tr>{rows}</table>",
            *blocks,
            "<h2>Examples without a metric</h2><p>An example whose label equals its base "
            "answer for a target has no metric for it, and no estimate.</p>",
            "<table><tr><th>target</th><th>examples</th><th>without metric</th></tr>"
            f"{metric_rows}</table>",
            "</body></html>",
        ]
    )
    html_path = out_dir / HTML_NAME
    html_path.write_text(html, encoding="utf-8")
    return AttributionReportFiles(
        html=html_path, pngs=pngs, svgs=svgs, agreement=agreement_table(found)
    )


def _describe(item: Agreement) -> str:
    return f"rho {_number(item.spearman)}, top-{TOP} overlap {_number(item.top_overlap)}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
