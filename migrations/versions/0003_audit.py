"""Audit log of mutating API calls: who (token fingerprint), what, when, target, outcome.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

A row is written before the action runs (outcome "pending") and completed afterwards, so an
action whose audit row cannot be written is refused rather than left unrecorded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("client", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("payload", JSONB, nullable=False, server_default="{}"),
        sa.Column("outcome", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("detail", sa.Text),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])


def downgrade() -> None:
    op.drop_table("audit_log")
