"""One worker process of the multi-process test: records its own device, a session and
``TURNS`` turns into the shared store, then waits until it sees the other workers'
devices and prints what it saw (JSON).

    python tests/store/worker.py URL DATA_DIR NAME TURNS DEVICE...
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def main(url: str, data_dir: str, name: str, turns: int, expect: list[str]) -> None:
    from xiaozhi_core.store import Store, StoreSettings

    store = Store(StoreSettings(url=url, data_dir=data_dir, flush_interval=0.02, batch_size=25))
    await store.open()  # several workers migrating one empty database at once
    try:
        store.device_seen(name, board=f"board-{name}", firmware="1.0")
        store.session_started(f"session-{name}", name, transport="websocket")
        for n in range(turns):
            store.turn_recorded(
                session_id=f"session-{name}",
                device_id=name,
                turn=n,
                kind="voice",
                outcome="ok",
                text=f"{name} {n}",
                reply="ok",
                latency={"total_ms": float(n)},
            )
            if n % 10 == 0:
                await asyncio.sleep(0.001)
        store.session_ended(f"session-{name}", reason="done")
        assert await store.flush(within=60)
        deadline = time.monotonic() + 60
        while True:
            seen = sorted(d.device_id for d in await store.list_devices())
            if set(expect) <= set(seen) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        mine = await store.device_turns(name, limit=turns + 10)
    finally:
        await store.close()
    print(json.dumps({"seen": seen, "turns": len(mine), "stats": store.stats.as_dict()}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]))
