-- remote chats, both sides in one database: the origin (subscribe, post with its rules,
-- refusals told back, events pushed with staff-only ones as skip) and the follower
-- (only the origin speaks for its room, events applied strictly in order, duplicates
-- ignored, tombstones, no direct posting into a mirror), bad activities refused.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(47);

SELECT u.id AS owner_id FROM pod.register('fedowner@lcfed.test', 'owner password') u \gset
SELECT u.id AS reader_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS reader
  FROM pod.register('reader@lcfed.test', 'reader password') u, LATERAL pod.login('reader@lcfed.test', 'reader password') l \gset
INSERT INTO pod.channels (owner_id, name, display_name) VALUES (:'owner_id', 'lcfed', 'Fed channel') RETURNING id AS channel \gset
INSERT INTO pod.videos (channel_id, name, state) VALUES (:channel, 'local live', 'published') RETURNING uuid AS local_video \gset
SELECT url AS me FROM pod.identity \gset

-- origin side ------------------------------------------------------------------------
SELECT is(pod.inbox_livechat('http://podb.test', jsonb_build_object('type', 'chat.subscribe', 'video', :'local_video')) ->> 'status',
  'following', 'a pod follows a local video''s room');
SELECT pod.livechat_room(:'local_video') AS room \gset
SELECT is((SELECT pod_url FROM pod.room_remote_pods WHERE room_id = :'room'), 'http://podb.test', 'it is recorded as following');
SELECT is((SELECT payload #>> '{activity,type}' FROM pod.jobs WHERE kind = 'deliver' AND target = 'http://podb.test' ORDER BY id DESC LIMIT 1),
  'chat.subscribed', 'and is sent the snapshot');
SELECT throws_ok($$SELECT pod.inbox_livechat('http://podb.test', '{"type": "chat.subscribe", "video": "00000000-0000-0000-0000-000000000000"}')$$,
  'PT404', NULL, 'following an unknown video is refused');
SELECT throws_ok($$SELECT pod.inbox_livechat('http://podb.test', '{"type": "chat.subscribe", "video": "not-a-uuid"}')$$,
  'PT400', NULL, 'a malformed video is refused');
SELECT throws_ok(format($$SELECT pod.inbox_livechat('http://podb.test', %L)$$,
                        jsonb_build_object('type', 'chat.post', 'video', :'local_video', 'author', 'eve@podc.test', 'data', '{"text": "x"}'::jsonb)),
  'PT403', NULL, 'a post whose author is not of the sending pod is refused');
SELECT throws_ok(format($$SELECT pod.inbox_livechat('http://podb.test', %L)$$,
                        jsonb_build_object('type', 'chat.post', 'video', :'local_video', 'author', 'bob@podb.test', 'data', '"text"')),
  'PT400', NULL, 'a post without a data object is refused');
SELECT throws_ok(format($$SELECT pod.inbox_livechat('http://podb.test', %L)$$,
                        jsonb_build_object('type', 'chat.dance', 'video', :'local_video')),
  'PT400', NULL, 'an unknown chat activity is refused');
INSERT INTO pod.channel_chat_options (channel_id, options) VALUES (:channel, '{"slow_mode_seconds": 60, "forbidden_words": ["spam"]}');
SELECT is(pod.inbox_livechat('http://podb.test', jsonb_build_object('type', 'chat.post', 'video', :'local_video',
            'author', 'bob@podb.test', 'data', '{"text": "hi from B"}'::jsonb, 'ref', gen_random_uuid())) ->> 'status',
  'posted', 'a remote post passes the rules');
SELECT is((SELECT author_ref FROM pod.messages WHERE data ->> 'text' = 'hi from B'), 'bob@podb.test', 'by user@pod');
SELECT gen_random_uuid() AS ref \gset
SELECT is(pod.inbox_livechat('http://podb.test', jsonb_build_object('type', 'chat.post', 'video', :'local_video',
            'author', 'bob@podb.test', 'data', '{"text": "again"}'::jsonb, 'ref', :'ref')) ->> 'sqlstate',
  'PT429', 'the origin''s slow mode refuses the second');
SELECT ok((SELECT (payload #>> '{activity,retry_after}')::int > 0 AND payload #>> '{activity,ref}' = :'ref'
             FROM pod.jobs WHERE kind = 'deliver' AND payload #>> '{activity,type}' = 'chat.refused'),
  'and tells the sending pod, with the wait');
SELECT is((SELECT count(*)::int FROM pod.messages WHERE data ->> 'text' = 'again'), 0, 'the refused post left nothing');
SELECT is((SELECT array_agg(payload #>> '{activity,kind}' ORDER BY (payload #>> '{activity,seq}')::int)
             FROM pod.jobs WHERE kind = 'deliver' AND payload #>> '{activity,type}' = 'chat.event'),
  ARRAY['new', 'new'], 'the room''s events (the option change, the post) are pushed in order');
UPDATE pod.channel_chat_options SET options = '{"moderation_delay_seconds": 60}' WHERE channel_id = :channel;
SELECT pod.chat_remote_post(:'room', 'carol@podb.test', '{"text": "held"}') AS held_id \gset
SELECT is((SELECT (payload #> '{activity}') - ARRAY['id', 'published', 'actor', 'room', 'video', 'seq']
             FROM pod.jobs WHERE kind = 'deliver' AND payload #>> '{activity,type}' = 'chat.event'
             ORDER BY (payload #>> '{activity,seq}')::int DESC LIMIT 1),
  '{"type": "chat.event", "kind": "skip", "message": null}'::jsonb, 'a held message is pushed as a skip, without content');

-- follower side ----------------------------------------------------------------------
-- A friend's video is known here only as an item of its videos node in the pubsub
-- cache (never a row of pod.videos): a remote video is (its pod, its uuid).
CREATE FUNCTION pg_temp.remote_publish(video uuid, title text) RETURNS text LANGUAGE sql AS $$
  SELECT pod.inbox_video_apply('http://poda.test', jsonb_build_object('uuid', video, 'name', title, 'author', 'alice',
                                                                       'version', 1, 'updated_at', now()))
$$;
SELECT gen_random_uuid() AS rvideo \gset
SELECT set_config('lcfed.rvideo', :'rvideo', true);
SELECT is(pg_temp.remote_publish(:'rvideo', 'remote live'), 'applied', 'pod A''s video is published into the cache');
SELECT is((SELECT origin || ' ' || name FROM pod.remote_video(:'rvideo')), 'http://poda.test remote live',
  'pod.remote_video finds it: its pod and its title');
SELECT is((SELECT count(*)::int FROM pod.videos WHERE uuid = :'rvideo'), 0, 'and pod.videos holds no row of it');
SELECT throws_ok(format('SELECT pod.remote_chat_open(%L)', :'local_video'), 'P0002', NULL,
  'a local video has no remote chat');
SELECT throws_ok($$SELECT pod.remote_chat_open('00000000-0000-0000-0000-00000000abcd')$$, 'P0002', NULL,
  'nor has a video no pod published here');
SELECT pod.remote_server_update('poda.test', '{}') AS updated \gset
INSERT INTO pod.remote_video_chats (host, video_uuid, infos) VALUES ('poda.test', :'rvideo', '{"enabled": true}');
SELECT pod.remote_chat_mirror('poda.test', :'rvideo') AS mirror \gset
SELECT is((SELECT payload #>> '{activity,type}' FROM pod.jobs WHERE target = 'http://poda.test' ORDER BY id DESC LIMIT 1),
  'chat.subscribe', 'the mirror asks the origin to be followed');
SELECT throws_ok(format($$SELECT pod.inbox_livechat('http://podz.test', %L)$$,
                        jsonb_build_object('type', 'chat.event', 'video', :'rvideo', 'seq', 1, 'kind', 'new', 'message', '{"id": 1}')),
  'PT404', NULL, 'only the video''s own pod speaks for its room');
CREATE FUNCTION pg_temp.ev(seq int, kind text, id int, txt text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('type', 'chat.event', 'video', current_setting('lcfed.rvideo')::uuid, 'seq', seq,
                            'kind', kind, 'message', CASE WHEN id IS NOT NULL THEN jsonb_build_object('id', id, 'author', 'alice@poda.test',
                              'type', 'message', 'data', CASE WHEN txt IS NULL THEN '{}' ELSE jsonb_build_object('text', txt) END,
                              'status', CASE WHEN kind = 'deleted' THEN 'deleted' ELSE 'sent' END) END)
$$;
SELECT pod.inbox_livechat('http://poda.test', pg_temp.ev(6, 'new', 60, 'second'));
SELECT is((SELECT count(*)::int FROM pod.messages WHERE room_id = :'mirror'), 0, 'events wait for the snapshot');
SELECT pod.inbox_livechat('http://poda.test', jsonb_build_object('type', 'chat.subscribed', 'video', :'rvideo', 'seq', 4,
         'history', jsonb_build_array(jsonb_build_object('id', 40, 'author', 'alice@poda.test', 'type', 'message', 'data', '{"text": "old"}'::jsonb, 'status', 'sent'))));
SELECT is((SELECT array_agg(data ->> 'text' ORDER BY id) FROM pod.messages WHERE room_id = :'mirror'), ARRAY['old'],
  'the snapshot brings the history; event 6 still waits for 5');
SELECT pod.inbox_livechat('http://poda.test', pg_temp.ev(5, 'new', 50, 'first'));
SELECT is((SELECT array_agg(data ->> 'text' ORDER BY id) FROM pod.messages WHERE room_id = :'mirror'), ARRAY['old', 'first', 'second'],
  'with 5, both apply in the origin''s order');
SELECT pod.inbox_livechat('http://poda.test', pg_temp.ev(6, 'new', 60, 'second'));
SELECT is((SELECT count(*)::int FROM pod.messages WHERE room_id = :'mirror'), 3, 'a duplicate event is ignored');
SELECT pod.inbox_livechat('http://poda.test', pg_temp.ev(7, 'skip', NULL, NULL));
SELECT pod.inbox_livechat('http://poda.test', pg_temp.ev(8, 'edited', 50, 'first, edited'));
SELECT pod.inbox_livechat('http://poda.test', pg_temp.ev(9, 'deleted', 60, NULL));
SELECT is((SELECT array_agg(coalesce(data ->> 'text', '-') || ':' || status ORDER BY id) FROM pod.messages WHERE room_id = :'mirror'),
  ARRAY['old:sent', 'first, edited:edited', '-:deleted'], 'a skip, an edit and a tombstone follow');
SELECT is((SELECT last_seq FROM pod.remote_video_chats WHERE video_uuid = :'rvideo'), 9::bigint, 'the mirror is at the origin''s seq 9');
SELECT set_config('request.jwt.claims', :'reader', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.room_events WHERE room_id = :'mirror'), 5, 'a local reader follows the mirror''s own events');
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "x"}')$$, :'mirror'), '42501', NULL,
  'posting into a mirror directly is refused');
SELECT is((api.chat_post(:'mirror', '{"text": "through the origin"}') ->> 'status'), 'sent', 'chat_post sends it to the origin');
SELECT throws_ok(format($$SELECT api.chat_post(%L, '"not an object"')$$, :'mirror'), '22023', NULL, 'a bad post is refused here already');
RESET ROLE;
SELECT is((SELECT payload #>> '{activity,author}' FROM pod.jobs WHERE target = 'http://poda.test'
            AND payload #>> '{activity,type}' = 'chat.post'), :'reader_id' || '@' || pod.pod_host(:'me'), 'as user@pod');

-- cleanup spares a mirror in use, removes a stale one with its room
SELECT is((SELECT orphan_rooms FROM pod.livechat_cleanup()), 0, 'cleanup spares the mirror of a remote chat');
SELECT ok(EXISTS (SELECT 1 FROM pod.rooms WHERE id = :'mirror'), 'the mirror room is still there');
UPDATE pod.remote_video_chats SET updated_at = now() - interval '60 days' WHERE video_uuid = :'rvideo';
SELECT is((SELECT stale_video_chats || '+' || orphan_rooms FROM pod.livechat_cleanup()), '1+1',
  'a remote chat unused past the retention goes, and its mirror room with it');
SELECT gen_random_uuid() AS rv3 \gset
SELECT pg_temp.remote_publish(:'rv3', 'remote three');
INSERT INTO pod.remote_video_chats (host, video_uuid, infos) VALUES ('poda.test', :'rv3', '{"enabled": true}');
SELECT pod.remote_chat_mirror('poda.test', :'rv3') AS mirror3 \gset
SELECT pod.inbox_video_apply('http://poda.test', jsonb_build_object('uuid', :'rv3', 'version', 2, 'updated_at', now()), true);
SELECT is((SELECT stale_video_chats || '+' || orphan_rooms FROM pod.livechat_cleanup()), '1+1',
  'a remote chat whose video its pod retracted goes at once, and its mirror room with it');
SELECT ok(NOT EXISTS (SELECT 1 FROM pod.rooms WHERE id = :'mirror3'), 'the mirror room is gone');

-- chat_info fetches on the federation's rules: a signed GET on the video's own pod, a
-- 4xx or a refused private address ends the job, a 5xx or no answer is retried, a URL
-- off the video's pod is never asked
DELETE FROM pod.jobs WHERE kind IN ('make_friends', 'verify_key', 'chat_info');
SELECT gen_random_uuid() AS rv2 \gset
SELECT pg_temp.remote_publish(:'rv2', 'remote two');
SELECT is(pod.remote_chat_open(:'rv2') ->> 'status', 'pending', 'a remote chat not known yet is pending');
CREATE TEMP TABLE ci AS SELECT * FROM pod.fetches_claim('fed');
SELECT is((SELECT kind || ' ' || url FROM ci), 'chat_info http://poda.test/rpc/video_chat_infos?video=' || :'rv2',
  'the federator is given a GET of the chat information on the video''s pod');
SELECT ok((SELECT bool_or(h LIKE 'Signature: %keyId="' || :'me' || '#main-key"%') AND bool_or(h = 'Accept: application/json')
             FROM ci, unnest(headers) h), 'signed with this pod''s key, asking for JSON');
SELECT is((SELECT pod.fetches_finish(job_id, 'fed', ARRAY[pod_url], ARRAY[NULL], ARRAY[503]) ->> 'status' FROM ci), 'failed',
  'a 503 fails the fetch');
SELECT is((SELECT state::text || ' ' || (last_error LIKE '%(HTTP 503)') FROM pod.jobs j, ci WHERE j.id = ci.job_id), 'waiting true',
  'and it is retried later, the status in its error');
UPDATE pod.jobs j SET run_at = now() FROM ci WHERE j.id = ci.job_id;
SELECT is((SELECT pod.fetches_finish(v.job_id, 'fed', ARRAY[v.pod_url], ARRAY['{"code": "PT404"}'], ARRAY[404]) ->> 'status'
             FROM pod.fetches_claim('fed') v), 'failed', 'a 404 fails it');
SELECT is((SELECT state::text FROM pod.jobs j, ci WHERE j.id = ci.job_id), 'dead', 'for good: a 4xx will not change');
SELECT pod.job_enqueue('chat_info', jsonb_build_object('origin', 'http://poda.test', 'host', 'poda.test', 'video', :'rv2',
                                                       'url', 'http://169.254.169.254/rpc/video_chat_infos?video=' || :'rv2')) AS off_job \gset
SELECT is((SELECT count(*)::int FROM pod.fetches_claim('fed')), 0, 'a chat information URL off the video''s pod is not asked');
SELECT is((SELECT state::text || ' ' || (last_error LIKE 'permanent: chat information URL http://169.254.169.254/% is not on http://poda.test')
             FROM pod.jobs WHERE id = :off_job), 'dead true', 'its job is dead at once, saying why');

SELECT * FROM finish();
ROLLBACK;
