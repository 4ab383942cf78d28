"""Per (run, target) figures computed from the scores frame with polars.

* Best cell: among the cells whose 95% Wilson interval lies above the baseline
  (``iia_low > baseline``; a frame without a baseline column compares with 0), the one with
  the highest IIA; ties go to the lowest layer, then the lowest position. Cells whose IIA is
  null are ignored. When no cell clears the baseline the target is *not localized*.
* Carried by the last token from layer: the smallest layer (``-1`` = embeddings) whose
  IIA at the run's last token position (the position named ``last`` when the frame names its
  positions and has one, else the largest position scored for that run and target) is at
  least `threshold`; null when no layer reaches it.
* Regions: for each position, the layers whose IIA is at least `threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from addpatch.errors import BadInput
from addpatch.report.validate import with_intervals

DEFAULT_THRESHOLD = 0.8
"""IIA at or above which a cell counts as carrying the variable (summary, regions)."""

_KEY = ["run_id", "target"]


def check_threshold(threshold: float) -> float:
    """Return `threshold` as a float if it lies in (0, 1], else raise `BadInput`."""
    value = float(threshold)
    if not 0.0 < value <= 1.0:
        raise BadInput(f"threshold {threshold} is outside (0, 1]; pass e.g. 0.8")
    return value


def target_order(scores: pl.DataFrame) -> list[str]:
    """Targets in the order they first appear in `scores`."""
    return scores.get_column("target").unique(maintain_order=True).to_list()


def clears_baseline(scores: pl.DataFrame) -> pl.Expr:
    """True where a cell's 95% interval lies above the baseline (iia_low > baseline)."""
    baseline = pl.col("baseline").fill_null(0.0) if "baseline" in scores.columns else pl.lit(0.0)
    return (pl.col("iia_low") > baseline).fill_null(False)


def localized_best_cells(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per localized (run_id, target): layer, position, position_label, iia, n,
    iia_low, iia_high of the best cell whose interval lies above the baseline."""
    scores = with_intervals(scores)
    return top_cells(scores.filter(clears_baseline(scores)))


def top_cells(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per (run_id, target): the cell with the highest IIA, localized or not."""
    extra = [c for c in ("iia_low", "iia_high") if c in scores.columns]
    return (
        scores.filter(pl.col("iia").is_not_null())
        .sort(
            [*_KEY, "iia", "layer", "position"],
            descending=[False, False, True, False, False],
        )
        .group_by(_KEY, maintain_order=True)
        .first()
        .select(*_KEY, "layer", "position", "position_label", "iia", "n", *extra)
    )


def carried_from_layer(scores: pl.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pl.DataFrame:
    """One row per (run_id, target): last_position, last_label and carried_from (nullable)."""
    last = last_positions(scores, _KEY)
    at_last = scores.join(last, on=_KEY).filter(pl.col("position") == pl.col("last_position"))
    labels = at_last.group_by(_KEY).agg(pl.col("position_label").first().alias("last_label"))
    carried = (
        at_last.filter(pl.col("iia") >= threshold)
        .group_by(_KEY)
        .agg(pl.col("layer").min().alias("carried_from"))
    )
    return last.join(labels, on=_KEY).join(carried, on=_KEY, how="left")


def last_positions(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per `keys`, the run's last token position (`last_position`): the one named `last` where
    the frame names its positions and has it, else the largest (a list such as
    `a0.d1+last,a0.d0` puts `last` in a unit, not at the end)."""
    largest = frame.group_by(keys).agg(pl.col("position").max().alias("last_position"))
    if "position_name" not in frame.columns:
        return largest
    named = (
        frame.filter(pl.col("position_name") == "last")
        .group_by(keys)
        .agg(pl.col("position").first().alias("named"))
    )
    return (
        largest.join(named, on=keys, how="left")
        .with_columns(pl.coalesce("named", "last_position").alias("last_position"))
        .select(*keys, "last_position")
    )


def summary_table(scores: pl.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pl.DataFrame:
    """Per (run_id, target): the best cell, its IIA, interval and n, and carried_from.

    Rows are ordered by run_id, then targets in order of first appearance. Columns:
    run_id, model, num_digits, target, best_layer, best_position, best_label,
    best_iia, best_n, best_iia_low, best_iia_high (null when not localized), localized,
    max_iia, max_iia_low, max_iia_high (the highest IIA, localized or not), last_position,
    last_label, carried_from (and baseline, when the scores carry it: the IIA of a patch that
    changes nothing).
    """
    scores = with_intervals(scores)
    order = {t: i for i, t in enumerate(target_order(scores))}
    extra = ["baseline"] if "baseline" in scores.columns else []  # IIA of a no-op patch
    keys = scores.select(*_KEY, "model", "num_digits", *extra).unique(subset=_KEY, keep="first")
    best = localized_best_cells(scores).rename(
        {
            "layer": "best_layer",
            "position": "best_position",
            "position_label": "best_label",
            "iia": "best_iia",
            "n": "best_n",
            "iia_low": "best_iia_low",
            "iia_high": "best_iia_high",
        }
    )
    highest = top_cells(scores).select(
        *_KEY,
        pl.col("iia").alias("max_iia"),
        pl.col("iia_low").alias("max_iia_low"),
        pl.col("iia_high").alias("max_iia_high"),
    )
    return (
        keys.join(best, on=_KEY, how="left")
        .join(highest, on=_KEY, how="left")
        .with_columns(pl.col("best_layer").is_not_null().alias("localized"))
        .join(carried_from_layer(scores, threshold), on=_KEY, how="left")
        .with_columns(pl.col("target").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("run_id", "_o")
        .drop("_o")
    )


@dataclass(frozen=True)
class Region:
    """Layers (ascending) at one position whose IIA is at least the threshold."""

    position: int
    position_label: str
    layers: tuple[int, ...]


def regions(scores: pl.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> list[Region]:
    """Cells of ONE (run, target) with IIA >= `threshold`, grouped by position (ascending)."""
    hits = (
        scores.filter(pl.col("iia") >= threshold)
        .group_by("position")
        .agg(pl.col("position_label").first(), pl.col("layer").sort())
        .sort("position")
    )
    return [Region(p, lab, tuple(layers)) for p, lab, layers in hits.iter_rows()]
