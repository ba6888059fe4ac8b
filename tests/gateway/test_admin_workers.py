"""The operator API under ``xiaozhi serve --workers 2``: whichever worker answers, live
sessions and stats cover both workers (real processes sharing the ports)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .test_workers import one_device_per_worker, spawn, turn, worker_of

pytestmark = pytest.mark.slow

TOKEN = "workers-admin-token-0123456789"
CONFIG = f"""
server:
  host: 127.0.0.1
  port: 0
  http_port: 0
  admin: {{token: {TOKEN}}}
  limits: {{max_loop_lag_ms: 0}}
session: {{silence_ms: 300, min_speech_ms: 120}}
vad: {{provider: fake}}
asr: {{provider: fake, options: {{text: "hello workers"}}}}
llm: {{provider: fake, options: {{reply: "Hi. Two workers here."}}}}
tts: {{provider: fake}}
"""


async def test_sessions_and_stats_cover_every_worker(tmp_path: Path) -> None:
    cfg = tmp_path / "workers.yaml"
    cfg.write_text(CONFIG)
    served = await spawn(cfg)
    try:
        devs = await one_device_per_worker(served.ws_url)
        try:
            await asyncio.gather(*(turn(d) for d in devs.values()))
            headers = {"Authorization": f"Bearer {TOKEN}"}
            # a new connection per request: the kernel spreads them over both workers, and
            # each worker alone holds one session
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as client:

                async def get(path: str) -> Any:
                    async with client.get(f"{served.http}/api/v1{path}") as r:
                        assert r.status == 200, await r.text()
                        return await r.json()

                for _ in range(12):
                    body = await get("/sessions")
                    assert body["count"] == 2 and body["workers_missing"] == []
                    assert {s["worker"] for s in body["sessions"]} == {0, 1}
                    by_worker = {s["worker"]: s["device_id"] for s in body["sessions"]}
                    assert by_worker == {i: d.device_id for i, d in devs.items()}
                    assert all(s["turns"] == 1 for s in body["sessions"])
                stats = await get("/stats")
                current = stats["current"]
                assert current["sessions"] == 2 and stats["workers_missing"] == []
                # both turns counted, whether they fell in a closed sample or the current
                turns = sum(s["turns"] for s in stats["samples"]) + current["turns"]
                assert turns == 2
                assert {worker_of(d)[0] for d in devs.values()} == {0, 1}
        finally:
            for d in devs.values():
                await d.close()
    finally:
        await served.stop()
