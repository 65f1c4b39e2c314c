-- pgTAP: the pubsub cache: the C parsers (Atom / XEP-0277, video with Media RSS, RSS
-- items, feeds) and hostile XML (malformed, XXE, billion laughs, oversize, too deep);
-- analysers (an unknown parser refused, registering re-parses); publish/retract/purge/
-- delete with the convergence rule (origin time, tombstones); RSM paging (both ends,
-- unknown item); search by full text and parsed paths from their indexes; the network
-- video index.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(102);

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
SELECT pod.pubsub_publish('http://127.0.0.1:57998', 'urn:pgpod:videos', 'v' || g, pg_temp.video('v' || g, 'Video ' || g))
  FROM generate_series(1, 7) g;
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
UPDATE pod.pubsub_nodes SET max_items = 5 WHERE service = 'http://127.0.0.1:57998';
SELECT pod.pubsub_publish('http://127.0.0.1:57998', 'urn:pgpod:videos', 'v8', pg_temp.video('v8', 'Video 8'));
SELECT is((SELECT string_agg(i.name, ' ' ORDER BY seq) FROM pod.pubsub_items i JOIN pod.pubsub_nodes n ON n.id = i.node_id
            WHERE n.service = 'http://127.0.0.1:57998'), 'v5 v6 v7 v2 v8', 'max_items trims the oldest');
SELECT is(pod.pubsub_purge('http://127.0.0.1:57998', 'urn:pgpod:videos'), 5, 'purge removes every item');

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

SELECT * FROM finish();
ROLLBACK;
