"""the baseline of a run counts the examples that run patched

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

`iia_cells`' baseline (the IIA of a patch that changes nothing: the share of examples whose
label is the base answer) was taken over every kept example of the run's dataset. A DAS run
patches only the held-out examples, so its IIA and its baseline counted different examples
(e.g. 0.43 on a DAS run's 100 held-out pairs against 0.50 over the dataset's 505), and
`localized` compared the two. The baseline now counts the kept examples the run has outputs for:
the same figures for every full-grid run (they patch every kept example), the held-out ones for
a DAS run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_DATASET_BASELINE = """baselines AS (  -- IIA of a patch that changes nothing: the share whose label is the base answer
    SELECT l.run_id, l.target, avg(CASE WHEN l.label = e.base_sum THEN 1.0 ELSE 0.0 END) AS baseline
    FROM run_labels AS l
    JOIN filter_results AS f"""

_RUN_BASELINE = """run_examples AS (  -- the examples a run has outputs for (a DAS run: the held-out ones)
    SELECT DISTINCT run_id, example_id
    FROM patched_outputs
    WHERE run_filter IS NULL OR run_id = run_filter
),
baselines AS (  -- IIA of a patch that changes nothing, over the kept examples the run patched
    SELECT l.run_id, l.target, avg(CASE WHEN l.label = e.base_sum THEN 1.0 ELSE 0.0 END) AS baseline
    FROM run_labels AS l
    JOIN run_examples AS x ON x.run_id = l.run_id AND x.example_id = l.example_id
    JOIN filter_results AS f"""


def _revision_0009() -> ModuleType:
    path = Path(__file__).with_name("0009_subspaces.py")
    spec = importlib.util.spec_from_file_location("migration_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def iia_cells_0011() -> str:
    """0009's macro with the baseline over the run's patched examples."""
    previous: str = _revision_0009().IIA_CELLS
    assert previous.count(_DATASET_BASELINE) == 1, "0009's baseline CTE changed"
    return previous.replace(_DATASET_BASELINE, _RUN_BASELINE)


def upgrade() -> None:
    op.execute(iia_cells_0011())


def downgrade() -> None:
    op.execute(_revision_0009().IIA_CELLS)
