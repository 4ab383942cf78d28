"""Facet scores by component for the report: one heatmap per target and component.

The report draws one heatmap per "target" of a layer x position scores frame. Scores of the
residual stream keep their target names (so residual-only reports are unchanged); those of the
other components become their own facets:
  C_1 [attn], C_1 [mlp]        layer x token position, like the residual stream
  C_1 [heads @ ' is']          layer x head, at one token position: the one the user picks
                               (a position name such as `last` or `a0.d1`), by default the
                               target's best residual-stream position in that run, else the last
"""

from __future__ import annotations

import re
from functools import partial

import polars as pl

from addpatch.errors import BadInput
from addpatch.report.summary import last_positions

COMPONENT_ORDER = ("resid", "attn", "mlp", "heads")
HEADS_FACET = "heads @"


def facet_name(target: str, component: str, position_label: str | None = None) -> str:
    if component == "resid":
        return target
    if component == "heads":
        return f"{target} [{HEADS_FACET} {position_label!r}]"
    return f"{target} [{component}]"


_ONE_POSITION = r"(bos|last|w\d+\.\d+|a\d+\.[td]\d+|p\.\d+|s\d+\.\d+|c[01]\.\d+|r\.\d+)"
POSITION_NAME = re.compile(rf"{_ONE_POSITION}(\+{_ONE_POSITION})*")  # or a unit: a1.d0+last


def check_heads_position(name: str | None) -> None:
    """BadInput unless `name` (a --heads-position) is None or reads as a position name."""
    if name is not None and not POSITION_NAME.fullmatch(name):
        raise BadInput(
            f"cannot read --heads-position {name!r}; use last or a position name such as a0.d1 "
            "(the report's position names)"
        )


def component_facets(scores: pl.DataFrame, heads_position: str | None = None) -> pl.DataFrame:
    """`scores` (iia_cells rows with component and head) as one frame of layer x position
    facets with the columns the report reads; targets ordered, then components in
    COMPONENT_ORDER."""
    check_heads_position(heads_position)
    has_heads = "component" in scores.columns and (
        scores.filter(pl.col("component") == "heads").height > 0
    )
    if heads_position is not None and not has_heads:
        raise BadInput(
            "--heads-position places the heads heatmaps of runs patched with --components heads; "
            "these runs have none"
        )
    if "component" not in scores.columns:
        return scores
    keep = [c for c in scores.columns if c not in ("component", "head")]
    order = {t: i for i, t in enumerate(scores.get_column("target").unique(maintain_order=True))}
    resid = scores.filter(pl.col("component") == "resid")
    parts: list[pl.DataFrame] = []
    for rank, component in enumerate(COMPONENT_ORDER):
        part = scores.filter(pl.col("component") == component)
        if part.height == 0:
            continue
        if component == "heads":
            part = _heads_at(part, resid, heads_position)
        else:
            facet_of = partial(facet_name, component=component)
            part = part.with_columns(
                pl.col("target").map_elements(facet_of, return_dtype=pl.String).alias("facet")
            )
        parts.append(
            part.with_columns(
                pl.col("target").replace_strict(order, return_dtype=pl.Int64).alias("_target_rank"),
                pl.lit(rank).alias("_component_rank"),
            )
        )
    joined = pl.concat([p.select(*keep, "facet", "_target_rank", "_component_rank") for p in parts])
    return (
        joined.sort("_target_rank", "_component_rank", "run_id", "layer", "position")
        .with_columns(pl.col("facet").alias("target"))
        .select(keep)
    )


def _heads_at(heads: pl.DataFrame, resid: pl.DataFrame, name: str | None) -> pl.DataFrame:
    """Heads' scores at one position per (run, target), as layer x head cells (the head in the
    `position` column, `h<i>` as its label)."""
    chosen = _chosen_positions(heads, resid, name)
    picked = heads.join(chosen, on=["run_id", "target", "position"], how="inner")
    if picked.height == 0:
        raise BadInput(
            f"no head was patched at position {name!r}; pick one of the run's positions "
            "(e.g. last, or a name like a0.d1) with --heads-position"
        )
    return picked.with_columns(
        pl.struct("target", "position_label")
        .map_elements(
            lambda r: facet_name(r["target"], "heads", r["position_label"]),
            return_dtype=pl.String,
        )
        .alias("facet"),
        pl.col("head").cast(heads.schema["position"]).alias("position"),
        ("h" + pl.col("head").cast(pl.String)).alias("position_label"),
        # its columns are heads, none of them a token position
        *(
            [pl.lit(None, pl.String).alias("position_name")]
            if "position_name" in picked.columns
            else []
        ),
    )


def _chosen_positions(heads: pl.DataFrame, resid: pl.DataFrame, name: str | None) -> pl.DataFrame:
    """(run_id, target, position) of the heads heatmap of each run and target."""
    keys = heads.select("run_id", "target").unique()
    last = last_positions(heads, ["run_id", "target"]).rename({"last_position": "position"})
    if name == "last":
        return last
    if name is not None:
        found = (
            heads.filter(pl.col("position_name") == name)
            .select("run_id", "target", "position")
            .unique()
        )
        if found.height == 0:
            raise BadInput(
                f"no head was patched at position {name!r}; pick one of the run's positions "
                "(e.g. last, or a name like a0.d1) with --heads-position"
            )
        return found
    best = (
        resid.filter(pl.col("iia").is_not_null())
        .sort(
            ["run_id", "target", "iia", "layer", "position"],
            descending=[False, False, True, False, False],
        )
        .group_by("run_id", "target", maintain_order=True)
        .first()
        .select("run_id", "target", "position")
    )
    with_best = keys.join(best, on=["run_id", "target"], how="left")
    return (
        with_best.join(last, on=["run_id", "target"], suffix="_last")
        .with_columns(pl.coalesce("position", "position_last").alias("position"))
        .select("run_id", "target", "position")
    )
