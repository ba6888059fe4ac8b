"""The audio hub: Opus decode and VAD for *all* sessions, batched on a short tick.

Each session's ordered lane hands the hub a list of Opus packets and awaits the result.
The hub gathers the requests of every session that arrive within one tick, then

1. decodes all of them (each session's decoder is used by one job at a time, so
   per-stream order is kept), cutting the PCM into 512-sample windows with a per-stream
   carry-over;
2. runs VAD over the windows of all streams in as few provider calls as possible: call
   ``k`` holds the ``k``-th window of every stream that has one (the recurrent state
   forbids two windows of one stream in the same call);
3. resolves each request with its windows and probabilities.

**DTX**: while nobody speaks, the device's encoder sends 1-byte DTX packets ("nothing
to transmit"). A window made only of DTX audio skips the VAD and gets probability 0.0:
the device's encoder already decided there is no signal. The VAD's recurrent state
simply carries over the skipped windows (by the time an encoder enters DTX the VAD has
heard its trailing silence); the first DTX_VAD_WINDOWS of each run, and every window
before the stream's first real audio, still go through the VAD, decoded as usual.
Beyond that, a request made only of DTX packets is not decoded at all: decoding one
synthesises comfort noise (~35 µs per 60 ms packet, more than a speech packet, and
most upstream packets are DTX), which nothing would use — the VAD skips those windows
and the segmenter only keeps them as pre-roll or trailing silence. They become digital
silence of exactly the packets' length (read from their TOC), so audio time is
unchanged, and the decoder is reset before the next packet it decodes (it starts again
like a new stream's, as after any gap).

With a local ``cpu`` VAD (thread pool) steps 1 and 2 are **one** pool job: a round trip
between the loop and the pool per VAD round would cost a thread hand-off and a GIL
hand-back each, and under load those waits, not the work, set the lane's lag. Other
VADs (``io``, or a process pool) get a decode job and then one provider call per round.

Up to ``max_inflight`` batches (default: one per pool worker) run at once, so a batch
never waits for the previous one to finish and both cores work. Order is still kept:
a stream has at most one request outstanding (its lane awaits each one), so it is never
in two batches at the same time.

So the per-frame cost on the event loop is a queue hand-off; the decode and inference
happen in the pool, one hop per tick for all sessions together. A request deep in a run
of DTX needs neither: :meth:`AudioHub.process_now` answers it at once on the loop (its
silence cut into windows, probability 0.0), without a round trip through the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..executor import Executor
from ..protocol.opus import OpusDecoder, OpusError
from ..types import Execution

if TYPE_CHECKING:
    from ..providers import BoundVAD, VADProvider, VADState

__all__ = ["DTX_MAX_BYTES", "DTX_VAD_WINDOWS", "AudioHub", "HubResult", "StreamState", "is_dtx"]

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    """One session's decode + VAD state. Touched only by the hub, one batch at a time."""

    decoder: OpusDecoder
    vad_state: VADState
    carry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    #: Whether each sample of ``carry`` came from a DTX packet.
    carry_dtx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))
    #: Consecutive DTX-only windows so far (the VAD sees the first ``DTX_VAD_WINDOWS``).
    dtx_run: int = 0
    #: The VAD has seen a window with real audio. Until then no window skips it: the
    #: first utterance then meets the same state as without skipping (a fresh state
    #: held after a few windows would make first turns segment differently).
    heard: bool = False
    decode_errors: int = 0
    #: DTX packets were passed over without decoding: reset the decoder before the next.
    decoder_behind: bool = False
    #: A request of this stream is queued or being processed.
    busy: bool = False
    #: ``carry`` is digital silence, all of it DTX (views of the shared ``_ZEROS`` and
    #: ``_TRUES``): deep in a run of DTX, nothing to look at.
    silent_carry: bool = False


@dataclass
class HubResult:
    windows: list[np.ndarray]
    probs: list[float]
    errors: list[str]


@dataclass
class _Request:
    stream: StreamState
    packets: list[bytes]
    future: asyncio.Future[HubResult]
    windows: list[np.ndarray] = field(default_factory=list)
    #: Indexes (into ``windows``) of the windows the VAD must see; the others are DTX.
    vad_windows: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


#: Packets of at most this many bytes are DTX: a TOC byte and no audio data (libopus
#: sends 1 byte per frame while DTX holds the stream).
DTX_MAX_BYTES = 2
#: The VAD still sees this many windows at the start of each run of DTX-only windows, so
#: its recurrent state follows the signal into silence before it is held.
DTX_VAD_WINDOWS = 4


def is_dtx(packet: bytes) -> bool:
    """Whether ``packet`` is an Opus DTX packet (it decodes to comfort noise).

    >>> is_dtx(b"\\xf8"), is_dtx(bytes(20))
    (True, False)
    """
    return 0 < len(packet) <= DTX_MAX_BYTES


#: Digital silence and "all DTX" masks, shared and read-only: deep in a run of DTX every
#: window is silence, and handing out views of these costs no allocation per request.
_ZEROS = np.zeros(4096, np.int16)
_ZEROS.flags.writeable = False
_TRUES = np.ones(4096, np.bool_)
_TRUES.flags.writeable = False
#: Samples each 1-byte DTX packet stands for, by (sample rate, packet): read from the
#: TOC once (at most 256 entries per rate; 2-byte packets, rarer, are read each time).
_DTX_SAMPLES: dict[tuple[int, bytes], int] = {}


def _dtx_samples(st: StreamState, packets: list[bytes]) -> int | None:
    """If every packet is DTX, the samples they decode to together; else None (they
    get decoded; a malformed one is reported there)."""
    rate = st.decoder.sample_rate
    total = 0
    for p in packets:
        if not is_dtx(p):
            return None
        n = _DTX_SAMPLES.get((rate, p))
        if n is None:
            try:
                n = st.decoder.samples_in(p)
            except OpusError:
                return None
            if len(p) == 1:
                _DTX_SAMPLES[(rate, p)] = n
        total += n
    return total if packets else None


def _cut(st: StreamState, parts: list[np.ndarray], window: int) -> tuple[np.ndarray, int]:
    """Join ``parts`` (the stream's carry first), cut it into windows and keep the rest
    as the stream's carry. Returns the joined audio and the number of windows."""
    data = np.concatenate(parts) if len(parts) > 1 else parts[0]
    n = len(data) // window
    st.carry = data[n * window :].copy()
    st.silent_carry = False
    return data, n


def _windows(data: np.ndarray, n: int, window: int) -> list[np.ndarray]:
    return [data[i : i + window] for i in range(0, n * window, window)]


def _silence(st: StreamState, packets: list[bytes], window: int) -> list[np.ndarray] | None:
    """Deep in a run of DTX (the VAD has seen the run's first ``DTX_VAD_WINDOWS``
    windows, and only DTX audio is carried over), packets that are all DTX become
    silence of their length without decoding, and none of the windows goes to the VAD:
    those windows. None, with nothing changed, when that does not apply (then the
    packets get decoded)."""
    if not st.heard or st.dtx_run < DTX_VAD_WINDOWS:
        return None
    silent = st.silent_carry
    if not silent:
        carry_dtx = st.carry_dtx
        if len(carry_dtx) and not carry_dtx.all():
            return None
    samples = _dtx_samples(st, packets)
    if samples is None:
        return None
    # the comfort noise is not synthesised; the decoder restarts at the next sound
    st.decoder_behind = True
    carry = st.carry
    if silent or (window <= len(_ZEROS) and not carry.any()):
        # silence carried over too (the usual case after the run's first such request):
        # every window is the same shared silence
        length = len(carry) + samples
        n = length // window
        rest = length - n * window
        st.carry, st.carry_dtx = _ZEROS[:rest], _TRUES[:rest]
        st.silent_carry = True
        st.dtx_run += n
        return [_ZEROS[:window]] * n
    data, n = _cut(st, [carry, np.zeros(samples, np.int16)], window)
    st.carry_dtx = np.ones(len(st.carry), np.bool_)
    st.dtx_run += n
    return _windows(data, n, window)


def _decode_batch(requests: list[_Request], window: int, skip_dtx: bool = True) -> None:
    """Pool job: decode every request's packets and cut windows (mutates requests)."""
    for req in requests:
        st = req.stream
        if skip_dtx and (silent := _silence(st, req.packets, window)) is not None:
            req.windows, req.vad_windows = silent, []
            continue
        parts = [st.carry]
        sizes: list[tuple[int, bool]] = []  # samples of each packet, DTX or not
        carry_dtx = st.carry_dtx
        any_dtx = bool(carry_dtx.any())
        only_dtx = len(carry_dtx) == 0 or bool(carry_dtx.all())
        if st.decoder_behind:
            st.decoder.reset()
            st.decoder_behind = False
        for packet in req.packets:
            try:
                pcm = st.decoder.decode(packet)
            except OpusError as exc:
                st.decode_errors += 1
                req.errors.append(f"opus decode failed for a {len(packet)}-byte packet: {exc}")
                continue
            if pcm:
                parts.append(np.frombuffer(pcm, np.int16))
                dtx = skip_dtx and is_dtx(packet)
                any_dtx = any_dtx or dtx
                only_dtx = only_dtx and dtx
                sizes.append((len(pcm) // 2, dtx))
        data, n = _cut(st, parts, window)
        whole = n * window
        req.windows = _windows(data, n, window)
        if not any_dtx:
            st.carry_dtx = np.zeros(len(st.carry), np.bool_)
            if n:
                st.dtx_run, st.heard = 0, True
            req.vad_windows = list(range(n))
            continue
        if only_dtx:
            # nothing but DTX (the start of a run): the VAD sees its first windows
            st.carry_dtx = np.ones(len(st.carry), np.bool_)
            run = st.dtx_run
            seen = max(0, min(n, DTX_VAD_WINDOWS - run)) if st.heard else n
            req.vad_windows = list(range(seen))
            st.dtx_run = run + n
            continue
        mask = np.concatenate([st.carry_dtx, *(np.full(k, d, np.bool_) for k, d in sizes)])
        st.carry_dtx = mask[whole:].copy()
        vad_windows = []
        run = st.dtx_run
        all_dtx = np.all(mask[:whole].reshape(n, window), axis=1)
        heard = st.heard
        for i in range(n):
            if all_dtx[i]:
                run += 1
            else:
                run, heard = 0, True
            if run <= DTX_VAD_WINDOWS or not heard:
                vad_windows.append(i)
        st.dtx_run, st.heard = run, heard
        req.vad_windows = vad_windows


def _round_members(
    requests: list[_Request], k: int
) -> tuple[list[int], np.ndarray, list[VADState]]:
    """VAD round ``k``: the requests with a ``k``-th window for the VAD, those windows as
    float32 in [-1, 1], and their streams' states."""
    members = [i for i, r in enumerate(requests) if len(r.vad_windows) > k]
    frames = np.stack([requests[i].windows[requests[i].vad_windows[k]] for i in members]).astype(
        np.float32
    )
    frames /= 32768.0
    return members, frames, [requests[i].stream.vad_state for i in members]


def _new_probs(requests: list[_Request]) -> list[list[float]]:
    """0.0 for every window; the VAD rounds fill in the windows it sees."""
    return [[0.0] * len(r.windows) for r in requests]


def _vad_rounds(requests: list[_Request]) -> int:
    return max((len(r.vad_windows) for r in requests), default=0)


def _decode_and_vad(
    requests: list[_Request], window: int, vad: VADProvider, skip_dtx: bool = True
) -> tuple[list[list[float]], int]:
    """Pool job: decode, then every VAD round, with the blocking provider ``vad``.
    Returns the probabilities per request and the number of provider calls."""
    _decode_batch(requests, window, skip_dtx)
    probs = _new_probs(requests)
    rounds = _vad_rounds(requests)
    for k in range(rounds):
        members, frames, states = _round_members(requests, k)
        p, new_states = vad.speech_probs(frames, states)
        for j, i in enumerate(members):
            req = requests[i]
            probs[i][req.vad_windows[k]] = float(p[j])
            req.stream.vad_state = new_states[j]
    return probs, rounds


class AudioHub:
    """Batches decode and VAD across sessions. One per server."""

    def __init__(
        self,
        executor: Executor,
        vad: BoundVAD,
        tick_ms: int = 20,
        max_inflight: int | None = None,
        skip_dtx: bool = True,
    ) -> None:
        self.executor = executor
        self.vad = vad
        #: Windows made only of DTX audio skip the VAD (probability 0.0).
        self.skip_dtx = skip_dtx
        self.window = int(getattr(vad, "window", 512))
        self.sample_rate = int(getattr(vad, "sample_rate", 16000))
        self.tick = tick_ms / 1000
        self.max_inflight = max(1, max_inflight or executor.settings.workers)
        #: The provider itself when the pool may call it directly (cpu, thread pool).
        self.local_vad: VADProvider | None = None
        if getattr(vad, "execution", None) is Execution.CPU and not executor.is_process_pool:
            self.local_vad = getattr(vad, "instance", None)
        self._requests: list[_Request] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The loop the hub runs on (looked up once: each lookup is a system call).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.vad_calls = 0
        self.windows_total = 0
        #: Windows that skipped the VAD (DTX).
        self.windows_dtx = 0
        self.last_batch_streams = 0
        self.busy_seconds = 0.0
        #: Requests answered at once on the loop (:meth:`process_now`), not batched.
        self.requests_now = 0

    def new_stream(self) -> StreamState:
        return StreamState(OpusDecoder(self.sample_rate), self.vad.initial_state())

    def start(self) -> None:
        if self._task is None or self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name="audio-hub")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._task = None
        self._loop = None
        self._inflight.clear()
        for req in self._requests:
            if not req.future.done():
                req.future.cancel()
        self._requests.clear()

    def process_now(self, stream: StreamState, packets: list[bytes]) -> HubResult | None:
        """:meth:`process`'s result at once, for a request that needs neither decoding
        nor the VAD: DTX packets deep in a run of DTX (see the module doc), the common
        case while a device listens to silence or plays a reply. None for any other
        request: then await :meth:`process`. Same rule as the lane's: one request of a
        stream at a time."""
        if not self.skip_dtx or stream.busy:
            return None
        windows = _silence(stream, packets, self.window)
        if windows is None:
            return None
        self.requests_now += 1
        self.windows_total += len(windows)
        self.windows_dtx += len(windows)
        return HubResult(windows, [0.0] * len(windows), [])

    async def process(self, stream: StreamState, packets: list[bytes]) -> HubResult:
        """Decode + VAD ``packets`` of one stream (in order). At most one call per stream
        may be outstanding at a time (the session's lane guarantees it)."""
        if self._loop is None:
            self.start()
            assert self._loop is not None
        if stream.busy:
            raise RuntimeError(
                "AudioHub.process: this stream already has a request "
                "outstanding (its lane must await each one)"
            )
        future: asyncio.Future[HubResult] = self._loop.create_future()
        self._requests.append(_Request(stream, packets, future))
        stream.busy = True
        self._wake.set()
        try:
            return await future
        finally:
            stream.busy = False

    async def _run(self) -> None:
        last = 0.0
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.max_inflight)
        while True:
            await self._wake.wait()
            # let the other sessions' frames of this tick join the batch
            delay = last + self.tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()  # while all batches run, the next one grows
            last = loop.time()
            self._wake.clear()
            batch, self._requests = self._requests, []
            batch = [r for r in batch if not r.future.done()]
            if not batch:
                slots.release()
                continue
            task = loop.create_task(self._run_batch(batch, slots), name="audio-hub-batch")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run_batch(self, batch: list[_Request], slots: asyncio.Semaphore) -> None:
        t0 = time.perf_counter()
        try:
            await self._process(batch)
        except asyncio.CancelledError:
            for r in batch:
                if not r.future.done():
                    r.future.cancel()
            raise
        except Exception as exc:
            log.error("audio hub batch of %d streams failed: %s", len(batch), exc)
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
        finally:
            slots.release()
            self.busy_seconds += time.perf_counter() - t0

    async def _process(self, batch: list[_Request]) -> None:
        if self.local_vad is not None:
            probs, calls = await self.executor.run(
                _decode_and_vad, batch, self.window, self.local_vad, self.skip_dtx
            )
            self.vad_calls += calls
        else:
            await self.executor.run(_decode_batch, batch, self.window, self.skip_dtx)
            probs = _new_probs(batch)
            for k in range(_vad_rounds(batch)):
                members, frames, states = _round_members(batch, k)
                p, new_states = await self.vad.speech_probs(frames, states)
                self.vad_calls += 1
                for j, i in enumerate(members):
                    req = batch[i]
                    probs[i][req.vad_windows[k]] = float(p[j])
                    req.stream.vad_state = new_states[j]
        self.batches += 1
        self.last_batch_streams = len(batch)
        for i, r in enumerate(batch):
            self.windows_total += len(r.windows)
            self.windows_dtx += len(r.windows) - len(r.vad_windows)
            if not r.future.done():
                r.future.set_result(HubResult(r.windows, probs[i], r.errors))
