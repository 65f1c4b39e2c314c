-- content: files over content-addressed blobs, forwarding, permissions, deletion.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(25);

CREATE TEMP TABLE actor AS
  SELECT name, u.id AS user_id,
         json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS claims
    FROM unnest(ARRAY['ann', 'ben', 'cat']) name,
         LATERAL pod.register(name || '@files.test', 'password ' || name) u,
         LATERAL pod.login(name || '@files.test', 'password ' || name) l;
SELECT claims AS ann FROM actor WHERE name = 'ann' \gset c_
SELECT claims AS ben FROM actor WHERE name = 'ben' \gset c_
SELECT claims AS cat FROM actor WHERE name = 'cat' \gset c_
SELECT user_id AS ben FROM actor WHERE name = 'ben' \gset u_

SELECT set_config('request.jwt.claims', :'c_ann', true);
SET LOCAL ROLE pgpod_user;
SELECT pod.register_upload(sha256('hello'), 5, 'hello.txt', 'text/plain; charset=utf-8') ->> 'id' AS f1 \gset
SELECT is((SELECT mime_type FROM api.files WHERE id = :'f1'), 'text/plain', 'upload registered with its type');
SELECT is((SELECT size FROM api.files WHERE id = :'f1'), 5::bigint, 'size recorded');
SELECT throws_ok($$SELECT pod.register_upload('\x00'::bytea, 5, 'x', 'text/plain')$$, '22023', NULL, 'bad sha256 refused');
SELECT throws_ok($$SELECT pod.register_upload(sha256('hello'), 6, 'x', 'text/plain')$$, '22023', NULL,
                 'same blob with another size refused');
SELECT throws_ok($$SELECT pod.register_upload(sha256('x'), 1, 'a/b', 'text/plain')$$, '23514', NULL, 'slash in a file name refused');
SELECT throws_ok($$SELECT pod.register_upload(sha256('x'), 1, 'ok', 'not a type')$$, '23514', NULL, 'bad mime type refused');
SELECT throws_ok($$SELECT pod.register_upload(sha256('x'), 1, E'a\\b', 'text/plain')$$, '23514', NULL, 'backslash in a file name refused');
SELECT throws_ok($$SELECT pod.register_upload(sha256('x'), 1, E'a\x7fb', 'text/plain')$$, '23514', NULL, 'DEL in a file name refused');
SELECT throws_ok($$SELECT pod.register_upload(sha256('x'), 1, '..', 'text/plain')$$, '23514', NULL, 'a file named .. refused');
-- a blob recorded before its bytes are stored is orphaned until a file uses it
SELECT pod.blob_stored(sha256('stored'), 6);
SELECT throws_ok($$SELECT pod.blob_stored(sha256('stored'), 7)$$, '22023', NULL, 'a stored blob with another size refused');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.blobs WHERE sha256 = sha256('x')), 0, 'refused uploads left no blob');
SELECT ok((SELECT orphaned_at IS NOT NULL FROM pod.blobs WHERE sha256 = sha256('stored')), 'pod.blob_stored records an orphaned blob, for the collector');

-- ben cannot see ann's file until granted
SELECT set_config('request.jwt.claims', :'c_ben', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.files WHERE id = :'f1'), 0, 'others cannot see a file');
SELECT throws_ok(format('SELECT api.forward_file(%L)', :'f1'), 'P0002', NULL, 'others cannot forward it');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_ann', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.file_permissions (file_id, user_id) VALUES (:'f1', :'u_ben');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_cat', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$INSERT INTO api.file_permissions (file_id, user_id) VALUES (%L, %L)$$, :'f1', :'u_ben'),
                 '42501', NULL, 'only the owner grants permissions');
RESET ROLE;

-- forwarding: a new file over the same blob
SELECT set_config('request.jwt.claims', :'c_ben', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT filename_visible FROM api.files WHERE id = :'f1'), 'hello.txt', 'a granted user reads the file');
SELECT api.forward_file(:'f1') ->> 'id' AS f2 \gset
SELECT ok((SELECT owner_id = :'u_ben' AND forwarded_from = :'f1' FROM api.files WHERE id = :'f2'), 'forward makes a new file of the forwarder');
SELECT is((SELECT sha256 FROM api.files WHERE id = :'f2'), sha256('hello'), 'forwarded file shares the blob');
RESET ROLE;

-- deleting: the blob stays while any file uses it
SELECT set_config('request.jwt.claims', :'c_cat', true);
SET LOCAL ROLE pgpod_user;
DELETE FROM api.files WHERE id = :'f1';
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.files WHERE id = :'f1'), 1, 'a stranger cannot delete a file');
SELECT set_config('request.jwt.claims', :'c_ann', true);
SET LOCAL ROLE pgpod_user;
DELETE FROM api.files WHERE id = :'f1';
RESET ROLE;
SELECT ok((SELECT orphaned_at IS NULL FROM pod.blobs WHERE sha256 = sha256('hello')), 'blob kept while a forwarded file uses it');
SELECT is((SELECT forwarded_from FROM pod.files WHERE id = :'f2'), NULL, 'forwarded copy survives its source');
SELECT throws_ok($$DELETE FROM pod.blobs WHERE sha256 = sha256('hello')$$, '23503', NULL, 'a used blob cannot be deleted');
SELECT set_config('request.jwt.claims', :'c_ben', true);
SET LOCAL ROLE pgpod_user;
DELETE FROM api.files WHERE id = :'f2';
RESET ROLE;
SELECT ok((SELECT orphaned_at IS NOT NULL FROM pod.blobs WHERE sha256 = sha256('hello')), 'last file gone: blob marked orphaned');
UPDATE pod.blobs SET orphaned_at = now() - interval '2 hours' WHERE sha256 = sha256('hello');
SELECT is((SELECT count(*)::int FROM pod.collect_orphaned_blobs()), 1, 'collector takes the orphaned blob');
SELECT is((SELECT count(*)::int FROM pod.blobs WHERE sha256 = sha256('hello')), 0, 'and it is gone');

SELECT * FROM finish();
ROLLBACK;
