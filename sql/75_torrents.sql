-- 75_torrents: a BEP 3 .torrent for every file of a published video. Publishing
-- enqueues a `torrent` job per row of pod.video_files (each MP4, and each HLS
-- rendition's single fragmented-MP4 file; playlists, thumbnails and previews are not
-- rows there and get none); the seeder claims it, hashes the blob on every core and
-- hands the piece hashes to pod.torrent_finish, which builds the torrent here (one
-- bencoder: extension/src/bencode.c), stores it with its info hash and magnet and
-- NOTIFYs pod_torrents (the seeder and the tracker follow that channel).
-- Numbered 75 so that it runs after 74_video_transcode.sql (which gives
-- pod.video_files its id, kind, size, ... and api.videos/api.video_files their
-- columns): the columns here come after video1's, and the views here extend video1's.
-- Files of published videos are public (the WebSeed, BEP 19, reads /files/<id>
-- anonymously) through video1's pod.file_is_public.

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
-- two from 16 KiB up to 16 MiB), so a file has a few hundred to a few thousand pieces.
CREATE FUNCTION pod.torrent_piece_length(size bigint) RETURNS integer
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN 16384 << (SELECT count(*)::integer FROM unnest(ARRAY[2684355, 10737418, 42949673, 171798692,
                     687194767, 2748779069, 10995116278, 43980465111, 175921860444, 703687441777]::bigint[]) t
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

-- The .torrent the gateway serves at /torrents/<info hash>.torrent (application/x-bittorrent).
CREATE VIEW api.torrents WITH (security_invoker = true) AS
  SELECT encode(f.info_hash, 'hex') AS info_hash, f.torrent, fl.filename_visible AS name
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid JOIN pod.files fl ON fl.id = f.file_id
   WHERE f.torrent IS NOT NULL AND v.state = 'published';
COMMENT ON VIEW api.torrents IS 'Torrents of published video files, by info hash (the gateway serves them as /torrents/<info_hash>.torrent).';

-- api.video_files gains the .torrent's URL (appended after video1's and the tracker's columns).
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed,
         kind, pod.file_url(file_id) AS url, size, bitrate, fps, pod.file_url(playlist_file_id) AS playlist_url,
         CASE WHEN f.info_hash IS NOT NULL
              THEN (SELECT i.url FROM pod.identity i) || '/torrents/' || encode(f.info_hash, 'hex') || '.torrent'
         END AS torrent_url
    FROM pod.video_files f;

-- A local video's magnet is its best rendition's: the MP4 of the highest resolution
-- with a torrent (an HLS rendition's only when no MP4 has one). Columns as video1's.
CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author,
         CASE WHEN v.origin IS NULL
              THEN (SELECT f.magnet FROM pod.video_files f WHERE f.video_uuid = v.uuid AND f.magnet IS NOT NULL
                     ORDER BY f.resolution DESC, f.kind = 'mp4' DESC, f.id LIMIT 1)
              ELSE v.magnet END AS magnet,
         thumbnail, state, duration, created_at, updated_at,
         failure_reason, progress, extract(epoch FROM duration)::double precision AS duration_seconds,
         width, height, fps, pod.file_url(thumbnail_file_id) AS thumbnail_url, pod.file_url(preview_file_id) AS preview_url,
         pod.file_url(hls_file_id) AS hls_url, published_at
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
  pod.video_files_torrents() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.torrent_info(bytea), pod.torrent_build(text, bigint, integer, bytea, text[], text[]),
  pod.uri_component(text), pod.torrent_piece_length(bigint), pod.tracker_urls()
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
