#!/bin/bash
# The job queue across sessions: 8 concurrent claimers never get the same job and
# together drain the queue; NOTIFY comes once per statement and kind, never per row
# (for a sleeping worker: 301_queue_wakeups.t).
. "$(dirname "$0")/tap.sh"
dir=$(mktemp -d /tmp/pgpod-q.XXXXXX)
trap 'q -c "DELETE FROM pod.jobs WHERE kind IN (\$\$test_race\$\$, \$\$test_race2\$\$); DELETE FROM pod.job_kinds WHERE kind IN (\$\$test_race\$\$, \$\$test_race2\$\$)" >/dev/null 2>&1; rm -rf "$dir"' EXIT
plan 7

q -c "INSERT INTO pod.job_kinds (kind, description) VALUES ('test_race', 'race test'), ('test_race2', 'race test')
      ON CONFLICT DO NOTHING; DELETE FROM pod.jobs WHERE kind IN ('test_race', 'test_race2')"
q -c "INSERT INTO pod.jobs (kind, payload) SELECT 'test_race', jsonb_build_object('n', g) FROM generate_series(1, 5000) g"

# Each claimer: claim 50, complete them, until a claim comes back empty.
claimer() {
  local w=$1 ids
  while :; do
    ids=$(q -c "SELECT string_agg(id::text, ',') FROM pod.job_claim('test_race', 'w$w', 50)")
    [[ -z $ids ]] && break
    tr ',' '\n' <<<"$ids" >>"$dir/claimed.$w"
    q -c "SELECT pod.job_complete('{$ids}', 'w$w')" >>"$dir/completed.$w"
  done
}
for w in 1 2 3 4 5 6 7 8; do claimer $w & done
wait
total=$(cat "$dir"/claimed.* | wc -l)
unique=$(cat "$dir"/claimed.* | sort -u | wc -l)
is "$total" 5000 "8 concurrent claimers claimed 5000 jobs in all"
is "$unique" 5000 "no job was claimed twice"
is "$(awk '{s += $1} END {print s}' "$dir"/completed.*)" 5000 "every claimer completed what it claimed (5000 completions counted)"
workers_used=$(for f in "$dir"/claimed.*; do [[ -s $f ]] && echo x; done | wc -l)
ok "$( ((workers_used >= 2)); echo $?)" "the work was spread over several claimers ($workers_used of 8)"
is "$(q -c "SELECT count(*) FILTER (WHERE state = 'done' AND attempts = 1) || '/' || count(*) FROM pod.jobs WHERE kind = 'test_race'")" "5000/5000" \
  "all 5000 are done, each in one attempt"

# Notifications: a session hears its own notifications after each command. It sleeps
# on both kinds (pod.job_sleep), or no insert would notify (301 tests who is woken).
notes=$(psql -X -v ON_ERROR_STOP=1 \
  -c "LISTEN pod_jobs_test_race" -c "LISTEN pod_jobs_test_race2" \
  -c "SELECT pod.job_sleep('test_race'), pod.job_sleep('test_race2')" \
  -c "INSERT INTO pod.jobs (kind) SELECT CASE WHEN g % 2 = 0 THEN 'test_race' ELSE 'test_race2' END FROM generate_series(1, 2000) g" \
  -c "INSERT INTO pod.jobs (kind) SELECT 'test_race' FROM generate_series(1, 7)" \
  -c "INSERT INTO pod.jobs (kind, run_at) SELECT 'test_race', now() + interval '1 hour' FROM generate_series(1, 3)" \
  -c "SELECT 1" 2>&1 | grep -o 'Asynchronous notification "[a-z_0-9]*" with payload "[0-9]*"' | sort | tr '\n' ';')
is "$notes" 'Asynchronous notification "pod_jobs_test_race" with payload "1000";Asynchronous notification "pod_jobs_test_race" with payload "7";Asynchronous notification "pod_jobs_test_race2" with payload "1000";' \
  "2007 ready jobs in two statements: one notification per statement and kind (payload = jobs made ready); delayed jobs none"
# Cost check beside correctness: a per-row trigger would call pg_notify 2000 times.
is "$(q -c "SELECT tgtype & 1 FROM pg_trigger WHERE tgname = 'jobs_notify'")" "0" "the notify trigger is statement-level"
done_testing
