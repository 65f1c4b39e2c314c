-- livechat rules enforced in the database: slow mode, forbidden words (refuse, hide,
-- Unicode and case, malicious regexes), moderation delay seen from each role, muted
-- anonymous viewers, roles and permissions, mutes and bans, the moderation log, remote
-- authors, anonymous tokens (nicknames, rate limit, expiry), terms, history pages.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SET LOCAL pgpod.password_memlimit = '8MB';
SELECT plan(122);

CREATE TEMP TABLE actor AS
  SELECT name, u.id AS user_id,
         json_build_object('role', 'pgpod_user', 'sub', u.id, 'sid', l.session_id)::text AS claims
    FROM unnest(ARRAY['owner', 'admin', 'member', 'other', 'outcast']) name,
         LATERAL pod.register(name || '@rules.test', 'password ' || name) u,
         LATERAL pod.login(name || '@rules.test', 'password ' || name) l;
GRANT SELECT ON actor TO pgpod_user, pgpod_anon;
SELECT claims AS owner FROM actor WHERE name = 'owner' \gset c_
SELECT claims AS admin FROM actor WHERE name = 'admin' \gset c_
SELECT claims AS member FROM actor WHERE name = 'member' \gset c_
SELECT claims AS other FROM actor WHERE name = 'other' \gset c_
SELECT claims AS outcast FROM actor WHERE name = 'outcast' \gset c_
SELECT user_id AS admin FROM actor WHERE name = 'admin' \gset u_
SELECT user_id AS member FROM actor WHERE name = 'member' \gset u_
SELECT user_id AS outcast FROM actor WHERE name = 'outcast' \gset u_
SELECT user_id AS owner FROM actor WHERE name = 'owner' \gset u_
SELECT user_id AS other FROM actor WHERE name = 'other' \gset u_

-- as(role name): the claims of that actor, as the gateway sets them
CREATE FUNCTION pg_temp.act(who text) RETURNS void LANGUAGE sql AS $$
  SELECT set_config('request.jwt.claims', (SELECT claims FROM actor WHERE name = who), true);
$$;
-- the SQLSTATE, message and detail of a statement's error (NULL when it succeeds)
CREATE FUNCTION pg_temp.err(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
  EXECUTE stmt;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN st || ' ' || msg || ' | ' || det;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text), pg_temp.err(text) TO pgpod_user, pgpod_anon;

-- a channel with a published video and its room; admin is a room admin
SELECT pg_temp.act('owner');
SET LOCAL ROLE pgpod_user;
INSERT INTO api.channels (name, display_name) VALUES ('rules', 'Rules Channel') RETURNING id AS channel \gset
INSERT INTO api.videos (channel_id, name) VALUES (:channel, 'live one') RETURNING uuid AS v1 \gset
INSERT INTO api.videos (channel_id, name) VALUES (:channel, 'live two') RETURNING uuid AS v2 \gset
RESET ROLE;
UPDATE pod.videos SET state = 'published' WHERE uuid IN (:'v1', :'v2');
SELECT pod.livechat_room(:'v1') AS room, pod.livechat_room(:'v2') AS room2 \gset
SELECT pg_temp.act('owner');
SET LOCAL ROLE pgpod_user;
INSERT INTO api.room_members (room_id, user_id, affiliation) VALUES (:'room', :'u_admin', 'admin');
RESET ROLE;

-- no options: a signed-in viewer posts in a video room
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "hello"}')$$, :'room'),
  'a signed-in viewer posts in a video''s room');
SELECT is(pod.room_role(:'room'), 'member', 'a viewer is a member of a video room');
RESET ROLE;

-- options are validated: bad next to good, a refused change changes nothing
SELECT pg_temp.act('owner');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.channel_chat_options VALUES (%s, '{"terms": "Be kind.", "forbidden_words_action": "refuse"}')$$, :channel),
  'valid options with terms');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"forbidden_words": ["/(a)\\1/"]}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'a back-reference is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"forbidden_words": ["/(?=x)y/"]}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'a look-ahead is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"forbidden_words": ["/a{1000}/"]}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'a repetition bound above 100 is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"forbidden_words": ["/[a/"]}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'an invalid regular expression is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"forbidden_words": ["!!!"]}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'a word without letters is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"forbidden_words_action": "delete"}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'an unknown forbidden_words_action is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = '{"bot": {"nickname": ""}}' WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'a bot without a nickname is refused');
SELECT throws_ok(format($$UPDATE api.channel_chat_options SET options = jsonb_build_object('forbidden_words', (SELECT jsonb_agg('w' || g) FROM generate_series(1, 201) g)) WHERE channel_id = %s$$, :channel),
  '22023', NULL, 'more than 200 forbidden words are refused');
SELECT lives_ok(format($$UPDATE api.channel_chat_options SET options = '{"terms": "Be kind.", "bot": {"enabled": true, "nickname": "Rulebot"}}' WHERE channel_id = %s$$, :channel),
  'a valid bot');
RESET ROLE;
SELECT is((SELECT options ->> 'terms' FROM pod.channel_chat_options WHERE channel_id = :channel), 'Be kind.', 'refused changes changed nothing');

-- terms on join (room info) for each kind of caller
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is(api.chat_room_info(:'room') ->> 'terms', 'Be kind.', 'the room''s info shows the terms');
SELECT is((api.chat_room_info(:'room') -> 'permissions' ->> 'ban')::boolean, false, 'a member may not ban');
RESET ROLE;

-- forbidden words: case, Unicode (width, composition), whole words, regexes; admins exempt
SELECT pod.set_setting('livechat.anonymous_joins_per_hour', '3');
UPDATE pod.channel_chat_options SET options = '{"forbidden_words": ["spam", "über", "two words", "/fr[e3]e\\s+money/"]}'
 WHERE channel_id = :channel;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
CREATE TEMP TABLE texts (t text, refused boolean);
INSERT INTO texts VALUES ('SPAM!', true), ('Spam and eggs', true), ('ＳＰＡＭ in full width', true),
  ('spammer is fine', false), ('ÜBER alles', true), ('u' || U&'\0308' || 'ber decomposed', true),
  ('ub er', false), ('say two   WORDS', true), ('two', false), ('FREE    money now', true), ('fr3e money', true),
  ('free moneys', true), ('freemoney', false);
SELECT is(pg_temp.err(format('INSERT INTO api.messages (room_id, data) VALUES (%L, %L)', :'room', jsonb_build_object('text', t)))
            IS NOT NULL, refused, format('%s: %s', t, CASE WHEN refused THEN 'refused' ELSE 'accepted' END))
  FROM texts ORDER BY t;
SELECT alike(pg_temp.err(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "spam"}')$$, :'room')),
  '23514 message refused: it contains the forbidden word spam%', 'the refusal names the word (23514)');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "quoting: spam"}')$$, :'room'),
  'a moderator is not filtered');
RESET ROLE;

-- a malicious regex: accepted (no back-references) and bounded on a long text
UPDATE pod.channel_chat_options SET options = '{"forbidden_words": ["/(a+)+b/", "/(a|aa)*c/", "/(x+x+)+y/"]}' WHERE channel_id = :channel;
SELECT pg_temp.act('member');
SET LOCAL statement_timeout = '10s';
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format('INSERT INTO api.messages (room_id, data) VALUES (%L, %L)', :'room',
                       jsonb_build_object('text', repeat('a', 4999) || '!')),
  'nested quantifiers on 5000 characters finish (and do not match)');
SELECT lives_ok(format('INSERT INTO api.messages (room_id, data) VALUES (%L, %L)', :'room',
                       jsonb_build_object('text', repeat('x', 4999) || '!')),
  '(x+x+)+y on 5000 characters finishes');
SELECT throws_ok(format('INSERT INTO api.messages (room_id, data) VALUES (%L, %L)', :'room',
                        jsonb_build_object('text', repeat('a', 5001))),
  '22023', NULL, 'a text over 5000 characters is refused');
SELECT throws_ok(format('INSERT INTO api.messages (room_id, data) VALUES (%L, %L)', :'room',
                        jsonb_build_object('text', repeat('a', 100) || 'b')),
  '23514', NULL, 'and the regex does match when it should');
RESET ROLE;
RESET statement_timeout;

-- hide instead of refuse: the author and moderators see it, nobody else
UPDATE pod.channel_chat_options SET options = '{"forbidden_words": ["spam"], "forbidden_words_action": "hide"}' WHERE channel_id = :channel;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
INSERT INTO api.messages (room_id, data) VALUES (:'room', '{"text": "buy spam"}') RETURNING id AS hidden_id \gset
SELECT is((SELECT hidden FROM api.messages WHERE id = :hidden_id), true, 'hide: the author sees the message, marked hidden');
RESET ROLE;
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE id = :hidden_id), 0, 'hide: another member does not see it');
SELECT is((SELECT count(*)::int FROM api.room_events WHERE room_id = :'room' AND (message ->> 'id')::bigint = :hidden_id), 0,
  'hide: nor its event');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE id = :hidden_id), 1, 'hide: a moderator sees it');
RESET ROLE;

-- slow mode: a member waits (PT429 with Retry-After), a moderator does not, others are independent
UPDATE pod.channel_chat_options SET options = '{"slow_mode_seconds": 30}' WHERE channel_id = :channel;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "first"}')$$, :'room'), 'slow mode: the first post passes');
SELECT matches(pg_temp.err(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "second"}')$$, :'room')),
  '^PT429 slow mode: you may post again in [0-9]+ seconds \| Retry-After: [0-9]+$', 'slow mode: the second is refused with PT429 and Retry-After');
RESET ROLE;
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "mine"}')$$, :'room'), 'slow mode is per poster');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "a"}'), (%L, '{"text": "b"}')$$, :'room', :'room'),
  'slow mode: moderators are exempt');
RESET ROLE;
UPDATE pod.chat_slow SET last_at = last_at - interval '31 seconds';
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "later"}')$$, :'room'), 'slow mode: after the delay, posting works again');
RESET ROLE;

-- moderation delay, seen from each role
UPDATE pod.channel_chat_options SET options = '{"moderation_delay_seconds": 60}' WHERE channel_id = :channel;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
INSERT INTO api.messages (room_id, data) VALUES (:'room', '{"text": "held one"}') RETURNING id AS held1 \gset
INSERT INTO api.messages (room_id, data) VALUES (:'room', '{"text": "held two"}') RETURNING id AS held2 \gset
SELECT is((SELECT count(*)::int FROM api.messages WHERE id IN (:held1, :held2)), 2, 'delay: the author sees their messages at once');
SELECT is((SELECT count(*)::int FROM api.room_events WHERE room_id = :'room' AND (message ->> 'id')::bigint = :held1), 1,
  'delay: the author gets the event at once');
RESET ROLE;
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE id IN (:held1, :held2)), 0, 'delay: another member does not see them yet');
SELECT is((SELECT count(*)::int FROM api.room_events WHERE room_id = :'room' AND (message ->> 'id')::bigint IN (:held1, :held2)), 0,
  'delay: nor their events');
RESET ROLE;
SELECT pg_temp.act('owner');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE id IN (:held1, :held2)), 2, 'delay: the owner sees them at once');
RESET ROLE;
-- the admin deletes the first within the delay: nobody else ever sees it
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*)::int FROM api.messages WHERE id IN (:held1, :held2)), 2, 'delay: an admin sees them at once');
DELETE FROM api.messages WHERE id = :held1;
RESET ROLE;
SELECT is((SELECT action || ' ' || target FROM pod.room_moderation_log WHERE message_id = :held1), 'delete ' || :'u_member',
  'the moderator''s delete is in the moderation log');
-- time passes (a fixture change: no triggers)
SET LOCAL session_replication_role = replica;
UPDATE pod.messages SET held_until = now() - interval '1 second' WHERE id = :held2;
RESET session_replication_role;
UPDATE pod.chat_held SET until = now() - interval '1 second';
SELECT is(pod.livechat_release(), 1, 'release: only the message still there is released');
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT array_agg(kind ORDER BY seq) FROM api.room_events WHERE room_id = :'room' AND (message ->> 'id')::bigint IN (:held1, :held2)),
  ARRAY['new'], 'release: another member gets one new event, for the second only');
SELECT is((SELECT count(*)::int FROM api.messages WHERE id = :held1 OR (type = 'event' AND data #>> '{moderation,message_id}' = :'held1')),
  0, 'the deleted held message and its moderation event stay unseen by others');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT array_agg(kind ORDER BY seq) FROM api.room_events WHERE room_id = :'room' AND (message ->> 'id')::bigint = :held2),
  ARRAY['new'], 'release: a moderator (who saw it at once) gets no second new event');
SELECT is((SELECT array_agg(kind ORDER BY seq) FROM api.room_events WHERE room_id = :'room' AND (message ->> 'id')::bigint = :held1),
  ARRAY['new', 'deleted'], 'a moderator saw the held message and its deletion');
RESET ROLE;

-- mutes and bans: through api.chat_moderate (logged), permissions checked
UPDATE pod.channel_chat_options SET options = '{}' WHERE channel_id = :channel;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$SELECT api.chat_moderate(%L, %L, 'ban')$$, :'room', :'u_outcast'), '42501', NULL, 'a member may not ban');
SELECT throws_ok(format($$SELECT api.chat_moderate(%L, %L, 'smite')$$, :'room', :'u_outcast'), '22023', NULL, 'an unknown action is refused');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$SELECT api.chat_moderate(%L, %L, 'ban')$$, :'room', :'u_outcast'), 'an admin bans');
SELECT lives_ok(format($$SELECT api.chat_moderate(%L, %L, 'mute')$$, :'room', :'u_member'), 'an admin mutes');
SELECT throws_ok(format($$SELECT api.chat_moderate(%L, %L, 'ban')$$, :'room', :'u_owner'), '42501', NULL, 'nobody bans the owner');
RESET ROLE;
SELECT pg_temp.act('outcast');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "let me in"}')$$, :'room'),
  '42501', NULL, 'an outcast cannot post');
SELECT is((SELECT count(*)::int FROM api.messages WHERE room_id = :'room'), 0, 'an outcast reads nothing');
RESET ROLE;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "mmm"}')$$, :'room'),
  '42501', NULL, 'a muted member cannot post');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$SELECT api.chat_moderate(%L, %L, 'unmute')$$, :'room', :'u_member'), 'an admin unmutes');
SELECT is((SELECT array_agg(action ORDER BY id) FROM api.room_moderation_log WHERE room_id = :'room' AND action <> 'options'),
  ARRAY['delete', 'ban', 'mute', 'unmute'], 'the moderation log has every action');
SELECT is((SELECT count(*)::int FROM api.messages WHERE room_id = :'room' AND type = 'event' AND data #>> '{moderation,action}' IN ('ban', 'mute', 'unmute')),
  3, 'each moderator action is a room event');
RESET ROLE;
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "back"}')$$, :'room'), 'unmuted, the member posts');
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, type, data) VALUES (%L, 'event', '{"moderation": {}}')$$, :'room'),
  '42501', NULL, 'a member cannot forge a room event');
SELECT is((SELECT count(*)::int FROM api.room_moderation_log), 0, 'a member does not read the moderation log');
-- a member cannot mute through room_members either
UPDATE api.room_members SET data = '{"is_muted": true}' WHERE room_id = :'room' AND user_id = :'u_admin';
RESET ROLE;
SELECT is((SELECT data FROM pod.room_members WHERE room_id = :'room' AND user_id = :'u_admin'), '{}'::jsonb, 'a member''s direct mute changes nothing');

-- permissions from rooms.data: validated; they decide who posts, edits, deletes others', changes options
SELECT pg_temp.act('owner');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$UPDATE api.rooms SET data = '{"permissions": {"god": {}}}' WHERE id = %L$$, :'room'), '22023', NULL, 'an unknown role is refused');
SELECT throws_ok(format($$UPDATE api.rooms SET data = '{"permissions": {"member": {"fly": true}}}' WHERE id = %L$$, :'room'), '22023', NULL, 'an unknown action is refused');
SELECT throws_ok(format($$UPDATE api.rooms SET data = '{"permissions": {"member": {"post": "yes"}}}' WHERE id = %L$$, :'room'), '22023', NULL, 'a permission is a boolean');
SELECT lives_ok(format($$UPDATE api.rooms SET data = '{"roles": [], "permissions": {"member": {"post": false, "edit": false}, "admin": {"change_options": false}}}' WHERE id = %L$$, :'room'),
  'the owner sets permissions');
RESET ROLE;
SELECT id AS back_id FROM pod.messages WHERE data ->> 'text' = 'back' \gset
SELECT pg_temp.act('member');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "no"}')$$, :'room'), '42501', NULL,
  'a member without post permission cannot post');
UPDATE api.messages SET data = '{"text": "edited"}' WHERE id = :back_id;
SELECT is((SELECT data ->> 'text' FROM api.messages WHERE id = :back_id), 'back', 'a member without edit permission cannot edit');
RESET ROLE;
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
DELETE FROM api.messages WHERE id = :back_id;
RESET ROLE;
SELECT is((SELECT status::text FROM pod.messages WHERE id = :back_id), 'sent', 'a member cannot delete another''s message');
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok(format($$SELECT api.chat_set_options(%L, '{"slow_mode_seconds": 5}')$$, :'room'), '42501', NULL,
  'an admin without change_options cannot change options');
DELETE FROM api.messages WHERE id = :back_id;
RESET ROLE;
SELECT is((SELECT status::text FROM pod.messages WHERE id = :back_id), 'deleted', 'an admin deletes another''s message');
SELECT pg_temp.act('owner');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$UPDATE api.rooms SET data = '{"roles": []}' WHERE id = %L$$, :'room'), 'the owner restores the defaults');
RESET ROLE;
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT is((api.chat_set_options(:'room', '{"slow_mode_seconds": 5, "terms": "Rules apply."}') ->> 'terms'), 'Rules apply.', 'with change_options an admin changes options');
SELECT is((SELECT count(*)::int FROM api.room_moderation_log WHERE room_id = :'room' AND action = 'options' AND actor_id = :'u_admin'
                                      AND detail #>> '{options,terms}' = 'Rules apply.'), 1,
  'the option change is logged');
RESET ROLE;

-- remote authors: the same rules, identity user@pod
UPDATE pod.channel_chat_options SET options = '{"slow_mode_seconds": 30, "forbidden_words": ["spam"]}' WHERE channel_id = :channel;
SELECT pod.chat_remote_post(:'room', 'bob@podb.test', '{"text": "hi from B"}') AS remote1 \gset
SELECT is((SELECT author_ref FROM pod.messages WHERE id = :remote1), 'bob@podb.test', 'a remote author is user@pod');
SELECT throws_ok(format($$SELECT pod.chat_remote_post(%L, 'bob@podb.test', '{"text": "again"}')$$, :'room'), 'PT429', NULL,
  'a remote author is slow-moded');
SELECT throws_ok(format($$SELECT pod.chat_remote_post(%L, 'carol@podb.test', '{"text": "SPAM"}')$$, :'room'), '23514', NULL,
  'a remote author''s forbidden word is refused');
SELECT throws_ok(format($$SELECT pod.chat_remote_post(%L, 'not an address', '{"text": "x"}')$$, :'room'), '22023', NULL,
  'a malformed remote author is refused');
SELECT pg_temp.act('admin');
SET LOCAL ROLE pgpod_user;
SELECT lives_ok(format($$SELECT api.chat_moderate(%L, 'bob@podb.test', 'ban')$$, :'room'), 'an admin bans a remote user');
RESET ROLE;
UPDATE pod.chat_slow SET last_at = last_at - interval '1 hour';
SELECT throws_ok(format($$SELECT pod.chat_remote_post(%L, 'bob@podb.test', '{"text": "let me back"}')$$, :'room'), '42501', NULL,
  'a banned remote user cannot post');

-- anonymous viewers: nickname rules, impersonation, rate limit, read-only when muted, expiry
UPDATE pod.channel_chat_options SET options = '{"terms": "Anonymous: be nice."}' WHERE channel_id = :channel;
SELECT set_config('request.jwt.claims', '', true);
SET LOCAL ROLE pgpod_anon;
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'x')$$, :'v1'), '22023', NULL, 'a one-character nickname is refused');
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'bob@podb')$$, :'v1'), '22023', NULL, 'a nickname with @ is refused');
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'MEMBER')$$, :'v1'), '23505', NULL, 'a member''s name is refused (case-insensitively)');
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'rules  channel')$$, :'v1'), '22023', NULL, 'double spaces are refused');
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'Rules-Channel')$$, :'v1'), '23505', NULL, 'the channel''s name is refused');
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'Viewer')$$, gen_random_uuid()), 'P0002', NULL, 'an unknown video is refused');
RESET ROLE;
SET LOCAL request.client_ip = '10.0.0.1';
SELECT set_config('request.jwt.claims', '', true);
SET LOCAL ROLE pgpod_anon;
SELECT api.chat_join_anonymous(:'v1', 'Viewer One') AS j1 \gset
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'viewer one')$$, :'v1'), '23505', NULL, 'a live nickname is taken');
SELECT api.chat_join_anonymous(:'v1', 'Viewer Two') AS j2 \gset
SELECT api.chat_join_anonymous(:'v1', 'Viewer Three') AS j3 \gset
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'Viewer Four')$$, :'v1'), 'PT429', NULL, 'the fourth join from one address within an hour is refused');
RESET ROLE;
SET LOCAL request.client_ip = '10.0.0.2';
SET LOCAL ROLE pgpod_anon;
SELECT lives_ok(format($$SELECT api.chat_join_anonymous(%L, 'Viewer Four')$$, :'v1'), 'another address may join');
RESET ROLE;
SELECT is((:'j1'::json -> 'info' ->> 'terms'), 'Anonymous: be nice.', 'the join answer shows the terms');
SELECT json_build_object('role', 'pgpod_anon', 'guest', :'j1'::json ->> 'guest_id')::text AS g1 \gset
SELECT set_config('request.jwt.claims', :'g1', true);
SET LOCAL ROLE pgpod_anon;
SELECT lives_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "anon hello"}')$$, :'room'), 'an anonymous viewer posts');
SELECT is((SELECT author_ref FROM api.messages WHERE data ->> 'text' = 'anon hello'), 'Viewer One', 'under their nickname');
SELECT is(api.chat_room_info(:'room') ->> 'terms', 'Anonymous: be nice.', 'an anonymous viewer reads the room''s terms');
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "elsewhere"}')$$, :'room2'), '42501', NULL,
  'an anonymous token is for one room only');
SELECT is((SELECT count(*)::int FROM api.messages WHERE room_id = :'room2'), 0, 'it reads no other room');
SELECT ok((SELECT count(*) FROM api.messages WHERE room_id = :'room') > 0, 'it reads its room');
RESET ROLE;
UPDATE pod.channel_chat_options SET options = '{"mute_anonymous": true}' WHERE channel_id = :channel;
SET LOCAL ROLE pgpod_anon;
SELECT throws_ok(format($$INSERT INTO api.messages (room_id, data) VALUES (%L, '{"text": "muted?"}')$$, :'room'), '42501', NULL,
  'mute_anonymous: an anonymous viewer may not post');
SELECT ok((SELECT count(*) FROM api.messages WHERE room_id = :'room') > 0, 'mute_anonymous: but still reads');
RESET ROLE;
UPDATE pod.chat_guests SET expires_at = now() - interval '1 second' WHERE id = (:'j1'::json ->> 'guest_id')::uuid;
SET LOCAL ROLE pgpod_anon;
SELECT throws_ok($$SELECT count(*) FROM api.messages$$, 'PT401', NULL, 'an expired anonymous token is refused');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);
SET LOCAL ROLE pgpod_anon;
SELECT throws_ok($$SELECT count(*) FROM api.messages$$, '42501', NULL, 'without a token, anonymous reads nothing (refused)');
RESET ROLE;
UPDATE pod.channel_chat_options SET options = '{"anonymous_allowed": false}' WHERE channel_id = :channel;
SET LOCAL request.client_ip = '10.0.0.3';
SET LOCAL ROLE pgpod_anon;
SELECT throws_ok(format($$SELECT api.chat_join_anonymous(%L, 'Viewer Five')$$, :'v1'), '42501', NULL, 'anonymous_allowed false: no token');
RESET ROLE;

-- history: pages by id, newest first, bad arguments refused
UPDATE pod.channel_chat_options SET options = '{}' WHERE channel_id = :channel;
INSERT INTO pod.messages (room_id, data) SELECT :'room2', jsonb_build_object('text', 'h' || g) FROM generate_series(1, 10) g;
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT array_agg(data ->> 'text') FROM api.room_history(:'room2', page_size => 3)), ARRAY['h10', 'h9', 'h8'],
  'history: the latest page, newest first');
SELECT min(id) AS h8 FROM api.room_history(:'room2', page_size => 3) \gset
SELECT is((SELECT array_agg(data ->> 'text') FROM api.room_history(:'room2', before => :h8, page_size => 3)), ARRAY['h7', 'h6', 'h5'],
  'history: the page before an id');
SELECT is((SELECT array_agg(data ->> 'text') FROM api.room_history(:'room2', after => :h8 - 5, page_size => 2)), ARRAY['h5', 'h4'],
  'history: the page after an id, newest first');
SELECT throws_ok(format($$SELECT * FROM api.room_history(%L, page_size => 0)$$, :'room2'), '22023', NULL, 'history: limit 0 refused');
SELECT throws_ok(format($$SELECT * FROM api.room_history(%L, page_size => 201)$$, :'room2'), '22023', NULL, 'history: limit 201 refused');
SELECT throws_ok(format($$SELECT * FROM api.room_history(%L, 1, 2)$$, :'room2'), '22023', NULL, 'history: before and after together refused');
RESET ROLE;

-- row-level security asks pod.room_role once per room and snapshot (pod.room_view): a
-- ban is seen by the next statement of the same transaction, a rolled-back unban is not
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT ok((SELECT count(*) FROM api.messages WHERE room_id = :'room2') > 0, 'per-room view: a reader reads the room');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);
SELECT pod.chat_moderate(:'room2', :'u_other', 'ban') \g /dev/null
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*) FROM api.messages WHERE room_id = :'room2'), 0::bigint,
  'per-room view: banned in the same transaction, the next statement reads nothing');
RESET ROLE;
SAVEPOINT unban;
SELECT set_config('request.jwt.claims', '', true);
SELECT pod.chat_moderate(:'room2', :'u_other', 'unban') \g /dev/null
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT ok((SELECT count(*) FROM api.messages WHERE room_id = :'room2') > 0, 'per-room view: unbanned, reads again');
RESET ROLE;
ROLLBACK TO SAVEPOINT unban;
SELECT pg_temp.act('other');
SET LOCAL ROLE pgpod_user;
SELECT is((SELECT count(*) FROM api.messages WHERE room_id = :'room2'), 0::bigint,
  'per-room view: the unban rolled back to its savepoint is not seen');
RESET ROLE;

-- nothing held: no release is due (the livechat daemon sleeps its interval)
DELETE FROM pod.chat_held;
SELECT is(pod.livechat_next_release(), NULL, 'nothing held: no release time (the daemon does not spin)');

-- pod.forbidden_word_in (C) answers as the plpgsql rule it replaced
CREATE FUNCTION pg_temp.fw_ref(t text, words jsonb) RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE folded text; nfkc text; w text;
BEGIN
  IF t IS NULL OR words IS NULL OR jsonb_array_length(words) = 0 THEN RETURN NULL; END IF;
  folded := pod.chat_fold(t);
  nfkc := normalize(t, NFKC);
  FOR w IN SELECT jsonb_array_elements_text(words) LOOP
    IF length(w) >= 2 AND left(w, 1) = '/' AND right(w, 1) = '/' THEN
      IF (nfkc COLLATE "und-x-icu") ~* substr(w, 2, length(w) - 2) THEN RETURN w; END IF;
    ELSIF strpos(folded, pod.chat_fold(w)) > 0 THEN RETURN w;
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
SELECT is((SELECT count(*) FROM (VALUES ('Free   MONEY now'), ('fr3e money'), ('this is ÜBER cool'), ('uber'), ('Ｓｐａｍ!'),
                                        ('spammer'), ('a scam.'), (''), (NULL), ('ü'), ('e' || U&'\0301' || 'lan'), ('élan vital'),
                                        ('/'), ('SPAM'), ('no match here')) t(t),
                                (VALUES ('["spam", "scam", "/fr[e3]e\\s+money/", "über"]'::jsonb), ('[]'), (NULL), ('["élan"]'),
                                        ('["/^$/", "spam"]'), ('[null, "/"]'), ('["//"]'), ('["a b", "/ü/"]')) w(w)
                        WHERE pod.forbidden_word_in(t.t, w.w) IS DISTINCT FROM pg_temp.fw_ref(t.t, w.w)), 0::bigint,
  'forbidden words in C: the same first entry as the plpgsql rule for words, regexes, Unicode forms, case, empty and null');
SELECT is((SELECT count(*) FROM (VALUES ('!!!'), ('a!'), ('!a  b!'), ('x_y'), (E'tab\there'), ('Spam-spam'), ('A1b2 c3'), ('  '),
                                        ('free money!'), ('~'), ('MiXeD CaSe 42'), ('x-y'), ('a b'), ('ab')) t(t),
                                (VALUES ('["x y", "!!", "a b"]'::jsonb), ('["spam", "/^ *$/", "c3"]'), ('["mixed case", "42"]'),
                                        ('["/FREE\\s+money/", "ab"]'), ('["b c", "a1b2"]')) w(w)
                        WHERE pod.forbidden_word_in(t.t, w.w) IS DISTINCT FROM pg_temp.fw_ref(t.t, w.w)), 0::bigint,
  'forbidden words, ASCII messages (folded without ICU): the same first entry as the plpgsql rule, punctuation runs and ends included');

SELECT * FROM finish();
ROLLBACK;
