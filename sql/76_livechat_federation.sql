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
