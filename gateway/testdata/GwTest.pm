# Helpers for the gateway's integration tests (tests/integration/2*_gateway*.t):
# HTTP against $PGPOD_URL, psql as the harness's superuser, the test fixture, and
# HS256 tokens signed with the pod's own secret. Waits poll; nothing sleeps a guess.
package GwTest;
use strict;
use warnings;
use Exporter 'import';
use HTTP::Tiny;
use JSON::PP;
use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time sleep);
use IO::Socket::INET;

our @EXPORT = qw(req psql fixture token wait_until json url raw_request b64url code2 err sse_take);

my $url = $ENV{PGPOD_URL} or die "PGPOD_URL is not set (run through tests/check)\n";
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
my $json = JSON::PP->new->canonical->allow_nonref;

sub url { $url }
# [status, code] and [status, code, message, details, hint] of an answer, to compare
sub code2 { [$_[0]{status}, $_[0]{json}{code}] }
sub err { my $r = shift; [$r->{status}, $r->{json}{code}, $r->{json}{message}, $r->{json}{details}, $r->{json}{hint}] }
sub json { $json }

# req(METHOD, PATH, {headers}, BODY) -> {status, headers, content, json}
sub req {
  my ($method, $path, $headers, $body) = @_;
  my %opt = (headers => $headers || {});
  $opt{content} = ref $body ? $json->encode($body) : $body if defined $body;
  $opt{headers}{'Content-Type'} //= 'application/json' if ref $body;
  my $r = $http->request($method, "$url$path", \%opt);
  my $decoded = eval { $json->decode($r->{content}) } if length($r->{content} // '');
  return { status => $r->{status}, headers => $r->{headers}, content => $r->{content}, json => $decoded };
}

sub psql {
  my ($sql) = @_;
  open(my $fh, '-|', 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', 'SET client_min_messages = warning',
       '-c', $sql) or die "psql: $!";
  local $/;
  my $out = <$fh>;
  close $fh or die "psql failed on: $sql\n";
  $out =~ s/\s+\z// if defined $out;
  return $out;
}

sub wait_until {
  my ($what, $seconds, $cond) = @_;
  my $end = time + $seconds;
  while (time < $end) {
    my $v = eval { $cond->() };
    return $v if $v;
    sleep 0.05;
  }
  die "timed out after ${seconds}s waiting for $what\n";
}

# Loads gateway/testdata/fixture.sql and waits until every worker's schema cache
# has it (each worker has its own listener, so ask several times).
sub fixture {
  my $top = $ENV{PGPOD_TOP} // '.';
  system('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', 'SET client_min_messages = warning',
         '-f', "$top/gateway/testdata/fixture.sql") == 0 or die "fixture failed\n";
  my $ok = 0;
  wait_until('the schema cache to show the fixture', 20, sub {
    my $r = req('GET', '/gw_items?select=id&limit=1');
    $ok = $r->{status} == 200 ? $ok + 1 : 0;
    return $ok >= 8;   # several consecutive answers: connections land on every worker
  });
}

sub b64url { my $s = encode_base64($_[0], ''); $s =~ tr{+/}{-_}; $s =~ s/=+$//; $s }

my $secret;
# token({claims}) signed with pod.jwt_secret() (read as superuser)
sub token {
  my ($claims, $key) = @_;
  $secret //= pack('H*', psql("SELECT encode(pod.jwt_secret(), 'hex')"));
  my $h = b64url($json->encode({ alg => 'HS256', typ => 'JWT' }));
  my $p = b64url($json->encode($claims));
  return "$h.$p." . b64url(hmac_sha256("$h.$p", $key // $secret));
}

# Sends raw bytes on a fresh connection, returns what came back before close/timeout.
sub raw_request {
  my ($bytes, $timeout) = @_;
  my ($host, $port) = $url =~ m{//([^:/]+):(\d+)};
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Timeout => 5) or die "connect: $!";
  $s->autoflush(1);
  print $s $bytes if defined $bytes;
  my $out = '';
  my $end = time + ($timeout // 10);
  $s->blocking(0);
  while (time < $end) {
    my $n = sysread($s, my $buf, 65536);
    if (defined $n && $n == 0) { last }
    if (defined $n) { $out .= $buf; next }
    sleep 0.02;
  }
  close $s;
  return $out;
}

# sse_take(\$buf): removes the complete Server-Sent Events from $buf and returns
# those with an id as hashes (id, event, data)
sub sse_take {
  my ($buf) = @_;
  my @events;
  while ($$buf =~ s/^(.*?)\n\n//s) {
    my %ev;
    for (split /\n/, $1) { $ev{$1} = $2 if /^(\w+): ?(.*)$/ }
    push @events, \%ev if exists $ev{id};
  }
  return @events;
}

1;
