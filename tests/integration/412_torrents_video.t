#!/bin/bash
# End to end, with the real daemons of the instance: a short clip made with ffmpeg's
# test sources is uploaded (POST /upload), made a video (POST /rpc/video_create),
# transcoded by the transcoder (ladder 720/360 via the transcode.ladder setting), and
# every MP4 and every HLS rendition file gets a torrent from the seeder — playlists,
# the thumbnail and the preview none. aria2c then downloads the 720p MP4 by magnet
# link only (tracker + peer wire + ut_metadata; DHT, LPD, PEX off; the magnet's web
# seed removed) and libtorrent an HLS rendition file over the UDP tracker only; both
# are sha256-identical to GET /files/<id>.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/lib/torrents.bash"
url=$PGPOD_URL
lib=$(dirname "$0")/lib
work=$(mktemp -d /tmp/pgpod-torvid.XXXXXX)
chmod 755 "$work"
cleanup() {
  q -c "DELETE FROM pod.setting_overrides WHERE name = 'transcode.ladder'" >/dev/null 2>&1
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
plan 13

q -c "INSERT INTO pod.setting_overrides (name, value) VALUES ('transcode.ladder', '[720, 360]')
      ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value" >/dev/null
ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 \
  -t 2 -c:v libx264 -preset ultrafast -c:a aac -ac 1 -shortest "$work/clip.mp4"

email="torvid$$@example.org"
curl -sf -X POST "$url/rpc/register" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long password\"}" >/dev/null
token=$(curl -sf -X POST "$url/rpc/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long password\"}" | sed 's/.*"token" *: *"\([^"]*\)".*/\1/')
auth=(-H "Authorization: Bearer $token")
channel=$(curl -sf -X POST "$url/channels" "${auth[@]}" -H 'Content-Type: application/json' \
  -H 'Prefer: return=representation' -H 'Accept: application/vnd.pgrst.object+json' \
  -d "{\"name\":\"torvid$$\",\"display_name\":\"Torrent clips\"}" | sed 's/.*"id" *: *\([0-9]*\).*/\1/')
file=$(curl -sf -X POST "$url/upload?filename=clip.mp4" "${auth[@]}" -H 'Content-Type: video/mp4' \
         --data-binary @"$work/clip.mp4" | sed 's/.*"id" *: *"\([^"]*\)".*/\1/')
video=$(curl -s -X POST "$url/rpc/video_create" "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"channel_id\":$channel,\"file_id\":\"$file\",\"name\":\"Torrent clip\"}" | sed -n 's/.*"uuid" *: *"\([^"]*\)".*/\1/p')
[[ $channel =~ ^[0-9]+$ && -n $file && -n $video ]]
ok $? "a clip uploaded through POST /upload and made a video through POST /rpc/video_create" || exit 1

ended() { [[ $(q -c "SELECT state FROM pod.videos WHERE uuid = '$video'") == @(published|failed) ]]; }
wait_for 120 ended
is "$(q -c "SELECT state FROM pod.videos WHERE uuid = '$video'")" published "the transcoder published it" ||
  { tail -20 "$PGPOD_DIR/log/transcoder.log" >&2; exit 1; }
is "$(q -c "SELECT string_agg(kind || resolution, ' ' ORDER BY kind, resolution DESC) FROM pod.video_files WHERE video_uuid = '$video'")" \
  "hls720 hls360 mp4720 mp4360" "an MP4 and an HLS rendition per rung of the ladder (720, 360)"

all_torrents() {
  [[ $(q -c "SELECT count(*) FILTER (WHERE info_hash IS NOT NULL) FROM pod.video_files WHERE video_uuid = '$video'") == 4 ]]
}
wait_for 90 all_torrents
ok $? "the seeder stored a torrent for each of the four files" || { tail -20 "$PGPOD_DIR/log/seeder.log" >&2; exit 1; }
# exactly one torrent job per video file, none for anything else of the video
is "$(q -c "SELECT count(*) || ' ' || count(DISTINCT j.target) || ' ' || bool_and(vf.id IS NOT NULL)
              FROM pod.jobs j LEFT JOIN pod.video_files vf ON j.target = 'video_file:' || vf.id
             WHERE j.kind = 'torrent' AND j.target IN (SELECT 'video_file:' || id FROM pod.video_files WHERE video_uuid = '$video')")" \
  "4 4 true" "one torrent job per MP4 and per HLS rendition file"
is "$(q -c "SELECT count(*) FROM pod.video_files vf, pod.videos v
             WHERE v.uuid = '$video' AND vf.info_hash IS NOT NULL
               AND vf.file_id IN (SELECT playlist_file_id FROM pod.video_files WHERE video_uuid = '$video'
                                  UNION ALL SELECT v.hls_file_id UNION ALL SELECT v.thumbnail_file_id
                                  UNION ALL SELECT v.preview_file_id)")" 0 \
  "no torrent for a playlist, the master, the thumbnail or the preview"
# each torrent describes its file: the HLS one is the rendition's single fMP4 file
is "$(q -c "SELECT count(*) FROM pod.video_files vf JOIN pod.files f ON f.id = vf.file_id,
                   pod.torrent_info(vf.torrent) t
             WHERE vf.video_uuid = '$video' AND t.length = f.size AND t.info_hash = vf.info_hash
               AND t.web_seeds = ARRAY[pod.file_url(vf.file_id)]")" 4 \
  "each torrent's length is its file's, its web seed the file's URL"

read -r mp4_file mp4_name magnet < <(q -F ' ' -A -c "SELECT vf.file_id, f.filename_visible, vf.magnet
    FROM pod.video_files vf JOIN pod.files f ON f.id = vf.file_id
   WHERE vf.video_uuid = '$video' AND kind = 'mp4' AND resolution = 720")
is "$(q -c "SELECT magnet FROM api.videos WHERE uuid = '$video'")" "$magnet" "api.videos.magnet is the 720p MP4's"
is "$(curl -s "$url/video_files?video_uuid=eq.$video&kind=eq.hls&resolution=eq.360&select=kind,url,playlist_url,torrent_url" |
      python3 -c 'import json,sys; r = json.load(sys.stdin)[0]; print(all(r[k] for k in ("url", "playlist_url", "torrent_url")))')" \
  True "api.video_files shows an HLS rendition's url, playlist_url and torrent_url"

# aria2c: the 720p MP4 by magnet only (no web seed: tracker, peer wire, ut_metadata)
curl -sf "$url/files/$mp4_file" -o "$work/mp4.http"
want=$(sha256sum <"$work/mp4.http" | cut -c1-64)
ih=$(sed 's/.*xt=urn:btih:\([0-9a-f]*\).*/\1/' <<<"$magnet")
wait_for 20 seeded_swarm "$ih"
ok $? "the seeder announced the 720p MP4 to the tracker"
mkdir "$work/aria"
timeout 90 aria2c -q --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false \
  --seed-time=0 --allow-overwrite=true --auto-file-renaming=false --file-allocation=none --summary-interval=0 \
  --bt-save-metadata=false --listen-port="$(client_port 5)" --dir="$work/aria" "$(sed 's/&ws=[^&]*//' <<<"$magnet")" \
  2>"$work/aria.err"
is "$(sha256sum <"$work/aria/$mp4_name" 2>/dev/null | cut -c1-64)" "$want" \
  "aria2c by magnet only: the 720p MP4, sha256-identical to GET /files/<id>" || tail -5 "$work/aria.err" >&2

# libtorrent: the 360p HLS rendition file over the UDP tracker only
read -r hls_file hls_name hls_magnet < <(q -F ' ' -A -c "SELECT vf.file_id, f.filename_visible, vf.magnet
    FROM pod.video_files vf JOIN pod.files f ON f.id = vf.file_id
   WHERE vf.video_uuid = '$video' AND kind = 'hls' AND resolution = 360")
curl -sf "$url/files/$hls_file" -o "$work/hls.http"
want=$(sha256sum <"$work/hls.http" | cut -c1-64)
udp_tr=$(python3 -c "import urllib.parse as u; print(u.quote('udp://127.0.0.1:$tracker_port/announce', safe=''))")
mkdir "$work/lt"
/usr/bin/python3 "$lib/lt_client.py" "$(sed 's/&tr=[^&]*//g; s/&ws=[^&]*//' <<<"$hls_magnet")&tr=$udp_tr" "$work/lt" \
  "$(client_port 6)" 90 >"$work/lt.log" 2>&1
ok $? "libtorrent by magnet over the UDP tracker finished" || cat "$work/lt.log" >&2
is "$(sha256sum <"$work/lt/$hls_name" 2>/dev/null | cut -c1-64)" "$want" \
  "... the 360p HLS rendition file, sha256-identical to GET /files/<id>"
done_testing
