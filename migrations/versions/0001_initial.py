"""Episodes, whole-sample checkpoints and eval runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("config", JSONB, nullable=False, server_default="{}"),
        sa.Column("metrics", JSONB, nullable=False, server_default="{}"),
        sa.Column("out_dir", sa.Text),
        *_timestamps(),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "episodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("question_id", sa.String(200)),
        sa.Column("question_record", JSONB, nullable=False, server_default="{}"),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("budgets", JSONB, nullable=False, server_default="{}"),
        sa.Column("answer", sa.Text),
        sa.Column("sources", JSONB, nullable=False, server_default="[]"),
        sa.Column("error", sa.Text),
        sa.Column("metrics", JSONB, nullable=False, server_default="{}"),
        sa.Column("workflow_id", sa.String(200), unique=True),
        sa.Column("parent_episode_id", sa.String(64), sa.ForeignKey("episodes.id")),
        sa.Column("replay_from_step", sa.Integer),
        sa.Column("eval_run_id", sa.String(64), sa.ForeignKey("eval_runs.id")),
        *_timestamps(),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_episodes_status", "episodes", ["status"])
    op.create_index("ix_episodes_eval_run_id", "episodes", ["eval_run_id"])
    op.create_index("ix_episodes_created_at", "episodes", ["created_at"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "episode_id",
            sa.String(64),
            sa.ForeignKey("episodes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16)),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("backend", sa.String(32)),
        sa.Column("model", sa.String(200)),
        sa.Column("timings", JSONB, nullable=False, server_default="{}"),
        sa.Column("superseded_at", sa.DateTime(timezone=True)),
        *_timestamps(),
    )
    op.create_index("ix_checkpoints_episode_id", "checkpoints", ["episode_id"])
    # One live checkpoint per (episode, step, kind); superseded ones stay for the record.
    op.create_index(
        "uq_checkpoints_live_step",
        "checkpoints",
        ["episode_id", "step", "kind"],
        unique=True,
        postgresql_where=sa.text("superseded_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_table("episodes")
    op.drop_table("eval_runs")
