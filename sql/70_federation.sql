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
  updated_at timestamptz NOT NULL DEFAULT now(),
  key_fetched_at timestamptz
);
COMMENT ON TABLE pod.friends IS 'Other pods this pod federates with; score 0..1000 (starts at 100), revoked at 0.';
COMMENT ON COLUMN pod.friends.key_fetched_at IS 'When public_key was last fetched from the pod''s own URL (a verify_key job).';
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

-- Federation settings -------------------------------------------------------------------

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.inbox_path', '"/rpc/inbox"', 'Path of a friend pod''s inbox; deliveries are POSTed there.'),
  ('federation.friend_list_path', '"/rpc/friend_list"', 'Path that answers a pod''s list of friends (GET, JSON array of URLs).'),
  ('federation.encrypt', 'false', 'Encrypt delivery bodies for the recipient (AES-256-GCM, key wrapped with its RSA-OAEP key) when its key is known.'),
  ('federation.date_window', '1800', 'Seconds an inbound request''s Date may differ from now (PeerTube: 1800).'),
  ('federation.score_success', '10', 'Score added to a friend per delivered request.'),
  ('federation.score_failure', '10', 'Score taken from a friend per failed delivery attempt.'),
  ('federation.score_max', '1000', 'Highest score of a friend.'),
  ('federation.dedup_retention', '"7 days"', 'How long the request ids of applied inbound requests are kept to refuse applying them twice.');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 86400 WHERE name = 'federation.date_window';
UPDATE pod.setting_defaults SET minimum = 0, maximum = 1000
 WHERE name IN ('federation.score_success', 'federation.score_failure', 'federation.score_max');

ALTER TABLE pod.friends ADD COLUMN revoked_at timestamptz;
CREATE INDEX friends_active_idx ON pod.friends (url) WHERE state = 'active';

-- Enqueues a signed delivery of an activity to each of the targets; returns the job
-- ids. The activity gets a request id (its "id") that the receiver de-duplicates on,
-- so retries of the same job are applied once.
CREATE FUNCTION pod.deliver(targets text[], activity_type text, activity jsonb DEFAULT '{}')
  RETURNS SETOF bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me text := (SELECT url FROM pod.identity);
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  RETURN QUERY
    INSERT INTO pod.jobs (kind, target, payload)
      SELECT 'deliver', t, jsonb_build_object('activity',
               activity || jsonb_build_object('id', gen_random_uuid(), 'type', activity_type, 'actor', me,
                                              'published', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
        FROM unnest(targets) t
    RETURNING id;
END $$;

-- Making friends ----------------------------------------------------------------------

-- The seed's rule: befriend the pods asked, plus every pod that appears in at least
-- half of the lists they answered (lists: {"<asked url>": ["<url>", ...], ...}); never
-- this pod itself. Pure, so it is tested alone.
CREATE FUNCTION pod.friends_to_add(asked text[], lists jsonb, self_url text DEFAULT NULL) RETURNS text[]
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  WITH answered AS (
    SELECT l.key AS lister, l.value AS list FROM jsonb_each(coalesce(lists, '{}')) l
     WHERE jsonb_typeof(l.value) = 'array'),
  listed AS (
    SELECT rtrim(u, '/') AS url, count(DISTINCT a.lister) AS lists
      FROM answered a, jsonb_array_elements_text(a.list) u GROUP BY 1),
  chosen AS (
    SELECT rtrim(u, '/') AS url FROM unnest(asked) u
    UNION
    SELECT url FROM listed WHERE lists * 2 >= (SELECT count(*) FROM answered))
  SELECT coalesce(array_agg(url ORDER BY url), '{}') FROM chosen
   WHERE url IS DISTINCT FROM rtrim(self_url, '/') AND url ~ '^https?://[^/\s]+$'
$$;
COMMENT ON FUNCTION pod.friends_to_add(text[], jsonb, text) IS 'The make-friends rule: the pods asked plus those in at least half of their lists.';

-- Starts making friends with the given pods (asynchronous: the federator asks them for
-- their lists, then pod.make_friends_finish befriends). Returns the job id.
CREATE FUNCTION pod.make_friends(urls text[]) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE bad text;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may make friends' USING ERRCODE = '42501';
  END IF;
  IF urls IS NULL OR cardinality(urls) = 0 THEN
    RAISE EXCEPTION 'make_friends needs at least one pod URL' USING ERRCODE = '22023';
  END IF;
  SELECT u INTO bad FROM unnest(urls) u WHERE u IS NULL OR rtrim(u, '/') !~ '^https?://[^/\s]+$' LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'not a pod URL: %', coalesce(quote_literal(bad), 'NULL') USING ERRCODE = '22023',
      HINT = 'A pod URL is scheme://host[:port], without a path.';
  END IF;
  RETURN pod.job_enqueue('make_friends',
    jsonb_build_object('urls', (SELECT jsonb_agg(DISTINCT rtrim(u, '/')) FROM unnest(urls) u)));
END $$;

-- The second half of make_friends (called by the federator with the lists it got):
-- adds the chosen pods as pending friends and sends each a signed friend request
-- (URL and public key). Pods already known (including revoked ones) are left alone.
CREATE FUNCTION pod.make_friends_finish(job_id bigint, worker text, lists jsonb) RETURNS text[]
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  job pod.jobs;
  me pod.identity;
  added text[];
BEGIN
  SELECT * INTO job FROM pod.jobs j WHERE j.id = job_id AND j.kind = 'make_friends'
     AND j.state = 'running' AND j.worker = make_friends_finish.worker FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no make_friends job % leased to %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  SELECT * INTO me FROM pod.identity;
  WITH chosen AS (
    SELECT unnest(pod.friends_to_add(ARRAY(SELECT jsonb_array_elements_text(job.payload -> 'urls')),
                                     lists, me.url)) AS url),
  ins AS (
    INSERT INTO pod.friends (url, state) SELECT url, 'pending' FROM chosen
      ON CONFLICT (url) DO NOTHING RETURNING url)
  SELECT coalesce(array_agg(url ORDER BY url), '{}') INTO added FROM ins;
  PERFORM pod.deliver(added, 'friend.request', jsonb_build_object('public_key', me.public_key));
  UPDATE pod.jobs SET payload = payload || jsonb_build_object('lists', lists, 'added', added)
   WHERE id = job_id;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  RETURN added;
END $$;

-- The federator's form: the pods asked and their raw answers (NULL or not a JSON
-- array = no list from that pod).
CREATE FUNCTION pod.make_friends_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS text[]
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  lists jsonb := '{}';
  list jsonb;
BEGIN
  IF cardinality(urls) IS DISTINCT FROM cardinality(answers) THEN
    RAISE EXCEPTION 'urls and answers must have the same length' USING ERRCODE = '22023';
  END IF;
  FOR i IN 1 .. coalesce(cardinality(urls), 0) LOOP
    BEGIN
      list := answers[i]::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      list := NULL;
    END;
    IF jsonb_typeof(list) = 'array' THEN
      lists := lists || jsonb_build_object(rtrim(urls[i], '/'), list);
    END IF;
  END LOOP;
  RETURN pod.make_friends_finish(job_id, worker, lists);
END $$;

-- The federator's GET jobs: a make_friends job (each asked pod's friend list) or a
-- verify_key job (a pod's identity document). Claims one such job and returns one
-- signed GET per pod to ask (the Date is fresh on every attempt).
CREATE FUNCTION pod.fetches_claim(worker text)
  RETURNS TABLE (job_id bigint, kind text, pod_url text, url text, headers text[])
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me pod.identity;
  at timestamptz := clock_timestamp();
  j pod.jobs;
  path text;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  SELECT * INTO j FROM pod.job_claim('make_friends', worker, 1);
  IF FOUND THEN
    path := pod.setting('federation.friend_list_path') #>> '{}';
    RETURN QUERY
      SELECT j.id, j.kind, u.pod, u.pod || path,
             pod.httpsig_sign_request('GET', u.pod || path, '', at, me.url || '#main-key', me.private_key)
        FROM (SELECT rtrim(x, '/') AS pod FROM jsonb_array_elements_text(j.payload -> 'urls') x) u;
    RETURN;
  END IF;
  -- livechat: a remote video's chat information (sql/76_livechat_federation.sql), fetched
  -- at a URL on the video's own pod (checked by pod.chat_info_request)
  SELECT * INTO j FROM pod.job_claim('chat_info', worker, 1);
  IF FOUND THEN
    RETURN QUERY SELECT * FROM pod.chat_info_request(j, at, me, worker);
    RETURN;
  END IF;
  -- A key is fetched at its keyId's URL (without the fragment), which is on the
  -- claimed pod's own origin (pod.inbox_receive checked it; checked again here).
  SELECT * INTO j FROM pod.job_claim('verify_key', worker, 1);
  IF FOUND THEN
    path := split_part(coalesce(j.payload ->> 'key_id', (j.payload ->> 'url') || '#main-key'), '#', 1);
    IF rtrim(pod.key_id_origin(path), '/') IS DISTINCT FROM j.payload ->> 'url' THEN
      PERFORM pod.job_fail(ARRAY[j.id], ARRAY['keyId ' || left(path, 200) || ' is not on ' || (j.payload ->> 'url')],
                           worker, ARRAY[true], NULL);
      RETURN;
    END IF;
    RETURN QUERY
      SELECT j.id, j.kind, j.payload ->> 'url', path,
             pod.httpsig_sign_request('GET', path, '', at, me.url || '#main-key', me.private_key)
               || 'Accept: application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams", application/json;q=0.5'::text;
  END IF;
END $$;
COMMENT ON FUNCTION pod.fetches_claim(text) IS 'Claims one make_friends, chat_info or verify_key job: the signed GETs to send.';

-- The end of a fetch job: what each pod answered (NULL: nothing usable) and each
-- GET's HTTP status (0: no answer; NULL: not known). A verify_key or chat_info whose
-- URL answered a 4xx is dead at once (pod.http_failure_permanent).
CREATE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[], statuses integer[]) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE k text := (SELECT j.kind FROM pod.jobs j WHERE j.id = job_id);
BEGIN
  IF k = 'make_friends' THEN
    RETURN to_jsonb(pod.make_friends_finish(job_id, worker, urls, answers));
  ELSIF k = 'verify_key' THEN
    IF cardinality(answers) IS DISTINCT FROM 1 THEN
      RAISE EXCEPTION 'a verify_key job has one answer' USING ERRCODE = '22023';
    END IF;
    RETURN pod.verify_key_finish(job_id, worker, answers[1], statuses[1]);
  ELSIF k = 'chat_info' THEN
    IF cardinality(answers) IS DISTINCT FROM 1 THEN
      RAISE EXCEPTION 'a chat_info job has one answer' USING ERRCODE = '22023';
    END IF;
    RETURN pod.chat_info_finish(job_id, worker, answers[1], statuses[1]);
  END IF;
  RAISE EXCEPTION 'job % is not a fetch job', job_id USING ERRCODE = 'P0002';
END $$;

CREATE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS jsonb
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.fetches_finish(job_id, worker, urls, answers, NULL);
GRANT EXECUTE ON FUNCTION pod.fetches_claim(text), pod.fetches_finish(bigint, text, text[], text[]),
  pod.fetches_finish(bigint, text, text[], text[], integer[]) TO pgpod_worker;

-- Scores --------------------------------------------------------------------------------

-- Delivery outcomes change the target friend's score, batched per statement: a row
-- trigger (C, scores.c) tallies the outcomes its WHEN clause lets through (deliveries
-- leaving 'running' with their attempt counted: a release is no outcome), and the
-- statement trigger applies the tally here, one UPDATE per friend. The federator
-- reports outcomes in batches, so a busy friend is not a hot row.
CREATE FUNCTION pod.friends_apply_outcomes(targets text[], delivered integer[], failed integer[]) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  plus integer := (pod.setting('federation.score_success'))::integer;
  minus integer := (pod.setting('federation.score_failure'))::integer;
  top integer := (pod.setting('federation.score_max'))::integer;
BEGIN
  UPDATE pod.friends f
     SET score = greatest(0, least(top, f.score + d.change)),
         state = CASE WHEN f.score + d.change <= 0 THEN 'revoked' ELSE f.state END,
         updated_at = now()
    FROM (SELECT t, sum(dl * plus - fl * minus) AS change
            FROM unnest(targets, delivered, failed) x(t, dl, fl) GROUP BY t) d
   WHERE f.url = d.t AND f.state <> 'revoked' AND d.change <> 0;
END $$;

CREATE FUNCTION pod.jobs_score_outcome() RETURNS trigger
  AS 'MODULE_PATHNAME', 'jobs_score_outcome' LANGUAGE C;
CREATE FUNCTION pod.jobs_score_apply() RETURNS trigger
  AS 'MODULE_PATHNAME', 'jobs_score_apply' LANGUAGE C;
CREATE TRIGGER jobs_score_outcome AFTER UPDATE ON pod.jobs FOR EACH ROW
  WHEN (OLD.state = 'running' AND NEW.state IN ('done', 'waiting', 'dead') AND NEW.kind = 'deliver'
        AND NEW.attempts = OLD.attempts AND NEW.target IS NOT NULL)
  EXECUTE FUNCTION pod.jobs_score_outcome();
CREATE TRIGGER jobs_score_apply AFTER UPDATE ON pod.jobs
  FOR EACH STATEMENT EXECUTE FUNCTION pod.jobs_score_apply();

-- A revoked friend loses what came from it: its videos, its cached pubsub items and
-- the deliveries still waiting for it. It stays (blocked) until pod.unblock_friend.
-- Runs as the owner: an admin revoking a friend by hand needs no right on the queue.
CREATE FUNCTION pod.friends_revoked() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  NEW.revoked_at := now();
  NEW.score := 0;
  DELETE FROM pod.videos WHERE origin = NEW.url;
  DELETE FROM pod.pubsub_items WHERE publisher = NEW.url;
  DELETE FROM pod.pubsub_nodes WHERE service = NEW.url;
  DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = NEW.url AND state = 'waiting';
  RAISE LOG 'pgpod: friend % revoked', NEW.url;
  RETURN NEW;
END $$;
CREATE TRIGGER friends_revoked BEFORE UPDATE OF state ON pod.friends
  FOR EACH ROW WHEN (NEW.state = 'revoked' AND OLD.state <> 'revoked')
  EXECUTE FUNCTION pod.friends_revoked();

-- Admin: lets a revoked pod be befriended again (its row is removed).
CREATE FUNCTION pod.unblock_friend(friend_url text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may unblock a pod' USING ERRCODE = '42501';
  END IF;
  DELETE FROM pod.friends WHERE url = rtrim(friend_url, '/') AND state = 'revoked';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no revoked pod %', coalesce(quote_literal(friend_url), 'NULL') USING ERRCODE = 'P0002';
  END IF;
  RETURN true;
END $$;

-- Admin: tells a friend we leave it, then forgets it and its videos.
CREATE FUNCTION pod.remove_friend(friend_url text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE f pod.friends;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may remove a friend' USING ERRCODE = '42501';
  END IF;
  DELETE FROM pod.friends WHERE url = rtrim(friend_url, '/') AND state <> 'revoked' RETURNING * INTO f;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no friend %', coalesce(quote_literal(friend_url), 'NULL') USING ERRCODE = 'P0002';
  END IF;
  DELETE FROM pod.videos WHERE origin = f.url;
  DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = f.url AND state = 'waiting';
  IF f.state = 'active' THEN
    PERFORM pod.deliver(ARRAY[f.url], 'friend.remove');
  END IF;
  RETURN true;
END $$;

-- Admin: leaves the network: every friend is told and forgotten (blocked pods stay
-- blocked). Returns how many friends were left.
CREATE FUNCTION pod.leave_network() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer := 0; u text;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may leave the network' USING ERRCODE = '42501';
  END IF;
  FOR u IN SELECT url FROM pod.friends WHERE state <> 'revoked' ORDER BY url LOOP
    PERFORM pod.remove_friend(u);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

CREATE FUNCTION api.friend_list() RETURNS json
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT coalesce(json_agg(url ORDER BY url), '[]') FROM pod.friends WHERE state = 'active';
  END;
COMMENT ON FUNCTION api.friend_list() IS 'URLs of this pod''s active friends (what make_friends asks other pods).';
GRANT EXECUTE ON FUNCTION api.friend_list() TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

GRANT EXECUTE ON FUNCTION pod.make_friends(text[]), pod.unblock_friend(text), pod.remove_friend(text),
  pod.leave_network() TO pgpod_admin;
GRANT EXECUTE ON FUNCTION pod.make_friends_finish(bigint, text, jsonb), pod.make_friends_finish(bigint, text, text[], text[]) TO pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.friends_to_add(text[], jsonb, text) TO pgpod_admin, pgpod_worker;
