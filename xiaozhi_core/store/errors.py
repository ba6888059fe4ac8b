"""The store's error: a database the caller asked for is missing, unreachable or too old.

Recording methods never raise it (a failed write is counted, not raised); reads and
writes an operator asks for (CLI, console) do, with a message that names the database
and what to do.

>>> str(StoreError("no store at data/xiaozhi.db; run `xiaozhi db upgrade`"))
'no store at data/xiaozhi.db; run `xiaozhi db upgrade`'
"""

from __future__ import annotations

from ..errors import XiaozhiError

__all__ = ["StoreError"]


class StoreError(XiaozhiError):
    """The device store cannot do what was asked (unreachable, no schema, bad URL)."""
