#!/usr/bin/perl
# PostgreSQL going away under the running gateway: requests get a 503 JSON error
# (never a hang), /health says unavailable, and once PostgreSQL is back the pool
# and the schema listener reconnect by themselves. Restarts the harness's cluster
# with its own settings (pg_ctl restart reuses postmaster.opts). Against
# $PGPOD_URL: the harness's gateway (write coalescing on), and through
# 209_gateway_pg_restart_uncoalesced.t a gateway with PGPOD_GATEWAY_COALESCE=0.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use Time::HiRes qw(time);
use IO::Socket::INET;
use IO::Select;
use GwTest;

fixture();
my $data = "$ENV{PGPOD_DIR}/data";
my $owner = getpwuid((stat $data)[4]);
my @as = $> == 0 && $owner ne 'root' ? ('runuser', '-u', $owner, '--') : ();
my $pg_ctl = `pg_config --bindir 2>/dev/null` =~ s/\s+$//r || '/usr/lib/postgresql/15/bin';
$pg_ctl .= '/pg_ctl';

is(req(GET => '/gw_items?id=eq.1')->{status}, 200, 'gateway answers before the stop');
# the pool's sessions have prepared statements; the new sessions after the
# restart have none and must not be asked for the old ones
sub metric { req(GET => '/metrics')->{content} =~ /^$_[0] (\d+)$/m ? $1 : -1 }
my @before = map { req(GET => "/gw_items?id=eq.$_")->{status} } (1 .. 3) x 4;
is_deeply(\@before, [(200) x 12], 'reads on prepared statements before the stop');
my $retries = metric('pgpod_pool_stale_retries_total');

# an SSE stream opened before the restart keeps delivering after it
my $email = "gw-restart-$$-" . int(rand(1e9)) . '@example.org';
req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
my $tok = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
my %a = (Authorization => "Bearer $tok");
my $room = req(POST => '/rooms', { %a, Prefer => 'return=representation' }, { name => 'restart', type => 'group' })->{json}[0]{id};
my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
my $sse = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die;
print $sse "GET /rooms/$room/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok\r\nLast-Event-ID: 0\r\n\r\n";
my $stream = '';
sub stream_has { my $re = shift; wait_until("the stream to show $re", 20, sub {
  my $sel = IO::Select->new($sse); while ($sel->can_read(0.05)) { sysread($sse, my $b, 65536) or last; $stream .= $b } $stream =~ $re }) }
req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'before restart' } });
ok(stream_has(qr/^id: 1$/m), 'stream delivers before the restart');
system(@as, $pg_ctl, '-D', $data, '-m', 'fast', '-w', 'stop') == 0 or BAIL_OUT('cannot stop PostgreSQL');
my $t0 = time;
my $r = wait_until('a 503 from the gateway', 10, sub { my $x = req(GET => '/gw_items?id=eq.1'); $x->{status} == 503 ? $x : undef });
is($r->{json}{code}, 'PGRST001', 'database down: 503 with a PostgREST error code');
like($r->{headers}{'content-type'}, qr{^application/json}, '... as JSON');
cmp_ok(time - $t0, '<', 10, '... quickly, not after a hang');
is(req(GET => '/health')->{status}, 503, '/health reports unavailable');

system(@as, $pg_ctl, '-D', $data, '-w', '-l', "$ENV{PGPOD_DIR}/log/postgresql.log", '-o', "-p $ENV{PGPORT} -k $ENV{PGHOST}", 'start') == 0 or BAIL_OUT('cannot start PostgreSQL');
wait_until('the gateway to recover', 30, sub { req(GET => '/gw_items?id=eq.1')->{status} == 200 });
pass('requests succeed again after PostgreSQL is back');
my $prepares = metric('pgpod_pool_prepares_total');
my @after = map { req(GET => "/gw_items?id=eq.$_")->{status} } (1 .. 3) x 4;
is_deeply(\@after, [(200) x 12], 'the same reads after the restart');
is(metric('pgpod_pool_stale_retries_total'), $retries, '... never naming a statement of the old sessions');
cmp_ok(metric('pgpod_pool_prepares_total'), '>=', $prepares, '... their statements are prepared anew');
wait_until('/health to recover', 10, sub { req(GET => '/health')->{status} == 200 });
pass('/health recovers');
psql("DROP VIEW IF EXISTS api.gw_after_restart; CREATE VIEW api.gw_after_restart AS SELECT 1 AS x; GRANT SELECT ON api.gw_after_restart TO pgpod_anon; NOTIFY pgrst, 'reload schema'");
wait_until('the reconnected listener to reload the schema', 10, sub { req(GET => '/gw_after_restart')->{status} == 200 });
pass('the schema listener reconnected (NOTIFY pgrst works again)');
req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'after restart' } });
ok(stream_has(qr/^id: 2$/m), 'the same stream delivers after the restart');
my @ids = $stream =~ /^id: (\d+)$/mg;
is_deeply(\@ids, [1, 2], '... each event once, in order');
psql("DROP VIEW api.gw_after_restart; NOTIFY pgrst, 'reload schema'");
my $held = metric('pgpod_pool_coalesced_sends_total');
if (($ENV{PGPOD_GATEWAY_COALESCE} // '1') eq '0') {
  is($held, 0, 'PGPOD_GATEWAY_COALESCE=0: no libpq write was held');
} else {
  cmp_ok($held, '>', 0, 'libpq writes were held and coalesced');
}

done_testing();
