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
-- livechat (issue 16): sql/50_livechat.sql (options), 51_livechat_rules.sql, 76_livechat_federation.sql, hooks
-- sql/50_livechat.sql: the options now known, their forbidden words checked; cleanup spares mirrors
CREATE OR REPLACE FUNCTION pod.validate_chat_options(options jsonb) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  k text;
  entry text;
  allowed text[] := ARRAY['slow_mode_seconds', 'mute_anonymous', 'forbidden_words', 'forbidden_words_action',
                          'moderation_delay_seconds', 'anonymous_allowed', 'bot', 'terms'];
BEGIN
  IF jsonb_typeof(options) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'chat options must be a JSON object' USING ERRCODE = '22023';
  END IF;
  FOR k IN SELECT jsonb_object_keys(options) LOOP
    IF NOT k = ANY (allowed) THEN
      RAISE EXCEPTION 'unknown chat option "%"', k USING ERRCODE = '22023',
        HINT = 'Known options: ' || array_to_string(allowed, ', ') || '.';
    END IF;
  END LOOP;
  IF options ? 'slow_mode_seconds' AND (jsonb_typeof(options -> 'slow_mode_seconds') <> 'number'
       OR (options ->> 'slow_mode_seconds')::numeric NOT BETWEEN 0 AND 86400
       OR (options ->> 'slow_mode_seconds')::numeric % 1 <> 0) THEN
    RAISE EXCEPTION 'slow_mode_seconds must be a whole number from 0 to 86400' USING ERRCODE = '22023';
  END IF;
  IF options ? 'moderation_delay_seconds' AND (jsonb_typeof(options -> 'moderation_delay_seconds') <> 'number'
       OR (options ->> 'moderation_delay_seconds')::numeric NOT BETWEEN 0 AND 3600
       OR (options ->> 'moderation_delay_seconds')::numeric % 1 <> 0) THEN
    RAISE EXCEPTION 'moderation_delay_seconds must be a whole number from 0 to 3600' USING ERRCODE = '22023';
  END IF;
  IF options ? 'mute_anonymous' AND jsonb_typeof(options -> 'mute_anonymous') <> 'boolean' THEN
    RAISE EXCEPTION 'mute_anonymous must be true or false' USING ERRCODE = '22023';
  END IF;
  IF options ? 'anonymous_allowed' AND jsonb_typeof(options -> 'anonymous_allowed') <> 'boolean' THEN
    RAISE EXCEPTION 'anonymous_allowed must be true or false' USING ERRCODE = '22023';
  END IF;
  IF options ? 'forbidden_words' AND (jsonb_typeof(options -> 'forbidden_words') <> 'array'
       OR jsonb_array_length(options -> 'forbidden_words') > 200
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(options -> 'forbidden_words') w
                   WHERE jsonb_typeof(w) <> 'string' OR length(w #>> '{}') NOT BETWEEN 1 AND 200)) THEN
    RAISE EXCEPTION 'forbidden_words must be an array of at most 200 non-empty strings (at most 200 characters each)'
      USING ERRCODE = '22023';
  END IF;
  FOR entry IN SELECT jsonb_array_elements_text(coalesce(options -> 'forbidden_words', '[]')) LOOP
    PERFORM pod.forbidden_word_check(entry);
  END LOOP;
  IF options ? 'forbidden_words_action' AND coalesce(options ->> 'forbidden_words_action', '') NOT IN ('refuse', 'hide') THEN
    RAISE EXCEPTION 'forbidden_words_action must be "refuse" or "hide"' USING ERRCODE = '22023';
  END IF;
  IF options ? 'bot' AND (jsonb_typeof(options -> 'bot') <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_object_keys(options -> 'bot') b WHERE b NOT IN ('enabled', 'nickname', 'welcome'))
       OR coalesce(jsonb_typeof(options #> '{bot,enabled}'), 'boolean') <> 'boolean'
       OR coalesce(jsonb_typeof(options #> '{bot,nickname}'), 'string') <> 'string'
       OR length(options #>> '{bot,nickname}') NOT BETWEEN 1 AND 32
       OR coalesce(jsonb_typeof(options #> '{bot,welcome}'), 'string') <> 'string'
       OR length(options #>> '{bot,welcome}') > 2000) THEN
    RAISE EXCEPTION 'bot must be an object {enabled: boolean, nickname: 1-32 characters, welcome: at most 2000 characters}'
      USING ERRCODE = '22023';
  END IF;
  IF options ? 'terms' AND (jsonb_typeof(options -> 'terms') <> 'string' OR length(options ->> 'terms') > 2000) THEN
    RAISE EXCEPTION 'terms must be a string of at most 2000 characters' USING ERRCODE = '22023';
  END IF;
  RETURN options;
END $$;
CREATE OR REPLACE FUNCTION pod.livechat_cleanup(OUT orphan_rooms integer, OUT stale_servers integer, OUT stale_video_chats integer)
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  retention interval := (pod.setting('livechat.remote_retention') #>> '{}')::interval;
BEGIN
  -- (the remote chats whose rooms they mirror go first, so their rooms are orphans now)
  DELETE FROM pod.remote_video_chats WHERE updated_at < now() - retention;
  GET DIAGNOSTICS stale_video_chats = ROW_COUNT;
  -- a room of a video or channel that is neither ours nor a remote chat's mirror
  DELETE FROM pod.rooms r WHERE r.type IN ('video', 'channel')
     AND NOT EXISTS (SELECT 1 FROM pod.livechat_rooms l WHERE l.room_id = r.id)
     AND NOT EXISTS (SELECT 1 FROM pod.remote_video_chats c WHERE c.room_id = r.id);
  GET DIAGNOSTICS orphan_rooms = ROW_COUNT;
  -- pods that are no friends any more stop getting our rooms' events
  DELETE FROM pod.room_remote_pods p WHERE NOT EXISTS (SELECT 1 FROM pod.friends f WHERE f.url = p.pod_url AND f.state = 'active');
  DELETE FROM pod.remote_servers s WHERE coalesce(s.last_update, s.created_at) < now() - retention
     AND NOT EXISTS (SELECT 1 FROM pod.remote_video_chats c WHERE c.host = s.host);
  GET DIAGNOSTICS stale_servers = ROW_COUNT;
END $$;

-- sql/51_livechat_rules.sql
-- 51_livechat_rules: chat options and room permissions ENFORCED in the database, so
-- that every path a message arrives by (SQL, the gateway, a remote pod) meets the
-- same rules: slow mode, forbidden words (refuse or hide), moderation delay, muted
-- anonymous viewers, roles and per-role permissions from rooms.data, bans (outcast),
-- a moderation log with every moderator action also a room event. Guests (anonymous
-- viewers holding a short-lived token, and remote pods' users) post as rows of
-- pod.chat_guests. A message's visibility (hidden, held by the moderation delay) is
-- decided here in row-level security and on the room's events, so any stream that
-- reads events through the database respects it.

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('livechat.anonymous_lifetime', '"2 hours"', 'How long an anonymous viewer''s chat token (and its nickname) lives.'),
  ('livechat.anonymous_joins_per_hour', '10', 'Anonymous chat tokens one client address may get per hour.'),
  ('livechat.release_interval', '"1 second"', 'How often the livechat daemon looks for held messages whose moderation delay is over (it also wakes on NOTIFY pgpod_chat_held).'),
  ('livechat.cleanup_interval', '"1 hour"', 'How often the livechat daemon runs pod.livechat_cleanup().');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 10000 WHERE name = 'livechat.anonymous_joins_per_hour';

-- Folding for word matching: NFKC, Unicode lower case (ICU), every run of anything
-- but letters and digits one space, padded with spaces: " word " finds whole words.
CREATE FUNCTION pod.chat_fold(t text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN ' ' || btrim(regexp_replace(lower(normalize(t, NFKC) COLLATE "und-x-icu"), '[^[:alnum:]]+', ' ', 'g')) || ' ';

-- One forbidden_words entry: a word (or words) with at least one letter or digit, or a
-- /regex/ of the safe subset that compiles. PostgreSQL's engine has no exponential
-- backtracking without back-references; the bounds keep the compiled automaton small,
-- and the message text is bounded (pod.messages_check_post).
CREATE FUNCTION pod.forbidden_word_check(entry text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pod AS $$
DECLARE
  re text;
BEGIN
  IF length(entry) >= 2 AND left(entry, 1) = '/' AND right(entry, 1) = '/' THEN
    re := substr(entry, 2, length(entry) - 2);
    IF re = '' THEN
      RAISE EXCEPTION 'forbidden word % is an empty regular expression', entry USING ERRCODE = '22023';
    END IF;
    IF re ~ '\\[1-9]' OR re ~ '\(\?[^:]' OR re ~ '^\*\*\*' THEN
      RAISE EXCEPTION 'forbidden word % uses a regular expression feature that is not allowed', entry USING ERRCODE = '22023',
        HINT = 'Back-references, look-arounds, embedded options and *** directors are refused.';
    END IF;
    IF EXISTS (SELECT 1 FROM regexp_matches(re, '\{([0-9]+)(,([0-9]*))?\}', 'g') b
                WHERE b[1]::numeric > 100 OR coalesce(nullif(b[3], ''), '0')::numeric > 100) THEN
      RAISE EXCEPTION 'forbidden word % has a repetition bound above 100', entry USING ERRCODE = '22023';
    END IF;
    BEGIN
      PERFORM '' ~* re;
    EXCEPTION WHEN invalid_regular_expression OR program_limit_exceeded THEN
      RAISE EXCEPTION 'forbidden word % is not a valid regular expression: %', entry, SQLERRM USING ERRCODE = '22023';
    END;
  ELSIF btrim(pod.chat_fold(entry)) = '' THEN
    RAISE EXCEPTION 'forbidden word % has no letter or digit', entry USING ERRCODE = '22023',
      HINT = 'Write a regular expression between slashes, /like this/, to match punctuation.';
  END IF;
  RETURN entry;
END $$;

-- The first forbidden entry a text contains, or NULL. Words match whole words of the
-- folded text (so case, width and composed/decomposed forms do not matter); regular
-- expressions match the NFKC text case-insensitively.
CREATE FUNCTION pod.forbidden_word_in(t text, words jsonb) RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  folded text;
  nfkc text;
  w text;
BEGIN
  IF t IS NULL OR words IS NULL OR jsonb_array_length(words) = 0 THEN
    RETURN NULL;
  END IF;
  folded := pod.chat_fold(t);
  nfkc := normalize(t, NFKC);
  FOR w IN SELECT jsonb_array_elements_text(words) LOOP
    IF length(w) >= 2 AND left(w, 1) = '/' AND right(w, 1) = '/' THEN
      IF (nfkc COLLATE "und-x-icu") ~* substr(w, 2, length(w) - 2) THEN
        RETURN w;
      END IF;
    ELSIF strpos(folded, pod.chat_fold(w)) > 0 THEN
      RETURN w;
    END IF;
  END LOOP;
  RETURN NULL;
END $$;

-- Guests: anonymous viewers and remote pods' users ---------------------------------------

CREATE TABLE pod.chat_guests (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('anonymous', 'remote')),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
  ip inet,
  affiliation pod.affiliation NOT NULL DEFAULT 'member' CHECK (affiliation IN ('member', 'outcast')),
  is_muted boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  CHECK ((kind = 'anonymous') = (expires_at IS NOT NULL)),
  CHECK (kind = 'anonymous' OR name ~ '^[^@\s]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?$')
);
CREATE UNIQUE INDEX chat_guests_remote_key ON pod.chat_guests (room_id, name) WHERE kind = 'remote';
CREATE INDEX chat_guests_room_idx ON pod.chat_guests (room_id, kind);
CREATE INDEX chat_guests_ip_idx ON pod.chat_guests (ip, created_at) WHERE kind = 'anonymous';
COMMENT ON TABLE pod.chat_guests IS 'Who posts in a room without a local account: anonymous viewers (nickname, token until expires_at) and remote users (user@pod).';
SELECT pg_catalog.pg_extension_config_dump('pod.chat_guests', '');

-- What a message carries beyond 0.3: its guest author (author_ref: nickname or
-- user@pod, kept after the guest row goes), whether forbidden words hid it, and until
-- when the moderation delay holds it back from everyone but its author and moderators.
ALTER TABLE pod.messages
  ADD COLUMN guest_id uuid REFERENCES pod.chat_guests ON DELETE SET NULL,
  ADD COLUMN author_ref text CHECK (length(author_ref) <= 300),
  ADD COLUMN hidden boolean NOT NULL DEFAULT false,
  ADD COLUMN held_until timestamptz;
CREATE INDEX messages_guest_idx ON pod.messages (guest_id) WHERE guest_id IS NOT NULL;

-- Events carry an audience: NULL everyone who reads the room; 'staff' only moderators
-- and the author (a held or hidden message); 'others' everyone but them (the release
-- of a held message, which staff already saw). author is the message's author (user or
-- guest id) for those two.
ALTER TABLE pod.room_events
  ADD COLUMN audience text CHECK (audience IN ('staff', 'others')),
  ADD COLUMN author uuid;

-- Held messages waiting for their release event (pod.livechat_release()).
CREATE TABLE pod.chat_held (
  message_id bigint PRIMARY KEY REFERENCES pod.messages ON DELETE CASCADE,
  room_id uuid NOT NULL,
  author uuid,
  until timestamptz NOT NULL
);
CREATE INDEX chat_held_until_idx ON pod.chat_held (until);
COMMENT ON TABLE pod.chat_held IS 'Messages under a moderation delay whose release event is still to be written.';
SELECT pg_catalog.pg_extension_config_dump('pod.chat_held', '');

-- Slow mode: when each poster last posted in a room (written only while slow mode is on).
CREATE TABLE pod.chat_slow (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  poster uuid NOT NULL,
  last_at timestamptz NOT NULL,
  PRIMARY KEY (room_id, poster)
);
COMMENT ON TABLE pod.chat_slow IS 'Last post time per room and poster (user or guest id), for slow mode.';

CREATE TABLE pod.room_moderation_log (
  id bigserial PRIMARY KEY,
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  actor_id uuid,
  actor text NOT NULL,
  action text NOT NULL CHECK (action IN ('delete', 'mute', 'unmute', 'ban', 'unban', 'options')),
  target text,
  message_id bigint,
  detail jsonb NOT NULL DEFAULT '{}',
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX room_moderation_log_room_idx ON pod.room_moderation_log (room_id, id);
COMMENT ON TABLE pod.room_moderation_log IS 'Every moderator action per room: deletes of others'' messages, mutes, bans, option changes.';
SELECT pg_catalog.pg_extension_config_dump('pod.room_moderation_log', '');
SELECT pg_catalog.pg_extension_config_dump('pod.room_moderation_log_id_seq', '');

-- Who is calling: the guest of an anonymous token (claims {"guest": id}) while the
-- guest row lives; a token past its guest's expiry is refused (PT401).
CREATE FUNCTION pod.current_guest_id() RETURNS uuid
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  g uuid := nullif(pod.jwt_claims() ->> 'guest', '')::uuid;
  live uuid;
BEGIN
  IF g IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT id INTO live FROM pod.chat_guests WHERE id = g AND kind = 'anonymous' AND expires_at > now();
  IF live IS NULL THEN
    RAISE EXCEPTION 'anonymous chat token has expired' USING ERRCODE = 'PT401', HINT = 'Join the chat again.';
  END IF;
  RETURN live;
EXCEPTION WHEN invalid_text_representation THEN
  RAISE EXCEPTION 'malformed guest claims' USING ERRCODE = 'PT401';
END $$;

-- The caller's role in a room: owner, admin, member, outcast for local users (any
-- signed-in user is a member of a video or channel room until banned), anonymous or
-- remote for guests (outcast once banned), NULL for nobody.
CREATE FUNCTION pod.room_role(room uuid) RETURNS text
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  uid uuid := pod.current_user_id();
  g pod.chat_guests;
  r text;
BEGIN
  IF uid IS NOT NULL THEN
    SELECT CASE WHEN rm.created_by = uid THEN 'owner' ELSE coalesce(m.affiliation::text,
                  CASE WHEN rm.type IN ('video', 'channel') THEN 'member' END) END
      INTO r
      FROM pod.rooms rm LEFT JOIN pod.room_members m ON m.room_id = rm.id AND m.user_id = uid
     WHERE rm.id = room;
    RETURN r;
  END IF;
  SELECT * INTO g FROM pod.chat_guests WHERE id = pod.current_guest_id() AND room_id = room;
  RETURN CASE WHEN g.affiliation = 'outcast' THEN 'outcast' ELSE g.kind END;
END $$;

CREATE OR REPLACE FUNCTION pod.room_affiliation(room uuid) RETURNS pod.affiliation
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT CASE WHEN r IN ('anonymous', 'remote') THEN 'member' ELSE r END::pod.affiliation
            FROM pod.room_role(room) r);

-- Per-role permissions. rooms.data.permissions overrides the defaults per role, e.g.
-- {"member": {"post": false}}; the owner may do everything, an outcast nothing.
CREATE FUNCTION pod.room_permission_defaults() RETURNS jsonb
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN '{"admin":     {"post": true, "edit": true,  "delete_others": true,  "mute": true,  "ban": true,  "change_options": true},
           "member":    {"post": true, "edit": true,  "delete_others": false, "mute": false, "ban": false, "change_options": false},
           "remote":    {"post": true, "edit": true,  "delete_others": false, "mute": false, "ban": false, "change_options": false},
           "anonymous": {"post": true, "edit": false, "delete_others": false, "mute": false, "ban": false, "change_options": false}}'::jsonb;

CREATE FUNCTION pod.role_may(room_data jsonb, role text, action text) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN CASE WHEN role = 'owner' THEN true
              WHEN role IS NULL OR role = 'outcast' THEN false
              ELSE coalesce((room_data #> ARRAY['permissions', role, action])::boolean,
                            (pod.room_permission_defaults() #> ARRAY[role, action])::boolean, false) END;

CREATE FUNCTION pod.room_may(room uuid, action text) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT pod.role_may(r.data, pod.room_role(room), action) FROM pod.rooms r WHERE r.id = room), false);
COMMENT ON FUNCTION pod.room_may(uuid, text) IS 'May the caller do action (post, edit, delete_others, mute, ban, change_options) in room?';

CREATE OR REPLACE FUNCTION pod.can_moderate_room(room uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.room_role(room) IN ('owner', 'admin'), false);

-- rooms.data: roles (a list) and permissions, checked so a typo does not silently grant.
CREATE FUNCTION pod.rooms_check_data() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  role text;
  action text;
BEGIN
  IF NEW.data ? 'roles' AND jsonb_typeof(NEW.data -> 'roles') <> 'array' THEN
    RAISE EXCEPTION 'room data: roles must be an array' USING ERRCODE = '22023';
  END IF;
  IF NEW.data ? 'permissions' THEN
    IF jsonb_typeof(NEW.data -> 'permissions') <> 'object' THEN
      RAISE EXCEPTION 'room data: permissions must be an object of roles' USING ERRCODE = '22023';
    END IF;
    FOR role IN SELECT jsonb_object_keys(NEW.data -> 'permissions') LOOP
      IF NOT pod.room_permission_defaults() ? role THEN
        RAISE EXCEPTION 'room data: unknown role "%" in permissions', role USING ERRCODE = '22023',
          HINT = 'Roles: admin, member, remote, anonymous (the owner may do everything, an outcast nothing).';
      END IF;
      IF jsonb_typeof(NEW.data #> ARRAY['permissions', role]) <> 'object' THEN
        RAISE EXCEPTION 'room data: permissions of % must be an object of actions', role USING ERRCODE = '22023';
      END IF;
      FOR action IN SELECT jsonb_object_keys(NEW.data #> ARRAY['permissions', role]) LOOP
        IF NOT pod.room_permission_defaults() -> 'admin' ? action THEN
          RAISE EXCEPTION 'room data: unknown action "%" for %', action, role USING ERRCODE = '22023',
            HINT = 'Actions: post, edit, delete_others, mute, ban, change_options.';
        END IF;
        IF jsonb_typeof(NEW.data #> ARRAY['permissions', role, action]) <> 'boolean' THEN
          RAISE EXCEPTION 'room data: permission %.% must be true or false', role, action USING ERRCODE = '22023';
        END IF;
      END LOOP;
    END LOOP;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER rooms_check_data BEFORE INSERT OR UPDATE OF data ON pod.rooms
  FOR EACH ROW EXECUTE FUNCTION pod.rooms_check_data();

-- The options in force in a room: its channel's, or none.
CREATE FUNCTION pod.room_chat_options(room uuid) RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT o.options FROM pod.livechat_rooms l JOIN pod.channel_chat_options o USING (channel_id)
                    WHERE l.room_id = room), '{}'::jsonb);

-- Events: one place numbers them (under the room's row lock) and notifies the streams.
CREATE FUNCTION pod.room_event_append(room uuid, event_kind pod.room_event_kind, message bigint,
                                      event_audience text DEFAULT NULL, event_author uuid DEFAULT NULL) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  next_seq bigint;
BEGIN
  UPDATE pod.rooms SET event_seq = event_seq + 1 WHERE id = room RETURNING event_seq INTO next_seq;
  IF next_seq IS NULL THEN
    RETURN NULL;    -- the room itself is being deleted
  END IF;
  INSERT INTO pod.room_events (room_id, seq, kind, message_id, audience, author)
    VALUES (room, next_seq, event_kind, message, event_audience, event_author);
  PERFORM pod.room_event_notify(room, next_seq);   -- only when a gateway listens to the room
  -- other pods with viewers in the room get every event (sql/76_livechat_federation.sql)
  IF EXISTS (SELECT 1 FROM pod.room_remote_pods p WHERE p.room_id = room) THEN
    PERFORM pod.chat_push_event(room, next_seq, event_kind, message, event_audience);
  END IF;
  RETURN next_seq;
END $$;

-- A moderator action: a log row and a room event (a message of type 'event' written by
-- the pod, hidden from all but staff when it concerns a message others never saw).
CREATE FUNCTION pod.chat_log_moderation(room uuid, log_action text, log_target text, message bigint,
                                        log_detail jsonb DEFAULT '{}', staff_only boolean DEFAULT false) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  uid uuid := pod.current_user_id();
  who text := coalesce(uid::text, 'pod');
BEGIN
  INSERT INTO pod.room_moderation_log (room_id, actor_id, actor, action, target, message_id, detail)
    VALUES (room, uid, who, log_action, log_target, message, log_detail);
  INSERT INTO pod.messages (room_id, author_id, guest_id, author_ref, type, hidden, data)
    VALUES (room, uid, NULL, who, 'event', staff_only,
            jsonb_build_object('moderation', jsonb_build_object('action', log_action, 'target', log_target,
                                                                  'message_id', message) || log_detail));
END $$;

-- Posting: every rule in one BEFORE INSERT trigger. guest_id, author_ref, hidden and
-- held_until are granted to no API role, so a row arriving with guest_id set comes from
-- the pod's own code (a remote post, rules applied) and one with author_ref set and no
-- guest is the pod's own (a room event, a remote room's mirror).
CREATE FUNCTION pod.messages_check_post() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  uid uuid;
  g pod.chat_guests;
  r pod.rooms;
  role text;
  opts jsonb;
  poster_id uuid;
  slow integer;
  delay integer;
  wait_s integer;
  bad text;
  m pod.room_members;
BEGIN
  IF NEW.author_ref IS NOT NULL AND NEW.guest_id IS NULL THEN
    RETURN NEW;     -- the pod's own: a room event (pod.chat_log_moderation), a remote room's mirror
  END IF;
  -- a remote post (pod.chat_remote_post) is the guest's, whoever runs the delivery
  IF NOT (NEW.guest_id IS NOT NULL AND current_setting('pod.chat_enforce', true) = 'on') THEN
    uid := pod.current_user_id();
  END IF;
  IF uid IS NULL AND NEW.guest_id IS NULL AND pod.jwt_claims() ->> 'guest' IS NULL
     AND current_setting('pod.chat_enforce', true) IS DISTINCT FROM 'on' AND pod.is_admin() THEN
    RETURN NEW;     -- the superuser (psql, a restore) or a maintenance job writes as it likes
  END IF;
  IF uid IS NULL THEN
    SELECT * INTO g FROM pod.chat_guests WHERE id = coalesce(NEW.guest_id, pod.current_guest_id());
    IF g.id IS NULL THEN
      RAISE EXCEPTION 'sign in or join the chat to post' USING ERRCODE = '42501';
    END IF;
  ELSIF NEW.guest_id IS NOT NULL THEN
    RAISE EXCEPTION 'a signed-in user posts as themselves' USING ERRCODE = '42501';
  END IF;
  IF uid IS NOT NULL THEN
    IF NEW.author_id IS DISTINCT FROM uid THEN
      RAISE EXCEPTION 'a message''s author must be the calling user' USING ERRCODE = '42501';
    END IF;
    poster_id := uid;
  ELSE
    IF NEW.author_id IS NOT NULL THEN
      RAISE EXCEPTION 'a guest''s message has no local author' USING ERRCODE = '42501';
    END IF;
    IF g.room_id IS DISTINCT FROM NEW.room_id THEN
      RAISE EXCEPTION 'your chat token is for another room' USING ERRCODE = '42501';
    END IF;
    IF g.kind = 'anonymous' AND g.expires_at <= now() THEN
      RAISE EXCEPTION 'anonymous chat token has expired' USING ERRCODE = 'PT401';
    END IF;
    NEW.guest_id := g.id;
    NEW.author_ref := g.name;
    poster_id := g.id;
  END IF;
  IF NEW.type <> 'message' THEN
    RAISE EXCEPTION 'only the pod writes % messages', NEW.type USING ERRCODE = '42501';
  END IF;
  IF length(NEW.data ->> 'text') > 5000 THEN
    RAISE EXCEPTION 'a message''s text is at most 5000 characters' USING ERRCODE = '22023';
  END IF;

  SELECT * INTO r FROM pod.rooms WHERE id = NEW.room_id;
  IF r.type = 'video' AND r.created_by IS NULL
     AND EXISTS (SELECT 1 FROM pod.remote_video_chats c WHERE c.room_id = NEW.room_id) THEN
    RAISE EXCEPTION 'room % is another pod''s chat', NEW.room_id USING ERRCODE = '42501',
      HINT = 'Post with POST /rpc/chat_post: the room''s pod decides.';
  END IF;
  IF uid IS NOT NULL THEN
    SELECT * INTO m FROM pod.room_members WHERE room_id = NEW.room_id AND user_id = uid;
    role := CASE WHEN r.created_by = uid THEN 'owner' ELSE coalesce(m.affiliation::text,
                   CASE WHEN r.type IN ('video', 'channel') THEN 'member' END) END;
  ELSE
    role := CASE WHEN g.affiliation = 'outcast' THEN 'outcast' ELSE g.kind END;
  END IF;
  IF role IS NULL THEN
    RAISE EXCEPTION 'you are not a member of room %', NEW.room_id USING ERRCODE = '42501';
  ELSIF role = 'outcast' THEN
    RAISE EXCEPTION 'you are banned from room %', NEW.room_id USING ERRCODE = '42501';
  END IF;
  IF coalesce((m.data ->> 'is_muted')::boolean, g.is_muted, false) THEN
    RAISE EXCEPTION 'you are muted in room %', NEW.room_id USING ERRCODE = '42501',
      HINT = 'A room owner or admin can unmute you.';
  END IF;
  IF NOT pod.role_may(r.data, role, 'post') THEN
    RAISE EXCEPTION 'your role (%) may not post in room %', role, NEW.room_id USING ERRCODE = '42501';
  END IF;
  IF role IN ('owner', 'admin') THEN
    RETURN NEW;     -- moderators: no slow mode, no delay, no word filter
  END IF;

  SELECT o.options INTO opts FROM pod.livechat_rooms l JOIN pod.channel_chat_options o USING (channel_id)
   WHERE l.room_id = NEW.room_id;
  IF opts IS NULL OR opts = '{}' THEN
    RETURN NEW;
  END IF;
  IF role = 'anonymous' AND (coalesce((opts ->> 'mute_anonymous')::boolean, false)
                             OR NOT coalesce((opts ->> 'anonymous_allowed')::boolean, true)) THEN
    RAISE EXCEPTION 'anonymous viewers may read but not post in room %', NEW.room_id USING ERRCODE = '42501',
      HINT = 'Sign in to post.';
  END IF;
  bad := pod.forbidden_word_in(NEW.data ->> 'text', opts -> 'forbidden_words');
  IF bad IS NOT NULL THEN
    IF coalesce(opts ->> 'forbidden_words_action', 'refuse') = 'hide' THEN
      NEW.hidden := true;
    ELSE
      RAISE EXCEPTION 'message refused: it contains the forbidden word %', bad USING ERRCODE = '23514',
        HINT = 'This room''s moderators do not allow it.';
    END IF;
  END IF;
  slow := coalesce((opts ->> 'slow_mode_seconds')::integer, 0);
  IF slow > 0 THEN
    INSERT INTO pod.chat_slow AS s (room_id, poster, last_at) VALUES (NEW.room_id, poster_id, clock_timestamp())
      ON CONFLICT (room_id, poster) DO UPDATE SET last_at = EXCLUDED.last_at
        WHERE s.last_at <= EXCLUDED.last_at - make_interval(secs => slow)
      RETURNING 0 INTO wait_s;
    IF wait_s IS NULL THEN
      SELECT greatest(1, ceil(extract(epoch FROM s.last_at + make_interval(secs => slow) - clock_timestamp())))::integer
        INTO wait_s FROM pod.chat_slow s WHERE s.room_id = NEW.room_id AND s.poster = poster_id;
      RAISE EXCEPTION 'slow mode: you may post again in % seconds', wait_s USING ERRCODE = 'PT429',
        DETAIL = 'Retry-After: ' || wait_s, HINT = format('This room allows one message per %s seconds.', slow);
    END IF;
  END IF;
  delay := coalesce((opts ->> 'moderation_delay_seconds')::integer, 0);
  IF delay > 0 THEN
    NEW.held_until := now() + make_interval(secs => delay);
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER messages_check_author ON pod.messages;
DROP FUNCTION pod.messages_check_author();
CREATE TRIGGER messages_check_post BEFORE INSERT ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_check_post();

-- Room events, with their audience; a moderator's delete of someone else's message is
-- logged (and, when others never saw the message, stays among staff).
CREATE OR REPLACE FUNCTION pod.messages_record_event() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  msg pod.messages := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  kind pod.room_event_kind;
  audience text;
  held boolean := false;
  uid uuid;
BEGIN
  kind := CASE WHEN TG_OP = 'INSERT' THEN 'new'
               WHEN TG_OP = 'DELETE' OR NEW.status = 'deleted' THEN 'deleted'
               ELSE 'edited' END;
  IF msg.held_until IS NOT NULL THEN
    IF TG_OP = 'INSERT' THEN
      held := msg.held_until > now();
      IF held AND NOT msg.hidden THEN
        INSERT INTO pod.chat_held (message_id, room_id, author, until)
          VALUES (msg.id, msg.room_id, coalesce(msg.author_id, msg.guest_id), msg.held_until);
        PERFORM pg_notify('pgpod_chat_held', msg.held_until::text);
      END IF;
    ELSIF kind = 'deleted' THEN
      DELETE FROM pod.chat_held WHERE message_id = msg.id RETURNING true INTO held;
    ELSE
      held := EXISTS (SELECT 1 FROM pod.chat_held WHERE message_id = msg.id);
    END IF;
  END IF;
  IF held OR msg.hidden THEN
    audience := 'staff';
  END IF;
  PERFORM pod.room_event_append(msg.room_id, kind, msg.id, audience,
                                CASE WHEN audience IS NOT NULL THEN coalesce(msg.author_id, msg.guest_id) END);
  IF kind = 'deleted' AND TG_OP = 'UPDATE' AND msg.type = 'message' THEN
    uid := pod.current_user_id();
    IF uid IS DISTINCT FROM msg.author_id OR msg.guest_id IS NOT NULL THEN
      PERFORM pod.chat_log_moderation(msg.room_id, 'delete', coalesce(msg.author_id::text, msg.author_ref), msg.id,
                                      '{}', audience IS NOT NULL);
    END IF;
  END IF;
  RETURN NULL;
END $$;

-- Held messages whose delay is over get their event for everyone else. Run by the
-- livechat daemon (workers/livechat); returns how many it released.
CREATE FUNCTION pod.livechat_release() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  h pod.chat_held;
  n integer := 0;
BEGIN
  FOR h IN DELETE FROM pod.chat_held WHERE until <= now() RETURNING * LOOP
    PERFORM pod.room_event_append(h.room_id, 'new', h.message_id, 'others', h.author);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
COMMENT ON FUNCTION pod.livechat_release() IS 'Writes the event that shows held messages to everyone once their moderation delay is over.';

-- Seconds until the next held message is due (NULL: none), for the daemon's timer.
CREATE FUNCTION pod.livechat_next_release() RETURNS double precision
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT greatest(0, extract(epoch FROM min(until) - now()))::double precision FROM pod.chat_held);

-- The livechat daemon's tick (workers/livechat): releases due held messages, runs
-- pod.livechat_cleanup() every livechat.cleanup_interval (and drops anonymous guests a
-- day past their expiry and slow-mode marks a day old), and answers how many seconds
-- until it wants to run again.
CREATE TABLE pod.livechat_state (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  last_cleanup timestamptz
);
COMMENT ON TABLE pod.livechat_state IS 'When the livechat daemon last ran the cleanup.';

CREATE FUNCTION pod.livechat_tick() RETURNS double precision
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  every interval := (pod.setting('livechat.cleanup_interval') #>> '{}')::interval;
  poll double precision := extract(epoch FROM (pod.setting('livechat.release_interval') #>> '{}')::interval);
  last timestamptz;
BEGIN
  PERFORM pod.livechat_release();
  SELECT last_cleanup INTO last FROM pod.livechat_state FOR UPDATE;
  IF last IS NULL OR last <= now() - every THEN
    PERFORM pod.livechat_cleanup();
    DELETE FROM pod.chat_guests WHERE kind = 'anonymous' AND expires_at < now() - interval '1 day';
    DELETE FROM pod.chat_slow WHERE last_at < now() - interval '1 day';
    INSERT INTO pod.livechat_state (id, last_cleanup) VALUES (true, now())
      ON CONFLICT (id) DO UPDATE SET last_cleanup = EXCLUDED.last_cleanup;
    last := now();
  END IF;
  RETURN least(poll, coalesce(pod.livechat_next_release(), poll),
               greatest(0, extract(epoch FROM last + every - now())));
END $$;
COMMENT ON FUNCTION pod.livechat_tick() IS 'One round of the livechat daemon; returns the seconds until the next.';

-- Mutes and bans through room_members (direct UPDATE by a moderator) need their permission
-- and are logged; the owner cannot be banned and only the owner acts on an admin.
CREATE FUNCTION pod.room_members_moderate() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  was_muted boolean := CASE WHEN TG_OP = 'UPDATE' THEN coalesce((OLD.data ->> 'is_muted')::boolean, false) ELSE false END;
  now_muted boolean := coalesce((NEW.data ->> 'is_muted')::boolean, false);
  was_out boolean := TG_OP = 'UPDATE' AND OLD.affiliation = 'outcast';
  now_out boolean := NEW.affiliation = 'outcast';
  uid uuid := pod.current_user_id();
  target_role text;
BEGIN
  IF uid IS NULL THEN
    IF was_muted <> now_muted OR was_out <> now_out THEN
      PERFORM pod.chat_log_moderation(NEW.room_id, CASE WHEN was_out <> now_out THEN
                                        CASE WHEN now_out THEN 'ban' ELSE 'unban' END
                                      ELSE CASE WHEN now_muted THEN 'mute' ELSE 'unmute' END END, NEW.user_id::text, NULL);
    END IF;
    RETURN NEW;     -- the superuser or a maintenance job
  END IF;
  target_role := CASE WHEN (SELECT created_by FROM pod.rooms WHERE id = NEW.room_id) = NEW.user_id THEN 'owner'
                      WHEN TG_OP = 'UPDATE' THEN OLD.affiliation::text END;
  IF was_muted <> now_muted OR was_out <> now_out THEN
    IF target_role = 'owner' THEN
      RAISE EXCEPTION 'the room''s owner cannot be muted or banned' USING ERRCODE = '42501';
    END IF;
    IF target_role = 'admin' AND pod.room_role(NEW.room_id) <> 'owner' THEN
      RAISE EXCEPTION 'only the room''s owner may mute or ban an admin' USING ERRCODE = '42501';
    END IF;
  END IF;
  IF was_muted <> now_muted THEN
    IF NOT pod.room_may(NEW.room_id, 'mute') THEN
      RAISE EXCEPTION 'your role may not mute in room %', NEW.room_id USING ERRCODE = '42501';
    END IF;
    PERFORM pod.chat_log_moderation(NEW.room_id, CASE WHEN now_muted THEN 'mute' ELSE 'unmute' END, NEW.user_id::text, NULL);
  END IF;
  IF was_out <> now_out THEN
    IF NOT pod.room_may(NEW.room_id, 'ban') THEN
      RAISE EXCEPTION 'your role may not ban in room %', NEW.room_id USING ERRCODE = '42501';
    END IF;
    PERFORM pod.chat_log_moderation(NEW.room_id, CASE WHEN now_out THEN 'ban' ELSE 'unban' END, NEW.user_id::text, NULL);
  END IF;
  IF (TG_OP = 'INSERT' OR OLD.affiliation <> NEW.affiliation) AND NEW.affiliation = 'admin'
     AND pod.room_role(NEW.room_id) <> 'owner' THEN
    RAISE EXCEPTION 'only the room''s owner makes admins' USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER room_members_moderate BEFORE INSERT OR UPDATE ON pod.room_members
  FOR EACH ROW EXECUTE FUNCTION pod.room_members_moderate();

-- Mute/unmute/ban/unban anyone of a room: a local user (uuid), a guest (uuid) or a
-- remote user (user@pod). Returns the log entry's id.
CREATE FUNCTION pod.chat_moderate(room uuid, target text, action text) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  tid uuid;
  g pod.chat_guests;
  perm text := CASE WHEN action IN ('mute', 'unmute') THEN 'mute' WHEN action IN ('ban', 'unban') THEN 'ban' END;
BEGIN
  IF perm IS NULL THEN
    RAISE EXCEPTION 'unknown moderation action "%"', action USING ERRCODE = '22023', HINT = 'mute, unmute, ban, unban.';
  END IF;
  IF NOT pod.room_may(room, perm) AND NOT (pod.current_user_id() IS NULL AND pod.is_admin()) THEN
    RAISE EXCEPTION 'your role may not % in room %', perm, room USING ERRCODE = '42501';
  END IF;
  IF target ~ '^[0-9a-fA-F-]{36}$' THEN
    tid := target::uuid;
  END IF;
  SELECT * INTO g FROM pod.chat_guests WHERE room_id = room AND (id = tid OR (kind = 'remote' AND name = target));
  IF g.id IS NOT NULL THEN
    UPDATE pod.chat_guests SET is_muted = CASE action WHEN 'mute' THEN true WHEN 'unmute' THEN false ELSE is_muted END,
                               affiliation = CASE action WHEN 'ban' THEN 'outcast' WHEN 'unban' THEN 'member' ELSE affiliation END
     WHERE id = g.id;
    PERFORM pod.chat_log_moderation(room, action, g.name, NULL, jsonb_build_object('guest', g.id));
    RETURN (SELECT max(id) FROM pod.room_moderation_log WHERE room_id = room);
  END IF;
  IF tid IS NULL OR NOT EXISTS (SELECT 1 FROM pod.users WHERE id = tid) THEN
    RAISE EXCEPTION 'no user or guest % in room %', target, room USING ERRCODE = 'P0002';
  END IF;
  INSERT INTO pod.room_members AS m (room_id, user_id, affiliation, data)
    VALUES (room, tid, CASE WHEN action = 'ban' THEN 'outcast' ELSE 'member' END::pod.affiliation,
            jsonb_build_object('is_muted', action = 'mute'))
    ON CONFLICT (room_id, user_id) DO UPDATE
      SET affiliation = CASE action WHEN 'ban' THEN 'outcast' WHEN 'unban' THEN 'member' ELSE m.affiliation END,
          data = CASE WHEN action IN ('mute', 'unmute') THEN m.data || jsonb_build_object('is_muted', action = 'mute')
                      ELSE m.data END;
  RETURN (SELECT max(id) FROM pod.room_moderation_log WHERE room_id = room);
END $$;

-- Option changes are moderator actions too: logged in every room of the channel. A room
-- admin with change_options changes them through api.chat_set_options.
CREATE FUNCTION pod.channel_chat_options_log() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  room uuid;
BEGIN
  FOR room IN SELECT room_id FROM pod.livechat_rooms WHERE channel_id = NEW.channel_id LOOP
    PERFORM pod.chat_log_moderation(room, 'options', NULL, NULL, jsonb_build_object('options', NEW.options));
  END LOOP;
  RETURN NULL;
END $$;
CREATE TRIGGER channel_chat_options_log AFTER INSERT OR UPDATE ON pod.channel_chat_options
  FOR EACH ROW EXECUTE FUNCTION pod.channel_chat_options_log();

-- A remote pod's user posts in a local room (the inbox applies a delivered chat post with
-- it): the same rules as for everyone, with the remote user as a guest of the room.
CREATE FUNCTION pod.chat_remote_post(room uuid, author text, message_data jsonb) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  gid uuid;
  id bigint;
BEGIN
  IF author IS NULL OR author !~ '^[^@\s]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?$' THEN
    RAISE EXCEPTION 'a remote author is user@pod, not %', coalesce(quote_literal(author), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pod.rooms WHERE rooms.id = room AND type IN ('video', 'channel')) THEN
    RAISE EXCEPTION 'no video or channel room %', room USING ERRCODE = 'P0002';
  END IF;
  INSERT INTO pod.chat_guests (room_id, kind, name) VALUES (room, 'remote', author)
    ON CONFLICT (room_id, name) WHERE kind = 'remote' DO UPDATE SET name = EXCLUDED.name
    RETURNING chat_guests.id INTO gid;
  PERFORM set_config('pod.chat_enforce', 'on', true);
  INSERT INTO pod.messages (room_id, author_id, guest_id, data) VALUES (room, NULL, gid, coalesce(message_data, '{}'))
    RETURNING messages.id INTO id;
  PERFORM set_config('pod.chat_enforce', '', true);
  RETURN id;
END $$;

-- What a viewer learns on joining: terms, the rules in force, their role.
CREATE FUNCTION pod.chat_room_info(room uuid) RETURNS jsonb
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  r pod.rooms;
  role text := pod.room_role(room);
  opts jsonb := pod.room_chat_options(room);
BEGIN
  SELECT * INTO r FROM pod.rooms WHERE id = room;
  IF r.id IS NULL OR role IS NULL OR role = 'outcast' THEN
    RAISE EXCEPTION 'no room % of yours', room USING ERRCODE = 'P0002';
  END IF;
  RETURN jsonb_build_object(
    'room', r.id, 'name', r.name, 'type', r.type,
    'video', (SELECT video_uuid FROM pod.livechat_rooms WHERE room_id = room),
    'terms', opts -> 'terms',
    'bot', opts -> 'bot',
    'slow_mode_seconds', coalesce(opts -> 'slow_mode_seconds', '0'),
    'moderation_delay_seconds', coalesce(opts -> 'moderation_delay_seconds', '0'),
    'anonymous_allowed', coalesce(opts -> 'anonymous_allowed', 'true'),
    'mute_anonymous', coalesce(opts -> 'mute_anonymous', 'false'),
    'role', role,
    'permissions', (SELECT jsonb_object_agg(a, pod.role_may(r.data, role, a))
                      FROM jsonb_object_keys(pod.room_permission_defaults() -> 'admin') a));
END $$;

-- Anonymous viewers -------------------------------------------------------------------

-- A nickname: 2-32 characters, letters, digits, spaces and . _ - only, no '@' (that is
-- a remote user), and not a member's display name, the channel's, or another live
-- guest's, compared folded (case, width, accents' composition, punctuation).
CREATE FUNCTION pod.chat_join_anonymous(video uuid, nickname text, client_ip inet DEFAULT NULL,
                                        OUT token text, OUT room uuid, OUT guest_id uuid, OUT expires_at timestamptz,
                                        OUT info jsonb)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  nick text := btrim(normalize(coalesce(nickname, ''), NFKC));
  folded text;
  opts jsonb;
  v pod.videos;
  limit_n integer := (pod.setting('livechat.anonymous_joins_per_hour'))::integer;
  recent integer;
  g pod.chat_guests;
  oldest timestamptz;
BEGIN
  SELECT * INTO v FROM pod.videos WHERE uuid = video AND origin IS NULL AND state = 'published';
  IF v.uuid IS NULL THEN
    RAISE EXCEPTION 'no published local video %', video USING ERRCODE = 'P0002';
  END IF;
  IF length(nick) NOT BETWEEN 2 AND 32 THEN
    RAISE EXCEPTION 'a nickname has 2 to 32 characters' USING ERRCODE = '22023';
  END IF;
  IF nick !~ '^[[:alnum:] ._-]+$' COLLATE "und-x-icu" OR nick ~ '  ' THEN
    RAISE EXCEPTION 'a nickname has letters, digits, single spaces and . _ - only' USING ERRCODE = '22023';
  END IF;
  SELECT o.options INTO opts FROM pod.channel_chat_options o WHERE o.channel_id = v.channel_id;
  IF NOT coalesce((opts ->> 'anonymous_allowed')::boolean, true) THEN
    RAISE EXCEPTION 'this chat does not admit anonymous viewers' USING ERRCODE = '42501', HINT = 'Sign in to chat.';
  END IF;
  room := pod.livechat_room(video);
  PERFORM 1 FROM pod.rooms WHERE id = room FOR UPDATE;   -- one nickname check at a time per room
  -- per address, over the last hour
  SELECT count(*), min(created_at) INTO recent, oldest FROM pod.chat_guests
   WHERE kind = 'anonymous' AND ip IS NOT DISTINCT FROM client_ip AND created_at > now() - interval '1 hour';
  IF recent >= limit_n THEN
    RAISE EXCEPTION 'too many anonymous joins from your address' USING ERRCODE = 'PT429',
      DETAIL = 'Retry-After: ' || greatest(1, ceil(extract(epoch FROM oldest + interval '1 hour' - now())))::integer,
      HINT = format('At most %s per hour.', limit_n);
  END IF;
  folded := pod.chat_fold(nick);
  IF EXISTS (SELECT 1 FROM pod.channels c WHERE c.id = v.channel_id
              AND folded IN (pod.chat_fold(c.display_name), pod.chat_fold(c.name)))
     OR EXISTS (SELECT 1 FROM pod.users u
                 WHERE (u.id IN (SELECT user_id FROM pod.room_members WHERE room_id = room)
                        OR u.id = (SELECT created_by FROM pod.rooms WHERE id = room))
                   AND folded IN (pod.chat_fold(coalesce(u.settings ->> 'display_name', '')),
                                  pod.chat_fold(split_part(u.email, '@', 1))))
     OR EXISTS (SELECT 1 FROM pod.chat_guests o WHERE o.room_id = room
                 AND (o.kind = 'remote' OR o.expires_at > now())
                 AND pod.chat_fold(split_part(o.name, '@', 1)) = folded) THEN
    RAISE EXCEPTION 'the nickname "%" is taken in this chat', nick USING ERRCODE = '23505',
      HINT = 'Choose another nickname.';
  END IF;
  INSERT INTO pod.chat_guests (room_id, kind, name, ip, expires_at)
    VALUES (room, 'anonymous', nick, client_ip, now() + (pod.setting('livechat.anonymous_lifetime') #>> '{}')::interval)
    RETURNING * INTO g;
  guest_id := g.id;
  expires_at := g.expires_at;
  token := pod.jwt_sign(jsonb_build_object('role', 'pgpod_anon', 'guest', g.id, 'room', room, 'nick', nick,
                                           'iat', floor(extract(epoch FROM now()))::bigint,
                                           'exp', floor(extract(epoch FROM g.expires_at))::bigint));
  info := jsonb_build_object('room', room, 'video', video, 'terms', opts -> 'terms', 'nickname', nick,
                             'role', 'anonymous',
                             'may_post', NOT coalesce((opts ->> 'mute_anonymous')::boolean, false),
                             'slow_mode_seconds', coalesce(opts -> 'slow_mode_seconds', '0'),
                             'moderation_delay_seconds', coalesce(opts -> 'moderation_delay_seconds', '0'));
END $$;

-- History -----------------------------------------------------------------------------

-- One page of a room's messages by id, newest first: before an id, after an id, or the
-- latest; at most 200. Reads the (room_id, id) index, so its cost does not depend on
-- the room's size. Row-level security applies (the caller's view of the room).
CREATE FUNCTION pod.room_history_check(room uuid, before bigint, after bigint, page_size integer) RETURNS void
  LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF room IS NULL THEN
    RAISE EXCEPTION 'room is required' USING ERRCODE = '22023';
  END IF;
  IF before IS NOT NULL AND after IS NOT NULL THEN
    RAISE EXCEPTION 'give before or after, not both' USING ERRCODE = '22023';
  END IF;
  IF page_size IS NULL OR page_size NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'page_size is from 1 to 200' USING ERRCODE = '22023';
  END IF;
END $$;

-- Row-level security and grants ---------------------------------------------------------

-- A message others may see: neither hidden nor held; its author and moderators see it
-- at once.
CREATE FUNCTION pod.message_visible(room uuid, author uuid, guest uuid, is_hidden boolean, held timestamptz) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (NOT is_hidden AND (held IS NULL OR held <= now()))
      OR author = pod.current_user_id() OR guest = pod.current_guest_id()
      OR pod.can_moderate_room(room);

CREATE FUNCTION pod.event_visible(room uuid, event_audience text, event_author uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN event_audience IS NULL
      OR (event_audience = 'staff') = coalesce(event_author = pod.current_user_id() OR event_author = pod.current_guest_id()
                                                OR pod.can_moderate_room(room), false);

-- An anonymous reader holds a chat token for one room; without one, reading rooms is
-- refused outright (42501: HTTP 401), as it was before guests existed.
CREATE FUNCTION pod.guest_reads(room uuid) RETURNS boolean
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  g uuid := pod.current_guest_id();
BEGIN
  IF g IS NULL THEN
    RAISE EXCEPTION 'anonymous readers of a chat need a chat token' USING ERRCODE = '42501',
      HINT = 'Sign in, or POST /rpc/chat_join_anonymous for a video''s chat.';
  END IF;
  RETURN EXISTS (SELECT 1 FROM pod.chat_guests WHERE id = g AND room_id = room AND affiliation <> 'outcast');
END $$;

CREATE POLICY rooms_guest ON pod.rooms FOR SELECT TO pgpod_anon USING (pod.guest_reads(id));
DROP POLICY members_moderate ON pod.room_members;
CREATE POLICY members_moderate ON pod.room_members TO pgpod_user
  USING (pod.room_may(room_id, 'mute') OR pod.room_may(room_id, 'ban'))
  WITH CHECK (pod.room_may(room_id, 'mute') OR pod.room_may(room_id, 'ban'));
DROP POLICY messages_read ON pod.messages;
CREATE POLICY messages_read ON pod.messages FOR SELECT TO pgpod_user
  USING (pod.can_read_room(room_id) AND pod.message_visible(room_id, author_id, guest_id, hidden, held_until));
CREATE POLICY messages_read_guest ON pod.messages FOR SELECT TO pgpod_anon
  USING (pod.guest_reads(room_id) AND pod.message_visible(room_id, author_id, guest_id, hidden, held_until));
DROP POLICY messages_post ON pod.messages;
CREATE POLICY messages_post ON pod.messages FOR INSERT TO pgpod_user
  WITH CHECK (author_id = (SELECT pod.current_user_id()));
CREATE POLICY messages_post_guest ON pod.messages FOR INSERT TO pgpod_anon
  WITH CHECK (author_id IS NULL AND guest_id = (SELECT pod.current_guest_id()));
DROP POLICY messages_edit_own ON pod.messages;
CREATE POLICY messages_edit_own ON pod.messages FOR UPDATE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) AND pod.room_may(room_id, 'edit'))
  WITH CHECK (author_id = (SELECT pod.current_user_id()));
DROP POLICY messages_delete ON pod.messages;
CREATE POLICY messages_delete ON pod.messages FOR DELETE TO pgpod_user
  USING (author_id = (SELECT pod.current_user_id()) OR pod.room_may(room_id, 'delete_others'));
DROP POLICY events_read ON pod.room_events;
CREATE POLICY events_read ON pod.room_events FOR SELECT TO pgpod_user
  USING (pod.can_read_room(room_id) AND pod.event_visible(room_id, audience, author));
CREATE POLICY events_read_guest ON pod.room_events FOR SELECT TO pgpod_anon
  USING (pod.guest_reads(room_id) AND pod.event_visible(room_id, audience, author));

ALTER TABLE pod.chat_guests ENABLE ROW LEVEL SECURITY;
CREATE POLICY guests_visible ON pod.chat_guests FOR SELECT TO pgpod_user USING (pod.can_read_room(room_id));
CREATE POLICY guests_visible_guest ON pod.chat_guests FOR SELECT TO pgpod_anon USING (pod.guest_reads(room_id));
CREATE POLICY guests_admin ON pod.chat_guests TO pgpod_admin USING (true) WITH CHECK (true);
ALTER TABLE pod.room_moderation_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY moderation_log_staff ON pod.room_moderation_log FOR SELECT TO pgpod_user USING (pod.can_moderate_room(room_id));
CREATE POLICY moderation_log_admin ON pod.room_moderation_log FOR SELECT TO pgpod_admin USING (true);


GRANT SELECT (id, name, type, data, created_by, created_at) ON pod.rooms TO pgpod_anon;
GRANT SELECT ON pod.messages, pod.room_events TO pgpod_anon;
GRANT INSERT (room_id, data) ON pod.messages TO pgpod_anon;
GRANT USAGE ON SEQUENCE pod.messages_id_seq TO pgpod_anon;
GRANT SELECT (id, room_id, kind, name, affiliation, is_muted, created_at, expires_at) ON pod.chat_guests TO pgpod_user, pgpod_anon;
GRANT SELECT ON pod.chat_guests, pod.room_moderation_log TO pgpod_admin;
GRANT SELECT ON pod.room_moderation_log TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.current_guest_id() TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;

-- api ---------------------------------------------------------------------------------

CREATE OR REPLACE VIEW api.messages WITH (security_invoker = true) AS
  SELECT id, room_id, author_id, data, sent_at, type, status, edited_at, deleted_at,
         guest_id, author_ref, hidden, held_until FROM pod.messages;
GRANT SELECT, INSERT ON api.messages TO pgpod_anon;
GRANT SELECT ON api.rooms, api.room_events TO pgpod_anon;

CREATE VIEW api.chat_guests WITH (security_invoker = true) AS
  SELECT id, room_id, kind, name, affiliation, is_muted, created_at, expires_at FROM pod.chat_guests;
COMMENT ON VIEW api.chat_guests IS 'Anonymous viewers and remote users of the caller''s rooms.';
GRANT SELECT ON api.chat_guests TO pgpod_user, pgpod_anon;

CREATE VIEW api.room_moderation_log WITH (security_invoker = true) AS
  SELECT id, room_id, actor_id, actor, action, target, message_id, detail, at FROM pod.room_moderation_log;
COMMENT ON VIEW api.room_moderation_log IS 'Moderator actions of the rooms the caller moderates.';
GRANT SELECT ON api.room_moderation_log TO pgpod_user;

CREATE FUNCTION api.chat_join_anonymous(video uuid, nickname text) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT row_to_json(j) FROM pod.chat_join_anonymous(video, nickname,
        nullif(current_setting('request.client_ip', true), '')::inet) j;
  END;
COMMENT ON FUNCTION api.chat_join_anonymous(uuid, text) IS 'An anonymous viewer''s chat token for a video''s room: {token, room, guest_id, expires_at, info}; 429 past the per-address limit.';
GRANT EXECUTE ON FUNCTION api.chat_join_anonymous(uuid, text) TO pgpod_anon, pgpod_user;

CREATE FUNCTION api.chat_room_info(room uuid) RETURNS json
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.chat_room_info(room)::json;
COMMENT ON FUNCTION api.chat_room_info(uuid) IS 'A room''s terms, rules in force and the caller''s role and permissions.';
GRANT EXECUTE ON FUNCTION api.chat_room_info(uuid) TO pgpod_anon, pgpod_user;

-- The first event of a room's stream (GET /rooms/<id>/events): the room's info with
-- its terms; NULL when the caller cannot read the room.
CREATE FUNCTION api.chat_stream_info(room uuid) RETURNS json
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF pod.current_user_id() IS NULL AND NOT pod.is_admin() THEN
    PERFORM pod.guest_reads(room);   -- refuses an anonymous reader without a chat token
  END IF;
  RETURN CASE WHEN pod.room_role(room) <> 'outcast' THEN pod.chat_room_info(room)::json END;
END $$;
COMMENT ON FUNCTION api.chat_stream_info(uuid) IS 'The info event a room''s stream starts with (terms, rules, your role).';

CREATE FUNCTION api.chat_moderate(room uuid, target text, action text) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN json_build_object('log_id', pod.chat_moderate(room, target, action));
COMMENT ON FUNCTION api.chat_moderate(uuid, text, text) IS 'mute, unmute, ban or unban a user, guest or user@pod in a room.';
GRANT EXECUTE ON FUNCTION api.chat_moderate(uuid, text, text) TO pgpod_user;

CREATE FUNCTION api.chat_set_options(room uuid, options jsonb) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  ch bigint := (SELECT channel_id FROM pod.livechat_rooms WHERE room_id = room);
BEGIN
  IF ch IS NULL THEN
    RAISE EXCEPTION 'room % is not a video''s or channel''s chat', room USING ERRCODE = 'P0002';
  END IF;
  IF NOT pod.room_may(room, 'change_options') THEN
    RAISE EXCEPTION 'your role may not change the options of room %', room USING ERRCODE = '42501';
  END IF;
  INSERT INTO pod.channel_chat_options (channel_id, options) VALUES (ch, options)
    ON CONFLICT (channel_id) DO UPDATE SET options = EXCLUDED.options;
  RETURN pod.chat_room_info(room)::json;
END $$;
COMMENT ON FUNCTION api.chat_set_options(uuid, jsonb) IS 'Changes the chat options of a room''s channel (permission change_options).';
GRANT EXECUTE ON FUNCTION api.chat_set_options(uuid, jsonb) TO pgpod_user;

CREATE FUNCTION api.room_history(room uuid, before bigint DEFAULT NULL, after bigint DEFAULT NULL, page_size integer DEFAULT 50)
  RETURNS SETOF api.messages
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.room_history_check(room, before, after, page_size);
  IF after IS NULL THEN
    RETURN QUERY SELECT m.* FROM api.messages m
       WHERE m.room_id = room AND m.id < coalesce(before, 9223372036854775807)
       ORDER BY m.id DESC LIMIT page_size;
  ELSE
    RETURN QUERY SELECT a.* FROM (SELECT m.* FROM api.messages m WHERE m.room_id = room AND m.id > after
                                   ORDER BY m.id LIMIT page_size) a
       ORDER BY a.id DESC;
  END IF;
END $$;
COMMENT ON FUNCTION api.room_history(uuid, bigint, bigint, integer) IS 'A page of a room''s messages, newest first: before or after a message id, or the latest; limit 1-200.';
GRANT EXECUTE ON FUNCTION api.room_history(uuid, bigint, bigint, integer) TO pgpod_user, pgpod_anon;

-- Function privileges (as 99_privileges does for the whole schema on a fresh install):
-- nothing for PUBLIC; the helpers invoker policies, triggers and functions call.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_may(uuid, text), pod.message_visible(uuid, uuid, uuid, boolean, timestamptz),
    pod.event_visible(uuid, text, uuid), pod.room_history_check(uuid, bigint, bigint, integer),
    pod.forbidden_word_check(text), pod.chat_fold(text), pod.room_permission_defaults(), pod.room_role(uuid),
    pod.current_guest_id(), pod.guest_reads(uuid)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION api.chat_join_anonymous(uuid, text), api.chat_room_info(uuid), api.chat_stream_info(uuid),
    api.room_history(uuid, bigint, bigint, integer) TO pgpod_anon, pgpod_user;
GRANT EXECUTE ON FUNCTION api.chat_moderate(uuid, text, text), api.chat_set_options(uuid, jsonb) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.livechat_tick() TO pgpod_worker;

-- sql/76_livechat_federation.sql
-- 76_livechat_federation: remote chats (the seed's remote video chats). A viewer on
-- pod B of a video of pod A chats in A's room:
--   B learns the chat's information with a signed GET to A (job 'chat_info', run by the
--   federator; pod.remote_servers' refresh throttle decides when the server's entry is
--   refreshed), keeps it in pod.remote_video_chats, makes a local mirror room and asks
--   A to follow the room ('chat.subscribe'); A answers with the room's recent history
--   and its event sequence ('chat.subscribed') and from then on pushes every event of
--   the room to each following pod ('chat.event', in A's sequence; events only staff
--   may see are pushed as 'skip' so the sequence stays gapless); B applies them strictly
--   in that order to its mirror, whose own events feed B's /rooms/<id>/events;
--   B's user posts with POST /rpc/chat_post, which B delivers to A ('chat.post'); A is
--   authoritative: it applies its options and moderation (pod.chat_remote_post) and
--   either the post becomes an event of the room (and comes back to B) or B is told
--   why not ('chat.refused', kept in pod.remote_chat_outbox). A remote author is
--   user@pod. All deliveries go through the signed queue (pod.deliver).

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('livechat.chat_info_path', '"/rpc/video_chat_infos"', 'Path (with ?video=<uuid>) where a pod answers a video''s chat information.');
INSERT INTO pod.job_kinds (kind, retries, description) VALUES
  ('chat_info', 3, 'Signed GET of a remote video''s chat information from its pod (federator).');

-- host[:port] of a pod URL, the key of pod.remote_servers
CREATE FUNCTION pod.pod_host(url text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN lower(substring(url FROM '^[a-zA-Z]+://([^/?#]+)'));

ALTER TABLE pod.remote_video_chats
  ADD COLUMN room_id uuid UNIQUE REFERENCES pod.rooms ON DELETE SET NULL,
  ADD COLUMN last_seq bigint NOT NULL DEFAULT 0,
  ADD COLUMN subscribed_at timestamptz;
COMMENT ON COLUMN pod.remote_video_chats.room_id IS 'The local mirror of the remote room; its events feed /rooms/<id>/events here.';
COMMENT ON COLUMN pod.remote_video_chats.last_seq IS 'The origin room''s last event applied to the mirror (applied strictly in order).';

-- Mirror messages: which local row is which origin message.
CREATE TABLE pod.remote_chat_messages (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  origin_id bigint NOT NULL,
  message_id bigint NOT NULL REFERENCES pod.messages ON DELETE CASCADE,
  PRIMARY KEY (room_id, origin_id)
);
-- Origin events that arrived before their predecessors.
CREATE TABLE pod.remote_chat_pending (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  seq bigint NOT NULL,
  event jsonb NOT NULL,
  PRIMARY KEY (room_id, seq)
);
-- Posts of local users to remote rooms, and what the origin said of them.
CREATE TABLE pod.remote_chat_outbox (
  ref uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  data jsonb NOT NULL,
  status text NOT NULL DEFAULT 'sent' CHECK (status IN ('sent', 'refused')),
  sqlstate text,
  reason text,
  retry_after integer,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX remote_chat_outbox_user_idx ON pod.remote_chat_outbox (user_id, created_at);
-- Pods following a local room.
CREATE TABLE pod.room_remote_pods (
  room_id uuid NOT NULL REFERENCES pod.rooms ON DELETE CASCADE,
  pod_url text NOT NULL,
  since_seq bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room_id, pod_url)
);
COMMENT ON TABLE pod.room_remote_pods IS 'Pods with viewers in a local room: every event of the room is pushed to them.';
SELECT pg_catalog.pg_extension_config_dump('pod.remote_chat_messages', '');
SELECT pg_catalog.pg_extension_config_dump('pod.remote_chat_pending', '');
SELECT pg_catalog.pg_extension_config_dump('pod.remote_chat_outbox', '');
SELECT pg_catalog.pg_extension_config_dump('pod.room_remote_pods', '');

-- What other pods see of a message: the author as user@pod (local users by id), no
-- local-only columns.
CREATE FUNCTION pod.chat_public_message(m pod.messages, host text) RETURNS jsonb
  LANGUAGE sql IMMUTABLE
  RETURN jsonb_build_object('id', m.id, 'author', coalesce(m.author_ref, m.author_id::text || '@' || host),
                            'type', m.type, 'data', m.data, 'status', m.status, 'sent_at', m.sent_at,
                            'edited_at', m.edited_at, 'deleted_at', m.deleted_at);

-- What we tell other pods about a local video's chat (the GET they sign).
CREATE OR REPLACE FUNCTION pod.local_video_chat_infos(video uuid) RETURNS jsonb
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT jsonb_build_object(
            'enabled', true,
            'anonymous_allowed', coalesce((o.options ->> 'anonymous_allowed')::boolean, true)
                                 AND NOT coalesce((o.options ->> 'mute_anonymous')::boolean, false),
            'protocols', jsonb_build_object('s2s', jsonb_build_object('type', 'pgpod-signed-http',
                           'inbox', (SELECT url FROM pod.identity) || (pod.setting('federation.inbox_path') #>> '{}'))),
            'room', (SELECT room_id FROM pod.livechat_rooms r WHERE r.video_uuid = v.uuid
                     UNION ALL SELECT room_id FROM pod.livechat_rooms r WHERE r.channel_id = v.channel_id AND r.video_uuid IS NULL
                     LIMIT 1))
            FROM pod.videos v LEFT JOIN pod.channel_chat_options o ON o.channel_id = v.channel_id
           WHERE v.uuid = video AND v.origin IS NULL AND v.state = 'published');

CREATE FUNCTION api.video_chat_infos(video uuid) RETURNS json
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN coalesce(pod.local_video_chat_infos(video), '{"enabled": false}')::json;
COMMENT ON FUNCTION api.video_chat_infos(uuid) IS 'A local video''s chat information for other pods: {enabled, anonymous_allowed, protocols, room}.';

-- A (origin) side --------------------------------------------------------------------

-- Pushes one event of a followed room to every following pod.
CREATE FUNCTION pod.chat_push_event(room uuid, seq bigint, event_kind pod.room_event_kind, message bigint,
                                    event_audience text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  host text := pod.pod_host((SELECT url FROM pod.identity));
  staff boolean := coalesce(event_audience = 'staff', false);
BEGIN
  PERFORM pod.deliver(ARRAY(SELECT pod_url FROM pod.room_remote_pods p WHERE p.room_id = room ORDER BY pod_url),
                      'chat.event', jsonb_build_object(
                        'video', (SELECT video_uuid FROM pod.livechat_rooms l WHERE l.room_id = room),
                        'room', room, 'seq', seq,
                        'kind', CASE WHEN staff THEN 'skip' WHEN event_audience = 'others' THEN 'new' ELSE event_kind::text END,
                        'message', CASE WHEN NOT staff THEN
                                     (SELECT pod.chat_public_message(m, host) FROM pod.messages m WHERE m.id = message) END));
END $$;

-- A pod follows a local video's room: from now on it gets every event; it gets the
-- current sequence and the recent history (what everyone may see) at once.
CREATE FUNCTION pod.chat_follow(sender text, video uuid) RETURNS uuid
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  room uuid;
  seq bigint;
  host text := pod.pod_host((SELECT url FROM pod.identity));
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pod.videos WHERE uuid = video AND origin IS NULL AND state = 'published') THEN
    PERFORM pod.inbox_reject('PT404', 'no published local video ' || coalesce(video::text, 'NULL'));
  END IF;
  room := pod.livechat_room(video);
  -- under the room's row lock: no event is numbered between the snapshot and the follow
  SELECT event_seq INTO seq FROM pod.rooms WHERE id = room FOR UPDATE;
  INSERT INTO pod.room_remote_pods (room_id, pod_url, since_seq) VALUES (room, sender, seq)
    ON CONFLICT (room_id, pod_url) DO UPDATE SET since_seq = EXCLUDED.since_seq;
  PERFORM pod.deliver(ARRAY[sender], 'chat.subscribed', jsonb_build_object(
    'video', video, 'room', room, 'seq', seq,
    'history', coalesce((SELECT jsonb_agg(pod.chat_public_message(h, host) ORDER BY h.id)
                           FROM (SELECT * FROM pod.messages m
                                  WHERE m.room_id = room AND m.status <> 'deleted' AND NOT m.hidden
                                    AND (m.held_until IS NULL OR m.held_until <= now())
                                  ORDER BY m.id DESC LIMIT 50) h), '[]')));
  RETURN room;
END $$;

CREATE FUNCTION pod.inbox_livechat(sender text, activity jsonb) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  kind text := activity ->> 'type';
  video uuid;
  room uuid;
  rc pod.remote_video_chats;
  st text;
  msg text;
  det text;
  id bigint;
BEGIN
  BEGIN
    video := (activity ->> 'video')::uuid;
  EXCEPTION WHEN invalid_text_representation THEN
    PERFORM pod.inbox_reject('PT400', 'chat activity: video is not a uuid');
  END;
  IF video IS NULL THEN
    PERFORM pod.inbox_reject('PT400', 'chat activity needs a video');
  END IF;
  CASE kind
  WHEN 'chat.subscribe' THEN
    PERFORM pod.chat_follow(sender, video);
    RETURN jsonb_build_object('status', 'following');
  WHEN 'chat.post' THEN
    IF coalesce(activity ->> 'author', '') NOT LIKE '%@' || pod.pod_host(sender) THEN
      PERFORM pod.inbox_reject('PT403', 'a remote author must be a user of the sending pod (user@' || pod.pod_host(sender) || ')');
    END IF;
    IF jsonb_typeof(activity -> 'data') IS DISTINCT FROM 'object' THEN
      PERFORM pod.inbox_reject('PT400', 'chat.post needs data (an object)');
    END IF;
    room := (SELECT r.room_id FROM pod.room_remote_pods r JOIN pod.livechat_rooms l USING (room_id)
              WHERE l.video_uuid = video AND r.pod_url = sender);
    IF room IS NULL THEN
      room := pod.chat_follow(sender, video);
    END IF;
    BEGIN
      id := pod.chat_remote_post(room, activity ->> 'author', activity -> 'data');
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
      PERFORM pod.deliver(ARRAY[sender], 'chat.refused', jsonb_build_object(
        'video', video, 'ref', activity ->> 'ref', 'sqlstate', st, 'reason', msg,
        'retry_after', substring(det FROM '^Retry-After: ([0-9]+)$')::integer));
      RETURN jsonb_build_object('status', 'refused', 'sqlstate', st, 'reason', msg);
    END;
    RETURN jsonb_build_object('status', 'posted', 'message', id);
  WHEN 'chat.subscribed', 'chat.event', 'chat.refused' THEN
    -- only the video's own pod speaks for its room
    SELECT c.* INTO rc FROM pod.remote_video_chats c JOIN pod.videos v ON v.uuid = c.video_uuid AND v.origin = sender
     WHERE c.host = pod.pod_host(sender) AND c.video_uuid = video FOR UPDATE OF c;
    IF rc.room_id IS NULL THEN
      PERFORM pod.inbox_reject('PT404', 'no chat of ' || sender || ' video ' || video || ' is followed here');
    END IF;
    IF kind = 'chat.refused' THEN
      UPDATE pod.remote_chat_outbox SET status = 'refused', sqlstate = left(activity ->> 'sqlstate', 5),
             reason = left(activity ->> 'reason', 500), retry_after = (activity ->> 'retry_after')::integer
       WHERE ref = (activity ->> 'ref')::uuid AND room_id = rc.room_id;
      RETURN jsonb_build_object('status', 'noted');
    END IF;
    IF jsonb_typeof(activity -> 'seq') IS DISTINCT FROM 'number' THEN
      PERFORM pod.inbox_reject('PT400', kind || ' needs a seq');
    END IF;
    IF kind = 'chat.subscribed' THEN
      IF rc.subscribed_at IS NOT NULL AND rc.last_seq > 0 THEN
        RETURN jsonb_build_object('status', 'already following');
      END IF;
      PERFORM pod.remote_chat_apply_message(rc.room_id, h, 'new')
         FROM jsonb_array_elements(CASE WHEN jsonb_typeof(activity -> 'history') = 'array' THEN activity -> 'history' ELSE '[]' END) h;
      UPDATE pod.remote_video_chats SET last_seq = (activity ->> 'seq')::bigint, subscribed_at = coalesce(subscribed_at, now())
       WHERE host = rc.host AND video_uuid = rc.video_uuid;
      DELETE FROM pod.remote_chat_pending WHERE room_id = rc.room_id AND seq <= (activity ->> 'seq')::bigint;
    ELSE
      INSERT INTO pod.remote_chat_pending (room_id, seq, event) VALUES (rc.room_id, (activity ->> 'seq')::bigint, activity)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN jsonb_build_object('status', 'applied', 'applied', pod.remote_chat_apply(rc.host, rc.video_uuid));
  ELSE
    PERFORM pod.inbox_reject('PT400', 'unknown chat activity ' || quote_literal(kind));
  END CASE;
  RETURN NULL;
END $$;

-- B (follower) side ------------------------------------------------------------------

-- One origin message into the mirror: new, a new state (edit), or its tombstone.
CREATE FUNCTION pod.remote_chat_apply_message(room uuid, m jsonb, event_kind text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  local_id bigint;
  origin bigint := (m ->> 'id')::bigint;
BEGIN
  IF m IS NULL OR origin IS NULL THEN
    RETURN;
  END IF;
  SELECT message_id INTO local_id FROM pod.remote_chat_messages WHERE room_id = room AND origin_id = origin;
  IF local_id IS NULL THEN
    IF m ->> 'status' = 'deleted' OR event_kind = 'deleted' THEN
      RETURN;   -- never seen here, nothing to withdraw
    END IF;
    INSERT INTO pod.messages (room_id, author_id, guest_id, author_ref, type, data, sent_at)
      VALUES (room, NULL, NULL, left(coalesce(m ->> 'author', 'unknown'), 300),
              CASE WHEN m ->> 'type' = 'event' THEN 'event' ELSE 'message' END::pod.message_type,
              CASE WHEN jsonb_typeof(m -> 'data') = 'object' THEN m -> 'data' ELSE '{}' END,
              coalesce((m ->> 'sent_at')::timestamptz, now()))
      RETURNING id INTO local_id;
    INSERT INTO pod.remote_chat_messages (room_id, origin_id, message_id) VALUES (room, origin, local_id);
  ELSIF m ->> 'status' = 'deleted' OR event_kind = 'deleted' THEN
    DELETE FROM pod.messages WHERE id = local_id AND status <> 'deleted';
  ELSIF event_kind = 'edited' THEN
    UPDATE pod.messages SET data = m -> 'data' WHERE id = local_id AND status <> 'deleted' AND data IS DISTINCT FROM m -> 'data';
  END IF;
END $$;

-- Applies the mirror's pending origin events in sequence order; returns how many.
CREATE FUNCTION pod.remote_chat_apply(chat_host text, chat_video uuid) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  rc pod.remote_video_chats;
  e pod.remote_chat_pending;
  n integer := 0;
BEGIN
  SELECT * INTO rc FROM pod.remote_video_chats WHERE host = chat_host AND video_uuid = chat_video;
  IF rc.subscribed_at IS NULL THEN
    RETURN 0;   -- the snapshot (chat.subscribed) first
  END IF;
  LOOP
    DELETE FROM pod.remote_chat_pending WHERE room_id = rc.room_id AND seq = rc.last_seq + 1 RETURNING * INTO e;
    EXIT WHEN e.seq IS NULL;
    IF e.event ->> 'kind' IN ('new', 'edited', 'deleted') THEN
      PERFORM pod.remote_chat_apply_message(rc.room_id, e.event -> 'message', e.event ->> 'kind');
    END IF;
    rc.last_seq := e.seq;
    e := NULL;
    n := n + 1;
  END LOOP;
  DELETE FROM pod.remote_chat_pending WHERE room_id = rc.room_id AND seq <= rc.last_seq;
  UPDATE pod.remote_video_chats SET last_seq = rc.last_seq WHERE host = chat_host AND video_uuid = chat_video;
  RETURN n;
END $$;

-- The mirror of a remote video's chat, made on first use, and the follow request.
CREATE FUNCTION pod.remote_chat_mirror(chat_host text, chat_video uuid) RETURNS uuid
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  rc pod.remote_video_chats;
  v pod.videos;
  room uuid;
BEGIN
  SELECT * INTO rc FROM pod.remote_video_chats WHERE host = chat_host AND video_uuid = chat_video FOR UPDATE;
  SELECT * INTO v FROM pod.videos WHERE uuid = chat_video;
  room := rc.room_id;
  IF room IS NULL THEN
    INSERT INTO pod.rooms (name, type, created_by) VALUES (left(coalesce(v.name, 'remote chat'), 200), 'video', NULL)
      RETURNING id INTO room;
    UPDATE pod.remote_video_chats SET room_id = room WHERE host = chat_host AND video_uuid = chat_video;
  END IF;
  IF rc.subscribed_at IS NULL AND v.origin IS NOT NULL THEN
    PERFORM pod.deliver(ARRAY[v.origin], 'chat.subscribe', jsonb_build_object('video', chat_video));
  END IF;
  RETURN room;
END $$;

-- The federator's GET for a chat_info job (signed like every fetch; the federator
-- refuses private addresses), and its end. The URL must be on the video's own pod
-- (the job's origin): anything else is dead at once, as a keyId off its origin is.
CREATE FUNCTION pod.chat_info_request(j pod.jobs, at timestamptz, me pod.identity, worker text)
  RETURNS TABLE (job_id bigint, kind text, pod_url text, url text, headers text[])
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF rtrim(pod.key_id_origin(j.payload ->> 'url'), '/') IS DISTINCT FROM rtrim(j.payload ->> 'origin', '/') THEN
    PERFORM pod.job_fail(ARRAY[j.id], ARRAY['chat information URL ' || coalesce(left(j.payload ->> 'url', 200), 'NULL')
                                           || ' is not on ' || coalesce(j.payload ->> 'origin', 'NULL')],
                         worker, ARRAY[true], NULL);
    RETURN;
  END IF;
  RETURN QUERY
    SELECT j.id, j.kind, j.payload ->> 'origin', j.payload ->> 'url',
           pod.httpsig_sign_request('GET', j.payload ->> 'url', '', at, me.url || '#main-key', me.private_key)
             || 'Accept: application/json'::text;
END $$;

-- What the video's pod answered (NULL: nothing usable) and the GET's HTTP status (0: no
-- answer; -1: refused, a private address; NULL: not known). No usable answer: a 4xx
-- (pod.http_failure_permanent) ends the job at once, anything else is retried.
CREATE FUNCTION pod.chat_info_finish(job_id bigint, worker text, answer text, status integer) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  j pod.jobs;
  infos jsonb;
  r_host text;
  r_video uuid;
BEGIN
  SELECT * INTO j FROM pod.jobs WHERE id = job_id AND kind = 'chat_info' AND state = 'running' AND pod.jobs.worker = chat_info_finish.worker;
  IF j.id IS NULL THEN
    RAISE EXCEPTION 'no running chat_info job % of %', job_id, worker USING ERRCODE = 'P0002';
  END IF;
  BEGIN
    infos := answer::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    infos := NULL;
  END;
  IF jsonb_typeof(infos) IS DISTINCT FROM 'object' OR jsonb_typeof(infos -> 'enabled') IS DISTINCT FROM 'boolean'
     OR coalesce(jsonb_typeof(infos -> 'anonymous_allowed'), 'boolean') <> 'boolean'
     OR coalesce(jsonb_typeof(infos -> 'protocols'), 'object') <> 'object' THEN
    PERFORM pod.job_fail(ARRAY[job_id], ARRAY['no usable chat information from ' || (j.payload ->> 'url') || ': '
                         || coalesce(left(answer, 200), 'no answer')
                         || CASE WHEN status < 0 THEN ' (refused: a private address)' ELSE coalesce(' (HTTP ' || status || ')', '') END],
                         worker, ARRAY[coalesce(pod.http_failure_permanent(status), false)], NULL);
    RETURN jsonb_build_object('status', 'failed');
  END IF;
  r_host := j.payload ->> 'host';
  r_video := (j.payload ->> 'video')::uuid;
  infos := jsonb_build_object('enabled', infos -> 'enabled', 'anonymous_allowed', coalesce(infos -> 'anonymous_allowed', 'false'),
                              'protocols', coalesce(infos -> 'protocols', '{}'), 'room', infos -> 'room');
  -- the server's entry honours the refresh throttle; the video's answer is recorded
  PERFORM pod.remote_server_update(r_host, coalesce((SELECT jsonb_object_agg(k, v) FROM jsonb_each(infos -> 'protocols') x(k, v)
                                                     WHERE k IN ('s2s', 'ws-s2s') AND jsonb_typeof(v) = 'object'), '{}'));
  INSERT INTO pod.remote_servers (host) VALUES (r_host) ON CONFLICT DO NOTHING;
  INSERT INTO pod.remote_video_chats (host, video_uuid, infos, updated_at) VALUES (r_host, r_video, infos, now())
    ON CONFLICT (host, video_uuid) DO UPDATE SET infos = EXCLUDED.infos, updated_at = EXCLUDED.updated_at;
  IF (infos ->> 'enabled')::boolean THEN
    PERFORM pod.remote_chat_mirror(r_host, r_video);
  END IF;
  PERFORM pod.job_complete(ARRAY[job_id], worker);
  RETURN jsonb_build_object('status', 'recorded', 'infos', infos);
END $$;

-- A signed-in user opens a remote video's chat: ready (the mirror room to read and post
-- in), pending (the pod is asking the video's pod; ask again), or disabled.
CREATE FUNCTION pod.remote_chat_open(video uuid) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  v pod.videos;
  r_host text;
  rc pod.remote_video_chats;
  fresh interval := (pod.setting('livechat.remote_refresh') #>> '{}')::interval;
BEGIN
  IF pod.current_user_id() IS NULL AND NOT pod.is_admin() THEN
    RAISE EXCEPTION 'sign in to chat with other pods' USING ERRCODE = '42501';
  END IF;
  SELECT * INTO v FROM pod.videos WHERE uuid = video;
  IF v.uuid IS NULL OR v.origin IS NULL THEN
    RAISE EXCEPTION 'no remote video %', video USING ERRCODE = 'P0002',
      HINT = 'A local video''s chat is GET /rpc/video_chat_room.';
  END IF;
  r_host := pod.pod_host(v.origin);
  SELECT * INTO rc FROM pod.remote_video_chats c WHERE c.host = pod_host(v.origin) AND c.video_uuid = video;
  -- a chat in use stays ready while its information is refreshed (at most once per
  -- livechat.remote_refresh), so that cleanup does not find it stale
  IF rc.host IS NOT NULL AND rc.updated_at <= now() - fresh AND rc.room_id IS NOT NULL THEN
    PERFORM pod.remote_chat_refresh(v, r_host);
  END IF;
  IF rc.host IS NOT NULL AND (rc.updated_at > now() - fresh OR rc.room_id IS NOT NULL) THEN
    IF NOT (rc.infos ->> 'enabled')::boolean THEN
      RETURN jsonb_build_object('status', 'disabled', 'infos', rc.infos);
    END IF;
    RETURN jsonb_build_object('status', 'ready', 'room', pod.remote_chat_mirror(rc.host, video), 'infos', rc.infos,
                              'following', rc.subscribed_at IS NOT NULL);
  END IF;
  PERFORM pod.remote_chat_refresh(v, r_host);
  RETURN jsonb_build_object('status', 'pending');
END $$;

-- Asks the video's pod for its chat information (a chat_info job), unless a job for it
-- is already waiting or running.
CREATE FUNCTION pod.remote_chat_refresh(v pod.videos, chat_host text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'chat_info' AND j.state IN ('waiting', 'running')
                  AND j.payload ->> 'video' = v.uuid::text) THEN
    PERFORM pod.job_enqueue('chat_info', jsonb_build_object(
      'origin', v.origin, 'host', chat_host, 'video', v.uuid,
      'url', v.origin || (pod.setting('livechat.chat_info_path') #>> '{}') || '?video=' || v.uuid), v.origin);
  END IF;
END $$;

-- A local user's post to a remote room: delivered to the room's pod, which decides.
CREATE FUNCTION pod.remote_chat_send(room uuid, message_data jsonb) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  uid uuid := pod.current_user_id();
  rc pod.remote_video_chats;
  origin text;
  o pod.remote_chat_outbox;
BEGIN
  IF uid IS NULL THEN
    RAISE EXCEPTION 'sign in to chat with other pods' USING ERRCODE = '42501';
  END IF;
  SELECT * INTO rc FROM pod.remote_video_chats WHERE room_id = room;
  origin := (SELECT v.origin FROM pod.videos v WHERE v.uuid = rc.video_uuid);
  IF origin IS NULL THEN
    RAISE EXCEPTION 'room % is not another pod''s chat', room USING ERRCODE = 'P0002';
  END IF;
  IF jsonb_typeof(message_data) IS DISTINCT FROM 'object' OR length(message_data ->> 'text') > 5000 THEN
    RAISE EXCEPTION 'a message is an object whose text has at most 5000 characters' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.remote_chat_outbox (room_id, user_id, data) VALUES (room, uid, message_data) RETURNING * INTO o;
  PERFORM pod.deliver(ARRAY[origin], 'chat.post', jsonb_build_object(
    'video', rc.video_uuid, 'ref', o.ref, 'data', message_data,
    'author', uid::text || '@' || pod.pod_host((SELECT url FROM pod.identity))));
  RETURN jsonb_build_object('status', 'sent', 'ref', o.ref);
END $$;

-- Posting, the same call for local and remote rooms: a local room gets the row (as the
-- caller, under row-level security and every rule); a remote room's pod gets the post.
CREATE FUNCTION api.chat_post(room uuid, data jsonb) RETURNS json
  LANGUAGE plpgsql SET search_path = pg_catalog, api AS $$
DECLARE
  m api.messages;
BEGIN
  IF EXISTS (SELECT 1 FROM pod.remote_video_chats WHERE room_id = room) THEN
    RETURN pod.remote_chat_send(room, data)::json;
  END IF;
  INSERT INTO api.messages (room_id, data) VALUES (room, data) RETURNING * INTO m;
  RETURN json_build_object('status', 'posted', 'message', row_to_json(m));
END $$;
COMMENT ON FUNCTION api.chat_post(uuid, jsonb) IS 'Posts in a local room, or sends the post to a remote room''s pod ({status: sent, ref}; GET /remote_chat_outbox?ref=eq.<ref> tells a refusal).';

CREATE FUNCTION api.remote_chat_open(video uuid) RETURNS json
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.remote_chat_open(video)::json;
COMMENT ON FUNCTION api.remote_chat_open(uuid) IS 'Opens a remote video''s chat: {status: ready, room} (read /rooms/<room>/events, post with /rpc/chat_post), pending (ask again), or disabled.';

ALTER TABLE pod.remote_chat_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY outbox_own ON pod.remote_chat_outbox FOR SELECT TO pgpod_user USING (user_id = (SELECT pod.current_user_id()));
CREATE POLICY outbox_admin ON pod.remote_chat_outbox FOR SELECT TO pgpod_admin USING (true);
GRANT SELECT ON pod.remote_chat_outbox TO pgpod_user, pgpod_admin;
GRANT SELECT ON pod.room_remote_pods, pod.remote_chat_messages, pod.remote_chat_pending TO pgpod_admin;
GRANT SELECT (host, video_uuid, room_id) ON pod.remote_video_chats TO pgpod_user;
CREATE VIEW api.remote_chat_outbox WITH (security_invoker = true) AS
  SELECT ref, room_id, data, status, sqlstate, reason, retry_after, created_at FROM pod.remote_chat_outbox;
COMMENT ON VIEW api.remote_chat_outbox IS 'The caller''s posts to other pods'' rooms and whether the room''s pod refused them.';
GRANT SELECT ON api.remote_chat_outbox TO pgpod_user;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.video_chat_infos(uuid) TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION api.chat_post(uuid, jsonb), api.remote_chat_open(uuid) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.remote_chat_send(uuid, jsonb) TO pgpod_user;

-- the livechat hooks in the federation's shared functions (sql/70_federation.sql, sql/72_inbox.sql):
-- a chat_info fetch kind, and chat.* activities handed to pod.inbox_livechat
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
  ELSIF k = 'chat_info' THEN
    IF cardinality(answers) IS DISTINCT FROM 1 THEN
      RAISE EXCEPTION 'a chat_info job has one answer' USING ERRCODE = '22023';
    END IF;
    RETURN pod.chat_info_finish(job_id, worker, answers[1], statuses[1]);
  END IF;
  RAISE EXCEPTION 'job % is not a fetch job', job_id USING ERRCODE = 'P0002';
END $$;

CREATE OR REPLACE FUNCTION pod.fetches_finish(job_id bigint, worker text, urls text[], answers text[]) RETURNS jsonb
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.fetches_finish(job_id, worker, urls, answers, NULL);
GRANT EXECUTE ON FUNCTION pod.fetches_claim(text), pod.fetches_finish(bigint, text, text[], text[]),
  pod.fetches_finish(bigint, text, text[], text[], integer[]) TO pgpod_worker;
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
    IF kind LIKE 'chat.%' THEN   -- livechat: sql/76_livechat_federation.sql
      RETURN pod.inbox_livechat(sender, activity);
    END IF;
    PERFORM pod.inbox_reject('PT400', 'unknown activity type ' || coalesce(quote_literal(kind), 'NULL'));
  END CASE;
  RETURN NULL;
END $$;
-- Streams through the gateway's event hub (gateway/hub.c) read each room event once
-- per gateway worker, bypassing row-level security, and filter it in memory for each
-- subscriber by the rule of pod.event_visible: the shared read carries the event's
-- audience and author, and each subscriber's view of the room (pod.room_stream_viewer)
-- is asked under its own role when it subscribes and again whenever its rights change
-- (NOTIFY pgpod_room_members '<room>:<user or guest>').
DROP FUNCTION pod.room_events_feed(uuid, bigint, integer);
CREATE FUNCTION pod.room_events_feed(room uuid, after bigint, max_rows integer DEFAULT 500)
  RETURNS TABLE (seq bigint, kind text, message text, audience text, author uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT e.seq, e.kind::text,
           coalesce(to_jsonb(m), jsonb_build_object('id', e.message_id, 'room_id', e.room_id, 'status', 'deleted'))::text,
           e.audience, e.author
      FROM pod.room_events e
      LEFT JOIN pod.messages m ON m.id = e.message_id
     WHERE e.room_id = room_events_feed.room AND e.seq > room_events_feed.after
     ORDER BY e.seq
     LIMIT least(greatest(room_events_feed.max_rows, 0), 5000);
  END;
COMMENT ON FUNCTION pod.room_events_feed(uuid, bigint, integer) IS 'A room''s events after a seq with their audience and author, for the gateway''s shared stream read (its login role only), which filters them per subscriber as pod.event_visible does.';
REVOKE ALL ON FUNCTION pod.room_events_feed(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_events_feed(uuid, bigint, integer) TO pgpod_authenticator;

-- The caller's view of a room's events, as the hub applies it: 'all' (pgpod_admin: the
-- events_admin policy), 'staff' (a moderator: everyone's events and staff-only ones,
-- not the 'others' release of a held message), else the ids (user, guest) whose own
-- staff-only events the caller sees ('' for none). Runs under the caller's role.
CREATE FUNCTION pod.room_stream_viewer(room uuid) RETURNS text
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN CASE WHEN pg_has_role('pgpod_admin', 'USAGE') THEN 'all'
              WHEN pod.can_moderate_room(room) THEN 'staff'
              ELSE concat_ws(' ', pod.current_user_id(), pod.current_guest_id()) END;
COMMENT ON FUNCTION pod.room_stream_viewer(uuid) IS 'Which events of a room the caller sees on the stream (all, staff, or its own ids), for the gateway''s hub.';
REVOKE ALL ON FUNCTION pod.room_stream_viewer(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_stream_viewer(uuid) TO pgpod_anon, pgpod_user, pgpod_admin;

-- Where a room's stream starts: its last event's seq, for a caller who may read the
-- room (NULL otherwise). Not through row-level security: per-viewer policies turn
-- max(seq) into a scan of every event of the room; the hub filters what it sends.
CREATE FUNCTION pod.room_stream_position(room uuid) RETURNS bigint
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN CASE WHEN pod.is_admin() OR pod.room_role(room) <> 'outcast'
              THEN (SELECT coalesce(max(e.seq), 0) FROM pod.room_events e WHERE e.room_id = room) END;
COMMENT ON FUNCTION pod.room_stream_position(uuid) IS 'The last event seq of a room the caller may read (NULL otherwise): where its stream starts.';
REVOKE ALL ON FUNCTION pod.room_stream_position(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_stream_position(uuid) TO pgpod_anon, pgpod_user, pgpod_admin;

-- A guest banned or dropped: its streams are asked again ('<room>:<guest id>').
CREATE FUNCTION pod.chat_guests_notify() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pg_notify('pgpod_room_members', OLD.room_id || ':' || OLD.id);
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION pod.chat_guests_notify() FROM PUBLIC;
CREATE TRIGGER chat_guests_notify AFTER UPDATE OF affiliation OR DELETE ON pod.chat_guests
  FOR EACH ROW EXECUTE FUNCTION pod.chat_guests_notify();
-- Stream wake-ups only for rooms a gateway listens to (extension/src/room_events.c):
-- the gateway's hub holds a room's stream lock while it has subscribers of the room;
-- an event notifies only when that lock is held, else its transaction keeps the lock
-- in ROW EXCLUSIVE mode until it ends (a gateway starting to listen waits for it, then
-- reads the room). A notifying commit serializes on a database-wide lock: a room
-- nobody streams does not pay it.
CREATE FUNCTION pod.room_event_notify(room uuid, seq bigint) RETURNS boolean
  AS 'MODULE_PATHNAME', 'room_event_notify' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.room_event_notify(uuid, bigint) IS 'NOTIFY pgpod_room_events ''<room>:<seq>'' when a gateway listens to the room (pod.room_events_sleep); true when it notified.';
CREATE FUNCTION pod.room_events_sleep(room uuid) RETURNS void
  AS 'MODULE_PATHNAME', 'room_events_sleep' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.room_events_sleep(uuid) IS 'This session (a gateway''s listener) listens to a room: every event of it notifies until pod.room_events_wake. Waits for events that notified nobody to be committed.';
CREATE FUNCTION pod.room_events_wake(room uuid) RETURNS boolean
  AS 'MODULE_PATHNAME', 'room_events_wake' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION pod.room_events_wake(uuid) IS 'Gives back what pod.room_events_sleep took; false if this session held nothing.';
REVOKE ALL ON FUNCTION pod.room_event_notify(uuid, bigint), pod.room_events_sleep(uuid), pod.room_events_wake(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.room_events_sleep(uuid), pod.room_events_wake(uuid) TO pgpod_authenticator;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
-- end of livechat (issue 16) -------------------------------------------------------------
