"""answer prefix of datasets (--answer-prefix: assistant prefill, the start of the reply)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Datasets gain `answer_prefix`, the text the reply starts with (after the chat template's
generation prompt under --chat, else at the very end of the prompt). Old rows keep NULL, read as
no answer prefix, so their prompts reload as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("answer_prefix", sa.String(), nullable=True))


def downgrade() -> None:
    from addpatch.store.drop_columns import drop_columns

    # DuckDB cannot ALTER a table that other tables reference: rebuilt, rows kept
    drop_columns(op.get_bind(), "datasets", ["answer_prefix"])
