#!/bin/bash
# Video federation on the pubsub cache between real pods: this instance (pod A) and
# pods B and C (their own clusters, gateways, federators). B befriends A and is
# synchronised with A's videos node; a video A publishes reaches B's
# api.network_videos parsed, an update changes it, unpublishing and deleting retract
# it; C befriends A later and gets A's whole node by paged signed GETs; A revoking B
# drops B's nodes from A's cache.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-ps.XXXXXX); chmod 755 "$dir"
a_url=$(q -c "SELECT url FROM pod.identity")
pg() { echo $((PGPOD_PG_PORT + 44 + $1)); }
http() { echo $((PGPOD_HTTP_PORT + 44 + $1)); }
url() { echo "http://127.0.0.1:$(http "$1")"; }
pod() { local n=$1 u; u=$(url "$1"); shift; PGPOD_URL_SELF=$u PGPOD_DIR=$dir/p$n PGPOD_PG_PORT=$(pg "$n") PGPOD_HTTP_PORT=$(http "$n") PGPOD_DB=pgpod "$top/scripts/pgpod" "$@"; }
qp() { local n=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir/p$n/run" -p "$(pg "$n")" -U postgres -d pgpod "$@"; }
cleanup() {
  for n in 1 2; do pod "$n" stop >/dev/null 2>&1; done
  q -c "DELETE FROM pod.friends WHERE url IN ('$(url 1)', '$(url 2)'); DELETE FROM pod.jobs WHERE kind IN ('deliver', 'pubsub_sync');
        DELETE FROM pod.channels WHERE name = 'pubsubchan'; DELETE FROM pod.users WHERE email = 'pubsub@example.org';
        DELETE FROM pod.pubsub_nodes WHERE service IN ('$a_url', '$(url 1)', '$(url 2)')" >/dev/null 2>&1
  [[ ${PGPOD_KEEP:-0} == 1 ]] || rm -rf "$dir"
}
trap cleanup EXIT
plan 14

for n in 1 2; do pod "$n" start >"$dir/start$n.log" 2>&1 || echo "# pod $n: $(tail -3 "$dir/start$n.log")"; done
up() { curl -sf "$(url 1)/rpc/friend_list" && curl -sf "$(url 2)/rpc/friend_list"; }
wait_for 30 up
ok $? "pods B ($(url 1)) and C ($(url 2)) answer"

befriend() { # befriend N: pod N and A are active friends with each other's keys
  printf "INSERT INTO pod.friends (url, state, public_key) VALUES (:'u', 'active', :'k')\n" | qp "$1" -v u="$a_url" -v k="$(q -c "SELECT public_key FROM pod.identity")"
  printf "INSERT INTO pod.friends (url, state, public_key, score) VALUES (:'u', 'active', :'k', 1000)\n" | q -v u="$(url "$1")" -v k="$(qp "$1" -c "SELECT public_key FROM pod.identity")"
}
publish() { # publish UUID NAME (on A)
  q -c "INSERT INTO pod.videos (uuid, channel_id, name, description, state, duration, magnet, thumbnail)
          SELECT '$1', id, '$2', 'About $2', 'published', interval '93 seconds', 'magnet:?xt=urn:btih:$(printf %040d 7)', 'http://thumbs.example/$1.jpg'
            FROM pod.channels WHERE name = 'pubsubchan'" >/dev/null
}
on_b() { qp 1 -c "SELECT $1 FROM api.network_videos WHERE uuid = '$2' AND origin = '$a_url'"; }

q -c "INSERT INTO pod.users (id, email, pass_hash) VALUES ('00000000-0000-0000-0000-0000000000ab', 'pubsub@example.org', '\$argon2id\$t');
      INSERT INTO pod.channels (owner_id, name, display_name) VALUES ('00000000-0000-0000-0000-0000000000ab', 'pubsubchan', 'PubSub channel')" >/dev/null
publish a0000000-0000-4000-8000-000000000001 "before friendship"
befriend 1
synced() { [[ $(on_b name a0000000-0000-4000-8000-000000000001) == "before friendship"
            && $(qp 1 -c "SELECT sync_state FROM pod.pubsub_nodes WHERE service = '$a_url' AND name = 'urn:pgpod:videos'") == completed ]]; }
wait_for 30 synced
ok $? "B befriends A: A's videos node is synchronised (sync_state completed), its video in B's network index"

publish a0000000-0000-4000-8000-000000000002 "published on A"
arrived() { [[ -n $(on_b name a0000000-0000-4000-8000-000000000002) ]]; }
wait_for 30 arrived
ok $? "a video published on A reaches B (pubsub.publish)"
is "$(on_b "name || '|' || description || '|' || author || '|' || duration || '|' || magnet || '|' || thumbnail || '|' || url" a0000000-0000-4000-8000-000000000002)" \
   "published on A|About published on A|pubsubchan|93|magnet:?xt=urn:btih:$(printf %040d 7)|http://thumbs.example/a0000000-0000-4000-8000-000000000002.jpg|$a_url/videos?uuid=eq.a0000000-0000-4000-8000-000000000002" \
   "B holds it parsed: name, description, author, duration, magnet, thumbnail, link"
is "$(curl -s "$(url 1)/network_videos?search=wfts(simple).published%20A&select=name,origin")" "[{\"name\":\"published on A\",\"origin\":\"$a_url\"}]" \
   "B's gateway finds it by full text (wfts)"

q -c "UPDATE pod.videos SET name = 'renamed on A' WHERE uuid = 'a0000000-0000-4000-8000-000000000002'" >/dev/null
renamed() { [[ $(on_b name a0000000-0000-4000-8000-000000000002) == "renamed on A" ]]; }
wait_for 30 renamed
ok $? "an update on A changes it on B"
is "$(qp 1 -c "SELECT i.version FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id WHERE n.service = '$a_url' AND i.name = 'a0000000-0000-4000-8000-000000000002'")" \
   "$(q -c "SELECT version FROM pod.videos WHERE uuid = 'a0000000-0000-4000-8000-000000000002'")" "B's item has the version of A's video"

q -c "UPDATE pod.videos SET state = 'uploaded' WHERE uuid = 'a0000000-0000-4000-8000-000000000002'" >/dev/null
gone2() { [[ -z $(on_b name a0000000-0000-4000-8000-000000000002) ]]; }
wait_for 30 gone2
ok $? "unpublishing it on A retracts it on B (pubsub.retract)"
q -c "DELETE FROM pod.videos WHERE uuid = 'a0000000-0000-4000-8000-000000000001'" >/dev/null
gone1() { [[ -z $(on_b name a0000000-0000-4000-8000-000000000001) ]]; }
wait_for 30 gone1
ok $? "deleting a video on A retracts it on B"

# B publishes too; A caches it.
qp 1 -c "INSERT INTO pod.users (id, email, pass_hash) VALUES ('00000000-0000-0000-0000-0000000000b1', 'b@example.org', '\$argon2id\$t');
         INSERT INTO pod.channels (owner_id, name, display_name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'bchan', 'B');
         INSERT INTO pod.videos (uuid, channel_id, name, state) SELECT 'b0000000-0000-4000-8000-000000000001', id, 'from B', 'published' FROM pod.channels" >/dev/null
on_a() { [[ $(q -c "SELECT count(*) FROM api.network_videos WHERE uuid = 'b0000000-0000-4000-8000-000000000001' AND origin = '$(url 1)'") == 1 ]]; }
wait_for 30 on_a
ok $? "a video published on B reaches A"

# C befriends A later: A's whole node comes by paged signed GETs (pages of 10 here).
q -c "INSERT INTO pod.videos (uuid, channel_id, name, state)
        SELECT ('c0000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, id, 'batch ' || g, 'published'
          FROM pod.channels, generate_series(1, 25) g WHERE name = 'pubsubchan'" >/dev/null
qp 2 -c "SELECT pod.set_setting('pubsub.sync_page', '10')" >/dev/null
befriend 2
all_c() { [[ $(qp 2 -c "SELECT count(*) FROM api.network_videos WHERE origin = '$a_url'") == $(q -c "SELECT count(*) FROM pod.videos WHERE origin IS NULL AND state = 'published'")
            && $(qp 2 -c "SELECT sync_state FROM pod.pubsub_nodes WHERE service = '$a_url' AND name = 'urn:pgpod:videos'") == completed ]]; }
wait_for 60 all_c
ok $? "C, a friend from later, is synchronised in full: all $(q -c "SELECT count(*) FROM pod.videos WHERE origin IS NULL AND state = 'published'") of A's published videos"
pages=$(( $(q -c "SELECT count(*) FROM pod.videos WHERE origin IS NULL AND state = 'published'") / 10 + 1 ))
is "$(qp 2 -c "SELECT count(*) FROM pod.jobs WHERE kind = 'pubsub_sync' AND payload ? 'node' AND state = 'done'")" "$pages" \
   "in $pages signed page GETs of 10"
is "$(qp 2 -c "SELECT count(*) FROM api.network_videos WHERE uuid IN ('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002')")" "0" \
   "without the videos A removed before"

# A revokes B: B's nodes leave A's cache.
q -c "UPDATE pod.friends SET state = 'revoked' WHERE url = '$(url 1)'" >/dev/null
is "$(q -c "SELECT count(*) FROM pod.pubsub_nodes WHERE service = '$(url 1)'") $(q -c "SELECT count(*) FROM api.network_videos WHERE origin = '$(url 1)'")" "0 0" \
   "revoking B drops its nodes and videos from A's cache"
done_testing
