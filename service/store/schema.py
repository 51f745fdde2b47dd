"""The two tables, declared once: alembic migrations create them, tests compare against this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")

# CACHE 1 (the default, said explicitly): with a larger cache each backend pre-allocates a block
# of values and the numbers of concurrent sessions would interleave out of commit order.
events_seq = Sequence("events_seq", metadata=metadata, start=1, cache=1)

tasks = Table(
    "tasks",
    metadata,
    Column("tenant", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("title", Text),
    Column("status", Text, nullable=False),
    Column("percent", Double),
    Column("done", BigInteger),
    Column("total", BigInteger),
    Column("message", Text),
    Column("stage", Text),
    Column("result", JSONB),
    Column("error", JSONB),
    Column("metadata", JSONB),
    Column("version", Integer, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("create_key", Text),
    Column("create_fingerprint", Text),
    Column("cancel_seq", BigInteger),
    Column("lease_seconds", Integer),
    PrimaryKeyConstraint("tenant", "id", name="tasks_pkey"),
    CheckConstraint("lease_seconds > 0", name="tasks_lease_seconds_check"),
    CheckConstraint(
        "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
        name="tasks_status_check",
    ),
    Index("tasks_listing", "tenant", text("created_at DESC"), text("id DESC")),
    Index("tasks_listing_status", "tenant", "status", text("created_at DESC"), text("id DESC")),
    Index("tasks_listing_kind", "tenant", "kind", text("created_at DESC"), text("id DESC")),
    Index(
        "tasks_leases",
        "updated_at",
        postgresql_where=text("status = 'running' AND lease_seconds IS NOT NULL"),
    ),
    Index(
        "tasks_create_key",
        "tenant",
        "create_key",
        unique=True,
        postgresql_where=text("create_key IS NOT NULL"),
    ),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("tenant", Text, nullable=False),
    Column("task_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", Text),
    PrimaryKeyConstraint("seq", name="events_pkey"),
    UniqueConstraint("tenant", "task_id", "version", name="events_task_version_key"),
    ForeignKeyConstraint(
        ["tenant", "task_id"], ["tasks.tenant", "tasks.id"], name="events_task_fkey"
    ),
    Index("events_tenant_seq", "tenant", "seq"),
    Index("events_tenant_task_seq", "tenant", "task_id", "seq"),
    Index("events_tenant_type_seq", "tenant", "type", "seq"),
    Index("events_tenant_kind_seq", "tenant", "kind", "seq"),
    Index(
        "events_idempotency_key",
        "tenant",
        "task_id",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
)

# The pruning watermark (one row): events at or below it may have been removed.
retention = Table(
    "retention",
    metadata,
    Column("id", Boolean, nullable=False, server_default=true()),
    Column("pruned_through_seq", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("id", name="retention_pkey"),
    CheckConstraint("id", name="retention_one_row"),
)
Index("events_time_brin", events.c.time, postgresql_using="brin")
