-- pgTAP: federation inside the database: the make-friends rule, HTTP signatures out
-- (deliveries_claim) and in (api.inbox: forged, replayed, stale, digest-mismatched,
-- unknown-key requests refused with a log row), de-duplication, encryption, dispatch,
-- scores and revocation, and the deliveries a local video publication enqueues.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(109);

DELETE FROM pod.jobs;
DELETE FROM pod.friends;
SELECT pod.set_setting('federation.inbox_reject_mode', '"status"');
SELECT pod.ensure_identity('http://127.0.0.1:57451');
-- A foreign pod: its own key pair, made here.
CREATE TEMP TABLE other AS SELECT 'http://127.0.0.1:57999'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;
CREATE TEMP TABLE stranger AS SELECT 'http://127.0.0.1:57998'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;

-- Headers of a request signed by key_id with private_key (as http-signature would).
CREATE FUNCTION pg_temp.signed(key_id text, private_key text, body text, at timestamptz DEFAULT now(),
                               path text DEFAULT '/rpc/inbox') RETURNS jsonb
  LANGUAGE plpgsql AS $$
DECLARE hdr jsonb; sig bytea;
BEGIN
  hdr := jsonb_build_object('host', '127.0.0.1:57451', 'date', pod.http_date(at), 'digest', pod.http_digest(body),
                            'content-type', 'application/json');
  sig := pod.rsa_sha256_sign(convert_to(pod.httpsig_signing_string('{(request-target),host,date,digest}', 'POST', path, hdr), 'UTF8'),
                             private_key);
  RETURN hdr || jsonb_build_object('signature', format(
    'keyId="%s#main-key",algorithm="rsa-sha256",headers="(request-target) host date digest",signature="%s"',
    key_id, translate(encode(sig, 'base64'), E'\n', '')));
END $$;
-- POSTs to api.inbox as the gateway would (GUCs), returns the reply with its status.
CREATE FUNCTION pg_temp.post(body text, headers jsonb) RETURNS jsonb
  LANGUAGE plpgsql AS $$
DECLARE r json;
BEGIN
  PERFORM set_config('request.headers', headers::text, true), set_config('request.method', 'POST', true),
          set_config('request.path', '/rpc/inbox', true), set_config('response.status', '', true);
  r := api.inbox(body::json);
  RETURN r::jsonb || jsonb_build_object('http', coalesce(nullif(current_setting('response.status', true), ''), '200'));
END $$;
CREATE FUNCTION pg_temp.activity(type text, extra jsonb DEFAULT '{}', actor text DEFAULT 'http://127.0.0.1:57999') RETURNS text
  LANGUAGE sql RETURN (jsonb_build_object('id', gen_random_uuid(), 'type', type, 'actor', actor) || extra)::text;

-- The make-friends rule (the seed's example) -------------------------------------------
SELECT is(pod.friends_to_add(ARRAY['http://pod1.com', 'http://pod2.com', 'http://pod3.com'],
  '{"http://pod1.com": ["http://pod2.com", "http://pod3.com", "http://pod4.com", "http://pod5.com"],
    "http://pod2.com": ["http://pod3.com", "http://pod5.com"],
    "http://pod3.com": ["http://pod5.com"]}'),
  ARRAY['http://pod1.com', 'http://pod2.com', 'http://pod3.com', 'http://pod5.com'],
  'seed example: pod1, pod2, pod3 (asked) and pod5 (in all lists) are added, pod4 (1 of 3) is not');
SELECT is(pod.friends_to_add(ARRAY['http://a.org'], '{"http://a.org": ["http://b.org", "http://me.org"]}', 'http://me.org'),
  ARRAY['http://a.org', 'http://b.org'], 'this pod itself is never added; one list of one is "at least half"');
SELECT is(pod.friends_to_add(ARRAY['http://a.org', 'http://b.org'], '{"http://a.org": ["http://c.org"], "http://b.org": []}'),
  ARRAY['http://a.org', 'http://b.org', 'http://c.org'], 'exactly half of the lists is enough');
SELECT is(pod.friends_to_add(ARRAY['http://a.org', 'http://b.org', 'http://c.org'], '{"http://a.org": ["http://d.org"], "http://b.org": [], "http://c.org": []}'),
  ARRAY['http://a.org', 'http://b.org', 'http://c.org'], 'less than half is not');
SELECT throws_ok($$SELECT pod.make_friends(ARRAY['ftp://x'])$$, '22023', NULL, 'make_friends refuses a bad URL');
SELECT throws_ok($$SELECT pod.make_friends('{}')$$, '22023', NULL, 'make_friends needs a URL');
SELECT is((SELECT count(*) FROM pod.jobs), 0::bigint, 'refused make_friends enqueue nothing');

-- make_friends → job; the federator's answer → pending friends and friend requests.
SELECT pod.make_friends(ARRAY['http://pod1.com', 'http://pod2.com/', 'http://pod3.com']);
SELECT is((SELECT payload -> 'urls' FROM pod.jobs WHERE kind = 'make_friends'),
          '["http://pod1.com", "http://pod2.com", "http://pod3.com"]'::jsonb, 'make_friends enqueues a job with the URLs');
CREATE TEMP TABLE mf AS SELECT * FROM pod.fetches_claim('fed');
SELECT is((SELECT array_agg(kind || ' ' || pod_url || ' ' || url ORDER BY url) FROM mf),
  ARRAY['make_friends http://pod1.com http://pod1.com/rpc/friend_list', 'make_friends http://pod2.com http://pod2.com/rpc/friend_list',
        'make_friends http://pod3.com http://pod3.com/rpc/friend_list'], 'the federator claims one GET of the friend list per pod asked');
SELECT ok((SELECT bool_and(array_to_string(headers, E'\n') ~ ('Signature: keyId="http://127.0.0.1:57451#main-key",algorithm="rsa-sha256"'))
             FROM mf), 'each GET is signed by this pod');
SELECT ok(pod.rsa_sha256_verify(
    convert_to(pod.httpsig_signing_string('{(request-target),host,date,digest}', 'GET', '/rpc/friend_list', h.hdr), 'UTF8'),
    decode(substring(h.hdr ->> 'signature' FROM 'signature="([^"]+)"'), 'base64'), (SELECT public_key FROM pod.identity)),
  'the GET''s signature verifies with our key over (request-target) "get /rpc/friend_list"')
  FROM (SELECT jsonb_object_agg(lower(split_part(x, ': ', 1)), substr(x, length(split_part(x, ': ', 1)) + 3)) AS hdr
          FROM mf, unnest(headers) x WHERE mf.pod_url = 'http://pod1.com') h;
SELECT is(pod.make_friends_finish((SELECT id FROM pod.jobs WHERE kind = 'make_friends'), 'fed',
  '{"http://pod1.com": ["http://pod2.com", "http://pod3.com", "http://pod4.com", "http://pod5.com", "http://127.0.0.1:57451"],
    "http://pod2.com": ["http://pod3.com", "http://pod5.com"], "http://pod3.com": ["http://pod5.com"]}'),
  ARRAY['http://pod1.com', 'http://pod2.com', 'http://pod3.com', 'http://pod5.com'], 'make_friends_finish adds the chosen pods');
SELECT is((SELECT array_agg(url || ':' || state ORDER BY url) FROM pod.friends),
  ARRAY['http://pod1.com:pending', 'http://pod2.com:pending', 'http://pod3.com:pending', 'http://pod5.com:pending'], 'they are pending friends');
SELECT is((SELECT array_agg(target ORDER BY target) FROM pod.jobs WHERE kind = 'deliver' AND payload #>> '{activity,type}' = 'friend.request'),
  ARRAY['http://pod1.com', 'http://pod2.com', 'http://pod3.com', 'http://pod5.com'], 'each gets a friend request');
SELECT is((SELECT DISTINCT payload #>> '{activity,public_key}' FROM pod.jobs WHERE kind = 'deliver'),
  (SELECT public_key FROM pod.identity), 'the request presents our public key');
SELECT is((SELECT state FROM pod.jobs WHERE kind = 'make_friends'), 'done'::pod.job_state, 'the make_friends job is done');
DELETE FROM pod.jobs; DELETE FROM pod.friends;

-- Outbound: deliveries are signed at claim time -----------------------------------------
INSERT INTO pod.friends (url, state, public_key) SELECT url, 'active', public_key FROM other;
SELECT pod.deliver(ARRAY[(SELECT url FROM other)], 'video.removed', '{"object": {"uuid": "00000000-0000-0000-0000-000000000001"}}');
CREATE TEMP TABLE out1 AS SELECT * FROM pod.deliveries_claim('fed', 10);
SELECT is((SELECT url FROM out1), 'http://127.0.0.1:57999/rpc/inbox', 'a delivery goes to the friend''s inbox');
CREATE TEMP TABLE out1h AS
  SELECT lower(split_part(h, ': ', 1)) AS name, substr(h, length(split_part(h, ': ', 1)) + 3) AS value FROM out1, unnest(headers) h;
SELECT is((SELECT value FROM out1h WHERE name = 'digest'), pod.http_digest((SELECT body FROM out1)), 'Digest is SHA-256 of the body');
SELECT ok((SELECT value FROM out1h WHERE name = 'date') ~ '^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$', 'Date is an IMF-fixdate');
SELECT ok((SELECT value FROM out1h WHERE name = 'signature') ~
  '^keyId="http://127.0.0.1:57451#main-key",algorithm="rsa-sha256",headers="\(request-target\) host date digest",signature="[A-Za-z0-9+/=]+"$',
  'Signature has keyId, algorithm rsa-sha256, the four headers and the signature');
SELECT ok(pod.rsa_sha256_verify(
    convert_to(pod.httpsig_signing_string('{(request-target),host,date,digest}', 'POST', '/rpc/inbox',
               (SELECT jsonb_object_agg(name, value) FROM out1h)), 'UTF8'),
    decode(substring((SELECT value FROM out1h WHERE name = 'signature') FROM 'signature="([^"]+)"'), 'base64'),
    (SELECT public_key FROM pod.identity)), 'the signature verifies with our public key');
SELECT ok(NOT pod.rsa_sha256_verify(convert_to('something else', 'UTF8'),
    decode(substring((SELECT value FROM out1h WHERE name = 'signature') FROM 'signature="([^"]+)"'), 'base64'),
    (SELECT public_key FROM pod.identity)), 'and not over another string');
SELECT throws_ok($$SELECT pod.rsa_sha256_verify('x', 'y', 'not a key')$$, '22023', NULL, 'a bad public key is 22023');
SELECT throws_ok($$SELECT pod.rsa_sha256_sign('x', 'not a key')$$, '22023', NULL, 'a bad private key is 22023');
DELETE FROM pod.jobs;

-- Envelope -------------------------------------------------------------------------------
SELECT is(convert_from(pod.envelope_open(s.wrapped_key, s.iv, s.tag, s.ciphertext, (SELECT private_key FROM pod.identity)), 'UTF8'),
          'secret body', 'envelope: sealed for us, opened by us')
  FROM pod.envelope_seal(convert_to('secret body', 'UTF8'), (SELECT public_key FROM pod.identity)) s;
SELECT throws_ok(format($$SELECT pod.envelope_open(%L, %L, %L, %L, (SELECT private_key FROM pod.identity))$$,
                        s.wrapped_key, s.iv, s.tag, s.ciphertext || '\x00'::bytea), '22023', NULL, 'a tampered ciphertext does not open')
  FROM pod.envelope_seal(convert_to('secret body', 'UTF8'), (SELECT public_key FROM pod.identity)) s;
SELECT throws_ok(format($$SELECT pod.envelope_open(%L, %L, %L, %L, (SELECT private_key FROM pod.identity))$$,
                        s.wrapped_key, s.iv, s.tag, s.ciphertext), '22023', NULL, 'an envelope for another key does not open')
  FROM pod.envelope_seal(convert_to('secret body', 'UTF8'), (SELECT public_key FROM other)) s;

-- Inbound: a friend's signed activities -------------------------------------------------
CREATE TEMP TABLE r AS SELECT 0 AS n, NULL::jsonb AS reply;
CREATE FUNCTION pg_temp.send(n int, body text, headers jsonb) RETURNS jsonb
  LANGUAGE sql AS $$ INSERT INTO r VALUES (n, pg_temp.post(body, headers)) RETURNING reply $$;

SELECT pg_temp.send(1, b, pg_temp.signed(o.url, o.private_key, b))
  FROM other o, pg_temp.activity('video.published', '{"object": {"uuid": "11111111-1111-1111-1111-111111111111", "name": "Remote one", "author": "alice", "magnet": "magnet:?xt=urn:btih:abc", "duration": 61}}') b;
SELECT is((SELECT reply ->> 'status' FROM r WHERE n = 1), 'applied', 'a signed video.published from a friend is applied');
SELECT is((SELECT origin || '|' || name || '|' || author || '|' || duration::text FROM pod.videos WHERE uuid = '11111111-1111-1111-1111-111111111111'),
          'http://127.0.0.1:57999|Remote one|alice|00:01:01', 'the video is in the index with the friend as origin');

-- The same activity again (a retry: new Date, new signature) is acknowledged, not applied twice.
CREATE TEMP TABLE dup AS SELECT pg_temp.activity('video.updated', '{"object": {"uuid": "11111111-1111-1111-1111-111111111111", "name": "Renamed"}}') AS b;
SELECT pg_temp.send(2, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o, dup;
UPDATE pod.videos SET name = 'Changed here' WHERE uuid = '11111111-1111-1111-1111-111111111111';
SELECT pg_temp.send(3, b, pg_temp.signed(o.url, o.private_key, b, now() + interval '1 second')) FROM other o, dup;
SELECT is((SELECT reply ->> 'status' FROM r WHERE n = 3), 'duplicate', 'a retried delivery (same request id) is acknowledged as duplicate');
SELECT is((SELECT reply ->> 'http' FROM r WHERE n = 3), '200', 'with 200, so the sender stops retrying');
SELECT is((SELECT name FROM pod.videos WHERE uuid = '11111111-1111-1111-1111-111111111111'), 'Changed here', 'and not applied a second time');

-- Refusals: each answered 400/401/403 with a reason, logged, changing nothing else.
CREATE TEMP TABLE before AS SELECT (SELECT count(*) FROM pod.videos) AS videos, (SELECT count(*) FROM pod.inbox_rejections) AS rejections,
  (SELECT coalesce(sum(count), 0) FROM pod.inbox_rejection_counts) AS counted;
CREATE TEMP TABLE v2 AS SELECT pg_temp.activity('video.published', '{"object": {"uuid": "22222222-2222-2222-2222-222222222222", "name": "Nope"}}') AS b;
-- replayed: exactly the request of n = 2 again
SELECT pg_temp.send(10, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o, dup;
-- forged: signed by a key that is not the friend's
SELECT pg_temp.send(11, b, pg_temp.signed(o.url, s.private_key, b)) FROM other o, stranger s, v2;
-- stale: Date 31 minutes ago; and from the future
SELECT pg_temp.send(12, b, pg_temp.signed(o.url, o.private_key, b, now() - interval '31 minutes')) FROM other o, v2;
SELECT pg_temp.send(13, b, pg_temp.signed(o.url, o.private_key, b, now() + interval '31 minutes')) FROM other o, v2;
-- digest mismatch: headers signed for another body
SELECT pg_temp.send(14, b, pg_temp.signed(o.url, o.private_key, replace(b, 'Nope', 'Yes'))) FROM other o, v2;
-- body changed after signing, digest header kept: digest mismatch too
SELECT pg_temp.send(15, replace(b, 'Nope', 'Yes'), pg_temp.signed(o.url, o.private_key, b)) FROM other o, v2;
-- unknown key, unsigned, wrong algorithm, signature over fewer headers, not JSON
SELECT pg_temp.send(16, b, pg_temp.signed(s.url, s.private_key, b)) FROM stranger s, v2;
SELECT pg_temp.send(17, b, pg_temp.signed(o.url, o.private_key, b) - 'signature') FROM other o, v2;
SELECT pg_temp.send(18, b, jsonb_set(pg_temp.signed(o.url, o.private_key, b), '{signature}',
         to_jsonb(replace(pg_temp.signed(o.url, o.private_key, b) ->> 'signature', 'rsa-sha256', 'hmac-sha256')))) FROM other o, v2;
SELECT pg_temp.send(19, b, jsonb_set(pg_temp.signed(o.url, o.private_key, b), '{signature}',
         to_jsonb(replace(pg_temp.signed(o.url, o.private_key, b) ->> 'signature', ' digest"', '"')))) FROM other o, v2;
-- actor is not the signer
SELECT pg_temp.send(20, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o,
  pg_temp.activity('video.published', '{"object": {"uuid": "33333333-3333-3333-3333-333333333333", "name": "x"}}', 'http://127.0.0.1:57998') b;
SELECT is((SELECT array_agg(n || ':' || (reply ->> 'http') ORDER BY n) FROM r WHERE n >= 10),
  ARRAY['10:401', '11:401', '12:401', '13:401', '14:400', '15:400', '16:401', '17:401', '18:401', '19:401', '20:401'],
  'replayed, forged, stale, future, digest-mismatched, unknown-key, unsigned, wrong-algorithm, partial and actor-spoofing requests are refused');
SELECT is((SELECT reply ->> 'message' FROM r WHERE n = 10), 'replayed request (signature already seen)', 'replay reason');
SELECT is((SELECT reply ->> 'message' FROM r WHERE n = 18), 'signature algorithm must be rsa-sha256 (or hs2019 with an RSA key)', 'wrong-algorithm reason');
SELECT is((SELECT reply ->> 'message' FROM r WHERE n = 11), 'signature does not verify', 'forgery reason');
SELECT is((SELECT reply ->> 'message' FROM r WHERE n = 12), 'Date is more than 1800 s away from now', 'stale reason');
SELECT is((SELECT reply ->> 'message' FROM r WHERE n = 14), 'Digest does not match the body', 'digest reason');
SELECT is((SELECT reply ->> 'code' FROM r WHERE n = 16), 'PT401', 'the code is PostgREST''s PT401');
SELECT is((SELECT count(*) FROM pod.videos), (SELECT videos FROM before), 'refused requests changed no video');
-- algorithm="hs2019" (GoToSocial, newer Mastodon) with the friend's RSA key is accepted
SELECT is(pg_temp.post(b, jsonb_set(pg_temp.signed(o.url, o.private_key, b), '{signature}',
         to_jsonb(replace(pg_temp.signed(o.url, o.private_key, b) ->> 'signature', '"rsa-sha256"', '"hs2019"')))) ->> 'status', 'applied',
  'a request signed with algorithm="hs2019" and the friend''s RSA key is applied')
  FROM other o, pg_temp.activity('video.published', '{"object": {"uuid": "aaaaaaaa-0000-4000-8000-000000002019", "name": "hs2019"}}') b;
SELECT is((SELECT count(*) FROM pod.inbox_rejections) - (SELECT rejections FROM before), 9::bigint,
  'each refusal that named a known pod''s key left one log row');
SELECT is((SELECT sum(count) FROM pod.inbox_rejection_counts) - (SELECT counted FROM before), 2::numeric,
  'the unsigned and the unknown-key ones (anyone can send them) only count (pod.inbox_rejection_counts)');
SELECT is((SELECT key_id FROM pod.inbox_rejections ORDER BY id DESC LIMIT 1), 'http://127.0.0.1:57999#main-key', 'the log row says whose key');

-- In the default mode a refusal is a PTxxx error (what the gateway maps to the status).
SELECT pod.set_setting('federation.inbox_reject_mode', '"raise"');
SELECT throws_ok(format($$SELECT pg_temp.post(%L, %L)$$, b, pg_temp.signed(o.url, s.private_key, b)), 'PT401', 'signature does not verify',
                 'default mode: a forged request raises PT401 (the gateway answers 401 with the reason)')
  FROM other o, stranger s, v2;
SELECT throws_ok(format($$SELECT pg_temp.post(%L, %L)$$, b, pg_temp.signed(o.url, o.private_key, replace(b, 'Nope', 'Yes'))), 'PT400',
                 'Digest does not match the body', 'default mode: a digest mismatch raises PT400')
  FROM other o, v2;
SELECT pod.set_setting('federation.inbox_reject_mode', '"status"');

-- Encrypted body from a friend: opened and applied.
SELECT pg_temp.send(30, e, pg_temp.signed(o.url, o.private_key, e)) FROM other o,
  pod.envelope_seal_json(pg_temp.activity('video.published', '{"object": {"uuid": "44444444-4444-4444-4444-444444444444", "name": "Sealed"}}'),
                         (SELECT public_key FROM pod.identity)) e;
SELECT is((SELECT reply ->> 'status' FROM r WHERE n = 30), 'applied', 'an encrypted activity is decrypted and applied');
SELECT is((SELECT name FROM pod.videos WHERE uuid = '44444444-4444-4444-4444-444444444444'), 'Sealed', 'its video is there');
SELECT pg_temp.send(31, e, pg_temp.signed(o.url, o.private_key, e)) FROM other o,
  pod.envelope_seal_json(pg_temp.activity('video.published', '{"object": {"uuid": "55555555-5555-5555-5555-555555555555", "name": "Other key"}}'),
                         (SELECT public_key FROM stranger)) e;
SELECT is((SELECT reply ->> 'http' FROM r WHERE n = 31), '400', 'a body sealed for another pod is refused (400)');

-- video.removed only removes the sender's own videos.
SELECT pg_temp.send(32, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o,
  pg_temp.activity('video.removed', '{"object": {"uuid": "44444444-4444-4444-4444-444444444444"}}') b;
SELECT is((SELECT count(*) FROM pod.videos WHERE uuid = '44444444-4444-4444-4444-444444444444'), 0::bigint, 'video.removed removes it');

-- A friend request from an unknown pod. Its key is not taken from the request: the
-- request is held (202) and the key fetched from the pod's URL (a verify_key job).
-- An impostor signs a request claiming pod 57995's URL with a key of its own.
CREATE TEMP TABLE pod95 AS SELECT 'http://127.0.0.1:57995'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;
SELECT pg_temp.send(42, b, pg_temp.signed(p.url, s.private_key, b)) FROM stranger s, pod95 p,
  pg_temp.activity('friend.request', jsonb_build_object('public_key', (SELECT public_key FROM stranger)), 'http://127.0.0.1:57995') b;
SELECT pg_temp.send(40, b, pg_temp.signed(s.url, s.private_key, b)) FROM stranger s,
  pg_temp.activity('friend.request', jsonb_build_object('public_key', (SELECT public_key FROM stranger)), 'http://127.0.0.1:57998') b;
SELECT is((SELECT array_agg((reply ->> 'http') || ' ' || (reply ->> 'status') ORDER BY n) FROM r WHERE n IN (40, 42)),
  ARRAY['202 held', '202 held'], 'friend requests from pods of unknown key are held (202)');
SELECT is((SELECT count(*) FROM pod.friends WHERE url IN ('http://127.0.0.1:57998', 'http://127.0.0.1:57995')), 0::bigint,
  'no friend yet: the key presented in a request is never trusted');
SELECT is((SELECT array_agg(target ORDER BY target) FROM pod.jobs WHERE kind = 'verify_key' AND state = 'waiting'),
  ARRAY['http://127.0.0.1:57995', 'http://127.0.0.1:57998'], 'a verify_key job per pod');
SELECT pg_temp.send(43, b, pg_temp.signed(s.url, s.private_key, b)) FROM stranger s,
  pg_temp.activity('video.published', '{"object": {"uuid": "88888888-8888-8888-8888-888888888888", "name": "x"}}', 'http://127.0.0.1:57998') b;
SELECT is((SELECT reply ->> 'http' || ' ' || (reply ->> 'status') FROM r WHERE n = 43), '202 held',
  'a delivery racing the friend request of a pod whose key is being fetched waits with it');
-- ... sealed too: it is opened and checked when applied.
SELECT pg_temp.send(45, e, pg_temp.signed(s.url, s.private_key, e)) FROM stranger s,
  pod.envelope_seal_json(pg_temp.activity('video.published', '{"object": {"uuid": "88888888-8888-8888-8888-88888888888a", "name": "sealed"}}',
                                          'http://127.0.0.1:57998'), (SELECT public_key FROM pod.identity)) e;
SELECT is((SELECT reply ->> 'http' || ' ' || (reply ->> 'status') FROM r WHERE n = 45), '202 held', 'a sealed one waits as well');
SELECT pg_temp.send(44, b, pg_temp.signed('http://127.0.0.1:57993', s.private_key, b)) FROM stranger s,
  pg_temp.activity('video.published', '{"object": {"uuid": "88888888-8888-8888-8888-888888888889", "name": "x"}}', 'http://127.0.0.1:57993') b;
SELECT is((SELECT reply ->> 'http' FROM r WHERE n = 44), '401', 'other activities from an unknown key are refused');
CREATE TEMP TABLE vk AS SELECT * FROM pod.fetches_claim('fed');
CREATE TEMP TABLE vk2 AS SELECT * FROM pod.fetches_claim('fed');
SELECT is((SELECT array_agg(kind || ' ' || url ORDER BY url) FROM (SELECT * FROM vk UNION ALL SELECT * FROM vk2) v),
  ARRAY['verify_key http://127.0.0.1:57995', 'verify_key http://127.0.0.1:57998'], 'the federator GETs each pod''s keyId URL (its origin, #main-key)');
-- What each URL answers: the stranger's publishes its own key (a PostgREST-style view:
-- an array of one row); 57995's publishes 57995's real key, not the impostor's.
CREATE TEMP TABLE vkr AS
  SELECT v.pod_url, pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[CASE v.pod_url
           WHEN s.url THEN json_build_array(json_build_object('url', s.url, 'public_key', s.public_key))::text
           ELSE json_build_object('url', p.url, 'public_key', p.public_key)::text END]) AS reply
    FROM (SELECT * FROM vk UNION ALL SELECT * FROM vk2) v, stranger s, pod95 p;
SELECT is((SELECT concat_ws(' ', reply #>> '{applied,0,status}', reply #>> '{applied,1,status}', reply #>> '{applied,2,status}')
             FROM vkr WHERE pod_url = 'http://127.0.0.1:57998'),
  'befriended applied applied', 'with the key from its URL, the stranger''s held requests verify and are applied in order');
SELECT is((SELECT origin FROM pod.videos WHERE uuid = '88888888-8888-8888-8888-88888888888a'), 'http://127.0.0.1:57998', 'the sealed one was opened and applied');
SELECT is((SELECT origin FROM pod.videos WHERE uuid = '88888888-8888-8888-8888-888888888888'), 'http://127.0.0.1:57998', 'its video is in the index');
SELECT is((SELECT reply #>> '{applied,0,message}' FROM vkr WHERE pod_url = 'http://127.0.0.1:57995'),
  'signature does not verify with the key published at http://127.0.0.1:57995', 'the impostor''s request is refused');
SELECT is((SELECT count(*) FROM pod.friends WHERE url = 'http://127.0.0.1:57995'), 0::bigint, 'and the impersonated pod is no friend');
SELECT is((SELECT reason FROM pod.inbox_rejections ORDER BY id DESC LIMIT 1),
  'signature does not verify with the key published at http://127.0.0.1:57995', 'the refusal is logged');
SELECT is((SELECT count(*) FROM pod.inbox_held), 0::bigint, 'nothing is left held');
SELECT is((SELECT string_agg(state::text, ',') FROM pod.jobs WHERE kind = 'verify_key'), 'done,done', 'both verify_key jobs are done');
SELECT is((SELECT public_key FROM pod.friends WHERE url = 'http://127.0.0.1:57998'), (SELECT public_key FROM stranger),
  'the stranger''s key is the one fetched from its URL');
SELECT is((SELECT state::text || ':' || score FROM pod.friends WHERE url = 'http://127.0.0.1:57998'), 'active:100', 'the pod is an active friend with score 100');
SELECT is((SELECT payload #>> '{activity,type}' FROM pod.jobs WHERE kind = 'deliver' AND target = 'http://127.0.0.1:57998'), 'friend.accept',
          'a friend.accept (our key and videos) is on its way back');
SELECT pg_temp.send(41, b, pg_temp.signed(s.url, o.private_key, b)) FROM stranger s, other o,
  pg_temp.activity('video.published', '{"object": {"uuid": "66666666-6666-6666-6666-666666666666", "name": "x"}}', 'http://127.0.0.1:57998') b;
SELECT is((SELECT reply ->> 'http' FROM r WHERE n = 41), '401', 'once known, its stored key is the only one accepted');

-- Scores -------------------------------------------------------------------------------
DELETE FROM pod.jobs;
UPDATE pod.friends SET score = 990 WHERE url = 'http://127.0.0.1:57998';
SELECT pod.deliver(ARRAY['http://127.0.0.1:57998'], 'video.removed', '{"object": {"uuid": "00000000-0000-0000-0000-000000000001"}}') FROM generate_series(1, 3);
SELECT pod.job_complete(ARRAY(SELECT job_id FROM pod.deliveries_claim('fed', 3)), 'fed');
SELECT is((SELECT score FROM pod.friends WHERE url = 'http://127.0.0.1:57998'), 1000, 'delivered requests add 10 each, at most 1000');
UPDATE pod.friends SET score = 100 WHERE url = 'http://127.0.0.1:57999';
SELECT pod.deliver(ARRAY['http://127.0.0.1:57999'], 'video.removed', '{"object": {"uuid": "00000000-0000-0000-0000-000000000001"}}') FROM generate_series(1, 4);
CREATE TEMP TABLE c4 AS SELECT job_id FROM pod.deliveries_claim('fed', 4);
SELECT pod.job_fail(ARRAY(SELECT job_id FROM c4 ORDER BY job_id LIMIT 3), ARRAY['e1', 'e2', 'e3'], 'fed');
SELECT pod.job_complete(ARRAY(SELECT job_id FROM c4 ORDER BY job_id DESC LIMIT 1), 'fed');
SELECT is((SELECT score FROM pod.friends WHERE url = 'http://127.0.0.1:57999'), 80, 'each failed attempt takes 10 (3 failed, 1 delivered: 100 − 30 + 10)');
-- A release (a stopping federator gives jobs back) changes no score.
UPDATE pod.jobs SET run_at = now() WHERE state = 'waiting';
SELECT pod.job_release(ARRAY(SELECT job_id FROM pod.deliveries_claim('fed', 10)), 'fed');
SELECT is((SELECT score FROM pod.friends WHERE url = 'http://127.0.0.1:57999'), 80, 'released deliveries do not count as failures');
-- To zero: revoked, its videos and cached items gone, its waiting deliveries dropped.
INSERT INTO pod.pubsub_nodes (service, name) VALUES ('http://127.0.0.1:57999', 'n1');
INSERT INTO pod.pubsub_items (node_id, name, data, publisher) SELECT id, 'i1', 'x', 'http://127.0.0.1:57999' FROM pod.pubsub_nodes;
UPDATE pod.friends SET score = 20 WHERE url = 'http://127.0.0.1:57999';
UPDATE pod.jobs SET run_at = now() WHERE state = 'waiting';
CREATE TEMP TABLE c5 AS SELECT job_id FROM pod.deliveries_claim('fed', 10);
SELECT pod.job_fail(ARRAY(SELECT job_id FROM c5), ARRAY(SELECT 'down' FROM c5), 'fed');
SELECT is((SELECT state::text || ':' || score FROM pod.friends WHERE url = 'http://127.0.0.1:57999'), 'revoked:0', 'at 0 the friend is revoked');
SELECT is((SELECT count(*) FROM pod.videos WHERE origin = 'http://127.0.0.1:57999'), 0::bigint, 'its videos are removed');
SELECT is((SELECT count(*) FROM pod.pubsub_items WHERE publisher = 'http://127.0.0.1:57999') + (SELECT count(*) FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57999'),
          0::bigint, 'its cached pubsub nodes and items are removed');
SELECT is((SELECT count(*) FROM pod.jobs WHERE target = 'http://127.0.0.1:57999' AND state = 'waiting'), 0::bigint, 'its waiting deliveries are dropped');
SELECT pg_temp.send(50, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o,
  pg_temp.activity('friend.request', jsonb_build_object('public_key', (SELECT public_key FROM other))) b;
SELECT is((SELECT reply ->> 'http' FROM r WHERE n = 50), '403', 'a revoked pod stays blocked, even asking again');
SELECT throws_ok($$SELECT pod.unblock_friend('http://127.0.0.1:57001')$$, 'P0002', NULL, 'unblocking a pod that is not blocked is an error');
SELECT ok(pod.unblock_friend('http://127.0.0.1:57999'), 'an admin unblocks it');
SELECT pg_temp.send(51, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o,
  pg_temp.activity('friend.request', jsonb_build_object('public_key', (SELECT public_key FROM other))) b;
SELECT is((SELECT reply ->> 'status' FROM r WHERE n = 51), 'held', 'then it can ask again (its key is fetched anew)');
SELECT is((SELECT pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[json_build_object('url', o.url, 'public_key', o.public_key)::text]) #>> '{applied,0,status}'
             FROM pod.fetches_claim('fed') v, other o), 'befriended', 'and befriend again');

-- A pod whose URL publishes no usable identity: the job fails (retried); once it is
-- dead, pruning refuses what was held.
CREATE TEMP TABLE pod94 AS SELECT 'http://127.0.0.1:57994'::text AS url, k.* FROM pod.rsa_generate_keypair(2048) k;
SELECT pg_temp.send(52, b, pg_temp.signed(p.url, p.private_key, b)) FROM pod94 p,
  pg_temp.activity('friend.request', '{}', 'http://127.0.0.1:57994') b;
CREATE TEMP TABLE vk94 AS SELECT * FROM pod.fetches_claim('fed');
SELECT is(pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY['<html>not found</html>']) ->> 'status', 'failed',
  'an answer that is no identity document fails the job') FROM vk94 v;
SELECT is((SELECT state::text || ' ' || attempts || ' ' || left(last_error, 58) FROM pod.jobs WHERE id = (SELECT job_id FROM vk94)),
  'waiting 1 no identity document for http://127.0.0.1:57994 at its URL', 'it waits for a retry, with the reason');
UPDATE pod.jobs SET run_at = now() WHERE id = (SELECT job_id FROM vk94);
SELECT is(pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[json_build_object('url', 'http://127.0.0.1:57993', 'public_key', p.public_key)::text]) ->> 'status',
  'failed', 'a document naming another URL is not that pod''s identity') FROM pod.fetches_claim('fed') v, pod94 p;
SELECT is((SELECT count(*) FROM pod.inbox_held WHERE sender = 'http://127.0.0.1:57994'), 1::bigint, 'the request stays held meanwhile');
UPDATE pod.jobs SET state = 'dead' WHERE id = (SELECT job_id FROM vk94);
SELECT pod.inbox_prune();
SELECT is((SELECT count(*) FROM pod.inbox_held), 0::bigint, 'once the job is dead, pruning drops the held request');
SELECT is((SELECT reason FROM pod.inbox_rejections ORDER BY id DESC LIMIT 1), 'the key of http://127.0.0.1:57994 could not be fetched from its URL',
  'and logs its refusal');
SELECT is((SELECT count(*) FROM pod.friends WHERE url = 'http://127.0.0.1:57994'), 0::bigint, 'no friend was made');

-- An admin (a role, not the superuser) may revoke a friend by hand; the cleanup runs.
INSERT INTO pod.friends (url, state) VALUES ('http://127.0.0.1:57996', 'active');
SELECT pod.deliver(ARRAY['http://127.0.0.1:57996'], 'video.removed', '{"object": {}}');
SET LOCAL ROLE pgpod_admin;
SELECT lives_ok($$UPDATE pod.friends SET state = 'revoked' WHERE url = 'http://127.0.0.1:57996'$$, 'pgpod_admin revokes a friend by hand');
RESET ROLE;
SELECT is((SELECT count(*) FROM pod.jobs WHERE target = 'http://127.0.0.1:57996'), 0::bigint, 'and its waiting deliveries are dropped');
DELETE FROM pod.friends WHERE url = 'http://127.0.0.1:57996';

-- Key rotation: a friend that changed its key has it fetched again from its URL ----------
DELETE FROM pod.jobs WHERE kind IN ('make_friends', 'verify_key');
-- (this transaction's clock stands still: its key was fetched an hour ago)
UPDATE pod.friends SET key_fetched_at = now() - interval '1 hour' WHERE url = 'http://127.0.0.1:57999';
CREATE TEMP TABLE rotated AS SELECT k.* FROM pod.rsa_generate_keypair(2048) k;
CREATE TEMP TABLE b60 AS SELECT pg_temp.activity('video.published', '{"object": {"uuid": "66666666-6666-6666-6666-666666666666", "name": "New key"}}') AS b;
SELECT pg_temp.send(60, b, pg_temp.signed(o.url, k.private_key, b)) FROM other o, rotated k, b60;
SELECT is((SELECT (reply ->> 'http') || ' ' || (reply ->> 'message') FROM r WHERE n = 60), '401 signature does not verify',
          'a friend signing with a new key is refused at first');
SELECT is(pod.friend_keys_refresh(), 1, 'the refusal has its key fetched again from its URL (a verify_key job)');
SELECT is(pod.friend_keys_refresh(), 0, 'only once while that job is in flight');
CREATE TEMP TABLE vk60 AS SELECT * FROM pod.fetches_claim('fed');
SELECT is((SELECT string_agg(kind || ' ' || url, ',') FROM vk60), 'verify_key http://127.0.0.1:57999', 'the federator GETs its keyId URL');
SELECT is(pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY[json_build_object('url', o.url, 'public_key', k.public_key)::text]) ->> 'status',
          'verified', 'its URL publishes the new key') FROM vk60 v, other o, rotated k;
SELECT ok((SELECT public_key = (SELECT public_key FROM rotated) AND key_fetched_at = now() FROM pod.friends WHERE url = 'http://127.0.0.1:57999'),
          'the key published at its URL is the friend''s key now');
SELECT pg_temp.send(61, b, pg_temp.signed(o.url, k.private_key, b, now() + interval '1 second')) FROM other o, rotated k, b60;
SELECT is((SELECT reply ->> 'status' FROM r WHERE n = 61), 'applied', 'the sender''s retry of the refused request is applied');
SELECT pg_temp.send(62, b, pg_temp.signed(o.url, o.private_key, b)) FROM other o, v2;
SELECT is((SELECT (reply ->> 'http') || ' ' || (reply ->> 'message') FROM r WHERE n = 62), '401 signature does not verify',
          'the old key signs nothing any more');
UPDATE pod.friends SET key_fetched_at = now() - interval '9 minutes' WHERE url = 'http://127.0.0.1:57999';
SELECT is(pod.friend_keys_refresh(), 0, 'and its refusal fetches no key again within federation.key_refetch_interval (10 min)');
UPDATE pod.friends SET key_fetched_at = now() - interval '11 minutes' WHERE url = 'http://127.0.0.1:57999';
SELECT is(pod.friend_keys_refresh(), 1, 'after it, it does');

-- Publishing a local video enqueues one delivery per active friend --------------------
DELETE FROM pod.jobs;
INSERT INTO pod.friends (url, state) VALUES ('http://127.0.0.1:57997', 'pending');
INSERT INTO pod.users (id, email, pass_hash) VALUES ('99999999-9999-9999-9999-999999999999', 'fed@example.org', '$argon2id$test');
INSERT INTO pod.channels (owner_id, name, display_name) VALUES ('99999999-9999-9999-9999-999999999999', 'fedchan', 'Fed');
INSERT INTO pod.videos (uuid, channel_id, name, state) SELECT '77777777-7777-7777-7777-777777777777', id, 'Draft', 'uploaded' FROM pod.channels;
SELECT is((SELECT count(*) FROM pod.jobs), 0::bigint, 'an unpublished video is not announced');
UPDATE pod.videos SET state = 'published' WHERE uuid = '77777777-7777-7777-7777-777777777777';
SELECT is((SELECT array_agg(target || ' ' || (payload #>> '{activity,type}') ORDER BY target) FROM pod.jobs),
  ARRAY['http://127.0.0.1:57998 video.published', 'http://127.0.0.1:57999 video.published'], 'publishing it enqueues video.published to each active friend');
SELECT is((SELECT DISTINCT payload #>> '{activity,object,author}' FROM pod.jobs), 'fedchan', 'the announced video carries its author (channel)');
UPDATE pod.videos SET name = 'Final' WHERE uuid = '77777777-7777-7777-7777-777777777777';
SELECT is((SELECT count(*) FROM pod.jobs WHERE payload #>> '{activity,type}' = 'video.updated'), 2::bigint, 'a change is announced as video.updated');
DELETE FROM pod.videos WHERE uuid = '77777777-7777-7777-7777-777777777777';
SELECT is((SELECT count(*) FROM pod.jobs WHERE payload #>> '{activity,type}' = 'video.removed'), 2::bigint, 'a removal as video.removed');

-- Admin: remove a friend, leave the network.
SELECT ok(pod.remove_friend('http://127.0.0.1:57998'), 'remove_friend');
SELECT is((SELECT count(*) FROM pod.friends WHERE url = 'http://127.0.0.1:57998'), 0::bigint, 'the friend is gone');
SELECT is((SELECT count(*) FROM pod.jobs WHERE target = 'http://127.0.0.1:57998' AND payload #>> '{activity,type}' = 'friend.remove'), 1::bigint, 'and told so');
SELECT is(pod.leave_network(), 2, 'leave_network leaves every remaining friend');

SELECT * FROM finish();
ROLLBACK;
