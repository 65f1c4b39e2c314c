-- 70_federation: this pod's identity (URL + RSA key pair), its friends (other pods)
-- with their scores, and the pubsub cache of what friends publish. This file holds
-- the shapes; queue, signing and delivery build on them.

CREATE TABLE pod.identity (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  url text NOT NULL CHECK (url ~ '^https?://[^/\s]+$'),
  public_key text NOT NULL,
  private_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.identity IS 'This pod: its URL and RSA-2048 key pair, made at first run; the private key never leaves the database.';
REVOKE ALL ON pod.identity FROM PUBLIC;
GRANT SELECT (url, public_key, created_at) ON pod.identity TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
SELECT pg_catalog.pg_extension_config_dump('pod.identity', '');

-- Makes the identity at first run; later calls may change the URL, never the key.
CREATE FUNCTION pod.ensure_identity(url text DEFAULT NULL) RETURNS pod.identity
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me pod.identity;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    INSERT INTO pod.identity (url, public_key, private_key)
      SELECT coalesce(ensure_identity.url, 'http://127.0.0.1:8080'), k.public_key, k.private_key
        FROM pod.rsa_generate_keypair(2048) k
      ON CONFLICT (singleton) DO NOTHING;
    SELECT * INTO me FROM pod.identity;
  ELSIF ensure_identity.url IS NOT NULL AND me.url IS DISTINCT FROM ensure_identity.url THEN
    UPDATE pod.identity SET url = ensure_identity.url RETURNING * INTO me;
  END IF;
  RETURN me;
END $$;

CREATE TYPE pod.friend_state AS ENUM ('pending', 'active', 'revoked');

CREATE TABLE pod.friends (
  id bigserial PRIMARY KEY,
  url text NOT NULL UNIQUE CHECK (url ~ '^https?://[^/\s]+$'),
  public_key text,
  score integer NOT NULL DEFAULT 100 CHECK (score BETWEEN 0 AND 1000),
  state pod.friend_state NOT NULL DEFAULT 'pending',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.friends IS 'Other pods this pod federates with; score 0..1000 (starts at 100), revoked at 0.';
SELECT pg_catalog.pg_extension_config_dump('pod.friends', '');
SELECT pg_catalog.pg_extension_config_dump('pod.friends_id_seq', '');

CREATE TABLE pod.pubsub_nodes (
  id bigserial PRIMARY KEY,
  service text NOT NULL,
  name text NOT NULL,
  subscribed boolean NOT NULL DEFAULT false,
  analyser text,
  type text,
  synchronised boolean NOT NULL DEFAULT false,
  sync_state text CHECK (sync_state IN ('in_progress', 'completed', 'error', 'no_sync')),
  sync_state_updated timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (service, name)
);
COMMENT ON TABLE pod.pubsub_nodes IS 'Pubsub nodes cached from other pods; analysers decide which are synchronised and how items are parsed.';

CREATE TABLE pod.pubsub_items (
  id bigserial PRIMARY KEY,
  node_id bigint NOT NULL REFERENCES pod.pubsub_nodes ON DELETE CASCADE,
  name text NOT NULL,
  data text NOT NULL,
  parsed jsonb,
  publisher text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (node_id, name)
);
COMMENT ON TABLE pod.pubsub_items IS 'Cached pubsub items: the raw payload and the parsed JSONB fields.';
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_nodes', '');
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_nodes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_items', '');
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_items_id_seq', '');

GRANT SELECT, INSERT, UPDATE, DELETE ON pod.friends, pod.pubsub_nodes, pod.pubsub_items TO pgpod_admin;
GRANT SELECT ON pod.friends TO pgpod_worker;

CREATE VIEW api.identity AS SELECT url, public_key FROM pod.identity;
COMMENT ON VIEW api.identity IS 'This pod''s URL and public key.';
GRANT SELECT ON api.identity TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

CREATE VIEW api.friends WITH (security_invoker = true) AS
  SELECT url, public_key, score, state, created_at FROM pod.friends;
COMMENT ON VIEW api.friends IS 'This pod''s friends (admins only).';
GRANT SELECT ON api.friends TO pgpod_admin;
