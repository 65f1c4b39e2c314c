#!/bin/bash
# Real BitTorrent clients find each other through the pod's tracker, and only through
# it (DHT, LSD, PEX, uTP off; the torrent names no tracker and no web seed, each
# client is given the one under test): libtorrent (python3-libtorrent) over HTTP and
# over UDP (BEP 15), and aria2c over HTTP and over UDP (aria2c uses UDP trackers only
# with its DHT on; it has no node to talk to). Each download is byte-identical.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/tracker.sh"
lt_py() { /usr/bin/python3 "$PGPOD_TOP/tests/integration/lib/lt_swarm.py" "$@"; }
dir=$(mktemp -d /tmp/pgpod-trk401.XXXXXX)
base=$PGPOD_HTTP_PORT
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  tracker_fixture_cleanup trk401
  [[ -n ${KEEP_DIR:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 8

hash=$(lt_py make "$dir" 3000000 "$tracker_url")
[[ $hash =~ ^[0-9a-f]{40}$ ]]
ok $? "libtorrent made a 3 MB v1 torrent ($hash)"
tracker_fixture trk401 published "$hash" >/dev/null
q -c "NOTIFY pod_torrents"
wait_for 10 tracker_knows "$hash"
ok $? "the tracker tracks it once published"

r=$(lt_py swarm "$dir" "$tracker_url" $((base + 61)) $((base + 62)) 60)
is "$(jget 'd["finished"], d["identical"], d["peers_from_tracker"] >= 1' <<<"$r")" "(True, True, True)" \
  "libtorrent: a leecher finds the seeder over the HTTP tracker and downloads it byte-identical"
rm -rf "$dir/leech"
r=$(lt_py swarm "$dir" "udp://127.0.0.1:$tracker_port" $((base + 63)) $((base + 64)) 60)
is "$(jget 'd["finished"], d["identical"], d["peers_from_tracker"] >= 1' <<<"$r")" "(True, True, True)" \
  "libtorrent: the same over the UDP tracker (BEP 15)"
rm -rf "$dir/leech"

# aria2c against a libtorrent seeder that announced to the tracker.
/usr/bin/python3 "$PGPOD_TOP/tests/integration/lib/lt_swarm.py" seed "$dir" "$tracker_url" $((base + 65)) >"$dir/seed.log" 2>&1 &
pids+=($!)
wait_for 30 grep -q seeding "$dir/seed.log"
ok $? "a libtorrent seeder announced to the HTTP tracker"
aria() { # aria2c DEST TRACKER [more options]
  local dest=$1 tr=$2; shift 2
  timeout 60 aria2c --dir="$dest" --enable-dht=false --bt-enable-lpd=false --enable-peer-exchange=false \
    --seed-time=0 --listen-port=$((base + 66)) --bt-tracker="$tr" --bt-stop-timeout=50 \
    --summary-interval=0 --console-log-level=warn --allow-overwrite=true "$@" "$dir/video.torrent" >"$dest.log" 2>&1
}
aria "$dir/aria-http" "$tracker_url"
rc=$?
cmp -s "$dir/video.mp4" "$dir/aria-http/video.mp4"
ok $((rc || $?)) "aria2c downloads it through the HTTP tracker, byte-identical"
# Over UDP: the seeder must be in the swarm as seen over UDP too (same peer table).
aria "$dir/aria-udp" "udp://127.0.0.1:$tracker_port" --enable-dht=true --dht-listen-port=$((base + 67)) \
  --dht-file-path="$dir/dht.dat" --bt-tracker-connect-timeout=10
rc=$?
cmp -s "$dir/video.mp4" "$dir/aria-udp/video.mp4"
ok $((rc || $?)) "aria2c downloads it through the UDP tracker (DHT on, no node), byte-identical"
r=$(probe udp-scrape 127.0.0.1 "$tracker_port" "$hash")
ok "$(jget '0 if d["files"][0]["completed"] >= 2 and d["files"][0]["seeders"] >= 1 else 1' <<<"$r")" \
  "UDP scrape: the libtorrent leechers' event=completed counted, the seeder seen $(jget 'd["files"][0]' <<<"$r")"
done_testing
