#!/bin/bash
# The tracker under hostile input, on a tracker of its own (the instance's binary, ASan
# in make check, default rate limit): garbage UDP, forged connection ids, malformed
# and oversized HTTP, bad WebSocket handshakes and frames (oversized, unmasked, not
# JSON, bad info hashes), a flood from one address. Each gets a clear failure; memory
# stays bounded; the tracker keeps answering others and a good announce right after.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/tracker.sh"
H1=4444444444444444444444444444444444444444
port=$((PGPOD_HTTP_PORT + 68))
url=http://127.0.0.1:$port/announce
dir=$(mktemp -d /tmp/pgpod-trk402.XXXXXX)
pid=
cleanup() {
  [[ -n $pid ]] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  tracker_fixture_cleanup trk402
  rm -rf "$dir"
}
trap cleanup EXIT
plan 23

tracker_fixture trk402 published $H1 >/dev/null
PGUSER=pgpod_tracker PGPOD_TRACKER_PORT=$port PGPOD_TRACKER_RATE=100 PGPOD_TRACKER_BURST=200 \
  "${PGPOD_TRACKER_BIN:-$PGPOD_TOP/workers/tracker/pgpod-tracker}" >"$dir/tracker.log" 2>&1 &
pid=$!
wait_for 20 grep -q "tracking [1-9]" "$dir/tracker.log"
ok $? "a tracker of the test's own runs on $port and tracks the fixture"
good() { # a well-formed announce from SOURCE (default 127.0.0.1) is answered with peers
  local r
  r=$(probe announce "$url" $H1 -GOOD-0000000000000$1 $((7100 + $1)) 10 started 1 "${2:-}") || return 1
  [[ $(jget '"complete" in d and "interval" in d' <<<"$r") == True ]]
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
rss0=$(rss)

# UDP
r=$(probe udp-garbage 127.0.0.1 $port 3000)
good 1
ok $? "3000 random UDP packets (and a bad protocol id, a forged announce): a good HTTP announce is answered"
r=$(probe udp-announce 127.0.0.1 $port $H1 -GOOD-00000000000001 7001 0)
is "$(jget 'd["seeders"] >= 1, d["interval"]' <<<"$r")" "(True, 1800)" "and a good UDP announce too"
r=$(probe udp-announce 127.0.0.1 $port $H1 -GOOD-00000000000001 7001 0 0 forged)
is "$r" '{"error": "invalid or expired connection id"}' "a forged UDP connection id: error packet"
r=$(probe udp-announce 127.0.0.1 $port 4444444444444444444444444444444444444449 -GOOD-00000000000001 7001 0)
is "$r" "{\"error\": \"unknown info_hash: this tracker serves only this pod's published files\"}" \
  "an unknown info hash over UDP: error packet with the reason"

# HTTP
r=$(printf 'GARBAGE\r\n\r\n' | probe raw 127.0.0.1 $port)
is "$r" "HTTP/1.1 400 Bad Request" "a malformed request line: 400"
long=$(head -c 20000 /dev/zero | tr '\0' a)
is "$(curl -s -o /dev/null -w '%{http_code}' "$url?x=$long")" 414 "a 20 kB URL: 414"
r=$( (printf 'GET /announce HTTP/1.1\r\n'; for i in $(seq 2000); do printf 'X-Pad-%d: %0100d\r\n' $i 0; done; printf '\r\n') \
  | probe raw 127.0.0.1 $port)
is "$r" "HTTP/1.1 400 Bad Request" "200 kB of headers: 400 (http-parser's header limit)"
r=$(curl -s "$url?info_hash=%44%44&peer_id=-GOOD-00000000000001&port=1&left=0")
is "$r" "d14:failure reason32:invalid info_hash (not 20 bytes)e" "a 2-byte info_hash: failure reason"
r=$(curl -s "$url?info_hash=%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44&peer_id=-GOOD-00000000000001&port=1&left=0")
is "$r" "d14:failure reason32:invalid info_hash (not 20 bytes)e" "a 21-byte info_hash: failure reason"
good 2
ok $? "a good announce right after"

# WebSocket
r=$(probe ws 127.0.0.1 $port oversized)
is "$r" '{"status": 101, "close": 1009, "closed": true}' "a frame announcing 100 MiB: close 1009, connection closed, nothing buffered"
r=$(probe ws 127.0.0.1 $port unmasked)
is "$r" '{"status": 101, "close": 1002, "closed": true}' "an unmasked client frame: close 1002"
is "$(curl -s -o /dev/null -w '%{http_code}' -H 'Upgrade: websocket' -H 'Connection: Upgrade' \
        -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: short' "http://127.0.0.1:$port/announce")" 400 \
  "a WebSocket handshake with a bad key: 400"
r=$(probe ws 127.0.0.1 $port messages '{nope' '{"action":"announce","info_hash":"abc","peer_id":"-WW0001-000000000001"}' \
  '{"action":"announce","info_hash":"DDDDDDDDDDDDDDDDDDDD","peer_id":"short"}' '{"action":"x"}' \
  '{"action":"announce","info_hash":"EEEEEEEEEEEEEEEEEEEE","peer_id":"-WW0001-000000000001","offers":[]}')
is "$(jget '[a.get("failure reason") for a in d["answers"]], d["pong"]' <<<"$r")" \
  "(['invalid JSON message', 'invalid info_hash', 'invalid peer_id', 'invalid action (announce or scrape)', \"unknown info_hash: this tracker serves only this pod's published files\"], True)" \
  "WebSocket: bad JSON, bad info_hash and peer_id, unknown action and hash each get a failure reason; ping still answered"
r=$(probe ws 127.0.0.1 $port announce $H1 -WW0001-000000000001 0)
is "$(jget 'd["action"], d["info_hash"], d["interval"]' <<<"$r")" "('announce', '$H1', 120)" \
  "a good WebSocket announce right after"

# Many connections that send half a request and stay: bounded, others still served.
/usr/bin/python3 - "$port" <<'PY' &
import socket, sys, time
socks = []
for i in range(300):
    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
    s.sendall(b'GET /announce?info_hash=')
    socks.append(s)
time.sleep(4)
PY
slow=$!
sleep_until() { [[ $(ls /proc/$pid/fd | wc -l) -gt 250 ]]; }
wait_for 10 sleep_until
good 3
ok $? "300 idle half-requests open: a good announce is still answered"
wait "$slow"

# A flood from one address: refused past its budget; another address is served.
r=$(probe http-flood "$url?info_hash=%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44%44&peer_id=-FLOOD-00000000000001&port=9&left=5" 3000)
is "$(jget 'd["answers"], d["refused"] >= 2500' <<<"$r")" "(3000, True)" \
  "3000 pipelined announces from one address: all answered, most ($(jget 'd["refused"]' <<<"$r")) with the failure reason 'too many requests from your address; slow down'"
good 4 127.0.0.2
ok $? "meanwhile another address (127.0.0.2) is answered"
for i in $(seq 30); do
  r=$(probe announce "$url" $H1 -GOOD-00000000000006 7106 10 started)
  [[ $(jget '"complete" in d' <<<"$r") == True ]] && break
  sleep 0.2
done
is "$(jget '"complete" in d' <<<"$r")" True "the flooding address is served again once its budget refills"

rss1=$(rss)
ok $(( rss1 - rss0 < 65536 ? 0 : 1 )) "resident memory grew by $(( (rss1 - rss0) / 1024 )) MiB over all this (< 64 MiB)"
kill -0 $pid
ok $? "the tracker is still running"
kill -TERM $pid; wait $pid; rc=$?; pid=
is "$rc" 0 "SIGTERM: it exits cleanly (0)"
done_testing
