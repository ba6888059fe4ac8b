"""The first schema: devices, sessions, turns, memory, voiceprints.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xiaozhi_core.store.models import ID_CHARS, NAME_CHARS, Json, RowId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(ID_CHARS), nullable=False),
        sa.Column("client_id", sa.String(ID_CHARS), nullable=True),
        sa.Column("board", sa.String(NAME_CHARS), nullable=True),
        sa.Column("firmware", sa.String(NAME_CHARS), nullable=True),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("profile", sa.String(NAME_CHARS), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_index(op.f("ix_devices_last_seen"), "devices", ["last_seen"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(ID_CHARS), nullable=False),
        sa.Column("device_id", sa.String(ID_CHARS), nullable=False),
        sa.Column("started", UTCDateTime(), nullable=False),
        sa.Column("ended", UTCDateTime(), nullable=True),
        sa.Column("close_reason", sa.String(NAME_CHARS), nullable=True),
        sa.Column("transport", sa.String(NAME_CHARS), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index("ix_sessions_device_started", "sessions", ["device_id", "started"])
    op.create_index("ix_sessions_started", "sessions", ["started"])
    op.create_table(
        "turns",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(ID_CHARS), nullable=False),
        sa.Column("device_id", sa.String(ID_CHARS), nullable=False),
        sa.Column("turn_no", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(NAME_CHARS), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("speaker", sa.String(NAME_CHARS), nullable=True),
        sa.Column("latency", Json, nullable=True),
        sa.Column("outcome", sa.String(NAME_CHARS), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turns")),
    )
    op.create_index("ix_turns_device_id_id", "turns", ["device_id", "id"])
    op.create_index("ix_turns_session_id", "turns", ["session_id"])
    op.create_index("ix_turns_at", "turns", ["at"])
    op.create_table(
        "memory",
        sa.Column("device_id", sa.String(ID_CHARS), nullable=False),
        sa.Column("kind", sa.String(NAME_CHARS), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "kind", name=op.f("pk_memory")),
    )
    op.create_table(
        "voiceprints",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(NAME_CHARS), nullable=False),
        sa.Column("model", sa.String(NAME_CHARS), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voiceprints")),
        sa.UniqueConstraint("model", "name", name="uq_voiceprints_model_name"),
    )


def downgrade() -> None:
    for table in ("voiceprints", "memory", "turns", "sessions", "devices"):
        op.drop_table(table)
