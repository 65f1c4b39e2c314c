#!/bin/bash
# Video speed, each number beside a reference measured in the same run:
#  1. Transcoding a 30 s 1080p clip with audio (ladder 720/480/360, MP4 + HLS,
#     thumbnail, preview): the wall time from POST /rpc/video_create to the video
#     published (claim, ffprobe, ffmpeg, hashing, staging, publication) against the
#     bare ffmpeg command producing the same outputs, taken from the transcoder's log
#     (the command it ran) and run by hand on the same source. Goal: ≤ 1.05×.
#  2. A 1 GiB tus upload over loopback (one PATCH, curl) against nginx receiving the
#     same body to disk (client_body_in_file_only, WebDAV PUT), same client. Goal ≥ 0.8×.
# Each measured VIDEO_BENCH_ROUNDS times (default 2), alternating with its reference;
# the ratio is of the best of each (the machine's noise only ever adds time).
# VIDEO_BENCH_PARTS: "transcode tus" (default) or one of them.
# Needs an instance started by tests/bench/run (PGPOD_URL, PGHOST, PGPOD_DIR).
set -euo pipefail
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/bench/lib.bash"
url=$PGPOD_URL
work=$(mktemp -d /tmp/pgpod-vbench.XXXXXX); chmod 755 "$work"
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null
  psql -X -q -c "DELETE FROM pod.setting_overrides WHERE name = 'transcode.ladder'" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

email="bench$$@example.org"
curl -sf -X POST "$url/rpc/register" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"a long password\"}" >/dev/null
token=$(curl -sf -X POST "$url/rpc/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long password\"}" | sed 's/.*"token" *: *"\([^"]*\)".*/\1/')
auth=(-H "Authorization: Bearer $token")

best() { printf "%s\n" "$@" | sort -g | head -1; }
rounds=${VIDEO_BENCH_ROUNDS:-2}
parts=${VIDEO_BENCH_PARTS:-transcode tus}

# --- 1. transcoding ------------------------------------------------------------------
if [[ " $parts " == *" transcode "* ]]; then
# VIDEO_BENCH_SECONDS (default 30): the clip's length
ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t "${VIDEO_BENCH_SECONDS:-30}" -c:v libx264 -preset ultrafast -crf 18 -c:a aac -b:a 128k -shortest "$work/src.mp4"
psql -X -q -c "INSERT INTO pod.setting_overrides (name, value) VALUES ('transcode.ladder', '[720, 480, 360]')
               ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value" >/dev/null
channel=$(curl -sf -X POST "$url/channels" "${auth[@]}" -H 'Content-Type: application/json' -H 'Prefer: return=representation' \
  -H 'Accept: application/vnd.pgrst.object+json' -d "{\"name\":\"bench$$\",\"display_name\":\"Bench\"}" | sed 's/.*"id" *: *\([0-9]*\).*/\1/')
file=$(curl -sf -X POST "$url/upload?filename=src.mp4" "${auth[@]}" -H 'Content-Type: video/mp4' --data-binary @"$work/src.mp4" |
  sed 's/.*"id" *: *"\([^"]*\)".*/\1/')
# daemon: from video_create to published; prints "seconds job"
daemon_run() {
  local t v
  t=$(now)
  v=$(curl -s -X POST "$url/rpc/video_create" "${auth[@]}" -H 'Content-Type: application/json' \
    -d "{\"channel_id\":$channel,\"file_id\":\"$file\",\"name\":\"bench\"}" | sed -n 's/.*"uuid" *: *"\([^"]*\)".*/\1/p')
  # one session waits (a psql every 50 ms would take CPU from the ffmpeg it measures:
  # each is a process and a backend)
  psql -X -q -At -v ON_ERROR_STOP=1 -c "SET statement_timeout = '15min'" \
    -c "DO \$\$ BEGIN
          WHILE (SELECT state FROM pod.videos WHERE uuid = '$v') NOT IN ('published', 'failed') LOOP
            PERFORM pg_sleep(0.02);
          END LOOP;
        END \$\$" >/dev/null
  [[ $(psql -X -At -c "SELECT state FROM pod.videos WHERE uuid = '$v'") == published ]] || { echo "the bench video failed" >&2; exit 1; }
  awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
  echo " $(psql -X -At -c "SELECT id FROM pod.jobs WHERE kind = 'transcode' AND target = '$v'")"
}
# bare: the command the daemon ran for a job (from its log), by hand, in a scratch directory
bare_run() {
  local cmd dir=$work/ref.$1 t
  cmd=$(grep -F "job $1 (video" "$PGPOD_DIR/log/transcoder.log" | tail -1 | sed 's/.*: in [^:]*: //')
  mkdir "$dir"; t=$(now)
  # in a session of its own, as scripts/pgpod starts the daemon (setsid): with the
  # kernel's autogroup scheduling, a session is what shares the CPU with others
  (cd "$dir" && setsid -w bash -c "$cmd" >/dev/null)
  awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
  rm -rf "$dir"
}
inner() { grep -F "job $1: ffmpeg done in" "$PGPOD_DIR/log/transcoder.log" | sed 's/.*done in \([0-9.]*\) s/\1/'; }
# alternating: daemon, bare, daemon, bare, ...
ds=() bs=() own=() ffs=()
for ((r = 0; r < rounds; r++)); do
  read -r d j < <(daemon_run); b=$(bare_run "$j")
  ds+=("$d"); bs+=("$b"); ffs+=("$(inner "$j")"); own+=("$(awk -v a="$d" -v c="${ffs[-1]}" 'BEGIN { printf "%.2f", a - c }')")
done
echo "transcode ${VIDEO_BENCH_SECONDS:-30} s 1080p -> 720/480/360 MP4 + HLS + images: daemon (video_create -> published) ${ds[*]} s" \
     "(its ffmpeg ${ffs[*]} s); the same ffmpeg command bare: ${bs[*]} s: best $(best "${ds[@]}") s vs $(best "${bs[@]}") s:" \
     "$(ratio "$(best "${ds[@]}")" "$(best "${bs[@]}")")x (goal <= 1.05); the daemon's own time beside its ffmpeg: ${own[*]} s"

fi

# --- 2. a 1 GiB tus upload --------------------------------------------------------------
if [[ " $parts " == *" tus "* ]]; then
head -c $((1 << 30)) /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:pgpod -pbkdf2 2>/dev/null | head -c $((1 << 30)) >"$work/big.bin"
# one tus upload of big.bin (a new upload each time: each ends as a file); MiB/s
tus_run() {
  local loc code t0 t1
  loc=$(curl -s -i -X POST "$url/uploads" "${auth[@]}" -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $((1 << 30))" |
    tr -d '\r' | sed -n 's/^location: *//Ip')
  t0=$(now)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH -T "$work/big.bin" "$url$loc" "${auth[@]}" -H 'Tus-Resumable: 1.0.0' \
    -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' -H 'Expect:')
  t1=$(now)
  [[ $code == 204 ]] || { echo "the tus PATCH answered $code" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 1024 / (b - a) }'
}
port=$((PGPOD_HTTP_PORT + 61))
mkdir -p "$work/www"
nginx_start 1 64 "http://127.0.0.1:$port/health" "
  server {
    listen 127.0.0.1:$port;
    root $work/www;
    location = /health { return 200; }
    location /up/ { dav_methods PUT; client_body_in_file_only on; client_max_body_size 2g;
                    client_body_buffer_size 128k; create_full_put_path on; }
  }"
ngx_run() {
  local code t0 t1
  t0=$(now)
  code=$(curl -s -o /dev/null -w '%{http_code}' -T "$work/big.bin" "http://127.0.0.1:$port/up/big.bin" -H 'Expect:')
  t1=$(now)
  [[ $code == 201 || $code == 204 ]] || { echo "nginx answered $code" >&2; exit 1; }
  rm -f "$work/www/up/big.bin"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 1024 / (b - a) }'
}
tus=() ngx=()
for ((r = 0; r < rounds; r++)); do tus+=("$(tus_run)"); ngx+=("$(ngx_run)"); done
tbest=$(printf "%s\n" "${tus[@]}" | sort -g | tail -1); nbest=$(printf "%s\n" "${ngx[@]}" | sort -g | tail -1)
echo "tus upload 1 GiB (PATCH, hashed on the fly, on the disk (fdatasync) before its 204, registered): ${tus[*]} MiB/s;" \
     "nginx client_body_in_file_only PUT (no fsync) ${ngx[*]} MiB/s: best $tbest vs $nbest: $(ratio "$tbest" "$nbest")x (goal >= 0.8)"
# What bounds the upload on this machine, measured here on the same 1 GiB: the SHA-256
# of one stream on one core (the content address is computed as the bytes arrive;
# OpenSSL, as the gateway uses), and writing 1 GiB durably (fdatasync before the
# answer) on the file system of the content store. The upload can be no faster than
# either (they overlap at best); nginx does neither.
sha=() dur=()
for ((r = 0; r < rounds; r++)); do
  t0=$(now); openssl dgst -sha256 "$work/big.bin" >/dev/null; t1=$(now)
  sha+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 1024 / (b - a) }')")
  t0=$(now); dd if="$work/big.bin" of="$PGPOD_DIR/durable.bin" bs=8M conv=fdatasync status=none; t1=$(now)
  rm -f "$PGPOD_DIR/durable.bin"
  dur+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 1024 / (b - a) }')")
done
sbest=$(printf "%s\n" "${sha[@]}" | sort -g | tail -1); dbest=$(printf "%s\n" "${dur[@]}" | sort -g | tail -1)
echo "bounds of this machine: SHA-256 of one stream ${sha[*]} MiB/s (best $(ratio "$sbest" "$nbest")x nginx);" \
     "1 GiB written and fdatasync'ed ${dur[*]} MiB/s (best $(ratio "$dbest" "$nbest")x nginx); the tus upload reached" \
     "$(ratio "$tbest" "$dbest")x of the durable write"
fi
