#!/usr/bin/perl
# A restarted gateway worker takes no traffic before it is ready: after kill -9
# of one of two workers, the supervisor starts a new one whose JWT secret cannot
# be read yet (pod.secrets is locked); every request meanwhile is answered by the
# healthy worker (no 503 PGRST002), the new worker is not in the SO_REUSEPORT
# group, and it joins once ready.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use GwTest;

fixture();
my $port = $ENV{PGPOD_HTTP_PORT} + 23;
my $base = "http://127.0.0.1:$port";
my $pid = fork // die;
if (!$pid) {
  open STDERR, '>', "$ENV{PGPOD_DIR}/log/gw-readiness.log";
  @ENV{qw(PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS PGPOD_GATEWAY_POOL)} = ($port, 2, 2);
  exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
}
my $locker;
END {
  close $locker if $locker;
  if ($pid) { kill 'TERM', $pid; waitpid($pid, 0) }
}
my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);
sub children { open(my $fh, '<', "/proc/$pid/task/$pid/children") or return (); map { split } <$fh> }
# listening sockets on the port (the SO_REUSEPORT group), from /proc/net/tcp
sub listeners {
  my $hex = sprintf('%04X', $port);
  open(my $fh, '<', '/proc/net/tcp') or return 0;
  scalar grep { (split)[1] =~ /:$hex$/ && (split)[3] eq '0A' } <$fh>;
}
my $ok = 0;
wait_until('both workers to serve', 30, sub {
  $ok = $http->get("$base/gw_items?id=eq.1")->{status} == 200 ? $ok + 1 : 0; $ok >= 10 && listeners() == 2 });
my @workers = children();
is(scalar @workers, 2, 'two workers, both listening');

open($locker, '|-', 'exec psql -X -q -v ON_ERROR_STOP=1 2>/dev/null') or die "psql: $!";
select((select($locker), $| = 1)[0]);
print $locker "BEGIN;\nLOCK TABLE pod.secrets IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(120);\n";
wait_until('the lock on pod.secrets', 10, sub {
  psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'secrets' AND l.mode = 'AccessExclusiveLock' AND l.granted") > 0 });

kill 'KILL', $workers[0];
wait_until('the supervisor to start a new worker', 15, sub { my @w = children(); @w == 2 && !grep { $_ == $workers[0] } @w });
wait_until('the new worker to wait for the JWT secret', 15, sub {
  psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pod.jwt_secret()%' AND wait_event_type = 'Lock'") > 0 });
my %status;
for (1 .. 200) {
  my $r = $http->get("$base/gw_items?id=eq.1");
  $status{$r->{status}}++;
}
is_deeply(\%status, { 200 => 200 }, '200 requests on new connections while the new worker is not ready: all 200, no 503')
  or diag explain \%status;
is(listeners(), 1, 'the worker that is not ready is not in the SO_REUSEPORT group');

close $locker;
undef $locker;
ok(eval { wait_until('the new worker to join', 15, sub { listeners() == 2 }) }, 'once ready, the new worker listens too');
%status = ();
for (1 .. 50) { $status{ $http->get("$base/gw_items?id=eq.1")->{status} }++ }
is_deeply(\%status, { 200 => 50 }, 'and every request is answered');

done_testing();
