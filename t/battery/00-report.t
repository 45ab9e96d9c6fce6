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
is(scalar @lines, 3, 'two rows written, and a line naming the failed file');
is($lines[0], "T99\tdemo row\t3 ms\t<= 5 ms\tPASS\t-e\n", 'tabs in a field are folded, verdict PASS, then the file');
like($lines[1], qr/\tFAIL\t-e\n\z/, 'a failed row says FAIL');
like($lines[2], qr/^#failed\t-e\tnot ok 2: T98 failing row/, 'the file\'s failed test, by number and name');

my $out = `$^X $top/tools/battery-report $rows 1`;
my $st = $? >> 8;
is($st, 1, 'a failed row fails the report');
like($out, qr/^FAIL T98 failing row: 9 ms \(pass: <= 5 ms\)\n(?:.*\n){2}1 passed, 1 failed\n\z/m,
    'the failed row is repeated among the last lines');
like($out, qr/^  -e: not ok 2: T98 failing row.*\n1 passed, 1 failed\n\z/m, 'the failed file is named just before the summary');
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

# A file that died (here without a row) names itself and what it died of.
{
    local $ENV{EVENTODB_BATTERY_OUT} = $rows;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null'; open STDERR, '>&', \*STDOUT;
        exec $^X, "-I$top/t/lib", '-e', q{use EventoTest; use Test::More; ok(1, 'fine'); die "lost the cluster\n";}
            or POSIX::_exit(127);
    }
    waitpid $pid, 0;
}
$out = `$^X $top/tools/battery-report $rows 1`;
like($out, qr/^  -e: died: lost the cluster\s*\n1 passed, 1 failed\n\z/m, 'a file that died is named with its message');

# A row the expected list gives to a file that ran, and that it did not
# write, fails the run; one from a file that skipped tests is a SKIP.
{
    my $exp = "$dir/expected";
    open my $eh, '>', $exp or die; print {$eh} "# comment\nT99 x.t\nT97 x.t\nT96 y.t\nT95 z.t\n"; close $eh;
    open $fh, '>', $rows or die;
    print {$fh} "T99\tok\t1\t1\tPASS\tx.t\n#skip\ty.t\tno tool here\n";
    close $fh;
    $out = `$^X $top/tools/battery-report $rows 0 /dev/null $exp t/battery/x.t t/battery/y.t`;
    is($? >> 8, 1, 'a missing row fails the report');
    like($out, qr/^FAIL T97 \(not reported by x\.t\): the row is missing/m, 'and is named');
    like($out, qr/^T96\s+\(not reported by y\.t\)\s+SKIP: the file skipped tests: no tool here\s+PASS$/m,
        'a row of a file that skipped tests is a SKIP');
    unlike($out, qr/T95/, 'rows of files that did not run are not expected');
    like($out, qr/\n2 passed, 1 failed\n\z/, 'counted');
}

# No line from the file (killed, say): prove's summary from its log instead.
open $fh, '>', $rows or die; print {$fh} "T01\tok\t1\t1\tPASS\n"; close $fh;
my $log = "$dir/prove.log";
open $fh, '>', $log or die;
print {$fh} "t/x.t .. ok\n\nTest Summary Report\n-------------------\nt/battery/77-x.t (Wstat: 9 (Signal: KILL) Tests: 4 Failed: 0)\n  Non-zero wait status: 9\nFiles=2, Tests=9\nResult: FAIL\n";
close $fh;
$out = `$^X $top/tools/battery-report $rows 1 $log`;
like($out, qr/^  t\/battery\/77-x.t \(Wstat: 9 \(Signal: KILL\).*\n    Non-zero wait status: 9\n1 passed, 1 failed\n\z/m,
    'prove\'s summary of the file names it');

done_testing;
