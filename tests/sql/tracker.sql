-- tracker: the info hashes the tracker serves (published local files only) and its
-- batched reports of swarm counts (pod.tracker_report), bad batches refused.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SELECT plan(12);

INSERT INTO pod.users (id, email, pass_hash) VALUES ('00000000-0000-0000-0000-00000000a001', 'trk@tracker.test', '$argon2id$x');
INSERT INTO pod.channels (id, owner_id, name, display_name) VALUES (9001, '00000000-0000-0000-0000-00000000a001', 'trksql', 'trk');
INSERT INTO pod.blobs (sha256, size) VALUES (sha256('trk'), 3);
INSERT INTO pod.videos (uuid, channel_id, name, state) VALUES
  ('00000000-0000-0000-0000-00000000b001', 9001, 'published', 'published'),
  ('00000000-0000-0000-0000-00000000b002', 9001, 'uploaded', 'uploaded');
INSERT INTO pod.videos (uuid, name, origin, state) VALUES ('00000000-0000-0000-0000-00000000b003', 'remote', 'http://friend.test', 'published');
WITH f AS (INSERT INTO pod.files (owner_id, filename_visible, sha256, size)
           SELECT '00000000-0000-0000-0000-00000000a001', 'f' || g, sha256('trk'), 3 FROM generate_series(1, 4) g RETURNING id),
     n AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM f)
INSERT INTO pod.video_files (video_uuid, resolution, file_id, info_hash)
  SELECT CASE k WHEN 1 THEN '00000000-0000-0000-0000-00000000b001'::uuid WHEN 2 THEN '00000000-0000-0000-0000-00000000b001'
                WHEN 3 THEN '00000000-0000-0000-0000-00000000b002' ELSE '00000000-0000-0000-0000-00000000b003' END,
         CASE k WHEN 2 THEN 480 ELSE 720 END, id,
         CASE k WHEN 1 THEN decode(repeat('a1', 20), 'hex') WHEN 2 THEN decode(repeat('a2', 20), 'hex')
                WHEN 3 THEN decode(repeat('a3', 20), 'hex') ELSE decode(repeat('a4', 20), 'hex') END
    FROM n;

SET LOCAL ROLE pgpod_tracker;
SELECT bag_eq($$SELECT encode(info_hash, 'hex') FROM pod.tracker_info_hashes()$$,
              ARRAY[repeat('a1', 20), repeat('a2', 20)],
              'the tracker serves the published local files only (not an unpublished one, not a friend''s)');
SELECT is(pod.tracker_report(ARRAY[decode(repeat('a1', 20), 'hex'), decode(repeat('ff', 20), 'hex')],
                             ARRAY[3, 1], ARRAY[7, 1], ARRAY[2, 1]), 1,
          'a batch of two: the known hash is updated, the unknown one ignored');
SELECT throws_ok($$SELECT pod.tracker_report(ARRAY[decode(repeat('a1', 20), 'hex')], ARRAY[1, 2], ARRAY[1], ARRAY[0])$$,
                 '22023', 'tracker_report: the four arrays differ in length', 'arrays of different lengths refused');
SELECT is(pod.tracker_report(ARRAY[decode(repeat('a1', 20), 'hex')], ARRAY[3], ARRAY[7], ARRAY[0]), 0,
          'the same counts again write nothing');
SELECT is(pod.tracker_report(ARRAY[decode(repeat('a1', 20), 'hex')], ARRAY[4], ARRAY[6], ARRAY[3]), 1,
          'new counts and completed downloads are written');
SELECT is(pod.tracker_report(ARRAY[decode(repeat('a2', 20), 'hex')], ARRAY[-5], ARRAY[2], ARRAY[-9]), 1,
          'negative numbers are taken as 0');
SELECT throws_ok($$UPDATE pod.video_files SET seeders = 1$$, '42501', NULL, 'the tracker''s role writes only through tracker_report');
RESET ROLE;
SELECT is((SELECT seeders || '/' || leechers || '/' || completed FROM pod.video_files WHERE info_hash = decode(repeat('a1', 20), 'hex')),
          '4/6/5', 'seeders and leechers replaced, completed summed (2 + 3)');
SELECT is((SELECT seeders || '/' || leechers || '/' || completed FROM pod.video_files WHERE info_hash = decode(repeat('a2', 20), 'hex')),
          '0/2/0', 'a negative report left 0 seeders and no completed');
SELECT is((SELECT seeders || '/' || leechers || '/' || completed FROM api.video_files WHERE info_hash = repeat('a1', 20)),
          '4/6/5', 'api.video_files shows seeders, leechers, completed');
SELECT ok(NOT has_function_privilege('pgpod_user', 'pod.tracker_report(bytea[], integer[], integer[], integer[])', 'EXECUTE'),
          'users cannot report counts');
SELECT ok(NOT has_function_privilege('pgpod_anon', 'pod.tracker_info_hashes()', 'EXECUTE'), 'nor read the tracker''s list');

SELECT * FROM finish();
ROLLBACK;
