#!/bin/bash
# Tracker speed beside Debian's opentracker measured in the same run, same load:
#  1. HTTP announces per second: compact, numwant 50, into a swarm of 50,000 peers
#     (BENCH_PEERS), wrk (BENCH_CONNECTIONS 32, 2 threads) with a Lua script that
#     varies peer id and port (tests/bench/tracker_announce.lua);
#  2. UDP announces per second (BEP 15), the same swarm, a small C load generator
#     (tests/bench/udp_announce.c: one socket, BENCH_UDP_WINDOW 64 in flight).
# opentracker answers each HTTP request and closes the connection (wrk reconnects);
# pgpod's tracker keeps connections alive: that is part of what is measured.
# Both trackers track the one info hash (opentracker from a whitelist, as Debian builds
# it; pgpod's from the database) and are filled with the same 50,000 peers over UDP
# first. pgpod's tracker runs without its per-address rate limit here
# (PGPOD_TRACKER_RATE=0): every request comes from 127.0.0.1. Rounds alternate
# (BENCH_ROUNDS 3 of BENCH_SECONDS 5); best and median are printed.
set -euo pipefail
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
base=${PGPOD_HTTP_PORT:-28280}
pg_tr_port=$((base + 50)); ot_port=$((base + 51))
peers=${BENCH_PEERS:-50000}; conns=${BENCH_CONNECTIONS:-32}
rounds=${BENCH_ROUNDS:-3}; secs=${BENCH_SECONDS:-5}; window=${BENCH_UDP_WINDOW:-64}
hash=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a
work=$(mktemp -d); chmod 755 "$work"
pids=()
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  q -c "DELETE FROM pod.channels WHERE name = 'trkbench'; DELETE FROM pod.users WHERE email = 'trkbench@tracker.test'" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
command -v opentracker >/dev/null || { echo "opentracker is not installed (deps.txt)"; exit 1; }
cc -O2 -Wall -Wextra -Werror -o "$work/udp_announce" "$top/tests/bench/udp_announce.c"

# pgpod's tracker (the release build) with the info hash published.
q -c "INSERT INTO pod.blobs (sha256, size) VALUES (sha256('trkbench'), 1) ON CONFLICT DO NOTHING" >/dev/null
q -c "WITH u AS (INSERT INTO pod.users (email, pass_hash) VALUES ('trkbench@tracker.test', '\$argon2id\$bench') RETURNING id),
           c AS (INSERT INTO pod.channels (owner_id, name, display_name) SELECT id, 'trkbench', 'bench' FROM u RETURNING id, owner_id),
           v AS (INSERT INTO pod.videos (channel_id, name, state) SELECT id, 'bench', 'published' FROM c RETURNING uuid),
           f AS (INSERT INTO pod.files (owner_id, filename_visible, sha256, size) SELECT owner_id, 'bench', sha256('trkbench'), 1 FROM c RETURNING id)
      INSERT INTO pod.video_files (video_uuid, resolution, file_id, info_hash) SELECT v.uuid, 720, f.id, '\\x$hash' FROM v, f" >/dev/null
PGUSER=pgpod_tracker PGPOD_TRACKER_PORT=$pg_tr_port PGPOD_TRACKER_ADDRESS=127.0.0.1 PGPOD_TRACKER_RATE=0 \
  "$top/workers/tracker/pgpod-tracker" >"$work/pgpod-tracker.log" 2>&1 &
pg_pid=$!; pids+=($pg_pid)
# opentracker, whitelisting the same hash.
echo "$hash" >"$work/whitelist"
(cd "$work" && exec opentracker -i 127.0.0.1 -p $ot_port -P $ot_port -w whitelist -u nobody -d "$work") >"$work/opentracker.log" 2>&1 &
ot_pid=$!; pids+=($ot_pid)
esc=$(echo "$hash" | sed 's/../%&/g')
ready() { curl -sf "http://127.0.0.1:$1/announce?info_hash=$esc&peer_id=-BN0001-000000000000&port=1&left=1&compact=1" | grep -q 5:peers; }
for i in $(seq 100); do ready $pg_tr_port && ready $ot_port && break; sleep 0.1; done
ready $pg_tr_port || { echo "pgpod's tracker is not answering: $(tail -3 "$work/pgpod-tracker.log")"; exit 1; }
ready $ot_port || { echo "opentracker is not answering: $(tail -3 "$work/opentracker.log")"; exit 1; }

for port in $pg_tr_port $ot_port; do
  got=$("$work/udp_announce" 127.0.0.1 $port $hash fill "$peers" 64)
  echo "  filled the swarm on port $port: $got of $peers announces answered"
done
swarm() { curl -s "http://127.0.0.1:$1/scrape?info_hash=$esc" | grep -o '10:incompletei[0-9]*' | grep -o '[0-9]*$'; }
echo "  swarm sizes (scrape, incomplete): pgpod $(swarm $pg_tr_port), opentracker $(swarm $ot_port)"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
http_round() { # PORT -> requests/s
  BENCH_HASH=$esc BENCH_PORTS=$peers wrk -t2 -c"$conns" -d"${secs}s" -s "$top/tests/bench/tracker_announce.lua" \
    "http://127.0.0.1:$1/announce" | awk '/Requests\/sec/ {printf "%d", $2}'
}
udp_round() { "$work/udp_announce" 127.0.0.1 "$1" $hash bench "$secs" "$window" "$peers"; }
declare -A res
for ((r = 1; r <= rounds; r++)); do
  for t in pgpod:$pg_tr_port:$pg_pid opentracker:$ot_port:$ot_pid; do
    IFS=: read -r name port pid <<<"$t"
    c0=$(cpu "$pid"); h=$(http_round "$port"); c1=$(cpu "$pid")
    res[$name-http]+="$h "; res[$name-httpcpu]+="$(echo "scale=2; ($c1 - $c0) * 10000 / ($h * $secs + 1)" | bc) "
    c0=$(cpu "$pid"); u=$(udp_round "$port"); c1=$(cpu "$pid")
    res[$name-udp]+="$u "; res[$name-udpcpu]+="$(echo "scale=2; ($c1 - $c0) * 10000 / ($u * $secs + 1)" | bc) "
  done
done
best() { tr ' ' '\n' | grep . | sort -g | tail -1; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
for kind in http udp; do
  pb=$(best <<<"${res[pgpod-$kind]}"); pm=$(median <<<"${res[pgpod-$kind]}")
  ob=$(best <<<"${res[opentracker-$kind]}"); om=$(median <<<"${res[opentracker-$kind]}")
  label=$([[ $kind == http ]] && echo "HTTP announces (wrk, $conns connections)" || echo "UDP announces ($window in flight)")
  printf '  %s, %d-peer swarm: pgpod %d / %d per s (best / median), opentracker %d / %d; ratio %sx / %sx (goal >= 1.0)\n' \
    "$label" "$peers" "$pb" "$pm" "$ob" "$om" "$(ratio "$pb" "$ob")" "$(ratio "$pm" "$om")"
  printf '    CPU per announce (median, user + system of the tracker process): pgpod %s us, opentracker %s us\n' \
    "$(median <<<"${res[pgpod-${kind}cpu]}")" "$(median <<<"${res[opentracker-${kind}cpu]}")"
done
