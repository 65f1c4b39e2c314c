#!/bin/bash
# make run: starts everything, stays in the foreground, supervises its daemons (one
# killed with SIGKILL is restarted, make status says so), and Ctrl-C (SIGINT to its
# process group) stops it all cleanly, leaving no process.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-run.XXXXXX); chmod 755 "$dir"
export PGPOD_DIR=$dir PGPOD_PG_PORT=$((PGPOD_PG_PORT + 12)) PGPOD_HTTP_PORT=$((PGPOD_HTTP_PORT + 12)) PGPOD_DB=pgpod
export PGPOD_TRACKER_PORT=$((PGPOD_HTTP_PORT + 15)) PGPOD_PEER_PORT=$((PGPOD_HTTP_PORT + 18)) # its own, not the instance's
unset PGHOST PGPORT PGDATABASE PGUSER
pid=
cleanup() {
  [[ -n $pid ]] && kill -KILL -- "-$pid" 2>/dev/null
  PGPOD_DIR=$dir "$top/scripts/pgpod" stop >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
plan 9

# A background job of a script ignores SIGINT; perl restores the default so make and
# scripts/pgpod see Ctrl-C as a terminal would deliver it.
setsid perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV' make -s -C "$top" run >"$dir/run.log" 2>&1 &
pid=$!
ready() { [[ -f $dir/env ]] && (. "$dir/env" && psql -X -Atc 'SELECT 1' >/dev/null 2>&1); }
wait_for 120 ready
ok $? "make run: the pod answers"
kill -0 "$pid" 2>/dev/null
ok $? "make run stays in the foreground"
# make run supervises what it starts: a federator killed with SIGKILL comes back.
supervised() { kill -0 "$(cat "$dir/run/federator.pid")" && kill -0 "$(cat "$dir/run/federator.supervisor.pid")"; }
wait_for 30 supervised
fed=$(cat "$dir/run/federator.pid"); sup=$(cat "$dir/run/federator.supervisor.pid")
kill -KILL "$fed"
back() { local p; p=$(cat "$dir/run/federator.pid") && [[ $p != "$fed" ]] && kill -0 "$p"; }
wait_for 20 back
ok $? "a federator killed with SIGKILL under make run is restarted by its supervisor"
status=$(make -s -C "$top" status | grep '^federator:')
[[ $status == *"supervised by $sup"*"restarts 1"* ]]
ok $? "make status says so: $status"
# the livechat daemon is one more supervised service
lc_supervised() { [[ $(make -s -C "$top" status | grep '^livechat:') == "livechat: running (pid "*", supervised by "* ]]; }
wait_for 20 lc_supervised
ok $? "make run supervises the livechat daemon too: $(make -s -C "$top" status | grep '^livechat:')"
session=$pid
kill -INT -- "-$pid"
gone() { ! kill -0 "$pid" 2>/dev/null; }
wait_for 60 gone
ok $? "Ctrl-C ends make run"
pid=
is "$(pgrep -f -- "$dir/" | tr '\n' ' ')" "" "nothing of it is left running"
dead() { [[ ! -e /proc/$1 || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }   # a zombie is gone too
dead "$sup"; ok $? "its supervisors are gone too"
is "$(pgrep -s "$session" | tr '\n' ' ')" "" "nothing of its session either (the sleeper make run waited on)"
done_testing
