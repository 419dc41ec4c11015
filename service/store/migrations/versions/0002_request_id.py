"""Idempotent submission: the client's request id on the search row.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("search") as batch:  # batch mode: SQLite cannot ALTER constraints
        batch.add_column(sa.Column("request_id", sa.String(), nullable=True))
        batch.create_index("ix_search_request_id", ["request_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("search") as batch:
        batch.drop_index("ix_search_request_id")
        batch.drop_column("request_id")
