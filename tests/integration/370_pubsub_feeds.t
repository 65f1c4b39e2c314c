#!/bin/bash
# Feed subscriptions end to end: a PeerTube-like feed built with PeerTube's own feed
# library (@peertube/feed, filled as PeerTube's server fills it) served on loopback;
# the pod subscribes, its federator polls, the C parsers fill api.network_videos with
# what the library was given; a poll with no change is a 304 that transfers no body;
# a new video reaches the index at the next poll; the Atom form parses too.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
plan 12
port=$((PGPOD_HTTP_PORT + 50)); feed=http://127.0.0.1:$port
dir=$(mktemp -d /tmp/pgpod-feeds.XXXXXX)
feed_pid=
cleanup() { [[ -n $feed_pid ]] && kill "$feed_pid" 2>/dev/null; q -c "DELETE FROM pod.feeds; DELETE FROM pod.pubsub_nodes WHERE name = 'urn:pgpod:feed'" >/dev/null 2>&1; rm -rf "$dir"; }
trap cleanup EXIT

(cd "$top/tests/js/feeds" && { [[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error >/dev/null; })
node "$top/tests/js/feeds/serve.js" --port "$port" --videos 3 >"$dir/feed.log" 2>&1 &
feed_pid=$!
wait_for 20 curl -sf "$feed/stats" -o /dev/null
ok $? "a PeerTube-like feed serves on $feed"
stat() { curl -s "$feed/stats" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const j=JSON.parse(s);console.log($1)})"; }

q -c "SELECT pod.feed_subscribe('$feed/feeds/videos.xml', interval '1 second')" >/dev/null
ok $? "subscribe to its RSS feed (interval 1 s)"
count() { q -c "SELECT count(*) FROM api.network_videos WHERE from_feed AND service = '$feed/feeds/videos.xml'"; }
three() { [[ $(count) == 3 ]]; }
wait_for 30 three
ok $? "the federator polled it: its 3 videos are in api.network_videos"

# The parsed fields are what the library was given.
curl -s "$feed/items" >"$dir/items.json"
q -c "SELECT json_agg(json_build_object('name', name, 'description', description, 'author', author, 'url', url,
         'duration', duration, 'thumbnail', thumbnail, 'torrents', torrents, 'published', created_at,
         'files', (SELECT json_agg(json_build_object('url', f ->> 'url', 'height', (f ->> 'resolution')::int, 'size', (f ->> 'size')::bigint,
                                                     'fps', (f ->> 'fps')::int) ORDER BY (f ->> 'resolution')::int DESC)
                     FROM jsonb_array_elements(files) f),
         'views', parsed -> 'views', 'embed', parsed ->> 'embed') ORDER BY name)
      FROM api.network_videos WHERE from_feed" >"$dir/parsed.json"
node -e '
const given = require(process.argv[1]), parsed = require(process.argv[2]);
const base = process.argv[3]; let bad = [];
for (const v of given) {
  const p = parsed.find(x => x.name === v.name);
  if (!p) { bad.push("missing " + v.name); continue; }
  const want = { description: v.description, author: v.channel.name, url: `${base}/w/${v.uuid}`, duration: v.duration,
    thumbnail: v.thumbnail.url, torrents: v.files.map(f => f.torrent), published: new Date(v.published).getTime(),
    files: v.files.map(f => ({ url: f.url, height: f.height, size: f.size, fps: f.fps })), views: v.views,
    embed: `${base}/videos/embed/${v.uuid}` };
  const got = { ...p, published: new Date(p.published).getTime() };
  for (const k of Object.keys(want))
    if (JSON.stringify(got[k]) !== JSON.stringify(want[k])) bad.push(`${v.name} ${k}: got ${JSON.stringify(got[k])} want ${JSON.stringify(want[k])}`);
}
if (bad.length) { console.log(bad.join("\n")); process.exit(1); }' "$dir/items.json" "$dir/parsed.json" "$feed" >"$dir/compare.log" 2>&1
ok $? "name, description, author, link, duration, thumbnail, torrents, files by resolution (url, size, fps), views, embed, date: as given to @peertube/feed"
[[ -s $dir/compare.log ]] && sed 's/^/# /' "$dir/compare.log" >&2

# No change: the next polls are conditional and answered 304 without a body.
not_modified() { [[ $(q -c "SELECT not_modified FROM pod.feeds WHERE url = '$feed/feeds/videos.xml'") -ge 1 ]]; }
wait_for 20 not_modified
ok $? "a poll with no change is answered 304 (recorded on the feed)"
is "$(q -c "SELECT last_body_bytes FROM pod.feeds WHERE url = '$feed/feeds/videos.xml' AND last_status = 304")" "0" "and the pod received no body"
ok "$( (( $(stat 'j.status["304"] || 0') >= 1 && $(stat 'j.conditional') >= 1 )); echo $?)" \
  "the server saw conditional GETs and sent $(stat 'j.status["304"] || 0') 304s ($(stat 'j.status["200"]') 200s)"
is "$(count)" "3" "the cache is unchanged"

# A new video: the ETag changes, the next poll gets it.
curl -s -X POST "$feed/add" >/dev/null
four() { [[ $(count) == 4 ]]; }
wait_for 20 four
ok $? "a video added to the feed reaches the index at the next poll"

# The Atom form of the same feed: entries parse (that library's Atom carries no Media RSS).
q -c "SELECT pod.feed_subscribe('$feed/feeds/videos.atom', interval '1 hour')" >/dev/null
atom() { [[ $(q -c "SELECT count(*) FROM api.network_videos WHERE service = '$feed/feeds/videos.atom'") == 4 ]]; }
wait_for 20 atom
ok $? "its Atom feed parses too: 4 entries"
is "$(q -c "SELECT name || ' | ' || description || ' | ' || author FROM api.network_videos WHERE service = '$feed/feeds/videos.atom' ORDER BY name LIMIT 1")" \
   "PeerTube video 1 | The description of video 1 | Channel 1" "Atom entries give title, summary, author"

# Full text through the gateway's fts operator, from api.network_videos.
is "$(curl -s "http://127.0.0.1:$PGPOD_HTTP_PORT/network_videos?search=fts(simple).description&service=eq.$feed/feeds/videos.xml&select=name&order=name&limit=1")" \
   '[{"name":"PeerTube video 1"}]' "GET /network_videos?search=fts(simple).… finds feed videos"
done_testing
