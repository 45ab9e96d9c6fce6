#!/usr/bin/perl
# 70-shm.t - the shared-memory segment (decisions.md 11, issue 4): one
# segment per instance, mode 0600, named after the port; after N requests
# of a kind evdump and /metrics show exactly N; counters keep counting
# when a worker is killed and replaced (its totals are folded into the
# retired totals, not lost); totals never go down while workers are
# killed under load; a crashing worker's report reaches the master's log;
# the segment is gone after shutdown, also after a start-up failure.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN pid_alive mult);

my $t = EventoTest->new;
my $d = $t->start(workers => 2);
my $name = $d->shm_name;
my $path = "/dev/shm$name";

# ---- the segment
is($name, '/eventodbd.' . $d->port, 'named after the port by default');
ok(-e $path, "segment $path exists");
is((stat $path)[2] & 07777, 0600, 'mode 0600');
is((stat $path)[4], (stat '/proc/' . $d->pid)[4], 'owned by the user eventodbd runs as');

sub snap { return $d->evdump_json }
ok($t->wait_for(sub {
    my $s = snap();
    return 2 == grep { $_->{state} eq 'ready' && $_->{alive} } @{ $s->{workers} };
}, 15), 'evdump: two workers ready') or diag($d->evdump('workers')->{stdout});
my $s0 = snap();
is($s0->{master}{pid}, $d->pid, 'master pid');
ok($s0->{master}{alive}, 'master alive');
is($s0->{master}{port}, $d->port, 'port');
is($s0->{master}{workers}, 2, 'configured workers');
ok($s0->{master}{publishing}, 'publishing');
like($s0->{layout}, qr/^1\.\d+$/, "layout $s0->{layout}");
my %wpid = map { $_->{worker} => $_->{pid} } @{ $s0->{workers} };
is_deeply([sort { $a <=> $b } values %wpid], [sort { $a <=> $b } values %{ $d->worker_pids }],
    'worker pids match the "worker N started" lines');
ok(!grep({ $_->{heartbeats} < 1 } @{ $s0->{workers} }) ||
   $t->wait_for(sub { !grep { $_->{heartbeats} < 1 } @{ snap()->{workers} } }, 5),
   'every worker beats');

# ---- exactly N
sub c { my ($s, $name, $label) = @_; my $v = $s->{totals}{counters}{$name}; return defined $label ? $v->{$label} // 0 : $v // 0 }
sub h { my ($s, $name, $label) = @_; my $v = $s->{totals}{histograms}{$name} // {}; $v = $v->{$label} // {} if defined $label; return $v->{count} // 0 }

sub metrics {
    my $r = $d->http('GET', '/metrics');
    my %m;
    for (split /\n/, $r->{content} // '') {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+(?:\{[^}]*\})?)\s+(\S+)$/ or next;
        $m{$k} = $v;
    }
    return ($r, \%m);
}

my ($N, $M, $K, $E) = (37, 11, 5, 3);
my $st;
my (undef, $m0) = metrics();
my $base = snap();
for (1 .. $N) { ($st) = $d->rpc_ka(ADMIN_TOKEN, 'sys.version'); die "sys.version: $st" unless $st == 200 }
for my $i (1 .. $M) { ($st) = $d->rpc(ADMIN_TOKEN, 'stream.write', 'shm-1', { type => 'T', data => { i => $i } }); die "write: $st" unless $st == 200 }
for (1 .. $K) { die unless $d->http('GET', '/no-such-path')->{status} == 404 }
for (1 .. $E) { ($st) = $d->rpc(ADMIN_TOKEN, 'no.such.method'); die "unknown method: $st" unless $st == 404 }
my $s1 = snap();
is(c($s1, 'requests', 'sys.version') - c($base, 'requests', 'sys.version'), $N, "requests{sys.version}: exactly $N more");
is(h($s1, 'request_duration', 'sys.version') - h($base, 'request_duration', 'sys.version'), $N,
    "request_duration{sys.version}: exactly $N more observations");
is(c($s1, 'requests', 'stream.write') - c($base, 'requests', 'stream.write'), $M, "requests{stream.write}: exactly $M more");
is(c($s1, 'requests', 'other') - c($base, 'requests', 'other'), $E, "requests{other} (unknown method): exactly $E more");
is(c($s1, 'http_requests', 'rpc') - c($base, 'http_requests', 'rpc'), $N + $M + $E, 'http_requests{rpc}');
is(c($s1, 'http_requests', 'other') - c($base, 'http_requests', 'other'), $K, 'http_requests{other}');
is(c($s1, 'errors', 'NOT_FOUND') - c($base, 'errors', 'NOT_FOUND'), $K, 'errors{NOT_FOUND}');
is(c($s1, 'errors', 'METHOD_NOT_FOUND') - c($base, 'errors', 'METHOD_NOT_FOUND'), $E, 'errors{METHOD_NOT_FOUND}');
is(c($s1, 'http_responses', '404') - c($base, 'http_responses', '404'), $K + $E, 'http_responses{404}');
is(c($s1, 'http_responses', '200') - c($base, 'http_responses', '200'), $N + $M, 'http_responses{200}');
cmp_ok(c($s1, 'db_queries') - c($base, 'db_queries'), '>=', 1, 'db_queries counted');
cmp_ok(c($s1, 'http_received_bytes') - c($base, 'http_received_bytes'), '>', ($N + $M + $E) * 20, 'bytes received counted');
cmp_ok(c($s1, 'http_sent_bytes') - c($base, 'http_sent_bytes'), '>', ($N + $M + $K + $E) * 50, 'bytes sent counted');
{
    my %sum;
    for my $w (@{ $s1->{workers} }) { $sum{$_} += $w->{counters}{requests}{$_} for keys %{ $w->{counters}{requests} } }
    is($sum{'sys.version'}, c($s1, 'requests', 'sys.version'), 'per-worker counters add up to the total');
}

my ($mr, $m1) = metrics();
is($mr->{status}, 200, 'GET /metrics: 200');
like($mr->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'Prometheus text format');
is($m1->{'eventodb_requests_total{method="sys.version"}'} - ($m0->{'eventodb_requests_total{method="sys.version"}'} // 0), $N,
    "/metrics: eventodb_requests_total{method=\"sys.version\"} exactly $N more");
is($m1->{'eventodb_request_duration_seconds_count{method="sys.version"}'}, c($s1, 'requests', 'sys.version'),
    '/metrics: histogram _count equals the counter');
is($m1->{'eventodb_request_duration_seconds_bucket{method="sys.version",le="+Inf"}'},
   $m1->{'eventodb_request_duration_seconds_count{method="sys.version"}'}, '/metrics: +Inf bucket = _count');
{
    my @b;
    for my $k (keys %$m1) {
        push @b, [$1, $m1->{$k}] if $k =~ /^eventodb_request_duration_seconds_bucket\{method="sys\.version",le="([0-9.e+-]+)"\}$/;
    }
    @b = sort { $a->[0] <=> $b->[0] } @b;
    cmp_ok(scalar @b, '>=', 20, 'buckets from microseconds to tens of seconds (' . scalar(@b) . ')');
    ok(!grep({ $b[$_][1] < $b[$_ - 1][1] } 1 .. $#b), 'buckets are cumulative');
    cmp_ok($b[0][0], '<=', 2e-6, 'smallest le about a microsecond');
    cmp_ok($b[-1][0], '>=', 60, 'largest le above a minute');
    ok($m1->{'eventodb_request_duration_seconds_sum{method="sys.version"}'} > 0, '_sum in seconds');
}
is($m1->{'eventodb_http_requests_total{endpoint="metrics"}'} - ($m0->{'eventodb_http_requests_total{endpoint="metrics"}'} // 0), 1,
    '/metrics counts itself');
is($m1->{eventodb_workers_running}, 2, 'eventodb_workers_running');
is(scalar(grep { /^eventodb_worker_info\{/ } keys %$m1), 2, 'eventodb_worker_info per worker');
ok(exists $m1->{'eventodb_db_query_duration_seconds_count'}, 'PostgreSQL round-trip histogram');
{
    my $r = $d->http('GET', '/metrics?buckets=16');
    my $n = () = $r->{content} =~ /^eventodb_db_query_duration_seconds_bucket\{/mg;
    cmp_ok($n, '>', 400, "?buckets=16: every bucket edge ($n)");
}

# ---- a worker killed: its counts are not lost
my $before = snap();
my $total = c($before, 'requests', 'sys.version');
my ($victim) = grep { $_->{worker} == 0 } @{ $before->{workers} };
ok(kill('KILL', $victim->{pid}), "SIGKILL worker 0 (pid $victim->{pid})");
ok($t->wait_for(sub {
    my $s = snap();
    my ($w) = grep { $_->{worker} == 0 } @{ $s->{workers} };
    return $w && $w->{pid} != $victim->{pid} && $w->{state} eq 'ready' && $s->{master}{retired_workers} == 1;
}, 15), 'replaced; its slot folded into the retired totals') or diag($d->evdump('workers')->{stdout});
my $after = snap();
is(c($after, 'requests', 'sys.version'), $total, 'requests{sys.version} unchanged after the kill');
ok(!grep({ $_->{pid} == $victim->{pid} } @{ $after->{workers} }), 'the dead worker left the scoreboard');
for (1 .. 10) { ($st) = $d->rpc(ADMIN_TOKEN, 'sys.version'); die unless $st == 200 }
is(c(snap(), 'requests', 'sys.version'), $total + 10, 'and keeps counting: exactly 10 more');
{
    my (undef, $m) = metrics();
    is($m->{'eventodb_requests_total{method="sys.version"}'}, $total + 10, '/metrics agrees');
    is($m->{eventodb_workers_retired_total}, 1, 'eventodb_workers_retired_total');
}

# ---- under load, with workers killed: never torn, never decreasing
{
    my $dir = $t->dir;
    my $stop = "$dir/stop-load";
    my @kids;
    for my $k (1 .. 2) {
        my $pid = fork // die;
        if (!$pid) {
            alarm 0;
            delete $d->{ka_sock};    # a keep-alive connection of its own
            my $n = 0;
            while (!-e $stop && $n < 100000) { $d->rpc_ka(ADMIN_TOKEN, 'sys.version'); $n++ }
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    my ($prev_req, $prev_http, $bad, $snaps, $killed) = (0, 0, 0, 0, 0);
    my $t0 = time;
    while (time - $t0 < 6 * mult()) {
        my $r = $d->evdump('--json');
        next if $r->{exit};
        my ($ok, $s) = EventoTest::json_decode($r->{stdout});
        next unless $ok;
        $snaps++;
        my $req = c($s, 'requests', 'sys.version');
        my $http = 0;
        $http += $_ for values %{ $s->{totals}{counters}{http_requests} };
        if ($req < $prev_req || $http < $prev_http) {
            diag("decrease: requests $prev_req -> $req, http $prev_http -> $http") if $bad++ < 3;
        }
        my $h = $s->{totals}{histograms}{request_duration}{'sys.version'};
        my $bsum = 0;
        $bsum += $_->[2] for @{ $h->{buckets} || [] };
        diag("histogram count $h->{count} != buckets $bsum") if $bsum != ($h->{count} // 0) && $bad++ < 3;
        $bad++ if $s->{torn};
        ($prev_req, $prev_http) = ($req, $http);
        if (time - $t0 > 2 * ($killed + 1) && $killed < 2) {
            my ($w) = grep { $_->{alive} && $_->{state} eq 'ready' } @{ $s->{workers} };
            if ($w) { kill 'KILL', $w->{pid}; $killed++ }
        }
    }
    open my $fh, '>', $stop or die;
    close $fh;
    waitpid $_, 0 for @kids;
    is($bad, 0, "$snaps snapshots under load with $killed workers killed: no decrease, no torn histogram");
    cmp_ok($snaps, '>=', 10, 'enough snapshots');
    ok($t->wait_for(sub { snap()->{master}{retired_workers} >= 1 + $killed }, 15), 'killed workers retired');
}

# ---- a crash report reaches the log
{
    my ($w) = grep { $_->{state} eq 'ready' && $_->{alive} } @{ snap()->{workers} };
    ok(kill('SEGV', $w->{pid}), "SIGSEGV worker $w->{worker} (pid $w->{pid})");
    ok($t->wait_for(sub { $d->log_since_start =~ /worker \d+ crash report \(pid \Q$w->{pid}\E, gen \d+, signal 11\): SIGSEGV sent by pid \d+; backtrace: \S+/ }, 10),
       'the master logs the crash report from the slot') or diag($d->log_since_start);
    like($d->log_since_start, qr/backtrace:.*eventodbd\+0x[0-9a-f]+/, 'frames as module+offset');
}

# ---- gauges: open connections seen by evdump
{
    my $sock = $d->connect;
    ok($t->wait_for(sub { (snap()->{totals}{counters}{connections_open} // 0) >= 1 }, 5), 'connections_open counts an idle connection');
    ok($t->wait_for(sub { my $s = snap(); ($s->{totals}{counters}{connections_idle} // 0) >= 1 }, 5),
       'the scoreboard shows it idle (refreshed by the heartbeat)');
    close $sock;
}

# ---- shutdown removes the segment
{
    my $code = $d->stop;
    is($code, 0, 'SIGTERM: exit 0');
    ok(!-e $path, 'segment removed at exit');
}

# ---- a start-up failure after the segment was made removes it too
{
    my ($port, $bad);
    for my $try (1 .. 3) {    # a free port may be taken by someone else meanwhile
        $port = EventoTest::free_port();
        $bad = $t->start(port => $port, db_url => 'postgresql://127.0.0.1:1/none?connect_timeout=2',
                         expect_exit => 1, exit_timeout => 60);
        last unless $bad->log_since_start =~ /address already in use/i;
    }
    isnt($bad->exit_code // -1, 0, 'start-up fails without a database');
    like($bad->log_since_start, qr/shared memory segment \/eventodbd\.\Q$port\E/, 'after making the segment');
    ok(!-e "/dev/shm/eventodbd.$port", 'segment removed after the start-up failure');
}

# ---- --shm-name, a live segment is not taken over, a stale one is replaced
{
    my $nm = "evt-shm-$$";
    my $d2 = $t->start(workers => 1, args => ['--shm-name', $nm]);
    ok(-e "/dev/shm/$nm", "--shm-name $nm");
    is($d2->evdump_json->{master}{pid}, $d2->pid, 'evdump --name finds it');
    my $d3 = $t->start(workers => 1, args => ["--shm-name=$nm"], expect_exit => 1);
    isnt($d3->exit_code // -1, 0, 'a second instance with the same segment name does not start');
    like($d3->log_since_start, qr/in use by the eventodbd master with pid \Q${\ $d2->pid }\E/, '... and says who has it');
    ok(-e "/dev/shm/$nm" && $d2->evdump_json->{master}{pid} == $d2->pid, 'the live segment is untouched');

    # SIGKILL the master: the segment stays behind (stale) ...
    my @wp = values %{ $d2->worker_pids };
    $d2->kill_master('KILL');
    $d2->stop(timeout => 5);
    $t->wait_for(sub { !grep { pid_alive($_) } @wp }, 5);
    ok(-e "/dev/shm/$nm", 'a killed master leaves its segment');
    my $r = $d2->evdump;
    is($r->{exit}, 3, 'evdump: exit 3 for an instance that is gone');
    like($r->{stderr}, qr/gone: master pid \d+ is not running/, '... saying so');
    $r = $d2->evdump('--stale', '--json');
    is($r->{exit}, 0, 'evdump --stale reads it post mortem');
    # ... and the next start replaces it
    $d2->restart;
    like($d2->log_since_start, qr/removing stale shared memory segment "\/\Q$nm\E" of master pid \d+/, 'restart: stale segment replaced');
    is($d2->evdump_json->{master}{pid}, $d2->pid, 'the new segment belongs to the new master');
    $d2->stop;
    ok(!-e "/dev/shm/$nm", 'removed at exit');
}

# ---- --publish-counters=false: scoreboard yes, counters no
{
    my $d4 = $t->start(workers => 1, args => ['--publish-counters=false']);
    for (1 .. 5) { $d4->rpc(ADMIN_TOKEN, 'sys.version') }
    my $s = $d4->evdump_json;
    ok(!$s->{master}{publishing}, 'publishing off');
    is($s->{totals}{counters}{requests}{'sys.version'}, 0, 'counters stay zero');
    is($s->{workers}[0]{state}, 'ready', 'the scoreboard is still published');
    $d4->stop;
}

done_testing;
