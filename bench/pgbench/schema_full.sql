-- Scratch copies of the service's own tables (same columns, indexes and foreign key), for the
-- "service-shaped" pgbench transaction: what Postgres alone needs for a group of 100 events
-- written the way the service writes them. Applied after the migrations; never touches the
-- service's tables' rows.
DROP TABLE IF EXISTS raw_full_events;
DROP TABLE IF EXISTS raw_full_tasks;
DROP SEQUENCE IF EXISTS raw_full_seq;
CREATE TABLE raw_full_tasks (LIKE tasks INCLUDING ALL);
CREATE TABLE raw_full_events (LIKE events INCLUDING ALL);
ALTER TABLE raw_full_events
    ADD FOREIGN KEY (tenant, task_id) REFERENCES raw_full_tasks (tenant, id);
ALTER TABLE raw_full_tasks SET (autovacuum_enabled = false);
ALTER TABLE raw_full_events SET (autovacuum_enabled = false);
CREATE SEQUENCE raw_full_seq;
INSERT INTO raw_full_tasks (tenant, id, kind, status, version, last_seq, created_at, updated_at)
SELECT 'bench', 'raw-' || g, 'bench', 'running', 0, 0, now(), now()
FROM generate_series(1, 1000) AS g;
