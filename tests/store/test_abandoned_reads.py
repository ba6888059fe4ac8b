"""A read a turn waits on whose caller stops waiting (a session that ends while it
starts, a read timeout) must not cost a connection: cancelling it made SQLAlchemy throw
the pooled connection away (with aiosqlite: its thread and page cache too), and its
graceful close was left as a task nobody kept ("Task was destroyed but it is pending!"
at ERROR in the fuzzer's log)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from pathlib import Path

import pytest
from sqlalchemy import event

from xiaozhi_core.store import Store, StoreSettings
from xiaozhi_core.store import facade as store_facade


async def test_cancelled_reads_keep_their_connections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with Store(StoreSettings(data_dir=str(tmp_path), flush_interval=0.05)) as store:
        assert await store.set_profile("aa:bb:cc:dd:ee:01", "kids", create=True)
        assert store._engine is not None
        pool = store._engine.sync_engine.pool
        seen = {"connect": 0, "invalidate": 0}
        for name in seen:
            event.listen(pool, name, lambda *a, name=name: seen.__setitem__(name, seen[name] + 1))

        for i in range(120):  # sessions that end while their profile is being read
            task = asyncio.ensure_future(store.device_profile("aa:bb:cc:dd:ee:01"))
            await asyncio.sleep(0.0003 * (i % 9))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # (some finished first)
                await task
        for _ in range(100):  # the abandoned reads finish in the background
            if not getattr(store, "_reads", None):
                break
            await asyncio.sleep(0.02)
        gc.collect()
        await asyncio.sleep(0.1)

        assert seen["invalidate"] == 0, seen
        assert seen["connect"] <= 15, seen  # the pool and its overflow (was: ~1 per 2 reads)
        assert await store.device_profile("aa:bb:cc:dd:ee:01") == "kids"
        assert store.stats.read_failures == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_reads_left_running_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that hangs: each read times out for its caller and keeps running, up
    to MAX_ORPHAN_READS; beyond that a read answers empty at once."""
    monkeypatch.setattr(store_facade, "MAX_ORPHAN_READS", 4)
    settings = StoreSettings(data_dir=str(tmp_path), flush_interval=0.05, read_timeout=0.05)
    async with Store(settings) as store:
        release = asyncio.Event()

        async def hung(engine: object, read: object) -> None:
            await release.wait()

        monkeypatch.setattr(store, "_run_read", hung)
        got = await asyncio.gather(*(store.get_memory(f"dev-{i}") for i in range(4)))
        assert got == [None] * 4 and len(store._reads) == 4
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await store.recent_turns("dev-5", 1000) == []
        assert loop.time() - start < 0.04  # refused at once, not after read_timeout
        assert store.stats.read_failures == 5
        release.set()
        await asyncio.sleep(0.05)
        assert not store._reads
