#!/bin/bash
# WebTorrent in a real browser against the pod's WebSocket tracker: headless Chromium
# (Debian's, driven by puppeteer-core) loads WebTorrent's browser bundle; page A
# downloads a published file through the WebSocket tracker + the gateway's WebSeed
# (/files/<id>), page B joins the same swarm without a WebSeed and receives every
# piece from page A over WebRTC, connected by the tracker's relay of offers/answers.
# Chromium gathers no WebRTC candidates on loopback alone, so everything runs in a
# network namespace made here (a veth pair whose addresses exist only inside it,
# nothing routed out), with a gateway and a tracker of its own on the instance's
# database (through its unix socket) and blob store.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/tracker.sh"
js=$PGPOD_TOP/tests/js/tracker
dir=$(mktemp -d /tmp/pgpod-trk403.XXXXXX); chmod 755 "$dir"
ns=pgpod-trk403-$$
gw_port=$((PGPOD_HTTP_PORT + 69))
tr_port=$((PGPOD_HTTP_PORT + 70))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  tracker_fixture_cleanup trk403
  [[ -n ${KEEP_DIR:-} ]] || rm -rf "$dir"; rm -rf /tmp/pgpod-chromium-*
}
trap cleanup EXIT
plan 12
# Inside the namespace. nsenter, not `ip netns exec` / `ip -n`: those also remount /
# (mount --make-rslave), which a chroot may refuse; only the network is needed here.
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }

(cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1)
ok $? "npm ci in tests/js/tracker (webtorrent, puppeteer-core, create-torrent)"

ip netns add "$ns" && in_ns ip link set lo up &&
  in_ns ip link add trk403a type veth peer name trk403b &&
  in_ns ip addr add 10.203.0.1/24 dev trk403a && in_ns ip addr add 10.203.0.2/24 dev trk403b &&
  in_ns ip link set trk403a up && in_ns ip link set trk403b up &&
  in_ns ip route add default via 10.203.0.2 dev trk403a
ok $? "network namespace $ns with a veth pair (10.203.0.1, 10.203.0.2)"
# Chromium picks its WebRTC interfaces by the default route: one that leads only to
# the pair's other end, inside the namespace (which forwards nothing), so no packet
# can leave.
is "$(in_ns ip route get 1.1.1.1 | grep -o 'dev [a-z0-9]*') $(in_ns cat /proc/sys/net/ipv4/ip_forward)" "dev trk403a 0" \
  "its default route leads to the veth pair's other end, which forwards nothing (ip_forward 0)"

# A published file: bytes in the instance's blob store, rows by SQL, a torrent over it.
head -c 3000000 /dev/urandom >"$dir/video.mp4"
sha=$(sha256sum "$dir/video.mp4" | cut -c1-64)
store=${PGPOD_STORE_DIR:-$PGPOD_DIR/store}
mkdir -p "$store/blobs/${sha:0:2}" && cp "$dir/video.mp4" "$store/blobs/${sha:0:2}/$sha"
node "$js/webtorrent.test.mjs" make "$dir/video.mp4" "ws://127.0.0.1:$tr_port" "$dir/video.torrent"
hash=$(/usr/bin/python3 -c "import libtorrent as lt, sys; print(lt.torrent_info(sys.argv[1]).info_hashes().v1)" "$dir/video.torrent")
[[ $hash =~ ^[0-9a-f]{40}$ ]]
ok $? "create-torrent made the torrent (info hash $hash)"
q -c "SET pgpod.password_memlimit = '8MB'; SELECT pod.register('trk403@tracker.test', 'webtorrent in chromium')" >/dev/null
file_id=$(tracker_fixture trk403 published "$hash" "$sha" 3000000)
token=$(q -c "SELECT token FROM pod.login('trk403@tracker.test', 'webtorrent in chromium')")
webseed="http://127.0.0.1:$gw_port/files/$file_id?access_token=$token"

# The namespace's gateway and tracker (the instance's builds), on the instance's socket.
nsenter --net="/run/netns/$ns" env PGPOD_HTTP_PORT=$gw_port PGPOD_GATEWAY_WORKERS=1 PGPOD_STORE_DIR="$store" PGUSER=pgpod_authenticator \
  "${PGPOD_GATEWAY_BIN:-$PGPOD_TOP/gateway/pgpod-gateway}" >"$dir/gateway.log" 2>&1 &
pids+=($!)
nsenter --net="/run/netns/$ns" env PGPOD_TRACKER_PORT=$tr_port PGUSER=pgpod_tracker PGPOD_LOG_LEVEL=debug \
  "${PGPOD_TRACKER_BIN:-$PGPOD_TOP/workers/tracker/pgpod-tracker}" >"$dir/tracker.log" 2>&1 &
tracker_pid=$!; pids+=($tracker_pid)
wait_for 20 grep -q "tracking [1-9]" "$dir/tracker.log"
ok $? "the namespace's tracker tracks the published file"
gw_ok() { in_ns curl -sf -o /dev/null -r 0-99 "$webseed"; }
wait_for 30 gw_ok
ok $? "the namespace's gateway serves the file (the WebSeed) at /files/<id>"

r=$(in_ns timeout 170 node "$js/webtorrent.test.mjs" run "http://127.0.0.1:$gw_port" "$dir/video.torrent" "$webseed" 2>"$dir/node.log")
# What the pages saw, when page B did not get the file over WebRTC (diagnosis).
[[ $(jget 'd["b"]["done"] and [w["type"] for w in d["b"]["wires"]] == ["webrtc"]' <<<"$r" 2>/dev/null) == True ]] ||
  { echo "$r" | head -c 3000 | sed 's/^/# /'; echo; tail -5 "$dir/node.log" | sed 's/^/# /'; } >&2
is "$(jget 'd["a"]["done"], d["a"]["sha256"] == "'$sha'", d["a"]["infoHash"]' <<<"$r")" "(True, True, '$hash')" \
  "page A: WebTorrent downloads the file through the WebSocket tracker + WebSeed, byte-identical (sha256)"
is "$(jget 'd["b"]["done"], d["b"]["sha256"] == "'$sha'", d["b"]["length"]' <<<"$r")" "(True, True, 3000000)" \
  "page B (no WebSeed): downloads it too, byte-identical"
is "$(jget 'sorted(set(w["type"] for w in d["b"]["wires"]))' <<<"$r")" "['webrtc']" \
  "page B's only peers are WebRTC peers"
is "$(jget 'sum(w["downloaded"] for w in d["b"]["wires"]) >= 3000000 and d["a_uploaded"] >= 3000000' <<<"$r")" True \
  "every byte page B has came from page A over WebRTC (A uploaded $(jget 'd["a_uploaded"]' <<<"$r") bytes)"

kill -TERM $tracker_pid; wait $tracker_pid
relayed=$(grep -o 'relayed [0-9]* offers, [0-9]* answers' "$dir/tracker.log")
[[ $relayed =~ relayed\ ([0-9]+)\ offers,\ ([0-9]+)\ answers ]] && ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[2] >= 1))
ok $? "the tracker relayed offers and answers between the pages ($relayed)"
is "$(cat "$dir/tracker.log" "$dir/gateway.log" | grep -c 'ERROR: AddressSanitizer')" 0 \
  "no sanitizer report from the namespace's tracker and gateway"
done_testing
