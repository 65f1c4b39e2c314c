#!/usr/bin/perl
# SSE fan-out (issue 10): many subscribers of one room get every event once, in
# order, while the gateway reads each event once per worker process (counted in
# pg_stat_user_functions), not once per subscriber; the database still decides
# who listens: a member removed from the room, or made an outcast, has the stream
# ended at once and gets nothing posted after the change.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use GwTest;

my $tag = "$$-" . int(rand(1e9));
my (%tok, %uid);
for my $who (qw(a b c d)) {
  my $email = "gw-fan-$who-$tag\@example.org";
  $uid{$who} = req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' })->{json}{id};
  $tok{$who} = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
}
ok($tok{a} && $tok{b} && $tok{c} && $tok{d}, 'four users logged in');
$uid{$_} //= psql("SELECT id FROM pod.users WHERE email = 'gw-fan-$_-$tag\@example.org'") for qw(a b c d);
my %a = (Authorization => "Bearer $tok{a}");
my $r = req(POST => '/rooms', { %a, Prefer => 'return=representation' }, { name => "fan $tag", type => 'group' });
my $room = $r->{json}[0]{id};
for my $who (qw(b c d)) {
  $r = req(POST => '/room_members', {%a}, { room_id => $room, user_id => $uid{$who}, affiliation => 'member' });
  is($r->{status}, 201, "user $who joins the room") or diag $r->{content};
}

sub open_stream {
  my ($token, $last) = @_;
  my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "connect: $!";
  print $s "GET /rooms/$room/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer $token\r\n"
    . (defined $last ? "Last-Event-ID: $last\r\n" : '') . "\r\n";
  $s->blocking(0);
  return { sock => $s, buf => '', events => [], status => undef, closed => 0 };
}
# reads what every stream has; parses events
sub pump_all {
  my ($streams, $seconds, $cond) = @_;
  my $sel = IO::Select->new(map { $_->{sock} } grep { !$_->{closed} } @$streams);
  my %by = map { ($_->{sock} => $_) } @$streams;
  my $end = time + $seconds;
  while (time < $end) {
    return 1 if $cond->();
    for my $fh ($sel->can_read(0.05)) {
      my $st = $by{$fh};
      my $n = sysread($fh, my $chunk, 65536);
      if (defined $n && $n == 0) { $st->{closed} = 1; $sel->remove($fh); next }
      next unless $n;
      $st->{buf} .= $chunk;
      if (!defined $st->{status} && $st->{buf} =~ s/^HTTP\/1\.1 (\d+)[^\n]*\n.*?\r\n\r\n//s) { $st->{status} = $1 }
      next unless defined $st->{status};
      push @{ $st->{events} }, sse_take(\$st->{buf});
    }
  }
  return $cond->();
}
sub post { my $r = req(POST => '/messages', {%a}, { room_id => $room, data => { text => $_[0] } }); die $r->{content} unless $r->{status} == 201 }

# count the shared reads: track_functions for the pool's sessions (reloaded)
psql("ALTER SYSTEM SET track_functions = 'all'");
psql("SELECT pg_reload_conf()");
END { eval { psql("ALTER SYSTEM RESET track_functions"); psql("SELECT pg_reload_conf()") } }
sub feed_calls { psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = 'pod' AND funcname = 'room_events_feed'") }
sleep 0.2 until psql("SELECT count(*) FROM pg_settings WHERE name = 'track_functions' AND setting = 'all'");

my $n = 60;
my @streams = map { open_stream($tok{a}) } 1 .. $n;
ok(pump_all(\@streams, 20, sub { !grep { !defined $_->{status} } @streams }), "$n subscribers of one room are streaming");
is(scalar(grep { $_->{status} == 200 } @streams), $n, '... all with 200');
my $sb = open_stream($tok{b});
my $sc = open_stream($tok{c});
ok(pump_all([$sb, $sc], 10, sub { defined $sb->{status} && defined $sc->{status} }), 'members b and c are streaming too');
my $before = feed_calls();
my $m = 30;
post("fan $_") for 1 .. $m;
my $first = psql("SELECT max(seq) FROM pod.room_events WHERE room_id = '$room'") - $m + 1;
ok(pump_all([@streams, $sb, $sc], 30, sub { !grep { @{ $_->{events} } < $m } @streams, $sb, $sc }), "every subscriber gets the $m events");
my $exact = grep { join(',', map { $_->{id} } @{ $_->{events} }) eq join(',', $first .. $first + $m - 1) } @streams;
is($exact, $n, '... each exactly once, in seq order');
like($streams[0]{events}[0]{data}, qr/"fan 1"/, '... with the message as data');
# pool sessions flush their function statistics when they go idle (at most every 10 s; forced
# here by waiting for the counter to settle)
my ($calls, $settled) = (0, 0);
eval { wait_until('the read counter to settle', 25, sub {
  my $c = feed_calls();
  $settled = $c == $calls && $c > 0 ? $settled + 1 : 0;
  $calls = $c;
  $settled >= 3 }) };
$calls -= $before;
cmp_ok($calls, '>', 0, "the events were read through pod.room_events_feed ($calls reads)");
cmp_ok($calls, '<=', 2 * ($m + 2), "... at most once per event per worker (2 workers, $m events: $calls reads, not one per subscriber: " . ($n + 2) * $m . ')');

# subscribers that resume (Last-Event-ID) while messages keep coming: each gets
# every event after its id exactly once, whether it came from its own catch-up
# read or from the topic's shared read (the two race each other)
{
  my $top = psql("SELECT max(seq) FROM pod.room_events WHERE room_id = '$room'");
  my $writer = fork // die;
  if (!$writer) { post("race $_") for 1 .. 40; exit 0 }
  my @resumed;
  for my $i (1 .. 30) {
    my $from = int(rand($top));
    my $st = open_stream($tok{a}, $from);
    $st->{from} = $from;
    push @resumed, $st;
    sleep 0.01;
  }
  waitpid($writer, 0);
  my $final = psql("SELECT max(seq) FROM pod.room_events WHERE room_id = '$room'");
  pump_all(\@resumed, 30, sub { !grep { !@{ $_->{events} } || $_->{events}[-1]{id} < $final } @resumed });
  my @wrong = grep { join(',', map { $_->{id} } @{ $_->{events} }) ne join(',', $_->{from} + 1 .. $final) } @resumed;
  is(scalar @wrong, 0, '30 streams resuming from random ids while 40 messages are posted: each gets from+1..last, no gap, no duplicate')
    or diag join "\n", map { "from $_->{from}: " . join(',', map { $_->{id} } @{ $_->{events} }) } @wrong[0 .. ($#wrong < 2 ? $#wrong : 2)];
  close $_->{sock} for @resumed;
}

# the database decides: b removed, c made an outcast -> their streams end
$r = req(DELETE => "/room_members?room_id=eq.$room&user_id=eq.$uid{b}", {%a});
ok($r->{status} == 204 || $r->{status} == 200, 'owner removes b from the room') or diag $r->{content};
$r = req(PATCH => "/room_members?room_id=eq.$room&user_id=eq.$uid{c}", {%a}, { affiliation => 'outcast' });
ok($r->{status} == 204 || $r->{status} == 200, 'owner makes c an outcast') or diag $r->{content};
post('after the change');
ok(pump_all([$sb, $sc, $streams[0]], 15, sub { $sb->{closed} && $sc->{closed} && @{ $streams[0]{events} } > $m }),
   'the removed member\'s and the outcast\'s streams are ended; the owner gets the next event');
ok($sb->{closed}, 'b\'s stream ended');
ok($sc->{closed}, 'c\'s stream ended');
ok(!grep({ $_->{data} =~ /after the change/ } @{ $sb->{events} }, @{ $sc->{events} }), 'neither got the message posted after the change');
# a member whose session ends (logout) has the stream ended too
my $sd = open_stream($tok{d});
ok(pump_all([$sd], 10, sub { defined $sd->{status} }) && $sd->{status} == 200, 'member d is streaming');
$r = req(POST => '/rpc/logout', { Authorization => "Bearer $tok{d}" }, {});
is($r->{status}, 200, 'd logs out') or diag $r->{content};
post('after the logout');
ok(pump_all([$sd], 15, sub { $sd->{closed} }), "the logged-out member's stream is ended");
ok(!grep({ $_->{data} =~ /after the logout/ } @{ $sd->{events} }), '... without the message posted after the logout');
my $again = open_stream($tok{b});
pump_all([$again], 10, sub { defined $again->{status} });
is($again->{status}, 404, 'b subscribing again: 404');
close $_->{sock} for @streams, $sb, $sc, $sd, $again;
done_testing();
