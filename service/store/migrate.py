"""Schema migrations (alembic) and the schema check behind /readyz."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from service.store import queries

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply pending migrations. Blocking (alembic runs its own event loop): call it in a thread."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    scripts = ScriptDirectory.from_config(alembic_config("postgresql://"))
    return {script.revision for script in scripts.walk_revisions()}


async def schema_problem(connection: Any) -> str | None:
    """Why the schema cannot serve this build, or None when it is at or ahead of head.

    A revision this build does not know is assumed newer (a rolling upgrade ran migrations of
    the next release), which the running build can still serve.
    """
    if not await connection.fetchval(queries.SCHEMA_VERSIONED):
        return "schema not migrated: no alembic_version table"
    current = await connection.fetchval(queries.CURRENT_REVISION)
    if current is None:
        return "schema not migrated"
    head = head_revision()
    if current == head or current not in known_revisions():
        return None
    return f"schema at revision {current}, this build needs {head}"
