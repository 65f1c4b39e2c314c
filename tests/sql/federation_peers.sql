-- pgTAP: what an independent peer and pods that fail and return found (issue 11):
-- requests signed for another pod, the query in the request-target, Date only as an
-- HTTP-date, Digest as RFC 3230 has it, keyIds with paths and actor documents,
-- bounded work and storage for anonymous callers, versions and tombstones (the origin
-- decides, in any delivery order), permanent and transient failures, and a restarted
-- worker taking back its leases.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(96);

DELETE FROM pod.jobs;
DELETE FROM pod.friends;
DELETE FROM pod.videos WHERE origin IS NOT NULL;
SELECT pod.set_setting('federation.inbox_reject_mode', '"status"');
SELECT 'identity' FROM pod.ensure_identity('http://127.0.0.1:57451');
CREATE TEMP TABLE peer AS SELECT 'http://127.0.0.1:57999'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;
INSERT INTO pod.friends (url, public_key, state) SELECT url, public_key, 'active' FROM peer;

-- Headers of a request signed by key_id over the given headers (host, date, digest
-- given or made here), the request-target being method and target.
CREATE FUNCTION pg_temp.signed(key_id text, private_key text, body text, hdr jsonb DEFAULT '{}',
                               target text DEFAULT '/rpc/inbox') RETURNS jsonb
  LANGUAGE plpgsql AS $$
DECLARE h jsonb; sig bytea;
BEGIN
  h := jsonb_build_object('host', '127.0.0.1:57451', 'date', pod.http_date(now()), 'digest', pod.http_digest(body),
                          'content-type', 'application/json') || hdr;
  sig := pod.rsa_sha256_sign(convert_to(pod.httpsig_signing_string('{(request-target),host,date,digest}', 'POST', target, h), 'UTF8'),
                             private_key);
  RETURN h || jsonb_build_object('signature', format(
    'keyId="%s",algorithm="rsa-sha256",headers="(request-target) host date digest",signature="%s"',
    key_id, translate(encode(sig, 'base64'), E'\n', '')));
END $$;
-- POSTs to api.inbox as the gateway does (request.target: what the client sent).
CREATE FUNCTION pg_temp.post(body text, headers jsonb, target text DEFAULT '/rpc/inbox', ip text DEFAULT '192.0.2.1') RETURNS jsonb
  LANGUAGE plpgsql AS $$
DECLARE r json;
BEGIN
  PERFORM set_config('request.headers', headers::text, true), set_config('request.method', 'POST', true),
          set_config('request.path', split_part(target, '?', 1), true), set_config('request.target', target, true),
          set_config('request.client_ip', ip, true), set_config('response.status', '', true),
          set_config('response.headers', '', true);
  r := api.inbox(body::json);
  RETURN r::jsonb || jsonb_build_object('http', coalesce(nullif(current_setting('response.status', true), ''), '200'));
END $$;
CREATE FUNCTION pg_temp.act(type text, object jsonb DEFAULT NULL, actor text DEFAULT 'http://127.0.0.1:57999') RETURNS text
  LANGUAGE sql RETURN jsonb_strip_nulls(jsonb_build_object('id', gen_random_uuid(), 'type', type, 'actor', actor, 'object', object))::text;
CREATE FUNCTION pg_temp.reply(body text, hdr jsonb DEFAULT '{}', target text DEFAULT '/rpc/inbox', sign_target text DEFAULT NULL,
                              key_id text DEFAULT 'http://127.0.0.1:57999#main-key') RETURNS text
  LANGUAGE sql RETURN (SELECT (r ->> 'http') || ' ' || coalesce(r ->> 'status', r ->> 'message')
                         FROM peer p, pg_temp.post(body, pg_temp.signed(key_id, p.private_key, body, hdr, coalesce(sign_target, target)), target) r);
CREATE FUNCTION pg_temp.video(uuid text, name text, version bigint, at text) RETURNS jsonb
  LANGUAGE sql RETURN jsonb_build_object('uuid', uuid, 'name', name, 'version', version, 'updated_at', at);

-- 1. Signed for this pod: Host and request-target -------------------------------------
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000001', 'for X', 1, '2026-01-01T00:00:00Z')),
                        '{"host": "127.0.0.1:57452"}'),
  '401 request is signed for another host, not for this pod', 'a request a friend signed for another pod (its Host) is refused here');
SELECT is((SELECT count(*) FROM pod.videos WHERE uuid = '10000000-0000-4000-8000-000000000001'), 0::bigint, 'and not applied');
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000002', 'case', 1, '2026-01-01T00:00:00Z')),
                        '{"host": "127.0.0.1:57451"}'), '200 applied', 'signed for this pod''s host: applied');
SELECT is(pod.own_hosts(), ARRAY['127.0.0.1:57451'], 'own hosts default from the pod''s URL');
SELECT pod.set_setting('federation.hosts', '["pod.example.org", "Pod.Example.org:8443"]');
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000003', 'named', 1, '2026-01-01T00:00:00Z')),
                        '{"host": "POD.example.org:8443"}'), '200 applied', 'federation.hosts names the hosts the pod answers to (case-insensitive)');
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000004', 'url host', 1, '2026-01-01T00:00:00Z'))),
  '401 request is signed for another host, not for this pod', 'then only those');
SELECT pod.set_setting('federation.hosts', '[]');
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000005', 'elsewhere', 1, '2026-01-01T00:00:00Z')),
                        '{}', '/rpc/other'), '401 request target is not this pod''s inbox', 'a signed request to another path is not taken as the inbox''s');

-- 3. The query string is part of the request-target ------------------------------------
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000006', 'query', 1, '2026-01-01T00:00:00Z')),
                        '{}', '/rpc/inbox?x=1'), '200 applied', 'a request signed over post /rpc/inbox?x=1 verifies');
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000007', 'query', 1, '2026-01-01T00:00:00Z')),
                        '{}', '/rpc/inbox?x=2', '/rpc/inbox?x=1'), '401 signature does not verify', 'and one whose query was changed does not');

-- 4. Date: an HTTP-date (IMF-fixdate) only --------------------------------------------
SELECT is(pod.http_date_parse('Sun, 06 Nov 1994 08:49:37 GMT'), '1994-11-06 08:49:37+00'::timestamptz, 'IMF-fixdate parses');
SELECT is(pod.http_date_parse(x), NULL, 'not an IMF-fixdate: ' || x)
  FROM unnest(ARRAY['now', '2026-12-07T10:00:00Z', 'Mon, 06 Nov 1994 08:49:37 GMT', 'Sunday, 06-Nov-94 08:49:37 GMT',
                    'Sun Nov  6 08:49:37 1994', 'Sun, 06 Nov 1994 08:49:37 UTC', 'Thu, 31 Feb 2026 08:49:37 GMT',
                    'Sun, 06 Nov 1994 08:49:61 GMT', ' Sun, 06 Nov 1994 08:49:37 GMT']) x;
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000008', 'now', 1, '2026-01-01T00:00:00Z')),
                        '{"date": "now"}'), '400 Date header is not an HTTP-date (IMF-fixdate)', 'Date: now is refused');
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000008', 'iso', 1, '2026-01-01T00:00:00Z')),
                        jsonb_build_object('date', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))),
  '400 Date header is not an HTTP-date (IMF-fixdate)', 'an ISO date is refused');

-- 5. Digest as RFC 3230 ------------------------------------------------------------------
CREATE TEMP TABLE dg AS SELECT pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-000000000009', 'digest', 1, '2026-01-01T00:00:00Z')) AS b;
SELECT is(pg_temp.reply(b, jsonb_build_object('digest', 'sha-256=' || encode(sha256(convert_to(b, 'UTF8')), 'base64'))), '200 applied',
  'sha-256=… (algorithm in lower case) is accepted') FROM dg;
SELECT is(pg_temp.reply(b, jsonb_build_object('digest', 'SHA-256=' || encode(sha256(convert_to(b, 'UTF8')), 'base64') || ', SHA-512='
                                              || translate(encode(sha512(convert_to(b, 'UTF8')), 'base64'), E'\n', ''))), '200 duplicate',
  'SHA-256=…,SHA-512=… (several digests) is accepted (a retry of the same request id: acknowledged)') FROM dg;
SELECT is(pod.http_digest_problem('SHA-512=' || translate(encode(sha512('x'), 'base64'), E'\n', ''), 'x'), 'Digest needs a SHA-256 of the body',
  'a SHA-256 is required');
SELECT is(pod.http_digest_problem('SHA-256=' || encode(sha256('x'), 'base64') || ',SHA-512=AAAA', 'x'), 'Digest does not match the body',
  'every digest given of a known algorithm must match');
SELECT is(pod.http_digest_problem('MD5=abc, SHA-256=' || encode(sha256('x'), 'base64'), 'x'), NULL, 'unknown algorithms are ignored');
SELECT is(pod.http_digest_problem('SHA-256', 'x'), 'Digest is not a list of algorithm=value', 'a digest without a value is malformed');

-- 6. keyIds with paths; actor documents --------------------------------------------------
SELECT is(pg_temp.reply(pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-00000000000a', 'path key', 1, '2026-01-01T00:00:00Z')),
                        '{}', '/rpc/inbox', NULL, 'http://127.0.0.1:57999/users/pod#main-key'), '200 applied',
  'a keyId with a path on a friend''s origin is that friend''s');
SELECT is(pod.key_id_origin(k), o, 'keyId origin of ' || k) FROM (VALUES
  ('https://pod.example/users/x#main-key', 'https://pod.example'), ('http://h:8080#main-key', 'http://h:8080'),
  ('http://h:8080/actor', 'http://h:8080'), ('http://user@h/actor', NULL), ('ftp://h/x', NULL), ('/users/x', NULL)) v(k, o);
CREATE TEMP TABLE actor AS SELECT api.actor()::jsonb AS doc;
SELECT is((SELECT doc #>> '{publicKey,id}' FROM actor), 'http://127.0.0.1:57451#main-key', 'api.actor names our keyId');
SELECT is((SELECT doc #>> '{publicKey,publicKeyPem}' FROM actor), (SELECT public_key FROM pod.identity), 'and our public key');
SELECT is(current_setting('response.headers', true), '[{"Content-Type": "application/activity+json; charset=utf-8"}]', 'served as application/activity+json');
SELECT is(pod.key_document_key((SELECT doc FROM actor), 'http://127.0.0.1:57451', 'http://127.0.0.1:57451#main-key'),
  (SELECT public_key FROM pod.identity), 'an actor document gives the key of its keyId');
SELECT is(pod.key_document_key((SELECT doc FROM actor), 'http://127.0.0.1:57452', 'http://127.0.0.1:57452#main-key'), NULL,
  'not for another origin');
SELECT is(pod.key_document_key(jsonb_build_object('id', 'http://a.example/users/x', 'publicKey', jsonb_build_array(
    jsonb_build_object('id', 'http://a.example/users/x#other', 'publicKeyPem', '-----BEGIN PUBLIC KEY-----other'),
    jsonb_build_object('id', 'http://a.example/users/x#main-key', 'owner', 'http://a.example/users/x', 'publicKeyPem', '-----BEGIN PUBLIC KEY-----main'))),
    'http://a.example', 'http://a.example/users/x#main-key'), '-----BEGIN PUBLIC KEY-----main', 'of several keys, the keyId''s');
SELECT is(pod.key_document_key(jsonb_build_object('id', 'http://a.example/users/x', 'publicKey',
    jsonb_build_object('id', 'http://a.example/users/x#main-key', 'owner', 'http://evil.example/x', 'publicKeyPem', '-----BEGIN PUBLIC KEY-----x')),
    'http://a.example', 'http://a.example/users/x#main-key'), NULL, 'a key owned on another origin is not taken');
-- A stranger's friend request with a path keyId: held, and the key fetched at that URL.
CREATE TEMP TABLE stranger AS SELECT 'http://127.0.0.1:57998'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;
SELECT is((SELECT (r ->> 'http') || ' ' || (r ->> 'status')
             FROM stranger s, pg_temp.act('friend.request', NULL, s.url) b,
                  pg_temp.post(b, pg_temp.signed(s.url || '/actor#main-key', s.private_key, b)) r), '202 held',
  'a friend request with keyId <pod>/actor#main-key is held');
CREATE TEMP TABLE vk AS SELECT * FROM pod.fetches_claim('fed');
SELECT is((SELECT url FROM vk), 'http://127.0.0.1:57998/actor', 'its key is fetched at the keyId''s URL on its own origin');
SELECT ok((SELECT 'Accept: application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams", application/json;q=0.5' = ANY (headers) FROM vk),
  'asking for an ActivityStreams document');
SELECT is(pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[jsonb_build_object('id', s.url || '/actor', 'type', 'Application',
            'publicKey', jsonb_build_object('id', s.url || '/actor#main-key', 'owner', s.url || '/actor', 'publicKeyPem', s.public_key))::text])
            #>> '{applied,0,status}', 'befriended', 'its actor document''s key verifies the held request: befriended')
  FROM vk v, stranger s;

-- A key URL that answers 404 will not answer otherwise: the fetch is dead at once;
-- a 503 is retried.
CREATE TEMP TABLE gone AS SELECT 'http://127.0.0.1:57996'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;
SELECT count(pg_temp.post(b, pg_temp.signed(g.url || '/actor#main-key', g.private_key, b)))
  FROM gone g, pg_temp.act('friend.request', NULL, g.url) b;
CREATE TEMP TABLE vk404 AS SELECT * FROM pod.fetches_claim('fed');
SELECT is(pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[NULL], ARRAY[503]) ->> 'status', 'failed', 'a 503 at the key URL fails the fetch')
  FROM vk404 v;
SELECT is((SELECT state::text FROM pod.jobs WHERE id = (SELECT job_id FROM vk404)), 'waiting', 'and it is retried');
UPDATE pod.jobs SET run_at = now() WHERE id = (SELECT job_id FROM vk404);
SELECT is(pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[NULL], ARRAY[404]) ->> 'status', 'failed', 'a 404 fails it')
  FROM pod.fetches_claim('fed') v;
SELECT is((SELECT state::text || ' ' || attempts || ' ' || left(last_error, 11) FROM pod.jobs WHERE id = (SELECT job_id FROM vk404)),
  'dead 2 permanent: ', 'for good, at once (not after 6 attempts)');

-- 7. Anonymous work and storage are bounded ----------------------------------------------
DELETE FROM pod.inbox_rejection_counts;
CREATE TEMP TABLE n0 AS SELECT (SELECT count(*) FROM pod.inbox_rejections) AS rows,
                               (SELECT coalesce(sum(count), 0) FROM pod.inbox_rejection_counts) AS counted;
SELECT count(pg_temp.post('{"type": "noise"}', jsonb_build_object('host', '127.0.0.1:57451', 'x-junk', repeat('x', 5000)), '/rpc/inbox', '198.51.100.' || g))
  FROM generate_series(1, 50) g;
SELECT is((SELECT count(*) FROM pod.inbox_rejections) - (SELECT rows FROM n0), 0::bigint, '50 unsigned requests leave no row');
SELECT is((SELECT coalesce(sum(count), 0) FROM pod.inbox_rejection_counts) - (SELECT counted FROM n0), 50::numeric, 'they are counted');
SELECT is((SELECT count FROM pod.inbox_rejection_counts WHERE day = current_date AND status = 401
             AND reason = 'request is not signed (no Signature header)'), 50::bigint, 'in one counter for their reason');
SELECT count(pg_temp.post(b, pg_temp.signed(p.url || '#main-key', s.private_key, b), '/rpc/inbox', '203.0.113.7'))
  FROM peer p, stranger s, pg_temp.act('video.published', pg_temp.video('10000000-0000-4000-8000-00000000000b', 'forged', 1, '2026-01-01T00:00:00Z')) b,
       generate_series(1, 30);
SELECT is((SELECT count(*) FROM pod.inbox_rejections WHERE client_ip = '203.0.113.7'), 20::bigint,
  '30 forgeries naming a friend''s key from one address: 20 rows (federation.rejections_per_address), the rest counted');
SELECT ok((SELECT max(length(r.headers::text)) FROM pod.inbox_rejections r) < 8 * 1024, 'a row keeps a few headers, cut short');
SELECT pod.set_setting('federation.inbox_max_bytes', '1024');
SELECT is((SELECT (r ->> 'http') || ' ' || (r ->> 'code') FROM peer p,
             pg_temp.act('video.published', jsonb_build_object('uuid', '10000000-0000-4000-8000-00000000000c', 'name', repeat('n', 2000))) b,
             pg_temp.post(b, pg_temp.signed('http://127.0.0.1:57999#main-key', p.private_key, b)) r),
  '413 PT413', 'a body beyond federation.inbox_max_bytes is refused before anything is parsed');
SELECT pod.set_setting('federation.inbox_max_bytes', '1048576');
-- Key fetches a stranger can cause: per address and in all.
SELECT pod.set_setting('federation.key_fetches_per_address', '2');
CREATE TEMP TABLE kf AS
  SELECT g, (r ->> 'http') AS http, r ->> 'code' AS code
    FROM generate_series(1, 4) g, stranger k,
         LATERAL (SELECT pg_temp.act('friend.request', NULL, 'http://10.0.0.' || g || ':8080') AS b) a,
         LATERAL pg_temp.post(a.b, pg_temp.signed('http://10.0.0.' || g || ':8080#main-key', k.private_key, a.b), '/rpc/inbox', '198.51.100.200') r;
SELECT is((SELECT string_agg(http, ' ' ORDER BY g) FROM kf), '202 202 429 429',
  'friend requests from one address make at most federation.key_fetches_per_address key fetches a minute, then 429');
SELECT is((SELECT count(*) FROM pod.jobs WHERE kind = 'verify_key' AND payload ->> 'client_ip' = '198.51.100.200'), 2::bigint, 'two key fetches');
SELECT pod.set_setting('federation.key_fetches_per_address', '5');
SELECT pod.set_setting('federation.held_per_pod', '2');
SELECT is((SELECT string_agg(r ->> 'http', ' ' ORDER BY g)
             FROM generate_series(1, 3) g, LATERAL pg_temp.act('video.published', pg_temp.video('20000000-0000-4000-8000-00000000000' || g, 'w', 1, '2026-01-01T00:00:00Z'), 'http://10.0.0.1:8080') b,
                  LATERAL pg_temp.post(b, jsonb_build_object('signature', 'keyId="http://10.0.0.1:8080#main-key",algorithm="rsa-sha256",headers="(request-target) host date digest",signature="AAAA"',
                                                             'host', '127.0.0.1:57451', 'date', pod.http_date(now()), 'digest', pod.http_digest(b))) r),
  '202 429 429', 'requests waiting for one pod''s key are bounded (federation.held_per_pod)');

-- 2. Versions and tombstones: the origin decides, in any delivery order ----------------
INSERT INTO pod.users (id, email, pass_hash) VALUES ('99999999-9999-9999-9999-999999999998', 'ver@example.org', '$argon2id$test');
INSERT INTO pod.channels (owner_id, name, display_name) VALUES ('99999999-9999-9999-9999-999999999998', 'verchan', 'Ver');
INSERT INTO pod.videos (uuid, channel_id, name, state, created_at, updated_at)
  SELECT '30000000-0000-4000-8000-000000000001', id, 'v1', 'published', now() - interval '1 hour', now() - interval '1 hour' FROM pod.channels WHERE name = 'verchan';
CREATE TEMP TABLE upd (updated_at timestamptz, version bigint);
WITH u AS (UPDATE pod.videos SET name = 'v2' WHERE uuid = '30000000-0000-4000-8000-000000000001' RETURNING updated_at, version)
INSERT INTO upd SELECT * FROM u;
SELECT ok((SELECT updated_at > now() - interval '1 minute' FROM upd), 'UPDATE … RETURNING updated_at gives the time of the change, not of the creation');
SELECT is((SELECT version FROM upd), 2::bigint, 'and the version is raised');
UPDATE pod.videos SET name = 'v2' WHERE uuid = '30000000-0000-4000-8000-000000000001';
SELECT is((SELECT version FROM pod.videos WHERE uuid = '30000000-0000-4000-8000-000000000001'), 2::bigint, 'a write that changes nothing raises nothing');
SELECT is((SELECT payload #>> '{activity,object,version}' FROM pod.jobs WHERE payload #>> '{activity,type}' = 'video.updated'
             AND payload #>> '{activity,object,uuid}' = '30000000-0000-4000-8000-000000000001' ORDER BY id DESC LIMIT 1), '2',
  'video.updated carries the version');
DELETE FROM pod.videos WHERE uuid = '30000000-0000-4000-8000-000000000001';
SELECT is((SELECT DISTINCT payload #>> '{activity,object,version}' FROM pod.jobs WHERE payload #>> '{activity,type}' = 'video.removed'
             AND payload #>> '{activity,object,uuid}' = '30000000-0000-4000-8000-000000000001'), '3', 'video.removed carries the removal''s version');

-- A friend's video, deliveries arriving out of order.
CREATE FUNCTION pg_temp.deliver(type text, v jsonb) RETURNS text
  LANGUAGE sql RETURN pg_temp.reply(pg_temp.act(type, v));
SELECT is(pg_temp.deliver('video.updated', pg_temp.video('40000000-0000-4000-8000-000000000001', 'third', 3, '2026-03-03T00:00:00Z')), '200 applied',
  'video.updated v3 arrives first: applied');
SELECT is(pg_temp.deliver('video.published', pg_temp.video('40000000-0000-4000-8000-000000000001', 'first', 1, '2026-03-01T00:00:00Z')), '200 stale',
  'video.published v1 arrives late: acknowledged (200 stale), not applied');
SELECT is(pg_temp.deliver('video.updated', pg_temp.video('40000000-0000-4000-8000-000000000001', 'second', 2, '2026-03-02T00:00:00Z')), '200 stale',
  'video.updated v2 arrives late: stale');
SELECT is((SELECT name || ' ' || version FROM pod.videos WHERE uuid = '40000000-0000-4000-8000-000000000001'), 'third 3', 'the video is v3');
SELECT is(pg_temp.deliver('video.removed', pg_temp.video('40000000-0000-4000-8000-000000000001', NULL, 4, '2026-03-04T00:00:00Z') - 'name'), '200 applied',
  'video.removed v4: removed');
SELECT is(pg_temp.deliver('video.updated', pg_temp.video('40000000-0000-4000-8000-000000000001', 'zombie', 3, '2026-03-03T12:00:00Z')), '200 stale',
  'a late video.updated (older than the removal) does not bring it back');
SELECT is((SELECT count(*) FROM pod.videos WHERE uuid = '40000000-0000-4000-8000-000000000001'), 0::bigint, 'it stays removed');
SELECT is(pg_temp.deliver('video.published', pg_temp.video('40000000-0000-4000-8000-000000000001', 'again', 5, '2026-03-05T00:00:00Z')), '200 applied',
  'published again at the origin (v5, newer than the removal): applied');
SELECT is((SELECT count(*) FROM pod.federated_tombstones WHERE object_id = '40000000-0000-4000-8000-000000000001'), 0::bigint, 'its tombstone is spent');
SELECT is(pg_temp.deliver('video.removed', pg_temp.video('40000000-0000-4000-8000-000000000001', NULL, 4, '2026-03-04T00:00:00Z') - 'name'), '200 stale',
  'a removal older than what is held removes nothing');
SELECT is((SELECT name FROM pod.videos WHERE uuid = '40000000-0000-4000-8000-000000000001'), 'again', 'v5 stays');
SELECT is(pg_temp.deliver('video.removed', pg_temp.video('40000000-0000-4000-8000-000000000002', NULL, 2, '2026-03-02T00:00:00Z') - 'name'), '200 applied',
  'a removal of a video never seen is recorded');
SELECT is(pg_temp.deliver('video.published', pg_temp.video('40000000-0000-4000-8000-000000000002', 'late', 1, '2026-03-01T00:00:00Z')), '200 stale',
  'so its publication, delivered after it, does not create it');
SELECT is(pg_temp.reply(pg_temp.act('video.updated', jsonb_build_object('uuid', '40000000-0000-4000-8000-000000000003', 'name', 'x', 'updated_at', 'now'))),
  '400 video uuid, version or updated_at is malformed', 'updated_at must be an RFC 3339 time (not PostgreSQL''s words)');
-- The rule alone (what the pubsub cache reuses).
SELECT is(pod.federated_newer(2, '2026-01-01', 1, '2026-06-01'), true, 'a higher version wins whatever the times');
SELECT is(pod.federated_newer(NULL, '2026-01-02', NULL, '2026-01-01'), true, 'without versions, the origin''s later time wins');
SELECT is(pod.federated_newer(1, '2026-01-01', 1, '2026-01-01'), false, 'the same state is not newer');
SELECT is(pod.federated_newer(1, '2026-01-01', NULL, NULL), true, 'anything is newer than nothing');
SELECT is(pod.federated_newer(NULL, '2026-01-01', 0, '2026-01-01'), true,
  'a sender without versions (before 0.4: its updated_at never moved) still updates at the same time');
SELECT is(pod.federated_newer(NULL, '2026-01-01', 2, '2025-01-01'), false, 'but never over a versioned state');
SELECT is(pod.federated_newer(NULL, '2026-01-01', 1, NULL), false, 'nor over the tombstone of its own versionless removal');

-- 8. Permanent and transient failures ----------------------------------------------------
DELETE FROM pod.jobs;
UPDATE pod.friends SET score = 100, state = 'active' WHERE url = 'http://127.0.0.1:57999';
SELECT is(array_agg(pod.http_failure_permanent(s) ORDER BY s), ARRAY[true, false, true, true, true, true, false, true, true, false, false, false, false],
  'permanent: 400 401 403 404 410 422 (4xx), -1 (refused before sending); transient: 0 (no answer) 408 429 5xx')
  FROM unnest(ARRAY[400, 401, 403, 404, 410, 408, 429, 422, 500, 502, 503, 0, -1]) s;
SELECT pod.deliver(ARRAY['http://127.0.0.1:57999'], 'video.removed', '{"object": {"uuid": "00000000-0000-0000-0000-000000000001"}}') FROM generate_series(1, 4);
CREATE TEMP TABLE c AS SELECT job_id FROM pod.deliveries_claim('fed', 4);
SELECT is(pod.deliveries_fail(ARRAY(SELECT job_id FROM c ORDER BY job_id), ARRAY['HTTP 404', 'HTTP 410', 'HTTP 503', 'Failed to connect'], 'fed',
                              ARRAY[404, 410, 503, 0], ARRAY[NULL, NULL, 120, NULL]::integer[]), 4, 'four failures reported');
SELECT is((SELECT array_agg(state::text || ' ' || coalesce(left(last_error, 20), '') ORDER BY id) FROM pod.jobs),
  ARRAY['dead permanent: HTTP 404', 'dead permanent: HTTP 410', 'waiting HTTP 503', 'waiting Failed to connect'],
  '404 and 410 are dead at once with their reason; 503 and a connection error wait for a retry');
SELECT ok((SELECT run_at >= now() + interval '119 seconds' FROM pod.jobs ORDER BY id OFFSET 2 LIMIT 1), 'the 503 waits its Retry-After (120 s)');
SELECT is((SELECT run_at - now() FROM pod.jobs ORDER BY id OFFSET 3 LIMIT 1), interval '2 seconds', 'the connection error waits the first backoff (2 s)');
SELECT is((SELECT score FROM pod.friends WHERE url = 'http://127.0.0.1:57999'), 60, 'each failure is one step of score (4 × 10), not ten');
SELECT throws_ok($$SELECT pod.job_fail('{1,2}', '{a,b}', 'fed', '{true}', NULL)$$, '22023', NULL, 'arrays of different lengths are refused');

-- 9. A restarted worker takes back its leases ---------------------------------------------
DELETE FROM pod.jobs;
SELECT pod.deliver(ARRAY['http://127.0.0.1:57999'], 'video.removed', '{"object": {"uuid": "00000000-0000-0000-0000-000000000001"}}') FROM generate_series(1, 3);
SELECT count(*) FROM pod.deliveries_claim('federator@host', 2);
SELECT is(pod.job_reclaim('federator@other'), 0, 'another worker''s leases are not taken');
SELECT is(pod.job_reclaim('federator@host'), 2, 'the same identity, restarted, ends its previous leases');
SELECT is((SELECT count(*) FROM pod.deliveries_claim('federator@host', 10)), 3::bigint, 'all three are claimable at once');
SELECT is((SELECT score FROM pod.friends WHERE url = 'http://127.0.0.1:57999'), 60, 'no score changes');
SELECT throws_ok($$SELECT pod.job_reclaim('')$$, '22023', NULL, 'a worker id is required');

SELECT * FROM finish();
ROLLBACK;
