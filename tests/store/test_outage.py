"""A PostgreSQL store that goes down mid-run costs the caller nothing but counted drops
and empty reads, and the store recovers by itself when the server comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from xiaozhi_core.store import Store, StoreSettings

from .pgserver import PostgresServer

DEV = "aa:bb:cc:dd:ee:02"


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and restarted."""
    with PostgresServer() as server:
        yield server


def _turn(store: Store, n: int) -> None:
    store.turn_recorded(
        session_id="s-1",
        device_id=DEV,
        turn=n,
        kind="voice",
        outcome="ok",
        text=f"q{n}",
        reply=f"a{n}",
        latency={"total_ms": 800.0},
    )


@pytest.mark.slow
async def test_database_down_costs_only_counted_drops_and_recovers(own_pg: PostgresServer) -> None:
    url = own_pg.create_database()
    settings = StoreSettings(
        url=url,
        flush_interval=0.05,
        batch_size=50,
        queue_bound=200,
        read_timeout=1.0,
        connect_timeout=2.0,
    )
    async with Store(settings) as store:
        store.device_seen(DEV, board="esp32s3")
        store.session_started("s-1", DEV, transport="websocket")
        for n in range(10):
            _turn(store, n)
        assert await store.flush()
        assert store.stats.written == 12

        own_pg.stop()
        slowest = 0.0
        for n in range(10, 1010):  # 1000 turns while the database is down
            start = time.perf_counter()
            _turn(store, n)
            slowest = max(slowest, time.perf_counter() - start)
            if n % 50 == 0:
                await asyncio.sleep(0.01)  # let the writer try (and fail)
        # never waits for the database: a call that did would take connect_timeout (2 s);
        # 100 ms leaves room for a loaded CI machine (5 ms once failed there at 5.6 ms)
        assert slowest < 0.1, f"a recording call took {slowest * 1000:.1f} ms"
        start = time.perf_counter()
        assert await store.recent_turns(DEV, 1000) == []  # a turn's read: empty, quickly
        assert await store.get_memory(DEV) is None
        assert time.perf_counter() - start < 2 * settings.read_timeout + 0.5
        assert store.stats.read_failures == 2
        stats = store.stats
        assert stats.retries >= 1 and stats.failed == 0
        assert stats.written == 12
        assert stats.dropped == 1000 - settings.queue_bound  # the queue kept the first 200
        assert store.stats.queue_depth == settings.queue_bound

        own_pg.start()
        assert await store.flush(within=30), store.stats
        assert store.stats.written == 12 + settings.queue_bound
        assert store.stats.failed == 0 and store.stats.queue_depth == 0
        _turn(store, 2000)  # and it goes on recording
        assert await store.flush()
        turns = await store.device_turns(DEV, limit=1000)
        assert len(turns) == 10 + settings.queue_bound + 1
        assert [t.turn_no for t in turns[:2]] == [2000, 209]
        assert len(await store.recent_turns(DEV, 100_000)) == 200  # its most rows
    s = store.stats
    assert s.recorded == s.written + s.failed + s.lost_on_close


@pytest.mark.slow
async def test_server_down_at_start_then_migrated_and_written(own_pg: PostgresServer) -> None:
    url = own_pg.create_database()
    own_pg.stop()
    settings = StoreSettings(url=url, flush_interval=0.05, connect_timeout=2.0)
    store = Store(settings)
    await store.open()  # the server's way: no exception, a log line
    try:
        store.device_seen(DEV, firmware="1.6.2")
        assert await store.device_profile(DEV) is None
        await asyncio.sleep(0.3)
        assert store.stats.retries >= 1 and store.stats.written == 0
        own_pg.start()
        assert await store.flush(within=30)
        device = await store.get_device(DEV)
        assert device is not None and device.firmware == "1.6.2"
        assert await store.revision() == "0001"
    finally:
        await store.close()


async def test_a_blocked_read_times_out_empty_and_the_pool_recovers(pg_url: str) -> None:
    import asyncpg  # the other client holding the lock

    settings = StoreSettings(url=pg_url, flush_interval=0.05, read_timeout=0.3)
    async with Store(settings) as store:
        store.session_started("s-1", DEV, transport="websocket")
        _turn(store, 1)
        assert await store.flush()
        other = await asyncpg.connect(pg_url.replace("postgresql://", "postgres://"))
        try:
            locked = other.transaction()
            await locked.start()
            await other.execute("LOCK TABLE turns IN ACCESS EXCLUSIVE MODE")
            start = time.perf_counter()
            assert await store.recent_turns(DEV, 1000) == []
            assert time.perf_counter() - start < 1.0
            assert store.stats.read_failures == 1
            await locked.rollback()
        finally:
            await other.close()
        assert [t.turn_no for t in await store.recent_turns(DEV, 1000)] == [1]
