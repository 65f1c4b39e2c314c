#!/bin/bash
# Gateway speed, each number beside a reference measured in the same run:
#  1. GET /gw_bench?id=eq.N (one row by primary key) with wrk, 32 connections,
#     against pgbench running exactly the gateway's transaction for that request
#     (BEGIN READ ONLY; the role, claims and request.* settings; the same
#     JSON-producing SELECT; COMMIT, pipelined with one Sync), 32 clients.
#     The reference is derived from the server's own log: log_statement = 'all'
#     for one request (ALTER SYSTEM + pg_reload_conf, which reaches the gateway's
#     open sessions), its statements become the pgbench script (the same texts,
#     the values bound as parameters through -D variables, the id random), and a
#     pgbench transaction logged the same way must match it, or the bench fails.
#     The goal line compares with pgbench -M prepared, as the gateway keeps its
#     statements prepared; -M extended (each statement parsed each time) is
#     printed for information. The two run in alternating rounds (BENCH_ROUNDS,
#     default 5): best and median of each, their ratios, and CPU per request of
#     the gateway's processes and of PostgreSQL's (from /proc/<pid>/stat).
#  2. GET /files/<id> of a 1 MiB blob (lookup under RLS, reused for
#     PGPOD_FILE_CACHE_MS, + sendfile) against nginx
#     serving the same file from the store with sendfile, 32 connections.
# Needs an instance started by tests/bench/run (PGPOD_URL, PGHOST, PGPOD_DIR).
set -euo pipefail
clients=${BENCH_CLIENTS:-32}; secs=${BENCH_SECONDS:-10}; rounds=${BENCH_ROUNDS:-5}
threads=${BENCH_THREADS:-$(nproc)}
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/bench/lib.bash"
store=${PGPOD_STORE_DIR:-$PGPOD_DIR/store}
pglog=$PGPOD_DIR/log/postgresql.log
work=$(mktemp -d); chmod 755 "$work"
nginx_pid=
log_off() {
  psql -X -q -c "ALTER SYSTEM RESET log_statement" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
}
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null
  log_off
  rm -rf "$work"
  psql -X -q -c "DROP TABLE IF EXISTS api.gw_bench; NOTIFY pgrst, 'reload schema'" >/dev/null 2>&1 || true
}
trap cleanup EXIT
set -E
trap 'echo "gateway.sh: line $LINENO failed" >&2' ERR

psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS api.gw_bench;
CREATE TABLE api.gw_bench (id integer PRIMARY KEY, name text NOT NULL, n integer NOT NULL);
INSERT INTO api.gw_bench SELECT g, 'row ' || g, g * 7 FROM generate_series(1, 10000) g;
GRANT SELECT ON api.gw_bench TO pgpod_anon;
VACUUM ANALYZE api.gw_bench;
NOTIFY pgrst, 'reload schema';
SQL
for i in $(seq 200); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$PGPOD_URL/gw_bench?id=eq.1") == 200 ]] && break
  sleep 0.05
done
[[ $(curl -s "$PGPOD_URL/gw_bench?id=eq.7") == '[{"id":7,"name":"row 7","n":49}]' ]] || { echo "gateway does not serve gw_bench" >&2; exit 1; }

cat >"$work/rows.lua" <<'EOF_LUA'
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/gw_bench?id=eq." .. math.random(1, 10000))
end
EOF_LUA
rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }
tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$1"; }
errors() { grep -E 'Non-2xx|Socket errors' "$1" || true; }

# --- the reference: the gateway's own statements, from the server's log -----------
# wrk sends only Host: so does this curl (request.headers must be the same).
gw_get() { curl -s -H 'User-Agent:' -H 'Accept:' "$PGPOD_URL/gw_bench?id=eq.$1"; }
log_size() { stat -c %s "$pglog"; }
[[ -r $pglog ]] || { echo "cannot read the server log $pglog" >&2; exit 1; }
from=$(log_size)
psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
# The backends take the reload before their next command: poll with requests
# until one shows whole in the log (BEGIN to COMMIT on one session).
derived=
for i in $(seq 300); do
  id=$((5000 + i))
  [[ $(gw_get "$id") == "[{\"id\":$id,"* ]] || { echo "gateway does not serve gw_bench?id=eq.$id" >&2; exit 1; }
  if tail -c +$((from + 1)) "$pglog" | python3 "$top/tests/bench/gateway_statements.py" derive pgpod_authenticator \
      "$work/gateway.sql" "$work/gateway.defs" "$id"; then
    derived=1; break
  else
    [[ $? -eq 1 ]] || exit 1
  fi
done
[[ -n $derived ]] || { log_off; echo "the gateway's statements never showed in $pglog" >&2; exit 1; }
mapfile -t defs <"$work/gateway.defs"
dargs=(); for d in "${defs[@]}"; do [[ -n $d ]] && dargs+=(-D "$d"); done
# pgbench logs in as the superuser that runs the bench (PGUSER), not as
# pgpod_authenticator: -M prepared prepares every statement of a \startpipeline
# block before running any, so the SELECT on api would be analysed before the
# script's set_config('role', ...) and pgpod_authenticator has no USAGE on api.
# The role switch itself runs in the script, as the gateway runs it.
from=$(log_size)
pgbench -n -M prepared -c 1 -t 1 "${dargs[@]}" -f "$work/gateway.sql" >"$work/pgbench-check.out" 2>&1 \
  || { sed 's/^/pgbench: /' "$work/pgbench-check.out" >&2; exit 1; }
check=
for i in $(seq 100); do
  if tail -c +$((from + 1)) "$pglog" | python3 "$top/tests/bench/gateway_statements.py" compare "${PGUSER:-postgres}" \
      "$work/gateway.defs.json"; then
    check=1; break
  else
    [[ $? -eq 1 ]] || { echo "pgbench's statements differ from the gateway's" >&2; exit 1; }
  fi
  sleep 0.05
done
[[ -n $check ]] || { echo "pgbench's transaction never showed in $pglog" >&2; exit 1; }
log_off

hz=$(getconf CLK_TCK)
gw_pid=$(cat "$PGPOD_DIR/run/gateway.pid")
# the postmaster: the parent of a backend (whose own stat the superuser reads)
pm_pid=$(psql -X -At -c "SELECT pg_read_file('/proc/self/stat')" 2>/dev/null | awk '{ sub(/^[^(]*\(.*\) /, ""); print $2 }' || true)
[[ -n $pm_pid && -r /proc/$pm_pid/stat ]] || pm_pid=
# us_per REQS TICKS: CPU microseconds per request.
us_per() { awk -v n="$1" -v t="$2" -v hz="$hz" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }'; }
# measure NAME CMD...: runs CMD, appends "rate gw_us pg_us" to $work/NAME.
measure() {
  local name=$1 out=$work/$1.out g0 p0 g1 p1 rate
  shift
  g0=$(cpu_ticks "$gw_pid"); p0=$([[ -n $pm_pid ]] && cpu_ticks "$pm_pid" || echo 0)
  "$@" >"$out" 2>&1 || { sed "s/^/$name: /" "$out" >&2; exit 1; }
  g1=$(cpu_ticks "$gw_pid"); p1=$([[ -n $pm_pid ]] && cpu_ticks "$pm_pid" || echo 0)
  if [[ $name == gateway ]]; then rate=$(rps "$out"); errors "$out"; else rate=$(tps "$out"); fi
  [[ -n $rate ]] || { echo "$name: no rate in its output" >&2; cat "$out" >&2; exit 1; }
  local n; n=$(awk -v r="$rate" -v s="$secs" 'BEGIN { printf "%d", r * s }')
  echo "$rate $(us_per "$n" $((g1 - g0))) $(us_per "$n" $((p1 - p0)))" >>"$work/$name"
  local gw_cpu="gateway $(us_per "$n" $((g1 - g0))) us + "
  [[ $name == gateway ]] || gw_cpu=
  printf '  round %d %-9s %7.0f /s, CPU per request: %spostgres %s us\n' "$r" "$name" "$rate" "$gw_cpu" \
    "$(us_per "$n" $((p1 - p0)))"
}
echo "gateway vs pgbench, $rounds rounds of ${secs} s, $clients connections (statements checked against the server log)"
for ((r = 1; r <= rounds; r++)); do
  measure gateway wrk -t"$threads" -c"$clients" -d"${secs}s" -s "$work/rows.lua" "$PGPOD_URL"
  measure prepared pgbench -n -M prepared -c "$clients" -j "$threads" -T "$secs" "${dargs[@]}" -f "$work/gateway.sql"
  measure extended pgbench -n -M extended -c "$clients" -j "$threads" -T "$secs" "${dargs[@]}" -f "$work/gateway.sql"
done
# stat NAME COLUMN best|lowest|median
stat_of() {
  awk -v c="$2" '{ print $c }' "$work/$1" | sort -g | awk -v w="$3" '{ v[NR] = $1 }
    END { if (w == "best") print v[NR]; else if (w == "lowest") print v[1]
          else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
gb=$(stat_of gateway 1 best); gm=$(stat_of gateway 1 median)
pb=$(stat_of prepared 1 best); pm=$(stat_of prepared 1 median)
eb=$(stat_of extended 1 best); em=$(stat_of extended 1 median)
printf 'GET /gw_bench?id=eq.N through the gateway (wrk -c%d):   best %7.0f req/s, median %7.0f\n' "$clients" "$gb" "$gm"
printf 'same transaction, pgbench -M prepared (-c%d):           best %7.0f tx/s,  median %7.0f\n' "$clients" "$pb" "$pm"
printf 'same transaction, pgbench -M extended (-c%d):           best %7.0f tx/s,  median %7.0f\n' "$clients" "$eb" "$em"
cpu() { echo "$(stat_of "$1" "$2" median) ($(stat_of "$1" "$2" lowest))"; }
printf 'CPU per request, median (lowest round): gateway %s us + postgres %s us; pgbench -M prepared: postgres %s us\n' \
  "$(cpu gateway 2)" "$(cpu gateway 3)" "$(cpu prepared 3)"
echo "ratio: $(ratio "$gb" "$pb") x pgbench -M prepared best-of, $(ratio "$gm" "$pm") median (goal >= 0.80)"
echo "for information: $(ratio "$gb" "$eb") x pgbench -M extended best-of, $(ratio "$gm" "$em") median"

# --- static file --------------------------------------------------------------------
email="bench-gw-$$@bench.test"
token=$(psql -X -At -v ON_ERROR_STOP=1 <<SQL | tail -1
SET client_min_messages = warning;
SELECT pod.register('$email', 'bench password') IS NOT NULL;
SELECT token FROM pod.login('$email', 'bench password');
SQL
)
head -c $((1 << 20)) /dev/urandom >"$work/blob.bin"
file=$(curl -s -X POST "$PGPOD_URL/upload?filename=bench.bin" -H "Authorization: Bearer $token" --data-binary @"$work/blob.bin")
id=$(printf '%s' "$file" | sed -n 's/.*"id": *"\([0-9a-f-]*\)".*/\1/p')
sha=$(sha256sum "$work/blob.bin" | cut -c1-64)
[[ -n $id && -f $store/blobs/${sha:0:2}/$sha ]] || { echo "upload failed: $file" >&2; exit 1; }
curl -s -H "Authorization: Bearer $token" "$PGPOD_URL/files/$id" | cmp -s - "$work/blob.bin" || { echo "download differs" >&2; exit 1; }

nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
workers=$(nproc)
nginx_start "$workers" 1024 "http://127.0.0.1:$nport/${sha:0:2}/$sha" "  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:$nport;
    root $store/blobs;
    default_type application/octet-stream;
  }" || exit 1
wrk -t"$threads" -c"$clients" -d"${secs}s" -H "Authorization: Bearer $token" "$PGPOD_URL/files/$id" >"$work/wrk-file.out" 2>&1
wrk -t"$threads" -c"$clients" -d"${secs}s" "http://127.0.0.1:$nport/${sha:0:2}/$sha" >"$work/wrk-nginx.out" 2>&1
gw_f=$(rps "$work/wrk-file.out"); ng_f=$(rps "$work/wrk-nginx.out")
printf 'GET /files/<id>, 1 MiB, gateway (RLS lookup, 1 s cache): %7.0f req/s (%.0f MiB/s)\n' "$gw_f" "$gw_f"
printf 'same file from nginx (sendfile):                         %7.0f req/s (%.0f MiB/s)\n' "$ng_f" "$ng_f"
errors "$work/wrk-file.out"
awk -v a="$gw_f" -v b="$ng_f" 'BEGIN { printf "ratio: %.2f x nginx (goal >= 0.80)\n", a / b }'
