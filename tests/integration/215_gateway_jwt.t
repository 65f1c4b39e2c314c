#!/usr/bin/perl
# Bearer tokens at the HTTP level (gateway/postgrest/jwt.c): good tokens beside bad
# ones, each bad one answered 401 with PostgREST's code and message and
# WWW-Authenticate: Bearer error="invalid_token": alg none, another algorithm
# (properly signed with it), a bad signature, expired, not yet valid, malformed,
# duplicate claims; and a token whose session was revoked, refused by the database.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use Digest::SHA qw(hmac_sha256 hmac_sha512);
use GwTest;

fixture();
my $secret = pack('H*', psql("SELECT encode(pod.jwt_secret(), 'hex')"));
sub signed {
  my ($header, $payload, $mac) = @_;
  my $hp = b64url($header) . '.' . b64url($payload);
  return "$hp." . b64url(($mac // \&hmac_sha256)->($hp, $secret));
}
sub whoami { req(GET => '/rpc/gw_whoami', { Authorization => "Bearer $_[0]" }) }

my $hs = '{"alg":"HS256","typ":"JWT"}';
my $r = whoami(signed($hs, '{"role":"pgpod_user","exp":' . (time + 60) . '}'));
is($r->{status}, 200, 'a good token: 200');
is($r->{json}{role}, 'pgpod_user', '... its role claim is the role');
$r = whoami(signed('{"typ":"JWT","alg":"HS256","kid":"k1"}', '{"role":"pgpod_user","exp":' . (time - 20) . '}'));
is($r->{status}, 200, 'a good token expired within the 30 s of skew: 200');

my @bad = (
  ['alg none', b64url('{"alg":"none"}') . '.' . b64url('{"role":"pgpod_admin"}') . '.', 'PGRST301',
   'Wrong or unsupported encoding algorithm'],
  ['HS512, signed with the secret', signed('{"alg":"HS512"}', '{"role":"pgpod_admin"}', \&hmac_sha512), 'PGRST301',
   'Wrong or unsupported encoding algorithm'],
  ['RS256 header', signed('{"alg":"RS256"}', '{"role":"pgpod_admin"}'), 'PGRST301', 'Wrong or unsupported encoding algorithm'],
  ['a bad signature', signed($hs, '{"role":"pgpod_admin"}') =~ s/\.[^.]+$/.AAAA/r, 'PGRST301', 'JWSError JWSInvalidSignature'],
  ['signed with another key', do { my $hp = b64url($hs) . '.' . b64url('{"role":"pgpod_admin"}'); "$hp." . b64url(hmac_sha256($hp, 'another key')) },
   'PGRST301', 'JWSError JWSInvalidSignature'],
  ['expired', signed($hs, '{"role":"pgpod_user","exp":' . (time - 100) . '}'), 'PGRST303', 'JWT expired'],
  ['not yet valid', signed($hs, '{"role":"pgpod_user","nbf":' . (time + 100) . '}'), 'PGRST301', 'JWT not yet valid'],
  ['two parts', b64url($hs) . '.' . b64url('{}'), 'PGRST301', 'Expected 3 parts in JWT; got 2'],
  ['a header that is no JSON', b64url('nope') . '.' . b64url('{}') . '.x', 'PGRST301', 'Invalid JWS header'],
  ['a duplicate role claim', signed($hs, '{"role":"pgpod_user","role":"pgpod_admin"}'), 'PGRST301',
   'JWT claims are not a JSON object'],
  ['a role that is no string', signed($hs, '{"role":["pgpod_admin"]}'), 'PGRST301', "The JWT 'role' claim must be a string"],
);
for my $b (@bad) {
  my ($what, $token, $code, $message) = @$b;
  $r = whoami($token);
  is_deeply([$r->{status}, $r->{json}{code}, $r->{json}{message}], [401, $code, $message], "$what: 401 $code $message");
  like($r->{headers}{'www-authenticate'} // '', qr/^Bearer error="invalid_token"/, '... with WWW-Authenticate');
}

# a token from /rpc/login stops working when its session is revoked
my $email = "jwt-$$-" . int(rand(1e9)) . '@example.org';
req(POST => '/rpc/register', {}, { email => $email, password => 'correct horse battery' });
my $tok = req(POST => '/rpc/login', {}, { email => $email, password => 'correct horse battery' })->{json}{token};
is(req(GET => '/me?select=email', { Authorization => "Bearer $tok" })->{status}, 200, 'a login token reads /me');
is(req(POST => '/rpc/logout', { Authorization => "Bearer $tok" }, {})->{status}, 200, 'logout');
$r = req(GET => '/me?select=email', { Authorization => "Bearer $tok" });
is_deeply([$r->{status}, $r->{json}{message}], [401, 'session has ended'], 'the revoked session: 401');

done_testing();
