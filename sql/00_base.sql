-- 00_base: the two schemas, C primitives, pod settings, and who the caller is.
-- Schema pod (created by CREATE EXTENSION) holds tables and internals; schema api
-- holds only the views and functions the gateway exposes.

CREATE SCHEMA api;
COMMENT ON SCHEMA api IS 'What HTTP clients see: views and functions only; row-level security on the tables underneath decides what each role gets.';
COMMENT ON SCHEMA pod IS 'pgpod internals: tables, triggers and functions; not exposed over HTTP.';

GRANT USAGE ON SCHEMA api TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
-- Views in api are security_invoker, so the roles need the underlying privileges;
-- pod stays unreachable from HTTP because the gateway only serves api.
GRANT USAGE ON SCHEMA pod TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker, pgpod_authenticator;
-- Function privileges: see 99_privileges.sql (PUBLIC's EXECUTE is taken back there).

-- C primitives (extension/src/*.c) -------------------------------------------------

CREATE FUNCTION pod.password_hash(password text) RETURNS text
  AS 'MODULE_PATHNAME', 'password_hash' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION pod.password_hash(text) IS 'Argon2id hash (libsodium) of a password, as an encoded $argon2id$ string.';

CREATE FUNCTION pod.password_verify(password text, encoded text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'password_verify' LANGUAGE C STRICT STABLE PARALLEL SAFE;

CREATE FUNCTION pod.hmac_sha256(data bytea, key bytea) RETURNS bytea
  AS 'MODULE_PATHNAME', 'hmac_sha256' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION pod.random_bytes(n integer) RETURNS bytea
  AS 'MODULE_PATHNAME', 'random_bytes' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

CREATE FUNCTION pod.rsa_generate_keypair(bits integer, OUT private_key text, OUT public_key text)
  AS 'MODULE_PATHNAME', 'rsa_generate_keypair' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION pod.base64url(data bytea) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN rtrim(translate(encode(data, 'base64'), E'+/\n', '-_'), '=');

CREATE FUNCTION pod.base64url_decode(data text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN decode(rpad(translate(data, '-_', '+/'), (length(data) + 3) / 4 * 4, '='), 'base64');

-- Pod settings: administration is SQL -----------------------------------------------

-- Defaults belong to the extension (recreated by CREATE EXTENSION); what an admin
-- changes lives in pod.setting_overrides, which pg_dump keeps.
CREATE TABLE pod.setting_defaults (
  name text PRIMARY KEY,
  value jsonb NOT NULL,
  description text NOT NULL,
  allowed jsonb CHECK (jsonb_typeof(allowed) = 'array'),   -- the only values accepted, if set
  minimum numeric,                                          -- bounds of a number setting
  maximum numeric
);
INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('session.lifetime', '"30 days"', 'How long a login session (and its JWT) stays valid.'),
  ('livechat.room_per', '"video"', 'Livechat rooms: one per "video" or one per "channel".'),
  ('livechat.remote_refresh', '"1 hour"', 'Least time between two refreshes of a remote server''s information.'),
  ('livechat.remote_retention', '"30 days"', 'Remote server information unused for this long is removed by cleanup.');

UPDATE pod.setting_defaults SET allowed = '["video", "channel"]' WHERE name = 'livechat.room_per';

CREATE TABLE pod.setting_overrides (
  name text PRIMARY KEY REFERENCES pod.setting_defaults ON DELETE CASCADE,
  value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('pod.setting_overrides', '');

CREATE VIEW pod.settings AS
  SELECT d.name, coalesce(o.value, d.value) AS value, d.value AS default_value,
         d.description, o.updated_at
    FROM pod.setting_defaults d LEFT JOIN pod.setting_overrides o USING (name);
COMMENT ON VIEW pod.settings IS 'Pod-wide settings; change with pod.set_setting(name, value).';

-- PL/pgSQL, not a SQL-standard body: SECURITY DEFINER keeps it from being inlined,
-- and a SQL function's body is read back from the catalog and planned again on every
-- call (stringToNode + planner: about 80 µs), while PL/pgSQL keeps its plan per session.
CREATE FUNCTION pod.setting(setting_name text) RETURNS jsonb
  LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  RETURN (SELECT coalesce(o.value, d.value) FROM pod.setting_defaults d
            LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = setting_name);
END $$;

-- Checks a new value against its default: same JSON type; an interval where the
-- default is one; one of the allowed values; within the bounds of a number.
CREATE FUNCTION pod.set_setting(setting_name text, new_value jsonb) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  d pod.setting_defaults;
  is_interval boolean := false;
BEGIN
  SELECT * INTO d FROM pod.setting_defaults WHERE name = setting_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown setting "%"', setting_name USING ERRCODE = '22023',
      HINT = 'SELECT name, value, description FROM pod.settings lists them.';
  END IF;
  IF jsonb_typeof(new_value) IS DISTINCT FROM jsonb_typeof(d.value) THEN
    RAISE EXCEPTION 'setting "%" takes a JSON %, not %', setting_name, jsonb_typeof(d.value),
      coalesce(jsonb_typeof(new_value), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF jsonb_typeof(d.value) = 'string' THEN
    BEGIN
      PERFORM (d.value #>> '{}')::interval;
      is_interval := true;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
      is_interval := false;
    END;
  END IF;
  IF is_interval THEN
    BEGIN
      PERFORM (new_value #>> '{}')::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
      RAISE EXCEPTION 'setting "%" takes an interval such as "30 seconds", not %', setting_name, new_value
        USING ERRCODE = '22023';
    END;
    IF (new_value #>> '{}')::interval < interval '0' THEN
      RAISE EXCEPTION 'setting "%" cannot be negative', setting_name USING ERRCODE = '22023';
    END IF;
  END IF;
  IF d.allowed IS NOT NULL AND NOT d.allowed @> jsonb_build_array(new_value) THEN
    RAISE EXCEPTION 'setting "%" is one of %, not %', setting_name, d.allowed, new_value USING ERRCODE = '22023';
  END IF;
  IF jsonb_typeof(new_value) = 'number'
     AND ((new_value)::numeric < d.minimum OR (new_value)::numeric > d.maximum) THEN
    RAISE EXCEPTION 'setting "%" is between % and %, not %', setting_name, d.minimum, d.maximum, new_value
      USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.setting_overrides (name, value) VALUES (setting_name, new_value)
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
END $$;
COMMENT ON FUNCTION pod.set_setting(text, jsonb) IS 'Changes a pod setting, checking its type.';

-- Who is calling ----------------------------------------------------------------------

-- The gateway sets request.jwt.claims (as PostgREST does) from a verified token.
CREATE FUNCTION pod.jwt_claims() RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}'::jsonb);
