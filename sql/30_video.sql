-- 30_video: channels, videos (local, or cached from a friend pod: origin is its URL)
-- and the files of a video per resolution with their torrent and magnet.

CREATE TABLE pod.channels (
  id bigserial PRIMARY KEY,
  owner_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_.-]{1,50}$'),
  display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 120),
  description text CHECK (length(description) <= 5000),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.channels IS 'Local channels; a channel belongs to a user and holds videos.';

CREATE TYPE pod.video_state AS ENUM ('uploaded', 'transcoding', 'published', 'failed');

CREATE TABLE pod.videos (
  uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  channel_id bigint REFERENCES pod.channels ON DELETE CASCADE,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  description text CHECK (length(description) <= 10000),
  origin text CHECK (origin ~ '^https?://[^/\s]+$'),
  author text,
  magnet text,
  thumbnail text,
  state pod.video_state NOT NULL DEFAULT 'uploaded',
  duration interval CHECK (duration >= interval '0'),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  remote jsonb CHECK (jsonb_typeof(remote) = 'object'),
  CONSTRAINT videos_local_or_remote CHECK ((origin IS NULL) = (channel_id IS NOT NULL))
);
CREATE INDEX videos_channel_idx ON pod.videos (channel_id);
CREATE INDEX videos_origin_idx ON pod.videos (origin) WHERE origin IS NOT NULL;
COMMENT ON TABLE pod.videos IS 'The network-wide video index: local videos (origin NULL, in a channel) and friends'' videos (origin = their URL).';

CREATE TABLE pod.video_files (
  video_uuid uuid NOT NULL REFERENCES pod.videos ON DELETE CASCADE,
  resolution integer NOT NULL CHECK (resolution BETWEEN 144 AND 4320),
  file_id uuid NOT NULL REFERENCES pod.files ON DELETE RESTRICT,
  info_hash bytea UNIQUE CHECK (length(info_hash) = 20),
  magnet text CHECK (magnet LIKE 'magnet:?%'),
  torrent bytea,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (video_uuid, resolution)
);
COMMENT ON TABLE pod.video_files IS 'One file per resolution of a local video, with its .torrent, info hash and magnet.';

SELECT pg_catalog.pg_extension_config_dump('pod.channels', '');
SELECT pg_catalog.pg_extension_config_dump('pod.channels_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.videos', '');
SELECT pg_catalog.pg_extension_config_dump('pod.video_files', '');

CREATE FUNCTION pod.owns_channel(channel bigint) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.channels c WHERE c.id = channel AND c.owner_id = pod.current_user_id());

ALTER TABLE pod.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.videos ENABLE ROW LEVEL SECURITY;
ALTER TABLE pod.video_files ENABLE ROW LEVEL SECURITY;

-- Everyone sees channels and published videos; owners manage their own.
CREATE POLICY channels_public ON pod.channels FOR SELECT TO pgpod_anon, pgpod_user USING (true);
CREATE POLICY channels_owner ON pod.channels TO pgpod_user
  USING (owner_id = (SELECT pod.current_user_id())) WITH CHECK (owner_id = (SELECT pod.current_user_id()));
CREATE POLICY channels_admin ON pod.channels TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY videos_public ON pod.videos FOR SELECT TO pgpod_anon, pgpod_user USING (state = 'published');
CREATE POLICY videos_owner ON pod.videos TO pgpod_user
  USING (channel_id IS NOT NULL AND pod.owns_channel(channel_id))
  WITH CHECK (channel_id IS NOT NULL AND pod.owns_channel(channel_id));
CREATE POLICY videos_admin ON pod.videos TO pgpod_admin USING (true) WITH CHECK (true);
CREATE POLICY video_files_public ON pod.video_files FOR SELECT TO pgpod_anon, pgpod_user
  USING (EXISTS (SELECT 1 FROM pod.videos v WHERE v.uuid = video_uuid));
CREATE POLICY video_files_admin ON pod.video_files TO pgpod_admin USING (true) WITH CHECK (true);

ALTER TABLE pod.channels ALTER COLUMN owner_id SET DEFAULT pod.current_user_id();
GRANT SELECT ON pod.channels, pod.videos, pod.video_files TO pgpod_anon, pgpod_user;
GRANT INSERT (owner_id, name, display_name, description), UPDATE (display_name, description), DELETE ON pod.channels TO pgpod_user;
GRANT INSERT (channel_id, name, description), UPDATE (name, description), DELETE ON pod.videos TO pgpod_user;
GRANT USAGE ON SEQUENCE pod.channels_id_seq TO pgpod_user, pgpod_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.channels, pod.videos, pod.video_files TO pgpod_admin;

CREATE VIEW api.channels WITH (security_invoker = true) AS
  SELECT id, owner_id, name, display_name, description, created_at FROM pod.channels;
COMMENT ON VIEW api.channels IS 'Channels of this pod.';
CREATE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author, magnet, thumbnail, state, duration, created_at, updated_at
    FROM pod.videos;
COMMENT ON VIEW api.videos IS 'The video index: this pod''s published videos and its friends''.';
CREATE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at
    FROM pod.video_files;
COMMENT ON VIEW api.video_files IS 'Files of local videos per resolution, with their magnet links.';
GRANT SELECT ON api.channels, api.videos, api.video_files TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT INSERT, UPDATE, DELETE ON api.channels, api.videos TO pgpod_user;
