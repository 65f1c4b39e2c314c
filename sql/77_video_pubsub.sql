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
