-- pgTAP: the pubsub cache: the C parsers (Atom / XEP-0277, video with Media RSS, RSS
-- items, feeds) and hostile XML (malformed, XXE, billion laughs, oversize, too deep);
-- analysers (an unknown parser refused, registering re-parses); publish/retract/purge/
-- delete with the convergence rule (origin time, tombstones); RSM paging (both ends,
-- unknown item); search by full text and parsed paths from their indexes; the network
-- video index.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(145);

DELETE FROM pod.jobs;
DELETE FROM pod.friends;
DELETE FROM pod.pubsub_nodes;
SELECT pod.ensure_identity('http://127.0.0.1:57451');

CREATE FUNCTION pg_temp.video(id text, title text, updated text DEFAULT '2026-01-02T03:04:05Z',
                              extra text DEFAULT '') RETURNS text LANGUAGE sql AS $$
  SELECT format($x$<entry xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"
       xmlns:pod="urn:pgpod:video:0" xmlns:thr="http://purl.org/syndication/thread/1.0">
  <id>%s</id><title>%s</title>
  <summary>A video about &lt;pods&gt; &amp; federation</summary>
  <author><name>Alice Example</name><uri>http://127.0.0.1:57999/a/alice</uri><email>alice@example.org</email></author>
  <published>2026-01-01T10:00:00+01:00</published><updated>%s</updated>
  <link rel="alternate" type="text/html" href="http://127.0.0.1:57999/w/%s"/>
  <link rel="replies" title="comments" href="xmpp:pod@example.org?;node=urn%%3Axmpp%%3Acomments%%3A%s"/>
  <category term="federation" label="Federation"/>
  <thr:in-reply-to ref="tag:example.org,2026:parent" href="http://127.0.0.1:57999/parent"/>
  <media:group>
    <media:content url="http://127.0.0.1:57999/f/%s-720.mp4" type="video/mp4" medium="video" height="720" fileSize="1048576" framerate="30" duration="93"/>
    <media:content url="http://127.0.0.1:57999/f/%s-360.mp4" type="video/mp4" height="360" fileSize="524288"/>
    <media:peerLink type="application/x-bittorrent" href="magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"/>
    <media:peerLink type="application/x-bittorrent" href="http://127.0.0.1:57999/t/%s.torrent"/>
  </media:group>
  <media:thumbnail url="http://127.0.0.1:57999/s/%s-small.jpg" width="160" height="90"/>
  <media:thumbnail url="http://127.0.0.1:57999/s/%s.jpg" width="640" height="360"/>
  <pod:uuid>%s</pod:uuid><pod:origin>http://127.0.0.1:57999</pod:origin><pod:duration>93.5</pod:duration>%s
</entry>$x$, id, title, updated, id, id, id, id, id, id, id, id, extra)
$$;

-- Parsers --------------------------------------------------------------------------------
SELECT is((SELECT array_agg(name ORDER BY name) FROM pod.pubsub_parsers()), ARRAY['atom', 'namespace', 'video'],
  'the parsers registered by name');
CREATE TEMP TABLE v AS SELECT pod.pubsub_parse('video', pg_temp.video('11111111-1111-1111-1111-111111111111', 'First video')) AS p;
SELECT is((SELECT p ->> 'id' FROM v), '11111111-1111-1111-1111-111111111111', 'video: id');
SELECT is((SELECT p ->> 'title' FROM v), 'First video', 'video: title');
SELECT is((SELECT p ->> 'summary' FROM v), 'A video about <pods> & federation', 'video: summary, predefined entities decoded');
SELECT is((SELECT p -> 'author' FROM v), '{"name": "Alice Example", "uri": "http://127.0.0.1:57999/a/alice", "email": "alice@example.org"}',
  'video: author name, uri, email');
SELECT is((SELECT p ->> 'published' FROM v), '2026-01-01T09:00:00+00:00', 'video: published, normalised to UTC');
SELECT is((SELECT p ->> 'updated' FROM v), '2026-01-02T03:04:05+00:00', 'video: updated');
SELECT is((SELECT p ->> 'link' FROM v), 'http://127.0.0.1:57999/w/11111111-1111-1111-1111-111111111111', 'video: alternate link');
SELECT is((SELECT p ->> 'comments' FROM v), 'xmpp:pod@example.org?;node=urn%3Axmpp%3Acomments%3A11111111-1111-1111-1111-111111111111',
  'video: XEP-0277 comments node');
SELECT is((SELECT p -> 'categories' FROM v), '[{"term": "federation", "label": "Federation"}]', 'video: categories');
SELECT is((SELECT p -> 'in_reply_to' FROM v), '[{"ref": "tag:example.org,2026:parent", "href": "http://127.0.0.1:57999/parent"}]',
  'video: thr:in-reply-to');
SELECT is((SELECT p ->> 'magnet' FROM v), 'magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567', 'video: magnet from media:peerLink');
SELECT is((SELECT p -> 'torrents' FROM v), '["http://127.0.0.1:57999/t/11111111-1111-1111-1111-111111111111.torrent"]', 'video: torrent URLs');
SELECT is((SELECT p -> 'files' -> 0 FROM v),
  '{"url": "http://127.0.0.1:57999/f/11111111-1111-1111-1111-111111111111-720.mp4", "type": "video/mp4", "medium": "video", "resolution": 720, "size": 1048576, "fps": 30, "duration": 93}',
  'video: files by resolution (media:content)');
SELECT is((SELECT jsonb_array_length(p -> 'files') FROM v), 2, 'video: both files');
SELECT is((SELECT p ->> 'thumbnail' FROM v), 'http://127.0.0.1:57999/s/11111111-1111-1111-1111-111111111111.jpg', 'video: the widest thumbnail');
SELECT is((SELECT (p ->> 'duration')::numeric FROM v), 93.5, 'video: duration (pgpod''s own field wins over media:content)');
SELECT is((SELECT p ->> 'uuid' FROM v), '11111111-1111-1111-1111-111111111111', 'video: uuid');
SELECT is((SELECT p ->> 'origin' FROM v), 'http://127.0.0.1:57999', 'video: origin');
SELECT is(pod.pubsub_parse('atom', '<entry xmlns="http://www.w3.org/2005/Atom"><id>x</id><title>Hi</title>
  <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <b>world</b></p></div></content></entry>') - 'parser',
  '{"format": "atom", "id": "x", "title": "Hi", "content": "Hello world", "content_xhtml": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Hello <b>world</b></p></div>"}',
  'atom: an XEP-0277 xhtml content keeps its markup and its text');
SELECT is(pod.pubsub_parse('video', '<item xmlns:media="http://search.yahoo.com/mrss/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <title><![CDATA[RSS video]]></title><link>https://peertube.example/w/abc</link><guid>https://peertube.example/w/abc</guid>
  <pubDate>Mon, 07 Dec 2026 15:00:00 GMT</pubDate><description><![CDATA[Desc]]></description><dc:creator>bob</dc:creator>
  <enclosure url="https://peertube.example/f/abc.mp4" length="42" type="video/mp4"/>
  <media:group><media:content url="https://peertube.example/f/abc.mp4" type="video/mp4" height="1080" fileSize="42" duration="61"/></media:group>
</item>') ->> 'published', '2026-12-07T15:00:00+00:00', 'video: an RSS item''s RFC 822 pubDate');

-- Hostile and bad XML ---------------------------------------------------------------------
SELECT throws_ok($$SELECT pod.pubsub_parse('video', '<entry xmlns="http://www.w3.org/2005/Atom"><title>x</entry>')$$,
  '2200M', NULL, 'malformed XML: 2200M');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
  <entry xmlns="http://www.w3.org/2005/Atom"><title>&xxe;</title></entry>')$$,
  'PX001', 'XML with a document type declaration is refused', 'XXE (external entity): PX001, nothing read');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;"><!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;"><!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
  <entry xmlns="http://www.w3.org/2005/Atom"><title>&lol9;</title></entry>')$$,
  'PX001', 'XML with a document type declaration is refused', 'billion laughs: PX001, nothing expanded');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<!DOCTYPE entry SYSTEM "http://127.0.0.1:1/evil.dtd"><entry xmlns="http://www.w3.org/2005/Atom"/>')$$,
  'PX001', NULL, 'an external DTD: PX001, not loaded');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<entry xmlns="http://www.w3.org/2005/Atom"><title>&undeclared;</title></entry>')$$,
  '2200M', NULL, 'an undeclared entity: malformed');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<entry xmlns="http://www.w3.org/2005/Atom"><title>' || repeat('x', 300000) || '</title></entry>')$$,
  '54000', NULL, 'oversize payload (over 256 kB): 54000');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<entry xmlns="http://www.w3.org/2005/Atom">' || repeat('<a>', 60) || repeat('</a>', 60) || '</entry>')$$,
  '54000', 'XML payload is nested deeper than 48 elements', 'too deep: 54000');
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<item/>')$$, '2200N', NULL, 'the atom parser wants an Atom entry');
SELECT throws_ok($$SELECT pod.pubsub_parse('nope', '<entry/>')$$, '42704', 'no pubsub parser named "nope"', 'unknown parser: 42704');
SELECT throws_ok($$SELECT pod.pubsub_parse('video', '')$$, '2200M', NULL, 'an empty payload: malformed');
-- The parser context outlives a call (pubsub_xml.c): after each kind of refusal above,
-- and after one more here, the next payload parses as a fresh context would.
SELECT throws_ok($$SELECT pod.pubsub_parse('atom', '<!DOCTYPE e [<!ENTITY x "y">]><entry xmlns="http://www.w3.org/2005/Atom"/>')$$,
  'PX001', NULL, 'a DTD is refused (again)');
SELECT is(pod.pubsub_parse('atom', '<entry xmlns="http://www.w3.org/2005/Atom"><title>After &amp; refusals</title></entry>') ->> 'title',
  'After & refusals', 'a payload after refusals parses in full');
SELECT is((SELECT count(DISTINCT pod.pubsub_parse('video', format('<entry xmlns="http://www.w3.org/2005/Atom"><n%s/><title>t%s</title></entry>', g, g)) ->> 'title')
             FROM generate_series(1, 5000) g), 5000::bigint,
  'thousands of distinct element names (the kept context''s dictionary is renewed past its limit) parse right');

-- The search vector (C) is the weighted expression it replaces, on every kind of part.
SELECT is((SELECT count(*) FROM (VALUES
    ('{"title": "Back to the pods", "author": {"name": "Alice Example"}, "summary": "Hello, World! back", "content": "x-y 3.5 pods"}'::jsonb),
    ('{}'), (NULL), ('{"author": "not an object", "content": "only content"}'), ('{"title": 5, "summary": "Élan été", "author": {"name": true}}'),
    ('{"title": "", "author": {}, "summary": null, "content": "a a a b"}')) v(parsed)
   WHERE pod.pubsub_search_vector('simple', parsed) IS DISTINCT FROM
         setweight(to_tsvector('simple', coalesce(parsed ->> 'title', '')), 'A') ||
         setweight(to_tsvector('simple', coalesce(parsed #>> '{author,name}', '')), 'B') ||
         setweight(to_tsvector('simple', coalesce(parsed ->> 'summary', '') || ' ' || coalesce(parsed ->> 'content', '')), 'C')),
  0::bigint, 'pubsub_search_vector equals setweight(title, A) || setweight(author.name, B) || setweight(summary content, C)');

-- Analysers -------------------------------------------------------------------------------
SELECT throws_ok($$SELECT pod.pubsub_analyser_register('bad', 'no_such_parser', 'urn:x')$$, '42704', NULL,
  'an analyser with an unknown parser is refused');
SELECT throws_ok($$INSERT INTO pod.pubsub_analysers (name, node_prefix, parser) VALUES ('bad2', 'urn:x', 'no_such_parser')$$,
  '23514', NULL, 'and the table''s check refuses it too');
SELECT throws_ok($$SELECT pod.pubsub_analyser_register('bad3', 'atom')$$, '22023', NULL, 'an analyser needs a prefix or a namespace');

-- Publishing ------------------------------------------------------------------------------
SELECT isnt(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', '11111111-1111-1111-1111-111111111111',
  pg_temp.video('11111111-1111-1111-1111-111111111111', 'First video')), NULL, 'publish a video item into a friend''s videos node');
SELECT is((SELECT row(type, analyser, to_sync)::text FROM pod.pubsub_nodes WHERE name = 'urn:pgpod:videos'), '(video,pgpod_videos,t)',
  'the node was made and analysed by prefix (video, synchronised)');
SELECT is((SELECT parsed ->> 'title' FROM pod.pubsub_items WHERE name = '11111111-1111-1111-1111-111111111111'), 'First video',
  'the item is stored raw and parsed');
SELECT is((SELECT created_at FROM pod.pubsub_items WHERE name = '11111111-1111-1111-1111-111111111111'), '2026-01-01T09:00:00Z'::timestamptz,
  'created comes from the entry''s published time');
SELECT throws_ok($$SELECT pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', 'bad', '<entry><oops></entry>')$$,
  '2200M', NULL, 'publishing malformed XML fails');
SELECT throws_ok($$SELECT pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', 'bad',
  '<!DOCTYPE x [<!ENTITY a "b">]><entry xmlns="http://www.w3.org/2005/Atom"/>')$$, 'PX001', NULL, 'publishing a DTD fails');
SELECT throws_ok($$SELECT pod.pubsub_publish('http://127.0.0.1:57999', 'urn:unknown:raw', 'bad', '<x><y></x>')$$,
  '2200M', NULL, 'even a node no analyser covers refuses malformed XML');
SELECT is((SELECT count(*) FROM pod.pubsub_items WHERE name = 'bad'), 0::bigint, 'and none of them stored anything');
SELECT is((SELECT count(*) FROM pod.pubsub_nodes WHERE name = 'urn:unknown:raw'), 0::bigint, 'not even a node');
SELECT throws_ok($$SELECT pod.pubsub_publish('ftp://x', 'n', 'i', '<a/>')$$, '22023', NULL, 'a service must be a URL');
SELECT throws_ok($$SELECT pod.pubsub_publish('http://127.0.0.1:57999', 'n', '', '<a/>')$$, '22023', NULL, 'an item needs an id');

-- Raw nodes and re-parsing by a newly registered analyser.
SELECT isnt(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:example:notes', 'n1', '<note xmlns="urn:example:notes"><t>hello</t></note>'),
  NULL, 'an item of a node no analyser covers is kept');
SELECT is((SELECT row(analyser, parsed)::text FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id WHERE i.name = 'n1'),
  '(,)', 'raw: no analyser, nothing parsed');
SELECT isnt(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:example:blog', 'b1',
  '<entry xmlns="http://www.w3.org/2005/Atom"><id>b1</id><title>Blog post</title></entry>'), NULL, 'an Atom item in an unknown node');
SELECT is((SELECT analyser FROM pod.pubsub_nodes WHERE name = 'urn:example:blog'), 'atom', 'is analysed by its namespace');
SELECT is(pod.pubsub_analyser_register('example_blog', 'video', 'urn:example:blog', NULL, 'video', 'blog', false, 200), 1,
  'registering an analyser that now covers a node re-analyses it');
SELECT is((SELECT row(n.analyser, n.type, i.parsed ->> 'parser')::text FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE i.name = 'b1'), '(example_blog,video,video)', 'and re-parses its items with the new parser');

-- Convergence: the origin's time decides; tombstones.
SELECT is(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', '11111111-1111-1111-1111-111111111111',
  pg_temp.video('11111111-1111-1111-1111-111111111111', 'Older title', '2025-12-31T00:00:00Z')), NULL,
  'an older version of an item is ignored');
SELECT isnt(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', '11111111-1111-1111-1111-111111111111',
  pg_temp.video('11111111-1111-1111-1111-111111111111', 'Newer title', '2026-02-01T00:00:00Z')), NULL, 'a newer one replaces it');
SELECT is((SELECT parsed ->> 'title' FROM pod.pubsub_items WHERE name = '11111111-1111-1111-1111-111111111111'), 'Newer title',
  'the newest version is cached');
SELECT ok(pod.pubsub_retract('http://127.0.0.1:57999', 'urn:pgpod:videos', '11111111-1111-1111-1111-111111111111', '2026-03-01T00:00:00Z'),
  'retract an item');
SELECT is(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', '11111111-1111-1111-1111-111111111111',
  pg_temp.video('11111111-1111-1111-1111-111111111111', 'Newer title', '2026-02-01T00:00:00Z')), NULL,
  'a publish older than the retraction cannot undo it (tombstone)');
SELECT isnt(pod.pubsub_publish('http://127.0.0.1:57999', 'urn:pgpod:videos', '11111111-1111-1111-1111-111111111111',
  pg_temp.video('11111111-1111-1111-1111-111111111111', 'Back again', '2026-04-01T00:00:00Z')), NULL,
  'a publish newer than the retraction brings the item back');
SELECT throws_ok($$SELECT pod.pubsub_retract('http://127.0.0.1:57999', 'urn:no:such', 'x')$$, 'P0002', NULL, 'retract: unknown node');
SELECT throws_ok($$SELECT pod.pubsub_purge('http://127.0.0.1:57999', 'urn:no:such')$$, 'P0002', NULL, 'purge: unknown node');
SELECT throws_ok($$SELECT pod.pubsub_delete_node('http://127.0.0.1:57999', 'urn:no:such')$$, 'P0002', NULL, 'delete: unknown node');

-- RSM paging ---------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.pubsub_items_page_b(service text, node text, max integer DEFAULT 50, after text DEFAULT NULL,
                                            before text DEFAULT NULL) RETURNS jsonb
  LANGUAGE sql RETURN pod.pubsub_items_page(service, node, max, after, before)::jsonb;
-- The SQL reference: the function as it was in plpgsql (json_build_object, exact index by counting).
CREATE FUNCTION pg_temp.pubsub_items_page_ref(service text, node text, max integer DEFAULT 50, after text DEFAULT NULL,
                                      before text DEFAULT NULL) RETURNS json
  LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pod AS $$
DECLARE
  n_id bigint;
  pivot bigint;
  page json;
  total bigint;
  first_seq bigint;
  first_name text;
  last_name text;
BEGIN
  n_id := pod.pubsub_node_id(service, node);
  IF max IS NULL OR max < 0 OR max > 1000 THEN
    RAISE EXCEPTION 'max must be between 0 and 1000, not %', coalesce(max::text, 'NULL') USING ERRCODE = '22023';
  END IF;
  IF after IS NOT NULL AND before IS NOT NULL THEN
    RAISE EXCEPTION 'a page is after an item or before one, not both' USING ERRCODE = '22023';
  END IF;
  IF coalesce(after, before, '') <> '' THEN
    SELECT seq INTO pivot FROM pod.pubsub_items i WHERE i.node_id = n_id AND i.name = coalesce(after, before);
    IF NOT FOUND THEN
      RAISE EXCEPTION 'item % is not in node %', quote_literal(coalesce(after, before)), quote_literal(node)
        USING ERRCODE = 'P0002', HINT = 'RSM: item-not-found.';
    END IF;
  END IF;
  SELECT count(*) INTO total FROM pod.pubsub_items i WHERE i.node_id = n_id;
  -- One pass over the page (at most max rows from the (node_id, seq) index).
  SELECT coalesce(json_agg(json_build_object('name', x.name, 'publisher', x.publisher, 'data', x.data, 'parsed', x.parsed,
                                             'created_at', x.created_at, 'updated_at', x.updated_at, 'version', x.version)
                           ORDER BY x.seq), '[]'),
         min(x.seq), (array_agg(x.name ORDER BY x.seq))[1], (array_agg(x.name ORDER BY x.seq DESC))[1]
    INTO page, first_seq, first_name, last_name
    FROM (SELECT i.* FROM pod.pubsub_items i
           WHERE i.node_id = n_id AND before IS NULL AND i.seq > coalesce(pivot, -1)
           ORDER BY i.seq LIMIT max) x;
  IF before IS NOT NULL THEN
    SELECT coalesce(json_agg(json_build_object('name', x.name, 'publisher', x.publisher, 'data', x.data, 'parsed', x.parsed,
                                               'created_at', x.created_at, 'updated_at', x.updated_at, 'version', x.version)
                             ORDER BY x.seq), '[]'),
           min(x.seq), (array_agg(x.name ORDER BY x.seq))[1], (array_agg(x.name ORDER BY x.seq DESC))[1]
      INTO page, first_seq, first_name, last_name
      FROM (SELECT i.* FROM pod.pubsub_items i
             WHERE i.node_id = n_id AND i.seq < coalesce(pivot, 9223372036854775807)
             ORDER BY i.seq DESC LIMIT max) x;
  END IF;
  -- json, not jsonb: the page is built once as text (the parsed values are jsonb
  -- already; re-encoding 50 of them as jsonb cost more than the query).
  RETURN json_build_object('items', page, 'count', total,
    'index', CASE WHEN first_seq IS NOT NULL
                  THEN (SELECT count(*) FROM pod.pubsub_items i WHERE i.node_id = n_id AND i.seq < first_seq) END,
    'first', first_name, 'last', last_name);
END $$;
SELECT pod.pubsub_publish('http://127.0.0.1:57998', 'urn:pgpod:videos', 'v' || g, pg_temp.video('v' || g, 'Video ' || g))
  FROM generate_series(1, 7) g;
CREATE FUNCTION pg_temp.item_count(service text) RETURNS bigint LANGUAGE sql
  RETURN (SELECT n.item_count FROM pod.pubsub_nodes n WHERE n.service = item_count.service);
SELECT is(pg_temp.item_count('http://127.0.0.1:57998'), 7::bigint, 'item_count: 7 published');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3) - 'items',
  '{"count": 7, "index": 0, "first": "v1", "last": "v3"}', 'RSM: the first page of 3 of 7');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, 'v3') - 'items',
  '{"count": 7, "index": 3, "first": "v4", "last": "v6"}', 'RSM: after v3');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, 'v6') - 'items',
  '{"count": 7, "index": 6, "first": "v7", "last": "v7"}', 'RSM: the last, short page');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, 'v7'),
  '{"items": [], "count": 7, "index": null, "first": null, "last": null}', 'RSM: past the end, an empty page');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, NULL, '') - 'items',
  '{"count": 7, "index": 4, "first": "v5", "last": "v7"}', 'RSM: before '''' is the last page');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, NULL, 'v1') ->> 'count', '7',
  'RSM: before the first item...');
SELECT is(jsonb_array_length(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, NULL, 'v1') -> 'items'), 0,
  '...is an empty page');
SELECT throws_ok($$SELECT pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 3, 'nope')$$, 'P0002', NULL,
  'RSM: an item not in the node (item-not-found)');
SELECT throws_ok($$SELECT pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:no:such')$$, 'P0002', NULL, 'RSM: unknown node');
SELECT throws_ok($$SELECT pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', -1)$$, '22023', NULL, 'RSM: a negative max');
SELECT pod.pubsub_publish('http://127.0.0.1:57998', 'urn:pgpod:videos', 'v2', pg_temp.video('v2', 'Video 2 again', '2026-05-01T00:00:00Z'));
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 1, NULL, '') ->> 'last', 'v2',
  're-publishing an item makes it the newest');
SELECT is(pg_temp.item_count('http://127.0.0.1:57998'), 7::bigint, 'item_count: a re-publish adds none');
UPDATE pod.pubsub_nodes SET max_items = 5 WHERE service = 'http://127.0.0.1:57998';
SELECT pod.pubsub_publish('http://127.0.0.1:57998', 'urn:pgpod:videos', 'v8', pg_temp.video('v8', 'Video 8'));
SELECT is((SELECT string_agg(i.name, ' ' ORDER BY seq) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = 'http://127.0.0.1:57998'), 'v5 v6 v7 v2 v8', 'max_items trims the oldest');
SELECT is(pg_temp.item_count('http://127.0.0.1:57998'), 5::bigint, 'item_count: max_items trimming counted');
SELECT is(pg_temp.pubsub_items_page_b('http://127.0.0.1:57998', 'urn:pgpod:videos', 2, 'v6'),
          pg_temp.pubsub_items_page_ref('http://127.0.0.1:57998', 'urn:pgpod:videos', 2, 'v6')::jsonb,
  'RSM: a page of parsed items, the same as the SQL reference');
SELECT ok((SELECT bool_and((pod.pubsub_items_page('http://127.0.0.1:57998', 'urn:pgpod:videos', 5)::json -> 'items' -> (k - 1)::int -> 'parsed')::text
                           = i.parsed::text)
             FROM (SELECT i.parsed, row_number() OVER (ORDER BY i.seq) AS k FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
                    WHERE n.service = 'http://127.0.0.1:57998') i),
  'RSM: each parsed value written as jsonb''s own text');
SELECT is(pod.pubsub_purge('http://127.0.0.1:57998', 'urn:pgpod:videos'), 5, 'purge removes every item');
SELECT is(pg_temp.item_count('http://127.0.0.1:57998'), 0::bigint, 'item_count: purge counted');

-- RSM pages as JSON: escapes and every JSONB shape, against the SQL reference.
SELECT pod.pubsub_node('http://127.0.0.1:57997', 'urn:test:raw');
INSERT INTO pod.pubsub_items (node_id, name, data, parsed, publisher, created_at, updated_at, version)
  SELECT (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57997'), x.name, x.data, x.parsed::jsonb, x.publisher,
         '2026-01-01T10:00:00.123456+01:00', '2026-06-01T00:00:00Z', x.version
    FROM (VALUES
      ('e1', E'<x a="q">quote " backslash \\ tab\t nl\n cr\r bs\b ff\f c1\x01 c31\x1f del\x7f é ☃ 𝄞</x>',
       E'{"s": "q\\"b\\\\t\\tn\\nu\\u0001 é", "n": [1.50, -3, 1e3, 0.000001, 12345678901234567890], "b": [true, false, null], '
       '"o": {}, "a": [], "nested": {"deep": [[{"k": [1, {"z": "y"}]}]]}, "": "empty key", "long key with \\"quote\\"": 1}',
       'http://127.0.0.1:57997', 3::bigint),
      ('e2', '<x/>', '"a raw scalar"', NULL, NULL),
      ('e3', '', NULL, 'p', 1),
      ('e4', repeat('<ab c="d">', 500), '42', 'p', NULL),
      ('e5', (SELECT string_agg(repeat('x', k) || E'\t\u00e9"\\' || chr(1) || '\u2603' || chr(31), '' ORDER BY k) FROM generate_series(0, 40) k),
       '[1, "two", {"three": 3}]', 'p', 9223372036854775807)) x(name, data, parsed, publisher, version);
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw')::jsonb,
          pg_temp.pubsub_items_page_ref('http://127.0.0.1:57997', 'urn:test:raw')::jsonb,
  'RSM: escapes, NULLs, scalars and nested JSONB: the same page as the SQL reference');
SELECT is((SELECT string_agg(e ->> 'data', '|' ORDER BY k) FROM json_array_elements(pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw') -> 'items')
             WITH ORDINALITY AS x(e, k)),
          (SELECT string_agg(data, '|' ORDER BY seq) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = 'http://127.0.0.1:57997'),
  'RSM: raw payloads come back byte for byte');
SELECT is((SELECT string_agg((e -> 'parsed')::text, '|' ORDER BY k) FROM json_array_elements(pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw') -> 'items')
             WITH ORDINALITY AS x(e, k)),
          (SELECT string_agg(coalesce(parsed::text, 'null'), '|' ORDER BY seq) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = 'http://127.0.0.1:57997'),
  'RSM: parsed values written as jsonb''s own text');
SELECT is((pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', 1) -> 'items' -> 0 ->> 'created_at'),
          (SELECT to_json(created_at) #>> '{}' FROM pod.pubsub_items WHERE node_id = (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57997') AND name = 'e1'), 'RSM: times as json writes them');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', 2, NULL, 'e4')::jsonb,
          pg_temp.pubsub_items_page_ref('http://127.0.0.1:57997', 'urn:test:raw', 2, NULL, 'e4')::jsonb, 'RSM: a page before an item');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', 0)::jsonb,
          '{"items": [], "count": 5, "index": null, "first": null, "last": null}', 'RSM: max 0, an empty page with its count');
SELECT throws_ok($$SELECT pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', NULL)$$, '22023', NULL, 'RSM: max NULL');
SELECT throws_ok($$SELECT pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', 1001)$$, '22023', NULL, 'RSM: max over 1000');
SELECT throws_ok($$SELECT pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', 5, 'e1', 'e2')$$, '22023', NULL,
  'RSM: after and before together');
SELECT throws_ok($$SELECT pod.pubsub_items_page('http://127.0.0.1:57997', 'urn:test:raw', 5, NULL, 'nope')$$, 'P0002', NULL,
  'RSM: before an item not in the node');
SELECT throws_ok($$SELECT pod.pubsub_items_page(NULL, 'urn:test:raw')$$, 'P0002', NULL, 'RSM: no service, no node');
SELECT throws_ok($$SELECT pod.pubsub_items_page('http://127.0.0.1:57997', NULL, NULL, 'x', 'y')$$, 'P0002', NULL,
  'RSM: an unknown node before bad arguments');

-- A big node: 1,200 items. index is exact within 512 items of either end, null between
-- (XEP-0059: optional), so that no page counts its node.
SELECT pod.pubsub_node('http://127.0.0.1:57996', 'urn:test:big');
INSERT INTO pod.pubsub_items (node_id, name, data, parsed, publisher)
  SELECT (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57996'), 'b' || g, '<b n="' || g || '"/>',
         jsonb_build_object('n', g), 'http://127.0.0.1:57996'
    FROM generate_series(1, 1200) g ORDER BY g;
SELECT is(pg_temp.item_count('http://127.0.0.1:57996'), 1200::bigint, 'item_count: one statement of 1200 items');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big')::jsonb - 'items',
  '{"count": 1200, "index": 0, "first": "b1", "last": "b50"}', 'big node: the first page');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, NULL, '')::jsonb - 'items',
  '{"count": 1200, "index": 1150, "first": "b1151", "last": "b1200"}', 'big node: the last page');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b100')::jsonb - 'items',
  '{"count": 1200, "index": 100, "first": "b101", "last": "b150"}', 'big node: near the start, index counted from it');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b512')::jsonb - 'items',
  '{"count": 1200, "index": 512, "first": "b513", "last": "b562"}', 'big node: 512 items in, still counted from the start');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b600')::jsonb - 'items',
  '{"count": 1200, "index": null, "first": "b601", "last": "b650"}', 'big node: in the middle, index unknown');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b688')::jsonb - 'items',
  '{"count": 1200, "index": 688, "first": "b689", "last": "b738"}', 'big node: 512 items from the end, counted from it');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, NULL, 'b1100')::jsonb - 'items',
  '{"count": 1200, "index": 1049, "first": "b1050", "last": "b1099"}', 'big node: a page before an item near the end');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, NULL, 'b700')::jsonb - 'items',
  '{"count": 1200, "index": null, "first": "b650", "last": "b699"}', 'big node: a page before an item in the middle');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b1180')::jsonb - 'items',
  '{"count": 1200, "index": 1180, "first": "b1181", "last": "b1200"}', 'big node: the last, short page after an item');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b1200')::jsonb,
  '{"items": [], "count": 1200, "index": null, "first": null, "last": null}', 'big node: past the end');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, NULL, 'b1')::jsonb,
  '{"items": [], "count": 1200, "index": null, "first": null, "last": null}', 'big node: before the first item');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 3, 'b600')::jsonb - 'index',
          pg_temp.pubsub_items_page_ref('http://127.0.0.1:57996', 'urn:test:big', 3, 'b600')::jsonb - 'index',
  'big node: a middle page is the reference''s but for index');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 1000, 'b10')::jsonb,
          pg_temp.pubsub_items_page_ref('http://127.0.0.1:57996', 'urn:test:big', 1000, 'b10')::jsonb,
  'big node: a page of 1000, the same as the reference');

-- item_count through every way items come and go.
SELECT ok(pod.pubsub_retract('http://127.0.0.1:57996', 'urn:test:big', 'b5'), 'retract one of the big node');
SELECT is(pg_temp.item_count('http://127.0.0.1:57996'), 1199::bigint, 'item_count: a retraction counted');
SELECT is(pod.pubsub_items_page('http://127.0.0.1:57996', 'urn:test:big', 50, 'b100')::jsonb ->> 'index', '99',
  'big node: index follows a retraction');
UPDATE pod.pubsub_items SET node_id = (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57997')
 WHERE node_id = (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57996') AND name IN ('b1', 'b2', 'b3');
SELECT is(ARRAY[pg_temp.item_count('http://127.0.0.1:57996'), pg_temp.item_count('http://127.0.0.1:57997')], ARRAY[1196, 8]::bigint[],
  'item_count: items moved between nodes');
UPDATE pod.pubsub_items SET data = data || ' ' WHERE node_id = (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57996') AND name IN ('b6', 'b7');
SELECT is(pg_temp.item_count('http://127.0.0.1:57996'), 1196::bigint, 'item_count: an update in place changes nothing');
DELETE FROM pod.pubsub_items WHERE node_id = (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57996') AND name IN ('b10', 'b11')
   OR node_id = (SELECT id FROM pod.pubsub_nodes WHERE service = 'http://127.0.0.1:57997') AND name = 'e5';
SELECT is(ARRAY[pg_temp.item_count('http://127.0.0.1:57996'), pg_temp.item_count('http://127.0.0.1:57997')], ARRAY[1194, 7]::bigint[],
  'item_count: one DELETE across two nodes');
INSERT INTO pod.pubsub_items (node_id, name, data)
  SELECT n.id, 'both', '<x/>' FROM pod.pubsub_nodes n WHERE n.service IN ('http://127.0.0.1:57996', 'http://127.0.0.1:57997');
SELECT is(ARRAY[pg_temp.item_count('http://127.0.0.1:57996'), pg_temp.item_count('http://127.0.0.1:57997')], ARRAY[1195, 8]::bigint[],
  'item_count: one INSERT across two nodes');
SELECT ok(pod.pubsub_delete_node('http://127.0.0.1:57997', 'urn:test:raw'), 'delete a node with its items');
SELECT is(pg_temp.item_count('http://127.0.0.1:57996'), 1195::bigint, 'item_count: another node''s deletion leaves this one');
SELECT is((SELECT count(*) FROM pod.pubsub_nodes n WHERE n.item_count <> (SELECT count(*) FROM pod.pubsub_items i WHERE i.node_id = n.id)),
  0::bigint, 'item_count: every node''s count is its items'' after all of the above');

-- Search -------------------------------------------------------------------------------------
SELECT is((SELECT array_agg(item ORDER BY item) FROM pod.pubsub_search('back')), ARRAY['11111111-1111-1111-1111-111111111111'],
  'full-text search finds a title word');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "uuid", "op": "=", "value": "11111111-1111-1111-1111-111111111111"}]')),
  1::bigint, 'search by a parsed path (=)');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "author.name", "op": "in", "value": ["Alice Example", "Nobody"]}]')),
  1::bigint, 'search by a nested parsed path (in)');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "torrents", "op": "overlap", "value": ["http://127.0.0.1:57999/t/11111111-1111-1111-1111-111111111111.torrent"]}]')),
  1::bigint, 'search by overlap with an array');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "title", "op": "like", "value": "Back%"}]')), 1::bigint, 'search by like');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "duration", "op": ">", "value": 90}]', 'video')), 1::bigint,
  'search by a comparison, within a node type');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "title", "op": "like", "value": "Nothing like this%"}]')), 0::bigint,
  'like with a prefix nothing has finds nothing');
SELECT is((SELECT count(*) FROM pod.pubsub_search(NULL, '[{"path": "duration", "op": "<=", "value": 90}]', 'video')), 0::bigint,
  'a comparison the other way finds nothing');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "title", "op": "like", "value": "%ack%"}]')$$, '0A000', NULL,
  'like without a literal prefix is refused (no index serves it)');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "summary", "op": "like", "value": "A%"}]')$$, '0A000', NULL,
  'like on a path without its index is refused');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "title", "op": ">", "value": 3}]')$$, '0A000', NULL,
  'a comparison on a path without its index is refused');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "duration", "op": ">", "value": "90"}]')$$, '22023', NULL,
  'a comparison on duration needs a number');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "uuid", "op": "="}]')$$, '22023', NULL, '= without a value is refused');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '["uuid"]')$$, '22023', NULL, 'a filter that is not an object is refused');
-- Each accepted filter is served by an index (sequential scans off: the index is usable).
CREATE FUNCTION pg_temp.filter_plan(filter jsonb) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE r text; plan text := '';
BEGIN
  SET LOCAL enable_seqscan = off;
  FOR r IN EXECUTE 'EXPLAIN (COSTS OFF) SELECT i.id FROM pod.pubsub_items i WHERE ' || pod.pubsub_filter(filter) LOOP
    plan := plan || r || E'\n';
  END LOOP;
  RETURN plan;
END $f$;
SELECT matches(pg_temp.filter_plan('{"path": "title", "op": "like", "value": "Back%"}'), 'pubsub_items_title_idx', 'like is served by the title index');
SELECT matches(pg_temp.filter_plan('{"path": "duration", "op": ">", "value": 90}'), 'pubsub_items_duration_idx', 'a comparison is served by the duration index');
SELECT matches(pg_temp.filter_plan('{"path": "author.name", "op": "in", "value": ["a", "b"]}'), 'pubsub_items_parsed_idx', 'in is served by the GIN index on parsed');
SELECT matches(pg_temp.filter_plan('{"path": "torrents", "op": "overlap", "value": ["x"]}'), 'pubsub_items_parsed_idx', 'overlap is served by the GIN index on parsed');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "x; drop", "op": "="}]')$$, '22023', NULL, 'a bad path is refused');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[{"path": "x", "op": "~~"}]')$$, '22023', NULL, 'an unknown operator is refused');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search('x', '[]', NULL, 'id; drop')$$, '22023', NULL, 'an unknown order is refused');
SELECT is((SELECT array_agg((parsed ->> 'duration')::numeric) FROM pod.pubsub_search(NULL, '[]', 'video', 'parsed:duration')),
          (SELECT array_agg((parsed ->> 'duration')::numeric ORDER BY (parsed ->> 'duration')::numeric DESC) FROM pod.pubsub_items WHERE parsed ? 'duration'),
          'ordered by duration: the items with one, longest first');
SELECT ok((SELECT count(*) FROM pod.pubsub_search(NULL, '[]', 'video', 'parsed:duration')) > 0, 'some items have a duration');
SELECT throws_ok($$SELECT * FROM pod.pubsub_search(NULL, '[]', NULL, 'parsed:title')$$, '22023', NULL, 'an order no index serves is refused');

-- The network video index.
SELECT is((SELECT row(name, origin, author, magnet, duration)::text FROM api.network_videos WHERE uuid = '11111111-1111-1111-1111-111111111111'),
  '("Back again",http://127.0.0.1:57999,"Alice Example",magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567,93.5)',
  'api.network_videos shows a friend''s cached video, parsed');

-- Last: a TRUNCATE of the items leaves every node at 0.
TRUNCATE pod.pubsub_items;
SELECT is((SELECT count(*) FROM pod.pubsub_nodes WHERE item_count <> 0), 0::bigint, 'item_count: TRUNCATE counted');

SELECT * FROM finish();
ROLLBACK;
