"""xiaozhi-memory: the ``history`` and ``summary`` memory providers for xiaozhi-core."""
