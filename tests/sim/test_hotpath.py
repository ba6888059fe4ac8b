"""The hot path the load test measures: the Opus decoder, the audio hub (one pool job per
batch, several batches in flight, order kept per stream) and the lane's accounting of
frames processed / lost / reordered."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import opuslib
import pytest

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.executor import Executor, ExecutorSettings, bind
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.protocol.opus import OpusDecoder, OpusError
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.session.audio_hub import DTX_VAD_WINDOWS, AudioHub
from xiaozhi_core.sim.upstream import encode_upstream
from xiaozhi_core.testing import fake_config, tone
from xiaozhi_core.types import Execution, Role


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(150, 900, 3)
    t = np.arange(int(seconds * 16000)) / 16000
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) * np.abs(np.sin(2 * np.pi * 2.5 * t))
    return (x / 3 * 12000).astype(np.int16)


# --------------------------------------------------------------------------- decoder
def test_decoder_is_bit_exact_with_opuslib_and_handles_dtx_and_errors() -> None:
    packets = encode_upstream(np.concatenate([_speechlike(1.5, 1), np.zeros(16000, np.int16)]))
    assert min(len(p) for p in packets) == 1  # DTX packets are in there
    ours, ref = OpusDecoder(16000), opuslib.Decoder(16000, 1)
    for p in [*packets, b"\xf8", b"\xf8\xff\xfe"]:
        assert ours.decode(p) == bytes(ref.decode(p, 1920))
    assert ours.decode(b"") == b""
    with pytest.raises(OpusError):
        ours.decode(b"\xff" * 7)
    assert len(ours.decode(packets[0])) == 960 * 2  # still works after an error


# --------------------------------------------------------------------------- the hub
@dataclass
class _Opts:
    delay: float = 0.0


class OrderVAD:
    """A recurrent fake: the state is an order-sensitive checksum of every window seen,
    and the "probability" is that checksum. Any window processed out of order, twice,
    or with another stream's state changes every later value. It also records how many
    calls overlap (batches in flight)."""

    sample_rate = 16000
    window = 512

    def __init__(self, options: _Opts | None = None) -> None:
        self.delay = (options or _Opts()).delay
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def initial_state(self) -> float:
        return 0.0

    def speech_probs(
        self, windows: np.ndarray, states: Sequence[float]
    ) -> tuple[np.ndarray, list[float]]:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            new = [
                (s * 31.0 + float(np.sum(w[:16])) * 1000.0 + 1.0) % 9973.0
                for w, s in zip(windows, states, strict=True)
            ]
            return np.asarray(new, np.float64) / 9973.0, new
        finally:
            with self.lock:
                self.active -= 1


class AsyncOrderVAD(OrderVAD):
    async def speech_probs(
        self,
        windows: np.ndarray,  # type: ignore[override]
        states: Sequence[float],
    ) -> tuple[np.ndarray, list[float]]:
        await asyncio.sleep(0)
        return OrderVAD.speech_probs(self, windows, states)


def _spec(execution: Execution, factory: Any) -> ProviderSpec:
    return ProviderSpec(
        role=Role.VAD,
        name="order",
        execution=execution,
        factory=factory,
        options=_Opts,
        capabilities=frozenset({"batch"}),
    )


def _reference(packets: list[bytes], vad: OrderVAD) -> list[float]:
    """The stream decoded and VAD'ed alone, window by window."""
    dec = OpusDecoder(16000)
    pcm = np.concatenate([np.frombuffer(dec.decode(p), np.int16) for p in packets])
    state, out = vad.initial_state(), []
    for i in range(0, len(pcm) // 512 * 512, 512):
        w = (pcm[i : i + 512].astype(np.float32) / 32768.0)[None]
        p, [state] = vad.speech_probs(w, [state])
        out.append(float(p[0]))
    return out


async def _drive(
    hub: AudioHub, streams: int, chunks: list[list[int]]
) -> tuple[list[list[float]], list[list[bytes]]]:
    packets = [encode_upstream(_speechlike(2.0, s)) for s in range(streams)]
    states = [hub.new_stream() for _ in range(streams)]
    got: list[list[float]] = [[] for _ in range(streams)]

    async def lane(s: int) -> None:
        i = 0
        for n in chunks[s % len(chunks)] * 100:
            if i >= len(packets[s]):
                break
            result = await hub.process(states[s], packets[s][i : i + n])
            got[s] += result.probs
            i += n
            await asyncio.sleep(0.001 * (s % 3))

    await asyncio.gather(*(lane(s) for s in range(streams)))
    return got, packets


@pytest.mark.parametrize("execution", [Execution.CPU, Execution.IO])
async def test_hub_keeps_every_stream_in_order_with_batches_in_flight(execution: Execution) -> None:
    executor = Executor(ExecutorSettings(cpu_workers=2))
    factory = OrderVAD if execution is Execution.CPU else AsyncOrderVAD
    instance = factory(_Opts(delay=0.004))
    vad = bind(_spec(execution, factory), instance, executor)
    hub = AudioHub(executor, vad, tick_ms=2)
    assert hub.max_inflight == 2
    # cpu + thread pool: decode and every VAD round in one pool job
    assert (hub.local_vad is instance) == (execution is Execution.CPU)
    hub.start()
    try:
        got, packets = await _drive(hub, 24, [[1], [3], [1, 2], [5]])
    finally:
        await hub.stop()
        executor.shutdown()
    ref_vad = OrderVAD()
    for s, probs in enumerate(got):
        assert probs == pytest.approx(_reference(packets[s], ref_vad), abs=1e-12), s
    if execution is Execution.CPU:
        assert instance.max_active == 2  # two batches really overlapped
    assert hub.batches > 1 and max(len(g) for g in got) > 50


async def test_a_stream_cannot_have_two_requests_outstanding() -> None:
    executor = Executor(ExecutorSettings(cpu_workers=1))
    vad = bind(_spec(Execution.CPU, OrderVAD), OrderVAD(_Opts(delay=0.05)), executor)
    hub = AudioHub(executor, vad, tick_ms=1)
    hub.start()
    stream = hub.new_stream()
    packet = encode_upstream(tone(0.06))[0]
    try:
        first = asyncio.ensure_future(hub.process(stream, [packet]))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already has a request outstanding"):
            await hub.process(stream, [packet])
        assert len((await first).windows) == 1
        assert len((await hub.process(stream, [packet])).windows) == 2  # free again
    finally:
        await hub.stop()
        executor.shutdown()


# --------------------------------------------------------------------------- lane accounting
async def test_lane_counts_processed_lost_and_reordered_frames() -> None:
    server = await XiaozhiServer.create(
        fake_config(server={"limits": {"max_loop_lag_ms": 0}}, session={"silence_ms": 300})
    )
    await server.start(port=0, http_port=0)
    original = server.hub.process
    failures = {"left": 1}

    async def flaky(stream: Any, packets: list[bytes]) -> Any:
        if failures["left"] and len(packets) >= 1:
            failures["left"] -= 1
            raise RuntimeError("injected hub failure")
        return await original(stream, packets)

    server.hub.process = flaky  # type: ignore[method-assign]
    # 2.5 s of silence first: the failed group (at most 32 frames, however the burst is
    # grouped) can only hold silence, so the utterance still makes a turn
    pcm = np.concatenate([np.zeros(40000, np.int16), tone(0.6), np.zeros(16000, np.int16)])
    packets = encode_utterance(pcm)
    try:
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("start", "auto")
            await dev.stream(packets, realtime=False)
            await dev.wait_for("tts", "stop", timeout=15)
            session = next(iter(server.sessions.values()))
            assert session.frames_in == len(packets)
            assert session.frames_lost >= 1  # the failed group
            assert session.frames_processed + session.frames_lost == session.frames_in
            assert session.frames_reordered == 0
            text = server.render_metrics().decode()
    finally:
        await server.stop()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("xiaozhi_audio_frames_")
    }
    assert values["xiaozhi_audio_frames_lost_total"] == session.frames_lost
    assert values["xiaozhi_audio_frames_processed_total"] == session.frames_processed
    assert values["xiaozhi_audio_frames_reordered_total"] == 0
    assert 'xiaozhi_runtime{stat="asyncio_tasks"}' in text
    assert "process_resident_memory_bytes" in text
    assert "xiaozhi_turn_server_overhead_seconds_count 1.0" in text


# --------------------------------------------------------------------------- DTX
def _with_silences(seed: int) -> list[bytes]:
    """Speech, 2 s of silence (the encoder goes into DTX: 1-byte packets), speech, silence."""
    quiet = np.zeros(32000, np.int16)
    return encode_upstream(
        np.concatenate([_speechlike(1.2, seed), quiet, _speechlike(0.9, seed + 1), quiet])
    )


async def _hub_run(
    vad_instance: Any, packets: list[bytes], chunk: int, skip_dtx: bool, now: bool = False
) -> tuple[list[np.ndarray], list[float], AudioHub]:
    """Feed ``packets`` in chunks through a hub; ``now``: like the lane, ask
    ``process_now`` first and await ``process`` only when it declines."""
    executor = Executor(ExecutorSettings(cpu_workers=2))
    spec = ProviderSpec(
        role=Role.VAD, name="t", execution=Execution.CPU, factory=type(vad_instance), options=_Opts
    )
    hub = AudioHub(executor, bind(spec, vad_instance, executor), tick_ms=1, skip_dtx=skip_dtx)
    hub.start()
    stream = hub.new_stream()
    windows: list[np.ndarray] = []
    probs: list[float] = []
    try:
        for i in range(0, len(packets), chunk):
            result = hub.process_now(stream, packets[i : i + chunk]) if now else None
            if result is None:
                result = await hub.process(stream, packets[i : i + chunk])
            windows += result.windows
            probs += result.probs
    finally:
        await hub.stop()
        executor.shutdown()
    return windows, probs, hub


@pytest.mark.parametrize("chunk", [1, 3, 7])
async def test_dtx_windows_skip_the_vad_but_keep_every_sample(chunk: int) -> None:
    packets = _with_silences(3)
    dtx = [len(p) == 1 for p in packets]
    assert sum(dtx) > 40  # the encoder really went into DTX
    ref_windows, ref_probs, ref_hub = await _hub_run(OrderVAD(), packets, chunk, False)
    windows, probs, hub = await _hub_run(OrderVAD(), packets, chunk, True)
    # audio time is exact: the same number of windows, in the same order
    assert len(windows) == len(ref_windows) == len(probs)
    # exactly the windows made only of DTX audio skipped the VAD, with probability 0.0 --
    # except the first DTX_VAD_WINDOWS of each run, which the VAD still sees
    all_dtx = np.repeat(np.array(dtx), 960)[: len(windows) * 512].reshape(-1, 512).all(1)
    skipped, run = [], 0
    for d in all_dtx:
        run = run + 1 if d else 0
        skipped.append(run > DTX_VAD_WINDOWS)
    # sample for sample up to the first skipped window; skipped windows hold the decoded
    # comfort noise or (deeper in the run, not decoded) silence; every other window is
    # the same audio (after a silent stretch the decoder restarts: close, not identical)
    first = skipped.index(True)
    assert all(
        np.array_equal(a, b) for a, b in zip(windows[:first], ref_windows[:first], strict=True)
    )
    silent = 0
    for w, ref, skip in zip(windows, ref_windows, skipped, strict=True):
        if skip and not np.array_equal(w, ref):
            # silence, or comfort noise (a restarted decoder's) as quiet as the reference's
            level = np.abs(ref.astype(np.int32)).max()
            assert np.abs(w.astype(np.int32)).max() <= max(2 * level, 32)
            silent += not w.any()
        elif not skip:
            err = np.abs(w.astype(np.int32) - ref).max()
            assert err <= max(64, 0.25 * np.abs(ref.astype(np.int32)).max()), err
    assert silent > 20  # most of the long DTX runs were not decoded
    assert hub.windows_dtx == sum(skipped) > 50 and ref_hub.windows_dtx == 0
    assert [p for p, d in zip(probs, skipped, strict=True) if d] == [0.0] * hub.windows_dtx
    # up to the first skipped window everything is as without skipping
    assert probs[:first] == ref_probs[:first] and probs[first - 1] != 0.0
    assert hub.windows_total == ref_hub.windows_total == len(windows)


@pytest.mark.parametrize("chunk", [1, 3])
async def test_deep_dtx_is_answered_at_once_with_the_batched_result(chunk: int) -> None:
    """``process_now`` answers the requests deep in a DTX run on the spot (no batch, no
    pool job) with exactly what the batch would have returned, and declines the rest."""
    packets = _with_silences(5)
    windows_b, probs_b, batched = await _hub_run(OrderVAD(), packets, chunk, True)
    windows, probs, hub = await _hub_run(OrderVAD(), packets, chunk, True, now=True)
    assert probs == probs_b
    assert len(windows) == len(windows_b)
    assert all(np.array_equal(a, b) for a, b in zip(windows, windows_b, strict=True))
    assert batched.requests_now == 0
    requests = -(-len(packets) // chunk)
    assert hub.requests_now > requests // 4  # the long silences went this way
    assert hub.batches == requests - hub.requests_now
    assert (hub.windows_total, hub.windows_dtx) == (batched.windows_total, batched.windows_dtx)


async def test_process_now_declines_what_needs_decoding_or_vad() -> None:
    from xiaozhi_core.sim.upstream import silence_packets

    executor = Executor(ExecutorSettings(cpu_workers=1))
    spec = ProviderSpec(
        role=Role.VAD, name="t", execution=Execution.CPU, factory=OrderVAD, options=_Opts
    )
    hub = AudioHub(executor, bind(spec, OrderVAD(), executor), tick_ms=1)
    stream = hub.new_stream()
    dtx = silence_packets()[:1] * 20
    try:
        # before the stream's first real audio every window goes to the VAD
        assert hub.process_now(stream, dtx) is None
        speech = encode_upstream(_speechlike(0.5, 3))
        await hub.process(stream, speech)
        assert hub.process_now(stream, speech[:2]) is None  # real audio: decoded
        assert hub.process_now(stream, dtx[:1]) is None  # a run's first windows: VAD
        await hub.process(stream, dtx)
        got = hub.process_now(stream, dtx[:3])
        assert got is not None and got.probs == [0.0] * len(got.windows) and not got.errors
        assert hub.process_now(stream, [*dtx[:2], speech[0]]) is None  # not all DTX
        stream.busy = True  # a request of this stream is in a batch: never at once
        assert hub.process_now(stream, dtx[:3]) is None
    finally:
        stream.busy = False
        await hub.stop()
        executor.shutdown()


async def test_no_window_skips_the_vad_before_the_streams_first_real_audio() -> None:
    """A device that opens its mic in DTX (the bench's filler): the VAD hears all of that
    silence, so the first utterance meets the same VAD state as without skipping."""
    from xiaozhi_core.sim.upstream import silence_packets

    filler = silence_packets()
    assert {len(p) for p in filler} == {1}
    packets = [filler[i % len(filler)] for i in range(30)] + _with_silences(9)
    ref_windows, ref_probs, _ = await _hub_run(OrderVAD(), packets, 2, False)
    windows, probs, hub = await _hub_run(OrderVAD(), packets, 2, True)
    first_real = 30 * 960 // 512
    assert probs[:first_real] == ref_probs[:first_real] and 0.0 not in probs[:first_real]
    assert hub.windows_dtx > 50  # the later silences do skip


async def test_dtx_skipping_keeps_the_segmenters_timing_with_silero() -> None:
    """With silero, skipping DTX windows finds the same utterances: every end on the same
    window or the next, every start on the same window or up to two earlier (the VAD's
    state was held over the silence instead of settling further; the pre-roll covers it)."""
    from xiaozhi_silero.plugin import SileroOptions
    from xiaozhi_silero.vad import SileroVAD

    from xiaozhi_core.session.segmenter import SegmentationParams
    from xiaozhi_core.sim.upstream import synthesize_async

    quiet = np.zeros(32000, np.int16)
    speech = [
        await synthesize_async(t)
        for t in (
            "What is the weather like today?",
            "Turn it up.",
            "Tell me a story about a cat.",
            "Thanks!",
        )
    ]
    packets = encode_upstream(np.concatenate([x for s in speech for x in (s, quiet)]))
    events: dict[bool, list[tuple[str, int]]] = {}
    for skip in (False, True):
        windows, probs, hub = await _hub_run(SileroVAD(SileroOptions()), packets, 2, skip)
        seg = SegmentationParams(silence_ms=200, min_speech_ms=120).segmenter(16000, 512)
        events[skip] = [
            (e.kind, i)
            for i, (w, p) in enumerate(zip(windows, probs, strict=True))
            for e in seg.feed(w, p)
        ]
        if skip:
            assert hub.windows_dtx > len(windows) // 3  # a third of the VAD work saved
    assert [k for k, _ in events[False]] == [k for k, _ in events[True]] == ["start", "end"] * 4
    for (kind, ref), (_, got) in zip(events[False], events[True], strict=True):
        assert (0 <= got - ref <= 1) if kind == "end" else (-2 <= got - ref <= 0), (kind, ref, got)


# --------------------------------------------------------------------------- at once
async def _utterances(
    mode: str, asr: str, packets: list[bytes], at_once: bool
) -> tuple[list[Any], Any]:
    """What the ASR heard from ``packets`` streamed at 3x real time in ``mode``, with the
    lane's at-once path for silence on or off; and the session."""
    server = await XiaozhiServer.create(
        fake_config(
            server={"limits": {"max_audio_speed": 4}},
            session={"silence_ms": 300},
            asr={"provider": asr},
        )
    )
    await server.start(port=0, http_port=0)
    try:
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("start", mode)  # type: ignore[arg-type]
            async with asyncio.timeout(5):
                while not server.sessions:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            session = next(iter(server.sessions.values()))
            if not at_once:
                session.lane._silence_sink = None
            await dev.stream(packets, frame_ms=20)
            if mode == "manual":
                await dev.listen("stop")
            async with asyncio.timeout(10):
                while session.frames_processed < len(packets) or (  # noqa: ASYNC110
                    session.turn_task is not None and not session.turn_task.done()
                ):
                    await asyncio.sleep(0.02)
            assert session.frames_processed == session.frames_in == len(packets)
            assert session.frames_lost == session.frames_reordered == 0
            heard = list(server.providers.asr.instance.utterances)
    finally:
        await server.stop()
    return heard, session


@pytest.mark.parametrize(
    ("mode", "asr", "at_once"),
    [
        ("realtime", "fake", True),
        ("auto", "fake", True),
        ("manual", "fake_io", True),
        ("manual", "fake", False),
    ],
)
async def test_silence_processed_at_once_changes_nothing_the_session_hears(
    mode: str, asr: str, at_once: bool
) -> None:
    """Deep in a run of DTX an idle lane hands the silence to the session on arrival
    (no queue, no hub batch): the session still hears exactly the same audio. (Not
    while audio streams to a streaming ASR: pushing it is awaited.)"""
    packets = _with_silences(4) + _with_silences(5)
    ref, ref_session = await _utterances(mode, asr, packets, at_once=False)
    got, session = await _utterances(mode, asr, packets, at_once=True)
    assert ref_session.lane.frames_at_once == 0
    if at_once:
        assert session.lane.frames_at_once > 40  # the long silences went this way
    else:
        assert session.lane.frames_at_once == 0
    # auto: the first utterance ends the listening (the device would open it again)
    assert len(got) == len(ref) == (4 if mode == "realtime" else 1)
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a, b)
