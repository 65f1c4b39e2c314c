#!/bin/bash
# The tracker's HTTP face (BEP 3, compact BEP 23, peers6 BEP 7, scrape BEP 48) on
# PGPOD_TRACKER_PORT, started by scripts/pgpod: only published files' info hashes are
# tracked (refreshed on NOTIFY), peers find each other, bad queries get a bencoded
# failure reason, counts reach api.video_files in batches, the unit verifies.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/tracker.sh"
H1=1111111111111111111111111111111111111111
H2=2222222222222222222222222222222222222222
H3=3333333333333333333333333333333333333333
cleanup() { tracker_fixture_cleanup trk400a trk400b trk400c; }
trap cleanup EXIT
cleanup
q -c "NOTIFY pod_torrents"
wait_for 10 eval '! tracker_knows $H1' # a previous run's swarm is gone
plan 27

pid=$(cat "$PGPOD_DIR/run/tracker.pid" 2>/dev/null)
ok "$(kill -0 "$pid" 2>/dev/null; echo $?)" "scripts/pgpod started the tracker (pid $pid)"
grep -q "PGPOD_TRACKER_URL='http://127.0.0.1:$tracker_port/announce'" "$PGPOD_DIR/env"
ok $? ".pgpod/env exports PGPOD_TRACKER_URL"
is "$(q -c "SELECT usename FROM pg_stat_activity WHERE application_name = 'pgpod-tracker'")" pgpod_tracker \
  "it is connected as pgpod_tracker"

tracker_fixture trk400a published $H1 >/dev/null
tracker_fixture trk400b published $H2 >/dev/null
tracker_fixture trk400c uploaded $H3 >/dev/null
q -c "NOTIFY pod_torrents, '1'"
wait_for 10 tracker_knows $H1
ok $? "after NOTIFY pod_torrents the tracker knows a published file's info hash"

r=$(probe announce "$tracker_url" $H3 -qB0001-000000000001 7001 100 started)
is "$(jget 'd["failure reason"]' <<<"$r")" "unknown info_hash: this tracker serves only this pod's published files" \
  "an unpublished file's info hash is refused with a failure reason"
r=$(probe announce "$tracker_url" 9999999999999999999999999999999999999999 -qB0001-000000000001 7001 100 started)
is "$(jget 'd["status"], "failure reason" in d' <<<"$r")" "(200, True)" "an unknown info hash: 200 with a failure reason"
r=$(curl -s "$tracker_url?info_hash=abc&peer_id=-qB0001-000000000001&port=1&left=0")
is "$r" "d14:failure reason32:invalid info_hash (not 20 bytes)e" "a 3-byte info_hash: bencoded failure reason"
r=$(curl -s "$tracker_url?info_hash=%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11&peer_id=short&port=1&left=0")
is "$r" "d14:failure reason30:invalid peer_id (not 20 bytes)e" "a short peer_id: failure reason"
r=$(curl -s "$tracker_url?info_hash=%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11&peer_id=-qB0001-000000000001&port=99999&left=0")
is "$r" "d14:failure reason12:invalid porte" "port 99999: failure reason"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$tracker_port/nothing")" 404 "another path: 404"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$tracker_url")" 405 "POST: 405"

# Three peers: a seeder and two leechers; each sees the others, never itself.
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000001 7001 0 started)
is "$(jget 'd["complete"], d["incomplete"], d["peers"], d["interval"]' <<<"$r")" "(1, 0, [], 1800)" \
  "a seeder announces: complete 1, no other peer yet, interval 1800"
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000002 7002 500 started)
is "$(jget 'd["complete"], d["incomplete"], d["peers"]' <<<"$r")" "(1, 1, ['127.0.0.1:7001'])" \
  "a leecher gets the seeder in compact form (BEP 23)"
r=$(probe announce "http://[::1]:$tracker_port/announce" $H1 -qB0001-000000000003 7003 500 started)
is "$(jget 'sorted(d["peers"]), d.get("peers6")' <<<"$r")" "(['127.0.0.1:7001', '127.0.0.1:7002'], [])" \
  "an IPv6 client gets the IPv4 peers"
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000002 7002 500)
is "$(jget 'sorted(d["peers"]), d["peers6"]' <<<"$r")" "(['127.0.0.1:7001'], ['::1:7003'])" \
  "and an IPv4 client gets the IPv6 peer in peers6 (BEP 7)"
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000002 7002 500 - 0)
is "$(jget 'sorted(d["peers"]), sorted(d["peer_ids"])' <<<"$r")" \
  "(['127.0.0.1:7001', '::1:7003'], ['-qB0001-000000000001', '-qB0001-000000000003'])" \
  "compact=0: a list of dictionaries with ip, peer id and port"
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000002 7002 0 completed)
is "$(jget 'd["complete"], d["incomplete"], d["downloaded"]' <<<"$r")" "(2, 1, 1)" \
  "event=completed: the leecher becomes a seeder, downloaded 1"
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000002 7002 0 completed)
is "$(jget 'd["downloaded"]' <<<"$r")" "1" "a second completed from the same peer is not counted again"
r=$(probe scrape "$tracker_url" $H1 $H2 9999999999999999999999999999999999999999)
is "$(jget 'd["files"]["'$H1'"], d["files"]["'$H2'"], len(d["files"])' <<<"$r")" \
  "({'complete': 2, 'downloaded': 1, 'incomplete': 1}, {'complete': 0, 'downloaded': 0, 'incomplete': 0}, 2)" \
  "scrape (BEP 48): counts per known hash, unknown ones left out"
is "$(curl -s "http://127.0.0.1:$tracker_port/scrape")" "d14:failure reason35:scrape needs at least one info_hashe" \
  "scrape without info_hash: failure reason"

# Counts reach SQL in batches: many announces, few updates of the row.
counts() { q -c "SELECT seeders || '/' || leechers || '/' || completed FROM api.video_files WHERE info_hash = '$H1'"; }
want_counts() { [[ $(counts) == "$1" ]]; }
wait_for 10 want_counts 2/1/1
ok $? "api.video_files shows seeders 2, leechers 1, completed 1"
upd() { q -c "SELECT pg_stat_clear_snapshot(); SELECT n_tup_upd + n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'pod.video_files'::regclass" | tail -1; }
before=$(upd)
for i in $(seq 10 209); do
  curl -s -o /dev/null "$tracker_url?info_hash=%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11&peer_id=-qB0001-$(printf %012d $i)&port=$((8000 + i))&left=10"
done
wait_for 10 want_counts 2/201/1
ok $? "200 more leechers: the row shows 201 leechers"
sleep_ok=$(q -c "SELECT pg_sleep(1.2)"); after=$(upd)
ok "$(( after - before <= 12 ? 0 : 1 ))" "200 announces made $((after - before)) updates of pod.video_files (batched, not one per announce)"

r=$(probe announce "$tracker_url" $H1 -qB0001-000000000001 7001 0 stopped)
r=$(probe announce "$tracker_url" $H1 -qB0001-000000000002 7002 0 stopped)
wait_for 10 want_counts 0/201/1
ok $? "two stopped seeders: 0 seeders in SQL"

# Unpublishing (the state changes, NOTIFY pod_videos): the hash is no longer tracked.
q -c "UPDATE pod.videos SET state = 'failed' WHERE name = 'trk400b'; NOTIFY pod_videos"
gone() { ! tracker_knows $H2; }
wait_for 10 gone
ok $? "an unpublished video's info hash stops being tracked"
r=$(probe announce "$tracker_url" $H2 -qB0001-000000000001 7001 0 started)
ok "$(jget '0 if "failure reason" in d else 1' <<<"$r")" "and announces to it are refused"

if command -v systemd-analyze >/dev/null; then
  dir=$(mktemp -d /tmp/pgpod-trk.XXXXXX)
  sed "s#/opt/pgpod#$PGPOD_TOP#g" "$PGPOD_TOP/workers/systemd/pgpod-tracker.service" >"$dir/pgpod-tracker.service"
  out=$(systemd-analyze verify "$dir/pgpod-tracker.service" 2>&1); rc=$?
  rm -rf "$dir"
  ok $rc "systemd-analyze verify accepts workers/systemd/pgpod-tracker.service${out:+: $out}"
else
  ok 1 "systemd-analyze is installed (package systemd, in deps.txt) to verify the unit"
fi
done_testing
