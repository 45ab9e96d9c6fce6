#!/usr/bin/perl
# The battery's own plumbing: EventoTest::battery() writes a row that
# tools/battery-report turns into the table, and a failed row or a failed
# test file makes the report fail.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use EventoTest qw(battery);

my $top = EventoTest::top_dir();
my $dir = tempdir(CLEANUP => 1);
my $rows = "$dir/rows.tsv";
{
    # Rows written by a separate process, so this file's own TAP is untouched.
    local $ENV{EVENTODB_BATTERY_OUT} = $rows;
    my $code = q{use EventoTest qw(battery); use Test::More;
        battery('T99', "demo\trow", '3 ms', '<= 5 ms', 1);
        battery('T98', 'failing row', '9 ms', '<= 5 ms', 0); done_testing;};
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null'; open STDERR, '>&', \*STDOUT;
        exec $^X, "-I$top/t/lib", '-e', $code or POSIX::_exit(127);
    }
    waitpid $pid, 0;
}
open my $fh, '<', $rows or die "$rows: $!";
my @lines = <$fh>;
close $fh;
is(scalar @lines, 2, 'two rows written');
is($lines[0], "T99\tdemo row\t3 ms\t<= 5 ms\tPASS\n", 'tabs in a field are folded, verdict PASS');
like($lines[1], qr/\tFAIL\n\z/, 'a failed row says FAIL');

my $out = `$^X $top/tools/battery-report $rows 0`;
my $st = $? >> 8;
is($st, 1, 'a failed row fails the report');
like($out, qr/^T98\s+failing row\s+9 ms\s+<= 5 ms\s+FAIL$/m, 'table row for the failure');
like($out, qr/\n1 passed, 1 failed\n\z/, 'ends with the summary line');
like($out, qr/T98.*\n.*T99/s, 'rows sorted by id');

open $fh, '>', $rows or die; print {$fh} "T01\tok\t1\t1\tPASS\n"; close $fh;
$out = `$^X $top/tools/battery-report $rows 0`;
is($? >> 8, 0, 'all rows passed: report passes');
like($out, qr/\n1 passed, 0 failed\n\z/, 'summary 1 passed');
$out = `$^X $top/tools/battery-report $rows 1`;
is($? >> 8, 1, 'a test file that died fails the report even with all rows passing');
like($out, qr/\n1 passed, 1 failed\n\z/, 'and counts as a failure');

done_testing;
