"""retention: the pruning watermark, and a BRIN index to find old events by time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row: every event at or below pruned_through_seq may be gone (service/store/retention).
    op.create_table(
        "retention",
        sa.Column("id", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("pruned_through_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="retention_pkey"),
        sa.CheckConstraint("id", name="retention_one_row"),
    )
    op.execute("INSERT INTO retention DEFAULT VALUES")
    # Times grow with seq, so a block-range index finds "older than" in a few pages.
    op.execute("CREATE INDEX events_time_brin ON events USING brin (time)")


def downgrade() -> None:
    op.drop_index("events_time_brin", "events")
    op.drop_table("retention")
