-- 72_inbox: the one entry point of inbound federation (POST /rpc/inbox → api.inbox):
-- verify the HTTP signature, Digest and Date, refuse replays, de-duplicate by request
-- id, decrypt, dispatch. A rejected request changes nothing but a row in
-- pod.inbox_rejections. Errors use PostgREST's PTxxx SQLSTATEs (PT400, PT401, PT403).

CREATE TABLE pod.inbox_signatures (
  signature_hash bytea PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.inbox_signatures IS 'Hashes of accepted signatures, kept 2 × federation.date_window to refuse replayed requests.';

CREATE TABLE pod.inbox_applied (
  request_id uuid PRIMARY KEY,
  sender text NOT NULL,
  type text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.inbox_applied IS 'Request ids of applied inbound activities: a retried delivery is acknowledged, not applied twice.';
CREATE INDEX inbox_applied_at_idx ON pod.inbox_applied (applied_at);

CREATE TABLE pod.inbox_rejections (
  id bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now(),
  status integer NOT NULL,
  sqlstate text NOT NULL,
  reason text NOT NULL,
  key_id text,
  headers jsonb,
  body_sha256 bytea
);
COMMENT ON TABLE pod.inbox_rejections IS 'Inbound federation requests that were refused, and why.';
CREATE INDEX inbox_rejections_at_idx ON pod.inbox_rejections (received_at);
GRANT SELECT ON pod.inbox_signatures, pod.inbox_applied, pod.inbox_rejections TO pgpod_admin;

CREATE FUNCTION pod.inbox_reject(sqlstate text, reason text) RETURNS void
  LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = reason;
END $$;

-- Upserts a friend's video from its activity object.
CREATE FUNCTION pod.inbox_video_upsert(sender text, video jsonb) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  id uuid;
  owner text;
BEGIN
  BEGIN
    id := (video ->> 'uuid')::uuid;
  EXCEPTION WHEN invalid_text_representation THEN
    PERFORM pod.inbox_reject('PT400', 'video uuid is not a uuid');
  END;
  IF id IS NULL OR coalesce(video ->> 'name', '') = '' THEN
    PERFORM pod.inbox_reject('PT400', 'video needs a uuid and a name');
  END IF;
  SELECT coalesce(origin, '(local)') INTO owner FROM pod.videos WHERE uuid = id;
  IF owner IS NOT NULL AND owner <> sender THEN
    PERFORM pod.inbox_reject('PT403', 'video ' || id || ' belongs to another pod');
  END IF;
  BEGIN
    INSERT INTO pod.videos AS v (uuid, channel_id, name, description, origin, author, magnet, thumbnail,
                                 state, duration, created_at, updated_at, remote)
      VALUES (id, NULL, video ->> 'name', video ->> 'description', sender, video ->> 'author',
              video ->> 'magnet', video ->> 'thumbnail', 'published',
              make_interval(secs => coalesce((video ->> 'duration')::double precision, 0)),
              coalesce((video ->> 'created_at')::timestamptz, now()),
              coalesce((video ->> 'updated_at')::timestamptz, now()), video)
    ON CONFLICT (uuid) DO UPDATE
      SET name = EXCLUDED.name, description = EXCLUDED.description, author = EXCLUDED.author,
          magnet = EXCLUDED.magnet, thumbnail = EXCLUDED.thumbnail, duration = EXCLUDED.duration,
          updated_at = EXCLUDED.updated_at, remote = EXCLUDED.remote
      WHERE v.origin = EXCLUDED.origin;
  EXCEPTION WHEN check_violation OR invalid_text_representation OR invalid_datetime_format
              OR datetime_field_overflow OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'video is malformed: ' || SQLERRM);
  END;
END $$;

-- Applies one verified, decrypted activity from a sender whose key (sender_key) has
-- verified the request. Returns the reply.
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
    IF kind LIKE 'chat.%' THEN   -- livechat: sql/76_livechat_federation.sql
      RETURN pod.inbox_livechat(sender, activity);
    END IF;
    PERFORM pod.inbox_reject('PT400', 'unknown activity type ' || coalesce(quote_literal(kind), 'NULL'));
  END CASE;
  RETURN NULL;
END $$;

-- Does a draft-cavage signature verify with a key? (false for a key or signature
-- that cannot be used at all.)
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

-- The part of an inbound request after its signature verified with sender_key:
-- decrypt, check actor, id and friendship, de-duplicate, dispatch.
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

-- Requests from pods whose key this pod does not know yet (a friend request, or the
-- acceptance of ours). The key is never taken from the request itself: it is
-- fetched from the pod's own URL (job kind verify_key, the federator GETs
-- <pod>/identity), and only then is the request checked and applied — so a pod
-- cannot claim another pod's URL with a key of its own.
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
  ('federation.identity_path', '"/identity"', 'Path where a pod publishes its URL and public key (GET, JSON); a new pod''s key is fetched from there.'),
  ('federation.key_refetch_interval', '"10 minutes"', 'A friend whose requests stop verifying has its key fetched again from its URL (a changed key), at most this often.');
INSERT INTO pod.job_kinds (kind, retries, description) VALUES
  ('verify_key', 6, 'Fetch a pod''s public key from its own URL, then apply the requests held for it (federator).');

-- Verifies and applies one inbound request; raises PT400/PT401/PT403 when refused.
-- headers: the request's headers with lower-case names (as the gateway's
-- request.headers); path: the request target (path and query).
CREATE FUNCTION pod.inbox_receive(body json, headers jsonb, method text DEFAULT 'POST', path text DEFAULT NULL)
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

-- The end of a verify_key job (called by the federator with what <pod>/identity
-- answered, NULL when it answered nothing usable): the key is taken when the
-- document names that pod's URL; then each request held for the pod is checked
-- against it and applied, or refused (a row in pod.inbox_rejections). No answer:
-- the job fails and is retried; when it dies, pod.inbox_prune refuses what waits.
-- Returns what happened to each held request.
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
GRANT EXECUTE ON FUNCTION pod.verify_key_finish(bigint, text, text) TO pgpod_worker;

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

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.inbox_reject_mode', '"status"', 'How api.inbox refuses a request: "raise" a PT400/PT401/PT403 error (the gateway answers that status; the refusal is logged in the server log only, since the error rolls back) or "status" (commit a row in pod.inbox_rejections and answer through the response.status GUC, for gateways that honour it as PostgREST does).');
UPDATE pod.setting_defaults SET allowed = '["raise", "status"]' WHERE name = 'federation.inbox_reject_mode';

-- POST /rpc/inbox. A refused request gets 400/401/403 with {"code", "message"}: by a
-- PTxxx error, or (federation.inbox_reject_mode = "status") by response.status with a
-- row in pod.inbox_rejections. Either way it changes nothing else.
CREATE FUNCTION api.inbox(json) RETURNS json
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
COMMENT ON FUNCTION api.inbox(json) IS 'Inbound federation: a signed (and maybe encrypted) activity from another pod.';
GRANT EXECUTE ON FUNCTION api.inbox(json) TO pgpod_anon, pgpod_user, pgpod_admin;

-- Removes inbox records past their use (signatures after 2 × date window, applied
-- request ids after federation.dedup_retention, rejections after 30 days).
CREATE FUNCTION pod.inbox_prune() RETURNS integer
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
GRANT EXECUTE ON FUNCTION pod.inbox_prune() TO pgpod_worker, pgpod_admin;
