"""The loop-lag monitor sees a blocked loop and names the callback that blocked it."""

from __future__ import annotations

import asyncio
import threading
import time

from xiaozhi_core.looplag import LoopLagMonitor


async def test_reports_an_injected_200ms_block_and_names_the_slow_callback() -> None:
    monitor = LoopLagMonitor(interval=0.01, slow_callback=0.05)
    monitor.start()
    try:
        await asyncio.sleep(0.05)  # a few normal ticks first

        async def blocking_handler() -> None:
            time.sleep(0.2)  # noqa: ASYNC251 - the bug being detected: blocking the loop

        await asyncio.create_task(blocking_handler())
        await asyncio.sleep(0.05)
    finally:
        monitor.stop()
    stats = monitor.stats()
    assert stats["max_ms"] >= 150
    assert stats["p50_ms"] < 50  # the other ticks were on time
    assert stats["slow_callbacks"] == 1
    name, seconds = monitor.slow[-1]
    assert name.endswith("blocking_handler") and seconds >= 0.19
    assert stats["recent_slow"][-1][0] == name


async def test_plain_callbacks_are_named_too() -> None:
    monitor = LoopLagMonitor(interval=0.01, slow_callback=0.05)
    monitor.start()
    try:

        def busy_callback() -> None:
            time.sleep(0.1)

        asyncio.get_running_loop().call_soon(busy_callback)
        await asyncio.sleep(0.15)
    finally:
        monitor.stop()
    assert [n for n, _ in monitor.slow] == [
        "test_plain_callbacks_are_named_too.<locals>.busy_callback"
    ]


async def test_a_quiet_loop_has_no_lag_and_other_loops_do_not_count() -> None:
    monitor = LoopLagMonitor(interval=0.01, slow_callback=0.05)
    monitor.start()

    def other_loop() -> None:
        async def hog_in_other_loop() -> None:
            time.sleep(0.2)  # noqa: ASYNC251 - blocks only that thread's loop on purpose

        asyncio.run(hog_in_other_loop())

    try:
        thread = threading.Thread(target=other_loop)
        thread.start()
        await asyncio.to_thread(thread.join, 5)
        await asyncio.sleep(0.05)
    finally:
        monitor.stop()
    stats = monitor.stats()
    assert stats["samples"] >= 10
    assert stats["slow_callbacks"] == 0, monitor.slow
    assert stats["max_ms"] < 100
