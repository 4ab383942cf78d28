"""attribution estimates and screened cells (--method attribution, --screen N)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

`attribution_files` registers the Parquet files of attribution runs (as `output_files` does for
patched outputs; the views `attribution_estimates` and `attribution_metrics` read only the
registered ones). `screened_cells` records, for a run that patched exactly the cells an
attribution run ranked best (--screen N), which cells were screened in, for which target, at
which rank and with which mean estimate.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attribution_files",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
        sa.UniqueConstraint("run_id", "batch_index"),
    )
    op.create_table(
        "screened_cells",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("component", sa.String(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("head", sa.Integer(), nullable=False),
        sa.Column("attribution_run_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("mean_estimate", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.ForeignKeyConstraint(["attribution_run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id", "target", "component", "layer", "position", "head"),
    )


def downgrade() -> None:
    op.drop_table("screened_cells")
    op.drop_table("attribution_files")
