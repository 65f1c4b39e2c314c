-- generated from sql/*.sql by extension/Makefile; edit those files
\echo Use "CREATE EXTENSION pgpod" to load this file. \quit

-- ../sql/00_base.sql
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

-- ../sql/10_auth.sql
-- 10_auth: users, sessions, secrets, and login that returns an HS256 JWT.
-- Passwords are Argon2id (password.c); the JWT secret lives in pod.secrets, which no
-- API role can read (pgpod_authenticator gets it through pod.jwt_secret()).

CREATE FUNCTION pod.email_is_valid(email text) RETURNS boolean
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN length(email) <= 254
     AND email ~ '^[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$';

CREATE TABLE pod.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL CONSTRAINT users_email_valid CHECK (pod.email_is_valid(email)),
  pass_hash text NOT NULL CONSTRAINT users_pass_hash_kdf CHECK (pass_hash LIKE '$argon2id$%'),
  role name NOT NULL DEFAULT 'pgpod_user' CONSTRAINT users_role_known CHECK (role IN ('pgpod_user', 'pgpod_admin')),
  settings jsonb NOT NULL DEFAULT '{}' CONSTRAINT users_settings_object CHECK (jsonb_typeof(settings) = 'object'),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON pod.users (lower(email));
COMMENT ON TABLE pod.users IS 'Accounts of this pod; email unique case-insensitively, password as Argon2id.';

CREATE TABLE pod.sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  ip inet,
  user_agent text,
  data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  CHECK (expires_at > created_at)
);
CREATE INDEX sessions_user_idx ON pod.sessions (user_id);
COMMENT ON TABLE pod.sessions IS 'Login sessions; a JWT is valid while its session is neither expired nor revoked.';

CREATE TABLE pod.secrets (
  name text PRIMARY KEY,
  value bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.secrets IS 'Per-database secrets (the JWT key); readable by no API role.';
REVOKE ALL ON pod.secrets FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('pod.users', '');
SELECT pg_catalog.pg_extension_config_dump('pod.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('pod.secrets', '');

-- The JWT key, made on first use (pod.init at first run), kept by pg_dump.
CREATE FUNCTION pod.jwt_secret() RETURNS bytea
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE key bytea;
BEGIN
  SELECT value INTO key FROM pod.secrets WHERE name = 'jwt';
  IF key IS NULL THEN
    INSERT INTO pod.secrets (name, value) VALUES ('jwt', pod.random_bytes(32))
      ON CONFLICT (name) DO NOTHING;
    SELECT value INTO key FROM pod.secrets WHERE name = 'jwt';
  END IF;
  RETURN key;
END $$;
COMMENT ON FUNCTION pod.jwt_secret() IS 'The HS256 key of this pod''s JWTs; only the gateway''s login role may call it.';
GRANT EXECUTE ON FUNCTION pod.jwt_secret() TO pgpod_authenticator;

CREATE FUNCTION pod.jwt_sign(claims jsonb) RETURNS text
  LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT signing_input || '.' || pod.base64url(pod.hmac_sha256(convert_to(signing_input, 'UTF8'), pod.jwt_secret()))
      FROM (SELECT pod.base64url(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.' ||
                   pod.base64url(convert_to(claims::text, 'UTF8')) AS signing_input) s;
  END;

-- Verifies signature, exp and nbf; returns the claims or raises 28000.
CREATE FUNCTION pod.jwt_verify(token text) RETURNS jsonb
  LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  parts text[] := string_to_array(token, '.');
  claims jsonb;
  now_s numeric := extract(epoch FROM now());
BEGIN
  IF array_length(parts, 1) IS DISTINCT FROM 3 THEN
    RAISE EXCEPTION 'malformed token' USING ERRCODE = '28000';
  END IF;
  IF pod.base64url_decode(parts[1])::text IS NULL
     OR convert_from(pod.base64url_decode(parts[1]), 'UTF8')::jsonb ->> 'alg' IS DISTINCT FROM 'HS256' THEN
    RAISE EXCEPTION 'token algorithm must be HS256' USING ERRCODE = '28000';
  END IF;
  IF pod.base64url(pod.hmac_sha256(convert_to(parts[1] || '.' || parts[2], 'UTF8'), pod.jwt_secret())) <> parts[3] THEN
    RAISE EXCEPTION 'token signature is invalid' USING ERRCODE = '28000';
  END IF;
  claims := convert_from(pod.base64url_decode(parts[2]), 'UTF8')::jsonb;
  IF (claims ->> 'exp')::numeric <= now_s THEN
    RAISE EXCEPTION 'token has expired' USING ERRCODE = '28000';
  END IF;
  IF (claims ->> 'nbf')::numeric > now_s THEN
    RAISE EXCEPTION 'token is not valid yet' USING ERRCODE = '28000';
  END IF;
  RETURN claims;
EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation OR character_not_in_repertoire OR untranslatable_character THEN
  RAISE EXCEPTION 'malformed token' USING ERRCODE = '28000';
END $$;

-- The calling user: the JWT's subject while its session lives. A token whose session
-- was revoked (logout) or expired is refused at once with PT401 (HTTP 401), not when
-- the token itself expires. No claims, or claims without a session: nobody (NULL).
CREATE FUNCTION pod.current_user_id() RETURNS uuid
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  claims jsonb := pod.jwt_claims();
  uid uuid;
BEGIN
  IF claims ->> 'sid' IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT s.user_id INTO uid FROM pod.sessions s
   WHERE s.id = (claims ->> 'sid')::uuid AND s.user_id = (claims ->> 'sub')::uuid
     AND s.revoked_at IS NULL AND s.expires_at > now();
  IF uid IS NULL THEN
    RAISE EXCEPTION 'session has ended' USING ERRCODE = 'PT401', HINT = 'Log in again.';
  END IF;
  RETURN uid;
EXCEPTION WHEN invalid_text_representation THEN
  RAISE EXCEPTION 'malformed session claims' USING ERRCODE = 'PT401';
END $$;
COMMENT ON FUNCTION pod.current_user_id() IS 'The user of the current request''s JWT, or NULL when there is none or its session ended.';

-- An admin: a live session of a user whose role is pgpod_admin, or, with no JWT at
-- all, a superuser connection (psql administration). Decided from the session and
-- not from current_user, which is the owner inside SECURITY DEFINER functions.
CREATE FUNCTION pod.is_admin() RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN CASE WHEN pod.jwt_claims() = '{}'::jsonb
              THEN coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
              ELSE coalesce((SELECT u.role = 'pgpod_admin' FROM pod.users u WHERE u.id = pod.current_user_id()), false)
         END;

-- Registration and login -----------------------------------------------------------

CREATE FUNCTION pod.register(email text, password text) RETURNS pod.users
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE u pod.users;
BEGIN
  IF email IS NULL OR NOT pod.email_is_valid(email) THEN
    RAISE EXCEPTION 'invalid email address: %', coalesce(quote_literal(email), 'NULL') USING ERRCODE = '22023',
      HINT = 'An email address looks like name@example.org.';
  END IF;
  IF password IS NULL THEN
    RAISE EXCEPTION 'password is required' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.users (email, pass_hash) VALUES (email, pod.password_hash(password)) RETURNING * INTO u;
  RETURN u;
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'email address is already registered' USING ERRCODE = '23505';
END $$;
COMMENT ON FUNCTION pod.register(text, text) IS 'Creates a user; 22023 for a bad email or password, 23505 when the email is taken.';

CREATE FUNCTION pod.login(email text, password text, ip inet DEFAULT NULL, user_agent text DEFAULT NULL,
                          OUT session_id uuid, OUT user_id uuid, OUT token text, OUT expires_at timestamptz)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  u pod.users;
  s pod.sessions;
BEGIN
  SELECT * INTO u FROM pod.users WHERE lower(users.email) = lower(login.email);
  -- Hash even for an unknown email so timing does not tell which emails exist.
  IF NOT pod.password_verify(coalesce(password, ''), coalesce(u.pass_hash,
       '$argon2id$v=19$m=65536,t=2,p=1$5i5spOO486Cw3fXslnio5w$Ke3Jr758SgF/5rzjxuVbJNDbOJFtGOA2PWOim+hs0n4')) OR u.id IS NULL THEN
    RAISE EXCEPTION 'invalid email or password' USING ERRCODE = '28P01';
  END IF;
  INSERT INTO pod.sessions (user_id, ip, user_agent, expires_at)
    VALUES (u.id, ip, user_agent, now() + (pod.setting('session.lifetime') #>> '{}')::interval)
    RETURNING * INTO s;
  session_id := s.id;
  user_id := u.id;
  expires_at := s.expires_at;
  token := pod.jwt_sign(jsonb_build_object('role', u.role, 'sub', u.id, 'sid', s.id, 'email', u.email,
                                           'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM s.expires_at))::bigint));
END $$;
COMMENT ON FUNCTION pod.login(text, text, inet, text) IS 'Opens a session and returns it with an HS256 JWT; 28P01 on a wrong email or password.';

CREATE FUNCTION pod.logout(session uuid) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE done boolean;
BEGIN
  -- A user may end their own sessions; an admin (or the superuser) any.
  UPDATE pod.sessions SET revoked_at = now()
   WHERE id = session AND revoked_at IS NULL
     AND (user_id = pod.current_user_id() OR pod.is_admin())
  RETURNING true INTO done;
  IF done IS NULL THEN
    RAISE EXCEPTION 'no open session % of yours', session USING ERRCODE = 'P0002';
  END IF;
  RETURN true;
END $$;

-- The pod's first-run state: the JWT key now; federation adds its identity.
CREATE FUNCTION pod.init(url text DEFAULT NULL) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.jwt_secret();
  PERFORM pod.ensure_identity(url);
END $$;

-- Row-level security ---------------------------------------------------------------

ALTER TABLE pod.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.sessions ENABLE ROW LEVEL SECURITY;

CREATE POLICY users_self ON pod.users TO pgpod_user
  USING (id = (SELECT pod.current_user_id()));
CREATE POLICY users_admin ON pod.users TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY sessions_self ON pod.sessions FOR SELECT TO pgpod_user
  USING (user_id = (SELECT pod.current_user_id()));
CREATE POLICY sessions_admin ON pod.sessions TO pgpod_admin USING (true) WITH CHECK (true);

GRANT SELECT (id, email, role, settings, created_at) ON pod.users TO pgpod_user;
GRANT UPDATE (settings) ON pod.users TO pgpod_user;
GRANT SELECT, UPDATE, DELETE ON pod.users TO pgpod_admin;
GRANT SELECT (id, user_id, ip, user_agent, data, created_at, expires_at, revoked_at) ON pod.sessions TO pgpod_user;
GRANT SELECT, UPDATE ON pod.sessions TO pgpod_admin;

-- api -------------------------------------------------------------------------------

CREATE VIEW api.me WITH (security_invoker = true) AS
  SELECT id, email, role, settings, created_at FROM pod.users WHERE id = pod.current_user_id();
COMMENT ON VIEW api.me IS 'The calling user.';
GRANT SELECT, UPDATE ON api.me TO pgpod_user;

CREATE VIEW api.sessions WITH (security_invoker = true) AS
  SELECT id, user_id, ip, user_agent, data, created_at, expires_at, revoked_at FROM pod.sessions;
COMMENT ON VIEW api.sessions IS 'The calling user''s sessions (an admin sees all).';
GRANT SELECT ON api.sessions TO pgpod_user;

CREATE FUNCTION api.register(email text, password text) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT json_build_object('id', u.id, 'email', u.email, 'created_at', u.created_at)
      FROM pod.register(email, password) u;
  END;
COMMENT ON FUNCTION api.register(text, text) IS 'Creates an account.';

CREATE FUNCTION api.login(email text, password text) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT row_to_json(l) FROM pod.login(email, password,
        nullif(current_setting('request.client_ip', true), '')::inet,
        nullif(current_setting('request.headers', true), '')::json ->> 'user-agent') l;
  END;
COMMENT ON FUNCTION api.login(text, text) IS 'Opens a session; returns {session_id, user_id, token, expires_at}.';

CREATE FUNCTION api.logout() RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT json_build_object('logged_out', pod.logout(nullif(pod.jwt_claims() ->> 'sid', '')::uuid));
  END;
COMMENT ON FUNCTION api.logout() IS 'Ends the session of the calling token.';

GRANT EXECUTE ON FUNCTION api.register(text, text), api.login(text, text) TO pgpod_anon, pgpod_user;
GRANT EXECUTE ON FUNCTION api.logout() TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.current_user_id(), pod.jwt_claims(), pod.is_admin(), pod.setting(text)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

-- ../sql/20_content.sql
-- 20_content: the content store. Files are metadata over content-addressed blobs
-- (SHA-256); forwarding makes a new file row over the same blob; a blob no file uses
-- is marked orphaned for the collector (its bytes live on disk or a storage node).

CREATE TABLE pod.storage_nodes (
  id serial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  ssh_target text NOT NULL,           -- user@host[:port] reached through ssh
  capacity_bytes bigint NOT NULL CHECK (capacity_bytes > 0),
  used_bytes bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.storage_nodes IS 'Extra storage reached over ssh; blobs move there when the local cache runs low.';

CREATE TABLE pod.blobs (
  sha256 bytea PRIMARY KEY CHECK (length(sha256) = 32),
  size bigint NOT NULL CHECK (size >= 0),
  in_cache boolean NOT NULL DEFAULT true,
  node_id integer REFERENCES pod.storage_nodes,
  last_access timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  orphaned_at timestamptz,
  CONSTRAINT blobs_somewhere CHECK (in_cache OR node_id IS NOT NULL)
);
COMMENT ON TABLE pod.blobs IS 'Content-addressed bytes: in the local cache, on a storage node, or both.';
CREATE INDEX blobs_orphaned_idx ON pod.blobs (orphaned_at) WHERE orphaned_at IS NOT NULL;

CREATE TABLE pod.files (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  filename_visible text NOT NULL CHECK (length(filename_visible) BETWEEN 1 AND 255 AND filename_visible !~ '[/\x01-\x1f]'),
  sha256 bytea NOT NULL REFERENCES pod.blobs ON DELETE RESTRICT,
  size bigint NOT NULL CHECK (size >= 0),
  mime_type text NOT NULL DEFAULT 'application/octet-stream'
    CHECK (mime_type ~ '^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$'),
  uploaded_at timestamptz NOT NULL DEFAULT now(),
  forwarded_from uuid REFERENCES pod.files ON DELETE SET NULL
);
CREATE INDEX files_owner_idx ON pod.files (owner_id);
CREATE INDEX files_sha256_idx ON pod.files (sha256);
COMMENT ON TABLE pod.files IS 'A user''s file: a name and type over a blob. Deleting one never removes a blob another file uses.';

CREATE TABLE pod.file_permissions (
  file_id uuid NOT NULL REFERENCES pod.files ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  data jsonb NOT NULL DEFAULT '{"read": true}' CHECK (jsonb_typeof(data) = 'object'),
  granted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (file_id, user_id)
);
COMMENT ON TABLE pod.file_permissions IS 'Who besides the owner may read a file.';

SELECT pg_catalog.pg_extension_config_dump('pod.storage_nodes', '');
SELECT pg_catalog.pg_extension_config_dump('pod.storage_nodes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.blobs', '');
SELECT pg_catalog.pg_extension_config_dump('pod.files', '');
SELECT pg_catalog.pg_extension_config_dump('pod.file_permissions', '');

-- A file's size is its blob's; a file over a blob revives it if it was orphaned.
CREATE FUNCTION pod.files_bind_blob() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE blob_size bigint;
BEGIN
  UPDATE pod.blobs SET orphaned_at = NULL, last_access = now()
   WHERE sha256 = NEW.sha256 RETURNING size INTO blob_size;
  IF blob_size IS NULL THEN
    RAISE EXCEPTION 'no blob with sha256 %', encode(NEW.sha256, 'hex') USING ERRCODE = '23503';
  END IF;
  NEW.size := blob_size;
  RETURN NEW;
END $$;
CREATE TRIGGER files_bind_blob BEFORE INSERT OR UPDATE OF sha256 ON pod.files
  FOR EACH ROW EXECUTE FUNCTION pod.files_bind_blob();

-- The last file over a blob going away marks the blob for the collector.
CREATE FUNCTION pod.files_release_blob() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.blobs b SET orphaned_at = now()
   WHERE b.sha256 IN (SELECT DISTINCT sha256 FROM old_files)
     AND NOT EXISTS (SELECT 1 FROM pod.files f WHERE f.sha256 = b.sha256);
  RETURN NULL;
END $$;
CREATE TRIGGER files_release_blob AFTER DELETE ON pod.files
  REFERENCING OLD TABLE AS old_files FOR EACH STATEMENT EXECUTE FUNCTION pod.files_release_blob();

-- Registers bytes the gateway has stored (streamed, hashed) as a file of the caller.
CREATE FUNCTION pod.register_upload(sha256 bytea, size bigint, filename text, mime_type text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
#variable_conflict use_column
DECLARE
  me uuid := pod.current_user_id();
  f pod.files;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF register_upload.sha256 IS NULL OR length(register_upload.sha256) <> 32
     OR register_upload.size IS NULL OR register_upload.size < 0 THEN
    RAISE EXCEPTION 'an upload needs a 32-byte sha256 and a size' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.blobs AS b (sha256, size) VALUES (register_upload.sha256, register_upload.size)
    ON CONFLICT (sha256) DO UPDATE SET last_access = now(), orphaned_at = NULL;
  IF (SELECT b.size FROM pod.blobs b WHERE b.sha256 = register_upload.sha256) <> register_upload.size THEN
    RAISE EXCEPTION 'blob % is already stored with another size', encode(register_upload.sha256, 'hex') USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.files (owner_id, filename_visible, sha256, size, mime_type)
    VALUES (me, coalesce(nullif(register_upload.filename, ''), encode(register_upload.sha256, 'hex')),
            register_upload.sha256, register_upload.size,
            coalesce(nullif(lower(trim(split_part(register_upload.mime_type, ';', 1))), ''), 'application/octet-stream'))
    RETURNING * INTO f;
  RETURN jsonb_build_object('id', f.id, 'owner_id', f.owner_id, 'filename_visible', f.filename_visible,
                            'sha256', encode(f.sha256, 'hex'), 'size', f.size, 'mime_type', f.mime_type,
                            'uploaded_at', f.uploaded_at, 'forwarded_from', f.forwarded_from);
END $$;
COMMENT ON FUNCTION pod.register_upload(bytea, bigint, text, text) IS 'Records an uploaded blob and a file of the calling user over it.';

CREATE FUNCTION pod.can_read_file(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file AND f.owner_id = pod.current_user_id())
      OR EXISTS (SELECT 1 FROM pod.file_permissions p WHERE p.file_id = file AND p.user_id = pod.current_user_id()
                   AND coalesce((p.data ->> 'read')::boolean, false));

-- Forwarding: a new file of the caller over the same blob, remembering its source.
CREATE FUNCTION pod.forward_file(file uuid) RETURNS pod.files
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  src pod.files;
  copy pod.files;
BEGIN
  SELECT * INTO src FROM pod.files WHERE id = file;
  IF NOT FOUND OR NOT (pod.can_read_file(file) OR pod.is_admin()) THEN
    RAISE EXCEPTION 'no file % that you may read', file USING ERRCODE = 'P0002';
  END IF;
  INSERT INTO pod.files (owner_id, filename_visible, sha256, size, mime_type, forwarded_from)
    VALUES (coalesce(me, src.owner_id), src.filename_visible, src.sha256, src.size, src.mime_type, src.id)
    RETURNING * INTO copy;
  RETURN copy;
END $$;
COMMENT ON FUNCTION pod.forward_file(uuid) IS 'Copies a readable file to the caller as a new file over the same blob.';

-- Blobs no file uses, for the collector to remove from disk and then from here.
CREATE FUNCTION pod.collect_orphaned_blobs(older_than interval DEFAULT '1 hour') RETURNS SETOF pod.blobs
  LANGUAGE sql SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    DELETE FROM pod.blobs b WHERE b.orphaned_at < now() - older_than
       AND NOT EXISTS (SELECT 1 FROM pod.files f WHERE f.sha256 = b.sha256)
    RETURNING *;
  END;

ALTER TABLE pod.files ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.file_permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY files_readable ON pod.files FOR SELECT TO pgpod_user USING (pod.can_read_file(id));
CREATE POLICY files_own_delete ON pod.files FOR DELETE TO pgpod_user USING (owner_id = (SELECT pod.current_user_id()));
CREATE POLICY files_own_update ON pod.files FOR UPDATE TO pgpod_user
  USING (owner_id = (SELECT pod.current_user_id())) WITH CHECK (owner_id = (SELECT pod.current_user_id()));
CREATE POLICY files_admin ON pod.files TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY permissions_owner ON pod.file_permissions TO pgpod_user
  USING (EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file_id AND f.owner_id = (SELECT pod.current_user_id())))
  WITH CHECK (EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file_id AND f.owner_id = (SELECT pod.current_user_id())));
CREATE POLICY permissions_grantee ON pod.file_permissions FOR SELECT TO pgpod_user
  USING (user_id = (SELECT pod.current_user_id()));
CREATE POLICY permissions_admin ON pod.file_permissions TO pgpod_admin USING (true) WITH CHECK (true);

GRANT SELECT, DELETE ON pod.files TO pgpod_user;
GRANT UPDATE (filename_visible, mime_type) ON pod.files TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.file_permissions TO pgpod_user;
GRANT SELECT ON pod.blobs TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.storage_nodes, pod.blobs TO pgpod_admin;

CREATE VIEW api.files WITH (security_invoker = true) AS
  SELECT id, owner_id, filename_visible, sha256, size, mime_type, uploaded_at, forwarded_from FROM pod.files;
COMMENT ON VIEW api.files IS 'Files the caller owns or was granted; POST /upload adds one, DELETE removes it.';
GRANT SELECT, DELETE ON api.files TO pgpod_user;
GRANT UPDATE (filename_visible, mime_type) ON api.files TO pgpod_user;

CREATE VIEW api.file_permissions WITH (security_invoker = true) AS
  SELECT file_id, user_id, data, granted_at FROM pod.file_permissions;
GRANT SELECT, INSERT, UPDATE, DELETE ON api.file_permissions TO pgpod_user;

CREATE FUNCTION api.forward_file(file uuid) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT row_to_json(f) FROM pod.forward_file(file) f;
  END;
COMMENT ON FUNCTION api.forward_file(uuid) IS 'Forwards a file: a new file of yours over the same content.';
GRANT EXECUTE ON FUNCTION pod.register_upload(bytea, bigint, text, text), api.forward_file(uuid) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.can_read_file(uuid) TO pgpod_user, pgpod_admin;

-- ../sql/30_video.sql
-- 30_video: channels, videos (local, or cached from a friend pod: origin is its URL)
-- and the files of a video per resolution with their torrent and magnet.

CREATE TABLE pod.channels (
  id bigserial PRIMARY KEY,
  owner_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_.-]{1,50}$'),
  display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 120),
  description text CHECK (length(description) <= 5000),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.channels IS 'Local channels; a channel belongs to a user and holds videos.';

CREATE TYPE pod.video_state AS ENUM ('uploaded', 'transcoding', 'published', 'failed');

CREATE TABLE pod.videos (
  uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  channel_id bigint REFERENCES pod.channels ON DELETE CASCADE,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  description text CHECK (length(description) <= 10000),
  origin text CHECK (origin ~ '^https?://[^/\s]+$'),
  author text,
  magnet text,
  thumbnail text,
  state pod.video_state NOT NULL DEFAULT 'uploaded',
  duration interval CHECK (duration >= interval '0'),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  remote jsonb CHECK (jsonb_typeof(remote) = 'object'),
  CONSTRAINT videos_local_or_remote CHECK ((origin IS NULL) = (channel_id IS NOT NULL))
);
CREATE INDEX videos_channel_idx ON pod.videos (channel_id);
CREATE INDEX videos_origin_idx ON pod.videos (origin) WHERE origin IS NOT NULL;
COMMENT ON TABLE pod.videos IS 'The network-wide video index: local videos (origin NULL, in a channel) and friends'' videos (origin = their URL).';

CREATE TABLE pod.video_files (
  video_uuid uuid NOT NULL REFERENCES pod.videos ON DELETE CASCADE,
  resolution integer NOT NULL CHECK (resolution BETWEEN 144 AND 4320),
  file_id uuid NOT NULL REFERENCES pod.files ON DELETE RESTRICT,
  info_hash bytea UNIQUE CHECK (length(info_hash) = 20),
  magnet text CHECK (magnet LIKE 'magnet:?%'),
  torrent bytea,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (video_uuid, resolution)
);
COMMENT ON TABLE pod.video_files IS 'One file per resolution of a local video, with its .torrent, info hash and magnet.';

SELECT pg_catalog.pg_extension_config_dump('pod.channels', '');
SELECT pg_catalog.pg_extension_config_dump('pod.channels_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.videos', '');
SELECT pg_catalog.pg_extension_config_dump('pod.video_files', '');

CREATE FUNCTION pod.owns_channel(channel bigint) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.channels c WHERE c.id = channel AND c.owner_id = pod.current_user_id());

ALTER TABLE pod.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.videos ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.video_files ENABLE ROW LEVEL SECURITY;

-- Everyone sees channels and published videos; owners manage their own.
CREATE POLICY channels_public ON pod.channels FOR SELECT TO pgpod_anon, pgpod_user USING (true);
CREATE POLICY channels_owner ON pod.channels TO pgpod_user
  USING (owner_id = (SELECT pod.current_user_id())) WITH CHECK (owner_id = (SELECT pod.current_user_id()));
CREATE POLICY channels_admin ON pod.channels TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY videos_public ON pod.videos FOR SELECT TO pgpod_anon, pgpod_user USING (state = 'published');
CREATE POLICY videos_owner ON pod.videos TO pgpod_user
  USING (channel_id IS NOT NULL AND pod.owns_channel(channel_id))
  WITH CHECK (channel_id IS NOT NULL AND pod.owns_channel(channel_id));
CREATE POLICY videos_admin ON pod.videos TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY video_files_public ON pod.video_files FOR SELECT TO pgpod_anon, pgpod_user
  USING (EXISTS (SELECT 1 FROM pod.videos v WHERE v.uuid = video_uuid));
CREATE POLICY video_files_admin ON pod.video_files TO pgpod_admin USING (true) WITH CHECK (true);

ALTER TABLE pod.channels ALTER COLUMN owner_id SET DEFAULT pod.current_user_id();
GRANT SELECT ON pod.channels, pod.videos, pod.video_files TO pgpod_anon, pgpod_user;
GRANT INSERT (owner_id, name, display_name, description), UPDATE (display_name, description), DELETE ON pod.channels TO pgpod_user;
GRANT INSERT (channel_id, name, description), UPDATE (name, description), DELETE ON pod.videos TO pgpod_user;
GRANT USAGE ON SEQUENCE pod.channels_id_seq TO pgpod_user, pgpod_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.channels, pod.videos, pod.video_files TO pgpod_admin;

CREATE VIEW api.channels WITH (security_invoker = true) AS
  SELECT id, owner_id, name, display_name, description, created_at FROM pod.channels;
COMMENT ON VIEW api.channels IS 'Channels of this pod.';
CREATE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author, magnet, thumbnail, state, duration, created_at, updated_at
    FROM pod.videos;
COMMENT ON VIEW api.videos IS 'The video index: this pod''s published videos and its friends''.';
CREATE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at
    FROM pod.video_files;
COMMENT ON VIEW api.video_files IS 'Files of local videos per resolution, with their magnet links.';
GRANT SELECT ON api.channels, api.videos, api.video_files TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT INSERT, UPDATE, DELETE ON api.channels, api.videos TO pgpod_user;

-- ../sql/40_chat.sql
-- 40_chat: rooms, members and messages. Deleting a message keeps a tombstone except
-- in secret rooms, and editing keeps earlier versions (triggers in messages.c).
-- Every change to a message is also a room event with a gapless, commit-ordered
-- per-room sequence (the room row is locked while numbering), which the gateway
-- streams over SSE with Last-Event-ID resume.

CREATE TYPE pod.room_type AS ENUM ('dialog', 'group', 'video', 'channel', 'secret');
CREATE TYPE pod.affiliation AS ENUM ('owner', 'admin', 'member', 'outcast');
CREATE TYPE pod.message_type AS ENUM ('message', 'event', 'join', 'leave');
CREATE TYPE pod.message_status AS ENUM ('sent', 'edited', 'deleted');

CREATE TABLE pod.rooms (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  type pod.room_type NOT NULL,
  data jsonb NOT NULL DEFAULT '{"roles": [], "permissions": {}}' CHECK (jsonb_typeof(data) = 'object'),
  created_by uuid REFERENCES pod.users ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  event_seq bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pod.rooms IS 'Chat rooms; data holds roles and permissions; created_by is the owner. event_seq numbers the room''s events.';

CREATE TABLE pod.room_members (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  affiliation pod.affiliation NOT NULL DEFAULT 'member',
  data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
  joined_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_idx ON pod.room_members (user_id);
COMMENT ON TABLE pod.room_members IS 'Who is in which room, with an affiliation and per-member data such as is_muted.';

CREATE TABLE pod.messages (
  id bigserial PRIMARY KEY,
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  author_id uuid REFERENCES pod.users ON DELETE SET NULL,
  data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
  sent_at timestamptz NOT NULL DEFAULT now(),
  type pod.message_type NOT NULL DEFAULT 'message',
  status pod.message_status NOT NULL DEFAULT 'sent',
  edited_at timestamptz,
  deleted_at timestamptz,
  CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
CREATE INDEX messages_room_idx ON pod.messages (room_id, id);
COMMENT ON TABLE pod.messages IS 'Messages; DELETE leaves a tombstone (status deleted, content removed) except in secret rooms.';

CREATE TABLE pod.message_versions (
  message_id bigint NOT NULL REFERENCES pod.messages ON DELETE CASCADE,
  version integer NOT NULL,
  data jsonb NOT NULL,
  edited_at timestamptz NOT NULL,
  PRIMARY KEY (message_id, version)
);
COMMENT ON TABLE pod.message_versions IS 'Earlier contents of edited messages; purged when the message is deleted.';

CREATE TYPE pod.room_event_kind AS ENUM ('new', 'edited', 'deleted');
CREATE TABLE pod.room_events (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  seq bigint NOT NULL,
  kind pod.room_event_kind NOT NULL,
  message_id bigint NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room_id, seq)
);
COMMENT ON TABLE pod.room_events IS 'Per-room, gapless, commit-ordered change log of messages (for streams). Not dumped: a restore replays each message once as a new event, numbered after the room''s last sequence.';

SELECT pg_catalog.pg_extension_config_dump('pod.rooms', '');
SELECT pg_catalog.pg_extension_config_dump('pod.room_members', '');
SELECT pg_catalog.pg_extension_config_dump('pod.messages', '');
SELECT pg_catalog.pg_extension_config_dump('pod.messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.message_versions', '');

-- Membership look-ups for policies, as the owner so they do not recurse into RLS.
-- The creator of a room is its owner (rooms.created_by) without a membership row:
-- no trigger writes rows behind an INSERT, so a dump restores as it was taken.
CREATE FUNCTION pod.room_affiliation(room uuid) RETURNS pod.affiliation
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT CASE WHEN r.created_by = me.id THEN 'owner'::pod.affiliation ELSE m.affiliation END
            FROM pod.rooms r CROSS JOIN (SELECT pod.current_user_id() AS id) me
            LEFT JOIN pod.room_members m ON m.room_id = r.id AND m.user_id = me.id
           WHERE r.id = room AND me.id IS NOT NULL);

CREATE FUNCTION pod.can_read_room(room uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.room_affiliation(room) <> 'outcast', false);

CREATE FUNCTION pod.can_moderate_room(room uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.room_affiliation(room) IN ('owner', 'admin'), false);

-- Posting: a clear error for a non-member, an outcast or a muted member. The RLS
-- policy says the same; this says why.
CREATE FUNCTION pod.messages_check_author() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  m pod.room_members;
BEGIN
  IF pod.is_admin() AND pod.current_user_id() IS NULL THEN
    RETURN NEW;     -- the superuser or a maintenance job writes as it likes
  END IF;
  IF NEW.author_id IS DISTINCT FROM pod.current_user_id() THEN
    RAISE EXCEPTION 'a message''s author must be the calling user' USING ERRCODE = '42501';
  END IF;
  SELECT * INTO m FROM pod.room_members WHERE room_id = NEW.room_id AND user_id = NEW.author_id;
  IF coalesce(pod.room_affiliation(NEW.room_id) = 'outcast', true) THEN
    RAISE EXCEPTION 'you are not a member of room %', NEW.room_id USING ERRCODE = '42501';
  END IF;
  IF coalesce((m.data ->> 'is_muted')::boolean, false) THEN
    RAISE EXCEPTION 'you are muted in room %', NEW.room_id USING ERRCODE = '42501',
      HINT = 'A room owner or admin can unmute you.';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER messages_check_author BEFORE INSERT ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_check_author();

CREATE FUNCTION pod.messages_soft_delete() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_soft_delete' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
CREATE TRIGGER messages_soft_delete BEFORE DELETE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_soft_delete();

CREATE FUNCTION pod.messages_track_edit() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_track_edit' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
CREATE TRIGGER messages_track_edit BEFORE UPDATE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_track_edit();

-- Room events: number under the room's row lock so sequence order is commit order.
CREATE FUNCTION pod.messages_record_event() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  msg pod.messages := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  kind pod.room_event_kind;
  next_seq bigint;
BEGIN
  kind := CASE WHEN TG_OP = 'INSERT' THEN 'new'
               WHEN TG_OP = 'DELETE' OR NEW.status = 'deleted' THEN 'deleted'
               ELSE 'edited' END;
  UPDATE pod.rooms SET event_seq = event_seq + 1 WHERE id = msg.room_id RETURNING event_seq INTO next_seq;
  IF next_seq IS NULL THEN
    RETURN NULL;    -- the room itself is being deleted
  END IF;
  INSERT INTO pod.room_events (room_id, seq, kind, message_id) VALUES (msg.room_id, next_seq, kind, msg.id);
  PERFORM pg_notify('pgpod_room_events', msg.room_id || ':' || next_seq);
  RETURN NULL;
END $$;
CREATE TRIGGER messages_record_event AFTER INSERT OR UPDATE OR DELETE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_record_event();

-- Row-level security ------------------------------------------------------------------

ALTER TABLE pod.rooms ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.room_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.message_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.room_events ENABLE ROW LEVEL SECURITY;

-- created_by is checked directly too: INSERT ... RETURNING tests the new row before
-- it is visible to pod.room_affiliation.
CREATE POLICY rooms_member ON pod.rooms FOR SELECT TO pgpod_user
  USING (created_by = (SELECT pod.current_user_id()) OR pod.can_read_room(id));
CREATE POLICY rooms_create ON pod.rooms FOR INSERT TO pgpod_user
  WITH CHECK (created_by = (SELECT pod.current_user_id()));
CREATE POLICY rooms_moderate ON pod.rooms FOR UPDATE TO pgpod_user
  USING (pod.can_moderate_room(id)) WITH CHECK (pod.can_moderate_room(id));
CREATE POLICY rooms_owner_delete ON pod.rooms FOR DELETE TO pgpod_user
  USING (pod.room_affiliation(id) = 'owner');
CREATE POLICY rooms_admin ON pod.rooms TO pgpod_admin USING (true) WITH CHECK (true);

CREATE POLICY members_visible ON pod.room_members FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY members_moderate ON pod.room_members TO pgpod_user
  USING (pod.can_moderate_room(room_id)) WITH CHECK (pod.can_moderate_room(room_id));
CREATE POLICY members_leave ON pod.room_members FOR DELETE TO pgpod_user
  USING (user_id = (SELECT pod.current_user_id()));
CREATE POLICY members_admin ON pod.room_members TO pgpod_admin USING (true) WITH CHECK (true);

CREATE POLICY messages_read ON pod.messages FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY messages_post ON pod.messages FOR INSERT TO pgpod_user
  WITH CHECK (author_id = (SELECT pod.current_user_id()) AND pod.can_read_room(room_id));
CREATE POLICY messages_edit_own ON pod.messages FOR UPDATE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) AND pod.can_read_room(room_id))
  WITH CHECK (author_id = (SELECT pod.current_user_id()));
CREATE POLICY messages_delete ON pod.messages FOR DELETE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) OR pod.can_moderate_room(room_id));
CREATE POLICY messages_admin ON pod.messages TO pgpod_admin USING (true) WITH CHECK (true);

CREATE POLICY versions_read ON pod.message_versions FOR SELECT TO pgpod_user
  USING (EXISTS (SELECT 1 FROM pod.messages m WHERE m.id = message_id));
CREATE POLICY events_read ON pod.room_events FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY versions_admin ON pod.message_versions FOR SELECT TO pgpod_admin USING (true);
CREATE POLICY events_admin ON pod.room_events FOR SELECT TO pgpod_admin USING (true);

ALTER TABLE pod.rooms ALTER COLUMN created_by SET DEFAULT pod.current_user_id();
ALTER TABLE pod.messages ALTER COLUMN author_id SET DEFAULT pod.current_user_id();

GRANT SELECT (id, name, type, data, created_by, created_at) ON pod.rooms TO pgpod_user;
GRANT INSERT (name, type, data, created_by), UPDATE (name, data), DELETE ON pod.rooms TO pgpod_user;
GRANT SELECT, INSERT, DELETE ON pod.room_members TO pgpod_user;
GRANT UPDATE (affiliation, data) ON pod.room_members TO pgpod_user;
GRANT SELECT, DELETE ON pod.messages TO pgpod_user;
GRANT INSERT (room_id, author_id, data, type) ON pod.messages TO pgpod_user;
GRANT UPDATE (data) ON pod.messages TO pgpod_user;
GRANT USAGE ON SEQUENCE pod.messages_id_seq TO pgpod_user, pgpod_admin;
GRANT SELECT ON pod.message_versions, pod.room_events TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.rooms, pod.room_members, pod.messages TO pgpod_admin;
GRANT SELECT ON pod.message_versions, pod.room_events TO pgpod_admin;

-- api -------------------------------------------------------------------------------

CREATE VIEW api.rooms WITH (security_invoker = true) AS
  SELECT id, name, type, data, created_by, created_at FROM pod.rooms;
COMMENT ON VIEW api.rooms IS 'Rooms the caller belongs to (not as outcast).';
CREATE VIEW api.room_members WITH (security_invoker = true) AS
  SELECT room_id, user_id, affiliation, data, joined_at FROM pod.room_members;
COMMENT ON VIEW api.room_members IS 'Members of the caller''s rooms; owners and admins manage them.';
CREATE VIEW api.messages WITH (security_invoker = true) AS
  SELECT id, room_id, author_id, data, sent_at, type, status, edited_at, deleted_at FROM pod.messages;
COMMENT ON VIEW api.messages IS 'Messages of the caller''s rooms; DELETE leaves a tombstone except in secret rooms.';
CREATE VIEW api.message_versions WITH (security_invoker = true) AS
  SELECT message_id, version, data, edited_at FROM pod.message_versions;
COMMENT ON VIEW api.message_versions IS 'Earlier versions of edited messages.';
CREATE VIEW api.room_events WITH (security_invoker = true) AS
  SELECT e.room_id, e.seq, e.kind::text AS kind,
         coalesce(to_jsonb(m), jsonb_build_object('id', e.message_id, 'room_id', e.room_id, 'status', 'deleted')) AS message
    FROM pod.room_events e
    LEFT JOIN pod.messages m ON m.id = e.message_id;
COMMENT ON VIEW api.room_events IS 'Message changes per room in commit order (seq); the stream GET /rooms/<id>/events reads it.';

GRANT SELECT, INSERT, UPDATE, DELETE ON api.rooms, api.room_members, api.messages TO pgpod_user;
GRANT SELECT ON api.message_versions, api.room_events TO pgpod_user;

-- ../sql/50_livechat.sql
-- 50_livechat: chat rooms attached to videos or channels (the seed's channel2room /
-- room2channel, held by foreign keys so they cannot disagree), per-channel chat
-- options, what we know of remote pods and of remote videos' chats, and cleanup.

CREATE TABLE pod.livechat_rooms (
  room_id uuid PRIMARY KEY REFERENCES pod.rooms ON DELETE CASCADE,
  channel_id bigint NOT NULL REFERENCES pod.channels ON DELETE CASCADE,
  video_uuid uuid UNIQUE REFERENCES pod.videos ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- room → channel is the primary key; channel → rooms is this index.
CREATE INDEX livechat_rooms_channel_idx ON pod.livechat_rooms (channel_id);
CREATE UNIQUE INDEX livechat_rooms_one_per_channel ON pod.livechat_rooms (channel_id) WHERE video_uuid IS NULL;
COMMENT ON TABLE pod.livechat_rooms IS 'Which room is the chat of which video or channel; lookups both ways by key.';

-- A video's room must be a 'video' room of the video's own channel; a channel's room a 'channel' room.
CREATE FUNCTION pod.livechat_rooms_check() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  rtype pod.room_type := (SELECT type FROM pod.rooms WHERE id = NEW.room_id);
BEGIN
  IF NEW.video_uuid IS NOT NULL THEN
    IF rtype <> 'video' THEN
      RAISE EXCEPTION 'the chat of a video must be a room of type video, not %', rtype USING ERRCODE = '22023';
    END IF;
    -- Existence is the foreign key's job (and rows arrive in any order on restore).
    IF EXISTS (SELECT 1 FROM pod.videos WHERE uuid = NEW.video_uuid AND channel_id IS DISTINCT FROM NEW.channel_id) THEN
      RAISE EXCEPTION 'video % is not in channel %', NEW.video_uuid, NEW.channel_id USING ERRCODE = '22023';
    END IF;
  ELSIF rtype <> 'channel' THEN
    RAISE EXCEPTION 'the chat of a channel must be a room of type channel, not %', rtype USING ERRCODE = '22023';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER livechat_rooms_check BEFORE INSERT OR UPDATE ON pod.livechat_rooms
  FOR EACH ROW EXECUTE FUNCTION pod.livechat_rooms_check();

-- The chat room of a local video: per video or per channel, as livechat.room_per says.
CREATE FUNCTION pod.livechat_room(video uuid) RETURNS uuid
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  v pod.videos;
  per text := pod.setting('livechat.room_per') #>> '{}';
  room uuid;
BEGIN
  SELECT * INTO v FROM pod.videos WHERE uuid = video;
  IF NOT FOUND OR v.channel_id IS NULL THEN
    RAISE EXCEPTION 'no local video %', video USING ERRCODE = 'P0002';
  END IF;
  -- Serialise creation per channel so two viewers do not make two rooms.
  PERFORM 1 FROM pod.channels WHERE id = v.channel_id FOR UPDATE;
  IF per = 'video' THEN
    SELECT room_id INTO room FROM pod.livechat_rooms WHERE video_uuid = video;
  ELSE
    SELECT room_id INTO room FROM pod.livechat_rooms WHERE channel_id = v.channel_id AND video_uuid IS NULL;
  END IF;
  IF room IS NULL THEN
    INSERT INTO pod.rooms (name, type, created_by)
      VALUES (CASE per WHEN 'video' THEN v.name ELSE (SELECT display_name FROM pod.channels WHERE id = v.channel_id) END,
              per::pod.room_type,
              (SELECT owner_id FROM pod.channels WHERE id = v.channel_id))
      RETURNING id INTO room;
    INSERT INTO pod.livechat_rooms (room_id, channel_id, video_uuid)
      VALUES (room, v.channel_id, CASE per WHEN 'video' THEN video END);
  END IF;
  RETURN room;
END $$;
COMMENT ON FUNCTION pod.livechat_room(uuid) IS 'The chat room of a local video, created on first use.';

CREATE VIEW pod.room_channel AS
  SELECT room_id, channel_id, video_uuid FROM pod.livechat_rooms;
COMMENT ON VIEW pod.room_channel IS 'room → channel (and video), the seed''s room2channel.';
CREATE FUNCTION pod.channel_rooms(channel bigint) RETURNS SETOF uuid
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT room_id FROM pod.livechat_rooms WHERE channel_id = channel ORDER BY created_at;
  END;
COMMENT ON FUNCTION pod.channel_rooms(bigint) IS 'channel → its rooms, the seed''s channel2room.';

-- Channel chat options ------------------------------------------------------------------

CREATE FUNCTION pod.validate_chat_options(options jsonb) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  k text;
  allowed text[] := ARRAY['slow_mode_seconds', 'mute_anonymous', 'forbidden_words', 'moderation_delay_seconds',
                          'bot', 'terms'];
BEGIN
  IF jsonb_typeof(options) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'chat options must be a JSON object' USING ERRCODE = '22023';
  END IF;
  FOR k IN SELECT jsonb_object_keys(options) LOOP
    IF NOT k = ANY (allowed) THEN
      RAISE EXCEPTION 'unknown chat option "%"', k USING ERRCODE = '22023',
        HINT = 'Known options: ' || array_to_string(allowed, ', ') || '.';
    END IF;
  END LOOP;
  IF options ? 'slow_mode_seconds' AND (jsonb_typeof(options -> 'slow_mode_seconds') <> 'number'
       OR (options ->> 'slow_mode_seconds')::numeric NOT BETWEEN 0 AND 86400
       OR (options ->> 'slow_mode_seconds')::numeric % 1 <> 0) THEN
    RAISE EXCEPTION 'slow_mode_seconds must be a whole number from 0 to 86400' USING ERRCODE = '22023';
  END IF;
  IF options ? 'moderation_delay_seconds' AND (jsonb_typeof(options -> 'moderation_delay_seconds') <> 'number'
       OR (options ->> 'moderation_delay_seconds')::numeric NOT BETWEEN 0 AND 3600
       OR (options ->> 'moderation_delay_seconds')::numeric % 1 <> 0) THEN
    RAISE EXCEPTION 'moderation_delay_seconds must be a whole number from 0 to 3600' USING ERRCODE = '22023';
  END IF;
  IF options ? 'mute_anonymous' AND jsonb_typeof(options -> 'mute_anonymous') <> 'boolean' THEN
    RAISE EXCEPTION 'mute_anonymous must be true or false' USING ERRCODE = '22023';
  END IF;
  IF options ? 'forbidden_words' AND (jsonb_typeof(options -> 'forbidden_words') <> 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(options -> 'forbidden_words') w
                   WHERE jsonb_typeof(w) <> 'string' OR length(w #>> '{}') NOT BETWEEN 1 AND 200)) THEN
    RAISE EXCEPTION 'forbidden_words must be an array of non-empty strings (at most 200 characters each)'
      USING ERRCODE = '22023';
  END IF;
  IF options ? 'bot' AND jsonb_typeof(options -> 'bot') <> 'object' THEN
    RAISE EXCEPTION 'bot must be an object' USING ERRCODE = '22023';
  END IF;
  IF options ? 'terms' AND (jsonb_typeof(options -> 'terms') <> 'string' OR length(options ->> 'terms') > 2000) THEN
    RAISE EXCEPTION 'terms must be a string of at most 2000 characters' USING ERRCODE = '22023';
  END IF;
  RETURN options;
END $$;

CREATE TABLE pod.channel_chat_options (
  channel_id bigint PRIMARY KEY REFERENCES pod.channels ON DELETE CASCADE,
  options jsonb NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.channel_chat_options IS 'Per-channel chat configuration (slow mode, muting anonymous users, forbidden words, moderation delay).';

CREATE FUNCTION pod.channel_chat_options_check() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  NEW.options := pod.validate_chat_options(NEW.options);
  IF TG_OP = 'UPDATE' THEN
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER channel_chat_options_check BEFORE INSERT OR UPDATE ON pod.channel_chat_options
  FOR EACH ROW EXECUTE FUNCTION pod.channel_chat_options_check();

-- Remote pods and their videos' chats ----------------------------------------------------

CREATE TABLE pod.remote_servers (
  host text PRIMARY KEY CHECK (host ~ '^[A-Za-z0-9.-]+(:[0-9]{1,5})?$'),
  protocols jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(protocols) = 'object'),
  last_update timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.remote_servers IS 'What we know of a remote pod''s chat: protocols (s2s, ws-s2s) and when we last asked.';

CREATE FUNCTION pod.remote_servers_check() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE k text;
BEGIN
  FOR k IN SELECT jsonb_object_keys(NEW.protocols) LOOP
    IF k NOT IN ('s2s', 'ws-s2s') THEN
      RAISE EXCEPTION 'unknown protocol "%" for %', k, NEW.host USING ERRCODE = '22023', HINT = 'Known: s2s, ws-s2s.';
    END IF;
    IF jsonb_typeof(NEW.protocols -> k) <> 'object' THEN
      RAISE EXCEPTION 'protocol "%" needs an object of endpoint information', k USING ERRCODE = '22023';
    END IF;
  END LOOP;
  RETURN NEW;
END $$;
CREATE TRIGGER remote_servers_check BEFORE INSERT OR UPDATE ON pod.remote_servers
  FOR EACH ROW EXECUTE FUNCTION pod.remote_servers_check();

-- True when the server's information is missing or older than the refresh throttle.
CREATE FUNCTION pod.remote_server_needs_refresh(server text) RETURNS boolean
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT last_update FROM pod.remote_servers WHERE host = server)
                    < now() - (pod.setting('livechat.remote_refresh') #>> '{}')::interval, true);

-- Records fresh information; refused (false) while the throttle says it is too soon.
CREATE FUNCTION pod.remote_server_update(server text, new_protocols jsonb, force boolean DEFAULT false) RETURNS boolean
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  IF NOT force AND NOT pod.remote_server_needs_refresh(server) THEN
    RETURN false;
  END IF;
  INSERT INTO pod.remote_servers (host, protocols, last_update) VALUES (server, new_protocols, now())
    ON CONFLICT (host) DO UPDATE SET protocols = EXCLUDED.protocols, last_update = EXCLUDED.last_update;
  RETURN true;
END $$;

CREATE TABLE pod.remote_video_chats (
  host text NOT NULL REFERENCES pod.remote_servers ON DELETE CASCADE,
  video_uuid uuid NOT NULL,
  infos jsonb NOT NULL CHECK (jsonb_typeof(infos) = 'object'
                              AND jsonb_typeof(infos -> 'enabled') = 'boolean'
                              AND coalesce(jsonb_typeof(infos -> 'anonymous_allowed'), 'boolean') = 'boolean'
                              AND coalesce(jsonb_typeof(infos -> 'protocols'), 'object') = 'object'),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (host, video_uuid)
);
COMMENT ON TABLE pod.remote_video_chats IS 'Chats of remote videos we opened: enabled, anonymous allowed, protocols to reach them.';

-- What we tell other pods about a local video's chat.
CREATE FUNCTION pod.local_video_chat_infos(video uuid) RETURNS jsonb
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT jsonb_build_object(
            'enabled', true,
            'anonymous_allowed', NOT coalesce((o.options ->> 'mute_anonymous')::boolean, false),
            'room', (SELECT room_id FROM pod.livechat_rooms r WHERE r.video_uuid = v.uuid
                     UNION ALL SELECT room_id FROM pod.livechat_rooms r WHERE r.channel_id = v.channel_id AND r.video_uuid IS NULL
                     LIMIT 1))
            FROM pod.videos v LEFT JOIN pod.channel_chat_options o ON o.channel_id = v.channel_id
           WHERE v.uuid = video AND v.origin IS NULL);

-- Removes what no longer points at anything: rooms whose video or channel is gone,
-- remote video chats of remote servers unused past the retention setting, and those
-- servers. Returns what it removed per kind.
CREATE FUNCTION pod.livechat_cleanup(OUT orphan_rooms integer, OUT stale_servers integer, OUT stale_video_chats integer)
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  retention interval := (pod.setting('livechat.remote_retention') #>> '{}')::interval;
BEGIN
  DELETE FROM pod.rooms r WHERE r.type IN ('video', 'channel')
     AND NOT EXISTS (SELECT 1 FROM pod.livechat_rooms l WHERE l.room_id = r.id);
  GET DIAGNOSTICS orphan_rooms = ROW_COUNT;
  DELETE FROM pod.remote_video_chats WHERE updated_at < now() - retention;
  GET DIAGNOSTICS stale_video_chats = ROW_COUNT;
  DELETE FROM pod.remote_servers s WHERE coalesce(s.last_update, s.created_at) < now() - retention
     AND NOT EXISTS (SELECT 1 FROM pod.remote_video_chats c WHERE c.host = s.host);
  GET DIAGNOSTICS stale_servers = ROW_COUNT;
END $$;
COMMENT ON FUNCTION pod.livechat_cleanup() IS 'Deletes livechat data whose video, channel or remote server is gone or stale.';

SELECT pg_catalog.pg_extension_config_dump('pod.livechat_rooms', '');
SELECT pg_catalog.pg_extension_config_dump('pod.channel_chat_options', '');
SELECT pg_catalog.pg_extension_config_dump('pod.remote_servers', '');
SELECT pg_catalog.pg_extension_config_dump('pod.remote_video_chats', '');

ALTER TABLE pod.channel_chat_options ENABLE ROW LEVEL SECURITY;
CREATE POLICY chat_options_public ON pod.channel_chat_options FOR SELECT TO pgpod_anon, pgpod_user USING (true);
CREATE POLICY chat_options_owner ON pod.channel_chat_options TO pgpod_user
  USING (pod.owns_channel(channel_id)) WITH CHECK (pod.owns_channel(channel_id));
CREATE POLICY chat_options_admin ON pod.channel_chat_options TO pgpod_admin USING (true) WITH CHECK (true);
GRANT SELECT ON pod.channel_chat_options, pod.livechat_rooms TO pgpod_anon, pgpod_user;
GRANT INSERT, UPDATE, DELETE ON pod.channel_chat_options TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.livechat_rooms, pod.channel_chat_options, pod.remote_servers,
  pod.remote_video_chats TO pgpod_admin;

CREATE VIEW api.channel_chat_options WITH (security_invoker = true) AS
  SELECT channel_id, options, updated_at FROM pod.channel_chat_options;
COMMENT ON VIEW api.channel_chat_options IS 'Chat options per channel; the channel owner edits them.';
GRANT SELECT ON api.channel_chat_options TO pgpod_anon, pgpod_user;
GRANT INSERT, UPDATE, DELETE ON api.channel_chat_options TO pgpod_user;

CREATE FUNCTION api.video_chat_room(video uuid) RETURNS uuid
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.livechat_room(video);
COMMENT ON FUNCTION api.video_chat_room(uuid) IS 'The chat room of a local video (made on first use).';
GRANT EXECUTE ON FUNCTION api.video_chat_room(uuid) TO pgpod_user;

-- ../sql/60_queue.sql
-- 60_queue: one job queue for every kind of work that leaves the database (deliver,
-- make_friends, transcode, ...). Claims take rows with FOR UPDATE SKIP LOCKED and lease
-- them to a worker until lease_until; an expired lease is claimable again. Failures
-- back off (base × factor^(attempt−1)) until the retries are spent, then the job is dead.
-- Locking: a job row is only changed by the worker that holds its lease (worker =
-- the caller) or by a claim once the lease has expired.

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('queue.retries', '10', 'Retries after a job''s first failed attempt before it is dead (the seed: 10, about 16.4 h in all).'),
  ('queue.base_delay', '"2 seconds"', 'Delay after the first failed attempt; attempt n waits base_delay × factor^(n−1).'),
  ('queue.factor', '3', 'Backoff factor between two retries.'),
  ('queue.lease', '"60 seconds"', 'How long a claimed job belongs to its worker before it is claimable again.'),
  ('queue.retention', '"1 day"', 'Done jobs older than this are removed by pod.jobs_prune().'),
  ('queue.dead_retention', '"30 days"', 'Dead jobs older than this are removed by pod.jobs_prune().');
UPDATE pod.setting_defaults SET minimum = 0, maximum = 100 WHERE name = 'queue.retries';
UPDATE pod.setting_defaults SET minimum = 1, maximum = 100 WHERE name = 'queue.factor';

CREATE TYPE pod.job_state AS ENUM ('waiting', 'running', 'done', 'dead');

-- Per-kind overrides of the queue.* settings; NULL means "the pod setting".
CREATE TABLE pod.job_kinds (
  kind text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]{0,40}$'),
  retries integer CHECK (retries BETWEEN 0 AND 100),
  base_delay interval CHECK (base_delay >= interval '0'),
  factor double precision CHECK (factor >= 1),
  lease interval CHECK (lease > interval '0'),
  retention interval CHECK (retention >= interval '0'),
  description text NOT NULL DEFAULT ''
);
COMMENT ON TABLE pod.job_kinds IS 'Kinds of jobs and their per-kind overrides of the queue.* settings (NULL = the setting).';
SELECT pg_catalog.pg_extension_config_dump('pod.job_kinds', '');

CREATE TABLE pod.jobs (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  kind text NOT NULL,
  target text,
  payload jsonb NOT NULL DEFAULT '{}',
  state pod.job_state NOT NULL DEFAULT 'waiting',
  attempts integer NOT NULL DEFAULT 0,
  run_at timestamptz NOT NULL DEFAULT now(),
  worker text,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  lease_until timestamptz
) WITH (fillfactor = 40);
COMMENT ON TABLE pod.jobs IS 'Every queued job. run_at: not before (a claim leaves it alone); lease_until: the end of a running job''s lease. target: whom the job is for (a friend URL for deliveries).';
COMMENT ON COLUMN pod.jobs.attempts IS 'Attempts started (claims); the job is dead when a failed attempt leaves no retry.';
-- A claim changes no indexed column (the lease ends in lease_until, not run_at, and
-- the indexes' predicates read finished_at, not state), so PostgreSQL makes it a HOT
-- update: the new row version goes beside the old one on its page and no index gets
-- an entry (a plain SKIP LOCKED queue that moves run_at writes three: heap, primary
-- key, claim index). fillfactor 40 keeps the room on the page for it and for the
-- outcome's version. The price: running jobs keep their place in the claim index, and
-- a claim steps over the ones still leased (at most what the workers hold).
CREATE INDEX jobs_claimable_idx ON pod.jobs (kind, run_at) WHERE finished_at IS NULL;
CREATE INDEX jobs_finished_idx ON pod.jobs (finished_at) WHERE finished_at IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('pod.jobs', '');

INSERT INTO pod.job_kinds (kind, description) VALUES
  ('deliver', 'A signed request to a friend pod''s inbox (federator).'),
  ('make_friends', 'Ask pods for their friend lists, then befriend (federator).');

-- The effective policy of a kind: its overrides over the pod settings.
CREATE FUNCTION pod.job_policy(job_kind text, OUT retries integer, OUT base_delay interval,
                               OUT factor double precision, OUT lease interval, OUT retention interval)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT coalesce(k.retries, (pod.setting('queue.retries'))::integer),
         coalesce(k.base_delay, (pod.setting('queue.base_delay') #>> '{}')::interval),
         coalesce(k.factor, (pod.setting('queue.factor'))::double precision),
         coalesce(k.lease, (pod.setting('queue.lease') #>> '{}')::interval),
         coalesce(k.retention, (pod.setting('queue.retention') #>> '{}')::interval)
    FROM (SELECT job_kind) q LEFT JOIN pod.job_kinds k ON k.kind = q.job_kind
$$;

-- The wait after failed attempt number `attempt` (1-based).
CREATE FUNCTION pod.job_backoff(attempt integer, base_delay interval, factor double precision) RETURNS interval
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN base_delay * power(factor, greatest(attempt, 1) - 1);

CREATE FUNCTION pod.job_channel(job_kind text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN 'pod_jobs_' || job_kind;
COMMENT ON FUNCTION pod.job_channel(text) IS 'The NOTIFY channel that wakes the workers of a kind (LISTEN pod_jobs_<kind>).';

-- Enqueues one job; 22023 for an unknown kind or a payload that is not an object.
CREATE FUNCTION pod.job_enqueue(job_kind text, payload jsonb DEFAULT '{}', target text DEFAULT NULL,
                                run_at timestamptz DEFAULT now()) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE new_id bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pod.job_kinds WHERE kind = job_kind) THEN
    RAISE EXCEPTION 'unknown job kind "%"', job_kind USING ERRCODE = '22023',
      HINT = 'Kinds are registered in pod.job_kinds.';
  END IF;
  IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
    RAISE EXCEPTION 'job payload must be a JSON object' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.jobs (kind, payload, target, run_at)
    VALUES (job_kind, payload, target, coalesce(job_enqueue.run_at, now()))
    RETURNING id INTO new_id;
  RETURN new_id;
END $$;

-- Claims up to max_jobs claimable jobs of a kind for a worker (oldest first), leased
-- for `lease` (default: the kind's policy). Concurrent claimers never get the same job.
-- A job whose lease expired on its last allowed attempt (its worker died on it each
-- time) is not claimed again: pod.jobs_prune() declares it dead.
-- Wake-ups: a worker sleeps only after two claims in a row came back short; the
-- second one waits for the kind's sleep lock first (pod.job_claim_begin), so that
-- every job inserted after it notifies (queue.c, README "Queue wake-ups").
CREATE FUNCTION pod.job_claim(job_kind text, worker text, max_jobs integer DEFAULT 100, lease interval DEFAULT NULL)
  RETURNS SETOF pod.jobs
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  lease_end timestamptz;
  last_attempt integer;
  n integer;
BEGIN
  IF worker IS NULL OR worker = '' THEN
    RAISE EXCEPTION 'worker id is required' USING ERRCODE = '22023';
  END IF;
  IF max_jobs IS NULL OR max_jobs < 1 OR max_jobs > 10000 THEN
    RAISE EXCEPTION 'max_jobs must be between 1 and 10000, not %', max_jobs USING ERRCODE = '22023';
  END IF;
  -- The policy as pod.job_policy gives it, read in this one statement (its plan is
  -- kept for the session) rather than through nested pod.setting calls.
  SELECT now() + coalesce(job_claim.lease, k.lease,
                          (SELECT coalesce(o.value, d.value) #>> '{}' FROM pod.setting_defaults d
                             LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = 'queue.lease')::interval),
         coalesce(k.retries,
                  (SELECT coalesce(o.value, d.value) FROM pod.setting_defaults d
                     LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = 'queue.retries')::integer) + 1
    INTO lease_end, last_attempt
    FROM (SELECT job_kind) q LEFT JOIN pod.job_kinds k ON k.kind = q.job_kind;
  IF lease_end <= now() THEN
    RAISE EXCEPTION 'lease must be positive' USING ERRCODE = '22023';
  END IF;
  PERFORM pod.job_claim_begin(job_kind);
  RETURN QUERY
    UPDATE pod.jobs j
       SET state = 'running', attempts = j.attempts + 1, worker = job_claim.worker, lease_until = lease_end
      FROM (SELECT c.id FROM pod.jobs c
             WHERE c.kind = job_kind AND c.finished_at IS NULL AND c.run_at <= now()
               AND (c.state = 'waiting' OR (c.lease_until < now() AND c.attempts < last_attempt))
             ORDER BY c.run_at
             LIMIT max_jobs
             FOR UPDATE SKIP LOCKED) claimed
     WHERE j.id = claimed.id
    RETURNING j.*;
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pod.job_claim_end(job_kind, n = max_jobs);
END $$;

-- Marks jobs done; only those still leased to this worker count. Returns how many.
CREATE FUNCTION pod.job_complete(job_ids bigint[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod SET plan_cache_mode = force_custom_plan AS $$
DECLARE n integer;
BEGIN
  -- One scan of the primary key for the ids, planned for each call (a generic plan
  -- made while the table was small keeps seq-scanning it as it grows). The state is
  -- compared as text so that the planner cannot prove the claimable index's predicate
  -- from it: with "state = 'running'" it scanned that whole partial index (dead entries
  -- too, until vacuum) and ANDed it with the ids, or, joined with unnest(job_ids), took
  -- it as the outer side and filtered it against every id. Without a join there is no
  -- join order to get wrong: a small table is seq-scanned, a large one probed.
  UPDATE pod.jobs j SET state = 'done', finished_at = now(), lease_until = NULL
   WHERE j.id = ANY (job_ids) AND j.state::text = 'running' AND j.worker = job_complete.worker;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- Records failed attempts (one error per job): back off, or dead when no retry is
-- left. Only jobs leased to this worker count. Returns how many were recorded.
CREATE FUNCTION pod.job_fail(job_ids bigint[], errors text[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  IF cardinality(job_ids) IS DISTINCT FROM cardinality(errors) THEN
    RAISE EXCEPTION 'job_ids and errors must have the same length' USING ERRCODE = '22023';
  END IF;
  WITH failed AS (
    SELECT f.id, coalesce(f.error, 'unknown error') AS error FROM unnest(job_ids, errors) f(id, error)),
  policy AS (
    SELECT k.kind, p.* FROM (SELECT DISTINCT j.kind FROM pod.jobs j JOIN failed USING (id)) k,
                            LATERAL pod.job_policy(k.kind) p),
  changed AS (
    UPDATE pod.jobs j
       SET state = CASE WHEN j.attempts > p.retries THEN 'dead'::pod.job_state ELSE 'waiting' END,
           run_at = CASE WHEN j.attempts > p.retries THEN j.run_at
                         ELSE now() + pod.job_backoff(j.attempts, p.base_delay, p.factor) END,
           finished_at = CASE WHEN j.attempts > p.retries THEN now() END,
           lease_until = NULL,
           last_error = left(failed.error, 2000)
      FROM failed, policy p
     WHERE j.id = failed.id AND p.kind = j.kind AND j.state = 'running' AND j.worker = job_fail.worker
    RETURNING 1)
  SELECT count(*) INTO n FROM changed;
  RETURN n;
END $$;

CREATE FUNCTION pod.job_fail(job_id bigint, error text, worker text) RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.job_fail(ARRAY[job_id], ARRAY[error], worker);

-- Gives leased jobs back untouched (a worker stopping): claimable at once, the
-- attempt not counted. Wakes the kind's workers.
CREATE FUNCTION pod.job_release(job_ids bigint[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  WITH released AS (
    UPDATE pod.jobs SET state = 'waiting', attempts = greatest(attempts - 1, 0), run_at = now(), worker = NULL,
                        lease_until = NULL
     WHERE id = ANY (job_ids) AND state = 'running' AND jobs.worker = job_release.worker
    RETURNING kind)
  SELECT count(*), (SELECT count(pg_notify(pod.job_channel(k), ''))
                      FROM (SELECT DISTINCT kind FROM pod.jobs WHERE id = ANY (job_ids)) d(k))
    INTO n FROM released;
  RETURN n;
END $$;

-- Declares dead the jobs whose lease expired on their last attempt, then removes
-- done jobs past their kind's retention and dead jobs past queue.dead_retention.
-- Returns how many jobs were removed. The policy is read once per call (the pod
-- settings) and per kind (a primary-key probe of pod.job_kinds), not once per row; the
-- removal walks jobs_finished_idx from the oldest up to the shortest retention.
CREATE FUNCTION pod.jobs_prune() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.jobs j
     SET state = 'dead', finished_at = now(), lease_until = NULL,
         last_error = 'lease expired on the last attempt (the worker stopped or crashed)'
    FROM (SELECT (pod.setting('queue.retries'))::integer AS retries) d
   WHERE j.state = 'running' AND j.lease_until < now()
     AND j.attempts > coalesce((SELECT k.retries FROM pod.job_kinds k WHERE k.kind = j.kind), d.retries);
  WITH d AS MATERIALIZED (
    SELECT (pod.setting('queue.retention') #>> '{}')::interval AS retention,
           (pod.setting('queue.dead_retention') #>> '{}')::interval AS dead_retention),
  bound AS MATERIALIZED (
    SELECT now() - least(d.retention, d.dead_retention,
                         (SELECT min(k.retention) FROM pod.job_kinds k)) AS newest
      FROM d),
  gone AS (
    DELETE FROM pod.jobs j
     USING d, bound
     WHERE j.state IN ('done', 'dead') AND j.finished_at < bound.newest
       AND ((j.state = 'done'
             AND j.finished_at < now() - coalesce((SELECT k.retention FROM pod.job_kinds k WHERE k.kind = j.kind),
                                                  d.retention))
         OR (j.state = 'dead' AND j.finished_at < now() - d.dead_retention))
    RETURNING 1)
  SELECT count(*)::integer FROM gone
$$;

-- One NOTIFY per statement and kind (never per row): workers LISTEN pod_jobs_<kind>;
-- the payload is how many jobs of that kind the statement made ready. A C row trigger
-- counts in memory and the statement trigger notifies (queue.c): no transition table.
-- Only when a worker of the kind is asleep: workers that will claim again need no
-- wake-up, and each notifying commit costs every LISTENing session of the database.
CREATE FUNCTION pod.jobs_notify_count() RETURNS trigger AS 'MODULE_PATHNAME', 'jobs_notify_count' LANGUAGE C;
CREATE FUNCTION pod.jobs_notify_send() RETURNS trigger AS 'MODULE_PATHNAME', 'jobs_notify_send' LANGUAGE C;
CREATE TRIGGER jobs_notify_count BEFORE INSERT ON pod.jobs
  FOR EACH ROW EXECUTE FUNCTION pod.jobs_notify_count();
CREATE TRIGGER jobs_notify AFTER INSERT ON pod.jobs
  FOR EACH STATEMENT EXECUTE FUNCTION pod.jobs_notify_send();

-- The kind's sleep lock (queue.c). pod.job_claim takes and gives it back itself; a
-- worker of its own may hold it explicitly to hear every insert of a kind.
CREATE FUNCTION pod.job_sleep(job_kind text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'job_sleep' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.job_sleep(text) IS 'This session sleeps on a kind: every insert of it notifies pod_jobs_<kind> until pod.job_wake. Waits for inserts that saw no sleeper to commit.';
CREATE FUNCTION pod.job_wake(job_kind text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'job_wake' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.job_wake(text) IS 'Gives back what pod.job_sleep took.';
CREATE FUNCTION pod.job_claim_begin(job_kind text) RETURNS void
  AS 'MODULE_PATHNAME', 'job_claim_begin' LANGUAGE C VOLATILE;
CREATE FUNCTION pod.job_claim_end(job_kind text, full_batch boolean) RETURNS void
  AS 'MODULE_PATHNAME', 'job_claim_end' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION pod.job_sleep(text), pod.job_wake(text), pod.job_claim_begin(text),
  pod.job_claim_end(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.job_sleep(text), pod.job_wake(text) TO pgpod_worker;

-- Admin views ---------------------------------------------------------------------------

CREATE VIEW pod.queue_depth AS
  SELECT kind, state, count(*) AS jobs,
         count(*) FILTER (WHERE state = 'waiting' AND run_at <= now()) AS ready,
         count(*) FILTER (WHERE state = 'running' AND lease_until < now()) AS lease_expired,
         min(created_at) AS oldest_created_at
    FROM pod.jobs GROUP BY kind, state;
COMMENT ON VIEW pod.queue_depth IS 'Jobs by kind and state; ready = waiting and due; lease_expired = running past its lease.';

CREATE VIEW pod.queue_oldest_waiting AS
  SELECT DISTINCT ON (kind) kind, id, target, attempts, run_at, created_at, now() - created_at AS age, last_error
    FROM pod.jobs WHERE state = 'waiting' ORDER BY kind, created_at, id;
COMMENT ON VIEW pod.queue_oldest_waiting IS 'The oldest waiting job of each kind and how long it has waited.';

CREATE VIEW pod.queue_dead AS
  SELECT id, kind, target, attempts, last_error, created_at, finished_at AS died_at, payload
    FROM pod.jobs WHERE state = 'dead';
COMMENT ON VIEW pod.queue_dead IS 'Jobs that spent their retries, with their last error.';

-- Requeues a dead job as new (admin).
CREATE FUNCTION pod.job_retry(job_id bigint) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.jobs SET state = 'waiting', attempts = 0, run_at = now(), worker = NULL, finished_at = NULL,
                      lease_until = NULL
   WHERE id = job_id AND state = 'dead';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no dead job %', job_id USING ERRCODE = 'P0002';
  END IF;
  PERFORM pg_notify(pod.job_channel(kind), '') FROM pod.jobs WHERE id = job_id;
  RETURN true;
END $$;

REVOKE ALL ON pod.jobs, pod.job_kinds FROM PUBLIC;
GRANT SELECT ON pod.jobs, pod.job_kinds, pod.queue_depth, pod.queue_oldest_waiting, pod.queue_dead TO pgpod_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.job_kinds TO pgpod_admin;
GRANT EXECUTE ON FUNCTION pod.job_claim(text, text, integer, interval), pod.job_complete(bigint[], text),
  pod.job_fail(bigint[], text[], text), pod.job_fail(bigint, text, text), pod.job_release(bigint[], text),
  pod.jobs_prune(), pod.job_policy(text) TO pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.job_retry(bigint), pod.jobs_prune(), pod.job_policy(text) TO pgpod_admin;

-- A restore replays job_kinds rows over the built-in ones the extension script has
-- just made: a duplicate kind becomes an update, so pg_restore keeps an admin's
-- per-kind overrides instead of failing on the primary key. (An INSERT of a known
-- kind is therefore an upsert.)
CREATE FUNCTION pod.job_kinds_merge() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.job_kinds SET retries = NEW.retries, base_delay = NEW.base_delay, factor = NEW.factor,
         lease = NEW.lease, retention = NEW.retention, description = NEW.description
   WHERE kind = NEW.kind;
  RETURN CASE WHEN FOUND THEN NULL ELSE NEW END;
END $$;
CREATE TRIGGER job_kinds_merge BEFORE INSERT ON pod.job_kinds
  FOR EACH ROW EXECUTE FUNCTION pod.job_kinds_merge();
-- The identity's sequence too, or restored jobs would collide with new ones.
SELECT pg_catalog.pg_extension_config_dump('pod.jobs_id_seq', '');

-- ../sql/70_federation.sql
-- 70_federation: this pod's identity (URL + RSA key pair), its friends (other pods)
-- with their scores, and the pubsub cache of what friends publish. This file holds
-- the shapes; queue, signing and delivery build on them.

CREATE TABLE pod.identity (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  url text NOT NULL CHECK (url ~ '^https?://[^/\s]+$'),
  public_key text NOT NULL,
  private_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.identity IS 'This pod: its URL and RSA-2048 key pair, made at first run; the private key never leaves the database.';
REVOKE ALL ON pod.identity FROM PUBLIC;
GRANT SELECT (url, public_key, created_at) ON pod.identity TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
SELECT pg_catalog.pg_extension_config_dump('pod.identity', '');

-- Makes the identity at first run; later calls may change the URL, never the key.
CREATE FUNCTION pod.ensure_identity(url text DEFAULT NULL) RETURNS pod.identity
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me pod.identity;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    INSERT INTO pod.identity (url, public_key, private_key)
      SELECT coalesce(ensure_identity.url, 'http://127.0.0.1:8080'), k.public_key, k.private_key
        FROM pod.rsa_generate_keypair(2048) k
      ON CONFLICT (singleton) DO NOTHING;
    SELECT * INTO me FROM pod.identity;
  ELSIF ensure_identity.url IS NOT NULL AND me.url IS DISTINCT FROM ensure_identity.url THEN
    UPDATE pod.identity SET url = ensure_identity.url RETURNING * INTO me;
  END IF;
  RETURN me;
END $$;

CREATE TYPE pod.friend_state AS ENUM ('pending', 'active', 'revoked');

CREATE TABLE pod.friends (
  id bigserial PRIMARY KEY,
  url text NOT NULL UNIQUE CHECK (url ~ '^https?://[^/\s]+$'),
  public_key text,
  score integer NOT NULL DEFAULT 100 CHECK (score BETWEEN 0 AND 1000),
  state pod.friend_state NOT NULL DEFAULT 'pending',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  key_fetched_at timestamptz
);
COMMENT ON TABLE pod.friends IS 'Other pods this pod federates with; score 0..1000 (starts at 100), revoked at 0.';
COMMENT ON COLUMN pod.friends.key_fetched_at IS 'When public_key was last fetched from the pod''s own URL (a verify_key job).';
SELECT pg_catalog.pg_extension_config_dump('pod.friends', '');
SELECT pg_catalog.pg_extension_config_dump('pod.friends_id_seq', '');

CREATE TABLE pod.pubsub_nodes (
  id bigserial PRIMARY KEY,
  service text NOT NULL,
  name text NOT NULL,
  subscribed boolean NOT NULL DEFAULT false,
  analyser text,
  type text,
  synchronised boolean NOT NULL DEFAULT false,
  sync_state text CHECK (sync_state IN ('in_progress', 'completed', 'error', 'no_sync')),
  sync_state_updated timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (service, name)
);
COMMENT ON TABLE pod.pubsub_nodes IS 'Pubsub nodes cached from other pods; analysers decide which are synchronised and how items are parsed.';

CREATE TABLE pod.pubsub_items (
  id bigserial PRIMARY KEY,
  node_id bigint NOT NULL REFERENCES pod.pubsub_nodes ON DELETE CASCADE,
  name text NOT NULL,
  data text NOT NULL,
  parsed jsonb,
  publisher text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (node_id, name)
);
COMMENT ON TABLE pod.pubsub_items IS 'Cached pubsub items: the raw payload and the parsed JSONB fields.';
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_nodes', '');
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_nodes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_items', '');
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_items_id_seq', '');

GRANT SELECT, INSERT, UPDATE, DELETE ON pod.friends, pod.pubsub_nodes, pod.pubsub_items TO pgpod_admin;
GRANT SELECT ON pod.friends TO pgpod_worker;

CREATE VIEW api.identity AS SELECT url, public_key FROM pod.identity;
COMMENT ON VIEW api.identity IS 'This pod''s URL and public key.';
GRANT SELECT ON api.identity TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

CREATE VIEW api.friends WITH (security_invoker = true) AS
  SELECT url, public_key, score, state, created_at FROM pod.friends;
COMMENT ON VIEW api.friends IS 'This pod''s friends (admins only).';
GRANT SELECT ON api.friends TO pgpod_admin;

-- Federation settings -------------------------------------------------------------------

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.inbox_path', '"/rpc/inbox"', 'Path of a friend pod''s inbox; deliveries are POSTed there.'),
  ('federation.friend_list_path', '"/rpc/friend_list"', 'Path that answers a pod''s list of friends (GET, JSON array of URLs).'),
  ('federation.encrypt', 'false', 'Encrypt delivery bodies for the recipient (AES-256-GCM, key wrapped with its RSA-OAEP key) when its key is known.'),
  ('federation.date_window', '1800', 'Seconds an inbound request''s Date may differ from now (PeerTube: 1800).'),
  ('federation.score_success', '10', 'Score added to a friend per delivered request.'),
  ('federation.score_failure', '10', 'Score taken from a friend per failed delivery attempt.'),
  ('federation.score_max', '1000', 'Highest score of a friend.'),
  ('federation.dedup_retention', '"7 days"', 'How long the request ids of applied inbound requests are kept to refuse applying them twice.');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 86400 WHERE name = 'federation.date_window';
UPDATE pod.setting_defaults SET minimum = 0, maximum = 1000
 WHERE name IN ('federation.score_success', 'federation.score_failure', 'federation.score_max');

ALTER TABLE pod.friends ADD COLUMN revoked_at timestamptz;
CREATE INDEX friends_active_idx ON pod.friends (url) WHERE state = 'active';

-- Enqueues a signed delivery of an activity to each of the targets; returns the job
-- ids. The activity gets a request id (its "id") that the receiver de-duplicates on,
-- so retries of the same job are applied once.
CREATE FUNCTION pod.deliver(targets text[], activity_type text, activity jsonb DEFAULT '{}')
  RETURNS SETOF bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me text := (SELECT url FROM pod.identity);
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  RETURN QUERY
    INSERT INTO pod.jobs (kind, target, payload)
      SELECT 'deliver', t, jsonb_build_object('activity',
               activity || jsonb_build_object('id', gen_random_uuid(), 'type', activity_type, 'actor', me,
                                              'published', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
        FROM unnest(targets) t
    RETURNING id;
END $$;

-- Making friends ----------------------------------------------------------------------

-- The seed's rule: befriend the pods asked, plus every pod that appears in at least
-- half of the lists they answered (lists: {"<asked url>": ["<url>", ...], ...}); never
-- this pod itself. Pure, so it is tested alone.
CREATE FUNCTION pod.friends_to_add(asked text[], lists jsonb, self_url text DEFAULT NULL) RETURNS text[]
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  WITH answered AS (
    SELECT l.key AS lister, l.value AS list FROM jsonb_each(coalesce(lists, '{}')) l
     WHERE jsonb_typeof(l.value) = 'array'),
  listed AS (
    SELECT rtrim(u, '/') AS url, count(DISTINCT a.lister) AS lists
      FROM answered a, jsonb_array_elements_text(a.list) u GROUP BY 1),
  chosen AS (
    SELECT rtrim(u, '/') AS url FROM unnest(asked) u
    UNION
    SELECT url FROM listed WHERE lists * 2 >= (SELECT count(*) FROM answered))
  SELECT coalesce(array_agg(url ORDER BY url), '{}') FROM chosen
   WHERE url IS DISTINCT FROM rtrim(self_url, '/') AND url ~ '^https?://[^/\s]+$'
$$;
COMMENT ON FUNCTION pod.friends_to_add(text[], jsonb, text) IS 'The make-friends rule: the pods asked plus those in at least half of their lists.';

-- Starts making friends with the given pods (asynchronous: the federator asks them for
-- their lists, then pod.make_friends_finish befriends). Returns the job id.
CREATE FUNCTION pod.make_friends(urls text[]) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE bad text;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may make friends' USING ERRCODE = '42501';
  END IF;
  IF urls IS NULL OR cardinality(urls) = 0 THEN
    RAISE EXCEPTION 'make_friends needs at least one pod URL' USING ERRCODE = '22023';
  END IF;
  SELECT u INTO bad FROM unnest(urls) u WHERE u IS NULL OR rtrim(u, '/') !~ '^https?://[^/\s]+$' LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'not a pod URL: %', coalesce(quote_literal(bad), 'NULL') USING ERRCODE = '22023',
      HINT = 'A pod URL is scheme://host[:port], without a path.';
  END IF;
  RETURN pod.job_enqueue('make_friends',
    jsonb_build_object('urls', (SELECT jsonb_agg(DISTINCT rtrim(u, '/')) FROM unnest(urls) u)));
END $$;

-- The second half of make_friends (called by the federator with the lists it got):
-- adds the chosen pods as pending friends and sends each a signed friend request
-- (URL and public key). Pods already known (including revoked ones) are left alone.
CREATE FUNCTION pod.make_friends_finish(job_id bigint, worker text, lists jsonb) RETURNS text[]
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  job pod.jobs;
  me pod.identity;
  added text[];
BEGIN
  SELECT * INTO job FROM pod.jobs j WHERE j.id = job_id AND j.kind = 'make_friends'
     AND j.state = 'running' AND j.worker = make_friends_finish.worker FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no make_friends job % leased to %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  SELECT * INTO me FROM pod.identity;
  WITH chosen AS (
    SELECT unnest(pod.friends_to_add(ARRAY(SELECT jsonb_array_elements_text(job.payload -> 'urls')),
                                     lists, me.url)) AS url),
  ins AS (
    INSERT INTO pod.friends (url, state) SELECT url, 'pending' FROM chosen
      ON CONFLICT (url) DO NOTHING RETURNING url)
  SELECT coalesce(array_agg(url ORDER BY url), '{}') INTO added FROM ins;
  PERFORM pod.deliver(added, 'friend.request', jsonb_build_object('public_key', me.public_key));
  UPDATE pod.jobs SET payload = payload || jsonb_build_object('lists', lists, 'added', added)
   WHERE id = job_id;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  RETURN added;
END $$;

-- The federator's form: the pods asked and their raw answers (NULL or not a JSON
-- array = no list from that pod).
CREATE FUNCTION pod.make_friends_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS text[]
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  lists jsonb := '{}';
  list jsonb;
BEGIN
  IF cardinality(urls) IS DISTINCT FROM cardinality(answers) THEN
    RAISE EXCEPTION 'urls and answers must have the same length' USING ERRCODE = '22023';
  END IF;
  FOR i IN 1 .. coalesce(cardinality(urls), 0) LOOP
    BEGIN
      list := answers[i]::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      list := NULL;
    END;
    IF jsonb_typeof(list) = 'array' THEN
      lists := lists || jsonb_build_object(rtrim(urls[i], '/'), list);
    END IF;
  END LOOP;
  RETURN pod.make_friends_finish(job_id, worker, lists);
END $$;

-- The federator's GET jobs: a make_friends job (each asked pod's friend list) or a
-- verify_key job (a pod's identity document). Claims one such job and returns one
-- signed GET per pod to ask (the Date is fresh on every attempt).
CREATE FUNCTION pod.fetches_claim(worker text)
  RETURNS TABLE (job_id bigint, kind text, pod_url text, url text, headers text[])
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me pod.identity;
  at timestamptz := clock_timestamp();
  j pod.jobs;
  path text;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  SELECT * INTO j FROM pod.job_claim('make_friends', worker, 1);
  IF FOUND THEN
    path := pod.setting('federation.friend_list_path') #>> '{}';
    RETURN QUERY
      SELECT j.id, j.kind, u.pod, u.pod || path,
             pod.httpsig_sign_request('GET', u.pod || path, '', at, me.url || '#main-key', me.private_key)
        FROM (SELECT rtrim(x, '/') AS pod FROM jsonb_array_elements_text(j.payload -> 'urls') x) u;
    RETURN;
  END IF;
  SELECT * INTO j FROM pod.job_claim('verify_key', worker, 1);
  IF FOUND THEN
    path := pod.setting('federation.identity_path') #>> '{}';
    RETURN QUERY
      SELECT j.id, j.kind, j.payload ->> 'url', (j.payload ->> 'url') || path,
             pod.httpsig_sign_request('GET', (j.payload ->> 'url') || path, '', at, me.url || '#main-key', me.private_key);
  END IF;
END $$;
COMMENT ON FUNCTION pod.fetches_claim(text) IS 'Claims one make_friends or verify_key job: the signed GETs to send.';

-- The end of a fetch job: what each pod answered (NULL: nothing usable).
CREATE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE k text := (SELECT j.kind FROM pod.jobs j WHERE j.id = job_id);
BEGIN
  IF k = 'make_friends' THEN
    RETURN to_jsonb(pod.make_friends_finish(job_id, worker, urls, answers));
  ELSIF k = 'verify_key' THEN
    IF cardinality(answers) IS DISTINCT FROM 1 THEN
      RAISE EXCEPTION 'a verify_key job has one answer' USING ERRCODE = '22023';
    END IF;
    RETURN pod.verify_key_finish(job_id, worker, answers[1]);
  END IF;
  RAISE EXCEPTION 'job % is not a fetch job', job_id USING ERRCODE = 'P0002';
END $$;
GRANT EXECUTE ON FUNCTION pod.fetches_claim(text), pod.fetches_finish(bigint, text, text[], text[]) TO pgpod_worker;

-- Scores --------------------------------------------------------------------------------

-- Delivery outcomes change the target friend's score, batched per statement: a row
-- trigger (C, scores.c) tallies the outcomes its WHEN clause lets through (deliveries
-- leaving 'running' with their attempt counted: a release is no outcome), and the
-- statement trigger applies the tally here, one UPDATE per friend. The federator
-- reports outcomes in batches, so a busy friend is not a hot row.
CREATE FUNCTION pod.friends_apply_outcomes(targets text[], delivered integer[], failed integer[]) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  plus integer := (pod.setting('federation.score_success'))::integer;
  minus integer := (pod.setting('federation.score_failure'))::integer;
  top integer := (pod.setting('federation.score_max'))::integer;
BEGIN
  UPDATE pod.friends f
     SET score = greatest(0, least(top, f.score + d.change)),
         state = CASE WHEN f.score + d.change <= 0 THEN 'revoked' ELSE f.state END,
         updated_at = now()
    FROM (SELECT t, sum(dl * plus - fl * minus) AS change
            FROM unnest(targets, delivered, failed) x(t, dl, fl) GROUP BY t) d
   WHERE f.url = d.t AND f.state <> 'revoked' AND d.change <> 0;
END $$;

CREATE FUNCTION pod.jobs_score_outcome() RETURNS trigger
  AS 'MODULE_PATHNAME', 'jobs_score_outcome' LANGUAGE C;
CREATE FUNCTION pod.jobs_score_apply() RETURNS trigger
  AS 'MODULE_PATHNAME', 'jobs_score_apply' LANGUAGE C;
CREATE TRIGGER jobs_score_outcome AFTER UPDATE ON pod.jobs FOR EACH ROW
  WHEN (OLD.state = 'running' AND NEW.state IN ('done', 'waiting', 'dead') AND NEW.kind = 'deliver'
        AND NEW.attempts = OLD.attempts AND NEW.target IS NOT NULL)
  EXECUTE FUNCTION pod.jobs_score_outcome();
CREATE TRIGGER jobs_score_apply AFTER UPDATE ON pod.jobs
  FOR EACH STATEMENT EXECUTE FUNCTION pod.jobs_score_apply();

-- A revoked friend loses what came from it: its videos, its cached pubsub items and
-- the deliveries still waiting for it. It stays (blocked) until pod.unblock_friend.
-- Runs as the owner: an admin revoking a friend by hand needs no right on the queue.
CREATE FUNCTION pod.friends_revoked() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  NEW.revoked_at := now();
  NEW.score := 0;
  DELETE FROM pod.videos WHERE origin = NEW.url;
  DELETE FROM pod.pubsub_items WHERE publisher = NEW.url;
  DELETE FROM pod.pubsub_nodes WHERE service = NEW.url;
  DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = NEW.url AND state = 'waiting';
  RAISE LOG 'pgpod: friend % revoked', NEW.url;
  RETURN NEW;
END $$;
CREATE TRIGGER friends_revoked BEFORE UPDATE OF state ON pod.friends
  FOR EACH ROW WHEN (NEW.state = 'revoked' AND OLD.state <> 'revoked')
  EXECUTE FUNCTION pod.friends_revoked();

-- Admin: lets a revoked pod be befriended again (its row is removed).
CREATE FUNCTION pod.unblock_friend(friend_url text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may unblock a pod' USING ERRCODE = '42501';
  END IF;
  DELETE FROM pod.friends WHERE url = rtrim(friend_url, '/') AND state = 'revoked';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no revoked pod %', coalesce(quote_literal(friend_url), 'NULL') USING ERRCODE = 'P0002';
  END IF;
  RETURN true;
END $$;

-- Admin: tells a friend we leave it, then forgets it and its videos.
CREATE FUNCTION pod.remove_friend(friend_url text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE f pod.friends;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may remove a friend' USING ERRCODE = '42501';
  END IF;
  DELETE FROM pod.friends WHERE url = rtrim(friend_url, '/') AND state <> 'revoked' RETURNING * INTO f;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no friend %', coalesce(quote_literal(friend_url), 'NULL') USING ERRCODE = 'P0002';
  END IF;
  DELETE FROM pod.videos WHERE origin = f.url;
  DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = f.url AND state = 'waiting';
  IF f.state = 'active' THEN
    PERFORM pod.deliver(ARRAY[f.url], 'friend.remove');
  END IF;
  RETURN true;
END $$;

-- Admin: leaves the network: every friend is told and forgotten (blocked pods stay
-- blocked). Returns how many friends were left.
CREATE FUNCTION pod.leave_network() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer := 0; u text;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may leave the network' USING ERRCODE = '42501';
  END IF;
  FOR u IN SELECT url FROM pod.friends WHERE state <> 'revoked' ORDER BY url LOOP
    PERFORM pod.remove_friend(u);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

CREATE FUNCTION api.friend_list() RETURNS json
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT coalesce(json_agg(url ORDER BY url), '[]') FROM pod.friends WHERE state = 'active';
  END;
COMMENT ON FUNCTION api.friend_list() IS 'URLs of this pod''s active friends (what make_friends asks other pods).';
GRANT EXECUTE ON FUNCTION api.friend_list() TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

GRANT EXECUTE ON FUNCTION pod.make_friends(text[]), pod.unblock_friend(text), pod.remove_friend(text),
  pod.leave_network() TO pgpod_admin;
GRANT EXECUTE ON FUNCTION pod.make_friends_finish(bigint, text, jsonb), pod.make_friends_finish(bigint, text, text[], text[]) TO pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.friends_to_add(text[], jsonb, text) TO pgpod_admin, pgpod_worker;

-- ../sql/71_httpsig.sql
-- 71_httpsig: HTTP Signatures (draft-cavage, as PeerTube and Mastodon send them) over
-- the C primitives of httpsig.c and envelope.c, and the claim of deliveries that
-- signs each request at claim time (fresh Date on every attempt; the private key
-- never leaves the database).

CREATE FUNCTION pod.rsa_sha256_sign(data bytea, private_key text) RETURNS bytea
  AS 'MODULE_PATHNAME', 'rsa_sha256_sign' LANGUAGE C STRICT STABLE PARALLEL SAFE;
CREATE FUNCTION pod.rsa_sha256_verify(data bytea, signature bytea, public_key text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'rsa_sha256_verify' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION pod.envelope_seal(plaintext bytea, public_key text,
                                  OUT wrapped_key bytea, OUT iv bytea, OUT tag bytea, OUT ciphertext bytea)
  AS 'MODULE_PATHNAME', 'envelope_seal' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
CREATE FUNCTION pod.envelope_open(wrapped_key bytea, iv bytea, tag bytea, ciphertext bytea, private_key text)
  RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_open' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.envelope_seal(bytea, text) IS 'AES-256-GCM encryption of a body with a fresh key wrapped by RSA-OAEP (SHA-256) for the recipient.';

-- RFC 7231 IMF-fixdate, the Date header.
CREATE FUNCTION pod.http_date(at timestamptz) RETURNS text
  LANGUAGE sql STABLE STRICT PARALLEL SAFE
  RETURN to_char(at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS "GMT"');

-- The Digest header value of a body.
CREATE FUNCTION pod.http_digest(body text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN 'SHA-256=' || encode(sha256(convert_to(body, 'UTF8')), 'base64');

-- The JSON body of a sealed message: {"encrypted": {key, iv, tag, data}} in base64.
CREATE FUNCTION pod.envelope_seal_json(body text, public_key text) RETURNS text
  LANGUAGE sql VOLATILE STRICT
  RETURN (SELECT jsonb_build_object('encrypted', jsonb_build_object(
                   'key', translate(encode(s.wrapped_key, 'base64'), E'\n', ''),
                   'iv', encode(s.iv, 'base64'), 'tag', encode(s.tag, 'base64'),
                   'data', translate(encode(s.ciphertext, 'base64'), E'\n', '')))::text
            FROM pod.envelope_seal(convert_to(body, 'UTF8'), public_key) s);

-- The signing string of draft-cavage: one "name: value" line per signed header.
-- headers holds the request's headers with lower-case names; 22023 when one is missing.
CREATE FUNCTION pod.httpsig_signing_string(signed_headers text[], method text, path text, headers jsonb)
  RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  h text;
  lines text[] := '{}';
BEGIN
  FOREACH h IN ARRAY signed_headers LOOP
    IF h = '(request-target)' THEN
      lines := lines || ('(request-target): ' || lower(method) || ' ' || path);
    ELSIF headers ? h THEN
      lines := lines || (h || ': ' || (headers ->> h));
    ELSE
      RAISE EXCEPTION 'signed header "%" is missing from the request', h USING ERRCODE = '22023';
    END IF;
  END LOOP;
  RETURN array_to_string(lines, E'\n');
END $$;

CREATE FUNCTION pod.httpsig_sign_request(method text, url text, body text, at timestamptz, key_id text, private_key text)
  RETURNS text[]
  AS 'MODULE_PATHNAME', 'httpsig_sign_request' LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.httpsig_sign_request(text, text, text, timestamptz, text, text) IS 'Header lines (Host, Date, Digest, Content-Type, Signature) of a request signed rsa-sha256 over (request-target) host date digest.';
REVOKE EXECUTE ON FUNCTION pod.httpsig_sign_request(text, text, text, timestamptz, text, text) FROM PUBLIC;

-- Signs a request as this pod: returns its headers as "Name: value" lines (Host,
-- Date, Digest, Content-Type, Signature), ready for curl.
CREATE FUNCTION pod.httpsig_sign_request(method text, url text, body text, at timestamptz DEFAULT now())
  RETURNS text[]
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me pod.identity;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  RETURN pod.httpsig_sign_request(method, url, coalesce(body, ''), at, me.url || '#main-key', me.private_key);
END $$;

-- Claims deliveries for a federator and signs each one now: the request to send.
-- The body is the activity's JSON, sealed for the recipient when federation.encrypt
-- is on and its key is known. Outcomes go back through pod.job_complete/job_fail.
CREATE FUNCTION pod.deliveries_claim(worker text, max_jobs integer DEFAULT 100, lease interval DEFAULT NULL)
  RETURNS TABLE (job_id bigint, target text, attempt integer, method text, url text, headers text[], body text)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  inbox text := pod.setting('federation.inbox_path') #>> '{}';
  encrypt boolean := (pod.setting('federation.encrypt'))::boolean;
  at timestamptz := clock_timestamp();
  me pod.identity;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  RETURN QUERY
    WITH claimed AS (
      SELECT c.id, c.target, c.attempts, (c.payload -> 'activity')::text AS plain, f.public_key
        FROM pod.job_claim('deliver', worker, max_jobs, lease) c
        LEFT JOIN pod.friends f ON f.url = c.target),
    bodies AS (
      SELECT c.id, c.target, c.attempts,
             CASE WHEN encrypt AND c.public_key IS NOT NULL
                       AND (c.plain::jsonb ->> 'type') NOT IN ('friend.request', 'friend.accept')
                  THEN pod.envelope_seal_json(c.plain, c.public_key) ELSE c.plain END AS body
        FROM claimed c)
    SELECT b.id, b.target, b.attempts, 'POST', b.target || inbox,
           pod.httpsig_sign_request('POST', b.target || inbox, b.body, at, me.url || '#main-key', me.private_key), b.body
      FROM bodies b ORDER BY b.id;
END $$;
COMMENT ON FUNCTION pod.deliveries_claim(text, integer, interval) IS 'Claims deliveries and returns them signed, ready to send (method, url, header lines, body).';

GRANT EXECUTE ON FUNCTION pod.deliveries_claim(text, integer, interval) TO pgpod_worker;

-- ../sql/72_inbox.sql
-- 72_inbox: the one entry point of inbound federation (POST /rpc/inbox → api.inbox):
-- verify the HTTP signature, Digest and Date, refuse replays, de-duplicate by request
-- id, decrypt, dispatch. A rejected request changes nothing but a row in
-- pod.inbox_rejections. Errors use PostgREST's PTxxx SQLSTATEs (PT400, PT401, PT403).

CREATE TABLE pod.inbox_signatures (
  signature_hash bytea PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.inbox_signatures IS 'Hashes of accepted signatures, kept 2 × federation.date_window to refuse replayed requests.';

CREATE TABLE pod.inbox_applied (
  request_id uuid PRIMARY KEY,
  sender text NOT NULL,
  type text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.inbox_applied IS 'Request ids of applied inbound activities: a retried delivery is acknowledged, not applied twice.';
CREATE INDEX inbox_applied_at_idx ON pod.inbox_applied (applied_at);

CREATE TABLE pod.inbox_rejections (
  id bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now(),
  status integer NOT NULL,
  sqlstate text NOT NULL,
  reason text NOT NULL,
  key_id text,
  headers jsonb,
  body_sha256 bytea
);
COMMENT ON TABLE pod.inbox_rejections IS 'Inbound federation requests that were refused, and why.';
CREATE INDEX inbox_rejections_at_idx ON pod.inbox_rejections (received_at);
GRANT SELECT ON pod.inbox_signatures, pod.inbox_applied, pod.inbox_rejections TO pgpod_admin;

CREATE FUNCTION pod.inbox_reject(sqlstate text, reason text) RETURNS void
  LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = reason;
END $$;

-- Upserts a friend's video from its activity object.
CREATE FUNCTION pod.inbox_video_upsert(sender text, video jsonb) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  id uuid;
  owner text;
BEGIN
  BEGIN
    id := (video ->> 'uuid')::uuid;
  EXCEPTION WHEN invalid_text_representation THEN
    PERFORM pod.inbox_reject('PT400', 'video uuid is not a uuid');
  END;
  IF id IS NULL OR coalesce(video ->> 'name', '') = '' THEN
    PERFORM pod.inbox_reject('PT400', 'video needs a uuid and a name');
  END IF;
  SELECT coalesce(origin, '(local)') INTO owner FROM pod.videos WHERE uuid = id;
  IF owner IS NOT NULL AND owner <> sender THEN
    PERFORM pod.inbox_reject('PT403', 'video ' || id || ' belongs to another pod');
  END IF;
  BEGIN
    INSERT INTO pod.videos AS v (uuid, channel_id, name, description, origin, author, magnet, thumbnail,
                                 state, duration, created_at, updated_at, remote)
      VALUES (id, NULL, video ->> 'name', video ->> 'description', sender, video ->> 'author',
              video ->> 'magnet', video ->> 'thumbnail', 'published',
              make_interval(secs => coalesce((video ->> 'duration')::double precision, 0)),
              coalesce((video ->> 'created_at')::timestamptz, now()),
              coalesce((video ->> 'updated_at')::timestamptz, now()), video)
    ON CONFLICT (uuid) DO UPDATE
      SET name = EXCLUDED.name, description = EXCLUDED.description, author = EXCLUDED.author,
          magnet = EXCLUDED.magnet, thumbnail = EXCLUDED.thumbnail, duration = EXCLUDED.duration,
          updated_at = EXCLUDED.updated_at, remote = EXCLUDED.remote
      WHERE v.origin = EXCLUDED.origin;
  EXCEPTION WHEN check_violation OR invalid_text_representation OR invalid_datetime_format
              OR datetime_field_overflow OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'video is malformed: ' || SQLERRM);
  END;
END $$;

-- Applies one verified, decrypted activity from a sender whose key (sender_key) has
-- verified the request. Returns the reply.
CREATE FUNCTION pod.inbox_dispatch(sender text, sender_key text, activity jsonb) RETURNS jsonb
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  kind text := activity ->> 'type';
  me pod.identity;
  v jsonb;
BEGIN
  CASE kind
  WHEN 'friend.request' THEN
    SELECT * INTO me FROM pod.identity;
    INSERT INTO pod.friends AS f (url, public_key, state) VALUES (sender, sender_key, 'active')
      ON CONFLICT (url) DO UPDATE SET state = 'active', public_key = EXCLUDED.public_key, updated_at = now()
      WHERE f.state = 'pending';
    -- The answer carries our key and our published videos (the seed's "in return").
    PERFORM pod.deliver(ARRAY[sender], 'friend.accept', jsonb_build_object(
      'public_key', me.public_key, 'videos', coalesce((SELECT jsonb_agg(pod.video_object(x) ORDER BY x.created_at)
        FROM pod.videos x WHERE x.origin IS NULL AND x.state = 'published'), '[]')));
    RETURN jsonb_build_object('status', 'befriended');
  WHEN 'friend.accept' THEN
    UPDATE pod.friends SET state = 'active', public_key = sender_key, updated_at = now()
     WHERE url = sender AND state = 'pending';
    IF FOUND THEN
      -- Now that it is a friend, it gets our videos too.
      PERFORM pod.deliver(ARRAY[sender], 'video.published', jsonb_build_object('object', pod.video_object(x)))
         FROM pod.videos x WHERE x.origin IS NULL AND x.state = 'published';
    END IF;
    FOR v IN SELECT jsonb_array_elements(CASE WHEN jsonb_typeof(activity -> 'videos') = 'array'
                                              THEN activity -> 'videos' ELSE '[]' END) LOOP
      PERFORM pod.inbox_video_upsert(sender, v);
    END LOOP;
    RETURN jsonb_build_object('status', 'accepted');
  WHEN 'friend.remove' THEN
    DELETE FROM pod.friends WHERE url = sender AND state <> 'revoked';
    DELETE FROM pod.videos WHERE origin = sender;
    DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = sender AND state = 'waiting';
    RETURN jsonb_build_object('status', 'removed');
  WHEN 'video.published', 'video.updated' THEN
    PERFORM pod.inbox_video_upsert(sender, activity -> 'object');
    RETURN jsonb_build_object('status', 'applied');
  WHEN 'video.removed' THEN
    DELETE FROM pod.videos WHERE uuid = (activity #>> '{object,uuid}')::uuid AND origin = sender;
    RETURN jsonb_build_object('status', 'applied');
  ELSE
    PERFORM pod.inbox_reject('PT400', 'unknown activity type ' || coalesce(quote_literal(kind), 'NULL'));
  END CASE;
  RETURN NULL;
END $$;

-- Does a draft-cavage signature verify with a key? (false for a key or signature
-- that cannot be used at all.)
CREATE FUNCTION pod.inbox_signature_ok(signed text[], method text, path text, headers jsonb, sig bytea, key text)
  RETURNS boolean
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  RETURN pod.rsa_sha256_verify(convert_to(pod.httpsig_signing_string(signed, method, coalesce(path, '/'), headers), 'UTF8'),
                               sig, key);
EXCEPTION WHEN invalid_parameter_value THEN
  RETURN false;
END $$;

-- An activity names its sender as actor and carries a request id (a uuid).
CREATE FUNCTION pod.inbox_check_activity(sender text, activity jsonb) RETURNS void
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  IF rtrim(activity ->> 'actor', '/') IS DISTINCT FROM sender THEN
    PERFORM pod.inbox_reject('PT401', 'actor does not match the signing key');
  END IF;
  IF coalesce(activity ->> 'id', '') !~ '^[0-9a-fA-F-]{36}$' THEN
    PERFORM pod.inbox_reject('PT400', 'activity needs an id (a uuid)');
  END IF;
END $$;

-- The part of an inbound request after its signature verified with sender_key:
-- decrypt, check actor, id and friendship, de-duplicate, dispatch.
CREATE FUNCTION pod.inbox_apply(sender text, sender_key text, activity jsonb) RETURNS jsonb
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  me pod.identity;
  state pod.friend_state := (SELECT f.state FROM pod.friends f WHERE f.url = sender);
BEGIN
  IF activity ? 'encrypted' THEN
    SELECT * INTO me FROM pod.identity;
    BEGIN
      activity := convert_from(pod.envelope_open(
                    decode(activity #>> '{encrypted,key}', 'base64'), decode(activity #>> '{encrypted,iv}', 'base64'),
                    decode(activity #>> '{encrypted,tag}', 'base64'), decode(activity #>> '{encrypted,data}', 'base64'),
                    me.private_key), 'UTF8')::jsonb;
    EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation OR null_value_not_allowed
                OR character_not_in_repertoire THEN
      PERFORM pod.inbox_reject('PT400', 'encrypted body cannot be opened: ' || SQLERRM);
    END;
    IF activity IS NULL OR jsonb_typeof(activity) <> 'object' THEN
      PERFORM pod.inbox_reject('PT400', 'encrypted body is not a JSON object');
    END IF;
  END IF;

  PERFORM pod.inbox_check_activity(sender, activity);
  IF state = 'revoked' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is blocked');
  END IF;
  IF activity ->> 'type' NOT IN ('friend.request', 'friend.accept') AND state IS DISTINCT FROM 'active' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is not a friend');
  END IF;

  INSERT INTO pod.inbox_applied (request_id, sender, type) VALUES ((activity ->> 'id')::uuid, sender, activity ->> 'type')
    ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('status', 'duplicate', 'id', activity ->> 'id');
  END IF;
  RETURN pod.inbox_dispatch(sender, sender_key, activity) || jsonb_build_object('id', activity ->> 'id');
END $$;

-- Requests from pods whose key this pod does not know yet (a friend request, or the
-- acceptance of ours). The key is never taken from the request itself: it is
-- fetched from the pod's own URL (job kind verify_key, the federator GETs
-- <pod>/identity), and only then is the request checked and applied — so a pod
-- cannot claim another pod's URL with a key of its own.
CREATE TABLE pod.inbox_held (
  id bigserial PRIMARY KEY,
  sender text NOT NULL,
  method text NOT NULL,
  path text NOT NULL,
  headers jsonb NOT NULL,
  signed text[] NOT NULL,
  signature bytea NOT NULL,
  activity jsonb NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.inbox_held IS 'Signed requests from pods whose key is being fetched from their URL (verify_key jobs); applied or refused once it is known.';
CREATE INDEX inbox_held_sender_idx ON pod.inbox_held (sender);
SELECT pg_catalog.pg_extension_config_dump('pod.inbox_held', '');
SELECT pg_catalog.pg_extension_config_dump('pod.inbox_held_id_seq', '');
GRANT SELECT ON pod.inbox_held TO pgpod_admin;

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.identity_path', '"/identity"', 'Path where a pod publishes its URL and public key (GET, JSON); a new pod''s key is fetched from there.'),
  ('federation.key_refetch_interval', '"10 minutes"', 'A friend whose requests stop verifying has its key fetched again from its URL (a changed key), at most this often.');
INSERT INTO pod.job_kinds (kind, retries, description) VALUES
  ('verify_key', 6, 'Fetch a pod''s public key from its own URL, then apply the requests held for it (federator).');

-- Verifies and applies one inbound request; raises PT400/PT401/PT403 when refused.
-- headers: the request's headers with lower-case names (as the gateway's
-- request.headers); path: the request target (path and query).
CREATE FUNCTION pod.inbox_receive(body json, headers jsonb, method text DEFAULT 'POST', path text DEFAULT NULL)
  RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  raw text := body::text;
  params jsonb;
  signed text[];
  sent_at timestamptz;
  window_s integer := (pod.setting('federation.date_window'))::integer;
  sender text;
  friend pod.friends;
  activity jsonb;
  sig bytea;
BEGIN
  IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
    PERFORM pod.inbox_reject('PT400', 'request headers are missing');
  END IF;
  IF NOT headers ? 'signature' THEN
    PERFORM pod.inbox_reject('PT401', 'request is not signed (no Signature header)');
  END IF;
  SELECT jsonb_object_agg(m[1], m[2]) INTO params
    FROM regexp_matches(headers ->> 'signature', '([A-Za-z]+)="([^"]*)"', 'g') m;
  IF params IS NULL OR NOT params ?& ARRAY['keyId', 'signature'] THEN
    PERFORM pod.inbox_reject('PT401', 'Signature header needs keyId and signature');
  END IF;
  -- hs2019 (draft-cavage-12: the algorithm is the key's) is what GoToSocial and newer
  -- Mastodon send; a pod's key is RSA, so it is RSA-SHA256 either way.
  IF coalesce(params ->> 'algorithm', 'rsa-sha256') NOT IN ('rsa-sha256', 'hs2019') THEN
    PERFORM pod.inbox_reject('PT401', 'signature algorithm must be rsa-sha256 (or hs2019 with an RSA key)');
  END IF;
  signed := string_to_array(lower(coalesce(params ->> 'headers', 'date')), ' ');
  IF NOT signed @> ARRAY['(request-target)', 'host', 'date', 'digest'] THEN
    PERFORM pod.inbox_reject('PT401', 'signature must cover (request-target) host date digest');
  END IF;

  BEGIN
    sent_at := (headers ->> 'date')::timestamptz;
  EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
    PERFORM pod.inbox_reject('PT400', 'Date header is not a date');
  END;
  IF sent_at IS NULL THEN
    PERFORM pod.inbox_reject('PT401', 'Date header is missing');
  END IF;
  IF abs(extract(epoch FROM clock_timestamp() - sent_at)) > window_s THEN
    PERFORM pod.inbox_reject('PT401', format('Date is more than %s s away from now', window_s));
  END IF;
  IF headers ->> 'digest' IS DISTINCT FROM pod.http_digest(coalesce(raw, '')) THEN
    PERFORM pod.inbox_reject('PT400', 'Digest does not match the body');
  END IF;

  BEGIN
    activity := raw::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    PERFORM pod.inbox_reject('PT400', 'body is not JSON');
  END;
  IF jsonb_typeof(activity) IS DISTINCT FROM 'object' THEN
    PERFORM pod.inbox_reject('PT400', 'body must be a JSON object');
  END IF;
  BEGIN
    sig := decode(params ->> 'signature', 'base64');
  EXCEPTION WHEN invalid_parameter_value THEN
    PERFORM pod.inbox_reject('PT401', 'signature is not base64');
  END;

  sender := rtrim(split_part(params ->> 'keyId', '#', 1), '/');
  IF sender !~ '^https?://[^/\s]+$' THEN
    PERFORM pod.inbox_reject('PT401', 'keyId is not a pod URL');
  END IF;
  SELECT * INTO friend FROM pod.friends WHERE url = sender;
  IF friend.state = 'revoked' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is blocked');
  END IF;

  IF friend.public_key IS NULL THEN
    -- A pod we know no key of: a friend request, or the acceptance of ours, is worth
    -- fetching its key for; anything else from a pod whose key is being fetched (a
    -- new friend's first deliveries racing its acceptance) waits with it, in order.
    -- The request waits (202) until the key published at the pod's URL is known; its
    -- signature is checked against that key then (pod.verify_key_finish).
    IF NOT (activity ->> 'type' = 'friend.request' OR (activity ->> 'type' = 'friend.accept' AND friend.state = 'pending')
            OR EXISTS (SELECT 1 FROM pod.inbox_held h WHERE h.sender = rtrim(split_part(params ->> 'keyId', '#', 1), '/'))) THEN
      PERFORM pod.inbox_reject('PT401', 'unknown key ' || quote_literal(params ->> 'keyId'));
    END IF;
    -- (a sealed body is opened, and checked, when it is applied)
    IF NOT activity ? 'encrypted' THEN
      PERFORM pod.inbox_check_activity(sender, activity);
    END IF;
    INSERT INTO pod.inbox_signatures (signature_hash) VALUES (sha256(sig)) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      PERFORM pod.inbox_reject('PT401', 'replayed request (signature already seen)');
    END IF;
    INSERT INTO pod.inbox_held (sender, method, path, headers, signed, signature, activity)
      VALUES (sender, method, coalesce(path, '/'), headers, signed, sig, activity);
    IF NOT EXISTS (SELECT 1 FROM pod.jobs WHERE kind = 'verify_key' AND target = sender AND state IN ('waiting', 'running')) THEN
      PERFORM pod.job_enqueue('verify_key', jsonb_build_object('url', sender), sender);
    END IF;
    PERFORM set_config('response.status', '202', true);
    RETURN jsonb_build_object('status', 'held', 'id', activity ->> 'id',
                              'reason', 'the key of ' || sender || ' is being fetched from its URL');
  END IF;

  IF NOT pod.inbox_signature_ok(signed, method, path, headers, sig, friend.public_key) THEN
    PERFORM pod.inbox_reject('PT401', 'signature does not verify');
  END IF;
  INSERT INTO pod.inbox_signatures (signature_hash) VALUES (sha256(sig)) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    PERFORM pod.inbox_reject('PT401', 'replayed request (signature already seen)');
  END IF;
  RETURN pod.inbox_apply(sender, friend.public_key, activity);
END $$;

-- The end of a verify_key job (called by the federator with what <pod>/identity
-- answered, NULL when it answered nothing usable): the key is taken when the
-- document names that pod's URL; then each request held for the pod is checked
-- against it and applied, or refused (a row in pod.inbox_rejections). No answer:
-- the job fails and is retried; when it dies, pod.inbox_prune refuses what waits.
-- Returns what happened to each held request.
CREATE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  job pod.jobs;
  pod_url text;
  doc jsonb;
  key text;
  h pod.inbox_held;
  reply jsonb;
  results jsonb := '[]';
  state text;
  msg text;
  old_key text;
BEGIN
  SELECT * INTO job FROM pod.jobs j WHERE j.id = job_id AND j.kind = 'verify_key'
     AND j.state = 'running' AND j.worker = verify_key_finish.worker FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no verify_key job % leased to %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  pod_url := job.payload ->> 'url';
  BEGIN
    doc := answer::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    doc := NULL;
  END;
  IF jsonb_typeof(doc) = 'array' AND jsonb_array_length(doc) = 1 THEN
    doc := doc -> 0;   -- the answer of a PostgREST-style view
  END IF;
  IF jsonb_typeof(doc) = 'object' AND rtrim(doc ->> 'url', '/') = pod_url AND doc ->> 'public_key' LIKE '-----BEGIN PUBLIC KEY-----%' THEN
    key := doc ->> 'public_key';
  END IF;
  IF key IS NULL THEN
    PERFORM pod.job_fail(ARRAY[job_id], ARRAY['no identity document for ' || pod_url || ' at its URL: '
                         || coalesce(left(answer, 200), 'no answer')], worker);
    RETURN jsonb_build_object('status', 'failed');
  END IF;

  FOR h IN SELECT * FROM pod.inbox_held WHERE sender = pod_url ORDER BY id FOR UPDATE LOOP
    BEGIN
      IF NOT pod.inbox_signature_ok(h.signed, h.method, h.path, h.headers, h.signature, key) THEN
        PERFORM pod.inbox_reject('PT401', 'signature does not verify with the key published at ' || pod_url);
      END IF;
      reply := pod.inbox_apply(pod_url, key, h.activity);
    EXCEPTION WHEN SQLSTATE 'PT400' OR SQLSTATE 'PT401' OR SQLSTATE 'PT403' THEN
      GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
      INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256)
        VALUES (substr(state, 3)::integer, state, msg, pod_url || '#main-key', h.headers,
                sha256(convert_to(h.activity::text, 'UTF8')));
      RAISE LOG 'pgpod: held request from % refused (%): %', pod_url, state, msg;
      reply := jsonb_build_object('status', 'refused', 'code', state, 'message', msg);
    END;
    DELETE FROM pod.inbox_held WHERE id = h.id;
    results := results || reply;
  END LOOP;
  -- A friend that changed its key (pod.friend_keys_refresh asked): the key published
  -- at its URL is its key from now on.
  SELECT f.public_key INTO old_key FROM pod.friends f WHERE f.url = pod_url AND f.state <> 'revoked';
  UPDATE pod.friends f SET public_key = key, key_fetched_at = now(), updated_at = now()
   WHERE f.url = pod_url AND f.state <> 'revoked';
  IF old_key IS DISTINCT FROM key AND old_key IS NOT NULL THEN
    RAISE LOG 'pgpod: the key of % changed (the one published at its URL is taken)', pod_url;
  END IF;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  RETURN jsonb_build_object('status', 'verified', 'applied', results);
END $$;
GRANT EXECUTE ON FUNCTION pod.verify_key_finish(bigint, text, text) TO pgpod_worker;

-- Key rotation. A friend's requests that stop verifying (a row 'signature does not
-- verify' in pod.inbox_rejections since its key was last fetched) have its key
-- fetched again from its URL (a verify_key job; pod.verify_key_finish takes the key
-- published there), at most once per federation.key_refetch_interval. The refused
-- requests stay refused, with 401 (the sender retries them, as it retries any failed
-- delivery); the request only left a log row, and the federator calls this with its
-- pruning. Returns how many keys are to be fetched.
CREATE FUNCTION pod.friend_keys_refresh() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH due AS (
    SELECT f.url FROM pod.friends f
     WHERE f.state IN ('pending', 'active') AND f.public_key IS NOT NULL
       AND (f.key_fetched_at IS NULL
            OR f.key_fetched_at < now() - (pod.setting('federation.key_refetch_interval') #>> '{}')::interval)
       AND EXISTS (SELECT 1 FROM pod.inbox_rejections r
                    WHERE r.received_at > greatest(f.key_fetched_at, now() - interval '1 day')
                      AND r.reason = 'signature does not verify'
                      AND rtrim(split_part(r.key_id, '#', 1), '/') = f.url)
       AND NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'verify_key' AND j.target = f.url
                                                  AND j.state IN ('waiting', 'running'))),
  queued AS (
    SELECT pod.job_enqueue('verify_key', jsonb_build_object('url', url), url) FROM due)
  SELECT count(*)::integer FROM queued
$$;
REVOKE ALL ON FUNCTION pod.friend_keys_refresh() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.friend_keys_refresh() TO pgpod_worker, pgpod_admin;

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.inbox_reject_mode', '"status"', 'How api.inbox refuses a request: "raise" a PT400/PT401/PT403 error (the gateway answers that status; the refusal is logged in the server log only, since the error rolls back) or "status" (commit a row in pod.inbox_rejections and answer through the response.status GUC, for gateways that honour it as PostgREST does).');
UPDATE pod.setting_defaults SET allowed = '["raise", "status"]' WHERE name = 'federation.inbox_reject_mode';

-- POST /rpc/inbox. A refused request gets 400/401/403 with {"code", "message"}: by a
-- PTxxx error, or (federation.inbox_reject_mode = "status") by response.status with a
-- row in pod.inbox_rejections. Either way it changes nothing else.
CREATE FUNCTION api.inbox(json) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  hdrs jsonb;
  reply jsonb;
  state text;
  msg text;
BEGIN
  BEGIN
    hdrs := nullif(current_setting('request.headers', true), '')::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    hdrs := NULL;
  END;
  BEGIN
    reply := pod.inbox_receive($1, hdrs, coalesce(nullif(current_setting('request.method', true), ''), 'POST'),
                               coalesce(nullif(current_setting('request.path', true), ''), '/rpc/inbox'));
    RETURN reply::json;
  EXCEPTION WHEN SQLSTATE 'PT400' OR SQLSTATE 'PT401' OR SQLSTATE 'PT403' THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
  END;
  RAISE LOG 'pgpod: inbox refused a request (%): % [keyId %]', state, msg,
    coalesce(substring(hdrs ->> 'signature' FROM 'keyId="([^"]*)"'), 'none');
  IF pod.setting('federation.inbox_reject_mode') #>> '{}' IS DISTINCT FROM 'status' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
  END IF;
  INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256)
    VALUES (substr(state, 3)::integer, state, msg,
            substring(hdrs ->> 'signature' FROM 'keyId="([^"]*)"'), hdrs, sha256(convert_to(coalesce($1::text, ''), 'UTF8')));
  PERFORM set_config('response.status', substr(state, 3), true);
  IF state = 'PT401' THEN
    -- a 401 names its scheme (RFC 9110 11.6.1; the challenge of the HTTP Signatures draft)
    PERFORM set_config('response.headers', json_build_array(json_build_object('WWW-Authenticate',
      'Signature realm="pgpod",headers="(request-target) host date digest"'))::text, true);
  END IF;
  RETURN json_build_object('code', state, 'message', msg);
END $$;
COMMENT ON FUNCTION api.inbox(json) IS 'Inbound federation: a signed (and maybe encrypted) activity from another pod.';
GRANT EXECUTE ON FUNCTION api.inbox(json) TO pgpod_anon, pgpod_user, pgpod_admin;

-- Removes inbox records past their use (signatures after 2 × date window, applied
-- request ids after federation.dedup_retention, rejections after 30 days).
CREATE FUNCTION pod.inbox_prune() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE a integer; b integer; c integer; d integer;
BEGIN
  DELETE FROM pod.inbox_signatures
   WHERE received_at < now() - make_interval(secs => 2 * (pod.setting('federation.date_window'))::integer);
  GET DIAGNOSTICS a = ROW_COUNT;
  DELETE FROM pod.inbox_applied WHERE applied_at < now() - (pod.setting('federation.dedup_retention') #>> '{}')::interval;
  GET DIAGNOSTICS b = ROW_COUNT;
  DELETE FROM pod.inbox_rejections WHERE received_at < now() - interval '30 days';
  GET DIAGNOSTICS c = ROW_COUNT;
  -- Held requests whose key could not be fetched (no verify_key job left alive).
  WITH gone AS (
    DELETE FROM pod.inbox_held h
     WHERE NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'verify_key' AND j.target = h.sender
                                                  AND j.state IN ('waiting', 'running'))
    RETURNING h.*)
  INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256)
    SELECT 401, 'PT401', 'the key of ' || sender || ' could not be fetched from its URL', sender || '#main-key',
           headers, sha256(convert_to(activity::text, 'UTF8'))
      FROM gone;
  GET DIAGNOSTICS d = ROW_COUNT;
  RETURN a + b + c + d;
END $$;
GRANT EXECUTE ON FUNCTION pod.inbox_prune() TO pgpod_worker, pgpod_admin;

-- ../sql/73_video_federation.sql
-- 73_video_federation: what friends learn of this pod's videos. Publishing, changing
-- or removing a local published video enqueues one delivery per active friend, from
-- statement-level triggers (one INSERT into the queue, so one NOTIFY, per statement).

-- The federated description of a video (what the seed's index holds).
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at);

-- Enqueues activity_type for every (video, active friend); one INSERT.
CREATE FUNCTION pod.videos_announce(activity_type text, videos jsonb) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me text := (SELECT url FROM pod.identity);
BEGIN
  IF me IS NULL OR jsonb_array_length(videos) = 0 THEN
    RETURN;
  END IF;
  INSERT INTO pod.jobs (kind, target, payload)
    SELECT 'deliver', f.url, jsonb_build_object('activity', jsonb_build_object(
             'id', gen_random_uuid(), 'type', activity_type, 'actor', me, 'object', o,
             'published', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
      FROM jsonb_array_elements(videos) o, pod.friends f
     WHERE f.state = 'active';
END $$;

-- The triggers run as the owner: a channel owner's INSERT must be able to enqueue
-- deliveries without any privilege on the queue.
CREATE FUNCTION pod.videos_federate_insert() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.published', coalesce(
    (SELECT jsonb_agg(pod.video_object(n)) FROM new_videos n WHERE n.origin IS NULL AND n.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE FUNCTION pod.videos_federate_update() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.published', coalesce(
    (SELECT jsonb_agg(pod.video_object(n)) FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state = 'published' AND o.state <> 'published'), '[]'));
  PERFORM pod.videos_announce('video.updated', coalesce(
    (SELECT jsonb_agg(pod.video_object(n)) FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state = 'published' AND o.state = 'published'
        AND pod.video_object(n) IS DISTINCT FROM pod.video_object(o)), '[]'));
  PERFORM pod.videos_announce('video.removed', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('uuid', n.uuid)) FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state <> 'published' AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE FUNCTION pod.videos_federate_delete() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.removed', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('uuid', o.uuid)) FROM old_videos o
      WHERE o.origin IS NULL AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE TRIGGER videos_federate_insert AFTER INSERT ON pod.videos
  REFERENCING NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_insert();
CREATE TRIGGER videos_federate_update AFTER UPDATE ON pod.videos
  REFERENCING OLD TABLE AS old_videos NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_update();
CREATE TRIGGER videos_federate_delete AFTER DELETE ON pod.videos
  REFERENCING OLD TABLE AS old_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_delete();

-- ../sql/99_privileges.sql
-- 99_privileges: the last word on function privileges. PostgreSQL lets PUBLIC execute
-- every new function (and default privileges do not apply inside an extension
-- script), so this takes EXECUTE back on all of pod and api, leaving only the grants
-- each file made to named roles, plus the helpers row-level security policies and
-- invoker triggers call (pure functions that reveal nothing).

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    pod.jwt_claims(), pod.current_user_id(), pod.is_admin(), pod.setting(text),
    pod.room_affiliation(uuid), pod.can_read_room(uuid), pod.can_moderate_room(uuid),
    pod.can_read_file(uuid), pod.owns_channel(bigint),
    pod.email_is_valid(text), pod.validate_chat_options(jsonb), pod.base64url(bytea), pod.base64url_decode(text)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
