#!/usr/bin/perl
# Livechat's per-viewer events through the gateway's SSE hub (one shared read per event,
# filtered in memory): a held message and a hidden one (forbidden word, action hide)
# reach the room's moderators and their author at once and never a non-moderator's
# stream (signed in or anonymous); a held message released by the livechat daemon
# reaches every other subscriber exactly once, in order; a resumed stream
# (Last-Event-ID) gets the same; a member promoted to admin sees staff events from then
# on; a banned anonymous viewer's stream ends.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);
use GwTest;

my $tag = "$$-" . int(rand(1e9));
my %tok;
for my $who (qw(owner author other promoted)) {
  my $email = "hub-$who-$tag\@example.org";
  req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
  $tok{$who} = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
  ok($tok{$who}, "$who logged in");
}
my %o = (Authorization => "Bearer $tok{owner}", Prefer => 'return=representation');
my %w = (Authorization => "Bearer $tok{author}", Prefer => 'return=representation');
(my $chname = "hub$tag") =~ s/-/_/g;
my $r = req(POST => '/channels', {%o}, { name => $chname, display_name => "Hub $tag" });
is($r->{status}, 201, 'channel created') or diag $r->{content};
my $channel = $r->{json}[0]{id};
$r = req(POST => '/videos', {%o}, { channel_id => $channel, name => 'hub live' });
is($r->{status}, 201, 'video created') or diag $r->{content};
my $video = $r->{json}[0]{uuid};
psql("UPDATE pod.videos SET state = 'published' WHERE channel_id = $channel");
$r = req(POST => '/channel_chat_options', {%o},
         { channel_id => $channel,
           options => { terms => 'Hub terms.', moderation_delay_seconds => 2,
                        forbidden_words => ['spoiler'], forbidden_words_action => 'hide' } });
is($r->{status}, 201, 'options: a 2 s moderation delay, "spoiler" hidden') or diag $r->{content};
$r = req(POST => '/rpc/chat_join_anonymous', {}, { video => $video, nickname => "Hub Owl" });
is($r->{status}, 200, 'an anonymous viewer joins') or diag $r->{content};
my $anon = $r->{json}{token};
my $room = $r->{json}{room};
# the promoted user is an explicit member (a room_members row to update later)
psql("INSERT INTO pod.room_members (room_id, user_id, affiliation)"
     . " SELECT '$room', id, 'member' FROM pod.users WHERE email = 'hub-promoted-$tag\@example.org'");

my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
sub stream {
  my ($token, $last) = @_;
  my $sock = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "connect: $!";
  my $h = defined $last ? "Last-Event-ID: $last\r\n" : '';
  print $sock "GET /rooms/$room/events?access_token=$token HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n$h\r\n";
  return { sock => $sock, sel => IO::Select->new($sock), buf => '', eof => 0 };
}
sub pump {
  my ($st, $re, $secs) = @_;
  my $end = time + $secs;
  while (time < $end) {
    return 1 if $st->{buf} =~ $re;
    next unless $st->{sel}->can_read(0.05);
    my $n = sysread($st->{sock}, my $chunk, 65536);
    if (!$n) { $st->{eof} = 1; last }
    $st->{buf} .= $chunk;
  }
  return $st->{buf} =~ $re;
}
sub count { my ($st, $text) = @_; my $n = () = $st->{buf} =~ /"text": "\Q$text\E"/g; $n }
sub texts {    # the message texts of the stream's events, in order
  my ($st) = @_;
  [ map { /"text": "([^"]*)"/ ? $1 : () } grep { /^data: / } split /\n/, $st->{buf} ];
}

my %s = (owner => stream($tok{owner}), author => stream($tok{author}), other => stream($tok{other}),
         promoted => stream($tok{promoted}), anon => stream($anon));
for my $who (sort keys %s) {
  ok(pump($s{$who}, qr/\r\n\r\nretry: \d+\n\nevent: info\ndata: [^\n]*"terms": "Hub terms\."/s, 10),
     "$who: the stream opens with the info event (terms) first") or diag $s{$who}{buf};
}

$r = req(POST => '/messages', {%w}, { room_id => $room, data => { text => 'held one' } });
is($r->{status}, 201, 'the author posts a message (held 2 s)') or diag $r->{content};
ok($r->{json}[0]{held_until}, '... held');
$r = req(POST => '/messages', {%w}, { room_id => $room, data => { text => 'a SPOILER here' } });
is($r->{status}, 201, 'the author posts a forbidden word (kept, hidden)') or diag $r->{content};
ok($r->{json}[0]{hidden}, '... hidden');
$r = req(POST => '/messages', {%o}, { room_id => $room, data => { text => 'mod marker 1' } });
is($r->{status}, 201, 'the owner posts (moderators are not held)') or diag $r->{content};

for my $who (qw(owner author)) {
  ok(pump($s{$who}, qr/mod marker 1/, 10), "$who gets the owner's marker");
  is(count($s{$who}, 'held one'), 1, "$who got the held message at once");
  is(count($s{$who}, 'a SPOILER here'), 1, "$who got the hidden message");
}
for my $who (qw(other promoted anon)) {
  ok(pump($s{$who}, qr/mod marker 1/, 10), "$who gets the owner's marker");
  is(count($s{$who}, 'held one'), 0, "$who did not get the held message before its release");
  is(count($s{$who}, 'a SPOILER here'), 0, "$who did not get the hidden message");
}

# the livechat daemon releases the held message: a new event for everyone else
ok(wait_until('the release', 10, sub { psql("SELECT count(*) FROM pod.chat_held WHERE room_id = '$room'") eq '0' }),
   'the livechat daemon released the held message');
$r = req(POST => '/messages', {%o}, { room_id => $room, data => { text => 'mod marker 2' } });
is($r->{status}, 201, 'the owner posts a second marker') or diag $r->{content};
for my $who (sort keys %s) {
  ok(pump($s{$who}, qr/mod marker 2/, 10), "$who gets the second marker");
  is(count($s{$who}, 'held one'), 1, "$who got the held message exactly once");
}
for my $who (qw(other promoted anon)) {
  is_deeply(texts($s{$who}), ['mod marker 1', 'held one', 'mod marker 2'], "$who: in order, nothing hidden")
    or diag $s{$who}{buf};
}
is_deeply(texts($s{owner}), ['held one', 'a SPOILER here', 'mod marker 1', 'mod marker 2'],
          'owner: everything once, in order') or diag $s{owner}{buf};
is_deeply(texts($s{author}), ['held one', 'a SPOILER here', 'mod marker 1', 'mod marker 2'],
          'author: its own messages once, in order') or diag $s{author}{buf};

# resuming from the start reads the history under each role: the same events
for my $who (qw(other author)) {
  my $st = stream($tok{$who}, 0);
  ok(pump($st, qr/mod marker 2/, 10), "$who resumes with Last-Event-ID: 0");
  my @want = $who eq 'other' ? ('mod marker 1', 'held one', 'mod marker 2')
                             : ('held one', 'a SPOILER here', 'mod marker 1', 'mod marker 2');
  is_deeply(texts($st), \@want, "$who: the resumed stream has the same events") or diag $st->{buf};
  close $st->{sock};
}

# a member promoted to admin sees staff events from then on (NOTIFY pgpod_room_members)
psql("UPDATE pod.room_members SET affiliation = 'admin' WHERE room_id = '$room'"
     . " AND user_id = (SELECT id FROM pod.users WHERE email = 'hub-promoted-$tag\@example.org')");
# its re-authorisation is asked through the listener: wait until the database says admin
ok(wait_until('the promotion', 10, sub {
  req(POST => '/messages', {%w}, { room_id => $room, data => { text => 'probe spoiler' } });
  pump($s{promoted}, qr/probe spoiler/, 0.5) }), 'the promoted admin gets hidden messages now');
is(count($s{other}, 'probe spoiler'), 0, 'the others still do not');
is(count($s{anon}, 'probe spoiler'), 0, '... nor the anonymous viewer');

# a banned anonymous viewer's stream ends
my $guest = psql("SELECT id FROM pod.chat_guests WHERE room_id = '$room' AND name = 'Hub Owl'");
$r = req(POST => '/rpc/chat_moderate', {%o}, { room => $room, target => $guest, action => 'ban' });
is($r->{status}, 200, 'the owner bans the anonymous viewer') or diag $r->{content};
pump($s{anon}, qr/(?!)/, 10);
ok($s{anon}{eof}, "the banned viewer's stream ended");

close $_->{sock} for values %s;
done_testing();
