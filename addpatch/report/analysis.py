"""Markdown analysis of one run: per target the best cell, regions and last-token layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from addpatch.report.labels import layer_label, position_label
from addpatch.report.summary import Region, best_cells, carried_from_layer, regions, target_order

MAX_REGION_LINES = 20
"""At most this many lines list the high-IIA regions of one target."""
NEVER = "—"


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


def target_section(scores: pl.DataFrame, target: str, threshold: float) -> list[str]:
    """Markdown lines for one target of one run (`scores` holds only that run)."""
    df = scores.filter(pl.col("target") == target)
    lines = [f"## {code(target)}", ""]
    best = best_cells(df)
    if best.height == 0 or best.get_column("iia").item() == 0:
        return lines + ["- No localization found: IIA is 0 in every cell.", ""]
    b = best.row(0, named=True)
    carried = carried_from_layer(df, threshold).row(0, named=True)
    from_layer = carried["carried_from"]
    last = code(position_label(carried["last_position"], carried["last_label"]))
    lines += [
        f"- Best cell: layer {layer_label(b['layer'])}, position "
        f"{code(position_label(b['position'], b['position_label']))}, "
        f"IIA {b['iia']:.3f} (n = {b['n']})",
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
