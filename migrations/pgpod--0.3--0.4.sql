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

-- >>> pubsub cache (issue 15): the switch of video federation to pubsub events in 72_inbox/73_video_federation, then sql/74_pubsub.sql, sql/75_feeds.sql, sql/76_pubsub_federation.sql, sql/77_video_pubsub.sql verbatim, then the privileges sql/99 would take back.
-- 73_video_federation: the JSON video announcements give way to the videos node (77).
DROP TRIGGER videos_federate_insert ON pod.videos;
DROP TRIGGER videos_federate_update ON pod.videos;
DROP TRIGGER videos_federate_delete ON pod.videos;
DROP FUNCTION pod.videos_federate_insert(), pod.videos_federate_update(), pod.videos_federate_delete(),
  pod.videos_announce(text, jsonb);
-- 72_inbox: friend.accept carries no videos (friends synchronise), pubsub events dispatched.
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
    PERFORM pod.inbox_reject('PT400', 'unknown activity type ' || coalesce(quote_literal(kind), 'NULL'));
  END CASE;
  RETURN NULL;
END $$;

-- (the tracker, video and torrents blocks run here, before the pubsub cache's files:
-- 77_video_pubsub's functions take pod.videos' row type, which would block video1's ALTER TABLE)
-- === tracker (issue 14): swarm counts, the tracker's two functions (sql/35_tracker.sql) ===

ALTER TABLE pod.video_files
  ADD COLUMN seeders integer NOT NULL DEFAULT 0 CHECK (seeders >= 0),
  ADD COLUMN leechers integer NOT NULL DEFAULT 0 CHECK (leechers >= 0),
  ADD COLUMN completed bigint NOT NULL DEFAULT 0 CHECK (completed >= 0);
COMMENT ON COLUMN pod.video_files.seeders IS 'Peers with the whole file in the tracker''s swarm at its last report.';
COMMENT ON COLUMN pod.video_files.leechers IS 'Peers still downloading at the tracker''s last report.';
COMMENT ON COLUMN pod.video_files.completed IS 'Downloads the tracker saw complete (event=completed), summed over its reports.';

CREATE FUNCTION pod.tracker_info_hashes() RETURNS TABLE (info_hash bytea, completed bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  AS $$
    SELECT f.info_hash, f.completed FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
     WHERE v.state = 'published' AND v.origin IS NULL AND f.info_hash IS NOT NULL
  $$;
COMMENT ON FUNCTION pod.tracker_info_hashes() IS 'The info hashes the tracker serves (this pod''s published files) with their completed counts.';

-- One batch of swarm counts: seeders and leechers replace the stored ones, completed
-- adds to them. Unknown hashes are ignored (a file unpublished since). Returns the
-- number of files updated.
CREATE FUNCTION pod.tracker_report(info_hashes bytea[], seeder_counts integer[], leecher_counts integer[],
                                   completed_deltas integer[]) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod
  AS $$
DECLARE
  n integer;
BEGIN
  IF cardinality(info_hashes) IS DISTINCT FROM cardinality(seeder_counts)
     OR cardinality(info_hashes) IS DISTINCT FROM cardinality(leecher_counts)
     OR cardinality(info_hashes) IS DISTINCT FROM cardinality(completed_deltas) THEN
    RAISE EXCEPTION 'tracker_report: the four arrays differ in length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE pod.video_files f
     SET seeders = greatest(r.s, 0), leechers = greatest(r.l, 0), completed = f.completed + greatest(r.c, 0)
    FROM unnest(info_hashes, seeder_counts, leecher_counts, completed_deltas) AS r(h, s, l, c)
   WHERE f.info_hash = r.h
     AND ((f.seeders, f.leechers) IS DISTINCT FROM (greatest(r.s, 0), greatest(r.l, 0)) OR r.c > 0);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;
COMMENT ON FUNCTION pod.tracker_report(bytea[], integer[], integer[], integer[]) IS
  'The tracker''s batch of swarm counts per info hash (seeders, leechers replace; completed adds).';
GRANT EXECUTE ON FUNCTION pod.tracker_info_hashes(), pod.tracker_report(bytea[], integer[], integer[], integer[])
  TO pgpod_worker;

-- api.video_files gains the counts (appended columns; the view is otherwise 30_video's).
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed
    FROM pod.video_files;
REVOKE EXECUTE ON FUNCTION pod.tracker_info_hashes(), pod.tracker_report(bytea[], integer[], integer[], integer[])
  FROM PUBLIC;
-- === end tracker ===

-- ==== video1 (issue 13): resumable uploads, videos, transcoding = sql/74_video_transcode.sql ====
-- 74_video_transcode: from an uploaded file to a playable video. Resumable (tus)
-- uploads whose bytes the gateway keeps on disk and whose state lives here; video_create
-- and the transcode queue; the transcoder's entry points (claim, progress with lease
-- renewal, staged blobs, publication in one transaction, failure); the outputs
-- (pod.video_files and the other files of a video) and who may read them.
-- Locking: an upload row changes only through these functions, and an offset only moves
-- from the value the caller read (compare and set); a transcode job's video changes only
-- under the job's lease (worker = the caller).

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('uploads.expiry', '"24 hours"', 'A resumable upload untouched for this long expires (410), then is removed with its bytes.'),
  ('transcode.ladder', '[1080, 720, 480, 360, 240]', 'Resolutions a video is transcoded to (heights; widths for portrait), none above the source''s.');

-- Resumable uploads ----------------------------------------------------------------

CREATE TABLE pod.uploads (
  id uuid PRIMARY KEY,
  owner_id uuid NOT NULL REFERENCES pod.users ON DELETE CASCADE,
  length bigint NOT NULL CHECK (length >= 0),
  received bigint NOT NULL DEFAULT 0,
  filename text CHECK (length(filename) <= 255),
  filetype text CHECK (length(filetype) <= 255),
  metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  CONSTRAINT uploads_received_within CHECK (received BETWEEN 0 AND length)
);
CREATE INDEX uploads_owner_idx ON pod.uploads (owner_id);
CREATE INDEX uploads_expires_idx ON pod.uploads (expires_at);
COMMENT ON TABLE pod.uploads IS 'tus uploads: the gateway keeps the bytes in <store>/uploads/<id>; received is the offset a client resumes from.';
SELECT pg_catalog.pg_extension_config_dump('pod.uploads', '');

-- What the gateway answers from: the caller's upload (no row for anyone else's).
CREATE FUNCTION pod.upload_state(upload uuid)
  RETURNS TABLE (length bigint, received bigint, expired boolean, expires text, metadata jsonb, file_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT u.length, u.received, u.expires_at < now(), pod.http_date(u.expires_at), u.metadata, u.file_id
    FROM pod.uploads u WHERE u.id = upload AND u.owner_id = pod.current_user_id()
$$;

-- Creation: the gateway chose the id (its bytes' file name) and may already hold
-- `received` bytes (creation-with-upload). Returns the expiry as an HTTP-date.
CREATE FUNCTION pod.upload_create(upload uuid, length bigint, metadata jsonb, received bigint DEFAULT 0)
  RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  expires timestamptz := now() + (pod.setting('uploads.expiry') #>> '{}')::interval;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF length IS NULL OR length < 0 OR received IS NULL OR received < 0 OR received > length THEN
    RAISE EXCEPTION 'an upload needs a length of 0 or more and an offset within it' USING ERRCODE = '22023';
  END IF;
  IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'upload metadata must be a JSON object' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.uploads (id, owner_id, length, received, filename, filetype, metadata, expires_at)
    VALUES (upload, me, length, received, left(nullif(metadata ->> 'filename', ''), 255),
            left(nullif(metadata ->> 'filetype', ''), 255), metadata, expires);
  RETURN pod.http_date(expires);
END $$;

-- Moves the offset from `from_offset` to `to_offset` (a PATCH that ended, or a client
-- that went away mid-body); NULL when the upload is not the caller's, expired, done, or
-- no longer at from_offset. The expiry starts again.
CREATE FUNCTION pod.upload_advance(upload uuid, from_offset bigint, to_offset bigint) RETURNS text
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.uploads u
     SET received = to_offset, updated_at = now(),
         expires_at = now() + (pod.setting('uploads.expiry') #>> '{}')::interval
   WHERE u.id = upload AND u.owner_id = pod.current_user_id() AND u.received = from_offset
     AND to_offset >= from_offset AND to_offset <= u.length AND u.expires_at >= now() AND u.file_id IS NULL
  RETURNING pod.http_date(u.expires_at)
$$;

-- The last bytes arrived: the gateway has hashed them and linked the blob into the
-- store; the blob and a file of the caller are recorded and the upload points at the
-- file. Nothing of an unfinished upload ever becomes a file.
CREATE FUNCTION pod.upload_finish(upload uuid, from_offset bigint, sha256 bytea) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  u pod.uploads;
  f jsonb;
BEGIN
  SELECT * INTO u FROM pod.uploads
   WHERE id = upload AND owner_id = pod.current_user_id() FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no upload %', upload USING ERRCODE = 'P0002';
  END IF;
  IF u.file_id IS NOT NULL OR u.received <> from_offset OR u.expires_at < now() THEN
    RAISE EXCEPTION 'upload % moved on meanwhile', upload USING ERRCODE = '40001';
  END IF;
  f := pod.register_upload(upload_finish.sha256, u.length, u.filename, coalesce(u.filetype, 'application/octet-stream'));
  UPDATE pod.uploads SET received = length, file_id = (f ->> 'id')::uuid, updated_at = now() WHERE id = upload;
  RETURN f;
END $$;

-- Termination (DELETE): the caller's upload goes; true when there was one.
CREATE FUNCTION pod.upload_terminate(upload uuid) RETURNS boolean
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH gone AS (DELETE FROM pod.uploads WHERE id = upload AND owner_id = pod.current_user_id() RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Expired uploads (finished ones too, their file stays) leave; the gateway removes the
-- returned uploads' bytes. Anyone may call it: it only removes what has expired.
CREATE FUNCTION pod.uploads_expire(max_rows integer DEFAULT 100) RETURNS SETOF uuid
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  DELETE FROM pod.uploads WHERE id IN (SELECT id FROM pod.uploads WHERE expires_at < now()
                                        ORDER BY expires_at LIMIT max_rows FOR UPDATE SKIP LOCKED)
  RETURNING id
$$;

-- Videos: source, state, progress, outputs -----------------------------------------

-- pod.video_object's body uses the row type of pod.videos, which blocks ALTER TABLE:
-- it is made again, unchanged, once the columns are added.
DROP FUNCTION pod.video_object(pod.videos);
ALTER TABLE pod.videos
  ADD COLUMN source_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN failure_reason text CHECK (length(failure_reason) <= 2000),
  ADD COLUMN progress smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  ADD COLUMN width integer CHECK (width > 0),
  ADD COLUMN height integer CHECK (height > 0),
  ADD COLUMN fps numeric CHECK (fps > 0),
  ADD COLUMN thumbnail_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN preview_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN hls_file_id uuid REFERENCES pod.files ON DELETE SET NULL,
  ADD COLUMN published_at timestamptz;
CREATE INDEX videos_thumbnail_idx ON pod.videos (thumbnail_file_id) WHERE thumbnail_file_id IS NOT NULL;
CREATE INDEX videos_preview_idx ON pod.videos (preview_file_id) WHERE preview_file_id IS NOT NULL;
CREATE INDEX videos_hls_idx ON pod.videos (hls_file_id) WHERE hls_file_id IS NOT NULL;
COMMENT ON COLUMN pod.videos.hls_file_id IS 'The HLS master playlist.';
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at);

-- One row per output: an MP4 (web video) or an HLS rendition (one fragmented MP4 file,
-- its byte-range playlist in playlist_file_id). id is the handle other tables use.
ALTER TABLE pod.video_files DROP CONSTRAINT video_files_pkey;
-- a source below the smallest rung is kept at its own size (the transcoder refuses
-- sides under 16 or over 8192 pixels)
ALTER TABLE pod.video_files DROP CONSTRAINT video_files_resolution_check;
ALTER TABLE pod.video_files ADD CONSTRAINT video_files_resolution_check CHECK (resolution BETWEEN 16 AND 8192);
ALTER TABLE pod.video_files
  ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  ADD COLUMN kind text NOT NULL DEFAULT 'mp4' CHECK (kind IN ('mp4', 'hls')),
  ADD COLUMN size bigint CHECK (size >= 0),
  ADD COLUMN bitrate integer CHECK (bitrate >= 0),
  ADD COLUMN fps numeric CHECK (fps > 0),
  ADD COLUMN playlist_file_id uuid REFERENCES pod.files ON DELETE RESTRICT,
  ADD CONSTRAINT video_files_pkey PRIMARY KEY (video_uuid, resolution, kind),
  ADD CONSTRAINT video_files_playlist_is_hls CHECK (playlist_file_id IS NULL OR kind = 'hls');
CREATE INDEX video_files_file_idx ON pod.video_files (file_id);
CREATE INDEX video_files_playlist_idx ON pod.video_files (playlist_file_id) WHERE playlist_file_id IS NOT NULL;
COMMENT ON TABLE pod.video_files IS 'The outputs of a local video: per resolution an MP4 and an HLS rendition, with torrent, info hash and magnet.';
SELECT pg_catalog.pg_extension_config_dump('pod.video_files_id_seq', '');

-- A file that belongs to a published video: anyone may read it (players, HLS loaders
-- and WebSeeds send no token). Files of other videos stay their owner's.
CREATE FUNCTION pod.file_is_public(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.file_id = file AND v.state = 'published')
      OR EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.playlist_file_id = file AND v.state = 'published')
      OR EXISTS (SELECT 1 FROM pod.videos v WHERE v.state = 'published'
                    AND (v.thumbnail_file_id = file OR v.preview_file_id = file OR v.hls_file_id = file));

CREATE OR REPLACE FUNCTION pod.can_read_file(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file AND f.owner_id = pod.current_user_id())
      OR EXISTS (SELECT 1 FROM pod.file_permissions p WHERE p.file_id = file AND p.user_id = pod.current_user_id()
                   AND coalesce((p.data ->> 'read')::boolean, false))
      OR pod.file_is_public(file);

CREATE POLICY files_public ON pod.files FOR SELECT TO pgpod_anon USING (pod.file_is_public(id));
GRANT SELECT ON pod.files TO pgpod_anon;
GRANT SELECT ON api.files TO pgpod_anon;

-- A file's public address (the gateway's /files/<id>), absolute once the pod knows its URL.
CREATE FUNCTION pod.file_url(file uuid) RETURNS text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN CASE WHEN file IS NOT NULL THEN coalesce((SELECT url FROM pod.identity), '') || '/files/' || file END;

-- Transcode jobs ---------------------------------------------------------------------

INSERT INTO pod.job_kinds (kind, retries, base_delay, lease, description) VALUES
  ('transcode', 3, '10 seconds', '1 minute',
   'Turn a video''s source into MP4 and HLS renditions, a thumbnail and a preview (transcoder); the lease is renewed while ffmpeg runs.');

-- Creates a video of the caller's channel over the caller's file, state uploaded, and
-- queues its transcode job. Returns the video as api.videos shows it.
CREATE FUNCTION pod.video_create(channel_id bigint, file_id uuid, name text, description text DEFAULT NULL)
  RETURNS pod.videos
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  v pod.videos;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'creating a video needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  IF channel_id IS NULL OR NOT EXISTS (SELECT 1 FROM pod.channels c WHERE c.id = video_create.channel_id AND c.owner_id = me) THEN
    RAISE EXCEPTION 'no channel % of yours', channel_id USING ERRCODE = '42501';
  END IF;
  IF file_id IS NULL OR NOT EXISTS (SELECT 1 FROM pod.files f WHERE f.id = video_create.file_id AND f.owner_id = me) THEN
    RAISE EXCEPTION 'no file % of yours', file_id USING ERRCODE = '42501';
  END IF;
  INSERT INTO pod.videos (channel_id, name, description, source_file_id)
    VALUES (video_create.channel_id, video_create.name, video_create.description, video_create.file_id)
    RETURNING * INTO v;
  PERFORM pod.job_enqueue('transcode', jsonb_build_object('video', v.uuid), v.uuid::text);
  RETURN v;
END $$;

-- Claims transcode jobs: each with its video, source blob, ladder and lease; the video
-- becomes transcoding. A job whose video or source is gone is finished at once.
CREATE FUNCTION pod.transcode_claim(worker text, max_jobs integer DEFAULT 1)
  RETURNS TABLE (job_id bigint, video_uuid uuid, source_sha256 text, source_size bigint, attempts integer,
                 ladder jsonb, lease_seconds double precision)
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  j pod.jobs;
  v pod.videos;
  src pod.files;
BEGIN
  FOR j IN SELECT * FROM pod.job_claim('transcode', worker, max_jobs) LOOP
    SELECT * INTO v FROM pod.videos WHERE uuid = (j.payload ->> 'video')::uuid FOR UPDATE;
    SELECT * INTO src FROM pod.files WHERE id = v.source_file_id;
    IF v.uuid IS NULL OR src.id IS NULL OR v.state = 'published' THEN
      UPDATE pod.jobs SET state = 'done', finished_at = now(), lease_until = NULL,
                          last_error = CASE WHEN v.state = 'published' THEN 'already published' ELSE 'video or source gone' END
       WHERE id = j.id;
      IF v.uuid IS NOT NULL AND v.state <> 'published' THEN
        UPDATE pod.videos SET state = 'failed', failure_reason = 'the source file was deleted', updated_at = now()
         WHERE uuid = v.uuid;
      END IF;
      CONTINUE;
    END IF;
    UPDATE pod.videos SET state = 'transcoding', progress = 0, failure_reason = NULL, updated_at = now()
     WHERE uuid = v.uuid;
    job_id := j.id; video_uuid := v.uuid; source_sha256 := encode(src.sha256, 'hex'); source_size := src.size;
    attempts := j.attempts; ladder := pod.setting('transcode.ladder');
    lease_seconds := extract(epoch FROM j.lease_until - now());
    RETURN NEXT;
  END LOOP;
END $$;

-- Progress (0-100) of a running job, which also renews its lease. False when the job
-- is no longer this worker's (its lease expired and another took it): stop working on it.
CREATE FUNCTION pod.transcode_progress(job_id bigint, worker text, progress integer) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  UPDATE pod.jobs j SET lease_until = now() + (pod.job_policy('transcode')).lease
   WHERE j.id = transcode_progress.job_id AND j.state = 'running' AND j.worker = transcode_progress.worker
  RETURNING (j.payload ->> 'video')::uuid INTO v;
  IF v IS NULL THEN
    RETURN false;
  END IF;
  UPDATE pod.videos pv SET progress = greatest(0, least(99, transcode_progress.progress))
   WHERE pv.uuid = v AND pv.state = 'transcoding' AND pv.progress <> greatest(0, least(99, transcode_progress.progress));
  RETURN true;
END $$;

-- Before the transcoder links outputs into the store, their blobs are recorded as
-- orphaned: if it dies before publishing, the collector removes them (a blob leaves
-- the store only through the collector).
CREATE FUNCTION pod.transcode_stage_blobs(job_id bigint, worker text, sha256s bytea[], sizes bigint[]) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_stage_blobs.worker) THEN
    RAISE EXCEPTION 'transcode job % is not leased to %', job_id, worker USING ERRCODE = '55000';
  END IF;
  INSERT INTO pod.blobs (sha256, size, orphaned_at)
    SELECT s, z, now() FROM unnest(sha256s, sizes) o(s, z)
    ON CONFLICT (sha256) DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- Publishes a transcoded video in one transaction: every output becomes a file of the
-- channel's owner over its blob, MP4s and HLS renditions become pod.video_files rows,
-- the video gets its media facts and playlists and becomes published, the job is done,
-- and NOTIFY pod_videos says so. Nothing of it happens unless the job is still this
-- worker's. `result`: {duration, width, height, fps, files: [{id, sha256, size, name,
-- mime, role: mp4|hls|playlist|master|thumbnail|preview, resolution, bitrate, fps,
-- playlist}]} where an hls entry's playlist is the id of its playlist's entry.
CREATE FUNCTION pod.transcode_publish(job_id bigint, worker text, result jsonb) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  v pod.videos;
  owner uuid;
  item jsonb;
BEGIN
  SELECT vv.* INTO v FROM pod.jobs j JOIN pod.videos vv ON vv.uuid = (j.payload ->> 'video')::uuid
   WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_publish.worker
   FOR UPDATE OF j, vv;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'transcode job % is not leased to % (or its video is gone)', job_id, worker USING ERRCODE = '55000';
  END IF;
  SELECT c.owner_id INTO owner FROM pod.channels c WHERE c.id = v.channel_id;
  FOR item IN SELECT * FROM jsonb_array_elements(result -> 'files') LOOP
    INSERT INTO pod.blobs (sha256, size) VALUES (decode(item ->> 'sha256', 'hex'), (item ->> 'size')::bigint)
      ON CONFLICT (sha256) DO NOTHING;
    INSERT INTO pod.files (id, owner_id, filename_visible, sha256, size, mime_type)
      VALUES ((item ->> 'id')::uuid, owner, item ->> 'name', decode(item ->> 'sha256', 'hex'), (item ->> 'size')::bigint,
              item ->> 'mime');
  END LOOP;
  DELETE FROM pod.video_files WHERE video_uuid = v.uuid;
  INSERT INTO pod.video_files (video_uuid, resolution, kind, file_id, size, bitrate, fps, playlist_file_id)
    SELECT v.uuid, (f ->> 'resolution')::integer, f ->> 'role', (f ->> 'id')::uuid, (f ->> 'size')::bigint,
           (f ->> 'bitrate')::integer, (f ->> 'fps')::numeric, (f ->> 'playlist')::uuid
      FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' IN ('mp4', 'hls');
  UPDATE pod.videos
     SET state = 'published', progress = 100, failure_reason = NULL, published_at = now(), updated_at = now(),
         duration = make_interval(secs => (result ->> 'duration')::double precision),
         width = (result ->> 'width')::integer, height = (result ->> 'height')::integer,
         fps = (result ->> 'fps')::numeric,
         thumbnail_file_id = (SELECT (f ->> 'id')::uuid FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' = 'thumbnail'),
         preview_file_id = (SELECT (f ->> 'id')::uuid FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' = 'preview'),
         hls_file_id = (SELECT (f ->> 'id')::uuid FROM jsonb_array_elements(result -> 'files') f WHERE f ->> 'role' = 'master')
   WHERE uuid = v.uuid;
  UPDATE pod.videos SET thumbnail = pod.file_url(thumbnail_file_id) WHERE uuid = v.uuid;
  UPDATE pod.jobs SET state = 'done', finished_at = now(), lease_until = NULL WHERE id = job_id;
  PERFORM pg_notify('pod_videos', v.uuid::text);
END $$;

-- A failed attempt. permanent (the source is not a usable video): the video fails
-- with `reason` and the job dies keeping it; otherwise the job backs off and retries
-- (when no retry is left it dies and the video fails, see pod.transcode_job_died).
CREATE FUNCTION pod.transcode_fail(job_id bigint, worker text, reason text, permanent boolean) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  IF permanent THEN
    UPDATE pod.jobs j SET state = 'dead', finished_at = now(), lease_until = NULL, last_error = left(reason, 2000)
     WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_fail.worker
    RETURNING (j.payload ->> 'video')::uuid INTO v;
    RETURN v IS NOT NULL;
  END IF;
  SELECT (j.payload ->> 'video')::uuid INTO v FROM pod.jobs j
   WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_fail.worker;
  IF pod.job_fail(job_id, reason, worker) = 0 THEN
    RETURN false;
  END IF;
  UPDATE pod.videos SET state = 'uploaded', progress = 0, updated_at = now() WHERE uuid = v AND state = 'transcoding';
  RETURN true;
END $$;

-- Gives a job back untouched (the transcoder stopping): the video waits again.
CREATE FUNCTION pod.transcode_release(job_id bigint, worker text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  SELECT (j.payload ->> 'video')::uuid INTO v FROM pod.jobs j
   WHERE j.id = job_id AND j.state = 'running' AND j.worker = transcode_release.worker;
  IF pod.job_release(ARRAY[job_id], worker) = 0 THEN
    RETURN false;
  END IF;
  UPDATE pod.videos SET state = 'uploaded', progress = 0, updated_at = now() WHERE uuid = v AND state = 'transcoding';
  RETURN true;
END $$;

-- A transcode job that died (its last error kept) fails its video with that error.
CREATE FUNCTION pod.transcode_job_died() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.videos SET state = 'failed', progress = 0, updated_at = now(),
                        failure_reason = left(coalesce(NEW.last_error, 'transcoding failed'), 2000)
   WHERE uuid = (NEW.payload ->> 'video')::uuid AND state <> 'published';
  RETURN NULL;
END $$;
CREATE TRIGGER transcode_job_died AFTER UPDATE OF state ON pod.jobs
  FOR EACH ROW WHEN (NEW.kind = 'transcode' AND NEW.state = 'dead' AND OLD.state <> 'dead')
  EXECUTE FUNCTION pod.transcode_job_died();

-- Live progress: every change of a local video's state, progress or failure (and its
-- creation) is an event numbered per video, kept in pod.video_events and announced
-- by NOTIFY pod_video_events '<uuid>:<seq>'. seq is gapless and commit-ordered per
-- video: the change holds the video's row lock until it commits, so the next change
-- of the same video reads this one's seq. The gateway streams the events with their
-- seq as the SSE id, so a client reconnecting with Last-Event-ID gets what it missed.
-- (A quoted body: a parsed one would pin pod.videos' row type against ALTER TABLE.)
CREATE FUNCTION pod.video_event(v pod.videos, event text) RETURNS text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT json_build_object('event', event, 'uuid', v.uuid, 'state', v.state, 'progress', v.progress,
                           'failure_reason', v.failure_reason,
                           'hls_url', pod.file_url(v.hls_file_id), 'thumbnail_url', pod.file_url(v.thumbnail_file_id))::text
$$;

CREATE TABLE pod.video_events (
  video_uuid uuid NOT NULL REFERENCES pod.videos ON DELETE CASCADE,
  seq bigint NOT NULL CHECK (seq > 0),
  event text NOT NULL CHECK (event IN ('state', 'progress')),
  data json NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (video_uuid, seq)
);
COMMENT ON TABLE pod.video_events IS 'A local video''s state and progress events, numbered per video (the SSE ids of /videos/<uuid>/events).';
ALTER TABLE pod.video_events ENABLE ROW LEVEL SECURITY;
-- whoever may see the video (RLS of pod.videos, under the reader's role) reads its events
CREATE POLICY video_events_read ON pod.video_events FOR SELECT TO pgpod_anon, pgpod_user, pgpod_admin
  USING (EXISTS (SELECT 1 FROM pod.videos v WHERE v.uuid = video_uuid));
GRANT SELECT ON pod.video_events TO pgpod_anon, pgpod_user, pgpod_admin;

CREATE FUNCTION pod.videos_notify_events() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  next_seq bigint;
  kind text := 'state';
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
    kind := 'progress';
  END IF;
  SELECT coalesce(max(e.seq), 0) + 1 INTO next_seq FROM pod.video_events e WHERE e.video_uuid = NEW.uuid;
  INSERT INTO pod.video_events (video_uuid, seq, event, data)
    VALUES (NEW.uuid, next_seq, kind, pod.video_event(NEW, kind)::json);
  PERFORM pg_notify('pod_video_events', NEW.uuid || ':' || next_seq);
  RETURN NULL;
END $$;
CREATE TRIGGER videos_notify_events AFTER UPDATE OF state, progress, failure_reason ON pod.videos
  FOR EACH ROW WHEN (NEW.origin IS NULL AND (NEW.state IS DISTINCT FROM OLD.state OR NEW.progress IS DISTINCT FROM OLD.progress
                     OR NEW.failure_reason IS DISTINCT FROM OLD.failure_reason))
  EXECUTE FUNCTION pod.videos_notify_events();
CREATE TRIGGER videos_created_event AFTER INSERT ON pod.videos
  FOR EACH ROW WHEN (NEW.origin IS NULL)
  EXECUTE FUNCTION pod.videos_notify_events();

-- A video's events after a seq, for the gateway's shared stream read (its login role only).
CREATE FUNCTION pod.video_events_feed(video uuid, after bigint, max_rows integer DEFAULT 500)
  RETURNS TABLE (seq bigint, event text, data text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT e.seq, e.event, e.data::text FROM pod.video_events e
     WHERE e.video_uuid = video_events_feed.video AND e.seq > video_events_feed.after
     ORDER BY e.seq
     LIMIT least(greatest(video_events_feed.max_rows, 0), 5000);
  END;
REVOKE ALL ON FUNCTION pod.video_events_feed(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.video_events_feed(uuid, bigint, integer) TO pgpod_authenticator;

-- HTTP --------------------------------------------------------------------------------

CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author, magnet, thumbnail, state, duration, created_at, updated_at,
         failure_reason, progress, extract(epoch FROM duration)::double precision AS duration_seconds,
         width, height, fps, pod.file_url(thumbnail_file_id) AS thumbnail_url, pod.file_url(preview_file_id) AS preview_url,
         pod.file_url(hls_file_id) AS hls_url, published_at
    FROM pod.videos;
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed,
         kind, pod.file_url(file_id) AS url, size, bitrate, fps, pod.file_url(playlist_file_id) AS playlist_url
    FROM pod.video_files;
COMMENT ON VIEW api.video_files IS 'Outputs of local videos: per resolution an MP4 and an HLS rendition, with their URLs and magnet links.';

CREATE FUNCTION api.video_create(channel_id bigint, file_id uuid, name text, description text DEFAULT NULL) RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  -- a statement of its own: the new row is visible to the next one
  SELECT (pod.video_create(channel_id, file_id, name, description)).uuid INTO v;
  RETURN (SELECT row_to_json(a) FROM api.videos a WHERE a.uuid = v);
END $$;
COMMENT ON FUNCTION api.video_create(bigint, uuid, text, text) IS 'Creates a video of your channel from your uploaded file and queues its transcoding.';

REVOKE ALL ON pod.uploads FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pod.upload_state(uuid), pod.upload_create(uuid, bigint, jsonb, bigint),
  pod.upload_advance(uuid, bigint, bigint), pod.upload_finish(uuid, bigint, bytea), pod.upload_terminate(uuid),
  pod.uploads_expire(integer), pod.file_is_public(uuid), pod.file_url(uuid), pod.video_create(bigint, uuid, text, text),
  pod.transcode_claim(text, integer), pod.transcode_progress(bigint, text, integer),
  pod.transcode_stage_blobs(bigint, text, bytea[], bigint[]), pod.transcode_publish(bigint, text, jsonb),
  pod.transcode_fail(bigint, text, text, boolean), pod.transcode_release(bigint, text), pod.transcode_job_died(),
  pod.video_event(pod.videos, text), pod.videos_notify_events(), pod.video_object(pod.videos), api.video_create(bigint, uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.upload_state(uuid), pod.upload_create(uuid, bigint, jsonb, bigint),
  pod.upload_advance(uuid, bigint, bigint), pod.upload_finish(uuid, bigint, bytea), pod.upload_terminate(uuid),
  pod.uploads_expire(integer), api.video_create(bigint, uuid, text, text) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.file_is_public(uuid), pod.file_url(uuid) TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.transcode_claim(text, integer), pod.transcode_progress(bigint, text, integer),
  pod.transcode_stage_blobs(bigint, text, bytea[], bigint[]), pod.transcode_publish(bigint, text, jsonb),
  pod.transcode_fail(bigint, text, text, boolean), pod.transcode_release(bigint, text) TO pgpod_worker;
-- ==== end of video1 ====

-- ==== torrents (issue 14): .torrent per published video file = sql/75_torrents.sql (after video1's block, as 75 sorts after 74) ====
-- 75_torrents: a BEP 3 .torrent for every file of a published video. Publishing
-- enqueues a `torrent` job per row of pod.video_files (each MP4, and each HLS
-- rendition's single fragmented-MP4 file; playlists, thumbnails and previews are not
-- rows there and get none); the seeder claims it, hashes the blob on every core and
-- hands the piece hashes to pod.torrent_finish, which builds the torrent here (one
-- bencoder: extension/src/bencode.c), stores it with its info hash and magnet and
-- NOTIFYs pod_torrents (the seeder and the tracker follow that channel).
-- Numbered 75 so that it runs after 74_video_transcode.sql (which gives
-- pod.video_files its id, kind, size, ... and api.videos/api.video_files their
-- columns): the columns here come after video1's, and the views here extend video1's.
-- Files of published videos are public (the WebSeed, BEP 19, reads /files/<id>
-- anonymously) through video1's pod.file_is_public.

ALTER TABLE pod.video_files
  ADD COLUMN piece_length integer CHECK (piece_length >= 16384 AND (piece_length & (piece_length - 1)) = 0),
  ADD COLUMN pieces bytea CHECK (length(pieces) % 20 = 0);
COMMENT ON COLUMN pod.video_files.pieces IS 'The SHA-1 of every piece, concatenated: the seeder serves from them without hashing again.';

INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('torrent.tracker_port', '6969', 'The port of this pod''s trackers (HTTP, UDP and WebSocket) named in the torrents it makes (scripts/pgpod sets it from PGPOD_TRACKER_PORT).');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 65535 WHERE name = 'torrent.tracker_port';

INSERT INTO pod.job_kinds (kind, description) VALUES
  ('torrent', 'Hash a published video file and store its .torrent (seeder).');

CREATE FUNCTION pod.torrent_info(torrent bytea, OUT name text, OUT length bigint, OUT piece_length integer,
                                 OUT piece_count integer, OUT info_hash bytea, OUT trackers text[],
                                 OUT web_seeds text[])
  AS 'MODULE_PATHNAME', 'torrent_info' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pod.torrent_info(bytea) IS 'Reads a .torrent (BEP 3): name, length, piece length and count, info hash, trackers, web seeds. A corrupt one is refused (22P03).';

CREATE FUNCTION pod.torrent_build(name text, length bigint, piece_length integer, pieces bytea,
                                  trackers text[], web_seeds text[]) RETURNS bytea
  AS 'MODULE_PATHNAME', 'torrent_build' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.torrent_build(text, bigint, integer, bytea, text[], text[]) IS 'Bencodes a single-file torrent: announce, announce-list (a tier per tracker), info, url-list (BEP 19 web seeds).';

CREATE FUNCTION pod.uri_component(text) RETURNS text
  AS 'MODULE_PATHNAME', 'uri_component' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pod.uri_component(text) IS 'Percent-encodes all but RFC 3986''s unreserved characters (as encodeURIComponent).';

-- The piece length libtorrent picks (create_torrent: about 10·sqrt(size), a power of
-- two from 16 KiB up to 16 MiB), so a file has a few hundred to a few thousand pieces.
CREATE FUNCTION pod.torrent_piece_length(size bigint) RETURNS integer
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN 16384 << (SELECT count(*)::integer FROM unnest(ARRAY[2684355, 10737418, 42949673, 171798692,
                     687194767, 2748779069, 10995116278, 43980465111, 175921860444, 703687441777]::bigint[]) t
                    WHERE t < size);

-- This pod's tracker URLs: HTTP, UDP and WebSocket on one port of the pod's host.
CREATE FUNCTION pod.tracker_urls() RETURNS text[]
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT ARRAY['http://' || h || '/announce', 'udp://' || h || '/announce', 'ws://' || h]
      FROM (SELECT substring(i.url FROM '^https?://([^/:]+|\[[^]]+\])') || ':' ||
                   (pod.setting('torrent.tracker_port') #>> '{}') AS h
              FROM pod.identity i) s;
  END;
COMMENT ON FUNCTION pod.tracker_urls() IS 'The trackers this pod''s torrents name: http://host:port/announce, udp://host:port/announce, ws://host:port (port: setting torrent.tracker_port).';

-- Enqueues a torrent job for each file of a published video that has no torrent
-- and no job waiting or running.
CREATE FUNCTION pod.torrent_enqueue(video uuid) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  INSERT INTO pod.jobs (kind, target, payload)
    SELECT 'torrent', 'video_file:' || f.id, jsonb_build_object('video_file', f.id)
      FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
     WHERE f.video_uuid = video AND v.state = 'published' AND v.origin IS NULL AND f.info_hash IS NULL
       AND NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'torrent' AND j.finished_at IS NULL
                         AND j.target = 'video_file:' || f.id);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- Publication (and a file added to a published video) enqueues; unpublishing or
-- removing tells the seeder and the tracker to stop.
CREATE FUNCTION pod.videos_torrents() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE f record;
BEGIN
  IF TG_OP <> 'DELETE' AND NEW.state = 'published' THEN
    PERFORM pod.torrent_enqueue(NEW.uuid);
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.state = 'published' AND NEW.state <> 'published' THEN
    FOR f IN SELECT id FROM pod.video_files WHERE video_uuid = NEW.uuid AND info_hash IS NOT NULL LOOP
      PERFORM pg_notify('pod_torrents', f.id::text);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER videos_torrents AFTER INSERT OR UPDATE OF state ON pod.videos
  FOR EACH ROW EXECUTE FUNCTION pod.videos_torrents();

CREATE FUNCTION pod.video_files_torrents() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM pod.torrent_enqueue(NEW.video_uuid);
  ELSIF OLD.info_hash IS NOT NULL THEN
    PERFORM pg_notify('pod_torrents', OLD.id::text);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER video_files_torrents AFTER INSERT OR DELETE ON pod.video_files
  FOR EACH ROW EXECUTE FUNCTION pod.video_files_torrents();

-- What a torrent job needs: the file's blob, size, name and piece length.
CREATE FUNCTION pod.torrent_job(video_file bigint, OUT sha256 text, OUT size bigint, OUT name text,
                                OUT piece_length integer)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT encode(b.sha256, 'hex'), b.size, fl.filename_visible, pod.torrent_piece_length(b.size)
      FROM pod.video_files f JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
     WHERE f.id = video_file;
  END;

-- A torrent job's outcome: the torrent built from the piece hashes, stored with its
-- info hash and magnet, the job completed, pod_torrents notified — one transaction.
-- Refused (and nothing stored) when the hashes do not fit the file.
CREATE FUNCTION pod.torrent_finish(job bigint, worker text, video_file bigint, piece_length integer,
                                   pieces bytea) RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  f record;
  t bytea;
  info record;
  seed text;
  trackers text[] := pod.tracker_urls();
  m text;
BEGIN
  SELECT vf.id, vf.file_id, fl.filename_visible AS name, b.size INTO f
    FROM pod.video_files vf JOIN pod.files fl ON fl.id = vf.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
   WHERE vf.id = video_file FOR UPDATE OF vf;
  IF NOT FOUND THEN
    PERFORM pod.job_complete(ARRAY[job], worker);
    RETURN NULL;               -- the file went away while it was hashed
  END IF;
  seed := (SELECT i.url FROM pod.identity i) || '/files/' || f.file_id;
  t := pod.torrent_build(f.name, f.size, piece_length, pieces, coalesce(trackers, '{}'), ARRAY[seed]);
  info := pod.torrent_info(t);
  m := 'magnet:?xt=urn:btih:' || encode(info.info_hash, 'hex') || '&dn=' || pod.uri_component(f.name)
       || '&xl=' || f.size
       || coalesce((SELECT string_agg('&tr=' || pod.uri_component(u), '' ORDER BY o)
                      FROM unnest(trackers) WITH ORDINALITY AS x(u, o)), '')
       || '&ws=' || pod.uri_component(seed);
  UPDATE pod.video_files vf SET torrent = t, info_hash = info.info_hash, magnet = m,
         piece_length = torrent_finish.piece_length, pieces = torrent_finish.pieces
   WHERE vf.id = f.id;
  PERFORM pod.job_complete(ARRAY[job], worker);
  PERFORM pg_notify('pod_torrents', f.id::text);
  RETURN encode(info.info_hash, 'hex');
END $$;
COMMENT ON FUNCTION pod.torrent_finish(bigint, text, bigint, integer, bytea) IS 'Stores a hashed file''s torrent, info hash and magnet and completes its job (the seeder calls it).';

-- What the seeder serves: every file of a published local video that has a torrent.
CREATE VIEW pod.torrents_seeded AS
  SELECT f.id, f.info_hash, encode(fl.sha256, 'hex') AS sha256, b.size, f.piece_length, f.torrent
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
    JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
   WHERE v.state = 'published' AND v.origin IS NULL AND f.info_hash IS NOT NULL;
COMMENT ON VIEW pod.torrents_seeded IS 'The files the seeder serves (published, local, with a torrent), with their blob.';

-- The .torrent the gateway serves at /torrents/<info hash>.torrent (application/x-bittorrent).
CREATE VIEW api.torrents WITH (security_invoker = true) AS
  SELECT encode(f.info_hash, 'hex') AS info_hash, f.torrent, fl.filename_visible AS name
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid JOIN pod.files fl ON fl.id = f.file_id
   WHERE f.torrent IS NOT NULL AND v.state = 'published';
COMMENT ON VIEW api.torrents IS 'Torrents of published video files, by info hash (the gateway serves them as /torrents/<info_hash>.torrent).';

-- api.video_files gains the .torrent's URL (appended after video1's and the tracker's columns).
CREATE OR REPLACE VIEW api.video_files WITH (security_invoker = true) AS
  SELECT video_uuid, resolution, file_id, encode(info_hash, 'hex') AS info_hash, magnet, created_at,
         seeders, leechers, completed,
         kind, pod.file_url(file_id) AS url, size, bitrate, fps, pod.file_url(playlist_file_id) AS playlist_url,
         CASE WHEN f.info_hash IS NOT NULL
              THEN (SELECT i.url FROM pod.identity i) || '/torrents/' || encode(f.info_hash, 'hex') || '.torrent'
         END AS torrent_url
    FROM pod.video_files f;

-- A local video's magnet is its best rendition's: the MP4 of the highest resolution
-- with a torrent (an HLS rendition's only when no MP4 has one). Columns as video1's.
CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author,
         CASE WHEN v.origin IS NULL
              THEN (SELECT f.magnet FROM pod.video_files f WHERE f.video_uuid = v.uuid AND f.magnet IS NOT NULL
                     ORDER BY f.resolution DESC, f.kind = 'mp4' DESC, f.id LIMIT 1)
              ELSE v.magnet END AS magnet,
         thumbnail, state, duration, created_at, updated_at,
         failure_reason, progress, extract(epoch FROM duration)::double precision AS duration_seconds,
         width, height, fps, pod.file_url(thumbnail_file_id) AS thumbnail_url, pod.file_url(preview_file_id) AS preview_url,
         pod.file_url(hls_file_id) AS hls_url, published_at
    FROM pod.videos v;

GRANT SELECT ON pod.torrents_seeded TO pgpod_worker;
GRANT SELECT ON api.torrents TO pgpod_anon, pgpod_user, pgpod_admin;
REVOKE ALL ON FUNCTION pod.torrent_enqueue(uuid), pod.torrent_job(bigint),
  pod.torrent_finish(bigint, text, bigint, integer, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.torrent_job(bigint), pod.torrent_finish(bigint, text, bigint, integer, bytea)
  TO pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.torrent_enqueue(uuid) TO pgpod_admin;
-- Function privileges here rather than in 99_privileges.sql, so that the upgrade
-- script (which does not run that file) grants exactly the same.
REVOKE EXECUTE ON FUNCTION pod.torrent_info(bytea), pod.torrent_build(text, bigint, integer, bytea, text[], text[]),
  pod.uri_component(text), pod.torrent_piece_length(bigint), pod.tracker_urls(), pod.videos_torrents(),
  pod.video_files_torrents() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.torrent_info(bytea), pod.torrent_build(text, bigint, integer, bytea, text[], text[]),
  pod.uri_component(text), pod.torrent_piece_length(bigint), pod.tracker_urls()
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
-- ==== end of torrents ====

-- 74_pubsub: the pubsub cache (after Libervia's): nodes of a service (a pod's URL or
-- a feed's URL) and their items, each kept raw (XML as received) with the JSONB its
-- parser (C, extension/src/pubsub_parse.c) made of it; analysers decide per node which
-- parser fills `parsed` and whether the node is synchronised. Functions to publish,
-- retract, purge, delete, page (RSM) and search, every one served by an index; the
-- network video index (api.network_videos) is a view over the video items.
-- Convergence is the federation's rule (73_video_federation: pod.federated_apply): an
-- item's (version, updated) at its origin decides, an older state never overwrites a
-- newer one, and a retraction leaves a tombstone (pod.federated_tombstones, kind
-- 'pubsub') that an older publish cannot undo.

-- The parsers (C) ---------------------------------------------------------------------

CREATE FUNCTION pod.pubsub_parse(parser text, payload text) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'pubsub_parse' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pod.pubsub_parse(text, text) IS 'Parses an XML payload with the named parser (no DTD, no network, size and depth limits); SQLSTATE 2200M malformed, PX001 DTD/entities refused, 54000 over a limit, 42704 unknown parser.';
CREATE FUNCTION pod.pubsub_parser_known(parser text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'pubsub_parser_known' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION pod.pubsub_parsers() RETURNS TABLE (name text, description text)
  AS 'MODULE_PATHNAME', 'pubsub_parsers' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.pubsub_parsers() IS 'The parsers compiled into the extension, by name.';
CREATE FUNCTION pod.feed_entries(document text) RETURNS TABLE (format text, entry text, alternate text)
  AS 'MODULE_PATHNAME', 'feed_entries' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION pod.feed_entries(text) IS 'The entries of an Atom feed or the items of an RSS 2.0 channel, each a standalone XML payload.';

-- Analysers -----------------------------------------------------------------------------

CREATE TABLE pod.pubsub_analysers (
  name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  priority integer NOT NULL DEFAULT 0,
  node_prefix text,
  namespace text,
  type text,
  subtype text,
  to_sync boolean NOT NULL DEFAULT false,
  parser text CHECK (parser IS NULL OR pod.pubsub_parser_known(parser)),
  CHECK (node_prefix IS NOT NULL OR namespace IS NOT NULL)
);
COMMENT ON TABLE pod.pubsub_analysers IS 'Which nodes are what: the first match by priority (highest first; a node-name prefix before a payload namespace) gives a node its type, parser and whether it is synchronised.';
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_analysers', '');
GRANT SELECT ON pod.pubsub_analysers TO pgpod_admin;

INSERT INTO pod.pubsub_analysers (name, priority, node_prefix, namespace, type, subtype, to_sync, parser) VALUES
  ('pgpod_videos', 100, 'urn:pgpod:videos', NULL, 'video', NULL, true, 'video'),
  ('pgpod_channels', 100, 'urn:pgpod:channel:', NULL, 'video', 'channel', false, 'video'),
  ('feed_videos', 90, 'urn:pgpod:feed', NULL, 'video', 'feed', false, 'video'),
  ('microblog', 50, 'urn:xmpp:microblog:0', NULL, 'blog', NULL, true, 'atom'),
  ('atom', 0, NULL, 'http://www.w3.org/2005/Atom', 'atom', NULL, false, 'atom');

-- A restore replays analysers over the built-in ones the extension script has just
-- made: a duplicate name becomes an update (as pod.job_kinds_merge does), so that
-- pg_restore keeps an admin's analysers instead of failing on the primary key.
CREATE FUNCTION pod.pubsub_analysers_merge() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  UPDATE pod.pubsub_analysers SET priority = NEW.priority, node_prefix = NEW.node_prefix, namespace = NEW.namespace,
         type = NEW.type, subtype = NEW.subtype, to_sync = NEW.to_sync, parser = NEW.parser
   WHERE name = NEW.name;
  RETURN CASE WHEN FOUND THEN NULL ELSE NEW END;
END $$;
CREATE TRIGGER pubsub_analysers_merge BEFORE INSERT ON pod.pubsub_analysers
  FOR EACH ROW EXECUTE FUNCTION pod.pubsub_analysers_merge();

-- Is this session pg_restore? (Triggers that derive rows from restored ones, rows
-- the dump holds too, stand aside.)
CREATE FUNCTION pod.restoring() RETURNS boolean
  LANGUAGE sql STABLE
  RETURN current_setting('application_name', true) = 'pg_restore';

-- Nodes and items -----------------------------------------------------------------------

ALTER TABLE pod.pubsub_nodes DROP COLUMN subscribed, DROP COLUMN synchronised,
  ADD COLUMN subtype text,
  ADD COLUMN to_sync boolean NOT NULL DEFAULT false,
  ADD COLUMN max_items integer CHECK (max_items > 0),
  ADD COLUMN extra jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(extra) = 'object'),
  ADD COLUMN sync_error text,
  ADD COLUMN item_count bigint NOT NULL DEFAULT 0,
  ADD CONSTRAINT pubsub_nodes_analyser_fkey FOREIGN KEY (analyser) REFERENCES pod.pubsub_analysers ON DELETE SET NULL;
COMMENT ON COLUMN pod.pubsub_nodes.service IS 'The publishing pod''s URL (this pod''s own for its nodes) or a feed''s URL.';
COMMENT ON COLUMN pod.pubsub_nodes.extra IS 'namespace: the payload namespace seen first; a feed''s polling state lives in pod.feeds.';
COMMENT ON COLUMN pod.pubsub_nodes.item_count IS 'How many items the node holds (kept by triggers on pod.pubsub_items): an RSM page''s count.';
CREATE INDEX pubsub_nodes_sync_idx ON pod.pubsub_nodes (sync_state, sync_state_updated) WHERE to_sync;

-- The full text of an item (C, extension/src/pubsub_search.c): the same vector as
-- setweight(to_tsvector(config, title), 'A') || setweight(to_tsvector(config,
-- author.name), 'B') || setweight(to_tsvector(config, summary || ' ' || content), 'C'),
-- in one pass (that expression, evaluated for every item stored, was a seventh of the
-- ingest's time).
CREATE FUNCTION pod.pubsub_search_vector(config regconfig, parsed jsonb) RETURNS tsvector
  AS 'MODULE_PATHNAME', 'pubsub_search_vector' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION pod.pubsub_search_vector(regconfig, jsonb) IS 'Full-text vector of a parsed item: title (A), author.name (B), summary and content (C).';

CREATE SEQUENCE pod.pubsub_items_seq;
ALTER TABLE pod.pubsub_items
  ADD COLUMN seq bigint NOT NULL DEFAULT nextval('pod.pubsub_items_seq'),
  ADD COLUMN parse_error text,
  ADD COLUMN version bigint,
  ADD COLUMN search tsvector GENERATED ALWAYS AS (pod.pubsub_search_vector('simple'::regconfig, parsed)) STORED;
ALTER SEQUENCE pod.pubsub_items_seq OWNED BY pod.pubsub_items.seq;
-- lz4, not pglz: a cached video item (raw + parsed) passes the TOAST threshold, and
-- pglz compression was a third of the ingest time; the tsvector too (pglz tried and
-- failed on it, incompressible, for every row: 18% of its share of the ingest).
ALTER TABLE pod.pubsub_items ALTER COLUMN data SET COMPRESSION lz4, ALTER COLUMN parsed SET COMPRESSION lz4,
  ALTER COLUMN search SET COMPRESSION lz4;
COMMENT ON COLUMN pod.pubsub_items.seq IS 'Publication order in the node: a re-published item takes a new one (it becomes the newest); RSM pages walk it.';
COMMENT ON COLUMN pod.pubsub_items.search IS 'Full text of title (A), author (B), summary and content (C), config simple: query it with fts(simple)/plfts(simple)/wfts(simple).';
COMMENT ON COLUMN pod.pubsub_items.version IS 'The item''s version at its origin (raised by every publish of this pod''s own items; NULL from a feed: its time decides).';
COMMENT ON COLUMN pod.pubsub_items.parse_error IS 'Why an item synchronised from its origin could not be parsed (it is kept raw, parsed NULL).';
CREATE UNIQUE INDEX pubsub_items_node_seq_idx ON pod.pubsub_items (node_id, seq);
CREATE INDEX pubsub_items_parsed_idx ON pod.pubsub_items USING gin (parsed jsonb_path_ops);
CREATE INDEX pubsub_items_search_idx ON pod.pubsub_items USING gin (search);
CREATE INDEX pubsub_items_created_idx ON pod.pubsub_items (created_at, id);
CREATE INDEX pubsub_items_updated_idx ON pod.pubsub_items (updated_at, id);
CREATE INDEX pubsub_items_duration_idx ON pod.pubsub_items ((parsed -> 'duration'), id) WHERE parsed ? 'duration';
CREATE INDEX pubsub_items_title_idx ON pod.pubsub_items ((parsed ->> 'title') text_pattern_ops);
SELECT pg_catalog.pg_extension_config_dump('pod.pubsub_items_seq', '');

-- Each node's item count, kept by the statements that add, move or remove items (C,
-- extension/src/pubsub_count.c: one UPDATE per node a statement touches, from its
-- transition table; not one per row), so that an RSM page reads its count instead of
-- counting the node. Concurrent writers to one node wait for each other's count until
-- commit (one origin publishes to a node serially). A restore brings the counts with
-- the nodes: the trigger stands aside.
UPDATE pod.pubsub_nodes n SET item_count = c.k
  FROM (SELECT i.node_id, count(*) AS k FROM pod.pubsub_items i GROUP BY i.node_id) c WHERE n.id = c.node_id;
CREATE FUNCTION pod.pubsub_items_count() RETURNS trigger
  AS 'MODULE_PATHNAME', 'pubsub_items_count' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
CREATE TRIGGER pubsub_items_count_insert AFTER INSERT ON pod.pubsub_items
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION pod.pubsub_items_count();
CREATE TRIGGER pubsub_items_count_delete AFTER DELETE ON pod.pubsub_items
  REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION pod.pubsub_items_count();
CREATE TRIGGER pubsub_items_count_move AFTER UPDATE OF node_id ON pod.pubsub_items
  FOR EACH ROW WHEN (OLD.node_id IS DISTINCT FROM NEW.node_id) EXECUTE FUNCTION pod.pubsub_items_count();
CREATE TRIGGER pubsub_items_count_truncate AFTER TRUNCATE ON pod.pubsub_items
  FOR EACH STATEMENT EXECUTE FUNCTION pod.pubsub_items_count();


INSERT INTO pod.setting_defaults (name, value, description) VALUES
  ('pubsub.sync_page', '100', 'Items per page of a node synchronisation (signed GETs to the origin).'),
  ('pubsub.sync_max_pages', '1000', 'Most pages one node synchronisation fetches; past it the node is in error.'),
  ('pubsub.sync_deadline', '"10 minutes"', 'A synchronisation in_progress longer than this is reset and started again.'),
  ('pubsub.items_path', '"/rpc/pubsub_items"', 'Path where a pod serves a node''s items (GET, node/after/max; JSON).'),
  ('pubsub.nodes_path', '"/rpc/pubsub_nodes"', 'Path where a pod lists its nodes (GET; JSON).');
UPDATE pod.setting_defaults SET minimum = 1, maximum = 1000 WHERE name = 'pubsub.sync_page';
UPDATE pod.setting_defaults SET minimum = 1, maximum = 100000 WHERE name = 'pubsub.sync_max_pages';

-- Matching -----------------------------------------------------------------------------

-- The namespace of a payload's root element (NULL when it has none); the payload is
-- read with the same safe reader as the parsers.
CREATE FUNCTION pod.pubsub_namespace(payload text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN (SELECT CASE WHEN p ? 'namespace' THEN p ->> 'namespace' END
            FROM pod.pubsub_parse('namespace', payload) p);

-- The analyser of a node: first by priority, a node prefix before a namespace.
CREATE FUNCTION pod.pubsub_analyser_for(node text, namespace text) RETURNS pod.pubsub_analysers
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT a FROM pod.pubsub_analysers a
           WHERE (a.node_prefix IS NULL OR starts_with(node, a.node_prefix))
             AND (a.namespace IS NULL OR a.namespace = pubsub_analyser_for.namespace)
           ORDER BY a.priority DESC, (a.node_prefix IS NOT NULL) DESC, a.name LIMIT 1);

-- Applies an analyser to a node (type, subtype, to_sync) and re-parses its items.
CREATE FUNCTION pod.pubsub_node_analyse(node_id bigint) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  a pod.pubsub_analysers;
BEGIN
  SELECT * INTO n FROM pod.pubsub_nodes WHERE id = node_id FOR UPDATE;
  a := pod.pubsub_analyser_for(n.name, n.extra ->> 'namespace');
  UPDATE pod.pubsub_nodes
     SET analyser = a.name, type = a.type, subtype = a.subtype, to_sync = coalesce(a.to_sync, false),
         sync_state = CASE WHEN coalesce(a.to_sync, false) THEN sync_state ELSE 'no_sync' END,
         sync_state_updated = now()
   WHERE id = node_id;
  UPDATE pod.pubsub_items i SET parsed = CASE WHEN a.parser IS NULL THEN NULL ELSE pod.pubsub_parse(a.parser, i.data) END,
                                parse_error = NULL
   WHERE i.node_id = pubsub_node_analyse.node_id;
END $$;

-- Admin: registers (or changes) an analyser, then re-analyses every node whose
-- analyser that changes, re-parsing their items. Returns how many nodes changed.
CREATE FUNCTION pod.pubsub_analyser_register(name text, parser text, node_prefix text DEFAULT NULL,
    namespace text DEFAULT NULL, type text DEFAULT NULL, subtype text DEFAULT NULL, to_sync boolean DEFAULT false,
    priority integer DEFAULT 0) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer := 0; node record;
BEGIN
  IF NOT pod.is_admin() THEN
    RAISE EXCEPTION 'only an admin may register an analyser' USING ERRCODE = '42501';
  END IF;
  IF parser IS NOT NULL AND NOT pod.pubsub_parser_known(parser) THEN
    RAISE EXCEPTION 'no pubsub parser named %', quote_literal(parser) USING ERRCODE = '42704',
      HINT = 'SELECT * FROM pod.pubsub_parsers() lists them.';
  END IF;
  IF node_prefix IS NULL AND namespace IS NULL THEN
    RAISE EXCEPTION 'an analyser needs a node prefix or a namespace' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.pubsub_analysers AS x (name, priority, node_prefix, namespace, type, subtype, to_sync, parser)
    VALUES (name, coalesce(priority, 0), node_prefix, namespace, type, subtype, coalesce(to_sync, false), parser)
    ON CONFLICT ON CONSTRAINT pubsub_analysers_pkey DO UPDATE
      SET priority = EXCLUDED.priority, node_prefix = EXCLUDED.node_prefix, namespace = EXCLUDED.namespace,
          type = EXCLUDED.type, subtype = EXCLUDED.subtype, to_sync = EXCLUDED.to_sync, parser = EXCLUDED.parser;
  FOR node IN SELECT id FROM pod.pubsub_nodes p
               WHERE p.analyser IS DISTINCT FROM (pod.pubsub_analyser_for(p.name, p.extra ->> 'namespace')).name
                  OR p.analyser = pubsub_analyser_register.name LOOP
    PERFORM pod.pubsub_node_analyse(node.id);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

-- The node (service, name), made on first use and analysed by its first payload.
CREATE FUNCTION pod.pubsub_node(service text, node text, payload text DEFAULT NULL) RETURNS pod.pubsub_nodes
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  a pod.pubsub_analysers;
  ns text;
BEGIN
  SELECT * INTO n FROM pod.pubsub_nodes p WHERE p.service = pubsub_node.service AND p.name = node;
  IF FOUND THEN
    RETURN n;
  END IF;
  IF coalesce(service, '') !~ '^https?://[^\s]+$' THEN
    RAISE EXCEPTION 'not a service URL: %', coalesce(quote_literal(service), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF coalesce(node, '') = '' OR length(node) > 1000 THEN
    RAISE EXCEPTION 'a node needs a name (at most 1000 characters)' USING ERRCODE = '22023';
  END IF;
  ns := CASE WHEN payload IS NOT NULL THEN pod.pubsub_namespace(payload) END;
  a := pod.pubsub_analyser_for(node, ns);
  INSERT INTO pod.pubsub_nodes AS p (service, name, analyser, type, subtype, to_sync, sync_state, sync_state_updated, extra)
    VALUES (service, node, a.name, a.type, a.subtype, coalesce(a.to_sync, false),
            CASE WHEN coalesce(a.to_sync, false) THEN NULL ELSE 'no_sync' END, now(),
            jsonb_strip_nulls(jsonb_build_object('namespace', ns)))
    ON CONFLICT ON CONSTRAINT pubsub_nodes_service_name_key DO UPDATE SET service = EXCLUDED.service
    RETURNING * INTO n;
  RETURN n;
END $$;

-- The id of an existing node; P0002 when there is none.
CREATE FUNCTION pod.pubsub_node_id(service text, node text) RETURNS bigint
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
DECLARE n_id bigint;
BEGIN
  SELECT id INTO n_id FROM pod.pubsub_nodes p WHERE p.service = pubsub_node_id.service AND p.name = node;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no pubsub node % at %', coalesce(quote_literal(node), 'NULL'), coalesce(quote_literal(service), 'NULL')
      USING ERRCODE = 'P0002';
  END IF;
  RETURN n_id;
END $$;

-- Publishing ---------------------------------------------------------------------------

-- Is this pod the service (its own node)? Then changes are announced to friends.
CREATE FUNCTION pod.pubsub_is_local(service text) RETURNS boolean
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN service = (SELECT url FROM pod.identity);

-- Enqueues a pubsub event for every active friend (one INSERT); only for this pod's
-- own nodes, not its channel nodes.
CREATE FUNCTION pod.pubsub_announce(activity_type text, object jsonb) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me text := (SELECT url FROM pod.identity);
BEGIN
  IF current_setting('pgpod.pubsub_announce', true) = 'off' THEN
    RETURN;  -- an upgrade filling the cache from existing data
  END IF;
  IF EXISTS (SELECT FROM pod.pubsub_nodes n WHERE n.service = me AND n.name = object ->> 'node' AND n.subtype = 'channel') THEN
    RETURN;  -- a channel's node repeats the videos node's items: friends get those once
  END IF;
  INSERT INTO pod.jobs (kind, target, payload)
    SELECT 'deliver', f.url, jsonb_build_object('activity', jsonb_build_object(
             'id', gen_random_uuid(), 'type', activity_type, 'actor', me, 'object', object,
             'published', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
      FROM pod.friends f WHERE f.state = 'active';
END $$;

-- The object id of an item in pod.federated_tombstones (kind 'pubsub').
CREATE FUNCTION pod.pubsub_object_id(service text, node text, item text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN service || ' ' || node || ' ' || item;

-- The next version of one of this pod's own items: past what is held and any tombstone.
CREATE FUNCTION pod.pubsub_next_version(service text, node text, item text, held bigint) RETURNS bigint
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN greatest(coalesce(held, 0), coalesce((SELECT t.version FROM pod.federated_tombstones t
                                                WHERE t.kind = 'pubsub' AND t.object_id = pod.pubsub_object_id(service, node, item)), 0)) + 1;

-- Publishes (upserts) an item: parsed by the node's analyser (a malformed or hostile
-- payload fails the call and stores nothing), made the newest of its node, the oldest
-- trimmed past max_items. Its origin state is (version, updated): updated is the
-- parsed "updated", else the argument, else now; this pod's own items get the next
-- version. A state not newer than the cached one or than the item's tombstone is
-- ignored (NULL is returned; a repeat is a no-op). Returns the item's id.
CREATE FUNCTION pod.pubsub_publish(service text, node text, item text, payload text, publisher text DEFAULT NULL,
                                   updated timestamptz DEFAULT NULL, version bigint DEFAULT NULL) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n pod.pubsub_nodes;
  parser text;
  p jsonb;
  at timestamptz;
  created timestamptz;
  held pod.pubsub_items;
  local boolean := pod.pubsub_is_local(service);
  item_id bigint;
BEGIN
  IF coalesce(item, '') = '' OR length(item) > 1000 THEN
    RAISE EXCEPTION 'an item needs an id (at most 1000 characters)' USING ERRCODE = '22023';
  END IF;
  IF payload IS NULL THEN
    RAISE EXCEPTION 'an item needs a payload' USING ERRCODE = '22023';
  END IF;
  n := pod.pubsub_node(service, node, payload);
  parser := (SELECT a.parser FROM pod.pubsub_analysers a WHERE a.name = n.analyser);
  IF parser IS NOT NULL THEN
    p := pod.pubsub_parse(parser, payload);
  ELSE
    PERFORM pod.pubsub_namespace(payload);  -- kept raw, but never hostile XML
  END IF;
  at := coalesce((p ->> 'updated')::timestamptz, pubsub_publish.updated, now());
  created := coalesce((p ->> 'published')::timestamptz, at);
  PERFORM pod.federated_lock('pubsub', pod.pubsub_object_id(service, node, item));
  SELECT * INTO held FROM pod.pubsub_items i WHERE i.node_id = n.id AND i.name = item;
  IF held.data = payload AND (pubsub_publish.version IS NULL OR held.version IS NOT DISTINCT FROM pubsub_publish.version) THEN
    RETURN NULL;  -- this very state is held already (a repeat, a feed polled again)
  END IF;
  IF local AND pubsub_publish.version IS NULL THEN
    version := pod.pubsub_next_version(service, node, item, held.version);
    at := greatest(at, held.updated_at);
  END IF;
  IF NOT pod.federated_apply('pubsub', pod.pubsub_object_id(service, node, item), service, pubsub_publish.version, at,
                             held.version, held.updated_at) THEN
    RETURN NULL;  -- the cache holds this state or a newer one, or a newer retraction
  END IF;
  INSERT INTO pod.pubsub_items AS i (node_id, name, data, parsed, publisher, created_at, updated_at, version)
    VALUES (n.id, item, payload, p, coalesce(publisher, service), created, at, pubsub_publish.version)
    ON CONFLICT ON CONSTRAINT pubsub_items_node_id_name_key DO UPDATE
      SET data = EXCLUDED.data, parsed = EXCLUDED.parsed, publisher = EXCLUDED.publisher,
          created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version,
          parse_error = NULL, seq = nextval('pod.pubsub_items_seq')
    RETURNING id INTO item_id;
  IF n.max_items IS NOT NULL THEN
    DELETE FROM pod.pubsub_items i WHERE i.node_id = n.id
       AND i.seq < (SELECT x.seq FROM pod.pubsub_items x WHERE x.node_id = n.id ORDER BY x.seq DESC
                    OFFSET n.max_items - 1 LIMIT 1);
  END IF;
  IF local THEN
    PERFORM pod.pubsub_announce('pubsub.publish', jsonb_build_object('node', node, 'item', item, 'payload', payload,
                                                                     'updated', at, 'version', pubsub_publish.version));
  END IF;
  RETURN item_id;
END $$;

-- Retracts an item at its origin state (version, retracted); the tombstone outlives
-- it so that an older publish arriving later cannot bring it back, and a retraction
-- older than what is held changes nothing. Returns whether it was applied (false:
-- what is held, or an earlier retraction, is as new). Unknown node: P0002.
CREATE FUNCTION pod.pubsub_retract(service text, node text, item text, retracted timestamptz DEFAULT NULL,
                                   version bigint DEFAULT NULL) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n_id bigint;
  at timestamptz := coalesce(retracted, now());
  held pod.pubsub_items;
  local boolean := pod.pubsub_is_local(service);
BEGIN
  n_id := pod.pubsub_node_id(service, node);
  PERFORM pod.federated_lock('pubsub', pod.pubsub_object_id(service, node, item));
  SELECT * INTO held FROM pod.pubsub_items i WHERE i.node_id = n_id AND i.name = item;
  IF local AND pubsub_retract.version IS NULL THEN
    version := pod.pubsub_next_version(service, node, item, held.version);
    at := greatest(at, held.updated_at);
  END IF;
  IF NOT pod.federated_apply('pubsub', pod.pubsub_object_id(service, node, item), service, pubsub_retract.version, at,
                             held.version, held.updated_at, true) THEN
    RETURN false;
  END IF;
  DELETE FROM pod.pubsub_items i WHERE i.id = held.id;
  IF local THEN
    PERFORM pod.pubsub_announce('pubsub.retract', jsonb_build_object('node', node, 'item', item, 'retracted', at,
                                                                     'version', pubsub_retract.version));
  END IF;
  RETURN true;
END $$;

-- Removes every item of a node held at or before `purged` (each leaves a tombstone at
-- its held version: a later publish at the origin, with a higher version, comes in);
-- returns how many.
CREATE FUNCTION pod.pubsub_purge(service text, node text, purged timestamptz DEFAULT NULL) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  n_id bigint;
  at timestamptz := coalesce(purged, now());
  local boolean := pod.pubsub_is_local(service);
  k integer := 0;
  it pod.pubsub_items;
BEGIN
  n_id := pod.pubsub_node_id(service, node);
  FOR it IN SELECT * FROM pod.pubsub_items i WHERE i.node_id = n_id AND i.updated_at <= at ORDER BY i.seq LOOP
    PERFORM pod.federated_lock('pubsub', pod.pubsub_object_id(service, node, it.name));
    IF pod.federated_apply('pubsub', pod.pubsub_object_id(service, node, it.name), service,
                           coalesce(it.version, 0) + CASE WHEN local THEN 1 ELSE 0 END, greatest(at, it.updated_at),
                           it.version, it.updated_at, true) THEN
      DELETE FROM pod.pubsub_items i WHERE i.id = it.id;
      k := k + 1;
    END IF;
  END LOOP;
  IF local THEN
    PERFORM pod.pubsub_announce('pubsub.purge', jsonb_build_object('node', node, 'purged', at));
  END IF;
  RETURN k;
END $$;

-- Deletes a node with its items.
CREATE FUNCTION pod.pubsub_delete_node(service text, node text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  DELETE FROM pod.pubsub_nodes p WHERE p.id = (SELECT pod.pubsub_node_id(pubsub_delete_node.service, pubsub_delete_node.node));
  IF pod.pubsub_is_local(service) THEN
    PERFORM pod.pubsub_announce('pubsub.delete', jsonb_build_object('node', node));
  END IF;
  RETURN true;
END $$;

-- Reading: RSM pages and search -------------------------------------------------------

-- A page of a node's items in publication order (XEP-0059): `after` an item id (the
-- next page), `before` one (the previous page; before = '' is the last page), `max`
-- items. The answer: {"items": [...], "count": n, "index": i, "first": id, "last": id}
-- (count: the node's item_count; index: the position of the first item in the whole
-- node, null for an empty page, and null too, XEP-0059's index being optional, when the
-- page starts more than 512 items from both ends of its node: counting that far would
-- make a page's cost grow with its node). An item id not in the node: P0002 (RSM's
-- item-not-found); past either end: an empty page. C (extension/src/pubsub_page.c):
-- read from the btrees and written as JSON in one buffer, in the time of its items,
-- not its node's.
CREATE FUNCTION pod.pubsub_items_page(service text, node text, max integer DEFAULT 50, after text DEFAULT NULL,
                                      before text DEFAULT NULL) RETURNS json
  AS 'MODULE_PATHNAME', 'pubsub_items_page' LANGUAGE C STABLE SECURITY DEFINER;  -- no SQL inside: no search_path
COMMENT ON FUNCTION pod.pubsub_items_page(text, text, integer, text, text) IS 'RSM page of a node''s items: after/before an item id, max; answers items, count, index (null past 512 items from both ends), first, last.';

-- The SQL condition (over the item alias i) of one filter {"path": "a.b", "op": "=",
-- "value": ...}, each served by an index: "=", "in" (value an array) and "overlap"
-- (the path is an array sharing a value) are jsonpath equality over the GIN index on
-- parsed (jsonb_path_ops), on any path; "like" (SQL LIKE, a pattern that starts with
-- a literal prefix) only on title (btree text_pattern_ops on parsed ->> 'title');
-- "<", "<=", ">", ">=" only on duration, a number (the expression btree on
-- parsed -> 'duration'). Other paths or patterns for like and comparisons are refused
-- (0A000): jsonb_path_ops serves equality only, and a scan of the whole cache is not
-- offered.
CREATE FUNCTION pod.pubsub_filter(filter jsonb) RETURNS text
  LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  path text := filter ->> 'path';
  op text := filter ->> 'op';
  val jsonb := filter -> 'value';
  steps text;
BEGIN
  IF jsonb_typeof(filter) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'a filter is an object {"path", "op", "value"}' USING ERRCODE = '22023';
  END IF;
  IF coalesce(path, '') !~ '^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$' THEN
    RAISE EXCEPTION 'not a parsed path: %', coalesce(quote_literal(path), 'NULL') USING ERRCODE = '22023',
      HINT = 'A path is keys joined by dots, e.g. author.name.';
  END IF;
  steps := '$' || (SELECT string_agg('.' || to_jsonb(k)::text, '' ORDER BY o) FROM unnest(string_to_array(path, '.')) WITH ORDINALITY u(k, o));
  CASE op
  WHEN '=' THEN
    IF val IS NULL THEN
      RAISE EXCEPTION '= needs a value' USING ERRCODE = '22023';
    END IF;
    RETURN format('i.parsed @? %L::jsonpath', format('%s ? (@ == %s)', steps, val));
  WHEN 'in', 'overlap' THEN
    IF jsonb_typeof(val) IS DISTINCT FROM 'array' OR jsonb_array_length(val) = 0 THEN
      RAISE EXCEPTION '% needs a non-empty array', op USING ERRCODE = '22023';
    END IF;
    RETURN format('i.parsed @? %L::jsonpath', format('%s%s ? (%s)', steps, CASE WHEN op = 'overlap' THEN '[*]' ELSE '' END,
                  (SELECT string_agg(format('@ == %s', v), ' || ') FROM jsonb_array_elements(val) v)));
  WHEN 'like' THEN
    IF jsonb_typeof(val) IS DISTINCT FROM 'string' THEN
      RAISE EXCEPTION 'like needs a string pattern' USING ERRCODE = '22023';
    END IF;
    IF path <> 'title' THEN
      RAISE EXCEPTION 'like is served by an index on title only, not on %', quote_literal(path) USING ERRCODE = '0A000',
        HINT = 'Search other text by full text (query), or a path by =, in or overlap.';
    END IF;
    IF (val #>> '{}') !~ '^([^%_\\]|\\.)' THEN
      RAISE EXCEPTION 'a like pattern must start with a literal prefix (the index serves prefixes), not %', val #>> '{}'
        USING ERRCODE = '0A000', HINT = 'For words inside the text, search by full text (query).';
    END IF;
    RETURN format('(i.parsed ->> %L) LIKE %L', 'title', val #>> '{}');
  WHEN '<', '<=', '>', '>=' THEN
    IF path <> 'duration' THEN
      RAISE EXCEPTION '% is served by an index on duration only, not on %', op, quote_literal(path) USING ERRCODE = '0A000',
        HINT = 'Order or range by created/updated through pod.pubsub_search''s order_by.';
    END IF;
    IF jsonb_typeof(val) IS DISTINCT FROM 'number' THEN
      RAISE EXCEPTION '% on duration compares a number' , op USING ERRCODE = '22023';
    END IF;
    RETURN format('(i.parsed ? %L AND i.parsed -> %L %s %L::jsonb)', 'duration', 'duration', op, val);
  ELSE
    RAISE EXCEPTION 'unknown filter operator %', coalesce(quote_literal(op), 'NULL') USING ERRCODE = '22023',
      HINT = 'Operators: =, in, overlap (any path), like (title), <, <=, >, >= (duration).';
  END CASE;
END $$;

-- Search across nodes: full text (websearch syntax, config simple) and parsed-path
-- filters (AND), optionally within one node type, ordered by "created", "updated"
-- (btrees), "rank" (needs a query; ranks what the GIN index matched) or
-- "parsed:duration" (its expression btree; only items that have a duration),
-- newest/highest first.
CREATE FUNCTION pod.pubsub_search(query text DEFAULT NULL, filters jsonb DEFAULT '[]', node_type text DEFAULT NULL,
                                  order_by text DEFAULT 'created', max integer DEFAULT 50)
  RETURNS TABLE (id bigint, service text, node text, item text, parsed jsonb, created_at timestamptz,
                 updated_at timestamptz, rank real)
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  cond text[] := ARRAY['true'];
  f jsonb;
  ord text;
BEGIN
  IF max IS NULL OR max < 1 OR max > 1000 THEN
    RAISE EXCEPTION 'max must be between 1 and 1000' USING ERRCODE = '22023';
  END IF;
  IF filters IS NOT NULL AND jsonb_typeof(filters) <> 'array' THEN
    RAISE EXCEPTION 'filters must be a JSON array of {"path", "op", "value"}' USING ERRCODE = '22023';
  END IF;
  IF query IS NOT NULL THEN
    cond := cond || 'i.search @@ websearch_to_tsquery(''simple'', $1)'::text;
  END IF;
  FOR f IN SELECT * FROM jsonb_array_elements(coalesce(filters, '[]')) LOOP
    cond := cond || pod.pubsub_filter(f);
  END LOOP;
  IF node_type IS NOT NULL THEN
    cond := cond || 'n.type = $2'::text;
  END IF;
  ord := CASE
    WHEN order_by = 'created' THEN 'i.created_at DESC, i.id DESC'
    WHEN order_by = 'updated' THEN 'i.updated_at DESC, i.id DESC'
    WHEN order_by = 'rank' AND query IS NOT NULL THEN 'rank DESC, i.id DESC'
    -- The one parsed key with an order index: the items that have it, longest first.
    WHEN order_by = 'parsed:duration' THEN 'i.parsed -> ''duration'' DESC, i.id DESC'
  END;
  IF order_by = 'parsed:duration' THEN
    cond := cond || 'i.parsed ? ''duration'''::text;
  END IF;
  IF ord IS NULL THEN
    RAISE EXCEPTION 'cannot order by %', coalesce(quote_literal(order_by), 'NULL') USING ERRCODE = '22023',
      HINT = 'created, updated, rank (with a query) or parsed:duration (the parsed key with an index).';
  END IF;
  RETURN QUERY EXECUTE format(
    'SELECT i.id, n.service, n.name, i.name, i.parsed, i.created_at, i.updated_at, %s::real AS rank
       FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
      WHERE %s ORDER BY %s LIMIT %s',
    CASE WHEN query IS NOT NULL THEN 'ts_rank(i.search, websearch_to_tsquery(''simple'', $1))' ELSE '0' END,
    array_to_string(cond, ' AND '), ord, max) USING query, node_type;
END $$;
COMMENT ON FUNCTION pod.pubsub_search(text, jsonb, text, text, integer) IS 'Search cached items by full text and parsed-path filters, ordered by created, updated, rank or a parsed key.';

-- The network video index -------------------------------------------------------------

CREATE VIEW api.network_videos AS
  SELECT i.id, (i.parsed ->> 'uuid') AS uuid, i.parsed ->> 'title' AS name,
         coalesce(i.parsed ->> 'origin', n.service) AS origin, n.service,
         coalesce(i.parsed ->> 'summary', i.parsed ->> 'content') AS description,
         i.parsed #>> '{author,name}' AS author, i.parsed ->> 'magnet' AS magnet,
         i.parsed -> 'torrents' AS torrents, i.parsed ->> 'thumbnail' AS thumbnail,
         (i.parsed ->> 'duration')::numeric AS duration, i.parsed ->> 'link' AS url,
         i.parsed -> 'files' AS files, i.created_at, i.updated_at, pod.pubsub_is_local(n.service) AS local,
         n.subtype = 'feed' AS from_feed, i.search, i.parsed
    FROM pod.pubsub_items i
    -- The node per item found (OFFSET 0 keeps the planner from turning this into a
    -- loop over nodes, each probing the items' indexes: the items' own indexes
    -- decide, then one primary-key lookup per item).
    CROSS JOIN LATERAL (SELECT x.service, x.subtype FROM pod.pubsub_nodes x
                         WHERE x.id = i.node_id AND x.type = 'video' AND x.subtype IS DISTINCT FROM 'channel' OFFSET 0) n
   WHERE i.parsed IS NOT NULL;
COMMENT ON VIEW api.network_videos IS 'The network video index: this pod''s published videos and its friends'' and subscribed feeds'' cached video items. Full text: search=fts(simple).word (also plfts, wfts); parsed fields: parsed=cs.{"key": value}.';
GRANT SELECT ON api.network_videos TO pgpod_anon, pgpod_user, pgpod_admin;

GRANT EXECUTE ON FUNCTION pod.pubsub_parse(text, text), pod.pubsub_parser_known(text), pod.pubsub_parsers(),
  pod.feed_entries(text), pod.pubsub_namespace(text), pod.pubsub_is_local(text)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
GRANT EXECUTE ON FUNCTION pod.pubsub_analyser_register(text, text, text, text, text, text, boolean, integer),
  pod.pubsub_publish(text, text, text, text, text, timestamptz, bigint), pod.pubsub_retract(text, text, text, timestamptz, bigint),
  pod.pubsub_purge(text, text, timestamptz), pod.pubsub_delete_node(text, text),
  pod.pubsub_items_page(text, text, integer, text, text), pod.pubsub_search(text, jsonb, text, text, integer)
  TO pgpod_admin;

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

-- 77_video_pubsub: video federation on the pubsub cache. This pod's published videos
-- are the items of its node urn:pgpod:videos (an Atom entry with Media RSS and pgpod's
-- fields each, item id = the video's uuid, item version = the video's version), kept
-- by statement triggers on pod.videos; publishing there announces pubsub events to
-- friends, who also synchronise the node in full (76). A friend's videos live in the
-- cache only (api.network_videos); pod.videos holds this pod's own. The JSON video
-- activities of older pods are written to the same cache (pod.inbox_video_apply).

-- Text safe in XML 1.0 (the control characters it forbids dropped).
CREATE FUNCTION pod.xml_text(value text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN regexp_replace(value, '[\x01-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]', '', 'g');

-- The Atom entry of a video (what friends' video parser reads back).
CREATE FUNCTION pod.video_entry(uuid uuid, name text, description text, author text, created timestamptz,
                                updated timestamptz, duration double precision, magnet text, thumbnail text, origin text,
                                files xml DEFAULT NULL)
  RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN xmlserialize(CONTENT xmlelement(name entry,
    xmlattributes('http://www.w3.org/2005/Atom' AS xmlns, 'http://search.yahoo.com/mrss/' AS "xmlns:media",
                  'urn:pgpod:video:0' AS "xmlns:pod"),
    xmlelement(name id, 'urn:uuid:' || uuid),
    xmlelement(name title, pod.xml_text(name)),
    CASE WHEN description IS NOT NULL THEN xmlelement(name summary, pod.xml_text(description)) END,
    CASE WHEN author IS NOT NULL THEN xmlelement(name author, xmlelement(name name, pod.xml_text(author))) END,
    xmlelement(name published, to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
    xmlelement(name updated, to_char(updated AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
    xmlelement(name link, xmlattributes('alternate' AS rel, origin || '/videos?uuid=eq.' || uuid AS href)),
    CASE WHEN magnet IS NOT NULL OR files IS NOT NULL THEN xmlelement(name "media:group",
      CASE WHEN magnet IS NOT NULL THEN
        xmlelement(name "media:peerLink", xmlattributes('application/x-bittorrent' AS type, pod.xml_text(magnet) AS href)) END,
      files) END,
    CASE WHEN thumbnail IS NOT NULL THEN xmlelement(name "media:thumbnail", xmlattributes(pod.xml_text(thumbnail) AS url)) END,
    xmlelement(name "pod:uuid", uuid),
    xmlelement(name "pod:origin", origin),
    CASE WHEN duration IS NOT NULL THEN xmlelement(name "pod:duration", duration) END) AS text);

-- A local video's files as Media RSS, highest resolution first: one media:content
-- each (url = the gateway's /files/<file_id>, type, fileSize, height, framerate)
-- followed by its media:peerLink (magnet, then torrent_url) when it has them. Columns
-- pod.video_files gains on other branches (kind, size, fps, torrent_url) are read
-- when present (to_jsonb of the row), the file's own size and type otherwise.
CREATE FUNCTION pod.video_files_media(video uuid, origin text) RETURNS xml
  LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pod
  RETURN (SELECT xmlagg(xmlconcat(
            xmlelement(name "media:content", xmlattributes(
              origin || '/files/' || f.file_id AS url,
              CASE WHEN j ->> 'kind' = 'hls' THEN 'application/x-mpegURL'
                   WHEN fl.mime_type LIKE 'video/%' THEN fl.mime_type ELSE 'video/mp4' END AS type,
              coalesce(j ->> 'size', fl.size::text) AS "fileSize", f.resolution AS height, j ->> 'fps' AS framerate)),
            CASE WHEN f.magnet IS NOT NULL THEN
              xmlelement(name "media:peerLink", xmlattributes('application/x-bittorrent' AS type, pod.xml_text(f.magnet) AS href)) END,
            CASE WHEN j ->> 'torrent_url' IS NOT NULL THEN
              xmlelement(name "media:peerLink", xmlattributes('application/x-bittorrent' AS type, pod.xml_text(j ->> 'torrent_url') AS href)) END)
            ORDER BY f.resolution DESC, j ->> 'kind')
            FROM pod.video_files f CROSS JOIN LATERAL to_jsonb(f) j LEFT JOIN pod.files fl ON fl.id = f.file_id
           WHERE f.video_uuid = video);

-- The entry of a local video, with its files.
CREATE FUNCTION pod.video_entry(v pod.videos) RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN pod.video_entry(v.uuid, v.name, v.description,
           coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           v.created_at, v.updated_at, extract(epoch FROM v.duration)::double precision, v.magnet, v.thumbnail,
           (SELECT url FROM pod.identity), pod.video_files_media(v.uuid, (SELECT url FROM pod.identity)));

-- The uuid of a video held by another service than sender (or by this pod): a pod
-- may only speak of its own videos.
CREATE FUNCTION pod.video_owner_other_than(video uuid, sender text) RETURNS text
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT '(this pod)' FROM pod.videos v WHERE v.uuid = video AND v.origin IS NULL),
                  (SELECT n.service FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
                    WHERE i.parsed @> jsonb_build_object('uuid', video::text) AND n.type = 'video' AND n.subtype IS NULL
                      AND n.service <> sender LIMIT 1));

-- Applies a friend's JSON video activity (video.published / video.updated, remove
-- false; video.removed, remove true: as pods before 0.4 send them) to its videos node
-- in the cache, by the origin's (version, updated_at) like any item: deliveries
-- retried out of order end at the origin's last state, a late update never brings
-- back a removed video, a late removal never removes a newer one. Returns 'applied'
-- or 'stale' (acknowledged, nothing changed).
CREATE OR REPLACE FUNCTION pod.inbox_video_apply(sender text, video jsonb, remove boolean DEFAULT false) RETURNS text
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE
  vid uuid;
  version bigint;
  at timestamptz;
  created timestamptz;
  duration double precision;
  held pod.pubsub_items;
BEGIN
  BEGIN
    vid := (video ->> 'uuid')::uuid;
    version := (video ->> 'version')::bigint;
    at := pod.federated_time(video ->> 'updated_at');
  EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'video uuid, version or updated_at is malformed');
  END;
  IF vid IS NULL OR NOT remove AND coalesce(video ->> 'name', '') = '' THEN
    PERFORM pod.inbox_reject('PT400', CASE WHEN remove THEN 'video.removed needs the video''s uuid'
                                           ELSE 'video needs a uuid and a name' END);
  END IF;
  IF pod.video_owner_other_than(vid, sender) IS NOT NULL THEN
    PERFORM pod.inbox_reject('PT403', 'video ' || vid || ' belongs to another pod');
  END IF;
  IF remove THEN
    PERFORM pod.pubsub_node(sender, 'urn:pgpod:videos');
    SELECT i.* INTO held FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
     WHERE n.service = sender AND n.name = 'urn:pgpod:videos' AND i.name = vid::text;
    -- A removal without a version or time (an older pod) removes whatever is held.
    IF version IS NULL AND at IS NULL THEN
      version := coalesce(held.version, 0) + 1;
    END IF;
    RETURN CASE WHEN pod.pubsub_retract(sender, 'urn:pgpod:videos', vid::text, coalesce(at, now()), version)
                THEN 'applied' ELSE 'stale' END;
  END IF;
  BEGIN
    created := pod.federated_time(video ->> 'created_at');
    duration := (video ->> 'duration')::double precision;
  EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    PERFORM pod.inbox_reject('PT400', 'video created_at or duration is malformed');
  END;
  IF length(video ->> 'name') > 255 OR length(video ->> 'description') > 10000 OR duration < 0 THEN
    PERFORM pod.inbox_reject('PT400', 'video is malformed: a name of at most 255 characters, a description of at most 10000, a duration >= 0');
  END IF;
  BEGIN
    RETURN CASE WHEN pod.pubsub_publish(sender, 'urn:pgpod:videos', vid::text,
                  pod.video_entry(vid, video ->> 'name', video ->> 'description', video ->> 'author', coalesce(created, at, now()),
                                  coalesce(at, now()), duration, video ->> 'magnet', video ->> 'thumbnail', sender),
                  sender, coalesce(at, now()), version) IS NULL THEN 'stale' ELSE 'applied' END;
  EXCEPTION WHEN SQLSTATE '2200M' OR SQLSTATE '2200N' OR SQLSTATE '54000' THEN
    PERFORM pod.inbox_reject('PT400', 'video is malformed: ' || SQLERRM);
  END;
  RETURN NULL;
END $$;

-- Keeps this pod's videos node: a published video is an item (at its version), an
-- unpublished or deleted one is retracted. Runs as the owner (a channel owner's
-- statement needs no right on the cache or the queue).
-- The node of one of this pod's channels (its videos are items of both nodes; the
-- channel nodes are not synchronised by friends, nor listed in api.network_videos:
-- the videos node holds every video once).
CREATE FUNCTION pod.channel_node(channel_id bigint) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN 'urn:pgpod:channel:' || channel_id;

CREATE FUNCTION pod.videos_pubsub() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me text := (SELECT url FROM pod.identity);
  v pod.videos;
  entry text;
  moved record;
BEGIN
  IF me IS NULL OR pod.restoring() THEN  -- a restore brings the node's items itself
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    FOR v IN SELECT n.* FROM new_videos n WHERE n.origin IS NULL AND n.state = 'published' ORDER BY n.created_at LOOP
      entry := pod.video_entry(v);
      PERFORM pod.pubsub_publish(me, 'urn:pgpod:videos', v.uuid::text, entry, me, v.updated_at, v.version);
      PERFORM pod.pubsub_publish(me, pod.channel_node(v.channel_id), v.uuid::text, entry, me, v.updated_at, v.version);
    END LOOP;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    FOR v IN SELECT n.* FROM new_videos n JOIN old_videos o USING (uuid)
              WHERE n.origin IS NULL AND n.state <> 'published' AND o.state = 'published' LOOP
      PERFORM pod.pubsub_retract(me, 'urn:pgpod:videos', v.uuid::text, v.updated_at, v.version);
    END LOOP;
    -- Left its channel (unpublished, or moved to another one): out of the old
    -- channel's node.
    FOR moved IN SELECT n.uuid, n.updated_at, n.version, o.channel_id AS old_channel FROM new_videos n JOIN old_videos o USING (uuid)
              WHERE n.origin IS NULL AND o.state = 'published'
                AND (n.state <> 'published' OR n.channel_id IS DISTINCT FROM o.channel_id) LOOP
      PERFORM pod.pubsub_retract(me, pod.channel_node(moved.old_channel), moved.uuid::text, moved.updated_at, moved.version);
    END LOOP;
  ELSIF TG_OP = 'DELETE' THEN
    FOR v IN SELECT o.* FROM old_videos o WHERE o.origin IS NULL AND o.state = 'published' LOOP
      PERFORM pod.pubsub_retract(me, 'urn:pgpod:videos', v.uuid::text,
                                 greatest(clock_timestamp(), v.updated_at + interval '1 microsecond'), v.version + 1);
      PERFORM pod.pubsub_retract(me, pod.channel_node(v.channel_id), v.uuid::text,
                                 greatest(clock_timestamp(), v.updated_at + interval '1 microsecond'), v.version + 1);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER videos_pubsub_insert AFTER INSERT ON pod.videos
  REFERENCING NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_pubsub();
CREATE TRIGGER videos_pubsub_update AFTER UPDATE ON pod.videos
  REFERENCING OLD TABLE AS old_videos NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_pubsub();
CREATE TRIGGER videos_pubsub_delete AFTER DELETE ON pod.videos
  REFERENCING OLD TABLE AS old_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_pubsub();

-- A friend that leaves (friend.remove, pod.remove_friend) takes its nodes with it.
CREATE FUNCTION pod.friends_pubsub_removed() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  DELETE FROM pod.pubsub_nodes WHERE service = OLD.url;
  DELETE FROM pod.jobs WHERE kind = 'pubsub_sync' AND target = OLD.url AND state = 'waiting';
  RETURN NULL;
END $$;
CREATE TRIGGER friends_pubsub_removed AFTER DELETE ON pod.friends
  FOR EACH ROW EXECUTE FUNCTION pod.friends_pubsub_removed();

COMMENT ON VIEW api.videos IS 'This pod''s videos; the network''s (friends'' and feeds'') are in api.network_videos.';

-- Existing data (an upgrade): friends' videos move from pod.videos to the cache, this
-- pod's published ones become its node's items; nothing is announced (friends
-- synchronise the node), but every friend is synchronised again.
SELECT set_config('pgpod.pubsub_announce', 'off', true);
SELECT pod.pubsub_publish(v.origin, 'urn:pgpod:videos', v.uuid::text,
         pod.video_entry(v.uuid, v.name, v.description, v.author, v.created_at, v.updated_at,
                         extract(epoch FROM v.duration)::double precision, v.magnet, v.thumbnail, v.origin),
         v.origin, v.updated_at, v.version)
  FROM pod.videos v WHERE v.origin IS NOT NULL ORDER BY v.created_at;
DELETE FROM pod.videos WHERE origin IS NOT NULL;
SELECT pod.pubsub_publish(i.url, n.node, v.uuid::text, pod.video_entry(v), i.url, v.updated_at, v.version)
  FROM pod.videos v, pod.identity i, LATERAL (VALUES ('urn:pgpod:videos'), (pod.channel_node(v.channel_id))) n(node)
 WHERE v.origin IS NULL AND v.state = 'published' ORDER BY v.created_at, n.node <> 'urn:pgpod:videos';
SELECT pod.pubsub_sync_friend(f.url) FROM pod.friends f WHERE f.state = 'active';
SELECT set_config('pgpod.pubsub_announce', 'on', true);

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
-- <<< pubsub cache (issue 15)


-- ==== livechat (issue 16) ====
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
  -- (the remote chats whose rooms they mirror go first, so their rooms are orphans now):
  -- unused past the retention, or of a video its pod no longer publishes here (it
  -- left the pubsub cache: retracted, or the pod is no friend any more)
  DELETE FROM pod.remote_video_chats c WHERE c.updated_at < now() - retention
     OR NOT EXISTS (SELECT 1 FROM pod.remote_video(c.video_uuid) r WHERE pod.pod_host(r.origin) = c.host);
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
-- expressions match the NFKC text case-insensitively (ICU). In C
-- (extension/src/chat_rules.c): the same functions as pod.chat_fold, but the text is
-- folded once and the list's words once per list (every post of a room checks the same
-- list), which was most of a post's option check in plpgsql.
CREATE FUNCTION pod.forbidden_word_in(t text, words jsonb) RETURNS text
  AS 'MODULE_PATHNAME', 'forbidden_word_in' LANGUAGE C IMMUTABLE PARALLEL SAFE;

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
-- In C (extension/src/chat_rules.c): the room and membership (or, for a guest, after
-- pod.current_guest_id(), which refuses an expired token, the guest row) read by key
-- under the caller's snapshot; it was plpgsql, set up again in every transaction, and
-- every post (its RETURNING meets the read policy) and every history page asks it.
CREATE FUNCTION pod.room_role(room uuid) RETURNS text
  AS 'MODULE_PATHNAME', 'room_role' LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  SET enable_seqscan = off;

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
-- In C (extension/src/room_events.c), one statement: the room's event_seq advanced
-- (the row lock makes the sequence gapless and in commit order), the event written,
-- the followers asked for; then NOTIFY pgpod_room_events only when a gateway listens
-- to the room (pod.room_event_notify) and, when other pods follow the room
-- (sql/76_livechat_federation.sql), pod.chat_push_event. NULL when the room itself is
-- being deleted. Its look-ups are by key (SET enable_seqscan = off: with few rooms, the
-- generic plan would otherwise scan pod.rooms, whose every event leaves a row version).
CREATE FUNCTION pod.room_event_append(room uuid, event_kind pod.room_event_kind, message bigint,
                                      event_audience text DEFAULT NULL, event_author uuid DEFAULT NULL) RETURNS bigint
  AS 'MODULE_PATHNAME', 'room_event_append' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod
  SET enable_seqscan = off;

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
-- guest is the pod's own (a room event, a remote room's mirror). In C
-- (extension/src/chat_rules.c), in this order: who posts (a signed-in user as the
-- message's author, or a guest: an anonymous viewer's live token for this room, or a
-- remote user through pod.chat_remote_post); only the pod writes other types than
-- 'message'; text at most 5000 characters; not another pod's room; the poster's role
-- (not a member, banned), mute and the role's post permission; then, except for the
-- owner and admins, the channel's options: mute_anonymous / anonymous_allowed,
-- forbidden_words (refused, or hidden with forbidden_words_action 'hide'), slow mode
-- (PT429 with Retry-After) and the moderation delay (held_until).
CREATE FUNCTION pod.messages_check_post() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_check_post' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod;
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
-- A new message everyone may see at once (neither held nor hidden: most of them) has
-- its 'new' event written by a C trigger (extension/src/room_events.c: what
-- pod.room_event_append does, without two plpgsql functions' per-transaction setup);
-- the rest, edits and deletes by pod.messages_record_event.
DROP TRIGGER messages_record_event ON pod.messages;
CREATE TRIGGER messages_record_event AFTER UPDATE OR DELETE ON pod.messages
  FOR EACH ROW EXECUTE FUNCTION pod.messages_record_event();
CREATE TRIGGER messages_record_event_held AFTER INSERT ON pod.messages
  FOR EACH ROW WHEN (NEW.held_until IS NOT NULL OR NEW.hidden) EXECUTE FUNCTION pod.messages_record_event();
CREATE FUNCTION pod.messages_event_new() RETURNS trigger
  AS 'MODULE_PATHNAME', 'messages_event_new' LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pod
  SET enable_seqscan = off;
CREATE TRIGGER messages_record_event_new AFTER INSERT ON pod.messages
  FOR EACH ROW WHEN (NEW.held_until IS NULL AND NOT NEW.hidden) EXECUTE FUNCTION pod.messages_event_new();

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
-- (greatest() skips a NULL: with nothing held it answered 0, and the daemon ticked every
-- 5 ms while idle.)
CREATE FUNCTION pod.livechat_next_release() RETURNS double precision
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN (SELECT CASE WHEN min(until) IS NOT NULL THEN greatest(0, extract(epoch FROM min(until) - now())) END::double precision
            FROM pod.chat_held);

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
  -- a private video's chat is its owner's business: no guests (as no anonymous viewers)
  SELECT * INTO v FROM pod.videos WHERE uuid = video AND origin IS NULL AND state = 'published' AND privacy <> 'private';
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

-- The policies below ask these rules per row, but the room part once per room and
-- snapshot (extension/src/chat_rules.c): pod.room_view(room) is 0 when the caller may
-- not read the room, 1 for a reader, 2 for a moderator (pod.room_role decides, as for
-- pod.can_read_room and pod.can_moderate_room); pod.guest_view(room) is
-- pod.guest_reads(room). The caller's ids are init plans ((SELECT ...): once per
-- query). A page of history thus reads its index range with per-page permission work.
CREATE FUNCTION pod.room_view(room uuid) RETURNS integer
  AS 'MODULE_PATHNAME', 'room_view' LANGUAGE C STABLE;
COMMENT ON FUNCTION pod.room_view(uuid) IS 'The caller''s view of a room for row-level security: 0 none, 1 reader, 2 moderator (pod.room_role, asked once per room and snapshot).';
CREATE FUNCTION pod.guest_view(room uuid) RETURNS boolean
  AS 'MODULE_PATHNAME', 'guest_view' LANGUAGE C STABLE;
COMMENT ON FUNCTION pod.guest_view(uuid) IS 'pod.guest_reads(room), asked once per room and snapshot, for row-level security.';

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
-- (pod.can_read_room(room_id) AND pod.message_visible(room_id, author_id, guest_id, hidden, held_until))
CREATE POLICY messages_read ON pod.messages FOR SELECT TO pgpod_user
  USING (CASE pod.room_view(room_id)
           WHEN 2 THEN true
           WHEN 1 THEN (NOT hidden AND (held_until IS NULL OR held_until <= now()))
                       OR author_id = (SELECT pod.current_user_id()) OR guest_id = (SELECT pod.current_guest_id())
           ELSE false END);
-- (pod.guest_reads(room_id) AND pod.message_visible(room_id, author_id, guest_id, hidden, held_until))
CREATE POLICY messages_read_guest ON pod.messages FOR SELECT TO pgpod_anon
  USING (pod.guest_view(room_id)
         AND ((NOT hidden AND (held_until IS NULL OR held_until <= now()))
              OR author_id = (SELECT pod.current_user_id()) OR guest_id = (SELECT pod.current_guest_id())
              OR pod.room_view(room_id) = 2));
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
-- (pod.can_read_room(room_id) AND pod.event_visible(room_id, audience, author))
CREATE POLICY events_read ON pod.room_events FOR SELECT TO pgpod_user
  USING (pod.room_view(room_id) > 0
         AND (audience IS NULL
              OR (audience = 'staff') = coalesce(author = (SELECT pod.current_user_id()) OR author = (SELECT pod.current_guest_id())
                                                 OR pod.room_view(room_id) = 2, false)));
-- (pod.guest_reads(room_id) AND pod.event_visible(room_id, audience, author))
CREATE POLICY events_read_guest ON pod.room_events FOR SELECT TO pgpod_anon
  USING (pod.guest_view(room_id)
         AND (audience IS NULL
              OR (audience = 'staff') = coalesce(author = (SELECT pod.current_user_id()) OR author = (SELECT pod.current_guest_id())
                                                 OR pod.room_view(room_id) = 2, false)));

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
    pod.current_guest_id(), pod.guest_reads(uuid), pod.room_view(uuid), pod.guest_view(uuid)
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

-- Another pod's video as this pod knows it: an item of that pod's videos node in the
-- pubsub cache (sql/77_video_pubsub.sql; pod.videos holds this pod's own videos only).
-- A remote video is (origin, uuid): origin is the node's service, the pod that
-- published the item (only it may speak of the video: pod.video_owner_other_than), so
-- only it speaks for the video's room. No row when no other pod published it here.
CREATE FUNCTION pod.remote_video(video uuid, OUT origin text, OUT name text)
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod AS $$
  SELECT n.service, i.parsed ->> 'title'
    FROM pod.pubsub_nodes n JOIN pod.pubsub_items i ON i.node_id = n.id AND i.name = video::text
   WHERE n.name = 'urn:pgpod:videos' AND NOT coalesce(pod.pubsub_is_local(n.service), false)
   ORDER BY i.id LIMIT 1
$$;

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
  IF NOT EXISTS (SELECT 1 FROM pod.videos WHERE uuid = video AND origin IS NULL AND state = 'published'
                   AND privacy <> 'private') THEN
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
    SELECT c.* INTO rc FROM pod.remote_video_chats c
     WHERE c.host = pod.pod_host(sender) AND c.video_uuid = video
       AND (SELECT r.origin FROM pod.remote_video(video) r) = sender
       FOR UPDATE OF c;
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
  v record;
  room uuid;
BEGIN
  SELECT * INTO rc FROM pod.remote_video_chats WHERE host = chat_host AND video_uuid = chat_video FOR UPDATE;
  SELECT * INTO v FROM pod.remote_video(chat_video);
  room := rc.room_id;
  IF room IS NULL THEN
    INSERT INTO pod.rooms (name, type, created_by) VALUES (left(coalesce(nullif(v.name, ''), 'remote chat'), 200), 'video', NULL)
      RETURNING id INTO room;
    UPDATE pod.remote_video_chats SET room_id = room WHERE host = chat_host AND video_uuid = chat_video;
  END IF;
  IF rc.subscribed_at IS NULL AND pod.pod_host(v.origin) = chat_host THEN
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

-- A signed-in user opens a remote video's chat (a video another pod published here:
-- pod.remote_video): ready (the mirror room to read and post in), pending (the pod is
-- asking the video's pod; ask again), or disabled.
CREATE FUNCTION pod.remote_chat_open(video uuid) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  origin text;
  r_host text;
  rc pod.remote_video_chats;
  fresh interval := (pod.setting('livechat.remote_refresh') #>> '{}')::interval;
BEGIN
  IF pod.current_user_id() IS NULL AND NOT pod.is_admin() THEN
    RAISE EXCEPTION 'sign in to chat with other pods' USING ERRCODE = '42501';
  END IF;
  origin := (SELECT r.origin FROM pod.remote_video(video) r);
  IF origin IS NULL THEN
    RAISE EXCEPTION 'no remote video %', video USING ERRCODE = 'P0002',
      HINT = 'A local video''s chat is GET /rpc/video_chat_room.';
  END IF;
  r_host := pod.pod_host(origin);
  SELECT * INTO rc FROM pod.remote_video_chats c WHERE c.host = r_host AND c.video_uuid = video;
  -- a chat in use stays ready while its information is refreshed (at most once per
  -- livechat.remote_refresh), so that cleanup does not find it stale
  IF rc.host IS NOT NULL AND rc.updated_at <= now() - fresh AND rc.room_id IS NOT NULL THEN
    PERFORM pod.remote_chat_refresh(origin, video);
  END IF;
  IF rc.host IS NOT NULL AND (rc.updated_at > now() - fresh OR rc.room_id IS NOT NULL) THEN
    IF NOT (rc.infos ->> 'enabled')::boolean THEN
      RETURN jsonb_build_object('status', 'disabled', 'infos', rc.infos);
    END IF;
    RETURN jsonb_build_object('status', 'ready', 'room', pod.remote_chat_mirror(rc.host, video), 'infos', rc.infos,
                              'following', rc.subscribed_at IS NOT NULL);
  END IF;
  PERFORM pod.remote_chat_refresh(origin, video);
  RETURN jsonb_build_object('status', 'pending');
END $$;

-- Asks a remote video's pod (origin) for the video's chat information (a chat_info
-- job), unless a job for it is already waiting or running.
CREATE FUNCTION pod.remote_chat_refresh(origin text, video uuid) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pod.jobs j WHERE j.kind = 'chat_info' AND j.state IN ('waiting', 'running')
                  AND j.target = origin AND j.payload ->> 'video' = video::text) THEN
    PERFORM pod.job_enqueue('chat_info', jsonb_build_object(
      'origin', origin, 'host', pod.pod_host(origin), 'video', video,
      'url', origin || (pod.setting('livechat.chat_info_path') #>> '{}') || '?video=' || video), origin);
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
  origin := (SELECT r.origin FROM pod.remote_video(rc.video_uuid) r WHERE pod.pod_host(r.origin) = rc.host);
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
-- sql/10_auth.sql: pod.current_user_id() remembered per transaction (livechat's posting speed)
-- pod.current_user_id() asks pod.session_user_id() once per transaction and claims
-- (extension/src/identity.c); every change of pod.sessions makes it ask again. The
-- ids are checked by pattern (the canonical form pod.login writes), not by catching
-- the cast's error: an exception block is a subtransaction on every call.
CREATE FUNCTION pod.session_user_id() RETURNS uuid
  AS 'MODULE_PATHNAME', 'session_user_id' LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pod;
COMMENT ON FUNCTION pod.session_user_id() IS 'The user of the claims'' live session (sid, sub), NULL without a sid; PT401 for malformed claims or an ended session (in C: a plpgsql function''s setup was paid by every request).';
CREATE OR REPLACE FUNCTION pod.current_user_id() RETURNS uuid
  AS 'MODULE_PATHNAME', 'current_user_id_cached' LANGUAGE C STABLE;
COMMENT ON FUNCTION pod.current_user_id() IS 'The user of the current request''s JWT, or NULL when there is none or its session ended.';
CREATE FUNCTION pod.sessions_forget_user() RETURNS trigger
  AS 'MODULE_PATHNAME', 'sessions_forget_user' LANGUAGE C;
CREATE TRIGGER sessions_forget_user AFTER UPDATE OR DELETE OR TRUNCATE ON pod.sessions
  FOR EACH STATEMENT EXECUTE FUNCTION pod.sessions_forget_user();
-- end of livechat (issue 16) -------------------------------------------------------------
-- ==== end of livechat ====

-- ==== merged hooks: the final definitions of the functions both livechat and pubsub
-- changed (sql/70_federation.sql, sql/72_inbox.sql), as a fresh install has them ====
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

-- ==== video privacy (issue 13): sql/78_video_privacy.sql ====
-- 78_video_privacy: who may watch a local video, decided here (row-level security and
-- the functions the gateway calls), never in the gateway. A video's privacy, as
-- PeerTube's: public (listed in api.videos, announced to friends, its files readable
-- by anyone once published), unlisted (listed nowhere and not federated, but anyone
-- who has its uuid may watch it once published: api.video, its events, its files),
-- private (its owner and admins only: no listing, no events, no file readable by
-- others, no torrent tracked or seeded, not federated).
-- Files: api.files lists the caller's own and granted files only (anonymous callers:
-- nothing); a video's files are fetched one at a time by id (pod.file_download).
-- Also (the end of the file): resumable uploads whose length comes later (tus's
-- creation-defer-length), and the gateway's periodic sweep of expired uploads.

-- Two functions' parsed bodies use the row type of pod.videos, which blocks ALTER
-- TABLE: they are dropped and made again, unchanged but with quoted bodies (which pin
-- nothing, so the next column needs no such dance).
DROP FUNCTION pod.video_object(pod.videos);
DROP FUNCTION pod.video_entry(pod.videos);
ALTER TABLE pod.videos ADD COLUMN privacy text NOT NULL DEFAULT 'public'
  CONSTRAINT videos_privacy_check CHECK (privacy IN ('public', 'unlisted', 'private'));
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at)
$$;
CREATE FUNCTION pod.video_entry(v pod.videos) RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT pod.video_entry(v.uuid, v.name, v.description,
           coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           v.created_at, v.updated_at, extract(epoch FROM v.duration)::double precision, v.magnet, v.thumbnail,
           (SELECT url FROM pod.identity), pod.video_files_media(v.uuid, (SELECT url FROM pod.identity)))
$$;
REVOKE EXECUTE ON FUNCTION pod.video_object(pod.videos), pod.video_entry(pod.videos) FROM PUBLIC;
COMMENT ON COLUMN pod.videos.privacy IS 'public: listed and federated; unlisted: watchable by whoever has its uuid, listed nowhere; private: its owner''s and admins'' only.';

-- Listed for everyone (api.videos, this pod's pubsub nodes, friends): published and public.
CREATE FUNCTION pod.video_listed(state pod.video_state, privacy text) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN state = 'published' AND privacy = 'public';

-- May the caller watch the video (its page, its events)? A published video that is not
-- private: anyone; otherwise its owner and admins.
CREATE FUNCTION pod.video_watchable(video uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.videos v WHERE v.uuid = video
                   AND ((v.state = 'published' AND v.privacy <> 'private')
                        OR (v.channel_id IS NOT NULL AND pod.owns_channel(v.channel_id)) OR pod.is_admin()));
COMMENT ON FUNCTION pod.video_watchable(uuid) IS 'May the caller watch this video: published and not private, or its owner''s, or an admin.';

ALTER POLICY videos_public ON pod.videos USING (pod.video_listed(state, privacy));
ALTER POLICY video_events_read ON pod.video_events USING (pod.video_watchable(video_uuid));
GRANT INSERT (privacy), UPDATE (privacy) ON pod.videos TO pgpod_user;

-- A file readable without a token: one of a published video that is not private
-- (an unlisted video's file ids are known only to those who have its uuid).
CREATE OR REPLACE FUNCTION pod.file_is_public(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.file_id = file AND v.state = 'published' AND v.privacy <> 'private')
      OR EXISTS (SELECT 1 FROM pod.video_files vf JOIN pod.videos v ON v.uuid = vf.video_uuid
                  WHERE vf.playlist_file_id = file AND v.state = 'published' AND v.privacy <> 'private')
      OR EXISTS (SELECT 1 FROM pod.videos v WHERE v.state = 'published' AND v.privacy <> 'private'
                    AND (v.thumbnail_file_id = file OR v.preview_file_id = file OR v.hls_file_id = file));

-- The caller's own files and those granted to it: what api.files lists.
CREATE FUNCTION pod.file_granted(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN EXISTS (SELECT 1 FROM pod.files f WHERE f.id = file AND f.owner_id = pod.current_user_id())
      OR EXISTS (SELECT 1 FROM pod.file_permissions p WHERE p.file_id = file AND p.user_id = pod.current_user_id()
                   AND coalesce((p.data ->> 'read')::boolean, false));

CREATE OR REPLACE FUNCTION pod.can_read_file(file uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.file_granted(file) OR pod.file_is_public(file);

-- Listing files shows nobody another user's files, public or not (nor their owner
-- ids): anonymous callers list nothing, users their own and granted ones.
ALTER POLICY files_readable ON pod.files USING (pod.file_granted(id));
DROP POLICY files_public ON pod.files;
REVOKE SELECT ON pod.files, api.files FROM pgpod_anon;

-- One file as GET /files/<id> serves it: its blob, type and name, when the caller may
-- read it (own, granted, a watchable video's; admins any). No row otherwise.
CREATE FUNCTION pod.file_download(file uuid)
  RETURNS TABLE (sha256 text, size bigint, mime_type text, filename_visible text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT encode(f.sha256, 'hex'), f.size, f.mime_type, f.filename_visible FROM pod.files f
   WHERE f.id = file AND (pod.can_read_file(f.id) OR pod.is_admin())
$$;
COMMENT ON FUNCTION pod.file_download(uuid) IS 'A file the caller may read, as GET /files/<id> serves it (no row otherwise).';

-- Live progress: a change of privacy is a state event too, and its NOTIFY (as every
-- state event's) says ':state' after the seq, so the gateway asks its subscribers'
-- rights again (a video made private stops streaming to others).
CREATE OR REPLACE FUNCTION pod.video_event(v pod.videos, event text) RETURNS text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  SELECT json_build_object('event', event, 'uuid', v.uuid, 'state', v.state, 'progress', v.progress,
                           'failure_reason', v.failure_reason, 'privacy', v.privacy,
                           'hls_url', pod.file_url(v.hls_file_id), 'thumbnail_url', pod.file_url(v.thumbnail_file_id))::text
$$;

CREATE OR REPLACE FUNCTION pod.videos_notify_events() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  next_seq bigint;
  kind text := 'state';
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state AND NEW.privacy IS NOT DISTINCT FROM OLD.privacy THEN
    kind := 'progress';
  END IF;
  SELECT coalesce(max(e.seq), 0) + 1 INTO next_seq FROM pod.video_events e WHERE e.video_uuid = NEW.uuid;
  INSERT INTO pod.video_events (video_uuid, seq, event, data)
    VALUES (NEW.uuid, next_seq, kind, pod.video_event(NEW, kind)::json);
  PERFORM pg_notify('pod_video_events', NEW.uuid || ':' || next_seq || CASE WHEN kind = 'state' THEN ':state' ELSE '' END);
  RETURN NULL;
END $$;
DROP TRIGGER videos_notify_events ON pod.videos;
CREATE TRIGGER videos_notify_events AFTER UPDATE OF state, progress, failure_reason, privacy ON pod.videos
  FOR EACH ROW WHEN (NEW.origin IS NULL AND (NEW.state IS DISTINCT FROM OLD.state OR NEW.progress IS DISTINCT FROM OLD.progress
                     OR NEW.failure_reason IS DISTINCT FROM OLD.failure_reason OR NEW.privacy IS DISTINCT FROM OLD.privacy))
  EXECUTE FUNCTION pod.videos_notify_events();

-- Federation: only listed videos are items of this pod's nodes; a video that stops
-- being listed (unpublished, made unlisted or private, deleted) is retracted.
CREATE OR REPLACE FUNCTION pod.videos_pubsub() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me text := (SELECT url FROM pod.identity);
  v pod.videos;
  entry text;
  moved record;
BEGIN
  IF me IS NULL OR pod.restoring() THEN  -- a restore brings the node's items itself
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    FOR v IN SELECT n.* FROM new_videos n WHERE n.origin IS NULL AND pod.video_listed(n.state, n.privacy)
              ORDER BY n.created_at LOOP
      entry := pod.video_entry(v);
      PERFORM pod.pubsub_publish(me, 'urn:pgpod:videos', v.uuid::text, entry, me, v.updated_at, v.version);
      PERFORM pod.pubsub_publish(me, pod.channel_node(v.channel_id), v.uuid::text, entry, me, v.updated_at, v.version);
    END LOOP;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    FOR v IN SELECT n.* FROM new_videos n JOIN old_videos o USING (uuid)
              WHERE n.origin IS NULL AND NOT pod.video_listed(n.state, n.privacy) AND pod.video_listed(o.state, o.privacy) LOOP
      PERFORM pod.pubsub_retract(me, 'urn:pgpod:videos', v.uuid::text, v.updated_at, v.version);
    END LOOP;
    -- Left its channel (no longer listed, or moved to another one): out of the old
    -- channel's node.
    FOR moved IN SELECT n.uuid, n.updated_at, n.version, o.channel_id AS old_channel FROM new_videos n JOIN old_videos o USING (uuid)
              WHERE n.origin IS NULL AND pod.video_listed(o.state, o.privacy)
                AND (NOT pod.video_listed(n.state, n.privacy) OR n.channel_id IS DISTINCT FROM o.channel_id) LOOP
      PERFORM pod.pubsub_retract(me, pod.channel_node(moved.old_channel), moved.uuid::text, moved.updated_at, moved.version);
    END LOOP;
  ELSIF TG_OP = 'DELETE' THEN
    FOR v IN SELECT o.* FROM old_videos o WHERE o.origin IS NULL AND pod.video_listed(o.state, o.privacy) LOOP
      PERFORM pod.pubsub_retract(me, 'urn:pgpod:videos', v.uuid::text,
                                 greatest(clock_timestamp(), v.updated_at + interval '1 microsecond'), v.version + 1);
      PERFORM pod.pubsub_retract(me, pod.channel_node(v.channel_id), v.uuid::text,
                                 greatest(clock_timestamp(), v.updated_at + interval '1 microsecond'), v.version + 1);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;

-- Torrents: a private video's files are neither tracked nor seeded (their torrents
-- are kept, and served again if it becomes unlisted or public).
CREATE OR REPLACE FUNCTION pod.tracker_info_hashes() RETURNS TABLE (info_hash bytea, completed bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod
  AS $$
    SELECT f.info_hash, f.completed FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
     WHERE v.state = 'published' AND v.privacy <> 'private' AND v.origin IS NULL AND f.info_hash IS NOT NULL
  $$;
CREATE OR REPLACE VIEW pod.torrents_seeded AS
  SELECT f.id, f.info_hash, encode(fl.sha256, 'hex') AS sha256, b.size, f.piece_length, f.torrent
    FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
    JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
   WHERE v.state = 'published' AND v.privacy <> 'private' AND v.origin IS NULL AND f.info_hash IS NOT NULL;

-- Publication enqueues torrents; whenever a video starts or stops being served
-- (published and not private), the seeder and the tracker are told (pod_torrents).
CREATE OR REPLACE FUNCTION pod.videos_torrents() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE f record;
BEGIN
  IF TG_OP <> 'DELETE' AND NEW.state = 'published' THEN
    PERFORM pod.torrent_enqueue(NEW.uuid);
  END IF;
  IF TG_OP = 'UPDATE' AND (OLD.state = 'published' AND OLD.privacy <> 'private')
                          IS DISTINCT FROM (NEW.state = 'published' AND NEW.privacy <> 'private') THEN
    FOR f IN SELECT id FROM pod.video_files WHERE video_uuid = NEW.uuid AND info_hash IS NOT NULL LOOP
      PERFORM pg_notify('pod_torrents', f.id::text);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER videos_torrents ON pod.videos;
CREATE TRIGGER videos_torrents AFTER INSERT OR UPDATE OF state, privacy ON pod.videos
  FOR EACH ROW EXECUTE FUNCTION pod.videos_torrents();

-- HTTP -------------------------------------------------------------------------------

-- The .torrent of a file of a video the caller may watch (an unlisted one's too). Read
-- with the view owner's rights: the file rows are no longer every caller's to list.
CREATE OR REPLACE VIEW api.torrents AS
  SELECT encode(f.info_hash, 'hex') AS info_hash, f.torrent, fl.filename_visible AS name
    FROM pod.video_files f JOIN pod.files fl ON fl.id = f.file_id
   WHERE f.torrent IS NOT NULL AND pod.video_watchable(f.video_uuid);
ALTER VIEW api.torrents RESET (security_invoker);

-- api.videos gains privacy (appended: the columns before stay as they were).
CREATE OR REPLACE VIEW api.videos WITH (security_invoker = true) AS
  SELECT uuid, channel_id, name, description, origin, author,
         CASE WHEN v.origin IS NULL
              THEN (SELECT f.magnet FROM pod.video_files f WHERE f.video_uuid = v.uuid AND f.magnet IS NOT NULL
                     ORDER BY f.resolution DESC, f.kind = 'mp4' DESC, f.id LIMIT 1)
              ELSE v.magnet END AS magnet,
         thumbnail, state, duration, created_at, updated_at,
         failure_reason, progress, extract(epoch FROM duration)::double precision AS duration_seconds,
         width, height, fps, pod.file_url(thumbnail_file_id) AS thumbnail_url, pod.file_url(preview_file_id) AS preview_url,
         pod.file_url(hls_file_id) AS hls_url, published_at, privacy
    FROM pod.videos v;
COMMENT ON VIEW api.videos IS 'This pod''s public published videos, and the caller''s own (any state or privacy); an unlisted video is read by its uuid with /rpc/video. The network''s (friends'' and feeds'') are in api.network_videos.';

-- One video by its uuid, as api.videos shows it plus its files (api.video_files rows):
-- for anyone who may watch it (an unlisted one too). P0002 (404) otherwise.
CREATE FUNCTION api.video(id uuid) RETURNS json
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE answer json;
BEGIN
  IF id IS NULL OR NOT pod.video_watchable(id) THEN
    RAISE EXCEPTION 'no video % that you may watch', id USING ERRCODE = 'P0002';
  END IF;
  SELECT (to_jsonb(a) || jsonb_build_object('files', coalesce(
            (SELECT jsonb_agg(to_jsonb(f) ORDER BY f.resolution DESC, f.kind) FROM api.video_files f WHERE f.video_uuid = a.uuid),
            '[]')))::json
    INTO answer FROM api.videos a WHERE a.uuid = id;
  RETURN answer;
END $$;
COMMENT ON FUNCTION api.video(uuid) IS 'A video you may watch (public, unlisted, or yours), with its files.';

-- video_create takes the privacy (default public); a video is never visible to others
-- before it is published, so choosing it at creation leaves no window.
DROP FUNCTION api.video_create(bigint, uuid, text, text);
CREATE FUNCTION api.video_create(channel_id bigint, file_id uuid, name text, description text DEFAULT NULL,
                                 privacy text DEFAULT 'public') RETURNS json
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE v uuid;
BEGIN
  IF privacy IS NULL OR privacy NOT IN ('public', 'unlisted', 'private') THEN
    RAISE EXCEPTION 'privacy must be public, unlisted or private' USING ERRCODE = '22023';
  END IF;
  -- a statement of its own: the new row is visible to the next one
  SELECT (pod.video_create(channel_id, file_id, name, description)).uuid INTO v;
  IF privacy <> 'public' THEN
    UPDATE pod.videos SET privacy = video_create.privacy WHERE uuid = v;
  END IF;
  RETURN (SELECT row_to_json(a) FROM api.videos a WHERE a.uuid = v);
END $$;
COMMENT ON FUNCTION api.video_create(bigint, uuid, text, text, text) IS 'Creates a video of your channel from your uploaded file (privacy public, unlisted or private) and queues its transcoding.';

REVOKE EXECUTE ON FUNCTION pod.video_listed(pod.video_state, text), pod.video_watchable(uuid), pod.file_granted(uuid),
  pod.file_download(uuid), api.video(uuid), api.video_create(bigint, uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.video_listed(pod.video_state, text), pod.video_watchable(uuid), pod.file_granted(uuid),
  pod.file_download(uuid), api.video(uuid) TO pgpod_anon, pgpod_user, pgpod_admin;
GRANT EXECUTE ON FUNCTION api.video_create(bigint, uuid, text, text, text) TO pgpod_user;

-- Resumable uploads: a length given later ---------------------------------------------

-- tus creation-defer-length: an upload may start without its length (NULL), which a
-- later PATCH gives once; until then it cannot finish.
ALTER TABLE pod.uploads ALTER COLUMN length DROP NOT NULL;
ALTER TABLE pod.uploads ADD CONSTRAINT uploads_received_not_negative CHECK (received >= 0);
COMMENT ON COLUMN pod.uploads.length IS 'The upload''s length in bytes; NULL while deferred (Upload-Defer-Length), until a PATCH gives it.';

CREATE OR REPLACE FUNCTION pod.upload_create(upload uuid, length bigint, metadata jsonb, received bigint DEFAULT 0)
  RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  me uuid := pod.current_user_id();
  expires timestamptz := now() + (pod.setting('uploads.expiry') #>> '{}')::interval;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'uploading needs a logged-in user' USING ERRCODE = '42501';
  END IF;
  -- length NULL: deferred
  IF length < 0 OR received IS NULL OR received < 0 OR received > length THEN
    RAISE EXCEPTION 'an upload needs a length of 0 or more (or none yet) and an offset within it' USING ERRCODE = '22023';
  END IF;
  IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'upload metadata must be a JSON object' USING ERRCODE = '22023';
  END IF;
  INSERT INTO pod.uploads (id, owner_id, length, received, filename, filetype, metadata, expires_at)
    VALUES (upload, me, length, received, left(nullif(metadata ->> 'filename', ''), 255),
            left(nullif(metadata ->> 'filetype', ''), 255), metadata, expires);
  RETURN pod.http_date(expires);
END $$;

CREATE OR REPLACE FUNCTION pod.upload_advance(upload uuid, from_offset bigint, to_offset bigint) RETURNS text
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.uploads u
     SET received = to_offset, updated_at = now(),
         expires_at = now() + (pod.setting('uploads.expiry') #>> '{}')::interval
   WHERE u.id = upload AND u.owner_id = pod.current_user_id() AND u.received = from_offset
     AND to_offset >= from_offset AND to_offset <= coalesce(u.length, to_offset) AND u.expires_at >= now() AND u.file_id IS NULL
  RETURNING pod.http_date(u.expires_at)
$$;

-- The length of a deferred upload, given once by a PATCH starting at from_offset (the
-- upload must still be there, and the length not below it). False when the upload is
-- not the caller's, expired, done, has a length already, or moved on.
CREATE FUNCTION pod.upload_set_length(upload uuid, from_offset bigint, length bigint) RETURNS boolean
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  WITH set AS (
    UPDATE pod.uploads u SET length = upload_set_length.length, updated_at = now()
     WHERE u.id = upload AND u.owner_id = pod.current_user_id() AND u.length IS NULL AND u.received = from_offset
       AND upload_set_length.length >= from_offset AND u.expires_at >= now() AND u.file_id IS NULL
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM set)
$$;

-- Every gateway process sweeps expired uploads on a timer (PGPOD_UPLOAD_SWEEP_MS) as
-- its login role, whether or not new uploads come.
REVOKE EXECUTE ON FUNCTION pod.upload_set_length(uuid, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pod.upload_set_length(uuid, bigint, bigint) TO pgpod_user;
GRANT EXECUTE ON FUNCTION pod.uploads_expire(integer) TO pgpod_authenticator;

-- Other pods learn nothing of a private video's chat (sql/76 made this before the
-- privacy column existed): its chat information says disabled, as for no video.
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
           WHERE v.uuid = video AND v.origin IS NULL AND v.state = 'published' AND v.privacy <> 'private');
-- ==== end of video privacy ====

-- Last, as a fresh install ends: sql/99_privileges.sql (idempotent), so functions the blocks above created get no EXECUTE for PUBLIC.
-- 99_privileges: the last word on function privileges. PostgreSQL lets PUBLIC execute
-- every new function (and default privileges do not apply inside an extension
-- script), so this takes EXECUTE back on all of pod and api, leaving only the grants
-- each file made to named roles, plus the helpers row-level security policies and
-- invoker triggers call (pure functions that reveal nothing).

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    pod.jwt_claims(), pod.current_user_id(), pod.is_admin(), pod.setting(text),
    pod.room_affiliation(uuid), pod.can_read_room(uuid), pod.can_moderate_room(uuid),
    pod.can_read_file(uuid), pod.owns_channel(bigint),
    pod.email_is_valid(text), pod.validate_chat_options(jsonb), pod.base64url(bytea), pod.base64url_decode(text)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
