#!/bin/bash
# Room stream wake-ups (extension/src/room_events.c): an event notifies
# pgpod_room_events only while some session listens to its room (pod.room_events_sleep,
# which the gateway's hub holds while it has subscribers of the room); a session that
# starts listening while an event's transaction is open waits for it to commit, so it
# then reads the event; the gateway takes the room's lock for its first subscriber and
# gives it back when the last one leaves. Sessions are psql processes fed through FIFOs;
# "nothing was notified" is checked against a later sentinel NOTIFY from the same
# inserting session (notifications arrive in commit order).
. "$(dirname "$0")/tap.sh"
dir=$(mktemp -d /tmp/pgpod-roomwake.XXXXXX)
pids=()
room=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ -n $room ]] && q -c "DELETE FROM pod.rooms WHERE id = '$room'; DELETE FROM pod.users WHERE email = 'roomwake-$$@example.org'" >/dev/null 2>&1
  [[ -n ${KEEP:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 11

room=$(q -c "INSERT INTO pod.rooms (name, type) VALUES ('wake test', 'group') RETURNING id")
declare -A fd
session() {
  mkfifo "$dir/$1.in"
  PGAPPNAME="roomwake-$1" psql -X -At -v ON_ERROR_STOP=0 <"$dir/$1.in" >"$dir/$1.out" 2>&1 &
  pids+=($!)
  exec {fd[$1]}>"$dir/$1.in"
}
mark=0
run() {
  mark=$((mark + 1))
  printf '%s\n\\echo @@%d\n' "$2" "$mark" >&"${fd[$1]}"
  wait_for 20 grep -qx "@@$mark" "$dir/$1.out" || { echo "# session $1 did not finish: $2" >&2; return 1; }
}
notified() { grep -c "notification \"pgpod_room_events\" with payload \"$room:" "$dir/w.out"; }
sentinel=0
sentinel() {
  sentinel=$((sentinel + 1))
  run i "NOTIFY room_wake_sentinel, '$sentinel';"
  wait_for 20 bash -c "printf 'SELECT 1;\n' >&${fd[w]}; grep -q 'room_wake_sentinel\" with payload \"$sentinel\"' '$dir/w.out'"
}
post() { run i "INSERT INTO pod.messages (room_id, data) VALUES ('$room', '{\"text\": \"$1\"}');"; }

session w   # a listener (as the gateway's listener connection is)
session i   # a poster
run w "LISTEN pgpod_room_events; LISTEN room_wake_sentinel;"

post one; sentinel
is "$(notified)" 0 "nobody listens to the room: its event sends no NOTIFY"

run w "SELECT pod.room_events_sleep('$room');"
post two; sentinel
is "$(notified)" 1 "a session listens (pod.room_events_sleep): the event notifies"
is "$(grep -o "payload \"$room:[0-9]*\"" "$dir/w.out" | tail -1)" \
   "payload \"$room:$(q -c "SELECT max(seq) FROM pod.room_events WHERE room_id = '$room'")\"" "with '<room>:<seq>'"
run w "SELECT pod.room_events_wake('$room');"
post three; sentinel
is "$(notified)" 1 "after pod.room_events_wake it does not any more"

# the race: an event's transaction is open (it saw no listener) when a session starts
# listening; the listener waits for it, then reads it
run i "BEGIN; INSERT INTO pod.messages (room_id, data) VALUES ('$room', '{\"text\": \"raced\"}');"
mark=$((mark + 1)); race=$mark
printf "SELECT pod.room_events_sleep('%s');\nSELECT 'seen ' || count(*) FROM pod.room_events e JOIN pod.messages m ON m.id = e.message_id WHERE m.data->>'text' = 'raced';\n\\\\echo @@%d\n" \
  "$room" "$race" >&"${fd[w]}"
ok "$(wait_for 20 test "$(q -c "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'roomwake-w'")" = Lock; echo $?)" \
  "a session starting to listen waits for the open transaction whose event notified nobody"
run i "COMMIT;"
wait_for 20 grep -qx "@@$race" "$dir/w.out"
ok "$(grep -qx 'seen 1' "$dir/w.out"; echo $?)" "once it commits, the listener's read has its event"
run w "SELECT pod.room_events_wake('$room');"

# a pod follows the room (pod.chat_follow: under the room's row lock) while an event
# waits for that lock: the event is numbered after the follow and pushed to it. A
# deletion (no foreign key check on the room before its event, unlike a new message)
follower="http://follower-$$.example"
mid=$(q -c "INSERT INTO pod.messages (room_id, data) VALUES ('$room', '{\"text\": \"to delete\"}') RETURNING id")
run w "BEGIN; SELECT 1 FROM pod.rooms WHERE id = '$room' FOR UPDATE \\g /dev/null
INSERT INTO pod.room_remote_pods (room_id, pod_url, since_seq) SELECT id, '$follower', event_seq FROM pod.rooms WHERE id = '$room';"
mark=$((mark + 1)); waiting=$mark
printf "DELETE FROM pod.messages WHERE id = %s;\n\\echo @@%d\n" "$mid" "$waiting" >&"${fd[i]}"
ok "$(wait_for 20 test "$(q -c "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'roomwake-i'")" = Lock; echo $?)" \
  "a deletion's event waits for the room's row while a follow holds it"
run w "COMMIT;"
wait_for 20 grep -qx "@@$waiting" "$dir/i.out"
is "$(q -c "SELECT count(*) FROM pod.jobs j JOIN pod.room_events e ON e.room_id = '$room' AND e.seq = (j.payload->'activity'->>'seq')::bigint
            WHERE e.message_id = $mid AND e.kind = 'deleted' AND j.kind = 'deliver' AND j.target = '$follower'
              AND j.payload->'activity'->>'type' = 'chat.event' AND j.payload->'activity'->>'kind' = 'deleted'")" 1 \
  "the follow committed while the event waited: the event is pushed to the follower"
q -c "DELETE FROM pod.jobs WHERE target = '$follower'; DELETE FROM pod.room_remote_pods WHERE pod_url = '$follower'" >/dev/null

# the gateway's hub holds the lock while it has a subscriber of the room
locks() { q -c "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                 WHERE l.locktype = 'advisory' AND l.objsubid = 113 AND l.mode = 'ShareLock' AND l.granted
                   AND a.application_name = 'pgpod-gateway-listener'"; }
is "$(locks)" 0 "no subscriber: the gateway holds no room lock"
email="roomwake-$$@example.org"
q -c "SET pgpod.password_memlimit = '8MB'; SELECT pod.register('$email', 'correct horse battery')" >/dev/null
q -c "INSERT INTO pod.room_members (room_id, user_id, affiliation) SELECT '$room', id, 'member' FROM pod.users WHERE email = '$email'"
token=$(q -c "SELECT token FROM pod.login('$email', 'correct horse battery')")
curl -sN "http://127.0.0.1:$PGPOD_HTTP_PORT/rooms/$room/events" -H "Authorization: Bearer $token" >"$dir/sse.out" 2>&1 &
cpid=$!; pids+=($cpid)
wait_for 20 test "$(locks)" = 1; ok $? "a subscriber: the gateway's listener holds the room's lock$(grep -q '^HTTP\|retry:' "$dir/sse.out" || echo " (stream: $(head -c 200 "$dir/sse.out"))")"
kill "$cpid"
# (a stream notices its client left when a write fails: events make writes)
gone() { q -c "INSERT INTO pod.messages (room_id, data) VALUES ('$room', '{}')"; [[ $(locks) == 0 ]]; }
wait_for 20 gone; ok $? "the subscriber left: the lock is given back"
done_testing
