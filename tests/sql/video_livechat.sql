-- video and livechat: channels, videos, rooms per video or channel, chat options,
-- remote servers and remote video chats, cleanup.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(30);

SELECT u.id AS owner_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS owner_claims
  FROM pod.register('vid@video.test', 'video password') u, LATERAL pod.login('vid@video.test', 'video password') l \gset
SELECT u.id AS other_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS other_claims
  FROM pod.register('other@video.test', 'other password') u, LATERAL pod.login('other@video.test', 'other password') l \gset

SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.channels (name, display_name) VALUES ('cats', 'Cats') RETURNING id AS channel \gset
SELECT throws_ok($$INSERT INTO api.channels (name, display_name) VALUES ('Bad Name!', 'x')$$, '23514', NULL, 'invalid channel name refused');
INSERT INTO api.videos (channel_id, name) VALUES (:channel, 'first') RETURNING uuid AS v1 \gset
INSERT INTO api.videos (channel_id, name) VALUES (:channel, 'second') RETURNING uuid AS v2 \gset
SELECT pod.register_upload(sha256('video bytes'), 11, 'v1.mp4', 'video/mp4') ->> 'id' AS vf \gset
RESET ROLE;
SELECT is((SELECT state::text FROM pod.videos WHERE uuid = :'v1'), 'uploaded', 'a new video starts uploaded');
SELECT throws_ok($$INSERT INTO pod.videos (name) VALUES ('nowhere')$$, '23514', NULL, 'a video is local (channel) or remote (origin)');
SELECT throws_ok($$INSERT INTO pod.videos (name, origin) VALUES ('x', 'ftp://pod')$$, '23514', NULL, 'origin must be a pod URL');
SELECT lives_ok($$INSERT INTO pod.videos (name, origin, author, state) VALUES ('remote', 'http://pod2.test', 'bob', 'published')$$,
  'a friend''s video is indexed with its origin');
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '', true);
SELECT is((SELECT count(*)::int FROM api.videos WHERE name IN ('first', 'remote')), 1, 'anonymous sees only published videos');
SELECT throws_ok($$INSERT INTO api.videos (channel_id, name) VALUES (1, 'x')$$, '42501', NULL, 'anonymous cannot add videos');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'other_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$INSERT INTO api.videos (channel_id, name) VALUES (%s, 'intruder')$$, :channel), '42501', NULL,
  'only the channel owner adds videos');
UPDATE api.videos SET name = 'hijacked' WHERE uuid = :'v1';
RESET ROLE;
SELECT is((SELECT name FROM pod.videos WHERE uuid = :'v1'), 'first', 'others cannot rename a video');

SELECT lives_ok(format($$INSERT INTO pod.video_files (video_uuid, resolution, file_id, info_hash, magnet)
  VALUES (%L, 720, %L, '\x0102030405060708090a0b0c0d0e0f1011121314', 'magnet:?xt=urn:btih:0102')$$, :'v1', :'vf'),
  'a video file with its info hash and magnet') ;
SELECT throws_ok(format($$INSERT INTO pod.video_files (video_uuid, resolution, file_id, info_hash)
  SELECT %L, 480, file_id, '\x01' FROM pod.video_files LIMIT 1$$, :'v1'), '23514', NULL, 'info hash must be 20 bytes');

-- livechat: a room per video (default)
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT api.video_chat_room(:'v1') AS room1 \gset
SELECT is(api.video_chat_room(:'v1'), :'room1'::uuid, 'the same video gets the same room');
SELECT isnt(api.video_chat_room(:'v2'), :'room1'::uuid, 'another video gets another room');
SELECT is((SELECT type::text FROM api.rooms WHERE id = :'room1'), 'video', 'a video room has type video');
RESET ROLE;
SELECT is((SELECT channel_id FROM pod.room_channel WHERE room_id = :'room1'), :'channel'::bigint, 'room → channel');
SELECT is((SELECT count(*)::int FROM pod.channel_rooms(:channel)), 2, 'channel → its rooms');
SELECT throws_ok(format($$INSERT INTO pod.livechat_rooms (room_id, channel_id, video_uuid) VALUES (%L, %s, %L)$$, :'room1', :channel, :'v2'),
  '23505', NULL, 'a room is linked once');
SELECT throws_ok(format($$INSERT INTO pod.livechat_rooms (room_id, channel_id) VALUES (%L, %s)$$, :'room1', :channel),
  '22023', NULL, 'a video room cannot be a channel''s room');

-- per channel
SELECT pod.set_setting('livechat.room_per', '"channel"');
SELECT throws_ok($$SELECT pod.set_setting('livechat.room_per', '"planet"')$$, '22023', NULL, 'invalid room_per refused');
SELECT throws_ok($$SELECT pod.set_setting('no.such', '1')$$, '22023', NULL, 'unknown setting refused');
SELECT is(pod.livechat_room(:'v1'), pod.livechat_room(:'v2'), 'per channel: both videos share one room');
SELECT is((SELECT type::text FROM pod.rooms WHERE id = pod.livechat_room(:'v1')), 'channel', 'a channel room has type channel');

-- chat options validated
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.channel_chat_options VALUES (%s, '{"slow_mode_seconds": 10, "mute_anonymous": true, "forbidden_words": ["spam"]}')$$, :channel), 'valid chat options');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"slow_mode_seconds": -1}' WHERE channel_id = %s$$, :channel),
  '22023', 'slow_mode_seconds must be a whole number from 0 to 86400', 'negative slow mode refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"colour": "red"}' WHERE channel_id = %s$$, :channel),
  '22023', 'unknown chat option "colour"', 'unknown option refused');
RESET ROLE;
SELECT is((SELECT options -> 'slow_mode_seconds' FROM pod.channel_chat_options WHERE channel_id = :channel), '10'::jsonb,
  'refused updates changed nothing');

-- remote servers: throttle, validation, video chats, cleanup
SELECT ok(pod.remote_server_update('pod2.test', '{"s2s": {"port": 5269}}'), 'first update accepted');
SELECT ok(NOT pod.remote_server_update('pod2.test', '{}'), 'second update within the throttle refused');
SELECT throws_ok($$SELECT pod.remote_server_update('pod3.test', '{"carrier-pigeon": {}}')$$, '22023', NULL, 'unknown protocol refused');
INSERT INTO pod.remote_video_chats (host, video_uuid, infos) VALUES ('pod2.test', gen_random_uuid(), '{"enabled": true}');
UPDATE pod.remote_video_chats SET updated_at = now() - interval '60 days';
UPDATE pod.remote_servers SET last_update = now() - interval '60 days';
DELETE FROM pod.videos WHERE uuid = :'v2';
SELECT pod.set_setting('livechat.room_per', '"video"');
SELECT is((SELECT row(orphan_rooms, stale_servers, stale_video_chats)::text FROM pod.livechat_cleanup()), '(1,1,1)',
  'cleanup removes the deleted video''s room, the stale chat and server');

SELECT * FROM finish();
ROLLBACK;
