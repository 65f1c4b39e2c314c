-- 74_video_transcode: from an uploaded file to a playable video. Resumable (tus)
-- uploads whose bytes the gateway keeps on disk and whose state lives here; video_create
-- and the transcode queue; the transcoder's entry points (claim, progress with lease
-- renewal, staged blobs, publication in one transaction, failure); the outputs
-- (pod.video_files and the other files of a video) and who may read them.
-- Locking: an upload row changes only through these functions, and an offset only moves
-- from the value the caller read (compare and set); a transcode job's video changes only
-- under the job's lease (worker = the caller).

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('uploads.expiry', '"24 hours"', 'A resumable upload untouched for this long expires (410), then is removed with its bytes.'),
  ('transcode.ladder', '[1080, 720, 480, 360, 240]', 'Resolutions a video is transcoded to (heights; widths for portrait), none above the source''s.');

-- Resumable uploads ----------------------------------------------------------------

CREATE TABLE pod.uploads (
  id uuid PRIMARY KEY,
  owner_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  length bigint NOT NULL CHECK (length >= 0),
  received bigint NOT NULL DEFAULT 0,
  filename text CHECK (length(filename) <= 255),
  filetype text CHECK (length(filetype) <= 255),
  metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  CONSTRAINT uploads_received_within CHECK (received BETWEEN 0 AND length)
);
CREATE INDEX uploads_owner_idx ON pod.uploads (owner_id);
CREATE INDEX uploads_expires_idx ON pod.uploads (expires_at);
COMMENT ON TABLE pod.uploads IS 'tus uploads: the gateway keeps the bytes in <store>/uploads/<id>; received is the offset a client resumes from.';
SELECT pg_catalog.pg_extension_config_dump('pod.uploads', '');

-- What the gateway answers from: the caller's upload (no row for anyone else's).
CREATE FUNCTION pod.upload_state(upload uuid)
  RETURNS TABLE (length bigint, received bigint, expired boolean, expires text, metadata jsonb, file_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT u.length, u.received, u.expires_at < now(), pod.http_date(u.expires_at), u.metadata, u.file_id
    FROM pod.uploads u WHERE u.id = upload AND u.owner_id = pod.current_user_id()
$$;

-- Creation: the gateway chose the id (its bytes' file name) and may already hold
-- `received` bytes (creation-with-upload). Returns the expiry as an HTTP-date.
CREATE FUNCTION pod.upload_create(upload uuid, length bigint, metadata jsonb, received bigint DEFAULT 0)
  RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  expires timestamptz := now() + (pod.setting('uploads.expiry') #>> '{}')::interval;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF length IS NULL OR length < 0 OR received IS NULL OR received < 0 OR received > length THEN
    RAISE EXCEPTION 'an upload needs a length of 0 or more and an offset within it' USING ERRCODE = '22023';
  END IF;
  IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'upload metadata must be a JSON object' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.uploads (id, owner_id, length, received, filename, filetype, metadata, expires_at)
    VALUES (upload, me, length, received, left(nullif(metadata ->> 'filename', ''), 255),
            left(nullif(metadata ->> 'filetype', ''), 255), metadata, expires);
  RETURN pod.http_date(expires);
END $$;

-- Moves the offset from `from_offset` to `to_offset` (a PATCH that ended, or a client
-- that went away mid-body); NULL when the upload is not the caller's, expired, done, or
-- no longer at from_offset. The expiry starts again.
CREATE FUNCTION pod.upload_advance(upload uuid, from_offset bigint, to_offset bigint) RETURNS text
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.uploads u
     SET received = to_offset, updated_at = now(),
         expires_at = now() + (pod.setting('uploads.expiry') #>> '{}')::interval
   WHERE u.id = upload AND u.owner_id = pod.current_user_id() AND u.received = from_offset
     AND to_offset >= from_offset AND to_offset <= u.length AND u.expires_at >= now() AND u.file_id IS NULL
  RETURNING pod.http_date(u.expires_at)
$$;

-- The last bytes arrived: the gateway has hashed them and linked the blob into the
-- store; the blob and a file of the caller are recorded and the upload points at the
-- file. Nothing of an unfinished upload ever becomes a file.
CREATE FUNCTION pod.upload_finish(upload uuid, from_offset bigint, sha256 bytea) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  u pod.uploads;
  f jsonb;
BEGIN
  SELECT * INTO u FROM pod.uploads
   WHERE id = upload AND owner_id = pod.current_user_id() FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no upload %', upload USING ERRCODE = 'P0002';
  END IF;
  IF u.file_id IS NOT NULL OR u.received <> from_offset OR u.expires_at < now() THEN
    RAISE EXCEPTION 'upload % moved on meanwhile', upload USING ERRCODE = '40001';
  END IF;
  f := pod.register_upload(upload_finish.sha256, u.length, u.filename, coalesce(u.filetype, 'application/octet-stream'));
  UPDATE pod.uploads SET received = length, file_id = (f ->> 'id')::uuid, updated_at = now() WHERE id = upload;
  RETURN f;
END $$;

-- Termination (DELETE): the caller's upload goes; true when there was one.
CREATE FUNCTION pod.upload_terminate(upload uuid) RETURNS boolean
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH gone AS (DELETE FROM pod.uploads WHERE id = upload AND owner_id = pod.current_user_id() RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Expired uploads (finished ones too, their file stays) leave; the gateway removes the
-- returned uploads' bytes. Anyone may call it: it only removes what has expired.
CREATE FUNCTION pod.uploads_expire(max_rows integer DEFAULT 100) RETURNS SETOF uuid
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  DELETE FROM pod.uploads WHERE id IN (SELECT id FROM pod.uploads WHERE expires_at < now()
                                        ORDER BY expires_at LIMIT max_rows FOR UPDATE SKIP LOCKED)
  RETURNING id
$$;

-- Videos: source, state, progress, outputs -----------------------------------------

-- pod.video_object's body uses the row type of pod.videos, which blocks ALTER TABLE:
-- it is made again, unchanged, once the columns are added.
DROP FUNCTION pod.video_object(pod.videos);
ALTER TABLE pod.videos
  ADD COLUMN source_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN failure_reason text CHECK (length(failure_reason) <= 2000),
  ADD COLUMN progress smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  ADD COLUMN width integer CHECK (width > 0),
  ADD COLUMN height integer CHECK (height > 0),
  ADD COLUMN fps numeric CHECK (fps > 0),
  ADD COLUMN thumbnail_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN preview_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN hls_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN published_at timestamptz;
CREATE INDEX videos_thumbnail_idx ON pod.videos (thumbnail_file_id) WHERE thumbnail_file_id IS NOT NULL;
CREATE INDEX videos_preview_idx ON pod.videos (preview_file_id) WHERE preview_file_id IS NOT NULL;
CREATE INDEX videos_hls_idx ON pod.videos (hls_file_id) WHERE hls_file_id IS NOT NULL;
COMMENT ON COLUMN pod.videos.hls_file_id IS 'The HLS master playlist.';
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at);

-- One row per output: an MP4 (web video) or an HLS rendition (one fragmented MP4 file,
-- its byte-range playlist in playlist_file_id). id is the handle other tables use.
ALTER TABLE pod.video_files DROP CONSTRAINT video_files_pkey;
-- a source below the smallest rung is kept at its own size (the transcoder refuses
-- sides under 16 or over 8192 pixels)
ALTER TABLE pod.video_files DROP CONSTRAINT video_files_resolution_check;
ALTER TABLE pod.video_files ADD CONSTRAINT video_files_resolution_check CHECK (resolution BETWEEN 16 AND 8192);
ALTER TABLE pod.video_files
  ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  ADD COLUMN kind text NOT NULL DEFAULT 'mp4' CHECK (kind IN ('mp4', 'hls')),
  ADD COLUMN size bigint CHECK (size >= 0),
  ADD COLUMN bitrate integer CHECK (bitrate >= 0),
  ADD COLUMN fps numeric CHECK (fps > 0),
  ADD COLUMN playlist_file_id uuid REFERENCES pod.files ON DELETE RESTRICT,
  ADD CONSTRAINT video_files_pkey PRIMARY KEY (video_uuid, resolution, kind),
  ADD CONSTRAINT video_files_playlist_is_hls CHECK (playlist_file_id IS NULL OR kind = 'hls');
CREATE INDEX video_files_file_idx ON pod.video_files (file_id);
CREATE INDEX video_files_playlist_idx ON pod.video_files (playlist_file_id) WHERE playlist_file_id IS NOT NULL;
COMMENT ON TABLE pod.video_files IS 'The outputs of a local video: per resolution an MP4 and an HLS rendition, with torrent, info hash and magnet.';
SELECT pg_catalog.pg_extension_config_dump('pod.video_files_id_seq', '');

-- A file that belongs to a published video: anyone may read it (players, HLS loaders
-- and WebSeeds send no token). Files of other videos stay their owner's.
CREATE FUNCTION pod.file_is_public(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.file_id = file AND v.state = 'published')
      OR EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.playlist_file_id = file AND v.state = 'published')
      OR EXISTS (SELECT 1 FROM pod.videos v WHERE v.state = 'published'
                    AND (v.thumbnail_file_id = file OR v.preview_file_id = file OR v.hls_file_id = file));

CREATE OR REPLACE FUNCTION pod.can_read_file(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file AND f.owner_id = pod.current_user_id())
      OR EXISTS (SELECT 1 FROM pod.file_permissions p WHERE p.file_id = file AND p.user_id = pod.current_user_id()
                   AND coalesce((p.data ->> 'read')::boolean, false))
      OR pod.file_is_public(file);

CREATE POLICY files_public ON pod.files FOR SELECT TO pgpod_anon USING (pod.file_is_public(id));
GRANT SELECT ON pod.files TO pgpod_anon;
GRANT SELECT ON api.files TO pgpod_anon;

-- A file's public address (the gateway's /files/<id>), absolute once the pod knows its URL.
CREATE FUNCTION pod.file_url(file uuid) RETURNS text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN CASE WHEN file IS NOT NULL THEN coalesce((SELECT url FROM pod.identity), '') || '/files/' || file END;

-- Transcode jobs ---------------------------------------------------------------------

INSERT INTO pod.job_kinds (kind, retries, base_delay, lease, description) VALUES
  ('transcode', 3, '10 seconds', '1 minute',
   'Turn a video''s source into MP4 and HLS renditions, a thumbnail and a preview (transcoder); the lease is renewed while ffmpeg runs.');

-- Creates a video of the caller's channel over the caller's file, state uploaded, and
-- queues its transcode job. Returns the video as api.videos shows it.
CREATE FUNCTION pod.video_create(channel_id bigint, file_id uuid, name text, description text DEFAULT NULL)
  RETURNS pod.videos
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  v pod.videos;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'creating a video needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF channel_id IS NULL OR NOT EXISTS (SELECT 1 FROM pod.channels c WHERE c.id = video_create.channel_id AND c.owner_id = me) THEN
    RAISE EXCEPTION 'no channel % of yours', channel_id USING ERRCODE = '42501';
  END IF;
  IF file_id IS NULL OR NOT EXISTS (SELECT 1 FROM pod.files f WHERE f.id = video_create.file_id AND f.owner_id = me) THEN
    RAISE EXCEPTION 'no file % of yours', file_id USING ERRCODE = '42501';
  END IF;
  INSERT INTO pod.videos (channel_id, name, description, source_file_id)
    VALUES (video_create.channel_id, video_create.name, video_create.description, video_create.file_id)
    RETURNING * INTO v;
  PERFORM pod.job_enqueue('transcode', jsonb_build_object('video', v.uuid), v.uuid::text);
  RETURN v;
END $$;

-- Claims transcode jobs: each with its video, source blob, ladder and lease; the video
-- becomes transcoding. A job whose video or source is gone is finished at once.
CREATE FUNCTION pod.transcode_claim(worker text, max_jobs integer DEFAULT 1)
  RETURNS TABLE (job_id bigint, video_uuid uuid, source_sha256 text, source_size bigint, attempts integer,
                 ladder jsonb, lease_seconds double precision)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  j pod.jobs;
  v pod.videos;
  src pod.files;
BEGIN
  FOR j IN SELECT * FROM pod.job_claim('transcode', worker, max_jobs) LOOP
    SELECT * INTO v FROM pod.videos WHERE uuid = (j.payload ->> 'video')::uuid FOR UPDATE;
    SELECT * INTO src FROM pod.files WHERE id = v.source_file_id;
    IF v.uuid IS NULL OR src.id IS NULL OR v.state = 'published' THEN
      UPDATE pod.jobs SET state = 'done', finished_at = now(), lease_until = NULL,
                          last_error = CASE WHEN v.state = 'published' THEN 'already published' ELSE 'video or source gone' END
       WHERE id = j.id;
      IF v.uuid IS NOT NULL AND v.state <> 'published' THEN
        UPDATE pod.videos SET state = 'failed', failure_reason = 'the source file was deleted', updated_at = now()
         WHERE uuid = v.uuid;
      END IF;
      CONTINUE;
    END IF;
    UPDATE pod.videos SET state = 'transcoding', progress = 0, failure_reason = NULL, updated_at = now()
     WHERE uuid = v.uuid;
    job_id := j.id; video_uuid := v.uuid; source_sha256 := encode(src.sha256, 'hex'); source_size := src.size;
    attempts := j.attempts; ladder := pod.setting('transcode.ladder');
    lease_seconds := extract(epoch FROM j.lease_until - now());
    RETURN NEXT;
  END LOOP;
END $$;

-- Progress (0-100) of a running job, which also renews its lease. False when the job
-- is no longer this worker's (its lease expired and another took it): stop working on it.
CREATE FUNCTION pod.transcode_progress(job_id bigint, worker text, progress integer) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  UPDATE pod.jobs j SET lease_until = now() + (pod.job_policy('transcode')).lease
   WHERE j.id = transcode_progress.job_id AND j.state = 'running' AND j.worker = transcode_progress.worker
  RETURNING (j.payload ->> 'video')::uuid INTO v;
  IF v IS NULL THEN
    RETURN false;
  END IF;
  UPDATE pod.videos pv SET progress = greatest(0, least(99, transcode_progress.progress))
   WHERE pv.uuid = v AND pv.state = 'transcoding' AND pv.progress <> greatest(0, least(99, transcode_progress.progress));
  RETURN true;
END $$;

-- Before the transcoder links outputs into the store, their blobs are recorded as
-- orphaned: if it dies before publishing, the collector removes them (a blob leaves
-- the store only through the collector).
CREATE FUNCTION pod.transcode_stage_blobs(job_id bigint, worker text, sha256s bytea[], sizes bigint[]) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_stage_blobs.worker) THEN
    RAISE EXCEPTION 'transcode job % is not leased to %', job_id, worker USING ERRCODE = '55000';
  END IF;
  INSERT INTO pod.blobs (sha256, size, orphaned_at)
    SELECT s, z, now() FROM unnest(sha256s, sizes) o(s, z)
    ON CONFLICT (sha256) DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- Publishes a transcoded video in one transaction: every output becomes a file of the
-- channel's owner over its blob, MP4s and HLS renditions become pod.video_files rows,
-- the video gets its media facts and playlists and becomes published, the job is done,
-- and NOTIFY pod_videos says so. Nothing of it happens unless the job is still this
-- worker's. `result`: {duration, width, height, fps, files: [{id, sha256, size, name,
-- mime, role: mp4|hls|playlist|master|thumbnail|preview, resolution, bitrate, fps,
-- playlist}]} where an hls entry's playlist is the id of its playlist's entry.
CREATE FUNCTION pod.transcode_publish(job_id bigint, worker text, result jsonb) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  v pod.videos;
  owner uuid;
  item jsonb;
BEGIN
  SELECT vv.* INTO v FROM pod.jobs j JOIN pod.videos vv ON vv.uuid = (j.payload ->> 'video')::uuid
   WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_publish.worker
   FOR UPDATE OF j, vv;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'transcode job % is not leased to % (or its video is gone)', job_id, worker USING ERRCODE = '55000';
  END IF;
  SELECT c.owner_id INTO owner FROM pod.channels c WHERE c.id = v.channel_id;
  FOR item IN SELECT * FROM jsonb_array_elements(result -> 'files') LOOP
    INSERT INTO pod.blobs (sha256, size) VALUES (decode(item ->> 'sha256', 'hex'), (item ->> 'size')::bigint)
      ON CONFLICT (sha256) DO NOTHING;
    INSERT INTO pod.files (id, owner_id, filename_visible, sha256, size, mime_type)
      VALUES ((item ->> 'id')::uuid, owner, item ->> 'name', decode(item ->> 'sha256', 'hex'), (item ->> 'size')::bigint,
              item ->> 'mime');
  END LOOP;
  DELETE FROM pod.video_files WHERE video_uuid = v.uuid;
  INSERT INTO pod.video_files (video_uuid, resolution, kind, file_id, size, bitrate, fps, playlist_file_id)
    SELECT v.uuid, (f ->> 'resolution')::integer, f ->> 'role', (f ->> 'id')::uuid, (f ->> 'size')::bigint,
           (f ->> 'bitrate')::integer, (f ->> 'fps')::numeric, (f ->> 'playlist')::uuid
      FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' IN ('mp4', 'hls');
  UPDATE pod.videos
     SET state = 'published', progress = 100, failure_reason = NULL, published_at = now(), updated_at = now(),
         duration = make_interval(secs => (result ->> 'duration')::double precision),
         width = (result ->> 'width')::integer, height = (result ->> 'height')::integer,
         fps = (result ->> 'fps')::numeric,
         thumbnail_file_id = (SELECT (f ->> 'id')::uuid FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' = 'thumbnail'),
         preview_file_id = (SELECT (f ->> 'id')::uuid FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' = 'preview'),
         hls_file_id = (SELECT (f ->> 'id')::uuid FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' = 'master')
   WHERE uuid = v.uuid;
  UPDATE pod.videos SET thumbnail = pod.file_url(thumbnail_file_id) WHERE uuid = v.uuid;
  UPDATE pod.jobs SET state = 'done', finished_at = now(), lease_until = NULL WHERE id = job_id;
  PERFORM pg_notify('pod_videos', v.uuid::text);
END $$;

-- A failed attempt. permanent (the source is not a usable video): the video fails
-- with `reason` and the job dies keeping it; otherwise the job backs off and retries
-- (when no retry is left it dies and the video fails, see pod.transcode_job_died).
CREATE FUNCTION pod.transcode_fail(job_id bigint, worker text, reason text, permanent boolean) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  IF permanent THEN
    UPDATE pod.jobs j SET state = 'dead', finished_at = now(), lease_until = NULL, last_error = left(reason, 2000)
     WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_fail.worker
    RETURNING (j.payload ->> 'video')::uuid INTO v;
    RETURN v IS NOT NULL;
  END IF;
  SELECT (j.payload ->> 'video')::uuid INTO v FROM pod.jobs j
   WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_fail.worker;
  IF pod.job_fail(job_id, reason, worker) = 0 THEN
    RETURN false;
  END IF;
  UPDATE pod.videos SET state = 'uploaded', progress = 0, updated_at = now() WHERE uuid = v AND state = 'transcoding';
  RETURN true;
END $$;

-- Gives a job back untouched (the transcoder stopping): the video waits again.
CREATE FUNCTION pod.transcode_release(job_id bigint, worker text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  SELECT (j.payload ->> 'video')::uuid INTO v FROM pod.jobs j
   WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_release.worker;
  IF pod.job_release(ARRAY[job_id], worker) = 0 THEN
    RETURN false;
  END IF;
  UPDATE pod.videos SET state = 'uploaded', progress = 0, updated_at = now() WHERE uuid = v AND state = 'transcoding';
  RETURN true;
END $$;

-- A transcode job that died (its last error kept) fails its video with that error.
CREATE FUNCTION pod.transcode_job_died() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.videos SET state = 'failed', progress = 0, updated_at = now(),
                        failure_reason = left(coalesce(NEW.last_error, 'transcoding failed'), 2000)
   WHERE uuid = (NEW.payload ->> 'video')::uuid AND state <> 'published';
  RETURN NULL;
END $$;
CREATE TRIGGER transcode_job_died AFTER UPDATE OF state ON pod.jobs
  FOR EACH ROW WHEN (NEW.kind = 'transcode' AND NEW.state = 'dead' AND OLD.state <> 'dead')
  EXECUTE FUNCTION pod.transcode_job_died();

-- Live progress: every change of a local video's state, progress or failure (and its
-- creation) is an event numbered per video, kept in pod.video_events and announced
-- by NOTIFY pod_video_events '<uuid>:<seq>'. seq is gapless and commit-ordered per
-- video: the change holds the video's row lock until it commits, so the next change
-- of the same video reads this one's seq. The gateway streams the events with their
-- seq as the SSE id, so a client reconnecting with Last-Event-ID gets what it missed.
-- (A quoted body: a parsed one would pin pod.videos' row type against ALTER TABLE.)
CREATE FUNCTION pod.video_event(v pod.videos, event text) RETURNS text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT json_build_object('event', event, 'uuid', v.uuid, 'state', v.state, 'progress', v.progress,
                           'failure_reason', v.failure_reason,
                           'hls_url', pod.file_url(v.hls_file_id), 'thumbnail_url', pod.file_url(v.thumbnail_file_id))::text
$$;

CREATE TABLE pod.video_events (
  video_uuid uuid NOT NULL REFERENCES pod.videos ON DELETE CASCADE,
  seq bigint NOT NULL CHECK (seq > 0),
  event text NOT NULL CHECK (event IN ('state', 'progress')),
  data json NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (video_uuid, seq)
);
COMMENT ON TABLE pod.video_events IS 'A local video''s state and progress events, numbered per video (the SSE ids of /videos/<uuid>/events).';
ALTER TABLE pod.video_events ENABLE ROW LEVEL SECURITY;
-- whoever may see the video (RLS of pod.videos, under the reader's role) reads its events
CREATE POLICY video_events_read ON pod.video_events FOR SELECT TO pgpod_anon, pgpod_user, pgpod_admin
  USING (EXISTS (SELECT 1 FROM pod.videos v WHERE v.uuid = video_uuid));
GRANT SELECT ON pod.video_events TO pgpod_anon, pgpod_user, pgpod_admin;

CREATE FUNCTION pod.videos_notify_events() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  next_seq bigint;
  kind text := 'state';
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
    kind := 'progress';
  END IF;
  SELECT coalesce(max(e.seq), 0) + 1 INTO next_seq FROM pod.video_events e WHERE e.video_uuid = NEW.uuid;
  INSERT INTO pod.video_events (video_uuid, seq, event, data)
    VALUES (NEW.uuid, next_seq, kind, pod.video_event(NEW, kind)::json);
  PERFORM pg_notify('pod_video_events', NEW.uuid || ':' || next_seq);
  RETURN NULL;
END $$;
CREATE TRIGGER videos_notify_events AFTER UPDATE OF state, progress, failure_reason ON pod.videos
  FOR EACH ROW WHEN (NEW.origin IS NULL AND (NEW.state IS DISTINCT FROM OLD.state OR NEW.progress IS DISTINCT FROM OLD.progress
                     OR NEW.failure_reason IS DISTINCT FROM OLD.failure_reason))
  EXECUTE FUNCTION pod.videos_notify_events();
CREATE TRIGGER videos_created_event AFTER INSERT ON pod.videos
  FOR EACH ROW WHEN (NEW.origin IS NULL)
  EXECUTE FUNCTION pod.videos_notify_events();

-- A video's events after a seq, for the gateway's shared stream read (its login role only).
CREATE FUNCTION pod.video_events_feed(video uuid, after bigint, max_rows integer DEFAULT 500)
  RETURNS TABLE (seq bigint, event text, data text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT e.seq, e.event, e.data::text FROM pod.video_events e
     WHERE e.video_uuid = video_events_feed.video AND e.seq > video_events_feed.after
     ORDER BY e.seq
     LIMIT least(greatest(video_events_feed.max_rows, 0), 5000);
  END;
REVOKE ALL ON FUNCTION pod.video_events_feed(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.video_events_feed(uuid, bigint, integer) TO pgpod_authenticator;

-- HTTP --------------------------------------------------------------------------------

CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author, magnet, thumbnail, state, duration, created_at, updated_at,
         failure_reason, progress, extract(epoch FROM duration)::double precision AS duration_seconds,
         width, height, fps, pod.file_url(thumbnail_file_id) AS thumbnail_url, pod.file_url(preview_file_id) AS preview_url,
         pod.file_url(hls_file_id) AS hls_url, published_at
    FROM pod.videos;
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed,
         kind, pod.file_url(file_id) AS url, size, bitrate, fps, pod.file_url(playlist_file_id) AS playlist_url
    FROM pod.video_files;
COMMENT ON VIEW api.video_files IS 'Outputs of local videos: per resolution an MP4 and an HLS rendition, with their URLs and magnet links.';

CREATE FUNCTION api.video_create(channel_id bigint, file_id uuid, name text, description text DEFAULT NULL) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  -- a statement of its own: the new row is visible to the next one
  SELECT (pod.video_create(channel_id, file_id, name, description)).uuid INTO v;
  RETURN (SELECT row_to_json(a) FROM api.videos a WHERE a.uuid = v);
END $$;
COMMENT ON FUNCTION api.video_create(bigint, uuid, text, text) IS 'Creates a video of your channel from your uploaded file and queues its transcoding.';

REVOKE ALL ON pod.uploads FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pod.upload_state(uuid), pod.upload_create(uuid, bigint, jsonb, bigint),
  pod.upload_advance(uuid, bigint, bigint), pod.upload_finish(uuid, bigint, bytea), pod.upload_terminate(uuid),
  pod.uploads_expire(integer), pod.file_is_public(uuid), pod.file_url(uuid), pod.video_create(bigint, uuid, text, text),
  pod.transcode_claim(text, integer), pod.transcode_progress(bigint, text, integer),
  pod.transcode_stage_blobs(bigint, text, bytea[], bigint[]), pod.transcode_publish(bigint, text, jsonb),
  pod.transcode_fail(bigint, text, text, boolean), pod.transcode_release(bigint, text), pod.transcode_job_died(),
  pod.video_event(pod.videos, text), pod.videos_notify_events(), pod.video_object(pod.videos), api.video_create(bigint, uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.upload_state(uuid), pod.upload_create(uuid, bigint, jsonb, bigint),
  pod.upload_advance(uuid, bigint, bigint), pod.upload_finish(uuid, bigint, bytea), pod.upload_terminate(uuid),
  pod.uploads_expire(integer), api.video_create(bigint, uuid, text, text) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.file_is_public(uuid), pod.file_url(uuid) TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.transcode_claim(text, integer), pod.transcode_progress(bigint, text, integer),
  pod.transcode_stage_blobs(bigint, text, bytea[], bigint[]), pod.transcode_publish(bigint, text, jsonb),
  pod.transcode_fail(bigint, text, text, boolean), pod.transcode_release(bigint, text) TO pgpod_worker;
