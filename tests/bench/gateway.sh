#!/bin/bash
# Gateway speed, each number beside a reference measured in the same run:
#  1. GET /gw_bench?id=eq.N (one row by primary key) with wrk, 32 connections,
#     against pgbench running the gateway's own transaction (BEGIN READ ONLY, the
#     role/claims/request settings, the same JSON-producing SELECT, COMMIT) as the
#     same login role, pipelined into one round trip, 32 clients (-M extended: each
#     statement parsed each time). For information also -M prepared, which the
#     gateway's own prepared statements correspond to (see below for its login).
#  2. GET /files/<id> of a 1 MiB blob (lookup under RLS, reused for
#     PGPOD_FILE_CACHE_MS, + sendfile) against nginx
#     serving the same file from the store with sendfile, 32 connections.
# Needs an instance started by tests/bench/run (PGPOD_URL, PGHOST, PGPOD_DIR).
set -euo pipefail
clients=${BENCH_CLIENTS:-32}; secs=${BENCH_SECONDS:-10}
threads=${BENCH_THREADS:-$(nproc)}
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/bench/lib.bash"
store=${PGPOD_STORE_DIR:-$PGPOD_DIR/store}
work=$(mktemp -d); chmod 755 "$work"
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null
  rm -rf "$work"
  psql -X -q -c "DROP TABLE IF EXISTS api.gw_bench; NOTIFY pgrst, 'reload schema'" >/dev/null 2>&1 || true
}
trap cleanup EXIT

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
errors() { grep -E 'Non-2xx|Socket errors' "$1" || true; }

host=${PGPOD_URL#http://}
cat >"$work/gateway.sql" <<SQL
\set id random(1, 10000)
\startpipeline
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT pg_catalog.set_config('role', 'pgpod_anon', true), pg_catalog.set_config('request.jwt.claims', '{}', true), pg_catalog.set_config('request.method', 'GET', true), pg_catalog.set_config('request.path', '/gw_bench', true), pg_catalog.set_config('request.headers', '{"host":"$host"}', true), pg_catalog.set_config('request.cookies', '{}', true), pg_catalog.set_config('search_path', 'api, public', true);
WITH pgrst_source AS (SELECT "gw_bench".* FROM "api"."gw_bench" AS "gw_bench" WHERE ("gw_bench"."id" = :id)) SELECT NULL::text AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]')::text AS body FROM (SELECT * FROM pgrst_source) AS _postgrest_t;
COMMIT;
\endpipeline
SQL
pgbench -n -M extended -U pgpod_authenticator -c "$clients" -j "$threads" -T "$secs" -f "$work/gateway.sql" >"$work/pgbench.out" 2>&1 \
  || { sed 's/^/pgbench: /' "$work/pgbench.out" >&2; exit 1; }
pg_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.out")
# For information: the same script with prepared statements, as the gateway runs
# it. pgbench prepares every statement of a pipeline before running any, so the
# SELECT would be analysed as pgpod_authenticator (no USAGE on api): this one logs
# in as the superuser that runs the bench (SET ROLE still happens in the script).
pgp_tps=
if pgbench -n -M prepared -c "$clients" -j "$threads" -T "$secs" -f "$work/gateway.sql" >"$work/pgbench-prepared.out" 2>&1; then
  pgp_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench-prepared.out")
fi
wrk -t"$threads" -c"$clients" -d"${secs}s" -s "$work/rows.lua" "$PGPOD_URL" >"$work/wrk.out" 2>&1
gw_rps=$(rps "$work/wrk.out")
printf 'GET /gw_bench?id=eq.N through the gateway (wrk -c%d): %9.0f req/s\n' "$clients" "$gw_rps"
printf 'same transaction with pgbench, pipelined (-c%d):        %9.0f tx/s\n' "$clients" "$pg_tps"
errors "$work/wrk.out"
awk -v a="$gw_rps" -v b="$pg_tps" 'BEGIN { printf "ratio: %.2f x pgbench (goal >= 0.80)\n", a / b }'
if [[ -n $pgp_tps ]]; then
  printf 'for information, pgbench -M prepared (as %s):       %9.0f tx/s, ratio %s\n' "${PGUSER:-superuser}" "$pgp_tps" \
    "$(awk -v a="$gw_rps" -v b="$pgp_tps" 'BEGIN { printf "%.2f", a / b }')"
fi

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
