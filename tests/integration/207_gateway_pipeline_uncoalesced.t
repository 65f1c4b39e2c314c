#!/usr/bin/perl
# 207_gateway_pipeline.t again with PGPOD_GATEWAY_COALESCE=0: several transactions
# in flight per connection, failures among them, with libpq's writes going out as
# libpq makes them (the test's own gateway inherits the setting).
use strict;
use warnings;
use FindBin;
$ENV{PGPOD_GATEWAY_COALESCE} = '0';
exec($^X, "$FindBin::Bin/207_gateway_pipeline.t") or die "exec: $!\n";
