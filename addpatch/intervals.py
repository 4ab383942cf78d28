"""95% Wilson score intervals for IIA, the share of a cell's examples that match the label.

For `hits` successes out of `n` examples, p = hits / n and z = 1.959964 (the 97.5% quantile of
the standard normal), the interval is

    (p + z²/2n ± z·sqrt(p(1 - p)/n + z²/4n²)) / (1 + z²/n)

It stays inside [0, 1] (exactly 0 at hits = 0 and 1 at hits = n) and keeps a non-zero width at p = 0 or 1, where the normal
approximation collapses. The catalog's `iia_cells` macro computes the same in SQL.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import polars as pl

Z95 = NormalDist().inv_cdf(0.975)
"""z of a two-sided 95% interval."""


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """(low, high) of the Wilson interval of hits / n; None when n is 0."""
    if n <= 0:
        return None
    p = hits / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    low = 0.0 if hits == 0 else max(0.0, (centre - half) / scale)
    high = 1.0 if hits == n else min(1.0, (centre + half) / scale)
    return low, high


def wilson_exprs(hits: pl.Expr, n: pl.Expr, z: float = Z95) -> tuple[pl.Expr, pl.Expr]:
    """Polars expressions (low, high) of the Wilson interval; null where n is 0 or null."""
    n = n.cast(pl.Float64)
    p = hits.cast(pl.Float64) / n
    centre = p + z * z / (2 * n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)).sqrt()
    scale = 1 + z * z / n
    valid = n > 0
    hits = hits.cast(pl.Float64)
    low = (
        pl.when(~valid)
        .then(None)
        .when(hits == 0)
        .then(0.0)
        .otherwise(((centre - half) / scale).clip(0.0, 1.0))
    )
    high = (
        pl.when(~valid)
        .then(None)
        .when(hits == n)
        .then(1.0)
        .otherwise(((centre + half) / scale).clip(0.0, 1.0))
    )
    return low, high
