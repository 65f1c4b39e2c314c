-- 73_video_federation: what friends learn of this pod's videos. Publishing, changing
-- or removing a local published video enqueues one delivery per active friend, from
-- statement-level triggers (one INSERT into the queue, so one NOTIFY, per statement).

-- The federated description of a video (what the seed's index holds).
CREATE FUNCTION pod.video_object(v pod.videos) RETURNS jsonb
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN jsonb_build_object('uuid', v.uuid, 'name', v.name, 'description', v.description,
           'author', coalesce(v.author, (SELECT c.name FROM pod.channels c WHERE c.id = v.channel_id)),
           'magnet', v.magnet, 'thumbnail', v.thumbnail,
           'duration', extract(epoch FROM v.duration), 'created_at', v.created_at, 'updated_at', v.updated_at);

-- Enqueues activity_type for every (video, active friend); one INSERT.
CREATE FUNCTION pod.videos_announce(activity_type text, videos jsonb) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE me text := (SELECT url FROM pod.identity);
BEGIN
  IF me IS NULL OR jsonb_array_length(videos) = 0 THEN
    RETURN;
  END IF;
  INSERT INTO pod.jobs (kind, target, payload)
    SELECT 'deliver', f.url, jsonb_build_object('activity', jsonb_build_object(
             'id', gen_random_uuid(), 'type', activity_type, 'actor', me, 'object', o,
             'published', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
      FROM jsonb_array_elements(videos) o, pod.friends f
     WHERE f.state = 'active';
END $$;

-- The triggers run as the owner: a channel owner's INSERT must be able to enqueue
-- deliveries without any privilege on the queue.
CREATE FUNCTION pod.videos_federate_insert() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.published', coalesce(
    (SELECT jsonb_agg(pod.video_object(n)) FROM new_videos n WHERE n.origin IS NULL AND n.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE FUNCTION pod.videos_federate_update() RETURNS trigger
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
    (SELECT jsonb_agg(jsonb_build_object('uuid', n.uuid)) FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state <> 'published' AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE FUNCTION pod.videos_federate_delete() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.removed', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('uuid', o.uuid)) FROM old_videos o
      WHERE o.origin IS NULL AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE TRIGGER videos_federate_insert AFTER INSERT ON pod.videos
  REFERENCING NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_insert();
CREATE TRIGGER videos_federate_update AFTER UPDATE ON pod.videos
  REFERENCING OLD TABLE AS old_videos NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_update();
CREATE TRIGGER videos_federate_delete AFTER DELETE ON pod.videos
  REFERENCING OLD TABLE AS old_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_delete();
