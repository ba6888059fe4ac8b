"""Database URLs and engines: SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg).

SQLite connections are set up for several worker processes sharing one file: WAL
journal (readers never wait for the writer), a busy timeout (a writer waits for another
process's transaction instead of failing), ``synchronous=NORMAL`` (durable at every
checkpoint, safe with WAL), and transactions that the engine begins itself, so DDL is
transactional and a writer can take the write lock up front (``BEGIN IMMEDIATE``,
see :data:`IMMEDIATE`).

>>> from xiaozhi_core.store.settings import StoreSettings
>>> resolve_url(StoreSettings(url="postgresql://bob:secret@db.local/xz")).drivername
'postgresql+asyncpg'
>>> describe(resolve_url(StoreSettings(url="postgres://bob:secret@db.local:5433/xz")))
'postgresql://bob:***@db.local:5433/xz'
>>> str(resolve_url(StoreSettings(data_dir="/srv/xz")))
'sqlite+aiosqlite:////srv/xz/xiaozhi.db'
>>> resolve_url(StoreSettings(url="mysql://x@y/z"))
Traceback (most recent call last):
...
xiaozhi_core.errors.ConfigError: store.url: unsupported database 'mysql'; use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConfigError
from .settings import StoreSettings

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["DB_FILE", "IMMEDIATE", "create_engine", "describe", "resolve_url", "sqlite_path"]

#: File name of the SQLite store inside ``data_dir``.
DB_FILE = "xiaozhi.db"
#: Execution options of a connection whose transactions take SQLite's write lock when
#: they begin (no effect on PostgreSQL). Use them for transactions that write.
IMMEDIATE = {"sqlite_begin": "IMMEDIATE"}
#: How long an SQLite writer waits for another process's write transaction (seconds).
SQLITE_BUSY_TIMEOUT = 30.0


def resolve_url(settings: StoreSettings) -> URL:
    """The async driver URL of the configured store (raises :class:`ConfigError`)."""
    raw = settings.url.strip()
    if not raw:
        return URL.create(
            "sqlite+aiosqlite", database=str(Path(settings.data_dir).absolute() / DB_FILE)
        )
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            "is not a database URL; use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB",
            path="store.url",
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise ConfigError(
                "give SQLite a file path (sqlite:///PATH): an in-memory database "
                "is not shared between connections",
                path="store.url",
            )
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        if not url.database:
            raise ConfigError(
                "name the database: postgresql://USER:PASSWORD@HOST:PORT/DB", path="store.url"
            )
        return url.set(drivername="postgresql+asyncpg")
    if backend in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            f"unsupported driver {driver!r}; leave it out ({backend}://...) or "
            f"use {'aiosqlite' if backend == 'sqlite' else 'asyncpg'}",
            path="store.url",
        )
    raise ConfigError(
        f"unsupported database {backend!r}; use sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB",
        path="store.url",
    )


def sqlite_path(url: URL) -> Path | None:
    """The file of an SQLite URL, else None.

    >>> sqlite_path(make_url("sqlite+aiosqlite:////tmp/a.db"))
    PosixPath('/tmp/a.db')
    """
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database)


def describe(url: URL) -> str:
    """Where the store is, for logs and the CLI (the password masked).

    >>> describe(make_url("sqlite+aiosqlite:////srv/xz/xiaozhi.db"))
    'sqlite /srv/xz/xiaozhi.db'
    """
    path = sqlite_path(url)
    if path is not None:
        return f"sqlite {path}"
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def create_engine(
    url: URL, settings: StoreSettings, *, create_dir: bool = True, pool_size: int = 4
) -> AsyncEngine:
    """An async engine for ``url`` set up as described in the module docstring (at most
    ``pool_size`` connections to a PostgreSQL server, twice that in bursts)."""
    path = sqlite_path(url)
    if path is not None:
        if create_dir:
            os.makedirs(path.parent, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        _sqlite_events(engine)
        return engine
    return create_async_engine(
        url,
        # A server that went away and came back: a dead pooled connection is replaced
        # before use instead of failing the next batch.
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=settings.connect_timeout,
        connect_args={
            "timeout": settings.connect_timeout,
            "server_settings": {"application_name": "xiaozhi-core"},
        },
    )


def _sqlite_events(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # The engine emits BEGIN itself (below): pysqlite's own transaction handling
        # would run DDL outside transactions and cannot take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
