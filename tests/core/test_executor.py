"""The executor policy: flavour checks at load time, which thread runs what, stream
cancellation, the worker → loop bridge, back-pressure and the process pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xiaozhi_core import ProviderSpec
from xiaozhi_core.errors import ExecutionPolicyError
from xiaozhi_core.executor import BoundProvider, Executor, ExecutorSettings, bind, build
from xiaozhi_core.testing import FakeASR, fake_spec
from xiaozhi_core.types import ASRResult


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(ExecutorSettings(cpu_workers=2, stream_buffer=2))
    yield ex
    ex.shutdown(wait=False)


def spec(
    role: str, execution: str, factory: Any, capabilities: tuple[str, ...] = ()
) -> ProviderSpec:
    return ProviderSpec(
        role=role,
        name="probe",
        execution=execution,
        factory=factory,
        capabilities=frozenset(capabilities),
    )


# ------------------------------------------------------------------ policy at load time
class SyncASR:
    def __init__(self, options: Any = None) -> None: ...

    def transcribe(self, pcm: Any, *, language: str | None = None) -> ASRResult:
        return ASRResult("x")


class AsyncASR:
    def __init__(self, options: Any = None) -> None: ...

    async def transcribe(self, pcm: Any, *, language: str | None = None) -> ASRResult:
        return ASRResult("x")


class GeneratorTTS:
    sample_rate = 16000

    def __init__(self, options: Any = None) -> None: ...

    def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]:
        yield b"\0\0"


class CoroutineTTS:
    sample_rate = 16000

    def __init__(self, options: Any = None) -> None: ...

    async def synthesize(self, text: str, *, voice: str | None = None) -> list[bytes]:
        return [b"\0\0"]


class AsyncGeneratorTTS:
    sample_rate = 16000

    def __init__(self, options: Any = None) -> None: ...

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        yield b"\0\0"


class AsyncGeneratorASR:
    def __init__(self, options: Any = None) -> None: ...

    async def transcribe(self, pcm: Any, *, language: str | None = None) -> AsyncIterator[str]:
        yield "x"


class NoSynthesize:
    sample_rate = 16000

    def __init__(self, options: Any = None) -> None: ...


@pytest.mark.parametrize(
    ("role", "execution", "cls", "caps", "message"),
    [
        (
            "asr",
            "io",
            SyncASR,
            (),
            "asr provider 'probe': transcribe() is a plain blocking function, but the provider "
            "is declared 'io'; io calls must be a coroutine function (async def). Declare the "
            "provider 'cpu' if it blocks.",
        ),
        (
            "asr",
            "cpu",
            AsyncASR,
            (),
            "asr provider 'probe': transcribe() is a coroutine function (async def), but the "
            "provider is declared 'cpu'; cpu work methods must be a plain blocking function",
        ),
        (
            "tts",
            "io",
            GeneratorTTS,
            (),
            "tts provider 'probe': synthesize() is a plain generator (def + yield, blocking), but "
            "the provider is declared 'io'; io streams must be an async generator (async def + "
            "yield). Declare the provider 'cpu' if it blocks.",
        ),
        (
            "tts",
            "io",
            CoroutineTTS,
            (),
            "synthesize() is a coroutine function (async def), but the provider is declared 'io'; "
            "io streams must be an async generator (async def + yield).",
        ),
        (
            "tts",
            "cpu",
            AsyncGeneratorTTS,
            (),
            "synthesize() is an async generator (async def + yield), but the provider is declared "
            "'cpu'; cpu work methods must be a plain generator (def + yield)",
        ),
        (
            "asr",
            "io",
            AsyncGeneratorASR,
            (),
            "transcribe() is an async generator (async def + yield), but the provider is declared "
            "'io'; io calls must be a coroutine function (async def).",
        ),
        (
            "tts",
            "cpu",
            NoSynthesize,
            (),
            "tts provider 'probe': missing required method synthesize()",
        ),
        (
            "asr",
            "cpu",
            SyncASR,
            ("streaming",),
            "declares the 'streaming' capability but has no open_stream() method",
        ),
    ],
)
async def test_flavour_mismatch_is_refused_at_load_time(
    executor: Executor, role: str, execution: str, cls: type, caps: tuple[str, ...], message: str
) -> None:
    s = spec(role, execution, cls, caps)
    with pytest.raises(ExecutionPolicyError) as err:
        await build(s, s.validate({}), executor)
    assert message in str(err.value)


async def test_matching_flavours_are_accepted(executor: Executor) -> None:
    for role, execution, cls in [
        ("asr", "cpu", SyncASR),
        ("asr", "io", AsyncASR),
        ("tts", "cpu", GeneratorTTS),
        ("tts", "io", AsyncGeneratorTTS),
    ]:
        s = spec(role, execution, cls)
        assert isinstance(await build(s, s.validate({}), executor), BoundProvider)


# ------------------------------------------------------------------ which thread runs what
class ThreadProbe:
    """Records the thread every work method runs on."""

    sample_rate = 16000

    def __init__(self, options: Any = None) -> None:
        self.threads: list[int] = []

    def transcribe(self, pcm: Any, *, language: str | None = None) -> ASRResult:
        self.threads.append(threading.get_ident())
        return ASRResult(threading.current_thread().name)

    def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]:
        for _ in range(3):
            self.threads.append(threading.get_ident())
            yield b"\0\0"


class AsyncThreadProbe:
    sample_rate = 16000

    def __init__(self, options: Any = None) -> None:
        self.threads: list[int] = []

    async def transcribe(self, pcm: Any, *, language: str | None = None) -> ASRResult:
        self.threads.append(threading.get_ident())
        return ASRResult("io")

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        for _ in range(3):
            self.threads.append(threading.get_ident())
            yield b"\0\0"


async def test_cpu_work_never_runs_on_the_loop_thread(executor: Executor) -> None:
    loop_thread = threading.get_ident()
    probe = ThreadProbe()
    asr = bind(spec("asr", "cpu", ThreadProbe), probe, executor)
    tts = bind(spec("tts", "cpu", ThreadProbe), probe, executor)
    results = await asyncio.gather(*(asr.transcribe(None) for _ in range(8)))
    chunks = [c async for c in tts.synthesize("hi")]
    assert len(chunks) == 3 and len(probe.threads) == 11
    assert loop_thread not in probe.threads
    assert all(r.text.startswith("xiaozhi-cpu") for r in results)


async def test_io_work_always_runs_on_the_loop_thread(executor: Executor) -> None:
    loop_thread = threading.get_ident()
    probe = AsyncThreadProbe()
    asr = bind(spec("asr", "io", AsyncThreadProbe), probe, executor)
    tts = bind(spec("tts", "io", AsyncThreadProbe), probe, executor)
    await asyncio.gather(*(asr.transcribe(None) for _ in range(4)))
    assert len([c async for c in tts.synthesize("hi")]) == 3
    assert probe.threads == [loop_thread] * 7


async def test_streaming_asr_partials_arrive_on_the_loop_thread(executor: Executor) -> None:
    loop_thread = threading.get_ident()
    asr = bind(fake_spec("asr"), FakeASR(text="one two three"), executor)
    partials: list[tuple[str, int]] = []
    stream = await asr.open_stream(
        on_partial=lambda r: partials.append((r.text, threading.get_ident()))
    )
    await stream.push(np.zeros(8000, np.int16))
    await stream.push(np.zeros(8000, np.int16))
    result = await stream.finish()
    await stream.close()
    await asyncio.sleep(0.05)  # partials are scheduled with call_soon_threadsafe
    assert result.text == "one two three"
    assert [p[0] for p in partials] == ["one two", "one two three"]
    assert {p[1] for p in partials} == {loop_thread}


# ------------------------------------------------------------------ cpu stream cancellation
class CountingTTS:
    """An endless cpu stream that counts what it produced and whether it was closed.

    It keeps a reference to each generator it hands out, so only an explicit close()
    (not garbage collection) can run the generator's ``finally``.
    """

    sample_rate = 16000

    def __init__(self, options: Any = None, item_seconds: float = 0.0) -> None:
        self.item_seconds = item_seconds
        self.produced = 0
        self.closed = threading.Event()
        self.in_step = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.streams: list[Iterator[bytes]] = []

    def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]:
        stream = self._stream()
        self.streams.append(stream)
        return stream

    def _stream(self) -> Iterator[bytes]:
        try:
            while True:
                self.in_step.set()
                self.release.wait(5)
                if self.item_seconds:
                    time.sleep(self.item_seconds)
                self.produced += 1
                yield b"\0\0" * 160
        finally:
            self.closed.set()


async def wait_for(event: threading.Event, seconds: float = 2.0) -> bool:
    """Wait for a worker-side event without blocking the loop."""
    return await asyncio.to_thread(event.wait, seconds)


async def test_leaving_a_cpu_stream_early_stops_the_worker(executor: Executor) -> None:
    tts_impl = CountingTTS(item_seconds=0.002)
    tts = bind(spec("tts", "cpu", CountingTTS), tts_impl, executor)
    taken = 0
    async with contextlib.aclosing(tts.synthesize("endless")) as stream:
        async for _ in stream:
            taken += 1
            if taken == 3:
                break
    assert await wait_for(tts_impl.closed), "the generator's finally block did not run"
    produced = tts_impl.produced
    # at most stream_buffer items ahead of the consumer, plus the one being computed
    assert taken == 3 and produced <= taken + executor.settings.stream_buffer + 1
    await asyncio.sleep(0.1)
    assert tts_impl.produced == produced, "the worker kept producing after the stream closed"
    assert executor.pending == 0 and executor.in_pool == 0


async def test_cancelling_the_consumer_task_stops_the_worker(executor: Executor) -> None:
    tts_impl = CountingTTS(item_seconds=0.01)
    tts = bind(spec("tts", "cpu", CountingTTS), tts_impl, executor)
    consumed = 0
    five = asyncio.Event()

    async def consume() -> None:
        nonlocal consumed
        async for _ in tts.synthesize("endless"):
            consumed += 1
            if consumed == 5:
                five.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(five.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_for(tts_impl.closed), "the generator's finally block did not run"
    produced = tts_impl.produced
    assert produced <= consumed + executor.settings.stream_buffer + 1
    await asyncio.sleep(0.1)
    assert tts_impl.produced == produced


async def test_cancel_while_a_worker_is_inside_next_still_closes_the_generator(
    executor: Executor,
) -> None:
    # The consumer is cancelled while a worker thread is executing next(): the close must
    # wait for that step instead of failing with "generator already executing".
    tts_impl = CountingTTS()
    tts = bind(spec("tts", "cpu", CountingTTS), tts_impl, executor)
    armed = asyncio.Event()

    async def consume() -> None:
        async for _ in tts.synthesize("endless"):
            if not armed.is_set():
                tts_impl.release.clear()  # from now on a step blocks inside the generator
                tts_impl.in_step.clear()
                armed.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(armed.wait(), 5)
    assert await wait_for(tts_impl.in_step)  # a worker is now blocked inside next()
    task.cancel()
    await asyncio.sleep(0.05)
    assert not tts_impl.closed.is_set()  # still blocked inside next()
    tts_impl.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_for(tts_impl.closed), "generator was not closed after the step ended"
    # the close job signals `closed` from inside the generator, a moment before the job
    # itself returns and leaves the pool
    for _ in range(200):
        if executor.in_pool == 0:
            break
        await asyncio.sleep(0.01)
    assert executor.in_pool == 0


async def test_errors_of_a_cpu_stream_reach_the_consumer(executor: Executor) -> None:
    class Failing:
        sample_rate = 16000

        def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]:
            yield b"\0\0"
            raise RuntimeError("vocoder crashed")

    tts = bind(spec("tts", "cpu", Failing), Failing(), executor)
    got: list[bytes] = []
    with pytest.raises(RuntimeError, match="vocoder crashed"):
        async for chunk in tts.synthesize("x"):
            got.append(chunk)
    assert got == [b"\0\0"]


# ------------------------------------------------------------------ worker → loop bridge
async def test_run_on_loop_from_the_loop_thread_raises_instead_of_deadlocking(
    executor: Executor,
) -> None:
    await executor.run(lambda: None)  # binds the executor to this loop

    async def answer() -> int:
        return 42

    coro = answer()
    with pytest.raises(ExecutionPolicyError, match="called on the event-loop thread"):
        executor.run_on_loop(coro, timeout=1)
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


async def test_run_on_loop_from_a_worker_runs_the_coroutine_on_the_loop(executor: Executor) -> None:
    loop_thread = threading.get_ident()

    async def where() -> int:
        await asyncio.sleep(0.01)
        return threading.get_ident()

    def blocking() -> tuple[int, int]:
        return threading.get_ident(), executor.run_on_loop(where(), timeout=5)

    worker, ran_on = await executor.run(blocking)
    assert worker != loop_thread and ran_on == loop_thread


# ------------------------------------------------------------------ back-pressure
async def test_max_pending_bounds_the_work_handed_to_the_pool() -> None:
    ex = Executor(ExecutorSettings(cpu_workers=1, max_pending=2))
    gate = threading.Event()
    started = 0

    def job() -> None:
        nonlocal started
        started += 1
        gate.wait(5)

    try:
        tasks = [asyncio.create_task(ex.run(job)) for _ in range(6)]
        await asyncio.sleep(0.1)
        assert started == 1
        assert ex.pending == 6  # every caller counted...
        assert ex.in_pool == 2  # ...but only max_pending jobs handed to the pool
        assert ex._pool._work_queue.qsize() == 1  # type: ignore[attr-defined]
        gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert started == 6 and ex.pending == 0 and ex.in_pool == 0
    finally:
        gate.set()
        ex.shutdown()


async def test_a_cancelled_caller_keeps_its_slot_until_the_job_really_ends() -> None:
    ex = Executor(ExecutorSettings(cpu_workers=1, max_pending=1))
    gate = threading.Event()
    order: list[str] = []

    def job(name: str) -> None:
        order.append(name)
        if name == "a":
            gate.wait(5)

    try:
        first = asyncio.create_task(ex.run(job, "a"))
        await asyncio.sleep(0.05)
        first.cancel()  # the thread cannot be interrupted: "a" keeps running
        second = asyncio.create_task(ex.run(job, "b"))
        await asyncio.sleep(0.05)
        assert ex.in_pool == 1 and ex._pool._work_queue.qsize() == 0  # type: ignore[attr-defined]
        gate.set()
        await asyncio.wait_for(second, 5)
        assert order == ["a", "b"]
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        gate.set()
        ex.shutdown()


async def test_a_job_cancelled_before_it_started_is_dropped() -> None:
    ex = Executor(ExecutorSettings(cpu_workers=1, max_pending=4))
    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> None:
        ran.append(name)
        gate.wait(5)

    try:
        running = asyncio.create_task(ex.run(job, "running"))
        queued = asyncio.create_task(ex.run(job, "queued"))
        await asyncio.sleep(0.05)
        queued.cancel()
        await asyncio.sleep(0.05)
        assert ex.in_pool == 1
        gate.set()
        await asyncio.wait_for(running, 5)
        assert ran == ["running"]
    finally:
        gate.set()
        ex.shutdown()


# ------------------------------------------------------------------ process pool
PID_PROVIDER = """
    import os
    from xiaozhi_core.types import ASRResult

    class PidASR:
        sample_rate = 16000

        def __init__(self, options):
            self.created_in = os.getpid()

        def transcribe(self, pcm, *, language=None):
            return ASRResult(f"{os.getpid()} {len(pcm)}")

    class AsyncOnCpu:
        def __init__(self, options):
            pass

        async def transcribe(self, pcm, *, language=None):
            return ASRResult("never")
    """


@pytest.fixture
def pid_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "xz_pid_provider.py").write_text(textwrap.dedent(PID_PROVIDER))
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    yield "xz_pid_provider"
    sys.modules.pop("xz_pid_provider", None)


async def test_process_pool_runs_cpu_calls_in_another_process(pid_module: str) -> None:
    ex = Executor(ExecutorSettings(kind="process", cpu_workers=1))
    try:
        s = ProviderSpec(role="asr", name="pid", execution="cpu", factory=f"{pid_module}:PidASR")
        asr = await build(s, s.validate({}), ex)
        pid, n = (await asr.transcribe(np.zeros(1600, np.int16))).text.split()
        assert int(pid) != os.getpid() and n == "1600"
        assert await asr.remote_attr("created_in") == int(pid)
        assert pid_module not in sys.modules  # the provider was never imported here

        bad = ProviderSpec(
            role="asr", name="bad", execution="cpu", factory=f"{pid_module}:AsyncOnCpu"
        )
        with pytest.raises(ExecutionPolicyError, match="transcribe.. is a coroutine function"):
            await build(bad, bad.validate({}), ex)

        tts = await build(
            fake_spec("tts"),
            fake_spec("tts").validate(
                {"sample_rate": 16000, "seconds_per_char": 0.01, "chunk_ms": 10}
            ),
            ex,
        )
        chunks = [c async for c in tts.synthesize("abcd")]
        assert sum(len(c) for c in chunks) == 2 * 640
    finally:
        ex.shutdown()
