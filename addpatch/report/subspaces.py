"""DAS runs in reports: one row per cell, the best rank k of the subspaces trained for the target.

A DAS run scores every subspace against every labelled target; a heatmap for target T shows,
per cell, the held-out IIA of the subspace trained for T (not a control) at the rank k that
scores best there (the `k` column says which), in a panel named `<model> · DAS (best k)`.
Full-vector runs pass through unchanged.
"""

from __future__ import annotations

import polars as pl

DAS_PANEL = " · DAS (best k)"
CELL = ["run_id", "target", "layer", "position", "component", "head"]


def best_rank_per_cell(scored: pl.DataFrame) -> pl.DataFrame:
    """Rows of full-vector cells, and per DAS cell the best subspace trained for its target."""
    if scored.height == 0 or "trained_for" not in scored.columns:
        return scored
    das = pl.col("method") == "das"
    own = das & (pl.col("trained_for") == pl.col("target")) & pl.col("control").is_null()
    patch = scored.filter(~das)
    best = (
        scored.filter(own)
        .sort(["iia", "k"], descending=[True, False], nulls_last=True)
        .unique(subset=CELL, keep="first", maintain_order=True)
        .with_columns((pl.col("model") + DAS_PANEL).alias("model"))  # its heatmap panel's name
    )
    return pl.concat([patch, best.select(patch.columns)]) if patch.height else best
