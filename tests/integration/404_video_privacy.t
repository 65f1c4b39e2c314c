#!/bin/bash
# Private and unlisted videos over HTTP, as the database decides (sql/78): who lists a
# video, reads it by uuid (/rpc/video), follows its events and fetches its files, for
# anonymous callers, another user and the owner; a video made private mid-stream ends
# the streams of those who may no longer watch it; the files listing shows nobody
# another user's files. And video events resume with Last-Event-ID: a client that
# reconnects gets exactly what it missed, in order, then the live events. Bad inputs
# (an unknown privacy, another user's change, a malformed Last-Event-ID) change nothing.
# A privacy change empties the gateway processes' permission cache at once (a gateway
# restarted to remember permissions for 10 minutes still refuses the file at once).
# The videos are published in SQL (no transcoding: 400 does that); the test removes
# them at the end (their torrents with them).
. "$(dirname "$0")/tap.sh"
url=$PGPOD_URL
work=$(mktemp -d /tmp/pgpod-privacy.XXXXXX)
pids=()
restart_gateway() {
  local gw; gw=$(cat "$PGPOD_DIR/run/gateway.pid")
  kill -TERM "$gw"; wait_for 20 bash -c "! kill -0 $gw 2>/dev/null"
  (cd "$PGPOD_TOP" && env "$@" scripts/pgpod start >/dev/null 2>&1)
}
long_cache=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  ((long_cache)) && restart_gateway
  q -c "DELETE FROM pod.videos WHERE channel_id = (SELECT id FROM pod.channels WHERE name = 'privacy$$')" >/dev/null 2>&1
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
plan 36

login() {
  curl -sf -X POST "$url/rpc/register" -H 'Content-Type: application/json' -d "{\"email\":\"$1\",\"password\":\"a long password\"}" >/dev/null
  curl -sf -X POST "$url/rpc/login" -H 'Content-Type: application/json' -d "{\"email\":\"$1\",\"password\":\"a long password\"}" |
    sed 's/.*"token" *: *"\([^"]*\)".*/\1/'
}
owner=$(login "privacy-a$$@example.org"); other=$(login "privacy-b$$@example.org")
O=(-H "Authorization: Bearer $owner")
B=(-H "Authorization: Bearer $other")
JSON=(-H 'Content-Type: application/json')
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
channel=$(curl -sf -X POST "$url/channels" "${O[@]}" "${JSON[@]}" -H 'Prefer: return=representation' \
  -H 'Accept: application/vnd.pgrst.object+json' -d "{\"name\":\"privacy$$\",\"display_name\":\"Privacy\"}" |
  sed 's/.*"id" *: *\([0-9]*\).*/\1/')
upload() { printf '%s' "$1" >"$work/up"; curl -sf -X POST "$url/upload?filename=$2" "${O[@]}" -H "Content-Type: $3" \
             --data-binary @"$work/up" | sed 's/.*"id" *: *"\([^"]*\)".*/\1/'; }
src=$(upload "source $$" src.mp4 video/mp4)
[[ $channel =~ ^[0-9]+$ && -n $src ]]
ok $? "a user, a channel, a source file" || exit 1
create() { curl -s -X POST "$url/rpc/video_create" "${O[@]}" "${JSON[@]}" \
             -d "{\"channel_id\":$channel,\"file_id\":\"$src\",\"name\":\"$1\"${2:+,\"privacy\":\"$2\"}}"; }
uuid_of() { sed -n 's/.*"uuid" *: *"\([^"]*\)".*/\1/p'; }
videos_of_owner() { q -c "SELECT count(*) FROM pod.videos WHERE source_file_id = '$src'"; }

# --- creation with a privacy ---------------------------------------------------------------
is "$(code -X POST "$url/rpc/video_create" "${O[@]}" "${JSON[@]}" \
      -d "{\"channel_id\":$channel,\"file_id\":\"$src\",\"name\":\"x\",\"privacy\":\"secret\"}") $(videos_of_owner)" "400 0" \
  "video_create with an unknown privacy: 400, no video"
pub=$(create "public one" | uuid_of)
r=$(create "unlisted one" unlisted); unl=$(echo "$r" | uuid_of)
priv=$(create "private one" private | uuid_of)
[[ -n $pub && -n $unl && -n $priv && $r == *'"privacy"'*'"unlisted"'* ]]
ok $? "video_create: public (the default), unlisted, private; the answer says its privacy"

# the instance's transcoder may have taken their jobs (it fails them: the source is no
# video); the waiting ones go, the running ones are waited for
q -c "DELETE FROM pod.jobs WHERE kind = 'transcode' AND target IN ('$pub', '$unl', '$priv') AND state = 'waiting'" >/dev/null
taken() { [[ $(q -c "SELECT count(*) FROM pod.jobs WHERE kind = 'transcode' AND target IN ('$pub', '$unl', '$priv') AND state = 'running'") == 0 ]]; }
wait_for 60 taken
# published as pod.transcode_publish leaves them: an MP4 each, a thumbnail for the private one
pub_mp4=$(upload "public bytes $$" pub.mp4 video/mp4)
unl_mp4=$(upload "unlisted bytes $$" unl.mp4 video/mp4)
priv_mp4=$(upload "private bytes $$" priv.mp4 video/mp4)
priv_jpg=$(upload "private jpeg $$" priv.jpg image/jpeg)
q >/dev/null <<SQL
INSERT INTO pod.video_files (video_uuid, resolution, kind, file_id)
  VALUES ('$pub', 360, 'mp4', '$pub_mp4'), ('$unl', 360, 'mp4', '$unl_mp4'), ('$priv', 360, 'mp4', '$priv_mp4');
UPDATE pod.videos SET state = 'published', progress = 100, failure_reason = NULL WHERE uuid IN ('$pub', '$unl', '$priv');
UPDATE pod.videos SET thumbnail_file_id = '$priv_jpg' WHERE uuid = '$priv';
SQL
ok $? "the three are published"

# --- listing and reading by uuid -----------------------------------------------------------------
listed() { curl -s "$url/videos?select=name&uuid=in.($pub,$unl,$priv)&order=name" "$@" | tr -d ' \n'; }
is "$(listed)" '[{"name":"publicone"}]' "anonymous: GET /videos lists the public video only"
is "$(listed "${B[@]}")" '[{"name":"publicone"}]' "another user: the same"
is "$(listed "${O[@]}")" '[{"name":"privateone"},{"name":"publicone"},{"name":"unlistedone"}]' "the owner lists all three"
r=$(curl -s "$url/rpc/video?id=$unl")
[[ $r == *'"privacy"'*'"unlisted"'* && $r == *"\"file_id\""*"\"$unl_mp4\""* ]]
ok $? "anonymous: GET /rpc/video?id=<unlisted> answers it with its files"
is "$(code "$url/rpc/video?id=$priv") $(code "$url/rpc/video?id=$priv" "${B[@]}") $(code "$url/rpc/video?id=$priv" "${O[@]}")" "404 404 200" \
  "a private video by uuid: 404 for anonymous and another user, 200 for the owner"
is "$(code "$url/rpc/video?id=not-a-uuid")" 400 "a malformed uuid: 400"

# --- files ---------------------------------------------------------------------------------------------
is "$(curl -s "$url/files/$unl_mp4") $(curl -s "$url/files/$pub_mp4")" "unlisted bytes $$ public bytes $$" \
  "anonymous: an unlisted and a public video's file are served by id"
is "$(code "$url/files/$priv_mp4") $(code -I "$url/files/$priv_jpg") $(code "$url/files/$priv_mp4" "${B[@]}")" "401 401 404" \
  "a private video's file and thumbnail: 401 anonymous (GET, HEAD), 404 for another user"
is "$(curl -s "$url/files/$priv_mp4?access_token=$owner")" "private bytes $$" "the owner reads it (access_token)"
is "$(code "$url/files")" 401 "anonymous callers list no files (GET /files: 401)"
is "$(curl -s "$url/files?select=id&id=in.($pub_mp4,$unl_mp4,$src)" "${B[@]}")" "[]" \
  "another user lists none of the owner's files, public video files included"
is "$(curl -s "$url/files?select=id&id=eq.$pub_mp4" "${O[@]}" | tr -d ' \n')" "[{\"id\":\"$pub_mp4\"}]" "the owner lists their own"

# --- events ----------------------------------------------------------------------------------------------
first_data() { curl -sN --max-time 3 "$@" | grep -m1 '^data:'; }
is "$(code --max-time 3 "$url/videos/$priv/events") $(code --max-time 3 "$url/videos/$priv/events?access_token=$other")" "404 404" \
  "a private video's events: 404 for anonymous and another user"
[[ $(first_data "$url/videos/$unl/events") == *'"state" : "published"'* && \
   $(first_data "$url/videos/$priv/events?access_token=$owner") == *'"privacy" : "private"'* ]]
ok $? "anonymous follows an unlisted video's events; the owner their private one's"

# --- Last-Event-ID ----------------------------------------------------------------------------------------
# a video of the owner with no transcode job (the instance's transcoder would move it)
lv=$(q -c "INSERT INTO pod.videos (channel_id, name) VALUES ($channel, 'resumed') RETURNING uuid" | head -1)
n0=$(q -c "SELECT max(seq) FROM pod.video_events WHERE video_uuid = '$lv'")
head=$(curl -sN --max-time 3 "$url/videos/$lv/events?access_token=$owner" | grep -m1 '^id:')
is "$head" "id: $n0" "a new subscriber gets the current state at once, as the last event ($n0)"
# what happens while the client is away
for p in 10 20 30; do
  q -c "UPDATE pod.videos SET state = 'transcoding', progress = $p WHERE uuid = '$lv'" >/dev/null
done
curl -sN "$url/videos/$lv/events?access_token=$owner" -H "Last-Event-ID: $n0" >"$work/resumed" 2>/dev/null &
pids+=($!)
ids() { sed -n 's/^id: //p' "$work/resumed" | tr '\n' ' '; }
wait_for 10 bash -c "[[ \$(grep -c '^id:' '$work/resumed') -ge 3 ]]"
is "$(ids)" "$((n0 + 1)) $((n0 + 2)) $((n0 + 3)) " "Last-Event-ID: $n0: exactly the three missed events, in order"
is "$(grep '^event:' "$work/resumed" | tr '\n' ' ')" "event: state event: progress event: progress " \
  "... the state change, then the progress events"
is "$(sed -n 's/.*"progress" : \([0-9]*\).*/\1/p' "$work/resumed" | tr '\n' ' ')" "10 20 30 " "... with their progress"
q -c "UPDATE pod.videos SET progress = 40 WHERE uuid = '$lv'" >/dev/null
wait_for 10 bash -c "grep -q '^id: $((n0 + 4))\$' '$work/resumed'"
is "$(ids)" "$((n0 + 1)) $((n0 + 2)) $((n0 + 3)) $((n0 + 4)) " "then the live event, once"
kill "${pids[-1]}" 2>/dev/null
is "$(curl -sN --max-time 3 "$url/videos/$lv/events?access_token=$owner" -H "Last-Event-ID: $((n0 + 2))" | sed -n 's/^id: //p' | tr '\n' ' ')" \
  "$((n0 + 3)) $((n0 + 4)) " "a second resumption (Last-Event-ID: $((n0 + 2))) gets the two after it"
is "$(code --max-time 3 "$url/videos/$lv/events?access_token=$owner" -H 'Last-Event-ID: three')" 400 "a malformed Last-Event-ID: 400"

# --- privacy changes ---------------------------------------------------------------------------------------
patch_privacy() { curl -s -o /dev/null -w '%{http_code}' -X PATCH "$url/videos?uuid=eq.$pub" "${JSON[@]}" -d "{\"privacy\":\"$1\"}" "${@:2}"; }
privacy_of() { q -c "SELECT privacy FROM pod.videos WHERE uuid = '$1'"; }
is "$(patch_privacy hidden "${O[@]}") $(privacy_of "$pub")" "400 public" "an unknown privacy: 400, nothing changed"
patch_privacy private "${B[@]}" >/dev/null
is "$(privacy_of "$pub")" public "another user cannot change it"
curl -sN "$url/videos/$pub/events" >"$work/anon_stream" 2>/dev/null &
anon_pid=$!; pids+=($anon_pid)
curl -sN "$url/videos/$pub/events?access_token=$owner" >"$work/owner_stream" 2>/dev/null &
pids+=($!)
wait_for 10 bash -c "grep -q '^data:' '$work/anon_stream' && grep -q '^data:' '$work/owner_stream'"
ok $? "anonymous and the owner follow the public video's events"
is "$(patch_privacy private "${O[@]}")" 204 "the owner makes it private"
wait_for 10 bash -c "! kill -0 $anon_pid 2>/dev/null"
ok $? "the anonymous stream ends: it may no longer watch"
! grep -q '"privacy" : "private"' "$work/anon_stream"
ok $? "... and it was not told of the change"
wait_for 10 bash -c "grep -q '\"privacy\" : \"private\"' '$work/owner_stream'"
ok $? "the owner's stream goes on and gets the change (a state event)"
wait_for 5 bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' '$url/files/$pub_mp4') == 401 ]]"
ok $? "its file is no longer served to anonymous callers (401)"
is "$(listed)" '[]' "nor is it listed"

# --- the permission cache hears of a privacy change --------------------------------------------------------
long_cache=1; restart_gateway PGPOD_FILE_CACHE_MS=600000
for i in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null "$url/files/$unl_mp4"; done # remembered by every process
is "$(curl -s -o /dev/null -w '%{http_code}' -X PATCH "$url/videos?uuid=eq.$unl" "${JSON[@]}" "${O[@]}" -d '{"privacy":"private"}')" \
  204 "the owner makes the unlisted video private (the gateway remembers permissions for 10 minutes)"
refused_by_all() { for i in 1 2 3 4 5 6 7 8; do [[ $(curl -s -o /dev/null -w '%{http_code}' "$url/files/$unl_mp4") == 401 ]] || return 1; done; }
wait_for 5 refused_by_all
ok $? "its file is refused to anonymous callers by every gateway process within seconds, not minutes (the NOTIFY empties their caches)"
restart_gateway; long_cache=0
done_testing
