#!/usr/bin/perl
# The gateway driven as clients and attackers drive a public server (issue 10):
# racing uploads of one content never lose an acknowledged file, user content
# cannot run as the pod's origin, access refusals are 403/404 (never 500), bad
# filenames and truncated bodies are refused with nothing stored, invalid JSON to
# an RPC is 400 PGRST102, and the access log never holds a token.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use IO::Select;
use Socket qw(SHUT_WR);
use Time::HiRes qw(time sleep);
use GwTest;

fixture();
my $store = $ENV{PGPOD_STORE_DIR} // "$ENV{PGPOD_DIR}/store";
sub tmp_files { opendir(my $d, "$store/tmp") or return 0; scalar grep { !/^\./ } readdir $d }
sub blob_on_disk { my $h = shift; -e "$store/blobs/" . substr($h, 0, 2) . "/$h" }
my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};

my $tag = "$$-" . int(rand(1e9));
my %tok;
for my $who (qw(a b)) {
  my $email = "gw-abuse-$who-$tag\@example.org";
  req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
  $tok{$who} = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
}
ok($tok{a} && $tok{b}, 'two users logged in');
my %a = (Authorization => "Bearer $tok{a}");
my %b = (Authorization => "Bearer $tok{b}");

# --- 1. racing uploads of the same content -----------------------------------
# B (refused at registration: here by a test trigger, as any refusal the database
# may make after the bytes are in) creates the blob, A (accepted) finds it there;
# both wait on a lock of pod.files; B fails first. The blob belongs to whoever
# the database says: A's 201 must keep its bytes.
psql(q{CREATE OR REPLACE FUNCTION public.gw_refuse_upload() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END $$;
  DROP TRIGGER IF EXISTS gw_refuse_upload ON pod.files;
  CREATE TRIGGER gw_refuse_upload BEFORE INSERT ON pod.files FOR EACH ROW
    WHEN (NEW.filename_visible LIKE 'refuse-me%') EXECUTE FUNCTION public.gw_refuse_upload()});
END { eval { psql(q{DROP TRIGGER IF EXISTS gw_refuse_upload ON pod.files; DROP FUNCTION IF EXISTS public.gw_refuse_upload()}) } }
sub send_upload {
  my ($path, $headers, $body) = @_;
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "connect: $!";
  my $h = "POST $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " . length($body) . "\r\n";
  $h .= "$_: $headers->{$_}\r\n" for sort keys %$headers;
  print $s $h, "\r\n", $body;
  return $s;
}
sub read_all {
  my ($s, $seconds) = @_;
  my $sel = IO::Select->new($s);
  my ($out, $end) = ('', time + ($seconds // 20));
  while (time < $end) {
    next unless $sel->can_read(0.1);
    my $n = sysread($s, my $buf, 65536);
    last unless $n;
    $out .= $buf;
  }
  return $out;
}
sub status_of { $_[0] =~ m{^HTTP/1\.1 (\d+)} ? $1 : 0 }
sub body_of { my ($b) = $_[0] =~ /\r\n\r\n(.*)\z/s; $b // '' }
sub waiting_registrations {
  psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND (query LIKE '%register_upload%' OR query LIKE '%blob_stored%')");
}
{
  my $content = "race $tag " . ('x' x 100_000);
  my $hex = sha256_hex($content);
  open(my $locker, '|-', 'exec psql -X -q -v ON_ERROR_STOP=1 2>/dev/null') or die "psql: $!";
  select((select($locker), $| = 1)[0]);
  print $locker "BEGIN;\nLOCK TABLE pod.files IN EXCLUSIVE MODE;\nSELECT pg_sleep(60);\n";
  wait_until('the lock on pod.files', 10, sub {
    psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'files' AND l.mode = 'ExclusiveLock' AND l.granted") > 0 });
  my $refused = send_upload("/upload?filename=refuse-me.bin", { %a, 'Content-Type' => 'application/x-test' }, $content);
  wait_until('the refused upload to wait for the lock', 10, sub { waiting_registrations() >= 1 });
  ok(blob_on_disk($hex), 'the first upload stored the blob');
  my $accepted = send_upload("/upload?filename=a.bin", { %b, 'Content-Type' => 'application/x-test' }, $content);
  wait_until('both uploads to wait', 10, sub { waiting_registrations() >= 2 });
  psql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()");
  close $locker;
  my $ra = read_all($accepted);
  my $rb = read_all($refused);
  is(status_of($rb), 400, 'the upload refused at registration: 400') or diag $rb;
  is(status_of($ra), 201, 'the racing upload is accepted (201)') or diag $ra;
  my $file = eval { json()->decode(body_of($ra)) } // {};
  my $r = req(GET => "/files/$file->{id}", {%b});
  ok($r->{status} == 200 && $r->{content} eq $content, 'the accepted file is downloadable, byte-exact (the refused upload did not remove the blob)')
    or diag "$r->{status} $r->{content}";
  ok(blob_on_disk($hex), '... and its blob is on disk');
  is(tmp_files(), 0, 'no temporary file is left');

  # the collector is the only one that removes blobs: an orphaned blob (its last
  # file deleted) that is uploaded again while the collector takes it keeps its bytes
  is(req(DELETE => "/files?id=eq.$file->{id}", {%b})->{status}, 204, 'the file is deleted');
  is(psql("SELECT count(*) FROM pod.blobs WHERE sha256 = '\\x$hex' AND orphaned_at IS NOT NULL"), 1, '... its blob is orphaned');
  is(psql("SELECT count(*) FROM pod.collect_orphaned_blobs('0')"), 1, 'the collector takes the orphaned blob');
  unlink "$store/blobs/" . substr($hex, 0, 2) . "/$hex";   # what the collector does next
  $r = req(POST => '/upload?filename=again.bin', { %a, 'Content-Type' => 'application/x-test' }, $content);
  is($r->{status}, 201, 'the same content uploaded again: 201');
  $r = req(GET => "/files/$r->{json}{id}", {%a});
  ok($r->{status} == 200 && $r->{content} eq $content, '... and downloadable');

  # a blob stored whose registration fails is known to the database (orphaned),
  # so the collector can remove it; the gateway removes nothing
  my $lonely = "lonely $tag";
  my $lhex = sha256_hex($lonely);
  $r = req(POST => '/upload?filename=refuse-me-too.bin', { %a, 'Content-Type' => 'application/x-test' }, $lonely);
  is($r->{status}, 400, 'an upload refused at registration: 400');
  is(psql("SELECT count(*) FROM pod.blobs WHERE sha256 = '\\x$lhex' AND orphaned_at IS NOT NULL"), 1,
     '... its blob is recorded as orphaned, for the collector');
  is(psql("SELECT count(*) FROM pod.files WHERE sha256 = '\\x$lhex'"), 0, '... and no file was made');
}

# --- 2. user content is never active on the pod's origin -----------------------
{
  my %up;
  for my $case (['page.html', 'text/html', '<script>alert(document.cookie)</script>'],
                ['pic.svg', 'image/svg+xml', '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'],
                ['doc.xhtml', 'application/xhtml+xml', '<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>'],
                ['page.xml', 'text/xml', '<x:script xmlns:x="http://www.w3.org/1999/xhtml">alert(1)</x:script>'],
                ['clip.mp4', 'video/mp4', "\0\0\0\x18ftypmp42 $tag"],
                ['song.mp3', 'audio/mpeg', "ID3 $tag"],
                ['pic.png', 'image/png', "\x89PNG\r\n\x1a\n $tag"],
                ['notes.txt', 'text/plain', "<html><script>alert(1)</script> $tag"],
                ['data.bin', 'application/x-test', "bytes $tag"]) {
    my ($name, $type, $body) = @$case;
    my $r = req(POST => "/upload?filename=$name", { %a, 'Content-Type' => $type }, $body);
    is($r->{status}, 201, "upload $name ($type)") or diag $r->{content};
    $up{$name} = $r->{json}{id};
  }
  for my $name (sort keys %up) {
    my $r = req(GET => "/files/$up{$name}", {%a});
    my $h = $r->{headers};
    is($h->{'x-content-type-options'}, 'nosniff', "$name: nosniff");
    like($h->{'content-security-policy'} // '', qr/\bsandbox\b/, "$name: CSP sandbox");
    like($h->{'content-security-policy'} // '', qr/default-src 'none'/, "$name: CSP default-src 'none'");
  }
  for my $name ('page.html', 'pic.svg', 'doc.xhtml', 'page.xml') {
    my $r = req(GET => "/files/$up{$name}", {%a});
    like($r->{headers}{'content-disposition'} // '', qr/^attachment/, "$name: attachment, not inline");
    unlike($r->{headers}{'content-type'} // '', qr/html|svg|xml/, "$name: not served with a type a browser renders");
  }
  for my $case (['clip.mp4', 'video/mp4'], ['song.mp3', 'audio/mpeg'], ['pic.png', 'image/png']) {
    my ($name, $type) = @$case;
    my $r = req(GET => "/files/$up{$name}?access_token=$tok{a}");
    is($r->{headers}{'content-type'}, $type, "$name: its real type for players");
    like($r->{headers}{'content-disposition'} // '', qr/^inline/, "$name: inline");
  }
  my $r = req(GET => "/files/$up{'data.bin'}", {%a});
  is($r->{headers}{'content-type'}, 'application/x-test', 'another type keeps its type ...');
  like($r->{headers}{'content-disposition'} // '', qr/^attachment/, '... as an attachment');
  $r = req(GET => "/files/$up{'notes.txt'}", {%a});
  like($r->{headers}{'content-disposition'} // '', qr/^attachment/, 'text/plain: an attachment');
  # 304, 206 and HEAD answers carry the same policy
  $r = req(GET => "/files/$up{'page.html'}", { %a, Range => 'bytes=0-3' });
  ok($r->{status} == 206 && ($r->{headers}{'x-content-type-options'} // '') eq 'nosniff'
     && ($r->{headers}{'content-disposition'} // '') =~ /^attachment/, 'a range of an HTML file: the same policy');
  $r = req(GET => "/files/$up{'page.html'}", { %a, Range => 'bytes=0-1,5-6' });
  ok($r->{status} == 206 && ($r->{headers}{'content-security-policy'} // '') =~ /sandbox/, 'several ranges: the same policy');
  # the API's own answers are not sniffed either
  $r = req(GET => '/gw_items?limit=1');
  is($r->{headers}{'x-content-type-options'}, 'nosniff', 'API answers carry nosniff too');
}

# --- 5. access refusals are 403/404 with a JSON error, never 500 -----------------
{
  my $r = req(POST => '/upload?filename=mine.txt', { %a, 'Content-Type' => 'text/plain' }, "only mine $tag");
  my $mine = $r->{json}{id};
  $r = req(POST => '/rpc/forward_file', {%b}, { file => $mine });
  is_deeply(code2($r), [404, 'P0002'], 'forward_file of a file the caller may not read: 404 with a JSON error') or diag $r->{content};
  like($r->{json}{message} // '', qr/no file/, '... saying so');
  $r = req(POST => '/rpc/forward_file', {%b}, { file => '00000000-0000-0000-0000-000000000000' });
  is($r->{status}, 404, 'forward_file of no file: 404');
  $r = req(POST => '/rpc/forward_file', {%a}, { file => $mine });
  is($r->{status}, 200, 'forward_file of a file the caller may read: 200');
  $r = req(POST => '/rpc/video_chat_room', {%a}, { video => '00000000-0000-0000-0000-000000000000' });
  is($r->{status}, 404, 'video_chat_room of no video: 404, not 500') or diag $r->{content};
  $r = req(POST => '/rpc/forward_file', {}, { file => $mine });
  ok($r->{status} == 401 || $r->{status} == 404, 'forward_file anonymously: 401/404, not 500') or diag $r->{content};
}

# every API function, called by anonymous and by a user with made-up arguments
# (unknown ids, wrong types, nothing), answers with a JSON error below 500
{
  my $email = "gw-abuse-sweep-$tag\@example.org";
  req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
  my $sweeper = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
  my @funcs = split /\n/, psql("SELECT p.proname || ':' || coalesce(array_to_string(p.proargnames, ','), '')
    FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace AND p.proname NOT LIKE 'gw\\_%' ORDER BY 1");
  my @fives;
  for my $f (@funcs) {
    my ($name, $args) = split /:/, $f, 2;
    my @args = grep { length } split /,/, $args // '';
    for my $body ({}, { map { ($_ => '00000000-0000-0000-0000-000000000000') } @args }, { map { ($_ => 'x') } @args },
                  { map { ($_ => 12345) } @args }) {
      for my $who ({}, { Authorization => "Bearer $sweeper" }) {
        next if $name eq 'logout' && %$who;   # it would end the sweeper's session
        my $r = req(POST => "/rpc/$name", $who, $body);
        push @fives, "$name " . json()->encode($body) . " -> $r->{status} $r->{content}" if $r->{status} >= 500 || ($r->{status} >= 400 && ref $r->{json} ne "HASH");
      }
    }
  }
  ok(@funcs >= 5, scalar(@funcs) . ' API functions swept');
  is_deeply(\@fives, [], 'no API function answers 500 (or a non-JSON error) to made-up arguments') or diag join "\n", @fives;
}

# --- 6. filenames: NUL, control characters, separators, length -----------------
{
  my $before_files = psql("SELECT count(*) FROM pod.files");
  my $content = "named $tag";
  my $hex = sha256_hex($content);
  for my $case (['evil%00.txt', 'a NUL byte'], ['a%01b', 'a control character'], ['a%0Ab', 'a line feed'],
                ['a%7Fb', 'DEL'], ['..%2Fetc%2Fpasswd', 'a slash'], ['a%5Cb', 'a backslash'],
                ['..', 'a dot-dot name'], ['x' x 256, '256 bytes'], ['%FF%FE', 'invalid UTF-8']) {
    my ($name, $what) = @$case;
    my $r = req(POST => "/upload?filename=$name", { %a, 'Content-Type' => 'text/plain' }, $content);
    is($r->{status}, 400, "a filename with $what: 400") or diag $r->{content};
    is($r->{json}{code}, 'PGRST100', '... with a JSON error');
  }
  my $r = req(POST => '/upload', { %a, 'Content-Type' => 'text/plain', 'Content-Disposition' => "attachment; filename=\"a\\b\"" }, $content);
  is($r->{status}, 400, 'a Content-Disposition filename with a backslash: 400');
  for my $type ('not a type', 'text/', '/plain', 'text/pl ain', 'te<xt/html') {
    $r = req(POST => '/upload?filename=ok.txt', { %a, 'Content-Type' => $type }, $content);
    is_deeply(code2($r), [400, 'PGRST100'], "Content-Type '$type': 400 before the body is stored") or diag $r->{content};
  }
  is(psql("SELECT count(*) FROM pod.files"), $before_files, 'no file was recorded');
  ok(!blob_on_disk($hex), 'no blob was stored');
  is(psql("SELECT count(*) FROM pod.blobs WHERE sha256 = '\\x$hex'"), 0, '... nor recorded');
  is(tmp_files(), 0, 'no temporary file is left');
  $r = req(POST => '/upload?filename=' . ('%C3%A9' x 126) . 'abc', { %a, 'Content-Type' => 'text/plain' }, $content);
  is($r->{status}, 201, 'a UTF-8 name of 255 bytes is fine') or diag $r->{content};
  my $id = $r->{json}{id};
  $r = req(PATCH => "/files?id=eq.$id", {%a}, { filename_visible => "a\\b\x7f" });
  is($r->{status}, 400, 'renaming a file to a name with a backslash or DEL: 400 (the table refuses it too)');
}

# --- 7. a truncated upload whose client half-closes gets an answer --------------
{
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die;
  print $s "POST /upload?filename=t.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok{a}\r\n"
         . "Content-Type: application/x-test\r\nContent-Length: " . (4 << 20) . "\r\n\r\n";
  my $chunk = 'y' x 65536;
  print $s $chunk for 1 .. 16;
  shutdown($s, SHUT_WR);
  my $got = read_all($s, 15);
  is(status_of($got), 400, 'Content-Length 4 MiB, 1 MiB sent, then SHUT_WR: 400') or diag substr($got, 0, 300);
  like(body_of($got), qr/shorter than Content-Length/, '... saying the body is shorter than Content-Length');
  is(tmp_files(), 0, '... and nothing is left in the store');
  ok(!blob_on_disk(sha256_hex($chunk x 16)), '... nor stored as a blob');
  # the same for an API body
  $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die;
  print $s "POST /rpc/gw_add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":";
  shutdown($s, SHUT_WR);
  $got = read_all($s, 15);
  is(status_of($got), 400, 'an API body cut short with SHUT_WR: 400') or diag $got;
}

# an answer given before the body is read says Connection: close (the connection
# cannot carry another request), so that a keep-alive client does not reuse it
{
  my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die;
  print $s "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 200000\r\n\r\n" . ('q' x 200000);
  my $got = read_all($s, 15);
  is(status_of($got), 401, 'an upload without a token: 401 before the body is read');
  like($got, qr/\r\nConnection: close\r\n/i, '... with Connection: close') or diag substr($got, 0, 400);
}

# --- 9. invalid JSON to an RPC: 400 PGRST102 -------------------------------------
{
  for my $body ('{"a": 1, "b":', '{', 'nope', '{"a":1}}') {
    my $r = req(POST => '/rpc/gw_add', { 'Content-Type' => 'application/json' }, $body);
    is_deeply([$r->{status}, $r->{json}{code}, $r->{json}{message}], [400, 'PGRST102', 'Empty or invalid json'],
      "invalid JSON '$body' to an RPC: 400 PGRST102") or diag $r->{content};
  }
  my $r = req(POST => '/rpc/no_such_function', { 'Content-Type' => 'application/json' }, '{"a":');
  is($r->{status}, 400, 'invalid JSON to an unknown function: 400 too (the body is read first, as PostgREST does)');
  $r = req(POST => '/rpc/gw_add', {}, { a => 1, b => 2 });
  is_deeply([$r->{status}, $r->{content}], [200, '3'], 'valid JSON still works');
  $r = req(POST => '/rpc/gw_echo', { 'Content-Type' => 'application/json' }, '[1,2');
  is($r->{status}, 400, 'invalid JSON to a function of one json parameter: 400');
  $r = req(POST => '/gw_items', { 'Content-Type' => 'application/json' }, '{"id":');
  is_deeply(code2($r), [400, 'PGRST102'], 'invalid JSON to a table: 400 PGRST102');
}

# --- 8. the access log never holds a token -------------------------------------
{
  my $lport = $ENV{PGPOD_HTTP_PORT} + 21;
  my $log = "$ENV{PGPOD_DIR}/log/gw-access-$$.log";
  my $pid = fork // die;
  if (!$pid) {
    open STDERR, '>', $log or exit 127;
    @ENV{qw(PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS PGPOD_GATEWAY_POOL PGPOD_ACCESS_LOG)} = ($lport, 1, 1, 1);
    exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
  }
  my $http = HTTP::Tiny->new(timeout => 10);
  my $base = "http://127.0.0.1:$lport";
  my $ok = eval { wait_until('the access-logging gateway', 20, sub { $http->get("$base/health")->{status} == 200 }) };
  ok($ok, 'a gateway with PGPOD_ACCESS_LOG=1 runs');
  my $jwt = $tok{a};
  my (%seen, @urls);
  @urls = ("/files/00000000-0000-0000-0000-000000000000?my_access_token=1&access_token=$jwt",
           "/files/00000000-0000-0000-0000-000000000000?a=1&access_token=$jwt&access_token=$jwt",
           "/rooms/00000000-0000-0000-0000-000000000000/events?x=access_token%3D&%61ccess_token=$jwt",
           "/gw_items?select=id&access_token=$jwt&limit=1",
           "/gw_items?limit=1&" . ('p=1&' x 200) . "access_token=$jwt");
  $http->get("$base$_") for @urls;
  $http->get("$base/gw_items?limit=1", { headers => { Authorization => "Bearer $jwt" } });
  wait_until('the log lines', 10, sub { my $n = () = (do { local (@ARGV, $/) = $log; <> } // '') =~ /gw_items|files|rooms/g; $n >= @urls });
  kill 'TERM', $pid;
  waitpid($pid, 0);
  my $text = do { local (@ARGV, $/) = $log; <> } // '';
  my ($sig) = $jwt =~ /\.([^.]+)$/;
  ok(index($text, $sig) < 0, 'no token signature in the access log') or diag $text;
  ok(index($text, (split /\./, $jwt)[1]) < 0, 'no token claims in the access log');
  like($text, qr/my_access_token=1/, 'other parameters are logged as they came');
  like($text, qr/access_token=\(redacted\)/, 'the token is replaced by (redacted)');
  unlink $log;
}

done_testing();
