#!/bin/bash
# The seeder keeps nothing but what the database holds: killed with SIGKILL it comes
# back seeding every published file from the stored torrents without hashing again;
# killed while hashing, the job's lease expires and the file is hashed by the next
# seeder; SIGTERM sends every queued block before closing, and releases the job it
# was hashing.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/torrents.bash"
dir=$(mktemp -d /tmp/pgpod-seedrestart.XXXXXX)
chmod 755 "$dir"
restore() { # the instance's seeder as tests/check started it
  local p; p=$(cat "$PGPOD_DIR/run/seeder.pid" 2>/dev/null) && kill -TERM "$p" 2>/dev/null
  for ((i = 0; i < 100; i++)); do [[ -n $p ]] && kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  "$PGPOD_TOP/scripts/pgpod" start >/dev/null 2>&1
}
trap 'restore; rm -rf "$dir"' EXIT
plan 12
log=$PGPOD_DIR/log/seeder.log
seeder_pid() { cat "$PGPOD_DIR/run/seeder.pid"; }
hashings() { grep -c 'info: hashing video file' "$log"; }
# restart_seeder ENV...: starts the seeder (as scripts/pgpod does) with extra settings;
# waits until it has loaded the table.
restart_seeder() {
  local before; before=$(grep -c 'info: seeding [0-9]* files' "$log")
  env "$@" "$PGPOD_TOP/scripts/pgpod" start >/dev/null 2>&1
  wait_for 20 bash -c "(( \$(grep -c 'info: seeding [0-9]* files' '$log') > $before ))"
}

for i in 1 2 3; do head -c $((300000 * i + 7)) /dev/urandom >"$dir/f$i.mp4"; done
for i in 1 2 3; do read -r _ vf[$i] _ < <(publish_file "$dir/f$i.mp4" "f$i.mp4" 480); done
for i in 1 2 3; do ih[$i]=$(wait_torrent "${vf[$i]}" 60) || break; done
ok $? "three published files hashed and stored"
h_before=$(hashings)
jobs_before=$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'torrent'")

# SIGKILL, then a new seeder: everything seeded again, nothing hashed again.
old=$(seeder_pid)
kill -KILL "$old"
wait_for 10 bash -c "! kill -0 $old"
restart_seeder
ok $? "a new seeder started after SIGKILL and loaded the table"
all=0
for i in 1 2 3; do [[ $(bt_handshake "${ih[$i]}") == *"${ih[$i]}"* ]] || all=1; done
ok $all "it answers the handshakes of all three files"
is "$(hashings)" "$h_before" "... without hashing anything again"
is "$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'torrent'")" "$jobs_before" "... and no new job was queued"

# SIGKILL while hashing: a large (sparse) file on one thread, short leases.
old=$(seeder_pid); kill -TERM "$old"; wait_for 10 bash -c "! kill -0 $old"
restart_seeder PGPOD_SEEDER_THREADS=1 PGPOD_SEEDER_LEASE_S=5 PGPOD_SEEDER_POLL_MS=50
truncate -s 1G "$dir/big.mp4"
bigsha=$(sha256sum <"$dir/big.mp4" | cut -c1-64)
read -r _ bigvf _ < <(publish_file "$dir/big.mp4" "big.mp4" 1080 "$bigsha")
running() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'torrent' AND state = 'running' AND target = 'video_file:$bigvf'") == 1 ]]; }
wait_for 30 running
killed_running=$(q -c "SELECT count(*) FROM pod.jobs WHERE target = 'video_file:$bigvf' AND state = 'running'")
kill -KILL "$(seeder_pid)"
stored=$(q -c "SELECT info_hash IS NOT NULL FROM pod.video_files WHERE id = $bigvf")
if [[ $killed_running == 1 && $stored == f ]]; then
  ok 0 "SIGKILL landed while the seeder was hashing (job running, nothing stored)"
else
  ok 1 "SIGKILL landed while the seeder was hashing (job running: $killed_running, stored: $stored)"
fi
restart_seeder PGPOD_SEEDER_THREADS=1 PGPOD_SEEDER_LEASE_S=5 PGPOD_SEEDER_POLL_MS=50
bigih=$(wait_torrent "$bigvf" 60)
ok $? "after the lease expired the next seeder hashed it and stored its torrent"
is "$(q -c "SELECT attempts || ' ' || state FROM pod.jobs WHERE target = 'video_file:$bigvf'")" "2 done" "... in a second attempt of the same job"
[[ $(bt_handshake "$bigih") == *"$bigih"* ]]
ok $? "... and seeds it"

# SIGTERM with 40 blocks queued by a peer: all of them arrive, then the seeder closes.
read -r got closed < <(/usr/bin/python3 "$(dirname "$0")/lib/drain_peer.py" "$peer_port" "$bigih" "$(seeder_pid)" 40)
is "$got $closed" "40 1" "SIGTERM: the 40 queued blocks were sent, then the connection closed"

# SIGTERM while hashing: the job goes back to the queue at once.
restart_seeder PGPOD_SEEDER_THREADS=1 PGPOD_SEEDER_LEASE_S=300 PGPOD_SEEDER_POLL_MS=50
read -r _ big2vf _ < <(publish_file "$dir/big.mp4" "big2.mp4" 1080 "$bigsha")
running2() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE state = 'running' AND target = 'video_file:$big2vf'") == 1 ]]; }
wait_for 30 running2
old=$(seeder_pid); kill -TERM "$old"
wait_for 10 bash -c "! kill -0 $old"
ok $? "SIGTERM while hashing: the seeder exits"
st=$(q -c "SELECT state || ' ' || (info_hash IS NULL) FROM pod.jobs j, pod.video_files f WHERE j.target = 'video_file:$big2vf' AND f.id = $big2vf")
if [[ $st == "done false" ]]; then ok 1 "... the job was released (it finished before the signal: $st)"
else is "$st" "waiting true" "... and its job is waiting again (released, not left to its 300 s lease)"; fi
done_testing
