-- video privacy (sql/78_video_privacy.sql): public, unlisted and private videos, as
-- anonymous callers, other users, the owner and the daemons see them — listing, one
-- video by uuid, events, files, torrents, federation (this pod's pubsub node) — and
-- the files listing that shows nobody another user's files.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(43);

SELECT u.id AS owner_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS owner_claims
  FROM pod.register('pv@video.test', 'video password') u, LATERAL pod.login('pv@video.test', 'video password') l \gset
SELECT u.id AS other_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS other_claims
  FROM pod.register('pv2@video.test', 'other password') u, LATERAL pod.login('pv2@video.test', 'other password') l \gset
SELECT (SELECT url FROM pod.identity) IS NOT NULL AS has_identity \gset
SELECT coalesce((SELECT url FROM pod.identity), '') AS me \gset

SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.channels (name, display_name) VALUES ('pv', 'PV') RETURNING id AS channel \gset
SELECT pod.register_upload(sha256('privacy source'), 14, 'src.mp4', 'video/mp4') ->> 'id' AS src \gset
SELECT throws_ok(format($$SELECT api.video_create(%s, %L, 'x', NULL, 'secret')$$, :channel, :'src'), '22023',
  'privacy must be public, unlisted or private', 'video_create: an unknown privacy is refused');
SELECT throws_ok(format($$SELECT api.video_create(%s, %L, 'x', NULL, NULL)$$, :channel, :'src'), '22023',
  'privacy must be public, unlisted or private', 'video_create: a NULL privacy too');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.videos WHERE source_file_id = :'src'), 0, '... and no video was made');
SET LOCAL ROLE pgpod_user;
SELECT api.video_create(:channel, :'src', 'public one') ->> 'uuid' AS pub \gset
SELECT api.video_create(:channel, :'src', 'unlisted one', NULL, 'unlisted') ->> 'uuid' AS unl \gset
SELECT api.video_create(:channel, :'src', 'private one', NULL, 'private') ->> 'uuid' AS priv \gset
SELECT is((SELECT string_agg(name || '=' || privacy, ',' ORDER BY name) FROM api.videos WHERE uuid IN (:'pub', :'unl', :'priv')),
  'private one=private,public one=public,unlisted one=unlisted', 'video_create: privacy as asked (public by default)');
-- each video's outputs: a file of the owner per video (an MP4 and a thumbnail)
SELECT pod.register_upload(sha256('pub mp4'), 7, 'pub.mp4', 'video/mp4') ->> 'id' AS pub_mp4 \gset
SELECT pod.register_upload(sha256('unl mp4'), 7, 'unl.mp4', 'video/mp4') ->> 'id' AS unl_mp4 \gset
SELECT pod.register_upload(sha256('priv mp4'), 8, 'priv.mp4', 'video/mp4') ->> 'id' AS priv_mp4 \gset
SELECT pod.register_upload(sha256('priv jpg'), 8, 'priv.jpg', 'image/jpeg') ->> 'id' AS priv_jpg \gset
RESET ROLE;
-- published, as pod.transcode_publish leaves them
DELETE FROM pod.jobs WHERE kind = 'transcode' AND payload ->> 'video' IN (:'pub', :'unl', :'priv');
INSERT INTO pod.video_files (video_uuid, resolution, kind, file_id, info_hash, torrent)
  VALUES (:'pub', 720, 'mp4', :'pub_mp4', substr(sha256('pub t'), 1, 20), 'd1:xi1ee'),
         (:'unl', 720, 'mp4', :'unl_mp4', substr(sha256('unl t'), 1, 20), 'd1:xi2ee'),
         (:'priv', 720, 'mp4', :'priv_mp4', substr(sha256('priv t'), 1, 20), 'd1:xi3ee');
UPDATE pod.videos SET state = 'published', progress = 100, thumbnail_file_id = CASE WHEN uuid = :'priv' THEN :'priv_jpg'::uuid END
 WHERE uuid IN (:'pub', :'unl', :'priv');

-- listing
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '{"role": "pgpod_anon"}', true);
SELECT is((SELECT string_agg(name, ',') FROM api.videos WHERE uuid IN (:'pub', :'unl', :'priv')), 'public one',
  'anonymous: api.videos lists the public video only');
SELECT is((SELECT count(*)::int FROM api.video_files WHERE video_uuid IN (:'unl', :'priv')), 0,
  'anonymous: nor the files of the others in api.video_files');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'other_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT string_agg(name, ',') FROM api.videos WHERE uuid IN (:'pub', :'unl', :'priv')), 'public one',
  'another user: the same');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.videos WHERE uuid IN (:'pub', :'unl', :'priv')), 3, 'the owner lists all three');
RESET ROLE;

-- one video by uuid, its files, its events
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '{"role": "pgpod_anon"}', true);
SELECT is((SELECT (v ->> 'privacy') || ' ' || json_array_length(v -> 'files') || ' ' || (v -> 'files' -> 0 ->> 'file_id')
             FROM api.video(:'unl') v), 'unlisted 1 ' || :'unl_mp4', 'anonymous: an unlisted video by its uuid, with its files');
SELECT is((SELECT v ->> 'name' FROM api.video(:'pub') v), 'public one', 'anonymous: a public one too');
SELECT throws_ok(format($$SELECT api.video(%L)$$, :'priv'), 'P0002', NULL, 'anonymous: a private one does not exist (404)');
SELECT throws_ok($$SELECT api.video(NULL)$$, 'P0002', NULL, 'no uuid: 404 too');
SELECT is((SELECT count(*)::int FROM pod.file_download(:'pub_mp4')) + (SELECT count(*)::int FROM pod.file_download(:'unl_mp4')), 2,
  'anonymous: a public and an unlisted video''s file are served by id');
SELECT is((SELECT count(*)::int FROM pod.file_download(:'priv_mp4')) + (SELECT count(*)::int FROM pod.file_download(:'priv_jpg')), 0,
  'anonymous: a private video''s file and thumbnail are not');
SELECT ok((SELECT count(*) FROM pod.video_events WHERE video_uuid = :'unl') > 0, 'anonymous: an unlisted video''s events are readable');
SELECT is((SELECT count(*)::int FROM pod.video_events WHERE video_uuid = :'priv'), 0, 'anonymous: a private video''s are not');
SELECT ok(NOT pod.video_watchable(:'priv') AND pod.video_watchable(:'unl'), 'video_watchable says so (the gateway''s stream check)');
SELECT is((SELECT count(*)::int FROM api.torrents WHERE info_hash IN (encode(substr(sha256('pub t'), 1, 20), 'hex'),
                                                                    encode(substr(sha256('priv t'), 1, 20), 'hex'))), 1,
  'anonymous: the public video''s .torrent, not the private one''s');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'other_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$SELECT api.video(%L)$$, :'priv'), 'P0002', NULL, 'another user: a private video does not exist');
SELECT is((SELECT count(*)::int FROM pod.file_download(:'priv_mp4')), 0, 'another user: nor its file');
SELECT is((SELECT count(*)::int FROM api.files WHERE id IN (:'pub_mp4', :'unl_mp4', :'src')), 0,
  'another user lists none of the owner''s files, public video files included');
SELECT is((SELECT count(*)::int FROM pod.file_download(:'pub_mp4')), 1, '... yet reads a public video''s file by id');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT v ->> 'privacy' FROM api.video(:'priv') v), 'private', 'the owner watches the private video');
SELECT is((SELECT count(*)::int FROM pod.file_download(:'priv_mp4')), 1, '... and reads its file');
SELECT ok((SELECT count(*) FROM pod.video_events WHERE video_uuid = :'priv') > 0, '... and its events');
SELECT is((SELECT count(*)::int FROM api.files WHERE id IN (:'pub_mp4', :'unl_mp4', :'priv_mp4', :'src')), 4, 'the owner lists their own files');
RESET ROLE;

-- the daemons: a private video's files are neither tracked nor seeded
SELECT is((SELECT count(*)::int FROM pod.tracker_info_hashes() t
            WHERE t.info_hash IN (substr(sha256('pub t'), 1, 20), substr(sha256('unl t'), 1, 20), substr(sha256('priv t'), 1, 20))), 2,
  'tracker: the public and the unlisted video''s files, not the private one''s');
SELECT is((SELECT count(*)::int FROM pod.torrents_seeded WHERE id IN (SELECT id FROM pod.video_files WHERE video_uuid = :'priv')), 0,
  'seeder: the private one''s are not served');

-- federation: only the public video is an item of this pod's nodes
SELECT is((SELECT string_agg(i.name, ',') FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = :'me' AND n.name = 'urn:pgpod:videos' AND i.name IN (:'pub', :'unl', :'priv')),
  CASE WHEN :'has_identity' THEN :'pub' END, 'pubsub: the public video is published, the unlisted and private ones are not');

-- changing privacy: the owner only, a known value only
SELECT set_config('request.jwt.claims', :'other_claims', true);
SET LOCAL ROLE pgpod_user;
UPDATE api.videos SET privacy = 'private' WHERE uuid = :'pub';
RESET ROLE;
SELECT is((SELECT privacy FROM pod.videos WHERE uuid = :'pub'), 'public', 'another user cannot change a video''s privacy');
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$UPDATE api.videos SET privacy = 'hidden' WHERE uuid = %L$$, :'pub'), '23514', NULL,
  'an unknown privacy is refused');
RESET ROLE;
SELECT is((SELECT privacy FROM pod.videos WHERE uuid = :'pub'), 'public', '... and nothing changed');
SELECT max(seq) AS seq_before FROM pod.video_events WHERE video_uuid = :'pub' \gset
SET LOCAL ROLE pgpod_user;
WITH u AS (UPDATE api.videos SET privacy = 'private' WHERE uuid = :'pub' RETURNING 1)
SELECT is((SELECT count(*)::int FROM u), 1, 'the owner makes the public video private');
RESET ROLE;
SELECT is((SELECT event || ' ' || (data ->> 'privacy') FROM pod.video_events WHERE video_uuid = :'pub' AND seq = :seq_before + 1),
  'state private', 'a state event says so (the gateway re-asks its subscribers'' rights)');
SELECT is((SELECT count(*)::int FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = :'me' AND n.name = 'urn:pgpod:videos' AND i.name = :'pub'), 0,
  'pubsub: the video made private is retracted');
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '{"role": "pgpod_anon"}', true);
SELECT is((SELECT count(*)::int FROM api.videos WHERE uuid = :'pub') + (SELECT count(*)::int FROM pod.file_download(:'pub_mp4')), 0,
  'anonymous: no longer listed, its file no longer served');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.tracker_info_hashes() t WHERE t.info_hash = substr(sha256('pub t'), 1, 20)), 0,
  'tracker: no longer tracked');
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
UPDATE api.videos SET privacy = 'public' WHERE uuid = :'pub';
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = :'me' AND n.name = 'urn:pgpod:videos' AND i.name = :'pub'), CASE WHEN :'has_identity' THEN 1 ELSE 0 END,
  'public again: published again');

-- livechat: a private video's chat takes no anonymous guests and is closed to other
-- pods (its chat information says disabled, a follow is refused); an unlisted one's is open
SELECT throws_ok(format($$SELECT pod.chat_join_anonymous(%L, 'guest one')$$, :'priv'), 'P0002', NULL,
  'livechat: no anonymous guest in a private video''s chat');
SELECT is((SELECT (pod.chat_join_anonymous(:'unl', 'guest two')).room IS NOT NULL), true,
  'livechat: an unlisted video''s chat takes guests');
SELECT is(api.video_chat_infos(:'priv')::jsonb ->> 'enabled', 'false', 'livechat: other pods learn nothing of a private video''s chat');
SELECT is(api.video_chat_infos(:'unl')::jsonb ->> 'enabled', 'true', '... of an unlisted one''s they do');
SELECT throws_ok(format($$SELECT pod.chat_follow('http://b.example', %L)$$, :'priv'), 'PT404', NULL,
  'livechat: another pod cannot follow a private video''s room');

SELECT * FROM finish();
ROLLBACK;
