#!/bin/bash
# SSE fan-out: SSE_SUBSCRIBERS (1000) streams of one room while pgbench posts
# SSE_RATE (100) messages/s into it for SSE_SECONDS (30, as issue 16 asks) s; every event carries
# the time it was written (clock_timestamp()), the C client (sse_load.c) takes the
# delivery latency of each event on each stream. The goal: p99 <= 50 ms on 2
# cores. The reference, same run: the same posting with one subscriber. Also the
# gateway's CPU (user + system, all its processes) per delivered event.
set -euo pipefail
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/bench/lib.bash"
subs=${SSE_SUBSCRIBERS:-1000}; rate=${SSE_RATE:-100}; secs=${SSE_SECONDS:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cc -O2 -Wall -Wextra -Werror -o "$work/sse_load" "$top/tests/bench/sse_load.c"
host=127.0.0.1; port=${PGPOD_HTTP_PORT:-8080}
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET pgpod.password_memlimit = '8MB';
DELETE FROM pod.rooms WHERE name = 'bench sse';
DELETE FROM pod.users WHERE email = 'bench-sse@bench.test';
SELECT pod.register('bench-sse@bench.test', 'bench password');
SQL
token=$(curl -s -X POST "http://$host:$port/rpc/login" -H 'Content-Type: application/json' \
  -d '{"email":"bench-sse@bench.test","password":"bench password"}' | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
[[ -n $token ]] || { echo "sse: cannot log in" >&2; exit 1; }
room=$(curl -s -X POST "http://$host:$port/rooms" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -H 'Prefer: return=representation' -d '{"name":"bench sse","type":"group"}' | sed -n 's/.*"id" *: *"\([^"]*\)".*/\1/p')
[[ -n $room ]] || { echo "sse: cannot make a room" >&2; exit 1; }
claims=$(psql -X -At -c "SELECT json_build_object('role','pgpod_user','sub',u.id,'sid',s.id)::text
  FROM pod.users u JOIN pod.sessions s ON s.user_id = u.id WHERE u.email = 'bench-sse@bench.test' ORDER BY s.created_at DESC LIMIT 1")
post_sql() { # post_sql TEXT: one message, its write time in "t"
  cat <<SQL
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO pod.messages (room_id, data) VALUES ('$room', jsonb_build_object('text', '$1', 't', extract(epoch FROM clock_timestamp())));
COMMIT;
SQL
}
post_sql bench >"$work/post.sql"
gw_pid=$(cat "$PGPOD_DIR/run/gateway.pid")
hz=$(getconf CLK_TCK)

# run N: N streams, SSE_RATE messages/s for secs s, then "end"; prints the client's line
# and "cpu_ticks events" of the gateway over the posting
run() {
  local n=$1 out=$work/load.$1
  "$work/sse_load" "$host" "$port" "$room" "$token" "$n" $((secs + 60)) >"$out" 2>"$work/load.$n.err" &
  local load=$!
  local i
  for ((i = 0; i < 600; i++)); do grep -q ready "$out" 2>/dev/null && break; kill -0 $load 2>/dev/null || break; sleep 0.1; done
  grep -q ready "$out" || { echo "sse: the $n streams did not open: $(cat "$work/load.$n.err")" >&2; exit 1; }
  local g0; g0=$(cpu_ticks "$gw_pid")
  pgbench -n -c 4 -j 2 -R "$rate" -T "$secs" -f "$work/post.sql" >"$work/pgbench.$n" 2>&1 \
    || { echo "sse: pgbench failed" >&2; cat "$work/pgbench.$n" >&2; exit 1; }
  post_sql end | psql -X -q >/dev/null
  wait $load || { echo "sse: the client saw lost, duplicate or missing events: $(tail -1 "$out") $(cat "$work/load.$n.err")" >&2; exit 1; }
  local g1; g1=$(cpu_ticks "$gw_pid")
  echo "$(tail -1 "$out") gw_ticks $((g1 - g0))"
}
field() { awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' <<<"$1"; }
ref=$(run 1)
full=$(run "$subs")
msgs=$(field "$full" events); msgs=$((msgs / subs))
printf 'SSE fan-out, one room, %s messages/s for %s s (%s messages):\n' "$rate" "$secs" "$msgs"
printf '  reference, 1 subscriber:  p50 %s ms, p99 %s ms, max %s ms\n' "$(field "$ref" p50_ms)" "$(field "$ref" p99_ms)" "$(field "$ref" max_ms)"
printf '  %s subscribers:         p50 %s ms, p99 %s ms, max %s ms (%s events delivered, none lost or repeated)\n' \
  "$subs" "$(field "$full" p50_ms)" "$(field "$full" p99_ms)" "$(field "$full" max_ms)" "$(field "$full" events)"
awk -v p="$(field "$full" p99_ms)" -v r="$(field "$ref" p99_ms)" 'BEGIN {
  printf "  p99 delivery: %.1f ms (goal <= 50 ms on 2 cores): %s; %.1f x the 1-subscriber p99\n", p, (p <= 50 ? "met" : "NOT met"), (r > 0 ? p / r : 0) }'
awk -v t="$(field "$full" gw_ticks)" -v e="$(field "$full" events)" -v hz="$hz" -v c="$(field "$full" client_cpu_s)" 'BEGIN {
  printf "  gateway CPU per delivered event: %.2f us (%.2f s of CPU for %d events; the client, on the same cores: %.2f s)\n", (e > 0 ? t * 1e6 / hz / e : 0), t / hz, e, c }'
echo "  load average at the end (other work on this machine delays delivery): $(cut -d' ' -f1-3 /proc/loadavg)"
