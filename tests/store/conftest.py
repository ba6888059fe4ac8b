"""Fixtures of the store tests: a real PostgreSQL server (started once per test session
in a temp directory, see :mod:`tests.store.pgserver`) and store settings for each
backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from xiaozhi_core.store import Store, StoreSettings

from .pgserver import PostgresServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database on the shared server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """Store settings for an empty store on each backend (fast flushes for tests)."""
    if request.param == "sqlite":
        return StoreSettings(data_dir=str(tmp_path / "data"), flush_interval=0.05)
    url = request.getfixturevalue("pg_url")
    return StoreSettings(url=url, flush_interval=0.05)


@pytest.fixture
async def store(settings: StoreSettings) -> AsyncIterator[Store]:
    s = Store(settings)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
