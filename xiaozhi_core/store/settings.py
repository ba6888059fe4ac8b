"""``store:`` settings of a deployment. Importing this module loads no database library.

Example (what a ``store:`` section validates to)::

    store:
      url: ""                 # empty: SQLite in data_dir; or postgresql://user:pw@host/db
      data_dir: data
      transcripts: true
      retention_days: 90

    >>> from xiaozhi_core.options import validate_options
    >>> s = validate_options(StoreSettings, {"url": "", "retention_days": 7}, path="store")
    >>> s.retention_days, s.transcripts
    (7, True)
    >>> validate_options(StoreSettings, {"batch_size": 0}, path="store")
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: store.batch_size: must be at least 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["StoreSettings"]


@dataclass
class StoreSettings:
    """Where devices, sessions, turns, memory and voiceprints are kept (``store:``)."""

    #: Off: nothing is recorded and no database library is imported.
    enabled: bool = True
    #: Database URL: empty = SQLite file ``xiaozhi.db`` in ``data_dir`` (the embedded
    #: default, safe with several worker processes); ``sqlite:///PATH`` for another file;
    #: ``postgresql://USER:PASSWORD@HOST:PORT/DB`` for a server several hosts share.
    #: ``${ENV}``-able, so the password stays out of the file.
    url: str = ""
    #: Directory of the SQLite file when ``url`` is empty (relative: to the working
    #: directory); created when missing.
    data_dir: str = "data"
    #: Store the recognised text and the reply of each turn. Off: turns keep only their
    #: time, kind, speaker, latency record, outcome and error.
    transcripts: bool = True
    #: Turns and sessions older than this many days are deleted (checked hourly);
    #: 0 keeps everything.
    retention_days: int = 90
    #: Most events written in one transaction.
    batch_size: int = 500
    #: Longest an event waits in memory before its batch is written (seconds).
    flush_interval: float = 0.5
    #: Events waiting to be written, at most; further events are dropped (and counted)
    #: while the database is slow or down.
    queue_bound: int = 20000
    #: Limit for reads a turn waits on (history, memory), in seconds; on timeout or
    #: failure they return nothing and the turn goes on without.
    read_timeout: float = 1.0
    #: Limit for connecting to a PostgreSQL server, in seconds.
    connect_timeout: float = 5.0
    #: Bring the schema up to date when the server starts (``xiaozhi db upgrade`` does
    #: it by hand).
    auto_upgrade: bool = True

    def __post_init__(self) -> None:
        def bad(key: str, message: str) -> ConfigError:
            return ConfigError(message, path=f"store.{key}")

        if self.batch_size < 1:
            raise bad("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.queue_bound < self.batch_size:
            raise bad(
                "queue_bound",
                f"must be at least batch_size ({self.batch_size}), got {self.queue_bound}",
            )
        for name in ("flush_interval", "read_timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise bad(name, f"must be positive, got {getattr(self, name)}")
        if self.retention_days < 0:
            raise bad(
                "retention_days", f"must be 0 (keep everything) or more, got {self.retention_days}"
            )
