-- 50_livechat: chat rooms attached to videos or channels (the seed's channel2room /
-- room2channel, held by foreign keys so they cannot disagree), per-channel chat
-- options, what we know of remote pods and of remote videos' chats, and cleanup.

CREATE TABLE pod.livechat_rooms (
  room_id uuid PRIMARY KEY REFERENCES pod.rooms ON DELETE CASCADE,
  channel_id bigint NOT NULL REFERENCES pod.channels ON DELETE CASCADE,
  video_uuid uuid UNIQUE REFERENCES pod.videos ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- room → channel is the primary key; channel → rooms is this index.
CREATE INDEX livechat_rooms_channel_idx ON pod.livechat_rooms (channel_id);
CREATE UNIQUE INDEX livechat_rooms_one_per_channel ON pod.livechat_rooms (channel_id) WHERE video_uuid IS NULL;
COMMENT ON TABLE pod.livechat_rooms IS 'Which room is the chat of which video or channel; lookups both ways by key.';

-- A video's room must be a 'video' room of the video's own channel; a channel's room a 'channel' room.
CREATE FUNCTION pod.livechat_rooms_check() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  rtype pod.room_type := (SELECT type FROM pod.rooms WHERE id = NEW.room_id);
BEGIN
  IF NEW.video_uuid IS NOT NULL THEN
    IF rtype <> 'video' THEN
      RAISE EXCEPTION 'the chat of a video must be a room of type video, not %', rtype USING ERRCODE = '22023';
    END IF;
    -- Existence is the foreign key's job (and rows arrive in any order on restore).
    IF EXISTS (SELECT 1 FROM pod.videos WHERE uuid = NEW.video_uuid AND channel_id IS DISTINCT FROM NEW.channel_id) THEN
      RAISE EXCEPTION 'video % is not in channel %', NEW.video_uuid, NEW.channel_id USING ERRCODE = '22023';
    END IF;
  ELSIF rtype <> 'channel' THEN
    RAISE EXCEPTION 'the chat of a channel must be a room of type channel, not %', rtype USING ERRCODE = '22023';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER livechat_rooms_check BEFORE INSERT OR UPDATE ON pod.livechat_rooms
  FOR EACH ROW EXECUTE FUNCTION pod.livechat_rooms_check();

-- The chat room of a local video: per video or per channel, as livechat.room_per says.
CREATE FUNCTION pod.livechat_room(video uuid) RETURNS uuid
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  v pod.videos;
  per text := pod.setting('livechat.room_per') #>> '{}';
  room uuid;
BEGIN
  SELECT * INTO v FROM pod.videos WHERE uuid = video;
  IF NOT FOUND OR v.channel_id IS NULL THEN
    RAISE EXCEPTION 'no local video %', video USING ERRCODE = 'P0002';
  END IF;
  -- Serialise creation per channel so two viewers do not make two rooms.
  PERFORM 1 FROM pod.channels WHERE id = v.channel_id FOR UPDATE;
  IF per = 'video' THEN
    SELECT room_id INTO room FROM pod.livechat_rooms WHERE video_uuid = video;
  ELSE
    SELECT room_id INTO room FROM pod.livechat_rooms WHERE channel_id = v.channel_id AND video_uuid IS NULL;
  END IF;
  IF room IS NULL THEN
    INSERT INTO pod.rooms (name, type, created_by)
      VALUES (CASE per WHEN 'video' THEN v.name ELSE (SELECT display_name FROM pod.channels WHERE id = v.channel_id) END,
              per::pod.room_type,
              (SELECT owner_id FROM pod.channels WHERE id = v.channel_id))
      RETURNING id INTO room;
    INSERT INTO pod.livechat_rooms (room_id, channel_id, video_uuid)
      VALUES (room, v.channel_id, CASE per WHEN 'video' THEN video END);
  END IF;
  RETURN room;
END $$;
COMMENT ON FUNCTION pod.livechat_room(uuid) IS 'The chat room of a local video, created on first use.';

CREATE VIEW pod.room_channel AS
  SELECT room_id, channel_id, video_uuid FROM pod.livechat_rooms;
COMMENT ON VIEW pod.room_channel IS 'room → channel (and video), the seed''s room2channel.';
CREATE FUNCTION pod.channel_rooms(channel bigint) RETURNS SETOF uuid
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  BEGIN ATOMIC
    SELECT room_id FROM pod.livechat_rooms WHERE channel_id = channel ORDER BY created_at;
  END;
COMMENT ON FUNCTION pod.channel_rooms(bigint) IS 'channel → its rooms, the seed''s channel2room.';

-- Channel chat options ------------------------------------------------------------------

-- Words or /regex/ entries in forbidden_words (pod.forbidden_word_check, in
-- 51_livechat_rules.sql with the rules that enforce the options).
CREATE FUNCTION pod.validate_chat_options(options jsonb) RETURNS jsonb
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

CREATE TABLE pod.channel_chat_options (
  channel_id bigint PRIMARY KEY REFERENCES pod.channels ON DELETE CASCADE,
  options jsonb NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.channel_chat_options IS 'Per-channel chat configuration (slow mode, muting anonymous users, forbidden words, moderation delay).';

CREATE FUNCTION pod.channel_chat_options_check() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  NEW.options := pod.validate_chat_options(NEW.options);
  IF TG_OP = 'UPDATE' THEN
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER channel_chat_options_check BEFORE INSERT OR UPDATE ON pod.channel_chat_options
  FOR EACH ROW EXECUTE FUNCTION pod.channel_chat_options_check();

-- Remote pods and their videos' chats ----------------------------------------------------

CREATE TABLE pod.remote_servers (
  host text PRIMARY KEY CHECK (host ~ '^[A-Za-z0-9.-]+(:[0-9]{1,5})?$'),
  protocols jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(protocols) = 'object'),
  last_update timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pod.remote_servers IS 'What we know of a remote pod''s chat: protocols (s2s, ws-s2s) and when we last asked.';

CREATE FUNCTION pod.remote_servers_check() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
DECLARE k text;
BEGIN
  FOR k IN SELECT jsonb_object_keys(NEW.protocols) LOOP
    IF k NOT IN ('s2s', 'ws-s2s') THEN
      RAISE EXCEPTION 'unknown protocol "%" for %', k, NEW.host USING ERRCODE = '22023', HINT = 'Known: s2s, ws-s2s.';
    END IF;
    IF jsonb_typeof(NEW.protocols -> k) <> 'object' THEN
      RAISE EXCEPTION 'protocol "%" needs an object of endpoint information', k USING ERRCODE = '22023';
    END IF;
  END LOOP;
  RETURN NEW;
END $$;
CREATE TRIGGER remote_servers_check BEFORE INSERT OR UPDATE ON pod.remote_servers
  FOR EACH ROW EXECUTE FUNCTION pod.remote_servers_check();

-- True when the server's information is missing or older than the refresh throttle.
CREATE FUNCTION pod.remote_server_needs_refresh(server text) RETURNS boolean
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN coalesce((SELECT last_update FROM pod.remote_servers WHERE host = server)
                    < now() - (pod.setting('livechat.remote_refresh') #>> '{}')::interval, true);

-- Records fresh information; refused (false) while the throttle says it is too soon.
CREATE FUNCTION pod.remote_server_update(server text, new_protocols jsonb, force boolean DEFAULT false) RETURNS boolean
  LANGUAGE plpgsql SET search_path = pg_catalog, pod AS $$
BEGIN
  IF NOT force AND NOT pod.remote_server_needs_refresh(server) THEN
    RETURN false;
  END IF;
  INSERT INTO pod.remote_servers (host, protocols, last_update) VALUES (server, new_protocols, now())
    ON CONFLICT (host) DO UPDATE SET protocols = EXCLUDED.protocols, last_update = EXCLUDED.last_update;
  RETURN true;
END $$;

CREATE TABLE pod.remote_video_chats (
  host text NOT NULL REFERENCES pod.remote_servers ON DELETE CASCADE,
  video_uuid uuid NOT NULL,
  infos jsonb NOT NULL CHECK (jsonb_typeof(infos) = 'object'
                              AND jsonb_typeof(infos -> 'enabled') = 'boolean'
                              AND coalesce(jsonb_typeof(infos -> 'anonymous_allowed'), 'boolean') = 'boolean'
                              AND coalesce(jsonb_typeof(infos -> 'protocols'), 'object') = 'object'),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (host, video_uuid)
);
COMMENT ON TABLE pod.remote_video_chats IS 'Chats of remote videos we opened: enabled, anonymous allowed, protocols to reach them.';

-- What we tell other pods about a local video's chat.
CREATE FUNCTION pod.local_video_chat_infos(video uuid) RETURNS jsonb
  LANGUAGE sql STABLE SET search_path = pg_catalog, pod
  RETURN (SELECT jsonb_build_object(
            'enabled', true,
            'anonymous_allowed', NOT coalesce((o.options ->> 'mute_anonymous')::boolean, false),
            'room', (SELECT room_id FROM pod.livechat_rooms r WHERE r.video_uuid = v.uuid
                     UNION ALL SELECT room_id FROM pod.livechat_rooms r WHERE r.channel_id = v.channel_id AND r.video_uuid IS NULL
                     LIMIT 1))
            FROM pod.videos v LEFT JOIN pod.channel_chat_options o ON o.channel_id = v.channel_id
           WHERE v.uuid = video AND v.origin IS NULL);

-- Removes what no longer points at anything: rooms whose video or channel is gone,
-- remote video chats of remote servers unused past the retention setting, and those
-- servers. Returns what it removed per kind.
CREATE FUNCTION pod.livechat_cleanup(OUT orphan_rooms integer, OUT stale_servers integer, OUT stale_video_chats integer)
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
COMMENT ON FUNCTION pod.livechat_cleanup() IS 'Deletes livechat data whose video, channel or remote server is gone or stale.';

SELECT pg_catalog.pg_extension_config_dump('pod.livechat_rooms', '');
SELECT pg_catalog.pg_extension_config_dump('pod.channel_chat_options', '');
SELECT pg_catalog.pg_extension_config_dump('pod.remote_servers', '');
SELECT pg_catalog.pg_extension_config_dump('pod.remote_video_chats', '');

ALTER TABLE pod.channel_chat_options ENABLE ROW LEVEL SECURITY;
CREATE POLICY chat_options_public ON pod.channel_chat_options FOR SELECT TO pgpod_anon, pgpod_user USING (true);
CREATE POLICY chat_options_owner ON pod.channel_chat_options TO pgpod_user
  USING (pod.owns_channel(channel_id)) WITH CHECK (pod.owns_channel(channel_id));
CREATE POLICY chat_options_admin ON pod.channel_chat_options TO pgpod_admin USING (true) WITH CHECK (true);
GRANT SELECT ON pod.channel_chat_options, pod.livechat_rooms TO pgpod_anon, pgpod_user;
GRANT INSERT, UPDATE, DELETE ON pod.channel_chat_options TO pgpod_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON pod.livechat_rooms, pod.channel_chat_options, pod.remote_servers,
  pod.remote_video_chats TO pgpod_admin;

CREATE VIEW api.channel_chat_options WITH (security_invoker = true) AS
  SELECT channel_id, options, updated_at FROM pod.channel_chat_options;
COMMENT ON VIEW api.channel_chat_options IS 'Chat options per channel; the channel owner edits them.';
GRANT SELECT ON api.channel_chat_options TO pgpod_anon, pgpod_user;
GRANT INSERT, UPDATE, DELETE ON api.channel_chat_options TO pgpod_user;

CREATE FUNCTION api.video_chat_room(video uuid) RETURNS uuid
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod
  RETURN pod.livechat_room(video);
COMMENT ON FUNCTION api.video_chat_room(uuid) IS 'The chat room of a local video (made on first use).';
GRANT EXECUTE ON FUNCTION api.video_chat_room(uuid) TO pgpod_user;
