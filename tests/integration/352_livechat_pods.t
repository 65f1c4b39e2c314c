#!/usr/bin/perl
# Remote chats over two real pods (each its own cluster, gateway, federator, livechat
# daemon): a user of pod B opens the chat of a video of pod A (B asks A with a signed
# GET), follows it on B's own /rooms/<id>/events, posts through B (B delivers to A, A
# decides), and a subscriber on each side sees the same ordered events, including a
# moderator's delete on A; A's slow mode refuses B's user's second post and B learns why.
use strict;
use warnings;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

my $top = $ENV{PGPOD_TOP} or die "PGPOD_TOP is not set (run through tests/check)\n";
my $dir = tempdir('/tmp/pgpod-chatpods.XXXXXX', CLEANUP => !($ENV{PGPOD_KEEP} // 0));
chmod 0755, $dir;
sub pgport { $ENV{PGPOD_PG_PORT} + 45 + $_[0] }
sub httpport { $ENV{PGPOD_HTTP_PORT} + 65 + $_[0] }
sub url { 'http://127.0.0.1:' . httpport($_[0]) }
sub podcmd {
  my ($n, $cmd) = @_;
  local $ENV{PGPOD_URL_SELF} = url($n);
  local $ENV{PGPOD_DIR} = "$dir/p$n";
  local $ENV{PGPOD_PG_PORT} = pgport($n);
  local $ENV{PGPOD_HTTP_PORT} = httpport($n);
  local $ENV{PGPOD_DB} = 'pgpod';
  return system("$top/scripts/pgpod $cmd >>$dir/pod$n.log 2>&1");
}
sub qp {
  my ($n, $sql) = @_;
  open(my $fh, '-|', 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', "$dir/p$n/run", '-p', pgport($n),
       '-U', 'postgres', '-d', 'pgpod', '-c', $sql) or die "psql: $!";
  local $/;
  my $out = <$fh> // '';
  close $fh or die "psql failed on pod $n: $sql\n";
  $out =~ s/\s+\z//;
  return $out;
}
END { podcmd($_, 'stop') for 1, 2 }

my $http = HTTP::Tiny->new(timeout => 30);
my $json = JSON::PP->new->canonical;
sub req {
  my ($n, $method, $path, $token, $body) = @_;
  my %h = (defined $token ? (Authorization => "Bearer $token") : ());
  $h{'Content-Type'} = 'application/json' if $body;
  $h{Prefer} = 'return=representation';
  my $r = $http->request($method, url($n) . $path, { headers => \%h, (defined $body ? (content => $json->encode($body)) : ()) });
  my $j = eval { $json->decode($r->{content}) };
  return { status => $r->{status}, json => $j, content => $r->{content} };
}
sub wait_for {
  my ($secs, $cond) = @_;
  my $end = time + $secs;
  while (time < $end) { my $v = eval { $cond->() }; return $v if $v; sleep 0.1 }
  return undef;
}
sub user {
  my ($n, $who) = @_;
  req($n, POST => '/rpc/register', undef, { email => "$who\@chatpods.test", password => 'correct horse battery' });
  return req($n, POST => '/rpc/login', undef, { email => "$who\@chatpods.test", password => 'correct horse battery' })->{json}{token};
}

# SSE subscriber: collects (kind, type, text or moderation action, status) per event
sub stream {
  my ($n, $room, $token) = @_;
  my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => httpport($n)) or die "connect: $!";
  print $s "GET /rooms/$room/events?access_token=$token HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 0\r\n\r\n";
  return { sock => $s, sel => IO::Select->new($s), buf => '', events => [] };
}
sub pump {
  my ($st, $secs, $cond) = @_;
  my $end = time + $secs;
  while (time < $end) {
    return 1 if $cond->($st);
    next unless $st->{sel}->can_read(0.05);
    my $n = sysread($st->{sock}, my $chunk, 65536);
    return $cond->($st) unless $n;
    $st->{buf} .= $chunk;
    while ($st->{buf} =~ s/^(.*?)\n\n//s) {
      my %ev;
      for (split /\n/, $1) { $ev{$1} = $2 if /^(\w+): ?(.*)$/ }
      next unless exists $ev{id};
      my $m = $json->decode($ev{data});
      push @{ $st->{events} }, join(' ', $ev{event}, $m->{type} // '-',
        $m->{data}{text} // ($m->{data}{moderation} ? 'moderation:' . $m->{data}{moderation}{action} : '-'));
    }
  }
  return $cond->($st);
}

plan tests => 21;
for my $n (1, 2) { podcmd($n, 'start') == 0 or diag "pod $n did not start: see $dir/pod$n.log" }
ok(wait_for(30, sub { req(1, GET => '/rpc/friend_list')->{status} == 200 && req(2, GET => '/rpc/friend_list')->{status} == 200 }),
   'pods A (' . url(1) . ') and B (' . url(2) . ') answer');
qp(2, "SELECT pod.make_friends(ARRAY['" . url(1) . "'])");
ok(wait_for(30, sub { qp(1, "SELECT count(*) FROM pod.friends WHERE state = 'active'") == 1
                        && qp(2, "SELECT count(*) FROM pod.friends WHERE state = 'active'") == 1 }), 'A and B are friends');

# On A: a channel owner (the moderator) and a published video
my $owner = user(1, 'owner');
my $r = req(1, POST => '/channels', $owner, { name => 'livechan', display_name => 'Live Channel' });
my $channel = $r->{json}[0]{id};
$r = req(1, POST => '/videos', $owner, { channel_id => $channel, name => 'live on A' });
my $video = $r->{json}[0]{uuid};
qp(1, "UPDATE pod.videos SET state = 'published' WHERE uuid = '$video'");
# B knows A's video only from A's published items (the pubsub cache): its network
# index lists it with A as its origin; pod.videos on B holds only B's own videos
ok(wait_for(30, sub { my $x = req(2, GET => "/network_videos?uuid=eq.$video&select=uuid,origin,local")->{json};
                      ref $x eq 'ARRAY' && @$x == 1 && $x->[0]{origin} eq url(1) && !$x->[0]{local} }),
   "A's video is in B's network index, from A");
is(qp(2, "SELECT count(*) FROM pod.videos WHERE uuid = '$video'"), 0, 'and not a row of pod.videos on B');
$r = req(1, GET => "/rpc/video_chat_infos?video=$video");
is_deeply([$r->{status}, $r->{json}{enabled}], [200, JSON::PP::true], "A answers its video's chat information") or diag $r->{content};

# On B: a user opens the remote chat: pending until the signed GET to A answered
my $bob = user(2, 'bob');
$r = req(2, POST => '/rpc/remote_chat_open', $bob, { video => $video });
is($r->{json}{status}, 'pending', 'B asks A first (pending)') or diag $r->{content};
my $mirror;
ok(wait_for(30, sub { my $o = req(2, POST => '/rpc/remote_chat_open', $bob, { video => $video })->{json};
                      $mirror = $o->{room} if ($o->{status} // '') eq 'ready' && $o->{following}; $mirror }),
   'then the chat is ready on B and followed (A sent its snapshot)');
is(qp(2, "SELECT count(*) FROM pod.remote_servers WHERE host = '127.0.0.1:" . httpport(1) . "' AND last_update IS NOT NULL"), 1,
   "B recorded A's server entry (remote_servers, under the refresh throttle)");
is(qp(2, "SELECT count(*) FROM pod.jobs WHERE kind = 'chat_info'"), 1, 'one signed GET for it');
my $room_a = qp(1, "SELECT pod.livechat_room('$video')");
is(qp(1, "SELECT pod_url FROM pod.room_remote_pods WHERE room_id = '$room_a'"), url(2), 'A knows B follows the room');

# a subscriber on each side
my $sa = stream(1, $room_a, $owner);
my $sb = stream(2, $mirror, $bob);

# B's user posts through B; A's owner posts; B's user again; A's owner deletes B's first
$r = req(2, POST => '/rpc/chat_post', $bob, { room => $mirror, data => { text => 'hello from B' } });
is($r->{json}{status}, 'sent', "B's user posts (sent to A)") or diag $r->{content};
ok(pump($sa, 30, sub { grep { /hello from B/ } @{ $_[0]{events} } }), "the post is an event of A's room");
my $bobs = qp(1, "SELECT id FROM pod.messages WHERE data ->> 'text' = 'hello from B'");
like(qp(1, "SELECT author_ref FROM pod.messages WHERE id = $bobs"), qr/^[0-9a-f-]{36}\@127\.0\.0\.1:${\ httpport(2)}$/,
     'on A the author is user@pod (of B)');
$r = req(1, POST => '/messages', $owner, { room_id => $room_a, data => { text => 'welcome, B' } });
is($r->{status}, 201, "A's owner answers") or diag $r->{content};
$r = req(2, POST => '/rpc/chat_post', $bob, { room => $mirror, data => { text => 'thanks A' } });
ok(pump($sa, 30, sub { grep { /thanks A/ } @{ $_[0]{events} } }), "B's second post arrives");
$r = req(1, DELETE => "/messages?id=eq.$bobs", $owner);
ok($r->{status} == 200 || $r->{status} == 204, "A's owner deletes B's first post (moderation)") or diag $r->{content};
my $want = 5;   # new, new, new, deleted, new (the moderation event)
pump($sa, 30, sub { @{ $_[0]{events} } >= $want });
ok(pump($sb, 30, sub { @{ $_[0]{events} } >= $want }), "B's subscriber gets as many events as A's");
is_deeply($sb->{events}, $sa->{events}, 'and the same, in the same order') or diag explain [$sa->{events}, $sb->{events}];
like(join('|', @{ $sa->{events} }), qr/^new message hello from B\|new message welcome, B\|new message thanks A\|deleted message -\|new event moderation:delete$/,
     "A's stream: the posts, the tombstone and the moderation event");

# A's slow mode is A's: B's user's second post in a row is refused, and B learns why
qp(1, "INSERT INTO pod.channel_chat_options (channel_id, options) VALUES ($channel, '{\"slow_mode_seconds\": 600}')
       ON CONFLICT (channel_id) DO UPDATE SET options = EXCLUDED.options");
req(2, POST => '/rpc/chat_post', $bob, { room => $mirror, data => { text => 'slow one' } });
$r = req(2, POST => '/rpc/chat_post', $bob, { room => $mirror, data => { text => 'too fast' } });
my $ref = $r->{json}{ref};
my $o = wait_for(30, sub { my $x = req(2, GET => "/remote_chat_outbox?ref=eq.$ref", $bob)->{json}[0];
                           ($x->{status} // '') eq 'refused' ? $x : undef });
is_deeply([$o->{status}, $o->{sqlstate}, ($o->{retry_after} // 0) > 500 ? 'waits' : 'no wait'], ['refused', 'PT429', 'waits'],
          "B's outbox: A refused the post for slow mode, with the wait") or diag explain $o;
$r = req(2, POST => '/messages', $bob, { room_id => $mirror, data => { text => 'sneaking in' } });
is($r->{status}, 403, "posting into B's mirror directly is refused: the room is A's") or diag $r->{content};
