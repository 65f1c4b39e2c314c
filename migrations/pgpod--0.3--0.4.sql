-- pgpod 0.3 -> 0.4. Every change to sql/*.sql after 0.3 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.4'" to load this file. \quit

-- gateway defects (issue 10): a blob is recorded before its bytes are stored, so
-- only the collector removes blobs; file names refuse backslash, DEL, "." and "..".
UPDATE pod.files SET filename_visible = regexp_replace(filename_visible, '[\\\x7f]', '_', 'g')
 WHERE filename_visible ~ '[\\\x7f]';
UPDATE pod.files SET filename_visible = replace(filename_visible, '.', '_')
 WHERE filename_visible IN ('.', '..');
ALTER TABLE pod.files DROP CONSTRAINT files_filename_visible_check,
  ADD CONSTRAINT files_filename_visible_check
    CHECK (length(filename_visible) BETWEEN 1 AND 255 AND filename_visible !~ '[/\\\x01-\x1f\x7f]'
           AND filename_visible NOT IN ('.', '..'));

CREATE FUNCTION pod.blob_stored(sha256 bytea, size bigint) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
#variable_conflict use_column
BEGIN
  IF pod.current_user_id() IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF blob_stored.sha256 IS NULL OR length(blob_stored.sha256) <> 32
     OR blob_stored.size IS NULL OR blob_stored.size < 0 THEN
    RAISE EXCEPTION 'a blob needs a 32-byte sha256 and a size' USING ERRCODE = '22023';
  END IF;
  -- an orphaned blob being stored again is not the collector's for a while more
  INSERT INTO pod.blobs AS b (sha256, size, orphaned_at) VALUES (blob_stored.sha256, blob_stored.size, now())
    ON CONFLICT (sha256) DO UPDATE SET orphaned_at = now() WHERE b.orphaned_at IS NOT NULL;
  IF (SELECT b.size FROM pod.blobs b WHERE b.sha256 = blob_stored.sha256) <> blob_stored.size THEN
    RAISE EXCEPTION 'blob % is already stored with another size', encode(blob_stored.sha256, 'hex') USING ERRCODE = '22023';
  END IF;
END $$;
COMMENT ON FUNCTION pod.blob_stored(bytea, bigint) IS 'Records a blob the gateway is about to store (orphaned until a file uses it).';
REVOKE ALL ON FUNCTION pod.blob_stored(bytea, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.blob_stored(bytea, bigint) TO pgpod_user;

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
REVOKE ALL ON FUNCTION pod.room_events_feed(uuid, bigint, integer), pod.room_members_notify() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_events_feed(uuid, bigint, integer) TO pgpod_authenticator;
-- end of gateway defects (issue 10)
