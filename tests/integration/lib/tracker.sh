# tracker.sh — helpers of the tracker tests (sourced after tap.sh): the instance's
# tracker, and SQL fixtures of published files with given info hashes.
tracker_port=${PGPOD_TRACKER_PORT:?}
tracker_url=http://127.0.0.1:$tracker_port/announce
probe() { /usr/bin/python3 "$PGPOD_TOP/tests/integration/lib/tracker_probe.py" "$@"; }
jget() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }

# tracker_fixture TAG STATE HASH_HEX [SHA256_HEX SIZE]: a user, channel and video in STATE
# with one file whose info hash is HASH_HEX; prints the file id.
tracker_fixture() {
  local tag=$1 state=$2 hash=$3 sha=${4:-$(printf '%s' "$1" | sha256sum | cut -c1-64)} size=${5:-1000}
  q -c "INSERT INTO pod.blobs (sha256, size) VALUES ('\\x$sha', $size) ON CONFLICT DO NOTHING" >/dev/null
  q -c "
    WITH u AS (INSERT INTO pod.users (email, pass_hash) VALUES ('$tag@tracker.test', '\$argon2id\$fixture')
               ON CONFLICT DO NOTHING RETURNING id),
         uu AS (SELECT id FROM u UNION ALL SELECT id FROM pod.users WHERE lower(email) = '$tag@tracker.test'),
         c AS (INSERT INTO pod.channels (owner_id, name, display_name) SELECT id, '$tag', '$tag' FROM uu LIMIT 1 RETURNING id, owner_id),
         v AS (INSERT INTO pod.videos (channel_id, name, state) SELECT id, '$tag', '$state' FROM c RETURNING uuid),
         f AS (INSERT INTO pod.files (owner_id, filename_visible, sha256, size, mime_type)
               SELECT owner_id, '$tag.mp4', '\\x$sha', $size, 'video/mp4' FROM c RETURNING id)
    INSERT INTO pod.video_files (video_uuid, resolution, file_id, info_hash)
      SELECT v.uuid, 720, f.id, '\\x$hash' FROM v, f RETURNING file_id" | head -1
}
tracker_fixture_cleanup() { # TAG...
  local t
  for t in "$@"; do
    q -c "DELETE FROM pod.channels WHERE name = '$t'; DELETE FROM pod.users WHERE lower(email) = '$t@tracker.test'" >/dev/null 2>&1
  done
}
# Waits until the tracker knows HASH (after a NOTIFY the test sends).
tracker_knows() { probe scrape "$tracker_url" "$1" | grep -q "\"$1\""; }
