"""The machine that ran each trial (process-pool and Ray workers report it), and the loss
curve of each training row (the dashboard draws it).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trial") as batch:
        batch.add_column(sa.Column("host", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("loss_curve_json", sa.String(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("trial") as batch:
        batch.drop_column("loss_curve_json")
        batch.drop_column("host")
