-- pgpod 0.1 -> 0.2. Every change to sql/*.sql after 0.1 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.2'" to load this file. \quit

-- Keys of new pods are fetched from their own URL (verify_key), never taken from the
-- request that presents them; make_friends and verify_key GETs are signed.
DROP FUNCTION pod.inbox_dispatch(text, jsonb);

CREATE FUNCTION pod.inbox_dispatch(sender text, sender_key text, activity jsonb) RETURNS jsonb
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  kind text := activity ->> 'type';
  me pod.identity;
  v jsonb;
BEGIN
  CASE kind
  WHEN 'friend.request' THEN
    SELECT * INTO me FROM pod.identity;
    INSERT INTO pod.friends AS f (url, public_key, state) VALUES (sender, sender_key, 'active')
      ON CONFLICT (url) DO UPDATE SET state = 'active', public_key = EXCLUDED.public_key, updated_at = now()
      WHERE f.state = 'pending';
    -- The answer carries our key and our published videos (the seed's "in return").
    PERFORM pod.deliver(ARRAY[sender], 'friend.accept', jsonb_build_object(
      'public_key', me.public_key, 'videos', coalesce((SELECT jsonb_agg(pod.video_object(x) ORDER BY x.created_at)
        FROM pod.videos x WHERE x.origin IS NULL AND x.state = 'published'), '[]')));
    RETURN jsonb_build_object('status', 'befriended');
  WHEN 'friend.accept' THEN
    UPDATE pod.friends SET state = 'active', public_key = sender_key, updated_at = now()
     WHERE url = sender AND state = 'pending';
    IF FOUND THEN
      -- Now that it is a friend, it gets our videos too.
      PERFORM pod.deliver(ARRAY[sender], 'video.published', jsonb_build_object('object', pod.video_object(x)))
         FROM pod.videos x WHERE x.origin IS NULL AND x.state = 'published';
    END IF;
    FOR v IN SELECT jsonb_array_elements(CASE WHEN jsonb_typeof(activity -> 'videos') = 'array'
                                              THEN activity -> 'videos' ELSE '[]' END) LOOP
      PERFORM pod.inbox_video_upsert(sender, v);
    END LOOP;
    RETURN jsonb_build_object('status', 'accepted');
  WHEN 'friend.remove' THEN
    DELETE FROM pod.friends WHERE url = sender AND state <> 'revoked';
    DELETE FROM pod.videos WHERE origin = sender;
    DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = sender AND state = 'waiting';
    RETURN jsonb_build_object('status', 'removed');
  WHEN 'video.published', 'video.updated' THEN
    PERFORM pod.inbox_video_upsert(sender, activity -> 'object');
    RETURN jsonb_build_object('status', 'applied');
  WHEN 'video.removed' THEN
    DELETE FROM pod.videos WHERE uuid = (activity #>> '{object,uuid}')::uuid AND origin = sender;
    RETURN jsonb_build_object('status', 'applied');
  ELSE
    PERFORM pod.inbox_reject('PT400', 'unknown activity type ' || coalesce(quote_literal(kind), 'NULL'));
  END CASE;
  RETURN NULL;
END $$;

CREATE FUNCTION pod.inbox_signature_ok(signed text[], method text, path text, headers jsonb, sig bytea, key text)
  RETURNS boolean
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  RETURN pod.rsa_sha256_verify(convert_to(pod.httpsig_signing_string(signed, method, coalesce(path, '/'), headers), 'UTF8'),
                               sig, key);
EXCEPTION WHEN invalid_parameter_value THEN
  RETURN false;
END $$;

-- An activity names its sender as actor and carries a request id (a uuid).
CREATE FUNCTION pod.inbox_check_activity(sender text, activity jsonb) RETURNS void
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  IF rtrim(activity ->> 'actor', '/') IS DISTINCT FROM sender THEN
    PERFORM pod.inbox_reject('PT401', 'actor does not match the signing key');
  END IF;
  IF coalesce(activity ->> 'id', '') !~ '^[0-9a-fA-F-]{36}$' THEN
    PERFORM pod.inbox_reject('PT400', 'activity needs an id (a uuid)');
  END IF;
END $$;

CREATE FUNCTION pod.inbox_apply(sender text, sender_key text, activity jsonb) RETURNS jsonb
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  me pod.identity;
  state pod.friend_state := (SELECT f.state FROM pod.friends f WHERE f.url = sender);
BEGIN
  IF activity ? 'encrypted' THEN
    SELECT * INTO me FROM pod.identity;
    BEGIN
      activity := convert_from(pod.envelope_open(
                    decode(activity #>> '{encrypted,key}', 'base64'), decode(activity #>> '{encrypted,iv}', 'base64'),
                    decode(activity #>> '{encrypted,tag}', 'base64'), decode(activity #>> '{encrypted,data}', 'base64'),
                    me.private_key), 'UTF8')::jsonb;
    EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation OR null_value_not_allowed
                OR character_not_in_repertoire THEN
      PERFORM pod.inbox_reject('PT400', 'encrypted body cannot be opened: ' || SQLERRM);
    END;
    IF activity IS NULL OR jsonb_typeof(activity) <> 'object' THEN
      PERFORM pod.inbox_reject('PT400', 'encrypted body is not a JSON object');
    END IF;
  END IF;

  PERFORM pod.inbox_check_activity(sender, activity);
  IF state = 'revoked' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is blocked');
  END IF;
  IF activity ->> 'type' NOT IN ('friend.request', 'friend.accept') AND state IS DISTINCT FROM 'active' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is not a friend');
  END IF;

  INSERT INTO pod.inbox_applied (request_id, sender, type) VALUES ((activity ->> 'id')::uuid, sender, activity ->> 'type')
    ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('status', 'duplicate', 'id', activity ->> 'id');
  END IF;
  RETURN pod.inbox_dispatch(sender, sender_key, activity) || jsonb_build_object('id', activity ->> 'id');
END $$;

CREATE TABLE pod.inbox_held (
  id bigserial PRIMARY KEY,
  sender text NOT NULL,
  method text NOT NULL,
  path text NOT NULL,
  headers jsonb NOT NULL,
  signed text[] NOT NULL,
  signature bytea NOT NULL,
  activity jsonb NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.inbox_held IS 'Signed requests from pods whose key is being fetched from their URL (verify_key jobs); applied or refused once it is known.';
CREATE INDEX inbox_held_sender_idx ON pod.inbox_held (sender);
SELECT pg_catalog.pg_extension_config_dump('pod.inbox_held', '');
SELECT pg_catalog.pg_extension_config_dump('pod.inbox_held_id_seq', '');
GRANT SELECT ON pod.inbox_held TO pgpod_admin;

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.identity_path', '"/identity"', 'Path where a pod publishes its URL and public key (GET, JSON); a new pod''s key is fetched from there.');
INSERT INTO pod.job_kinds (kind, retries, description) VALUES
  ('verify_key', 6, 'Fetch a pod''s public key from its own URL, then apply the requests held for it (federator).');

CREATE OR REPLACE FUNCTION pod.inbox_receive(body json, headers jsonb, method text DEFAULT 'POST', path text DEFAULT NULL)
  RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  raw text := body::text;
  params jsonb;
  signed text[];
  sent_at timestamptz;
  window_s integer := (pod.setting('federation.date_window'))::integer;
  sender text;
  friend pod.friends;
  activity jsonb;
  sig bytea;
BEGIN
  IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
    PERFORM pod.inbox_reject('PT400', 'request headers are missing');
  END IF;
  IF NOT headers ? 'signature' THEN
    PERFORM pod.inbox_reject('PT401', 'request is not signed (no Signature header)');
  END IF;
  SELECT jsonb_object_agg(m[1], m[2]) INTO params
    FROM regexp_matches(headers ->> 'signature', '([A-Za-z]+)="([^"]*)"', 'g') m;
  IF params IS NULL OR NOT params ?& ARRAY['keyId', 'signature'] THEN
    PERFORM pod.inbox_reject('PT401', 'Signature header needs keyId and signature');
  END IF;
  IF coalesce(params ->> 'algorithm', 'rsa-sha256') <> 'rsa-sha256' THEN
    PERFORM pod.inbox_reject('PT401', 'signature algorithm must be rsa-sha256');
  END IF;
  signed := string_to_array(lower(coalesce(params ->> 'headers', 'date')), ' ');
  IF NOT signed @> ARRAY['(request-target)', 'host', 'date', 'digest'] THEN
    PERFORM pod.inbox_reject('PT401', 'signature must cover (request-target) host date digest');
  END IF;

  BEGIN
    sent_at := (headers ->> 'date')::timestamptz;
  EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
    PERFORM pod.inbox_reject('PT400', 'Date header is not a date');
  END;
  IF sent_at IS NULL THEN
    PERFORM pod.inbox_reject('PT401', 'Date header is missing');
  END IF;
  IF abs(extract(epoch FROM clock_timestamp() - sent_at)) > window_s THEN
    PERFORM pod.inbox_reject('PT401', format('Date is more than %s s away from now', window_s));
  END IF;
  IF headers ->> 'digest' IS DISTINCT FROM pod.http_digest(coalesce(raw, '')) THEN
    PERFORM pod.inbox_reject('PT400', 'Digest does not match the body');
  END IF;

  BEGIN
    activity := raw::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    PERFORM pod.inbox_reject('PT400', 'body is not JSON');
  END;
  IF jsonb_typeof(activity) IS DISTINCT FROM 'object' THEN
    PERFORM pod.inbox_reject('PT400', 'body must be a JSON object');
  END IF;
  BEGIN
    sig := decode(params ->> 'signature', 'base64');
  EXCEPTION WHEN invalid_parameter_value THEN
    PERFORM pod.inbox_reject('PT401', 'signature is not base64');
  END;

  sender := rtrim(split_part(params ->> 'keyId', '#', 1), '/');
  IF sender !~ '^https?://[^/\s]+$' THEN
    PERFORM pod.inbox_reject('PT401', 'keyId is not a pod URL');
  END IF;
  SELECT * INTO friend FROM pod.friends WHERE url = sender;
  IF friend.state = 'revoked' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is blocked');
  END IF;

  IF friend.public_key IS NULL THEN
    -- A pod we know no key of: a friend request, or the acceptance of ours, is worth
    -- fetching its key for; anything else from a pod whose key is being fetched (a
    -- new friend's first deliveries racing its acceptance) waits with it, in order.
    -- The request waits (202) until the key published at the pod's URL is known; its
    -- signature is checked against that key then (pod.verify_key_finish).
    IF NOT (activity ->> 'type' = 'friend.request' OR (activity ->> 'type' = 'friend.accept' AND friend.state = 'pending')
            OR EXISTS (SELECT 1 FROM pod.inbox_held h WHERE h.sender = rtrim(split_part(params ->> 'keyId', '#', 1), '/'))) THEN
      PERFORM pod.inbox_reject('PT401', 'unknown key ' || quote_literal(params ->> 'keyId'));
    END IF;
    -- (a sealed body is opened, and checked, when it is applied)
    IF NOT activity ? 'encrypted' THEN
      PERFORM pod.inbox_check_activity(sender, activity);
    END IF;
    INSERT INTO pod.inbox_signatures (signature_hash) VALUES (sha256(sig)) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      PERFORM pod.inbox_reject('PT401', 'replayed request (signature already seen)');
    END IF;
    INSERT INTO pod.inbox_held (sender, method, path, headers, signed, signature, activity)
      VALUES (sender, method, coalesce(path, '/'), headers, signed, sig, activity);
    IF NOT EXISTS (SELECT 1 FROM pod.jobs WHERE kind = 'verify_key' AND target = sender AND state IN ('waiting', 'running')) THEN
      PERFORM pod.job_enqueue('verify_key', jsonb_build_object('url', sender), sender);
    END IF;
    PERFORM set_config('response.status', '202', true);
    RETURN jsonb_build_object('status', 'held', 'id', activity ->> 'id',
                              'reason', 'the key of ' || sender || ' is being fetched from its URL');
  END IF;

  IF NOT pod.inbox_signature_ok(signed, method, path, headers, sig, friend.public_key) THEN
    PERFORM pod.inbox_reject('PT401', 'signature does not verify');
  END IF;
  INSERT INTO pod.inbox_signatures (signature_hash) VALUES (sha256(sig)) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    PERFORM pod.inbox_reject('PT401', 'replayed request (signature already seen)');
  END IF;
  RETURN pod.inbox_apply(sender, friend.public_key, activity);
END $$;

CREATE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  job pod.jobs;
  pod_url text;
  doc jsonb;
  key text;
  h pod.inbox_held;
  reply jsonb;
  results jsonb := '[]';
  state text;
  msg text;
BEGIN
  SELECT * INTO job FROM pod.jobs j WHERE j.id = job_id AND j.kind = 'verify_key'
     AND j.state = 'running' AND j.worker = verify_key_finish.worker FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no verify_key job % leased to %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  pod_url := job.payload ->> 'url';
  BEGIN
    doc := answer::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    doc := NULL;
  END;
  IF jsonb_typeof(doc) = 'array' AND jsonb_array_length(doc) = 1 THEN
    doc := doc -> 0;   -- the answer of a PostgREST-style view
  END IF;
  IF jsonb_typeof(doc) = 'object' AND rtrim(doc ->> 'url', '/') = pod_url AND doc ->> 'public_key' LIKE '-----BEGIN PUBLIC KEY-----%' THEN
    key := doc ->> 'public_key';
  END IF;
  IF key IS NULL THEN
    PERFORM pod.job_fail(ARRAY[job_id], ARRAY['no identity document for ' || pod_url || ' at its URL: '
                         || coalesce(left(answer, 200), 'no answer')], worker);
    RETURN jsonb_build_object('status', 'failed');
  END IF;

  FOR h IN SELECT * FROM pod.inbox_held WHERE sender = pod_url ORDER BY id FOR UPDATE LOOP
    BEGIN
      IF NOT pod.inbox_signature_ok(h.signed, h.method, h.path, h.headers, h.signature, key) THEN
        PERFORM pod.inbox_reject('PT401', 'signature does not verify with the key published at ' || pod_url);
      END IF;
      reply := pod.inbox_apply(pod_url, key, h.activity);
    EXCEPTION WHEN SQLSTATE 'PT400' OR SQLSTATE 'PT401' OR SQLSTATE 'PT403' THEN
      GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
      INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256)
        VALUES (substr(state, 3)::integer, state, msg, pod_url || '#main-key', h.headers,
                sha256(convert_to(h.activity::text, 'UTF8')));
      RAISE LOG 'pgpod: held request from % refused (%): %', pod_url, state, msg;
      reply := jsonb_build_object('status', 'refused', 'code', state, 'message', msg);
    END;
    DELETE FROM pod.inbox_held WHERE id = h.id;
    results := results || reply;
  END LOOP;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  RETURN jsonb_build_object('status', 'verified', 'applied', results);
END $$;
GRANT EXECUTE ON FUNCTION pod.verify_key_finish(bigint, text, text) TO pgpod_worker;

CREATE OR REPLACE FUNCTION pod.inbox_prune() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE a integer; b integer; c integer; d integer;
BEGIN
  DELETE FROM pod.inbox_signatures
   WHERE received_at < now() - make_interval(secs => 2 * (pod.setting('federation.date_window'))::integer);
  GET DIAGNOSTICS a = ROW_COUNT;
  DELETE FROM pod.inbox_applied WHERE applied_at < now() - (pod.setting('federation.dedup_retention') #>> '{}')::interval;
  GET DIAGNOSTICS b = ROW_COUNT;
  DELETE FROM pod.inbox_rejections WHERE received_at < now() - interval '30 days';
  GET DIAGNOSTICS c = ROW_COUNT;
  -- Held requests whose key could not be fetched (no verify_key job left alive).
  WITH gone AS (
    DELETE FROM pod.inbox_held h
     WHERE NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'verify_key' AND j.target = h.sender
                                                  AND j.state IN ('waiting', 'running'))
    RETURNING h.*)
  INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256)
    SELECT 401, 'PT401', 'the key of ' || sender || ' could not be fetched from its URL', sender || '#main-key',
           headers, sha256(convert_to(activity::text, 'UTF8'))
      FROM gone;
  GET DIAGNOSTICS d = ROW_COUNT;
  RETURN a + b + c + d;
END $$;

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
  SELECT * INTO j FROM pod.job_claim('verify_key', worker, 1);
  IF FOUND THEN
    path := pod.setting('federation.identity_path') #>> '{}';
    RETURN QUERY
      SELECT j.id, j.kind, j.payload ->> 'url', (j.payload ->> 'url') || path,
             pod.httpsig_sign_request('GET', (j.payload ->> 'url') || path, '', at, me.url || '#main-key', me.private_key);
  END IF;
END $$;
COMMENT ON FUNCTION pod.fetches_claim(text) IS 'Claims one make_friends or verify_key job: the signed GETs to send.';

-- The end of a fetch job: what each pod answered (NULL: nothing usable).
CREATE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE k text := (SELECT j.kind FROM pod.jobs j WHERE j.id = job_id);
BEGIN
  IF k = 'make_friends' THEN
    RETURN to_jsonb(pod.make_friends_finish(job_id, worker, urls, answers));
  ELSIF k = 'verify_key' THEN
    IF cardinality(answers) IS DISTINCT FROM 1 THEN
      RAISE EXCEPTION 'a verify_key job has one answer' USING ERRCODE = '22023';
    END IF;
    RETURN pod.verify_key_finish(job_id, worker, answers[1]);
  END IF;
  RAISE EXCEPTION 'job % is not a fetch job', job_id USING ERRCODE = 'P0002';
END $$;
GRANT EXECUTE ON FUNCTION pod.fetches_claim(text), pod.fetches_finish(bigint, text, text[], text[]) TO pgpod_worker;

REVOKE EXECUTE ON FUNCTION pod.inbox_dispatch(text, text, jsonb), pod.inbox_check_activity(text, jsonb), pod.inbox_signature_ok(text[], text, text, jsonb, bytea, text),
  pod.inbox_apply(text, text, jsonb), pod.verify_key_finish(bigint, text, text), pod.fetches_claim(text),
  pod.fetches_finish(bigint, text, text[], text[]) FROM PUBLIC;
-- 00_base: pod.setting in PL/pgSQL (its plan is kept; a SQL body was planned per call).
CREATE OR REPLACE FUNCTION pod.setting(setting_name text) RETURNS jsonb
  LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  RETURN (SELECT coalesce(o.value, d.value) FROM pod.setting_defaults d
            LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = setting_name);
END $$;

-- 60_queue: room on each page for a job's later versions; job_claim reads the policy in
-- one statement; job_complete keeps its plan;
-- jobs_prune reads the policy per kind, not per row.
ALTER TABLE pod.jobs SET (fillfactor = 40);
CREATE OR REPLACE FUNCTION pod.job_claim(job_kind text, worker text, max_jobs integer DEFAULT 100, lease interval DEFAULT NULL)
  RETURNS SETOF pod.jobs
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  lease_end timestamptz;
  last_attempt integer;
BEGIN
  IF worker IS NULL OR worker = '' THEN
    RAISE EXCEPTION 'worker id is required' USING ERRCODE = '22023';
  END IF;
  IF max_jobs IS NULL OR max_jobs < 1 OR max_jobs > 10000 THEN
    RAISE EXCEPTION 'max_jobs must be between 1 and 10000, not %', max_jobs USING ERRCODE = '22023';
  END IF;
  -- The policy as pod.job_policy gives it, read in this one statement (its plan is
  -- kept for the session) rather than through nested pod.setting calls.
  SELECT now() + coalesce(job_claim.lease, k.lease,
                          (SELECT coalesce(o.value, d.value) #>> '{}' FROM pod.setting_defaults d
                             LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = 'queue.lease')::interval),
         coalesce(k.retries,
                  (SELECT coalesce(o.value, d.value) FROM pod.setting_defaults d
                     LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = 'queue.retries')::integer) + 1
    INTO lease_end, last_attempt
    FROM (SELECT job_kind) q LEFT JOIN pod.job_kinds k ON k.kind = q.job_kind;
  IF lease_end <= now() THEN
    RAISE EXCEPTION 'lease must be positive' USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
    UPDATE pod.jobs j
       SET state = 'running', attempts = j.attempts + 1, worker = job_claim.worker, run_at = lease_end
      FROM (SELECT c.id FROM pod.jobs c
             WHERE c.kind = job_kind AND c.state IN ('waiting', 'running') AND c.run_at <= now()
               AND (c.state = 'waiting' OR c.attempts < last_attempt)
             ORDER BY c.run_at
             LIMIT max_jobs
             FOR UPDATE SKIP LOCKED) claimed
     WHERE j.id = claimed.id
    RETURNING j.*;
END $$;

CREATE OR REPLACE FUNCTION pod.job_complete(job_ids bigint[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod SET plan_cache_mode = force_custom_plan AS $$
DECLARE n integer;
BEGIN
  -- A join with the ids, not "id = ANY (job_ids)" (whose plans AND in a scan of the
  -- whole claimable index, dead entries included until vacuum), planned for each call:
  -- a generic plan made while the table was small keeps seq-scanning it as it grows.
  UPDATE pod.jobs j SET state = 'done', finished_at = now()
    FROM unnest(job_ids) AS x(id)
   WHERE j.id = x.id AND j.state = 'running' AND j.worker = job_complete.worker;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION pod.jobs_prune() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.jobs j
     SET state = 'dead', finished_at = now(),
         last_error = 'lease expired on the last attempt (the worker stopped or crashed)'
    FROM (SELECT (pod.setting('queue.retries'))::integer AS retries) d
   WHERE j.state = 'running' AND j.run_at < now()
     AND j.attempts > coalesce((SELECT k.retries FROM pod.job_kinds k WHERE k.kind = j.kind), d.retries);
  WITH d AS MATERIALIZED (
    SELECT (pod.setting('queue.retention') #>> '{}')::interval AS retention,
           (pod.setting('queue.dead_retention') #>> '{}')::interval AS dead_retention),
  bound AS MATERIALIZED (
    SELECT now() - least(d.retention, d.dead_retention,
                         (SELECT min(k.retention) FROM pod.job_kinds k)) AS newest
      FROM d),
  gone AS (
    DELETE FROM pod.jobs j
     USING d, bound
     WHERE j.state IN ('done', 'dead') AND j.finished_at < bound.newest
       AND ((j.state = 'done'
             AND j.finished_at < now() - coalesce((SELECT k.retention FROM pod.job_kinds k WHERE k.kind = j.kind),
                                                  d.retention))
         OR (j.state = 'dead' AND j.finished_at < now() - d.dead_retention))
    RETURNING 1)
  SELECT count(*)::integer FROM gone
$$;

-- 60_queue: job_complete scans the primary key for the ids, the state compared as
-- text (not the claimable index, nor a join whose order the planner can get wrong).
CREATE OR REPLACE FUNCTION pod.job_complete(job_ids bigint[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod SET plan_cache_mode = force_custom_plan AS $$
DECLARE n integer;
BEGIN
  -- One scan of the primary key for the ids, planned for each call (a generic plan
  -- made while the table was small keeps seq-scanning it as it grows). The state is
  -- compared as text so that the planner cannot prove the claimable index's predicate
  -- from it: with "state = 'running'" it scanned that whole partial index (dead entries
  -- too, until vacuum) and ANDed it with the ids, or, joined with unnest(job_ids), took
  -- it as the outer side and filtered it against every id. Without a join there is no
  -- join order to get wrong: a small table is seq-scanned, a large one probed.
  UPDATE pod.jobs j SET state = 'done', finished_at = now()
   WHERE j.id = ANY (job_ids) AND j.state::text = 'running' AND j.worker = job_complete.worker;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
