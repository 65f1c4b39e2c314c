-- 40_chat: rooms, members and messages. Deleting a message keeps a tombstone except
-- in secret rooms, and editing keeps earlier versions (triggers in messages.c).
-- Every change to a message is also a room event with a gapless, commit-ordered
-- per-room sequence (the room row is locked while numbering), which the gateway
-- streams over SSE with Last-Event-ID resume.

CREATE TYPE pod.room_type AS ENUM ('dialog', 'group', 'video', 'channel', 'secret');
CREATE TYPE pod.affiliation AS ENUM ('owner', 'admin', 'member', 'outcast');
CREATE TYPE pod.message_type AS ENUM ('message', 'event', 'join', 'leave');
CREATE TYPE pod.message_status AS ENUM ('sent', 'edited', 'deleted');

CREATE TABLE pod.rooms (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  type pod.room_type NOT NULL,
  data jsonb NOT NULL DEFAULT '{"roles": [], "permissions": {}}' CHECK (jsonb_typeof(data) = 'object'),
  created_by uuid REFERENCES pod.users ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  event_seq bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pod.rooms IS 'Chat rooms; data holds roles and permissions; created_by is the owner. event_seq numbers the room''s events.';

CREATE TABLE pod.room_members (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  affiliation pod.affiliation NOT NULL DEFAULT 'member',
  data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
  joined_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_idx ON pod.room_members (user_id);
COMMENT ON TABLE pod.room_members IS 'Who is in which room, with an affiliation and per-member data such as is_muted.';

CREATE TABLE pod.messages (
  id bigserial PRIMARY KEY,
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  author_id uuid REFERENCES pod.users ON DELETE SET NULL,
  data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
  sent_at timestamptz NOT NULL DEFAULT now(),
  type pod.message_type NOT NULL DEFAULT 'message',
  status pod.message_status NOT NULL DEFAULT 'sent',
  edited_at timestamptz,
  deleted_at timestamptz,
  CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
CREATE INDEX messages_room_idx ON pod.messages (room_id, id);
COMMENT ON TABLE pod.messages IS 'Messages; DELETE leaves a tombstone (status deleted, content removed) except in secret rooms.';

CREATE TABLE pod.message_versions (
  message_id bigint NOT NULL REFERENCES pod.messages ON DELETE CASCADE,
  version integer NOT NULL,
  data jsonb NOT NULL,
  edited_at timestamptz NOT NULL,
  PRIMARY KEY (message_id, version)
);
COMMENT ON TABLE pod.message_versions IS 'Earlier contents of edited messages; purged when the message is deleted.';

CREATE TYPE pod.room_event_kind AS ENUM ('new', 'edited', 'deleted');
CREATE TABLE pod.room_events (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  seq bigint NOT NULL,
  kind pod.room_event_kind NOT NULL,
  message_id bigint NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room_id, seq)
);
COMMENT ON TABLE pod.room_events IS 'Per-room, gapless, commit-ordered change log of messages (for streams). Not dumped: a restore replays each message once as a new event, numbered after the room''s last sequence.';

SELECT pg_catalog.pg_extension_config_dump('pod.rooms', '');
SELECT pg_catalog.pg_extension_config_dump('pod.room_members', '');
SELECT pg_catalog.pg_extension_config_dump('pod.messages', '');
SELECT pg_catalog.pg_extension_config_dump('pod.messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.message_versions', '');

-- Membership look-ups for policies, as the owner so they do not recurse into RLS.
-- The creator of a room is its owner (rooms.created_by) without a membership row:
-- no trigger writes rows behind an INSERT, so a dump restores as it was taken.
CREATE FUNCTION pod.room_affiliation(room uuid) RETURNS pod.affiliation
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT CASE WHEN r.created_by = me.id THEN 'owner'::pod.affiliation ELSE m.affiliation END
            FROM pod.rooms r CROSS JOIN (SELECT pod.current_user_id() AS id) me
            LEFT JOIN pod.room_members m ON m.room_id = r.id AND m.user_id = me.id
           WHERE r.id = room AND me.id IS NOT NULL);

CREATE FUNCTION pod.can_read_room(room uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.room_affiliation(room) <> 'outcast', false);

CREATE FUNCTION pod.can_moderate_room(room uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.room_affiliation(room) IN ('owner', 'admin'), false);

-- Posting: a clear error for a non-member, an outcast or a muted member. The RLS
-- policy says the same; this says why.
CREATE FUNCTION pod.messages_check_author() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  m pod.room_members;
BEGIN
  IF pod.is_admin() AND pod.current_user_id() IS NULL THEN
    RETURN NEW;     -- the superuser or a maintenance job writes as it likes
  END IF;
  IF NEW.author_id IS DISTINCT FROM pod.current_user_id() THEN
    RAISE EXCEPTION 'a message''s author must be the calling user' USING ERRCODE = '42501';
  END IF;
  SELECT * INTO m FROM pod.room_members WHERE room_id = NEW.room_id AND user_id = NEW.author_id;
  IF coalesce(pod.room_affiliation(NEW.room_id) = 'outcast', true) THEN
    RAISE EXCEPTION 'you are not a member of room %', NEW.room_id USING ERRCODE = '42501';
  END IF;
  IF coalesce((m.data ->> 'is_muted')::boolean, false) THEN
    RAISE EXCEPTION 'you are muted in room %', NEW.room_id USING ERRCODE = '42501',
      HINT = 'A room owner or admin can unmute you.';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER messages_check_author BEFORE INSERT ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_check_author();

CREATE FUNCTION pod.messages_soft_delete() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_soft_delete' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
CREATE TRIGGER messages_soft_delete BEFORE DELETE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_soft_delete();

CREATE FUNCTION pod.messages_track_edit() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_track_edit' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
CREATE TRIGGER messages_track_edit BEFORE UPDATE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_track_edit();

-- Room events: number under the room's row lock so sequence order is commit order.
CREATE FUNCTION pod.messages_record_event() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  msg pod.messages := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  kind pod.room_event_kind;
  next_seq bigint;
BEGIN
  kind := CASE WHEN TG_OP = 'INSERT' THEN 'new'
               WHEN TG_OP = 'DELETE' OR NEW.status = 'deleted' THEN 'deleted'
               ELSE 'edited' END;
  UPDATE pod.rooms SET event_seq = event_seq + 1 WHERE id = msg.room_id RETURNING event_seq INTO next_seq;
  IF next_seq IS NULL THEN
    RETURN NULL;    -- the room itself is being deleted
  END IF;
  INSERT INTO pod.room_events (room_id, seq, kind, message_id) VALUES (msg.room_id, next_seq, kind, msg.id);
  PERFORM pg_notify('pgpod_room_events', msg.room_id || ':' || next_seq);
  RETURN NULL;
END $$;
CREATE TRIGGER messages_record_event AFTER INSERT OR UPDATE OR DELETE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_record_event();

-- Row-level security ------------------------------------------------------------------

ALTER TABLE pod.rooms ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.room_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.message_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.room_events ENABLE ROW LEVEL SECURITY;

-- created_by is checked directly too: INSERT ... RETURNING tests the new row before
-- it is visible to pod.room_affiliation.
CREATE POLICY rooms_member ON pod.rooms FOR SELECT TO pgpod_user
  USING (created_by = (SELECT pod.current_user_id()) OR pod.can_read_room(id));
CREATE POLICY rooms_create ON pod.rooms FOR INSERT TO pgpod_user
  WITH CHECK (created_by = (SELECT pod.current_user_id()));
CREATE POLICY rooms_moderate ON pod.rooms FOR UPDATE TO pgpod_user
  USING (pod.can_moderate_room(id)) WITH CHECK (pod.can_moderate_room(id));
CREATE POLICY rooms_owner_delete ON pod.rooms FOR DELETE TO pgpod_user
  USING (pod.room_affiliation(id) = 'owner');
CREATE POLICY rooms_admin ON pod.rooms TO pgpod_admin USING (true) WITH CHECK (true);

CREATE POLICY members_visible ON pod.room_members FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY members_moderate ON pod.room_members TO pgpod_user
  USING (pod.can_moderate_room(room_id)) WITH CHECK (pod.can_moderate_room(room_id));
CREATE POLICY members_leave ON pod.room_members FOR DELETE TO pgpod_user
  USING (user_id = (SELECT pod.current_user_id()));
CREATE POLICY members_admin ON pod.room_members TO pgpod_admin USING (true) WITH CHECK (true);

CREATE POLICY messages_read ON pod.messages FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY messages_post ON pod.messages FOR INSERT TO pgpod_user
  WITH CHECK (author_id = (SELECT pod.current_user_id()) AND pod.can_read_room(room_id));
CREATE POLICY messages_edit_own ON pod.messages FOR UPDATE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) AND pod.can_read_room(room_id))
  WITH CHECK (author_id = (SELECT pod.current_user_id()));
CREATE POLICY messages_delete ON pod.messages FOR DELETE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) OR pod.can_moderate_room(room_id));
CREATE POLICY messages_admin ON pod.messages TO pgpod_admin USING (true) WITH CHECK (true);

CREATE POLICY versions_read ON pod.message_versions FOR SELECT TO pgpod_user
  USING (EXISTS (SELECT 1 FROM pod.messages m WHERE m.id = message_id));
CREATE POLICY events_read ON pod.room_events FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY versions_admin ON pod.message_versions FOR SELECT TO pgpod_admin USING (true);
CREATE POLICY events_admin ON pod.room_events FOR SELECT TO pgpod_admin USING (true);

ALTER TABLE pod.rooms ALTER COLUMN created_by SET DEFAULT pod.current_user_id();
ALTER TABLE pod.messages ALTER COLUMN author_id SET DEFAULT pod.current_user_id();

GRANT SELECT (id, name, type, data, created_by, created_at) ON pod.rooms TO pgpod_user;
GRANT INSERT (name, type, data, created_by), UPDATE (name, data), DELETE ON pod.rooms TO pgpod_user;
GRANT SELECT, INSERT, DELETE ON pod.room_members TO pgpod_user;
GRANT UPDATE (affiliation, data) ON pod.room_members TO pgpod_user;
GRANT SELECT, DELETE ON pod.messages TO pgpod_user;
GRANT INSERT (room_id, author_id, data, type) ON pod.messages TO pgpod_user;
GRANT UPDATE (data) ON pod.messages TO pgpod_user;
GRANT USAGE ON SEQUENCE pod.messages_id_seq TO pgpod_user, pgpod_admin;
GRANT SELECT ON pod.message_versions, pod.room_events TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.rooms, pod.room_members, pod.messages TO pgpod_admin;
GRANT SELECT ON pod.message_versions, pod.room_events TO pgpod_admin;

-- Streams: the gateway reads each room event once per worker process and fans it
-- out to the subscribers the database allows (api.rooms under each subscriber's
-- role, when it subscribes and when its membership changes). The read bypasses
-- row-level security, so only the gateway's login role may call it.
CREATE FUNCTION pod.room_events_feed(room uuid, after bigint, max_rows integer DEFAULT 500)
  RETURNS TABLE (seq bigint, kind text, message text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT e.seq, e.kind::text,
           coalesce(to_jsonb(m), jsonb_build_object('id', e.message_id, 'room_id', e.room_id, 'status', 'deleted'))::text
      FROM pod.room_events e
      LEFT JOIN pod.messages m ON m.id = e.message_id
     WHERE e.room_id = room_events_feed.room AND e.seq > room_events_feed.after
     ORDER BY e.seq
     LIMIT least(greatest(room_events_feed.max_rows, 0), 5000);
  END;
COMMENT ON FUNCTION pod.room_events_feed(uuid, bigint, integer) IS 'A room''s events after a seq, for the gateway''s shared stream read (its login role only).';
GRANT EXECUTE ON FUNCTION pod.room_events_feed(uuid, bigint, integer) TO pgpod_authenticator;

-- A change of who may read a room is announced to the streams ('<room>:<user>';
-- no user: everyone; room '*': every room, when a user's session ends), which ask
-- the database again for those subscribers.
CREATE FUNCTION pod.room_members_notify() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF TG_TABLE_NAME = 'rooms' THEN
    PERFORM pg_notify('pgpod_room_members', OLD.id || ':');
  ELSIF TG_TABLE_NAME = 'sessions' THEN
    PERFORM pg_notify('pgpod_room_members', '*:' || OLD.user_id);
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('pgpod_room_members', OLD.room_id || ':' || OLD.user_id);
  ELSE
    PERFORM pg_notify('pgpod_room_members', NEW.room_id || ':' || NEW.user_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER room_members_notify AFTER INSERT OR UPDATE OR DELETE ON pod.room_members
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_notify();
CREATE TRIGGER rooms_notify_members AFTER DELETE ON pod.rooms
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_notify();
CREATE TRIGGER sessions_notify_members AFTER UPDATE OF revoked_at OR DELETE ON pod.sessions
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_notify();

-- api -------------------------------------------------------------------------------

CREATE VIEW api.rooms WITH (security_invoker = true) AS
  SELECT id, name, type, data, created_by, created_at FROM pod.rooms;
COMMENT ON VIEW api.rooms IS 'Rooms the caller belongs to (not as outcast).';
CREATE VIEW api.room_members WITH (security_invoker = true) AS
  SELECT room_id, user_id, affiliation, data, joined_at FROM pod.room_members;
COMMENT ON VIEW api.room_members IS 'Members of the caller''s rooms; owners and admins manage them.';
CREATE VIEW api.messages WITH (security_invoker = true) AS
  SELECT id, room_id, author_id, data, sent_at, type, status, edited_at, deleted_at FROM pod.messages;
COMMENT ON VIEW api.messages IS 'Messages of the caller''s rooms; DELETE leaves a tombstone except in secret rooms.';
CREATE VIEW api.message_versions WITH (security_invoker = true) AS
  SELECT message_id, version, data, edited_at FROM pod.message_versions;
COMMENT ON VIEW api.message_versions IS 'Earlier versions of edited messages.';
CREATE VIEW api.room_events WITH (security_invoker = true) AS
  SELECT e.room_id, e.seq, e.kind::text AS kind,
         coalesce(to_jsonb(m), jsonb_build_object('id', e.message_id, 'room_id', e.room_id, 'status', 'deleted')) AS message
    FROM pod.room_events e
    LEFT JOIN pod.messages m ON m.id = e.message_id;
COMMENT ON VIEW api.room_events IS 'Message changes per room in commit order (seq); the stream GET /rooms/<id>/events reads it.';

GRANT SELECT, INSERT, UPDATE, DELETE ON api.rooms, api.room_members, api.messages TO pgpod_user;
GRANT SELECT ON api.message_versions, api.room_events TO pgpod_user;
