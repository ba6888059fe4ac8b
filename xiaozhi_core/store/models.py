"""The tables of the device store (SQLAlchemy 2 declarative models).

The schema itself is created and changed only by the Alembic migrations in
``xiaozhi_core/store/migrations``; these models describe it for queries, and a test
checks that the two agree.

Turns, sessions and memory name their device by id without foreign keys: they are
records written in batches, and a dropped event (queue full, database down) must never
make a whole batch fail on a missing parent row.

Times are timezone-aware UTC datetimes on both backends.

>>> sorted(Base.metadata.tables)
['devices', 'memory', 'sessions', 'turns', 'voiceprints']
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..types import JSONObject  # at run time: SQLAlchemy reads the Mapped[...] annotations

__all__ = [
    "ID_CHARS",
    "NAME_CHARS",
    "Base",
    "Device",
    "Json",
    "MemoryNote",
    "RowId",
    "SessionRow",
    "Turn",
    "UTCDateTime",
    "Voiceprint",
]

#: Longest device id, client id and session id kept (longer ones are truncated).
ID_CHARS = 64
#: Longest board, firmware, profile, transport, kind, outcome, speaker, model name.
NAME_CHARS = 128

#: Constraint names Alembic can refer to on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps it as naive UTC text).

    >>> t = UTCDateTime()
    >>> t.process_result_value(dt.datetime(2026, 1, 2, 3, 4, 5), None).isoformat()
    '2026-01-02T03:04:05+00:00'
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Dialect | None
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        value = value.astimezone(dt.UTC)
        if dialect is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect | None
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: Auto-increment 64-bit ids (SQLite only auto-increments an INTEGER primary key).
RowId = BigInteger().with_variant(Integer(), "sqlite")
#: JSON, stored as JSONB on PostgreSQL.
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Device(Base):
    """A device, as seen by OTA checks and connections."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(ID_CHARS))
    board: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    #: Firmware version as the device reported it to OTA.
    firmware: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    #: Profile name; NULL = the default profile.
    profile: Mapped[str | None] = mapped_column(String(NAME_CHARS))


class SessionRow(Base):
    """One connection of a device, from hello to close."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(ID_CHARS))
    started: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    close_reason: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    #: ``websocket`` or ``mqtt``.
    transport: Mapped[str | None] = mapped_column(String(NAME_CHARS))

    __table_args__ = (
        Index("ix_sessions_device_started", "device_id", "started"),
        Index("ix_sessions_started", "started"),
    )


class Turn(Base):
    """One turn of a session: what was heard, what was said, how long each stage took."""

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(ID_CHARS))
    device_id: Mapped[str] = mapped_column(String(ID_CHARS))
    #: The turn's number within its session.
    turn_no: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: ``voice``, ``text``, ``greeting``, ``goodbye``...
    kind: Mapped[str] = mapped_column(String(NAME_CHARS))
    #: Recognised text (NULL when transcripts are off).
    text: Mapped[str | None] = mapped_column(Text)
    #: The assistant's reply (NULL when transcripts are off).
    reply: Mapped[str | None] = mapped_column(Text)
    speaker: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    #: The per-turn latency record (``*_ms`` stages, provider seconds...).
    latency: Mapped[JSONObject | None] = mapped_column(Json)
    #: ``ok``, ``failed``, ``aborted``...
    outcome: Mapped[str] = mapped_column(String(NAME_CHARS))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_turns_device_id_id", "device_id", "id"),
        Index("ix_turns_session_id", "session_id"),
        Index("ix_turns_at", "at"),
    )


class MemoryNote(Base):
    """A device's durable memory of one kind (e.g. ``summary``)."""

    __tablename__ = "memory"

    device_id: Mapped[str] = mapped_column(String(ID_CHARS), primary_key=True)
    kind: Mapped[str] = mapped_column(String(NAME_CHARS), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Voiceprint(Base):
    """An enrolled speaker's embedding for one voiceprint model."""

    __tablename__ = "voiceprints"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_CHARS))
    #: The model (or provider) the embedding belongs to; embeddings of different
    #: models are not comparable.
    model: Mapped[str] = mapped_column(String(NAME_CHARS))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    #: How many utterances the embedding averages.
    samples: Mapped[int] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("model", "name", name="uq_voiceprints_model_name"),)
