-- 35_tracker: what the tracker daemon (workers/tracker/) reads and writes. It tracks
-- only the info hashes of this pod's published files, and reports swarm counts in
-- batches (one call per batch, never one write per announce).

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
