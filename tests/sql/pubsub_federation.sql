-- pgTAP: the pubsub cache between pods and feeds: friends' events (publish, retract,
-- purge, delete; the convergence rule; bad events refused), full synchronisation
-- (node list, pages, bounds, unparsed items, errors, stuck reset), serving this pod's
-- nodes, and feed subscriptions (polls, 304, failures and backoff, hostile feeds).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(70);

DELETE FROM pod.jobs;
DELETE FROM pod.friends;
DELETE FROM pod.pubsub_nodes;
DELETE FROM pod.feeds;
SELECT pod.ensure_identity('http://127.0.0.1:57451');
CREATE FUNCTION pg_temp.entry(id text, title text, updated text DEFAULT '2026-01-02T03:04:05Z') RETURNS text LANGUAGE sql
  RETURN format('<entry xmlns="http://www.w3.org/2005/Atom" xmlns:pod="urn:pgpod:video:0"><id>%s</id><title>%s</title><updated>%s</updated><pod:uuid>%s</pod:uuid></entry>',
                id, title, updated, id);
CREATE FUNCTION pg_temp.event(type text, object jsonb) RETURNS jsonb LANGUAGE sql
  RETURN jsonb_build_object('id', gen_random_uuid(), 'type', type, 'actor', 'http://127.0.0.1:57999', 'object', object);

-- Events ------------------------------------------------------------------------------------
INSERT INTO pod.friends (url, state) VALUES ('http://127.0.0.1:57999', 'active');
SELECT is((SELECT payload FROM pod.jobs WHERE kind = 'pubsub_sync'), '{"service": "http://127.0.0.1:57999"}',
  'a new active friend is synchronised in full: its node list is fetched first');
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'a1', 'payload', pg_temp.entry('a1', 'Event video')))),
  '{"status": "applied"}', 'a pubsub.publish event is applied');
SELECT is((SELECT name FROM api.network_videos WHERE uuid = 'a1'), 'Event video', 'and the video is in the network index');
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'a1', 'payload', pg_temp.entry('a1', 'Stale', '2025-01-01T00:00:00Z')))),
  '{"status": "ignored"}', 'an older version is ignored');
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.retract',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'a1', 'retracted', '2026-02-01T00:00:00Z'))),
  '{"status": "applied"}', 'a pubsub.retract event is applied');
SELECT is((SELECT count(*) FROM api.network_videos WHERE uuid = 'a1'), 0::bigint, 'the video left the index');
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'a1', 'payload', pg_temp.entry('a1', 'Late update')))),
  '{"status": "ignored"}', 'an update older than the retraction, arriving after it, cannot bring it back');
SELECT throws_ok($$SELECT pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'x', 'payload', '<!DOCTYPE a [<!ENTITY b SYSTEM "file:///etc/passwd">]><a>&b;</a>')))$$,
  'PT400', NULL, 'an XXE payload in an event is refused (PT400)');
SELECT throws_ok($$SELECT pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'x', 'payload', '<entry')))$$, 'PT400', NULL, 'a malformed payload is refused');
SELECT throws_ok($$SELECT pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish', '{"item": "x"}'))$$,
  'PT400', NULL, 'an event without a node is refused');
SELECT pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.publish',
  jsonb_build_object('node', 'urn:pgpod:videos', 'item', 'a' || g, 'payload', pg_temp.entry('a' || g, 'V' || g))))
  FROM generate_series(2, 4) g;
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.purge', '{"node": "urn:pgpod:videos"}')),
  '{"status": "applied"}', 'a pubsub.purge event');
SELECT is((SELECT count(*) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id WHERE n.service = 'http://127.0.0.1:57999'),
  0::bigint, 'empties the node');
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.delete', '{"node": "urn:pgpod:videos"}')),
  '{"status": "applied"}', 'a pubsub.delete event');
SELECT is((SELECT count(*) FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57999'), 0::bigint, 'removes the node');
SELECT is(pod.pubsub_receive('http://127.0.0.1:57999', pg_temp.event('pubsub.delete', '{"node": "urn:pgpod:videos"}')),
  '{"status": "ignored"}', 'deleting an unknown node changes nothing');

-- Synchronisation ---------------------------------------------------------------------------
CREATE TEMP TABLE c AS SELECT * FROM pod.fetch_jobs_claim('w1');
SELECT is((SELECT url FROM c), 'http://127.0.0.1:57999/rpc/pubsub_nodes', 'the node list is a GET of /rpc/pubsub_nodes');
SELECT ok((SELECT array_to_string(headers, E'\n') ~ 'Signature: keyId="http://127.0.0.1:57451#main-key"' FROM c), 'signed like the other fetches');
SELECT is(pod.fetch_jobs_finish((SELECT job_id FROM c), 'w1', ARRAY['http://127.0.0.1:57999'],
  ARRAY['[{"name": "urn:pgpod:videos", "type": "video"}, {"name": "urn:example:private"}]']),
  '{"status": "listed", "synchronising": 1}', 'of the listed nodes, those an analyser says to synchronise start');
SELECT is((SELECT sync_state FROM pod.pubsub_nodes WHERE name = 'urn:pgpod:videos'), 'in_progress', 'the videos node is in_progress');
SELECT is((SELECT sync_state FROM pod.pubsub_nodes WHERE name = 'urn:example:private'), 'no_sync', 'the other one is no_sync');
SELECT pod.set_setting('pubsub.sync_page', '2');
SELECT pod.set_setting('pubsub.sync_max_pages', '3');
TRUNCATE c; INSERT INTO c SELECT * FROM pod.fetch_jobs_claim('w1');
SELECT is((SELECT url FROM c), 'http://127.0.0.1:57999/rpc/pubsub_items?node=urn%3Apgpod%3Avideos&max=2', 'page 1: a GET of the node''s items');
SELECT is(pod.fetch_jobs_finish((SELECT job_id FROM c), 'w1', ARRAY['http://127.0.0.1:57999'],
  ARRAY[jsonb_build_object('items', jsonb_build_array(
    jsonb_build_object('name', 's1', 'data', pg_temp.entry('s1', 'Synced 1')),
    jsonb_build_object('name', 's2', 'data', '<entry xmlns="http://www.w3.org/2005/Atom"><title>broken</entry>')),
    'last', 's2')::text]),
  '{"page": 1, "status": "page", "stored": 1, "unparsed": 1}', 'a full page: one item stored, one unparsed, the next page queued');
SELECT is((SELECT parse_error ~ '^2200M' FROM pod.pubsub_items WHERE name = 's2'), true, 'the unparsed item is kept raw with its reason');
TRUNCATE c; INSERT INTO c SELECT * FROM pod.fetch_jobs_claim('w1');
SELECT is((SELECT url FROM c), 'http://127.0.0.1:57999/rpc/pubsub_items?node=urn%3Apgpod%3Avideos&max=2&after=s2', 'page 2 is after the last item');
SELECT is(pod.fetch_jobs_finish((SELECT job_id FROM c), 'w1', ARRAY['http://127.0.0.1:57999'],
  ARRAY[jsonb_build_object('items', jsonb_build_array(jsonb_build_object('name', 's3', 'data', pg_temp.entry('s3', 'Synced 3'))))::text]),
  '{"page": 2, "status": "completed", "stored": 1, "unparsed": 0}', 'a short page completes the synchronisation');
SELECT is((SELECT sync_state FROM pod.pubsub_nodes WHERE name = 'urn:pgpod:videos'), 'completed', 'sync_state completed');
SELECT is((SELECT array_agg(name ORDER BY name) FROM api.network_videos), ARRAY['Synced 1', 'Synced 3'], 'the synchronised videos are indexed');
-- Bounded: full pages past sync_max_pages are an error, and the partial copy goes.
SELECT pod.pubsub_sync_start('http://127.0.0.1:57999', 'urn:pgpod:videos');
SELECT is((SELECT count(*) FROM api.network_videos), 0::bigint, 'a new synchronisation starts from an empty copy');
CREATE FUNCTION pg_temp.full_page(p integer) RETURNS text LANGUAGE sql
  RETURN jsonb_build_object('items', jsonb_build_array(jsonb_build_object('name', 'p' || p || 'a', 'data', pg_temp.entry('p' || p || 'a', 'x')),
                                                      jsonb_build_object('name', 'p' || p || 'b', 'data', pg_temp.entry('p' || p || 'b', 'y'))),
                            'last', 'p' || p || 'b')::text;
SELECT pod.fetch_jobs_finish(job_id, 'w1', ARRAY[pod_url], ARRAY[pg_temp.full_page(p)]) FROM pod.fetch_jobs_claim('w1'), generate_series(1, 1) p;
SELECT pod.fetch_jobs_finish(job_id, 'w1', ARRAY[pod_url], ARRAY[pg_temp.full_page(2)]) FROM pod.fetch_jobs_claim('w1');
SELECT is((SELECT pod.fetch_jobs_finish(job_id, 'w1', ARRAY[pod_url], ARRAY[pg_temp.full_page(3)]) FROM pod.fetch_jobs_claim('w1')),
  '{"error": "too many pages", "status": "error"}', 'a third full page with sync_max_pages = 3 is an error');
SELECT is((SELECT row(sync_state, sync_error)::text FROM pod.pubsub_nodes WHERE name = 'urn:pgpod:videos'), '(error,"more than 3 pages")',
  'the error is recorded');
SELECT is((SELECT count(*) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id WHERE n.name = 'urn:pgpod:videos'), 0::bigint,
  'and the partial copy dropped');
SELECT pod.pubsub_sync_start('http://127.0.0.1:57999', 'urn:pgpod:videos');
SELECT is((SELECT pod.fetch_jobs_finish(job_id, 'w1', ARRAY[pod_url], ARRAY[NULL]) FROM pod.fetch_jobs_claim('w1')),
  '{"status": "error"}', 'an origin that answers nothing usable: error');
-- Stuck: in_progress without a job past the deadline starts again.
UPDATE pod.pubsub_nodes SET sync_state = 'in_progress', sync_state_updated = now() - interval '1 hour' WHERE name = 'urn:pgpod:videos';
SELECT is(pod.pubsub_sync_reset_stuck(), 1, 'a synchronisation stuck past the deadline is reset');
SELECT is((SELECT count(*) FROM pod.jobs WHERE kind = 'pubsub_sync' AND state = 'waiting' AND payload ->> 'node' = 'urn:pgpod:videos'),
  1::bigint, 'and queued again');
-- A revoked friend's nodes go.
UPDATE pod.friends SET state = 'revoked' WHERE url = 'http://127.0.0.1:57999';
SELECT is((SELECT count(*) FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57999'), 0::bigint, 'revoking a friend removes its nodes');

-- Serving this pod's nodes -------------------------------------------------------------------
SELECT pod.pubsub_publish('http://127.0.0.1:57451', 'urn:pgpod:videos', 'm' || g, pg_temp.entry('m' || g, 'Mine ' || g)) FROM generate_series(1, 3) g;
SELECT is(api.pubsub_nodes()::jsonb, '[{"name": "urn:pgpod:videos", "type": "video"}]', 'api.pubsub_nodes lists this pod''s nodes');
SELECT is((SELECT jsonb_agg(e ->> 'name') FROM jsonb_array_elements(api.pubsub_items('urn:pgpod:videos', 'm1', 5)::jsonb -> 'items') e),
  '["m2", "m3"]', 'api.pubsub_items serves an RSM page after an item');
SELECT throws_ok($$SELECT api.pubsub_items('urn:no:such')$$, 'P0002', NULL, 'an unknown node');

-- Feeds ----------------------------------------------------------------------------------------
DELETE FROM pod.jobs;
SELECT throws_ok($$SELECT pod.feed_subscribe('file:///etc/passwd')$$, '22023', NULL, 'a feed URL is http(s)');
SELECT throws_ok($$SELECT pod.feed_subscribe('http://127.0.0.1:57000/feed.xml', interval '0')$$, '22023', NULL, 'an interval of at least 1 s');
SELECT isnt(pod.feed_subscribe('http://127.0.0.1:57000/feed.xml', interval '1 minute'), NULL, 'subscribe to a feed');
SELECT is((SELECT count(*) FROM pod.jobs WHERE kind = 'feed_poll' AND state = 'waiting'), 1::bigint, 'its first poll is queued');
TRUNCATE c; INSERT INTO c SELECT * FROM pod.fetch_jobs_claim('w1');
SELECT is((SELECT row(kind, url, headers[1] ~ '^Accept: application/rss\+xml', cardinality(headers))::text FROM c),
  '(feed_poll,http://127.0.0.1:57000/feed.xml,t,1)', 'the poll: a GET of the feed, unconditional the first time');
SELECT is(pod.fetch_jobs_finish((SELECT job_id FROM c), 'w1', ARRAY[NULL], ARRAY[E'HTTP 200\nETag: "v1"\nLast-Modified: Mon, 07 Dec 2026 15:00:00 GMT\n\n' ||
  '<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>T</title>
   <item><title>Feed video</title><guid>https://pt.example/w/1</guid><link>https://pt.example/w/1</link>
     <media:group><media:content url="https://pt.example/f/1.mp4" height="480" duration="12"/></media:group>
     <media:thumbnail url="https://pt.example/s/1.jpg" width="100" height="50"/></item>
   <item><title>Broken<title></item></channel></rss>']) ->> 'error',
  'payload is not well-formed XML', 'a malformed feed is refused');
SELECT is((SELECT row(failures, last_status, last_error ~ 'cannot be read', next_poll_at > now() + interval '90 seconds')::text FROM pod.feeds),
  '(1,200,t,t)', 'is a recorded failure, and the next poll backs off (2 × the interval)');
UPDATE pod.feeds SET next_poll_at = now();
TRUNCATE c; INSERT INTO c SELECT * FROM pod.fetch_jobs_claim('w1');
SELECT is(pod.fetch_jobs_finish((SELECT job_id FROM c), 'w1', ARRAY[NULL], ARRAY[E'HTTP 200\nETag: "v1"\nLast-Modified: Mon, 07 Dec 2026 15:00:00 GMT\n\n' ||
  '<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>T</title>
   <item><title>Feed video</title><guid>https://pt.example/w/1</guid><link>https://pt.example/w/1</link>
     <media:group><media:content url="https://pt.example/f/1.mp4" height="480" duration="12"/></media:group>
     <media:thumbnail url="https://pt.example/s/1.jpg" width="100" height="50"/></item>
   <item><title>Second</title><guid>https://pt.example/w/2</guid></item></channel></rss>']),
  '{"status": 200, "skipped": 0, "published": 2}', 'a good feed: every entry published');
SELECT is((SELECT row(name, origin, duration, thumbnail, from_feed)::text FROM api.network_videos WHERE url = 'https://pt.example/w/1'),
  '("Feed video",http://127.0.0.1:57000/feed.xml,12,https://pt.example/s/1.jpg,t)', 'feed videos are in the network index, parsed');
SELECT is((SELECT row(failures, etag, last_modified)::text FROM pod.feeds), '(0,"""v1""","Mon, 07 Dec 2026 15:00:00 GMT")',
  'the validators are kept, failures reset');
UPDATE pod.feeds SET next_poll_at = now();
TRUNCATE c; INSERT INTO c SELECT * FROM pod.fetch_jobs_claim('w1');
SELECT is((SELECT headers[2:3] FROM c), ARRAY['If-None-Match: "v1"', 'If-Modified-Since: Mon, 07 Dec 2026 15:00:00 GMT'],
  'the next poll is conditional');
SELECT is(pod.fetch_jobs_finish((SELECT job_id FROM c), 'w1', ARRAY[NULL], ARRAY[E'HTTP 304\n\n']), '{"status": 304}', '304: nothing to do');
SELECT is((SELECT row(not_modified, last_body_bytes, (SELECT count(*) FROM api.network_videos WHERE from_feed))::text FROM pod.feeds),
  '(1,0,2)', 'counted, no body, the cache kept');
UPDATE pod.feeds SET next_poll_at = now();
SELECT is((SELECT pod.fetch_jobs_finish(job_id, 'w1', ARRAY[NULL], ARRAY[E'HTTP 200\n\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss>&x;</rss>'])
             FROM pod.fetch_jobs_claim('w1')) ->> 'error', 'XML with a document type declaration is refused', 'an XXE feed is refused');
UPDATE pod.feeds SET next_poll_at = now();
SELECT is((SELECT pod.fetch_jobs_finish(job_id, 'w1', ARRAY[NULL], ARRAY[E'HTTP 0\n\nCouldn''t connect to server'])
             FROM pod.fetch_jobs_claim('w1')), '{"error": "Couldn''t connect to server", "status": 0}', 'an unreachable feed');
SELECT is((SELECT row(failures, last_status)::text FROM pod.feeds), '(2,0)', 'is a second failure in a row (the XXE one was the first)');
SELECT ok(pod.feed_unsubscribe('http://127.0.0.1:57000/feed.xml'), 'unsubscribe');
SELECT is((SELECT count(*) FROM api.network_videos WHERE from_feed), 0::bigint, 'its videos go with it');

-- This pod's videos: the videos node and one node per channel, each entry listing the
-- video's files per resolution (Media RSS) from pod.video_files --------------------------
DELETE FROM pod.pubsub_nodes;
DELETE FROM pod.jobs;
SELECT u.id AS ch_owner, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS ch_claims
  FROM pod.register('chan@pubsub.test', 'channel password') u, LATERAL pod.login('chan@pubsub.test', 'channel password') l \gset
INSERT INTO pod.channels (owner_id, name, display_name) VALUES (:'ch_owner', 'psa', 'A') RETURNING id AS cha \gset
INSERT INTO pod.channels (owner_id, name, display_name) VALUES (:'ch_owner', 'psb', 'B') RETURNING id AS chb \gset
INSERT INTO pod.videos (channel_id, name) VALUES (:cha, 'Channel video') RETURNING uuid AS cv \gset
SELECT set_config('request.jwt.claims', :'ch_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT pod.register_upload(sha256('cv 720'), 6, 'cv720.mp4', 'video/mp4') ->> 'id' AS f720 \gset
SELECT pod.register_upload(sha256('cv 360'), 6, 'cv360.mp4', 'video/mp4') ->> 'id' AS f360 \gset
RESET ROLE;
SELECT ok(pod.video_files_media(:'cv', 'http://127.0.0.1:57451') IS NULL, 'a video without files has no media:content');
INSERT INTO pod.video_files (video_uuid, resolution, file_id, magnet)
  VALUES (:'cv', 720, :'f720', 'magnet:?xt=urn:btih:0720'), (:'cv', 360, :'f360', NULL);
UPDATE pod.videos SET state = 'published' WHERE uuid = :'cv';
SELECT is((SELECT array_agg(name ORDER BY name) FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57451'),
  ARRAY['urn:pgpod:channel:' || :cha, 'urn:pgpod:videos'], 'a published video is an item of the videos node and of its channel''s node');
SELECT is((SELECT count(*) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE i.name = :'cv' AND n.service = 'http://127.0.0.1:57451'), 2::bigint, 'kept in both');
SELECT is((SELECT jsonb_path_query_array(parsed, '$.files[*].resolution') FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE i.name = :'cv' AND n.name = 'urn:pgpod:videos'), '[720, 360]', 'its entry lists the files per resolution, highest first');
SELECT is((SELECT parsed -> 'files' -> 0 FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE i.name = :'cv' AND n.name = 'urn:pgpod:channel:' || :cha),
  jsonb_build_object('url', 'http://127.0.0.1:57451/files/' || :'f720', 'type', 'video/mp4', 'size', 6, 'resolution', 720),
  'media:content: url (the gateway''s /files/), type, fileSize, height');
SELECT is((SELECT magnet FROM api.network_videos WHERE uuid = :'cv'), 'magnet:?xt=urn:btih:0720', 'media:peerLink: the file''s magnet');
SELECT ok((SELECT data ~ '<media:content [^>]*height="360"' FROM pod.pubsub_items WHERE name = :'cv' LIMIT 1), 'the raw entry carries every file');
SELECT is((SELECT count(*) FROM api.network_videos WHERE uuid = :'cv'), 1::bigint, 'the network index lists it once');
UPDATE pod.videos SET channel_id = :chb WHERE uuid = :'cv';
SELECT is((SELECT array_agg(n.name ORDER BY n.name) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id WHERE i.name = :'cv'),
  ARRAY['urn:pgpod:channel:' || :chb, 'urn:pgpod:videos'], 'moved to another channel: out of the old channel''s node, in the new one''s');
UPDATE pod.videos SET state = 'failed' WHERE uuid = :'cv';
SELECT is((SELECT count(*) FROM pod.pubsub_items WHERE name = :'cv'), 0::bigint, 'unpublished: retracted from both nodes');
INSERT INTO pod.friends (url, state) VALUES ('http://127.0.0.1:57997', 'active');
UPDATE pod.videos SET state = 'published' WHERE uuid = :'cv';
SELECT is((SELECT array_agg(payload #>> '{activity,object,node}') FROM pod.jobs WHERE kind = 'deliver' AND target = 'http://127.0.0.1:57997'),
  ARRAY['urn:pgpod:videos'], 'a friend is told once, of the videos node (not of the channel''s)');
-- A friend's channel node is cached, but the network index takes its videos node only.
SELECT isnt(pod.pubsub_publish('http://127.0.0.1:57998', 'urn:pgpod:channel:9', 'dup', pg_temp.entry('dup', 'Dup')), NULL, 'a friend''s channel item is cached');
SELECT is((SELECT row(type, subtype, to_sync)::text FROM pod.pubsub_nodes WHERE name = 'urn:pgpod:channel:9'), '(video,channel,f)',
  'as a channel node, not synchronised');
SELECT is((SELECT count(*) FROM api.network_videos WHERE uuid = 'dup'), 0::bigint, 'and not listed twice in the network index');

SELECT * FROM finish();
ROLLBACK;
