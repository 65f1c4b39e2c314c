-- 51_livechat_rules: chat options and room permissions ENFORCED in the database, so
-- that every path a message arrives by (SQL, the gateway, a remote pod) meets the
-- same rules: slow mode, forbidden words (refuse or hide), moderation delay, muted
-- anonymous viewers, roles and per-role permissions from rooms.data, bans (outcast),
-- a moderation log with every moderator action also a room event. Guests (anonymous
-- viewers holding a short-lived token, and remote pods' users) post as rows of
-- pod.chat_guests. A message's visibility (hidden, held by the moderation delay) is
-- decided here in row-level security and on the room's events, so any stream that
-- reads events through the database respects it.

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('livechat.anonymous_lifetime', '"2 hours"', 'How long an anonymous viewer''s chat token (and its nickname) lives.'),
  ('livechat.anonymous_joins_per_hour', '10', 'Anonymous chat tokens one client address may get per hour.'),
  ('livechat.release_interval', '"1 second"', 'How often the livechat daemon looks for held messages whose moderation delay is over (it also wakes on NOTIFY pgpod_chat_held).'),
  ('livechat.cleanup_interval', '"1 hour"', 'How often the livechat daemon runs pod.livechat_cleanup().');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 10000 WHERE name = 'livechat.anonymous_joins_per_hour';

-- Folding for word matching: NFKC, Unicode lower case (ICU), every run of anything
-- but letters and digits one space, padded with spaces: " word " finds whole words.
CREATE FUNCTION pod.chat_fold(t text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN ' ' || btrim(regexp_replace(lower(normalize(t, NFKC) COLLATE "und-x-icu"), '[^[:alnum:]]+', ' ', 'g')) || ' ';

-- One forbidden_words entry: a word (or words) with at least one letter or digit, or a
-- /regex/ of the safe subset that compiles. PostgreSQL's engine has no exponential
-- backtracking without back-references; the bounds keep the compiled automaton small,
-- and the message text is bounded (pod.messages_check_post).
CREATE FUNCTION pod.forbidden_word_check(entry text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pod AS $$
DECLARE
  re text;
BEGIN
  IF length(entry) >= 2 AND left(entry, 1) = '/' AND right(entry, 1) = '/' THEN
    re := substr(entry, 2, length(entry) - 2);
    IF re = '' THEN
      RAISE EXCEPTION 'forbidden word % is an empty regular expression', entry USING ERRCODE = '22023';
    END IF;
    IF re ~ '\\[1-9]' OR re ~ '\(\?[^:]' OR re ~ '^\*\*\*' THEN
      RAISE EXCEPTION 'forbidden word % uses a regular expression feature that is not allowed', entry USING ERRCODE = '22023',
        HINT = 'Back-references, look-arounds, embedded options and *** directors are refused.';
    END IF;
    IF EXISTS (SELECT 1 FROM regexp_matches(re, '\{([0-9]+)(,([0-9]*))?\}', 'g') b
                WHERE b[1]::numeric > 100 OR coalesce(nullif(b[3], ''), '0')::numeric > 100) THEN
      RAISE EXCEPTION 'forbidden word % has a repetition bound above 100', entry USING ERRCODE = '22023';
    END IF;
    BEGIN
      PERFORM '' ~* re;
    EXCEPTION WHEN invalid_regular_expression OR program_limit_exceeded THEN
      RAISE EXCEPTION 'forbidden word % is not a valid regular expression: %', entry, SQLERRM USING ERRCODE = '22023';
    END;
  ELSIF btrim(pod.chat_fold(entry)) = '' THEN
    RAISE EXCEPTION 'forbidden word % has no letter or digit', entry USING ERRCODE = '22023',
      HINT = 'Write a regular expression between slashes, /like this/, to match punctuation.';
  END IF;
  RETURN entry;
END $$;

-- The first forbidden entry a text contains, or NULL. Words match whole words of the
-- folded text (so case, width and composed/decomposed forms do not matter); regular
-- expressions match the NFKC text case-insensitively (ICU). In C
-- (extension/src/chat_rules.c): the same functions as pod.chat_fold, but the text is
-- folded once and the list's words once per list (every post of a room checks the same
-- list), which was most of a post's option check in plpgsql.
CREATE FUNCTION pod.forbidden_word_in(t text, words jsonb) RETURNS text
  AS 'MODULE_PATHNAME', 'forbidden_word_in' LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- Guests: anonymous viewers and remote pods' users ---------------------------------------

CREATE TABLE pod.chat_guests (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('anonymous', 'remote')),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
  ip inet,
  affiliation pod.affiliation NOT NULL DEFAULT 'member' CHECK (affiliation IN ('member', 'outcast')),
  is_muted boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  CHECK ((kind = 'anonymous') = (expires_at IS NOT NULL)),
  CHECK (kind = 'anonymous' OR name ~ '^[^@\s]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?$')
);
CREATE UNIQUE INDEX chat_guests_remote_key ON pod.chat_guests (room_id, name) WHERE kind = 'remote';
CREATE INDEX chat_guests_room_idx ON pod.chat_guests (room_id, kind);
CREATE INDEX chat_guests_ip_idx ON pod.chat_guests (ip, created_at) WHERE kind = 'anonymous';
COMMENT ON TABLE pod.chat_guests IS 'Who posts in a room without a local account: anonymous viewers (nickname, token until expires_at) and remote users (user@pod).';
SELECT pg_catalog.pg_extension_config_dump('pod.chat_guests', '');

-- What a message carries beyond 0.3: its guest author (author_ref: nickname or
-- user@pod, kept after the guest row goes), whether forbidden words hid it, and until
-- when the moderation delay holds it back from everyone but its author and moderators.
ALTER TABLE pod.messages
  ADD COLUMN guest_id uuid REFERENCES pod.chat_guests ON DELETE SET NULL,
  ADD COLUMN author_ref text CHECK (length(author_ref) <= 300),
  ADD COLUMN hidden boolean NOT NULL DEFAULT false,
  ADD COLUMN held_until timestamptz;
CREATE INDEX messages_guest_idx ON pod.messages (guest_id) WHERE guest_id IS NOT NULL;

-- Events carry an audience: NULL everyone who reads the room; 'staff' only moderators
-- and the author (a held or hidden message); 'others' everyone but them (the release
-- of a held message, which staff already saw). author is the message's author (user or
-- guest id) for those two.
ALTER TABLE pod.room_events
  ADD COLUMN audience text CHECK (audience IN ('staff', 'others')),
  ADD COLUMN author uuid;

-- Held messages waiting for their release event (pod.livechat_release()).
CREATE TABLE pod.chat_held (
  message_id bigint PRIMARY KEY REFERENCES pod.messages ON DELETE CASCADE,
  room_id uuid NOT NULL,
  author uuid,
  until timestamptz NOT NULL
);
CREATE INDEX chat_held_until_idx ON pod.chat_held (until);
COMMENT ON TABLE pod.chat_held IS 'Messages under a moderation delay whose release event is still to be written.';
SELECT pg_catalog.pg_extension_config_dump('pod.chat_held', '');

-- Slow mode: when each poster last posted in a room (written only while slow mode is on).
CREATE TABLE pod.chat_slow (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  poster uuid NOT NULL,
  last_at timestamptz NOT NULL,
  PRIMARY KEY (room_id, poster)
);
COMMENT ON TABLE pod.chat_slow IS 'Last post time per room and poster (user or guest id), for slow mode.';

CREATE TABLE pod.room_moderation_log (
  id bigserial PRIMARY KEY,
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  actor_id uuid,
  actor text NOT NULL,
  action text NOT NULL CHECK (action IN ('delete', 'mute', 'unmute', 'ban', 'unban', 'options')),
  target text,
  message_id bigint,
  detail jsonb NOT NULL DEFAULT '{}',
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_moderation_log_room_idx ON pod.room_moderation_log (room_id, id);
COMMENT ON TABLE pod.room_moderation_log IS 'Every moderator action per room: deletes of others'' messages, mutes, bans, option changes.';
SELECT pg_catalog.pg_extension_config_dump('pod.room_moderation_log', '');
SELECT pg_catalog.pg_extension_config_dump('pod.room_moderation_log_id_seq', '');

-- Who is calling: the guest of an anonymous token (claims {"guest": id}) while the
-- guest row lives; a token past its guest's expiry is refused (PT401).
CREATE FUNCTION pod.current_guest_id() RETURNS uuid
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  g uuid := nullif(pod.jwt_claims() ->> 'guest', '')::uuid;
  live uuid;
BEGIN
  IF g IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT id INTO live FROM pod.chat_guests WHERE id = g AND kind = 'anonymous' AND expires_at > now();
  IF live IS NULL THEN
    RAISE EXCEPTION 'anonymous chat token has expired' USING ERRCODE = 'PT401', HINT = 'Join the chat again.';
  END IF;
  RETURN live;
EXCEPTION WHEN invalid_text_representation THEN
  RAISE EXCEPTION 'malformed guest claims' USING ERRCODE = 'PT401';
END $$;

-- The caller's role in a room: owner, admin, member, outcast for local users (any
-- signed-in user is a member of a video or channel room until banned), anonymous or
-- remote for guests (outcast once banned), NULL for nobody.
-- In C (extension/src/chat_rules.c): the room and membership (or, for a guest, after
-- pod.current_guest_id(), which refuses an expired token, the guest row) read by key
-- under the caller's snapshot; it was plpgsql, set up again in every transaction, and
-- every post (its RETURNING meets the read policy) and every history page asks it.
CREATE FUNCTION pod.room_role(room uuid) RETURNS text
  AS 'MODULE_PATHNAME', 'room_role' LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  SET enable_seqscan = off;

CREATE OR REPLACE FUNCTION pod.room_affiliation(room uuid) RETURNS pod.affiliation
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT CASE WHEN r IN ('anonymous', 'remote') THEN 'member' ELSE r END::pod.affiliation
            FROM pod.room_role(room) r);

-- Per-role permissions. rooms.data.permissions overrides the defaults per role, e.g.
-- {"member": {"post": false}}; the owner may do everything, an outcast nothing.
CREATE FUNCTION pod.room_permission_defaults() RETURNS jsonb
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN '{"admin":     {"post": true, "edit": true,  "delete_others": true,  "mute": true,  "ban": true,  "change_options": true},
           "member":    {"post": true, "edit": true,  "delete_others": false, "mute": false, "ban": false, "change_options": false},
           "remote":    {"post": true, "edit": true,  "delete_others": false, "mute": false, "ban": false, "change_options": false},
           "anonymous": {"post": true, "edit": false, "delete_others": false, "mute": false, "ban": false, "change_options": false}}'::jsonb;

CREATE FUNCTION pod.role_may(room_data jsonb, role text, action text) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN CASE WHEN role = 'owner' THEN true
              WHEN role IS NULL OR role = 'outcast' THEN false
              ELSE coalesce((room_data #> ARRAY['permissions', role, action])::boolean,
                            (pod.room_permission_defaults() #> ARRAY[role, action])::boolean, false) END;

CREATE FUNCTION pod.room_may(room uuid, action text) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT pod.role_may(r.data, pod.room_role(room), action) FROM pod.rooms r WHERE r.id = room), false);
COMMENT ON FUNCTION pod.room_may(uuid, text) IS 'May the caller do action (post, edit, delete_others, mute, ban, change_options) in room?';

CREATE OR REPLACE FUNCTION pod.can_moderate_room(room uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.room_role(room) IN ('owner', 'admin'), false);

-- rooms.data: roles (a list) and permissions, checked so a typo does not silently grant.
CREATE FUNCTION pod.rooms_check_data() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  role text;
  action text;
BEGIN
  IF NEW.data ? 'roles' AND jsonb_typeof(NEW.data -> 'roles') <> 'array' THEN
    RAISE EXCEPTION 'room data: roles must be an array' USING ERRCODE = '22023';
  END IF;
  IF NEW.data ? 'permissions' THEN
    IF jsonb_typeof(NEW.data -> 'permissions') <> 'object' THEN
      RAISE EXCEPTION 'room data: permissions must be an object of roles' USING ERRCODE = '22023';
    END IF;
    FOR role IN SELECT jsonb_object_keys(NEW.data -> 'permissions') LOOP
      IF NOT pod.room_permission_defaults() ? role THEN
        RAISE EXCEPTION 'room data: unknown role "%" in permissions', role USING ERRCODE = '22023',
          HINT = 'Roles: admin, member, remote, anonymous (the owner may do everything, an outcast nothing).';
      END IF;
      IF jsonb_typeof(NEW.data #> ARRAY['permissions', role]) <> 'object' THEN
        RAISE EXCEPTION 'room data: permissions of % must be an object of actions', role USING ERRCODE = '22023';
      END IF;
      FOR action IN SELECT jsonb_object_keys(NEW.data #> ARRAY['permissions', role]) LOOP
        IF NOT pod.room_permission_defaults() -> 'admin' ? action THEN
          RAISE EXCEPTION 'room data: unknown action "%" for %', action, role USING ERRCODE = '22023',
            HINT = 'Actions: post, edit, delete_others, mute, ban, change_options.';
        END IF;
        IF jsonb_typeof(NEW.data #> ARRAY['permissions', role, action]) <> 'boolean' THEN
          RAISE EXCEPTION 'room data: permission %.% must be true or false', role, action USING ERRCODE = '22023';
        END IF;
      END LOOP;
    END LOOP;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER rooms_check_data BEFORE INSERT OR UPDATE OF data ON pod.rooms
  FOR EACH ROW EXECUTE FUNCTION pod.rooms_check_data();

-- The options in force in a room: its channel's, or none.
CREATE FUNCTION pod.room_chat_options(room uuid) RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT o.options FROM pod.livechat_rooms l JOIN pod.channel_chat_options o USING (channel_id)
                    WHERE l.room_id = room), '{}'::jsonb);

-- Events: one place numbers them (under the room's row lock) and notifies the streams.
-- In C (extension/src/room_events.c), one statement: the room's event_seq advanced
-- (the row lock makes the sequence gapless and in commit order), the event written,
-- the followers asked for; then NOTIFY pgpod_room_events only when a gateway listens
-- to the room (pod.room_event_notify) and, when other pods follow the room
-- (sql/76_livechat_federation.sql), pod.chat_push_event. NULL when the room itself is
-- being deleted. Its look-ups are by key (SET enable_seqscan = off: with few rooms, the
-- generic plan would otherwise scan pod.rooms, whose every event leaves a row version).
CREATE FUNCTION pod.room_event_append(room uuid, event_kind pod.room_event_kind, message bigint,
                                      event_audience text DEFAULT NULL, event_author uuid DEFAULT NULL) RETURNS bigint
  AS 'MODULE_PATHNAME', 'room_event_append' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod
  SET enable_seqscan = off;

-- A moderator action: a log row and a room event (a message of type 'event' written by
-- the pod, hidden from all but staff when it concerns a message others never saw).
CREATE FUNCTION pod.chat_log_moderation(room uuid, log_action text, log_target text, message bigint,
                                        log_detail jsonb DEFAULT '{}', staff_only boolean DEFAULT false) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  uid uuid := pod.current_user_id();
  who text := coalesce(uid::text, 'pod');
BEGIN
  INSERT INTO pod.room_moderation_log (room_id, actor_id, actor, action, target, message_id, detail)
    VALUES (room, uid, who, log_action, log_target, message, log_detail);
  INSERT INTO pod.messages (room_id, author_id, guest_id, author_ref, type, hidden, data)
    VALUES (room, uid, NULL, who, 'event', staff_only,
            jsonb_build_object('moderation', jsonb_build_object('action', log_action, 'target', log_target,
                                                                  'message_id', message) || log_detail));
END $$;

-- Posting: every rule in one BEFORE INSERT trigger. guest_id, author_ref, hidden and
-- held_until are granted to no API role, so a row arriving with guest_id set comes from
-- the pod's own code (a remote post, rules applied) and one with author_ref set and no
-- guest is the pod's own (a room event, a remote room's mirror). In C
-- (extension/src/chat_rules.c), in this order: who posts (a signed-in user as the
-- message's author, or a guest: an anonymous viewer's live token for this room, or a
-- remote user through pod.chat_remote_post); only the pod writes other types than
-- 'message'; text at most 5000 characters; not another pod's room; the poster's role
-- (not a member, banned), mute and the role's post permission; then, except for the
-- owner and admins, the channel's options: mute_anonymous / anonymous_allowed,
-- forbidden_words (refused, or hidden with forbidden_words_action 'hide'), slow mode
-- (PT429 with Retry-After) and the moderation delay (held_until).
CREATE FUNCTION pod.messages_check_post() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_check_post' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
DROP TRIGGER messages_check_author ON pod.messages;
DROP FUNCTION pod.messages_check_author();
CREATE TRIGGER messages_check_post BEFORE INSERT ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_check_post();

-- Room events, with their audience; a moderator's delete of someone else's message is
-- logged (and, when others never saw the message, stays among staff).
CREATE OR REPLACE FUNCTION pod.messages_record_event() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  msg pod.messages := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  kind pod.room_event_kind;
  audience text;
  held boolean := false;
  uid uuid;
BEGIN
  kind := CASE WHEN TG_OP = 'INSERT' THEN 'new'
               WHEN TG_OP = 'DELETE' OR NEW.status = 'deleted' THEN 'deleted'
               ELSE 'edited' END;
  IF msg.held_until IS NOT NULL THEN
    IF TG_OP = 'INSERT' THEN
      held := msg.held_until > now();
      IF held AND NOT msg.hidden THEN
        INSERT INTO pod.chat_held (message_id, room_id, author, until)
          VALUES (msg.id, msg.room_id, coalesce(msg.author_id, msg.guest_id), msg.held_until);
        PERFORM pg_notify('pgpod_chat_held', msg.held_until::text);
      END IF;
    ELSIF kind = 'deleted' THEN
      DELETE FROM pod.chat_held WHERE message_id = msg.id RETURNING true INTO held;
    ELSE
      held := EXISTS (SELECT 1 FROM pod.chat_held WHERE message_id = msg.id);
    END IF;
  END IF;
  IF held OR msg.hidden THEN
    audience := 'staff';
  END IF;
  PERFORM pod.room_event_append(msg.room_id, kind, msg.id, audience,
                                CASE WHEN audience IS NOT NULL THEN coalesce(msg.author_id, msg.guest_id) END);
  IF kind = 'deleted' AND TG_OP = 'UPDATE' AND msg.type = 'message' THEN
    uid := pod.current_user_id();
    IF uid IS DISTINCT FROM msg.author_id OR msg.guest_id IS NOT NULL THEN
      PERFORM pod.chat_log_moderation(msg.room_id, 'delete', coalesce(msg.author_id::text, msg.author_ref), msg.id,
                                      '{}', audience IS NOT NULL);
    END IF;
  END IF;
  RETURN NULL;
END $$;
-- A new message everyone may see at once (neither held nor hidden: most of them) has
-- its 'new' event written by a C trigger (extension/src/room_events.c: what
-- pod.room_event_append does, without two plpgsql functions' per-transaction setup);
-- the rest, edits and deletes by pod.messages_record_event.
DROP TRIGGER messages_record_event ON pod.messages;
CREATE TRIGGER messages_record_event AFTER UPDATE OR DELETE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_record_event();
CREATE TRIGGER messages_record_event_held AFTER INSERT ON pod.messages
  FOR EACH ROW WHEN (NEW.held_until IS NOT NULL OR NEW.hidden) EXECUTE FUNCTION pod.messages_record_event();
CREATE FUNCTION pod.messages_event_new() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_event_new' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod
  SET enable_seqscan = off;
CREATE TRIGGER messages_record_event_new AFTER INSERT ON pod.messages
  FOR EACH ROW WHEN (NEW.held_until IS NULL AND NOT NEW.hidden) EXECUTE FUNCTION pod.messages_event_new();

-- Held messages whose delay is over get their event for everyone else. Run by the
-- livechat daemon (workers/livechat); returns how many it released.
CREATE FUNCTION pod.livechat_release() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  h pod.chat_held;
  n integer := 0;
BEGIN
  FOR h IN DELETE FROM pod.chat_held WHERE until <= now() RETURNING * LOOP
    PERFORM pod.room_event_append(h.room_id, 'new', h.message_id, 'others', h.author);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
COMMENT ON FUNCTION pod.livechat_release() IS 'Writes the event that shows held messages to everyone once their moderation delay is over.';

-- Seconds until the next held message is due (NULL: none), for the daemon's timer.
-- (greatest() skips a NULL: with nothing held it answered 0, and the daemon ticked every
-- 5 ms while idle.)
CREATE FUNCTION pod.livechat_next_release() RETURNS double precision
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT CASE WHEN min(until) IS NOT NULL THEN greatest(0, extract(epoch FROM min(until) - now())) END::double precision
            FROM pod.chat_held);

-- The livechat daemon's tick (workers/livechat): releases due held messages, runs
-- pod.livechat_cleanup() every livechat.cleanup_interval (and drops anonymous guests a
-- day past their expiry and slow-mode marks a day old), and answers how many seconds
-- until it wants to run again.
CREATE TABLE pod.livechat_state (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  last_cleanup timestamptz
);
COMMENT ON TABLE pod.livechat_state IS 'When the livechat daemon last ran the cleanup.';

CREATE FUNCTION pod.livechat_tick() RETURNS double precision
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  every interval := (pod.setting('livechat.cleanup_interval') #>> '{}')::interval;
  poll double precision := extract(epoch FROM (pod.setting('livechat.release_interval') #>> '{}')::interval);
  last timestamptz;
BEGIN
  PERFORM pod.livechat_release();
  SELECT last_cleanup INTO last FROM pod.livechat_state FOR UPDATE;
  IF last IS NULL OR last <= now() - every THEN
    PERFORM pod.livechat_cleanup();
    DELETE FROM pod.chat_guests WHERE kind = 'anonymous' AND expires_at < now() - interval '1 day';
    DELETE FROM pod.chat_slow WHERE last_at < now() - interval '1 day';
    INSERT INTO pod.livechat_state (id, last_cleanup) VALUES (true, now())
      ON CONFLICT (id) DO UPDATE SET last_cleanup = EXCLUDED.last_cleanup;
    last := now();
  END IF;
  RETURN least(poll, coalesce(pod.livechat_next_release(), poll),
               greatest(0, extract(epoch FROM last + every - now())));
END $$;
COMMENT ON FUNCTION pod.livechat_tick() IS 'One round of the livechat daemon; returns the seconds until the next.';

-- Mutes and bans through room_members (direct UPDATE by a moderator) need their permission
-- and are logged; the owner cannot be banned and only the owner acts on an admin.
CREATE FUNCTION pod.room_members_moderate() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  was_muted boolean := CASE WHEN TG_OP = 'UPDATE' THEN coalesce((OLD.data ->> 'is_muted')::boolean, false) ELSE false END;
  now_muted boolean := coalesce((NEW.data ->> 'is_muted')::boolean, false);
  was_out boolean := TG_OP = 'UPDATE' AND OLD.affiliation = 'outcast';
  now_out boolean := NEW.affiliation = 'outcast';
  uid uuid := pod.current_user_id();
  target_role text;
BEGIN
  IF uid IS NULL THEN
    IF was_muted <> now_muted OR was_out <> now_out THEN
      PERFORM pod.chat_log_moderation(NEW.room_id, CASE WHEN was_out <> now_out THEN
                                        CASE WHEN now_out THEN 'ban' ELSE 'unban' END
                                      ELSE CASE WHEN now_muted THEN 'mute' ELSE 'unmute' END END, NEW.user_id::text, NULL);
    END IF;
    RETURN NEW;     -- the superuser or a maintenance job
  END IF;
  target_role := CASE WHEN (SELECT created_by FROM pod.rooms WHERE id = NEW.room_id) = NEW.user_id THEN 'owner'
                      WHEN TG_OP = 'UPDATE' THEN OLD.affiliation::text END;
  IF was_muted <> now_muted OR was_out <> now_out THEN
    IF target_role = 'owner' THEN
      RAISE EXCEPTION 'the room''s owner cannot be muted or banned' USING ERRCODE = '42501';
    END IF;
    IF target_role = 'admin' AND pod.room_role(NEW.room_id) <> 'owner' THEN
      RAISE EXCEPTION 'only the room''s owner may mute or ban an admin' USING ERRCODE = '42501';
    END IF;
  END IF;
  IF was_muted <> now_muted THEN
    IF NOT pod.room_may(NEW.room_id, 'mute') THEN
      RAISE EXCEPTION 'your role may not mute in room %', NEW.room_id USING ERRCODE = '42501';
    END IF;
    PERFORM pod.chat_log_moderation(NEW.room_id, CASE WHEN now_muted THEN 'mute' ELSE 'unmute' END, NEW.user_id::text, NULL);
  END IF;
  IF was_out <> now_out THEN
    IF NOT pod.room_may(NEW.room_id, 'ban') THEN
      RAISE EXCEPTION 'your role may not ban in room %', NEW.room_id USING ERRCODE = '42501';
    END IF;
    PERFORM pod.chat_log_moderation(NEW.room_id, CASE WHEN now_out THEN 'ban' ELSE 'unban' END, NEW.user_id::text, NULL);
  END IF;
  IF (TG_OP = 'INSERT' OR OLD.affiliation <> NEW.affiliation) AND NEW.affiliation = 'admin'
     AND pod.room_role(NEW.room_id) <> 'owner' THEN
    RAISE EXCEPTION 'only the room''s owner makes admins' USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER room_members_moderate BEFORE INSERT OR UPDATE ON pod.room_members
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_moderate();

-- Mute/unmute/ban/unban anyone of a room: a local user (uuid), a guest (uuid) or a
-- remote user (user@pod). Returns the log entry's id.
CREATE FUNCTION pod.chat_moderate(room uuid, target text, action text) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  tid uuid;
  g pod.chat_guests;
  perm text := CASE WHEN action IN ('mute', 'unmute') THEN 'mute' WHEN action IN ('ban', 'unban') THEN 'ban' END;
BEGIN
  IF perm IS NULL THEN
    RAISE EXCEPTION 'unknown moderation action "%"', action USING ERRCODE = '22023', HINT = 'mute, unmute, ban, unban.';
  END IF;
  IF NOT pod.room_may(room, perm) AND NOT (pod.current_user_id() IS NULL AND pod.is_admin()) THEN
    RAISE EXCEPTION 'your role may not % in room %', perm, room USING ERRCODE = '42501';
  END IF;
  IF target ~ '^[0-9a-fA-F-]{36}$' THEN
    tid := target::uuid;
  END IF;
  SELECT * INTO g FROM pod.chat_guests WHERE room_id = room AND (id = tid OR (kind = 'remote' AND name = target));
  IF g.id IS NOT NULL THEN
    UPDATE pod.chat_guests SET is_muted = CASE action WHEN 'mute' THEN true WHEN 'unmute' THEN false ELSE is_muted END,
                               affiliation = CASE action WHEN 'ban' THEN 'outcast' WHEN 'unban' THEN 'member' ELSE affiliation END
     WHERE id = g.id;
    PERFORM pod.chat_log_moderation(room, action, g.name, NULL, jsonb_build_object('guest', g.id));
    RETURN (SELECT max(id) FROM pod.room_moderation_log WHERE room_id = room);
  END IF;
  IF tid IS NULL OR NOT EXISTS (SELECT 1 FROM pod.users WHERE id = tid) THEN
    RAISE EXCEPTION 'no user or guest % in room %', target, room USING ERRCODE = 'P0002';
  END IF;
  INSERT INTO pod.room_members AS m (room_id, user_id, affiliation, data)
    VALUES (room, tid, CASE WHEN action = 'ban' THEN 'outcast' ELSE 'member' END::pod.affiliation,
            jsonb_build_object('is_muted', action = 'mute'))
    ON CONFLICT (room_id, user_id) DO UPDATE
      SET affiliation = CASE action WHEN 'ban' THEN 'outcast' WHEN 'unban' THEN 'member' ELSE m.affiliation END,
          data = CASE WHEN action IN ('mute', 'unmute') THEN m.data || jsonb_build_object('is_muted', action = 'mute')
                      ELSE m.data END;
  RETURN (SELECT max(id) FROM pod.room_moderation_log WHERE room_id = room);
END $$;

-- Option changes are moderator actions too: logged in every room of the channel. A room
-- admin with change_options changes them through api.chat_set_options.
CREATE FUNCTION pod.channel_chat_options_log() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  room uuid;
BEGIN
  FOR room IN SELECT room_id FROM pod.livechat_rooms WHERE channel_id = NEW.channel_id LOOP
    PERFORM pod.chat_log_moderation(room, 'options', NULL, NULL, jsonb_build_object('options', NEW.options));
  END LOOP;
  RETURN NULL;
END $$;
CREATE TRIGGER channel_chat_options_log AFTER INSERT OR UPDATE ON pod.channel_chat_options
  FOR EACH ROW EXECUTE FUNCTION pod.channel_chat_options_log();

-- A remote pod's user posts in a local room (the inbox applies a delivered chat post with
-- it): the same rules as for everyone, with the remote user as a guest of the room.
CREATE FUNCTION pod.chat_remote_post(room uuid, author text, message_data jsonb) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  gid uuid;
  id bigint;
BEGIN
  IF author IS NULL OR author !~ '^[^@\s]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?$' THEN
    RAISE EXCEPTION 'a remote author is user@pod, not %', coalesce(quote_literal(author), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pod.rooms WHERE rooms.id = room AND type IN ('video', 'channel')) THEN
    RAISE EXCEPTION 'no video or channel room %', room USING ERRCODE = 'P0002';
  END IF;
  INSERT INTO pod.chat_guests (room_id, kind, name) VALUES (room, 'remote', author)
    ON CONFLICT (room_id, name) WHERE kind = 'remote' DO UPDATE SET name = EXCLUDED.name
    RETURNING chat_guests.id INTO gid;
  PERFORM set_config('pod.chat_enforce', 'on', true);
  INSERT INTO pod.messages (room_id, author_id, guest_id, data) VALUES (room, NULL, gid, coalesce(message_data, '{}'))
    RETURNING messages.id INTO id;
  PERFORM set_config('pod.chat_enforce', '', true);
  RETURN id;
END $$;

-- What a viewer learns on joining: terms, the rules in force, their role.
CREATE FUNCTION pod.chat_room_info(room uuid) RETURNS jsonb
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  r pod.rooms;
  role text := pod.room_role(room);
  opts jsonb := pod.room_chat_options(room);
BEGIN
  SELECT * INTO r FROM pod.rooms WHERE id = room;
  IF r.id IS NULL OR role IS NULL OR role = 'outcast' THEN
    RAISE EXCEPTION 'no room % of yours', room USING ERRCODE = 'P0002';
  END IF;
  RETURN jsonb_build_object(
    'room', r.id, 'name', r.name, 'type', r.type,
    'video', (SELECT video_uuid FROM pod.livechat_rooms WHERE room_id = room),
    'terms', opts -> 'terms',
    'bot', opts -> 'bot',
    'slow_mode_seconds', coalesce(opts -> 'slow_mode_seconds', '0'),
    'moderation_delay_seconds', coalesce(opts -> 'moderation_delay_seconds', '0'),
    'anonymous_allowed', coalesce(opts -> 'anonymous_allowed', 'true'),
    'mute_anonymous', coalesce(opts -> 'mute_anonymous', 'false'),
    'role', role,
    'permissions', (SELECT jsonb_object_agg(a, pod.role_may(r.data, role, a))
                      FROM jsonb_object_keys(pod.room_permission_defaults() -> 'admin') a));
END $$;

-- Anonymous viewers -------------------------------------------------------------------

-- A nickname: 2-32 characters, letters, digits, spaces and . _ - only, no '@' (that is
-- a remote user), and not a member's display name, the channel's, or another live
-- guest's, compared folded (case, width, accents' composition, punctuation).
CREATE FUNCTION pod.chat_join_anonymous(video uuid, nickname text, client_ip inet DEFAULT NULL,
                                        OUT token text, OUT room uuid, OUT guest_id uuid, OUT expires_at timestamptz,
                                        OUT info jsonb)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  nick text := btrim(normalize(coalesce(nickname, ''), NFKC));
  folded text;
  opts jsonb;
  v pod.videos;
  limit_n integer := (pod.setting('livechat.anonymous_joins_per_hour'))::integer;
  recent integer;
  g pod.chat_guests;
  oldest timestamptz;
BEGIN
  -- a private video's chat is its owner's business: no guests (as no anonymous viewers)
  SELECT * INTO v FROM pod.videos WHERE uuid = video AND origin IS NULL AND state = 'published' AND privacy <> 'private';
  IF v.uuid IS NULL THEN
    RAISE EXCEPTION 'no published local video %', video USING ERRCODE = 'P0002';
  END IF;
  IF length(nick) NOT BETWEEN 2 AND 32 THEN
    RAISE EXCEPTION 'a nickname has 2 to 32 characters' USING ERRCODE = '22023';
  END IF;
  IF nick !~ '^[[:alnum:] ._-]+$' COLLATE "und-x-icu" OR nick ~ '  ' THEN
    RAISE EXCEPTION 'a nickname has letters, digits, single spaces and . _ - only' USING ERRCODE = '22023';
  END IF;
  SELECT o.options INTO opts FROM pod.channel_chat_options o WHERE o.channel_id = v.channel_id;
  IF NOT coalesce((opts ->> 'anonymous_allowed')::boolean, true) THEN
    RAISE EXCEPTION 'this chat does not admit anonymous viewers' USING ERRCODE = '42501', HINT = 'Sign in to chat.';
  END IF;
  room := pod.livechat_room(video);
  PERFORM 1 FROM pod.rooms WHERE id = room FOR UPDATE;   -- one nickname check at a time per room
  -- per address, over the last hour
  SELECT count(*), min(created_at) INTO recent, oldest FROM pod.chat_guests
   WHERE kind = 'anonymous' AND ip IS NOT DISTINCT FROM client_ip AND created_at > now() - interval '1 hour';
  IF recent >= limit_n THEN
    RAISE EXCEPTION 'too many anonymous joins from your address' USING ERRCODE = 'PT429',
      DETAIL = 'Retry-After: ' || greatest(1, ceil(extract(epoch FROM oldest + interval '1 hour' - now())))::integer,
      HINT = format('At most %s per hour.', limit_n);
  END IF;
  folded := pod.chat_fold(nick);
  IF EXISTS (SELECT 1 FROM pod.channels c WHERE c.id = v.channel_id
              AND folded IN (pod.chat_fold(c.display_name), pod.chat_fold(c.name)))
     OR EXISTS (SELECT 1 FROM pod.users u
                 WHERE (u.id IN (SELECT user_id FROM pod.room_members WHERE room_id = room)
                        OR u.id = (SELECT created_by FROM pod.rooms WHERE id = room))
                   AND folded IN (pod.chat_fold(coalesce(u.settings ->> 'display_name', '')),
                                  pod.chat_fold(split_part(u.email, '@', 1))))
     OR EXISTS (SELECT 1 FROM pod.chat_guests o WHERE o.room_id = room
                 AND (o.kind = 'remote' OR o.expires_at > now())
                 AND pod.chat_fold(split_part(o.name, '@', 1)) = folded) THEN
    RAISE EXCEPTION 'the nickname "%" is taken in this chat', nick USING ERRCODE = '23505',
      HINT = 'Choose another nickname.';
  END IF;
  INSERT INTO pod.chat_guests (room_id, kind, name, ip, expires_at)
    VALUES (room, 'anonymous', nick, client_ip, now() + (pod.setting('livechat.anonymous_lifetime') #>> '{}')::interval)
    RETURNING * INTO g;
  guest_id := g.id;
  expires_at := g.expires_at;
  token := pod.jwt_sign(jsonb_build_object('role', 'pgpod_anon', 'guest', g.id, 'room', room, 'nick', nick,
                                           'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM g.expires_at))::bigint));
  info := jsonb_build_object('room', room, 'video', video, 'terms', opts -> 'terms', 'nickname', nick,
                             'role', 'anonymous',
                             'may_post', NOT coalesce((opts ->> 'mute_anonymous')::boolean, false),
                             'slow_mode_seconds', coalesce(opts -> 'slow_mode_seconds', '0'),
                             'moderation_delay_seconds', coalesce(opts -> 'moderation_delay_seconds', '0'));
END $$;

-- History -----------------------------------------------------------------------------

-- One page of a room's messages by id, newest first: before an id, after an id, or the
-- latest; at most 200. Reads the (room_id, id) index, so its cost does not depend on
-- the room's size. Row-level security applies (the caller's view of the room).
CREATE FUNCTION pod.room_history_check(room uuid, before bigint, after bigint, page_size integer) RETURNS void
  LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF room IS NULL THEN
    RAISE EXCEPTION 'room is required' USING ERRCODE = '22023';
  END IF;
  IF before IS NOT NULL AND after IS NOT NULL THEN
    RAISE EXCEPTION 'give before or after, not both' USING ERRCODE = '22023';
  END IF;
  IF page_size IS NULL OR page_size NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'page_size is from 1 to 200' USING ERRCODE = '22023';
  END IF;
END $$;

-- Row-level security and grants ---------------------------------------------------------

-- A message others may see: neither hidden nor held; its author and moderators see it
-- at once.
CREATE FUNCTION pod.message_visible(room uuid, author uuid, guest uuid, is_hidden boolean, held timestamptz) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (NOT is_hidden AND (held IS NULL OR held <= now()))
      OR author = pod.current_user_id() OR guest = pod.current_guest_id()
      OR pod.can_moderate_room(room);

CREATE FUNCTION pod.event_visible(room uuid, event_audience text, event_author uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN event_audience IS NULL
      OR (event_audience = 'staff') = coalesce(event_author = pod.current_user_id() OR event_author = pod.current_guest_id()
                                                OR pod.can_moderate_room(room), false);

-- The policies below ask these rules per row, but the room part once per room and
-- snapshot (extension/src/chat_rules.c): pod.room_view(room) is 0 when the caller may
-- not read the room, 1 for a reader, 2 for a moderator (pod.room_role decides, as for
-- pod.can_read_room and pod.can_moderate_room); pod.guest_view(room) is
-- pod.guest_reads(room). The caller's ids are init plans ((SELECT ...): once per
-- query). A page of history thus reads its index range with per-page permission work.
CREATE FUNCTION pod.room_view(room uuid) RETURNS integer
  AS 'MODULE_PATHNAME', 'room_view' LANGUAGE C STABLE;
COMMENT ON FUNCTION pod.room_view(uuid) IS 'The caller''s view of a room for row-level security: 0 none, 1 reader, 2 moderator (pod.room_role, asked once per room and snapshot).';
CREATE FUNCTION pod.guest_view(room uuid) RETURNS boolean
  AS 'MODULE_PATHNAME', 'guest_view' LANGUAGE C STABLE;
COMMENT ON FUNCTION pod.guest_view(uuid) IS 'pod.guest_reads(room), asked once per room and snapshot, for row-level security.';

-- An anonymous reader holds a chat token for one room; without one, reading rooms is
-- refused outright (42501: HTTP 401), as it was before guests existed.
CREATE FUNCTION pod.guest_reads(room uuid) RETURNS boolean
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  g uuid := pod.current_guest_id();
BEGIN
  IF g IS NULL THEN
    RAISE EXCEPTION 'anonymous readers of a chat need a chat token' USING ERRCODE = '42501',
      HINT = 'Sign in, or POST /rpc/chat_join_anonymous for a video''s chat.';
  END IF;
  RETURN EXISTS (SELECT 1 FROM pod.chat_guests WHERE id = g AND room_id = room AND affiliation <> 'outcast');
END $$;

CREATE POLICY rooms_guest ON pod.rooms FOR SELECT TO pgpod_anon USING (pod.guest_reads(id));
DROP POLICY members_moderate ON pod.room_members;
CREATE POLICY members_moderate ON pod.room_members TO pgpod_user
  USING (pod.room_may(room_id, 'mute') OR pod.room_may(room_id, 'ban'))
  WITH CHECK (pod.room_may(room_id, 'mute') OR pod.room_may(room_id, 'ban'));
DROP POLICY messages_read ON pod.messages;
-- (pod.can_read_room(room_id) AND pod.message_visible(room_id, author_id, guest_id, hidden, held_until))
CREATE POLICY messages_read ON pod.messages FOR SELECT TO pgpod_user
  USING (CASE pod.room_view(room_id)
           WHEN 2 THEN true
           WHEN 1 THEN (NOT hidden AND (held_until IS NULL OR held_until <= now()))
                       OR author_id = (SELECT pod.current_user_id()) OR guest_id = (SELECT pod.current_guest_id())
           ELSE false END);
-- (pod.guest_reads(room_id) AND pod.message_visible(room_id, author_id, guest_id, hidden, held_until))
CREATE POLICY messages_read_guest ON pod.messages FOR SELECT TO pgpod_anon
  USING (pod.guest_view(room_id)
         AND ((NOT hidden AND (held_until IS NULL OR held_until <= now()))
              OR author_id = (SELECT pod.current_user_id()) OR guest_id = (SELECT pod.current_guest_id())
              OR pod.room_view(room_id) = 2));
DROP POLICY messages_post ON pod.messages;
CREATE POLICY messages_post ON pod.messages FOR INSERT TO pgpod_user
  WITH CHECK (author_id = (SELECT pod.current_user_id()));
CREATE POLICY messages_post_guest ON pod.messages FOR INSERT TO pgpod_anon
  WITH CHECK (author_id IS NULL AND guest_id = (SELECT pod.current_guest_id()));
DROP POLICY messages_edit_own ON pod.messages;
CREATE POLICY messages_edit_own ON pod.messages FOR UPDATE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) AND pod.room_may(room_id, 'edit'))
  WITH CHECK (author_id = (SELECT pod.current_user_id()));
DROP POLICY messages_delete ON pod.messages;
CREATE POLICY messages_delete ON pod.messages FOR DELETE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) OR pod.room_may(room_id, 'delete_others'));
DROP POLICY events_read ON pod.room_events;
-- (pod.can_read_room(room_id) AND pod.event_visible(room_id, audience, author))
CREATE POLICY events_read ON pod.room_events FOR SELECT TO pgpod_user
  USING (pod.room_view(room_id) > 0
         AND (audience IS NULL
              OR (audience = 'staff') = coalesce(author = (SELECT pod.current_user_id()) OR author = (SELECT pod.current_guest_id())
                                                 OR pod.room_view(room_id) = 2, false)));
-- (pod.guest_reads(room_id) AND pod.event_visible(room_id, audience, author))
CREATE POLICY events_read_guest ON pod.room_events FOR SELECT TO pgpod_anon
  USING (pod.guest_view(room_id)
         AND (audience IS NULL
              OR (audience = 'staff') = coalesce(author = (SELECT pod.current_user_id()) OR author = (SELECT pod.current_guest_id())
                                                 OR pod.room_view(room_id) = 2, false)));

ALTER TABLE pod.chat_guests ENABLE ROW LEVEL SECURITY;
CREATE POLICY guests_visible ON pod.chat_guests FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY guests_visible_guest ON pod.chat_guests FOR SELECT TO pgpod_anon USING (pod.guest_reads(room_id));
CREATE POLICY guests_admin ON pod.chat_guests TO pgpod_admin USING (true) WITH CHECK (true);
ALTER TABLE pod.room_moderation_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY moderation_log_staff ON pod.room_moderation_log FOR SELECT TO pgpod_user USING (pod.can_moderate_room(room_id));
CREATE POLICY moderation_log_admin ON pod.room_moderation_log FOR SELECT TO pgpod_admin USING (true);


GRANT SELECT (id, name, type, data, created_by, created_at) ON pod.rooms TO pgpod_anon;
GRANT SELECT ON pod.messages, pod.room_events TO pgpod_anon;
GRANT INSERT (room_id, data) ON pod.messages TO pgpod_anon;
GRANT USAGE ON SEQUENCE pod.messages_id_seq TO pgpod_anon;
GRANT SELECT (id, room_id, kind, name, affiliation, is_muted, created_at, expires_at) ON pod.chat_guests TO pgpod_user, pgpod_anon;
GRANT SELECT ON pod.chat_guests, pod.room_moderation_log TO pgpod_admin;
GRANT SELECT ON pod.room_moderation_log TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.current_guest_id() TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

-- api ---------------------------------------------------------------------------------

CREATE OR REPLACE VIEW api.messages WITH (security_invoker = true) AS
  SELECT id, room_id, author_id, data, sent_at, type, status, edited_at, deleted_at,
         guest_id, author_ref, hidden, held_until FROM pod.messages;
GRANT SELECT, INSERT ON api.messages TO pgpod_anon;
GRANT SELECT ON api.rooms, api.room_events TO pgpod_anon;

CREATE VIEW api.chat_guests WITH (security_invoker = true) AS
  SELECT id, room_id, kind, name, affiliation, is_muted, created_at, expires_at FROM pod.chat_guests;
COMMENT ON VIEW api.chat_guests IS 'Anonymous viewers and remote users of the caller''s rooms.';
GRANT SELECT ON api.chat_guests TO pgpod_user, pgpod_anon;

CREATE VIEW api.room_moderation_log WITH (security_invoker = true) AS
  SELECT id, room_id, actor_id, actor, action, target, message_id, detail, at FROM pod.room_moderation_log;
COMMENT ON VIEW api.room_moderation_log IS 'Moderator actions of the rooms the caller moderates.';
GRANT SELECT ON api.room_moderation_log TO pgpod_user;

CREATE FUNCTION api.chat_join_anonymous(video uuid, nickname text) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT row_to_json(j) FROM pod.chat_join_anonymous(video, nickname,
        nullif(current_setting('request.client_ip', true), '')::inet) j;
  END;
COMMENT ON FUNCTION api.chat_join_anonymous(uuid, text) IS 'An anonymous viewer''s chat token for a video''s room: {token, room, guest_id, expires_at, info}; 429 past the per-address limit.';
GRANT EXECUTE ON FUNCTION api.chat_join_anonymous(uuid, text) TO pgpod_anon, pgpod_user;

CREATE FUNCTION api.chat_room_info(room uuid) RETURNS json
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.chat_room_info(room)::json;
COMMENT ON FUNCTION api.chat_room_info(uuid) IS 'A room''s terms, rules in force and the caller''s role and permissions.';
GRANT EXECUTE ON FUNCTION api.chat_room_info(uuid) TO pgpod_anon, pgpod_user;

-- The first event of a room's stream (GET /rooms/<id>/events): the room's info with
-- its terms; NULL when the caller cannot read the room.
CREATE FUNCTION api.chat_stream_info(room uuid) RETURNS json
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF pod.current_user_id() IS NULL AND NOT pod.is_admin() THEN
    PERFORM pod.guest_reads(room);   -- refuses an anonymous reader without a chat token
  END IF;
  RETURN CASE WHEN pod.room_role(room) <> 'outcast' THEN pod.chat_room_info(room)::json END;
END $$;
COMMENT ON FUNCTION api.chat_stream_info(uuid) IS 'The info event a room''s stream starts with (terms, rules, your role).';

CREATE FUNCTION api.chat_moderate(room uuid, target text, action text) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN json_build_object('log_id', pod.chat_moderate(room, target, action));
COMMENT ON FUNCTION api.chat_moderate(uuid, text, text) IS 'mute, unmute, ban or unban a user, guest or user@pod in a room.';
GRANT EXECUTE ON FUNCTION api.chat_moderate(uuid, text, text) TO pgpod_user;

CREATE FUNCTION api.chat_set_options(room uuid, options jsonb) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  ch bigint := (SELECT channel_id FROM pod.livechat_rooms WHERE room_id = room);
BEGIN
  IF ch IS NULL THEN
    RAISE EXCEPTION 'room % is not a video''s or channel''s chat', room USING ERRCODE = 'P0002';
  END IF;
  IF NOT pod.room_may(room, 'change_options') THEN
    RAISE EXCEPTION 'your role may not change the options of room %', room USING ERRCODE = '42501';
  END IF;
  INSERT INTO pod.channel_chat_options (channel_id, options) VALUES (ch, options)
    ON CONFLICT (channel_id) DO UPDATE SET options = EXCLUDED.options;
  RETURN pod.chat_room_info(room)::json;
END $$;
COMMENT ON FUNCTION api.chat_set_options(uuid, jsonb) IS 'Changes the chat options of a room''s channel (permission change_options).';
GRANT EXECUTE ON FUNCTION api.chat_set_options(uuid, jsonb) TO pgpod_user;

CREATE FUNCTION api.room_history(room uuid, before bigint DEFAULT NULL, after bigint DEFAULT NULL, page_size integer DEFAULT 50)
  RETURNS SETOF api.messages
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.room_history_check(room, before, after, page_size);
  IF after IS NULL THEN
    RETURN QUERY SELECT m.* FROM api.messages m
       WHERE m.room_id = room AND m.id < coalesce(before, 9223372036854775807)
       ORDER BY m.id DESC LIMIT page_size;
  ELSE
    RETURN QUERY SELECT a.* FROM (SELECT m.* FROM api.messages m WHERE m.room_id = room AND m.id > after
                                   ORDER BY m.id LIMIT page_size) a
       ORDER BY a.id DESC;
  END IF;
END $$;
COMMENT ON FUNCTION api.room_history(uuid, bigint, bigint, integer) IS 'A page of a room''s messages, newest first: before or after a message id, or the latest; limit 1-200.';
GRANT EXECUTE ON FUNCTION api.room_history(uuid, bigint, bigint, integer) TO pgpod_user, pgpod_anon;

-- Function privileges (as 99_privileges does for the whole schema on a fresh install):
-- nothing for PUBLIC; the helpers invoker policies, triggers and functions call.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_may(uuid, text), pod.message_visible(uuid, uuid, uuid, boolean, timestamptz),
    pod.event_visible(uuid, text, uuid), pod.room_history_check(uuid, bigint, bigint, integer),
    pod.forbidden_word_check(text), pod.chat_fold(text), pod.room_permission_defaults(), pod.room_role(uuid),
    pod.current_guest_id(), pod.guest_reads(uuid), pod.room_view(uuid), pod.guest_view(uuid)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION api.chat_join_anonymous(uuid, text), api.chat_room_info(uuid), api.chat_stream_info(uuid),
    api.room_history(uuid, bigint, bigint, integer) TO pgpod_anon, pgpod_user;
GRANT EXECUTE ON FUNCTION api.chat_moderate(uuid, text, text), api.chat_set_options(uuid, jsonb) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.livechat_tick() TO pgpod_worker;

-- Streams through the gateway's event hub (gateway/hub.c) read each room event once
-- per gateway worker, bypassing row-level security, and filter it in memory for each
-- subscriber by the rule of pod.event_visible: the shared read carries the event's
-- audience and author, and each subscriber's view of the room (pod.room_stream_viewer)
-- is asked under its own role when it subscribes and again whenever its rights change
-- (NOTIFY pgpod_room_members '<room>:<user or guest>').
DROP FUNCTION pod.room_events_feed(uuid, bigint, integer);
CREATE FUNCTION pod.room_events_feed(room uuid, after bigint, max_rows integer DEFAULT 500)
  RETURNS TABLE (seq bigint, kind text, message text, audience text, author uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT e.seq, e.kind::text,
           coalesce(to_jsonb(m), jsonb_build_object('id', e.message_id, 'room_id', e.room_id, 'status', 'deleted'))::text,
           e.audience, e.author
      FROM pod.room_events e
      LEFT JOIN pod.messages m ON m.id = e.message_id
     WHERE e.room_id = room_events_feed.room AND e.seq > room_events_feed.after
     ORDER BY e.seq
     LIMIT least(greatest(room_events_feed.max_rows, 0), 5000);
  END;
COMMENT ON FUNCTION pod.room_events_feed(uuid, bigint, integer) IS 'A room''s events after a seq with their audience and author, for the gateway''s shared stream read (its login role only), which filters them per subscriber as pod.event_visible does.';
REVOKE ALL ON FUNCTION pod.room_events_feed(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_events_feed(uuid, bigint, integer) TO pgpod_authenticator;

-- The caller's view of a room's events, as the hub applies it: 'all' (pgpod_admin: the
-- events_admin policy), 'staff' (a moderator: everyone's events and staff-only ones,
-- not the 'others' release of a held message), else the ids (user, guest) whose own
-- staff-only events the caller sees ('' for none). Runs under the caller's role.
CREATE FUNCTION pod.room_stream_viewer(room uuid) RETURNS text
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN CASE WHEN pg_has_role('pgpod_admin', 'USAGE') THEN 'all'
              WHEN pod.can_moderate_room(room) THEN 'staff'
              ELSE concat_ws(' ', pod.current_user_id(), pod.current_guest_id()) END;
COMMENT ON FUNCTION pod.room_stream_viewer(uuid) IS 'Which events of a room the caller sees on the stream (all, staff, or its own ids), for the gateway''s hub.';
REVOKE ALL ON FUNCTION pod.room_stream_viewer(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_stream_viewer(uuid) TO pgpod_anon, pgpod_user, pgpod_admin;

-- Where a room's stream starts: its last event's seq, for a caller who may read the
-- room (NULL otherwise). Not through row-level security: per-viewer policies turn
-- max(seq) into a scan of every event of the room; the hub filters what it sends.
CREATE FUNCTION pod.room_stream_position(room uuid) RETURNS bigint
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN CASE WHEN pod.is_admin() OR pod.room_role(room) <> 'outcast'
              THEN (SELECT coalesce(max(e.seq), 0) FROM pod.room_events e WHERE e.room_id = room) END;
COMMENT ON FUNCTION pod.room_stream_position(uuid) IS 'The last event seq of a room the caller may read (NULL otherwise): where its stream starts.';
REVOKE ALL ON FUNCTION pod.room_stream_position(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_stream_position(uuid) TO pgpod_anon, pgpod_user, pgpod_admin;

-- A guest banned or dropped: its streams are asked again ('<room>:<guest id>').
CREATE FUNCTION pod.chat_guests_notify() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pg_notify('pgpod_room_members', OLD.room_id || ':' || OLD.id);
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION pod.chat_guests_notify() FROM PUBLIC;
CREATE TRIGGER chat_guests_notify AFTER UPDATE OF affiliation OR DELETE ON pod.chat_guests
  FOR EACH ROW EXECUTE FUNCTION pod.chat_guests_notify();

-- Stream wake-ups only for rooms a gateway listens to (extension/src/room_events.c):
-- the gateway's hub holds a room's stream lock while it has subscribers of the room;
-- an event notifies only when that lock is held, else its transaction keeps the lock
-- in ROW EXCLUSIVE mode until it ends (a gateway starting to listen waits for it, then
-- reads the room). A notifying commit serializes on a database-wide lock: a room
-- nobody streams does not pay it.
CREATE FUNCTION pod.room_event_notify(room uuid, seq bigint) RETURNS boolean
  AS 'MODULE_PATHNAME', 'room_event_notify' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.room_event_notify(uuid, bigint) IS 'NOTIFY pgpod_room_events ''<room>:<seq>'' when a gateway listens to the room (pod.room_events_sleep); true when it notified.';
CREATE FUNCTION pod.room_events_sleep(room uuid) RETURNS void
  AS 'MODULE_PATHNAME', 'room_events_sleep' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.room_events_sleep(uuid) IS 'This session (a gateway''s listener) listens to a room: every event of it notifies until pod.room_events_wake. Waits for events that notified nobody to be committed.';
CREATE FUNCTION pod.room_events_wake(room uuid) RETURNS boolean
  AS 'MODULE_PATHNAME', 'room_events_wake' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.room_events_wake(uuid) IS 'Gives back what pod.room_events_sleep took; false if this session held nothing.';
REVOKE ALL ON FUNCTION pod.room_event_notify(uuid, bigint), pod.room_events_sleep(uuid), pod.room_events_wake(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_events_sleep(uuid), pod.room_events_wake(uuid) TO pgpod_authenticator;
