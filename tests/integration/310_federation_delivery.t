#!/bin/bash
# The federator against a loopback sink that checks every request with the npm
# package http-signature (what PeerTube used): deliveries arrive signed and are
# completed; scores rise; a failing friend's deliveries retry with backoff, its score
# falls, dead jobs keep the last error; at 0 the friend is revoked and its videos go;
# SIGTERM releases what the daemon holds; sd_notify READY=1; the systemd unit verifies.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
js=$top/tests/js/federation
dir=$(mktemp -d /tmp/pgpod-fed.XXXXXX); chmod 755 "$dir"
sink_port=$((PGPOD_HTTP_PORT + 31))
sink=http://127.0.0.1:$sink_port
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; DELETE FROM pod.friends WHERE url = '$sink';
        UPDATE pod.job_kinds SET retries = NULL, base_delay = NULL, factor = NULL, lease = NULL WHERE kind = 'deliver'" >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
plan 23

(cd "$js" && npm ci --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1)
ok $? "npm ci in tests/js/federation (http-signature, pg)"
q -c "SELECT public_key FROM pod.identity" >"$dir/pod.pub"
node "$js/inbox.js" --port "$sink_port" --verify-key "$dir/pod.pub" >"$dir/sink.log" 2>&1 &
pids+=($!)
wait_for 10 curl -sf "$sink/stats"
ok $? "the loopback sink listens on $sink"
stats() { curl -s "$sink/stats" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const o=JSON.parse(s);console.log($1)})"; }
control() { curl -s -X POST -d "$1" "$sink/control" >/dev/null; }

# The federator: the instance's own (scripts/pgpod starts it) or one started here.
fed_pid=$(cat "$PGPOD_DIR/run/federator.pid" 2>/dev/null)
if ! kill -0 "$fed_pid" 2>/dev/null; then
  PGUSER=pgpod_federator "${PGPOD_FEDERATOR_BIN:-$top/workers/federator/pgpod-federator}" >>"$dir/federator.log" 2>&1 &
  fed_pid=$!; pids+=($fed_pid)
fi
ok "$(kill -0 "$fed_pid"; echo $?)" "a federator runs (pid $fed_pid)"

q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; INSERT INTO pod.friends (url, state) VALUES ('$sink', 'active')
      ON CONFLICT (url) DO UPDATE SET state = 'active', score = 100"
is "$(q -c "SELECT count(*) FROM (SELECT pod.deliver(ARRAY['$sink'], 'video.removed',
               jsonb_build_object('object', jsonb_build_object('uuid', gen_random_uuid()))) FROM generate_series(1, 200)) d")" 200 \
  "200 deliveries enqueued"
all_done() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state <> 'done'") == 0 ]]; }
wait_for 60 all_done
ok $? "200 deliveries are done (woken by NOTIFY, no polling sleep in the daemon)"
is "$(stats 'o.verified + "/" + o.verify_failed + "/" + o.unique_ids')" "200/0/200" \
  "http-signature verified all 200 requests (signature, Date within 1800 s, Digest), 200 distinct request ids"
is "$(stats 'o.signature_headers.join(" ")')" "(request-target) host date digest" "signed headers: (request-target) host date digest"
is "$(q -c "SELECT score FROM pod.friends WHERE url = '$sink'")" "1000" "200 delivered requests: score 100 + 200 × 10, capped at 1000"

# Failures: fast backoff for the test (a per-kind override), the sink answers 503.
q -c "UPDATE pod.job_kinds SET retries = 2, base_delay = '100 milliseconds', factor = 2 WHERE kind = 'deliver'"
control '{"status": 503}'
q -c "SELECT pod.deliver(ARRAY['$sink'], 'video.removed', '{\"object\": {}}') FROM generate_series(1, 3)" >/dev/null
dead3() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state = 'dead'") == 3 ]]; }
wait_for 30 dead3
ok $? "3 deliveries to a failing friend are retried (3 attempts each) and then dead"
is "$(q -c "SELECT DISTINCT attempts || ' ' || left(last_error, 8) FROM pod.queue_dead WHERE kind = 'deliver'")" "3 HTTP 503" \
  "dead jobs keep their attempts and last error"
is "$(q -c "SELECT score FROM pod.friends WHERE url = '$sink'")" "910" "9 failed attempts took 90 from the score"
gaps=$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state = 'dead' AND finished_at - created_at >= interval '300 milliseconds'")
is "$gaps" "3" "the retries waited their backoff (≥ 100 ms + 200 ms) before dying"
control '{"status": 0}'
q -c "SELECT pod.deliver(ARRAY['$sink'], 'video.removed', '{\"object\": {}}')" >/dev/null
back() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state IN ('waiting', 'running')") == 0 ]]; }
wait_for 30 back
ok $? "the friend answers again: the next delivery succeeds"
is "$(q -c "SELECT score FROM pod.friends WHERE url = '$sink'")" "920" "and the score rises again"

# To zero: revoked, its videos gone, nothing more sent to it.
q -c "UPDATE pod.friends SET score = 20 WHERE url = '$sink';
      SELECT pod.pubsub_publish('$sink', 'urn:pgpod:videos', 'aaaaaaaa-0000-0000-0000-000000000310',
               pod.video_entry('aaaaaaaa-0000-0000-0000-000000000310', 'from the sink', NULL, NULL, now(), now(), NULL, NULL, NULL, '$sink'))" >/dev/null
control '{"status": 500}'
q -c "SELECT pod.deliver(ARRAY['$sink'], 'video.removed', '{\"object\": {}}') FROM generate_series(1, 2)" >/dev/null
revoked() { [[ $(q -c "SELECT state FROM pod.friends WHERE url = '$sink'") == revoked ]]; }
wait_for 30 revoked
ok $? "failures drive the friend to 0: revoked"
is "$(q -c "SELECT count(*) FROM api.network_videos WHERE origin = '$sink'")" "0" "its videos are removed"
is "$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND target = '$sink' AND state = 'waiting'")" "0" "no delivery waits for it any more"
control '{"status": 0}'

# SIGTERM: a federator of our own, requests held up by the sink; waiting ones are
# released at once, in-flight ones finish within the grace period and are reported.
kill -TERM "$fed_pid" 2>/dev/null; wait_for 15 bash -c "! kill -0 $fed_pid"
q -c "DELETE FROM pod.jobs WHERE kind = 'deliver'; UPDATE pod.friends SET state = 'active', score = 100 WHERE url = '$sink';
      UPDATE pod.job_kinds SET retries = NULL, base_delay = NULL, factor = NULL WHERE kind = 'deliver'"
control '{"delay_ms": 1500}'
q -c "SELECT pod.deliver(ARRAY['$sink'], 'video.removed', '{\"object\": {}}') FROM generate_series(1, 40)" >/dev/null
sock=$dir/notify.sock
python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind('$sock'); s.settimeout(20)
print(s.recv(4096).decode().replace('\n', ' ')); sys.stdout.flush()
print(s.recv(4096).decode().replace('\n', ' ')); sys.stdout.flush()" >"$dir/notify.out" 2>&1 &
pids+=($!)
wait_for 5 test -S "$sock"
NOTIFY_SOCKET=$sock PGUSER=pgpod_federator PGPOD_FEDERATOR_MAX_PER_FRIEND=4 PGPOD_FEDERATOR_GRACE_MS=5000 \
  "${PGPOD_FEDERATOR_BIN:-$top/workers/federator/pgpod-federator}" >>"$dir/federator.log" 2>&1 &
own=$!; pids+=($own)
wait_for 10 grep -q READY=1 "$dir/notify.out"
ok $? "the federator tells systemd READY=1 through \$NOTIFY_SOCKET"
held() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state = 'running'") -gt 4 ]]; }
wait_for 10 held
kill -TERM "$own"
wait_for 15 bash -c "! kill -0 $own"
ok $? "SIGTERM stops it within the grace period"
grep -q STOPPING=1 "$dir/notify.out"; ok $? "and it says STOPPING=1"
is "$(q -c "SELECT count(*) FILTER (WHERE state = 'done') || '+' || count(*) FILTER (WHERE state = 'waiting' AND attempts = 0) || '=' || count(*)
            FROM pod.jobs WHERE kind = 'deliver'")" "4+36=40" \
  "the 4 in flight finished and were reported; the 36 it held but had not sent are released (attempt not counted)"
is "$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'deliver' AND state = 'running'")" "0" "no lease is left behind"
control '{"delay_ms": 0}'

# The systemd unit, with ExecStart pointing at the binary just built.
if command -v systemd-analyze >/dev/null; then
  sed "s#/opt/pgpod#$top#g" "$top/workers/systemd/pgpod-federator.service" >"$dir/pgpod-federator.service"
  out=$(systemd-analyze verify "$dir/pgpod-federator.service" 2>&1); rc=$?
  ok $rc "systemd-analyze verify accepts workers/systemd/pgpod-federator.service${out:+: $out}"
else
  ok 1 "systemd-analyze is installed (package systemd, in deps.txt) to verify the unit"
fi
# Restart the instance's federator if it was the harness's.
if [[ -f $PGPOD_DIR/run/federator.pid ]] && ! kill -0 "$(cat "$PGPOD_DIR/run/federator.pid")" 2>/dev/null; then
  (cd "$top" && scripts/pgpod start >/dev/null 2>&1)
fi
done_testing
