"""Several worker processes share one store (SQLite in WAL mode, or PostgreSQL): every
event of each is written, and each sees the others' devices."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xiaozhi_core.store import Store, StoreSettings

WORKER = Path(__file__).with_name("worker.py")


@pytest.mark.slow
def test_worker_processes_share_one_store(settings: StoreSettings) -> None:
    names = ["aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03"]
    turns = 400
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                settings.url,
                settings.data_dir,
                name,
                str(turns),
                *names,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    for report in reports:
        assert report["seen"] == names  # each worker sees every worker's device
        assert report["turns"] == turns
        stats = report["stats"]
        assert stats["written"] == turns + 3
        # no event lost, and no batch had to be retried: WAL + busy timeout on SQLite
        assert stats["dropped"] == stats["failed"] == stats["lost_on_close"] == 0
        assert stats["retries"] == 0

    async def check() -> None:
        async with Store(settings) as store:
            devices = await store.list_devices()
            assert [d.board for d in sorted(devices, key=lambda d: d.device_id)] == [
                f"board-{n}" for n in names
            ]
            for name in names:
                [session] = await store.device_sessions(name)
                assert session.close_reason == "done"

    asyncio.run(check())
