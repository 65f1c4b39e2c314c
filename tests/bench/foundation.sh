#!/bin/bash
# Chat write path: posting a message through pod.messages (check-author trigger,
# room-event numbering, NOTIFY, RLS as pgpod_user) against a plain INSERT into a table
# of the same shape without triggers or policies (same role switch and round trips),
# both with pgbench, same clients, same run.
set -euo pipefail
clients=${BENCH_CLIENTS:-8}; secs=${BENCH_SECONDS:-10}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET pgpod.password_memlimit = '8MB';
DROP TABLE IF EXISTS public.bench_rooms, public.bench_claims, public.plain_messages;
DELETE FROM pod.rooms WHERE name LIKE 'bench %';
DELETE FROM pod.users WHERE email = 'bench@bench.test';
SELECT pod.register('bench@bench.test', 'bench password');
CREATE TEMP TABLE s AS SELECT * FROM pod.login('bench@bench.test', 'bench password');
SELECT set_config('request.jwt.claims', (SELECT json_build_object('role','pgpod_user','sub',user_id,'sid',session_id)::text FROM s), false);
-- one room per client so rooms do not serialise each other
INSERT INTO pod.rooms (name, type) SELECT 'bench ' || g, 'group' FROM generate_series(1, 64) g;
CREATE TABLE public.bench_rooms AS SELECT row_number() OVER () AS n, id FROM pod.rooms WHERE name LIKE 'bench %';
CREATE TABLE public.bench_claims AS SELECT current_setting('request.jwt.claims') AS claims;
CREATE TABLE public.plain_messages (LIKE pod.messages INCLUDING DEFAULTS);
ALTER TABLE public.plain_messages ALTER COLUMN id SET DEFAULT nextval('pod.messages_id_seq');
GRANT SELECT ON public.bench_rooms, public.bench_claims TO pgpod_user;
GRANT INSERT ON public.plain_messages TO pgpod_user;
SQL
trap 'rm -rf "$work"; psql -X -q -c "DROP TABLE IF EXISTS public.bench_rooms, public.bench_claims, public.plain_messages" >/dev/null 2>&1' EXIT
claims=$(psql -X -At -c 'SELECT claims FROM public.bench_claims')
cat >"$work/pod.sql" <<SQL
\set r 1 + :client_id % 64
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO pod.messages (room_id, data) SELECT id, '{"text": "bench"}' FROM public.bench_rooms WHERE n = :r;
COMMIT;
SQL
cat >"$work/plain.sql" <<SQL
\set r 1 + :client_id % 64
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO public.plain_messages (room_id, data, author_id) SELECT id, '{"text": "bench"}', NULL FROM public.bench_rooms WHERE n = :r;
COMMIT;
SQL
tps() {
  pgbench -n -c "$clients" -j 2 -T "$secs" -f "$1" >"$work/pgbench.out" 2>&1 || { sed 's/^/pgbench: /' "$work/pgbench.out" >&2; exit 1; }
  sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.out"
}
plain=$(tps "$work/plain.sql")
pod=$(tps "$work/pod.sql")
printf 'chat post (triggers + RLS + NOTIFY): %8.0f tx/s\n' "$pod"
printf 'plain INSERT, same round trips (reference): %8.0f tx/s\n' "$plain"
awk -v a="$pod" -v b="$plain" 'BEGIN { printf "ratio: %.2f x plain\n", a / b }'
