"""What the store's reads return: plain frozen dataclasses (no database objects escape).

>>> import datetime as dt
>>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
>>> DeviceRecord("aa:bb", None, "esp32s3", "1.6.0", t, t, None).as_dict()["last_seen"]
'2026-01-01T00:00:00+00:00'
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..types import JSONObject

__all__ = [
    "DeviceRecord",
    "PruneResult",
    "SessionRecord",
    "StoreStats",
    "TurnRecord",
    "VoiceprintRecord",
]


class _AsDict:
    def as_dict(self) -> dict[str, object]:
        """A JSON-ready mapping (datetimes as ISO 8601 text, bytes left out)."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, bytes):
                continue
            out[f.name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out


@dataclass(frozen=True)
class DeviceRecord(_AsDict):
    device_id: str
    client_id: str | None
    board: str | None
    firmware: str | None
    first_seen: dt.datetime
    last_seen: dt.datetime
    #: The profile the device is mapped to; None = the default profile.
    profile: str | None


@dataclass(frozen=True)
class SessionRecord(_AsDict):
    id: str
    device_id: str
    started: dt.datetime
    ended: dt.datetime | None
    close_reason: str | None
    transport: str | None


@dataclass(frozen=True)
class TurnRecord(_AsDict):
    #: Row id: increases with insertion; ``device_turns(before=id)`` pages with it.
    id: int
    session_id: str
    device_id: str
    turn_no: int
    at: dt.datetime
    kind: str
    text: str | None
    reply: str | None
    speaker: str | None
    latency: JSONObject | None
    outcome: str
    error: str | None


@dataclass(frozen=True)
class VoiceprintRecord(_AsDict):
    name: str
    model: str
    embedding: bytes
    samples: int
    created: dt.datetime
    updated: dt.datetime


@dataclass(frozen=True)
class PruneResult(_AsDict):
    turns: int
    sessions: int


@dataclass
class StoreStats:
    """Counters of the store, as plain attributes (export them as Prometheus counters).

    Each counter is written by one thread only (recording ones by the event loop's, the
    writing ones by the writer's), so reading them anywhere is safe.
    ``recorded`` events were accepted into the queue; each then ends as ``written``,
    ``failed`` (the database refused it: not recorded) or ``lost_on_close`` (still
    queued when the store closed). ``dropped`` events never entered the queue (full, or
    the store closed).
    """

    recorded: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    lost_on_close: int = 0
    #: Batch attempts that failed and will be retried (database down or locked).
    retries: int = 0
    batches: int = 0
    #: Seconds spent writing successful batches: total, largest, last.
    batch_seconds_total: float = 0.0
    batch_seconds_max: float = 0.0
    batch_seconds_last: float = 0.0
    #: Reads made for a turn that failed or timed out (answered as empty).
    read_failures: int = 0
    #: Counts the events waiting to be written (set by the store).
    waiting: Callable[[], int] = field(default=lambda: 0, repr=False, compare=False)

    @property
    def queue_depth(self) -> int:
        """Events waiting to be written right now (queued or being written)."""
        return self.waiting()

    def as_dict(self) -> dict[str, float]:
        """Every counter and the queue depth, by name.

        >>> StoreStats(recorded=3, written=2).as_dict()["written"]
        2
        """
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "waiting"
        }
        return {**out, "queue_depth": self.queue_depth}
