"""Apply the Alembic migrations in migrations/, the schema's only source of truth."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from dllmflow.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(settings: Settings) -> Config:
    if not MIGRATIONS_DIR.is_dir():
        raise FileNotFoundError(
            f"migrations not found at {MIGRATIONS_DIR}; install dllmflow from a source checkout"
            " (pip install -e .)"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser's interpolation marker; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", settings.effective_database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "head") -> str:
    config = alembic_config(settings)
    command.upgrade(config, revision)
    return ScriptDirectory.from_config(config).get_current_head() or "base"


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)
