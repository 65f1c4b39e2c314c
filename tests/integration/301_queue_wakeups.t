#!/bin/bash
# Queue wake-ups across sessions: an insert notifies pod_jobs_<kind> only when a worker
# of the kind is asleep (pod.job_sleep, or two short claims in a row), and a worker
# that goes to sleep while a transaction is inserting waits for it and then sees its
# job, so no job is left without a wake-up. Sessions are psql processes fed through
# FIFOs; "nothing was notified" is checked against a later sentinel NOTIFY from the
# same inserting session (notifications arrive in commit order).
. "$(dirname "$0")/tap.sh"
dir=$(mktemp -d /tmp/pgpod-wake.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  q -c "DELETE FROM pod.jobs WHERE kind = 'test_wake'; DELETE FROM pod.job_kinds WHERE kind = 'test_wake'" >/dev/null 2>&1
  [[ -n ${KEEP:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 10

q -c "INSERT INTO pod.job_kinds (kind, description) VALUES ('test_wake', 'wake-up test') ON CONFLICT DO NOTHING;
      DELETE FROM pod.jobs WHERE kind = 'test_wake'"

# session NAME: a psql reading commands from $dir/NAME.in, writing to $dir/NAME.out.
declare -A fd
session() {
  mkfifo "$dir/$1.in"
  PGAPPNAME="wake-$1" psql -X -At -v ON_ERROR_STOP=0 <"$dir/$1.in" >"$dir/$1.out" 2>&1 &
  pids+=($!)
  exec {fd[$1]}>"$dir/$1.in"
}
mark=0
# run NAME SQL: sends SQL and waits until the session has run it; the last number it
# printed is in $dir/NAME.last.
run() {
  local before; before=$(wc -l <"$dir/$1.out")
  mark=$((mark + 1))
  printf '%s\n\\echo @@%d\n' "$2" "$mark" >&"${fd[$1]}"
  wait_for 20 grep -qx "@@$mark" "$dir/$1.out" || { echo "# session $1 did not finish: $2" >&2; return 1; }
  tail -n +$((before + 1)) "$dir/$1.out" | grep -x '[0-9]*' | tail -1 >"$dir/$1.last"
}
notified() { grep -c "notification \"pod_jobs_test_wake\"" "$dir/w.out"; }
# sentinel: the inserter notifies test_wake_sentinel_N; wait until the worker has it,
# then every earlier notification of the inserter has reached the worker too.
sentinel=0
sentinel() {
  sentinel=$((sentinel + 1))
  run i "NOTIFY test_wake_sentinel, '$sentinel';"
  wait_for 20 bash -c "printf 'SELECT 1;\n' >&${fd[w]}; grep -q 'test_wake_sentinel\" with payload \"$sentinel\"' '$dir/w.out'"
}

session w   # the worker: LISTENs and claims
session i   # an inserter
run w "LISTEN pod_jobs_test_wake; LISTEN test_wake_sentinel;"
run i "SELECT pg_backend_pid();"

# 1. Nobody asleep: no NOTIFY.
run i "INSERT INTO pod.jobs (kind) SELECT 'test_wake' FROM generate_series(1, 3);"
sentinel
is "$(notified)" 0 "no worker asleep: an insert sends no NOTIFY"

# 2. A worker asleep by pod.job_sleep: every insert notifies, once per statement.
run w "SELECT pod.job_sleep('test_wake');"
run i "INSERT INTO pod.jobs (kind) SELECT 'test_wake' FROM generate_series(1, 2);"
sentinel
is "$(grep -o 'notification "pod_jobs_test_wake" with payload "[0-9]*"' "$dir/w.out" | tr '\n' ';')" \
  'notification "pod_jobs_test_wake" with payload "2";' "a worker asleep (pod.job_sleep): the insert notifies once, payload 2"
run w "SELECT pod.job_wake('test_wake');"

# 3. A busy worker (its last claim was full) is not woken.
run w "SELECT count(*) FROM pod.job_claim('test_wake', 'w', 5);"
is "$(cat "$dir/w.last")" 5 "the worker's claim is full (5 of 5)"
run i "INSERT INTO pod.jobs (kind) VALUES ('test_wake');"
sentinel
is "$(notified)" 1 "a busy worker (full claim) gets no NOTIFY: it claims again anyway"

# 4. Two short claims in a row: the worker sleeps, and an insert wakes it.
run w "SELECT count(*) FROM pod.job_claim('test_wake', 'w', 100);"
run w "SELECT count(*) FROM pod.job_claim('test_wake', 'w', 100);"
is "$(cat "$dir/w.last")" 0 "the second claim in a row is short: the worker may sleep"
run i "INSERT INTO pod.jobs (kind) VALUES ('test_wake');"
sentinel
is "$(notified)" 2 "an insert while it sleeps notifies"

# 5. The race: an insert whose transaction is open while the worker drains the queue.
run w "SELECT count(*) FROM pod.job_claim('test_wake', 'w', 1);"   # full: the worker is busy again
run i "BEGIN; INSERT INTO pod.jobs (kind, payload) VALUES ('test_wake', '{\"race\": true}');"
run w "SELECT count(*) FROM pod.job_claim('test_wake', 'w', 100);"  # short: the insert is not committed
is "$(cat "$dir/w.last")" 0 "the worker's claim does not see the uncommitted job"
# The worker's next claim takes the sleep lock first: it waits for the inserter.
before=$(wc -l <"$dir/w.out")
mark=$((mark + 1)); race_mark=$mark
printf "SELECT count(*) FROM pod.job_claim('test_wake', 'w', 100);\n\\\\echo @@%d\n" "$race_mark" >&"${fd[w]}"
ok "$(wait_for 20 test "$(q -c "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'wake-w'")" = Lock; echo $?)" \
  "the worker going to sleep waits for the open inserting transaction"
run i "COMMIT;"
wait_for 20 grep -qx "@@$race_mark" "$dir/w.out"
is "$(tail -n +$((before + 1)) "$dir/w.out" | grep -x '[0-9]*' | tail -1)" 1 \
  "once it commits, that last claim gets the job: it was never left without a wake-up"
is "$(q -c "SELECT state FROM pod.jobs WHERE kind = 'test_wake' AND payload ? 'race'")" running "the raced job is claimed"
done_testing
