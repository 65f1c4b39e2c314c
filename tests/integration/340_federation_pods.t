#!/bin/bash
# Three pods on loopback, each with its own cluster, gateway and federator. They make
# friends by the seed's rule over HTTP; a video published on one reaches the others'
# network index (pubsub events); a new friend's videos come by synchronising its node; a pod whose gateway is
# down makes deliveries retry and its score fall, and recovers when it is back; with a
# fast-backoff setting a dead pod reaches score 0 and is revoked with its videos.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-pods.XXXXXX); chmod 755 "$dir"
pg() { echo $((PGPOD_PG_PORT + 40 + $1)); }
http() { echo $((PGPOD_HTTP_PORT + 60 + $1)); }
url() { echo "http://127.0.0.1:$(http "$1")"; }
pod() { local n=$1 u; u=$(url "$1"); shift; PGPOD_URL_SELF=$u PGPOD_DIR=$dir/p$n PGPOD_PG_PORT=$(pg "$n") PGPOD_HTTP_PORT=$(http "$n") PGPOD_TRACKER_PORT=$(( $(http "$n") + 3 )) PGPOD_PEER_PORT=$(( $(pg "$n") + 4 )) PGPOD_DB=pgpod "$top/scripts/pgpod" "$@"; }
qp() { local n=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir/p$n/run" -p "$(pg "$n")" -U postgres -d pgpod "$@"; }
sink_pid=
cleanup() { [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null; for n in 1 2 3; do pod "$n" stop >/dev/null 2>&1; done; [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$dir"; }
trap cleanup EXIT
plan 24
echo "# pods in $dir"

for n in 1 2 3; do pod "$n" start >"$dir/start$n.log" 2>&1 || echo "# pod $n: $(tail -3 "$dir/start$n.log")"; done
up() { curl -sf "$(url 1)/rpc/friend_list" && curl -sf "$(url 2)/rpc/friend_list" && curl -sf "$(url 3)/rpc/friend_list"; }
wait_for 30 up
ok $? "three pods answer on $(url 1), $(url 2), $(url 3)"
for n in 1 2 3; do [[ -f $dir/p$n/run/federator.pid ]] || echo "# pod $n has no federator running"; done

# A local video on pod n: a user, a channel, a published video.
publish() { # publish POD UUID NAME
  qp "$1" -c "INSERT INTO pod.users (id, email, pass_hash) VALUES ('00000000-0000-0000-0000-00000000000$1', 'u$1@pods.test', '\$argon2id\$t')
                ON CONFLICT DO NOTHING;
              INSERT INTO pod.channels (owner_id, name, display_name) VALUES ('00000000-0000-0000-0000-00000000000$1', 'chan$1', 'Channel $1')
                ON CONFLICT DO NOTHING;
              INSERT INTO pod.videos (uuid, channel_id, name, state)
                SELECT '$2', id, '$3', 'published' FROM pod.channels WHERE name = 'chan$1'"
}
has_video() { [[ $(qp "$1" -c "SELECT count(*) FROM api.network_videos WHERE uuid = '$2' AND origin = '$3'") == 1 ]]; }
friends_of() { qp "$1" -c "SELECT string_agg(url || ':' || state, ' ' ORDER BY url) FROM pod.friends"; }

# An impostor asks pod 2 for friendship in pod 3's name, signing with a key of its own
# (http-signature). Pod 2 holds the request, fetches pod 3's key from pod 3's URL, and
# refuses: the key a request presents is never trusted.
(cd "$top/tests/js/federation" && { [[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error >/dev/null; })
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/impostor.key" 2>/dev/null
is "$(node "$top/tests/js/federation/sign.js" --url "$(url 2)/rpc/inbox" --actor "$(url 3)" --key "$dir/impostor.key" --friend-request \
      | cut -d' ' -f1-2)" "friend-request 202" "a friend request in pod 3's name is held (202) while pod 3's key is fetched"
refused() { [[ $(qp 2 -c "SELECT count(*) FROM pod.inbox_rejections WHERE reason = 'signature does not verify with the key published at $(url 3)'") == 1 ]]; }
wait_for 30 refused
ok $? "pod 2 fetched pod 3's key from pod 3's URL and refused the impostor's request"
is "$(friends_of 2)" "" "pod 2 has no friend from it"

publish 2 22222222-0000-0000-0000-000000000002 "on pod 2 before friendship"
# Pod 1 asks pod 2 (who has no friends yet), then pod 3 asks pod 1, whose list names pod 2.
qp 1 -c "SELECT pod.make_friends(ARRAY['$(url 2)'])" >/dev/null
p1p2() { [[ $(friends_of 1) == "$(url 2):active" && $(friends_of 2) == "$(url 1):active" ]]; }
wait_for 30 p1p2
ok $? "pod 1 and pod 2 are friends (request, acceptance, keys exchanged)"
wait_for 30 has_video 1 22222222-0000-0000-0000-000000000002 "$(url 2)"
ok $? "pod 2's video came to pod 1 by synchronising pod 2's videos node"
qp 3 -c "SELECT pod.make_friends(ARRAY['$(url 1)'])" >/dev/null
all3() { [[ $(friends_of 3) == "$(url 1):active $(url 2):active" && $(friends_of 1) == "$(url 2):active $(url 3):active"
            && $(friends_of 2) == "$(url 1):active $(url 3):active" ]]; }
wait_for 30 all3
ok $? "pod 3 asked pod 1 only and befriended pod 1 and pod 2 (in 1 of 1 lists): everyone is friends"
is "$(qp 3 -c "SELECT payload -> 'added' FROM pod.jobs WHERE kind = 'make_friends'")" "[\"$(url 1)\", \"$(url 2)\"]" \
  "pod 3's make_friends job records whom it added"
is "$(qp 3 -c "SELECT payload -> 'lists' FROM pod.jobs WHERE kind = 'make_friends'")" "{\"$(url 1)\": [\"$(url 2)\"]}" \
  "and the lists it got"

publish 1 11111111-0000-0000-0000-000000000001 "published on pod 1"
both() { has_video 2 11111111-0000-0000-0000-000000000001 "$(url 1)" && has_video 3 11111111-0000-0000-0000-000000000001 "$(url 1)"; }
wait_for 30 both
ok $? "a video published on pod 1 reaches the index of pods 2 and 3"
is "$(curl -s "$(url 3)/network_videos?uuid=eq.11111111-0000-0000-0000-000000000001&select=name,origin")" \
   "[{\"name\":\"published on pod 1\",\"origin\":\"$(url 1)\"}]" "pod 3 serves it over HTTP with its origin"
qp 1 -c "UPDATE pod.videos SET name = 'renamed on pod 1' WHERE uuid = '11111111-0000-0000-0000-000000000001'"
renamed() { [[ $(qp 3 -c "SELECT name FROM api.network_videos WHERE uuid = '11111111-0000-0000-0000-000000000001'") == "renamed on pod 1" ]]; }
wait_for 30 renamed
ok $? "an update follows (pubsub.publish of a newer version)"
publish 3 33333333-0000-0000-0000-000000000003 "on pod 3"
wait_for 30 has_video 1 33333333-0000-0000-0000-000000000003 "$(url 3)"
ok $? "pod 3's video reaches pod 1"

# Encrypted deliveries (federation.encrypt): pod 1 seals each body for its recipient
# (AES-256-GCM, key wrapped with the recipient's RSA-OAEP key). Pods 2 and 3 open them;
# a sink friend opens them with Node's crypto, an implementation nobody here wrote.
(cd "$top/tests/js/federation" && { [[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error >/dev/null; })
sink_port=$(http 9); sink=http://127.0.0.1:$sink_port
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/sink.key" 2>/dev/null
openssl pkey -in "$dir/sink.key" -pubout -out "$dir/sink.pub"
qp 1 -c "SELECT public_key FROM pod.identity" >"$dir/pod1.pub"
node "$top/tests/js/federation/inbox.js" --port "$sink_port" --verify-key "$dir/pod1.pub" --decrypt-key "$dir/sink.key" >"$dir/sink.log" 2>&1 &
sink_pid=$!
wait_for 20 curl -sf "$sink/stats" -o /dev/null
qp 1 -v key="$(cat "$dir/sink.pub")" <<<"INSERT INTO pod.friends (url, public_key, state) VALUES ('$sink', :'key', 'active');
  SELECT pod.set_setting('federation.encrypt', 'true')" >/dev/null
publish 1 11111111-0000-0000-0000-000000000005 "sealed on pod 1"
stat() { curl -s "$sink/stats" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const j=JSON.parse(s);console.log($1)})"; }
sealed() { has_video 2 11111111-0000-0000-0000-000000000005 "$(url 1)" && has_video 3 11111111-0000-0000-0000-000000000005 "$(url 1)" \
             && [[ $(stat 'j.decrypted') -ge 1 ]]; }
wait_for 30 sealed
ok $? "with encryption on, pod 1's video reaches pods 2 and 3 (they open the sealed body) and the sink"
is "$(stat '[j.received, j.verified, j.encrypted, j.decrypted, j.decrypt_failed, j.plain_types["pubsub.publish"]].join(" ")')" "1 1 1 1 0 1" \
  "the sink got one signed, sealed request and opened it with Node's crypto: a pubsub.publish"
qp 1 -c "SELECT pod.set_setting('federation.encrypt', 'false'); DELETE FROM pod.friends WHERE url = '$sink'" >/dev/null

# Pod 3's gateway goes down: pod 1's deliveries to it fail, retry, its score falls.
score13() { qp 1 -c "SELECT score FROM pod.friends WHERE url = '$(url 3)'"; }
s0=$(score13)
g3=$(cat "$dir/p3/run/gateway.pid"); kill -TERM "$g3"; wait_for 10 bash -c "! kill -0 $g3"
publish 1 11111111-0000-0000-0000-000000000011 "while pod 3 is down"
retried() { [[ $(qp 1 -c "SELECT max(attempts) FROM pod.jobs WHERE target = '$(url 3)' AND state = 'waiting'") -ge 2 ]]; }
wait_for 30 retried
ok $? "the delivery to pod 3 fails and is retried with backoff (2 s, then 6 s)"
s1=$(score13)
ok "$( ((s1 < s0)); echo $?)" "pod 3's score at pod 1 fell ($s0 → $s1)"
pod 3 start >/dev/null 2>&1
wait_for 40 has_video 3 11111111-0000-0000-0000-000000000011 "$(url 1)"
ok $? "pod 3 is back: the retried delivery arrives"
rose() { (($(score13) > s1)); }
wait_for 10 rose
ok $? "and its score rises again ($s1 → $(score13))"

# Fast backoff (the test setting), pod 3 down for good: score 0, revoked, its videos gone.
qp 1 -c "UPDATE pod.job_kinds SET retries = 100, base_delay = '50 milliseconds', factor = 1 WHERE kind = 'deliver';
         UPDATE pod.friends SET score = 60 WHERE url = '$(url 3)'"
g3=$(cat "$dir/p3/run/gateway.pid"); kill -TERM "$g3"; wait_for 10 bash -c "! kill -0 $g3"
publish 1 11111111-0000-0000-0000-000000000021 "pod 3 will not get this"
revoked() { [[ $(qp 1 -c "SELECT state FROM pod.friends WHERE url = '$(url 3)'") == revoked ]]; }
wait_for 30 revoked
ok $? "failed attempts drive pod 3's score to 0 at pod 1: revoked"
is "$(qp 1 -c "SELECT count(*) FROM api.network_videos WHERE origin = '$(url 3)'") $(qp 1 -c "SELECT count(*) FROM pod.pubsub_nodes WHERE service = '$(url 3)'")" "0 0" \
  "pod 3's videos and nodes are gone from pod 1's cache"
ok "$(has_video 2 11111111-0000-0000-0000-000000000021 "$(url 1)"; echo $?)" "pod 2 still gets pod 1's videos"

# Pod 2's PostgreSQL restarts under its federator: the daemon reconnects and delivers.
pgbin=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
as_owner() { if [[ $(id -u) -eq 0 ]]; then runuser -u "${PGPOD_OS_USER:-postgres}" -- "$@"; else "$@"; fi; }
f2=$(cat "$dir/p2/run/federator.pid")
as_owner "$pgbin/pg_ctl" -D "$dir/p2/data" -m fast -w -t 60 restart -o "-p $(pg 2) -k $dir/p2/run" -l "$dir/p2/log/postgresql.log" >/dev/null
ok $? "pod 2's PostgreSQL restarts (fast shutdown) under its running federator"
publish 2 22222222-0000-0000-0000-000000000022 "after the restart of pod 2"
wait_for 30 has_video 1 22222222-0000-0000-0000-000000000022 "$(url 2)"
ok $? "the same federator process (pid $f2, alive: $(kill -0 "$f2" 2>/dev/null && echo yes || echo no)) reconnected and delivered to pod 1"
done_testing
