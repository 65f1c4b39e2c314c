-- 74_pubsub: the pubsub cache (after Libervia's): nodes of a service (a pod's URL or
-- a feed's URL) and their items, each kept raw (XML as received) with the JSONB its
-- parser (C, extension/src/pubsub_parse.c) made of it; analysers decide per node which
-- parser fills `parsed` and whether the node is synchronised. Functions to publish,
-- retract, purge, delete, page (RSM) and search, every one served by an index; the
-- network video index (api.network_videos) is a view over the video items.
-- Convergence is the federation's rule (73_video_federation: pod.federated_apply): an
-- item's (version, updated) at its origin decides, an older state never overwrites a
-- newer one, and a retraction leaves a tombstone (pod.federated_tombstones, kind
-- 'pubsub') that an older publish cannot undo.

-- The parsers (C) ---------------------------------------------------------------------

CREATE FUNCTION pod.pubsub_parse(parser text, payload text) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'pubsub_parse' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pod.pubsub_parse(text, text) IS 'Parses an XML payload with the named parser (no DTD, no network, size and depth limits); SQLSTATE 2200M malformed, PX001 DTD/entities refused, 54000 over a limit, 42704 unknown parser.';
CREATE FUNCTION pod.pubsub_parser_known(parser text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'pubsub_parser_known' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION pod.pubsub_parsers() RETURNS TABLE (name text, description text)
  AS 'MODULE_PATHNAME', 'pubsub_parsers' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.pubsub_parsers() IS 'The parsers compiled into the extension, by name.';
CREATE FUNCTION pod.feed_entries(document text) RETURNS TABLE (format text, entry text, alternate text)
  AS 'MODULE_PATHNAME', 'feed_entries' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION pod.feed_entries(text) IS 'The entries of an Atom feed or the items of an RSS 2.0 channel, each a standalone XML payload.';

-- Analysers -----------------------------------------------------------------------------

CREATE TABLE pod.pubsub_analysers (
  name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  priority integer NOT NULL DEFAULT 0,
  node_prefix text,
  namespace text,
  type text,
  subtype text,
  to_sync boolean NOT NULL DEFAULT false,
  parser text CHECK (parser IS NULL OR pod.pubsub_parser_known(parser)),
  CHECK (node_prefix IS NOT NULL OR namespace IS NOT NULL)
);
COMMENT ON TABLE pod.pubsub_analysers IS 'Which nodes are what: the first match by priority (highest first; a node-name prefix before a payload namespace) gives a node its type, parser and whether it is synchronised.';
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_analysers', '');
GRANT SELECT ON pod.pubsub_analysers TO pgpod_admin;

INSERT INTO pod.pubsub_analysers (name, priority, node_prefix, namespace, type, subtype, to_sync, parser) VALUES
  ('pgpod_videos', 100, 'urn:pgpod:videos', NULL, 'video', NULL, true, 'video'),
  ('pgpod_channels', 100, 'urn:pgpod:channel:', NULL, 'video', 'channel', false, 'video'),
  ('feed_videos', 90, 'urn:pgpod:feed', NULL, 'video', 'feed', false, 'video'),
  ('microblog', 50, 'urn:xmpp:microblog:0', NULL, 'blog', NULL, true, 'atom'),
  ('atom', 0, NULL, 'http://www.w3.org/2005/Atom', 'atom', NULL, false, 'atom');

-- A restore replays analysers over the built-in ones the extension script has just
-- made: a duplicate name becomes an update (as pod.job_kinds_merge does), so that
-- pg_restore keeps an admin's analysers instead of failing on the primary key.
CREATE FUNCTION pod.pubsub_analysers_merge() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.pubsub_analysers SET priority = NEW.priority, node_prefix = NEW.node_prefix, namespace = NEW.namespace,
         type = NEW.type, subtype = NEW.subtype, to_sync = NEW.to_sync, parser = NEW.parser
   WHERE name = NEW.name;
  RETURN CASE WHEN FOUND THEN NULL ELSE NEW END;
END $$;
CREATE TRIGGER pubsub_analysers_merge BEFORE INSERT ON pod.pubsub_analysers
  FOR EACH ROW EXECUTE FUNCTION pod.pubsub_analysers_merge();

-- Is this session pg_restore? (Triggers that derive rows from restored ones, rows
-- the dump holds too, stand aside.)
CREATE FUNCTION pod.restoring() RETURNS boolean
  LANGUAGE sql STABLE
  RETURN current_setting('application_name', true) = 'pg_restore';

-- Nodes and items -----------------------------------------------------------------------

ALTER TABLE pod.pubsub_nodes DROP COLUMN subscribed, DROP COLUMN synchronised,
  ADD COLUMN subtype text,
  ADD COLUMN to_sync boolean NOT NULL DEFAULT false,
  ADD COLUMN max_items integer CHECK (max_items > 0),
  ADD COLUMN extra jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(extra) = 'object'),
  ADD COLUMN sync_error text,
  ADD COLUMN item_count bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT pubsub_nodes_analyser_fkey FOREIGN KEY (analyser) REFERENCES pod.pubsub_analysers ON DELETE SET NULL;
COMMENT ON COLUMN pod.pubsub_nodes.service IS 'The publishing pod''s URL (this pod''s own for its nodes) or a feed''s URL.';
COMMENT ON COLUMN pod.pubsub_nodes.extra IS 'namespace: the payload namespace seen first; a feed''s polling state lives in pod.feeds.';
COMMENT ON COLUMN pod.pubsub_nodes.item_count IS 'How many items the node holds (kept by triggers on pod.pubsub_items): an RSM page''s count.';
CREATE INDEX pubsub_nodes_sync_idx ON pod.pubsub_nodes (sync_state, sync_state_updated) WHERE to_sync;

-- The full text of an item (C, extension/src/pubsub_search.c): the same vector as
-- setweight(to_tsvector(config, title), 'A') || setweight(to_tsvector(config,
-- author.name), 'B') || setweight(to_tsvector(config, summary || ' ' || content), 'C'),
-- in one pass (that expression, evaluated for every item stored, was a seventh of the
-- ingest's time).
CREATE FUNCTION pod.pubsub_search_vector(config regconfig, parsed jsonb) RETURNS tsvector
  AS 'MODULE_PATHNAME', 'pubsub_search_vector' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.pubsub_search_vector(regconfig, jsonb) IS 'Full-text vector of a parsed item: title (A), author.name (B), summary and content (C).';

CREATE SEQUENCE pod.pubsub_items_seq;
ALTER TABLE pod.pubsub_items
  ADD COLUMN seq bigint NOT NULL DEFAULT nextval('pod.pubsub_items_seq'),
  ADD COLUMN parse_error text,
  ADD COLUMN version bigint,
  ADD COLUMN search tsvector GENERATED ALWAYS AS (pod.pubsub_search_vector('simple'::regconfig, parsed)) STORED;
ALTER SEQUENCE pod.pubsub_items_seq OWNED BY pod.pubsub_items.seq;
-- lz4, not pglz: a cached video item (raw + parsed) passes the TOAST threshold, and
-- pglz compression was a third of the ingest time; the tsvector too (pglz tried and
-- failed on it, incompressible, for every row: 18% of its share of the ingest).
ALTER TABLE pod.pubsub_items ALTER COLUMN data SET COMPRESSION lz4, ALTER COLUMN parsed SET COMPRESSION lz4,
  ALTER COLUMN search SET COMPRESSION lz4;
COMMENT ON COLUMN pod.pubsub_items.seq IS 'Publication order in the node: a re-published item takes a new one (it becomes the newest); RSM pages walk it.';
COMMENT ON COLUMN pod.pubsub_items.search IS 'Full text of title (A), author (B), summary and content (C), config simple: query it with fts(simple)/plfts(simple)/wfts(simple).';
COMMENT ON COLUMN pod.pubsub_items.version IS 'The item''s version at its origin (raised by every publish of this pod''s own items; NULL from a feed: its time decides).';
COMMENT ON COLUMN pod.pubsub_items.parse_error IS 'Why an item synchronised from its origin could not be parsed (it is kept raw, parsed NULL).';
CREATE UNIQUE INDEX pubsub_items_node_seq_idx ON pod.pubsub_items (node_id, seq);
CREATE INDEX pubsub_items_parsed_idx ON pod.pubsub_items USING gin (parsed jsonb_path_ops);
CREATE INDEX pubsub_items_search_idx ON pod.pubsub_items USING gin (search);
CREATE INDEX pubsub_items_created_idx ON pod.pubsub_items (created_at, id);
CREATE INDEX pubsub_items_updated_idx ON pod.pubsub_items (updated_at, id);
CREATE INDEX pubsub_items_duration_idx ON pod.pubsub_items ((parsed -> 'duration'), id) WHERE parsed ? 'duration';
CREATE INDEX pubsub_items_title_idx ON pod.pubsub_items ((parsed ->> 'title') text_pattern_ops);
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_items_seq', '');

-- Each node's item count, kept by the statements that add, move or remove items (C,
-- extension/src/pubsub_count.c: one UPDATE per node a statement touches, from its
-- transition table; not one per row), so that an RSM page reads its count instead of
-- counting the node. Concurrent writers to one node wait for each other's count until
-- commit (one origin publishes to a node serially). A restore brings the counts with
-- the nodes: the trigger stands aside.
UPDATE pod.pubsub_nodes n SET item_count = c.k
  FROM (SELECT i.node_id, count(*) AS k FROM pod.pubsub_items i GROUP BY i.node_id) c WHERE n.id = c.node_id;
CREATE FUNCTION pod.pubsub_items_count() RETURNS trigger
  AS 'MODULE_PATHNAME', 'pubsub_items_count' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
CREATE TRIGGER pubsub_items_count_insert AFTER INSERT ON pod.pubsub_items
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION pod.pubsub_items_count();
CREATE TRIGGER pubsub_items_count_delete AFTER DELETE ON pod.pubsub_items
  REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION pod.pubsub_items_count();
CREATE TRIGGER pubsub_items_count_move AFTER UPDATE OF node_id ON pod.pubsub_items
  FOR EACH ROW WHEN (OLD.node_id IS DISTINCT FROM NEW.node_id) EXECUTE FUNCTION pod.pubsub_items_count();
CREATE TRIGGER pubsub_items_count_truncate AFTER TRUNCATE ON pod.pubsub_items
  FOR EACH STATEMENT EXECUTE FUNCTION pod.pubsub_items_count();


INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('pubsub.sync_page', '100', 'Items per page of a node synchronisation (signed GETs to the origin).'),
  ('pubsub.sync_max_pages', '1000', 'Most pages one node synchronisation fetches; past it the node is in error.'),
  ('pubsub.sync_deadline', '"10 minutes"', 'A synchronisation in_progress longer than this is reset and started again.'),
  ('pubsub.items_path', '"/rpc/pubsub_items"', 'Path where a pod serves a node''s items (GET, node/after/max; JSON).'),
  ('pubsub.nodes_path', '"/rpc/pubsub_nodes"', 'Path where a pod lists its nodes (GET; JSON).');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 1000 WHERE name = 'pubsub.sync_page';
UPDATE pod.setting_defaults SET minimum = 1, maximum = 100000 WHERE name = 'pubsub.sync_max_pages';

-- Matching -----------------------------------------------------------------------------

-- The namespace of a payload's root element (NULL when it has none); the payload is
-- read with the same safe reader as the parsers.
CREATE FUNCTION pod.pubsub_namespace(payload text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN (SELECT CASE WHEN p ? 'namespace' THEN p ->> 'namespace' END
            FROM pod.pubsub_parse('namespace', payload) p);

-- The analyser of a node: first by priority, a node prefix before a namespace.
CREATE FUNCTION pod.pubsub_analyser_for(node text, namespace text) RETURNS pod.pubsub_analysers
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT a FROM pod.pubsub_analysers a
           WHERE (a.node_prefix IS NULL OR starts_with(node, a.node_prefix))
             AND (a.namespace IS NULL OR a.namespace = pubsub_analyser_for.namespace)
           ORDER BY a.priority DESC, (a.node_prefix IS NOT NULL) DESC, a.name LIMIT 1);

-- Applies an analyser to a node (type, subtype, to_sync) and re-parses its items.
CREATE FUNCTION pod.pubsub_node_analyse(node_id bigint) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  a pod.pubsub_analysers;
BEGIN
  SELECT * INTO n FROM pod.pubsub_nodes WHERE id = node_id FOR UPDATE;
  a := pod.pubsub_analyser_for(n.name, n.extra ->> 'namespace');
  UPDATE pod.pubsub_nodes
     SET analyser = a.name, type = a.type, subtype = a.subtype, to_sync = coalesce(a.to_sync, false),
         sync_state = CASE WHEN coalesce(a.to_sync, false) THEN sync_state ELSE 'no_sync' END,
         sync_state_updated = now()
   WHERE id = node_id;
  UPDATE pod.pubsub_items i SET parsed = CASE WHEN a.parser IS NULL THEN NULL ELSE pod.pubsub_parse(a.parser, i.data) END,
                                parse_error = NULL
   WHERE i.node_id = pubsub_node_analyse.node_id;
END $$;

-- Admin: registers (or changes) an analyser, then re-analyses every node whose
-- analyser that changes, re-parsing their items. Returns how many nodes changed.
CREATE FUNCTION pod.pubsub_analyser_register(name text, parser text, node_prefix text DEFAULT NULL,
    namespace text DEFAULT NULL, type text DEFAULT NULL, subtype text DEFAULT NULL, to_sync boolean DEFAULT false,
    priority integer DEFAULT 0) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer := 0; node record;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may register an analyser' USING ERRCODE = '42501';
  END IF;
  IF parser IS NOT NULL AND NOT pod.pubsub_parser_known(parser) THEN
    RAISE EXCEPTION 'no pubsub parser named %', quote_literal(parser) USING ERRCODE = '42704',
      HINT = 'SELECT * FROM pod.pubsub_parsers() lists them.';
  END IF;
  IF node_prefix IS NULL AND namespace IS NULL THEN
    RAISE EXCEPTION 'an analyser needs a node prefix or a namespace' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.pubsub_analysers AS x (name, priority, node_prefix, namespace, type, subtype, to_sync, parser)
    VALUES (name, coalesce(priority, 0), node_prefix, namespace, type, subtype, coalesce(to_sync, false), parser)
    ON CONFLICT ON CONSTRAINT pubsub_analysers_pkey DO UPDATE
      SET priority = EXCLUDED.priority, node_prefix = EXCLUDED.node_prefix, namespace = EXCLUDED.namespace,
          type = EXCLUDED.type, subtype = EXCLUDED.subtype, to_sync = EXCLUDED.to_sync, parser = EXCLUDED.parser;
  FOR node IN SELECT id FROM pod.pubsub_nodes p
               WHERE p.analyser IS DISTINCT FROM (pod.pubsub_analyser_for(p.name, p.extra ->> 'namespace')).name
                  OR p.analyser = pubsub_analyser_register.name LOOP
    PERFORM pod.pubsub_node_analyse(node.id);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

-- The node (service, name), made on first use and analysed by its first payload.
CREATE FUNCTION pod.pubsub_node(service text, node text, payload text DEFAULT NULL) RETURNS pod.pubsub_nodes
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  a pod.pubsub_analysers;
  ns text;
BEGIN
  SELECT * INTO n FROM pod.pubsub_nodes p WHERE p.service = pubsub_node.service AND p.name = node;
  IF FOUND THEN
    RETURN n;
  END IF;
  IF coalesce(service, '') !~ '^https?://[^\s]+$' THEN
    RAISE EXCEPTION 'not a service URL: %', coalesce(quote_literal(service), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF coalesce(node, '') = '' OR length(node) > 1000 THEN
    RAISE EXCEPTION 'a node needs a name (at most 1000 characters)' USING ERRCODE = '22023';
  END IF;
  ns := CASE WHEN payload IS NOT NULL THEN pod.pubsub_namespace(payload) END;
  a := pod.pubsub_analyser_for(node, ns);
  INSERT INTO pod.pubsub_nodes AS p (service, name, analyser, type, subtype, to_sync, sync_state, sync_state_updated, extra)
    VALUES (service, node, a.name, a.type, a.subtype, coalesce(a.to_sync, false),
            CASE WHEN coalesce(a.to_sync, false) THEN NULL ELSE 'no_sync' END, now(),
            jsonb_strip_nulls(jsonb_build_object('namespace', ns)))
    ON CONFLICT ON CONSTRAINT pubsub_nodes_service_name_key DO UPDATE SET service = EXCLUDED.service
    RETURNING * INTO n;
  RETURN n;
END $$;

-- The id of an existing node; P0002 when there is none.
CREATE FUNCTION pod.pubsub_node_id(service text, node text) RETURNS bigint
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
DECLARE n_id bigint;
BEGIN
  SELECT id INTO n_id FROM pod.pubsub_nodes p WHERE p.service = pubsub_node_id.service AND p.name = node;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no pubsub node % at %', coalesce(quote_literal(node), 'NULL'), coalesce(quote_literal(service), 'NULL')
      USING ERRCODE = 'P0002';
  END IF;
  RETURN n_id;
END $$;

-- Publishing ---------------------------------------------------------------------------

-- Is this pod the service (its own node)? Then changes are announced to friends.
CREATE FUNCTION pod.pubsub_is_local(service text) RETURNS boolean
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN service = (SELECT url FROM pod.identity);

-- Enqueues a pubsub event for every active friend (one INSERT); only for this pod's
-- own nodes, not its channel nodes.
CREATE FUNCTION pod.pubsub_announce(activity_type text, object jsonb) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me text := (SELECT url FROM pod.identity);
BEGIN
  IF current_setting('pgpod.pubsub_announce', true) = 'off' THEN
    RETURN;  -- an upgrade filling the cache from existing data
  END IF;
  IF EXISTS (SELECT FROM pod.pubsub_nodes n WHERE n.service = me AND n.name = object ->> 'node' AND n.subtype = 'channel') THEN
    RETURN;  -- a channel's node repeats the videos node's items: friends get those once
  END IF;
  INSERT INTO pod.jobs (kind, target, payload)
    SELECT 'deliver', f.url, jsonb_build_object('activity', jsonb_build_object(
             'id', gen_random_uuid(), 'type', activity_type, 'actor', me, 'object', object,
             'published', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
      FROM pod.friends f WHERE f.state = 'active';
END $$;

-- The object id of an item in pod.federated_tombstones (kind 'pubsub').
CREATE FUNCTION pod.pubsub_object_id(service text, node text, item text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN service || ' ' || node || ' ' || item;

-- The next version of one of this pod's own items: past what is held and any tombstone.
CREATE FUNCTION pod.pubsub_next_version(service text, node text, item text, held bigint) RETURNS bigint
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN greatest(coalesce(held, 0), coalesce((SELECT t.version FROM pod.federated_tombstones t
                                                WHERE t.kind = 'pubsub' AND t.object_id = pod.pubsub_object_id(service, node, item)), 0)) + 1;

-- Publishes (upserts) an item: parsed by the node's analyser (a malformed or hostile
-- payload fails the call and stores nothing), made the newest of its node, the oldest
-- trimmed past max_items. Its origin state is (version, updated): updated is the
-- parsed "updated", else the argument, else now; this pod's own items get the next
-- version. A state not newer than the cached one or than the item's tombstone is
-- ignored (NULL is returned; a repeat is a no-op). Returns the item's id.
CREATE FUNCTION pod.pubsub_publish(service text, node text, item text, payload text, publisher text DEFAULT NULL,
                                   updated timestamptz DEFAULT NULL, version bigint DEFAULT NULL) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  parser text;
  p jsonb;
  at timestamptz;
  created timestamptz;
  held pod.pubsub_items;
  local boolean := pod.pubsub_is_local(service);
  item_id bigint;
BEGIN
  IF coalesce(item, '') = '' OR length(item) > 1000 THEN
    RAISE EXCEPTION 'an item needs an id (at most 1000 characters)' USING ERRCODE = '22023';
  END IF;
  IF payload IS NULL THEN
    RAISE EXCEPTION 'an item needs a payload' USING ERRCODE = '22023';
  END IF;
  n := pod.pubsub_node(service, node, payload);
  parser := (SELECT a.parser FROM pod.pubsub_analysers a WHERE a.name = n.analyser);
  IF parser IS NOT NULL THEN
    p := pod.pubsub_parse(parser, payload);
  ELSE
    PERFORM pod.pubsub_namespace(payload);  -- kept raw, but never hostile XML
  END IF;
  at := coalesce((p ->> 'updated')::timestamptz, pubsub_publish.updated, now());
  created := coalesce((p ->> 'published')::timestamptz, at);
  PERFORM pod.federated_lock('pubsub', pod.pubsub_object_id(service, node, item));
  SELECT * INTO held FROM pod.pubsub_items i WHERE i.node_id = n.id AND i.name = item;
  IF held.data = payload AND (pubsub_publish.version IS NULL OR held.version IS NOT DISTINCT FROM pubsub_publish.version) THEN
    RETURN NULL;  -- this very state is held already (a repeat, a feed polled again)
  END IF;
  IF local AND pubsub_publish.version IS NULL THEN
    version := pod.pubsub_next_version(service, node, item, held.version);
    at := greatest(at, held.updated_at);
  END IF;
  IF NOT pod.federated_apply('pubsub', pod.pubsub_object_id(service, node, item), service, pubsub_publish.version, at,
                             held.version, held.updated_at) THEN
    RETURN NULL;  -- the cache holds this state or a newer one, or a newer retraction
  END IF;
  INSERT INTO pod.pubsub_items AS i (node_id, name, data, parsed, publisher, created_at, updated_at, version)
    VALUES (n.id, item, payload, p, coalesce(publisher, service), created, at, pubsub_publish.version)
    ON CONFLICT ON CONSTRAINT pubsub_items_node_id_name_key DO UPDATE
      SET data = EXCLUDED.data, parsed = EXCLUDED.parsed, publisher = EXCLUDED.publisher,
          created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version,
          parse_error = NULL, seq = nextval('pod.pubsub_items_seq')
    RETURNING id INTO item_id;
  IF n.max_items IS NOT NULL THEN
    DELETE FROM pod.pubsub_items i WHERE i.node_id = n.id
       AND i.seq < (SELECT x.seq FROM pod.pubsub_items x WHERE x.node_id = n.id ORDER BY x.seq DESC
                    OFFSET n.max_items - 1 LIMIT 1);
  END IF;
  IF local THEN
    PERFORM pod.pubsub_announce('pubsub.publish', jsonb_build_object('node', node, 'item', item, 'payload', payload,
                                                                     'updated', at, 'version', pubsub_publish.version));
  END IF;
  RETURN item_id;
END $$;

-- Retracts an item at its origin state (version, retracted); the tombstone outlives
-- it so that an older publish arriving later cannot bring it back, and a retraction
-- older than what is held changes nothing. Returns whether it was applied (false:
-- what is held, or an earlier retraction, is as new). Unknown node: P0002.
CREATE FUNCTION pod.pubsub_retract(service text, node text, item text, retracted timestamptz DEFAULT NULL,
                                   version bigint DEFAULT NULL) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n_id bigint;
  at timestamptz := coalesce(retracted, now());
  held pod.pubsub_items;
  local boolean := pod.pubsub_is_local(service);
BEGIN
  n_id := pod.pubsub_node_id(service, node);
  PERFORM pod.federated_lock('pubsub', pod.pubsub_object_id(service, node, item));
  SELECT * INTO held FROM pod.pubsub_items i WHERE i.node_id = n_id AND i.name = item;
  IF local AND pubsub_retract.version IS NULL THEN
    version := pod.pubsub_next_version(service, node, item, held.version);
    at := greatest(at, held.updated_at);
  END IF;
  IF NOT pod.federated_apply('pubsub', pod.pubsub_object_id(service, node, item), service, pubsub_retract.version, at,
                             held.version, held.updated_at, true) THEN
    RETURN false;
  END IF;
  DELETE FROM pod.pubsub_items i WHERE i.id = held.id;
  IF local THEN
    PERFORM pod.pubsub_announce('pubsub.retract', jsonb_build_object('node', node, 'item', item, 'retracted', at,
                                                                     'version', pubsub_retract.version));
  END IF;
  RETURN true;
END $$;

-- Removes every item of a node held at or before `purged` (each leaves a tombstone at
-- its held version: a later publish at the origin, with a higher version, comes in);
-- returns how many.
CREATE FUNCTION pod.pubsub_purge(service text, node text, purged timestamptz DEFAULT NULL) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n_id bigint;
  at timestamptz := coalesce(purged, now());
  local boolean := pod.pubsub_is_local(service);
  k integer := 0;
  it pod.pubsub_items;
BEGIN
  n_id := pod.pubsub_node_id(service, node);
  FOR it IN SELECT * FROM pod.pubsub_items i WHERE i.node_id = n_id AND i.updated_at <= at ORDER BY i.seq LOOP
    PERFORM pod.federated_lock('pubsub', pod.pubsub_object_id(service, node, it.name));
    IF pod.federated_apply('pubsub', pod.pubsub_object_id(service, node, it.name), service,
                           coalesce(it.version, 0) + CASE WHEN local THEN 1 ELSE 0 END, greatest(at, it.updated_at),
                           it.version, it.updated_at, true) THEN
      DELETE FROM pod.pubsub_items i WHERE i.id = it.id;
      k := k + 1;
    END IF;
  END LOOP;
  IF local THEN
    PERFORM pod.pubsub_announce('pubsub.purge', jsonb_build_object('node', node, 'purged', at));
  END IF;
  RETURN k;
END $$;

-- Deletes a node with its items.
CREATE FUNCTION pod.pubsub_delete_node(service text, node text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  DELETE FROM pod.pubsub_nodes p WHERE p.id = (SELECT pod.pubsub_node_id(pubsub_delete_node.service, pubsub_delete_node.node));
  IF pod.pubsub_is_local(service) THEN
    PERFORM pod.pubsub_announce('pubsub.delete', jsonb_build_object('node', node));
  END IF;
  RETURN true;
END $$;

-- Reading: RSM pages and search -------------------------------------------------------

-- A page of a node's items in publication order (XEP-0059): `after` an item id (the
-- next page), `before` one (the previous page; before = '' is the last page), `max`
-- items. The answer: {"items": [...], "count": n, "index": i, "first": id, "last": id}
-- (count: the node's item_count; index: the position of the first item in the whole
-- node, null for an empty page, and null too, XEP-0059's index being optional, when the
-- page starts more than 512 items from both ends of its node: counting that far would
-- make a page's cost grow with its node). An item id not in the node: P0002 (RSM's
-- item-not-found); past either end: an empty page. C (extension/src/pubsub_page.c):
-- read from the btrees and written as JSON in one buffer, in the time of its items,
-- not its node's.
CREATE FUNCTION pod.pubsub_items_page(service text, node text, max integer DEFAULT 50, after text DEFAULT NULL,
                                      before text DEFAULT NULL) RETURNS json
  AS 'MODULE_PATHNAME', 'pubsub_items_page' LANGUAGE C STABLE SECURITY DEFINER;  -- no SQL inside: no search_path
COMMENT ON FUNCTION pod.pubsub_items_page(text, text, integer, text, text) IS 'RSM page of a node''s items: after/before an item id, max; answers items, count, index (null past 512 items from both ends), first, last.';

-- The SQL condition (over the item alias i) of one filter {"path": "a.b", "op": "=",
-- "value": ...}, each served by an index: "=", "in" (value an array) and "overlap"
-- (the path is an array sharing a value) are jsonpath equality over the GIN index on
-- parsed (jsonb_path_ops), on any path; "like" (SQL LIKE, a pattern that starts with
-- a literal prefix) only on title (btree text_pattern_ops on parsed ->> 'title');
-- "<", "<=", ">", ">=" only on duration, a number (the expression btree on
-- parsed -> 'duration'). Other paths or patterns for like and comparisons are refused
-- (0A000): jsonb_path_ops serves equality only, and a scan of the whole cache is not
-- offered.
CREATE FUNCTION pod.pubsub_filter(filter jsonb) RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  path text := filter ->> 'path';
  op text := filter ->> 'op';
  val jsonb := filter -> 'value';
  steps text;
BEGIN
  IF jsonb_typeof(filter) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'a filter is an object {"path", "op", "value"}' USING ERRCODE = '22023';
  END IF;
  IF coalesce(path, '') !~ '^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$' THEN
    RAISE EXCEPTION 'not a parsed path: %', coalesce(quote_literal(path), 'NULL') USING ERRCODE = '22023',
      HINT = 'A path is keys joined by dots, e.g. author.name.';
  END IF;
  steps := '$' || (SELECT string_agg('.' || to_jsonb(k)::text, '' ORDER BY o) FROM unnest(string_to_array(path, '.')) WITH ORDINALITY u(k, o));
  CASE op
  WHEN '=' THEN
    IF val IS NULL THEN
      RAISE EXCEPTION '= needs a value' USING ERRCODE = '22023';
    END IF;
    RETURN format('i.parsed @? %L::jsonpath', format('%s ? (@ == %s)', steps, val));
  WHEN 'in', 'overlap' THEN
    IF jsonb_typeof(val) IS DISTINCT FROM 'array' OR jsonb_array_length(val) = 0 THEN
      RAISE EXCEPTION '% needs a non-empty array', op USING ERRCODE = '22023';
    END IF;
    RETURN format('i.parsed @? %L::jsonpath', format('%s%s ? (%s)', steps, CASE WHEN op = 'overlap' THEN '[*]' ELSE '' END,
                  (SELECT string_agg(format('@ == %s', v), ' || ') FROM jsonb_array_elements(val) v)));
  WHEN 'like' THEN
    IF jsonb_typeof(val) IS DISTINCT FROM 'string' THEN
      RAISE EXCEPTION 'like needs a string pattern' USING ERRCODE = '22023';
    END IF;
    IF path <> 'title' THEN
      RAISE EXCEPTION 'like is served by an index on title only, not on %', quote_literal(path) USING ERRCODE = '0A000',
        HINT = 'Search other text by full text (query), or a path by =, in or overlap.';
    END IF;
    IF (val #>> '{}') !~ '^([^%_\\]|\\.)' THEN
      RAISE EXCEPTION 'a like pattern must start with a literal prefix (the index serves prefixes), not %', val #>> '{}'
        USING ERRCODE = '0A000', HINT = 'For words inside the text, search by full text (query).';
    END IF;
    RETURN format('(i.parsed ->> %L) LIKE %L', 'title', val #>> '{}');
  WHEN '<', '<=', '>', '>=' THEN
    IF path <> 'duration' THEN
      RAISE EXCEPTION '% is served by an index on duration only, not on %', op, quote_literal(path) USING ERRCODE = '0A000',
        HINT = 'Order or range by created/updated through pod.pubsub_search''s order_by.';
    END IF;
    IF jsonb_typeof(val) IS DISTINCT FROM 'number' THEN
      RAISE EXCEPTION '% on duration compares a number' , op USING ERRCODE = '22023';
    END IF;
    RETURN format('(i.parsed ? %L AND i.parsed -> %L %s %L::jsonb)', 'duration', 'duration', op, val);
  ELSE
    RAISE EXCEPTION 'unknown filter operator %', coalesce(quote_literal(op), 'NULL') USING ERRCODE = '22023',
      HINT = 'Operators: =, in, overlap (any path), like (title), <, <=, >, >= (duration).';
  END CASE;
END $$;

-- Search across nodes: full text (websearch syntax, config simple) and parsed-path
-- filters (AND), optionally within one node type, ordered by "created", "updated"
-- (btrees), "rank" (needs a query; ranks what the GIN index matched) or
-- "parsed:duration" (its expression btree; only items that have a duration),
-- newest/highest first.
CREATE FUNCTION pod.pubsub_search(query text DEFAULT NULL, filters jsonb DEFAULT '[]', node_type text DEFAULT NULL,
                                  order_by text DEFAULT 'created', max integer DEFAULT 50)
  RETURNS TABLE (id bigint, service text, node text, item text, parsed jsonb, created_at timestamptz,
                 updated_at timestamptz, rank real)
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  cond text[] := ARRAY['true'];
  f jsonb;
  ord text;
BEGIN
  IF max IS NULL OR max < 1 OR max > 1000 THEN
    RAISE EXCEPTION 'max must be between 1 and 1000' USING ERRCODE = '22023';
  END IF;
  IF filters IS NOT NULL AND jsonb_typeof(filters) <> 'array' THEN
    RAISE EXCEPTION 'filters must be a JSON array of {"path", "op", "value"}' USING ERRCODE = '22023';
  END IF;
  IF query IS NOT NULL THEN
    cond := cond || 'i.search @@ websearch_to_tsquery(''simple'', $1)'::text;
  END IF;
  FOR f IN SELECT * FROM jsonb_array_elements(coalesce(filters, '[]')) LOOP
    cond := cond || pod.pubsub_filter(f);
  END LOOP;
  IF node_type IS NOT NULL THEN
    cond := cond || 'n.type = $2'::text;
  END IF;
  ord := CASE
    WHEN order_by = 'created' THEN 'i.created_at DESC, i.id DESC'
    WHEN order_by = 'updated' THEN 'i.updated_at DESC, i.id DESC'
    WHEN order_by = 'rank' AND query IS NOT NULL THEN 'rank DESC, i.id DESC'
    -- The one parsed key with an order index: the items that have it, longest first.
    WHEN order_by = 'parsed:duration' THEN 'i.parsed -> ''duration'' DESC, i.id DESC'
  END;
  IF order_by = 'parsed:duration' THEN
    cond := cond || 'i.parsed ? ''duration'''::text;
  END IF;
  IF ord IS NULL THEN
    RAISE EXCEPTION 'cannot order by %', coalesce(quote_literal(order_by), 'NULL') USING ERRCODE = '22023',
      HINT = 'created, updated, rank (with a query) or parsed:duration (the parsed key with an index).';
  END IF;
  RETURN QUERY EXECUTE format(
    'SELECT i.id, n.service, n.name, i.name, i.parsed, i.created_at, i.updated_at, %s::real AS rank
       FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
      WHERE %s ORDER BY %s LIMIT %s',
    CASE WHEN query IS NOT NULL THEN 'ts_rank(i.search, websearch_to_tsquery(''simple'', $1))' ELSE '0' END,
    array_to_string(cond, ' AND '), ord, max) USING query, node_type;
END $$;
COMMENT ON FUNCTION pod.pubsub_search(text, jsonb, text, text, integer) IS 'Search cached items by full text and parsed-path filters, ordered by created, updated, rank or a parsed key.';

-- The network video index -------------------------------------------------------------

CREATE VIEW api.network_videos AS
  SELECT i.id, (i.parsed ->> 'uuid') AS uuid, i.parsed ->> 'title' AS name,
         coalesce(i.parsed ->> 'origin', n.service) AS origin, n.service,
         coalesce(i.parsed ->> 'summary', i.parsed ->> 'content') AS description,
         i.parsed #>> '{author,name}' AS author, i.parsed ->> 'magnet' AS magnet,
         i.parsed -> 'torrents' AS torrents, i.parsed ->> 'thumbnail' AS thumbnail,
         (i.parsed ->> 'duration')::numeric AS duration, i.parsed ->> 'link' AS url,
         i.parsed -> 'files' AS files, i.created_at, i.updated_at, pod.pubsub_is_local(n.service) AS local,
         n.subtype = 'feed' AS from_feed, i.search, i.parsed
    FROM pod.pubsub_items i
    -- The node per item found (OFFSET 0 keeps the planner from turning this into a
    -- loop over nodes, each probing the items' indexes: the items' own indexes
    -- decide, then one primary-key lookup per item).
    CROSS JOIN LATERAL (SELECT x.service, x.subtype FROM pod.pubsub_nodes x
                         WHERE x.id = i.node_id AND x.type = 'video' AND x.subtype IS DISTINCT FROM 'channel' OFFSET 0) n
   WHERE i.parsed IS NOT NULL;
COMMENT ON VIEW api.network_videos IS 'The network video index: this pod''s published videos and its friends'' and subscribed feeds'' cached video items. Full text: search=fts(simple).word (also plfts, wfts); parsed fields: parsed=cs.{"key": value}.';
GRANT SELECT ON api.network_videos TO pgpod_anon, pgpod_user, pgpod_admin;

GRANT EXECUTE ON FUNCTION pod.pubsub_parse(text, text), pod.pubsub_parser_known(text), pod.pubsub_parsers(),
  pod.feed_entries(text), pod.pubsub_namespace(text), pod.pubsub_is_local(text)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.pubsub_analyser_register(text, text, text, text, text, text, boolean, integer),
  pod.pubsub_publish(text, text, text, text, text, timestamptz, bigint), pod.pubsub_retract(text, text, text, timestamptz, bigint),
  pod.pubsub_purge(text, text, timestamptz), pod.pubsub_delete_node(text, text),
  pod.pubsub_items_page(text, text, integer, text, text), pod.pubsub_search(text, jsonb, text, text, integer)
  TO pgpod_admin;
