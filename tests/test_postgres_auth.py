"""Embedded Postgres needs the state dir's password: a new data directory is initialised with
scram-sha-256, one that an older dllmflow initialised with `trust` moves to scram-sha-256 when
it starts (its data kept), and a missing password file is named instead of locking data out."""

from __future__ import annotations

import stat
from collections.abc import Iterator

import psycopg
import pytest

from dllmflow.config import Settings
from dllmflow.stack.components import PostgresComponent, StackError
from dllmflow.stack.health import libpq_url
from dllmflow.stack.process import ProcessRecord
from tests.conftest import free_ports, private_component

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres(tmp_path) -> Iterator[tuple[Settings, PostgresComponent, list[ProcessRecord]]]:
    yield from private_component(tmp_path, PostgresComponent, postgres_port=free_ports(1)[0])


def _no_password_url(settings: Settings) -> str:
    return f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/dllmflow"


def test_a_trust_data_dir_moves_to_passwords_and_keeps_its_data(postgres) -> None:
    settings, component, started = postgres
    started.append(component.start())
    with psycopg.connect(libpq_url(settings.effective_database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before')")
    component.stop(started.pop())
    # What an older dllmflow left: `initdb --auth=trust`, no password file.
    hba = component.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    settings.postgres_password_file.unlink()

    started.append(component.start())

    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_no_password_url(settings), connect_timeout=5).close()
    rules = [line.split("#")[0].split() for line in hba.read_text().splitlines()]
    assert {rule[-1] for rule in rules if rule} == {"scram-sha-256"}
    assert stat.S_IMODE(settings.postgres_password_file.stat().st_mode) == 0o600
    with psycopg.connect(libpq_url(settings.effective_database_url)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before",)]
        methods = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
    assert methods == [("scram-sha-256",)]


def test_a_missing_password_file_is_named(postgres) -> None:
    settings, component, started = postgres
    started.append(component.start())
    component.stop(started.pop())
    settings.postgres_password_file.unlink()
    with pytest.raises(StackError, match="postgres_password is missing"):
        started.append(component.start())
