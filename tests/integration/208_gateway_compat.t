#!/usr/bin/perl
# PostgREST v12 behaviours found missing by a compatibility sweep of the gateway,
# each with bad inputs next to good ones: null filtering on embedded resources
# (embed=is.null / not.is.null, in or= too, PGRST120 otherwise), ...
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../gateway/testdata";
use Test::More;
use GwTest;

psql("GRANT USAGE ON SCHEMA pod TO pgpod_authenticator");
fixture();
my $user = token({ role => 'pgpod_user', sub => '11111111-1111-1111-1111-111111111111', exp => time + 600 });
my %auth = (Authorization => "Bearer $user");
my ($r);
sub code2 { [$_[0]{status}, $_[0]{json}{code}] }
sub err { my $r = shift; [$r->{status}, $r->{json}{code}, $r->{json}{message}, $r->{json}{details}, $r->{json}{hint}] }
sub names { [map { $_->{name} } @{ ref $_[0]{json} eq 'ARRAY' ? $_[0]{json} : [] }] }

# --- null filtering on embedded resources ----------------------------------------------
psql("INSERT INTO gw_private.projects VALUES (4, 'Mercury', NULL, false)");
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=is.null&order=id');
is_deeply([$r->{status}, $r->{json}], [200, [{ name => 'Mercury', gw_tasks => [] }]], 'embed=is.null: parents without children (anti-join)');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=not.is.null&order=id');
is_deeply(names($r), ['Apollo', 'Gemini'], 'embed=not.is.null: parents with children (as !inner)');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks.done=eq.true&gw_tasks=not.is.null&order=id', { Prefer => 'count=exact' });
is_deeply([$r->{json}, $r->{headers}{'content-range'}],
  [[{ name => 'Apollo', gw_tasks => [{ title => 'design' }] }, { name => 'Gemini', gw_tasks => [{ title => 'review, "quoted"' }] }], '0-1/2'],
  '... the embed\'s own filters count, and so does the total');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks.title=eq.build&gw_tasks=is.null&order=id');
is_deeply(names($r), ['Gemini', 'Mercury'], 'is.null with an embedded filter: no child passes it');
$r = req(GET => '/gw_projects?select=name,t:gw_tasks(title)&t=not.is.null&t.title=eq.build');
is_deeply([$r->{status}, $r->{json}], [200, [{ name => 'Apollo', t => [{ title => 'build' }] }]], 'by the embed\'s alias');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&or=(gw_tasks.is.null,id.eq.1)&order=id');
is_deeply(names($r), ['Apollo', 'Mercury'], 'inside or=');
$r = req(GET => '/gw_tasks?select=title,gw_projects(name)&gw_projects=is.null');
is_deeply([$r->{status}, $r->{json}], [200, [{ title => 'secret task', gw_projects => undef }]], 'a to-one embed (hidden by RLS counts as none)');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title,gw_labels(name))&gw_tasks.gw_labels=not.is.null&id=eq.2');
is_deeply($r->{json}, [{ name => 'Gemini', gw_tasks => [{ title => 'review, "quoted"', gw_labels => [{ name => 'blue' }] }] }],
  'on an embed inside an embed');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=eq.1');
is_deeply(err($r), [400, 'PGRST120', "Bad operator on the 'gw_tasks' embedded resource",
  'Only is null or not is null filters are allowed on embedded resources', undef], 'another operator: 400 PGRST120');
$r = req(GET => '/gw_projects?select=name&gw_tasks=is.null');
is_deeply(code2($r), [400, '42703'], 'an embed that is not selected is an unknown column');
$r = req(GET => '/gw_projects?select=name,gw_tasks(title)&gw_tasks=is.null;drop');
is($r->{status}, 400, 'a hostile value is refused');
psql("DELETE FROM gw_private.projects WHERE id = 4");

done_testing();
