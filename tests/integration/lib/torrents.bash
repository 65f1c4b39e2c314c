# torrents.bash — helpers for the torrent and seeder tests (sourced after tap.sh):
# publishing a local file as a video straight in SQL (the way the video pipeline
# will: blob in the store, pod.files row, a video with its video_files row, state
# published in one transaction), waiting for its torrent, and the ports a test may use.
store=${PGPOD_STORE_DIR:-$PGPOD_DIR/store}
peer_port=${PGPOD_PEER_PORT:?the seeder tests need PGPOD_PEER_PORT (tests/check sets it)}
tracker_port=${PGPOD_TRACKER_PORT:?the seeder tests need PGPOD_TRACKER_PORT (tests/check sets it)}
# Ports of the test's own clients: base + 62..68 (tests/check gives the tracker +60,
# the seeder +71; 340's pods use +61..+63 and +69 while it runs).
client_port() { echo $((PGPOD_HTTP_PORT + 61 + $1)); }

# The owner of the test videos (a user and a channel), made once.
torrent_channel() {
  q -c "WITH u AS (SELECT id FROM pod.users WHERE email = 'torrents@test.example'
                   UNION ALL SELECT id FROM pod.register('torrents@test.example', 'torrent tests password')
                   WHERE NOT EXISTS (SELECT 1 FROM pod.users WHERE email = 'torrents@test.example') LIMIT 1)
        INSERT INTO pod.channels (owner_id, name, display_name) SELECT id, 'torrent_tests', 'Torrent tests' FROM u
        ON CONFLICT (name) DO UPDATE SET display_name = EXCLUDED.display_name RETURNING id"
}

# publish_file PATH NAME RESOLUTION [SHA256]: stores PATH as a blob and publishes it
# as a one-file video; prints "video_uuid video_file_id file_id". SHA256 (hex) saves
# hashing a file whose digest the caller knows.
publish_file() {
  local path=$1 name=$2 res=$3 hex=${4:-} size ch
  [[ -n $hex ]] || hex=$(sha256sum "$path" | cut -c1-64)
  size=$(stat -c %s "$path")
  mkdir -p "$store/blobs/${hex:0:2}"
  [[ -f $store/blobs/${hex:0:2}/$hex ]] || ln "$path" "$store/blobs/${hex:0:2}/$hex" 2>/dev/null \
    || cp "$path" "$store/blobs/${hex:0:2}/$hex"
  ch=$(torrent_channel)
  q -v ON_ERROR_STOP=1 <<SQL | tail -1
BEGIN;
INSERT INTO pod.blobs (sha256, size) VALUES (decode('$hex', 'hex'), $size) ON CONFLICT DO NOTHING;
WITH f AS (INSERT INTO pod.files (owner_id, filename_visible, sha256, size, mime_type)
             SELECT owner_id, '$name', decode('$hex', 'hex'), $size, 'video/mp4' FROM pod.channels WHERE id = $ch
           RETURNING id),
     v AS (INSERT INTO pod.videos (channel_id, name) VALUES ($ch, '$name') RETURNING uuid),
     vf AS (INSERT INTO pod.video_files (video_uuid, resolution, file_id) SELECT v.uuid, $res, f.id FROM v, f
            RETURNING video_uuid, id, file_id)
  SELECT video_uuid || ' ' || id || ' ' || file_id AS r FROM vf \gset
UPDATE pod.videos SET state = 'published' WHERE uuid = split_part(:'r', ' ', 1)::uuid;
COMMIT;
SELECT :'r';
SQL
}

# wait_torrent VIDEO_FILE_ID [SECONDS]: until the file's torrent is stored; prints
# the info hash in hex.
wait_torrent() {
  local i
  for ((i = 0; i < ${2:-60} * 10; i++)); do
    local h
    h=$(q -c "SELECT encode(info_hash, 'hex') FROM pod.video_files WHERE id = $1")
    [[ -n $h ]] && { echo "$h"; return 0; }
    sleep 0.1
  done
  return 1
}

# A BitTorrent handshake for an info hash, sent to the seeder; prints what came back
# as hex (empty when the seeder closed the connection).
bt_handshake() {
  /usr/bin/python3 - "$1" "$peer_port" <<'PY'
import socket, sys
h = bytes.fromhex(sys.argv[1]); s = socket.create_connection(("127.0.0.1", int(sys.argv[2])), 5)
s.sendall(b"\x13BitTorrent protocol" + bytes(8) + h + b"-TS0001-123456789012")
s.settimeout(5); data = b""
try:
    while len(data) < 68:
        k = s.recv(68 - len(data))
        if not k: break
        data += k
except OSError: pass
print(data.hex())
PY
}

# seeded_swarm INFO_HASH_HEX: true once the pod's tracker counts a seeder for it (the
# seeder's announce went through), by a BEP 48 scrape.
seeded_swarm() {
  local enc
  enc=$(sed 's/../%&/g' <<<"$1")
  curl -s "http://127.0.0.1:$tracker_port/scrape?info_hash=$enc" | grep -aq '8:completei[1-9]'
}
