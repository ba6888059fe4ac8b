"""The schema migrates from empty on SQLite and PostgreSQL, matches the models, and
several workers migrating one empty database at once end with one schema."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from xiaozhi_core.store import StoreSettings
from xiaozhi_core.store.engine import create_engine, resolve_url
from xiaozhi_core.store.migrate import current_revision, head_revision, upgrade
from xiaozhi_core.store.models import Base


async def test_schema_migrates_from_empty_and_matches_the_models(settings: StoreSettings) -> None:
    engine = create_engine(resolve_url(settings), settings)
    try:
        assert await current_revision(engine) is None
        head = head_revision()
        assert await upgrade(engine) == (None, head)
        assert await upgrade(engine) == (head, head)  # a second run changes nothing
        assert await current_revision(engine) == head

        def differences(sync_conn: Any) -> list[Any]:
            context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        def tables(sync_conn: Any) -> set[str]:
            return set(inspect(sync_conn).get_table_names())

        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
            assert await conn.run_sync(tables) == {
                "alembic_version",
                "devices",
                "sessions",
                "turns",
                "memory",
                "voiceprints",
            }
    finally:
        await engine.dispose()


_MIGRATE = """
import asyncio, json, sys
from xiaozhi_core.store import StoreSettings
from xiaozhi_core.store.engine import create_engine, resolve_url
from xiaozhi_core.store.migrate import upgrade

async def main():
    s = StoreSettings(url=sys.argv[1], data_dir=sys.argv[2])
    engine = create_engine(resolve_url(s), s)
    try:
        print(json.dumps(await upgrade(engine)))
    finally:
        await engine.dispose()
asyncio.run(main())
"""


@pytest.mark.slow
def test_workers_migrating_at_once_end_with_one_schema(settings: StoreSettings) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, settings.url, settings.data_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(tuple(json.loads(out)))
    head = head_revision()
    # exactly one of them migrated; the others found the schema current
    assert sorted(results, key=str) == sorted([(None, head), (head, head), (head, head)], key=str)
