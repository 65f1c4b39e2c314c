-- 20_content: the content store. Files are metadata over content-addressed blobs
-- (SHA-256); forwarding makes a new file row over the same blob; a blob no file uses
-- is marked orphaned for the collector (its bytes live on disk or a storage node).

CREATE TABLE pod.storage_nodes (
  id serial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  ssh_target text NOT NULL,           -- user@host[:port] reached through ssh
  capacity_bytes bigint NOT NULL CHECK (capacity_bytes > 0),
  used_bytes bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.storage_nodes IS 'Extra storage reached over ssh; blobs move there when the local cache runs low.';

CREATE TABLE pod.blobs (
  sha256 bytea PRIMARY KEY CHECK (length(sha256) = 32),
  size bigint NOT NULL CHECK (size >= 0),
  in_cache boolean NOT NULL DEFAULT true,
  node_id integer REFERENCES pod.storage_nodes,
  last_access timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  orphaned_at timestamptz,
  CONSTRAINT blobs_somewhere CHECK (in_cache OR node_id IS NOT NULL)
);
COMMENT ON TABLE pod.blobs IS 'Content-addressed bytes: in the local cache, on a storage node, or both.';
CREATE INDEX blobs_orphaned_idx ON pod.blobs (orphaned_at) WHERE orphaned_at IS NOT NULL;

CREATE TABLE pod.files (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  filename_visible text NOT NULL CONSTRAINT files_filename_visible_check
    CHECK (length(filename_visible) BETWEEN 1 AND 255 AND filename_visible !~ '[/\\\x01-\x1f\x7f]'
           AND filename_visible NOT IN ('.', '..')),
  sha256 bytea NOT NULL REFERENCES pod.blobs ON DELETE RESTRICT,
  size bigint NOT NULL CHECK (size >= 0),
  mime_type text NOT NULL DEFAULT 'application/octet-stream'
    CHECK (mime_type ~ '^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$'),
  uploaded_at timestamptz NOT NULL DEFAULT now(),
  forwarded_from uuid REFERENCES pod.files ON DELETE SET NULL
);
CREATE INDEX files_owner_idx ON pod.files (owner_id);
CREATE INDEX files_sha256_idx ON pod.files (sha256);
COMMENT ON TABLE pod.files IS 'A user''s file: a name and type over a blob. Deleting one never removes a blob another file uses.';

CREATE TABLE pod.file_permissions (
  file_id uuid NOT NULL REFERENCES pod.files ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  data jsonb NOT NULL DEFAULT '{"read": true}' CHECK (jsonb_typeof(data) = 'object'),
  granted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (file_id, user_id)
);
COMMENT ON TABLE pod.file_permissions IS 'Who besides the owner may read a file.';

SELECT pg_catalog.pg_extension_config_dump('pod.storage_nodes', '');
SELECT pg_catalog.pg_extension_config_dump('pod.storage_nodes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.blobs', '');
SELECT pg_catalog.pg_extension_config_dump('pod.files', '');
SELECT pg_catalog.pg_extension_config_dump('pod.file_permissions', '');

-- A file's size is its blob's; a file over a blob revives it if it was orphaned.
CREATE FUNCTION pod.files_bind_blob() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE blob_size bigint;
BEGIN
  UPDATE pod.blobs SET orphaned_at = NULL, last_access = now()
   WHERE sha256 = NEW.sha256 RETURNING size INTO blob_size;
  IF blob_size IS NULL THEN
    RAISE EXCEPTION 'no blob with sha256 %', encode(NEW.sha256, 'hex') USING ERRCODE = '23503';
  END IF;
  NEW.size := blob_size;
  RETURN NEW;
END $$;
CREATE TRIGGER files_bind_blob BEFORE INSERT OR UPDATE OF sha256 ON pod.files
  FOR EACH ROW EXECUTE FUNCTION pod.files_bind_blob();

-- The last file over a blob going away marks the blob for the collector.
CREATE FUNCTION pod.files_release_blob() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.blobs b SET orphaned_at = now()
   WHERE b.sha256 IN (SELECT DISTINCT sha256 FROM old_files)
     AND NOT EXISTS (SELECT 1 FROM pod.files f WHERE f.sha256 = b.sha256);
  RETURN NULL;
END $$;
CREATE TRIGGER files_release_blob AFTER DELETE ON pod.files
  REFERENCING OLD TABLE AS old_files FOR EACH STATEMENT EXECUTE FUNCTION pod.files_release_blob();

-- Registers bytes the gateway has stored (streamed, hashed) as a file of the caller.
CREATE FUNCTION pod.register_upload(sha256 bytea, size bigint, filename text, mime_type text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
#variable_conflict use_column
DECLARE
  me uuid := pod.current_user_id();
  f pod.files;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF register_upload.sha256 IS NULL OR length(register_upload.sha256) <> 32
     OR register_upload.size IS NULL OR register_upload.size < 0 THEN
    RAISE EXCEPTION 'an upload needs a 32-byte sha256 and a size' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.blobs AS b (sha256, size) VALUES (register_upload.sha256, register_upload.size)
    ON CONFLICT (sha256) DO UPDATE SET last_access = now(), orphaned_at = NULL;
  IF (SELECT b.size FROM pod.blobs b WHERE b.sha256 = register_upload.sha256) <> register_upload.size THEN
    RAISE EXCEPTION 'blob % is already stored with another size', encode(register_upload.sha256, 'hex') USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.files (owner_id, filename_visible, sha256, size, mime_type)
    VALUES (me, coalesce(nullif(register_upload.filename, ''), encode(register_upload.sha256, 'hex')),
            register_upload.sha256, register_upload.size,
            coalesce(nullif(lower(trim(split_part(register_upload.mime_type, ';', 1))), ''), 'application/octet-stream'))
    RETURNING * INTO f;
  RETURN jsonb_build_object('id', f.id, 'owner_id', f.owner_id, 'filename_visible', f.filename_visible,
                            'sha256', encode(f.sha256, 'hex'), 'size', f.size, 'mime_type', f.mime_type,
                            'uploaded_at', f.uploaded_at, 'forwarded_from', f.forwarded_from);
END $$;
COMMENT ON FUNCTION pod.register_upload(bytea, bigint, text, text) IS 'Records an uploaded blob and a file of the calling user over it.';

-- The gateway stores a blob's bytes only after this has recorded the blob (as
-- orphaned when no file uses it yet), so every blob on disk is known here and a
-- blob whose upload is refused or interrupted is the collector's to remove. A
-- request never removes a blob: the database decides, through the collector.
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

CREATE FUNCTION pod.can_read_file(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file AND f.owner_id = pod.current_user_id())
      OR EXISTS (SELECT 1 FROM pod.file_permissions p WHERE p.file_id = file AND p.user_id = pod.current_user_id()
                   AND coalesce((p.data ->> 'read')::boolean, false));

-- Forwarding: a new file of the caller over the same blob, remembering its source.
CREATE FUNCTION pod.forward_file(file uuid) RETURNS pod.files
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  src pod.files;
  copy pod.files;
BEGIN
  SELECT * INTO src FROM pod.files WHERE id = file;
  IF NOT FOUND OR NOT (pod.can_read_file(file) OR pod.is_admin()) THEN
    RAISE EXCEPTION 'no file % that you may read', file USING ERRCODE = 'P0002';
  END IF;
  INSERT INTO pod.files (owner_id, filename_visible, sha256, size, mime_type, forwarded_from)
    VALUES (coalesce(me, src.owner_id), src.filename_visible, src.sha256, src.size, src.mime_type, src.id)
    RETURNING * INTO copy;
  RETURN copy;
END $$;
COMMENT ON FUNCTION pod.forward_file(uuid) IS 'Copies a readable file to the caller as a new file over the same blob.';

-- Blobs no file uses, for the collector to remove from disk and then from here.
-- The collector removes a returned blob's bytes before its transaction commits
-- (rename aside, commit, then unlink; on rollback rename back): an upload of the
-- same content that registers meanwhile waits on the deleted row and then puts
-- the bytes back from its own copy (the gateway links its temporary file again
-- after registration).
CREATE FUNCTION pod.collect_orphaned_blobs(older_than interval DEFAULT '1 hour') RETURNS SETOF pod.blobs
  LANGUAGE sql SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    DELETE FROM pod.blobs b WHERE b.orphaned_at < now() - older_than
       AND NOT EXISTS (SELECT 1 FROM pod.files f WHERE f.sha256 = b.sha256)
    RETURNING *;
  END;

ALTER TABLE pod.files ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.file_permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY files_readable ON pod.files FOR SELECT TO pgpod_user USING (pod.can_read_file(id));
CREATE POLICY files_own_delete ON pod.files FOR DELETE TO pgpod_user USING (owner_id = (SELECT pod.current_user_id()));
CREATE POLICY files_own_update ON pod.files FOR UPDATE TO pgpod_user
  USING (owner_id = (SELECT pod.current_user_id())) WITH CHECK (owner_id = (SELECT pod.current_user_id()));
CREATE POLICY files_admin ON pod.files TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY permissions_owner ON pod.file_permissions TO pgpod_user
  USING (EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file_id AND f.owner_id = (SELECT pod.current_user_id())))
  WITH CHECK (EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file_id AND f.owner_id = (SELECT pod.current_user_id())));
CREATE POLICY permissions_grantee ON pod.file_permissions FOR SELECT TO pgpod_user
  USING (user_id = (SELECT pod.current_user_id()));
CREATE POLICY permissions_admin ON pod.file_permissions TO pgpod_admin USING (true) WITH CHECK (true);

GRANT SELECT, DELETE ON pod.files TO pgpod_user;
GRANT UPDATE (filename_visible, mime_type) ON pod.files TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.file_permissions TO pgpod_user;
GRANT SELECT ON pod.blobs TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.storage_nodes, pod.blobs TO pgpod_admin;

CREATE VIEW api.files WITH (security_invoker = true) AS
  SELECT id, owner_id, filename_visible, sha256, size, mime_type, uploaded_at, forwarded_from FROM pod.files;
COMMENT ON VIEW api.files IS 'Files the caller owns or was granted; POST /upload adds one, DELETE removes it.';
GRANT SELECT, DELETE ON api.files TO pgpod_user;
GRANT UPDATE (filename_visible, mime_type) ON api.files TO pgpod_user;

CREATE VIEW api.file_permissions WITH (security_invoker = true) AS
  SELECT file_id, user_id, data, granted_at FROM pod.file_permissions;
GRANT SELECT, INSERT, UPDATE, DELETE ON api.file_permissions TO pgpod_user;

CREATE FUNCTION api.forward_file(file uuid) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT row_to_json(f) FROM pod.forward_file(file) f;
  END;
COMMENT ON FUNCTION api.forward_file(uuid) IS 'Forwards a file: a new file of yours over the same content.';
GRANT EXECUTE ON FUNCTION pod.register_upload(bytea, bigint, text, text), api.forward_file(uuid) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.blob_stored(bytea, bigint) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.can_read_file(uuid) TO pgpod_user, pgpod_admin;
