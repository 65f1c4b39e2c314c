#!/bin/bash
# The pubsub cache: ingesting 100k Atom video items through the C parser into
# pod.pubsub_items (parse + generated tsvector + every index of the cache) beside a
# plain INSERT of the same raw text into a table without indexes, same run; then, with
# 100k and with 1M cached items, a full-text query, a parsed-field query (plans printed:
# each from its GIN index) and an RSM page of 50, timed, the page in nodes of 1000 items
# and (at 1M) in one node of 100k (BENCH_PUBSUB_BIG_NODE) copied from the parsed items;
# storage per cached item beside the seed's 4 KB per video. The items past the first
# 100k are generated in SQL (raw and parsed together, no parsing) to keep the run short.
set -euo pipefail
n=${BENCH_PUBSUB_ITEMS:-100000}
big=${BENCH_PUBSUB_BIG:-1000000}
big_node=${BENCH_PUBSUB_BIG_NODE:-100000}
per_node=1000
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
cleanup() { q -c "DROP TABLE IF EXISTS public.bench_payloads, public.bench_raw, public.bench_floor; DELETE FROM pod.pubsub_nodes WHERE service LIKE 'http://bench-%'" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

# The payloads: Atom entries with Media RSS and pgpod fields, about 1.3 kB each.
q <<SQL
CREATE TABLE public.bench_payloads AS
  SELECT g AS n, 'http://bench-' || (g / $per_node) || '.example' AS service, md5(g::text)::uuid::text AS item,
         format('<entry xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/" xmlns:pod="urn:pgpod:video:0">'
           '<id>urn:uuid:%1\$s</id><title>Video %2\$s about topic%3\$s and word%2\$s</title>'
           '<summary>A benchmark video number %2\$s, with a description long enough to look like one: federation, pods, torrents.</summary>'
           '<author><name>Author %3\$s</name><uri>http://bench.example/a/%3\$s</uri></author>'
           '<published>2026-01-01T00:00:00Z</published><updated>%4\$s</updated>'
           '<link rel="alternate" href="http://bench.example/w/%1\$s"/>'
           '<media:group><media:content url="http://bench.example/f/%1\$s-720.mp4" type="video/mp4" height="720" fileSize="%5\$s" duration="%6\$s"/>'
           '<media:content url="http://bench.example/f/%1\$s-360.mp4" type="video/mp4" height="360" fileSize="%7\$s"/>'
           '<media:peerLink type="application/x-bittorrent" href="magnet:?xt=urn:btih:%8\$s"/></media:group>'
           '<media:thumbnail url="http://bench.example/s/%1\$s.jpg" width="640" height="360"/>'
           '<pod:uuid>%1\$s</pod:uuid><pod:origin>http://bench.example</pod:origin><pod:duration>%6\$s</pod:duration></entry>',
           md5(g::text)::uuid, g, g % 1000, to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           1000000 + g, 60 + g % 3600, 500000 + g, encode(sha256(g::text::bytea), 'hex')) AS data
    FROM generate_series(1, $n) g;
CREATE TABLE public.bench_raw (id bigserial PRIMARY KEY, node text, name text, data text);
INSERT INTO pod.pubsub_nodes (service, name, analyser, type, to_sync, sync_state)
  SELECT DISTINCT service, 'urn:pgpod:videos', 'pgpod_videos', 'video', true, 'completed' FROM public.bench_payloads;
SQL
echo "payloads: $(q -c "SELECT count(*) || ' Atom video entries, ' || round(avg(octet_length(data))) || ' bytes on average' FROM public.bench_payloads")"

# Ingest: the same rows, the same single statement, raw vs parsed into the cache. (OFFSET
# 0 keeps the lateral subquery whole: pulled up, its parse was evaluated once per use
# of x.parsed, three times a row.)
ms() { q -c "SELECT round(extract(epoch FROM clock_timestamp() - '$1'::timestamptz) * 1000)"; }
# timed SQL: runs SQL (statements ended by ; or a \\g line) in one session and prints "wall_ms cpu_ms": the wall time and the
# backend's own CPU time (utime + stime of /proc/self/stat, 10 ms ticks; "-" where that
# file cannot be read). On a machine shared with other work the CPU times are the
# steadier comparison; both are printed.
timed() {
  q <<SQL
CREATE FUNCTION pg_temp.cpu_ms() RETURNS bigint LANGUAGE plpgsql AS \$\$
BEGIN
  RETURN (SELECT (f[12]::bigint + f[13]::bigint) * 10 FROM string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') f);
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END \$\$;
SELECT coalesce(pg_temp.cpu_ms(), -1) AS c0, clock_timestamp() AS t0 \gset
$1
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000) || ' ' ||
       CASE WHEN :c0 < 0 OR pg_temp.cpu_ms() IS NULL THEN '-' ELSE (pg_temp.cpu_ms() - :c0)::text END;
SQL
}
read -r raw_ms raw_cpu < <(timed "INSERT INTO public.bench_raw (node, name, data) SELECT service, item, data FROM public.bench_payloads ORDER BY n;")
# GIN indexes take inserts into a pending list (fastupdate, the default) that a later
# insert or VACUUM merges: merged here, inside the measured time.
read -r cache_ms cache_cpu < <(timed "INSERT INTO pod.pubsub_items (node_id, name, data, parsed, publisher, created_at, updated_at, version)
        SELECT x.id, p.item, p.data, x.parsed, p.service, (x.parsed ->> 'published')::timestamptz, (x.parsed ->> 'updated')::timestamptz, 1
          FROM public.bench_payloads p
          CROSS JOIN LATERAL (SELECT nd.id, pod.pubsub_parse('video', p.data) AS parsed FROM pod.pubsub_nodes nd
                               WHERE nd.service = p.service AND nd.name = 'urn:pgpod:videos' OFFSET 0) x
         ORDER BY p.n;
SELECT gin_clean_pending_list('pod.pubsub_items_parsed_idx'), gin_clean_pending_list('pod.pubsub_items_search_idx') \\g /dev/null")
rate() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.0f", n * 1000 / (ms > 0 ? ms : 1) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f x", a / b }'; }
printf 'ingest %d items, plain INSERT of the raw text (reference): %7d ms  %8s items/s  (backend CPU %s ms)\n' "$n" "$raw_ms" "$(rate "$n" "$raw_ms")" "$raw_cpu"
printf 'ingest %d items, C parser into the cache (tsvector, GIN x2 merged, btrees): %7d ms  %8s items/s  (backend CPU %s ms)\n' "$n" "$cache_ms" "$(rate "$n" "$cache_ms")" "$cache_cpu"
printf 'ratio: %s plain INSERT (goal >= 0.5); in backend CPU time: %s\n' "$(ratio "$raw_ms" "$cache_ms")" "$(ratio "$raw_cpu" "$cache_cpu")"
# The floor no parser can go under: the same rows, parsed fields and search vector
# already computed (copied from the cache just filled), inserted into a table of the
# cache's shape with the same indexes (GIN on parsed and on the vector, the btrees) and
# the pending lists merged the same way. raw / floor is the best ratio the goal can
# reach with the cache's indexes, whatever the parsing costs.
q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS public.bench_floor" -c "CREATE TABLE public.bench_floor (LIKE pod.pubsub_items INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING COMPRESSION)"
read -r floor_ms floor_cpu < <(timed "INSERT INTO public.bench_floor SELECT * FROM pod.pubsub_items WHERE publisher LIKE 'http://bench-%' ORDER BY seq;
SELECT gin_clean_pending_list(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
 WHERE i.indrelid = 'public.bench_floor'::regclass AND a.amname = 'gin' \\g /dev/null")
q -c "DROP TABLE public.bench_floor"
printf 'floor: the same rows already parsed into a table with the cache'"'"'s indexes: %d ms (backend CPU %s ms): at best %s plain INSERT with these indexes\n' \
  "$floor_ms" "$floor_cpu" "$(ratio "$raw_ms" "$floor_ms")"
# Where the time goes: the C parser alone on the same rows (no write), and the search
# vector alone on the parsed values.
read -r parse_ms parse_cpu < <(timed "SELECT count(pod.pubsub_parse('video', data)) FROM public.bench_payloads \\g /dev/null")
printf 'of which the C parser alone: %d ms (%s items/s; backend CPU %s ms)\n' "$parse_ms" "$(rate "$n" "$parse_ms")" "$parse_cpu"
read -r tsv_ms tsv_cpu < <(timed "SELECT count(pod.pubsub_search_vector('simple', parsed)) FROM pod.pubsub_items WHERE publisher LIKE 'http://bench-%' \\g /dev/null")
printf 'of which the search vector alone (PostgreSQL'"'"'s word parser): %d ms (backend CPU %s ms)\n' "$tsv_ms" "$tsv_cpu"
# The per-item path friends' events and synchronisation pages take (plpgsql around the
# parser: analyser, convergence rule, upsert), on 5,000 items.
t0=$(q -c "SELECT clock_timestamp()")
q -c "SELECT count(pod.pubsub_publish(service, 'urn:pgpod:videos', item || '-p', data, service, NULL, 2)) FROM public.bench_payloads WHERE n <= 5000" >/dev/null
pub_ms=$(ms "$t0")
printf 'pod.pubsub_publish one call per item (events, sync pages): %8s items/s\n' "$(rate 5000 "$pub_ms")"
q -c "VACUUM ANALYZE pod.pubsub_items" 2>/dev/null

# Queries, each timed over 200 runs with varying parameters (median printed).
measure() { # measure SIZE
  local size=$1 big_page="'-'"
  # The big node's pages: after an item anywhere in it (most of them far from both ends).
  if [[ $(q -c "SELECT count(*) FROM pod.pubsub_nodes WHERE service = 'http://bench-big.example'") == 1 ]]; then
    big_page="pg_temp.median_ms('SELECT pod.pubsub_items_page(''http://bench-big.example'', ''urn:pgpod:videos'', 50, ''big-'' || \$1)', 200, $big_node - 60)"
  fi
  q <<SQL
SET jit = off;
CREATE OR REPLACE FUNCTION pg_temp.median_ms(sql text, runs int, modulo int) RETURNS numeric LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz; d numeric[] := '{}'; k int;
BEGIN
  FOR i IN 1 .. runs LOOP
    k := 1 + (i * 7919) % modulo;
    t0 := clock_timestamp();
    EXECUTE sql USING k;
    d := d || extract(epoch FROM clock_timestamp() - t0) * 1000;
  END LOOP;
  RETURN (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3) FROM unnest(d) x);
END \$\$;
\echo -- plan: full text (api.network_videos, search @@ one word)
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
  SELECT id, name FROM api.network_videos WHERE search @@ to_tsquery('simple', 'word4242') LIMIT 20;
\echo -- plan: parsed field (parsed @> {"uuid": ...})
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
  SELECT id, name FROM api.network_videos WHERE parsed @> jsonb_build_object('uuid', md5('4242')::uuid::text);
SELECT format('%s items: full text %s ms, parsed field %s ms, RSM page of 50 %s ms in nodes of $per_node items, %s ms in a node of $big_node (medians of 200)', $size,
  pg_temp.median_ms('SELECT count(*) FROM (SELECT id FROM api.network_videos WHERE search @@ to_tsquery(''simple'', ''word'' || \$1) LIMIT 20) x', 200, $n),
  pg_temp.median_ms('SELECT count(*) FROM api.network_videos WHERE parsed @> jsonb_build_object(''uuid'', md5(\$1::text)::uuid::text)', 200, $n),
  pg_temp.median_ms('SELECT pod.pubsub_items_page(''http://bench-'' || (\$1 / $per_node) || ''.example'', ''urn:pgpod:videos'', 50, md5(\$1::text)::uuid::text)', 200, $n - 60),
  $big_page);
SELECT format('storage per cached item: %s bytes (raw + parsed + tsvector + indexes; the seed: 4096 per video); raw text alone: %s bytes',
  pg_total_relation_size('pod.pubsub_items') / (SELECT count(*) FROM pod.pubsub_items),
  pg_total_relation_size('public.bench_raw') / (SELECT count(*) FROM public.bench_raw));
SQL
}
measure "$((n + 5000))"

# Grow to 1M cached items: one node of big_node items copied from the parsed ones (the
# same payloads as the small nodes' pages), the rest generated in SQL (raw and parsed
# without the parser).
t0=$(q -c "SELECT clock_timestamp()")
q <<SQL
INSERT INTO pod.pubsub_nodes (service, name, analyser, type, to_sync, sync_state)
  VALUES ('http://bench-big.example', 'urn:pgpod:videos', 'pgpod_videos', 'video', true, 'completed');
INSERT INTO pod.pubsub_items (node_id, name, data, parsed, publisher, created_at, updated_at, version)
  SELECT (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://bench-big.example'), 'big-' || row_number() OVER (ORDER BY k, i.seq),
         i.data, i.parsed, 'http://bench-big.example', i.created_at, i.updated_at, 1
    FROM generate_series(0, ($big_node - 1) / $n) k
    CROSS JOIN (SELECT x.seq, x.data, x.parsed, x.created_at, x.updated_at FROM pod.pubsub_items x
                 WHERE x.publisher LIKE 'http://bench-%' AND x.version = 1) i
   ORDER BY k, i.seq LIMIT $big_node;
INSERT INTO pod.pubsub_nodes (service, name, analyser, type, to_sync, sync_state)
  SELECT 'http://bench-' || g || '.example', 'urn:pgpod:videos', 'pgpod_videos', 'video', true, 'completed'
    FROM generate_series(($n + $big_node) / $per_node, $big / $per_node) g ON CONFLICT DO NOTHING;
INSERT INTO pod.pubsub_items (node_id, name, data, parsed, publisher, created_at, updated_at, version)
  SELECT nd.id, i.item, '<entry xmlns="http://www.w3.org/2005/Atom"><title>generated</title></entry>',
         jsonb_build_object('parser', 'video', 'format', 'atom', 'id', 'urn:uuid:' || i.item, 'title', 'Video ' || g || ' about topic' || g % 1000 || ' and word' || g,
           'summary', 'A generated video number ' || g || ', with a description long enough to look like one: federation, pods, torrents.',
           'author', jsonb_build_object('name', 'Author ' || g % 1000), 'uuid', i.item, 'origin', 'http://bench.example',
           'duration', 60 + g % 3600, 'magnet', 'magnet:?xt=urn:btih:' || encode(sha256(g::text::bytea), 'hex'),
           'published', '2026-01-01T00:00:00+00:00', 'updated', '2026-01-01T00:00:00+00:00'),
         nd.service, timestamptz '2026-01-01' + g * interval '1 second', timestamptz '2026-01-01' + g * interval '1 second', 1
    FROM generate_series($n + $big_node + 1, $big) g
    CROSS JOIN LATERAL (SELECT md5(g::text)::uuid::text AS item) i
    JOIN pod.pubsub_nodes nd ON nd.service = 'http://bench-' || (g / $per_node) || '.example' AND nd.name = 'urn:pgpod:videos';
VACUUM ANALYZE pod.pubsub_items;
SQL
echo "grown to $(q -c "SELECT count(*) FROM pod.pubsub_items WHERE publisher LIKE 'http://bench-%'") cached items in $(ms "$t0") ms"
measure "$big"
