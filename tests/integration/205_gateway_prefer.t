#!/usr/bin/perl
# PostgREST v12's Prefer header and aggregates through the gateway: handling=strict
# (PGRST122), Preference-Applied per action, missing=default, max-affected
# (PGRST124), tx=commit|rollback (PGPOD_GATEWAY_TX_END) and count()/sum()/...
# in select= (PGPOD_GATEWAY_AGGREGATES, PGRST123 when off). The instance's
# gateway runs the defaults; a second one started here runs
# rollback-allow-override with aggregates on.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use IO::Socket::INET;
use GwTest;

psql("GRANT USAGE ON SCHEMA pod TO pgpod_authenticator");
fixture();
my $user = token({ role => 'pgpod_user', sub => '11111111-1111-1111-1111-111111111111', exp => time + 600 });
my %auth = (Authorization => "Bearer $user");
my ($r);

# --- handling=strict / lenient -------------------------------------------------------
$r = req(GET => '/gw_items?select=id&order=id', { Prefer => 'handling=strict, foo, bar' });
is_deeply(err($r), [400, 'PGRST122', 'Invalid preferences given with handling=strict', 'Invalid preferences: foo, bar', undef],
  'handling=strict with unknown preferences: 400 PGRST122');
$r = req(GET => '/gw_items?select=id&order=id', { Prefer => 'handling=lenient, foo, bar' });
is_deeply([$r->{status}, $r->{content}, $r->{headers}{'preference-applied'}], [200, '[{"id":1}, ' . "\n" . ' {"id":2}]', 'handling=lenient'],
  'handling=lenient ignores them');
$r = req(GET => '/gw_items?select=id&order=id', { Prefer => 'foo' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [200, undef], 'lenient is the default; nothing applied, no header');
$r = req(POST => '/gw_items', { %auth, Prefer => 'return=representation,handling=strict,anything' }, { id => 50, name => 'x' });
is_deeply([@{ err($r) }[0, 1, 3]], [400, 'PGRST122', 'Invalid preferences: anything'], 'strict on a write: 400 before anything runs');
is(psql("SELECT count(*) FROM api.gw_items WHERE id = 50"), 0, '... and nothing was written');
$r = req(POST => '/rpc/gw_add', { Prefer => 'handling=strict, timezone=Nowhere/Else' }, { a => 1, b => 2 });
is_deeply(err($r), [400, 'PGRST122', 'Invalid preferences given with handling=strict', 'Invalid preferences: timezone=Nowhere/Else', undef],
  'a time zone that is not in pg_timezone_names: invalid under strict');
$r = req(GET => '/gw_items?select=id&id=eq.1', { Prefer => 'handling=strict, count=exact, tx=rollback' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}, $r->{headers}{'content-range'}], [200, 'count=exact, handling=strict', '0-0/1'],
  'tx= is a known preference even when not allowed (no error, not applied)');

# --- timezone= ---------------------------------------------------------------------------
$r = req(GET => '/rpc/gw_moment', { Prefer => 'timezone=America/Los_Angeles' });
is_deeply([$r->{status}, $r->{json}, $r->{headers}{'preference-applied'}],
  [200, [{ t => '2023-10-18T05:37:59.611-07:00', zone => 'America/Los_Angeles' }], 'timezone=America/Los_Angeles'],
  'timezone=: the transaction\'s time zone, listed as applied');
$r = req(GET => '/rpc/gw_moment', { Prefer => 'handling=strict, timezone=Asia/Kolkata' });
is_deeply([$r->{status}, $r->{json}[0]{t}, $r->{headers}{'preference-applied'}],
  [200, '2023-10-18T18:07:59.611+05:30', 'handling=strict, timezone=Asia/Kolkata'], '... under strict too, after handling');
$r = req(GET => '/rpc/gw_moment');
is_deeply([$r->{json}[0]{t}, $r->{headers}{'preference-applied'}], ['2023-10-18T12:37:59.611+00:00', undef],
  '... only for that transaction: the next request has the server\'s zone');
$r = req(GET => '/rpc/gw_moment', { Prefer => 'timezone=Invalid/Timezone' });
is_deeply([$r->{status}, $r->{json}[0]{t}, $r->{headers}{'preference-applied'}], [200, '2023-10-18T12:37:59.611+00:00', undef],
  'an unknown zone is ignored (lenient)');
$r = req(GET => '/rpc/gw_moment', { Prefer => 'handling=lenient, timezone=america/los_angeles' });
is_deeply([$r->{status}, $r->{json}[0]{zone}, $r->{headers}{'preference-applied'}], [200, 'Etc/UTC', 'handling=lenient'],
  'names are case-sensitive, as in PostgREST');
$r = req(GET => '/rpc/gw_moment', { Prefer => "handling=strict, timezone=UTC', true); SELECT 1; --" });
is_deeply(err($r), [400, 'PGRST122', 'Invalid preferences given with handling=strict', "Invalid preferences: timezone=UTC', true); SELECT 1; --", undef],
  'a hostile value is just an unknown zone');
$r = req(GET => '/rpc/gw_moment', { Prefer => 'handling=strict, timezone=' });
is_deeply(code2($r), [400, 'PGRST122'], 'an empty zone: invalid');
$r = req(GET => '/rpc/gw_moment', { Prefer => 'timezone=Europe/Paris, timezone=Nowhere, handling=strict' });
is_deeply([$r->{status}, $r->{json}[0]{zone}, $r->{headers}{'preference-applied'}], [200, 'Europe/Paris', 'handling=strict, timezone=Europe/Paris'],
  'the first timezone= wins; later ones are not invalid');
$r = req(POST => '/gw_items', { %auth, Prefer => 'return=representation, timezone=Europe/Paris' }, { id => 60, name => 'tz' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [201, 'return=representation, timezone=Europe/Paris'], 'listed on writes too');
$r = req(DELETE => '/gw_items?id=eq.60', { %auth, Prefer => 'timezone=Europe/Paris' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [204, 'timezone=Europe/Paris'], '... and on DELETE');

# --- Preference-Applied per action --------------------------------------------------------
$r = req(POST => '/gw_items', { %auth, Prefer => 'return=minimal, count=exact, resolution=merge-duplicates, missing=null' }, { id => 51, name => 'pa' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}, $r->{headers}{'content-range'}],
  [201, 'resolution=merge-duplicates, missing=null, return=minimal, count=exact', '*/1'], 'insert lists resolution, missing, return, count');
$r = req(PUT => '/gw_items?id=eq.51', { %auth, Prefer => 'return=representation, missing=default, resolution=ignore-duplicates' }, { id => 51, name => 'put' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [200, 'return=representation'], 'PUT lists return only');
$r = req(GET => '/rpc/gw_add?a=1&b=1', { Prefer => 'return=representation, count=exact' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [200, 'count=exact'], 'RPC lists count, not return');
$r = req(DELETE => '/gw_items?id=eq.51', { %auth, Prefer => 'count=exact, count=planned, return=minimal, return=representation' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}, $r->{headers}{'content-range'}], [204, 'return=minimal, count=exact', '*/1'],
  'the first of each preference wins');

# --- missing=default ------------------------------------------------------------------------
$r = req(POST => '/gw_items?columns=id,name,qty', { %auth, Prefer => 'return=representation, missing=default' },
  [{ id => 52, name => 'dflt' }, { id => 53, name => 'given', qty => 4 }, { id => 54, name => 'null', qty => undef }]);
is_deeply([$r->{status}, $r->{json}{code}], [400, '23502'], 'an explicit null is not a missing key (NOT NULL qty refuses it)');
is(psql("SELECT count(*) FROM api.gw_items WHERE id IN (52, 53, 54)"), 0, '... and the whole insert was rolled back');
$r = req(POST => '/gw_items?columns=id,name,qty', { %auth, Prefer => 'return=representation, missing=default' },
  [{ id => 52, name => 'dflt' }, { id => 53, name => 'given', qty => 4 }]);
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}, $r->{json}],
  [201, 'missing=default, return=representation', [{ id => 52, name => 'dflt', qty => 0 }, { id => 53, name => 'given', qty => 4 }]],
  'POST columns= with missing=default: the missing qty takes its default');
$r = req(POST => '/gw_items?columns=id,name,qty', { %auth, Prefer => 'return=representation' }, [{ id => 55, name => 'nulls' }]);
is_deeply([$r->{status}, $r->{json}{code}], [400, '23502'], 'without it the missing key is NULL (PostgREST\'s default)');
$r = req(POST => '/gw_tasks?columns=id,project_id,title&select=title,done', { %auth, Prefer => 'return=representation, missing=default' },
  [{ project_id => 1, title => 'via view 1' }, { project_id => 1, title => 'via view 2' }]);
is_deeply([$r->{status}, $r->{json}], [201, [{ title => 'via view 1', done => JSON::PP::false }, { title => 'via view 2', done => JSON::PP::false }]],
  'through a view: serial id and done default per row');
my @ids = split /\n/, psql("SELECT id FROM api.gw_tasks WHERE title LIKE 'via view%' ORDER BY id");
ok(@ids == 2 && $ids[1] == $ids[0] + 1, '... each row drew its own sequence value');
psql("DELETE FROM gw_private.tasks WHERE title LIKE 'via view%'");
$r = req(PATCH => '/gw_items?columns=name,qty&id=eq.53', { %auth, Prefer => 'return=representation, missing=default' }, { name => 'patched' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}, $r->{json}],
  [200, 'missing=default, return=representation', [{ id => 53, name => 'patched', qty => 0 }]], 'PATCH columns= with missing=default: qty = DEFAULT');
$r = req(POST => '/gw_items?columns=id,name', { %auth, Prefer => 'missing=default' }, [1, 2]);
is_deeply([$r->{status}, $r->{json}{code}], [400, 'PGRST102'], 'missing=default with rows that are not objects: 400 PGRST102');

# --- max-affected -------------------------------------------------------------------------
$r = req(DELETE => '/gw_items?id=in.(52,53)', { %auth, Prefer => 'handling=strict, max-affected=1' });
is_deeply(err($r), [400, 'PGRST124', 'Query result exceeds max-affected preference constraint', 'The query affects 2 rows', undef],
  'DELETE of more rows than max-affected: 400 PGRST124');
is(psql("SELECT count(*) FROM api.gw_items WHERE id IN (52, 53)"), 2, '... rolled back');
$r = req(PATCH => '/gw_items?id=in.(52,53)', { %auth, Prefer => 'handling=strict, max-affected=1, return=representation' }, { qty => 9 });
is_deeply(code2($r), [400, 'PGRST124'], 'PATCH too: 400 PGRST124');
is(psql("SELECT count(*) FROM api.gw_items WHERE qty = 9"), 0, '... rolled back');
$r = req(PATCH => '/gw_items?id=in.(52,53)', { %auth, Prefer => 'handling=lenient, max-affected=1' }, { qty => 8 });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [204, 'handling=lenient'], 'without strict max-affected is ignored');
$r = req(DELETE => '/gw_items?id=in.(52,53)', { %auth, Prefer => 'handling=strict, max-affected=2' });
is_deeply([$r->{status}, $r->{content} // '', $r->{headers}{'preference-applied'}], [204, '', 'handling=strict, max-affected=2'],
  'within the limit: done, and listed as applied');
is(psql("SELECT count(*) FROM api.gw_items WHERE id IN (52, 53)"), 0, '... deleted');

# --- max-affected on RPC ------------------------------------------------------------------
psql("INSERT INTO api.gw_items VALUES (61, 'a', 0), (62, 'b', 0), (63, 'c', 0)");
$r = req(POST => '/rpc/gw_items_drop', { %auth, Prefer => 'handling=strict, max-affected=2' }, { above => 60 });
is_deeply(err($r), [400, 'PGRST124', 'Query result exceeds max-affected preference constraint', 'The query affects 3 rows', undef],
  'RPC returning more rows than max-affected: 400 PGRST124');
is(psql("SELECT count(*) FROM api.gw_items WHERE id > 60"), 3, '... rolled back');
$r = req(POST => '/rpc/gw_items_drop_void', { %auth, Prefer => 'handling=strict, max-affected=10' }, { above => 60 });
is_deeply(err($r), [400, 'PGRST128', 'Function must return SETOF or TABLE when max-affected preference is used with handling=strict', undef, undef],
  'a void function: 400 PGRST128');
is(psql("SELECT count(*) FROM api.gw_items WHERE id > 60"), 3, '... not run');
$r = req(GET => '/rpc/gw_add?a=1&b=2', { Prefer => 'handling=strict, max-affected=10' });
is_deeply(code2($r), [400, 'PGRST128'], 'a scalar function too');
$r = req(GET => '/rpc/gw_project?pid=1', { Prefer => 'handling=strict, max-affected=10' });
is_deeply(code2($r), [400, 'PGRST128'], 'a function returning one composite too');
$r = req(GET => '/rpc/gw_add?a=1&b=2', { Prefer => 'max-affected=0' });
is_deeply([$r->{status}, $r->{content}, $r->{headers}{'preference-applied'}], [200, '3', undef], 'without strict: ignored, not listed');
$r = req(POST => '/rpc/gw_items_drop_void', { %auth, Prefer => 'handling=lenient, max-affected=0' }, { above => 62 });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [204, 'handling=lenient'], 'lenient: the void function runs');
is(psql("SELECT count(*) FROM api.gw_items WHERE id > 60"), 2, '... and deleted');
$r = req(POST => '/rpc/gw_items_drop', { %auth, Prefer => 'handling=strict, max-affected=2' }, { above => 60 });
is_deeply([$r->{status}, $r->{json}, $r->{headers}{'preference-applied'}],
  [200, [{ id => 61, name => 'a', qty => 0 }, { id => 62, name => 'b', qty => 0 }], 'handling=strict, max-affected=2'],
  'within the limit: the rows, listed as applied');
is(psql("SELECT count(*) FROM api.gw_items WHERE id > 60"), 0, '... deleted');

# --- defaults of this gateway: no aggregates, commit ------------------------------------------
$r = req(GET => '/gw_tasks?select=id.sum()');
is_deeply(err($r), [400, 'PGRST123', 'Use of aggregate functions is not allowed', undef, undef], 'aggregates off: 400 PGRST123');
$r = req(GET => '/gw_tasks?select=count()');
is_deeply(code2($r), [400, 'PGRST123'], 'count() too');
$r = req(POST => '/gw_items', { %auth, Prefer => 'tx=rollback, return=representation' }, { id => 56, name => 'kept' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [201, 'return=representation'], 'tx=rollback without an override: not applied');
is(psql("SELECT count(*) FROM api.gw_items WHERE id = 56"), 1, '... and committed');
psql("DELETE FROM api.gw_items WHERE id = 56");

# --- a second gateway: PGPOD_GATEWAY_TX_END=rollback-allow-override, aggregates on -----------------
my $port = do { my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die; my $p = $s->sockport; close $s; $p };
my $pid = fork // die;
END { kill 'TERM', $pid if $pid }
if (!$pid) {
  open STDERR, '>', '/dev/null';
  @ENV{qw(PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS PGPOD_GATEWAY_POOL PGPOD_GATEWAY_TX_END PGPOD_GATEWAY_AGGREGATES)} =
    ($port, 1, 2, 'rollback-allow-override', 'on');
  exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
}
my $base = "http://127.0.0.1:$port";
my $http = HTTP::Tiny->new(timeout => 10);
wait_until('the second gateway to know the fixture', 20, sub { $http->get("$base/gw_items?id=eq.1")->{status} == 200 });
sub req2 {
  my ($method, $path, $headers, $body) = @_;
  my %opt = (headers => { %{ $headers || {} } });
  if (defined $body) { $opt{content} = json()->encode($body); $opt{headers}{'Content-Type'} = 'application/json' }
  my $x = $http->request($method, "$base$path", \%opt);
  return { %$x, json => scalar eval { json()->decode($x->{content}) } };
}

$r = req2(POST => '/gw_items', { %auth, Prefer => 'return=representation' }, { id => 57, name => 'rolled back' });
is_deeply([$r->{status}, $r->{json}, $r->{headers}{'preference-applied'}], [201, [{ id => 57, name => 'rolled back', qty => 0 }], 'return=representation'],
  'rollback by default: the answer is what it would be');
is(psql("SELECT count(*) FROM api.gw_items WHERE id = 57"), 0, '... but nothing is committed');
$r = req2(POST => '/gw_items', { %auth, Prefer => 'tx=commit' }, { id => 58, name => 'committed' });
is_deeply([$r->{status}, $r->{headers}{'preference-applied'}], [201, 'tx=commit'], 'tx=commit overrides: listed as applied');
is(psql("SELECT count(*) FROM api.gw_items WHERE id = 58"), 1, '... and committed');
$r = req2(DELETE => '/gw_items?id=eq.58', { %auth, Prefer => 'tx=rollback, return=representation' });
is_deeply([$r->{status}, $r->{json}, $r->{headers}{'preference-applied'}], [200, [{ id => 58, name => 'committed', qty => 0 }], 'return=representation, tx=rollback'],
  'tx=rollback: the DELETE answers its rows');
is(psql("SELECT count(*) FROM api.gw_items WHERE id = 58"), 1, '... and they are still there');
psql("DELETE FROM api.gw_items WHERE id = 58");
$r = req2(POST => '/rpc/gw_bump', { %auth, Prefer => 'tx=rollback' }, { item => 2 });
is_deeply([$r->{status}, $r->{content}, psql("SELECT qty FROM api.gw_items WHERE id = 2")], [200, '3', 2], 'RPC under tx=rollback: result shown, change undone');
$r = req2(POST => '/gw_items', { %auth, Prefer => 'tx=commit, return=representation' }, { id => 59, name => 'dup', qty => -1 });
is_deeply(code2($r), [400, '23514'], 'an error under tx=commit still answers the error');
is(psql("SELECT count(*) FROM api.gw_items WHERE id = 59"), 0, '... with nothing written');

# aggregates (PostgREST v12 grammar)
$r = req2(GET => '/gw_tasks?select=count()');
is_deeply([$r->{status}, $r->{content}], [200, '[{"count":5}]'], 'count() alone');
$r = req2(GET => '/gw_tasks?select=cnt:count()::text');
is($r->{content}, '[{"cnt":"5"}]', 'count() with an alias and a cast');
$r = req2(GET => '/gw_tasks?select=project_id,c:count()&order=project_id');
is_deeply($r->{json}, [{ project_id => 1, c => 2 }, { project_id => 2, c => 2 }, { project_id => 3, c => 1 }], 'count() grouped by the other column');
$r = req2(GET => '/gw_tasks?select=id.sum(),id.max(),id.min(),id.count(),done&order=done');
is_deeply($r->{json}, [{ sum => 10, max => 5, min => 2, count => 3, done => JSON::PP::false }, { sum => 5, max => 4, min => 1, count => 2, done => JSON::PP::true }],
  'sum max min count on a column, grouped');
$r = req2(GET => '/gw_tasks?select=avg:id.avg()::numeric(4,1)');
is($r->{status}, 400, 'a cast type with parentheses is refused (the cast grammar is strict)');
$r = req2(GET => '/gw_tasks?select=a:id.avg()::text&project_id=eq.1');
is($r->{content}, '[{"a":"1.5000000000000000"}]', 'avg with a cast after it and a filter');
$r = req2(GET => '/gw_tasks?select=s:data->>size::integer.sum()::text');
is($r->{content}, '[{"s":"9"}]', 'alias, JSON path, cast before and after');
$r = req2(GET => '/gw_tasks?select=pid:project_id,total:id.sum(),gw_projects(name)&order=project_id');
is_deeply($r->{json}, [{ pid => 1, total => 3, gw_projects => { name => 'Apollo' } }, { pid => 2, total => 7, gw_projects => { name => 'Gemini' } },
  { pid => 3, total => 5, gw_projects => undef }], 'grouped by an aliased column and a to-one embed');
$r = req2(GET => '/gw_projects?select=name,gw_tasks(id.count(),id.max())&order=id');
is_deeply($r->{json}, [{ name => 'Apollo', gw_tasks => [{ count => 2, max => 2 }] }, { name => 'Gemini', gw_tasks => [{ count => 2, max => 4 }] }],
  'aggregates inside a to-many embed');
$r = req2(GET => '/rpc/gw_tasks_of?pid=1&select=id.max()');
is($r->{content}, '[{"max":2}]', 'aggregates over a function\'s rows');
# aggregates and spreads: the spread's columns count as the parent's own
sub by_sum { [sort { ($a->{sum} // $a->{count}) <=> ($b->{sum} // $b->{count}) || ($a->{name} // '') cmp ($b->{name} // '') } @{ $_[0] || [] }] }
$r = req2(GET => '/gw_tasks?select=id.sum(),...gw_projects(name)');
is_deeply(by_sum($r->{json}), [{ sum => 3, name => 'Apollo' }, { sum => 5, name => undef }, { sum => 7, name => 'Gemini' }],
  'grouped by a spread column');
$r = req2(GET => '/gw_tasks?select=done,...gw_projects(m:id.max(),n:name.min(),pid:id.sum()::text)&order=done');
is_deeply($r->{json}, [{ done => JSON::PP::false, m => 2, n => 'Apollo', pid => '3' }, { done => JSON::PP::true, m => 2, n => 'Apollo', pid => '3' }],
  'aggregates inside a spread, with an alias and a cast after, grouped by the parent\'s column');
$r = req2(GET => '/gw_tasks?select=...gw_projects(id.count(),name)');
is_deeply(by_sum($r->{json}), [{ count => 0, name => undef }, { count => 2, name => 'Apollo' }, { count => 2, name => 'Gemini' }],
  'an aggregate and a grouping column in the same spread');
$r = req2(GET => '/gw_tasks?select=...gw_projects(count())&project_id=eq.1');
is($r->{content}, '[{"count":2}]', 'count() in a spread counts the parent\'s rows');
$r = req2(GET => '/gw_tasks?select=...gw_projects(nope.sum())');
is_deeply(code2($r), [400, '42703'], 'an aggregate of an unknown spread column: 400 42703');
$r = req2(GET => '/gw_projects?select=...gw_tasks(id.sum())');
is_deeply(code2($r), [400, 'PGRST119'], 'a to-many spread is still refused');
$r = req(GET => '/gw_tasks?select=...gw_projects(id.sum())');
is_deeply(code2($r), [400, 'PGRST123'], 'aggregates off: refused inside a spread too');
$r = req2(GET => '/gw_tasks?select=id.median()');
is_deeply(code2($r), [400, 'PGRST100'], 'an unknown aggregate: 400 PGRST100');
$r = req2(GET => '/gw_tasks?select=nope.sum()');
is_deeply(code2($r), [400, '42703'], 'an aggregate of an unknown column: 400 42703');
$r = req2(GET => '/gw_tasks?select=title.sum()');
is($r->{json}{code}, '42883', 'sum of text is PostgreSQL\'s error');
$r = req2(GET => '/gw_tasks?select=id.sum()::text;drop%20table%20x');
is($r->{status}, 400, 'a hostile cast after an aggregate is refused') or diag("answer: $r->{content}");
is(psql("SELECT count(*) FROM api.gw_tasks"), 5, 'nothing was touched');

# --- return=minimal writes what the client may not read (PostgREST >= 8) ---------------
# RETURNING names a column only when the answer needs it: a column there needs SELECT
# and applies the SELECT policies to the written rows. A drop box: users insert, read
# nothing of it.
psql(q{DROP TABLE IF EXISTS api.gw_dropbox;
  CREATE TABLE api.gw_dropbox (id integer PRIMARY KEY, note text NOT NULL);
  ALTER TABLE api.gw_dropbox ENABLE ROW LEVEL SECURITY;
  CREATE POLICY gw_dropbox_in ON api.gw_dropbox FOR INSERT TO pgpod_user WITH CHECK (note <> 'refused');
  CREATE POLICY gw_dropbox_update ON api.gw_dropbox FOR UPDATE TO pgpod_user USING (true) WITH CHECK (true);
  GRANT INSERT, UPDATE (note) ON api.gw_dropbox TO pgpod_user;
  NOTIFY pgrst, 'reload schema'});
wait_until('the schema cache to show api.gw_dropbox', 20, sub {
  req(POST => '/gw_dropbox', { %auth, Prefer => 'return=minimal' }, { id => 0, note => 'probe' })->{status} == 201 });
psql("DELETE FROM api.gw_dropbox");
$r = req(POST => '/gw_dropbox', { %auth, Prefer => 'return=minimal, count=exact' }, [{ id => 1, note => 'a' }, { id => 2, note => 'b' }]);
is_deeply([$r->{status}, $r->{content}, $r->{headers}{'content-range'}], [201, '', '*/2'],
  'return=minimal: insert-only rows are written and counted, no body');
$r = req(POST => '/gw_dropbox', { %auth, Prefer => 'return=representation' }, { id => 3, note => 'c' });
is_deeply([$r->{status}, $r->{json}{code}], [403, '42501'], 'return=representation needs SELECT: 403 42501');
$r = req(POST => '/gw_dropbox', { %auth }, { id => 4, note => 'refused' });
is_deeply([$r->{status}, $r->{json}{code}], [403, '42501'], 'the INSERT policy still holds with return=minimal');
$r = req(PATCH => '/gw_dropbox', { %auth, Prefer => 'return=minimal' }, { note => 'z' });
is($r->{status}, 204, 'an unfiltered PATCH with return=minimal: the UPDATE policy decides');
is(psql("SELECT string_agg(id || note, ',' ORDER BY id) FROM api.gw_dropbox"), '1z,2z', 'exactly the two rows, each written once');
psql("DROP TABLE api.gw_dropbox; NOTIFY pgrst, 'reload schema'");

kill 'TERM', $pid;
waitpid($pid, 0);
$pid = 0;
done_testing();
