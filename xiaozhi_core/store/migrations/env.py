"""Alembic environment of the device store: runs on the connection the caller passes in
``config.attributes["connection"]`` (see :func:`xiaozhi_core.store.migrate.upgrade`)."""

from __future__ import annotations

from alembic import context

from xiaozhi_core.store.models import Base


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError(
            "the store's migrations run through xiaozhi_core.store.migrate "
            "(`xiaozhi db upgrade`), on a connection it passes in"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


try:
    _running = context.config is not None
except (NameError, AttributeError):  # imported outside Alembic (pytest doctest collection)
    _running = False
if _running:
    run()
