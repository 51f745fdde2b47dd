"""tasks and events

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("CREATE SEQUENCE events_seq START WITH 1 CACHE 1")
    op.create_table(
        "tasks",
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("percent", sa.Double),
        sa.Column("done", sa.BigInteger),
        sa.Column("total", sa.BigInteger),
        sa.Column("message", sa.Text),
        sa.Column("stage", sa.Text),
        sa.Column("result", JSONB),
        sa.Column("error", JSONB),
        sa.Column("metadata", JSONB),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("create_key", sa.Text),
        sa.Column("create_fingerprint", sa.Text),
        sa.PrimaryKeyConstraint("tenant", "id", name="tasks_pkey"),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name="tasks_status_check",
        ),
    )
    op.execute("CREATE INDEX tasks_listing ON tasks (tenant, created_at DESC, id DESC)")
    op.execute(
        "CREATE INDEX tasks_listing_status ON tasks (tenant, status, created_at DESC, id DESC)"
    )
    op.execute("CREATE INDEX tasks_listing_kind ON tasks (tenant, kind, created_at DESC, id DESC)")
    op.execute(
        "CREATE UNIQUE INDEX tasks_create_key ON tasks (tenant, create_key)"
        " WHERE create_key IS NOT NULL"
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("time", TZ, nullable=False),
        sa.Column("idempotency_key", sa.Text),
        sa.PrimaryKeyConstraint("seq", name="events_pkey"),
        sa.UniqueConstraint("tenant", "task_id", "version", name="events_task_version_key"),
        sa.ForeignKeyConstraint(
            ["tenant", "task_id"], ["tasks.tenant", "tasks.id"], name="events_task_fkey"
        ),
    )
    op.create_index("events_tenant_seq", "events", ["tenant", "seq"])
    op.create_index("events_tenant_task_seq", "events", ["tenant", "task_id", "seq"])
    op.create_index("events_tenant_type_seq", "events", ["tenant", "type", "seq"])
    op.create_index("events_tenant_kind_seq", "events", ["tenant", "kind", "seq"])
    op.execute(
        "CREATE UNIQUE INDEX events_idempotency_key ON events (tenant, task_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )

    # Raised by an append planned against rows another appender changed meanwhile; the
    # appender plans the group again (see service/store/queries.py, WRITE_GROUP).
    op.execute(
        """
        CREATE FUNCTION taskstream_expect_rows(expected integer, actual bigint) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
          IF actual <> expected THEN
            RAISE EXCEPTION 'tasks changed concurrently: % of % rows still current',
              actual, expected USING ERRCODE = 'serialization_failure';
          END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION taskstream_expect_rows(integer, bigint)")
    op.drop_table("events")
    op.drop_table("tasks")
    op.execute("DROP SEQUENCE events_seq")
