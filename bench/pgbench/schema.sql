-- Scratch table for the pgbench ceiling; lives in the bench database next to (never in) the
-- service's tables. Same row shape as an event, only the primary key as index.
DROP TABLE IF EXISTS raw_events;
CREATE TABLE raw_events (
    seq bigserial PRIMARY KEY,
    tenant text NOT NULL,
    task_id text NOT NULL,
    version int NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    time timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Emptied after every pgbench run (bench/append.py), so no autovacuum of millions of scratch
-- rows lands in the measurements that follow.
ALTER TABLE raw_events SET (autovacuum_enabled = false);
