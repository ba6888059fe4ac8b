"""Running the store's Alembic migrations programmatically (``xiaozhi db upgrade``, and
:meth:`Store.open <xiaozhi_core.store.Store.open>` when ``store.auto_upgrade`` is on).

Several workers may start at once against one database: the upgrade runs in a single
transaction that first takes a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction-scoped advisory lock), so one worker migrates and the others then find the
schema current. DDL is transactional on both backends: a failed migration leaves the
schema as it was.

>>> head_revision()
'0001'
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import IMMEDIATE

__all__ = ["MIGRATIONS", "current_revision", "head_revision", "upgrade"]

#: The directory of the migration scripts shipped in the package.
MIGRATIONS = Path(__file__).parent / "migrations"
#: PostgreSQL advisory lock key held while migrating ("xiaozhi" in ASCII, as an int64).
_PG_LOCK = 0x7869616F7A6869


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision the shipped migrations reach."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _current(sync_conn: Connection) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database to ``revision``; returns (revision before, revision after)."""
    cfg = _config()

    def run(sync_conn: Connection) -> tuple[str | None, str | None]:
        if sync_conn.dialect.name == "postgresql":
            sync_conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        before = _current(sync_conn)
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)
        return before, _current(sync_conn)

    async with engine.connect() as conn:
        conn = await conn.execution_options(**IMMEDIATE)
        async with conn.begin():
            return await conn.run_sync(run)
