#!/bin/bash
# scripts/pgpod's supervision of the daemons it starts (make start): a daemon that
# keeps dying is restarted after a backoff that doubles (1 s, 2 s, 4 s, ...), `status`
# says it is down and when it is tried again, one that exits cleanly stays down, stop
# leaves no supervisor behind, and PGPOD_RESTART_MAX_S caps the wait. The federator
# here is a stand-in that exits 3 (or 0).
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-sup.XXXXXX); chmod 755 "$dir"
export PGPOD_DIR=$dir/pod PGPOD_PG_PORT=$((PGPOD_PG_PORT + 14)) PGPOD_HTTP_PORT=$((PGPOD_HTTP_PORT + 14)) PGPOD_DB=pgpod
export PGPOD_URL_SELF=http://127.0.0.1:$PGPOD_HTTP_PORT
unset PGHOST PGPORT PGDATABASE PGUSER
cleanup() { "$top/scripts/pgpod" stop >/dev/null 2>&1; [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$dir"; }
trap cleanup EXIT
plan 8

printf '#!/bin/sh\necho "stand-in federator, exiting 3"\nexit 3\n' >"$dir/crash"
printf '#!/bin/sh\necho "stand-in federator, exiting cleanly"\nexit 0\n' >"$dir/clean"
chmod +x "$dir/crash" "$dir/clean"
PGPOD_FEDERATOR_BIN=$dir/crash "$top/scripts/pgpod" start >"$dir/start.log" 2>&1
ok $? "a pod starts with a federator that exits 3 at once"
sup=$(cat "$PGPOD_DIR/run/federator.supervisor.pid")
three() { grep -q "restart 3)" "$PGPOD_DIR/log/federator.log"; }
wait_for 30 three
at() { date -d "$(grep -o "^pgpod: [0-9T:-]*Z federator .*(restart $1)" "$PGPOD_DIR/log/federator.log" | cut -d' ' -f2)" +%s; }
elapsed=$(( $(at 3) - $(at 1) ))
ok "$( ((elapsed >= 3 && elapsed <= 8)); echo $?)" "its third death came after the backoff: 1 + 2 s after the first ($elapsed s)"
is "$(grep -o 'restarting in [0-9]*s' "$PGPOD_DIR/log/federator.log" | head -3 | tr '\n' ' ')" \
   "restarting in 1s restarting in 2s restarting in 4s " "the waits double"
status=$("$top/scripts/pgpod" status | grep '^federator:')
[[ $status == "federator: down, supervised by $sup: restarting: exited with status 3 at "*", next try in "*"s; restarts "* ]]
ok $? "status says it is down, why, and when it is tried again: $status"
"$top/scripts/pgpod" stop >/dev/null 2>&1
dead() { [[ ! -e /proc/$1 || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }   # a zombie is gone too
dead "$sup"; ok $? "stop ends the supervisor"
PGPOD_FEDERATOR_BIN=$dir/clean "$top/scripts/pgpod" start >>"$dir/start.log" 2>&1
down() { [[ ! -f $PGPOD_DIR/run/federator.supervisor.pid ]]; }
wait_for 10 down
ok $? "a daemon that exits cleanly (0) is not restarted"
status=$("$top/scripts/pgpod" status | grep '^federator:')
[[ $status == "federator: stopped (last: exited cleanly (status 0) at "* ]]
ok $? "status says how it ended: $status"
"$top/scripts/pgpod" stop >/dev/null 2>&1
: >"$PGPOD_DIR/log/federator.log"
PGPOD_RESTART_MAX_S=2 PGPOD_FEDERATOR_BIN=$dir/crash "$top/scripts/pgpod" start >>"$dir/start.log" 2>&1
wait_for 30 three
is "$(grep -o 'restarting in [0-9]*s' "$PGPOD_DIR/log/federator.log" | head -3 | tr '\n' ' ')" \
   "restarting in 1s restarting in 2s restarting in 2s " "PGPOD_RESTART_MAX_S caps the wait"
done_testing
