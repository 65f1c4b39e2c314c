#!/usr/bin/perl
# 209_gateway_pg_restart.t again, against a gateway of its own started with
# PGPOD_GATEWAY_COALESCE=0 (libpq's writes go out as libpq makes them) on
# $PGPOD_HTTP_PORT + 24: PostgreSQL restarting under it, 503s, reconnection.
use strict;
use warnings;
use FindBin;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);

my $port = $ENV{PGPOD_HTTP_PORT} + 24;
my $url = "http://127.0.0.1:$port";
my $pid = fork // die "fork: $!\n";
if (!$pid) {
  open STDERR, '>>', "$ENV{PGPOD_DIR}/log/gateway-uncoalesced.log";
  @ENV{qw(PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS PGPOD_GATEWAY_COALESCE)} = ($port, 2, '0');
  exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
}
END {
  local $?;
  if ($pid) { kill 'TERM', $pid; waitpid($pid, 0) }
}
my $http = HTTP::Tiny->new(timeout => 5);
my $end = time + 30;
sleep 0.05 until time > $end || ($http->get("$url/health")->{status} // 0) == 200;
if (($http->get("$url/health")->{status} // 0) != 200) {
  print "not ok 1 - the gateway with PGPOD_GATEWAY_COALESCE=0 became ready on port $port\n1..1\n";
  exit 1;
}
$ENV{PGPOD_URL} = $url;
$ENV{PGPOD_GATEWAY_COALESCE} = '0';
system($^X, "$FindBin::Bin/209_gateway_pg_restart.t");
exit($? == 0 ? 0 : 1);
