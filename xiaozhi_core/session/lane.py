"""The ordered audio lane of one session: the architecture's central guarantee.

The receive loop puts each Opus packet (:class:`AudioItem`) and each ``listen``
start/stop (:class:`ControlItem`) into one *bounded* queue, so control messages keep
their place among the audio. When the queue is full the receive loop waits, which stops
reading the socket: back-pressure reaches the device through TCP; it is counted and
logged once per episode. Nothing is dropped or reordered.

:meth:`AudioLane.run` (one task per session) takes the items strictly in order: runs of
audio go to the shared :class:`~xiaozhi_core.session.audio_hub.AudioHub` (decode + VAD,
batched with every other session) and come back as windows with speech probabilities;
each window, then each control item, is handed to the session through the small
:class:`LaneSink` protocol. Frames that the hub failed on are counted as lost, frames
seen out of arrival order as reordered — both must stay 0.

Silence deep in a run of DTX needs neither decoding nor the VAD: the hub answers it at
once (``process_now``) instead of in its next batch, and when the lane is idle and the
sink can take silence without awaiting (:class:`SilenceSink`), such a packet is
processed right on arrival (:meth:`AudioLane.process_at_once`) without going through
the queue — still in order, since nothing is queued before it.

Example (a sink that records what reaches it):
    >>> import asyncio
    >>> from xiaozhi_core.testing import tone
    >>> from xiaozhi_core.session.host import NullMetrics
    >>> class Sink:
    ...     def __init__(self):
    ...         self.events = []
    ...     async def on_control(self, item):
    ...         self.events.append(item.kind)
    ...     async def on_window(self, window, prob):
    ...         self.events.append("window")
    ...     async def on_lane_error(self, message):
    ...         self.events.append(message)
    >>> class Hub:  # stands in for AudioHub: 60 ms of Opus → ~2 windows of 512
    ...     window = 512
    ...     def process_now(self, stream, packets):
    ...         return None  # nothing answered at once: everything goes to process()
    ...     async def process(self, stream, packets):
    ...         from xiaozhi_core.session.audio_hub import HubResult
    ...         n = len(packets) * 2
    ...         return HubResult([tone(0.032)] * n, [0.9] * n, [])
    >>> async def demo():
    ...     sink = Sink()
    ...     lane = AudioLane(Hub(), None, NullMetrics(), sink, maxsize=8, label="demo")
    ...     task = asyncio.ensure_future(lane.run())
    ...     await lane.put_control(ControlItem("start", "auto"))
    ...     await lane.put_audio(b"x")
    ...     await lane.put_control(ControlItem("stop"))
    ...     while lane.frames_processed < 1 or len(sink.events) < 4:
    ...         await asyncio.sleep(0.01)
    ...     task.cancel()
    ...     return sink.events, lane.frames_lost, lane.frames_reordered
    >>> asyncio.run(demo())
    (['start', 'window', 'window', 'stop'], 0, 0)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, cast

import numpy as np

from ..logutil import LogLimiter
from .audio_hub import is_dtx
from .host import SessionMetrics

if TYPE_CHECKING:
    from .audio_hub import HubResult, StreamState

__all__ = [
    "AudioItem",
    "AudioLane",
    "AudioRate",
    "ControlItem",
    "LaneHub",
    "LaneItem",
    "LaneSink",
    "SilenceSink",
    "ListenMode",
]

log = logging.getLogger(__name__)

ListenMode = Literal["auto", "manual", "realtime"]

#: Items taken from the queue per wake-up (one hub request carries at most this many).
_BATCH = 32


@dataclass(slots=True)
class AudioItem:
    """One Opus packet as it arrived: the payload, arrival time and arrival number."""

    packet: bytes
    arrived: float
    seq: int


@dataclass(frozen=True, slots=True)
class ControlItem:
    """``listen start`` (with its mode) or ``listen stop``, in line with the audio."""

    kind: Literal["start", "stop"]
    mode: ListenMode = "auto"


LaneItem = AudioItem | ControlItem


class LaneHub(Protocol):
    """What the lane needs from the audio hub."""

    def process_now(self, stream: StreamState, packets: list[bytes]) -> HubResult | None: ...

    async def process(self, stream: StreamState, packets: list[bytes]) -> HubResult: ...


class LaneSink(Protocol):
    """Where the lane delivers, in order (the session)."""

    async def on_control(self, item: ControlItem) -> None: ...

    async def on_window(self, window: np.ndarray, prob: float) -> None: ...

    async def on_lane_error(self, message: str) -> None: ...


class SilenceSink(Protocol):
    """What a sink may add so that the lane hands it silence at once (optional; the
    session has it): windows of probability 0.0 taken synchronously, when nothing about
    them needs awaiting."""

    def takes_silence_now(self) -> bool:
        """Whether :meth:`take_silence` can take windows of silence right now: what
        ``on_window(w, 0.0)`` would do for each of them awaits nothing."""
        ...

    def take_silence(self, windows: list[np.ndarray]) -> None:
        """Exactly what ``on_window(w, 0.0)`` for each window would do."""
        ...


class _LaneQueue:
    """The lane's bounded FIFO: :class:`asyncio.Queue`'s behaviour for one consumer (the
    lane task) and any producers, made for the per-frame path. ``asyncio.Queue`` looks
    up the running loop each time a caller waits (on Linux a ``getpid()`` system call,
    since glibc stopped caching it: once per frame per session); this one resolves it
    once.

    >>> async def demo():
    ...     q = _LaneQueue(2)
    ...     q.put_nowait("a"); await q.put("b")
    ...     blocked = asyncio.ensure_future(q.put("c"))  # full: waits for room
    ...     await asyncio.sleep(0)
    ...     got = [await q.get(), await q.get()]
    ...     await blocked
    ...     return got, q.get_nowait(), q.empty(), blocked.done()
    >>> asyncio.run(demo())
    (['a', 'b'], 'c', True, True)
    """

    __slots__ = ("_getter", "_items", "_loop", "_putters", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[LaneItem] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def qsize(self) -> int:
        return len(self._items)

    def idle(self) -> bool:
        """Nothing queued and the consumer waiting in :meth:`get` (not yet woken): it
        has dealt with every item so far."""
        getter = self._getter
        return not self._items and getter is not None and not getter.done()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def _future(self) -> asyncio.Future[None]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    def put_nowait(self, item: LaneItem) -> None:
        if self.full():
            raise asyncio.QueueFull
        self.append(item)

    def append(self, item: LaneItem) -> None:
        """:meth:`put_nowait` for a caller that has just seen the queue not full."""
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def put(self, item: LaneItem) -> None:
        await self.wait_for_room()
        self.put_nowait(item)

    async def wait_for_room(self) -> None:
        """Return once the queue is not full (no item is added)."""
        while self.full():
            putter = self._future()
            self._putters.append(putter)
            try:
                await putter
            except BaseException:
                putter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(putter)
                if not self.full() and not putter.cancelled():
                    self._wake_putter()  # pass on the room this putter was given
                raise

    def get_nowait(self) -> LaneItem:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if self._putters:
            self._wake_putter()
        return item

    async def get(self) -> LaneItem:
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("_LaneQueue.get: one consumer only")
            self._getter = getter = self._future()
            try:
                await getter
            finally:
                self._getter = None
        return self.get_nowait()

    def _wake_putter(self) -> None:
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                return


class AudioRate:
    """Token bucket over *audio time*: ``allow(frame_ms)`` is true while the device sends
    at most ``speed`` times real time on average, after a ``burst_ms`` burst. Frames
    refused add to a debt forgiven at real-time speed; ``flooding`` once it passes
    ``flood_ms``. O(1) per frame.

    >>> t = [0.0]
    >>> rate = AudioRate(speed=1.0, burst_ms=120, flood_ms=100, clock=lambda: t[0])
    >>> [rate.allow(60) for _ in range(4)], rate.flooding
    ([True, True, False, False], True)
    >>> t[0] = 10.0; rate.allow(60), rate.flooding
    (True, False)
    """

    __slots__ = ("burst", "clock", "debt", "dropped", "flood", "last", "speed", "tokens")

    def __init__(
        self,
        speed: float,
        burst_ms: float,
        flood_ms: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.speed = speed * 1000.0  # ms of audio allowed per second
        self.burst = float(burst_ms)
        self.flood = float(flood_ms)
        self.clock = clock
        self.tokens = float(burst_ms)
        self.debt = 0.0
        self.dropped = 0
        self.last = clock()

    def allow(self, frame_ms: float) -> bool:
        now = self.clock()
        elapsed = now - self.last
        self.last = now
        tokens = self.tokens + elapsed * self.speed
        self.tokens = tokens if tokens < self.burst else self.burst
        if self.debt:
            self.debt = max(0.0, self.debt - elapsed * 1000.0)
        if self.tokens >= frame_ms:
            self.tokens -= frame_ms
            return True
        self.dropped += 1
        self.debt += frame_ms
        return False

    @property
    def flooding(self) -> bool:
        return self.debt > self.flood


class AudioLane:
    """The bounded, strictly ordered queue of one session and its consumer."""

    def __init__(
        self,
        hub: LaneHub,
        stream: StreamState,
        metrics: SessionMetrics,
        sink: LaneSink,
        *,
        maxsize: int,
        label: str,
    ) -> None:
        self.hub = hub
        self.stream = stream
        self.metrics = metrics
        self.sink = sink
        self.label = label
        self.queue = _LaneQueue(maxsize)
        self.frames_in = 0
        self.frames_processed = 0
        #: Frames the lane skipped (decode/VAD failure) or saw out of order: stay 0.
        self.frames_lost = 0
        self.frames_reordered = 0
        self.opus_errors = 0
        self.lag_max = 0.0
        #: Largest lag of the latest group of frames (seconds): the lane's lag now.
        self.lag_last = 0.0
        self._last_seq = 0
        self._backpressured = False
        self._log_limit = LogLimiter(on_suppressed=metrics.count_suppressed_log)
        #: The sink's :class:`SilenceSink` side, if it has one.
        self._silence_sink: SilenceSink | None = (
            cast(SilenceSink, sink)
            if hasattr(sink, "take_silence") and hasattr(sink, "takes_silence_now")
            else None
        )
        #: Frames processed at once on arrival (:meth:`process_at_once`).
        self.frames_at_once = 0

    # ------------------------------------------------------------------ producer side
    def put_audio_nowait(self, packet: bytes) -> bool:
        """Queue one Opus packet if there is room; False (nothing changed) when full."""
        queue = self.queue
        if queue.full():
            return False
        if self._backpressured and queue.qsize() <= queue.maxsize // 2:
            self._backpressured = False
            log.info("session %s: audio lane caught up", self.label)
        self.frames_in += 1
        self.metrics.frame_in()
        queue.append(AudioItem(packet, time.monotonic(), self.frames_in))
        return True

    def process_at_once(self, packet: bytes) -> bool:
        """Process one Opus packet on arrival instead of queueing it, where that keeps
        the order and awaits nothing: the lane is idle (nothing queued, its task waiting
        for the next item, so everything received before was delivered), the hub
        answers the packet at once (a DTX packet deep in a run of DTX, see
        ``AudioHub.process_now``) and the sink takes silence now. True if done (counted
        like any frame; its lane lag is 0); False, having changed nothing, otherwise:
        then queue it."""
        sink = self._silence_sink
        if (
            sink is None
            or not is_dtx(packet)
            or not self.queue.idle()
            or self._backpressured
            or not sink.takes_silence_now()
        ):
            return False
        result = self.hub.process_now(self.stream, [packet])
        if result is None:
            return False
        self.frames_in += 1
        seq = self.frames_in
        if seq == self._last_seq + 1:
            self._last_seq = seq
        else:  # frames a failed hub call skipped before this one
            self._check_order([AudioItem(packet, 0.0, seq)])
        sink.take_silence(result.windows)
        self.frames_processed += 1
        self.frames_at_once += 1
        self.metrics.frame_at_once()
        self.lag_last = 0.0
        return True

    async def wait_for_room(self) -> None:
        """Wait until the lane has room (back-pressure: meanwhile the receive loop does
        not read the socket). Counted every time, logged once per episode."""
        queue = self.queue
        if not queue.full():
            return
        self.metrics.lane_backpressure()
        if not self._backpressured:
            self._backpressured = True
            log.warning(
                "session %s: audio lane full (%d frames); applying back-pressure",
                self.label,
                queue.maxsize,
            )
        await queue.wait_for_room()

    async def put_audio(self, packet: bytes) -> None:
        """Queue one Opus packet; waits (back-pressure) while the lane is full."""
        while not self.put_audio_nowait(packet):
            await self.wait_for_room()

    async def put_control(self, item: ControlItem) -> None:
        """Queue a control item behind the audio received before it."""
        await self.queue.put(item)

    # ------------------------------------------------------------------ consumer side
    async def run(self) -> None:
        """Consume the queue forever (cancel to stop)."""
        queue = self.queue
        while True:
            items = [await queue.get()]
            while len(items) < _BATCH and not queue.empty():
                items.append(queue.get_nowait())
            audio: list[AudioItem] = []
            for item in items:
                if isinstance(item, AudioItem):
                    audio.append(item)
                    continue
                if audio:
                    await self._process(audio)
                    audio = []
                await self.sink.on_control(item)
            if audio:
                await self._process(audio)

    async def _process(self, group: list[AudioItem]) -> None:
        packets = [a.packet for a in group]
        try:
            result = self.hub.process_now(self.stream, packets)
            if result is None:
                result = await self.hub.process(self.stream, packets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "session %s: VAD/decode failed for %d frames: %s", self.label, len(group), exc
            )
            await self.sink.on_lane_error(f"Voice detection failed: {exc}")
            return
        now = time.monotonic()
        lags = [now - a.arrived for a in group]
        self.metrics.observe_lane_lag(lags)
        self.lag_last = max(lags)
        self.lag_max = max(self.lag_max, self.lag_last)
        self._check_order(group)
        self.frames_processed += len(group)
        for err in result.errors:
            self.opus_errors += 1
            self.metrics.frame_error("opus")
            if self._log_limit.allow("bad_frame:"):
                log.info("session %s: %s", self.label, err)
        on_window = self.sink.on_window
        for window, prob in zip(result.windows, result.probs, strict=True):
            await on_window(window, prob)

    def _check_order(self, group: list[AudioItem]) -> None:
        """Count frames skipped (a failed hub call) or processed out of arrival order."""
        for item in group:
            expected = self._last_seq + 1
            if item.seq > expected:
                self.frames_lost += item.seq - expected
                self.metrics.lane_lost(item.seq - expected)
            elif item.seq < expected:
                self.frames_reordered += 1
                self.metrics.lane_reordered()
                log.error(
                    "session %s: frame %d processed after frame %d",
                    self.label,
                    item.seq,
                    self._last_seq,
                )
            self._last_seq = max(self._last_seq, item.seq)
