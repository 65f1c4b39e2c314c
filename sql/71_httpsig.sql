-- 71_httpsig: HTTP Signatures (draft-cavage, as PeerTube and Mastodon send them) over
-- the C primitives of httpsig.c and envelope.c, and the claim of deliveries that
-- signs each request at claim time (fresh Date on every attempt; the private key
-- never leaves the database).

CREATE FUNCTION pod.rsa_sha256_sign(data bytea, private_key text) RETURNS bytea
  AS 'MODULE_PATHNAME', 'rsa_sha256_sign' LANGUAGE C STRICT STABLE PARALLEL SAFE;
CREATE FUNCTION pod.rsa_sha256_verify(data bytea, signature bytea, public_key text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'rsa_sha256_verify' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION pod.envelope_seal(plaintext bytea, public_key text,
                                  OUT wrapped_key bytea, OUT iv bytea, OUT tag bytea, OUT ciphertext bytea)
  AS 'MODULE_PATHNAME', 'envelope_seal' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
CREATE FUNCTION pod.envelope_open(wrapped_key bytea, iv bytea, tag bytea, ciphertext bytea, private_key text)
  RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_open' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.envelope_seal(bytea, text) IS 'AES-256-GCM encryption of a body with a fresh key wrapped by RSA-OAEP (SHA-256) for the recipient.';

-- RFC 7231 IMF-fixdate, the Date header.
CREATE FUNCTION pod.http_date(at timestamptz) RETURNS text
  LANGUAGE sql STABLE STRICT PARALLEL SAFE
  RETURN to_char(at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS "GMT"');

-- The Digest header value of a body.
CREATE FUNCTION pod.http_digest(body text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN 'SHA-256=' || encode(sha256(convert_to(body, 'UTF8')), 'base64');

-- The JSON body of a sealed message: {"encrypted": {key, iv, tag, data}} in base64.
CREATE FUNCTION pod.envelope_seal_json(body text, public_key text) RETURNS text
  LANGUAGE sql VOLATILE STRICT
  RETURN (SELECT jsonb_build_object('encrypted', jsonb_build_object(
                   'key', translate(encode(s.wrapped_key, 'base64'), E'\n', ''),
                   'iv', encode(s.iv, 'base64'), 'tag', encode(s.tag, 'base64'),
                   'data', translate(encode(s.ciphertext, 'base64'), E'\n', '')))::text
            FROM pod.envelope_seal(convert_to(body, 'UTF8'), public_key) s);

-- The signing string of draft-cavage: one "name: value" line per signed header.
-- headers holds the request's headers with lower-case names; 22023 when one is missing.
CREATE FUNCTION pod.httpsig_signing_string(signed_headers text[], method text, path text, headers jsonb)
  RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  h text;
  lines text[] := '{}';
BEGIN
  FOREACH h IN ARRAY signed_headers LOOP
    IF h = '(request-target)' THEN
      lines := lines || ('(request-target): ' || lower(method) || ' ' || path);
    ELSIF headers ? h THEN
      lines := lines || (h || ': ' || (headers ->> h));
    ELSE
      RAISE EXCEPTION 'signed header "%" is missing from the request', h USING ERRCODE = '22023';
    END IF;
  END LOOP;
  RETURN array_to_string(lines, E'\n');
END $$;

CREATE FUNCTION pod.httpsig_sign_request(method text, url text, body text, at timestamptz, key_id text, private_key text)
  RETURNS text[]
  AS 'MODULE_PATHNAME', 'httpsig_sign_request' LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.httpsig_sign_request(text, text, text, timestamptz, text, text) IS 'Header lines (Host, Date, Digest, Content-Type, Signature) of a request signed rsa-sha256 over (request-target) host date digest.';
REVOKE EXECUTE ON FUNCTION pod.httpsig_sign_request(text, text, text, timestamptz, text, text) FROM PUBLIC;

-- Signs a request as this pod: returns its headers as "Name: value" lines (Host,
-- Date, Digest, Content-Type, Signature), ready for curl.
CREATE FUNCTION pod.httpsig_sign_request(method text, url text, body text, at timestamptz DEFAULT now())
  RETURNS text[]
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me pod.identity;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  RETURN pod.httpsig_sign_request(method, url, coalesce(body, ''), at, me.url || '#main-key', me.private_key);
END $$;

-- Claims deliveries for a federator and signs each one now: the request to send.
-- The body is the activity's JSON, sealed for the recipient when federation.encrypt
-- is on and its key is known. Outcomes go back through pod.job_complete/job_fail.
CREATE FUNCTION pod.deliveries_claim(worker text, max_jobs integer DEFAULT 100, lease interval DEFAULT NULL)
  RETURNS TABLE (job_id bigint, target text, attempt integer, method text, url text, headers text[], body text)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  inbox text := pod.setting('federation.inbox_path') #>> '{}';
  encrypt boolean := (pod.setting('federation.encrypt'))::boolean;
  at timestamptz := clock_timestamp();
  me pod.identity;
BEGIN
  SELECT * INTO me FROM pod.identity;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this pod has no identity yet' USING ERRCODE = '55000', HINT = 'SELECT pod.init(url) makes it.';
  END IF;
  RETURN QUERY
    WITH claimed AS (
      SELECT c.id, c.target, c.attempts, (c.payload -> 'activity')::text AS plain, f.public_key
        FROM pod.job_claim('deliver', worker, max_jobs, lease) c
        LEFT JOIN pod.friends f ON f.url = c.target),
    bodies AS (
      SELECT c.id, c.target, c.attempts,
             CASE WHEN encrypt AND c.public_key IS NOT NULL
                       AND (c.plain::jsonb ->> 'type') NOT IN ('friend.request', 'friend.accept')
                  THEN pod.envelope_seal_json(c.plain, c.public_key) ELSE c.plain END AS body
        FROM claimed c)
    SELECT b.id, b.target, b.attempts, 'POST', b.target || inbox,
           pod.httpsig_sign_request('POST', b.target || inbox, b.body, at, me.url || '#main-key', me.private_key), b.body
      FROM bodies b ORDER BY b.id;
END $$;
COMMENT ON FUNCTION pod.deliveries_claim(text, integer, interval) IS 'Claims deliveries and returns them signed, ready to send (method, url, header lines, body).';

GRANT EXECUTE ON FUNCTION pod.deliveries_claim(text, integer, interval) TO pgpod_worker;

-- Failed deliveries: a refusal that no retry can change (4xx but 408 Request Timeout,
-- 425 Too Early and 429 Too Many Requests; or -1, the federator's own refusal to
-- connect to a private address) is permanent: the job is dead at once with its
-- reason, and the friend's score takes one step. 5xx, 408, 425, 429 and transport
-- errors (status 0) are transient: retried with backoff, no sooner than a Retry-After.
CREATE FUNCTION pod.http_failure_permanent(status integer) RETURNS boolean
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN status < 0 OR (status BETWEEN 400 AND 499 AND status NOT IN (408, 425, 429));
COMMENT ON FUNCTION pod.http_failure_permanent(integer) IS 'Is a failed request''s status a refusal no retry can change (4xx but 408, 425, 429; -1: refused before sending)?';

-- The federator's report of failed deliveries: each with its error, HTTP status (0:
-- no answer; -1: refused before sending) and Retry-After in seconds (NULL: none).
CREATE FUNCTION pod.deliveries_fail(job_ids bigint[], errors text[], worker text, statuses integer[],
                                    retry_after integer[]) RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.job_fail(job_ids, errors, worker,
                      ARRAY(SELECT coalesce(pod.http_failure_permanent(s), false)
                              FROM unnest(statuses) WITH ORDINALITY u(s, i) ORDER BY i),
                      ARRAY(SELECT CASE WHEN r IS NOT NULL THEN now() + make_interval(secs => least(r, 86400)) END
                              FROM unnest(retry_after) WITH ORDINALITY u(r, i) ORDER BY i));
COMMENT ON FUNCTION pod.deliveries_fail(bigint[], text[], text, integer[], integer[]) IS 'Failed delivery attempts: permanent (4xx) ones dead at once, transient ones retried (after Retry-After).';
GRANT EXECUTE ON FUNCTION pod.deliveries_fail(bigint[], text[], text, integer[], integer[]) TO pgpod_worker;
