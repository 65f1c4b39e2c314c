#!/bin/bash
# Torrents and the seeder (issue 14), each beside a reference measured here:
#  1. .torrent creation for a 1 GiB file (publication → torrent stored; the seeder
#     hashes on every core) vs mktorrent -t 2 with the same piece length, same info hash;
#  2. aria2c downloading 256 MiB by magnet from pgpod's seeder vs from a libtorrent
#     seeder (the same torrent, the pod's tracker, no web seed, no DHT/LPD/PEX); then
#     aria2c always tries the encrypted handshake (MSE) first (even with
#     --bt-require-crypto=false --bt-min-crypto-level=plain, which the run checks),
#     and both seeders speak it and select plaintext; then aria2c with encryption
#     required at RC4 (--bt-require-crypto=true --bt-min-crypto-level=arc4), then one
#     client that never tries MSE (libtorrent, encryption off), from both seeders;
#  3. seeder restart to answering handshakes with 10,000 published files (goal < 1 s;
#     the reference is what hashing them again would take at the speed measured in 1).
set -euo pipefail
top=$PGPOD_TOP
work=$(mktemp -d /tmp/pgpod-bench-tor.XXXXXX); chmod 755 "$work"
lt_pid=
trap '[[ -n $lt_pid ]] && kill $lt_pid 2>/dev/null; rm -rf "$work"' EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
. "$top/tests/integration/lib/torrents.bash"
rounds=${BENCH_ROUNDS:-3}
log=$PGPOD_DIR/log/seeder.log
seeder_bin=${PGPOD_SEEDER_BIN:-$top/workers/seeder/pgpod-seeder}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# --- 1. creation --------------------------------------------------------------------
# One session waits for the torrent (wait_torrent's psql every 0.1 s, each a process
# and a backend, would take CPU from the hashing being measured).
wait_torrent_quietly() {
  q -c "SET statement_timeout = '${2:-60}s'" \
    -c "DO \$\$ BEGIN
          WHILE NOT EXISTS (SELECT 1 FROM pod.video_files WHERE id = $1 AND info_hash IS NOT NULL) LOOP
            PERFORM pg_sleep(0.01);
          END LOOP;
        END \$\$" \
    -c "SELECT encode(info_hash, 'hex') FROM pod.video_files WHERE id = $1"
}
head -c ${BENCH_BIG:-1G} /dev/urandom >"$work/big.bin"
sha=$(sha256sum <"$work/big.bin" | cut -c1-64)
cat "$work/big.bin" >/dev/null # both read it from the page cache
pl=$(q -c "SELECT pod.torrent_piece_length($(stat -c %s "$work/big.bin"))")
log2=$(awk -v p="$pl" 'BEGIN { n = 0; while (p > 1) { p /= 2; n++ } print n }')
best_mk=999 best_pod=999 best_e2e=999 same=yes
for ((r = 1; r <= rounds; r++)); do
  name="bench-$r.mp4"
  t0=$(date +%s.%N)
  mktorrent -t 2 -l "$log2" -n "$name" -a http://127.0.0.1:1/announce -o "$work/mk$r.torrent" "$work/big.bin" >/dev/null
  t1=$(date +%s.%N)
  mk=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  mkhash=$(q -c "SELECT encode(info_hash, 'hex') FROM pod.torrent_info(pg_read_binary_file('$work/mk$r.torrent'))")
  t0=$(date +%s.%N)
  read -r _ vf _ < <(publish_file "$work/big.bin" "$name" 1080 "$sha")
  ih=$(wait_torrent_quietly "$vf" 120)
  t1=$(date +%s.%N)
  e2e=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  # claim → stored, from the seeder's log: the line it writes once the job is claimed
  # ("hashing video file N") to the one once pod.torrent_finish returned ("stored")
  pod=$(awk -v vf="$vf" '
    function t(s) { split(substr(s, 12, 12), a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
    index($0, "info: hashing video file " vf " ") { start = t($1) }
    index($0, "info: torrent of video file " vf " stored") { end = t($1) }
    END { if (start && end) printf "%.3f", end - start; else print "none" }' "$log")
  [[ $ih == "$mkhash" ]] || same=no
  echo "round $r: mktorrent -t 2 ${mk} s; pgpod claim→stored ${pod} s (publication→stored ${e2e} s); info hash $ih vs mktorrent $mkhash"
  best_mk=$(awk -v a="$best_mk" -v b="$mk" 'BEGIN { print (b < a) ? b : a }')
  best_pod=$(awk -v a="$best_pod" -v b="$pod" 'BEGIN { print (b < a) ? b : a }')
  best_e2e=$(awk -v a="$best_e2e" -v b="$e2e" 'BEGIN { print (b < a) ? b : a }')
done
echo "torrent creation, $(($(stat -c %s "$work/big.bin") / 1048576)) MiB, pieces of $pl: pgpod $best_pod s (best of $rounds; publication→stored $best_e2e s) vs mktorrent -t 2 $best_mk s: $(ratio "$best_pod" "$best_mk")× its time (goal ≤ 1.0); same info hash: $same"
hash_rate=$(awk -v t="$best_pod" 'BEGIN { printf "%.0f", 1073741824 / t }')

# --- 2. seeding throughput ------------------------------------------------------------
head -c 256M "$work/big.bin" >"$work/seed.bin"
read -r _ svf _ < <(publish_file "$work/seed.bin" "seed256.mp4" 720)
sih=$(wait_torrent "$svf" 60)
q -c "SELECT encode(torrent, 'base64') FROM pod.video_files WHERE id = $svf" | base64 -d >"$work/seed.torrent"
magnet=$(q -c "SELECT magnet FROM pod.video_files WHERE id = $svf" | sed 's/&ws=[^&]*//; s/&tr=udp[^&]*//; s/&tr=ws[^&]*//')
aria_get() { # aria_get DIR PORT [OPTION...]: seconds to download the magnet
  local t0 t1 d=$1 port=$2
  shift 2
  rm -rf "$d"; mkdir -p "$d"
  t0=$(date +%s.%N)
  timeout 120 aria2c -q --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false \
    --seed-time=0 --file-allocation=none --listen-port="$port" --bt-save-metadata=false --dir="$d" "$@" "$magnet" >"$d.log" 2>&1 \
    || { echo "aria2c failed: $(tail -3 "$d.log")" >&2; return 1; }
  t1=$(date +%s.%N)
  [[ $(sha256sum <"$d/seed256.mp4" | cut -c1-64) == "$(sha256sum <"$work/seed.bin" | cut -c1-64)" ]] || { echo "sha256 differs" >&2; return 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
lt_get() { # lt_get DIR PORT: seconds for libtorrent (encryption off) to download the magnet
  rm -rf "$1"; mkdir -p "$1"
  /usr/bin/python3 - "$magnet" "$1" "$2" <<'PY' || return 1
import sys, time, libtorrent as lt
ses = lt.session({'listen_interfaces': '127.0.0.1:%s' % sys.argv[3], 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False, 'enable_outgoing_utp': False, 'enable_incoming_utp': False,
                  'allow_multiple_connections_per_ip': True,
                  'out_enc_policy': 2, 'in_enc_policy': 2})  # pe_disabled: the plain handshake only
atp = lt.parse_magnet_uri(sys.argv[1]); atp.save_path = sys.argv[2]
t0 = time.time(); h = ses.add_torrent(atp)
while not h.status().is_seeding:
    if time.time() - t0 > 120: sys.exit('libtorrent: timed out')
    time.sleep(0.01)
print('%.3f' % (time.time() - t0))
PY
  [[ $(sha256sum <"$1/seed256.mp4" | cut -c1-64) == "$(sha256sum <"$work/seed.bin" | cut -c1-64)" ]] || { echo "sha256 differs" >&2; return 1; }
}
stop_seeder() { local p; p=$(cat "$PGPOD_DIR/run/seeder.pid"); kill -TERM "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; }
seeded() { [[ -n $(bt_handshake "$sih") ]]; }
start_seeder() { "$top/scripts/pgpod" start >/dev/null 2>&1; wait_for 20 seeded; }
wait_for() { local d=$((SECONDS + $1)); shift; until "$@" >/dev/null 2>&1; do ((SECONDS < d)) || return 1; sleep 0.1; done; }
cp "$work/seed.bin" "$work/seed256.mp4"
# Which handshake aria2c sends first (a listener posing as the only peer records it).
for opts in "" "--bt-require-crypto=false --bt-min-crypto-level=plain"; do
  /usr/bin/python3 "$top/tests/bench/aria2_first_handshake.py" "$(client_port 5)" "$(client_port 6)" "$work/probe.torrent" 8 \
    >"$work/probe.log" &
  probe_pid=$!
  wait_for 10 test -s "$work/probe.torrent" # written once its tracker and listener are up
  timeout 10 aria2c -q --enable-dht=false --bt-enable-lpd=false --enable-peer-exchange=false --listen-port="$(client_port 4)" \
    --dir="$work/probe" $opts "$work/probe.torrent" >/dev/null 2>&1 &
  aria_pid=$!
  wait "$probe_pid" || true
  kill "$aria_pid" 2>/dev/null; wait "$aria_pid" 2>/dev/null || true
  rm -f "$work/probe.torrent"
  echo "aria2c ${opts:-(default options)}: $(tr '\n' ';' <"$work/probe.log")"
done
rc4=(--bt-require-crypto=true --bt-min-crypto-level=arc4)
best_pg=999 best_lt=999 best_pgl=999 best_ltl=999 best_pgr=999 best_ltr=999 all_pg= all_lt=
for ((r = 1; r <= rounds; r++)); do
  wait_for 20 seeded_swarm "$sih"
  pg=$(aria_get "$work/dl-pg" "$(client_port 1)")
  pgr=$(aria_get "$work/dl-pgr" "$(client_port 1)" "${rc4[@]}")
  pgl=$(lt_get "$work/dl-pgl" "$(client_port 4)")
  stop_seeder
  /usr/bin/python3 - "$work/seed.torrent" "$work" "$(client_port 2)" >"$work/lt.log" 2>&1 <<'PY' &
import sys, time, libtorrent as lt
ses = lt.session({'listen_interfaces': '127.0.0.1:%s' % sys.argv[3], 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False, 'enable_outgoing_utp': False, 'enable_incoming_utp': False,
                  'allow_multiple_connections_per_ip': True,
                  'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification})
atp = lt.add_torrent_params(); atp.ti = lt.torrent_info(sys.argv[1]); atp.save_path = sys.argv[2]
atp.flags |= lt.torrent_flags.seed_mode
atp.url_seeds = []
h = ses.add_torrent(atp)
for u in h.url_seeds(): h.remove_url_seed(u)
while True:
    for a in ses.pop_alerts():
        if isinstance(a, lt.tracker_reply_alert): print('announced', flush=True)
    time.sleep(0.05)
PY
  lt_pid=$!
  wait_for 20 grep -q announced "$work/lt.log" # the libtorrent seeder announced itself
  lt=$(aria_get "$work/dl-lt" "$(client_port 3)")
  ltr=$(aria_get "$work/dl-ltr" "$(client_port 3)" "${rc4[@]}")
  ltl=$(lt_get "$work/dl-ltl" "$(client_port 4)")
  kill "$lt_pid"; wait "$lt_pid" 2>/dev/null || true; lt_pid=
  start_seeder
  echo "round $r: aria2c 256 MiB from pgpod's seeder ${pg} s, from libtorrent's ${lt} s; aria2c over RC4 from pgpod's ${pgr} s, from libtorrent's ${ltr} s; libtorrent (no encryption) from pgpod's ${pgl} s, from libtorrent's ${ltl} s"
  best_pgl=$(awk -v a="$best_pgl" -v b="$pgl" 'BEGIN { print (b < a) ? b : a }')
  best_ltl=$(awk -v a="$best_ltl" -v b="$ltl" 'BEGIN { print (b < a) ? b : a }')
  best_pg=$(awk -v a="$best_pg" -v b="$pg" 'BEGIN { print (b < a) ? b : a }')
  best_lt=$(awk -v a="$best_lt" -v b="$lt" 'BEGIN { print (b < a) ? b : a }')
  best_pgr=$(awk -v a="$best_pgr" -v b="$pgr" 'BEGIN { print (b < a) ? b : a }')
  best_ltr=$(awk -v a="$best_ltr" -v b="$ltr" 'BEGIN { print (b < a) ? b : a }')
  all_pg+=" $pg" all_lt+=" $lt"
done
echo "seeding, aria2c 256 MiB by magnet (tracker + peer wire): pgpod $(awk -v t="$best_pg" 'BEGIN { printf "%.0f", 256 / t }') MiB/s vs libtorrent $(awk -v t="$best_lt" 'BEGIN { printf "%.0f", 256 / t }') MiB/s: $(ratio "$best_lt" "$best_pg")× (goal ≥ 0.9)"
echo "seeding, aria2c rounds (s): pgpod$all_pg; libtorrent$all_lt"
echo "seeding, aria2c with encryption required (RC4), 256 MiB by magnet: pgpod $(awk -v t="$best_pgr" 'BEGIN { printf "%.0f", 256 / t }') MiB/s vs libtorrent $(awk -v t="$best_ltr" 'BEGIN { printf "%.0f", 256 / t }') MiB/s: $(ratio "$best_ltr" "$best_pgr")×"
echo "seeding, libtorrent client with encryption off, 256 MiB by magnet: pgpod $(awk -v t="$best_pgl" 'BEGIN { printf "%.0f", 256 / t }') MiB/s vs libtorrent $(awk -v t="$best_ltl" 'BEGIN { printf "%.0f", 256 / t }') MiB/s: $(ratio "$best_ltl" "$best_pgl")× (the same client and options for both seeders)"

# --- 3. restart with 10,000 files -------------------------------------------------------
head -c 1048576 "$work/big.bin" >"$work/one.bin"
read -r _ ovf ofile < <(publish_file "$work/one.bin" "restart-0.mp4" 144)
wait_torrent "$ovf" 60 >/dev/null
q <<SQL
INSERT INTO pod.videos (channel_id, name, state)
  SELECT (SELECT id FROM pod.channels WHERE name = 'torrent_tests'), 'restart-' || g, 'published' FROM generate_series(1, 10000) g;
INSERT INTO pod.video_files (video_uuid, resolution, file_id, piece_length, pieces, torrent, info_hash, magnet)
  SELECT v.uuid, 144, '$ofile', 16384, p.pieces, t.t, (pod.torrent_info(t.t)).info_hash, 'magnet:?xt=urn:btih:x'
    FROM pod.videos v,
         LATERAL (SELECT decode(repeat(md5(v.name) || substr(md5(v.name), 1, 8), 64), 'hex') AS pieces) p,
         LATERAL (SELECT pod.torrent_build(v.name || '.mp4', 1048576, 16384, p.pieces, pod.tracker_urls(), '{}') AS t) t
   WHERE v.name ~ '^restart-[0-9]+$' AND v.name <> 'restart-0';
SQL
nfiles=$(q -c "SELECT count(*) FROM pod.torrents_seeded")
probes=$(q -c "SELECT string_agg(encode(info_hash, 'hex'), ' ') FROM (SELECT info_hash FROM pod.video_files f JOIN pod.videos v ON v.uuid = f.video_uuid
               WHERE v.name ~ '^restart-' ORDER BY f.id DESC LIMIT 3) s")
best_rs=999
for ((r = 1; r <= rounds; r++)); do
  stop_seeder
  rs=$(PGHOST=$PGHOST PGPORT=$PGPORT PGDATABASE=$PGDATABASE PGUSER=pgpod_seeder PGPOD_STORE_DIR=$store \
       /usr/bin/python3 "$top/tests/bench/seeder_restart.py" "$seeder_bin" "$log" "$PGPOD_DIR/run/seeder.pid" "$peer_port" $probes)
  echo "round $r: seeder start → handshakes answered for the newest files: $rs s ($(grep -o 'seeding [0-9]* files' "$log" | tail -1))"
  [[ $rs == timeout ]] && continue
  best_rs=$(awk -v a="$best_rs" -v b="$rs" 'BEGIN { print (b < a) ? b : a }')
done
rehash=$(awk -v n="$nfiles" -v r="$hash_rate" 'BEGIN { printf "%.1f", n * 1048576 / r }')
echo "seeder restart, $nfiles published files: serving again in $best_rs s (goal < 1 s); hashing them again would take about $rehash s at this run's hashing speed"
