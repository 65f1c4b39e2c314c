-- Test-only objects for the gateway's integration tests (tests/integration/2*_gateway*.t):
-- a private schema with two related tables, security_invoker views over them in api
-- (embedding goes through the base tables' foreign key), row-level security keyed on
-- the JWT's sub claim, and functions for RPC. Idempotent: dropped and recreated.
DROP SCHEMA IF EXISTS gw_private CASCADE;
DROP VIEW IF EXISTS api.gw_projects, api.gw_tasks, api.gw_plain, api.gw_labels, api.gw_task_labels CASCADE;
DROP TABLE IF EXISTS api.gw_transfers, api.gw_items, api.gw_notes CASCADE;
DROP FUNCTION IF EXISTS api.gw_add(integer, integer), api.gw_echo(json), api.gw_tasks_of(integer),
  api.gw_whoami(), api.gw_fail(text), api.gw_noop(), api.gw_words(text), api.gw_raw_text(text),
  api.gw_project(integer), api.gw_bump(integer), api.gw_sleep(double precision), api.gw_custom(integer),
  api.gw_items_drop(integer), api.gw_items_drop_void(integer), api.gw_moment(),
  api.gw_sum_all(integer[]) CASCADE;

CREATE SCHEMA gw_private;
GRANT USAGE ON SCHEMA gw_private TO pgpod_anon, pgpod_user, pgpod_admin;

CREATE TABLE gw_private.projects (
  id integer PRIMARY KEY,
  name text NOT NULL,
  owner uuid,
  secret boolean NOT NULL DEFAULT false
);
CREATE TABLE gw_private.tasks (
  id serial PRIMARY KEY,
  project_id integer REFERENCES gw_private.projects (id),
  title text NOT NULL,
  done boolean NOT NULL DEFAULT false,
  tags text[] NOT NULL DEFAULT '{}',
  data jsonb,
  during int4range,
  body tsvector
);
ALTER TABLE gw_private.projects ENABLE ROW LEVEL SECURITY;
-- anon sees projects that are not secret; a user also sees the secret projects they own
CREATE POLICY visible ON gw_private.projects FOR SELECT
  USING (NOT secret OR owner::text = coalesce(current_setting('request.jwt.claims', true)::json->>'sub', ''));
CREATE POLICY write_user ON gw_private.projects FOR ALL TO pgpod_user USING (true) WITH CHECK (true);

INSERT INTO gw_private.projects VALUES
  (1, 'Apollo', NULL, false), (2, 'Gemini', NULL, false),
  (3, 'Hidden', '11111111-1111-1111-1111-111111111111', true);
INSERT INTO gw_private.tasks (project_id, title, done, tags, data, during, body) VALUES
  (1, 'design', true, '{a,b}', '{"size": 3, "who": {"name": "ann"}}', '[1,5)', to_tsvector('english', 'the quick brown fox')),
  (1, 'build', false, '{b}', '{"size": 5, "who": {"name": "bob"}}', '[5,10)', to_tsvector('english', 'lazy dogs sleep')),
  (2, 'launch', false, '{}', NULL, NULL, NULL),
  (2, 'review, "quoted"', true, '{c}', '{"size": 1}', '[20,30)', to_tsvector('english', 'quick review')),
  (3, 'secret task', false, '{}', NULL, NULL, NULL);

-- labels of tasks, many-to-many through a junction table
CREATE TABLE gw_private.labels (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE gw_private.task_labels (
  task_id integer REFERENCES gw_private.tasks (id),
  label_id integer REFERENCES gw_private.labels (id),
  PRIMARY KEY (task_id, label_id)
);
INSERT INTO gw_private.labels VALUES (1, 'red'), (2, 'green'), (3, 'blue');
INSERT INTO gw_private.task_labels VALUES (1, 1), (1, 2), (2, 2), (4, 3);

CREATE VIEW api.gw_projects WITH (security_invoker = true) AS
  SELECT id, name, owner FROM gw_private.projects;
CREATE VIEW api.gw_tasks WITH (security_invoker = true) AS
  SELECT id, project_id, title, done, tags, data, during, body FROM gw_private.tasks;
COMMENT ON VIEW api.gw_tasks IS 'Gateway test tasks.';
CREATE VIEW api.gw_labels WITH (security_invoker = true) AS SELECT id, name FROM gw_private.labels;
CREATE VIEW api.gw_task_labels WITH (security_invoker = true) AS SELECT task_id, label_id FROM gw_private.task_labels;
GRANT SELECT ON gw_private.labels, gw_private.task_labels, api.gw_labels, api.gw_task_labels TO pgpod_anon, pgpod_user, pgpod_admin;

-- a plain table in api (no view) with a composite-free primary key, for upserts
CREATE TABLE api.gw_items (
  id integer PRIMARY KEY,
  name text NOT NULL,
  qty integer NOT NULL DEFAULT 0 CHECK (qty >= 0)
);
INSERT INTO api.gw_items VALUES (1, 'one', 1), (2, 'two', 2);

-- two foreign keys to the same table: an embed must name one (PGRST201)
CREATE TABLE api.gw_transfers (
  id integer PRIMARY KEY,
  from_item integer REFERENCES api.gw_items (id),
  to_item integer REFERENCES api.gw_items (id)
);
INSERT INTO api.gw_transfers VALUES (1, 1, 2);
GRANT SELECT ON api.gw_transfers TO pgpod_anon, pgpod_user, pgpod_admin;

GRANT SELECT ON gw_private.projects, gw_private.tasks TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT INSERT, UPDATE, DELETE ON gw_private.projects, gw_private.tasks TO pgpod_user, pgpod_admin;
GRANT USAGE ON SEQUENCE gw_private.tasks_id_seq TO pgpod_user, pgpod_admin;
GRANT SELECT ON api.gw_projects, api.gw_tasks, api.gw_items TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT INSERT, UPDATE, DELETE ON api.gw_projects, api.gw_tasks, api.gw_items TO pgpod_user, pgpod_admin;

CREATE FUNCTION api.gw_add(a integer, b integer) RETURNS integer
  LANGUAGE sql IMMUTABLE RETURN a + b;
CREATE FUNCTION api.gw_echo(json) RETURNS json
  LANGUAGE sql IMMUTABLE RETURN $1;
CREATE FUNCTION api.gw_raw_text(text) RETURNS text
  LANGUAGE sql IMMUTABLE RETURN 'got:' || $1;
CREATE FUNCTION api.gw_tasks_of(pid integer) RETURNS SETOF api.gw_tasks
  LANGUAGE sql STABLE AS $$ SELECT * FROM api.gw_tasks WHERE project_id = pid ORDER BY id $$;
CREATE FUNCTION api.gw_project(pid integer) RETURNS api.gw_projects
  LANGUAGE sql STABLE AS $$ SELECT * FROM api.gw_projects WHERE id = pid $$;
CREATE FUNCTION api.gw_whoami() RETURNS json
  LANGUAGE sql STABLE AS $$
  SELECT json_build_object('role', current_user, 'claims', current_setting('request.jwt.claims', true)::json,
    'method', current_setting('request.method', true), 'path', current_setting('request.path', true),
    'headers', current_setting('request.headers', true)::json, 'cookies', current_setting('request.cookies', true)::json) $$;
CREATE FUNCTION api.gw_fail(code text) RETURNS void
  LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'failing on purpose' USING ERRCODE = code, DETAIL = 'd', HINT = 'h'; END $$;
CREATE FUNCTION api.gw_noop() RETURNS void LANGUAGE sql VOLATILE AS $$ SELECT $$;
CREATE FUNCTION api.gw_words(t text) RETURNS SETOF text
  LANGUAGE sql IMMUTABLE AS $$ SELECT regexp_split_to_table(t, ' ') $$;
CREATE FUNCTION api.gw_bump(item integer) RETURNS integer
  LANGUAGE sql VOLATILE AS $$ UPDATE api.gw_items SET qty = qty + 1 WHERE id = item RETURNING qty $$;
CREATE FUNCTION api.gw_sleep(seconds double precision) RETURNS boolean
  LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM pg_sleep(seconds); RETURN true; END $$;
GRANT EXECUTE ON FUNCTION api.gw_add(integer, integer), api.gw_echo(json), api.gw_raw_text(text),
  api.gw_tasks_of(integer), api.gw_project(integer), api.gw_whoami(), api.gw_fail(text),
  api.gw_noop(), api.gw_words(text), api.gw_sleep(double precision)
  TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT EXECUTE ON FUNCTION api.gw_bump(integer) TO pgpod_user, pgpod_admin;
-- sets PostgREST's response GUCs
CREATE FUNCTION api.gw_custom(status integer) RETURNS json
  LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM set_config('response.status', status::text, true);
  PERFORM set_config('response.headers', '[{"X-Custom": "yes"}, {"Cache-Control": "no-store"}, {"X-Bad\r\nInjected": "x"}]', true);
  RETURN json_build_object('status', status);
END $$;
GRANT EXECUTE ON FUNCTION api.gw_custom(integer) TO pgpod_anon, pgpod_user, pgpod_admin;

-- Prefer: max-affected on RPC: a set-returning and a void function that delete
CREATE FUNCTION api.gw_items_drop(above integer) RETURNS SETOF api.gw_items
  LANGUAGE sql VOLATILE AS $$ DELETE FROM api.gw_items WHERE id > above RETURNING * $$;
CREATE FUNCTION api.gw_items_drop_void(above integer) RETURNS void
  LANGUAGE sql VOLATILE AS $$ DELETE FROM api.gw_items WHERE id > above $$;
GRANT EXECUTE ON FUNCTION api.gw_items_drop(integer), api.gw_items_drop_void(integer) TO pgpod_user, pgpod_admin;
-- Prefer: timezone=: a fixed instant, shown in the transaction's time zone
CREATE FUNCTION api.gw_moment() RETURNS TABLE (t timestamptz, zone text)
  LANGUAGE sql STABLE AS $$ SELECT '2023-10-18 12:37:59.611+00'::timestamptz, current_setting('timezone') $$;
GRANT EXECUTE ON FUNCTION api.gw_moment() TO pgpod_anon, pgpod_user, pgpod_admin;
-- a variadic function: GET repeats the parameter, POST sends an array
CREATE FUNCTION api.gw_sum_all(VARIADIC v integer[]) RETURNS integer
  LANGUAGE sql IMMUTABLE AS $$ SELECT sum(x)::integer FROM unnest(v) AS x $$;
GRANT EXECUTE ON FUNCTION api.gw_sum_all(integer[]) TO pgpod_anon, pgpod_user, pgpod_admin;

NOTIFY pgrst, 'reload schema';
