"""Schema evolution: a database holding episodes upgrades from the first migration to head and
downgrades back without losing them."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic.script import ScriptDirectory
from pydantic import SecretStr

from dllmflow.config import Settings
from dllmflow.stack.health import libpq_url
from dllmflow.store.migrate import alembic_config, downgrade, upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch_db(stack: Settings):
    name = "migtest_" + uuid.uuid4().hex[:8]
    admin = libpq_url(stack.effective_database_url).rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = stack.effective_database_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield stack.model_copy(update={"database_url": SecretStr(url)})
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_upgrade_and_downgrade_keep_episodes(scratch_db: Settings) -> None:
    revisions = [
        r.revision for r in ScriptDirectory.from_config(alembic_config(scratch_db)).walk_revisions()
    ]
    first, head = revisions[-1], revisions[0]
    upgrade(scratch_db, first)
    url = libpq_url(scratch_db.effective_database_url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO episodes (id, question, policy, status) VALUES (%s, %s, %s, %s)",
            ("ep-old", "Which river?", "oracle", "completed"),
        )
        conn.execute(
            "INSERT INTO checkpoints (episode_id, step, kind, idempotency_key, payload) "
            "VALUES ('ep-old', 0, 'plan', 'ep-old/0/plan/x', '{\"text\": \"t\"}')"
        )

    assert upgrade(scratch_db, "head") == head
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head,)
        assert conn.execute("SELECT count(*) FROM checkpoints").fetchone() == (1,)

    downgrade(scratch_db, first)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (first,)
        row = conn.execute("SELECT question, status FROM episodes WHERE id='ep-old'").fetchone()
        assert row == ("Which river?", "completed")
        assert conn.execute("SELECT payload->>'text' FROM checkpoints").fetchone() == ("t",)
