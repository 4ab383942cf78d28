"""worked examples as chat turns (--shots N --chat)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Datasets gain `shot_turns`: under --chat, each worked example is a user turn (its question)
and an assistant turn (its answer) before the query's user turn, as chat models are shown
examples. Old rows keep NULL, read as worked examples inside the user turn (as they were
written), so their prompts lay out as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("shot_turns", sa.Boolean(), nullable=True))


def downgrade() -> None:
    from addpatch.store.drop_columns import drop_columns

    # DuckDB cannot ALTER a table that other tables reference: rebuilt, rows kept
    drop_columns(op.get_bind(), "datasets", ["shot_turns"])
