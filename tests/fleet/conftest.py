"""Fixtures of the fleet tests: servers on the fake providers with a real store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.pgserver import PostgresServer


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
