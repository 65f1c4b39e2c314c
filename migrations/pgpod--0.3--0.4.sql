-- pgpod 0.3 -> 0.4. Every change to sql/*.sql after 0.3 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.4'" to load this file. \quit

-- gateway defects (issue 10): a blob is recorded before its bytes are stored, so
-- only the collector removes blobs; file names refuse backslash, DEL, "." and "..".
UPDATE pod.files SET filename_visible = regexp_replace(filename_visible, '[\\\x7f]', '_', 'g')
 WHERE filename_visible ~ '[\\\x7f]';
UPDATE pod.files SET filename_visible = replace(filename_visible, '.', '_')
 WHERE filename_visible IN ('.', '..');
ALTER TABLE pod.files DROP CONSTRAINT files_filename_visible_check,
  ADD CONSTRAINT files_filename_visible_check
    CHECK (length(filename_visible) BETWEEN 1 AND 255 AND filename_visible !~ '[/\\\x01-\x1f\x7f]'
           AND filename_visible NOT IN ('.', '..'));

CREATE FUNCTION pod.blob_stored(sha256 bytea, size bigint) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
#variable_conflict use_column
BEGIN
  IF pod.current_user_id() IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF blob_stored.sha256 IS NULL OR length(blob_stored.sha256) <> 32
     OR blob_stored.size IS NULL OR blob_stored.size < 0 THEN
    RAISE EXCEPTION 'a blob needs a 32-byte sha256 and a size' USING ERRCODE = '22023';
  END IF;
  -- an orphaned blob being stored again is not the collector's for a while more
  INSERT INTO pod.blobs AS b (sha256, size, orphaned_at) VALUES (blob_stored.sha256, blob_stored.size, now())
    ON CONFLICT (sha256) DO UPDATE SET orphaned_at = now() WHERE b.orphaned_at IS NOT NULL;
  IF (SELECT b.size FROM pod.blobs b WHERE b.sha256 = blob_stored.sha256) <> blob_stored.size THEN
    RAISE EXCEPTION 'blob % is already stored with another size', encode(blob_stored.sha256, 'hex') USING ERRCODE = '22023';
  END IF;
END $$;
COMMENT ON FUNCTION pod.blob_stored(bytea, bigint) IS 'Records a blob the gateway is about to store (orphaned until a file uses it).';
REVOKE ALL ON FUNCTION pod.blob_stored(bytea, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.blob_stored(bytea, bigint) TO pgpod_user;

-- Streams: the gateway reads each room event once per worker process and fans it
-- out to the subscribers the database allows (api.rooms under each subscriber's
-- role, when it subscribes and when its membership changes). The read bypasses
-- row-level security, so only the gateway's login role may call it.
CREATE FUNCTION pod.room_events_feed(room uuid, after bigint, max_rows integer DEFAULT 500)
  RETURNS TABLE (seq bigint, kind text, message text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT e.seq, e.kind::text,
           coalesce(to_jsonb(m), jsonb_build_object('id', e.message_id, 'room_id', e.room_id, 'status', 'deleted'))::text
      FROM pod.room_events e
      LEFT JOIN pod.messages m ON m.id = e.message_id
     WHERE e.room_id = room_events_feed.room AND e.seq > room_events_feed.after
     ORDER BY e.seq
     LIMIT least(greatest(room_events_feed.max_rows, 0), 5000);
  END;
COMMENT ON FUNCTION pod.room_events_feed(uuid, bigint, integer) IS 'A room''s events after a seq, for the gateway''s shared stream read (its login role only).';
GRANT EXECUTE ON FUNCTION pod.room_events_feed(uuid, bigint, integer) TO pgpod_authenticator;

-- A change of who may read a room is announced to the streams ('<room>:<user>';
-- no user: everyone; room '*': every room, when a user's session ends), which ask
-- the database again for those subscribers.
CREATE FUNCTION pod.room_members_notify() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF TG_TABLE_NAME = 'rooms' THEN
    PERFORM pg_notify('pgpod_room_members', OLD.id || ':');
  ELSIF TG_TABLE_NAME = 'sessions' THEN
    PERFORM pg_notify('pgpod_room_members', '*:' || OLD.user_id);
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('pgpod_room_members', OLD.room_id || ':' || OLD.user_id);
  ELSE
    PERFORM pg_notify('pgpod_room_members', NEW.room_id || ':' || NEW.user_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER room_members_notify AFTER INSERT OR UPDATE OR DELETE ON pod.room_members
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_notify();
CREATE TRIGGER rooms_notify_members AFTER DELETE ON pod.rooms
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_notify();
CREATE TRIGGER sessions_notify_members AFTER UPDATE OF revoked_at OR DELETE ON pod.sessions
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_notify();
REVOKE ALL ON FUNCTION pod.room_events_feed(uuid, bigint, integer), pod.room_members_notify() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_events_feed(uuid, bigint, integer) TO pgpod_authenticator;
-- end of gateway defects (issue 10)

-- ==== federation: issue 11 (fed-defects) ============================================
-- Signed for this pod (Host, request-target with its query), Date as an HTTP-date,
-- Digest per RFC 3230, keyIds with paths and actor documents, bounded refusals and key
-- fetches, versions and tombstones of federated videos, permanent vs transient
-- delivery failures, and a restarted worker taking back its leases.

-- queue (sql/60_queue.sql)
-- Records failed attempts (one error per job), telling permanent failures
-- (permanent[i]: no retry can succeed, so the job is dead at once with its error) from
-- transient ones, which back off, no sooner than not_before[i] when given (an HTTP
-- Retry-After). NULL arrays: all transient, the policy's delays.
CREATE FUNCTION pod.job_fail(job_ids bigint[], errors text[], worker text, permanent boolean[],
                             not_before timestamptz[]) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  IF cardinality(job_ids) IS DISTINCT FROM cardinality(errors)
     OR (permanent IS NOT NULL AND cardinality(permanent) IS DISTINCT FROM cardinality(job_ids))
     OR (not_before IS NOT NULL AND cardinality(not_before) IS DISTINCT FROM cardinality(job_ids)) THEN
    RAISE EXCEPTION 'job_ids, errors, permanent and not_before must have the same length' USING ERRCODE = '22023';
  END IF;
  WITH failed AS (
    SELECT f.id, coalesce(f.error, 'unknown error') AS error, coalesce(permanent[f.i], false) AS permanent,
           not_before[f.i] AS not_before
      FROM unnest(job_ids, errors) WITH ORDINALITY f(id, error, i)),
  policy AS (
    SELECT k.kind, p.* FROM (SELECT DISTINCT j.kind FROM pod.jobs j JOIN failed USING (id)) k,
                            LATERAL pod.job_policy(k.kind) p),
  changed AS (
    UPDATE pod.jobs j
       SET state = CASE WHEN j.attempts > p.retries OR failed.permanent THEN 'dead'::pod.job_state ELSE 'waiting' END,
           run_at = CASE WHEN j.attempts > p.retries OR failed.permanent THEN j.run_at
                         ELSE greatest(now() + pod.job_backoff(j.attempts, p.base_delay, p.factor),
                                       CASE WHEN failed.not_before IS NOT NULL
                                            THEN least(failed.not_before, now() + interval '1 day') END) END,
           finished_at = CASE WHEN j.attempts > p.retries OR failed.permanent THEN now() END,
           lease_until = NULL,
           last_error = left(CASE WHEN failed.permanent THEN 'permanent: ' ELSE '' END || failed.error, 2000)
      FROM failed, policy p
     WHERE j.id = failed.id AND p.kind = j.kind AND j.state = 'running' AND j.worker = job_fail.worker
    RETURNING 1)
  SELECT count(*) INTO n FROM changed;
  RETURN n;
END $$;
-- Records failed attempts, all transient: back off, or dead when no retry is left.
-- Only jobs leased to this worker count. Returns how many were recorded.
CREATE OR REPLACE FUNCTION pod.job_fail(job_ids bigint[], errors text[], worker text) RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.job_fail(job_ids, errors, worker, NULL, NULL);
-- A worker that starts again under the identity it had (PGPOD_FEDERATOR_ID, which
-- scripts/pgpod and the systemd unit set) ends at once the leases its previous
-- process still holds: those jobs are claimable now instead of when their leases
-- would have ended, exactly as expired leases are (the lost attempt counts, no score
-- changes, and a job whose worker dies on its last attempt is declared dead by
-- pod.jobs_prune). Returns how many.
CREATE FUNCTION pod.job_reclaim(worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  IF worker IS NULL OR worker = '' THEN
    RAISE EXCEPTION 'worker id is required' USING ERRCODE = '22023';
  END IF;
  UPDATE pod.jobs j SET lease_until = now() - interval '1 microsecond'
   WHERE j.state = 'running' AND j.worker = job_reclaim.worker AND j.lease_until >= now();
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION pod.job_reclaim(text) IS 'A restarted worker ends the leases its previous process (same worker id) still holds.';
GRANT EXECUTE ON FUNCTION pod.job_fail(bigint[], text[], text, boolean[], timestamptz[]), pod.job_reclaim(text) TO pgpod_worker;

-- federation (sql/70_federation.sql): a key is fetched at its keyId's URL
-- The federator's GET jobs: a make_friends job (each asked pod's friend list) or a
-- verify_key job (a pod's identity document). Claims one such job and returns one
-- signed GET per pod to ask (the Date is fresh on every attempt).
CREATE OR REPLACE FUNCTION pod.fetches_claim(worker text)
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
-- The end of a fetch job: what each pod answered (NULL: nothing usable) and each
-- GET's HTTP status (0: no answer; NULL: not known). A verify_key whose key URL
-- answered a 4xx is dead at once (pod.http_failure_permanent).
CREATE OR REPLACE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[], statuses integer[]) RETURNS jsonb
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
  END IF;
  RAISE EXCEPTION 'job % is not a fetch job', job_id USING ERRCODE = 'P0002';
END $$;

CREATE OR REPLACE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS jsonb
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.fetches_finish(job_id, worker, urls, answers, NULL);
GRANT EXECUTE ON FUNCTION pod.fetches_claim(text), pod.fetches_finish(bigint, text, text[], text[]),
  pod.fetches_finish(bigint, text, text[], text[], integer[]) TO pgpod_worker;

-- signed deliveries (sql/71_httpsig.sql)
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

-- inbox (sql/72_inbox.sql)
DROP FUNCTION pod.inbox_video_upsert(text, jsonb);
-- Applies a friend's video.published/updated (remove false) or video.removed (remove
-- true) when it is newer, by the origin's (version, updated_at), than the video held
-- and than any removal of it (pod.federated_apply): deliveries retried out of order
-- end at the origin's last state, a late update never brings back a removed video, a
-- late removal never removes a newer one (a removal is kept as a tombstone). Returns
-- 'applied' or 'stale' (acknowledged, nothing changed).
CREATE FUNCTION pod.inbox_video_apply(sender text, video jsonb, remove boolean DEFAULT false) RETURNS text
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  id uuid;
  held pod.videos;
  version bigint;
  at timestamptz;
BEGIN
  BEGIN
    id := (video ->> 'uuid')::uuid;
    version := (video ->> 'version')::bigint;
    at := pod.federated_time(video ->> 'updated_at');
  EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'video uuid, version or updated_at is malformed');
  END;
  IF id IS NULL OR NOT remove AND coalesce(video ->> 'name', '') = '' THEN
    PERFORM pod.inbox_reject('PT400', CASE WHEN remove THEN 'video.removed needs the video''s uuid'
                                           ELSE 'video needs a uuid and a name' END);
  END IF;
  PERFORM pod.federated_lock('video', id::text);
  SELECT * INTO held FROM pod.videos v WHERE v.uuid = id;
  IF FOUND AND held.origin IS DISTINCT FROM sender THEN
    PERFORM pod.inbox_reject('PT403', 'video ' || id || ' belongs to another pod');
  END IF;
  -- A removal without a version or time (an older pod) removes whatever is held.
  IF remove AND version IS NULL AND at IS NULL THEN
    version := coalesce(held.version, 0) + 1;
  END IF;
  IF NOT pod.federated_apply('video', id::text, sender, version, at, held.version, held.updated_at, remove) THEN
    RETURN 'stale';
  END IF;
  IF remove THEN
    DELETE FROM pod.videos v WHERE v.uuid = id AND v.origin = sender;
    RETURN 'applied';
  END IF;
  BEGIN
    INSERT INTO pod.videos AS v (uuid, channel_id, name, description, origin, author, magnet, thumbnail,
                                 state, duration, created_at, updated_at, remote, version)
      VALUES (id, NULL, video ->> 'name', video ->> 'description', sender, video ->> 'author',
              video ->> 'magnet', video ->> 'thumbnail', 'published',
              make_interval(secs => coalesce((video ->> 'duration')::double precision, 0)),
              coalesce(pod.federated_time(video ->> 'created_at'), now()),
              coalesce(at, now()), video, coalesce(version, 0))
    ON CONFLICT (uuid) DO UPDATE
      SET name = EXCLUDED.name, description = EXCLUDED.description, author = EXCLUDED.author,
          magnet = EXCLUDED.magnet, thumbnail = EXCLUDED.thumbnail, duration = EXCLUDED.duration,
          updated_at = EXCLUDED.updated_at, remote = EXCLUDED.remote, version = EXCLUDED.version
      WHERE v.origin = EXCLUDED.origin;
  EXCEPTION WHEN check_violation OR invalid_text_representation OR invalid_datetime_format
              OR datetime_field_overflow OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'video is malformed: ' || SQLERRM);
  END;
  RETURN 'applied';
END $$;

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
CREATE OR REPLACE FUNCTION pod.inbox_dispatch(sender text, sender_key text, activity jsonb) RETURNS jsonb
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
  ELSE
    PERFORM pod.inbox_reject('PT400', 'unknown activity type ' || coalesce(quote_literal(kind), 'NULL'));
  END CASE;
  RETURN NULL;
END $$;
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
DROP FUNCTION pod.inbox_receive(json, jsonb, text, text);
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
CREATE OR REPLACE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text, status integer) RETURNS jsonb
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
CREATE OR REPLACE FUNCTION pod.verify_key_finish(job_id bigint, worker text, answer text) RETURNS jsonb
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.verify_key_finish(job_id, worker, answer, NULL);
GRANT EXECUTE ON FUNCTION pod.verify_key_finish(bigint, text, text), pod.verify_key_finish(bigint, text, text, integer) TO pgpod_worker;
-- POST /rpc/inbox. A refused request gets 400/401/403/413/429 with {"code", "message"}:
-- by a PTxxx error, or (federation.inbox_reject_mode = "status") by response.status,
-- logged by pod.inbox_log_refusal (a bounded row, or a counter). Either way it changes
-- nothing else. The request target checked is the one the client sent, query
-- included (the gateway's request.target; request.path without it otherwise).
CREATE OR REPLACE FUNCTION api.inbox(json) RETURNS json
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
-- Removes inbox records past their use (signatures after 2 × date window, applied
-- request ids after federation.dedup_retention, rejections after 30 days).
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

-- video federation (sql/73_video_federation.sql); video_object holds the row type
DROP FUNCTION pod.video_object(pod.videos);
-- The version of a video at its origin: raised by every change of a local video
-- (pod.videos_versioned below); a friend's video holds the version its origin sent.
ALTER TABLE pod.videos ADD COLUMN version bigint NOT NULL DEFAULT 1;
COMMENT ON COLUMN pod.videos.version IS 'Version at the origin: raised with updated_at by every change of a local video; for a friend''s video, what its origin last sent.';
-- The federated description of a video (what the seed's index holds).
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at,
           'version', v.version);
-- Versions and tombstones: how a pod converges on what an origin holds -------------
-- Deliveries are retried with backoff, so they arrive in any order. Every federated
-- object carries its origin's version (a counter the origin raises on every change)
-- and the origin's time of that change; a removal is a tombstone with the version it
-- made. The rule, for any federated object (videos here; the pubsub cache too):
-- apply an incoming state only if it is newer, by (version, time) at the origin, than
-- both what is held and any tombstone held for the object. A late update never undoes
-- a removal, a late removal never removes a newer state, and a repeat is a no-op.

-- Is (version, at) newer than (held_version, held_at)? Nothing held: yes. A missing
-- version counts as 0 and a missing time as -infinity. A sender that sends no version
-- (a pod before 0.4, whose updated_at did not move) cannot be ordered more finely than
-- by its time: between two unversioned states the same time counts as newer, so its
-- updates still apply (as they did) — but never over a versioned state or a tombstone.
CREATE FUNCTION pod.federated_newer(version bigint, at timestamptz, held_version bigint, held_at timestamptz)
  RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN (held_version IS NULL AND held_at IS NULL)
      OR (coalesce(version, 0), coalesce(at, '-infinity')) > (coalesce(held_version, 0), coalesce(held_at, '-infinity'))
      OR (version IS NULL AND coalesce(held_version, 0) = 0 AND coalesce(at, '-infinity') >= coalesce(held_at, '-infinity'));
COMMENT ON FUNCTION pod.federated_newer(bigint, timestamptz, bigint, timestamptz) IS 'The origin''s (version, time) order of federated states: is the first newer than the second (or nothing held)?';

CREATE TABLE pod.federated_tombstones (
  kind text NOT NULL,
  object_id text NOT NULL,
  origin text NOT NULL,
  version bigint,
  updated_at timestamptz,
  removed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, object_id)
);
COMMENT ON TABLE pod.federated_tombstones IS 'Removals of federated objects (kind, id) at their origin''s (version, time): an older state arriving late is not applied. Kept federation.tombstone_retention.';
CREATE INDEX federated_tombstones_removed_idx ON pod.federated_tombstones (removed_at);
SELECT pg_catalog.pg_extension_config_dump('pod.federated_tombstones', '');
GRANT SELECT ON pod.federated_tombstones TO pgpod_admin;
INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('federation.tombstone_retention', '"30 days"', 'How long the removal of a friend''s object is remembered, so that an older update delivered late cannot bring it back (longer than a delivery''s retries).');

-- The rule in one call: may the state (version, at) of object (kind, object_id) from
-- origin replace what is held (held_version, held_at; NULLs: nothing held)? With
-- remove, a removal: when it may, its tombstone is recorded (or moved up). Callers
-- hold the object's lock (pod.federated_lock) from this call to their write, so that
-- two deliveries of one object are decided one after the other.
CREATE FUNCTION pod.federated_apply(kind text, object_id text, origin text, version bigint, at timestamptz,
                                    held_version bigint, held_at timestamptz, remove boolean DEFAULT false)
  RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE t pod.federated_tombstones;
BEGIN
  SELECT * INTO t FROM pod.federated_tombstones x WHERE x.kind = federated_apply.kind AND x.object_id = federated_apply.object_id;
  IF FOUND AND NOT pod.federated_newer(version, at, t.version, t.updated_at) THEN
    RETURN false;   -- removed at the origin after this state
  END IF;
  IF NOT pod.federated_newer(version, at, held_version, held_at) THEN
    RETURN false;   -- what is held is this state or newer
  END IF;
  IF remove THEN
    INSERT INTO pod.federated_tombstones AS x (kind, object_id, origin, version, updated_at)
      VALUES (kind, object_id, origin, version, at)
    ON CONFLICT ON CONSTRAINT federated_tombstones_pkey DO UPDATE
      SET origin = EXCLUDED.origin, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, removed_at = now();
  ELSIF t.kind IS NOT NULL THEN
    -- a newer state after a removal (published again): the tombstone is spent
    DELETE FROM pod.federated_tombstones x WHERE x.kind = federated_apply.kind AND x.object_id = federated_apply.object_id;
  END IF;
  RETURN true;
END $$;
COMMENT ON FUNCTION pod.federated_apply(text, text, text, bigint, timestamptz, bigint, timestamptz, boolean) IS 'Apply if newer than what is held, tombstones win over older versions; records a removal''s tombstone.';

-- Serialises the decisions about one federated object (a transaction-scoped lock).
CREATE FUNCTION pod.federated_lock(kind text, object_id text) RETURNS void
  LANGUAGE sql VOLATILE PARALLEL UNSAFE
  RETURN (SELECT NULL::void FROM pg_advisory_xact_lock(hashtextextended(kind || ':' || object_id, 7243)));
GRANT EXECUTE ON FUNCTION pod.federated_newer(bigint, timestamptz, bigint, timestamptz) TO pgpod_worker, pgpod_admin;

-- A local video's version is raised, and its updated_at moved to now, by every change
-- of what it is (not by a write that changes nothing): what friends compare.
CREATE FUNCTION pod.videos_versioned() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  IF (to_jsonb(NEW) - 'updated_at' - 'version') IS DISTINCT FROM (to_jsonb(OLD) - 'updated_at' - 'version') THEN
    NEW.version := OLD.version + 1;
    NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at + interval '1 microsecond');
  ELSE
    NEW.version := OLD.version;
    NEW.updated_at := OLD.updated_at;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER videos_versioned BEFORE UPDATE ON pod.videos
  FOR EACH ROW WHEN (OLD.origin IS NULL) EXECUTE FUNCTION pod.videos_versioned();
CREATE OR REPLACE FUNCTION pod.videos_federate_update() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.published', coalesce(
    (SELECT jsonb_agg(pod.video_object(n)) FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state = 'published' AND o.state <> 'published'), '[]'));
  PERFORM pod.videos_announce('video.updated', coalesce(
    (SELECT jsonb_agg(pod.video_object(n)) FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state = 'published' AND o.state = 'published'
        AND pod.video_object(n) IS DISTINCT FROM pod.video_object(o)), '[]'));
  PERFORM pod.videos_announce('video.removed', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('uuid', n.uuid, 'version', n.version, 'updated_at', n.updated_at))
       FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state <> 'published' AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pod.videos_federate_delete() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.removed', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('uuid', o.uuid, 'version', o.version + 1,
                                         'updated_at', greatest(clock_timestamp(), o.updated_at + interval '1 microsecond')))
       FROM old_videos o
      WHERE o.origin IS NULL AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

-- (sql/99_privileges.sql) PUBLIC executes none of the functions above
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
-- ==== end of federation: issue 11 ====================================================
