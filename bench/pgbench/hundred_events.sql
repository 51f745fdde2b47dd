-- 100 events per transaction: the lock, one multi-row INSERT of 100 rows (spread over 10
-- tasks), one notify.
\set task random(1, 1000)
BEGIN;
SELECT pg_advisory_xact_lock(7346);
INSERT INTO raw_events (tenant, task_id, version, type, data) SELECT 'bench', 'raw-' || (:task + g % 10), g, 'progress', '{"percent": 12.5, "message": "step"}'::jsonb FROM generate_series(1, 100) AS g;
SELECT pg_notify('raw_events', 'batch');
COMMIT;
