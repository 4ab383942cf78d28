"""`build_report`: writes the HTML page, heatmap images and per-run analyses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from addpatch.errors import BadInput
from addpatch.report.analysis import analysis_markdown
from addpatch.report.export import javascript_bundle, write_images
from addpatch.report.heatmaps import heatmap_spec
from addpatch.report.html import CellExamples, ChartBlock, render_page
from addpatch.report.labels import with_labels
from addpatch.report.naming import analysis_name, heatmap_stem
from addpatch.report.summary import DEFAULT_THRESHOLD, check_threshold, summary_table, target_order
from addpatch.report.validate import check_runs, check_scores

HTML_NAME = "report.html"


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by `build_report`; pngs/svgs follow the order of targets in scores."""

    html: Path
    pngs: list[Path] = field(default_factory=list)
    svgs: list[Path] = field(default_factory=list)
    markdowns: list[Path] = field(default_factory=list)


def build_report(
    scores: pl.DataFrame,
    runs: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    title: str = "addpatch report",
    threshold: float = DEFAULT_THRESHOLD,
    examples: CellExamples | None = None,
    informative: bool = False,
) -> ReportFiles:
    """Write the report of `scores` into `out_dir` (created if missing).

    Args:
        scores: one row per (run_id, target, layer, position) with columns run_id, model,
            num_digits, target, layer (-1 = embeddings), position, position_label, iia, n.
        runs: one dict per run with run_id, model, num_digits, keep_rate, examples and
            provenance (a dict shown as a table). Every run_id in `scores` needs one.
        out_dir: folder for ``report.html``, ``heatmap_<target>.png/.svg`` (target names
            sanitized by `addpatch.report.naming.safe_name`) and ``analysis_run<id>.md``.
        title: page title.
        threshold: IIA at or above which a cell counts as carrying the variable; used for
            "carried by last token from layer" (the smallest layer whose IIA at the last
            token position reaches it) and for the regions listed in the analyses.

    Returns:
        The paths written.

    Raises:
        BadInput: `scores` lacks a column, is empty or malformed, a run dict is
            incomplete, or `threshold` is outside (0, 1].
    """
    threshold = check_threshold(threshold)
    df = check_scores(scores)
    by_id = check_runs(runs, set(df.get_column("run_id").unique().to_list()))
    if not title.strip():
        raise BadInput("title is empty; pass a title or leave the default")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # a previous report's heatmaps and analyses would sit beside this one's: remove them
    for stale in [*out_dir.glob("heatmap_*.png"), *out_dir.glob("heatmap_*.svg")]:
        stale.unlink()
    for stale in out_dir.glob("analysis_run*.md"):
        stale.unlink()

    labelled = with_labels(df)
    blocks: list[ChartBlock] = []
    pngs: list[Path] = []
    svgs: list[Path] = []
    for target in target_order(df):
        part = labelled.filter(pl.col("target") == target)
        spec = heatmap_spec(part, target)
        png, svg = write_images(spec, out_dir, heatmap_stem(target))
        pngs.append(png)
        svgs.append(svg)
        drawn = part.filter(pl.col("iia").is_not_null()).height
        blocks.append(ChartBlock(target, spec, drawn, png.name, svg.name))

    ordered_runs = [by_id[k] for k in sorted(by_id)]
    markdowns: list[Path] = []
    for run in ordered_runs:
        path = out_dir / analysis_name(int(run["run_id"]))
        part = df.filter(pl.col("run_id") == int(run["run_id"]))
        path.write_text(analysis_markdown(run, part, threshold), encoding="utf-8")
        markdowns.append(path)

    html_path = out_dir / HTML_NAME
    page = render_page(
        title=title,
        charts=blocks,
        summary=summary_table(df, threshold),
        runs=ordered_runs,
        threshold=threshold,
        bundle=javascript_bundle(),
        examples=examples,
        informative=informative,
    )
    html_path.write_text(page, encoding="utf-8")
    return ReportFiles(html=html_path, pngs=pngs, svgs=svgs, markdowns=markdowns)
