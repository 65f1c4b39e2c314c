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

-- A friend's JSON video activities (video.published / updated / removed, as pods
-- before 0.4 send them) are applied to the pubsub cache by pod.inbox_video_apply
-- (77_video_pubsub).

-- A time a friend sent (ISO 8601 / RFC 3339 with a zone): NULL when absent; 22007 when
-- it is not such a time (PostgreSQL's own words like 'now' are refused).
CREATE FUNCTION pod.federated_time(t text) RETURNS timestamptz
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  IF t IS NULL THEN
    RETURN NULL;
  END IF;
  IF t !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$' THEN
    RAISE EXCEPTION 'not an RFC 3339 time: %', left(t, 60) USING ERRCODE = '22P02';
  END IF;
  RETURN t::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
  RAISE EXCEPTION 'not an RFC 3339 time: %', left(t, 60) USING ERRCODE = '22P02';
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
    -- The answer carries our key; our videos (the seed's "in return") come by the new
    -- friend's synchronisation of our videos node (76_pubsub_federation).
    PERFORM pod.deliver(ARRAY[sender], 'friend.accept', jsonb_build_object('public_key', me.public_key));
    RETURN jsonb_build_object('status', 'befriended');
  WHEN 'friend.accept' THEN
    -- Now a friend: each side synchronises the other's nodes (friends_pubsub_sync).
    UPDATE pod.friends SET state = 'active', public_key = sender_key, updated_at = now()
     WHERE url = sender AND state = 'pending';
    -- Videos listed by a pod before 0.4.
    FOR v IN SELECT jsonb_array_elements(CASE WHEN jsonb_typeof(activity -> 'videos') = 'array'
                                              THEN activity -> 'videos' ELSE '[]' END) LOOP
      PERFORM pod.inbox_video_apply(sender, v);
    END LOOP;
    RETURN jsonb_build_object('status', 'accepted');
  WHEN 'friend.remove' THEN
    DELETE FROM pod.friends WHERE url = sender AND state <> 'revoked';
    DELETE FROM pod.videos WHERE origin = sender;
    DELETE FROM pod.jobs WHERE kind = 'deliver' AND target = sender AND state = 'waiting';
    RETURN jsonb_build_object('status', 'removed');
  WHEN 'video.published', 'video.updated' THEN
    RETURN jsonb_build_object('status', pod.inbox_video_apply(sender, activity -> 'object'));
  WHEN 'video.removed' THEN
    RETURN jsonb_build_object('status', pod.inbox_video_apply(sender, activity -> 'object', true));
  WHEN 'pubsub.publish', 'pubsub.retract', 'pubsub.purge', 'pubsub.delete' THEN
    RETURN pod.pubsub_receive(sender, activity);
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

-- Inbound checks as the signature standards have them -----------------------------

-- An HTTP-date in the IMF-fixdate form (RFC 9110 5.6.7; what draft-cavage and RFC 9421
-- signers send): "Sun, 06 Nov 1994 08:49:37 GMT", the weekday matching the date. NULL
-- for anything else (PostgreSQL's own words such as 'now', ISO dates, other zones).
CREATE FUNCTION pod.http_date_parse(t text) RETURNS timestamptz
  LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pod AS $$
DECLARE
  m text[] := regexp_match(t, '^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT$');
  at timestamptz;
BEGIN
  IF m IS NULL THEN
    RETURN NULL;
  END IF;
  at := make_timestamptz(m[4]::integer,
                         array_position('{Jan,Feb,Mar,Apr,May,Jun,Jul,Aug,Sep,Oct,Nov,Dec}'::text[], m[3]),
                         m[2]::integer, m[5]::integer, m[6]::integer, m[7]::double precision, 'UTC');
  IF m[7]::integer > 59 OR to_char(at AT TIME ZONE 'UTC', 'Dy') <> m[1] THEN
    RETURN NULL;
  END IF;
  RETURN at;
EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
  RETURN NULL;
END $$;
COMMENT ON FUNCTION pod.http_date_parse(text) IS 'An IMF-fixdate HTTP-date, or NULL when the text is not one.';

-- Checks a Digest header (RFC 3230: comma-separated "algorithm=value", the algorithm
-- case-insensitive) against a body: a SHA-256 must be among them and match; a SHA-512
-- given must match too; other algorithms are ignored. NULL when it holds, else why not.
CREATE FUNCTION pod.http_digest_problem(header text, body text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pod AS $$
DECLARE
  item text;
  alg text;
  val text;
  bytes bytea := convert_to(coalesce(body, ''), 'UTF8');
  sha256_seen boolean := false;
BEGIN
  IF header IS NULL OR header = '' THEN
    RETURN 'Digest header is missing';
  END IF;
  FOREACH item IN ARRAY string_to_array(header, ',') LOOP
    alg := lower(btrim(split_part(item, '=', 1)));
    val := btrim(substr(btrim(item), strpos(btrim(item), '=') + 1));
    IF strpos(item, '=') = 0 OR alg = '' THEN
      RETURN 'Digest is not a list of algorithm=value';
    END IF;
    IF alg = 'sha-256' THEN
      IF val IS DISTINCT FROM encode(sha256(bytes), 'base64') THEN
        RETURN 'Digest does not match the body';
      END IF;
      sha256_seen := true;
    ELSIF alg = 'sha-512' AND val IS DISTINCT FROM translate(encode(sha512(bytes), 'base64'), E'\n', '') THEN
      RETURN 'Digest does not match the body';
    END IF;
  END LOOP;
  IF NOT sha256_seen THEN
    RETURN 'Digest needs a SHA-256 of the body';
  END IF;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION pod.http_digest_problem(text, text) IS 'Why a Digest header (RFC 3230) does not hold for a body; NULL when it does.';

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.hosts', '[]', 'Host names (host or host:port, as in a Host header) this pod answers to; an inbound request must be signed for one of them. Empty: the host of the pod''s URL (pod.identity).'),
  ('federation.inbox_max_bytes', '1048576', 'Largest inbound federation body accepted (413 beyond).'),
  ('federation.rejections_per_address', '20', 'Refused inbound requests logged as rows per client address and minute; the rest (and every refusal that names no known pod''s key) only count in pod.inbox_rejection_counts.'),
  ('federation.rejections_per_minute', '200', 'Refused inbound requests logged as rows per minute in all.'),
  ('federation.key_fetches_per_minute', '30', 'Key fetches (verify_key jobs) an inbound request may cause per minute in all; beyond, 429 with Retry-After.'),
  ('federation.key_fetches_per_address', '5', 'Key fetches an inbound request from one client address may cause per minute.'),
  ('federation.held_per_pod', '100', 'Requests that may wait for one pod''s key to be fetched (pod.inbox_held); beyond, 429 with Retry-After.');
UPDATE pod.setting_defaults SET minimum = 256, maximum = 67108864 WHERE name = 'federation.inbox_max_bytes';
UPDATE pod.setting_defaults SET minimum = 0, maximum = 100000
 WHERE name IN ('federation.rejections_per_address', 'federation.rejections_per_minute',
                'federation.key_fetches_per_minute', 'federation.key_fetches_per_address', 'federation.held_per_pod');

-- The Host values this pod answers to (lower case): federation.hosts, or the
-- authority of its URL (with and without the scheme's default port).
CREATE FUNCTION pod.own_hosts() RETURNS text[]
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT CASE WHEN jsonb_array_length(h) > 0
              THEN ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(h) x)
              ELSE (SELECT CASE WHEN a ~ ':[0-9]+$' THEN ARRAY[lower(a)]
                                ELSE ARRAY[lower(a), lower(a) || CASE WHEN u LIKE 'https:%' THEN ':443' ELSE ':80' END] END
                      FROM (SELECT url AS u, substring(url FROM '^https?://([^/]+)$') AS a FROM pod.identity) i)
         END
    FROM (SELECT CASE WHEN jsonb_typeof(pod.setting('federation.hosts')) = 'array'
                      THEN pod.setting('federation.hosts') ELSE '[]' END AS h) s
$$;
COMMENT ON FUNCTION pod.own_hosts() IS 'The Host header values an inbound request may be signed for (federation.hosts, or the pod''s URL).';

-- A keyId: an absolute http(s) URL whose origin (scheme://authority) is the sending
-- pod; a path (/users/x#main-key, /actor) is allowed and is where its key document is
-- fetched, from that origin only. NULL when it is not such a URL.
CREATE FUNCTION pod.key_id_origin(key_id text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN (regexp_match(key_id, '^(https?://[^/\s#?@]+)(/[^\s#]*)?(#[^\s]*)?$'))[1];

-- Refusals that are not logged as rows are counted here, per day, status and reason.
CREATE TABLE pod.inbox_rejection_counts (
  day date NOT NULL,
  status integer NOT NULL,
  reason text NOT NULL,
  count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (day, status, reason)
);
COMMENT ON TABLE pod.inbox_rejection_counts IS 'Refused inbound requests not logged as rows (unsigned noise, unknown keys, beyond the per-address and per-minute row limits), counted per day, status and reason.';
GRANT SELECT ON pod.inbox_rejection_counts TO pgpod_admin;
ALTER TABLE pod.inbox_rejections ADD COLUMN client_ip text;
CREATE INDEX inbox_rejections_ip_idx ON pod.inbox_rejections (client_ip, received_at);

-- Records a refusal: a row (a few headers, each cut to 512 characters) when the
-- request named the key of a pod this pod knows and the per-address and per-minute
-- limits allow; else one more in the day's counter for that reason (its words up to
-- the first quote or colon: what the request chose never makes a new counter).
CREATE FUNCTION pod.inbox_log_refusal(status integer, sqlstate text, reason text, key_id text, headers jsonb,
                                      body_sha256 bytea, client_ip text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  known boolean := EXISTS (SELECT 1 FROM pod.friends f WHERE f.url = rtrim(pod.key_id_origin(key_id), '/'));
  kept jsonb;
BEGIN
  IF known
     AND (SELECT count(*) FROM pod.inbox_rejections r WHERE r.client_ip IS NOT DISTINCT FROM inbox_log_refusal.client_ip
             AND r.received_at > now() - interval '1 minute') < (pod.setting('federation.rejections_per_address'))::integer
     AND (SELECT count(*) FROM pod.inbox_rejections r WHERE r.received_at > now() - interval '1 minute')
         < (pod.setting('federation.rejections_per_minute'))::integer THEN
    SELECT jsonb_object_agg(k, left(headers ->> k, 512)) INTO kept
      FROM unnest(ARRAY['host', 'date', 'digest', 'signature', 'content-type', 'content-length', 'user-agent']) k
     WHERE headers ? k;
    INSERT INTO pod.inbox_rejections (status, sqlstate, reason, key_id, headers, body_sha256, client_ip)
      VALUES (status, sqlstate, left(reason, 1000), left(key_id, 512), kept, body_sha256, client_ip);
    RETURN;
  END IF;
  INSERT INTO pod.inbox_rejection_counts AS c (day, status, reason, count)
    VALUES (current_date, status, left(btrim(substring(reason FROM '^[^''":]*')), 100), 1)
  ON CONFLICT ON CONSTRAINT inbox_rejection_counts_pkey DO UPDATE SET count = c.count + 1;
END $$;

-- Verifies and applies one inbound request; raises PT400/PT401/PT403/PT413/PT429 when
-- refused. headers: the request's headers with lower-case names (as the gateway's
-- request.headers); path: the request target as sent (path and query).
CREATE FUNCTION pod.inbox_receive(body json, headers jsonb, method text DEFAULT 'POST', path text DEFAULT NULL,
                                  client_ip text DEFAULT NULL)
  RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
<<receive>>
DECLARE
  raw text := body::text;
  params jsonb;
  signed text[];
  sent_at timestamptz;
  window_s integer := (pod.setting('federation.date_window'))::integer;
  key_id text;
  sender text;
  friend pod.friends;
  activity jsonb;
  sig bytea;
  problem text;
  req_target text := coalesce(path, '/');
BEGIN
  IF octet_length(raw) > (pod.setting('federation.inbox_max_bytes'))::integer THEN
    PERFORM pod.inbox_reject('PT413', 'body is larger than federation.inbox_max_bytes');
  END IF;
  IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
    PERFORM pod.inbox_reject('PT400', 'request headers are missing');
  END IF;
  IF NOT headers ? 'signature' THEN
    PERFORM pod.inbox_reject('PT401', 'request is not signed (no Signature header)');
  END IF;
  IF length(headers ->> 'signature') > 8192 THEN
    PERFORM pod.inbox_reject('PT400', 'Signature header is too long');
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
  -- Signed for this pod: its Host, at its inbox (a request signed for another pod,
  -- replayed here, is refused; request ids are per target, so de-duplication could not).
  IF NOT lower(coalesce(headers ->> 'host', '')) = ANY (pod.own_hosts()) THEN
    PERFORM pod.inbox_reject('PT401', 'request is signed for another host, not for this pod');
  END IF;
  IF upper(method) <> 'POST' OR split_part(req_target, '?', 1) <> pod.setting('federation.inbox_path') #>> '{}' THEN
    PERFORM pod.inbox_reject('PT401', 'request target is not this pod''s inbox');
  END IF;

  sent_at := pod.http_date_parse(headers ->> 'date');
  IF sent_at IS NULL THEN
    PERFORM pod.inbox_reject(CASE WHEN headers ? 'date' THEN 'PT400' ELSE 'PT401' END,
                             CASE WHEN headers ? 'date' THEN 'Date header is not an HTTP-date (IMF-fixdate)'
                                  ELSE 'Date header is missing' END);
  END IF;
  IF abs(extract(epoch FROM clock_timestamp() - sent_at)) > window_s THEN
    PERFORM pod.inbox_reject('PT401', format('Date is more than %s s away from now', window_s));
  END IF;
  problem := pod.http_digest_problem(headers ->> 'digest', coalesce(raw, ''));
  IF problem IS NOT NULL THEN
    PERFORM pod.inbox_reject('PT400', problem);
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

  key_id := params ->> 'keyId';
  sender := rtrim(pod.key_id_origin(key_id), '/');
  IF sender IS NULL OR sender !~ '^https?://[^/\s]+$' THEN
    PERFORM pod.inbox_reject('PT401', 'keyId is not an http(s) URL of a pod');
  END IF;
  SELECT * INTO friend FROM pod.friends WHERE url = sender;
  IF friend.state = 'revoked' THEN
    PERFORM pod.inbox_reject('PT403', 'pod ' || sender || ' is blocked');
  END IF;

  IF friend.public_key IS NULL THEN
    -- A pod we know no key of: a friend request, or the acceptance of ours, is worth
    -- fetching its key for; anything else from a pod whose key is being fetched (a
    -- new friend's first deliveries racing its acceptance) waits with it, in order.
    -- The request waits (202) until the key published at its keyId (on the pod's own
    -- origin) is known; its signature is checked against that key then
    -- (pod.verify_key_finish).
    IF NOT (activity ->> 'type' = 'friend.request' OR (activity ->> 'type' = 'friend.accept' AND friend.state = 'pending')
            OR EXISTS (SELECT 1 FROM pod.inbox_held h WHERE h.sender = receive.sender)) THEN
      PERFORM pod.inbox_reject('PT401', 'unknown key ' || quote_literal(left(key_id, 200)));
    END IF;
    -- (a sealed body is opened, and checked, when it is applied)
    IF NOT activity ? 'encrypted' THEN
      PERFORM pod.inbox_check_activity(sender, activity);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pod.jobs WHERE kind = 'verify_key' AND target = sender AND state IN ('waiting', 'running')) THEN
      -- a key fetch is work a stranger causes: bounded per minute, in all and per address
      IF (SELECT count(*) FROM pod.jobs j WHERE j.kind = 'verify_key' AND j.created_at > now() - interval '1 minute')
           >= (pod.setting('federation.key_fetches_per_minute'))::integer
         OR (SELECT count(*) FROM pod.jobs j WHERE j.kind = 'verify_key' AND j.created_at > now() - interval '1 minute'
                AND j.payload ->> 'client_ip' = client_ip) >= (pod.setting('federation.key_fetches_per_address'))::integer THEN
          PERFORM pod.inbox_reject('PT429', 'too many key fetches; retry later');
      END IF;
      PERFORM pod.job_enqueue('verify_key', jsonb_build_object('url', sender, 'key_id', key_id, 'client_ip', client_ip), sender);
    END IF;
    IF (SELECT count(*) FROM pod.inbox_held h WHERE h.sender = receive.sender)
         >= (pod.setting('federation.held_per_pod'))::integer THEN
      PERFORM pod.inbox_reject('PT429', 'too many requests wait for the key of ' || sender || '; retry later');
    END IF;
    INSERT INTO pod.inbox_signatures (signature_hash) VALUES (sha256(sig)) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      PERFORM pod.inbox_reject('PT401', 'replayed request (signature already seen)');
    END IF;
    INSERT INTO pod.inbox_held (sender, method, path, headers, signed, signature, activity)
      VALUES (sender, method, req_target, headers, signed, sig, activity);
    PERFORM set_config('response.status', '202', true);
    RETURN jsonb_build_object('status', 'held', 'id', activity ->> 'id',
                              'reason', 'the key of ' || sender || ' is being fetched from its URL');
  END IF;

  IF NOT pod.inbox_signature_ok(signed, method, req_target, headers, sig, friend.public_key) THEN
    PERFORM pod.inbox_reject('PT401', 'signature does not verify');
  END IF;
  INSERT INTO pod.inbox_signatures (signature_hash) VALUES (sha256(sig)) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    PERFORM pod.inbox_reject('PT401', 'replayed request (signature already seen)');
  END IF;
  RETURN pod.inbox_apply(sender, friend.public_key, activity);
END $$;

-- The public key in a key document fetched for pod_url at key_id: an actor-style
-- document as Mastodon and PeerTube publish it ({"id", "publicKey": {"id", "owner",
-- "publicKeyPem"}}, publicKey maybe an array: the one whose id is key_id), or this
-- pod's older identity document ({"url", "public_key"}, maybe as a one-row array).
-- The document and its key must belong to pod_url's origin. NULL when unusable.
CREATE FUNCTION pod.key_document_key(doc jsonb, pod_url text, key_id text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  k jsonb;
  pem text;
BEGIN
  IF jsonb_typeof(doc) = 'array' AND jsonb_array_length(doc) = 1 THEN
    doc := doc -> 0;   -- the answer of a PostgREST-style view
  END IF;
  IF jsonb_typeof(doc) IS DISTINCT FROM 'object' THEN
    RETURN NULL;
  END IF;
  IF doc ? 'publicKey' THEN
    IF rtrim(pod.key_id_origin(doc ->> 'id'), '/') IS DISTINCT FROM pod_url THEN
      RETURN NULL;
    END IF;
    SELECT x INTO k FROM jsonb_array_elements(CASE jsonb_typeof(doc -> 'publicKey') WHEN 'array' THEN doc -> 'publicKey'
                                                   ELSE jsonb_build_array(doc -> 'publicKey') END) x
     WHERE jsonb_typeof(x) = 'object' AND (x ->> 'id' = key_id OR NOT x ? 'id')
     ORDER BY x ? 'id' DESC LIMIT 1;
    IF k IS NULL OR (k ? 'owner' AND rtrim(pod.key_id_origin(k ->> 'owner'), '/') IS DISTINCT FROM pod_url) THEN
      RETURN NULL;
    END IF;
    pem := k ->> 'publicKeyPem';
  ELSIF rtrim(doc ->> 'url', '/') = pod_url THEN
    pem := doc ->> 'public_key';
  END IF;
  IF pem LIKE '-----BEGIN PUBLIC KEY-----%' OR pem LIKE '-----BEGIN RSA PUBLIC KEY-----%' THEN
    RETURN pem;
  END IF;
  RETURN NULL;
END $$;

-- This pod as an actor-style document, served at its keyId's URL (GET / with Accept:
-- application/activity+json or application/ld+json) so that peers that dereference
-- keyIds as Mastodon does find the key there.
CREATE FUNCTION api.actor() RETURNS json
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM set_config('response.headers', '[{"Content-Type": "application/activity+json; charset=utf-8"}]', true);
  RETURN (SELECT json_build_object(
           '@context', json_build_array('https://www.w3.org/ns/activitystreams', 'https://w3id.org/security/v1'),
           'id', i.url, 'type', 'Application', 'preferredUsername', substring(i.url FROM '^https?://([^/:]+)'),
           'inbox', i.url || (pod.setting('federation.inbox_path') #>> '{}'), 'url', i.url,
           'publicKey', json_build_object('id', i.url || '#main-key', 'owner', i.url, 'publicKeyPem', i.public_key),
           'public_key', i.public_key)
            FROM pod.identity i);
END $$;
COMMENT ON FUNCTION api.actor() IS 'This pod as an actor document with its public key (what its keyId dereferences to).';
GRANT EXECUTE ON FUNCTION api.actor() TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

-- The end of a verify_key job (called by the federator with what <pod>/identity
-- answered, NULL when it answered nothing usable): the key is taken when the
-- document names that pod's URL; then each request held for the pod is checked
-- against it and applied, or refused (a row in pod.inbox_rejections). No answer:
-- the job fails and is retried; when it dies, pod.inbox_prune refuses what waits.
-- Returns what happened to each held request.
CREATE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text, status integer) RETURNS jsonb
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
  key := pod.key_document_key(doc, pod_url, coalesce(job.payload ->> 'key_id', pod_url || '#main-key'));
  IF key IS NULL THEN
    -- a 4xx at the key's URL (404, 410, ...) will not change: dead at once; anything
    -- else (no answer, 5xx, a document without the key) is retried
    PERFORM pod.job_fail(ARRAY[job_id], ARRAY['no identity document for ' || pod_url || ' at its URL: '
                         || coalesce(left(answer, 200), 'no answer')
                         || CASE WHEN status < 0 THEN ' (refused: a private address)' ELSE coalesce(' (HTTP ' || status || ')', '') END], worker,
                         ARRAY[coalesce(pod.http_failure_permanent(status), false)], NULL);
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
CREATE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text) RETURNS jsonb
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.verify_key_finish(job_id, worker, answer, NULL);
GRANT EXECUTE ON FUNCTION pod.verify_key_finish(bigint, text, text), pod.verify_key_finish(bigint, text, text, integer) TO pgpod_worker;

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

-- POST /rpc/inbox. A refused request gets 400/401/403/413/429 with {"code", "message"}:
-- by a PTxxx error, or (federation.inbox_reject_mode = "status") by response.status,
-- logged by pod.inbox_log_refusal (a bounded row, or a counter). Either way it changes
-- nothing else. The request target checked is the one the client sent, query
-- included (the gateway's request.target; request.path without it otherwise).
CREATE FUNCTION api.inbox(json) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  hdrs jsonb;
  reply jsonb;
  state text;
  msg text;
  ip text := nullif(current_setting('request.client_ip', true), '');
BEGIN
  BEGIN
    hdrs := nullif(current_setting('request.headers', true), '')::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    hdrs := NULL;
  END;
  BEGIN
    reply := pod.inbox_receive($1, hdrs, coalesce(nullif(current_setting('request.method', true), ''), 'POST'),
                               coalesce(nullif(current_setting('request.target', true), ''),
                                        nullif(current_setting('request.path', true), ''), '/rpc/inbox'),
                               ip);
    RETURN reply::json;
  EXCEPTION WHEN SQLSTATE 'PT400' OR SQLSTATE 'PT401' OR SQLSTATE 'PT403' OR SQLSTATE 'PT413' OR SQLSTATE 'PT429' THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
  END;
  RAISE LOG 'pgpod: inbox refused a request (%): % [keyId %]', state, msg,
    coalesce(left(substring(hdrs ->> 'signature' FROM 'keyId="([^"]*)"'), 200), 'none');
  IF pod.setting('federation.inbox_reject_mode') #>> '{}' IS DISTINCT FROM 'status' THEN
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg;
  END IF;
  PERFORM pod.inbox_log_refusal(substr(state, 3)::integer, state, msg,
            substring(hdrs ->> 'signature' FROM 'keyId="([^"]*)"'), hdrs,
            sha256(convert_to(coalesce($1::text, ''), 'UTF8')), ip);
  PERFORM set_config('response.status', substr(state, 3), true);
  IF state = 'PT401' THEN
    -- a 401 names its scheme (RFC 9110 11.6.1; the challenge of the HTTP Signatures draft)
    PERFORM set_config('response.headers', json_build_array(json_build_object('WWW-Authenticate',
      'Signature realm="pgpod",headers="(request-target) host date digest"'))::text, true);
  ELSIF state = 'PT429' THEN
    PERFORM set_config('response.headers', json_build_array(json_build_object('Retry-After', '60'))::text, true);
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
  DELETE FROM pod.inbox_rejection_counts WHERE day < current_date - 30;
  DELETE FROM pod.federated_tombstones
   WHERE removed_at < now() - (pod.setting('federation.tombstone_retention') #>> '{}')::interval;
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
