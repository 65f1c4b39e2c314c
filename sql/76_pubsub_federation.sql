-- 76_pubsub_federation: the pubsub cache between pods. A pod serves its own nodes
-- (api.pubsub_nodes, api.pubsub_items: RSM pages); friends get its changes as events
-- over the signed queue (pubsub.publish / retract / purge / delete, applied by
-- pod.pubsub_receive with the convergence rule of 74) and synchronise a node in full
-- from it (job pubsub_sync: paged signed GETs, bounded; sync_state in_progress →
-- completed | error, a stuck one reset by pod.pubsub_sync_reset_stuck).

INSERT INTO pod.job_kinds (kind, retries, description) VALUES
  ('pubsub_sync', 3, 'Fetch a friend''s node list, or one page of one of its nodes, for a full synchronisation (federator).');

-- Serving this pod's nodes ------------------------------------------------------------

CREATE FUNCTION api.pubsub_nodes() RETURNS json
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT coalesce(json_agg(json_build_object('name', n.name, 'type', n.type) ORDER BY n.name), '[]')
      FROM pod.pubsub_nodes n WHERE n.service = (SELECT url FROM pod.identity);
  END;
COMMENT ON FUNCTION api.pubsub_nodes() IS 'This pod''s own pubsub nodes (what friends synchronise).';

-- GET /rpc/pubsub_items?node=…&after=…&max=…: an RSM page of one of this pod's nodes,
-- each item raw as published (the receiver parses it with its own analysers).
CREATE FUNCTION api.pubsub_items(node text, after text DEFAULT NULL, max integer DEFAULT 100) RETURNS json
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE page jsonb;
BEGIN
  page := pod.pubsub_items_page((SELECT url FROM pod.identity), node, max, nullif(after, ''))::jsonb;
  RETURN (page - 'items' || jsonb_build_object('items', (
    SELECT coalesce(jsonb_agg(jsonb_build_object('name', e ->> 'name', 'publisher', e ->> 'publisher', 'data', e ->> 'data',
                                                 'updated', e ->> 'updated_at', 'version', e -> 'version')), '[]')
      FROM jsonb_array_elements(page -> 'items') e)))::json;
END $$;
COMMENT ON FUNCTION api.pubsub_items(text, text, integer) IS 'An RSM page (after, max) of one of this pod''s own nodes, items raw.';
GRANT EXECUTE ON FUNCTION api.pubsub_nodes(), api.pubsub_items(text, text, integer) TO pgpod_anon, pgpod_user, pgpod_admin;

-- Receiving events ----------------------------------------------------------------------

-- Applies a friend's pubsub event to the cache of its own service (a pod can only
-- publish into its own nodes). Bad events are refused with PT400; a payload that is
-- not safe, well-formed XML too.
CREATE FUNCTION pod.pubsub_receive(sender text, activity jsonb) RETURNS jsonb
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  o jsonb := activity -> 'object';
  node text := o ->> 'node';
  applied boolean;
BEGIN
  IF jsonb_typeof(o) IS DISTINCT FROM 'object' OR coalesce(node, '') = '' THEN
    PERFORM pod.inbox_reject('PT400', 'a pubsub event needs an object with a node');
  END IF;
  BEGIN
    CASE activity ->> 'type'
    WHEN 'pubsub.publish' THEN
      applied := pod.pubsub_publish(sender, node, o ->> 'item', o ->> 'payload', sender, pod.federated_time(o ->> 'updated'),
                                    (o ->> 'version')::bigint) IS NOT NULL;
    WHEN 'pubsub.retract' THEN
      PERFORM pod.pubsub_node(sender, node);
      applied := pod.pubsub_retract(sender, node, o ->> 'item', coalesce(pod.federated_time(o ->> 'retracted'), now()),
                                    (o ->> 'version')::bigint);
    WHEN 'pubsub.purge' THEN
      applied := EXISTS (SELECT 1 FROM pod.pubsub_nodes n WHERE n.service = sender AND n.name = node)
                 AND pod.pubsub_purge(sender, node, coalesce(pod.federated_time(o ->> 'purged'), now())) >= 0;
    WHEN 'pubsub.delete' THEN
      DELETE FROM pod.pubsub_nodes n WHERE n.service = sender AND n.name = node;
      applied := FOUND;
    END CASE;
  EXCEPTION WHEN SQLSTATE '2200M' OR SQLSTATE '2200N' OR SQLSTATE 'PX001' OR SQLSTATE '54000' OR SQLSTATE '22023'
              OR invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation
              OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'pubsub event refused: ' || SQLERRM);
  END;
  RETURN jsonb_build_object('status', CASE WHEN applied THEN 'applied' ELSE 'ignored' END);
END $$;

-- Synchronisation --------------------------------------------------------------------------

-- Percent-encodes a query value (RFC 3986 unreserved characters kept).
CREATE FUNCTION pod.url_encode(value text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN (SELECT coalesce(string_agg(CASE WHEN c ~ '^[A-Za-z0-9._~-]$' THEN c
                                          ELSE upper(regexp_replace(encode(convert_to(c, 'UTF8'), 'hex'), '(..)', '%\1', 'g')) END,
                                     '' ORDER BY i), '')
            FROM regexp_split_to_table(value, '') WITH ORDINALITY s(c, i));

-- Starts a full synchronisation of a friend's node: the cached items are dropped (a
-- fresh copy comes page by page; events keep applying meanwhile), the node is
-- in_progress and its first page job is queued.
CREATE FUNCTION pod.pubsub_sync_start(service text, node text) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n pod.pubsub_nodes;
BEGIN
  n := pod.pubsub_node(service, node);
  DELETE FROM pod.pubsub_items i WHERE i.node_id = n.id;
  UPDATE pod.pubsub_nodes SET sync_state = 'in_progress', sync_state_updated = now(), sync_error = NULL WHERE id = n.id;
  RETURN pod.job_enqueue('pubsub_sync', jsonb_build_object('service', service, 'node', node, 'page', 1), service);
END $$;

-- Synchronises a friend in full: its node list first (then every node an analyser
-- says to synchronise).
CREATE FUNCTION pod.pubsub_sync_friend(friend_url text) RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.job_enqueue('pubsub_sync', jsonb_build_object('service', friend_url), friend_url);

-- Nodes in_progress past pubsub.sync_deadline (a lost job, a dead federator) start
-- again; returns how many.
CREATE FUNCTION pod.pubsub_sync_reset_stuck() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n record; k integer := 0;
BEGIN
  FOR n IN SELECT p.service, p.name FROM pod.pubsub_nodes p
            WHERE p.to_sync AND p.sync_state = 'in_progress'
              AND p.sync_state_updated < now() - (pod.setting('pubsub.sync_deadline') #>> '{}')::interval
              AND NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'pubsub_sync' AND j.target = p.service
                                                         AND j.payload ->> 'node' = p.name AND j.state IN ('waiting', 'running'))
            FOR UPDATE OF p SKIP LOCKED LOOP
    RAISE LOG 'pgpod: synchronisation of % at % was stuck; starting again', n.name, n.service;
    PERFORM pod.pubsub_sync_start(n.service, n.name);
    k := k + 1;
  END LOOP;
  RETURN k;
END $$;

-- Records a failed synchronisation: the partial copy is dropped, the reason kept.
CREATE FUNCTION pod.pubsub_sync_error(service text, node text, reason text) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE n_id bigint;
BEGIN
  SELECT id INTO n_id FROM pod.pubsub_nodes p WHERE p.service = pubsub_sync_error.service AND p.name = node;
  DELETE FROM pod.pubsub_items WHERE node_id = n_id;
  UPDATE pod.pubsub_nodes SET sync_state = 'error', sync_state_updated = now(), sync_error = left(reason, 1000)
   WHERE id = n_id;
  RAISE LOG 'pgpod: synchronisation of % at % failed: %', node, service, reason;
END $$;

-- Claims one pubsub_sync job: its signed GET (the node list, or a page of a node).
CREATE FUNCTION pod.pubsub_sync_claim(worker text)
  RETURNS TABLE (job_id bigint, kind text, pod_url text, url text, headers text[])
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me pod.identity;
  j pod.jobs;
  target text;
BEGIN
  PERFORM pod.pubsub_sync_reset_stuck();
  SELECT * INTO j FROM pod.job_claim('pubsub_sync', worker, 1);
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO me FROM pod.identity;
  IF j.payload ? 'node' THEN
    target := (j.payload ->> 'service') || (pod.setting('pubsub.items_path') #>> '{}') || '?node=' || pod.url_encode(j.payload ->> 'node')
              || '&max=' || (pod.setting('pubsub.sync_page') #>> '{}')
              || coalesce('&after=' || pod.url_encode(j.payload ->> 'after'), '');
  ELSE
    target := (j.payload ->> 'service') || (pod.setting('pubsub.nodes_path') #>> '{}');
  END IF;
  RETURN QUERY SELECT j.id, j.kind, j.payload ->> 'service', target,
    pod.httpsig_sign_request('GET', target, '', clock_timestamp(), me.url || '#main-key', me.private_key);
END $$;

-- The end of a pubsub_sync job with what the origin answered (NULL: nothing usable).
CREATE FUNCTION pod.pubsub_sync_finish(job_id bigint, worker text, answer text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  j pod.jobs;
  service text;
  node text;
  page jsonb;
  it jsonb;
  n pod.pubsub_nodes;
  stored integer := 0;
  unparsed integer := 0;
  page_no integer;
  started integer := 0;
BEGIN
  SELECT * INTO j FROM pod.jobs x WHERE x.id = job_id AND x.kind = 'pubsub_sync' AND x.state = 'running'
     AND x.worker = pubsub_sync_finish.worker FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no pubsub_sync job % leased to %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  service := j.payload ->> 'service';
  node := j.payload ->> 'node';
  page_no := coalesce((j.payload ->> 'page')::integer, 1);
  BEGIN
    page := answer::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    page := NULL;
  END;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  IF NOT EXISTS (SELECT 1 FROM pod.friends f WHERE f.url = service AND f.state = 'active') THEN
    RETURN jsonb_build_object('status', 'not a friend');
  END IF;

  IF node IS NULL THEN  -- the node list
    IF jsonb_typeof(page) IS DISTINCT FROM 'array' THEN
      RETURN jsonb_build_object('status', 'error', 'error', 'the node list is not a JSON array');
    END IF;
    FOR it IN SELECT * FROM jsonb_array_elements(page) LOOP
      CONTINUE WHEN coalesce(it ->> 'name', '') = '';
      n := pod.pubsub_node(service, it ->> 'name');
      IF n.to_sync THEN
        PERFORM pod.pubsub_sync_start(service, n.name);
        started := started + 1;
      END IF;
    END LOOP;
    RETURN jsonb_build_object('status', 'listed', 'synchronising', started);
  END IF;

  IF jsonb_typeof(page) IS DISTINCT FROM 'object' OR jsonb_typeof(page -> 'items') IS DISTINCT FROM 'array' THEN
    PERFORM pod.pubsub_sync_error(service, node, 'page ' || page_no || ': the origin answered nothing usable');
    RETURN jsonb_build_object('status', 'error');
  END IF;
  SELECT * INTO n FROM pod.pubsub_nodes p WHERE (p.service, p.name) = (j.payload ->> 'service', j.payload ->> 'node');
  FOR it IN SELECT * FROM jsonb_array_elements(page -> 'items') LOOP
    BEGIN
      PERFORM pod.pubsub_publish(service, node, it ->> 'name', it ->> 'data', service, pod.federated_time(it ->> 'updated'),
                                 (it ->> 'version')::bigint);
      stored := stored + 1;
    EXCEPTION WHEN SQLSTATE '2200M' OR SQLSTATE '2200N' OR SQLSTATE 'PX001' OR SQLSTATE '54000' THEN
      -- Kept raw, with the reason, so that the copy matches the origin's node and an
      -- admin can see what could not be read; it never reaches a parsed index.
      INSERT INTO pod.pubsub_items AS i (node_id, name, data, parsed, publisher, parse_error)
        VALUES (n.id, it ->> 'name', it ->> 'data', NULL, service, SQLSTATE || ': ' || SQLERRM)
        ON CONFLICT ON CONSTRAINT pubsub_items_node_id_name_key DO NOTHING;
      unparsed := unparsed + 1;
    WHEN SQLSTATE '22023' OR invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation
         OR numeric_value_out_of_range THEN
      unparsed := unparsed + 1;
    END;
  END LOOP;
  IF jsonb_array_length(page -> 'items') >= (pod.setting('pubsub.sync_page'))::integer THEN
    IF page_no >= (pod.setting('pubsub.sync_max_pages'))::integer THEN
      PERFORM pod.pubsub_sync_error(service, node, format('more than %s pages', page_no));
      RETURN jsonb_build_object('status', 'error', 'error', 'too many pages');
    END IF;
    UPDATE pod.pubsub_nodes SET sync_state_updated = now() WHERE id = n.id;
    PERFORM pod.job_enqueue('pubsub_sync', jsonb_build_object('service', service, 'node', node, 'page', page_no + 1,
                                                              'after', page ->> 'last'), service);
    RETURN jsonb_build_object('status', 'page', 'page', page_no, 'stored', stored, 'unparsed', unparsed);
  END IF;
  UPDATE pod.pubsub_nodes SET sync_state = 'completed', sync_state_updated = now(), sync_error = NULL WHERE id = n.id;
  RETURN jsonb_build_object('status', 'completed', 'page', page_no, 'stored', stored, 'unparsed', unparsed);
END $$;
GRANT EXECUTE ON FUNCTION pod.pubsub_sync_start(text, text), pod.pubsub_sync_friend(text), pod.pubsub_sync_reset_stuck()
  TO pgpod_admin;

-- A pod that becomes an active friend is synchronised in full (its node list first).
CREATE FUNCTION pod.friends_pubsub_sync() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF pod.restoring() THEN
    RETURN NULL;  -- a restored friend is not a new one
  END IF;
  PERFORM pod.pubsub_sync_friend(NEW.url);
  RETURN NULL;
END $$;
CREATE TRIGGER friends_pubsub_sync_insert AFTER INSERT ON pod.friends
  FOR EACH ROW WHEN (NEW.state = 'active') EXECUTE FUNCTION pod.friends_pubsub_sync();
CREATE TRIGGER friends_pubsub_sync_update AFTER UPDATE OF state ON pod.friends
  FOR EACH ROW WHEN (NEW.state = 'active' AND OLD.state <> 'active') EXECUTE FUNCTION pod.friends_pubsub_sync();

-- A revoked friend is not synchronised any more (its nodes go in friends_revoked).
CREATE FUNCTION pod.friends_pubsub_forget() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  DELETE FROM pod.jobs WHERE kind = 'pubsub_sync' AND target = NEW.url AND state = 'waiting';
  RETURN NULL;
END $$;
CREATE TRIGGER friends_pubsub_forget AFTER UPDATE OF state ON pod.friends
  FOR EACH ROW WHEN (NEW.state = 'revoked' AND OLD.state <> 'revoked') EXECUTE FUNCTION pod.friends_pubsub_forget();
