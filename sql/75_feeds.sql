-- 75_feeds: subscriptions to Atom / RSS feeds (a PeerTube instance's or channel's
-- /feeds/videos.atom or .xml). Each feed is a node (service = the feed URL, name
-- urn:pgpod:feed) whose items are its entries, parsed by the same C parsers; the
-- federator polls it (job feed_poll: a conditional GET with ETag / Last-Modified, a
-- per-feed interval, backoff on errors) and hands the answer to pod.feed_poll_finish.
-- Also the federator's fetch-job entry points that add feed polls and node
-- synchronisations (76) to the GET jobs of 70_federation.

CREATE TABLE pod.feeds (
  id bigserial PRIMARY KEY,
  url text NOT NULL UNIQUE CHECK (url ~ '^https?://[^\s]+$' AND length(url) <= 2000),
  poll_url text NOT NULL CHECK (poll_url ~ '^https?://[^\s]+$'),
  node_id bigint NOT NULL UNIQUE REFERENCES pod.pubsub_nodes ON DELETE CASCADE,
  poll_interval interval NOT NULL CHECK (poll_interval >= interval '1 second'),
  next_poll_at timestamptz NOT NULL DEFAULT now(),
  etag text,
  last_modified text,
  failures integer NOT NULL DEFAULT 0,
  last_status integer,
  last_error text,
  last_polled_at timestamptz,
  last_body_bytes integer,
  polls bigint NOT NULL DEFAULT 0,
  not_modified bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.feeds IS 'Feed subscriptions: where and when to poll, the validators of the last answer (ETag, Last-Modified), failures and backoff.';
COMMENT ON COLUMN pod.feeds.poll_url IS 'What is polled: the URL, or the RSS alternate an Atom feed names (RSS carries the video fields).';
CREATE INDEX feeds_due_idx ON pod.feeds (next_poll_at);
SELECT pg_catalog.pg_extension_config_dump('pod.feeds', '');
SELECT pg_catalog.pg_extension_config_dump('pod.feeds_id_seq', '');
GRANT SELECT ON pod.feeds TO pgpod_admin;

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('feeds.interval', '"15 minutes"', 'How often a subscribed feed is polled (pod.feed_subscribe may set another per feed).'),
  ('feeds.max_backoff', '"1 day"', 'Longest wait between polls of a failing feed (the interval doubles per failure up to this).');
INSERT INTO pod.job_kinds (kind, retries, description) VALUES
  ('feed_poll', 0, 'Poll a subscribed feed with a conditional GET (federator); a failure is recorded on the feed, which backs off.');

-- Admin: subscribes to a feed; its first poll is due at once. Returns the feed's id.
CREATE FUNCTION pod.feed_subscribe(url text, poll_interval interval DEFAULT NULL) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  feed_id bigint;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may subscribe to a feed' USING ERRCODE = '42501';
  END IF;
  IF coalesce(url, '') !~ '^https?://[^/\s]+(/[^\s]*)?$' OR length(url) > 2000 THEN
    RAISE EXCEPTION 'not a feed URL: %', coalesce(quote_literal(url), 'NULL') USING ERRCODE = '22023',
      HINT = 'A feed URL is http(s)://host[:port]/path.';
  END IF;
  IF poll_interval IS NOT NULL AND poll_interval < interval '1 second' THEN
    RAISE EXCEPTION 'a poll interval is at least 1 second' USING ERRCODE = '22023';
  END IF;
  SELECT f.id INTO feed_id FROM pod.feeds f WHERE f.url = feed_subscribe.url;
  IF FOUND THEN
    UPDATE pod.feeds f SET poll_interval = coalesce(feed_subscribe.poll_interval, f.poll_interval) WHERE f.id = feed_id;
    RETURN feed_id;
  END IF;
  n := pod.pubsub_node(url, 'urn:pgpod:feed');
  INSERT INTO pod.feeds (url, poll_url, node_id, poll_interval)
    VALUES (url, url, n.id, coalesce(poll_interval, (pod.setting('feeds.interval') #>> '{}')::interval))
    RETURNING id INTO feed_id;
  PERFORM pod.feeds_enqueue_due();
  RETURN feed_id;
END $$;
COMMENT ON FUNCTION pod.feed_subscribe(text, interval) IS 'Subscribe to an Atom or RSS feed: its entries become items of a feed node, in api.network_videos.';

-- Admin: ends a subscription; its node and items go.
CREATE FUNCTION pod.feed_unsubscribe(url text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n_id bigint;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may unsubscribe from a feed' USING ERRCODE = '42501';
  END IF;
  DELETE FROM pod.feeds f WHERE f.url = feed_unsubscribe.url RETURNING node_id INTO n_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no feed %', coalesce(quote_literal(url), 'NULL') USING ERRCODE = 'P0002';
  END IF;
  DELETE FROM pod.pubsub_nodes WHERE id = n_id;
  RETURN true;
END $$;

-- Enqueues a feed_poll job for every feed that is due and has none; returns how many.
CREATE FUNCTION pod.feeds_enqueue_due() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH due AS (
    SELECT f.id FROM pod.feeds f
     WHERE f.next_poll_at <= now()
       AND NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'feed_poll' AND j.target = f.url
                                                  AND j.state IN ('waiting', 'running'))
     FOR UPDATE OF f SKIP LOCKED),
  queued AS (
    INSERT INTO pod.jobs (kind, target, payload)
      SELECT 'feed_poll', f.url, jsonb_build_object('feed', f.id) FROM pod.feeds f JOIN due USING (id)
    RETURNING 1)
  SELECT count(*)::integer FROM queued
$$;

-- The GET of a feed_poll job: conditional on what the last answer said.
CREATE FUNCTION pod.feed_poll_request(feed_id bigint) RETURNS TABLE (url text, headers text[])
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT ROW(f.poll_url, array_remove(ARRAY[
            'Accept: application/rss+xml, application/atom+xml;q=0.9, application/xml;q=0.8, */*;q=0.1',
            'If-None-Match: ' || f.etag, 'If-Modified-Since: ' || f.last_modified], NULL))
            FROM pod.feeds f WHERE f.id = feed_id);

-- Records a failed poll: the interval doubles per failure in a row, up to feeds.max_backoff.
CREATE FUNCTION pod.feed_poll_failed(feed_id bigint, status integer, error text) RETURNS void
  LANGUAGE sql SET search_path = pg_catalog, pod AS $$
  UPDATE pod.feeds f
     SET failures = f.failures + 1, last_status = status, last_error = left(error, 1000), last_polled_at = now(),
         polls = f.polls + 1,
         next_poll_at = now() + least(f.poll_interval * power(2, least(f.failures + 1, 30)),
                                      (pod.setting('feeds.max_backoff') #>> '{}')::interval)
   WHERE f.id = feed_id
$$;

-- The end of a feed_poll job. answer: what the federator saw, "HTTP <status>" then
-- the ETag and Last-Modified header lines, an empty line and the body ("HTTP 0" and
-- the error for a transfer that failed). 304 keeps the cache; 200 publishes every
-- entry (an entry that cannot be parsed is skipped and counted, the others go in);
-- anything else is a failure. Returns a summary.
CREATE FUNCTION pod.feed_poll_finish(job_id bigint, worker text, answer text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  job pod.jobs;
  f pod.feeds;
  head text := split_part(coalesce(answer, ''), E'\n\n', 1);
  body text := substr(coalesce(answer, ''), length(split_part(coalesce(answer, ''), E'\n\n', 1)) + 3);
  status integer := coalesce(substring(coalesce(answer, '') FROM '^HTTP ([0-9]{1,3})')::integer, 0);
  new_etag text := substring(head FROM '(?:^|\n)[Ee][Tt][Aa][Gg]: *([^\n]*)');
  modified text := substring(head FROM '(?:^|\n)[Ll]ast-[Mm]odified: *([^\n]*)');
  e record;
  parsed jsonb;
  published integer := 0;
  skipped integer := 0;
  first_error text;
  alternate text;
BEGIN
  SELECT * INTO job FROM pod.jobs j WHERE j.id = job_id AND j.kind = 'feed_poll' AND j.state = 'running'
     AND j.worker = feed_poll_finish.worker FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no feed_poll job % leased to %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  SELECT * INTO f FROM pod.feeds WHERE id = (job.payload ->> 'feed')::bigint FOR UPDATE;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('status', 'unsubscribed');
  END IF;
  IF status = 304 THEN
    UPDATE pod.feeds SET failures = 0, last_status = 304, last_error = NULL, last_polled_at = now(), polls = polls + 1,
                         not_modified = not_modified + 1, last_body_bytes = octet_length(body),
                         next_poll_at = now() + poll_interval
     WHERE id = f.id;
    RETURN jsonb_build_object('status', 304);
  ELSIF status <> 200 THEN
    PERFORM pod.feed_poll_failed(f.id, status, CASE WHEN status = 0 THEN body ELSE 'HTTP ' || status END);
    RETURN jsonb_build_object('status', status, 'error', CASE WHEN status = 0 THEN body ELSE 'HTTP ' || status END);
  END IF;
  BEGIN
    FOR e IN SELECT * FROM pod.feed_entries(body) LOOP
      alternate := coalesce(alternate, e.alternate);
      BEGIN
        parsed := pod.pubsub_parse('video', e.entry);
        PERFORM pod.pubsub_publish(f.url, 'urn:pgpod:feed', coalesce(parsed ->> 'id', md5(e.entry)), e.entry, f.url);
        published := published + 1;
      EXCEPTION WHEN SQLSTATE '2200M' OR SQLSTATE '2200N' OR SQLSTATE 'PX001' OR SQLSTATE '54000'
                  OR SQLSTATE '22023' THEN
        skipped := skipped + 1;
        first_error := coalesce(first_error, SQLERRM);
      END;
    END LOOP;
  EXCEPTION WHEN SQLSTATE '2200M' OR SQLSTATE '2200N' OR SQLSTATE 'PX001' OR SQLSTATE '54000' THEN
    PERFORM pod.feed_poll_failed(f.id, status, 'the feed cannot be read: ' || SQLERRM);
    RETURN jsonb_build_object('status', status, 'error', SQLERRM);
  END;
  UPDATE pod.feeds
     SET failures = 0, last_status = 200, etag = new_etag, last_modified = modified,
         last_error = CASE WHEN skipped > 0 THEN skipped || ' entries skipped: ' || first_error END,
         last_polled_at = now(), polls = polls + 1, last_body_bytes = octet_length(body),
         -- An Atom feed naming its RSS alternate: poll that (Media RSS) from now on.
         poll_url = CASE WHEN alternate ~ '^https?://[^\s]+$' AND poll_url = url THEN alternate ELSE poll_url END,
         next_poll_at = CASE WHEN alternate ~ '^https?://[^\s]+$' AND poll_url = url THEN now() ELSE now() + poll_interval END
   WHERE id = f.id;
  RETURN jsonb_build_object('status', 200, 'published', published, 'skipped', skipped);
END $$;

-- The federator's GET jobs: those of 70_federation (make_friends, verify_key), then a
-- feed poll, then a node synchronisation page (76). Enqueues the feed polls due first.
CREATE FUNCTION pod.fetch_jobs_claim(worker text)
  RETURNS TABLE (job_id bigint, kind text, pod_url text, url text, headers text[])
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE j pod.jobs;
BEGIN
  RETURN QUERY SELECT * FROM pod.fetches_claim(worker);
  IF FOUND THEN
    RETURN;
  END IF;
  PERFORM pod.feeds_enqueue_due();
  SELECT * INTO j FROM pod.job_claim('feed_poll', worker, 1);
  IF FOUND THEN
    RETURN QUERY SELECT j.id, j.kind, j.target, r.url, r.headers FROM pod.feed_poll_request((j.payload ->> 'feed')::bigint) r;
    IF NOT FOUND THEN  -- unsubscribed meanwhile
      PERFORM pod.job_complete(ARRAY[j.id], worker);
    END IF;
    RETURN;
  END IF;
  RETURN QUERY SELECT * FROM pod.pubsub_sync_claim(worker);
END $$;
COMMENT ON FUNCTION pod.fetch_jobs_claim(text) IS 'Claims one GET job for the federator: make_friends, verify_key, feed_poll or pubsub_sync.';

CREATE FUNCTION pod.fetch_jobs_finish(job_id bigint, worker text, urls text[], answers text[], statuses integer[] DEFAULT NULL)
  RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE k text := (SELECT j.kind FROM pod.jobs j WHERE j.id = job_id);
BEGIN
  IF k = 'feed_poll' THEN
    RETURN pod.feed_poll_finish(job_id, worker, answers[1]);
  ELSIF k = 'pubsub_sync' THEN
    RETURN pod.pubsub_sync_finish(job_id, worker, answers[1]);
  END IF;
  RETURN pod.fetches_finish(job_id, worker, urls, answers, statuses);
END $$;
GRANT EXECUTE ON FUNCTION pod.fetch_jobs_claim(text), pod.fetch_jobs_finish(bigint, text, text[], text[], integer[]) TO pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.feed_subscribe(text, interval), pod.feed_unsubscribe(text) TO pgpod_admin;

CREATE VIEW api.feeds WITH (security_invoker = true) AS
  SELECT url, poll_url, poll_interval, next_poll_at, last_status, last_error, last_polled_at, failures, polls, not_modified
    FROM pod.feeds;
COMMENT ON VIEW api.feeds IS 'Feed subscriptions and how their polling goes (admins only).';
GRANT SELECT ON api.feeds TO pgpod_admin;
