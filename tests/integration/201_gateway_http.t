#!/usr/bin/perl
# The gateway as an HTTP/1.1 server: /health, /metrics, keep-alive and pipelining,
# chunked bodies, size limits (414/431/413), malformed requests, the header timeout,
# and SIGTERM draining (on a gateway this test starts on a port of its own).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use GwTest;

fixture();
my $r = req(GET => '/health');
is_deeply([$r->{status}, $r->{json}], [200, { status => 'ok' }], '/health');
req(GET => '/gw_items?id=eq.1') for 1 .. 3;
$r = req(GET => '/metrics');
is($r->{status}, 200, '/metrics');
like($r->{content}, qr/^pgpod_http_requests_total\{status="200"\} \d+$/m, 'requests by status');
like($r->{content}, qr/^pgpod_http_request_duration_seconds_bucket\{le="\+Inf"\} \d+$/m, 'latency histogram');
like($r->{content}, qr/^pgpod_pool_connections [1-9]\d*$/m, 'pool connections up');
like($r->{content}, qr/^pgpod_pool_busy \d+$/m, 'pool use');

# keep-alive and pipelining: two requests in one write, two answers in order
my $two = "GET /gw_items?select=id&id=eq.1 HTTP/1.1\r\nHost: x\r\n\r\nGET /gw_items?select=id&id=eq.2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
my $out = raw_request($two, 10);
my @bodies = $out =~ /\r\n\r\n(\[[^\]]*\])/g;
is_deeply(\@bodies, ['[{"id":1}]', '[{"id":2}]'], 'pipelined requests answered in order on one connection');
like($out, qr/Connection: keep-alive/, 'keep-alive announced');

# chunked request body
$out = raw_request("POST /rpc/gw_add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
  . "6\r\n{\"a\":1\r\n9\r\n, \"b\": 2}\r\n0\r\n\r\n", 10);
like($out, qr/^HTTP\/1\.1 200 .*\r\n\r\n3$/s, 'chunked body');

# Expect: 100-continue is answered before the body is sent
{
  my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die;
  print $s "POST /rpc/gw_add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
  my $interim = '';
  wait_until('100 Continue', 5, sub { my $chunk; sysread($s, $chunk, 4096) and $interim .= $chunk; $interim =~ /\r\n\r\n/ });
  like($interim, qr/^HTTP\/1\.1 100 Continue\r\n\r\n/, 'Expect: 100-continue gets 100 Continue');
  print $s '{"a":1,"b":2}';
  my $rest = '';
  while (sysread($s, my $b, 4096)) { $rest .= $b }
  like($rest, qr/^HTTP\/1\.1 200 .*\r\n\r\n3$/s, '... then the final answer');
}

# limits
$out = raw_request("GET /gw_items?x=" . ('a' x 20000) . " HTTP/1.1\r\nHost: x\r\n\r\n", 10);
like($out, qr/^HTTP\/1\.1 414 /, 'URL over the limit: 414');
$out = raw_request("GET /gw_items HTTP/1.1\r\nHost: x\r\nX-Big: " . ('b' x 20000) . "\r\n\r\n", 10);
like($out, qr/^HTTP\/1\.1 431 /, 'headers over the limit: 431');
$out = raw_request("POST /gw_items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{", 10);
like($out, qr/^HTTP\/1\.1 413 /, 'declared body over the limit: 413 before reading it');
$out = raw_request("GARBAGE\r\n\r\n", 10);
like($out, qr/^HTTP\/1\.1 400 /, 'malformed request: 400');
$out = raw_request("GET /a/b/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10);
like($out, qr/^HTTP\/1\.1 404 /, 'unknown path: 404');

# a client that never finishes its head is answered 408 and closed (default 10 s)
my $t0 = time;
$out = raw_request("GET /gw_items HTTP/1.1\r\nHost: x\r\n", 20);
like($out, qr/^HTTP\/1\.1 408 /, 'slow head: 408');
cmp_ok(time - $t0, '<', 15, '... within the header timeout');

# a second gateway on a port that is already served refuses to start (no silent
# SO_REUSEPORT sharing)
{
  my ($served) = url() =~ m{:(\d+)};
  my $out = `PGPOD_HTTP_PORT=$served PGPOD_GATEWAY_WORKERS=1 timeout 10 @{[$ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway"]} 2>&1`;
  isnt($? >> 8, 0, 'a second gateway on the same port exits');
  like($out, qr/Address already in use/, '... saying the address is in use');
}

# SIGTERM drains: a request in flight completes, then the process exits
my $port = do { my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die; my $p = $s->sockport; close $s; $p };
my $pid = fork // die;
END { kill 'TERM', $pid if $pid }   # never leave our gateway behind
if (!$pid) {
  open STDERR, '>', '/dev/null';
  $ENV{PGPOD_HTTP_PORT} = $port;
  $ENV{PGPOD_GATEWAY_WORKERS} = 1;
  $ENV{PGPOD_GATEWAY_POOL} = 2;
  $ENV{PGPOD_BODY_TIMEOUT_MS} = 500;
  $ENV{PGPOD_IDLE_TIMEOUT_MS} = 500;
  exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
}
my $base = "http://127.0.0.1:$port";
my $http = HTTP::Tiny->new(timeout => 10);
wait_until('the second gateway to be healthy', 15, sub { $http->get("$base/health")->{status} == 200 });
wait_until('its schema cache to know the fixture', 15, sub { $http->get("$base/gw_items?id=eq.1")->{status} == 200 });
# slow clients cannot hold a connection: a body that stalls gets 408, an idle
# keep-alive connection is closed (this gateway: 500 ms for both)
{
  my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die;
  print $c "POST /rpc/gw_add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":";
  my $t = time;
  my $got = '';
  while (sysread($c, my $buf, 4096)) { $got .= $buf }
  like($got, qr/^HTTP\/1\.1 408 /, 'a stalled body: 408');
  cmp_ok(time - $t, '<', 5, '... after the body timeout, then closed');
  my $k = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die;
  print $k "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  $t = time;
  my $all = '';
  while (sysread($k, my $buf, 4096)) { $all .= $buf }
  like($all, qr/^HTTP\/1\.1 200 /, 'a keep-alive request is answered');
  cmp_ok(time - $t, '<', 5, '... and the idle connection is closed by the server');
}

# a worker that dies is replaced by the supervisor
sub children { my $p = shift; open(my $fh, '<', "/proc/$p/task/$p/children") or return (); map { split } <$fh> }
my ($worker) = children($pid);
ok($worker, 'the supervisor runs a worker');
kill 'KILL', $worker;
wait_until('a new worker', 15, sub { my ($w) = children($pid); $w && $w != $worker });
wait_until('the new worker to serve', 15, sub { $http->get("$base/gw_items?id=eq.1")->{status} == 200 });
pass('a killed worker is restarted and serves again');
my $m = eval { wait_until('both pool connections of the new worker', 10, sub {
  my $c = $http->get("$base/metrics")->{content}; $c =~ /^pgpod_pool_connections (\d+)$/m && $1 >= 2 ? $c : undef }) } // '';
like($m, qr/^pgpod_pool_connections 2$/m, 'pool gauge counts only live workers (1 worker x 2, not 4)');

my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) or die;
print $slow "POST /rpc/gw_sleep HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"seconds\":1.0}";
wait_until('the slow request to reach the database', 5, sub {
  psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%gw_sleep%' AND state = 'active' AND pid <> pg_backend_pid()") > 0 });
kill 'TERM', $pid;
my $answer = '';
while (sysread($slow, my $buf, 4096)) { $answer .= $buf }
like($answer, qr/^HTTP\/1\.1 200 .*Connection: close.*\r\n\r\ntrue$/s, 'request in flight at SIGTERM completes');
my $exited = wait_until('the drained gateway to exit', 15, sub { waitpid($pid, 1) == $pid });
ok($exited, 'gateway exits after draining');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port), 'and no longer accepts connections');

done_testing();
