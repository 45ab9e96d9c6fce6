#!/usr/bin/perl
# 120-profiling.t - the profiling workflow (issue 6; eventodb-profiling(7)):
#   - tools/profile-baseline with a 3 s load writes every file of a run,
#     each profile decodes (t/lib/PprofDecode.pm) and, when Go is
#     installed, `go tool pprof -top` reads it; the README summary has its
#     sections; the server it started is gone afterwards;
#   - interrupted (SIGINT to its process group, as Ctrl-C) it stops the
#     server and keeps the run as *-incomplete;
#   - tools/profile-compare on two real runs prints every section and a
#     verdict per indicator;
#   - on hand-made runs (results JSON, pprof files encoded here) its
#     percentages are exact, its verdicts and red flags follow the
#     original's thresholds, lists of runs are averaged, a run of failures
#     is INVALID (exit 1), and original-format results still compare.
# The three real runs go in parallel to keep the file under a minute.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Basename qw(dirname);
use IO::Compress::Gzip qw(gzip $GzipError);
use POSIX qw(WNOHANG);
use Time::HiRes ();
use EventoTest qw(json_decode);
use PprofDecode;

my $top = EventoTest::top_dir();
my $build = $ENV{EVENTODB_BUILDDIR} || ($ENV{EVENTODBD} ? dirname($ENV{EVENTODBD}) : $top);
my $BASELINE = "$top/tools/profile-baseline";
my $COMPARE = "$top/tools/profile-compare";
for my $b ("$build/eventodbd", "$build/evdump", "$build/evload") {
    plan skip_all => "$b not built" unless -x $b;
}
my $t = EventoTest->new(need => [qw(daemon pg)]);
my $dir = $t->dir;
my $GO = (grep { -x "$_/go" } split /:/, $ENV{PATH} // '')[0];

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; my $s = <$fh>; close $fh; return $s // '' }
sub spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh or die "$f: $!" }

# Start profile-baseline in its own process group; returns {pid, out, profiles}.
sub start_baseline {
    my ($name, %env) = @_;
    my $pdir = "$dir/$name";
    mkdir $pdir or die "$pdir: $!";
    my $out = "$dir/$name.out";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setpgid(0, 0);
        $ENV{$_} = $env{$_} for keys %env;
        $ENV{PROFILES_DIR} = $pdir;
        $ENV{BUILDDIR} = $build;
        delete @ENV{qw(DB_URL EVENTODB_DB_URL PORT EVLOAD_ARGS SERVER_ARGS CPU_SECONDS MIX WORKERS CLIENTS)};
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec $BASELINE or POSIX::_exit(127);
    }
    return { pid => $pid, out => $out, profiles => $pdir, name => $name };
}

sub wait_exit {
    my ($r, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs * EventoTest::mult();
    while (1) {
        my $w = waitpid $r->{pid}, WNOHANG;
        if ($w == $r->{pid}) { $r->{status} = $?; return 1 }
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', -$r->{pid};
            waitpid $r->{pid}, 0;
            $r->{status} = $?;
            return 0;
        }
        Time::HiRes::sleep(0.1);
    }
}

sub run_dirs { my ($p) = @_; opendir my $d, $p or return (); return sort grep { !/^\./ } readdir $d }

sub compare {
    my (@args) = @_;
    return $t->run_cmd([$^X, $COMPARE, @args], timeout => 60);
}

# ---------------------------------------------------------------- three real runs
my @files = qw(README.md heap-before.prof allocs-before.prof cpu.prof heap-after.prof allocs-after.prof
               workers.txt metrics.json load-test-results.json workers-before.txt metrics-before.json
               server-stats.json load.log server.log);
my @profiles = qw(heap-before.prof allocs-before.prof cpu.prof heap-after.prof allocs-after.prof);

my @runs = (start_baseline('run1', DURATION => '3s', SERVER_WORKERS => 1),
            start_baseline('run2', DURATION => '3s', SERVER_WORKERS => 1),
            start_baseline('intr', DURATION => '60s', SERVER_WORKERS => 1));
my $intr = $runs[2];

# Interrupt the third once its load runs: SIGINT to its process group.
{
    my $running = $t->wait_for(sub {
        my ($d) = run_dirs($intr->{profiles});
        return $d && -s "$intr->{profiles}/$d/load.log" && slurp("$intr->{profiles}/$d/load.log") =~ /writes \d+/;
    }, 60);
    ok($running, 'interrupt: the load of the third run is running');
    my ($d) = run_dirs($intr->{profiles});
    my $snap = $d ? eval { json_decode(slurp("$intr->{profiles}/$d/metrics-before.json")) } : undef;
    $intr->{master} = $snap ? $snap->{master}{pid} : undef;
    kill 'INT', -$intr->{pid};
    ok(wait_exit($intr, 60), 'interrupt: profile-baseline exits after SIGINT');
    is($intr->{status} >> 8, 130, 'interrupt: exit status 130') or diag slurp($intr->{out});
    ok($intr->{master} && !EventoTest::pid_alive($intr->{master}), 'interrupt: the server it started is gone');
    my @left = run_dirs($intr->{profiles});
    is(scalar(@left), 1, 'interrupt: one directory');
    like($left[0] // '', qr/^\d{8}_\d{6}(?:-\d+)?-incomplete$/, 'interrupt: the run is kept as *-incomplete');
}

my %run;
for my $r (@runs[0, 1]) {
    ok(wait_exit($r, 90), "$r->{name}: profile-baseline finishes") or diag slurp($r->{out});
    is($r->{status}, 0, "$r->{name}: exit status 0") or diag slurp($r->{out});
    my @d = run_dirs($r->{profiles});
    is(scalar(@d), 1, "$r->{name}: one run directory");
    like($d[0] // '', qr/^\d{8}_\d{6}(?:-\d+)?$/, "$r->{name}: named YYYYMMDD_HHMMSS");
    $run{ $r->{name} } = "$r->{profiles}/" . ($d[0] // 'none');
}

my $d1 = $run{run1};
{
    my $out = slurp($runs[0]{out});
    for my $f (@files) {
        ok(-s "$d1/$f", "run1: $f written");
    }
    for my $f (@profiles) {
        my $p = PprofDecode::load("$d1/$f");
        ok($p, "run1: $f decodes") or diag $PprofDecode::error;
        ok($p && @{ $p->{samples} }, "run1: $f has samples") if $f !~ /-before/;
    }
    my $res = eval { json_decode(slurp("$d1/load-test-results.json")) } || {};
    ok($res->{total_ops} > 0 && $res->{errors} == 0, 'run1: the load succeeded');
    ok(defined $res->{$_}, "run1: results key $_")
        for qw(avg_latency_ms duration_s errors ops_per_sec reads timestamp total_ops writes p99_latency_ms);
    like(slurp("$d1/workers.txt"), qr/^workers profile: total 1$/m, 'run1: workers.txt is the worker dump');
    my $m = eval { json_decode(slurp("$d1/metrics.json")) } || {};
    is($m->{format}, 'evdump-snapshot', 'run1: metrics.json is an evdump snapshot');
    ok(($m->{totals}{counters}{requests}{'stream.write'} // 0) >= $res->{writes},
       'run1: the server counted at least the writes evload saw succeed');
    my $readme = slurp("$d1/README.md");
    like($readme, qr/^## $_/m, "run1: README.md has a $_ section")
        for ('Load', 'Allocations during the load', 'CPU', 'Heap and workers', 'Files', 'Reading the profiles');
    like($readme, qr/ops\/s [\d,.]+ .*0 errors/, 'run1: README.md gives throughput and errors');
    like($out, qr/Top allocation sources|Allocations during the load/, 'run1: top allocation sources printed');
    like($out, qr/Top CPU sources|== CPU/, 'run1: top CPU sources printed');
    ok(!EventoTest::pid_alive($m->{master}{pid}), 'run1: the server was stopped');
    ok(!-e "/dev/shm/eventodbd.$m->{master}{port}", 'run1: its segment is gone');
  SKIP: {
        skip 'go not installed: go tool pprof not checked', scalar @profiles unless $GO;
        for my $f (@profiles) {
            my $r = $t->run_cmd(["$GO/go", 'tool', 'pprof', '-top', "$d1/$f"], timeout => 120,
                                env => { HOME => $dir, GOCACHE => "$dir/gocache", PPROF_TMPDIR => $dir });
            ok($r->{exit} == 0 && $r->{stdout} =~ /^Type: \w+/m, "go tool pprof -top $f")
                or diag $r->{stdout}, $r->{stderr};
        }
    }
}

# ---------------------------------------------------------------- compare two real runs
{
    my $r = compare($run{run1}, $run{run2});
    is($r->{exit}, 0, 'profile-compare of two runs: exit 0') or diag $r->{stdout}, $r->{stderr};
    for my $s ('Throughput', 'Latency', 'Allocations during the load', 'CPU', 'Heap growth during each run',
               'Workers and connections', 'Verdicts', 'Red flags') {
        like($r->{stdout}, qr/^== \Q$s\E/m, "compare prints the $s section");
    }
    for my $v ('throughput', 'latency \(mean\)', 'latency \(p99\)', 'allocations', 'allocated bytes', 'CPU') {
        like($r->{stdout}, qr/^  $v\s+[-+][\d.]+ %\s+(GOOD|NOT MET|WORSE)\b/m, "a verdict for $v");
    }
    like($r->{stdout}, qr/^  ops\/s\s+[\d,.]+\s+[\d,.]+\s+[-+]\d+\.\d\d %$/m, 'throughput change to two decimals');
    like($r->{stdout}, qr/top functions by delta of bytes per op/, 'allocation deltas by function');
    like($r->{stdout}, qr/top functions by delta of CPU per op/, 'CPU deltas by function');
    like($r->{stdout}, qr/^  busiest worker, % of requests\s+(?:n\/a|\d+\.\d %)\s+(?:n\/a|\d+\.\d %)/m,
         'the share of the busiest worker');
    my $u = compare($run{run1});
    is($u->{exit}, 2, 'one directory only: usage error, exit 2');
    $u = compare($run{run1}, "$dir/no-such-run");
    is($u->{exit}, 2, 'a missing directory: exit 2');
    like($u->{stderr}, qr/no such directory/, 'and says so');
}

# ---------------------------------------------------------------- synthetic runs
# A minimal pprof encoder (profile.proto field numbers).
sub varint { my ($v) = @_; my $s = ''; do { my $b = $v & 0x7f; $v >>= 7; $s .= chr($b | ($v ? 0x80 : 0)) } while $v; $s }
sub fld { my ($n, $v) = @_; return varint($n * 8) . varint($v) }
sub msg { my ($n, $b) = @_; return varint($n * 8 + 2) . varint(length $b) . $b }
sub packed { my ($n, @v) = @_; return msg($n, join '', map { varint($_) } @v) }

# pprof(types => [[type, unit]...], samples => [[fn name, values...]], duration_ns)
sub pprof {
    my (%o) = @_;
    my @str = ('');
    my %ix;
    my $s = sub { my $x = shift; $ix{$x} //= do { push @str, $x; $#str } };
    my $buf = q{};
    $buf .= msg(1, fld(1, $s->($_->[0])) . fld(2, $s->($_->[1]))) for @{ $o{types} };
    my (%fid, $n);
    for my $smp (@{ $o{samples} }) {
        my ($fn, @v) = @$smp;
        my $id = $fid{$fn} //= ++$n;
        $buf .= msg(2, packed(1, $id) . packed(2, @v));
    }
    for my $fn (sort { $fid{$a} <=> $fid{$b} } keys %fid) {
        $buf .= msg(4, fld(1, $fid{$fn}) . msg(4, fld(1, $fid{$fn})));
        $buf .= msg(5, fld(1, $fid{$fn}) . fld(2, $s->($fn)));
    }
    $buf .= fld(10, $o{duration_ns}) if $o{duration_ns};
    my $body = join '', map { msg(6, $_) } @str;
    my $raw = $buf . $body;
    my $gz;
    gzip(\$raw => \$gz) or die $GzipError;
    return $gz;
}

my @ALLOC = (types => [[qw(alloc_objects count)], [qw(alloc_space bytes)], [qw(inuse_objects count)], [qw(inuse_space bytes)]]);

# synth(name, %o): a run directory from figures.
sub synth {
    my ($name, %o) = @_;
    my $d = "$dir/synth/$name";
    system('mkdir', '-p', $d) == 0 or die;
    my %res = (ops_per_sec => $o{ops}, total_ops => $o{total}, writes => int($o{total} * 10 / 11),
               reads => $o{total} - int($o{total} * 10 / 11), errors => $o{errors} // 0, duration_s => 30,
               avg_latency_ms => $o{mean}, timestamp => '2026-11-26T10:00:00Z');
    if (!$o{original}) {
        %res = (%res, p50_latency_ms => $o{p50}, p99_latency_ms => $o{p99},
                config => { workers => 10, mix => 'rw', duration_s => 30 });
    }
    spew("$d/load-test-results.json", EventoTest::json_encode(\%res));
    return $d if $o{original};
    # allocations: before = what start-up allocated; after = before + the load's
    my $before = [['startup_fn', 100, 4096, 0, 0]];
    spew("$d/allocs-before.prof", pprof(@ALLOC, samples => $before));
    spew("$d/allocs-after.prof", pprof(@ALLOC, samples => [@$before, map { [$_->[0], $_->[1], $_->[2], 0, 0] } @{ $o{allocs} }]));
    spew("$d/heap-before.prof", pprof(@ALLOC, samples => [['kept', 0, 0, 10, $o{heap}[0]]]));
    spew("$d/heap-after.prof", pprof(@ALLOC, samples => [['kept', 0, 0, 20, $o{heap}[1]]]));
    spew("$d/cpu.prof", pprof(types => [[qw(samples count)], [qw(cpu nanoseconds)]],
                              samples => [map { [$_->[0], $_->[1] / 1e7, $_->[1]] } @{ $o{cpu} }],
                              duration_ns => 10e9));
    spew("$d/server-stats.json", EventoTest::json_encode({ cpu_s => $o{cpu_s}, rss_per_worker_bytes => 8e6 }));
    my $w = "workers profile: total 2\n";
    for my $i (0, 1) {
        $w .= "worker $i: pid " . (100 + $i) . ", gen 1, slot $i, state ready for 30 s\n"
            . "#\tconnections open " . ($i ? $o{conns} // 0 : 0) . ": reading 0, handling 0, writing 0, idle 0; "
            . "db pool 4 open, 0 busy, 0 queued\n";
    }
    spew("$d/workers.txt", $w);
    if ($o{reqs}) {    # requests per worker, from the snapshots before and after
        my $snap = sub { EventoTest::json_encode({ workers => [map { { pid => 100 + $_, counters => {
                             http_requests => { rpc => $_[0][$_], health => 1 } } } } 0, 1] }) };
        spew("$d/metrics-before.json", $snap->([0, 0]));
        spew("$d/metrics.json", $snap->($o{reqs}));
    }
    spew("$d/workers-before.txt", $w =~ s/connections open \d+/connections open 0/gr);
    return $d;
}

my $MB = 1024 * 1024;
my $base = synth('base', ops => 10304, total => 300_000, mean => 0.97, p50 => 0.80, p99 => 2.00,
    allocs => [['parse_fn', 10_000, 1_000_000], ['encode_fn', 5_000, 500_000]],		# 15,000 obj, 1.5 MB
    heap => [10 * $MB, 11 * $MB], cpu => [['hot_fn', 2e9], ['loop_fn', 1e9]], cpu_s => 30, reqs => [160_000, 160_000]);
my $opt = synth('opt', ops => 11062, total => 320_000, mean => 0.90, p50 => 0.80, p99 => 2.20,
    allocs => [['parse_fn', 3_000, 460_000], ['encode_fn', 5_000, 500_000]],		# 8,000 obj, 0.96 MB
    heap => [10 * $MB, 30 * $MB], cpu => [['hot_fn', 2e9], ['loop_fn', 1e9], ['new_fn', 0.5e9]],
    cpu_s => 35.2, conns => 3, reqs => [290_000, 10_000]);
{
    my $r = compare($base, $opt);
    my $o = $r->{stdout};
    is($r->{exit}, 0, 'synthetic: exit 0') or diag $o, $r->{stderr};
    # (11062 - 10304) / 10304 = +7.3564 %: the original's bc printed 7.00
    like($o, qr/^  ops\/s\s+10,304\.00\s+11,062\.00\s+\+7\.36 %$/m, 'throughput +7.36 % (not truncated to 7.00)');
    like($o, qr/^  mean\s+0\.970\s+0\.900\s+-7\.22 %$/m, 'mean latency -7.22 %');
    like($o, qr/^  p50\s+0\.800\s+0\.800\s+\+0\.00 %$/m, 'p50 unchanged');
    like($o, qr/^  p99\s+2\.000\s+2\.200\s+\+10\.00 %$/m, 'p99 +10.00 %');
    like($o, qr/^  bytes per op\s+5\.0\s+3\.0\s+-40\.00 %$/m, 'bytes per op 5 -> 3: -40.00 %');
    like($o, qr/^  objects per op\s+0\.050\s+0\.025\s+-50\.00 %$/m, 'objects per op -50.00 %');
    like($o, qr/^  bytes\s+1\.43 MiB\s+937\.50 KiB\s+-36\.00 %$/m, 'load-window bytes (after - before) -36.00 %');
    like($o, qr/^\s+3\.3\s+1\.4\s+-1\.9\s+-56\.88%\s+-0\.0240\s+parse_fn$/m,
         'parse_fn leads the allocation deltas: 3.33 -> 1.44 B/op, -0.024 objects/op');
    like($o, qr/^  CPU us per op\s+100\.00\s+110\.00\s+\+10\.00 %$/m, 'CPU per op from server-stats: +10.00 %');
    # hot_fn: 2 s of CPU in a 10 s window at 10304 and 11062 ops/s
    like($o, qr/^\s+19\.410\s+18\.080\s+-1\.330\s+66\.67%\s+57\.14%\s+hot_fn$/m,
         'CPU per op by function: hot_fn 19.410 -> 18.080 us/op, its share of the samples');
    like($o, qr/^\s+0\.000\s+4\.520\s+\+4\.520\s+0\.00%\s+14\.29%\s+new_fn$/m, 'new_fn appears in the CPU deltas');
    like($o, qr/^  throughput\s+\+7\.36 %\s+NOT MET\b/m, 'verdict: throughput +7.36 % is short of 10 %');
    like($o, qr/^  latency \(mean\)\s+-7\.22 %\s+GOOD\b/m, 'verdict: mean latency 7.22 % lower is GOOD');
    like($o, qr/^  latency \(p99\)\s+\+10\.00 %\s+WORSE\b/m, 'verdict: p99 10 % higher is WORSE');
    like($o, qr/^  allocations\s+-50\.00 %\s+GOOD\b/m, 'verdict: 50 % fewer objects per op is GOOD');
    like($o, qr/^  allocated bytes\s+-40\.00 %\s+GOOD\b/m, 'verdict: 40 % fewer bytes per op is GOOD');
    like($o, qr/^  CPU\s+\+10\.00 %\s+WORSE\b/m, 'verdict: CPU per op 10 % higher is a regression');
    like($o, qr/! new CPU hotspot: new_fn 14\.29 % of samples \(baseline 0\.00 %\)/, 'red flag: new CPU hotspot');
    like($o, qr/! optimized: heap-after is 20\.00 MiB above heap-before \(\+200\.00 %\)/, 'red flag: heap growth');
    unlike($o, qr/! baseline: heap-after/, 'no heap flag for 1 MiB of growth');
    like($o, qr/! optimized: 3 client connection\(s\) still open after the load/, 'red flag: connections left open');
    like($o, qr/^  workers\s+2\s+2\s*$/m, 'worker counts');
    like($o, qr/^  busiest worker, % of requests\s+50\.0 %\s+96\.7 %/m, 'the busiest worker\'s share of the requests');
    like($o, qr/! optimized: one worker served 97 % of the requests of 2 workers/, 'red flag: the load not spread');
    unlike($o, qr/! baseline: one worker served/, 'no flag for an even spread');
    like($o, qr/^  RSS per worker\s+7\.63 MiB\s+7\.63 MiB\s+\+0\.00 %$/m, 'memory per worker');

    my $same = compare($base, $base);
    like($same->{stdout}, qr/^== Red flags\n  none$/m, 'a run against itself: no red flag');
    like($same->{stdout}, qr/^  throughput\s+\+0\.00 %\s+NOT MET\b/m, 'and no throughput gain');

    # lists are averaged: ops/s (10304 + 12304) / 2 = 11304 against 11062: -2.14 %
    my $base2 = synth('base2', ops => 12304, total => 300_000, mean => 1.03, p50 => 0.80, p99 => 2.00,
        allocs => [['parse_fn', 10_000, 1_000_000], ['encode_fn', 5_000, 500_000]],
        heap => [10 * $MB, 11 * $MB], cpu => [['hot_fn', 2e9], ['loop_fn', 1e9]], cpu_s => 30);
    my $avg = compare("$base $base2", $opt);
    like($avg->{stdout}, qr/average of 2 runs/, 'a list of baselines is averaged');
    like($avg->{stdout}, qr/^  ops\/s\s+11,304\.00\s+11,062\.00\s+-2\.14 %$/m, 'averaged ops/s and its change');
    like($avg->{stdout}, qr/^  mean\s+1\.000\s+0\.900\s+-10\.00 %$/m, 'averaged mean latency');

    # a run of failures is invalid
    my $bad = synth('bad', ops => 14400, total => 1000, errors => 5000, mean => 0.5, p50 => 0.4, p99 => 1,
        allocs => [['parse_fn', 1, 1]], heap => [1, 1], cpu => [['hot_fn', 1e9]], cpu_s => 1);
    my $r2 = compare($base, $bad);
    is($r2->{exit}, 1, 'a run with 83 % failed requests: exit 1');
    like($r2->{stdout}, qr/optimized: 83\.33 % of requests failed \(5,000 errors\).*INVALID/, 'flagged INVALID');
    like($r2->{stdout}, qr/^RESULT: INVALID/m, 'and the result says so');

    # the original's results file (8 keys, no profiles) still compares
    my $orig = synth('orig', original => 1, ops => 10986, total => 329_586, mean => 0.91);
    my $r3 = compare($orig, $base);
    is($r3->{exit}, 0, "the original's results format: exit 0") or diag $r3->{stderr};
    like($r3->{stdout}, qr/^  ops\/s\s+10,986\.00\s+10,304\.00\s+-6\.21 %$/m, 'its throughput compares');
    like($r3->{stdout}, qr/^  p99\s+n\/a\s+2\.000\s+n\/a$/m, 'missing percentiles are n/a');
    like($r3->{stdout}, qr/^  allocations\s+n\/a\s+n\/a\b/m, 'missing profiles: verdict n/a');

    my $s = $t->run_cmd([$^X, $COMPARE, '--summary', $opt]);
    is($s->{exit}, 0, '--summary: exit 0');
    like($s->{stdout}, qr/937\.50 KiB in 8,000 objects; 3\.0 B and 0\.025 objects per op/, '--summary: load-window allocations');
    like($s->{stdout}, qr/^\s+0\.50s\s+14\.29%.*new_fn$/m, '--summary: CPU by function');
}

done_testing();
