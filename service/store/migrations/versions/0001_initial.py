"""The first schema: search, trial, cache_entry, hash_memo, event.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("task_key", sa.String(), nullable=False),
        sa.Column("spec_json", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_search_task_key", "search", ["task_key"])
    op.create_table(
        "trial",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("search_id", sa.String(), sa.ForeignKey("search.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("candidate_json", sa.String(), nullable=False),
        sa.Column("candidate_key", sa.String(), nullable=False),
        sa.Column("structural_hash", sa.String(), nullable=True),
        sa.Column("functional_hash", sa.String(), nullable=True),
        sa.Column("params_json", sa.String(), nullable=False),
        sa.Column("metrics_json", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("reused", sa.Boolean(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("device", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("search_id", "number", "stage", "epochs", name="uq_trial_fidelity"),
    )
    op.create_index("ix_trial_search_status", "trial", ["search_id", "status"])
    op.create_table(
        "cache_entry",
        sa.Column("task", sa.String(), primary_key=True),
        sa.Column("fidelity", sa.String(), primary_key=True),
        sa.Column("hash", sa.String(), primary_key=True),
        sa.Column("result_json", sa.String(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "hash_memo",
        sa.Column("structural_hash", sa.String(), primary_key=True),
        sa.Column("probe", sa.String(), primary_key=True),
        sa.Column("functional_hash", sa.String(), nullable=False),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("search_id", sa.String(), sa.ForeignKey("search.id"), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("payload_json", sa.String(), nullable=False),
    )
    op.create_index("ix_event_search_id", "event", ["search_id"])


def downgrade() -> None:
    op.drop_index("ix_event_search_id", table_name="event")
    op.drop_table("event")
    op.drop_table("hash_memo")
    op.drop_table("cache_entry")
    op.drop_index("ix_trial_search_status", table_name="trial")
    op.drop_table("trial")
    op.drop_index("ix_search_task_key", table_name="search")
    op.drop_table("search")
