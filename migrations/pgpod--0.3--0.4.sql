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
-- end of gateway defects (issue 10)
