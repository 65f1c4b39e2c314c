#!/bin/bash
# Livechat, each number beside a reference measured in the same run:
#  1. Posting a chat message through the gateway (POST /messages with a user's token,
#     wrk, BENCH_CLIENTS connections, a random one of 64 video rooms whose channel has
#     options: forbidden words, moderation on) against pgbench running a plain INSERT of
#     the same row into a table of the same shape (no trigger, policy, index or key)
#     with the same role switch and claims, same clients. Also the same chat post as
#     pgbench SQL (so the HTTP share is visible). Two rounds of the three, best of each.
#  2. A history page of 50 (api.room_history, before a random id) in a room of 100k
#     messages and in a room of BENCH_HISTORY_BIG (10M) messages, as a signed-in
#     reader through pgbench: equal within noise when the page reads the index; both
#     plans are printed. The rows are generated in SQL (triggers off: no events).
# Needs an instance started by tests/bench/run.
set -euo pipefail
clients=${BENCH_CLIENTS:-8}; secs=${BENCH_SECONDS:-10}
big=${BENCH_HISTORY_BIG:-10000000}; small=${BENCH_HISTORY_SMALL:-100000}
threads=${BENCH_THREADS:-$(nproc)}
work=$(mktemp -d); chmod 755 "$work"
cleanup() {
  rm -rf "$work"
  psql -X -q -c "DELETE FROM pod.rooms WHERE id IN (SELECT id FROM public.lc_bench_rooms)" \
       -c "DROP TABLE IF EXISTS public.lc_bench_rooms, public.lc_plain" \
       -c "DELETE FROM pod.channels WHERE name = 'lcbench'" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET client_min_messages = warning;
SET pgpod.password_memlimit = '8MB';
DROP TABLE IF EXISTS public.lc_bench_rooms, public.lc_plain;
-- (rooms first: their messages go with them, so the users can go)
DELETE FROM pod.rooms WHERE id IN (SELECT room_id FROM pod.livechat_rooms l JOIN pod.channels c ON c.id = l.channel_id
                                    WHERE c.name = 'lcbench');
DELETE FROM pod.channels WHERE name = 'lcbench';
DELETE FROM pod.users WHERE email IN ('lc-owner@bench.test', 'lc-poster@bench.test');
SELECT pod.register('lc-owner@bench.test', 'bench password'), pod.register('lc-poster@bench.test', 'bench password');
INSERT INTO pod.channels (owner_id, name, display_name)
  SELECT id, 'lcbench', 'Livechat bench' FROM pod.users WHERE email = 'lc-owner@bench.test';
INSERT INTO pod.channel_chat_options (channel_id, options)
  SELECT id, '{"forbidden_words": ["spam", "scam", "/fr[e3]e\\s+money/", "über"], "terms": "bench", "forbidden_words_action": "refuse"}'
    FROM pod.channels WHERE name = 'lcbench';
INSERT INTO pod.videos (channel_id, name, state)
  SELECT c.id, 'lc bench ' || g, 'published' FROM pod.channels c, generate_series(1, 66) g WHERE c.name = 'lcbench';
CREATE TABLE public.lc_bench_rooms AS
  SELECT row_number() OVER (ORDER BY v.name) AS n, pod.livechat_room(v.uuid) AS id
    FROM pod.videos v JOIN pod.channels c ON c.id = v.channel_id WHERE c.name = 'lcbench';
CREATE TABLE public.lc_plain (LIKE pod.messages INCLUDING DEFAULTS);
ALTER TABLE public.lc_plain ALTER COLUMN id SET DEFAULT nextval('pod.messages_id_seq');
ALTER TABLE public.lc_plain ALTER COLUMN author_id DROP DEFAULT;
GRANT SELECT ON public.lc_bench_rooms TO pgpod_user;
GRANT INSERT ON public.lc_plain TO pgpod_user;
SQL
login=$(psql -X -At -c "SELECT token || ' ' || json_build_object('role', 'pgpod_user', 'sub', user_id, 'sid', session_id)
                          FROM pod.login('lc-poster@bench.test', 'bench password')")
token=${login%% *}; claims=${login#* }
rooms=$(psql -X -At -c "SELECT string_agg('\"' || id || '\"', ',' ORDER BY n) FROM public.lc_bench_rooms WHERE n <= 64")

# --- 1. posting -----------------------------------------------------------------------
cat >"$work/post.lua" <<EOF_LUA
local rooms = {$rooms}
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Prefer"] = "return=minimal"
request = function()
  local body = '{"room_id":"' .. rooms[math.random(#rooms)] .. '","data":{"text":"a bench message about nothing much"}}'
  return wrk.format(nil, "/messages", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx %d\n", summary.errors.status))
end
EOF_LUA
cat >"$work/plain.sql" <<SQL
\set r random(1, 64)
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO public.lc_plain (room_id, data) SELECT id, '{"text": "a bench message about nothing much"}' FROM public.lc_bench_rooms WHERE n = :r;
COMMIT;
SQL
cat >"$work/post.sql" <<SQL
\set r random(1, 64)
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
SET LOCAL ROLE pgpod_user;
INSERT INTO api.messages (room_id, data) SELECT id, '{"text": "a bench message about nothing much"}' FROM public.lc_bench_rooms WHERE n = :r;
COMMIT;
SQL
tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$1"; }
pgb() { pgbench -n -c "$clients" -j "$threads" -T "$secs" -f "$1" >"$2" 2>&1 || { sed 's/^/pgbench: /' "$2" >&2; exit 1; }; }
# Two rounds, each measuring the three one after the other, and the best of each: on
# a shared machine the load changes within a run, and a busy moment would otherwise
# fall on one side of the ratio only (each round's ratio is printed too).
gw=0 plain=0 sqlpost=0
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
for round in 1 2; do
  wrk -t"$threads" -c"$clients" -d"${secs}s" -s "$work/post.lua" "$PGPOD_URL" >"$work/wrk.out" 2>&1
  r_gw=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/wrk.out")
  bad=$(sed -n 's/^non2xx \([0-9]*\)/\1/p' "$work/wrk.out")
  [[ -n $r_gw && ${bad:-1} == 0 ]] || { echo "wrk: no rate or failed requests" >&2; cat "$work/wrk.out" >&2; exit 1; }
  pgb "$work/plain.sql" "$work/plain.out"; r_plain=$(tps "$work/plain.out")
  pgb "$work/post.sql" "$work/post.out"; r_sqlpost=$(tps "$work/post.out")
  awk -v r="$round" -v a="$r_gw" -v s="$r_sqlpost" -v b="$r_plain" \
    'BEGIN { printf "round %d: gateway %.0f req/s, SQL post %.0f tx/s, plain %.0f tx/s: %.2f x plain through the gateway\n", r, a, s, b, a / b }'
  gw=$(best "$gw" "$r_gw"); plain=$(best "$plain" "$r_plain"); sqlpost=$(best "$sqlpost" "$r_sqlpost")
done
posted=$(psql -X -At -c "SELECT count(*) FROM pod.messages m JOIN public.lc_bench_rooms r ON r.id = m.room_id")
printf 'chat post through the gateway (POST /messages, wrk -c%d, options on): %8.0f req/s (best of 2)\n' "$clients" "$gw"
printf 'the same post as SQL (pgbench -c%d):                                  %8.0f tx/s (best of 2)\n' "$clients" "$sqlpost"
printf 'plain INSERT, same role switch (pgbench -c%d, reference):             %8.0f tx/s (best of 2)\n' "$clients" "$plain"
awk -v a="$gw" -v s="$sqlpost" -v b="$plain" 'BEGIN { printf "ratio: %.2f x plain through the gateway (goal >= 0.50); SQL post %.2f x plain\n", a / b, s / b }'
echo "($posted messages posted in the bench rooms)"

# --- 2. history pages --------------------------------------------------------------------
small_room=$(psql -X -At -c "SELECT id FROM public.lc_bench_rooms WHERE n = 65")
big_room=$(psql -X -At -c "SELECT id FROM public.lc_bench_rooms WHERE n = 66")
t0=$SECONDS
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET session_replication_role = replica;   -- bulk rows: no triggers, no events
SET synchronous_commit = off;
INSERT INTO pod.messages (room_id, author_ref, data, sent_at)
  SELECT '$small_room', 'gen', jsonb_build_object('text', 'history ' || g), now() FROM generate_series(1, $small) g;
INSERT INTO pod.messages (room_id, author_ref, data, sent_at)
  SELECT '$big_room', 'gen', jsonb_build_object('text', 'history ' || g), now() FROM generate_series(1, $big) g;
VACUUM ANALYZE pod.messages;
SQL
range() { psql -X -At -c "SELECT min(id) || ' ' || max(id) FROM pod.messages WHERE room_id = '$1'"; }
read -r smin smax <<<"$(range "$small_room")"
read -r bmin bmax <<<"$(range "$big_room")"
echo "history rooms: $small and $big messages (generated in $((SECONDS - t0)) s)"
hist() { # hist ROOM MIN MAX FILE
  cat >"$4" <<SQL
\set b random($(( $2 + 100 )), $3)
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
SET LOCAL ROLE pgpod_user;
SELECT count(*) FROM api.room_history('$1', before => :b, page_size => 50);
COMMIT;
SQL
}
hist "$small_room" "$smin" "$smax" "$work/small.sql"
hist "$big_room" "$bmin" "$bmax" "$work/big.sql"
for round in 1 2; do
  pgb "$work/small.sql" "$work/small$round.out"; pgb "$work/big.sql" "$work/big$round.out"
done
hs=$(cat "$work"/small?.out | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | sort -g | tail -1)
hb=$(cat "$work"/big?.out | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | sort -g | tail -1)
printf 'history page of 50 at %9d messages: %8.0f pages/s (best of 2)\n' "$small" "$hs"
printf 'history page of 50 at %9d messages: %8.0f pages/s (best of 2)\n' "$big" "$hb"
awk -v a="$hb" -v b="$hs" 'BEGIN { printf "ratio: %.2f x (big room / small room; goal: equal within noise)\n", a / b }'
for r in "$small_room:$smax" "$big_room:$bmax"; do
  echo "plan of a page in room ${r%%:*}:"
  psql -X -At <<SQL | sed 's/^/  /'
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true) \\g /dev/null
SET LOCAL ROLE pgpod_user;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
  SELECT m.* FROM api.messages m WHERE m.room_id = '${r%%:*}' AND m.id < ${r##*:} - 1000 ORDER BY m.id DESC LIMIT 50;
ROLLBACK;
SQL
done
psql -X -q -c "SET session_replication_role = replica" -c "DELETE FROM pod.messages WHERE room_id IN ('$small_room', '$big_room')" >/dev/null
