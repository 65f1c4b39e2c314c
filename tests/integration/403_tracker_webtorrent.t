#!/bin/bash
# WebTorrent in a real browser against the pod: a file is published by SQL, the
# seeder stores its .torrent (announce-list with the pod's ws:// tracker, url-list the
# gateway's /files/<id>); headless Chromium (Debian's, driven by puppeteer-core) loads
# WebTorrent's browser bundle. Page A adds the .torrent served by the gateway and
# downloads through the WebSocket tracker + the WebSeed; page B adds a magnet link that
# names only the WebSocket tracker, so the metadata and every piece come from page A
# over WebRTC, connected by the tracker's relay of offers and answers.
# Chromium gathers no WebRTC candidates on loopback alone, so the browser runs in a
# network namespace made here (a veth pair whose addresses exist only inside it; its
# default route leads to the pair's other end, which forwards nothing), with a gateway
# and a tracker of its own on the instance's ports (inside the namespace they are free)
# over the instance's database (its unix socket) and blob store.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/tracker.sh"
. "$(dirname "$0")/lib/torrents.bash"
js=$PGPOD_TOP/tests/js/tracker
dir=$(mktemp -d /tmp/pgpod-trk403.XXXXXX); chmod 755 "$dir"
ns=pgpod-trk403-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  # `ip netns add` made /run/netns a mount point; the last namespace gone, take it away
  if mountpoint -q /run/netns && [[ -z $(ls -A /run/netns 2>/dev/null) ]]; then
    umount /run/netns 2>/dev/null && rmdir /run/netns 2>/dev/null
  fi
  [[ -n ${vuuid:-} ]] && q -c "DELETE FROM pod.videos WHERE uuid = '$vuuid'" >/dev/null 2>&1
  [[ -n ${KEEP_DIR:-} ]] || rm -rf "$dir"; rm -rf /tmp/pgpod-chromium-*
}
trap cleanup EXIT
plan 14
# Inside the namespace. nsenter, not `ip netns exec` / `ip -n`: those also remount /
# (mount --make-rslave), which a chroot may refuse; only the network is needed here.
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }

(cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1)
ok $? "npm ci in tests/js/tracker (webtorrent, puppeteer-core)"

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

# A published file and the torrent the seeder makes of it.
head -c 3000000 /dev/urandom >"$dir/video.mp4"
sha=$(sha256sum "$dir/video.mp4" | cut -c1-64)
read -r vuuid vfid fid <<<"$(publish_file "$dir/video.mp4" trk403.mp4 720 "$sha")"
hash=$(wait_torrent "$vfid" 60)
[[ $hash =~ ^[0-9a-f]{40}$ ]]
ok $? "the seeder stored the published file's torrent (info hash $hash)"
ws_url="ws://127.0.0.1:$tracker_port"
magnet=$(q -c "SELECT magnet FROM pod.video_files WHERE id = $vfid")
is "$(/usr/bin/python3 -c 'import sys, urllib.parse as u; print(sys.argv[2] in u.parse_qs(u.urlsplit(sys.argv[1]).query).get("tr", []))' "$magnet" "$ws_url")" True \
  "its magnet names the WebSocket tracker ($ws_url)"
# Page B's magnet: the info hash and the WebSocket tracker, nothing else (no ws=).
magnet_b="magnet:?xt=urn:btih:$hash&tr=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$ws_url")"

# The namespace's gateway and tracker (the instance's builds) on the instance's ports.
nsenter --net="/run/netns/$ns" env PGPOD_HTTP_PORT=$PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS=1 PGPOD_STORE_DIR="$store" \
  PGUSER=pgpod_authenticator "${PGPOD_GATEWAY_BIN:-$PGPOD_TOP/gateway/pgpod-gateway}" >"$dir/gateway.log" 2>&1 &
pids+=($!)
nsenter --net="/run/netns/$ns" env PGPOD_TRACKER_PORT=$tracker_port PGUSER=pgpod_tracker PGPOD_LOG_LEVEL=debug \
  "${PGPOD_TRACKER_BIN:-$PGPOD_TOP/workers/tracker/pgpod-tracker}" >"$dir/tracker.log" 2>&1 &
tracker_pid=$!; pids+=($tracker_pid)
wait_for 20 grep -q "tracking [1-9]" "$dir/tracker.log"
ok $? "the namespace's tracker tracks the published file"
origin=http://127.0.0.1:$PGPOD_HTTP_PORT
torrent_ok() { in_ns curl -sf -o "$dir/video.torrent" "$origin/torrents/$hash.torrent"; }
wait_for 30 torrent_ok
ok $? "the namespace's gateway serves the .torrent (/torrents/<info hash>.torrent)"
is "$(in_ns curl -s -o /dev/null -w '%{http_code}' -r 0-99 "$origin/files/$fid")" 206 \
  "and the file, anonymously (the WebSeed, /files/<id>)"

r=$(in_ns timeout 170 node "$js/webtorrent.test.mjs" run "$origin" "$dir/video.torrent" "$magnet_b" 2>"$dir/node.log")
# What the pages saw, when page B did not get the file over WebRTC (diagnosis).
[[ $(jget 'd["b"]["done"] and [w["type"] for w in d["b"]["wires"]] == ["webrtc"]' <<<"$r" 2>/dev/null) == True ]] ||
  { echo "$r" | head -c 3000 | sed 's/^/# /'; echo; tail -5 "$dir/node.log" | sed 's/^/# /'; } >&2
is "$(jget 'd["a"]["done"], d["a"]["sha256"] == "'$sha'", d["a"]["infoHash"], "webSeed" in [w["type"] for w in d["a"]["wires"]]' <<<"$r")" \
  "(True, True, '$hash', True)" \
  "page A: WebTorrent downloads the file from the pod's .torrent (WebSocket tracker + WebSeed), byte-identical (sha256)"
is "$(jget 'd["b"]["done"], d["b"]["sha256"] == "'$sha'", d["b"]["length"]' <<<"$r")" "(True, True, 3000000)" \
  "page B (a magnet with the WebSocket tracker only): gets the metadata and the file, byte-identical"
is "$(jget 'sorted(set(w["type"] for w in d["b"]["wires"])), d["b"]["urlList"]' <<<"$r")" "(['webrtc'], [])" \
  "page B's only peers are WebRTC peers (and it knows no WebSeed)"
is "$(jget 'sum(w["downloaded"] for w in d["b"]["wires"]) >= 3000000 and d["a_uploaded"] >= 3000000' <<<"$r")" True \
  "every byte page B has came from page A over WebRTC (A uploaded $(jget 'd["a_uploaded"]' <<<"$r") bytes)"

kill -TERM $tracker_pid; wait $tracker_pid
relayed=$(grep -o 'relayed [0-9]* offers, [0-9]* answers' "$dir/tracker.log")
[[ $relayed =~ relayed\ ([0-9]+)\ offers,\ ([0-9]+)\ answers ]] && ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[2] >= 1))
ok $? "the tracker relayed offers and answers between the pages ($relayed)"
is "$(cat "$dir/tracker.log" "$dir/gateway.log" | grep -c 'ERROR: AddressSanitizer')" 0 \
  "no sanitizer report from the namespace's tracker and gateway"
done_testing
