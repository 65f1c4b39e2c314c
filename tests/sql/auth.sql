-- auth: registration, login, JWTs, sessions, and what each role sees of users.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(45);

SELECT has_schema('pod'); SELECT has_schema('api');
SELECT has_table('pod', 'users', 'pod.users exists');
SELECT has_table('pod', 'sessions', 'pod.sessions exists');
SELECT has_role(r) FROM unnest(ARRAY['pgpod_anon', 'pgpod_user', 'pgpod_admin', 'pgpod_worker', 'pgpod_authenticator']) r;

-- no API role may run the internals that hold or use secrets
SELECT ok(NOT has_function_privilege(r, 'pod.jwt_secret()', 'EXECUTE'), r || ' cannot read the JWT key')
  FROM unnest(ARRAY['pgpod_anon', 'pgpod_user', 'pgpod_admin']) r;
SELECT ok(has_function_privilege('pgpod_authenticator', 'pod.jwt_secret()', 'EXECUTE'), 'the gateway''s role reads the JWT key');

-- registration
SELECT lives_ok($$SELECT pod.register('Alice@Example.org', 'correct horse')$$, 'register a user');
SELECT matches((SELECT pass_hash FROM pod.users WHERE email = 'Alice@Example.org'), '^\$argon2id\$',
  'password stored as an Argon2id hash');
SELECT throws_ok($$SELECT pod.register('alice@example.ORG', 'another pass')$$, '23505',
  'email address is already registered', 'duplicate email (other case) refused');
SELECT throws_ok($$SELECT pod.register('not-an-email', 'correct horse')$$, '22023', NULL, 'invalid email refused');
SELECT throws_ok($$SELECT pod.register('a b@example.org', 'correct horse')$$, '22023', NULL, 'email with a space refused');
SELECT throws_ok($$SELECT pod.register('bob@example.org', 'short')$$, '22023', 'password is too short', 'short password refused');
SELECT is((SELECT count(*)::int FROM pod.users WHERE email ILIKE '%@example.org'), 1, 'failed registrations changed nothing');

-- login
SELECT throws_ok($$SELECT pod.login('alice@example.org', 'wrong password')$$, '28P01', 'invalid email or password', 'wrong password');
SELECT throws_ok($$SELECT pod.login('nobody@example.org', 'correct horse')$$, '28P01', 'invalid email or password', 'unknown email');
SELECT * FROM pod.login('ALICE@example.org', 'correct horse', '192.0.2.7', 'pgtap') \gset alice_
SELECT is((SELECT ip FROM pod.sessions WHERE id = :'alice_session_id'), '192.0.2.7'::inet, 'session keeps ip');
SELECT is(pod.jwt_verify(:'alice_token') ->> 'sub', :'alice_user_id', 'JWT subject is the user');
SELECT is(pod.jwt_verify(:'alice_token') ->> 'role', 'pgpod_user', 'JWT role claim');
SELECT throws_ok(format('SELECT pod.jwt_verify(%L)', :'alice_token' || 'x'), '28000', 'token signature is invalid', 'tampered JWT refused');
SELECT throws_ok(format('SELECT pod.jwt_verify(%L)', pod.jwt_sign('{"role":"pgpod_user","exp":1}')), '28000', 'token has expired', 'expired JWT refused');

-- the session decides who the caller is
SELECT set_config('request.jwt.claims', pod.jwt_verify(:'alice_token')::text, true);
SELECT is(pod.current_user_id(), :'alice_user_id'::uuid, 'current_user_id from a live session');
SELECT set_config('request.jwt.claims', json_build_object('role', 'pgpod_user', 'sub', :'alice_user_id', 'sid', 'not-a-uuid')::text, true);
SELECT throws_ok('SELECT pod.current_user_id()', 'PT401', 'malformed session claims', 'a malformed session id is refused');
SELECT set_config('request.jwt.claims', json_build_object('role', 'pgpod_user', 'sub', 'x''; --', 'sid', :'alice_session_id')::text, true);
SELECT throws_ok('SELECT pod.current_user_id()', 'PT401', 'malformed session claims', 'so is a malformed subject');
SELECT set_config('request.jwt.claims', json_build_object('role', 'pgpod_user', 'sid', :'alice_session_id')::text, true);
SELECT throws_ok('SELECT pod.current_user_id()', 'PT401', 'session has ended', 'a session id without its subject is no session');
SELECT set_config('request.jwt.claims', pod.jwt_verify(:'alice_token')::text, true);
UPDATE pod.sessions SET expires_at = now() - interval '1 second', created_at = now() - interval '1 hour' WHERE id = :'alice_session_id';
SELECT throws_ok('SELECT pod.current_user_id()', 'PT401', 'session has ended', 'expired session refused');
UPDATE pod.sessions SET expires_at = now() + interval '1 day' WHERE id = :'alice_session_id';

-- what roles see
SELECT pod.register('bob@example.org', 'bob password') \gset
SELECT * FROM pod.login('bob@example.org', 'bob password') \gset bob_
SELECT set_config('request.jwt.claims', pod.jwt_verify(:'bob_token')::text, true);
SELECT is(pod.current_user_id(), :'bob_user_id'::uuid, 'other claims in the same transaction: their own caller');
SELECT set_config('request.jwt.claims', pod.jwt_verify(:'alice_token')::text, true);
SELECT is(pod.current_user_id(), :'alice_user_id'::uuid, 'and back');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT array_agg(email) FROM api.me), ARRAY['Alice@Example.org'], 'a user sees themself');
SELECT is((SELECT count(*)::int FROM pod.users), 1, 'a user sees no other user');
SELECT throws_ok('SELECT * FROM pod.secrets', '42501', NULL, 'a user cannot read secrets');
SELECT throws_ok('SELECT pass_hash FROM pod.users', '42501', NULL, 'a user cannot read password hashes');
SELECT lives_ok($$SELECT api.logout()$$, 'logout');
SELECT throws_ok('SELECT pod.current_user_id()', 'PT401', 'session has ended', 'revoked session refused');
SELECT throws_ok('SELECT count(*) FROM api.me', 'PT401', 'session has ended', 'a revoked token reads nothing');
RESET ROLE;
SET LOCAL ROLE pgpod_anon;
SELECT throws_ok('SELECT * FROM pod.users', '42501', NULL, 'anonymous cannot read users');
RESET ROLE;

-- an admin (a user whose role is pgpod_admin) sees every account and session
UPDATE pod.users SET role = 'pgpod_admin' WHERE email = 'bob@example.org';
SELECT * FROM pod.login('bob@example.org', 'bob password') \gset bob_
SELECT set_config('request.jwt.claims', pod.jwt_verify(:'bob_token')::text, true);
SELECT is(pod.jwt_verify(:'bob_token') ->> 'role', 'pgpod_admin', 'an admin''s JWT carries the admin role');
SET LOCAL ROLE pgpod_admin;
SELECT is((SELECT count(*)::int FROM pod.users WHERE email ILIKE '%@example.org'), 2, 'an admin sees every user');
SELECT ok(pod.is_admin(), 'is_admin for an admin session');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
