-- pgpod 0.3 -> 0.4. Every change to sql/*.sql after 0.3 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.4'" to load this file. \quit

-- === tracker (issue 14): swarm counts, the tracker's two functions (sql/35_tracker.sql) ===

ALTER TABLE pod.video_files
  ADD COLUMN seeders integer NOT NULL DEFAULT 0 CHECK (seeders >= 0),
  ADD COLUMN leechers integer NOT NULL DEFAULT 0 CHECK (leechers >= 0),
  ADD COLUMN completed bigint NOT NULL DEFAULT 0 CHECK (completed >= 0);
COMMENT ON COLUMN pod.video_files.seeders IS 'Peers with the whole file in the tracker''s swarm at its last report.';
COMMENT ON COLUMN pod.video_files.leechers IS 'Peers still downloading at the tracker''s last report.';
COMMENT ON COLUMN pod.video_files.completed IS 'Downloads the tracker saw complete (event=completed), summed over its reports.';

CREATE FUNCTION pod.tracker_info_hashes() RETURNS TABLE (info_hash bytea, completed bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  AS $$
    SELECT f.info_hash, f.completed FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
     WHERE v.state = 'published' AND v.origin IS NULL AND f.info_hash IS NOT NULL
  $$;
COMMENT ON FUNCTION pod.tracker_info_hashes() IS 'The info hashes the tracker serves (this pod''s published files) with their completed counts.';

-- One batch of swarm counts: seeders and leechers replace the stored ones, completed
-- adds to them. Unknown hashes are ignored (a file unpublished since). Returns the
-- number of files updated.
CREATE FUNCTION pod.tracker_report(info_hashes bytea[], seeder_counts integer[], leecher_counts integer[],
                                   completed_deltas integer[]) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod
  AS $$
DECLARE
  n integer;
BEGIN
  IF cardinality(info_hashes) IS DISTINCT FROM cardinality(seeder_counts)
     OR cardinality(info_hashes) IS DISTINCT FROM cardinality(leecher_counts)
     OR cardinality(info_hashes) IS DISTINCT FROM cardinality(completed_deltas) THEN
    RAISE EXCEPTION 'tracker_report: the four arrays differ in length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE pod.video_files f
     SET seeders = greatest(r.s, 0), leechers = greatest(r.l, 0), completed = f.completed + greatest(r.c, 0)
    FROM unnest(info_hashes, seeder_counts, leecher_counts, completed_deltas) AS r(h, s, l, c)
   WHERE f.info_hash = r.h
     AND ((f.seeders, f.leechers) IS DISTINCT FROM (greatest(r.s, 0), greatest(r.l, 0)) OR r.c > 0);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;
COMMENT ON FUNCTION pod.tracker_report(bytea[], integer[], integer[], integer[]) IS
  'The tracker''s batch of swarm counts per info hash (seeders, leechers replace; completed adds).';
GRANT EXECUTE ON FUNCTION pod.tracker_info_hashes(), pod.tracker_report(bytea[], integer[], integer[], integer[])
  TO pgpod_worker;

-- api.video_files gains the counts (appended columns; the view is otherwise 30_video's).
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed
    FROM pod.video_files;
REVOKE EXECUTE ON FUNCTION pod.tracker_info_hashes(), pod.tracker_report(bytea[], integer[], integer[], integer[])
  FROM PUBLIC;
-- === end tracker ===

-- ==== torrents (issue 14): .torrent per published video file; see sql/74_torrents.sql ====

-- The handle other tables and daemons use for a file (video1's contract; IF NOT
-- EXISTS so that this is a no-op where video1's table already has it).
ALTER TABLE pod.video_files ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
ALTER TABLE pod.video_files
  ADD COLUMN piece_length integer CHECK (piece_length >= 16384 AND (piece_length & (piece_length - 1)) = 0),
  ADD COLUMN pieces bytea CHECK (length(pieces) % 20 = 0);
COMMENT ON COLUMN pod.video_files.pieces IS 'The SHA-1 of every piece, concatenated: the seeder serves from them without hashing again.';

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('torrent.tracker_port', '6969', 'The port of this pod''s trackers (HTTP, UDP and WebSocket) named in the torrents it makes (scripts/pgpod sets it from PGPOD_TRACKER_PORT).');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 65535 WHERE name = 'torrent.tracker_port';

INSERT INTO pod.job_kinds (kind, description) VALUES
  ('torrent', 'Hash a published video file and store its .torrent (seeder).');

CREATE FUNCTION pod.torrent_info(torrent bytea, OUT name text, OUT length bigint, OUT piece_length integer,
                                 OUT piece_count integer, OUT info_hash bytea, OUT trackers text[],
                                 OUT web_seeds text[])
  AS 'MODULE_PATHNAME', 'torrent_info' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pod.torrent_info(bytea) IS 'Reads a .torrent (BEP 3): name, length, piece length and count, info hash, trackers, web seeds. A corrupt one is refused (22P03).';

CREATE FUNCTION pod.torrent_build(name text, length bigint, piece_length integer, pieces bytea,
                                  trackers text[], web_seeds text[]) RETURNS bytea
  AS 'MODULE_PATHNAME', 'torrent_build' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.torrent_build(text, bigint, integer, bytea, text[], text[]) IS 'Bencodes a single-file torrent: announce, announce-list (a tier per tracker), info, url-list (BEP 19 web seeds).';

CREATE FUNCTION pod.uri_component(text) RETURNS text
  AS 'MODULE_PATHNAME', 'uri_component' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pod.uri_component(text) IS 'Percent-encodes all but RFC 3986''s unreserved characters (as encodeURIComponent).';

-- The piece length libtorrent picks (create_torrent: about 10·sqrt(size), a power of
-- two from 16 KiB up to 8 MiB), so a file has a few hundred to a few thousand pieces.
CREATE FUNCTION pod.torrent_piece_length(size bigint) RETURNS integer
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN 16384 << (SELECT count(*)::integer FROM unnest(ARRAY[2684355, 10737418, 42949673, 171798692,
                     687194767, 2748779069, 10995116278, 43980465111, 175921860444]::bigint[]) t
                    WHERE t < size);

-- This pod's tracker URLs: HTTP, UDP and WebSocket on one port of the pod's host.
CREATE FUNCTION pod.tracker_urls() RETURNS text[]
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT ARRAY['http://' || h || '/announce', 'udp://' || h || '/announce', 'ws://' || h]
      FROM (SELECT substring(i.url FROM '^https?://([^/:]+|\[[^]]+\])') || ':' ||
                   (pod.setting('torrent.tracker_port') #>> '{}') AS h
              FROM pod.identity i) s;
  END;
COMMENT ON FUNCTION pod.tracker_urls() IS 'The trackers this pod''s torrents name: http://host:port/announce, udp://host:port/announce, ws://host:port (port: setting torrent.tracker_port).';

-- Enqueues a torrent job for each file of a published video that has no torrent
-- and no job waiting or running.
CREATE FUNCTION pod.torrent_enqueue(video uuid) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  INSERT INTO pod.jobs (kind, target, payload)
    SELECT 'torrent', 'video_file:' || f.id, jsonb_build_object('video_file', f.id)
      FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
     WHERE f.video_uuid = video AND v.state = 'published' AND v.origin IS NULL AND f.info_hash IS NULL
       AND NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'torrent' AND j.finished_at IS NULL
                         AND j.target = 'video_file:' || f.id);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- Publication (and a file added to a published video) enqueues; unpublishing or
-- removing tells the seeder and the tracker to stop.
CREATE FUNCTION pod.videos_torrents() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE f record;
BEGIN
  IF TG_OP <> 'DELETE' AND NEW.state = 'published' THEN
    PERFORM pod.torrent_enqueue(NEW.uuid);
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.state = 'published' AND NEW.state <> 'published' THEN
    FOR f IN SELECT id FROM pod.video_files WHERE video_uuid = NEW.uuid AND info_hash IS NOT NULL LOOP
      PERFORM pg_notify('pod_torrents', f.id::text);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER videos_torrents AFTER INSERT OR UPDATE OF state ON pod.videos
  FOR EACH ROW EXECUTE FUNCTION pod.videos_torrents();

CREATE FUNCTION pod.video_files_torrents() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM pod.torrent_enqueue(NEW.video_uuid);
  ELSIF OLD.info_hash IS NOT NULL THEN
    PERFORM pg_notify('pod_torrents', OLD.id::text);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER video_files_torrents AFTER INSERT OR DELETE ON pod.video_files
  FOR EACH ROW EXECUTE FUNCTION pod.video_files_torrents();

-- What a torrent job needs: the file's blob, size, name and piece length.
CREATE FUNCTION pod.torrent_job(video_file bigint, OUT sha256 text, OUT size bigint, OUT name text,
                                OUT piece_length integer)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT encode(b.sha256, 'hex'), b.size, fl.filename_visible, pod.torrent_piece_length(b.size)
      FROM pod.video_files f JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
     WHERE f.id = video_file;
  END;

-- A torrent job's outcome: the torrent built from the piece hashes, stored with its
-- info hash and magnet, the job completed, pod_torrents notified — one transaction.
-- Refused (and nothing stored) when the hashes do not fit the file.
CREATE FUNCTION pod.torrent_finish(job bigint, worker text, video_file bigint, piece_length integer,
                                   pieces bytea) RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  f record;
  t bytea;
  info record;
  seed text;
  trackers text[] := pod.tracker_urls();
  m text;
BEGIN
  SELECT vf.id, vf.file_id, fl.filename_visible AS name, b.size INTO f
    FROM pod.video_files vf JOIN pod.files fl ON fl.id = vf.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
   WHERE vf.id = video_file FOR UPDATE OF vf;
  IF NOT FOUND THEN
    PERFORM pod.job_complete(ARRAY[job], worker);
    RETURN NULL;               -- the file went away while it was hashed
  END IF;
  seed := (SELECT i.url FROM pod.identity i) || '/files/' || f.file_id;
  t := pod.torrent_build(f.name, f.size, piece_length, pieces, coalesce(trackers, '{}'), ARRAY[seed]);
  info := pod.torrent_info(t);
  m := 'magnet:?xt=urn:btih:' || encode(info.info_hash, 'hex') || '&dn=' || pod.uri_component(f.name)
       || '&xl=' || f.size
       || coalesce((SELECT string_agg('&tr=' || pod.uri_component(u), '' ORDER BY o)
                      FROM unnest(trackers) WITH ORDINALITY AS x(u, o)), '')
       || '&ws=' || pod.uri_component(seed);
  UPDATE pod.video_files vf SET torrent = t, info_hash = info.info_hash, magnet = m,
         piece_length = torrent_finish.piece_length, pieces = torrent_finish.pieces
   WHERE vf.id = f.id;
  PERFORM pod.job_complete(ARRAY[job], worker);
  PERFORM pg_notify('pod_torrents', f.id::text);
  RETURN encode(info.info_hash, 'hex');
END $$;
COMMENT ON FUNCTION pod.torrent_finish(bigint, text, bigint, integer, bytea) IS 'Stores a hashed file''s torrent, info hash and magnet and completes its job (the seeder calls it).';

-- What the seeder serves: every file of a published local video that has a torrent.
CREATE VIEW pod.torrents_seeded AS
  SELECT f.id, f.info_hash, encode(fl.sha256, 'hex') AS sha256, b.size, f.piece_length, f.torrent
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
    JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
   WHERE v.state = 'published' AND v.origin IS NULL AND f.info_hash IS NOT NULL;
COMMENT ON VIEW pod.torrents_seeded IS 'The files the seeder serves (published, local, with a torrent), with their blob.';

-- Files of published videos are public: the WebSeed (BEP 19) and players fetch them
-- anonymously at /files/<id>.
CREATE FUNCTION pod.file_is_published(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
                  WHERE f.file_id = file AND v.state = 'published');
CREATE POLICY files_published ON pod.files FOR SELECT TO pgpod_anon, pgpod_user
  USING (pod.file_is_published(id));
GRANT SELECT ON pod.files TO pgpod_anon;
GRANT SELECT ON api.files TO pgpod_anon;

-- The .torrent the gateway serves at /torrents/<info hash>.torrent (application/x-bittorrent).
CREATE VIEW api.torrents WITH (security_invoker = true) AS
  SELECT encode(f.info_hash, 'hex') AS info_hash, f.torrent, fl.filename_visible AS name
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid JOIN pod.files fl ON fl.id = f.file_id
   WHERE f.torrent IS NOT NULL AND v.state = 'published';
COMMENT ON VIEW api.torrents IS 'Torrents of published video files, by info hash (the gateway serves them as /torrents/<info_hash>.torrent).';

-- api.video_files gains the .torrent's URL (appended after 35_tracker's columns).
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed,
         CASE WHEN f.info_hash IS NOT NULL
              THEN (SELECT i.url FROM pod.identity i) || '/torrents/' || encode(f.info_hash, 'hex') || '.torrent'
         END AS torrent_url
    FROM pod.video_files f;

-- A local video's magnet is its best rendition's (highest resolution with a torrent).
CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author,
         CASE WHEN v.origin IS NULL
              THEN (SELECT f.magnet FROM pod.video_files f WHERE f.video_uuid = v.uuid AND f.magnet IS NOT NULL
                     ORDER BY f.resolution DESC, f.id LIMIT 1)
              ELSE v.magnet END AS magnet,
         thumbnail, state, duration, created_at, updated_at
    FROM pod.videos v;

GRANT SELECT ON pod.torrents_seeded TO pgpod_worker;
GRANT SELECT ON api.torrents TO pgpod_anon, pgpod_user, pgpod_admin;
REVOKE ALL ON FUNCTION pod.torrent_enqueue(uuid), pod.torrent_job(bigint),
  pod.torrent_finish(bigint, text, bigint, integer, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.torrent_job(bigint), pod.torrent_finish(bigint, text, bigint, integer, bytea)
  TO pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.torrent_enqueue(uuid) TO pgpod_admin;
-- Function privileges here rather than in 99_privileges.sql, so that the upgrade
-- script (which does not run that file) grants exactly the same.
REVOKE EXECUTE ON FUNCTION pod.torrent_info(bytea), pod.torrent_build(text, bigint, integer, bytea, text[], text[]),
  pod.uri_component(text), pod.torrent_piece_length(bigint), pod.tracker_urls(), pod.videos_torrents(),
  pod.video_files_torrents(), pod.file_is_published(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.torrent_info(bytea), pod.torrent_build(text, bigint, integer, bytea, text[], text[]),
  pod.uri_component(text), pod.torrent_piece_length(bigint), pod.tracker_urls(), pod.file_is_published(uuid)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
-- ==== end of torrents ====
