#!/bin/bash
# Torrents and the seeder with real clients: a published file gets a .torrent that
# transmission-show reads and mktorrent reproduces (same info hash), served by the
# gateway as application/x-bittorrent; aria2c downloads it by .torrent through the
# WebSeed only and by magnet link only (the pod's tracker, then the seeder's peer
# wire and ut_metadata); libtorrent does the same over the HTTP and the UDP tracker;
# both again with encryption required (MSE, RC4 only: aria2c --bt-require-crypto,
# libtorrent pe_forced), and aria2c's default encrypted handshake gets plaintext;
# hostile peers are refused while the seeder keeps serving; unpublishing stops it.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/torrents.bash"
dir=$(mktemp -d /tmp/pgpod-torrents.XXXXXX)
chmod 755 "$dir"
trap 'rm -rf "$dir"' EXIT
plan 48
lib=$(dirname "$0")/lib
aria() { timeout 90 aria2c -q --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
           --enable-peer-exchange=false --seed-time=0 --allow-overwrite=true --auto-file-renaming=false \
           --file-allocation=none --summary-interval=0 "$@"; }

# Two published files: a clip of 5 MB + a little, and a small one.
head -c 5300001 /dev/urandom >"$dir/clip.mp4"
head -c 700000 /dev/urandom >"$dir/small.mp4"
read -r v1 vf1 f1 < <(publish_file "$dir/clip.mp4" "clip 720p.mp4" 720)
read -r v2 vf2 f2 < <(publish_file "$dir/small.mp4" "small.mp4" 360)
ih1=$(wait_torrent "$vf1" 60)
ok $? "the seeder hashed the first file and stored its torrent ($ih1)" || { cat "$PGPOD_DIR/log/seeder.log" >&2; exit 1; }
ih2=$(wait_torrent "$vf2" 60)
ok $? "... and the second ($ih2)"
want1=$(sha256sum <"$dir/clip.mp4" | cut -c1-64)

# Every stored .torrent, read by transmission-show.
all_ok=0
while IFS='|' read -r id ih name size pl; do
  q -c "SELECT encode(torrent, 'base64') FROM pod.video_files WHERE id = $id" | base64 -d >"$dir/$id.torrent"
  show=$(transmission-show "$dir/$id.torrent")
  got_name=$(sed -n 's/^  Name: //p' <<<"$show" | head -1)
  got_hash=$(sed -n 's/^  Hash: //p' <<<"$show")
  got_count=$(sed -n 's/^  Piece Count: //p' <<<"$show")
  want_count=$(((size + pl - 1) / pl))
  if [[ $got_name != "$name" || $got_hash != "$ih" || $got_count != "$want_count" ]]; then
    all_ok=1; printf '# transmission-show disagrees on %s: %s %s %s\n' "$id" "$got_name" "$got_hash" "$got_count" >&2
  fi
  # transmission-show prints the size rounded (kB = 1000 B): check its value to 1%
  got_size=$(sed -n 's/^  Total Size: //p' <<<"$show")
  awk -v s="$size" -v t="$got_size" 'BEGIN { split(t, a, " "); m = (a[2] == "kB") ? 1e3 : (a[2] == "MB") ? 1e6 : (a[2] == "GB") ? 1e9 : 1;
    d = a[1] * m - s; if (d < 0) d = -d; exit !(d <= s / 100 + 1) }' || { all_ok=1; echo "# size $got_size vs $size" >&2; }
done < <(q -c "SELECT f.id, encode(f.info_hash, 'hex'), fl.filename_visible, b.size, f.piece_length
               FROM pod.video_files f JOIN pod.files fl ON fl.id = f.file_id JOIN pod.blobs b ON b.sha256 = fl.sha256
              WHERE f.torrent IS NOT NULL")
ok $all_ok "transmission-show reads every stored .torrent: same name, info hash, piece count, size"

# Piece lengths: what libtorrent's create_torrent picks for the same sizes.
sizes="16384 700000 3000000 5300001 104857600 314572800 1073741824 4294967296 1099511627776"
ltpl=$(/usr/bin/python3 -c "
import sys, libtorrent as lt
out = []
for s in sys.argv[1:]:
    fs = lt.file_storage(); fs.add_file('x', int(s)); out.append(str(lt.create_torrent(fs, 0).piece_length()))
print(' '.join(out))" $sizes)
is "$(q -c "SELECT string_agg(pod.torrent_piece_length(s)::text, ' ' ORDER BY o) FROM unnest('{${sizes// /,}}'::bigint[]) WITH ORDINALITY AS x(s, o)")" \
  "$ltpl" "piece lengths are libtorrent's for 16 KiB to 1 TiB ($ltpl)"

# mktorrent with the same piece length and name gives the same info hash.
pl1=$(q -c "SELECT piece_length FROM pod.video_files WHERE id = $vf1")
log2=$(awk -v p="$pl1" 'BEGIN { n = 0; while (p > 1) { p /= 2; n++ } print n }')
cp "$dir/clip.mp4" "$dir/clip 720p.mp4"
mktorrent -l "$log2" -a http://127.0.0.1:1/announce -o "$dir/mk.torrent" "$dir/clip 720p.mp4" >/dev/null 2>&1
is "$(transmission-show "$dir/mk.torrent" | sed -n 's/^  Hash: //p')" "$ih1" "mktorrent -l $log2 on the same file gives the same info hash"
is "$(q -c "SELECT info_hash = (SELECT info_hash FROM pod.torrent_info(pg_read_binary_file('$dir/mk.torrent')))
            FROM pod.video_files WHERE id = $vf1")" t "pod.torrent_info reads mktorrent's torrent with that info hash"

# The gateway serves the .torrent; anyone may fetch it.
url=$(q -c "SELECT torrent_url FROM api.video_files WHERE info_hash = '$ih1'")
is "$url" "$PGPOD_URL/torrents/$ih1.torrent" "api.video_files.torrent_url"
ct=$(curl -s -o "$dir/gw.torrent" -w '%{http_code} %{content_type}' "$url")
is "$ct" "200 application/x-bittorrent" "GET /torrents/<info hash>.torrent: 200 application/x-bittorrent"
cmp -s "$dir/gw.torrent" "$dir/$vf1.torrent"
ok $? "... the stored bytes"
is "$(curl -s -o /dev/null -w '%{http_code}' "$PGPOD_URL/torrents/$(printf '0%.0s' {1..40}).torrent")" 404 "an unknown info hash: 404"
is "$(curl -s -o /dev/null -w '%{http_code}' "$PGPOD_URL/torrents/xyz.torrent")" 404 "a malformed name: 404"
magnet1=$(q -c "SELECT magnet FROM api.video_files WHERE info_hash = '$ih1'")
is "$(q -c "SELECT magnet FROM api.videos WHERE uuid = '$v1'")" "$magnet1" "api.videos.magnet is the file's magnet"

# aria2c by .torrent through the WebSeed only (every tracker excluded, no DHT/LPD/PEX).
mkdir "$dir/ws"
aria --bt-exclude-tracker='*' --listen-port="$(client_port 1)" --dir="$dir/ws" "$dir/gw.torrent" 2>"$dir/aria-ws.err"
is "$(sha256sum <"$dir/ws/clip 720p.mp4" 2>/dev/null | cut -c1-64)" "$want1" "aria2c through the WebSeed only: sha256 identical"

# aria2c by magnet only: no web seed in it, so the tracker must find the seeder and the
# seeder must give the metadata (ut_metadata) and the pieces.
magnet_peer=$(sed 's/&ws=[^&]*//' <<<"$magnet1")
wait_for 20 seeded_swarm "$ih1"
ok $? "the seeder announced itself: the tracker's scrape counts a seeder"
mkdir "$dir/mag"
slog=$PGPOD_DIR/log/seeder.log
mse_lines() { grep -c "encrypted handshake (MSE) done, $1 selected" "$slog"; }
plain0=$(mse_lines plaintext)
aria --listen-port="$(client_port 2)" --dir="$dir/mag" --bt-save-metadata=false "$magnet_peer" 2>"$dir/aria-mag.err"
is "$(sha256sum <"$dir/mag/clip 720p.mp4" 2>/dev/null | cut -c1-64)" "$want1" "aria2c by magnet link only (tracker + peer wire + ut_metadata): sha256 identical" \
  || { tail -5 "$dir/aria-mag.err" >&2; tail -20 "$slog" >&2; }
ok "$(($(mse_lines plaintext) > plain0 ? 0 : 1))" "... aria2c's first handshake was the encrypted one, and the seeder selected plaintext"

# The same with encryption required, RC4 only: aria2c then makes no plain connection.
rc40=$(mse_lines RC4)
mkdir "$dir/mag-rc4"
aria --bt-require-crypto=true --bt-min-crypto-level=arc4 --listen-port="$(client_port 2)" --dir="$dir/mag-rc4" \
  --bt-save-metadata=false "$magnet_peer" 2>"$dir/aria-rc4.err"
is "$(sha256sum <"$dir/mag-rc4/clip 720p.mp4" 2>/dev/null | cut -c1-64)" "$want1" "aria2c by magnet, --bt-require-crypto=true --bt-min-crypto-level=arc4: sha256 identical" \
  || { tail -5 "$dir/aria-rc4.err" >&2; tail -20 "$slog" >&2; }
rc41=$(mse_lines RC4)
ok "$((rc41 > rc40 ? 0 : 1))" "... over RC4 (the seeder selected RC4 $((rc41 - rc40)) times)"

# libtorrent over the HTTP tracker only, then over the UDP tracker only.
http_tr=$(python3 -c "import urllib.parse as u; print(u.quote('http://127.0.0.1:$tracker_port/announce', safe=''))")
udp_tr=$(python3 -c "import urllib.parse as u; print(u.quote('udp://127.0.0.1:$tracker_port/announce', safe=''))")
base=$(sed 's/&tr=[^&]*//g; s/&ws=[^&]*//' <<<"$magnet1")
mkdir "$dir/lth" "$dir/ltu"
/usr/bin/python3 "$lib/lt_client.py" "$base&tr=$http_tr" "$dir/lth" "$(client_port 3)" 90 >"$dir/lth.log" 2>&1
ok $? "libtorrent by magnet over the HTTP tracker finished" || cat "$dir/lth.log" >&2
is "$(sha256sum <"$dir/lth/clip 720p.mp4" 2>/dev/null | cut -c1-64)" "$want1" "... sha256 identical"
grep -q metadata_received_alert "$dir/lth.log"
ok $? "... the metadata came over ut_metadata"
/usr/bin/python3 "$lib/lt_client.py" "$base&tr=$udp_tr" "$dir/ltu" "$(client_port 4)" 90 >"$dir/ltu.log" 2>&1
ok $? "libtorrent by magnet over the UDP tracker finished" || cat "$dir/ltu.log" >&2
is "$(sha256sum <"$dir/ltu/clip 720p.mp4" 2>/dev/null | cut -c1-64)" "$want1" "... sha256 identical"
# libtorrent with encryption forced both ways, RC4 only (pe_forced, allowed_enc_level rc4)
mkdir "$dir/ltr"
/usr/bin/python3 "$lib/lt_client.py" "$base&tr=$http_tr" "$dir/ltr" "$(client_port 5)" 90 rc4 >"$dir/ltr.log" 2>&1
ok $? "libtorrent by magnet with encryption forced (RC4 only) finished" || { cat "$dir/ltr.log" >&2; tail -20 "$slog" >&2; }
is "$(sha256sum <"$dir/ltr/clip 720p.mp4" 2>/dev/null | cut -c1-64)" "$want1" "... sha256 identical"
ok "$(($(mse_lines RC4) > rc41 ? 0 : 1))" "... over RC4"

# Hostile peers, then a good one on the same daemon.
out=$(/usr/bin/python3 "$lib/bad_peer.py" "$peer_port" "$ih2" "$dir/small.mp4" \
      "$(q -c "SELECT piece_length FROM pod.video_files WHERE id = $vf2")" 2>&1)
while read -r line; do
  [[ $line == ok* || $line == "not ok"* ]] || { echo "# $line" >&2; continue; }
  ok "$([[ $line == ok* ]]; echo $?)" "peer wire: ${line#*- }"
done <<<"$out"
seeder_pid=$(cat "$PGPOD_DIR/run/seeder.pid")
kill -0 "$seeder_pid"
ok $? "the seeder is still running"

# Unpublishing stops the seeding of that video's files.
q -c "UPDATE pod.videos SET state = 'failed' WHERE uuid = '$v2'"
gone() { [[ -z $(bt_handshake "$ih2") ]]; }
wait_for 10 gone
ok $? "an unpublished video's file is no longer seeded (handshake refused)"
[[ -n $(bt_handshake "$ih1") ]]
ok $? "... while the published one still is"
done_testing
