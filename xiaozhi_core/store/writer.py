"""The batched writer: recording calls append to a bounded in-memory queue and return;
a writer on a thread of its own (own event loop, own engine) writes the queue in batches,
one transaction per batch.

Nothing here ever raises into the code that records. A full queue drops the event
(``stats.dropped``); a database that is down or locked makes the writer retry the same
batch with back-off (``stats.retries``) while new events queue up to the bound; a batch
that fails any other way (data the database refuses) is written event by event so only
the bad events are lost (``stats.failed``). Problems are logged as one line at most once
a minute per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import SupportsFloat

from sqlalchemy import bindparam, case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SQLATimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..types import JSONValue
from .engine import IMMEDIATE
from .models import Device, SessionRow, Turn, UTCDateTime
from .records import StoreStats

__all__ = [
    "BatchWriter",
    "DeviceSeen",
    "Op",
    "RateLimit",
    "SessionEnded",
    "SessionStarted",
    "TurnRow",
    "error_line",
    "json_safe",
]

log = logging.getLogger("xiaozhi_core.store")


@dataclass(slots=True)
class DeviceSeen:
    device_id: str
    at: float
    client_id: str | None = None
    board: str | None = None
    firmware: str | None = None


@dataclass(slots=True)
class SessionStarted:
    session_id: str
    device_id: str
    at: float
    transport: str | None


@dataclass(slots=True)
class SessionEnded:
    session_id: str
    at: float
    reason: str | None


@dataclass(slots=True)
class TurnRow:
    """A finished turn: the columns of :class:`~xiaozhi_core.store.models.Turn`
    (``at`` as epoch seconds; ``latency`` made JSON-safe when written)."""

    session_id: str
    device_id: str
    turn_no: int
    at: float
    kind: str
    outcome: str
    text: str | None
    reply: str | None
    speaker: str | None
    latency: dict[str, object] | None
    error: str | None


Op = DeviceSeen | SessionStarted | SessionEnded | TurnRow


class RateLimit:
    """At most one log line per ``seconds``; counts what it held back.

    >>> r = RateLimit(60.0)
    >>> r.ready(), r.ready(), r.ready()
    (0, None, None)
    >>> r.last -= 61; r.ready()
    2
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = -math.inf
        self.held = 0

    def ready(self) -> int | None:
        """None: stay quiet; else log now (the number is how many were held back)."""
        now = time.monotonic()
        if now - self.last < self.seconds:
            self.held += 1
            return None
        held, self.held, self.last = self.held, 0, now
        return held


def json_safe(value: object) -> JSONValue:
    """``value`` with only what JSON (and PostgreSQL's JSONB) accepts: non-finite floats
    become None, unknown objects their ``str``, keys text.

    >>> json_safe({"a_ms": float("nan"), "b": (1, 2.5), 3: object.__name__})
    {'a_ms': None, 'b': [1, 2.5], '3': 'object'}
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if not isinstance(value, SupportsFloat):  # numpy scalars have __float__
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _transient(exc: BaseException) -> bool:
    """Worth writing the same batch again later: the database is unreachable, restarting,
    locked or overloaded. Anything else is taken as data it refuses (the batch is then
    written event by event, see :meth:`BatchWriter._write_each`), so that no unexpected
    error can hold the queue forever.

    >>> _transient(ConnectionRefusedError()), _transient(OverflowError("int too large"))
    (True, False)
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, OSError | TimeoutError | SQLATimeoutError | DisconnectionError):
        return True
    # asyncpg's own errors (when not wrapped): connection lost, server shutting down,
    # too many clients, lock timeouts, deadlocks, serialization failures
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("08", "53", "57", "40", "55")


@dataclass(slots=True)
class _DeviceRow:
    """The events of one device in a batch, merged."""

    device_id: str
    first_seen: float
    last_seen: float
    client_id: str | None
    board: str | None
    firmware: str | None


async def apply_batch(conn: AsyncConnection, ops: Iterable[Op]) -> None:
    """Write ``ops`` on ``conn`` (inside the caller's transaction): device upserts first,
    then new sessions, session ends and turns, each as one multi-row statement."""
    devices: dict[str, _DeviceRow] = {}
    sessions: dict[str, dict[str, object]] = {}
    ends: list[dict[str, object]] = []
    turns: list[dict[str, object]] = []

    def touch(
        device_id: str,
        at: float,
        client_id: str | None = None,
        board: str | None = None,
        firmware: str | None = None,
    ) -> None:
        row = devices.get(device_id)
        if row is None:
            devices[device_id] = _DeviceRow(device_id, at, at, client_id, board, firmware)
            return
        row.first_seen = min(row.first_seen, at)
        row.last_seen = max(row.last_seen, at)
        row.client_id = client_id if client_id is not None else row.client_id
        row.board = board if board is not None else row.board
        row.firmware = firmware if firmware is not None else row.firmware

    for op in ops:
        if isinstance(op, TurnRow):
            turns.append(
                {
                    "session_id": op.session_id,
                    "device_id": op.device_id,
                    "turn_no": op.turn_no,
                    "at": _utc(op.at),
                    "kind": op.kind,
                    "outcome": op.outcome,
                    "text": op.text,
                    "reply": op.reply,
                    "speaker": op.speaker,
                    "latency": json_safe(op.latency),
                    "error": op.error,
                }
            )
        elif isinstance(op, DeviceSeen):
            touch(op.device_id, op.at, op.client_id, op.board, op.firmware)
        elif isinstance(op, SessionStarted):
            touch(op.device_id, op.at)
            sessions[op.session_id] = {
                "id": op.session_id,
                "device_id": op.device_id,
                "started": _utc(op.at),
                "ended": None,
                "close_reason": None,
                "transport": op.transport,
            }
        else:
            ends.append({"b_id": op.session_id, "b_ended": _utc(op.at), "b_reason": op.reason})

    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    if devices:
        rows = [
            {
                "device_id": d.device_id,
                "first_seen": _utc(d.first_seen),
                "last_seen": _utc(d.last_seen),
                "client_id": d.client_id,
                "board": d.board,
                "firmware": d.firmware,
                "profile": None,
            }
            for d in sorted(devices.values(), key=lambda d: d.device_id)
        ]
        ins = insert(Device)
        newer = ins.excluded.last_seen > Device.last_seen
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[Device.device_id],
                set_={
                    "last_seen": case((newer, ins.excluded.last_seen), else_=Device.last_seen),
                    "client_id": func.coalesce(ins.excluded.client_id, Device.client_id),
                    "board": func.coalesce(ins.excluded.board, Device.board),
                    "firmware": func.coalesce(ins.excluded.firmware, Device.firmware),
                },
            ),
            rows,
        )
    if sessions:
        await conn.execute(
            insert(SessionRow).on_conflict_do_nothing(index_elements=[SessionRow.id]),
            list(sessions.values()),
        )
    if ends:
        await conn.execute(
            update(SessionRow)
            .where(SessionRow.id == bindparam("b_id"))
            .values(
                ended=bindparam("b_ended", type_=UTCDateTime()), close_reason=bindparam("b_reason")
            ),
            ends,
        )
    if turns:
        await conn.execute(insert(Turn), turns)


class BatchWriter:
    """The queue and the writer (see the module docstring).

    The writer runs on a thread of its own with its own event loop and engine, so
    building, binding and sending a batch never runs on the server's loop: recording
    costs that loop one ``deque.append`` (plus, once per full batch, a wake-up of the
    writer's loop). ``put`` may be called from any thread.
    """

    def __init__(
        self,
        make_engine: Callable[[], AsyncEngine],
        stats: StoreStats,
        *,
        batch_size: int,
        flush_interval: float,
        queue_bound: int,
        where: str,
        observe_batch: Callable[[int, float], None] | None = None,
        prepare: Callable[[AsyncEngine], Awaitable[None]] | None = None,
    ) -> None:
        self.make_engine = make_engine
        self.stats = stats
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_bound = queue_bound
        self.where = where
        #: Called after each batch written, on the writer's thread.
        self.observe_batch = observe_batch
        #: Run (until it succeeds) before the first write: e.g. the migration a database
        #: that was down at start-up still needs.
        self.prepare = prepare
        self._queue: deque[Op] = deque()
        #: A batch that failed transiently; written again before anything newer.
        self._pending: list[Op] = []
        self._inflight = 0
        self._closed = False
        self._wake_sent = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._drop_log = RateLimit(60.0)
        self._fail_log = RateLimit(60.0)
        self._retry_log = RateLimit(60.0)
        stats.waiting = lambda: self.waiting

    # ------------------------------------------------------------------ recording side
    def put(self, op: Op) -> None:
        """Queue ``op`` (never blocks, never raises); dropped and counted when full."""
        waiting = len(self._queue) + len(self._pending) + self._inflight
        if self._closed or waiting >= self.queue_bound:
            self.stats.dropped += 1
            held = self._drop_log.ready()
            if held is not None:
                why = (
                    "the store is closed"
                    if self._closed
                    else (f"{waiting} events are waiting to be written to {self.where}")
                )
                log.warning(
                    "store: event not recorded (%s); %d more dropped since the last message",
                    why,
                    held,
                )
            return
        self._queue.append(op)
        self.stats.recorded += 1
        if len(self._queue) >= self.batch_size and not self._wake_sent:
            self._wake_sent = True
            self._signal(kick=False)

    @property
    def waiting(self) -> int:
        """Events queued or being written."""
        return len(self._queue) + len(self._pending) + self._inflight

    def _signal(self, *, kick: bool) -> None:
        loop, wake, kick_event = self._loop, self._wake, self._kick
        if loop is None or wake is None or kick_event is None:
            return
        with contextlib.suppress(RuntimeError):  # the writer's loop already closed
            loop.call_soon_threadsafe(wake.set)
            if kick:
                loop.call_soon_threadsafe(kick_event.set)

    # ------------------------------------------------------------------ writer thread
    async def start(self) -> None:
        """Start the writer thread (its engine connects lazily, on the first batch)."""
        if self._thread is not None:
            return
        caller = asyncio.get_running_loop()
        started: asyncio.Future[None] = caller.create_future()
        stopped: asyncio.Future[None] = caller.create_future()
        self._stopped = stopped

        def settle(future: asyncio.Future[None]) -> None:
            if not future.done():
                future.set_result(None)

        def tell(future: asyncio.Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                caller.call_soon_threadsafe(settle, future)

        def main() -> None:
            try:
                asyncio.run(self._main(lambda: tell(started)))
            finally:
                tell(started)
                tell(stopped)

        self._thread = threading.Thread(target=main, name="xiaozhi-store-writer", daemon=True)
        self._thread.start()
        await started

    async def _main(self, started: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._kick, self._stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.engine = self.make_engine()
        started()
        runner = asyncio.create_task(self._run())
        try:
            await self._stop.wait()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            with contextlib.suppress(Exception):
                await self.engine.dispose()

    async def _run(self) -> None:
        assert self._wake is not None and self._kick is not None
        backoff = 0.0
        while True:
            event, wait = (self._kick, backoff) if backoff else (self._wake, self.flush_interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await event.wait()
            self._wake.clear()
            self._kick.clear()
            self._wake_sent = False
            backoff = 0.0 if await self._drain() else min(max(backoff * 2, 0.25), 5.0)

    async def _drain(self) -> bool:
        """Write everything queued; False when the database failed (retry later)."""
        if self.prepare is not None and (self._pending or self._queue):
            try:
                await self.prepare(self.engine)
            except Exception as exc:
                self._will_retry(f"{self.where} is not ready", exc)
                return False
            self.prepare = None
            log.info("store: %s is ready", self.where)
        while self._pending or self._queue:
            if self._pending:
                batch = self._pending
            else:
                n = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
            self._inflight, self._pending = len(batch), []
            ok = False
            try:
                ok = await self._write(batch)
            finally:
                if not ok:
                    self._pending = batch
                self._inflight = 0
            if not ok:
                return False
        return True

    def _will_retry(self, trouble: str, exc: Exception) -> None:
        """Count a retry and say so (at most once a minute: the retry log's rate)."""
        self.stats.retries += 1
        if self._retry_log.ready() is not None:
            log.warning(
                "store: %s, will retry (%d events waiting, %d dropped so far): %s",
                trouble,
                self.waiting,
                self.stats.dropped,
                error_line(exc),
            )

    async def _transaction(self, ops: list[Op]) -> None:
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(**IMMEDIATE)
            async with conn.begin():
                await apply_batch(conn, ops)

    async def _write(self, batch: list[Op]) -> bool:
        start = time.perf_counter()
        try:
            await self._transaction(batch)
        except Exception as exc:
            if _transient(exc):
                self._will_retry(f"cannot write to {self.where}", exc)
                return False
            rest = await self._write_each(batch)
            if rest:
                batch[:] = rest  # kept pending: retried when the database answers
                return False
            return True
        self._done(len(batch), time.perf_counter() - start)
        return True

    def _done(self, events: int, seconds: float) -> None:
        stats = self.stats
        stats.written += events
        stats.batches += 1
        stats.batch_seconds_total += seconds
        stats.batch_seconds_last = seconds
        stats.batch_seconds_max = max(stats.batch_seconds_max, seconds)
        if self.observe_batch is not None:
            with contextlib.suppress(Exception):
                self.observe_batch(events, seconds)

    async def _write_each(self, batch: list[Op]) -> list[Op]:
        """A batch the database refused: write its events one by one, lose only the bad
        ones. Returns the events left when the database became unreachable meanwhile."""
        for i, op in enumerate(batch):
            start = time.perf_counter()
            try:
                await self._transaction([op])
            except Exception as exc:
                if _transient(exc):
                    return batch[i:]
                self.stats.failed += 1
                held = self._fail_log.ready()
                if held is not None:
                    log.warning(
                        "store: %s refused a %s event (not recorded; %d more since "
                        "the last message): %s",
                        self.where,
                        type(op).__name__,
                        held,
                        error_line(exc),
                    )
            else:
                self._done(1, time.perf_counter() - start)
        return []

    # ------------------------------------------------------------------ caller side
    async def flush(self, within: float) -> bool:
        """Wait until everything queued so far is written (at most ``within`` s)."""
        deadline = time.monotonic() + within
        self._signal(kick=True)  # now, not at the next flush interval or back-off step
        while self.waiting:
            alive = self._thread is not None and self._thread.is_alive()
            if not alive or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self, within: float) -> None:
        """Refuse new events, write what is queued (at most ``within`` s), stop the
        writer thread."""
        self._closed = True
        await self.flush(within)
        lost = self.waiting
        thread = self._thread
        if (
            thread is not None
            and self._loop is not None
            and self._stop is not None
            and self._stopped is not None
        ):
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stopped), 10.0)
        self._thread = None
        if lost:
            self.stats.lost_on_close += lost
            log.warning("store: %d events were not written to %s before closing", lost, self.where)
        self._queue.clear()
        self._pending = []


def error_line(exc: BaseException) -> str:
    """An exception as one log line: its type and the driver's message, 300 characters
    at most.

    >>> error_line(TimeoutError())
    'TimeoutError: timed out'
    """
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    if not text and isinstance(exc, TimeoutError):
        text = "timed out"
    return f"{type(exc).__name__}: {text[:300]}"
