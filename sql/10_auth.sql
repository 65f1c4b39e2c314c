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
-- pod.current_user_id() asks pod.session_user_id() once per transaction and claims
-- (extension/src/identity.c); every change of pod.sessions makes it ask again. The
-- ids are checked by pattern (the canonical form pod.login writes), not by catching
-- the cast's error: an exception block is a subtransaction on every call.
CREATE FUNCTION pod.session_user_id() RETURNS uuid
  AS 'MODULE_PATHNAME', 'session_user_id' LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pod;
COMMENT ON FUNCTION pod.session_user_id() IS 'The user of the claims'' live session (sid, sub), NULL without a sid; PT401 for malformed claims or an ended session (in C: a plpgsql function''s setup was paid by every request).';
CREATE FUNCTION pod.current_user_id() RETURNS uuid
  AS 'MODULE_PATHNAME', 'current_user_id_cached' LANGUAGE C STABLE;
COMMENT ON FUNCTION pod.current_user_id() IS 'The user of the current request''s JWT, or NULL when there is none or its session ended.';
CREATE FUNCTION pod.sessions_forget_user() RETURNS trigger
  AS 'MODULE_PATHNAME', 'sessions_forget_user' LANGUAGE C;
CREATE TRIGGER sessions_forget_user AFTER UPDATE OR DELETE OR TRUNCATE ON pod.sessions
  FOR EACH STATEMENT EXECUTE FUNCTION pod.sessions_forget_user();

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
