"""Every SQL statement the service runs, by name. Nothing else in the package holds SQL.

Statements take asyncpg's ``$n`` parameters; lists are bound as arrays and unnested so a whole
group of events is written in one statement.
"""

from __future__ import annotations

from collections.abc import Iterable

CHANNEL = "taskstream_events_v1"

# Key of the transaction-scoped advisory lock that orders appends (see WRITE_GROUP).
APPEND_LOCK_KEY = 0x7461736B_73657121  # "taskseq!"

TASK_COLUMNS = (
    "tenant, id, kind, title, status, percent, done, total, message, stage, result, error,"
    " metadata, version, last_seq, created_at, updated_at, started_at, finished_at,"
    " cancel_seq, lease_seconds"
)
EVENT_COLUMNS = "seq, task_id, tenant, version, type, data, time"

READ_TASKS = f"""
SELECT {TASK_COLUMNS}
FROM tasks
WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""

FIND_EVENTS_BY_KEY = f"""
SELECT {", ".join("events." + c for c in EVENT_COLUMNS.split(", "))}, idempotency_key
FROM events
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, task_id, key)
  ON events.tenant = k.tenant AND events.task_id = k.task_id AND events.idempotency_key = k.key
"""

# The cancel requests that repeated requests answer with.
EVENTS_AT = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1::bigint[])"

# The original answer to a create is rebuilt from the task's first event.
FIND_CREATES_BY_KEY = """
SELECT t.create_key, t.create_fingerprint, t.lease_seconds, e.seq, e.task_id, e.tenant, e.data,
       e.time
FROM tasks t
JOIN unnest($1::text[], $2::text[]) AS k(tenant, key)
  ON t.tenant = k.tenant AND t.create_key = k.key
JOIN events e ON e.tenant = t.tenant AND e.task_id = t.id AND e.version = 1
"""

# Why the lock: sequence values are taken at insert but transactions commit in any order, so
# without it a reader polling "seq > last" could see 12 commit, move past it, and never see 11
# commit later. Every append runs as this one statement in its own transaction, and takes this
# one lock before taking sequence values, holding it until commit: positions are handed out in
# commit order, so once a reader sees n, everything below n is committed (or gone for good).
# The lock sits in a subquery every position row is joined with, so it is taken before the
# first nextval; each time is read after its nextval, under the lock, so time never decreases
# as seq increases. It is the only lock an appender waits for, so appenders cannot deadlock.
#
# The group was planned against task rows read before this statement (READ_TASKS). Each
# changed row is updated only if it is still at the version that was read; if any is not, or
# a task or idempotency key appeared meanwhile (unique violation), the statement fails as a
# whole and the group is planned again from fresh rows.
#
# Position-dependent task columns (last_seq, updated_at, created/started/finished_at) arrive
# as ordinals into this group's positions, because the fold ran before positions existed.
# Ordinals are resolved by subscripting the positions as two arrays (``placed``), not by
# joining them once per column: Postgres plans this statement anew for every group (a generic
# plan would scan ``tasks``), and each join multiplied the planning time.
WRITE_GROUP = f"""
WITH positions AS MATERIALIZED (
  SELECT ord, nextval('events_seq') AS seq, clock_timestamp() AS time
  FROM (SELECT pg_advisory_xact_lock($1::bigint)) AS serialised,
       generate_series(1, $2::int) AS ord
  ORDER BY ord
), placed AS (
  SELECT array_agg(seq ORDER BY ord) AS seqs, array_agg(time ORDER BY ord) AS times
  FROM positions
), new_events AS (
  INSERT INTO events (seq, tenant, task_id, kind, version, type, data, time, idempotency_key)
  SELECT placed.seqs[e.ord], e.tenant, e.task_id, e.kind, e.version, e.type, e.data::jsonb,
         placed.times[e.ord], e.idempotency_key
  FROM unnest($3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[])
    WITH ORDINALITY AS e(tenant, task_id, kind, version, type, data, idempotency_key, ord),
    placed
), states AS (
  SELECT s.*, placed.seqs[s.last_ord] AS last_seq, placed.times[s.last_ord] AS updated_at,
         coalesce(s.created_value, placed.times[s.created_ord]) AS created_at,
         coalesce(s.started_value, placed.times[s.started_ord]) AS started_at,
         coalesce(s.finished_value, placed.times[s.finished_ord]) AS finished_at,
         coalesce(s.cancel_value, placed.seqs[s.cancel_ord]) AS cancel_seq
  FROM unnest(
    $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::float8[],
    $16::bigint[], $17::bigint[], $18::text[], $19::text[], $20::text[], $21::text[],
    $22::text[], $23::int[], $24::int[], $25::timestamptz[], $26::int[], $27::timestamptz[],
    $28::int[], $29::timestamptz[], $30::int[], $31::bigint[], $32::int[], $33::int[],
    $34::text[], $35::text[], $36::int[])
  AS s(tenant, id, kind, title, status, percent, done, total, message, stage, result, error,
       metadata, version, last_ord, created_value, created_ord, started_value, started_ord,
       finished_value, finished_ord, cancel_value, cancel_ord, lease_seconds, create_key,
       create_fingerprint, read_version),
    placed
), new_tasks AS (
  INSERT INTO tasks ({TASK_COLUMNS}, create_key, create_fingerprint)
  SELECT tenant, id, kind, title, status, percent, done, total, message, stage, result::jsonb,
         error::jsonb, metadata::jsonb, version, last_seq, created_at, updated_at, started_at,
         finished_at, cancel_seq, lease_seconds, create_key, create_fingerprint
  FROM states WHERE read_version IS NULL
), changed_tasks AS (
  UPDATE tasks SET
    status = s.status, percent = s.percent, done = s.done, total = s.total,
    message = s.message, stage = s.stage, result = s.result::jsonb, error = s.error::jsonb,
    version = s.version, last_seq = s.last_seq, updated_at = s.updated_at,
    started_at = s.started_at, finished_at = s.finished_at, cancel_seq = s.cancel_seq
  FROM states s
  WHERE tasks.tenant = s.tenant AND tasks.id = s.id AND tasks.version = s.read_version
  RETURNING 1
), checked AS (
  SELECT taskstream_expect_rows($37::int, (SELECT count(*) FROM changed_tasks))
), notified AS (
  SELECT pg_notify('{CHANNEL}', max(seq)::text) FROM positions
)
SELECT p.seq, p.time FROM positions p, checked, notified ORDER BY p.ord
"""

# A task as clients read it: its row, then two clock-dependent figures. elapsed_seconds is
# the run time so far (or in all, once finished). eta_seconds extrapolates the rate of the
# task's last ten progress events (percent given, or derived from done and total) to 100%,
# minus the time since the newest of them; null unless the task is running and advancing.
# ``t`` is a subquery so that the task filters never meet the events' columns.
_TIMED_PACE = """
LEFT JOIN LATERAL (
  SELECT min(r.time) AS first_at, max(r.time) AS last_at,
         (array_agg(r.percent ORDER BY r.seq))[1] AS first_percent
  FROM (
    SELECT e.seq, e.time,
           coalesce((e.data->>'percent')::float8,
                    (e.data->>'done')::float8 * 100
                    / nullif(coalesce((e.data->>'total')::float8, t.total), 0)) AS percent
    FROM events e
    WHERE t.status = 'running' AND e.tenant = t.tenant AND e.task_id = t.id
      AND e.type = 'progress'
    ORDER BY e.seq DESC
    LIMIT 10
  ) AS r
) AS pace ON true
"""
_TIMING = """
  CASE WHEN t.started_at IS NOT NULL THEN round(extract(epoch FROM
    coalesce(t.finished_at, clock_timestamp()) - t.started_at), 3)::float8 END
  AS elapsed_seconds,
  CASE WHEN t.percent < 100 AND pace.last_at > pace.first_at AND t.percent > pace.first_percent
    THEN round(greatest(0, (100 - t.percent) * extract(epoch FROM pace.last_at - pace.first_at)
                           / (t.percent - pace.first_percent)
                           - extract(epoch FROM clock_timestamp() - pace.last_at))::numeric, 1
    )::float8 END
  AS eta_seconds
"""


def _timed(select: str, order: str = "") -> str:
    return f"SELECT t.*, {_TIMING} FROM ({select}) AS t {_TIMED_PACE} {order}"


GET_TASK = _timed(f"SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = $1 AND id = $2")

TASK_EXISTS = "SELECT EXISTS (SELECT 1 FROM tasks WHERE tenant = $1 AND id = $2)"

# The newest visible position: because positions are handed out in commit order, every event
# at or below it is visible in the same snapshot.
NEWEST_SEQ = "SELECT coalesce(max(seq), 0) FROM events"

TASK_HISTORY = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE tenant = $1 AND task_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4
"""

# Optional filters of the listing and history queries: each name maps to one fixed clause, so
# every combination is a distinct prepared statement with a plan of its own.
_TASK_FILTERS = {
    "status": "status = ANY(${})",
    "kind": "kind = ANY(${})",
    "cursor": "(created_at, id) < (${}::timestamptz, ${}::text)",
}
_EVENT_FILTERS = {
    "task_id": "task_id = ANY(${})",
    "type": "type = ANY(${})",
    "kind": "kind = ANY(${})",
    "since": "time >= ${}",
    "until": "time < ${}",
}


def _where(filters: dict[str, str], names: Iterable[str], first: int) -> tuple[str, int]:
    clauses = []
    number = first
    for name in names:
        template = filters[name]
        count = template.count("{}")
        clauses.append(template.format(*range(number, number + count)))
        number += count
    return "".join(f" AND {clause}" for clause in clauses), number


def list_tasks(filters: Iterable[str]) -> str:
    """Tasks of $1, newest first, then the given filters, with the limit last."""
    where, limit = _where(_TASK_FILTERS, filters, 2)
    return _timed(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = $1{where}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${limit}",
        "ORDER BY t.created_at DESC, t.id DESC",
    )


def select_events(filters: Iterable[str], *, limited: bool, columns: str = EVENT_COLUMNS) -> str:
    """Events of $1 after position $2 in seq order, then the given filters, then the limit."""
    where, limit = _where(_EVENT_FILTERS, filters, 3)
    tail = f" LIMIT ${limit}" if limited else ""
    return f"SELECT {columns} FROM events WHERE tenant = $1 AND seq > $2{where} ORDER BY seq{tail}"


# What a stream frame is built from (stream/frames.py): the data and the time as text, in the
# same format as the REST answers, so Python splices them in without decoding anything.
STREAM_COLUMNS = (
    "seq, tenant, task_id, kind, type, version, data::text,"
    """ to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
)

# The listener's read after a wake-up: every tenant's events after its position.
EVENTS_AFTER = f"SELECT {STREAM_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"


# Running tasks whose lease ran out: no event for lease_seconds (index tasks_leases).
EXPIRED_LEASES = """
SELECT tenant, id, version, lease_seconds FROM tasks
WHERE status = 'running' AND lease_seconds IS NOT NULL
  AND updated_at < clock_timestamp() - make_interval(secs => lease_seconds)
ORDER BY updated_at
LIMIT $1
"""

# Retention (store/retention.py). Every event at or below the watermark may be gone; it only
# grows, in the same transaction as the deletes it covers.
PRUNED_THROUGH = "SELECT pruned_through_seq FROM retention"
NEWEST_SEQ_BEFORE = "SELECT max(seq) FROM events WHERE time < $1"
PRUNE_BATCH = """
WITH doomed AS (
  SELECT seq FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3
), deleted AS (
  DELETE FROM events WHERE seq IN (SELECT seq FROM doomed) RETURNING seq
), watermark AS (
  UPDATE retention SET pruned_through_seq = greatest(pruned_through_seq,
    CASE WHEN (SELECT count(*) FROM doomed) < $3 THEN $2 ELSE (SELECT max(seq) FROM doomed) END)
  RETURNING pruned_through_seq
)
SELECT (SELECT count(*) FROM deleted), (SELECT pruned_through_seq FROM watermark)
"""
# A purge removes a tenant's (or one task's) events, then its task rows, in batches.
PURGE_EVENTS = """
WITH doomed AS (
  SELECT seq FROM events WHERE tenant = $1 AND ($2::text IS NULL OR task_id = $2) LIMIT $3
)
DELETE FROM events WHERE seq IN (SELECT seq FROM doomed)
"""
PURGE_TASKS = """
WITH doomed AS (
  SELECT tenant, id FROM tasks WHERE tenant = $1 AND ($2::text IS NULL OR id = $2) LIMIT $3
)
DELETE FROM tasks WHERE (tenant, id) IN (SELECT * FROM doomed)
"""

SCHEMA_VERSIONED = "SELECT to_regclass('alembic_version') IS NOT NULL"

CURRENT_REVISION = "SELECT version_num FROM alembic_version LIMIT 1"
