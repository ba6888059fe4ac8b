"""Alembic migrations of the device store (run through :mod:`xiaozhi_core.store.migrate`).

A new migration: add ``versions/NNNN_what.py`` (copy ``0001_initial.py``'s header,
``down_revision`` = the previous one), change :mod:`xiaozhi_core.store.models` to match,
and run the store tests: one of them compares the migrated schema with the models on
SQLite and PostgreSQL. Write SQLite-compatible changes with ``op.batch_alter_table``.
"""
