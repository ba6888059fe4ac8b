"""Admission control of device sessions, for one process or for every worker of a
supervised server.

``server.limits.max_sessions`` is a limit of the *server*, not of a worker: the kernel
spreads connections over the workers by a hash of the client's address and port, so a
per-worker share (``max_sessions / workers``) would refuse a device on a full worker
while another one has room. :class:`SharedAdmission` keeps one counter slot per worker
in a small memory-mapped file; a worker admits a session under an exclusive ``flock``
(check the sum of all slots, then increment its own), so the limit holds exactly
across workers. Releasing only decrements the worker's own slot. The supervisor zeroes
a dead worker's slot before it starts the replacement.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "sessions")
    >>> SharedAdmission.create(path, workers=2)
    >>> a, b = SharedAdmission(path, 0, 3), SharedAdmission(path, 1, 3)
    >>> a.acquire(), a.acquire(), b.acquire(), b.acquire()
    (True, True, True, False)
    >>> a.full(), b.count()
    (True, 3)
    >>> a.release(); b.full()
    False
    >>> SharedAdmission.reset_slot(path, 1); a.count()
    1
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from typing import Protocol

__all__ = ["Admission", "LocalAdmission", "SharedAdmission"]

_SLOT = struct.Struct("<q")


class Admission(Protocol):
    """What the gateway asks before it serves a session."""

    def full(self) -> bool:
        """Cheap check at the HTTP upgrade (refuse with 503 early)."""
        ...

    def acquire(self) -> bool:
        """Take a session slot; False when the server is full."""
        ...

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        ...


class LocalAdmission:
    """One process: a plain counter.

    >>> a = LocalAdmission(1)
    >>> a.acquire(), a.acquire(), a.full()
    (True, False, True)
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.active = 0

    def full(self) -> bool:
        return self.active >= self.max_sessions

    def acquire(self) -> bool:
        if self.full():
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class SharedAdmission:
    """Every worker's session count in one mapped file: slot ``i`` belongs to worker ``i``."""

    def __init__(self, path: str, index: int, max_sessions: int) -> None:
        self.path = path
        self.index = index
        self.max_sessions = max_sessions
        self._fd = os.open(path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        self.workers = size // _SLOT.size
        if not 0 <= index < self.workers:
            raise ValueError(f"worker index {index} outside the {self.workers} slots of {path}")
        self._map = mmap.mmap(self._fd, size)
        self._offset = index * _SLOT.size

    @staticmethod
    def create(path: str, workers: int) -> None:
        """Create the counter file (all slots zero)."""
        with open(path, "wb") as f:
            f.write(bytes(_SLOT.size * workers))

    @staticmethod
    def reset_slot(path: str, index: int) -> None:
        """Zero worker ``index``'s slot (its process is gone: its sessions are too)."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, _SLOT.pack(0), index * _SLOT.size)
        finally:
            os.close(fd)  # also releases the lock

    def _slot(self, i: int) -> int:
        return int(_SLOT.unpack_from(self._map, i * _SLOT.size)[0])

    def count(self) -> int:
        """Sessions open in all workers together."""
        return sum(self._slot(i) for i in range(self.workers))

    def full(self) -> bool:
        return self.count() >= self.max_sessions

    def acquire(self) -> bool:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self.count() >= self.max_sessions:
                return False
            _SLOT.pack_into(self._map, self._offset, self._slot(self.index) + 1)
            return True
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _SLOT.pack_into(self._map, self._offset, max(0, self._slot(self.index) - 1))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
