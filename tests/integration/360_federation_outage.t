#!/bin/bash
# Pods that fail and return. Pod B (its own cluster and gateway) is down while this
# instance (pod A) publishes, changes, unpublishes and deletes videos; when B is back,
# A's retried deliveries reach it newest first (the worst order), and B must end
# exactly where A is: the last version of each video, no removed video brought back.
# Then A's federator (supervised by scripts/pgpod, with a stable PGPOD_FEDERATOR_ID) is
# killed with SIGKILL while it holds leases: the supervisor restarts it with backoff,
# `scripts/pgpod status` says so, and the new process takes its leases back at once
# instead of waiting for them to expire.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-out.XXXXXX); chmod 755 "$dir"
b_pg=$((PGPOD_PG_PORT + 40)); b_http=$((PGPOD_HTTP_PORT + 40))
b_url=http://127.0.0.1:$b_http
a_url=$(q -c "SELECT url FROM pod.identity")
b() { PGPOD_DIR=$dir/b PGPOD_PG_PORT=$b_pg PGPOD_HTTP_PORT=$b_http PGPOD_URL_SELF=$b_url PGPOD_DB=pgpod "$top/scripts/pgpod" "$@"; }
qb() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir/b/run" -p "$b_pg" -U postgres -d pgpod "$@"; }
cleanup() {
  b stop >/dev/null 2>&1
  q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; DELETE FROM pod.friends WHERE url = '$b_url';
        DELETE FROM pod.channels WHERE name = 'outage'; DELETE FROM pod.users WHERE email = 'outage@example.org';
        UPDATE pod.job_kinds SET retries = NULL, base_delay = NULL, factor = NULL, lease = NULL WHERE kind = 'deliver';
        DELETE FROM pod.setting_overrides WHERE name = 'federation.score_failure'" >/dev/null 2>&1
  (cd "$top" && scripts/pgpod start >/dev/null 2>&1)
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 15

b start >"$dir/b-start.log" 2>&1
ok $? "pod B starts (PostgreSQL $b_pg, HTTP $b_http)" || { tail -5 "$dir/b-start.log" | sed 's/^/# /' >&2; exit 1; }
printf "INSERT INTO pod.friends (url, state, public_key) VALUES (:'u', 'active', :'k')
        ON CONFLICT (url) DO UPDATE SET state = 'active', public_key = EXCLUDED.public_key, score = 100\n" |
  qb -v u="$a_url" -v k="$(q -c "SELECT public_key FROM pod.identity")"
printf "INSERT INTO pod.friends (url, state, public_key) VALUES (:'u', 'active', :'k')
        ON CONFLICT (url) DO UPDATE SET state = 'active', public_key = EXCLUDED.public_key, score = 1000\n" |
  q -v u="$b_url" -v k="$(qb -c "SELECT public_key FROM pod.identity")"
# (a long outage would drive B's score to 0 and revoke it: not what this test is about)
q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; SELECT pod.set_setting('federation.score_failure', '0');
      UPDATE pod.job_kinds SET retries = 100, base_delay = '200 milliseconds', factor = 1.5 WHERE kind = 'deliver'" >/dev/null

# B goes down (its gateway stops cleanly: its supervisor leaves it down).
gb=$(cat "$dir/b/run/gateway.pid"); kill -TERM "$gb"; wait_for 10 bash -c "! kill -0 $gb"
ok $? "pod B's gateway is down"

# Meanwhile on A: eight videos published, changed again and again, some unpublished or
# deleted, one deleted and its uuid never seen again.
q -c "INSERT INTO pod.users (id, email, pass_hash) VALUES (gen_random_uuid(), 'outage@example.org', '\$argon2id\$test');
      INSERT INTO pod.channels (owner_id, name, display_name) SELECT id, 'outage', 'Outage' FROM pod.users WHERE email = 'outage@example.org';
      INSERT INTO pod.videos (uuid, channel_id, name, state)
        SELECT ('00000000-0000-4000-8000-0000000000' || lpad(g::text, 2, '0'))::uuid, c.id, 'v' || g || ' draft', 'uploaded'
          FROM pod.channels c, generate_series(1, 8) g WHERE c.name = 'outage';
      UPDATE pod.videos SET state = 'published' WHERE name LIKE 'v% draft'"
for round in 1 2 3 4 5; do
  q -c "UPDATE pod.videos SET name = split_part(name, ' ', 1) || ' rev $round' WHERE channel_id = (SELECT id FROM pod.channels WHERE name = 'outage')"
done
q -c "UPDATE pod.videos SET state = 'failed' WHERE uuid = '00000000-0000-4000-8000-000000000003';
      DELETE FROM pod.videos WHERE uuid IN ('00000000-0000-4000-8000-000000000004', '00000000-0000-4000-8000-000000000005');
      UPDATE pod.videos SET description = 'last word' WHERE uuid = '00000000-0000-4000-8000-000000000006'"
is "$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND target = '$b_url'")" "52" \
  "52 deliveries for B: 8 published, 40 updated, 1 unpublished, 2 deleted, 1 more updated"
retrying() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE target = '$b_url' AND state = 'waiting' AND attempts >= 2") == 52 ]]; }
wait_for 60 retrying
ok $? "every one failed at least twice while B was down (retried with backoff)"

# B comes back; the retries are made due newest first: the order a long outage can give.
b start >>"$dir/b-start.log" 2>&1
wait_for 20 curl -sf "$b_url/rpc/friend_list"
ok $? "pod B is back"
q -c "UPDATE pod.jobs j SET run_at = now() + (m.top - j.id) * interval '40 milliseconds'
        FROM (SELECT max(id) AS top FROM pod.jobs WHERE target = '$b_url') m
       WHERE j.target = '$b_url' AND j.state = 'waiting'" >/dev/null
all_done() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND target = '$b_url' AND state <> 'done'") == 0 ]]; }
wait_for 90 all_done
ok $? "every retried delivery is done"
a_state=$(q -c "SELECT string_agg(uuid || ' ' || name || ' ' || coalesce(description, '-') || ' ' || version, E'\n' ORDER BY uuid)
                  FROM pod.videos WHERE channel_id = (SELECT id FROM pod.channels WHERE name = 'outage') AND state = 'published'")
b_state=$(qb -c "SELECT string_agg(v.uuid || ' ' || v.name || ' ' || coalesce(v.description, '-') || ' ' || i.version, E'\n' ORDER BY v.uuid)
                   FROM api.network_videos v JOIN pod.pubsub_items i USING (id)
                  WHERE v.origin = '$a_url' AND v.uuid::text LIKE '00000000-0000-4000-8000-%'")
# (only this test's videos: B synchronises A's whole node, which holds the videos
# earlier tests published on A, e.g. 350_livechat_http's and 353's)
is "$b_state" "$a_state" "B holds exactly A's published videos at A's last versions"
is "$(qb -c "SELECT count(*) FROM api.network_videos WHERE uuid IN ('00000000-0000-4000-8000-000000000003', '00000000-0000-4000-8000-000000000004', '00000000-0000-4000-8000-000000000005')")" \
  "0" "the unpublished and the deleted videos were not brought back by their older updates"
is "$(qb -c "SELECT count(*) FROM pod.federated_tombstones WHERE origin = '$a_url'")" "3" "B keeps their tombstones"

# kill -9 of A's supervised federator while it holds leases.
q -c "UPDATE pod.job_kinds SET retries = NULL, base_delay = NULL, factor = NULL WHERE kind = 'deliver'"
fed=$(cat "$PGPOD_DIR/run/federator.pid")
sup=$(cat "$PGPOD_DIR/run/federator.supervisor.pid")
ok "$(kill -0 "$fed" && kill -0 "$sup"; echo $?)" "A's federator (pid $fed) runs under its supervisor (pid $sup)"
# B hangs (its gateway and the gateway's worker processes stopped): A's requests stay in flight
gb="$(cat "$dir/b/run/gateway.pid") $(ps -o pid= --ppid "$(cat "$dir/b/run/gateway.pid")")"
kill -STOP $gb
q -c "SELECT pod.deliver(ARRAY['$b_url'], 'video.removed', jsonb_build_object('object', jsonb_build_object('uuid', gen_random_uuid())))
        FROM generate_series(1, 40)" >/dev/null
leased() { (($(q -c "SELECT count(*) FROM pod.jobs WHERE target = '$b_url' AND state = 'running' AND lease_until > now() + interval '30 seconds'") >= 8)); }
wait_for 20 leased
held=$(q -c "SELECT count(*) FROM pod.jobs WHERE target = '$b_url' AND state = 'running'")
kill -KILL "$fed"; killed_at=$SECONDS
kill -CONT $gb
restarted() { local p; p=$(cat "$PGPOD_DIR/run/federator.pid" 2>/dev/null) && [[ $p != "$fed" ]] && kill -0 "$p"; }
wait_for 20 restarted
ok $? "the supervisor restarted the federator after SIGKILL"
status=$(cd "$top" && scripts/pgpod status | grep '^federator:')
[[ $status == *"restarts 1"* && $status == *"supervised by $sup"* ]]
ok $? "scripts/pgpod status says so: $status"
wait_for 50 all_done
ok $? "the $held deliveries it held were sent again without waiting for their 60 s leases"
elapsed=$((SECONDS - killed_at))
ok "$( ((elapsed < 50)); echo $?)" "all done $elapsed s after the kill (the leases ran 60 s)"
grep -q "took back [0-9]* jobs leased to federator@" "$PGPOD_DIR/log/federator.log"
ok $? "the new process took its previous leases back ($(grep -o 'took back [0-9]* jobs' "$PGPOD_DIR/log/federator.log" | tail -1))"
done_testing
