#!/bin/bash
# Requests signed by the npm package http-signature (not by pgpod) POSTed to this
# pod's /rpc/inbox through its gateway: a friend's good request is applied; replayed,
# forged, stale, future, digest-mismatched and unsigned ones are refused with 401/400
# and a JSON reason; a retry (same request id, fresh signature) is not applied twice.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
js=$top/tests/js/federation
dir=$(mktemp -d /tmp/pgpod-in.XXXXXX); chmod 755 "$dir"
friend=http://127.0.0.1:$((PGPOD_HTTP_PORT + 33))
inbox=${PGPOD_URL:-http://127.0.0.1:$PGPOD_HTTP_PORT}/rpc/inbox
cleanup() {
  q -c "DELETE FROM pod.videos WHERE origin = '$friend'; DELETE FROM pod.friends WHERE url = '$friend'" >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
plan 16

(cd "$js" && npm ci --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1)
ok $? "npm ci in tests/js/federation"
wait_for 20 curl -sf "${inbox%/rpc/inbox}/rpc/friend_list"
ok $? "the gateway serves /rpc ($inbox)"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/friend.key" 2>/dev/null &&
  openssl pkey -in "$dir/friend.key" -pubout -out "$dir/friend.pub" &&
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/other.key" 2>/dev/null
ok $? "a friend's key pair and a forger's (openssl)"
printf "INSERT INTO pod.friends (url, state, public_key) VALUES (:'u', 'active', :'k')\n" |
  q -v u="$friend" -v k="$(cat "$dir/friend.pub")"
videos_before=$(q -c "SELECT count(*) FROM pod.videos")
rejections_before=$(q -c "SELECT count(*) FROM pod.inbox_rejections")

node "$js/sign.js" --url "$inbox" --actor "$friend" --key "$dir/friend.key" --other-key "$dir/other.key" >"$dir/out" 2>"$dir/err"
ok $? "sign.js ran$(sed 's/^/ # /' "$dir/err" | head -3)"
line() { grep "^$1 " "$dir/out" | cut -d' ' -f2-; }
status() { line "$1" | cut -d' ' -f1; }
message() { line "$1" | cut -d' ' -f2- | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{try{const o=JSON.parse(s);console.log(o.message||o.status)}catch(e){console.log(s)}})"; }
is "$(status good) $(message good)" "200 applied" "a request signed by http-signature with the friend's key is applied"
uuid=$(line uuid)
is "$(q -c "SELECT origin || ' ' || name FROM pod.videos WHERE uuid = '$uuid'")" "$friend Signed by http-signature" "its video is in the index"
is "$(status retried) $(message retried)" "200 duplicate" "a retry (same request id, fresh Date and signature) is acknowledged, not applied again"
is "$(status replayed) $(message replayed)" "401 replayed request (signature already seen)" "the same signed request replayed is refused"
is "$(status forged) $(message forged)" "401 signature does not verify" "a request signed with another key is refused"
is "$(status stale) $(message stale)" "401 Date is more than 1800 s away from now" "a 31-minute-old Date is refused"
is "$(status future) $(message future)" "401 Date is more than 1800 s away from now" "a Date 31 minutes ahead is refused"
is "$(status digest) $(message digest)" "400 Digest does not match the body" "a body that does not match its Digest is refused"
is "$(status unsigned) $(message unsigned)" "401 request is not signed (no Signature header)" "an unsigned request is refused"
is "$(q -c "SELECT count(*) FROM pod.videos") $(q -c "SELECT count(*) FROM pod.videos WHERE name IN ('Refused', 'Changed')")" \
   "$((videos_before + 1)) 0" "refused requests changed nothing (one video more: the good one)"
is "$(q -c "SELECT count(*) FROM pod.inbox_rejections") - $rejections_before" "$(( rejections_before + 5 )) - $rejections_before" \
   "each of the 5 refusals naming the friend's key left its log row (pod.inbox_rejections); the unsigned one only counts"
hdr=$(curl -s -o /dev/null -D - -X POST "$inbox" -H 'Content-Type: application/json' -d '{"type": "Refused"}' | tr -d '\r' | grep -i '^WWW-Authenticate:')
is "$hdr" 'WWW-Authenticate: Signature realm="pgpod",headers="(request-target) host date digest"' \
   "a 401 names the scheme and the headers a signature must cover (WWW-Authenticate)"
done_testing
