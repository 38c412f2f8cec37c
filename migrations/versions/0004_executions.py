"""Executions: how many times real work started for an idempotency key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

An activity increments its key's row before it runs the work (a model decode, a tool call), so
a rerun of work whose checkpoint had not committed yet shows as a count above 1, and work that
ran again after its checkpoint committed shows as a count above the checkpoint's own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("episode_id", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "first_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_executions_episode_id", "executions", ["episode_id"])


def downgrade() -> None:
    op.drop_table("executions")
