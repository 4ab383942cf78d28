"""The Parquet schema of attribution estimates: defined once, here.

A file holds one batch of an attribution run: for every (example, target) one *metric row*
(component NULL: the answer step and tokens its metric reads, or `no_metric`, why it has none),
and for every example with a metric, one *estimate row* per cell (component set). The engine
writes `ATTRIBUTION_SCHEMA`; the store adds `run_id` and `method` when it writes a file. The
views `attribution_estimates` and `attribution_metrics` (addpatch/store/attributions.py) read
the two kinds of rows apart.
"""

from __future__ import annotations

import pyarrow as pa

from addpatch.store.output_schema import OutputColumn, empty_outputs_select

ATTRIBUTION_COLUMNS: tuple[OutputColumn, ...] = (
    ("run_id", pa.int32()),
    ("method", pa.string()),  # attribution
    ("example_id", pa.int64()),
    ("target", pa.string()),
    ("layer", pa.int16()),
    ("position", pa.int16()),
    ("component", pa.string()),  # resid | attn | mlp | heads; NULL on metric rows
    ("head", pa.int16()),  # the head of a `heads` cell; null for other components
    ("estimate", pa.float32()),  # (a_cf - a_base) . dM/da: the estimated change of M
    ("step", pa.int16()),  # metric rows: the answer step whose logits M reads
    ("label_token", pa.int32()),  # metric rows: M = logit(label_token) - logit(base_token)
    ("base_token", pa.int32()),
    ("no_metric", pa.string()),  # metric rows: why the example has no metric (NULL: it has)
)
STORE_ADDED = ("run_id", "method")
ATTRIBUTION_SCHEMA = pa.schema([c for c in ATTRIBUTION_COLUMNS if c[0] not in STORE_ADDED])
EMPTY_ATTRIBUTIONS = empty_outputs_select(ATTRIBUTION_COLUMNS)
