"""run_digit_tokens: the digits that share one token in a run's prompts, in a table of their own

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Runs recorded these groups only in `runs.provenance_json` (`"digit_tokens": [[addend, [digit,
...]], ...]`), where the report read them back to choose a run's default targets. They now have
their own table, one row per digit; old runs' groups are copied from their provenance, which keeps
its copy as the record of the run.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _backfill() -> None:
    conn = op.get_bind()
    runs = conn.execute(sa.text("SELECT id, provenance_json FROM runs ORDER BY id")).fetchall()
    rows = [
        {"run_id": run_id, "group_index": index, "addend": int(addend), "digit": int(digit)}
        for run_id, provenance in runs
        for index, (addend, digits) in enumerate(json.loads(provenance).get("digit_tokens") or [])
        for digit in digits
    ]
    if rows:
        conn.execute(
            sa.text(
                "INSERT INTO run_digit_tokens (run_id, group_index, addend, digit) "
                "VALUES (:run_id, :group_index, :addend, :digit)"
            ),
            rows,
        )


def upgrade() -> None:
    op.create_table(
        "run_digit_tokens",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("group_index", sa.Integer(), nullable=False),
        sa.Column("digit", sa.Integer(), nullable=False),
        sa.Column("addend", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id", "group_index", "digit"),
    )
    _backfill()


def downgrade() -> None:
    op.drop_table("run_digit_tokens")
