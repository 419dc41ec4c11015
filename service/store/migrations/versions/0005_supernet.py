"""Trained supernets, reused by every search on their task (``strategy.supernet``).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "supernet",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("settings_json", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("metrics_json", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_supernet_task", "supernet", ["task"])


def downgrade() -> None:
    op.drop_index("ix_supernet_task", "supernet")
    op.drop_table("supernet")
