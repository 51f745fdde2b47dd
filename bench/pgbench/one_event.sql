-- One event per transaction, in ONE statement (autocommit): take the global append lock,
-- insert the row, notify. This is what a naive "one INSERT per HTTP request" service does.
\set task random(1, 1000)
WITH l AS (SELECT pg_advisory_xact_lock(7346)), i AS (INSERT INTO raw_events (tenant, task_id, version, type, data) SELECT 'bench', 'raw-' || :task, 0, 'progress', '{"percent": 12.5, "message": "step"}'::jsonb FROM l RETURNING seq) SELECT pg_notify('raw_events', max(seq)::text) FROM i;
