-- pgpod 0.2 -> 0.3. Every change to sql/*.sql after 0.2 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.3'" to load this file. \quit

-- The queue: a claim is a HOT update (the lease ends in lease_until; the indexes read
-- finished_at), and an insert notifies only when a worker of its kind sleeps.
ALTER TABLE pod.jobs ADD COLUMN lease_until timestamptz;
-- A running job's lease used to end at run_at.
UPDATE pod.jobs SET lease_until = run_at WHERE state = 'running';
COMMENT ON TABLE pod.jobs IS 'Every queued job. run_at: not before (a claim leaves it alone); lease_until: the end of a running job''s lease. target: whom the job is for (a friend URL for deliveries).';
DROP INDEX pod.jobs_claimable_idx;
DROP INDEX pod.jobs_finished_idx;
CREATE INDEX jobs_claimable_idx ON pod.jobs (kind, run_at) WHERE finished_at IS NULL;
CREATE INDEX jobs_finished_idx ON pod.jobs (finished_at) WHERE finished_at IS NOT NULL;

-- The kind's sleep lock (queue.c). pod.job_claim takes and gives it back itself; a
-- worker of its own may hold it explicitly to hear every insert of a kind.
CREATE FUNCTION pod.job_sleep(job_kind text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'job_sleep' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.job_sleep(text) IS 'This session sleeps on a kind: every insert of it notifies pod_jobs_<kind> until pod.job_wake. Waits for inserts that saw no sleeper to commit.';
CREATE FUNCTION pod.job_wake(job_kind text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'job_wake' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.job_wake(text) IS 'Gives back what pod.job_sleep took.';
CREATE FUNCTION pod.job_claim_begin(job_kind text) RETURNS void
  AS 'MODULE_PATHNAME', 'job_claim_begin' LANGUAGE C VOLATILE;
CREATE FUNCTION pod.job_claim_end(job_kind text, full_batch boolean) RETURNS void
  AS 'MODULE_PATHNAME', 'job_claim_end' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION pod.job_sleep(text), pod.job_wake(text), pod.job_claim_begin(text),
  pod.job_claim_end(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.job_sleep(text), pod.job_wake(text) TO pgpod_worker;

CREATE OR REPLACE FUNCTION pod.job_claim(job_kind text, worker text, max_jobs integer DEFAULT 100, lease interval DEFAULT NULL)
  RETURNS SETOF pod.jobs
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  lease_end timestamptz;
  last_attempt integer;
  n integer;
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
  PERFORM pod.job_claim_begin(job_kind);
  RETURN QUERY
    UPDATE pod.jobs j
       SET state = 'running', attempts = j.attempts + 1, worker = job_claim.worker, lease_until = lease_end
      FROM (SELECT c.id FROM pod.jobs c
             WHERE c.kind = job_kind AND c.finished_at IS NULL AND c.run_at <= now()
               AND (c.state = 'waiting' OR (c.lease_until < now() AND c.attempts < last_attempt))
             ORDER BY c.run_at
             LIMIT max_jobs
             FOR UPDATE SKIP LOCKED) claimed
     WHERE j.id = claimed.id
    RETURNING j.*;
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pod.job_claim_end(job_kind, n = max_jobs);
END $$;

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
  UPDATE pod.jobs j SET state = 'done', finished_at = now(), lease_until = NULL
   WHERE j.id = ANY (job_ids) AND j.state::text = 'running' AND j.worker = job_complete.worker;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION pod.job_fail(job_ids bigint[], errors text[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  IF cardinality(job_ids) IS DISTINCT FROM cardinality(errors) THEN
    RAISE EXCEPTION 'job_ids and errors must have the same length' USING ERRCODE = '22023';
  END IF;
  WITH failed AS (
    SELECT f.id, coalesce(f.error, 'unknown error') AS error FROM unnest(job_ids, errors) f(id, error)),
  policy AS (
    SELECT k.kind, p.* FROM (SELECT DISTINCT j.kind FROM pod.jobs j JOIN failed USING (id)) k,
                            LATERAL pod.job_policy(k.kind) p),
  changed AS (
    UPDATE pod.jobs j
       SET state = CASE WHEN j.attempts > p.retries THEN 'dead'::pod.job_state ELSE 'waiting' END,
           run_at = CASE WHEN j.attempts > p.retries THEN j.run_at
                         ELSE now() + pod.job_backoff(j.attempts, p.base_delay, p.factor) END,
           finished_at = CASE WHEN j.attempts > p.retries THEN now() END,
           lease_until = NULL,
           last_error = left(failed.error, 2000)
      FROM failed, policy p
     WHERE j.id = failed.id AND p.kind = j.kind AND j.state = 'running' AND j.worker = job_fail.worker
    RETURNING 1)
  SELECT count(*) INTO n FROM changed;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION pod.job_release(job_ids bigint[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  WITH released AS (
    UPDATE pod.jobs SET state = 'waiting', attempts = greatest(attempts - 1, 0), run_at = now(), worker = NULL,
                        lease_until = NULL
     WHERE id = ANY (job_ids) AND state = 'running' AND jobs.worker = job_release.worker
    RETURNING kind)
  SELECT count(*), (SELECT count(pg_notify(pod.job_channel(k), ''))
                      FROM (SELECT DISTINCT kind FROM pod.jobs WHERE id = ANY (job_ids)) d(k))
    INTO n FROM released;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION pod.jobs_prune() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.jobs j
     SET state = 'dead', finished_at = now(), lease_until = NULL,
         last_error = 'lease expired on the last attempt (the worker stopped or crashed)'
    FROM (SELECT (pod.setting('queue.retries'))::integer AS retries) d
   WHERE j.state = 'running' AND j.lease_until < now()
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

CREATE OR REPLACE VIEW pod.queue_depth AS
  SELECT kind, state, count(*) AS jobs,
         count(*) FILTER (WHERE state = 'waiting' AND run_at <= now()) AS ready,
         count(*) FILTER (WHERE state = 'running' AND lease_until < now()) AS lease_expired,
         min(created_at) AS oldest_created_at
    FROM pod.jobs GROUP BY kind, state;

CREATE OR REPLACE FUNCTION pod.job_retry(job_id bigint) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.jobs SET state = 'waiting', attempts = 0, run_at = now(), worker = NULL, finished_at = NULL,
                      lease_until = NULL
   WHERE id = job_id AND state = 'dead';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no dead job %', job_id USING ERRCODE = 'P0002';
  END IF;
  PERFORM pg_notify(pod.job_channel(kind), '') FROM pod.jobs WHERE id = job_id;
  RETURN true;
END $$;

-- Key rotation: a friend whose requests stop verifying has its key fetched again.
ALTER TABLE pod.friends ADD COLUMN key_fetched_at timestamptz;
COMMENT ON COLUMN pod.friends.key_fetched_at IS 'When public_key was last fetched from the pod''s own URL (a verify_key job).';
INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.key_refetch_interval', '"10 minutes"', 'A friend whose requests stop verifying has its key fetched again from its URL (a changed key), at most this often.');
CREATE OR REPLACE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text) RETURNS jsonb
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
  old_key text;
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
  -- A friend that changed its key (pod.friend_keys_refresh asked): the key published
  -- at its URL is its key from now on.
  SELECT f.public_key INTO old_key FROM pod.friends f WHERE f.url = pod_url AND f.state <> 'revoked';
  UPDATE pod.friends f SET public_key = key, key_fetched_at = now(), updated_at = now()
   WHERE f.url = pod_url AND f.state <> 'revoked';
  IF old_key IS DISTINCT FROM key AND old_key IS NOT NULL THEN
    RAISE LOG 'pgpod: the key of % changed (the one published at its URL is taken)', pod_url;
  END IF;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  RETURN jsonb_build_object('status', 'verified', 'applied', results);
END $$;

-- Key rotation. A friend's requests that stop verifying (a row 'signature does not
-- verify' in pod.inbox_rejections since its key was last fetched) have its key
-- fetched again from its URL (a verify_key job; pod.verify_key_finish takes the key
-- published there), at most once per federation.key_refetch_interval. The refused
-- requests stay refused, with 401 (the sender retries them, as it retries any failed
-- delivery); the request only left a log row, and the federator calls this with its
-- pruning. Returns how many keys are to be fetched.
CREATE FUNCTION pod.friend_keys_refresh() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH due AS (
    SELECT f.url FROM pod.friends f
     WHERE f.state IN ('pending', 'active') AND f.public_key IS NOT NULL
       AND (f.key_fetched_at IS NULL
            OR f.key_fetched_at < now() - (pod.setting('federation.key_refetch_interval') #>> '{}')::interval)
       AND EXISTS (SELECT 1 FROM pod.inbox_rejections r
                    WHERE r.received_at > greatest(f.key_fetched_at, now() - interval '1 day')
                      AND r.reason = 'signature does not verify'
                      AND rtrim(split_part(r.key_id, '#', 1), '/') = f.url)
       AND NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'verify_key' AND j.target = f.url
                                                  AND j.state IN ('waiting', 'running'))),
  queued AS (
    SELECT pod.job_enqueue('verify_key', jsonb_build_object('url', url), url) FROM due)
  SELECT count(*)::integer FROM queued
$$;
REVOKE ALL ON FUNCTION pod.friend_keys_refresh() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.friend_keys_refresh() TO pgpod_worker, pgpod_admin;

-- A refused request answered 401 names its scheme (WWW-Authenticate: Signature).
CREATE OR REPLACE FUNCTION api.inbox(json) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  hdrs jsonb;
  reply jsonb;
  state text;
  msg text;
BEGIN
  BEGIN
    hdrs := nullif(current_setting('request.headers', true), '')::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    hdrs := NULL;
  END;
  BEGIN
    reply := pod.inbox_receive($1, hdrs, coalesce(nullif(current_setting('request.method', true), ''), 'POST'),
                               coalesce(nullif(current_setting('request.path', true), ''), '/rpc/inbox'));
    RETURN reply::json;
  EXCEPTION WHEN SQLSTATE 'PT400' OR SQLSTATE 'PT401' OR SQLSTATE 'PT403' THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
  END;
  RAISE LOG 'pgpod: inbox refused a request (%): % [keyId %]', state, msg,
    coalesce(substring(hdrs ->> 'signature' FROM 'keyId="([^"]*)"'), 'none');
  IF pod.setting('federation.inbox_reject_mode') #>> '{}' IS DISTINCT FROM 'status' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
  END IF;
  INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256)
    VALUES (substr(state, 3)::integer, state, msg,
            substring(hdrs ->> 'signature' FROM 'keyId="([^"]*)"'), hdrs, sha256(convert_to(coalesce($1::text, ''), 'UTF8')));
  PERFORM set_config('response.status', substr(state, 3), true);
  IF state = 'PT401' THEN
    -- a 401 names its scheme (RFC 9110 11.6.1; the challenge of the HTTP Signatures draft)
    PERFORM set_config('response.headers', json_build_array(json_build_object('WWW-Authenticate',
      'Signature realm="pgpod",headers="(request-target) host date digest"'))::text, true);
  END IF;
  RETURN json_build_object('code', state, 'message', msg);
END $$;

-- algorithm="hs2019" (GoToSocial, newer Mastodon) is accepted with an RSA key.
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
  -- hs2019 (draft-cavage-12: the algorithm is the key's) is what GoToSocial and newer
  -- Mastodon send; a pod's key is RSA, so it is RSA-SHA256 either way.
  IF coalesce(params ->> 'algorithm', 'rsa-sha256') NOT IN ('rsa-sha256', 'hs2019') THEN
    PERFORM pod.inbox_reject('PT401', 'signature algorithm must be rsa-sha256 (or hs2019 with an RSA key)');
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
