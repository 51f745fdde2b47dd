-- 100 events for 10 tasks in one transaction, shaped like the service's group commit: lock the
-- task rows, take the append lock, insert 100 rows into a copy of `events` (all its indexes and
-- the foreign key to the task), update the 10 task rows, notify once.
\set t random(0, 99)
BEGIN;
SELECT version FROM raw_full_tasks WHERE tenant = 'bench' AND id IN (SELECT 'raw-' || (:t * 10 + g) FROM generate_series(1, 10) AS g) ORDER BY tenant, id FOR UPDATE;
SELECT pg_advisory_xact_lock(7346);
INSERT INTO raw_full_events (seq, tenant, task_id, kind, version, type, data, time) SELECT s, 'bench', 'raw-' || (:t * 10 + 1 + g % 10), 'bench', s::int, 'progress', '{"percent": 12.5, "message": "step"}'::jsonb, clock_timestamp() FROM (SELECT nextval('raw_full_seq') AS s, g FROM generate_series(0, 99) AS g) AS x;
UPDATE raw_full_tasks SET version = version + 10, percent = 12.5, message = 'step', updated_at = clock_timestamp() WHERE tenant = 'bench' AND id IN (SELECT 'raw-' || (:t * 10 + g) FROM generate_series(1, 10) AS g);
SELECT pg_notify('raw_events', 'batch');
COMMIT;
