#!/bin/bash
# The livechat daemon (workers/livechat): it runs under scripts/pgpod, runs the cleanup,
# releases held messages when their delay is over (woken by NOTIFY pgpod_chat_held),
# and loses nothing when SIGKILLed: its supervisor (scripts/pgpod) starts it again and
# a message held while it was dead is released by the next one. Its systemd unit verifies.
. "$(dirname "$0")/tap.sh"
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
plan 9

pidfile=$PGPOD_DIR/run/livechat.pid
pid=$(cat "$pidfile" 2>/dev/null)
kill -0 "$pid" 2>/dev/null; ok $? "scripts/pgpod started the livechat daemon"
wait_for 10 bash -c "[[ \$(psql -X -At -c 'SELECT last_cleanup IS NOT NULL FROM pod.livechat_state') == t ]]"
ok $? "it ran pod.livechat_cleanup() (pod.livechat_state.last_cleanup)"

room=$(q -c "INSERT INTO pod.rooms (name, type) VALUES ('daemon test', 'group') RETURNING id")
held() { q -c "INSERT INTO pod.messages (room_id, data, held_until) VALUES ('$room', '{\"text\": \"$1\"}', now() + interval '$2') RETURNING id"; }
released() { [[ $(q -c "SELECT count(*) FROM pod.room_events WHERE message_id = $1 AND audience = 'others'") == 1 ]]; }
m1=$(held one '300 milliseconds')
wait_for 10 released "$m1"; ok $? "a held message is released once its delay is over"

# Its supervisor is paused (SIGSTOP) so that the daemon stays dead for a while.
sup=$(cat "$PGPOD_DIR/run/livechat.supervisor.pid" 2>/dev/null)
kill -0 "$sup" 2>/dev/null; ok $? "it runs under a supervisor"
trap 'kill -CONT "$sup" 2>/dev/null' EXIT
kill -STOP "$sup"
kill -KILL "$pid"
# (a paused supervisor does not reap it: dead is gone or a zombie)
dead() { ! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid") == Z* ]]; }
wait_for 5 dead
m2=$(held two '200 milliseconds')
wait_for 2 released "$m2"
[[ $? -ne 0 ]]; ok $? "while the daemon is dead nothing releases it"
kill -CONT "$sup"
restarted() { local p; p=$(cat "$pidfile" 2>/dev/null) && [[ $p != "$pid" ]] && kill -0 "$p" 2>/dev/null; }
wait_for 20 restarted; ok $? "its supervisor starts it again after SIGKILL"
wait_for 10 released "$m2"; ok $? "the restarted daemon releases the message held meanwhile"
is "$(q -c "SELECT count(*) FROM pod.chat_held WHERE room_id = '$room'")" 0 "nothing is left held"
q -c "DELETE FROM pod.rooms WHERE id = '$room'" >/dev/null

if command -v systemd-analyze >/dev/null; then
  dir=$(mktemp -d); trap 'kill -CONT "$sup" 2>/dev/null; rm -rf "$dir"' EXIT
  sed "s#/opt/pgpod#$top#g" "$top/workers/systemd/pgpod-livechat.service" >"$dir/pgpod-livechat.service"
  out=$(systemd-analyze verify "$dir/pgpod-livechat.service" 2>&1); rc=$?
  ok $rc "systemd-analyze verify accepts workers/systemd/pgpod-livechat.service${out:+: $out}"
else
  ok 1 "systemd-analyze is installed (package systemd, in deps.txt) to verify the unit"
fi
done_testing
