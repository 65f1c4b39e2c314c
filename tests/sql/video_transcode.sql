-- video transcoding and resumable uploads: video_create (ownership), the transcode
-- queue's worker functions (claim, progress with lease renewal, staged blobs, publish
-- in one transaction, permanent and retried failures, release), who reads a video's
-- files, the live event NOTIFY, and the tus upload state functions.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(43);

SELECT u.id AS owner_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS owner_claims
  FROM pod.register('tc@video.test', 'video password') u, LATERAL pod.login('tc@video.test', 'video password') l \gset
SELECT u.id AS other_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS other_claims
  FROM pod.register('tc2@video.test', 'other password') u, LATERAL pod.login('tc2@video.test', 'other password') l \gset
DELETE FROM pod.jobs WHERE kind = 'transcode';

SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.channels (name, display_name) VALUES ('tc', 'TC') RETURNING id AS channel \gset
SELECT pod.register_upload(sha256('source bytes'), 12, 'src.mp4', 'video/mp4') ->> 'id' AS src \gset
SELECT api.video_create(:channel, :'src', 'my video', 'about it') ->> 'uuid' AS v \gset
SELECT is((SELECT state::text || ' ' || progress FROM api.videos WHERE uuid = :'v'), 'uploaded 0', 'video_create: state uploaded, progress 0');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.jobs WHERE kind = 'transcode' AND payload ->> 'video' = :'v'), 1, 'a transcode job is queued');
SELECT set_config('request.jwt.claims', :'other_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$SELECT api.video_create(%s, %L, 'x')$$, :channel, :'src'), '42501', NULL, 'another user''s channel is refused');
INSERT INTO api.channels (name, display_name) VALUES ('tc2', 'TC2') RETURNING id AS channel2 \gset
SELECT throws_ok(format($$SELECT api.video_create(%s, %L, 'x')$$, :channel2, :'src'), '42501', NULL, 'another user''s file is refused');
SELECT is((SELECT count(*)::int FROM api.videos WHERE uuid = :'v'), 0, 'others do not see an unpublished video');
RESET ROLE;
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok($$SELECT api.video_create(1, gen_random_uuid(), 'x')$$, '42501', NULL, 'anonymous cannot create videos');
RESET ROLE;

-- the worker side
SET LOCAL ROLE pgpod_worker;
SELECT job_id AS job, lease_seconds > 0 AS leased, ladder::text AS ladder FROM pod.transcode_claim('w1', 5) \gset
SELECT ok(:'leased'::boolean, 'claim: the job with its lease');
SELECT is(:'ladder'::text, '[1080, 720, 480, 360, 240]', 'claim: the ladder setting');
RESET ROLE;
SELECT is((SELECT state::text FROM pod.videos WHERE uuid = :'v'), 'transcoding', 'a claimed video is transcoding');
SET LOCAL ROLE pgpod_worker;
SELECT ok(pod.transcode_progress(:job, 'w1', 42), 'progress is recorded by the lease holder');
SELECT ok(NOT pod.transcode_progress(:job, 'w2', 50), 'progress of another worker is refused');
RESET ROLE;
SELECT is((SELECT progress::int FROM pod.videos WHERE uuid = :'v'), 42, 'progress 42');
SELECT ok((SELECT lease_until > now() + interval '50 seconds' FROM pod.jobs WHERE id = :job), 'progress renews the lease');

-- staging and publishing
SET LOCAL ROLE pgpod_worker;
SELECT is(pod.transcode_stage_blobs(:job, 'w1', ARRAY[sha256('mp4'), sha256('hls'), sha256('m3u8'), sha256('master'), sha256('jpg1'), sha256('jpg2')],
                                     ARRAY[3, 3, 4, 6, 4, 4]::bigint[]), 6, 'outputs are staged as blobs');
SELECT throws_ok(format($$SELECT pod.transcode_stage_blobs(%s, 'w2', ARRAY[sha256('x')], ARRAY[1]::bigint[])$$, :job), '55000', NULL,
  'only the lease holder stages');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.blobs WHERE sha256 = sha256('mp4') AND orphaned_at IS NOT NULL), 1,
  'staged blobs are orphaned until published (the collector removes them otherwise)');
SELECT gen_random_uuid() AS f_mp4, gen_random_uuid() AS f_hls, gen_random_uuid() AS f_pl, gen_random_uuid() AS f_master,
       gen_random_uuid() AS f_thumb, gen_random_uuid() AS f_prev \gset
SELECT jsonb_build_object('duration', 3.0, 'width', 1280, 'height', 720, 'fps', 25, 'files', jsonb_build_array(
  jsonb_build_object('id', :'f_mp4', 'sha256', encode(sha256('mp4'), 'hex'), 'size', 3, 'name', '720p.mp4', 'mime', 'video/mp4', 'role', 'mp4', 'resolution', 720, 'bitrate', 8, 'fps', 25),
  jsonb_build_object('id', :'f_hls', 'sha256', encode(sha256('hls'), 'hex'), 'size', 3, 'name', '720p-hls.mp4', 'mime', 'video/mp4', 'role', 'hls', 'resolution', 720, 'bitrate', 8, 'fps', 25, 'playlist', :'f_pl'),
  jsonb_build_object('id', :'f_pl', 'sha256', encode(sha256('m3u8'), 'hex'), 'size', 4, 'name', '720p.m3u8', 'mime', 'application/vnd.apple.mpegurl', 'role', 'playlist', 'resolution', 720),
  jsonb_build_object('id', :'f_master', 'sha256', encode(sha256('master'), 'hex'), 'size', 6, 'name', 'master.m3u8', 'mime', 'application/vnd.apple.mpegurl', 'role', 'master'),
  jsonb_build_object('id', :'f_thumb', 'sha256', encode(sha256('jpg1'), 'hex'), 'size', 4, 'name', 'thumbnail.jpg', 'mime', 'image/jpeg', 'role', 'thumbnail'),
  jsonb_build_object('id', :'f_prev', 'sha256', encode(sha256('jpg2'), 'hex'), 'size', 4, 'name', 'preview.jpg', 'mime', 'image/jpeg', 'role', 'preview')))::text AS result \gset
SET LOCAL ROLE pgpod_worker;
SELECT throws_ok(format($$SELECT pod.transcode_publish(%s, 'w2', %L)$$, :job, :'result'), '55000', NULL, 'only the lease holder publishes');
RESET ROLE;
LISTEN pod_videos;
SET LOCAL ROLE pgpod_worker;
SELECT lives_ok(format($$SELECT pod.transcode_publish(%s, 'w1', %L)$$, :job, :'result'), 'the lease holder publishes');
RESET ROLE;
SELECT is((SELECT state::text || ' ' || progress || ' ' || width || 'x' || height || ' ' || extract(epoch FROM duration) FROM pod.videos WHERE uuid = :'v'),
  'published 100 1280x720 3.000000', 'published, with its media facts');
SELECT is((SELECT state::text FROM pod.jobs WHERE id = :job), 'done', 'the job is done');
SELECT is((SELECT string_agg(kind || resolution, ',' ORDER BY kind) FROM pod.video_files WHERE video_uuid = :'v'), 'hls720,mp4720', 'video_files: an MP4 and an HLS rendition');
SELECT is((SELECT count(*)::int FROM pod.files WHERE id IN (:'f_mp4', :'f_hls', :'f_pl', :'f_master', :'f_thumb', :'f_prev') AND owner_id = :'owner_id'), 6,
  'every output is a file of the channel''s owner');
SELECT is((SELECT count(*)::int FROM pod.blobs WHERE sha256 = sha256('mp4') AND orphaned_at IS NULL), 1, 'published blobs are in use');
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '{"role": "pgpod_anon"}', true);  -- as the gateway sets it (no claims at all is psql's superuser)
SELECT is((SELECT count(*)::int FROM unnest(ARRAY[:'f_mp4', :'f_pl', :'f_master', :'f_thumb']::uuid[]) f, pod.file_download(f)), 4,
  'anonymous reads a published video''s files (one by id, as GET /files/<id>)');
SELECT is((SELECT count(*)::int FROM pod.file_download(:'src')), 0, 'but not its source upload');
SELECT throws_ok('SELECT count(*) FROM api.files', '42501', NULL, 'anonymous callers list no files (no owner ids)');
SELECT ok((SELECT hls_url LIKE '%/files/' || :'f_master' AND thumbnail_url LIKE '%/files/' || :'f_thumb' FROM api.videos WHERE uuid = :'v'),
  'api.videos: hls_url and thumbnail_url');
SELECT is((SELECT kind || ' ' || size || ' ' || bitrate || ' ' || (url LIKE '%/files/' || :'f_hls') FROM api.video_files WHERE video_uuid = :'v' AND kind = 'hls'),
  'hls 3 8 true', 'api.video_files: kind, size, bitrate, url');
RESET ROLE;

-- failures
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT api.video_create(:channel, :'src', 'bad one') ->> 'uuid' AS bad \gset
RESET ROLE;
SET LOCAL ROLE pgpod_worker;
SELECT job_id AS badjob FROM pod.transcode_claim('w1', 1) \gset
SELECT ok(pod.transcode_fail(:badjob, 'w1', 'not a video: no video stream', true), 'a permanent failure');
RESET ROLE;
SELECT is((SELECT state || ': ' || failure_reason FROM pod.videos WHERE uuid = :'bad'), 'failed: not a video: no video stream', 'the video fails with the reason');
SELECT is((SELECT state::text || ' ' || last_error FROM pod.jobs WHERE id = :badjob), 'dead not a video: no video stream', 'the job dies keeping it');
UPDATE pod.job_kinds SET retries = 0 WHERE kind = 'transcode';
SET LOCAL ROLE pgpod_user;
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SELECT api.video_create(:channel, :'src', 'crashy') ->> 'uuid' AS crashy \gset
RESET ROLE;
SET LOCAL ROLE pgpod_worker;
SELECT job_id AS crashjob FROM pod.transcode_claim('w1', 1) \gset
SELECT ok(pod.transcode_fail(:crashjob, 'w1', 'ffmpeg was killed by signal 9', false), 'a failed attempt');
RESET ROLE;
SELECT is((SELECT state || ': ' || failure_reason FROM pod.videos WHERE uuid = :'crashy'), 'failed: ffmpeg was killed by signal 9',
  'no retry left: the job dies and the video fails with the last error');

-- uploads (tus): the state functions
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT gen_random_uuid() AS up \gset
SELECT pod.upload_create(:'up', 100, '{"filename": "a.mp4", "filetype": "video/mp4"}') IS NOT NULL AS created \gset
SELECT is((SELECT received || '/' || length FROM pod.upload_state(:'up')), '0/100', 'an upload starts at offset 0');
SELECT is(pod.upload_advance(:'up', 10, 50), NULL, 'the offset only moves from where it is');
SELECT isnt(pod.upload_advance(:'up', 0, 50), NULL, 'from where it is, it moves');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'other_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM pod.upload_state(:'up')), 0, 'another user does not see the upload');
SELECT is(pod.upload_advance(:'up', 50, 60), NULL, 'nor move it');
SELECT ok(NOT pod.upload_terminate(:'up'), 'nor terminate it');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$SELECT pod.upload_finish(%L, 0, sha256('x'))$$, :'up'), '40001', NULL, 'finishing from a stale offset is refused');
SELECT is((SELECT count(*)::int FROM api.files WHERE filename_visible = 'a.mp4'), 0, 'an unfinished upload is no file');
RESET ROLE;
UPDATE pod.uploads SET expires_at = now() - interval '1 second' WHERE id = :'up';
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT expired FROM pod.upload_state(:'up')), true, 'an upload past its expiry says so');
SELECT is((SELECT count(*)::int FROM pod.uploads_expire() e WHERE e = :'up'), 1, 'and is swept');
RESET ROLE;
ROLLBACK;
