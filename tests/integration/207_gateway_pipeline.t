#!/usr/bin/perl
# Several transactions in flight on one database connection
# (PGPOD_GATEWAY_PIPELINE): requests that arrive together share one session,
# each in its own transaction with its own Sync. A request that fails must not
# affect the others: the ones sent behind its failed transaction (before its
# ROLLBACK) are refused by the server and run again, so every request gets its
# own answer and every write happens exactly once. Runs a gateway of its own
# (one worker, two pool connections). A transaction that runs long gets no
# other one queued behind it. Runs with the write coalescing of the environment's
# PGPOD_GATEWAY_COALESCE (on by default), and 207_gateway_pipeline_uncoalesced.t
# runs it again with it off.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);
use GwTest;

fixture();
psql(q{
DROP TABLE IF EXISTS api.gw_pl_t;
DROP FUNCTION IF EXISTS api.gw_pl_fail(int);
DROP FUNCTION IF EXISTS api.gw_pl_slow();
CREATE TABLE api.gw_pl_t (id int PRIMARY KEY, v int NOT NULL CHECK (v >= 0));
INSERT INTO api.gw_pl_t SELECT g, g FROM generate_series(1000, 1019) g;
GRANT SELECT, INSERT ON api.gw_pl_t TO pgpod_anon;
CREATE FUNCTION api.gw_pl_fail(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'failing %', n USING ERRCODE = 'PT418'; END $$;
GRANT EXECUTE ON FUNCTION api.gw_pl_fail(int) TO pgpod_anon;
CREATE FUNCTION api.gw_pl_slow() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(3)';
GRANT EXECUTE ON FUNCTION api.gw_pl_slow() TO pgpod_anon;
NOTIFY pgrst, 'reload schema';
});

my $pid;
END { if ($pid) { kill 'TERM', $pid; waitpid($pid, 0) } }
my $http = HTTP::Tiny->new(timeout => 10);
my $port = do { my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die; my $p = $s->sockport; close $s; $p };
$pid = fork // die;
if (!$pid) {
  open STDERR, '>', '/dev/null';
  @ENV{qw(PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS PGPOD_GATEWAY_POOL PGPOD_GATEWAY_PIPELINE)} = ($port, 1, 2, 16);
  exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
}
my $base = "http://127.0.0.1:$port";
wait_until('the gateway to know gw_pl_t', 15, sub { $http->get("$base/gw_pl_t?id=eq.1000")->{status} == 200 });

# Writes every request on its own socket before reading any answer, so that
# they reach the gateway together.
sub burst {
  my @reqs = @_;
  my @socks;
  for my $r (@reqs) {
    my ($method, $path, $body) = @$r;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die "connect: $!";
    my $msg = "$method $path HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";
    $msg .= "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n" if defined $body;
    push @socks, [$s, $msg . "\r\n" . ($body // '')];
  }
  print {$_->[0]} $_->[1] for @socks;
  my %out; my $sel = IO::Select->new(map { $_->[0] } @socks);
  my %buf;
  my $deadline = time + 20;
  while ($sel->count && time < $deadline) {
    for my $s ($sel->can_read(1)) {
      my $n = sysread($s, my $chunk, 65536);
      if ($n) { $buf{$s} .= $chunk; next }
      $sel->remove($s);
    }
  }
  return map {
    my $t = $buf{$_->[0]} // '';
    my ($status) = $t =~ m{^HTTP/1\.1 (\d+)};
    my ($body) = $t =~ /\r\n\r\n(.*)\z/s;
    [$status // 0, $body // '']
  } @socks;
}

for my $round (1 .. 5) {
  my (@reqs, @want);
  for my $i (0 .. 39) {
    my $k = $i % 5;
    my $id = $round * 100 + $i;
    if ($k == 0) {      # fails inside its transaction: the key exists
      push @reqs, ['POST', '/gw_pl_t', qq({"id":@{[1000 + $i % 20]},"v":1})]; push @want, [409, qr/23505/];
    } elsif ($k == 1) { # a new row
      push @reqs, ['POST', '/gw_pl_t', qq({"id":$id,"v":$i})]; push @want, [201, qr/^$/];
    } elsif ($k == 2) { # fails in a function
      push @reqs, ['GET', "/rpc/gw_pl_fail?n=$i"]; push @want, [418, qr/failing $i/];
    } elsif ($k == 3) { # fails a check constraint
      push @reqs, ['POST', '/gw_pl_t', qq({"id":$id,"v":-1})]; push @want, [400, qr/23514/];
    } else {            # a read
      my $r = 1000 + $i % 20;
      push @reqs, ['GET', "/gw_pl_t?id=eq.$r"]; push @want, [200, qr/^\[\{"id":$r,"v":$r\}\]$/];
    }
  }
  my @got = burst(@reqs);
  my @bad = grep { $got[$_][0] != $want[$_][0] || $got[$_][1] !~ $want[$_][1] } 0 .. $#reqs;
  ok(!@bad, "round $round: 40 requests together, a failing one every few: each its own answer")
    or diag(join "\n", map { "$reqs[$_][0] $reqs[$_][1] $reqs[$_][2]: $got[$_][0] $got[$_][1]" } @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
}
is(psql("SELECT count(*) FROM api.gw_pl_t WHERE id < 1000"), 5 * 8, 'every new row was written once');
is(psql("SELECT count(*) FROM api.gw_pl_t WHERE id < 1000 AND v <> id % 100"), 0, '... with its own values');
is(psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgpod-gateway' AND state LIKE 'idle in transaction%'"), 0,
  'no session is left inside a transaction');
is($http->get("$base/gw_pl_t?id=eq.1001")->{content}, '[{"id":1001,"v":1001}]', 'the connection still answers');

# a slow transaction: what comes later goes to the other connection
my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die;
print $slow "GET /rpc/gw_pl_slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
# wait until it runs in PostgreSQL
my $until = time + 20;
select(undef, undef, undef, 0.02)
  until psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%gw_pl_slow%' AND pid <> pg_backend_pid()") > 0
     || time > $until;
my $t0 = time;
my @fast = map { $http->get("$base/gw_pl_t?id=eq.1002")->{status} } 1 .. 5;
my $took = time - $t0;
is_deeply(\@fast, [(200) x 5], 'requests during a slow one are answered');
cmp_ok($took, '<', 2.0, '... without waiting for it (it takes 3 s)');
my $slow_answer = do { local $/; <$slow> };
like($slow_answer, qr{^HTTP/1\.1 200}, 'the slow one is answered too');

my ($held) = $http->get("$base/metrics")->{content} =~ /^pgpod_pool_coalesced_sends_total (\d+)$/m;
if (($ENV{PGPOD_GATEWAY_COALESCE} // '1') eq '0') {
  is($held, 0, 'PGPOD_GATEWAY_COALESCE=0: no libpq write was held');
} else {
  cmp_ok($held // 0, '>', 0, 'libpq writes were held and coalesced (pgpod_pool_coalesced_sends_total)');
}

kill 'TERM', $pid; waitpid($pid, 0); $pid = 0;
psql("DROP TABLE api.gw_pl_t; DROP FUNCTION api.gw_pl_fail(int); DROP FUNCTION api.gw_pl_slow(); NOTIFY pgrst, 'reload schema'");
done_testing();
