#!/usr/bin/perl
# Uploads and downloads through the gateway: POST /upload streams to the store with
# SHA-256, registers the file for the uploader; GET /files/<id> serves it under
# RLS with ETag, single ranges (byte-exact, several clients at once) and 416/304;
# 401/413/broken uploads leave nothing behind.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use GwTest;

fixture();
my $store = $ENV{PGPOD_STORE_DIR} // "$ENV{PGPOD_DIR}/store";
sub tmp_files { opendir(my $d, "$store/tmp") or return 0; scalar grep { !/^\./ } readdir $d }

my $tag = "$$-" . int(rand(1e9));
my %tok;
for my $who (qw(a b)) {
  my $email = "gw-$who-$tag\@example.org";
  my $r = req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
  is($r->{status}, 200, "register user $who") or diag $r->{content};
  $r = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' });
  ok($tok{$who} = $r->{json}{token}, "login user $who returns a token");
}
my %a = (Authorization => "Bearer $tok{a}");

my $data = join '', map { chr(int(rand(256))) } 1 .. 300_000;
my $r = req(POST => '/upload?filename=data.bin', { 'Content-Type' => 'application/x-test' }, $data);
is($r->{status}, 401, 'upload without a token: 401');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/, '... with WWW-Authenticate');
is(tmp_files(), 0, '... and nothing left in the store\'s tmp');

$r = req(POST => '/upload?filename=data.bin', { %a, 'Content-Type' => 'application/x-test' }, $data);
is($r->{status}, 201, 'upload: 201') or diag $r->{content};
my $file = $r->{json};
is_deeply([$file->{size}, $file->{sha256}, $file->{filename_visible}, $file->{mime_type}],
  [300000, sha256_hex($data), 'data.bin', 'application/x-test'], 'file record: size, SHA-256, name, type');
my $hex = sha256_hex($data);
ok(-f "$store/blobs/" . substr($hex, 0, 2) . "/$hex", 'blob stored under blobs/<2 hex>/<64 hex>');
is(tmp_files(), 0, 'temporary file moved away');

$r = req(GET => "/files/$file->{id}", {%a});
ok($r->{status} == 200 && $r->{content} eq $data, 'download is byte-exact');
is($r->{headers}{etag}, "\"$hex\"", 'ETag is the SHA-256');
is($r->{headers}{'accept-ranges'}, 'bytes', 'Accept-Ranges');
is($r->{headers}{'content-type'}, 'application/x-test', 'Content-Type from the record');
for my $case (['bytes=100-199', 100, 100], ['bytes=-10', 299990, 10], ['bytes=299990-', 299990, 10],
              ['bytes=0-0', 0, 1], ['bytes=299000-999999', 299000, 1000]) {
  my ($range, $start, $len) = @$case;
  $r = req(GET => "/files/$file->{id}", { %a, Range => $range });
  ok($r->{status} == 206 && $r->{content} eq substr($data, $start, $len)
     && $r->{headers}{'content-range'} eq "bytes $start-" . ($start + $len - 1) . "/300000", "Range $range: 206, exact bytes");
}
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=300000-' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}], [416, 'bytes */300000'], 'unsatisfiable range: 416');
$r = req(GET => "/files/$file->{id}", { %a, 'If-None-Match' => "\"$hex\"" });
is($r->{status}, 304, 'If-None-Match: 304');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=0-9', 'If-Range' => '"other"' });
is($r->{status}, 200, 'If-Range of another version: the whole file');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=0-9', 'If-Range' => "\"$hex\"" });
is_deeply([$r->{status}, $r->{headers}{'content-range'}, $r->{content}], [206, 'bytes 0-9/300000', substr($data, 0, 10)],
  'If-Range with the ETag: the range');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=0-9', 'If-Range' => "W/\"$hex\"" });
is($r->{status}, 200, 'If-Range with a weak ETag never matches: the whole file');

# several ranges: 206 multipart/byteranges, parts in order with their own headers
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=299990-, 0-9,1000-1009' });
my ($boundary) = ($r->{headers}{'content-type'} // '') =~ m{^multipart/byteranges; boundary=(\S+)$};
ok($r->{status} == 206 && $boundary, 'several ranges: 206 multipart/byteranges with a boundary');
ok(!exists $r->{headers}{'content-range'}, '... and no Content-Range of the whole');
my $want = join('', map { my ($s, $l) = @$_;
    "\r\n--$boundary\r\nContent-Type: application/x-test\r\nContent-Range: bytes $s-" . ($s + $l - 1) . "/300000\r\n\r\n" . substr($data, $s, $l) }
  [0, 10], [1000, 10], [299990, 10]) . "\r\n--$boundary--\r\n";
ok(defined $boundary && $r->{content} eq $want, '... parts sorted, each with Content-Type and Content-Range, byte-exact');
is($r->{headers}{'content-length'}, length($want), '... Content-Length of the whole body');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=0-99,50-149' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}, $r->{content}], [206, 'bytes 0-149/300000', substr($data, 0, 150)],
  'overlapping ranges are coalesced into one');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=400000-,0-4' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}, $r->{content}], [206, 'bytes 0-4/300000', substr($data, 0, 5)],
  'an unsatisfiable range among others is dropped');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=400000-,500000-500001' });
is_deeply([$r->{status}, $r->{headers}{'content-range'}], [416, 'bytes */300000'], 'no satisfiable range: 416 bytes */size');
$r = req(GET => "/files/$file->{id}", { %a, Range => 'bytes=0-1,junk' });
ok($r->{status} == 200 && $r->{content} eq $data, 'a malformed range set is ignored: the whole file');
$r = req(GET => "/files/$file->{id}", { %a, Range => join(',', 'bytes=0-0', map { ($_ * 1000) . '-' . ($_ * 1000) } 1 .. 64) });
is($r->{status}, 200, 'more than 64 ranges: the whole file');
$r = req(HEAD => "/files/$file->{id}", { %a, Range => 'bytes=0-9,1000-1009' });
ok($r->{status} == 206 && ($r->{headers}{'content-type'} // '') =~ m{^multipart/byteranges} && ($r->{content} // '') eq '',
  'HEAD with several ranges: the head only');

# several clients at once, each a different range
my @kids;
for my $i (0 .. 5) {
  my $pid = fork // die;
  if (!$pid) {
    my $start = $i * 50_000;
    my $got = HTTP::Tiny->new->get(url() . "/files/$file->{id}", { headers => { %a, Range => "bytes=$start-" . ($start + 49_999) } });
    exit($got->{status} == 206 && $got->{content} eq substr($data, $start, 50_000) ? 0 : 1);
  }
  push @kids, $pid;
}
my $bad = 0;
for (@kids) { waitpid($_, 0); $bad++ if $? }
is($bad, 0, 'six concurrent range downloads are byte-exact');

$r = req(GET => "/files/$file->{id}", { Authorization => "Bearer $tok{b}" });
is($r->{status}, 404, 'another user cannot download it (RLS)');
$r = req(GET => "/files/$file->{id}");
is($r->{status}, 404, 'anonymous cannot download it (404: only files of published videos are public, as for other users under RLS)');
$r = req(GET => "/files/not-a-uuid", {%a});
is($r->{status}, 400, 'malformed file id: 400');

# A <video src> or a WebSeed sends no Authorization header: the token may come as
# access_token in the query (RFC 6750 2.3); what is cached is who it says, not the URL.
$r = req(GET => "/files/$file->{id}?access_token=$tok{a}", { Range => 'bytes=1000-1999' });
ok($r->{status} == 206 && $r->{content} eq substr($data, 1000, 1000), 'access_token in the query: 206, exact bytes')
  or diag "$r->{status} $r->{content}";
$r = req(GET => "/files/$file->{id}");
is($r->{status}, 404, 'anonymous right after it still cannot download (the cache is per verified caller)');
$r = req(GET => "/files/$file->{id}?access_token=$tok{b}");
is($r->{status}, 404, 'access_token of another user: 404 (RLS)');
$r = req(GET => "/files/$file->{id}?access_token=not.a.jwt");
is_deeply([$r->{status}, $r->{json}{code}], [401, 'PGRST301'], 'a bad access_token: 401 PGRST301');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer error="invalid_token"/, '... with WWW-Authenticate');
$r = req(GET => "/files/$file->{id}?access_token=");
is($r->{status}, 401, 'an empty access_token: 401, not anonymous');
$r = req(GET => "/files/$file->{id}?access_token=$tok{a}", {%a});
is($r->{status}, 400, 'a token both in the header and in the query: 400');

$r = req(POST => '/upload', { %a, 'Content-Disposition' => 'attachment; filename="again.bin"' }, $data);
is_deeply([$r->{status}, $r->{json}{sha256}, $r->{json}{filename_visible}], [201, $hex, 'again.bin'],
  'same content again: a new record over the same blob, name from Content-Disposition');

# oversize and broken uploads leave nothing behind
my $out = raw_request("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok{a}\r\nContent-Length: 99999999999999\r\n\r\nxx", 10);
like($out, qr/^HTTP\/1\.1 413 /, 'declared size over PGPOD_UPLOAD_MAX: 413');
my ($host, $port) = url() =~ m{//([^:/]+):(\d+)};
my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die;
print $s "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok{a}\r\nContent-Length: 100000\r\n\r\n" . ('z' x 5000);
wait_until('the partial upload to reach the store', 10, sub { tmp_files() > 0 });
close $s;
wait_until('the broken upload to be removed', 10, sub { tmp_files() == 0 });
pass('a broken upload leaves no temporary file');
my $zhex = sha256_hex('z' x 5000);
ok(!-e "$store/blobs/" . substr($zhex, 0, 2) . "/$zhex", '... and no blob');

# a streamed (chunked) upload that grows past PGPOD_UPLOAD_MAX, on a gateway of our own
my $own_store = "$ENV{PGPOD_DIR}/gw-upload-limit-$$";
mkdir $own_store;
my $oport = do { my $l = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die; my $p = $l->sockport; close $l; $p };
my $gpid = fork // die;
END { kill 'TERM', $gpid if $gpid }   # never leave our gateway behind
if (!$gpid) {
  open STDERR, '>', '/dev/null';
  @ENV{qw(PGPOD_HTTP_PORT PGPOD_GATEWAY_WORKERS PGPOD_GATEWAY_POOL PGPOD_UPLOAD_MAX PGPOD_STORE_DIR)} = ($oport, 1, 2, 10000, $own_store);
  exec($ENV{PGPOD_GATEWAY_BIN} // "$ENV{PGPOD_TOP}/gateway/pgpod-gateway") or exit 127;
}
wait_until('the limited gateway to be healthy', 15, sub { HTTP::Tiny->new->get("http://127.0.0.1:$oport/health")->{status} == 200 });
my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $oport) or die;
print $c "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok{a}\r\nTransfer-Encoding: chunked\r\n\r\n";
print $c sprintf("%x\r\n%s\r\n", 4000, 'y' x 4000) for 1 .. 5;
my $ans = '';
while (sysread($c, my $buf, 4096)) { $ans .= $buf }
like($ans, qr/^HTTP\/1\.1 413 /, 'chunked upload growing past PGPOD_UPLOAD_MAX: 413');
sub own_tmp { opendir(my $od, "$own_store/tmp") or die; scalar grep { !/^\./ } readdir $od }
is(own_tmp(), 0, '... and its temporary file is already gone');
kill 'TERM', $gpid;
waitpid($gpid, 0);
system('rm', '-rf', $own_store);

done_testing();
