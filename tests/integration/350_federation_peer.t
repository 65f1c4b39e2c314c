#!/bin/bash
# A peer that is not a pgpod pod (tests/js/federation/peer.mjs: its own RSA key,
# requests signed with @misskey-dev/node-http-message-signatures, an actor document at
# its keyId /users/peer#main-key, an inbox that dereferences keyIds Mastodon-style)
# against this pod through its gateway: befriending with a path keyId (its key fetched
# from its own origin), our keyId dereferenced by the peer, requests signed for another
# pod refused, the query string signed, Date as an HTTP-date only, Digest per RFC 3230,
# unsigned noise counted and not stored, a permanent refusal costing one score step, a
# 503 with Retry-After retried after it, and a federator that will not fetch a key
# from a loopback address unless allowed.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
js=$top/tests/js/federation
dir=$(mktemp -d /tmp/pgpod-peer.XXXXXX); chmod 755 "$dir"
pod=${PGPOD_URL:-http://127.0.0.1:$PGPOD_HTTP_PORT}
peer_port=$((PGPOD_HTTP_PORT + 34)); peer=http://127.0.0.1:$peer_port
peer2_port=$((PGPOD_HTTP_PORT + 36)); peer2=http://127.0.0.1:$peer2_port
other_host=127.0.0.1:$((PGPOD_HTTP_PORT + 35))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  q -c "DELETE FROM pod.jobs WHERE target IN ('$peer', '$peer2'); DELETE FROM pod.inbox_held WHERE sender IN ('$peer', '$peer2');
        DELETE FROM pod.videos WHERE origin = '$peer'; DELETE FROM pod.friends WHERE url IN ('$peer', '$peer2')" >/dev/null 2>&1
  # the instance's federator, if this test stopped it
  if [[ -n ${harness_stopped:-} ]]; then (cd "$top" && scripts/pgpod start >/dev/null 2>&1); fi
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 32

(cd "$js" && npm ci --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1)
ok $? "npm ci in tests/js/federation (@misskey-dev/node-http-message-signatures)"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/peer.key" 2>/dev/null &&
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/peer2.key" 2>/dev/null
node "$js/peer.mjs" --port "$peer_port" --pod "$pod" --key "$dir/peer.key" >"$dir/peer.log" 2>&1 &
pids+=($!)
node "$js/peer.mjs" --port "$peer2_port" --pod "$pod" --key "$dir/peer2.key" >"$dir/peer2.log" 2>&1 &
pids+=($!)
wait_for 20 curl -sf "$peer/stats" && wait_for 20 curl -sf "$peer2/stats"
ok $? "two peers listen ($peer, $peer2)"

js_get() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const o=JSON.parse(s);console.log($1)})"; }
send() { curl -s -X POST -d "$2" "${3:-$peer}/send" | js_get 'o.status + " " + (JSON.parse(o.body).status || JSON.parse(o.body).message)'; }
pstat() { curl -s "${2:-$peer}/stats" | js_get "$1"; }
uuid() { cat /proc/sys/kernel/random/uuid; }

# Our keyId, dereferenced as Mastodon does: GET <pod>#main-key with ActivityStreams Accept.
key_id=$(q -c "SELECT url || '#main-key' FROM pod.identity")
doc=$(curl -s -D "$dir/actor.h" -H 'Accept: application/activity+json' "${key_id%%#*}")
is "$(printf '%s' "$doc" | js_get 'o.publicKey.id + " " + (o.publicKey.publicKeyPem === o.public_key)')" "$key_id true" \
  "GET <pod> with Accept: application/activity+json answers an actor document whose publicKey is our keyId's"
grep -qi '^content-type: application/activity+json' "$dir/actor.h"; ok $? "as application/activity+json"
is "$(curl -s -H 'Accept: application/ld+json; profile="https://www.w3.org/ns/activitystreams"' "$pod/" | js_get 'o.type')" "Application" \
  "application/ld+json with the ActivityStreams profile too"
is "$(curl -s "$pod/" | js_get 'Object.keys(o).includes("swagger") || Object.keys(o).includes("openapi")')" "true" \
  "other Accepts still get the OpenAPI document"

# Befriending: a friend request with keyId <peer>/users/peer#main-key.
is "$(send x "{\"activity\": {\"type\": \"friend.request\"}}")" "202 held" "the peer's friend request (a path keyId) is held while its key is fetched"
befriended() { [[ $(q -c "SELECT state FROM pod.friends WHERE url = '$peer'") == active ]]; }
wait_for 30 befriended
ok $? "the federator fetched the key at the keyId's URL on the peer's own origin, and the peer is a friend"
is "$(pstat 'o.actor_gets + " " + o.actor_refused')" "1 0" "one GET of /users/peer, ActivityStreams JSON asked"
verified() { [[ $(pstat 'o.inbox_verified') -ge 1 ]]; }
wait_for 30 verified
ok $? "our friend.accept reached the peer's inbox"
is "$(pstat 'o.inbox_failed + " " + o.last_error')" "0 null" \
  "the peer verified it (Digest, draft signature) with the key it dereferenced from our keyId"
is "$(pstat 'o.key_fetch_type')" "application/activity+json; charset=utf-8" "our keyId's URL answered ActivityStreams JSON"

# Requests the peer signs with @misskey-dev/node-http-message-signatures.
u1=$(uuid)
is "$(send x "{\"activity\": {\"type\": \"video.published\", \"object\": {\"uuid\": \"$u1\", \"name\": \"from the peer\", \"version\": 1, \"updated_at\": \"2026-01-01T00:00:00Z\"}}}")" \
  "200 applied" "a video.published signed by the peer is applied"
# publish UUID NAME [OPTIONS]: the peer sends a signed video.published with /send's
# options (host, target, sign_target, date, digest); prints status and reason.
publish() { send x "{${3:+$3, }\"activity\": {\"type\": \"video.published\", \"object\": {\"uuid\": \"$1\", \"name\": \"$2\"}}}"; }
u2=$(uuid)
is "$(publish "$u2" "for another pod" "\"host\": \"$other_host\"")" \
  "401 request is signed for another host, not for this pod" "a request the peer signed for another pod (Host $other_host) is refused here"
is "$(q -c "SELECT count(*) FROM pod.videos WHERE uuid = '$u2'")" "0" "and not applied"
is "$(publish "$(uuid)" "with a query" '"target": "/rpc/inbox?x=1"')" "200 applied" "a request signed over post /rpc/inbox?x=1 is applied"
is "$(publish "$(uuid)" q '"target": "/rpc/inbox?x=2", "sign_target": "/rpc/inbox?x=1"')" \
  "401 signature does not verify" "one sent with another query than it was signed for is refused"
is "$(publish "$(uuid)" now '"date": "now"')" "400 Date header is not an HTTP-date (IMF-fixdate)" "Date: now is refused"
is "$(publish "$(uuid)" iso "\"date\": \"$(date -u +%FT%TZ)\"")" "400 Date header is not an HTTP-date (IMF-fixdate)" "an ISO 8601 Date is refused"
is "$(publish "$(uuid)" lower '"digest": "lower"')" "200 applied" "Digest: sha-256=… is accepted"
is "$(publish "$(uuid)" both '"digest": "both"')" "200 applied" "Digest: SHA-256=…,SHA-512=… is accepted"
is "$(publish "$(uuid)" 512 '"digest": "sha512"')" "400 Digest needs a SHA-256 of the body" "a Digest without a SHA-256 is refused"

# Unsigned noise: counted, not stored.
rows=$(q -c "SELECT count(*) FROM pod.inbox_rejections")
counted=$(q -c "SELECT coalesce(sum(count), 0) FROM pod.inbox_rejection_counts")
for i in $(seq 1 100); do
  curl -s -o /dev/null -X POST "$pod/rpc/inbox" -H 'Content-Type: application/json' -H "X-Noise: $(head -c 3000 /dev/zero | tr '\0' n)" -d "{\"n\": $i}"
done
is "$(q -c "SELECT count(*) FROM pod.inbox_rejections") $(q -c "SELECT coalesce(sum(count), 0) FROM pod.inbox_rejection_counts")" \
   "$rows $((counted + 100))" "100 unsigned requests leave no row, only a count (pod.inbox_rejection_counts)"

# Delivery failures: a permanent refusal is dead at once and costs one step.
q -c "UPDATE pod.friends SET score = 100 WHERE url = '$peer'; DELETE FROM pod.jobs WHERE target = '$peer'"
curl -s -X POST -d '{"status": 410}' "$peer/control" >/dev/null
job=$(q -c "SELECT pod.deliver(ARRAY['$peer'], 'video.removed', '{\"object\": {\"uuid\": \"$u1\"}}')")
dead() { [[ $(q -c "SELECT state FROM pod.jobs WHERE id = $job") == dead ]]; }
wait_for 30 dead
ok $? "a delivery the peer refuses with 410 is dead at once"
is "$(q -c "SELECT attempts || ' ' || left(last_error, 19) FROM pod.jobs WHERE id = $job")" "1 permanent: HTTP 410" \
  "after one attempt, with its reason"
is "$(q -c "SELECT score || ' ' || state FROM pod.friends WHERE url = '$peer'")" "90 active" "the friend lost one step of score (100 → 90), not 110"
curl -s -X POST -d '{"status": 503, "retry_after": "40"}' "$peer/control" >/dev/null
job=$(q -c "SELECT pod.deliver(ARRAY['$peer'], 'video.removed', '{\"object\": {\"uuid\": \"$u1\"}}')")
waiting() { [[ $(q -c "SELECT state::text || attempts FROM pod.jobs WHERE id = $job") == waiting1 ]]; }
wait_for 30 waiting
ok $? "a 503 is retried" || q -c "SELECT state, attempts, run_at - now(), last_error FROM pod.jobs WHERE id = $job" | sed 's/^/# /' >&2
is "$(q -c "SELECT run_at > now() + interval '30 seconds' FROM pod.jobs WHERE id = $job")" "t" "no sooner than its Retry-After (40 s)"
curl -s -X POST -d '{"status": 202}' "$peer/control" >/dev/null

# A federator without PGPOD_FEDERATOR_ALLOW_PRIVATE refuses to fetch a key from a
# loopback address (a stranger's friend request must not make the pod GET inside).
harness=$(cat "$PGPOD_DIR/run/federator.pid" 2>/dev/null)
if [[ -n $harness ]] && kill -0 "$harness" 2>/dev/null; then
  kill -TERM "$harness"; wait_for 15 bash -c "! kill -0 $harness"; harness_stopped=1
fi
PGUSER=pgpod_federator PGPOD_FEDERATOR_ALLOW_PRIVATE=0 \
  "${PGPOD_FEDERATOR_BIN:-$top/workers/federator/pgpod-federator}" >>"$dir/federator.log" 2>&1 &
fed=$!; pids+=($fed)
is "$(send x "{\"activity\": {\"type\": \"friend.request\"}}" "$peer2")" "202 held" "a second peer's friend request is held"
tried() { [[ $(q -c "SELECT state FROM pod.jobs WHERE kind = 'verify_key' AND target = '$peer2'") == dead ]]; }
wait_for 30 tried
ok $? "the key fetch is refused, for good (dead after one attempt: $(q -c "SELECT attempts || ', ' || last_error FROM pod.jobs WHERE kind = 'verify_key' AND target = '$peer2'"))"
is "$(pstat 'o.actor_gets + o.actor_refused' "$peer2")" "0" "but no request reached the loopback address"
grep -q "refusing to connect to a loopback/link-local/private address" "$dir/federator.log"
ok $? "the federator says why"
kill -TERM "$fed"; wait "$fed" 2>/dev/null
done_testing
