-- chat: rooms, membership, posting rules, soft deletion, secret rooms, edits, events.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(37);

-- three users with live sessions; claims as the gateway would set them
CREATE TEMP TABLE actor AS
  SELECT name, u.id AS user_id, l.session_id,
         json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS claims
    FROM unnest(ARRAY['owner', 'member', 'stranger']) name,
         LATERAL pod.register(name || '@chat.test', 'password ' || name) u,
         LATERAL pod.login(name || '@chat.test', 'password ' || name) l;
GRANT SELECT ON actor TO pgpod_user;
SELECT claims AS owner FROM actor WHERE name = 'owner' \gset c_
SELECT claims AS member FROM actor WHERE name = 'member' \gset c_
SELECT claims AS stranger FROM actor WHERE name = 'stranger' \gset c_
SELECT user_id AS member FROM actor WHERE name = 'member' \gset u_
SELECT user_id AS stranger FROM actor WHERE name = 'stranger' \gset u_

-- the owner creates a group and a secret room
SELECT set_config('request.jwt.claims', :'c_owner', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.rooms (name, type) VALUES ('group one', 'group') RETURNING id AS group_room \gset
INSERT INTO api.rooms (name, type) VALUES ('hush', 'secret') RETURNING id AS secret_room \gset
SELECT throws_ok($$INSERT INTO api.rooms (name, type) VALUES ('bad', 'circle')$$, '22P02', NULL, 'invalid room type refused');
SELECT is(pod.room_affiliation(:'group_room')::text, 'owner', 'creator is owner');
INSERT INTO api.room_members (room_id, user_id) VALUES (:'group_room', :'u_member'), (:'secret_room', :'u_member');
INSERT INTO api.messages (room_id, data) VALUES (:'group_room', '{"text": "hello", "references": [1]}') RETURNING id AS m1 \gset
INSERT INTO api.messages (room_id, data) VALUES (:'secret_room', '{"text": "psst"}') RETURNING id AS s1 \gset
RESET ROLE;

-- a member reads and posts; a stranger neither reads nor posts
SELECT set_config('request.jwt.claims', :'c_member', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT data ->> 'text' FROM api.messages WHERE id = :m1), 'hello', 'member reads the room');
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "hi"}')$$, :'group_room'), 'member posts');
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, author_id, data) VALUES (%L, %L, '{"text": "x"}')$$,
                 :'group_room', :'u_stranger'), '42501', NULL, 'posting as someone else refused');
SELECT throws_ok(format($$INSERT INTO api.room_members (room_id, user_id) VALUES (%L, %L)$$, :'group_room', :'u_stranger'),
                 '42501', NULL, 'a plain member cannot add members');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_stranger', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE room_id = :'group_room'), 0, 'stranger sees no message');
SELECT is((SELECT count(*)::int FROM api.rooms), 0, 'stranger sees no room');
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "spam"}')$$, :'group_room'),
                 '42501', 'you are not a member of room ' || :'group_room', 'posting to a room one is not in');
SELECT is((SELECT count(*)::int FROM api.message_versions), 0, 'stranger sees no versions');
RESET ROLE;

-- muting and outcasts
SELECT set_config('request.jwt.claims', :'c_owner', true);
SET LOCAL ROLE pgpod_user;
UPDATE api.room_members SET data = data || '{"is_muted": true}' WHERE room_id = :'group_room' AND user_id = :'u_member';
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_member', true);
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "?"}')$$, :'group_room'),
                 '42501', 'you are muted in room ' || :'group_room', 'a muted member cannot post');
SELECT is((SELECT count(*)::int FROM api.messages WHERE room_id = :'group_room' AND type = 'message'), 2, 'a muted member still reads');
SELECT is((SELECT data #>> '{moderation,action}' FROM api.messages WHERE room_id = :'group_room' AND type = 'event'), 'mute',
          'and sees the mute as a room event');
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_owner', true);
SET LOCAL ROLE pgpod_user;
UPDATE api.room_members SET affiliation = 'outcast', data = '{}' WHERE room_id = :'group_room' AND user_id = :'u_member';
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_member', true);
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE room_id = :'group_room'), 0, 'an outcast reads nothing');
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "?"}')$$, :'group_room'),
                 '42501', NULL, 'an outcast cannot post');
RESET ROLE;

-- editing keeps versions
SELECT set_config('request.jwt.claims', :'c_owner', true);
SET LOCAL ROLE pgpod_user;
UPDATE api.messages SET data = '{"text": "hello, world", "references": [1]}' WHERE id = :m1;
SELECT is((SELECT status::text FROM api.messages WHERE id = :m1), 'edited', 'edit marks the message edited');
SELECT isnt((SELECT edited_at FROM api.messages WHERE id = :m1), NULL, 'edit sets edited_at');
SELECT is((SELECT data ->> 'text' FROM api.message_versions WHERE message_id = :m1 AND version = 1), 'hello', 'previous version kept');
SELECT throws_ok(format($$UPDATE api.messages SET room_id = %L WHERE id = %s$$, :'secret_room', :m1), '42501', NULL,
                 'a message cannot move rooms');

-- soft deletion keeps a tombstone
DELETE FROM api.messages WHERE id = :m1;
SELECT is((SELECT status::text FROM api.messages WHERE id = :m1), 'deleted', 'deleted message stays as a tombstone');
SELECT ok((SELECT deleted_at IS NOT NULL AND NOT data ? 'text' AND NOT data ? 'references' FROM api.messages WHERE id = :m1),
          'tombstone has deleted_at and no text or references');
SELECT ok((SELECT room_id = :'group_room' AND author_id IS NOT NULL AND sent_at IS NOT NULL FROM api.messages WHERE id = :m1),
          'tombstone keeps room, author and sent_at');
SELECT is((SELECT count(*)::int FROM api.message_versions WHERE message_id = :m1), 0, 'earlier versions purged with the text');
SELECT throws_ok(format($$UPDATE api.messages SET data = '{"text": "back"}' WHERE id = %s$$, :m1), '55000',
                 'message is deleted', 'a tombstone cannot be edited');
SELECT lives_ok(format('DELETE FROM api.messages WHERE id = %s', :m1), 'deleting a tombstone again is harmless');

-- secret rooms really delete
DELETE FROM api.messages WHERE id = :s1;
RESET ROLE;
SELECT is((SELECT count(*)::int FROM pod.messages WHERE id = :s1), 0, 'secret-room message really removed');

-- room events: gapless per room, kinds in order
SELECT is((SELECT array_agg(e.kind::text ORDER BY seq) FROM pod.room_events e JOIN pod.messages m ON m.id = e.message_id
             WHERE e.room_id = :'group_room' AND m.type = 'message'),
          ARRAY['new', 'new', 'edited', 'deleted'], 'room events record new, edit and delete in order');
SELECT is((SELECT array_agg(seq ORDER BY seq) FROM pod.room_events WHERE room_id = :'group_room'),
          ARRAY[1, 2, 3, 4, 5, 6, 7]::bigint[], 'room event sequence is gapless (moderation events included)');
SELECT is((SELECT message ->> 'status' FROM api.room_events WHERE room_id = :'secret_room' AND kind = 'deleted'),
          'deleted', 'a removed secret message streams as deleted');

-- a non-owner cannot delete someone else's message; the moderator can
SELECT set_config('request.jwt.claims', :'c_owner', true);
SET LOCAL ROLE pgpod_user;
UPDATE api.room_members SET affiliation = 'member' WHERE room_id = :'group_room' AND user_id = :'u_member';
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_member', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.messages (room_id, data) VALUES (:'group_room', '{"text": "mine"}') RETURNING id AS m3 \gset
RESET ROLE;
SELECT set_config('request.jwt.claims', :'c_stranger', true);
SET LOCAL ROLE pgpod_user;
DELETE FROM api.messages WHERE id = :m3;
RESET ROLE;
SELECT is((SELECT status::text FROM pod.messages WHERE id = :m3), 'sent', 'a stranger''s DELETE touches nothing');
SELECT set_config('request.jwt.claims', :'c_owner', true);
SET LOCAL ROLE pgpod_user;
DELETE FROM api.messages WHERE id = :m3;
RESET ROLE;
SELECT is((SELECT status::text FROM pod.messages WHERE id = :m3), 'deleted', 'the room owner can delete a member''s message');

-- the member's account removed: its messages (a tombstone among them) stay as they were,
-- unattributed (the foreign key's SET NULL passes the edit trigger), no version made;
-- author_id stays unchangeable otherwise
CREATE TEMP TABLE member_msgs AS SELECT * FROM pod.messages WHERE author_id = :'u_member';
SELECT count(*) AS versions_before FROM pod.message_versions \gset
SELECT id AS live_msg FROM member_msgs WHERE status <> 'deleted' ORDER BY id LIMIT 1 \gset
SELECT throws_ok(format($$UPDATE pod.messages SET author_id = NULL, data = '{"text": "x"}' WHERE id = %s$$, :live_msg), '22023', NULL,
  'author_id cannot be cleared together with an edit');
SELECT lives_ok(format($$DELETE FROM pod.users WHERE id = %L$$, :'u_member'), 'a user with messages and a tombstone can be deleted');
SELECT ok((SELECT count(*) FROM member_msgs) >= 2 AND (SELECT count(*) FROM member_msgs WHERE status = 'deleted') >= 1
          AND (SELECT count(*) FROM pod.messages WHERE id = :m3 AND status = 'deleted' AND author_id IS NULL) = 1,
  '... the tombstone stays, unattributed');
SELECT is((SELECT count(*) FROM member_msgs o JOIN pod.messages m USING (id)
            WHERE m.author_id IS NULL AND m.status = o.status AND m.edited_at IS NOT DISTINCT FROM o.edited_at
              AND m.data IS NOT DISTINCT FROM o.data AND m.deleted_at IS NOT DISTINCT FROM o.deleted_at),
          (SELECT count(*) FROM member_msgs), '... every message as it was (status, edit time, data), unattributed');
SELECT is((SELECT count(*) FROM pod.message_versions), :versions_before::bigint, '... and no version was made');

-- deleting a room takes its messages (no dangling tombstones)
DELETE FROM pod.rooms WHERE id = :'group_room';
SELECT is((SELECT count(*)::int FROM pod.messages WHERE room_id = :'group_room'), 0, 'room deletion removes its messages');

SELECT * FROM finish();
ROLLBACK;
