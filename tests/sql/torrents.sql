-- torrents: bencoding through pod.torrent_build / pod.torrent_info, corrupt torrents
-- refused, piece lengths, and the publication flow (job enqueued, torrent_finish
-- storing torrent, info hash, magnet; the API's views; unpublishing).
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(40);

-- building and reading back
SELECT pod.torrent_build('clip.mp4', 40000, 16384, decode(repeat('ab', 60), 'hex'),
                         ARRAY['http://h:1/announce', 'udp://h:1/announce'], ARRAY['http://h/files/x']) AS t \gset
SELECT is((SELECT name FROM pod.torrent_info(:'t')), 'clip.mp4', 'name reads back');
SELECT is((SELECT length FROM pod.torrent_info(:'t')), 40000::bigint, 'length reads back');
SELECT is((SELECT piece_length FROM pod.torrent_info(:'t')), 16384, 'piece length reads back');
SELECT is((SELECT piece_count FROM pod.torrent_info(:'t')), 3, 'piece count');
SELECT is((SELECT trackers FROM pod.torrent_info(:'t')), ARRAY['http://h:1/announce', 'udp://h:1/announce'],
          'trackers (announce and announce-list, once each)');
SELECT is((SELECT web_seeds FROM pod.torrent_info(:'t')), ARRAY['http://h/files/x'], 'web seeds (url-list)');
SELECT is((SELECT length(info_hash) FROM pod.torrent_info(:'t')), 20, 'a 20-byte info hash');
SELECT is((SELECT info_hash FROM pod.torrent_info(:'t')),
          (SELECT info_hash FROM pod.torrent_info(pod.torrent_build('clip.mp4', 40000, 16384,
             decode(repeat('ab', 60), 'hex'), '{}', '{}'))), 'trackers and web seeds are outside the info hash');
SELECT isnt((SELECT info_hash FROM pod.torrent_info(:'t')),
            (SELECT info_hash FROM pod.torrent_info(pod.torrent_build('clip.mp4', 40000, 16384,
               decode(repeat('ac', 60), 'hex'), '{}', '{}'))), 'another piece hash, another info hash');
SELECT is(pod.torrent_build('a', 0, 16384, '', '{}', '{}'),
          convert_to('d10:created by5:pgpod4:infod6:lengthi0e4:name1:a12:piece lengthi16384e6:pieces0:ee', 'UTF8'),
          'an empty file''s torrent, byte for byte');

-- corrupt torrents and bad arguments
SELECT throws_ok($$SELECT pod.torrent_info('\x')$$, '22P03', NULL, 'empty input refused');
SELECT throws_ok($$SELECT pod.torrent_info(convert_to('d4:infoi1ee', 'UTF8'))$$, '22P03',
                 'not a valid torrent: a torrent needs an info dictionary', 'a torrent without info dictionary refused');
SELECT throws_ok($$SELECT pod.torrent_info(substring(pod.torrent_build('a', 40000, 16384, decode(repeat('ab', 60), 'hex'), '{}', '{}') FROM 1 FOR 50))$$,
                 '22P03', NULL, 'a truncated torrent refused');
SELECT throws_ok($$SELECT pod.torrent_info(convert_to('d4:infod6:lengthi40000e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee', 'UTF8'))$$,
                 '22P03', 'not a valid torrent: the number of piece hashes does not match the length and piece length',
                 'a torrent with too few piece hashes refused');
SELECT throws_ok($$SELECT pod.torrent_info(convert_to('d4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee1:ai1ee', 'UTF8'))$$,
                 '22P03', NULL, 'unsorted dictionary keys refused');
SELECT throws_ok($$SELECT pod.torrent_build('a', 40000, 16384, decode(repeat('ab', 40), 'hex'), '{}', '{}')$$,
                 '22023', '40 bytes of piece hashes given, 60 expected', 'piece hashes that do not fit refused');
SELECT throws_ok($$SELECT pod.torrent_build('a', 1, 20000, decode(repeat('ab', 20), 'hex'), '{}', '{}')$$,
                 '22023', NULL, 'a piece length that is not a power of two refused');
SELECT throws_ok($$SELECT pod.torrent_build('a/b', 1, 16384, decode(repeat('ab', 20), 'hex'), '{}', '{}')$$,
                 '22023', NULL, 'a name with a slash refused');

-- piece lengths as libtorrent picks them
SELECT is(ARRAY[pod.torrent_piece_length(1), pod.torrent_piece_length(2684355), pod.torrent_piece_length(2684356),
                pod.torrent_piece_length(100 << 20), pod.torrent_piece_length(1 << 30), pod.torrent_piece_length(1::bigint << 40)],
          ARRAY[16384, 16384, 32768, 131072, 524288, 16777216], 'piece lengths by size');
SELECT is(pod.uri_component('a b/é&'), 'a%20b%2F%C3%A9%26', 'uri_component escapes as encodeURIComponent');

-- publication
SELECT pod.ensure_identity('http://pod.test:8080') IS NOT NULL AS ident \gset
SELECT pod.set_setting('torrent.tracker_port', '7000');
SELECT is(pod.tracker_urls(), ARRAY['http://pod.test:7000/announce', 'udp://pod.test:7000/announce', 'ws://pod.test:7000'],
          'tracker URLs from the pod''s host and the tracker port');
SELECT u.id AS owner_id, json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS owner_claims
  FROM pod.register('tor@torrent.test', 'torrent password') u, LATERAL pod.login('tor@torrent.test', 'torrent password') l \gset
SELECT set_config('request.jwt.claims', :'owner_claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.channels (name, display_name) VALUES ('seeds', 'Seeds') RETURNING id AS channel \gset
INSERT INTO api.videos (channel_id, name) VALUES (:channel, 'movie') RETURNING uuid AS v \gset
SELECT pod.register_upload(sha256('movie bytes 720'), 40000, 'movie 720p.mp4', 'video/mp4') ->> 'id' AS f720 \gset
SELECT pod.register_upload(sha256('movie bytes 360'), 20000, 'movie-360.mp4', 'video/mp4') ->> 'id' AS f360 \gset
RESET ROLE;
INSERT INTO pod.video_files (video_uuid, resolution, file_id) VALUES (:'v', 720, :'f720'), (:'v', 360, :'f360');
SELECT is((SELECT count(*)::int FROM pod.jobs WHERE kind = 'torrent'), 0, 'no torrent job before publication');
UPDATE pod.videos SET state = 'published' WHERE uuid = :'v';
SELECT is((SELECT count(*)::int FROM pod.jobs WHERE kind = 'torrent' AND finished_at IS NULL), 2, 'publication enqueues a job per file');
UPDATE pod.videos SET state = 'published', updated_at = now() WHERE uuid = :'v';
SELECT is((SELECT count(*)::int FROM pod.jobs WHERE kind = 'torrent'), 2, 'no second job while one waits');

SELECT id AS vf720 FROM pod.video_files WHERE resolution = 720 \gset
SELECT id AS vf360 FROM pod.video_files WHERE resolution = 360 \gset
SELECT is((SELECT row(sha256, size, name, piece_length)::text FROM pod.torrent_job(:vf720)),
          row(encode(sha256('movie bytes 720'), 'hex'), 40000, 'movie 720p.mp4', 16384)::text, 'what a job needs');
SELECT j.id AS job720 FROM pod.jobs j WHERE j.target = 'video_file:' || :vf720 \gset
SELECT j.id AS job360 FROM pod.jobs j WHERE j.target = 'video_file:' || :vf360 \gset
SELECT count(*) FROM pod.job_claim('torrent', 'w1', 10);
SELECT throws_ok(format($$SELECT pod.torrent_finish(%s, 'w1', %s, 16384, decode(repeat('ab', 20), 'hex'))$$, :job720, :vf720),
                 '22023', NULL, 'hashes that do not fit the file are refused');
SELECT is((SELECT info_hash FROM pod.video_files WHERE id = :vf720), NULL, '... and nothing is stored');
SELECT isnt(pod.torrent_finish(:job720, 'w1', :vf720, 16384, decode(repeat('ab', 60), 'hex')), NULL, 'a job finishes');
SELECT lives_ok(format($$SELECT pod.torrent_finish(%s, 'w1', %s, 16384, decode(repeat('cd', 40), 'hex'))$$, :job360, :vf360), 'another');
SELECT is((SELECT state::text FROM pod.jobs WHERE id = :job720), 'done', 'the job is done');
SELECT is((SELECT info_hash FROM pod.torrent_info((SELECT torrent FROM pod.video_files WHERE id = :vf720))),
          (SELECT info_hash FROM pod.video_files WHERE id = :vf720), 'the stored info hash is the torrent''s');
SELECT is((SELECT web_seeds FROM pod.torrent_info((SELECT torrent FROM pod.video_files WHERE id = :vf720))),
          ARRAY['http://pod.test:8080/files/' || :'f720'], 'the web seed is the file''s public URL');
SELECT is((SELECT magnet FROM pod.video_files WHERE id = :vf720),
          'magnet:?xt=urn:btih:' || (SELECT encode(info_hash, 'hex') FROM pod.video_files WHERE id = :vf720)
          || '&dn=movie%20720p.mp4&xl=40000&tr=http%3A%2F%2Fpod.test%3A7000%2Fannounce'
          || '&tr=udp%3A%2F%2Fpod.test%3A7000%2Fannounce&tr=ws%3A%2F%2Fpod.test%3A7000'
          || '&ws=http%3A%2F%2Fpod.test%3A8080%2Ffiles%2F' || :'f720', 'the magnet: xt, dn, xl, tr per tracker, ws');

-- what anonymous visitors see
SET LOCAL ROLE pgpod_anon;
SELECT set_config('request.jwt.claims', '{"role": "pgpod_anon"}', true);
SELECT is((SELECT torrent_url FROM api.video_files WHERE resolution = 720),
          'http://pod.test:8080/torrents/' || (SELECT info_hash FROM api.video_files WHERE resolution = 720) || '.torrent',
          'api.video_files gives the torrent URL');
SELECT is((SELECT magnet FROM api.videos WHERE uuid = :'v'), (SELECT magnet FROM api.video_files WHERE resolution = 720),
          'api.videos.magnet is the best rendition''s');
SELECT is((SELECT count(*)::int FROM unnest(ARRAY[:'f720', :'f360']::uuid[]) f, pod.file_download(f)), 2,
          'a published video''s files are public (WebSeed: GET /files/<id>)');
SELECT is((SELECT count(*)::int FROM api.torrents), 2, 'both torrents are served');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.torrents_seeded), 2, 'the seeder serves both');
UPDATE pod.videos SET state = 'failed' WHERE uuid = :'v';
SELECT is((SELECT count(*)::int FROM pod.torrents_seeded), 0, 'an unpublished video is not seeded');
SET LOCAL ROLE pgpod_anon;
SELECT is((SELECT count(*)::int FROM unnest(ARRAY[:'f720', :'f360']::uuid[]) f, pod.file_download(f)), 0, '... nor its files public');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
