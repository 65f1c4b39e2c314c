#!/usr/bin/perl
# PostgREST v12 behaviours found missing by a compatibility sweep of the gateway,
# each with bad inputs next to good ones: null filtering on embedded resources
# (embed=is.null / not.is.null, in or= too, PGRST120 otherwise), variadic functions
# (repeated GET parameters, a JSON array, repeated form keys), PostgREST's split of
# query parameters into filters and function arguments, schema cache errors in
# PostgREST's words with its fuzzy hints (PGRST200/202/205), a JWT role that does not
# exist (401 22023) or is not granted (403 42501).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use GwTest;

psql("GRANT USAGE ON SCHEMA pod TO pgpod_authenticator");
fixture();
my $user = token({ role => 'pgpod_user', sub => '11111111-1111-1111-1111-111111111111', exp => time + 600 });
my %auth = (Authorization => "Bearer $user");
my ($r);
sub names { [map { $_->{name} } @{ ref $_[0]{json} eq 'ARRAY' ? $_[0]{json} : [] }] }

# --- null filtering on embedded resources ----------------------------------------------
psql("INSERT INTO gw_private.projects VALUES (4, 'Mercury', NULL, false)");
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=is.null&order=id');
is_deeply([$r->{status}, $r->{json}], [200, [{ name => 'Mercury', gw_tasks => [] }]], 'embed=is.null: parents without children (anti-join)');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=not.is.null&order=id');
is_deeply(names($r), ['Apollo', 'Gemini'], 'embed=not.is.null: parents with children (as !inner)');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks.done=eq.true&gw_tasks=not.is.null&order=id', { Prefer => 'count=exact' });
is_deeply([$r->{json}, $r->{headers}{'content-range'}],
  [[{ name => 'Apollo', gw_tasks => [{ title => 'design' }] }, { name => 'Gemini', gw_tasks => [{ title => 'review, "quoted"' }] }], '0-1/2'],
  '... the embed\'s own filters count, and so does the total');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks.title=eq.build&gw_tasks=is.null&order=id');
is_deeply(names($r), ['Gemini', 'Mercury'], 'is.null with an embedded filter: no child passes it');
$r = req(GET => '/gw_projects?select=name,t:gw_tasks(title)&t=not.is.null&t.title=eq.build');
is_deeply([$r->{status}, $r->{json}], [200, [{ name => 'Apollo', t => [{ title => 'build' }] }]], 'by the embed\'s alias');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&or=(gw_tasks.is.null,id.eq.1)&order=id');
is_deeply(names($r), ['Apollo', 'Mercury'], 'inside or=');
$r = req(GET => '/gw_tasks?select=title,gw_projects(name)&gw_projects=is.null');
is_deeply([$r->{status}, $r->{json}], [200, [{ title => 'secret task', gw_projects => undef }]], 'a to-one embed (hidden by RLS counts as none)');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title,gw_labels(name))&gw_tasks.gw_labels=not.is.null&id=eq.2');
is_deeply($r->{json}, [{ name => 'Gemini', gw_tasks => [{ title => 'review, "quoted"', gw_labels => [{ name => 'blue' }] }] }],
  'on an embed inside an embed');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=eq.1');
is_deeply(err($r), [400, 'PGRST120', "Bad operator on the 'gw_tasks' embedded resource",
  'Only is null or not is null filters are allowed on embedded resources', undef], 'another operator: 400 PGRST120');
$r = req(GET => '/gw_projects?select=name&gw_tasks=is.null');
is_deeply(code2($r), [400, '42703'], 'an embed that is not selected is an unknown column');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=is.null;drop');
is($r->{status}, 400, 'a hostile value is refused');
psql("DELETE FROM gw_private.projects WHERE id = 4");

# --- variadic functions, repeated parameters -------------------------------------------
$r = req(GET => '/rpc/gw_sum_all?v=1&v=2&v=3');
is_deeply([$r->{status}, $r->{content}], [200, '6'], 'variadic by GET: the repeated parameter is the array');
$r = req(GET => '/rpc/gw_sum_all?v=5');
is($r->{content}, '5', '... once is an array of one');
$r = req(POST => '/rpc/gw_sum_all', {}, { v => [1, 2, 3, 4] });
is_deeply([$r->{status}, $r->{content}], [200, '10'], 'variadic by POST: a JSON array');
$r = req(POST => '/rpc/gw_sum_all', { 'Content-Type' => 'application/x-www-form-urlencoded' }, 'v=1&v=2&v=30');
is_deeply([$r->{status}, $r->{content}], [200, '33'], 'variadic by a form: repeated keys');
$r = req(GET => '/rpc/gw_sum_all?v=1&v=x');
is_deeply(code2($r), [400, '22P02'], 'a bad element: PostgreSQL\'s 22P02');
$r = req(GET => '/rpc/gw_add?a=1&b=2&a=30');
is_deeply([$r->{status}, $r->{content}], [200, '32'], 'a repeated parameter that is not variadic: the last value');
$r = req(GET => '/rpc/gw_sum_all?w=1&w=2');
is_deeply(code2($r), [404, 'PGRST202'], 'an unknown parameter: 404 PGRST202');

# --- count=exact on functions ------------------------------------------------------------------
$r = req(GET => '/rpc/gw_tasks_of?pid=1&limit=1&select=id', { Prefer => 'count=exact' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}, $r->{json}], [206, '0-0/2', [{ id => 1 }]], 'a page of a function\'s rows: 206 with the total');
$r = req(GET => '/rpc/gw_tasks_of?pid=1&select=id&id=gt.1', { Prefer => 'count=exact' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}], [200, '0-0/1'], 'the total counts what the filters keep');
$r = req(GET => '/rpc/gw_tasks_of?pid=1&offset=5', { Prefer => 'count=exact' });
is_deeply([$r->{status}, $r->{json}{code}, $r->{headers}{'content-range'}], [416, 'PGRST103', '*/2'], 'an offset past the end: 416');
$r = req(GET => '/rpc/gw_words?t=a%20b%20c&limit=2', { Prefer => 'count=exact' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}], [206, '0-1/3'], 'a set of scalars');
$r = req(POST => '/rpc/gw_items_drop?limit=1', { %auth, Prefer => 'count=exact' }, { above => 1000 });
is_deeply([$r->{status}, $r->{headers}{'content-range'}], [200, '*/*'], 'a volatile function is not run twice to count (total *)');

# --- filters or arguments: PostgREST decides by the key's path and the value's operator --
$r = req(GET => '/gw_items?id=1&order=id');
is_deeply([$r->{status}, scalar @{ $r->{json} || [] }], [200, 2], 'a parameter without an operator is an argument: a relation ignores it');
$r = req(GET => '/gw_items?id=foo.1&select=id&order=id');
is_deeply([$r->{status}, $r->{json}], [200, [{ id => 1 }, { id => 2 }]], '... also with a dot in its value');
$r = req(GET => '/gw_items?id=eq');
is_deeply(code2($r), [400, 'PGRST100'], 'an operator without a value is a bad filter');
$r = req(GET => '/gw_items?id=not.1');
is_deeply(code2($r), [400, 'PGRST100'], 'not. makes a filter');
$r = req(GET => '/gw_items?gw_x.id=1');
is_deeply(code2($r), [400, 'PGRST100'], 'a key with a path is a filter');
$r = req(GET => '/rpc/gw_tasks_of?pid=1&id=2');
is_deeply(err($r), [404, 'PGRST202', 'Could not find the function api.gw_tasks_of(id, pid) in the schema cache',
  'Searched for the function api.gw_tasks_of with parameters id, pid, but no matches were found in the schema cache.',
  'Perhaps you meant to call the function api.gw_tasks_of(pid)'],
  'RPC: an extra parameter is an argument the function lacks (sorted, with the closest overload as hint)');
$r = req(GET => '/rpc/gw_tasks_of?pid=1&id=eq.2&select=id');
is_deeply([$r->{status}, $r->{json}], [200, [{ id => 2 }]], 'RPC: with an operator it filters the result');
$r = req(GET => '/rpc/gw_add?a=eq.1&b=2');
is_deeply(code2($r), [404, 'PGRST202'], 'RPC: an argument whose value looks like a filter is a filter (as PostgREST)');
$r = req(GET => '/rpc/gw_raw_text?x');
is_deeply(code2($r), [404, 'PGRST202'], 'a parameter without = is dropped');

# --- schema cache errors and their hints ----------------------------------------------
$r = req(GET => '/gw_item');
is_deeply(err($r), [404, 'PGRST205', "Could not find the table 'api.gw_item' in the schema cache", undef,
  "Perhaps you meant the table 'api.gw_items'"], 'an unknown table: 404 PGRST205 with the closest table');
$r = req(GET => '/zzzzzz');
is_deeply(err($r), [404, 'PGRST205', "Could not find the table 'api.zzzzzz' in the schema cache", undef, undef],
  '... no hint when nothing is close');
$r = req(GET => '/rpc/gw_ad?a=1&b=2');
is_deeply(err($r), [404, 'PGRST202', 'Could not find the function api.gw_ad(a, b) in the schema cache',
  'Searched for the function api.gw_ad with parameters a, b, but no matches were found in the schema cache.',
  'Perhaps you meant to call the function api.gw_add'], 'an unknown function: the closest name');
$r = req(GET => '/rpc/gw_add?a=1&bb=2');
is_deeply([@{ err($r) }[0, 1, 4]], [404, 'PGRST202', 'Perhaps you meant to call the function api.gw_add(a, b)'],
  'wrong parameters: the closest parameter list');
$r = req(POST => '/rpc/gw_add', {}, { a => 1 });
is($r->{json}{details}, 'Searched for the function api.gw_add with parameter a or with a single unnamed json/jsonb parameter, '
  . 'but no matches were found in the schema cache.', 'POST with JSON: the json/jsonb alternative is named');
$r = req(POST => '/rpc/gw_add', { 'Content-Type' => 'text/plain' }, 'x');
is_deeply(err($r), [404, 'PGRST202', 'Could not find the function api.gw_add in the schema cache',
  'Searched for the function api.gw_add with a single unnamed text parameter, but no matches were found in the schema cache.', undef],
  'POST text/plain: a single unnamed text parameter was looked for');
$r = req(GET => '/rpc/zzzzzz');
is_deeply(err($r), [404, 'PGRST202', 'Could not find the function api.zzzzzz without parameters in the schema cache',
  'Searched for the function api.zzzzzz without parameters, but no matches were found in the schema cache.', undef],
  'no parameters, nothing close');
$r = req(GET => '/gw_projects?select=*,gw_task(*)');
is_deeply(err($r), [400, 'PGRST200', "Could not find a relationship between 'gw_projects' and 'gw_task' in the schema cache",
  "Searched for a foreign key relationship between 'gw_projects' and 'gw_task' in the schema 'api', but no matches were found.",
  "Perhaps you meant 'gw_tasks' instead of 'gw_task'."], 'an unknown embed: 400 PGRST200 with the closest related relation');
$r = req(GET => '/gw_projects?select=*,gw_tasks!nope(*)');
is_deeply([@{ err($r) }[0, 1, 3, 4]], [400, 'PGRST200',
  "Searched for a foreign key relationship between 'gw_projects' and 'gw_tasks' using the hint 'nope' in the schema 'api', but no matches were found.", undef],
  'a hint that matches nothing: named in the details, no suggestion');
$r = req(GET => '/gw_transfers?select=*,gw_items(*)');
is_deeply([$r->{status}, $r->{json}{code}, $r->{json}{details}, $r->{json}{hint}], [300, 'PGRST201',
  [{ cardinality => 'many-to-one', embedding => 'gw_transfers with gw_items',
     relationship => 'gw_transfers_from_item_fkey using gw_transfers(from_item) and gw_items(id)' },
   { cardinality => 'many-to-one', embedding => 'gw_transfers with gw_items',
     relationship => 'gw_transfers_to_item_fkey using gw_transfers(to_item) and gw_items(id)' }],
  "Try changing 'gw_items' to one of the following: 'gw_items!gw_transfers_from_item_fkey', 'gw_items!gw_transfers_to_item_fkey'. "
  . "Find the desired relationship in the 'details' key."], 'an ambiguous embed: 300 PGRST201, the relationships as JSON details');
$r = req(GET => '/gw_items?select=id,gw_transfers(id)&id=eq.1');
is_deeply([$r->{status}, $r->{json}{details}[0]{cardinality}], [300, 'one-to-many'], '... from the other side: one-to-many');
$r = req(GET => '/gw_transfers?select=id,src:gw_items!gw_transfers_from_item_fkey(name),dst:gw_items!to_item(name)');
is_deeply([$r->{status}, $r->{json}], [200, [{ id => 1, src => { name => 'one' }, dst => { name => 'two' } }]],
  'named by constraint or by column, it embeds');

# --- the legacy count (PostgREST: still supported, aggregates off or on) --------------------
psql("INSERT INTO gw_private.projects VALUES (4, 'Mercury', NULL, false)");
$r = req(GET => '/gw_projects?select=name,gw_tasks(count)&order=id');
is_deeply([$r->{status}, $r->{json}], [200, [{ name => 'Apollo', gw_tasks => [{ count => 2 }] }, { name => 'Gemini', gw_tasks => [{ count => 2 }] },
  { name => 'Mercury', gw_tasks => [{ count => 0 }] }]], 'rel(count) counts the embedded rows, with aggregates off');
$r = req(GET => '/gw_tasks?select=count');
is_deeply([$r->{status}, $r->{content}], [200, '[{"count":5}]'], 'select=count');
$r = req(GET => '/gw_tasks?select=n:count&done=eq.true');
is($r->{content}, '[{"n":2}]', 'with an alias and a filter');
$r = req(GET => '/gw_tasks?select=done,count&order=done');
is_deeply($r->{json}, [{ done => JSON::PP::false, count => 3 }, { done => JSON::PP::true, count => 2 }], 'grouped by the other columns');
$r = req(GET => '/gw_tasks?select=count::text');
is_deeply(code2($r), [400, '42703'], 'count with a cast is a column (there is none)');
psql("DELETE FROM gw_private.projects WHERE id = 4");

# --- writes without columns, PUT with a range ----------------------------------------------
my $before = psql("SELECT count(*) FROM api.gw_items");
$r = req(POST => '/gw_items', { %auth, Prefer => 'return=representation' }, []);
is_deeply([$r->{status}, $r->{content}, psql("SELECT count(*) FROM api.gw_items")], [201, '[]', $before], 'POST [] inserts nothing: 201 []');
$r = req(POST => '/gw_items', { %auth }, {});
is_deeply([$r->{status}, $r->{json}{code}], [400, '23502'], 'POST {} is one row of defaults (here refused: id has none)');
$r = req(POST => '/gw_items', { %auth }, [{}, {}]);
is_deeply([$r->{status}, $r->{json}{code}, psql("SELECT count(*) FROM api.gw_items")], [400, '23502', $before], '... [{}, {}] too, and nothing stays');
$r = req(PUT => '/gw_items?id=eq.2', { %auth, Prefer => 'return=representation' }, { id => 2, name => 'two', qty => 2 });
is_deeply([$r->{status}, $r->{headers}{'content-range'}, $r->{json}], [200, undef, [{ id => 2, name => 'two', qty => 2 }]],
  'PUT that replaces: 200, without Content-Range (PostgREST v12)');
$r = req(PUT => '/gw_items?id=eq.99', { %auth, Prefer => 'return=representation' }, { id => 99, name => 'new' });
is_deeply([$r->{status}, $r->{json}], [201, [{ id => 99, name => 'new', qty => 0 }]], 'PUT that creates: 201');
$r = req(PUT => '/gw_items?id=eq.99', { %auth }, { id => 99, name => 'newer' });
is_deeply([$r->{status}, $r->{content} // ''], [204, ''], 'PUT minimal: 204');
$r = req(POST => '/gw_items', { %auth, Prefer => 'resolution=merge-duplicates, return=representation' }, [{ id => 99, name => 'merged' }]);
is_deeply([$r->{status}, $r->{json}], [200, [{ id => 99, name => 'merged', qty => 0 }]], 'an upsert that only updates: 200');
$r = req(POST => '/gw_items', { %auth, Prefer => 'resolution=merge-duplicates' }, [{ id => 99, name => 'merged again' }]);
is_deeply([$r->{status}, $r->{content} // ''], [200, ''], '... minimal: 200 without a body');
$r = req(POST => '/gw_items', { %auth, Prefer => 'resolution=merge-duplicates, return=representation' }, [{ id => 99, name => 'm' }, { id => 100, name => 'n' }]);
is_deeply([$r->{status}, scalar @{ $r->{json} || [] }], [201, 2], 'an upsert that inserts any row: 201');
$r = req(POST => '/gw_items?on_conflict=id', { %auth, Prefer => 'resolution=ignore-duplicates, return=representation' }, [{ id => 99, name => 'ignored' }]);
is_deeply([$r->{status}, $r->{json}], [201, []], 'ignore-duplicates: 201 and nothing');
psql("DELETE FROM api.gw_items WHERE id IN (99, 100)");
$r = req(PUT => '/gw_items?id=eq.1&limit=1', { %auth }, { id => 1, name => 'one' });
is_deeply(err($r), [400, 'PGRST114', 'limit/offset querystring parameters are not allowed for PUT', undef, undef], 'PUT with limit: 400 PGRST114');
$r = req(PUT => '/gw_items?id=eq.1&offset=1', { %auth }, { id => 1, name => 'one' });
is_deeply(code2($r), [400, 'PGRST114'], '... with offset too');

# --- Accept with qualities ---------------------------------------------------------------------
$r = req(GET => '/gw_items?id=eq.1&select=id', { Accept => 'application/json;q=0.9, text/csv' });
is_deeply([$r->{status}, $r->{headers}{'content-type'}, $r->{content}], [200, 'text/csv; charset=utf-8', "id\n1"], 'the higher quality wins');
$r = req(GET => '/gw_items?id=eq.1&select=id', { Accept => 'text/csv;q=0.5, application/json' });
is($r->{content}, '[{"id":1}]', '... whichever comes first');
$r = req(GET => '/gw_items?id=eq.1&select=id', { Accept => 'text/html, */*;q=0.8' });
is_deeply([$r->{status}, $r->{content}], [200, '[{"id":1}]'], 'an unavailable type before */*');
$r = req(GET => '/gw_items?id=eq.1&select=id', { Accept => 'text/csv;q=0' });
is_deeply(code2($r), [406, 'PGRST107'], 'q=0 is not acceptable');

# --- Content-Location, spaces around names -----------------------------------------------------
$r = req(GET => '/gw_items');
is($r->{headers}{'content-location'}, '/gw_items', 'a read names its canonical location');
$r = req(GET => '/gw_items?select=id,name&order=id&id=in.(1,2)&id=neq.3&flag');
is($r->{headers}{'content-location'}, '/gw_items?flag=&id=in.%281%2C2%29,neq.3&order=id&select=id%2Cname',
  '... with the parameters sorted, a repeated key\'s values joined, re-encoded (PostgREST\'s canonical form)');
$r = req(GET => '/rpc/gw_add?a=1&b=2');
is($r->{headers}{'content-location'}, undef, 'not on function calls');
$r = req(GET => '/gw_items?select=%20id%20,%20name%20&order=%20id%20');
is_deeply([$r->{status}, $r->{json}[0]], [200, { id => 1, name => 'one' }], 'spaces around bare names are stripped');

# --- methods ---------------------------------------------------------------------------------
$r = req(PATCH => '/rpc/gw_add', {}, { a => 1 });
is_deeply(err($r), [405, 'PGRST101', 'Cannot use the PATCH method on RPC', undef, undef], 'PATCH on a function: 405 PGRST101');
$r = req(DELETE => '/rpc/gw_add');
is_deeply(code2($r), [405, 'PGRST101'], 'DELETE on a function too');
$r = req(TRACE => '/gw_items');
is_deeply(err($r), [405, 'PGRST117', 'Unsupported HTTP method: TRACE', undef, undef], 'an unknown method on a relation: 405 PGRST117');

# --- the JWT's role ------------------------------------------------------------------------
$r = req(GET => '/gw_items', { Authorization => 'Bearer ' . token({ role => 'no_such_role_x' }) });
is_deeply([@{ err($r) }[0, 1, 2], $r->{headers}{'www-authenticate'}], [401, '22023', 'role "no_such_role_x" does not exist', 'Bearer'],
  'a role that does not exist: 401 22023 with WWW-Authenticate');
$r = req(GET => '/gw_items', { Authorization => 'Bearer ' . token({ role => 'postgres' }) });
is_deeply([@{ err($r) }[0, 1, 2], $r->{headers}{'www-authenticate'}], [403, '42501', 'permission denied to set role "postgres"', undef],
  'a role the authenticator may not take: 403 42501');
$r = req(GET => '/gw_items', { Authorization => 'Bearer ' . token({ role => 'pg_read_all_data' }) });
is_deeply(code2($r), [403, '42501'], 'a pg_ role: 403 42501');
$r = req(GET => '/gw_items?select=id&order=id', { Authorization => 'Bearer ' . token({ role => 'pgpod_user' }) });
is_deeply([$r->{status}, $r->{json}], [200, [{ id => 1 }, { id => 2 }]], 'a granted role works');

done_testing();
