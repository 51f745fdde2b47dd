"""cancel requests and leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The seq of the task's cancel_requested event: a repeated request answers with it.
    op.add_column("tasks", sa.Column("cancel_seq", sa.BigInteger))
    op.add_column("tasks", sa.Column("lease_seconds", sa.Integer))
    op.create_check_constraint("tasks_lease_seconds_check", "tasks", "lease_seconds > 0")
    # The lease sweeper's scan: only running tasks that hold a lease, oldest activity first.
    op.execute(
        "CREATE INDEX tasks_leases ON tasks (updated_at)"
        " WHERE status = 'running' AND lease_seconds IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("tasks_leases", "tasks")
    op.drop_constraint("tasks_lease_seconds_check", "tasks")
    op.drop_column("tasks", "lease_seconds")
    op.drop_column("tasks", "cancel_seq")
