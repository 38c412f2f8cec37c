"""Episodes: the Temporal task queue an episode was submitted to.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Whoever starts a queued episode's workflow later (`dllmflow up`'s reconciliation, after a submit
that did not get its workflow started) starts it on this queue, so it runs on the workers it was
submitted for (their corpus, replicas and tools), not on the reconciler's own queue. NULL (rows
from before this revision): the starter's configured queue, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("episodes", sa.Column("task_queue", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("episodes", "task_queue")
