-- 78_video_privacy: who may watch a local video, decided here (row-level security and
-- the functions the gateway calls), never in the gateway. A video's privacy, as
-- PeerTube's: public (listed in api.videos, announced to friends, its files readable
-- by anyone once published), unlisted (listed nowhere and not federated, but anyone
-- who has its uuid may watch it once published: api.video, its events, its files),
-- private (its owner and admins only: no listing, no events, no file readable by
-- others, no torrent tracked or seeded, not federated).
-- Files: api.files lists the caller's own and granted files only (anonymous callers:
-- nothing); a video's files are fetched one at a time by id (pod.file_download).
-- Also (the end of the file): resumable uploads whose length comes later (tus's
-- creation-defer-length), and the gateway's periodic sweep of expired uploads.

-- Two functions' parsed bodies use the row type of pod.videos, which blocks ALTER
-- TABLE: they are dropped and made again, unchanged but with quoted bodies (which pin
-- nothing, so the next column needs no such dance).
DROP FUNCTION pod.video_object(pod.videos);
DROP FUNCTION pod.video_entry(pod.videos);
ALTER TABLE pod.videos ADD COLUMN privacy text NOT NULL DEFAULT 'public'
  CONSTRAINT videos_privacy_check CHECK (privacy IN ('public', 'unlisted', 'private'));
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at)
$$;
CREATE FUNCTION pod.video_entry(v pod.videos) RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT pod.video_entry(v.uuid, v.name, v.description,
           coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           v.created_at, v.updated_at, extract(epoch FROM v.duration)::double precision, v.magnet, v.thumbnail,
           (SELECT url FROM pod.identity), pod.video_files_media(v.uuid, (SELECT url FROM pod.identity)))
$$;
REVOKE EXECUTE ON FUNCTION pod.video_object(pod.videos), pod.video_entry(pod.videos) FROM PUBLIC;
COMMENT ON COLUMN pod.videos.privacy IS 'public: listed and federated; unlisted: watchable by whoever has its uuid, listed nowhere; private: its owner''s and admins'' only.';

-- Listed for everyone (api.videos, this pod's pubsub nodes, friends): published and public.
CREATE FUNCTION pod.video_listed(state pod.video_state, privacy text) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN state = 'published' AND privacy = 'public';

-- May the caller watch the video (its page, its events)? A published video that is not
-- private: anyone; otherwise its owner and admins.
CREATE FUNCTION pod.video_watchable(video uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.videos v WHERE v.uuid = video
                   AND ((v.state = 'published' AND v.privacy <> 'private')
                        OR (v.channel_id IS NOT NULL AND pod.owns_channel(v.channel_id)) OR pod.is_admin()));
COMMENT ON FUNCTION pod.video_watchable(uuid) IS 'May the caller watch this video: published and not private, or its owner''s, or an admin.';

ALTER POLICY videos_public ON pod.videos USING (pod.video_listed(state, privacy));
ALTER POLICY video_events_read ON pod.video_events USING (pod.video_watchable(video_uuid));
GRANT INSERT (privacy), UPDATE (privacy) ON pod.videos TO pgpod_user;

-- A file readable without a token: one of a published video that is not private
-- (an unlisted video's file ids are known only to those who have its uuid).
CREATE OR REPLACE FUNCTION pod.file_is_public(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.file_id = file AND v.state = 'published' AND v.privacy <> 'private')
      OR EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.playlist_file_id = file AND v.state = 'published' AND v.privacy <> 'private')
      OR EXISTS (SELECT 1 FROM pod.videos v WHERE v.state = 'published' AND v.privacy <> 'private'
                    AND (v.thumbnail_file_id = file OR v.preview_file_id = file OR v.hls_file_id = file));

-- The caller's own files and those granted to it: what api.files lists.
CREATE FUNCTION pod.file_granted(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file AND f.owner_id = pod.current_user_id())
      OR EXISTS (SELECT 1 FROM pod.file_permissions p WHERE p.file_id = file AND p.user_id = pod.current_user_id()
                   AND coalesce((p.data ->> 'read')::boolean, false));

CREATE OR REPLACE FUNCTION pod.can_read_file(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.file_granted(file) OR pod.file_is_public(file);

-- Listing files shows nobody another user's files, public or not (nor their owner
-- ids): anonymous callers list nothing, users their own and granted ones.
ALTER POLICY files_readable ON pod.files USING (pod.file_granted(id));
DROP POLICY files_public ON pod.files;
REVOKE SELECT ON pod.files, api.files FROM pgpod_anon;

-- One file as GET /files/<id> serves it: its blob, type and name, when the caller may
-- read it (own, granted, a watchable video's; admins any). No row otherwise.
CREATE FUNCTION pod.file_download(file uuid)
  RETURNS TABLE (sha256 text, size bigint, mime_type text, filename_visible text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT encode(f.sha256, 'hex'), f.size, f.mime_type, f.filename_visible FROM pod.files f
   WHERE f.id = file AND (pod.can_read_file(f.id) OR pod.is_admin())
$$;
COMMENT ON FUNCTION pod.file_download(uuid) IS 'A file the caller may read, as GET /files/<id> serves it (no row otherwise).';

-- Live progress: a change of privacy is a state event too, and its NOTIFY (as every
-- state event's) says ':state' after the seq, so the gateway asks its subscribers'
-- rights again (a video made private stops streaming to others).
CREATE OR REPLACE FUNCTION pod.video_event(v pod.videos, event text) RETURNS text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT json_build_object('event', event, 'uuid', v.uuid, 'state', v.state, 'progress', v.progress,
                           'failure_reason', v.failure_reason, 'privacy', v.privacy,
                           'hls_url', pod.file_url(v.hls_file_id), 'thumbnail_url', pod.file_url(v.thumbnail_file_id))::text
$$;

CREATE OR REPLACE FUNCTION pod.videos_notify_events() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  next_seq bigint;
  kind text := 'state';
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state AND NEW.privacy IS NOT DISTINCT FROM OLD.privacy THEN
    kind := 'progress';
  END IF;
  SELECT coalesce(max(e.seq), 0) + 1 INTO next_seq FROM pod.video_events e WHERE e.video_uuid = NEW.uuid;
  INSERT INTO pod.video_events (video_uuid, seq, event, data)
    VALUES (NEW.uuid, next_seq, kind, pod.video_event(NEW, kind)::json);
  PERFORM pg_notify('pod_video_events', NEW.uuid || ':' || next_seq || CASE WHEN kind = 'state' THEN ':state' ELSE '' END);
  RETURN NULL;
END $$;
DROP TRIGGER videos_notify_events ON pod.videos;
CREATE TRIGGER videos_notify_events AFTER UPDATE OF state, progress, failure_reason, privacy ON pod.videos
  FOR EACH ROW WHEN (NEW.origin IS NULL AND (NEW.state IS DISTINCT FROM OLD.state OR NEW.progress IS DISTINCT FROM OLD.progress
                     OR NEW.failure_reason IS DISTINCT FROM OLD.failure_reason OR NEW.privacy IS DISTINCT FROM OLD.privacy))
  EXECUTE FUNCTION pod.videos_notify_events();

-- Federation: only listed videos are items of this pod's nodes; a video that stops
-- being listed (unpublished, made unlisted or private, deleted) is retracted.
CREATE OR REPLACE FUNCTION pod.videos_pubsub() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me text := (SELECT url FROM pod.identity);
  v pod.videos;
  entry text;
  moved record;
BEGIN
  IF me IS NULL OR pod.restoring() THEN  -- a restore brings the node's items itself
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    FOR v IN SELECT n.* FROM new_videos n WHERE n.origin IS NULL AND pod.video_listed(n.state, n.privacy)
              ORDER BY n.created_at LOOP
      entry := pod.video_entry(v);
      PERFORM pod.pubsub_publish(me, 'urn:pgpod:videos', v.uuid::text, entry, me, v.updated_at, v.version);
      PERFORM pod.pubsub_publish(me, pod.channel_node(v.channel_id), v.uuid::text, entry, me, v.updated_at, v.version);
    END LOOP;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    FOR v IN SELECT n.* FROM new_videos n JOIN old_videos o USING (uuid)
              WHERE n.origin IS NULL AND NOT pod.video_listed(n.state, n.privacy) AND pod.video_listed(o.state, o.privacy) LOOP
      PERFORM pod.pubsub_retract(me, 'urn:pgpod:videos', v.uuid::text, v.updated_at, v.version);
    END LOOP;
    -- Left its channel (no longer listed, or moved to another one): out of the old
    -- channel's node.
    FOR moved IN SELECT n.uuid, n.updated_at, n.version, o.channel_id AS old_channel FROM new_videos n JOIN old_videos o USING (uuid)
              WHERE n.origin IS NULL AND pod.video_listed(o.state, o.privacy)
                AND (NOT pod.video_listed(n.state, n.privacy) OR n.channel_id IS DISTINCT FROM o.channel_id) LOOP
      PERFORM pod.pubsub_retract(me, pod.channel_node(moved.old_channel), moved.uuid::text, moved.updated_at, moved.version);
    END LOOP;
  ELSIF TG_OP = 'DELETE' THEN
    FOR v IN SELECT o.* FROM old_videos o WHERE o.origin IS NULL AND pod.video_listed(o.state, o.privacy) LOOP
      PERFORM pod.pubsub_retract(me, 'urn:pgpod:videos', v.uuid::text,
                                 greatest(clock_timestamp(), v.updated_at + interval '1 microsecond'), v.version + 1);
      PERFORM pod.pubsub_retract(me, pod.channel_node(v.channel_id), v.uuid::text,
                                 greatest(clock_timestamp(), v.updated_at + interval '1 microsecond'), v.version + 1);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;

-- Torrents: a private video's files are neither tracked nor seeded (their torrents
-- are kept, and served again if it becomes unlisted or public).
CREATE OR REPLACE FUNCTION pod.tracker_info_hashes() RETURNS TABLE (info_hash bytea, completed bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  AS $$
    SELECT f.info_hash, f.completed FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
     WHERE v.state = 'published' AND v.privacy <> 'private' AND v.origin IS NULL AND f.info_hash IS NOT NULL
  $$;
CREATE OR REPLACE VIEW pod.torrents_seeded AS
  SELECT f.id, f.info_hash, encode(fl.sha256, 'hex') AS sha256, b.size, f.piece_length, f.torrent
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
    JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
   WHERE v.state = 'published' AND v.privacy <> 'private' AND v.origin IS NULL AND f.info_hash IS NOT NULL;

-- Publication enqueues torrents; whenever a video starts or stops being served
-- (published and not private), the seeder and the tracker are told (pod_torrents).
CREATE OR REPLACE FUNCTION pod.videos_torrents() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE f record;
BEGIN
  IF TG_OP <> 'DELETE' AND NEW.state = 'published' THEN
    PERFORM pod.torrent_enqueue(NEW.uuid);
  END IF;
  IF TG_OP = 'UPDATE' AND (OLD.state = 'published' AND OLD.privacy <> 'private')
                          IS DISTINCT FROM (NEW.state = 'published' AND NEW.privacy <> 'private') THEN
    FOR f IN SELECT id FROM pod.video_files WHERE video_uuid = NEW.uuid AND info_hash IS NOT NULL LOOP
      PERFORM pg_notify('pod_torrents', f.id::text);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER videos_torrents ON pod.videos;
CREATE TRIGGER videos_torrents AFTER INSERT OR UPDATE OF state, privacy ON pod.videos
  FOR EACH ROW EXECUTE FUNCTION pod.videos_torrents();

-- HTTP -------------------------------------------------------------------------------

-- The .torrent of a file of a video the caller may watch (an unlisted one's too). Read
-- with the view owner's rights: the file rows are no longer every caller's to list.
CREATE OR REPLACE VIEW api.torrents AS
  SELECT encode(f.info_hash, 'hex') AS info_hash, f.torrent, fl.filename_visible AS name
    FROM pod.video_files f JOIN pod.files fl ON fl.id = f.file_id
   WHERE f.torrent IS NOT NULL AND pod.video_watchable(f.video_uuid);
ALTER VIEW api.torrents RESET (security_invoker);

-- api.videos gains privacy (appended: the columns before stay as they were).
CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author,
         CASE WHEN v.origin IS NULL
              THEN (SELECT f.magnet FROM pod.video_files f WHERE f.video_uuid = v.uuid AND f.magnet IS NOT NULL
                     ORDER BY f.resolution DESC, f.kind = 'mp4' DESC, f.id LIMIT 1)
              ELSE v.magnet END AS magnet,
         thumbnail, state, duration, created_at, updated_at,
         failure_reason, progress, extract(epoch FROM duration)::double precision AS duration_seconds,
         width, height, fps, pod.file_url(thumbnail_file_id) AS thumbnail_url, pod.file_url(preview_file_id) AS preview_url,
         pod.file_url(hls_file_id) AS hls_url, published_at, privacy
    FROM pod.videos v;
COMMENT ON VIEW api.videos IS 'This pod''s public published videos, and the caller''s own (any state or privacy); an unlisted video is read by its uuid with /rpc/video. The network''s (friends'' and feeds'') are in api.network_videos.';

-- One video by its uuid, as api.videos shows it plus its files (api.video_files rows):
-- for anyone who may watch it (an unlisted one too). P0002 (404) otherwise.
CREATE FUNCTION api.video(id uuid) RETURNS json
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE answer json;
BEGIN
  IF id IS NULL OR NOT pod.video_watchable(id) THEN
    RAISE EXCEPTION 'no video % that you may watch', id USING ERRCODE = 'P0002';
  END IF;
  SELECT (to_jsonb(a) || jsonb_build_object('files', coalesce(
            (SELECT jsonb_agg(to_jsonb(f) ORDER BY f.resolution DESC, f.kind) FROM api.video_files f WHERE f.video_uuid = a.uuid),
            '[]')))::json
    INTO answer FROM api.videos a WHERE a.uuid = id;
  RETURN answer;
END $$;
COMMENT ON FUNCTION api.video(uuid) IS 'A video you may watch (public, unlisted, or yours), with its files.';

-- video_create takes the privacy (default public); a video is never visible to others
-- before it is published, so choosing it at creation leaves no window.
DROP FUNCTION api.video_create(bigint, uuid, text, text);
CREATE FUNCTION api.video_create(channel_id bigint, file_id uuid, name text, description text DEFAULT NULL,
                                 privacy text DEFAULT 'public') RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  IF privacy IS NULL OR privacy NOT IN ('public', 'unlisted', 'private') THEN
    RAISE EXCEPTION 'privacy must be public, unlisted or private' USING ERRCODE = '22023';
  END IF;
  -- a statement of its own: the new row is visible to the next one
  SELECT (pod.video_create(channel_id, file_id, name, description)).uuid INTO v;
  IF privacy <> 'public' THEN
    UPDATE pod.videos SET privacy = video_create.privacy WHERE uuid = v;
  END IF;
  RETURN (SELECT row_to_json(a) FROM api.videos a WHERE a.uuid = v);
END $$;
COMMENT ON FUNCTION api.video_create(bigint, uuid, text, text, text) IS 'Creates a video of your channel from your uploaded file (privacy public, unlisted or private) and queues its transcoding.';

REVOKE EXECUTE ON FUNCTION pod.video_listed(pod.video_state, text), pod.video_watchable(uuid), pod.file_granted(uuid),
  pod.file_download(uuid), api.video(uuid), api.video_create(bigint, uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.video_listed(pod.video_state, text), pod.video_watchable(uuid), pod.file_granted(uuid),
  pod.file_download(uuid), api.video(uuid) TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT EXECUTE ON FUNCTION api.video_create(bigint, uuid, text, text, text) TO pgpod_user;

-- Resumable uploads: a length given later ---------------------------------------------

-- tus creation-defer-length: an upload may start without its length (NULL), which a
-- later PATCH gives once; until then it cannot finish.
ALTER TABLE pod.uploads ALTER COLUMN length DROP NOT NULL;
ALTER TABLE pod.uploads ADD CONSTRAINT uploads_received_not_negative CHECK (received >= 0);
COMMENT ON COLUMN pod.uploads.length IS 'The upload''s length in bytes; NULL while deferred (Upload-Defer-Length), until a PATCH gives it.';

CREATE OR REPLACE FUNCTION pod.upload_create(upload uuid, length bigint, metadata jsonb, received bigint DEFAULT 0)
  RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  expires timestamptz := now() + (pod.setting('uploads.expiry') #>> '{}')::interval;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  -- length NULL: deferred
  IF length < 0 OR received IS NULL OR received < 0 OR received > length THEN
    RAISE EXCEPTION 'an upload needs a length of 0 or more (or none yet) and an offset within it' USING ERRCODE = '22023';
  END IF;
  IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'upload metadata must be a JSON object' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.uploads (id, owner_id, length, received, filename, filetype, metadata, expires_at)
    VALUES (upload, me, length, received, left(nullif(metadata ->> 'filename', ''), 255),
            left(nullif(metadata ->> 'filetype', ''), 255), metadata, expires);
  RETURN pod.http_date(expires);
END $$;

CREATE OR REPLACE FUNCTION pod.upload_advance(upload uuid, from_offset bigint, to_offset bigint) RETURNS text
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.uploads u
     SET received = to_offset, updated_at = now(),
         expires_at = now() + (pod.setting('uploads.expiry') #>> '{}')::interval
   WHERE u.id = upload AND u.owner_id = pod.current_user_id() AND u.received = from_offset
     AND to_offset >= from_offset AND to_offset <= coalesce(u.length, to_offset) AND u.expires_at >= now() AND u.file_id IS NULL
  RETURNING pod.http_date(u.expires_at)
$$;

-- The length of a deferred upload, given once by a PATCH starting at from_offset (the
-- upload must still be there, and the length not below it). False when the upload is
-- not the caller's, expired, done, has a length already, or moved on.
CREATE FUNCTION pod.upload_set_length(upload uuid, from_offset bigint, length bigint) RETURNS boolean
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH set AS (
    UPDATE pod.uploads u SET length = upload_set_length.length, updated_at = now()
     WHERE u.id = upload AND u.owner_id = pod.current_user_id() AND u.length IS NULL AND u.received = from_offset
       AND upload_set_length.length >= from_offset AND u.expires_at >= now() AND u.file_id IS NULL
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM set)
$$;

-- Every gateway process sweeps expired uploads on a timer (PGPOD_UPLOAD_SWEEP_MS) as
-- its login role, whether or not new uploads come.
REVOKE EXECUTE ON FUNCTION pod.upload_set_length(uuid, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.upload_set_length(uuid, bigint, bigint) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.uploads_expire(integer) TO pgpod_authenticator;

-- Other pods learn nothing of a private video's chat (sql/76 made this before the
-- privacy column existed): its chat information says disabled, as for no video.
CREATE OR REPLACE FUNCTION pod.local_video_chat_infos(video uuid) RETURNS jsonb
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT jsonb_build_object(
            'enabled', true,
            'anonymous_allowed', coalesce((o.options ->> 'anonymous_allowed')::boolean, true)
                                 AND NOT coalesce((o.options ->> 'mute_anonymous')::boolean, false),
            'protocols', jsonb_build_object('s2s', jsonb_build_object('type', 'pgpod-signed-http',
                           'inbox', (SELECT url FROM pod.identity) || (pod.setting('federation.inbox_path') #>> '{}'))),
            'room', (SELECT room_id FROM pod.livechat_rooms r WHERE r.video_uuid = v.uuid
                     UNION ALL SELECT room_id FROM pod.livechat_rooms r WHERE r.channel_id = v.channel_id AND r.video_uuid IS NULL
                     LIMIT 1))
            FROM pod.videos v LEFT JOIN pod.channel_chat_options o ON o.channel_id = v.channel_id
           WHERE v.uuid = video AND v.origin IS NULL AND v.state = 'published' AND v.privacy <> 'private');
