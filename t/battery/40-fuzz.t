#!/usr/bin/perl
# 40-fuzz.t - T22 (reliability-security.md 6.3): the libFuzzer targets of
# t/fuzz, built with clang-14 and ASan + UBSan (make fuzz-build).  The
# corpora of t/fuzz/corpus are replayed through their targets (every
# input, including the regress-* inputs of bugs found so far; <= 60 s in
# all), then each target fuzzes on its own for 10 s (10 min with
# BATTERY_FULL=1; EVENTODB_FUZZ_SECONDS overrides), one at a time, under
# nice.  Any crash, leak, UB report, timeout (1 s) or OOM (512 MB) fails
# its row.  New inputs go to a scratch directory: the battery leaves the
# tree's corpus alone (make fuzz merges into it).
#
# Skipped, with the reason, when clang-14 or its libFuzzer runtime
# (libclang-rt-14-dev) is missing.  Row T22f runs the same targets under
# AFL++ (see the end of this file) when afl++ is installed.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time);
use File::Temp qw(tempdir);
use EventoTest qw(battery battery_full);

my $top = EventoTest::top_dir();
my $build = $ENV{EVENTODB_BUILDDIR} || $top;
my $cc = $ENV{FUZZ_CC} || 'clang-14';
my $secs = $ENV{EVENTODB_FUZZ_SECONDS} || (battery_full() ? 600 : 10);
my %title = (http => 'fuzz HTTP parser (http.c on a socketpair)',
             rpc => 'fuzz RPC envelope + argument validation',
             import => 'fuzz /import NDJSON line decoder',
             token => 'fuzz token parser + id/name validators',
             sse => 'fuzz /subscribe query decoder');
my %id = (http => 'T22a', rpc => 'T22b', import => 'T22c', token => 'T22d', sse => 'T22e');
my @targets = qw(http rpc import token sse);

plan skip_all => "$cc not found: install clang-14 libclang-rt-14-dev (llvm-14 for symbolized reports)"
    unless grep { -x "$_/$cc" } split /:/, $ENV{PATH} // '';
{
    my $out = `make -s -C '$build' fuzz-build FUZZ_CC='$cc' 2>&1`;
    if ($?) {
        plan skip_all => "$cc has no libFuzzer runtime: install libclang-rt-14-dev"
            if $out =~ /libclang_rt\.fuzzer|fsanitize=fuzzer.*not supported|cannot find .*clang_rt/;
        plan tests => 1;
        fail('make fuzz-build');
        diag($out);
        exit 0;
    }
}

$ENV{UBSAN_OPTIONS} = 'halt_on_error=1:print_stacktrace=1';
$ENV{ASAN_OPTIONS} = 'detect_leaks=1';
my $corpus = "$top/t/fuzz/corpus";
my $tmp = tempdir(CLEANUP => 1);
my @common = ('-rss_limit_mb=512', '-timeout=1', '-error_exitcode=77', '-timeout_exitcode=78');

# Run a fuzzer, output to a file; returns (exit status, output).
sub run_fuzzer {
    my ($t, @args) = @_;
    my $log = "$tmp/$t.log";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        exec 'nice', '-n', '10', "$build/t/fuzz/fuzz_$t", @common, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $st = $?;
    open my $fh, '<', $log or die "$log: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    return ($st, $out);
}

sub load_avg {
    open my $fh, '<', '/proc/loadavg' or return '?';
    my ($l) = split ' ', scalar <$fh>;
    return $l;
}

# The first lines of a sanitizer or libFuzzer report, for the figure and diag.
sub problem {
    my ($out) = @_;
    my @l = grep { /ERROR: |SUMMARY: |runtime error|^fuzz_\w+: |Test unit written/ } split /\n/, $out;
    return @l ? join(' | ', @l[0 .. ($#l < 3 ? $#l : 3)]) : 'exit status non-zero, no report';
}

# ---- replay
{
    my ($n, $bad, @why) = (0, 0);
    my $t0 = time;
    for my $t (@targets) {
        my @files = glob("$corpus/$t/*");
        $n += @files;
        my ($st, $out) = run_fuzzer($t, '-runs=0', "-artifact_prefix=$tmp/replay-$t-", "$corpus/$t");
        if ($st != 0) {
            $bad++;
            push @why, "$t: " . problem($out);
            diag("replay of corpus/$t failed:\n" . substr($out, -4000));
        }
    }
    my $el = time - $t0;
    battery('T22', 'fuzz corpus replay (' . scalar(@targets) . ' targets)',
        sprintf('%d inputs in %.1f s, %s', $n, $el, $bad ? 'FAILED: ' . join('; ', @why) : '0 crashes'),
        '0 crashes, leaks, UB; replay <= 60 s', !$bad && $el <= 60);
}

# ---- fuzzing, one target at a time
#
# A 1 s timeout on a loaded machine may be the scheduler (the fuzzer runs
# under nice beside other work): a timeout counts only if its input is
# slow again when replayed; otherwise the figure says so and fuzzing goes
# on for the rest of the time.
for my $t (@targets) {
    my $new = "$tmp/new-$t";
    mkdir $new or die "$new: $!";
    my @dict = -f "$top/t/fuzz/$t.dict" ? ("-dict=$top/t/fuzz/$t.dict") : ();
    my $maxlen = $t =~ /^(http|rpc)$/ ? 16384 : 4096;
    my ($execs, $rss, $cov, $spurious, $st, $out, @art) = (0, 0, '?', 0);
    my $end = time + $secs;
    while ((my $left = int($end - time + 0.5)) > 0) {
        ($st, $out) = run_fuzzer($t, @dict, "-max_len=$maxlen", "-max_total_time=$left",
            '-print_final_stats=1', "-artifact_prefix=$tmp/$t-", $new, "$corpus/$t");
        $execs += $1 if $out =~ /stat::number_of_executed_units:\s*(\d+)/;
        $rss = $1 if $out =~ /stat::peak_rss_mb:\s*(\d+)/ && $1 > $rss;
        my @cov = $out =~ /\bcov: (\d+)/g;
        $cov = $cov[-1] if @cov;
        @art = glob("$tmp/$t-*");
        my @to = grep { /-timeout-/ } @art;
        if ($st >> 8 == 78 && @to == 1 && @art == 1) {
            my ($rst) = run_fuzzer($t, '-runs=3', $to[0]);
            if ($rst == 0) {
                $spurious++;
                diag("fuzz_$t: a timeout that does not reproduce (load "
                    . load_avg() . "), going on");
                unlink $to[0];
                @art = ();
                next;
            }
        }
        last;
    }
    my $ok = defined $st && $st == 0 && !@art && $execs > 0;
    my $fig = sprintf('%d execs (%d/s) in %d s, cov %s, peak RSS %d MB, %s%s',
        $execs, $execs / ($secs || 1), $secs, $cov, $rss,
        $ok ? '0 crashes' : 'FAILED: ' . problem($out // ''),
        $spurious ? ", $spurious timeout(s) not reproduced (machine overloaded)" : '');
    battery($id{$t}, "$title{$t}", $fig, '0 crashes, leaks, timeouts, OOMs', $ok);
    if (!$ok) {
        diag("fuzz_$t output (tail):\n" . substr($out // '', -6000));
        for my $a (@art) {
            open my $fh, '<:raw', $a or next;
            local $/;
            my $bytes = <$fh>;
            diag("artifact $a (" . length($bytes) . " bytes, hex): " . unpack('H*', substr($bytes, 0, 2048)));
        }
    }
}

# ---- T22f: AFL++ as a second engine
#
# The same harnesses built by afl-clang-fast (make fuzz-afl-build: AFL++'s
# libFuzzer-compatible driver, persistent mode, test cases in shared
# memory; ASan + UBSan) and run by afl-fuzz through t/fuzz/fuzz-afl-run,
# one target at a time, under nice: 10 min each in the long tier
# (EVENTODB_FUZZ_SECONDS overrides), 2 s each in the fast tier, enough to
# catch a broken AFL++ build or driver.  Crashes are replayed through the
# libFuzzer builds (the report goes to diag), hangs count only if slow
# again under them, and afl-fuzz's queue is replayed through them for
# leaks.  Without afl++ the row's figure says SKIP and why (as other rows
# that miss a tool), so the table has the same rows on every machine.
{
    my $afl_cc = $ENV{FUZZ_AFL_CC} || 'afl-clang-fast';
    my $have = sub {
        my ($p) = @_;
        return -x $p if $p =~ m{/};
        return grep { -x "$_/$p" } split /:/, $ENV{PATH} // '';
    };
    my $asecs = battery_full() ? ($ENV{EVENTODB_FUZZ_SECONDS} || 600) : 2;
    my $what = 'AFL++ second engine (' . scalar(@targets) . ' targets)';
    my $pass = '0 crashes, hangs (1 s, reproduced), leaks (queue replay)';
  SKIP: {
        if (!($have->($afl_cc) && $have->('afl-fuzz'))) {
            battery('T22f', $what, 'SKIP: afl++ not installed (apt-get install afl++)', $pass, 1);
            last SKIP;
        }
        my $out = `make -s -C '$build' fuzz-afl-build FUZZ_AFL_CC='$afl_cc' 2>&1`;
        if ($?) {
            battery('T22f', $what, 'make fuzz-afl-build failed', $pass, 0);
            diag($out);
            last SKIP;
        }
        my $t0 = time;
        my $log = "$tmp/afl-run.log";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open STDOUT, '>', $log or POSIX::_exit(126);
            open STDERR, '>&', \*STDOUT;
            exec 'sh', "$top/t/fuzz/fuzz-afl-run", $top, $build, "@targets", $asecs, "$tmp/afl"
                or POSIX::_exit(127);
        }
        waitpid $pid, 0;
        my $st = $?;
        open my $fh, '<', $log or die "$log: $!";
        my $res = do { local $/; <$fh> };
        close $fh;
        my ($execs, $found, $crashes, $hangs, $spur, $bad, %seen) = (0, 0, 0, 0, 0, 0);
        for my $l (split /\n/, $res) {
            next unless $l =~ /^fuzz-afl-run: afl_(\w+): (\d+) execs .*\(\+(\d+)\).*crashes (\d+), hangs (\d+)( \((\d+) not reproduced\))?.* -> (\w+)$/;
            $seen{$1} = 1;
            $execs += $2;
            $found += $3;
            $crashes += $4;
            $hangs += $5;
            $spur += $7 // 0;
            $bad++ if $8 ne 'ok';
            note($l);
        }
        my $ok = $st == 0 && !$bad && (grep { $seen{$_} } @targets) == @targets;
        battery('T22f', $what,
            sprintf('%d s each: %d execs, +%d paths, %d crashes, %d hangs%s%s', $asecs, $execs,
                $found, $crashes, $hangs, $spur ? " ($spur not reproduced)" : '',
                $ok ? '' : ', FAILED (see diag)'),
            $pass, $ok);
        diag("fuzz-afl-run output:\n" . substr($res, -6000)) unless $ok;
        note(sprintf('T22f took %.0f s', time - $t0));
    }
}

done_testing;
