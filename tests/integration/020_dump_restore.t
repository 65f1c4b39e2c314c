#!/bin/bash
# pg_dump / pg_restore keep every pgpod table's data: users, sessions, secrets, the
# identity, rooms, messages (tombstones and versions), files, videos, settings, and
# the sequences continue where they were.
. "$(dirname "$0")/tap.sh"
src=pgpod_dump_src; dst=pgpod_dump_dst
work=$(mktemp -d /tmp/pgpod-dump.XXXXXX)
trap 'dropdb --if-exists $src; dropdb --if-exists $dst; rm -rf "$work"' EXIT
plan 9

"$PGPOD_TOP/migrations/pgpod-migrate" $src 2>/dev/null
q -d $src >/dev/null <<'SQL'
SET pgpod.password_memlimit = '8MB';
SELECT pod.register('dump@restore.test', 'dump password');
CREATE TEMP TABLE me AS SELECT * FROM pod.login('dump@restore.test', 'dump password');
SELECT set_config('request.jwt.claims', (SELECT json_build_object('role', 'pgpod_user', 'sub', user_id, 'sid', session_id)::text FROM me), false);
INSERT INTO pod.rooms (name, type) VALUES ('kept', 'group'), ('secret', 'secret');
INSERT INTO pod.messages (room_id, data) SELECT id, '{"text": "one"}' FROM pod.rooms WHERE name = 'kept';
INSERT INTO pod.messages (room_id, data) SELECT id, '{"text": "two"}' FROM pod.rooms WHERE name = 'kept';
UPDATE pod.messages SET data = '{"text": "one, edited"}' WHERE data ->> 'text' = 'one';
DELETE FROM pod.messages WHERE data ->> 'text' = 'two';
SELECT pod.register_upload(sha256('dumped'), 6, 'd.txt', 'text/plain');
INSERT INTO pod.channels (name, display_name) VALUES ('dumpchan', 'Dump');
INSERT INTO pod.videos (channel_id, name) SELECT id, 'dumped video' FROM pod.channels;
INSERT INTO pod.channel_chat_options SELECT id, '{"slow_mode_seconds": 5}' FROM pod.channels;
SELECT pod.livechat_room(uuid) FROM pod.videos;
RESET request.jwt.claims;
SELECT pod.set_setting('session.lifetime', '"7 days"');
INSERT INTO pod.friends (url) VALUES ('http://friend.test');
UPDATE pod.job_kinds SET retries = 3 WHERE kind = 'deliver';
SELECT pod.job_enqueue('deliver', '{"n": 1}', 'http://friend.test');
SELECT pod.pubsub_publish('http://friend.test', 'urn:test:dump', 'i' || g, '<x xmlns="urn:test"/>') FROM generate_series(1, 3) g;
SQL

# room_events is a stream log, not dumped: a restore replays each message once as a
# new event numbered after the room's last sequence.
snapshot() {
  q -d "$1" <<'SQL'
SELECT string_agg(format('%s=%s', c.relname, (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM pod.%I', c.relname), false, true, '')))[1]), ' ' ORDER BY c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pod' AND c.relkind = 'r' AND c.relname <> 'room_events';
SQL
}
before=$(snapshot $src)
fingerprint="SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT encode(value, 'hex') AS x FROM pod.secrets UNION ALL SELECT private_key FROM pod.identity
  UNION ALL SELECT to_jsonb(m)::text FROM pod.messages m UNION ALL SELECT to_jsonb(v)::text FROM pod.message_versions v
  UNION ALL SELECT (to_jsonb(r) - 'event_seq')::text FROM pod.rooms r
  UNION ALL SELECT to_jsonb(f)::text FROM pod.files f UNION ALL SELECT pod.setting('session.lifetime')::text
  UNION ALL SELECT to_jsonb(k)::text FROM pod.job_kinds k UNION ALL SELECT (to_jsonb(j) - 'run_at')::text FROM pod.jobs j) s"
fp_before=$(q -d $src -c "$fingerprint")

pg_dump -Fc -d $src -f "$work/pod.dump"
ok $? "pg_dump"
createdb $dst && pg_restore -d $dst --exit-on-error "$work/pod.dump" 2>"$work/restore.err"
ok $? "pg_restore into a new database"
[[ -s $work/restore.err ]] && sed 's/^/# /' "$work/restore.err" >&2
is "$(snapshot $dst)" "$before" "every pod table has the same row count"
is "$(q -d $dst -c "$fingerprint")" "$fp_before" "secrets, identity, messages, versions, rooms, files, settings, job kinds and jobs are identical"
is "$(q -d $dst -c "SELECT status FROM pod.messages ORDER BY id")" "$(printf 'edited\ndeleted')" "the tombstone is still a tombstone"
# Each pubsub node's item count (kept by a trigger that stands aside during a restore)
# comes with its node: not counted twice.
is "$(q -d $dst -c "SELECT count(*) FILTER (WHERE n.item_count <> (SELECT count(*) FROM pod.pubsub_items i WHERE i.node_id = n.id)) || ' ' || (sum(n.item_count) > 0) FROM pod.pubsub_nodes n")" "0 true" \
  "each pubsub node's item count is its items' after the restore"
q -d $dst -c "INSERT INTO pod.messages (room_id, data) SELECT id, '{\"text\": \"after\"}' FROM pod.rooms WHERE name = 'kept'" >/dev/null
ok $? "sequences continue after restore (a new message gets a free id)"
q -d $dst -c "SELECT pod.job_enqueue('deliver', '{\"n\": 2}', 'http://friend.test')" >/dev/null
ok $? "and a new job gets a free id"
seq_before=$(q -d $src -c "SELECT max(seq) FROM pod.room_events")
is "$(q -d $dst -c "SELECT min(seq) > $seq_before AND count(*) = (SELECT count(*) FROM pod.messages) FROM pod.room_events")" "t" \
  "room events continue after the room's last sequence (restored messages once, then the new one)"
done_testing
