#!/bin/bash
# Nothing lost, nothing applied twice: this instance (pod A) delivers 3000 signed
# video.published activities to a second pod B (its own cluster and gateway) while
# its federator is killed with SIGKILL again and again. Every job ends done, B holds
# each video once and applied each request id once, retries being acknowledged as
# duplicates.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-kill.XXXXXX); chmod 755 "$dir"
b_pg=$((PGPOD_PG_PORT + 32)); b_http=$((PGPOD_HTTP_PORT + 32))
b_url=http://127.0.0.1:$b_http
a_url=$(q -c "SELECT url FROM pod.identity")
N=${FED_KILL_N:-3000}
fed=
b() { PGPOD_DIR=$dir/b PGPOD_PG_PORT=$b_pg PGPOD_HTTP_PORT=$b_http PGPOD_URL_SELF=$b_url PGPOD_DB=pgpod "$top/scripts/pgpod" "$@"; }
qb() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir/b/run" -p "$b_pg" -U postgres -d pgpod "$@"; }
cleanup() {
  [[ -n $fed ]] && kill -KILL "$fed" 2>/dev/null
  b stop >/dev/null 2>&1
  q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; DELETE FROM pod.friends WHERE url = '$b_url';
        UPDATE pod.job_kinds SET lease = NULL WHERE kind = 'deliver'" >/dev/null 2>&1
  [[ -n $harness_fed ]] && (cd "$top" && scripts/pgpod start >/dev/null 2>&1)
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 9

b start >"$dir/b-start.log" 2>&1
ok $? "pod B starts (PostgreSQL $b_pg, HTTP $b_http)" ||
  { tail -n 3 "$dir/b-start.log" "$dir"/b/log/gateway.log | sed 's/^/# /' >&2; exit 1; }  # nothing below can pass
wait_for 20 curl -sf "$b_url/rpc/friend_list"
ok $? "pod B's gateway answers"

# Befriend A and B directly (the handshake is covered by the multi-pod test).
printf "INSERT INTO pod.friends (url, state, public_key) VALUES (:'u', 'active', :'k')
        ON CONFLICT (url) DO UPDATE SET state = 'active', public_key = EXCLUDED.public_key, score = 100\n" |
  qb -v u="$a_url" -v k="$(q -c "SELECT public_key FROM pod.identity")"
printf "INSERT INTO pod.friends (url, state, public_key) VALUES (:'u', 'active', :'k')
        ON CONFLICT (url) DO UPDATE SET state = 'active', public_key = EXCLUDED.public_key, score = 100\n" |
  q -v u="$b_url" -v k="$(qb -c "SELECT public_key FROM pod.identity")"

# Only federators started here run for A: stop the instance's own.
harness_fed=$(cat "$PGPOD_DIR/run/federator.pid" 2>/dev/null)
if [[ -n $harness_fed ]] && kill -0 "$harness_fed" 2>/dev/null; then
  kill -TERM "$harness_fed"; wait_for 15 bash -c "! kill -0 $harness_fed"
fi
q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; UPDATE pod.job_kinds SET lease = '2 seconds' WHERE kind = 'deliver'"
q -c "INSERT INTO pod.jobs (kind, target, payload)
      SELECT 'deliver', '$b_url', jsonb_build_object('activity', jsonb_build_object('id', gen_random_uuid(),
               'type', 'video.published', 'actor', '$a_url',
               'object', jsonb_build_object('uuid', gen_random_uuid(), 'name', 'kill test ' || g, 'author', 'a')))
        FROM generate_series(1, $N) g"

done_count() { q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state = 'done'"; }
start_fed() {
  PGUSER=pgpod_federator PGPOD_FEDERATOR_MAX_TOTAL=${1:-16} PGPOD_FEDERATOR_MAX_PER_FRIEND=${1:-16} \
    "${PGPOD_FEDERATOR_BIN:-$top/workers/federator/pgpod-federator}" >>"$dir/federator.log" 2>&1 &
  fed=$!
}
kills=0
for round in 1 2 3 4 5 6 7 8 9 10; do
  before=$(done_count)
  ((before >= N - 300)) && break
  start_fed
  # Let it get some work done, then kill it in the middle of its transfers.
  progressed() { (($(done_count) >= before + 100)); }
  wait_for 60 progressed
  kill -KILL "$fed"; wait "$fed" 2>/dev/null; fed=
  kills=$((kills + 1))
done
ok "$( ((kills >= 5)); echo $?)" "the federator was killed with SIGKILL $kills times while delivering"
held=$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state = 'running'")
echo "# after the last kill: $(done_count) done, $held leases held by dead federators"
start_fed 64
all_done() { [[ $(done_count) == "$N" ]]; }
wait_for 180 all_done
ok $? "after a last start, all $N deliveries are done (expired leases were claimed again)"
is "$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state <> 'done'")" "0" "none is lost, failed or dead"
is "$(qb -c "SELECT count(*) FROM api.network_videos WHERE origin = '$a_url' AND name LIKE 'kill test %'")" "$N" "pod B holds each of the $N videos"
is "$(qb -c "SELECT count(*) || '/' || count(DISTINCT request_id) FROM pod.inbox_applied WHERE sender = '$a_url'")" "$N/$N" \
  "pod B applied each request id exactly once"
accepted=$(qb -c "SELECT count(*) FROM pod.inbox_signatures")
ok "$( ((accepted >= N)); echo $?)" "pod B accepted $accepted signed requests for $N activities: $((accepted - N)) re-sent after a kill were acknowledged as duplicates"
attempts=$(q -c "SELECT sum(attempts) FROM pod.jobs WHERE kind = 'deliver'")
ok "$( ((attempts > N)); echo $?)" "the queue counted $attempts attempts for $N jobs (killed leases were retried)"
done_testing
