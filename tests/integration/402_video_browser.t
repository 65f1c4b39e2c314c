#!/bin/bash
# The whole path in real clients: a clip is uploaded with tus-js-client (interrupted
# at half and resumed from its stored URL), made a video, transcoded by the daemon, and
# played by headless Chromium from the gateway's URLs: the 720p MP4 in a <video>, the
# HLS master through hls.js (page and hls.js served from loopback, anonymous like any
# viewer).
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
url=$PGPOD_URL
js=$top/tests/js/video
work=$(mktemp -d /tmp/pgpod-browser.XXXXXX)
trap '[[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$work"' EXIT
plan 6
if ! out=$(cd "$js" && npm ci --no-audit --no-fund --loglevel=error 2>&1); then
  echo "not ok 1 - npm ci in tests/js/video"; printf '%s\n' "$out" | sed 's/^/# /'; exit 1
fi
email="browser$$@example.org"
curl -sf -X POST "$url/rpc/register" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"a long password\"}" >/dev/null
token=$(curl -sf -X POST "$url/rpc/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long password\"}" | sed 's/.*"token" *: *"\([^"]*\)".*/\1/')
channel=$(curl -sf -X POST "$url/channels" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -H 'Prefer: return=representation' -H 'Accept: application/vnd.pgrst.object+json' \
  -d "{\"name\":\"browser$$\",\"display_name\":\"Browser\"}" | sed 's/.*"id" *: *\([0-9]*\).*/\1/')
ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 4 -c:v libx264 -preset ultrafast -c:a aac -shortest "$work/clip.mp4"
node_run() { (cd "$js" && GW_URL=$url GW_TOKEN=$token GW_FILENAME=clip.mp4 node tus.mjs "$@" "$work/clip.mp4" "$work/urls.json"); }
node_run start >"$work/start.out" 2>&1 && node_run resume >"$work/resume.out" 2>&1
ok $? "tus-js-client uploads the clip, interrupted at $(sed -n 's/^aborted_at=//p' "$work/start.out") bytes and resumed" ||
  cat "$work/start.out" "$work/resume.out" | sed 's/^/# /' >&2
id=$(sed -n 's/^url=.*\/\([^/]*\)$/\1/p' "$work/resume.out")
file=$(q -c "SELECT file_id FROM pod.uploads WHERE id = '$id'")
video=$(curl -s -X POST "$url/rpc/video_create" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "{\"channel_id\":$channel,\"file_id\":\"$file\",\"name\":\"Browser clip\"}" | sed -n 's/.*"uuid" *: *"\([^"]*\)".*/\1/p')
published() { [[ $(q -c "SELECT state FROM pod.videos WHERE uuid = '$video'") == published ]]; }
wait_for 180 published
ok $? "the uploaded file becomes a published video"
mp4=$(q -c "SELECT url FROM api.video_files WHERE video_uuid = '$video' AND kind = 'mp4' AND resolution = 720")
hls=$(q -c "SELECT hls_url FROM api.videos WHERE uuid = '$video'")
res=$(cd "$js" && GW_MP4=$mp4 GW_HLS=$hls PAGE_PORT=$((PGPOD_HTTP_PORT + 41)) PROFILE=$work/profile timeout 120 node browser.mjs 2>"$work/browser.err")
echo "# $res"
[[ -s $work/browser.err ]] && sed 's/^/# /' "$work/browser.err" | head -5 >&2
field() { node -e "const r = JSON.parse(process.argv[1] || '{}'); const v = $1; console.log(v === undefined ? '' : v)" "$res"; }
is "$(field 'r.mp4 && r.mp4.time > 1 && !r.mp4Error')" true "Chromium plays the MP4 in a <video> (past 1 s)"
is "$(field 'r.mp4 && r.mp4.width + "x" + r.mp4.height')" "1280x720" "at 1280x720"
is "$(field 'r.levels && r.levels.slice().sort((a, b) => b - a).join(",")')" "720,480,360,240" "hls.js reads the master playlist: 4 variants"
is "$(field 'r.hls && r.hls.time > 1 && !r.hlsError')" true "and plays the HLS stream (past 1 s)"
done_testing
