#!/usr/bin/perl
# Every integer a client sends, at and past the edges of 64 bits, against the
# harness's gateway (under make check its ASan/UBSan build, which aborts a worker
# on the first signed overflow and writes a report that fails the run): Range and
# offset/limit of reads and functions, Content-Range, Prefer: max-affected,
# Accept's q, Content-Length, byte ranges of /files, tus Upload-Length and
# Upload-Offset, Last-Event-ID. Each gets a result or a clear JSON error (416,
# 400, 413), never a 5xx or a lost connection, and the sanitizer stays silent.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use GwTest;

fixture();
my $bin = $ENV{PGPOD_GATEWAY_BIN} // '';
diag($bin =~ /asan/ ? "gateway under ASan/UBSan: $bin" : 'gateway without sanitizers (not make check)');
my $max = '9223372036854775807';
my $huge = '99999999999999999999';
my $rows = psql('SELECT count(*) FROM api.gw_items');

sub answer {
  my ($r, $status, $code, $what) = @_;
  is($r->{status}, $status, "$what: $status") or diag $r->{content};
  is($r->{json}{code}, $code, "... $code") if defined $code;
}

# Range and offset= of reads
my $r = req(GET => '/gw_items?select=id&order=id', { Range => "0-$max" });
answer($r, 200, undef, 'Range 0-<largest bigint> (b - a + 1 overflowed)');
is(scalar @{ $r->{json} // [] }, $rows, '... every row');
is($r->{headers}{'content-range'}, '0-' . ($rows - 1) . '/*', '... Content-Range of every row');
$r = req(GET => '/gw_items?select=id', { Range => "1-$max" });
answer($r, 200, undef, 'Range 1-<largest bigint>');
$r = req(GET => '/gw_items?select=id', { Range => "0-$huge" });
answer($r, 200, undef, 'a last row past 64 bits');
is(scalar @{ $r->{json} // [] }, $rows, '... means to the end');
$r = req(GET => '/gw_items', { Range => "$huge-" });
answer($r, 416, 'PGRST103', 'a first row past 64 bits');
like($r->{json}{details} // '', qr/past the last possible row/, '... says why');
$r = req(GET => '/gw_items?offset=999999999999999999', { Range => "$max-" });
answer($r, 416, 'PGRST103', 'offset= plus Range past the largest bigint (the sum overflowed)');
$r = req(GET => '/gw_items?offset=999999999999999999&limit=999999999999999999', { Range => "9223372036854775000-$max" });
answer($r, 416, 'PGRST103', '... with a limit too');
$r = req(GET => '/gw_items?offset=100', { Range => '9223372036854775707-', Prefer => 'count=exact' });
answer($r, 416, 'PGRST103', 'an offset that just fits, past the rows (counted)');
like($r->{json}{details} // '', qr/An offset of $max was requested, but there are only $rows rows/, '... with the total');
is($r->{headers}{'content-range'}, "*/$rows", '... and Content-Range */total');
$r = req(GET => '/gw_items?offset=100', { Range => '9223372036854775707-' });
answer($r, 200, undef, 'the same offset without a count');
is($r->{content}, '[]', '... no rows');
$r = req(GET => "/gw_items?limit=$huge");
answer($r, 400, 'PGRST100', 'limit past 64 bits');
$r = req(GET => "/gw_items?offset=$huge");
answer($r, 400, 'PGRST100', 'offset past 64 bits');
$r = req(GET => '/gw_items?offset=-1');
answer($r, 400, 'PGRST100', 'a negative offset');
$r = req(GET => '/gw_items?select=id', { Range => '5-3' });
answer($r, 416, 'PGRST103', 'a range ending before it starts');
$r = req(GET => "/gw_projects?select=id,gw_tasks(id)&gw_tasks.limit=999999999999999999&gw_tasks.offset=999999999999999999");
answer($r, 200, undef, 'an embed at the largest limit and offset the grammar takes');

# functions read by GET: the same page arithmetic
$r = req(GET => '/rpc/gw_words?t=a+b+c&offset=999999999999999999', { Range => "$max-" });
answer($r, 416, 'PGRST103', 'a function: offset= plus Range past the largest bigint');
$r = req(GET => '/rpc/gw_words?t=a+b+c', { Range => "0-$max" });
answer($r, 200, undef, 'a function: Range 0-<largest bigint>');

# Prefer and Accept
$r = req(DELETE => '/gw_items?id=eq.-1', { Authorization => 'Bearer ' . token({ role => 'pgpod_user' }),
  Prefer => "handling=strict, max-affected=$max" });
answer($r, 204, undef, 'max-affected of the largest bigint');
is($r->{headers}{'preference-applied'}, "handling=strict, max-affected=$max", '... echoed whole (was cut to 18 digits)');
$r = req(DELETE => '/gw_items?id=eq.-1', { Authorization => 'Bearer ' . token({ role => 'pgpod_user' }),
  Prefer => 'handling=strict, max-affected=-9223372036854775808' });
answer($r, 400, 'PGRST124', 'max-affected of the smallest bigint: even 0 rows exceed it');
$r = req(DELETE => '/gw_items?id=eq.-1', { Authorization => 'Bearer ' . token({ role => 'pgpod_user' }),
  Prefer => "handling=strict, max-affected=$huge" });
answer($r, 204, undef, 'max-affected past 64 bits: not applied');
$r = req(GET => '/gw_items?select=id', { Accept => 'text/csv;q=1e999, application/json;q=nan' });
answer($r, 200, undef, 'Accept with q=1e999 and q=nan');
like($r->{headers}{'content-type'} // '', qr{^text/csv}, '... the infinite q wins');

# Content-Length past LONG_MAX and past 64 bits
my $out = raw_request("POST /gw_items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9223372036854775808\r\n\r\n{}", 10);
like($out, qr{^HTTP/1\.1 413 }, 'Content-Length past LONG_MAX: 413 at once (was read as no length)');
$out = raw_request("POST /gw_items HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n{}", 10);
like($out, qr{^HTTP/1\.1 400 }, 'Content-Length past 64 bits: 400');

# byte ranges of /files and tus lengths and offsets, as a signed-in user
my $email = "hostile-$$-" . int(rand(1e9)) . '@example.org';
req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
my $tok = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
my %a = (Authorization => "Bearer $tok");
my $data = join('', map { chr(($_ * 7) % 256) } 0 .. 999);
$r = req(POST => '/upload?filename=ints.bin', { %a, 'Content-Type' => 'application/octet-stream' }, $data);
is($r->{status}, 201, 'a file to read ranges of') or diag $r->{content};
my $file = "/files/$r->{json}{id}";
my %ranges = ("bytes=0-$huge" => [206, $data], "bytes=-$huge" => [206, $data], "bytes=$huge-" => [416, undef],
  "bytes=$max-$max" => [416, undef], "bytes=990-$max" => [206, substr($data, 990)], "bytes=-$max" => [206, $data],
  "bytes=0-1,$huge-,5-$huge" => [206, undef]);
for my $h (sort keys %ranges) {
  my ($status, $body) = @{ $ranges{$h} };
  $r = req(GET => $file, { %a, Range => $h });
  is($r->{status}, $status, "/files with Range: $h: $status");
  is($r->{content}, $body, '... the right bytes') if defined $body;
}
my %tus = ('Tus-Resumable' => '1.0.0', %a);
$r = req(POST => '/uploads', { %tus, 'Upload-Length' => $huge });
answer($r, 400, undef, 'tus Upload-Length past 64 bits');
$r = req(POST => '/uploads', { %tus, 'Upload-Length' => $max });
answer($r, 413, undef, 'tus Upload-Length of the largest bigint: over Tus-Max-Size');
$r = req(POST => '/uploads', { %tus, 'Upload-Length' => '10' });
is($r->{status}, 201, 'a tus upload to patch') or diag $r->{content};
my $loc = $r->{headers}{location} // '';
$loc =~ s{^https?://[^/]+}{};
for my $off ($huge, $max, '-1') {
  $r = req(PATCH => $loc, { %tus, 'Upload-Offset' => $off, 'Content-Type' => 'application/offset+octet-stream' }, 'x');
  ok($r->{status} == 400 || $r->{status} == 409, "tus Upload-Offset $off: 400 or 409 (got $r->{status})");
}

# Last-Event-ID
my $room = req(POST => '/rooms', { %a, Prefer => 'return=representation' }, { name => 'ints', type => 'group' })->{json}[0]{id};
$out = raw_request("GET /rooms/$room/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok\r\nLast-Event-ID: $huge\r\nConnection: close\r\n\r\n", 5);
like($out, qr{^HTTP/1\.1 400 }, 'Last-Event-ID past 64 bits: 400');

# the gateway is still whole and said nothing
is(req(GET => '/health')->{status}, 200, 'the gateway still answers');
my @reports = glob("$ENV{PGPOD_DIR}/log/sanitizer.*");
is(scalar @reports, 0, 'no sanitizer report') or diag(`cat @reports`);

done_testing();
