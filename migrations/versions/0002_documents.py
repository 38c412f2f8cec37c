"""Research corpus: documents with a weighted full-text index, term counts, a version per corpus.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The tsvector is a generated column so it can never drift from the text. It indexes the title
(weight A) and only the first INDEX_PREFIX_CHARS characters of the body (weight B): PostgreSQL
caps one tsvector at 1 MB and positions at 16383, so a longer prefix buys nothing but errors.
The whole text is stored and served by fetch.

corpus_terms counts, per corpus, how many documents hold each lexeme; the loader keeps it (and
corpus_versions.documents) exact in the same transaction as the documents, so search can tell
rare words from common ones with one index lookup.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Keep in step with dllmflow.store.corpus.INDEX_PREFIX_CHARS.
INDEX_PREFIX_CHARS = 100_000
TSV_EXPRESSION = (
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    f"setweight(to_tsvector('english'::regconfig, left(text, {INDEX_PREFIX_CHARS})), 'B')"
)


def upgrade() -> None:
    op.create_table(
        "corpus_versions",
        sa.Column("corpus", sa.String(100), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("documents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "documents",
        sa.Column("corpus", sa.String(100), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("chars", sa.Integer, sa.Computed("char_length(text)", persisted=True)),
        sa.Column("tsv", TSVECTOR, sa.Computed(TSV_EXPRESSION, persisted=True)),
        sa.Column(
            "loaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("corpus", "id", name="pk_documents"),
    )
    op.create_index("ix_documents_tsv", "documents", ["tsv"], postgresql_using="gin")
    op.create_index("ix_documents_corpus_url", "documents", ["corpus", "url"])
    op.create_table(
        "corpus_terms",
        sa.Column("corpus", sa.String(100), nullable=False),
        sa.Column("lexeme", sa.Text, nullable=False),
        sa.Column("docs", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("corpus", "lexeme", name="pk_corpus_terms"),
    )


def downgrade() -> None:
    op.drop_table("corpus_terms")
    op.drop_table("documents")
    op.drop_table("corpus_versions")
