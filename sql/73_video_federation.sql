-- 73_video_federation: what friends learn of this pod's videos. Publishing, changing
-- or removing a local published video enqueues one delivery per active friend, from
-- statement-level triggers (one INSERT into the queue, so one NOTIFY, per statement).

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
    (SELECT jsonb_agg(jsonb_build_object('uuid', n.uuid, 'version', n.version, 'updated_at', n.updated_at))
       FROM new_videos n JOIN old_videos o USING (uuid)
      WHERE n.origin IS NULL AND n.state <> 'published' AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE FUNCTION pod.videos_federate_delete() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  PERFORM pod.videos_announce('video.removed', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('uuid', o.uuid, 'version', o.version + 1,
                                         'updated_at', greatest(clock_timestamp(), o.updated_at + interval '1 microsecond')))
       FROM old_videos o
      WHERE o.origin IS NULL AND o.state = 'published'), '[]'));
  RETURN NULL;
END $$;

CREATE TRIGGER videos_federate_insert AFTER INSERT ON pod.videos
  REFERENCING NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_insert();
CREATE TRIGGER videos_federate_update AFTER UPDATE ON pod.videos
  REFERENCING OLD TABLE AS old_videos NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_update();
CREATE TRIGGER videos_federate_delete AFTER DELETE ON pod.videos
  REFERENCING OLD TABLE AS old_videos FOR EACH STATEMENT EXECUTE FUNCTION pod.videos_federate_delete();
