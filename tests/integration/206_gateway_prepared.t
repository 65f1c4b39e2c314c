#!/usr/bin/perl
# Prepared statements of the pool (PGPOD_GATEWAY_PREPARED): a statement text is
# prepared once per connection and reused; changes of the schema (with and
# without NOTIFY pgrst), a Parse that fails, a statement the server lost, LRU
# eviction and turning the cache off all keep the answers right. Runs gateways of
# its own (one worker, one pool connection) so that every request meets the same
# database session.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use HTTP::Tiny;
use IO::Socket::INET;
use GwTest;

fixture();
psql(q{
DROP VIEW IF EXISTS api.gw_ps_v;
DROP TABLE IF EXISTS api.gw_ps_t;
DROP FUNCTION IF EXISTS api.gw_ps_forget();
CREATE TABLE api.gw_ps_t (id int PRIMARY KEY, code int NOT NULL, label text);
INSERT INTO api.gw_ps_t VALUES (1, 7, 'seven'), (2, 8, 'eight'), (3, 9, 'nine');
CREATE VIEW api.gw_ps_v AS SELECT id, code FROM api.gw_ps_t;
GRANT SELECT ON api.gw_ps_t, api.gw_ps_v TO pgpod_anon;
-- forgets, in the calling session, the statements prepared for gw_ps_v
CREATE FUNCTION api.gw_ps_forget() RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int := 0; s text;
BEGIN
  FOR s IN SELECT name FROM pg_prepared_statements WHERE statement LIKE '%gw_ps_v%' LOOP
    EXECUTE format('DEALLOCATE %I', s);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
GRANT EXECUTE ON FUNCTION api.gw_ps_forget() TO pgpod_anon;
NOTIFY pgrst, 'reload schema';
});

my @pids;
END { kill 'TERM', $_ for @pids }   # never leave our gateways behind
my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
sub start_gateway {
  my (%env) = @_;
  my $port = do { my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die; my $p = $s->sockport; close $s; $p };
  my $pid = fork // die;
  if (!$pid) {
    open STDERR, '>', '/dev/null';
    @ENV{keys %env} = values %env;
    $ENV{PGPOD_HTTP_PORT} = $port;
    $ENV{PGPOD_GATEWAY_WORKERS} = 1;
    $ENV{PGPOD_GATEWAY_POOL} = 1;
    exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
  }
  push @pids, $pid;
  my $base = "http://127.0.0.1:$port";
  wait_until("gateway @{[%env]} to know gw_ps_v", 15, sub { $http->get("$base/gw_ps_v?id=eq.1")->{status} == 200 });
  return ($pid, $base);
}
sub stop_gateway { my $pid = shift; kill 'TERM', $pid; waitpid($pid, 0); @pids = grep { $_ != $pid } @pids }
sub get { my ($base, $path) = @_; my $r = $http->get("$base$path"); [$r->{status}, eval { json()->decode($r->{content}) } // $r->{content}] }
sub metric { my ($base, $name) = @_; $http->get("$base/metrics")->{content} =~ /^$name (\d+)$/m ? $1 : -1 }

# --- one session, the default cache ---------------------------------------------
my ($pid, $base) = start_gateway();
my $p0 = metric($base, 'pgpod_pool_prepares_total');
my @answers = map { get($base, '/gw_ps_v?code=eq.' . (7 + $_ % 3)) } 0 .. 11;
is_deeply(\@answers, [map { [200, [{ id => 1 + $_ % 3, code => 7 + $_ % 3 }]] } 0 .. 11],
  'twelve reads with different values: right answers (custom, then generic plans)');
is(metric($base, 'pgpod_pool_prepares_total') - $p0, 1, '... one statement prepared for all of them');

# DDL without a reload: PostgreSQL re-plans the prepared statement
psql("CREATE OR REPLACE VIEW api.gw_ps_v AS SELECT id, code, label FROM api.gw_ps_t");
is_deeply(get($base, '/gw_ps_v?code=eq.7'), [200, [{ id => 1, code => 7, label => 'seven' }]],
  'a column added to the view shows at once (PostgreSQL re-plans the cached statement)');

# a column whose type changes: the statement's parameter type was inferred as
# integer; after the reload the statement is prepared afresh
psql(q{
DROP VIEW api.gw_ps_v;
ALTER TABLE api.gw_ps_t ALTER COLUMN code TYPE text USING 'c' || code;
CREATE VIEW api.gw_ps_v AS SELECT id, code, label FROM api.gw_ps_t;
GRANT SELECT ON api.gw_ps_v TO pgpod_anon;
NOTIFY pgrst, 'reload schema';
});
my $r = eval { wait_until('the retyped column to be served', 10, sub {
  my $x = get($base, '/gw_ps_v?code=eq.c8'); $x->[0] == 200 ? $x : undef }) };
is_deeply($r, [200, [{ id => 2, code => 'c8', label => 'eight' }]],
  'after ALTER COLUMN TYPE and NOTIFY pgrst the same filter works on the new type');
is_deeply(get($base, '/gw_ps_v?code=eq.c9'), [200, [{ id => 3, code => 'c9', label => 'nine' }]], '... and again');

# a Parse that fails leaves nothing behind: the relation is gone (the schema cache
# still lists it), then comes back, without a reload
my $retries = metric($base, 'pgpod_pool_stale_retries_total');
psql("DROP VIEW api.gw_ps_v");
is(get($base, '/gw_ps_v?id=eq.3&select=id,label')->[0], 404, 'relation dropped behind the schema cache: 404 (Parse failed)');
is(get($base, '/gw_ps_v?code=eq.c9')->[0], 404, '... a cached statement on it: 404 too');
psql("CREATE VIEW api.gw_ps_v AS SELECT id, code, label FROM api.gw_ps_t; GRANT SELECT ON api.gw_ps_v TO pgpod_anon");
is_deeply(get($base, '/gw_ps_v?id=eq.3&select=id,label'), [200, [{ id => 3, label => 'nine' }]],
  'recreated: the statement whose Parse failed is prepared now');
is_deeply(get($base, '/gw_ps_v?code=eq.c9'), [200, [{ id => 3, code => 'c9', label => 'nine' }]],
  '... the cached one is re-planned');
is(metric($base, 'pgpod_pool_stale_retries_total'), $retries, '... without any retry (the cache never named a missing statement)');

# the session loses a cached statement (DEALLOCATE behind the gateway's back):
# the request is run again on freshly prepared statements, once
is(get($base, '/gw_ps_v?code=eq.c7')->[0], 200, 'cached');
$r = $http->post("$base/rpc/gw_ps_forget", { headers => { 'Content-Type' => 'application/json' }, content => '{}' });
is($r->{status}, 200, 'a function deallocates them in the same session');
cmp_ok($r->{content}, '>=', 1, '... at least the one just used');
is_deeply(get($base, '/gw_ps_v?code=eq.c7'), [200, [{ id => 1, code => 'c7', label => 'seven' }]],
  'the next request still answers right');
is(metric($base, 'pgpod_pool_stale_retries_total'), $retries + 1, '... after one retry');
is_deeply(get($base, '/gw_ps_v?code=eq.c8'), [200, [{ id => 2, code => 'c8', label => 'eight' }]], '... and later ones need none');
is(metric($base, 'pgpod_pool_stale_retries_total'), $retries + 1, '... (still one retry)');

# a failing request in the middle of cached ones (the pipeline's error path)
is(get($base, '/gw_ps_v?id=eq.notanumber')->[0], 400, 'a bad value fails the cached statement (22P02)');
is_deeply(get($base, '/gw_ps_v?code=eq.c7&select=id'), [200, [{ id => 1 }]], '... the session serves the next one');
stop_gateway($pid);

# --- a small cache: least recently used statements are deallocated ---------------
($pid, $base) = start_gateway(PGPOD_GATEWAY_PREPARED => 16);
$retries = metric($base, 'pgpod_pool_stale_retries_total');
my @cols = qw(id code label);
my @shapes;
for my $a (@cols) { for my $b (@cols) { for my $o (qw(asc desc)) { push @shapes, ["select=$a,$b&order=id.$o", $a, $b, $o] } } }
my $bad = 0;
for my $round (1 .. 2) {
  for my $s (@shapes) {
    my ($q, $a, $b, $o) = @$s;
    my $got = get($base, "/gw_ps_v?$q");
    my @rows = map { { $a => $_->{$a}, $b => $_->{$b} } } (
      { id => 1, code => 'c7', label => 'seven' }, { id => 2, code => 'c8', label => 'eight' }, { id => 3, code => 'c9', label => 'nine' });
    @rows = reverse @rows if $o eq 'desc';
    $bad++ unless $got->[0] == 200 && json()->encode($got->[1]) eq json()->encode(\@rows);
  }
}
is($bad, 0, scalar(@shapes) . ' query shapes twice through a cache of 16: every answer right');
cmp_ok(metric($base, 'pgpod_pool_prepares_total'), '>', 2 * @shapes, '... statements were evicted and prepared again');
is(metric($base, 'pgpod_pool_stale_retries_total'), $retries, '... never a missing statement');
stop_gateway($pid);

# --- no cache ------------------------------------------------------------------------
($pid, $base) = start_gateway(PGPOD_GATEWAY_PREPARED => 0);
is_deeply([map { get($base, "/gw_ps_v?code=eq.c$_&select=id") } 7 .. 9], [map { [200, [{ id => $_ }]] } 1 .. 3],
  'PGPOD_GATEWAY_PREPARED=0: reads answer right');
is(metric($base, 'pgpod_pool_prepares_total'), 0, '... and nothing is prepared');
stop_gateway($pid);

psql("DROP VIEW api.gw_ps_v; DROP TABLE api.gw_ps_t; DROP FUNCTION api.gw_ps_forget(); NOTIFY pgrst, 'reload schema'");
done_testing();
