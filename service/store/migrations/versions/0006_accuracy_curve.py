"""The test accuracy after each epoch of a training row (``task.eval_every_epoch``), beside
its loss per epoch: the dashboard's intermediate values.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trial") as batch:
        batch.add_column(
            sa.Column("accuracy_curve_json", sa.String(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("trial") as batch:
        batch.drop_column("accuracy_curve_json")
