"""Markdown analysis of one run: per target the best cell, regions and last-token layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from addpatch.report.labels import NEVER, layer_label, position_label
from addpatch.report.summary import (
    Region,
    carried_from_layer,
    localized_best_cells,
    regions,
    target_order,
    top_cells,
)
from addpatch.report.validate import with_intervals

MAX_REGION_LINES = 20
"""At most this many lines list the high-IIA regions of one target."""


def layer_ranges(layers: Sequence[int]) -> str:
    """Ascending layers as contiguous ranges, e.g. ``[-1, 0, 1, 4]`` -> ``Embed–1, 4``."""
    spans: list[tuple[int, int]] = []
    for layer in layers:
        if spans and layer == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], layer)
        else:
            spans.append((layer, layer))
    return ", ".join(
        layer_label(a) if a == b else f"{layer_label(a)}–{layer_label(b)}" for a, b in spans
    )


def code(text: str) -> str:
    """`text` as a markdown code span (safe when it holds backticks)."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def region_lines(found: Sequence[Region], threshold: float) -> list[str]:
    """Markdown lines listing `found`, capped at `MAX_REGION_LINES` lines in all."""
    if not found:
        return [f"- No cell reaches IIA ≥ {threshold:.2f}."]
    lines = [f"- Cells with IIA ≥ {threshold:.2f}, by position:"]
    items = [
        f"  - position {code(position_label(r.position, r.position_label))}: "
        f"layer{'s' if len(r.layers) > 1 else ''} {layer_ranges(r.layers)}"
        for r in found
    ]
    room = MAX_REGION_LINES - 1
    if len(items) > room:
        shown = room - 1
        items = items[:shown] + [f"  - … and {len(found) - shown} more positions"]
    return lines + items


def interval_text(row: Mapping[str, Any]) -> str:
    """``0.492 [0.431, 0.553]``: an IIA and its 95% interval."""
    return f"{row['iia']:.3f} [{row['iia_low']:.3f}, {row['iia_high']:.3f}]"


def _baseline_text(df: pl.DataFrame) -> str:
    """``; baseline 0.078`` when the scores carry a baseline, else nothing."""
    if "baseline" not in df.columns or df.get_column("baseline").is_null().all():
        return ""
    return f"; baseline {df.get_column('baseline').drop_nulls()[0]:.3f}"


def target_section(scores: pl.DataFrame, target: str, threshold: float) -> list[str]:
    """Markdown lines for one target of one run (`scores` holds only that run)."""
    df = scores.filter(pl.col("target") == target)
    lines = [f"## {code(target)}", ""]
    best = localized_best_cells(df)
    if best.height == 0:
        top = top_cells(with_intervals(df))
        highest = (
            "" if top.height == 0 else f" (highest IIA {interval_text(top.row(0, named=True))})"
        )
        return lines + [
            "- Not localized: no cell's 95% interval lies above the baseline"
            f"{_baseline_text(df)}{highest}.",
            "",
        ]
    b = best.row(0, named=True)
    carried = carried_from_layer(df, threshold).row(0, named=True)
    from_layer = carried["carried_from"]
    last = code(position_label(carried["last_position"], carried["last_label"]))
    lines += [
        f"- Best cell: layer {layer_label(b['layer'])}, position "
        f"{code(position_label(b['position'], b['position_label']))}, "
        f"IIA {b['iia']:.3f} (n = {b['n']}, 95% interval {b['iia_low']:.3f}–{b['iia_high']:.3f})"
        f"{_baseline_text(df)}",
        f"- Carried by last token ({last}) "
        f"from layer: {NEVER if from_layer is None else layer_label(from_layer)}",
        *region_lines(regions(df, threshold), threshold),
        "",
    ]
    return lines


def analysis_markdown(run: Mapping[str, Any], scores: pl.DataFrame, threshold: float) -> str:
    """Markdown analysis of one run; `scores` holds that run's validated rows (may be empty)."""
    digits = run["num_digits"]
    lines = [
        f"# Run {run['run_id']}: {run['model']}, {digits} digits",
        "",
        f"- Examples: {int(run['examples']):,}",
        f"- Filter keep rate: {float(run['keep_rate']):.1%}",
        f'- Threshold: IIA ≥ {threshold:.2f} (regions and "carried by last token")',
        "",
    ]
    if scores.height == 0:
        return "\n".join(lines + ["No scores for this run.", ""])
    for target in target_order(scores):
        lines += target_section(scores, target, threshold)
    return "\n".join(lines)
