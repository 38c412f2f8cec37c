"""Corpus terms: a trigram index, so search can correct a query word the corpus never uses.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Needs the pg_trgm extension (PostgreSQL contrib, a trusted extension: the database owner may
create it). A server without it keeps searching as before, uncorrected: the search tool checks
for the extension (dllmflow.workers.tools.spelling) and this revision leaves it out.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    available = conn.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).first()
    if available is None:
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_corpus_terms_lexeme_trgm "
        "ON corpus_terms USING gin (lexeme gin_trgm_ops)"
    )


def downgrade() -> None:
    # The extension stays: other schemas in the same database may use it.
    op.execute("DROP INDEX IF EXISTS ix_corpus_terms_lexeme_trgm")
