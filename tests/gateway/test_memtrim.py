"""The server gives memory freed after a burst back to the system (issue 9, the fuzzer's
"RSS within 10 % once idle"): glibc keeps the holes a burst leaves in its heap until
``malloc_trim``; the server's :class:`HeapTrimmer` calls it when glibc holds memory that
was freed since the last trim."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from xiaozhi_core.gateway.memtrim import HeapTrimmer, malloc_trim

needs_glibc = pytest.mark.skipif(
    malloc_trim is None, reason="malloc_trim is glibc's (Linux with glibc only)"
)

#: In a fresh interpreter: a burst of 60 KB buffers (below glibc's mmap threshold, so
#: from the brk heap) interleaved with small buffers that stay alive, like a burst of
#: frames between the objects of sessions that live on; then the burst is freed.
_FRAGMENT = textwrap.dedent(
    """
    import json
    from xiaozhi_core.gateway.memtrim import HeapTrimmer, rss_bytes

    chunk = bytes(range(256)) * 235                  # 60,160 bytes
    trimmer = HeapTrimmer(lambda: 0)
    before = rss_bytes()
    burst, kept = [], []
    for i in range(2000):
        burst.append(bytes(chunk[:-1]) + bytes([i % 256]))   # written: resident
        kept.append(bytearray(b"k" * 700))            # > 512 bytes: malloc, not pymalloc
    peak = rss_bytes()
    due_in_burst = trimmer.due()
    del burst
    freed = rss_bytes()
    due_after = trimmer.due()
    released = trimmer.trim_sync()
    print(json.dumps({"grown": peak - before, "held": freed - before,
                      "after": rss_bytes() - before, "released": released,
                      "seconds": trimmer.stats.seconds_max, "due_in_burst": due_in_burst,
                      "due_after": due_after, "due_again": trimmer.due()}))
    """
)


@needs_glibc
def test_trim_gives_a_fragmented_heap_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    m = json.loads(out)
    mb = 2**20
    assert m["grown"] > 100 * mb, m
    # glibc keeps the holes: freeing the burst gives (almost) nothing back ...
    assert m["held"] > 0.8 * m["grown"], m
    # ... until malloc_trim, which returns the whole free pages
    assert m["after"] < 0.2 * m["grown"], m
    assert m["released"] > 0.7 * m["grown"], m
    assert m["seconds"] < 1.0, m
    # the trimmer saw the heap grow (the burst) and, once it is trimmed, no more
    assert (m["due_in_burst"], m["due_after"], m["due_again"]) == (True, True, False), m


#: A real server in a fresh interpreter (a test process that ran a thousand tests before
#: has a heap full of holes a burst may land in: not the same every time): a device
#: connects, a burst is made and freed in the server's process, the device leaves.
_SERVER_BURST = textwrap.dedent(
    """
    import asyncio, json
    from xiaozhi_core.device import FakeDevice
    from xiaozhi_core.gateway import XiaozhiServer
    from xiaozhi_core.gateway.memtrim import rss_bytes
    from xiaozhi_core.testing import fake_config

    async def main():
        server = await XiaozhiServer.create(fake_config())
        await server.start(port=0, http_port=0)
        trimmer = server.heap_trimmer
        trimmer.stop()
        trimmer.check = 0.05  # (5 s in the server)
        trimmer.start()
        await asyncio.sleep(0.3)
        trims, released = trimmer.stats.trims, trimmer.stats.released_bytes
        dev = FakeDevice(server.ws_url)  # the server at work meanwhile
        await dev.connect()
        chunk = bytes(range(256)) * 235
        burst = [bytes(chunk[:-1]) + bytes([i % 256]) for i in range(1000)]
        kept = [bytearray(b"k" * 700) for _ in range(1000)]
        await asyncio.sleep(0.2)
        high = rss_bytes()
        del burst  # the device's session took it, say ...
        await dev.close()  # ... and it leaves
        for _ in range(100):
            if trimmer.stats.released_bytes - released > 40 << 20:
                break
            await asyncio.sleep(0.05)
        out = {"trims": trimmer.stats.trims - trims,
               "released": trimmer.stats.released_bytes - released,
               "high": high, "after": rss_bytes(), "kept": len(kept)}
        await server.stop()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


@needs_glibc
def test_the_server_trims_what_a_burst_freed() -> None:
    """When a connection ends, the running server's trimmer gives the memory freed back
    (the burst is made in the server's process, so that it is the same every time)."""
    out = subprocess.run(
        [sys.executable, "-c", _SERVER_BURST],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["trims"] > 0, m
    assert m["released"] > 40 << 20, m  # of the burst's 60 MB
    assert m["after"] < m["high"] - (40 << 20), m


def test_trimmer_without_malloc_trim_does_nothing() -> None:
    """musl, macOS: no malloc_trim, nothing runs."""
    trimmer = HeapTrimmer(lambda: 0, trim=None)
    assert not trimmer.available and not trimmer.due()
    assert trimmer.trim_sync() == 0
    assert asyncio.run(asyncio.wait_for(trimmer.run(), 1)) is None
