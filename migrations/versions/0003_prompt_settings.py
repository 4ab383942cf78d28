"""prompt settings of datasets and examples: templates, prefix, suffix, shots, chat

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Datasets gain the settings that define their prompts, examples their own templates and worked
examples. Old rows keep NULL, read as the plain prompt of the dataset's `template`; a dataset
that was stored with a prompt prefix/suffix through the Python API gets it back from its first
stored prompt, so reloading it reproduces the stored text.
"""

from __future__ import annotations

import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DATASET_COLUMNS = [
    ("templates_json", sa.Text()),
    ("prompt_prefix", sa.String()),
    ("prompt_suffix", sa.String()),
    ("num_shots", sa.Integer()),
    ("chat", sa.Boolean()),
]
EXAMPLE_COLUMNS = [
    ("base_template", sa.String()),
    ("cf_template", sa.String()),
    ("shots_json", sa.Text()),
]
_PLACEHOLDER = re.compile(r"\{num(\d+)\}")


def _recover_prefix_suffix() -> None:
    """Set prefix/suffix of old datasets whose stored prompts wrap the rendered template."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT d.id, d.template, e.base_addends, e.base_prompt FROM datasets AS d "
            "JOIN examples AS e ON e.dataset_id = d.id AND e.example_id = 0"
        )
    ).fetchall()
    for dataset_id, template, addends, prompt in rows:
        numbers = json.loads(addends)
        body = _PLACEHOLDER.sub(lambda m, n=numbers: str(int(n[int(m.group(1))])), template)
        start = prompt.find(body)
        if start < 0:
            continue
        conn.execute(
            sa.text("UPDATE datasets SET prompt_prefix = :p, prompt_suffix = :s WHERE id = :i"),
            {"p": prompt[:start], "s": prompt[start + len(body) :], "i": dataset_id},
        )


def upgrade() -> None:
    for name, type_ in DATASET_COLUMNS:
        op.add_column("datasets", sa.Column(name, type_, nullable=True))
    for name, type_ in EXAMPLE_COLUMNS:
        op.add_column("examples", sa.Column(name, type_, nullable=True))
    _recover_prefix_suffix()


def downgrade() -> None:
    from addpatch.store.drop_columns import drop_columns

    # DuckDB cannot ALTER a table that other tables reference: rebuilt, rows kept
    drop_columns(op.get_bind(), "examples", [name for name, _ in EXAMPLE_COLUMNS])
    drop_columns(op.get_bind(), "datasets", [name for name, _ in DATASET_COLUMNS])
