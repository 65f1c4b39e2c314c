#!/usr/bin/perl
# Livechat over HTTP: an anonymous viewer's flow (POST /rpc/chat_join_anonymous, a token
# for one room, posting within the room's rules, the stream with the terms first),
# slow mode answered 429 with Retry-After, the per-address join limit, history pages.
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
for my $who (qw(owner viewer)) {
  my $email = "lc-$who-$tag\@example.org";
  req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
  $tok{$who} = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
}
ok($tok{owner} && $tok{viewer}, 'two users logged in');
my %o = (Authorization => "Bearer $tok{owner}", Prefer => 'return=representation');
my %v = (Authorization => "Bearer $tok{viewer}", Prefer => 'return=representation');
(my $chname = "lc$tag") =~ s/-/_/g;
my $r = req(POST => '/channels', {%o}, { name => $chname, display_name => "Live $tag" });
is($r->{status}, 201, 'channel created') or diag $r->{content};
my $channel = $r->{json}[0]{id};
my @videos;
for my $n (1, 2) {
  $r = req(POST => '/videos', {%o}, { channel_id => $channel, name => "live $n" });
  is($r->{status}, 201, "video $n created") or diag $r->{content};
  push @videos, $r->{json}[0]{uuid};
}
psql("UPDATE pod.videos SET state = 'published' WHERE channel_id = $channel");
$r = req(POST => '/channel_chat_options', {%o},
         { channel_id => $channel, options => { terms => 'Be kind, viewer.', slow_mode_seconds => 600 } });
is($r->{status}, 201, 'the owner sets terms and slow mode') or diag $r->{content};
$r = req(PATCH => "/channel_chat_options?channel_id=eq.$channel", {%o}, { options => { slow_mode_seconds => -5 } });
is($r->{status}, 400, 'a bad option is a 400') or diag $r->{content};

# anonymous: bad nicknames, then a token
$r = req(POST => '/rpc/chat_join_anonymous', {}, { video => $videos[0], nickname => 'x' });
is_deeply(code2($r), [400, '22023'], 'a one-letter nickname: 400');
$r = req(POST => '/rpc/chat_join_anonymous', {}, { video => $videos[0], nickname => "Live $tag" });
is_deeply(code2($r), [409, '23505'], "the channel's display name: 409");
$r = req(POST => '/rpc/chat_join_anonymous', {}, { video => $videos[0], nickname => 'Night Owl' });
is($r->{status}, 200, 'an anonymous viewer joins') or diag $r->{content};
my $anon = $r->{json}{token};
my $room = $r->{json}{room};
is($r->{json}{info}{terms}, 'Be kind, viewer.', 'the join answer carries the terms');
my %a = (Authorization => "Bearer $anon", Prefer => 'return=representation');
$r = req(GET => "/rpc/chat_room_info?room=$room", {%a});
is($r->{json}{terms}, 'Be kind, viewer.', "the room's info has the terms") or diag $r->{content};

# the anonymous viewer's stream starts with the info event
# an SSE client on a raw socket: stream(token) and pump(stream, regex, seconds)
my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
sub stream {
  my ($token) = @_;
  my $sock = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "connect: $!";
  print $sock "GET /rooms/$room/events?access_token=$token HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
  return { sock => $sock, sel => IO::Select->new($sock), buf => '' };
}
sub pump {
  my ($st, $re, $secs) = @_;
  my $end = time + $secs;
  while (time < $end) {
    return 1 if $st->{buf} =~ $re;
    next unless $st->{sel}->can_read(0.05);
    my $n = sysread($st->{sock}, my $chunk, 65536);
    last unless $n;
    $st->{buf} .= $chunk;
  }
  return $st->{buf} =~ $re;
}
my $as = stream($anon);
sub pump_until { pump($as, @_) }
ok(pump_until(qr/\r\n\r\n.*?\n\n.*?\n\n/s, 10), 'the stream opens');
like($as->{buf}, qr/^HTTP\/1\.1 200/, 'stream: 200 for an anonymous token');
like($as->{buf}, qr/\r\n\r\nretry: \d+\n\nevent: info\ndata: \{[^\n]*"terms": "Be kind, viewer\."/s,
     "the stream's first event is the room's info with the terms");

# the anonymous viewer posts; the second post within the slow mode is a 429 with Retry-After
$r = req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'hello from the dark' } });
is($r->{status}, 201, 'the anonymous viewer posts') or diag $r->{content};
is($r->{json}[0]{author_ref}, 'Night Owl', '... under the nickname');
$r = req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'again' } });
is_deeply(code2($r), [429, 'PT429'], 'the second post within slow mode: 429') or diag $r->{content};
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with a Retry-After header') or diag explain $r->{headers};
cmp_ok($r->{headers}{'retry-after'} // 0, '>', 500, 'telling the remaining wait');
ok(pump_until(qr/event: new\ndata: [^\n]*hello from the dark/, 10), 'the post arrives on the anonymous stream');
unlike($as->{buf}, qr/"again"/, 'the refused post never reached the stream');

# the token is for one room only
my $room2 = psql("SELECT pod.livechat_room('$videos[1]')");
$r = req(POST => '/messages', {%a}, { room_id => $room2, data => { text => 'elsewhere' } });
ok($r->{status} == 401 || $r->{status} == 403, 'posting in another room is refused') or diag $r->{content};
$r = req(GET => "/messages?room_id=eq.$room2", {%a});
is_deeply([$r->{status}, scalar @{ $r->{json} || [] }], [200, 0], 'reading another room gives nothing');
$r = req(GET => "/messages?room_id=eq.$room");
is($r->{status}, 401, 'without a token an anonymous reader is refused');

# mute_anonymous: still reads, may not post
$r = req(PATCH => "/channel_chat_options?channel_id=eq.$channel", {%o}, { options => { mute_anonymous => JSON::PP::true } });
ok($r->{status} == 200 || $r->{status} == 204, 'the owner mutes anonymous viewers') or diag $r->{content};
psql("DELETE FROM pod.chat_slow");
$r = req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'muted?' } });
is($r->{status}, 401, 'a muted anonymous viewer cannot post (42501 as anonymous: 401)') or diag $r->{content};
like($r->{json}{message} // '', qr/may read but not post/, '... and is told why');
$r = req(GET => "/messages?room_id=eq.$room&type=eq.message", {%a});
is($r->{status}, 200, 'but still reads');

# the per-address join limit
psql("SELECT pod.set_setting('livechat.anonymous_joins_per_hour', '2')");
$r = req(POST => '/rpc/chat_join_anonymous', {}, { video => $videos[0], nickname => 'Second Owl' });
is($r->{status}, 200, 'a second join from this address') or diag $r->{content};
$r = req(POST => '/rpc/chat_join_anonymous', {}, { video => $videos[0], nickname => 'Third Owl' });
is_deeply(code2($r), [429, 'PT429'], 'the third join within the hour: 429') or diag $r->{content};
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
psql("DELETE FROM pod.setting_overrides WHERE name = 'livechat.anonymous_joins_per_hour'");

# moderation delay over the real stream (the livechat daemon releases held messages):
# a signed-in viewer's stream gets the anonymous viewer's message the owner let through,
# never the one the owner deleted within the delay, nor its deletion
$r = req(PATCH => "/channel_chat_options?channel_id=eq.$channel", {%o}, { options => { moderation_delay_seconds => 2 } });
ok($r->{status} == 200 || $r->{status} == 204, 'the owner sets a 2 s moderation delay') or diag $r->{content};
my $vs = stream($tok{viewer});
sub vpump { pump($vs, @_) }
ok(vpump(qr/event: info\n/, 10), "the viewer's stream opens");
$r = req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'held and withdrawn' } });
is($r->{status}, 201, 'the anonymous viewer posts a first held message') or diag $r->{content};
my $withdrawn = $r->{json}[0]{id};
ok($r->{json}[0]{held_until}, '... held until the delay is over');
$r = req(POST => '/messages', {%a}, { room_id => $room, data => { text => 'held then shown' } });
is($r->{status}, 201, 'and a second') or diag $r->{content};
my $shown = $r->{json}[0]{id};
$r = req(DELETE => "/messages?id=eq.$withdrawn", {%o});
ok($r->{status} == 204 || $r->{status} == 200, 'the owner deletes the first within the delay') or diag $r->{content};
$r = req(GET => "/messages?id=eq.$shown", {Authorization => "Bearer $tok{owner}"});
is(scalar @{ $r->{json} }, 1, 'the owner sees the held message at once');
ok(vpump(qr/event: new\ndata: [^\n]*held then shown/, 15), "the viewer's stream gets the second once released");
my $seen_withdrawn = () = $vs->{buf} =~ /"id": $withdrawn\b/g;
is($seen_withdrawn, 0, "the withdrawn message never reached the stream, not even as a deletion") or diag $vs->{buf};
close $vs->{sock};

# history pages, newest first
psql("INSERT INTO pod.messages (room_id, data) SELECT '$room', jsonb_build_object('text', 'page ' || g) FROM generate_series(1, 7) g");
$r = req(GET => "/rpc/room_history?room=$room&page_size=3", {%v});
is($r->{status}, 200, 'GET /rpc/room_history') or diag $r->{content};
is_deeply([map { $_->{data}{text} } @{ $r->{json} }], ['page 7', 'page 6', 'page 5'], 'the latest page, newest first');
my $oldest = $r->{json}[-1]{id};
$r = req(GET => "/rpc/room_history?room=$room&before=$oldest&page_size=3", {%v});
is_deeply([map { $_->{data}{text} } @{ $r->{json} }], ['page 4', 'page 3', 'page 2'], 'the page before');
$r = req(GET => "/rpc/room_history?room=$room&page_size=500", {%v});
is_deeply(code2($r), [400, '22023'], 'page_size 500: 400');

close $as->{sock};
done_testing();
