#!/usr/bin/perl
# Server-Sent Events for chat rooms: new, edited and deleted messages arrive once,
# in seq order, while writers run concurrently; a reconnect with Last-Event-ID
# resumes with no gap and no duplicate; non-members see nothing, anonymous is 401.
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
my %tok;
for my $who (qw(a b)) {
  my $email = "gw-sse-$who-$tag\@example.org";
  req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
  $tok{$who} = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
}
ok($tok{a} && $tok{b}, 'two users logged in');
my %a = (Authorization => "Bearer $tok{a}");
my $r = req(POST => '/rooms', { %a, Prefer => 'return=representation' }, { name => "sse $tag", type => 'group' });
is($r->{status}, 201, 'room created') or diag $r->{content};
my $room = $r->{json}[0]{id};

sub post_message {
  my ($text) = @_;
  my $r = req(POST => '/messages', { %a, Prefer => 'return=representation' }, { room_id => $room, data => { text => $text } });
  die "post failed: $r->{content}" unless $r->{status} == 201;
  return $r->{json}[0]{id};
}

# an SSE client on a raw socket
sub open_stream {
  my (%h) = @_;
  my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "connect: $!";
  my $q = delete $h{_query};
  my $head = "GET /rooms/$room/events" . (defined $q ? "?$q" : '') . " HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n";
  $head .= "$_: $h{$_}\r\n" for keys %h;
  print $s "$head\r\n";
  return { sock => $s, buf => '', events => [], status => undef };
}

# reads until $cond->($stream) or timeout; parses "id/event/data" blocks
sub pump {
  my ($st, $seconds, $cond) = @_;
  my $sel = IO::Select->new($st->{sock});
  my $end = time + $seconds;
  while (time < $end) {
    return 1 if $cond->($st);
    next unless $sel->can_read(0.05);
    my $n = sysread($st->{sock}, my $chunk, 65536);
    return $cond->($st) if !$n;
    $st->{buf} .= $chunk;
    if (!defined $st->{status} && $st->{buf} =~ s/^HTTP\/1\.1 (\d+)[^\n]*\n.*?\r\n\r\n//s) { $st->{status} = $1 }
    next unless defined $st->{status};
    push @{ $st->{events} }, sse_take(\$st->{buf});
  }
  return $cond->($st);
}
sub ids_of { [map { $_->{id} } @{ $_[0]{events} }] }

my $first = post_message('before the stream');
my $s1 = open_stream(%a, 'Last-Event-ID' => '0');
ok(pump($s1, 10, sub { @{ $_[0]{events} } >= 1 }), 'history after Last-Event-ID 0 arrives');
is($s1->{status}, 200, 'stream status 200');
is_deeply([$s1->{events}[0]{id}, $s1->{events}[0]{event}], [1, 'new'], 'first event: id 1, new');
like($s1->{events}[0]{data}, qr/"before the stream"/, 'event data is the message');

# concurrent writers while streaming
my @kids;
for my $w (1 .. 5) {
  my $pid = fork // die;
  if (!$pid) { post_message("writer $w message $_") for 1 .. 6; exit 0 }
  push @kids, $pid;
}
waitpid($_, 0) for @kids;
my $edited = post_message('to be edited');
my $deleted = post_message('to be deleted');
$r = req(PATCH => "/messages?id=eq.$edited", {%a}, { data => { text => 'edited text' } });
ok($r->{status} == 204 || $r->{status} == 200, 'edit a message') or diag $r->{content};
$r = req(DELETE => "/messages?id=eq.$deleted", {%a});
ok($r->{status} == 204 || $r->{status} == 200, 'delete a message') or diag $r->{content};
my $total = psql("SELECT count(*) FROM api.room_events WHERE room_id = '$room'");
cmp_ok($total, '>=', 35, "events recorded: $total");
ok(pump($s1, 15, sub { @{ $_[0]{events} } >= $total }), 'every event arrives on the stream');
is_deeply(ids_of($s1), [1 .. $total], 'ids are 1..N: in order, no gap, no duplicate');
my %kinds = map { $_->{event} => 1 } @{ $s1->{events} };
ok($kinds{edited} && $kinds{deleted}, 'edits and deletions (tombstones) are streamed');

# resume: a client that stopped at id 10 gets 11.. exactly once
post_message('after the first stream');
$total++;
my $s2 = open_stream(%a, 'Last-Event-ID' => '10');
ok(pump($s2, 10, sub { @{ $_[0]{events} } >= $total - 10 }), 'resumed stream catches up');
post_message('live after resume');
$total++;
ok(pump($s2, 10, sub { @{ $_[0]{events} } >= $total - 10 }), 'and keeps streaming');
is_deeply(ids_of($s2), [11 .. $total], 'Last-Event-ID resume: no gap, no duplicate');

# without Last-Event-ID only new events come
my $s3 = open_stream(%a);
ok(pump($s3, 5, sub { defined $_[0]{status} }), 'stream without Last-Event-ID opens');
post_message('only this one');
$total++;
ok(pump($s3, 10, sub { @{ $_[0]{events} } >= 1 }), 'a new event arrives');
is_deeply(ids_of($s3), [$total], 'only events after the subscription');

# a non-member is refused; anonymous is refused
my $sb = open_stream(Authorization => "Bearer $tok{b}", 'Last-Event-ID' => '0');
pump($sb, 5, sub { defined $_[0]{status} });
is($sb->{status}, 404, 'non-member: 404 (RLS hides the room)');
is(scalar @{ $sb->{events} }, 0, '... and no event');
post_message('members only');
$total++;
ok(pump($s1, 10, sub { @{ $_[0]{events} } >= $total }), 'the member gets the next one');
# a browser's EventSource sends no Authorization header: access_token in the query
my $sq = open_stream(_query => "access_token=$tok{a}", 'Last-Event-ID' => '0');
ok(pump($sq, 10, sub { @{ $_[0]{events} } >= $total }), 'a stream authorized by access_token (EventSource) gets the events');
is_deeply(ids_of($sq), [1 .. $total], '... all of them, in order');
my $sqb = open_stream(_query => "access_token=$tok{b}");
pump($sqb, 5, sub { defined $_[0]{status} });
is($sqb->{status}, 404, "another user's access_token: 404");
$room = '00000000-0000-0000-0000-000000000000';
my $ghost = open_stream(%a);
pump($ghost, 5, sub { defined $_[0]{status} });
is($ghost->{status}, 404, 'unknown room: 404');
my $sa = open_stream();
pump($sa, 5, sub { defined $_[0]{status} });
is($sa->{status}, 401, 'anonymous stream: 401');
my $bad = open_stream(%a, 'Last-Event-ID' => 'x');
pump($bad, 5, sub { defined $_[0]{status} });
is($bad->{status}, 400, 'malformed Last-Event-ID: 400');

done_testing();
