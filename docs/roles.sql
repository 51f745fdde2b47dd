-- taskstream: least-privilege database roles.
--
-- Run as a superuser (or a role with CREATEROLE that owns the database), connected to the
-- taskstream database, BEFORE the first `taskstream migrate`, and once more after it (the last
-- statement protects alembic_version, which the first migration creates):
--
--     psql "postgresql://postgres@db-host/taskstream" -v ON_ERROR_STOP=1 -f docs/roles.sql
--
-- Then give the login roles passwords (ALTER ROLE taskstream_owner PASSWORD '...'), and
--   * run migrations as the owner:     TASKSTREAM_DATABASE_URL=postgresql://taskstream_owner@.../taskstream taskstream migrate
--   * run the service as the app role: TASKSTREAM_DATABASE_URL=postgresql://taskstream_app@.../taskstream taskstream serve
--     (TASKSTREAM_AUTO_MIGRATE may stay on: with the schema current, the start-up migration
--     only takes its advisory lock and reads alembic_version; while the schema is behind the
--     app role cannot migrate it, /readyz answers 503 until `taskstream migrate` has run);
--   * give analysts the read-only group role: GRANT taskstream_analyst TO alice;
--
-- What each role may do:
--   taskstream_owner    owns every table, sequence and function the migrations create (DDL).
--   taskstream_app      reads and writes rows (SELECT, INSERT, UPDATE; no DELETE: nothing in
--                       the service deletes, a future retention job will need it), takes
--                       sequence values, runs the service's functions. No CREATE anywhere, owns
--                       nothing, so it cannot create, alter, drop or truncate tables.
--                       LISTEN/NOTIFY and advisory locks need no grant.
--   taskstream_analyst  SELECT only, on every table and view (all tenants: analysts see
--                       everything); docs/analytics.md shows how to give an analyst a login.
--
-- Default privileges cover the tables, sequences and functions that FUTURE migrations create,
-- as long as those migrations run as taskstream_owner.
--
-- The test tests/test_roles.py runs this very file (with the role names made unique per run).
-- Statements are idempotent, so the file may be run again.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskstream_owner') THEN
    CREATE ROLE taskstream_owner LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskstream_app') THEN
    CREATE ROLE taskstream_app LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskstream_analyst') THEN
    CREATE ROLE taskstream_analyst NOLOGIN;
  END IF;
END
$$;

-- Nobody may connect or create temporary tables unless granted; the three roles may connect.
DO $$
BEGIN
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO taskstream_owner, taskstream_app,'
                 ' taskstream_analyst', current_database());
END
$$;

-- Only the owner creates objects in the schema (PostgreSQL 15 already revokes CREATE from
-- PUBLIC; older versions do not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO taskstream_owner;
GRANT USAGE ON SCHEMA public TO taskstream_app, taskstream_analyst;

-- Everything the migrations create as taskstream_owner, now and later.
ALTER DEFAULT PRIVILEGES FOR ROLE taskstream_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE ON TABLES TO taskstream_app;
ALTER DEFAULT PRIVILEGES FOR ROLE taskstream_owner IN SCHEMA public
  GRANT SELECT ON TABLES TO taskstream_analyst;
-- nextval() needs USAGE; events_seq hands out every event's position.
ALTER DEFAULT PRIVILEGES FOR ROLE taskstream_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO taskstream_app;
-- Functions (e.g. taskstream_expect_rows, called by every append) are executable by the app
-- only, not by PUBLIC.
ALTER DEFAULT PRIVILEGES FOR ROLE taskstream_owner
  REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE taskstream_owner IN SCHEMA public
  GRANT EXECUTE ON FUNCTIONS TO taskstream_app;

-- The same grants for objects that already exist (this file run again after migrations).
-- Objects created by another role (e.g. migrations once run as postgres) must first be given
-- to the owner, e.g. ALTER TABLE events OWNER TO taskstream_owner, per table, sequence and
-- function, before the owner can migrate them further.
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO taskstream_app;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO taskstream_analyst;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO taskstream_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO taskstream_app;

-- The analyst views (migration 0003, docs/analytics.md). A view counts as a table to the grants
-- and default privileges above, so the analyst can already read them, and they are
-- security_invoker, so reading one also takes SELECT on the tables under it. Said explicitly
-- here; and the application, which never uses them, gets no INSERT or UPDATE through them.
DO $$
BEGIN
  IF to_regclass('public.task_events_flat') IS NOT NULL THEN
    GRANT SELECT ON task_events_flat, task_current, task_phases TO taskstream_analyst;
    REVOKE INSERT, UPDATE ON task_events_flat, task_current, task_phases FROM taskstream_app;
  END IF;
END
$$;

-- alembic_version is the schema's own marker: the app reads it (/readyz, the start-up check)
-- but must not move it. It exists once the first migration ran, so run this file again then.
DO $$
BEGIN
  IF to_regclass('public.alembic_version') IS NOT NULL THEN
    REVOKE INSERT, UPDATE, DELETE ON public.alembic_version FROM taskstream_app;
  END IF;
END
$$;
