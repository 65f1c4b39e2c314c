#!/bin/bash
# From an upload to a published video, through the gateway and the transcoder daemon
# the instance runs: a 720p clip with audio (every MP4 probed: codec, size, duration,
# faststart; the HLS master read end to end over HTTP; thumbnail and preview sizes),
# a portrait clip, and bad sources (audio only, text named .mp4, a truncated MP4) that
# end failed with a reason. Then the transcoder is killed with SIGKILL mid-job: the job
# is redone and the video published once, with one set of outputs. No stray files.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
url=$PGPOD_URL
store=$PGPOD_DIR/store
work=$(mktemp -d /tmp/pgpod-video.XXXXXX)
cleanup() {
  q -c "UPDATE pod.job_kinds SET lease = '1 minute' WHERE kind = 'transcode'" >/dev/null 2>&1
  (cd "$top" && scripts/pgpod start >/dev/null 2>&1) # a transcoder killed here comes back
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
plan 45

# --- clips (small: the suite runs on two shared cores) --------------------------------
ff() { ffmpeg -v error -nostdin -y "$@"; }
ff -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 -t 3 \
   -c:v libx264 -preset ultrafast -c:a aac -ac 1 -shortest "$work/hd.mp4"
ff -f lavfi -i testsrc2=size=360x640:rate=25 -f lavfi -i sine=frequency=330:sample_rate=48000 -t 2 \
   -c:v libx264 -preset ultrafast -c:a aac -ac 2 -shortest "$work/portrait.mp4"
ff -f lavfi -i sine=frequency=220:sample_rate=48000 -t 2 -c:a aac "$work/audio.m4a"
printf 'this is not a video at all\n%.0s' {1..50} >"$work/text.mp4"
ff -f lavfi -i testsrc2=size=640x360:rate=25 -t 3 -c:v libx264 -preset ultrafast "$work/whole.mp4"
head -c $(($(stat -c %s "$work/whole.mp4") * 6 / 10)) "$work/whole.mp4" >"$work/truncated.mp4"
ff -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=500:sample_rate=44100 -t 12 \
   -c:v libx264 -preset ultrafast -c:a aac -shortest "$work/long.mp4"

# --- a user, a channel, uploads ----------------------------------------------------------
email="video$$@example.org"
curl -sf -X POST "$url/rpc/register" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long password\"}" >/dev/null
token=$(curl -sf -X POST "$url/rpc/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long password\"}" | sed 's/.*"token" *: *"\([^"]*\)".*/\1/')
auth=(-H "Authorization: Bearer $token")
channel=$(curl -sf -X POST "$url/channels" "${auth[@]}" -H 'Content-Type: application/json' \
  -H 'Prefer: return=representation' -H 'Accept: application/vnd.pgrst.object+json' \
  -d "{\"name\":\"clips$$\",\"display_name\":\"Clips\"}" | sed 's/.*"id" *: *\([0-9]*\).*/\1/')
[[ $channel =~ ^[0-9]+$ ]]
ok $? "a user and a channel" || exit 1
upload() { curl -sf -X POST "$url/upload?filename=$(basename "$1")" "${auth[@]}" -H "Content-Type: $2" \
             --data-binary @"$1" | sed 's/.*"id" *: *"\([^"]*\)".*/\1/'; }
create() { # create FILE_ID NAME -> the video's uuid
  curl -s -X POST "$url/rpc/video_create" "${auth[@]}" -H 'Content-Type: application/json' \
    -d "{\"channel_id\":$channel,\"file_id\":\"$1\",\"name\":\"$2\"}" | sed -n 's/.*"uuid" *: *"\([^"]*\)".*/\1/p'
}
state() { q -c "SELECT state FROM pod.videos WHERE uuid = '$1'"; }
ended() { [[ $(state "$1") == published || $(state "$1") == failed ]]; }

hd_file=$(upload "$work/hd.mp4" video/mp4)
hd=$(create "$hd_file" "HD clip")
[[ -n $hd ]]
ok $? "POST /rpc/video_create answers the video with its uuid" || exit 1
# live progress: the owner's EventSource-style stream (token in the query)
curl -sN "$url/videos/$hd/events?access_token=$token" >"$work/events" 2>/dev/null &
events_pid=$!
is "$(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'transcode' AND target = '$hd'")" 1 "a transcode job is queued"
other=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/rpc/video_create" "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"channel_id\":$channel,\"file_id\":\"00000000-0000-0000-0000-000000000000\",\"name\":\"x\"}")
is "$other" 403 "a file that is not the caller's is refused (403)"
portrait=$(create "$(upload "$work/portrait.mp4" video/mp4)" "Portrait")
audio=$(create "$(upload "$work/audio.m4a" audio/mp4)" "Audio only")
text=$(create "$(upload "$work/text.mp4" video/mp4)" "Text")
truncated=$(create "$(upload "$work/truncated.mp4" video/mp4)" "Truncated")
: >"$work/empty.mp4"
empty=$(create "$(upload "$work/empty.mp4" video/mp4)" "Empty")

wait_for 120 ended "$hd"
is "$(state "$hd")" published "the 720p clip is published"
streamed() { grep -q '"state" : "published"' "$work/events"; }
wait_for 10 streamed
kill "$events_pid" 2>/dev/null; wait "$events_pid" 2>/dev/null
progress_events=$(grep -c '^event: progress' "$work/events")
first=$(grep -m1 '^data:' "$work/events")
[[ $first == *'"state" : "uploaded"'* || $first == *'"state" : "transcoding"'* ]] && ((progress_events >= 2)) &&
  grep -q '^event: state' "$work/events" && streamed
ok $? "GET /videos/<uuid>/events streamed the state at once, $progress_events progress events, then published"
head=$(curl -sN --max-time 2 "$url/videos/$hd/events" | grep -m1 '^data:')
[[ $head == *'"state" : "published"'* && $head == *'"progress" : 100'* ]]
ok $? "anyone may follow a published video's events (its state comes at once)"
is "$(q -c "SELECT progress || ' ' || width || 'x' || height || ' ' || round(extract(epoch FROM duration)) FROM pod.videos WHERE uuid = '$hd'")" \
  "100 1280x720 3" "progress 100, the source's size and duration"
is "$(q -c "SELECT string_agg(kind || resolution, ' ' ORDER BY kind, resolution DESC) FROM pod.video_files WHERE video_uuid = '$hd'")" \
  "hls720 hls480 hls360 hls240 mp4720 mp4480 mp4360 mp4240" "an MP4 and an HLS rendition per rung up to 720 (ladder 1080..240)"

# every MP4, anonymously, through the gateway
bad=0
while IFS='|' read -r res mp4url size; do
  curl -sf "$mp4url" -o "$work/out.mp4" || { echo "# cannot fetch $mp4url" >&2; bad=1; continue; }
  got=$(ffprobe -v error -show_entries stream=codec_name,height -show_entries format=duration -of default=nw=1 "$work/out.mp4" | tr '\n' ' ')
  [[ $got == *"codec_name=h264 height=$res codec_name=aac duration=3."* || $got == *"codec_name=h264 height=$res codec_name=aac duration=2.9"* ]] ||
    { echo "# ${res}p: $got" >&2; bad=1; }
  [[ $(stat -c %s "$work/out.mp4") == "$size" ]] || bad=1
  # faststart: the moov box comes before mdat
  python3 - "$work/out.mp4" <<'EOF' || bad=1
import struct, sys
f = open(sys.argv[1], 'rb'); order = []
while True:
    h = f.read(8)
    if len(h) < 8: break
    size, kind = struct.unpack('>I4s', h)
    if size == 1: size = struct.unpack('>Q', f.read(8))[0]; f.seek(size - 16, 1)
    else: f.seek(size - 8, 1)
    order.append(kind.decode())
sys.exit(0 if order.index('moov') < order.index('mdat') else 1)
EOF
done < <(q -F'|' -c "SELECT resolution, url, size FROM api.video_files WHERE video_uuid = '$hd' AND kind = 'mp4'")
ok $bad "each MP4 (anonymous GET /files/<id>): H.264 at its height + AAC, 3 s, moov before mdat"
ct=$(curl -sI "$(q -c "SELECT url FROM api.video_files WHERE video_uuid = '$hd' AND kind = 'mp4' AND resolution = 360")" | tr -d '\r' | sed -n 's/^content-type: *//Ip')
is "$ct" "video/mp4" "MP4 served as video/mp4"
range=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' -H 'Range: bytes=0-99' "$(q -c "SELECT url FROM api.video_files WHERE video_uuid = '$hd' AND kind = 'hls' AND resolution = 360")")
is "$range" "206 100" "Range works on an HLS rendition's file"
hls=$(q -c "SELECT hls_url FROM api.videos WHERE uuid = '$hd'")
ct=$(curl -sI "$hls" | tr -d '\r' | sed -n 's/^content-type: *//Ip')
is "$ct" "application/vnd.apple.mpegurl" "playlists served as application/vnd.apple.mpegurl"
ffmpeg -v error -nostdin -i "$hls" -map 0:v:0 -map 0:a:0 -f null - 2>"$work/hls.err"
ok $? "ffmpeg -i <hls_url> reads the master playlist end to end over the gateway"
[[ -s $work/hls.err ]] && sed 's/^/# /' "$work/hls.err" | head -5 >&2
frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$hls" | grep -m1 .)
is "$frames" 75 "the HLS stream (highest variant) holds every frame (3 s × 25 fps)"
thumb=$(q -c "SELECT thumbnail_url FROM api.videos WHERE uuid = '$hd'")
is "$(curl -sf "$thumb" | ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 -)" "mjpeg,320,180" "the thumbnail is a 320x180 JPEG"
is "$(curl -sf "$(q -c "SELECT preview_url FROM api.videos WHERE uuid = '$hd'")" | ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 -)" \
  "mjpeg,854,480" "the preview is an 854x480 JPEG"
src=$(curl -s -o /dev/null -w '%{http_code}' "$url/files/$hd_file")
is "$src" 401 "the source upload stays private (anonymous: 401)"

wait_for 120 ended "$portrait"
is "$(state "$portrait")" published "the portrait clip is published"
is "$(q -c "SELECT string_agg(resolution::text, ' ' ORDER BY resolution DESC) FROM pod.video_files WHERE video_uuid = '$portrait' AND kind = 'mp4'")" \
  "360 240" "portrait: renditions up to its width (360)"
is "$(curl -sf "$(q -c "SELECT url FROM api.video_files WHERE video_uuid = '$portrait' AND kind = 'mp4' AND resolution = 360")" | \
      ffprobe -v error -show_entries stream=width,height -select_streams v -of csv=p=0 -)" "360,640" "portrait 360 rendition is 360x640"

for v in audio text truncated empty; do wait_for 60 ended "${!v}"; done
is "$(q -c "SELECT state || ': ' || failure_reason FROM api.videos WHERE uuid = '$audio'")" \
  "failed: not a video: no video stream" "audio only: failed, no video stream"
reason=$(q -c "SELECT state || ': ' || failure_reason FROM api.videos WHERE uuid = '$text'")
[[ $reason == "failed: not a video: the file could not be read as media ("*")" ]]
ok $? "text named .mp4: failed ($reason)"
reason=$(q -c "SELECT state || ': ' || failure_reason FROM api.videos WHERE uuid = '$truncated'")
[[ $reason == "failed: not a video: "* ]]
ok $? "truncated MP4: failed ($reason)"
is "$(q -c "SELECT state || ': ' || failure_reason FROM api.videos WHERE uuid = '$empty'")" \
  "failed: not a video: the file is empty" "zero-length file: failed, empty"
is "$(q -c "SELECT count(*) FROM pod.video_files WHERE video_uuid IN ('$audio', '$text', '$truncated', '$empty')")" 0 "failed videos have no outputs"
is "$(curl -s -o /dev/null -w '%{http_code}' "$url/videos/$audio/events")" 404 "an unpublished video's events are the owner's (anonymous: 404)"
is "$(q -c "SELECT string_agg(DISTINCT state::text, ',') || ' ' || count(*) FROM pod.jobs WHERE target IN ('$audio', '$text', '$truncated', '$empty')")" \
  "dead 4" "their jobs died at once (no retry of a source that is not a video), keeping the reason"
no_stray() { [[ -z $(ls -A "$store/tmp" 2>/dev/null | grep '^transcode-') ]]; }
wait_for 10 no_stray
ok $? "no work directory is left in the store"
# the uploads (6), then per published video: 2 media files and a playlist per rung, master, thumbnail, preview
is "$(q -c "SELECT count(*) FROM pod.files f JOIN pod.users u ON u.id = f.owner_id WHERE u.email = '$email'")" \
  "$((6 + 4 * 3 + 3 + 2 * 3 + 3))" "every output is a file of the channel's owner; nothing else"
blobs_missing=$(q -c "SELECT encode(sha256, 'hex') FROM pod.files f JOIN pod.users u ON u.id = f.owner_id WHERE u.email = '$email'" |
  while read -r h; do [[ -f $store/blobs/${h:0:2}/$h ]] || echo "$h"; done | wc -l)
is "$blobs_missing" 0 "every file's blob is in the store"

# --- SIGTERM: ffmpeg stops, the job goes back to the queue untouched ---------------------
long_file=$(upload "$work/long.mp4" video/mp4)
long=$(create "$long_file" "Long clip")
going() { (($(q -c "SELECT progress FROM pod.videos WHERE uuid = '$long' AND state = 'transcoding'") >= 10)); }
gone() { ! kill -0 "$1" 2>/dev/null || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
wait_for 120 going
tpid=$(cat "$PGPOD_DIR/run/transcoder.pid")
ffpid=$(pgrep -P "$tpid" ffmpeg)
kill -TERM "$tpid"
wait_for 30 gone "$tpid"
ok $? "SIGTERM stops the transcoder mid-job"
gone "$ffpid"
ok $? "and its ffmpeg"
is "$(q -c "SELECT j.state || ' ' || j.attempts || ' ' || (j.lease_until IS NULL) || ' ' || v.state || ' ' || v.progress
            FROM pod.jobs j JOIN pod.videos v ON v.uuid::text = j.target WHERE v.uuid = '$long'")" "waiting 0 true uploaded 0" \
  "the job is given back (attempt not counted), the video waits again"
no_stray
ok $? "its work directory is removed"
if command -v systemd-analyze >/dev/null; then
  sed "s#/opt/pgpod#$top#g" "$top/workers/systemd/pgpod-transcoder.service" >"$work/pgpod-transcoder.service"
  out=$(systemd-analyze verify "$work/pgpod-transcoder.service" 2>&1); rc=$?
  ok $rc "systemd-analyze verify accepts workers/systemd/pgpod-transcoder.service${out:+: $out}"
else
  ok 1 "systemd-analyze is installed (package systemd, in deps.txt) to verify the unit"
fi

# --- kill -9 of the transcoder in the middle of a job ------------------------------------
q -c "UPDATE pod.job_kinds SET lease = '3 seconds' WHERE kind = 'transcode'" >/dev/null
(cd "$top" && scripts/pgpod start >/dev/null 2>&1)
wait_for 120 going
ok $? "the long clip is being transcoded (progress reaches 10%)"
tpid=$(cat "$PGPOD_DIR/run/transcoder.pid")
job=$(q -c "SELECT id FROM pod.jobs WHERE target = '$long'")
ffpid=$(pgrep -P "$tpid" ffmpeg)
kill -KILL "$tpid"
wait_for 10 gone "$tpid"
ok $? "the transcoder is killed with SIGKILL at $(q -c "SELECT progress FROM pod.videos WHERE uuid = '$long'")%"
wait_for 10 gone "$ffpid"
ok $? "its ffmpeg dies with it"
is "$(state "$long")" transcoding "the video is still transcoding (the lease is held by the dead worker)"
(cd "$top" && scripts/pgpod start >/dev/null 2>&1)
wait_for 180 ended "$long"
is "$(state "$long")" published "after a restart the job is redone and the video published"
is "$(q -c "SELECT attempts || ' ' || state FROM pod.jobs WHERE id = $job")" "2 done" "the job took two attempts (the released one is not counted), done once"
is "$(q -c "SELECT count(*) FROM pod.video_files WHERE video_uuid = '$long'")" 8 "one set of outputs (4 MP4 + 4 HLS)"
is "$(q -c "SELECT count(*) FROM pod.files WHERE id IN (SELECT file_id FROM pod.video_files WHERE video_uuid = '$long'
        UNION ALL SELECT playlist_file_id FROM pod.video_files WHERE video_uuid = '$long'
        UNION ALL SELECT unnest(ARRAY[thumbnail_file_id, preview_file_id, hls_file_id]) FROM pod.videos WHERE uuid = '$long')")" \
  15 "the video's files: 8 media, 4 playlists, master, thumbnail, preview"
wait_for 10 no_stray
ok $? "the killed attempt's work directory is gone"
done_testing
