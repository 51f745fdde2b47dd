"""analyst views: task_events_flat, task_current, task_phases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Read-only views for people who study what happened with SQL (docs/analytics.md). They hold no
data of their own, so upgrade and downgrade are instant and lose nothing.

Every view is ``security_invoker``: whoever queries it needs SELECT on the tables underneath
as well, exactly as if they had written the query against the tables. A grant on a view is
then never a way around the grants (or, later, row-level policies) on ``tasks`` and ``events``.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One row per event, with the members each event type is known to carry as typed columns;
# a column belongs to its event types only (a log's extra "stage" member is not a stage).
# Casts are safe: the service validated these members before storing them.
#
# percent is the progress event's own, or, as the service folds it, derived from its done and
# the task's latest total: the event's own total, else the total of the task's latest earlier
# progress event that gave one (no such event: null). The look-back is the last COALESCE
# argument, so it runs only for progress events that give done without percent and total, as
# one backward probe of the (tenant, task_id, seq) index. (least() would turn a null ratio
# into 100, hence each ratio is formed only where its total is known.)
TASK_EVENTS_FLAT = """
CREATE VIEW task_events_flat WITH (security_invoker = true) AS
SELECT
    e.seq,
    e.tenant,
    e.task_id,
    e.kind,
    e.version,
    e.type,
    e.time,
    CASE WHEN e.type = 'progress' THEN
        COALESCE(
            (e.data ->> 'percent')::double precision,
            CASE WHEN e.data ->> 'total' IS NOT NULL THEN
                least(
                    100.0,
                    (e.data ->> 'done')::double precision * 100.0 / (e.data ->> 'total')::bigint
                )
            END,
            (SELECT least(
                        100.0,
                        (e.data ->> 'done')::double precision * 100.0
                            / (earlier.data ->> 'total')::bigint
                    )
             FROM events earlier
             WHERE earlier.tenant = e.tenant
               AND earlier.task_id = e.task_id
               AND earlier.seq < e.seq
               AND earlier.type = 'progress'
               AND earlier.data ->> 'total' IS NOT NULL
             ORDER BY earlier.seq DESC
             LIMIT 1)
        )
    END AS percent,
    CASE WHEN e.type = 'progress' THEN (e.data ->> 'done')::bigint END AS done,
    CASE WHEN e.type = 'progress' THEN (e.data ->> 'total')::bigint END AS total,
    CASE WHEN e.type = 'progress' THEN e.data ->> 'message' END AS message,
    CASE WHEN e.type = 'progress' THEN e.data ->> 'stage' END AS stage,
    CASE WHEN e.type = 'log' THEN e.data ->> 'level' END AS level,
    CASE WHEN e.type = 'log' THEN e.data ->> 'message' END AS log_message,
    CASE WHEN e.type = 'started' THEN e.data ->> 'worker' END AS worker,
    CASE WHEN e.type = 'failed' THEN e.data -> 'error' ->> 'code' END AS error_code,
    CASE WHEN e.type = 'failed' THEN e.data -> 'error' ->> 'message' END AS error_message,
    CASE WHEN e.type IN ('cancelled', 'cancel_requested') THEN e.data ->> 'reason' END AS reason,
    e.data
FROM events e
"""

# The tasks table as analysts want it: internal columns (the create idempotency key and its
# fingerprint) left out, phases as intervals and seconds, and the live columns that depend on
# the clock (now() is the start of the querying transaction).
TASK_CURRENT = """
CREATE VIEW task_current WITH (security_invoker = true) AS
SELECT
    t.tenant,
    t.id AS task_id,
    t.kind,
    t.title,
    t.status,
    t.status IN ('succeeded', 'failed', 'cancelled') AS is_finished,
    t.cancel_seq IS NOT NULL AS cancel_requested,
    t.cancel_seq IS NOT NULL AND t.status IN ('pending', 'running') AS cancel_pending,
    t.percent,
    t.done,
    t.total,
    t.message,
    t.stage,
    t.result,
    t.error,
    t.error ->> 'code' AS error_code,
    t.error ->> 'message' AS error_message,
    t.metadata,
    t.version,
    t.last_seq,
    t.cancel_seq,
    t.lease_seconds,
    t.created_at,
    t.updated_at,
    t.started_at,
    t.finished_at,
    t.started_at - t.created_at AS queue_wait,
    t.finished_at - t.started_at AS run_time,
    extract(epoch FROM t.started_at - t.created_at)::double precision AS queue_wait_seconds,
    extract(epoch FROM t.finished_at - t.started_at)::double precision AS run_seconds,
    CASE WHEN t.status = 'pending'
        THEN extract(epoch FROM now() - t.created_at)::double precision
    END AS waiting_seconds,
    CASE WHEN t.status = 'running'
        THEN extract(epoch FROM now() - t.started_at)::double precision
    END AS running_seconds,
    CASE WHEN t.status IN ('pending', 'running')
        THEN extract(epoch FROM now() - t.updated_at)::double precision
    END AS silent_seconds
FROM tasks t
"""

# Phase times come from the task row (they survive retention pruning of old events); only the
# first progress is looked up, per task, as a forward probe of the (tenant, task_id, seq) index
# that stops at the task's first progress event (times never decrease as seq grows). The probe
# is a scalar subquery, not a lateral join, so a query that uses neither first_progress_at nor
# time_to_first_progress_seconds never runs it (the inner subquery is flattened into the
# caller's query, whose filters on tenant, kind or times reach the tasks indexes).
TASK_PHASES = """
CREATE VIEW task_phases WITH (security_invoker = true) AS
SELECT
    p.tenant,
    p.task_id,
    p.kind,
    p.status,
    p.outcome,
    p.created_at,
    p.started_at,
    p.first_progress_at,
    p.finished_at,
    extract(epoch FROM p.started_at - p.created_at)::double precision AS queue_wait_seconds,
    extract(epoch FROM p.first_progress_at - p.started_at)::double precision
        AS time_to_first_progress_seconds,
    extract(epoch FROM p.finished_at - p.started_at)::double precision AS run_seconds,
    extract(epoch FROM p.finished_at - p.created_at)::double precision AS total_seconds
FROM (
    SELECT
        t.tenant,
        t.id AS task_id,
        t.kind,
        t.status,
        CASE WHEN t.status IN ('succeeded', 'failed', 'cancelled') THEN t.status END AS outcome,
        t.created_at,
        t.started_at,
        (SELECT e.time
         FROM events e
         WHERE e.tenant = t.tenant AND e.task_id = t.id AND e.type = 'progress'
         ORDER BY e.seq
         LIMIT 1) AS first_progress_at,
        t.finished_at
    FROM tasks t
) p
"""

VIEWS = ("task_events_flat", "task_current", "task_phases")


def upgrade() -> None:
    op.execute(TASK_EVENTS_FLAT)
    op.execute(TASK_CURRENT)
    op.execute(TASK_PHASES)
    for view in VIEWS:
        op.execute(f"COMMENT ON VIEW {view} IS 'taskstream analyst view: see docs/analytics.md'")


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW {view}")
