#!/bin/bash
# tus 1.0 at /uploads with the real tus-js-client (tests/js/video): a 50 MiB upload is
# interrupted at about half, the gateway is restarted, and the upload is resumed from
# the URL the client stored; it ends byte-identical as a file of its user. Beside it,
# with curl: the protocol's refusals (412, 413, 409, 404 for another user, 410 expired),
# creation-with-upload, the sha256 checksum (460 on a mismatch), termination, a length
# given later (creation-defer-length, its bad lengths refused), expired uploads swept
# by the gateway's timer with no new upload coming; nothing unfinished ever becomes a file.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
url=$PGPOD_URL
store=$PGPOD_DIR/store
js=$top/tests/js/video
work=$(mktemp -d /tmp/pgpod-tus.XXXXXX)
trap '[[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$work"; (cd "$top" && scripts/pgpod start >/dev/null 2>&1)' EXIT
plan 42
if ! out=$(cd "$js" && npm ci --no-audit --no-fund --loglevel=error 2>&1); then
  echo "not ok 1 - npm ci in tests/js/video"; printf '%s\n' "$out" | sed 's/^/# /'; exit 1
fi
ok 0 "npm ci in tests/js/video (tus-js-client)"

login() {
  curl -sf -X POST "$url/rpc/register" -H 'Content-Type: application/json' -d "{\"email\":\"$1\",\"password\":\"a long password\"}" >/dev/null
  curl -sf -X POST "$url/rpc/login" -H 'Content-Type: application/json' -d "{\"email\":\"$1\",\"password\":\"a long password\"}" |
    sed 's/.*"token" *: *"\([^"]*\)".*/\1/'
}
a_email="tus-a$$@example.org"
ta=$(login "$a_email"); tb=$(login "tus-b$$@example.org")
TUS=(-H 'Tus-Resumable: 1.0.0')
A=(-H "Authorization: Bearer $ta")
B=(-H "Authorization: Bearer $tb")
hdr() { tr -d '\r' | sed -n "s/^$1: *//Ip"; } # hdr NAME < headers
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
files_of_a() { q -c "SELECT count(*) FROM pod.files f JOIN pod.users u ON u.id = f.owner_id WHERE u.email = '$a_email'"; }

opts=$(curl -s -i -X OPTIONS "$url/uploads")
is "$(echo "$opts" | head -1 | tr -d '\r' | cut -d' ' -f2) $(echo "$opts" | hdr Tus-Version)" "204 1.0.0" "OPTIONS /uploads: 204, Tus-Version 1.0.0"
is "$(echo "$opts" | hdr Tus-Extension)" "creation,creation-with-upload,termination,expiration,checksum,creation-defer-length" \
  "Tus-Extension lists what is supported"
[[ $(echo "$opts" | hdr Tus-Max-Size) =~ ^[0-9]+$ && $(echo "$opts" | hdr Tus-Checksum-Algorithm) == sha256 ]]
ok $? "Tus-Max-Size and Tus-Checksum-Algorithm: sha256"

# --- 50 MiB, interrupted, gateway restarted, resumed from the stored URL --------------
head -c $((50 << 20)) /dev/urandom >"$work/big.bin"
node_run() { (cd "$js" && GW_URL=$url GW_TOKEN=$ta GW_FILENAME="big$$.bin" node tus.mjs "$@"); }
node_run start "$work/big.bin" "$work/urls.json" >"$work/start.out" 2>&1
ok $? "tus-js-client starts the upload and aborts it at $(sed -n 's/^aborted_at=//p' "$work/start.out") bytes" ||
  sed 's/^/# /' "$work/start.out" >&2
loc=$(sed -n 's/^url=//p' "$work/start.out")
id=${loc##*/}
offset=$(curl -s -I "$url/uploads/$id" "${TUS[@]}" "${A[@]}" | hdr Upload-Offset)
(( offset > 0 && offset < (50 << 20) ))
ok $? "HEAD: the server kept what arrived ($offset bytes)"
is "$(files_of_a)" 0 "an unfinished upload is no file"
gw=$(cat "$PGPOD_DIR/run/gateway.pid")
kill -TERM "$gw"; wait_for 20 bash -c "! kill -0 $gw 2>/dev/null"
(cd "$top" && scripts/pgpod start >/dev/null 2>&1)
is "$(curl -s -I "$url/uploads/$id" "${TUS[@]}" "${A[@]}" | hdr Upload-Offset)" "$offset" "after a gateway restart the Location answers the same offset"
is "$(code -I "$url/uploads/$id" "${TUS[@]}" "${B[@]}")" 404 "another user's HEAD: 404"
is "$(code -X PATCH "$url/uploads/$id" "${TUS[@]}" "${B[@]}" -H 'Content-Type: application/offset+octet-stream' \
      -H "Upload-Offset: $offset" --data-binary 'xx')" 404 "another user's PATCH: 404"
is "$(code -X DELETE "$url/uploads/$id" "${TUS[@]}" "${B[@]}")" 404 "another user's DELETE: 404"
node_run resume "$work/big.bin" "$work/urls.json" >"$work/resume.out" 2>&1
ok $? "tus-js-client resumes from the stored URL and finishes" || sed 's/^/# /' "$work/resume.out" >&2
is "$(sed -n 's/^previous=//p; s/^url=.*\/\([^/]*\)$/\1/p' "$work/resume.out" | tr '\n' ' ')" "1 $id " "it found one previous upload, the same"
file=$(q -c "SELECT file_id FROM pod.uploads WHERE id = '$id'")
is "$(q -c "SELECT encode(sha256, 'hex') || ' ' || size FROM pod.files WHERE id = '$file'")" \
   "$(sha256sum "$work/big.bin" | cut -c1-64) $((50 << 20))" "the finished upload is a file of its user with the content's sha256"
curl -sf "$url/files/$file" "${A[@]}" -o "$work/back.bin"
cmp -s "$work/big.bin" "$work/back.bin"
ok $? "GET /files/<id> gives back the same 50 MiB, byte for byte"
[[ ! -e $store/uploads/$id ]]
ok $? "the upload's working file is gone (the blob holds the bytes)"

# --- the protocol's refusals and extensions -----------------------------------------------
create() { curl -s -i -X POST "$url/uploads" "${TUS[@]}" "${A[@]}" -H "Upload-Length: $1" \
             -H "Upload-Metadata: filename $(printf '%s' "$2" | base64 -w0)" "${@:3}"; }
is "$(code -X POST "$url/uploads" "${A[@]}" -H 'Upload-Length: 10')" 412 "no Tus-Resumable: 412"
is "$(code -X POST "$url/uploads" "${TUS[@]}" "${A[@]}" -H "Upload-Length: $((1 << 50))")" 413 "Upload-Length over Tus-Max-Size: 413"
is "$(code -X POST "$url/uploads" "${TUS[@]}" -H 'Upload-Length: 10')" 401 "anonymous creation: 401"
small=$(create 100 small.bin | hdr Location); small=${small##*/}
is "$(code -X PATCH "$url/uploads/$small" "${TUS[@]}" "${A[@]}" -H 'Content-Type: application/offset+octet-stream' \
      -H 'Upload-Offset: 10' --data-binary 'abc')" 409 "PATCH at the wrong offset: 409"
head -c 200 /dev/urandom >"$work/c.bin"
head -c 100 "$work/c.bin" >"$work/c1.bin"
good=$(openssl dgst -sha256 -binary "$work/c1.bin" | base64 -w0)
bad=$(printf 'other' | openssl dgst -sha256 -binary | base64 -w0)
cs=$(create 200 c.bin | hdr Location); cs=${cs##*/}
patch() { curl -s -o /dev/null -w '%{http_code}' -X PATCH "$url/uploads/$cs" "${TUS[@]}" "${A[@]}" \
            -H 'Content-Type: application/offset+octet-stream' "$@"; }
is "$(patch -H 'Upload-Offset: 0' -H "Upload-Checksum: sha256 $bad" --data-binary @"$work/c1.bin")" 460 "a checksum mismatch: 460"
is "$(curl -s -I "$url/uploads/$cs" "${TUS[@]}" "${A[@]}" | hdr Upload-Offset)" 0 "and its bytes are not kept"
is "$(patch -H 'Upload-Offset: 0' -H "Upload-Checksum: sha256 $good" --data-binary @"$work/c1.bin")" 204 "the right checksum: 204"
is "$(patch -H 'Upload-Offset: 100' -H 'Upload-Checksum: md5 AAAA' --data-binary @"$work/c1.bin")" 400 "an unsupported checksum algorithm: 400"
is "$(patch -H 'Upload-Offset: 100' -H 'Upload-Length: 300' --data-binary @"$work/c1.bin")" 400 "a PATCH changing a known Upload-Length: 400"
head -c 1000 /dev/urandom >"$work/w.bin"
resp=$(create 1000 with-upload.bin -H 'Content-Type: application/offset+octet-stream' --data-binary @"$work/w.bin")
is "$(echo "$resp" | head -1 | tr -d '\r' | cut -d' ' -f2) $(echo "$resp" | hdr Upload-Offset)" "201 1000" "creation-with-upload: 201, Upload-Offset 1000"
wid=$(echo "$resp" | hdr Location); wid=${wid##*/}
is "$(q -c "SELECT f.filename_visible || ' ' || encode(f.sha256, 'hex') FROM pod.uploads u JOIN pod.files f ON f.id = u.file_id WHERE u.id = '$wid'")" \
  "with-upload.bin $(sha256sum "$work/w.bin" | cut -c1-64)" "it is a file at once, named by its Upload-Metadata"
exp=$(create 50 expiring.bin | hdr Location); exp=${exp##*/}
q -c "UPDATE pod.uploads SET expires_at = now() - interval '1 second' WHERE id = '$exp'" >/dev/null
is "$(code -I "$url/uploads/$exp" "${TUS[@]}" "${A[@]}") $(code -X PATCH "$url/uploads/$exp" "${TUS[@]}" "${A[@]}" \
      -H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' --data-binary 'x')" "410 410" "an expired upload: 410"
is "$(code -X DELETE "$url/uploads/$small" "${TUS[@]}" "${A[@]}") $(code -I "$url/uploads/$small" "${TUS[@]}" "${A[@]}")" "204 404" \
  "termination: DELETE 204, then 404"
[[ ! -e $store/uploads/$small ]]
ok $? "a terminated upload's bytes are removed"

# --- creation-defer-length: the length comes with a later PATCH -------------------------
is "$(code -X POST "$url/uploads" "${TUS[@]}" "${A[@]}" -H 'Upload-Defer-Length: 1' -H 'Upload-Length: 10')" 400 \
  "Upload-Length and Upload-Defer-Length together: 400"
is "$(code -X POST "$url/uploads" "${TUS[@]}" "${A[@]}" -H 'Upload-Defer-Length: 2')" 400 "Upload-Defer-Length other than 1: 400"
head -c 3000 /dev/urandom >"$work/d.bin"
head -c 1000 "$work/d.bin" >"$work/d1.bin"; tail -c +1001 "$work/d.bin" | head -c 1000 >"$work/d2.bin"; tail -c +2001 "$work/d.bin" >"$work/d3.bin"
resp=$(curl -s -i -X POST "$url/uploads" "${TUS[@]}" "${A[@]}" -H 'Upload-Defer-Length: 1' \
         -H "Upload-Metadata: filename $(printf deferred.bin | base64 -w0)" -H 'Content-Type: application/offset+octet-stream' \
         --data-binary @"$work/d1.bin")
did=$(echo "$resp" | hdr Location); did=${did##*/}
is "$(echo "$resp" | head -1 | tr -d '\r' | cut -d' ' -f2) $(echo "$resp" | hdr Upload-Offset)" "201 1000" \
  "Upload-Defer-Length: 1 with a first part: 201, Upload-Offset 1000"
deferred_head() { local h; h=$(curl -s -I "$url/uploads/$did" "${TUS[@]}" "${A[@]}"); echo "$(echo "$h" | hdr Upload-Offset) $(echo "$h" | hdr Upload-Defer-Length)/$(echo "$h" | hdr Upload-Length)"; }
is "$(deferred_head)" "1000 1/" "HEAD: Upload-Defer-Length: 1 and no Upload-Length yet"
dpatch() { curl -s -o /dev/null -w '%{http_code}' -X PATCH "$url/uploads/$did" "${TUS[@]}" "${A[@]}" \
             -H 'Content-Type: application/offset+octet-stream' "$@"; }
is "$(dpatch -H 'Upload-Offset: 1000' --data-binary @"$work/d2.bin")" 204 "a PATCH that does not say the length yet: 204"
is "$(dpatch -H 'Upload-Offset: 2000' -H 'Upload-Length: 1500' --data-binary @"$work/d3.bin") $(dpatch -H 'Upload-Offset: 2000' \
      -H 'Upload-Length: lots' --data-binary @"$work/d3.bin") $(dpatch -H 'Upload-Offset: 2000' -H "Upload-Length: $((1 << 50))" \
      --data-binary @"$work/d3.bin")" "400 400 413" "a length below the offset, not a number, over Tus-Max-Size: 400, 400, 413"
is "$(deferred_head)" "2000 1/" "... and nothing changed"
is "$(dpatch -H 'Upload-Offset: 2000' -H 'Upload-Length: 3000' --data-binary @"$work/d3.bin")" 204 "the last PATCH gives the length: 204"
is "$(q -c "SELECT f.filename_visible || ' ' || encode(f.sha256, 'hex') || ' ' || u.length FROM pod.uploads u JOIN pod.files f ON f.id = u.file_id WHERE u.id = '$did'")" \
  "deferred.bin $(sha256sum "$work/d.bin" | cut -c1-64) 3000" "the deferred upload is a file with the content's sha256"
is "$(files_of_a)" 3 "only the three finished uploads became files"

# --- expired uploads are swept by a timer, no new upload needed ------------------------------
restart_gateway() {
  local gw; gw=$(cat "$PGPOD_DIR/run/gateway.pid")
  kill -TERM "$gw"; wait_for 20 bash -c "! kill -0 $gw 2>/dev/null"
  (cd "$top" && env "$@" scripts/pgpod start >/dev/null 2>&1)
}
restart_gateway PGPOD_UPLOAD_SWEEP_MS=300
sw=$(create 100 swept.bin | hdr Location); sw=${sw##*/}
is "$(curl -s -o /dev/null -w '%{http_code}' -X PATCH "$url/uploads/$sw" "${TUS[@]}" "${A[@]}" \
      -H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' --data-binary @"$work/d1.bin")" 413 \
  "a PATCH whose body goes past Upload-Length: 413"
curl -s -o /dev/null -X PATCH "$url/uploads/$sw" "${TUS[@]}" "${A[@]}" -H 'Content-Type: application/offset+octet-stream' \
  -H 'Upload-Offset: 0' --data-binary 'partial'
[[ -e $store/uploads/$sw ]] && q -c "UPDATE pod.uploads SET expires_at = now() - interval '1 second' WHERE id = '$sw'" >/dev/null
wait_for 10 bash -c "[[ ! -e $store/uploads/$sw && \$(psql -X -At -c \"SELECT count(*) FROM pod.uploads WHERE id = '$sw'\") == 0 ]]"
ok $? "an expired upload's row and bytes are swept by the gateway's timer (PGPOD_UPLOAD_SWEEP_MS), no creation needed"
restart_gateway
done_testing
