"""The :class:`Store` facade: what the session, the gateway, the CLI and the console call.

Three kinds of methods, with different failure rules:

* **Recording** (``device_seen``, ``session_started``, ``session_ended``,
  ``turn_recorded``) are plain (not ``async``) calls that only append to a bounded
  queue: microseconds, no I/O, never an exception. A writer on its own thread and event
  loop writes the queue in batches (see :mod:`xiaozhi_core.store.writer`), so the
  server's loop never builds or sends a batch.
* **Reads a turn waits on** (``recent_turns``, ``get_memory``, ``device_profile``) give
  up after ``store.read_timeout`` and answer empty (None / ``[]``) on any failure,
  counted in ``stats.read_failures``. A read whose caller stops waiting (the timeout, or
  the session ended) is not cancelled: it finishes in the background and hands its
  connection back to the pool (a cancelled one would be thrown away, and with it an
  aiosqlite thread and its page cache); at most ``MAX_ORPHAN_READS`` such reads run,
  beyond that a read answers empty at once.
* **Operator calls** (CLI, console, API: devices, profiles, memory, voiceprints,
  pruning) raise :class:`~xiaozhi_core.store.errors.StoreError` with one line that names
  the database.

Example::

    store = Store(StoreSettings(data_dir="data"))
    await store.open()                       # migrates when store.auto_upgrade is on
    store.device_seen("aa:bb:cc:dd:ee:ff", board="bread-compact-wifi", firmware="1.6.2")
    store.session_started("s-1", "aa:bb:cc:dd:ee:ff", transport="websocket")
    store.turn_recorded(session_id="s-1", device_id="aa:bb:cc:dd:ee:ff", turn=1,
                        kind="voice", outcome="ok", text="hi", reply="Hello!",
                        latency={"total_ms": 812.0})
    history = await store.recent_turns("aa:bb:cc:dd:ee:ff", max_chars=4000)
    await store.close()                      # writes what is queued (bounded wait)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy import Delete, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import migrate
from .engine import IMMEDIATE, create_engine, describe, resolve_url, sqlite_path
from .errors import StoreError
from .models import ID_CHARS, NAME_CHARS, Base, Device, MemoryNote, SessionRow, Turn, Voiceprint
from .records import (
    DeviceRecord,
    PruneResult,
    SessionRecord,
    StoreStats,
    TurnRecord,
    VoiceprintRecord,
)
from .settings import StoreSettings
from .writer import (
    BatchWriter,
    DeviceSeen,
    Op,
    RateLimit,
    SessionEnded,
    SessionStarted,
    TurnRow,
    error_line,
)

__all__ = ["TEXT_CHARS", "Store"]

log = logging.getLogger("xiaozhi_core.store")

T = TypeVar("T")

#: Longest recognised text, reply or error kept per turn (characters).
TEXT_CHARS = 16000
#: Rows deleted per transaction when pruning (keeps SQLite's write lock short).
_PRUNE_CHUNK = 5000
#: Reads left running after their caller stopped waiting, at most (a database that hangs
#: must not collect them without bound).
MAX_ORPHAN_READS = 64


def _clip(value: object, limit: int) -> str | None:
    """Device-supplied text made storable: NULs removed (PostgreSQL refuses them), cut
    to the column's length.

    >>> _clip("ab\\x00cdef", 4), _clip(None, 4)
    ('abcd', None)
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text[:limit]


def _device(row: Device) -> DeviceRecord:
    return DeviceRecord(
        row.device_id,
        row.client_id,
        row.board,
        row.firmware,
        row.first_seen,
        row.last_seen,
        row.profile,
    )


def _turn(row: Turn) -> TurnRecord:
    return TurnRecord(
        row.id,
        row.session_id,
        row.device_id,
        row.turn_no,
        row.at,
        row.kind,
        row.text,
        row.reply,
        row.speaker,
        row.latency,
        row.outcome,
        row.error,
    )


class Store:
    """The device store (see the module docstring for the three kinds of methods).

    ``observe_batch(events, seconds)``, when given, is called after every batch written,
    on the writer's thread (e.g. a Prometheus histogram's ``observe``, which is
    thread-safe); ``stats`` holds the counters.
    """

    def __init__(
        self, settings: StoreSettings, *, observe_batch: Callable[[int, float], None] | None = None
    ) -> None:
        self.settings = settings
        self.url = resolve_url(settings)
        #: Where the store is, password masked (for logs and the CLI).
        self.location = describe(self.url)
        self.stats = StoreStats()
        self._observe_batch = observe_batch
        self._engine: AsyncEngine | None = None
        self._writer: BatchWriter | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._read_log = RateLimit(60.0)
        #: Reads in flight (see the module docstring): finished in the background when
        #: their caller stops waiting, cancelled by close().
        self._reads: set[asyncio.Task[object]] = set()
        self._schema_ready = False

    # ------------------------------------------------------------------ lifecycle
    async def open(self, *, upgrade: bool | None = None, strict: bool = False) -> None:
        """Connect, migrate (``upgrade``, default ``store.auto_upgrade``) and start the
        writer.

        ``strict=False`` (the server): a database that cannot be reached or migrated now
        is logged, and the writer migrates and writes once it answers; until then events
        queue (bounded) and reads answer empty (an unreachable PostgreSQL server costs
        the caller ``store.connect_timeout`` here). ``strict=True`` (the CLI): raise
        :class:`StoreError` instead — also when the database does not exist yet or its
        schema is not current and ``upgrade`` is off.
        """
        if self._engine is not None:
            return
        do_upgrade = self.settings.auto_upgrade if upgrade is None else upgrade
        path = sqlite_path(self.url)
        if strict and not do_upgrade and path is not None and not path.exists():
            raise StoreError(
                f"no store at {path} (run `xiaozhi db upgrade` to create it, or "
                "point --data-dir / --store-url / store.url at the right one)"
            )
        self._engine = create_engine(self.url, self.settings)
        try:
            await self._prepare(self._engine, do_upgrade)
        except Exception as exc:
            if strict:
                await self._dispose()
                if isinstance(exc, StoreError):
                    raise
                raise StoreError(f"store {self.location}: {error_line(exc)}") from exc
            log.warning(
                "store: %s is not ready (%s); events will be written once it is",
                self.location,
                error_line(exc),
            )
        self._writer = BatchWriter(
            lambda: create_engine(self.url, self.settings, pool_size=1),
            self.stats,
            batch_size=self.settings.batch_size,
            flush_interval=self.settings.flush_interval,
            queue_bound=self.settings.queue_bound,
            where=self.location,
            observe_batch=self._observe_batch,
            prepare=None
            if self._schema_ready
            else (lambda engine: self._prepare(engine, do_upgrade)),
        )
        await self._writer.start()
        if self.settings.retention_days > 0:
            self._maintenance = asyncio.create_task(
                self._prune_hourly(), name="xiaozhi-store-prune"
            )
        log.info(
            "store: %s (transcripts %s, retention %s)",
            self.location,
            "on" if self.settings.transcripts else "off",
            f"{self.settings.retention_days} days" if self.settings.retention_days else "forever",
        )

    async def _prepare(self, engine: AsyncEngine, do_upgrade: bool) -> None:
        async with asyncio.timeout(max(30.0, self.settings.connect_timeout * 2)):
            if do_upgrade:
                before, after = await migrate.upgrade(engine)
                if before != after:
                    log.info(
                        "store: %s migrated from %s to %s", self.location, before or "empty", after
                    )
            else:
                current, head = await migrate.current_revision(engine), migrate.head_revision()
                if current != head:
                    state = (
                        "has no xiaozhi schema"
                        if current is None
                        else f"is at schema revision {current}, this version needs {head}"
                    )
                    raise StoreError(f"store {self.location} {state}; run `xiaozhi db upgrade`")
        self._schema_ready = True

    async def close(self, within: float = 5.0) -> None:
        """Write what is queued (waiting at most ``within`` s) and disconnect."""
        if self._reads:
            for task in list(self._reads):
                task.cancel()
            await asyncio.gather(*self._reads, return_exceptions=True)
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        if self._writer is not None:
            await self._writer.close(within)
            self._writer = None
        await self._dispose()

    async def _dispose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            with contextlib.suppress(Exception):
                await engine.dispose()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not open (call `await store.open()` first)")
        return self._engine

    async def upgrade(self) -> tuple[str | None, str | None]:
        """Migrate the schema to the newest revision; (revision before, after)."""
        return await self._operator("migrate", lambda: migrate.upgrade(self._require()))

    async def revision(self) -> str | None:
        """The schema revision of the database (None: empty database)."""
        return await self._operator(
            "read the schema revision", lambda: migrate.current_revision(self._require())
        )

    async def flush(self, within: float = 5.0) -> bool:
        """Wait (at most ``within`` s) until every event recorded so far is written;
        False when some are still waiting."""
        return await self._writer.flush(within) if self._writer is not None else True

    # ------------------------------------------------------------------ recording
    def _put(self, op: Op) -> None:
        if self._writer is None:
            self.stats.dropped += 1
            return
        self._writer.put(op)

    def device_seen(
        self,
        device_id: str,
        *,
        client_id: str | None = None,
        board: str | None = None,
        firmware: str | None = None,
        at: float | None = None,
    ) -> None:
        """A device checked in (OTA) or connected. ``None`` fields keep the stored value;
        creates the device on first sight. ``at``: epoch seconds (default now)."""
        device = _clip(device_id, ID_CHARS)
        if not device:
            return
        self._put(
            DeviceSeen(
                device,
                time.time() if at is None else at,
                _clip(client_id, ID_CHARS),
                _clip(board, NAME_CHARS),
                _clip(firmware, NAME_CHARS),
            )
        )

    def session_started(
        self, session_id: str, device_id: str, *, transport: str | None, at: float | None = None
    ) -> None:
        """A session began (after the hello); also marks the device as seen."""
        device = _clip(device_id, ID_CHARS)
        if not device:
            return
        self._put(
            SessionStarted(
                _clip(session_id, ID_CHARS) or "",
                device,
                time.time() if at is None else at,
                _clip(transport, NAME_CHARS),
            )
        )

    def session_ended(
        self, session_id: str, *, reason: str | None, at: float | None = None
    ) -> None:
        """A session closed, and why (``idle timeout``, ``client closed``...)."""
        self._put(
            SessionEnded(
                _clip(session_id, ID_CHARS) or "",
                time.time() if at is None else at,
                _clip(reason, NAME_CHARS),
            )
        )

    def turn_recorded(
        self,
        *,
        session_id: str,
        device_id: str,
        turn: int,
        kind: str,
        outcome: str,
        text: str | None = None,
        reply: str | None = None,
        speaker: str | None = None,
        latency: Mapping[str, object] | None = None,
        error: str | None = None,
        at: float | None = None,
    ) -> None:
        """A turn finished. ``latency`` is the per-turn record the session logs
        (``*_ms`` stages...); ``text``/``reply`` are left out when ``store.transcripts``
        is off; ``at`` is when the turn began (epoch seconds, default now)."""
        device = _clip(device_id, ID_CHARS)
        if not device:
            return
        transcripts = self.settings.transcripts
        self._put(
            TurnRow(
                session_id=_clip(session_id, ID_CHARS) or "",
                device_id=device,
                turn_no=int(turn),
                at=time.time() if at is None else at,
                kind=_clip(kind, NAME_CHARS) or "",
                outcome=_clip(outcome, NAME_CHARS) or "",
                text=_clip(text, TEXT_CHARS) if transcripts else None,
                reply=_clip(reply, TEXT_CHARS) if transcripts else None,
                speaker=_clip(speaker, NAME_CHARS),
                latency=dict(latency) if latency is not None else None,
                error=_clip(error, TEXT_CHARS),
            )
        )

    # ------------------------------------------------------------------ reads for turns
    async def _quiet(
        self, what: str, read: Callable[[AsyncConnection], Awaitable[T]], empty: T
    ) -> T:
        engine = self._engine
        if engine is None:
            return empty
        try:
            if len(self._reads) >= MAX_ORPHAN_READS:
                raise StoreError(f"{len(self._reads)} reads still running")
            task: asyncio.Task[T] = asyncio.get_running_loop().create_task(
                self._run_read(engine, read)
            )
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
            async with asyncio.timeout(self.settings.read_timeout):
                # shield: the caller's cancellation or timeout leaves the read running
                return await asyncio.shield(task)
        except Exception as exc:
            self.stats.read_failures += 1
            held = self._read_log.ready()
            if held is not None:
                log.warning(
                    "store: reading %s from %s failed, going on without it (%d more "
                    "since the last message): %s",
                    what,
                    self.location,
                    held,
                    "timed out" if isinstance(exc, TimeoutError) else error_line(exc),
                )
            return empty

    @staticmethod
    async def _run_read(engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with engine.connect() as conn:
            return await read(conn)

    async def recent_turns(self, device_id: str, max_chars: int) -> list[TurnRecord]:
        """The device's latest successful turns with a recognised text, oldest first,
        whose texts and replies fit in ``max_chars`` (at least the newest one)."""

        async def read(conn: AsyncConnection) -> list[TurnRecord]:
            rows = await conn.execute(
                select(Turn)
                .where(Turn.device_id == device_id, Turn.outcome == "ok", Turn.text.is_not(None))
                .order_by(Turn.id.desc())
                .limit(200)
            )
            picked: list[TurnRecord] = []
            used = 0
            for row in rows:
                record = _turn(row)  # type: ignore[arg-type]
                used += len(record.text or "") + len(record.reply or "")
                if picked and used > max_chars:
                    break
                picked.append(record)
            return picked[::-1]

        return await self._quiet("history", read, [])

    async def get_memory(self, device_id: str, kind: str = "summary") -> str | None:
        """The device's memory note of ``kind``; None when there is none (or on failure)."""

        async def read(conn: AsyncConnection) -> str | None:
            return (
                await conn.execute(
                    select(MemoryNote.text).where(
                        MemoryNote.device_id == device_id, MemoryNote.kind == kind
                    )
                )
            ).scalar()

        return await self._quiet("memory", read, None)

    async def device_profile(self, device_id: str) -> str | None:
        """The profile the device is mapped to; None = default (also on failure)."""

        async def read(conn: AsyncConnection) -> str | None:
            return (
                await conn.execute(select(Device.profile).where(Device.device_id == device_id))
            ).scalar()

        return await self._quiet("the device's profile", read, None)

    # ------------------------------------------------------------------ operator calls
    async def _operator(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        self._require()
        try:
            return await work()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"store {self.location}: cannot {what}: {error_line(exc)}") from exc

    async def _read(self, what: str, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def work() -> T:
            async with self._require().connect() as conn:
                return await read(conn)

        return await self._operator(what, work)

    async def _write(self, what: str, write: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def work() -> T:
            async with self._require().connect() as conn:
                conn = await conn.execution_options(**IMMEDIATE)
                async with conn.begin():
                    return await write(conn)

        return await self._operator(what, work)

    def _insert(
        self, conn: AsyncConnection
    ) -> Callable[[type[Base]], postgresql.Insert | sqlite.Insert]:
        return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert

    async def list_devices(self, limit: int = 1000) -> list[DeviceRecord]:
        """Devices, most recently seen first."""

        async def read(conn: AsyncConnection) -> list[DeviceRecord]:
            rows = await conn.execute(
                select(Device).order_by(Device.last_seen.desc(), Device.device_id).limit(limit)
            )
            return [_device(r) for r in rows]  # type: ignore[arg-type]

        return await self._read("list devices", read)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        """One device; None when the store has never seen it."""

        async def read(conn: AsyncConnection) -> DeviceRecord | None:
            row = (await conn.execute(select(Device).where(Device.device_id == device_id))).first()
            return None if row is None else _device(row)  # type: ignore[arg-type]

        return await self._read("read a device", read)

    async def device_sessions(self, device_id: str, limit: int = 20) -> list[SessionRecord]:
        """The device's latest sessions, newest first."""

        async def read(conn: AsyncConnection) -> list[SessionRecord]:
            rows = await conn.execute(
                select(SessionRow)
                .where(SessionRow.device_id == device_id)
                .order_by(SessionRow.started.desc())
                .limit(limit)
            )
            return [
                SessionRecord(r.id, r.device_id, r.started, r.ended, r.close_reason, r.transport)
                for r in rows
            ]

        return await self._read("read sessions", read)

    async def device_turns(
        self, device_id: str, limit: int = 50, before: int | None = None
    ) -> list[TurnRecord]:
        """The device's turns, newest first; ``before`` (a turn's ``id``) pages back."""

        async def read(conn: AsyncConnection) -> list[TurnRecord]:
            query = select(Turn).where(Turn.device_id == device_id)
            if before is not None:
                query = query.where(Turn.id < before)
            rows = await conn.execute(query.order_by(Turn.id.desc()).limit(limit))
            return [_turn(r) for r in rows]  # type: ignore[arg-type]

        return await self._read("read turns", read)

    async def session_turns(self, session_id: str) -> list[TurnRecord]:
        """Every turn of one session, in order (e.g. for a summary after it ended)."""

        async def read(conn: AsyncConnection) -> list[TurnRecord]:
            rows = await conn.execute(
                select(Turn).where(Turn.session_id == session_id).order_by(Turn.id)
            )
            return [_turn(r) for r in rows]  # type: ignore[arg-type]

        return await self._read("read a session's turns", read)

    async def set_profile(
        self, device_id: str, profile: str | None, *, create: bool = False
    ) -> bool:
        """Map the device to ``profile`` (None: the default). False when the device is
        unknown, unless ``create`` adds it (e.g. before its first connection)."""
        profile = _clip(profile, NAME_CHARS)

        async def write(conn: AsyncConnection) -> bool:
            done = await conn.execute(
                update(Device).where(Device.device_id == device_id).values(profile=profile)
            )
            if done.rowcount or not create:
                return bool(done.rowcount)
            now = dt.datetime.now(dt.UTC)
            await conn.execute(
                self._insert(conn)(Device).values(
                    device_id=_clip(device_id, ID_CHARS),
                    first_seen=now,
                    last_seen=now,
                    profile=profile,
                )
            )
            return True

        return await self._write("set the profile", write)

    async def set_memory(self, device_id: str, kind: str, text: str) -> None:
        """Replace the device's memory note of ``kind`` (e.g. ``summary``)."""

        async def write(conn: AsyncConnection) -> None:
            ins = self._insert(conn)(MemoryNote).values(
                device_id=_clip(device_id, ID_CHARS),
                kind=_clip(kind, NAME_CHARS),
                text=_clip(text, TEXT_CHARS * 4),
                updated=dt.datetime.now(dt.UTC),
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[MemoryNote.device_id, MemoryNote.kind],
                    set_={"text": ins.excluded.text, "updated": ins.excluded.updated},
                )
            )

        await self._write("save memory", write)

    async def save_voiceprint(
        self, name: str, model: str, embedding: bytes, samples: int = 1
    ) -> None:
        """Store (or replace) ``name``'s embedding for ``model``."""

        async def write(conn: AsyncConnection) -> None:
            now = dt.datetime.now(dt.UTC)
            ins = self._insert(conn)(Voiceprint).values(
                name=_clip(name, NAME_CHARS),
                model=_clip(model, NAME_CHARS),
                embedding=bytes(embedding),
                samples=samples,
                created=now,
                updated=now,
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[Voiceprint.model, Voiceprint.name],
                    set_={
                        "embedding": ins.excluded.embedding,
                        "samples": ins.excluded.samples,
                        "updated": ins.excluded.updated,
                    },
                )
            )

        await self._write("save a voiceprint", write)

    async def load_voiceprints(self, model: str | None = None) -> list[VoiceprintRecord]:
        """Enrolled voiceprints (of ``model``, or all), by name."""

        async def read(conn: AsyncConnection) -> list[VoiceprintRecord]:
            query = select(Voiceprint).order_by(Voiceprint.name, Voiceprint.model)
            if model is not None:
                query = query.where(Voiceprint.model == model)
            return [
                VoiceprintRecord(r.name, r.model, r.embedding, r.samples, r.created, r.updated)
                for r in await conn.execute(query)
            ]

        return await self._read("load voiceprints", read)

    async def remove_voiceprint(self, name: str, model: str | None = None) -> int:
        """Forget ``name`` (for ``model``, or every model); how many were removed."""

        async def write(conn: AsyncConnection) -> int:
            stmt = delete(Voiceprint).where(Voiceprint.name == name)
            if model is not None:
                stmt = stmt.where(Voiceprint.model == model)
            return int((await conn.execute(stmt)).rowcount)

        return await self._write("remove a voiceprint", write)

    async def prune(self, retention_days: float | None = None) -> PruneResult:
        """Delete turns and sessions older than ``retention_days`` (default
        ``store.retention_days``; 0 deletes nothing), in short transactions."""
        days = self.settings.retention_days if retention_days is None else retention_days
        if days <= 0:
            return PruneResult(0, 0)
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        counts = {}
        for table, key, column in (
            (Turn, Turn.id, Turn.at),
            (SessionRow, SessionRow.id, SessionRow.started),
        ):
            total = 0
            chunk = select(key).where(column < cutoff).limit(_PRUNE_CHUNK).scalar_subquery()
            stmt = delete(table).where(key.in_(chunk))
            while True:

                async def write(conn: AsyncConnection, stmt: Delete = stmt) -> int:
                    return int((await conn.execute(stmt)).rowcount)

                n = await self._write("prune", write)
                total += n
                if n < _PRUNE_CHUNK:
                    break
            counts[table.__tablename__] = total
        return PruneResult(counts["turns"], counts["sessions"])

    async def _prune_hourly(self) -> None:
        await asyncio.sleep(60.0)  # let the server start first
        while True:
            try:
                result = await self.prune()
                if result.turns or result.sessions:
                    log.info(
                        "store: pruned %d turns and %d sessions older than %d days",
                        result.turns,
                        result.sessions,
                        self.settings.retention_days,
                    )
            except StoreError as exc:
                log.warning("store: pruning failed: %s", exc)
            await asyncio.sleep(3600.0)
