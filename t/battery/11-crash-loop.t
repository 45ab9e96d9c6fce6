#!/usr/bin/perl
# 11-crash-loop.t - battery row T04 (reliability-security.md 6.3): a worker
# that crashes at start (test hook: with --enable-test-rpc, while the file
# named by EVENTODB_TEST_WORKER_CRASH exists, a starting worker does what
# it says: "segv" or "exit N").
#
# Rows:
#   T04   respawn rate after the first 5 crashes <= 2/s (back-off), the
#         other worker keeps serving, master RSS flat, the slot recovers
#   T04b  a worker exiting with the "fatal configuration" status (5) is
#         not respawned; a reload refills the slot; when every worker
#         exits so at start, the master exits 1 instead of spinning
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN pid_alive mult battery battery_full put_file);
use EventoProc qw(log_events rss_kb);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $full = battery_full();
my $loop_s = $full ? 30 : 8;

my $hook = $t->dir . '/crash-hook';
sub hook {
    my ($what) = @_;
    if (!defined $what) { unlink $hook; return }
    put_file($hook, $what);
}
chmod 0755, $t->dir;

my $d = $t->start(workers => 2, args => ['--enable-test-rpc'],
                  env => { EVENTODB_TEST_WORKER_CRASH => $hook });
my $mpid = $d->pid;
my $rss0 = rss_kb($mpid);

# ---------------------------------------------------------------- crash loop
my $slot = 1;
my $victim = $d->worker_pids->{$slot};
hook('segv');
my $off = length $d->log_since_start;
my $t0 = time;
ok(kill('KILL', $victim), "kill -9 worker $slot (pid $victim); its replacements crash at start");
my ($served, $asked) = (0, 0);
while (time - $t0 < $loop_s) {
    $asked++;
    $served++ if ($d->http('GET', '/health')->{status} // 0) == 200;
    sleep 0.2;
}
my $rss1 = rss_kb($mpid);
my @ev = grep { $_->[0] >= $t0 - 0.01 } log_events($d, $off);
my @spawn = map { $_->[0] } grep { $_->[1] =~ /worker $slot started pid=/ } @ev;
my @crash = grep { $_->[1] =~ /worker $slot exited status=SIGSEGV/ } @ev;
my @reports = grep { $_->[1] =~ /worker $slot crash report/ } @ev;
my @delays = map { $_->[1] =~ /restarting in (\d+) ms/ ? $1 : () } @crash;
diag(sprintf '%d spawns in %.1f s, back-off delays: %s', scalar @spawn, $loop_s, join ' ', @delays);
# rate after the first 5 spawns: the most spawns in any 1 s window
my $maxrate = 0;
for my $i (5 .. $#spawn) {
    my $n = grep { $_ >= $spawn[$i] && $_ < $spawn[$i] + 1 } @spawn[5 .. $#spawn];
    $maxrate = $n if $n > $maxrate;
}
my $after5 = @spawn > 5 ? (@spawn - 5) / (time - $spawn[5] || 1) : 0;
ok(@spawn >= 5, 'the slot was respawned at least 5 times') or diag($d->log_since_start);
is(scalar @reports, scalar @crash, 'every crash left a crash report the master logged (' . scalar(@reports) . ')');
ok(pid_alive($mpid) && $d->alive, 'the master is alive');
is($served, $asked, "the other worker kept serving ($served of $asked health checks)");
my $drss = defined $rss0 && defined $rss1 ? $rss1 - $rss0 : 99999;

# recovery: the hook removed, a reload starts a healthy generation at once
hook(undef);
$off = length $d->log_since_start;
kill 'HUP', $mpid;
my $recovered = $t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload finished gen=2/ }, 15);
ok($recovered, 'hook removed + SIGHUP: a healthy generation 2 serves') or diag(substr($d->log_since_start, $off));

battery('T04', "crash loop: worker crashing at start for ${loop_s} s",
    sprintf('%d respawns; after the first 5: max %d per 1 s window, %.2f/s; back-off %s ms; master RSS %+d kB; other worker served %d/%d',
            scalar @spawn, $maxrate, $after5, join(',', @delays[0 .. ($#delays < 7 ? $#delays : 7)]),
            $drss, $served, $asked),
    'respawns <= 2/s after the first 5; master RSS flat (< +1 MB); service kept',
    @spawn >= 5 && $maxrate <= 2 && $drss < 1024 && $served == $asked && $recovered && $d->alive);

# ---------------------------------------------------------------- reload into a crashing generation
my ($reload_served, $reload_asked, $reload_rate, $reload_total, $reload_ok) = (0, 0, 0, 0, 0);
{
    my $old = $d->worker_pids;
    hook('segv');
    $off = length $d->log_since_start;
    my $t1 = time;
    kill 'HUP', $mpid;
    while (time - $t1 < 4) {
        $reload_asked++;
        $reload_served++ if ($d->http('GET', '/health')->{status} // 0) == 200;
        sleep 0.2;
    }
    my @e = log_events($d, $off);
    my %per;
    for my $x (@e) {
        push @{ $per{$1} }, $x->[0] if $x->[1] =~ /worker (\d+) started pid=\d+ gen=3/;
    }
    $reload_total = 0;
    for my $sl (keys %per) {
        my @sp = @{ $per{$sl} };
        $reload_total += @sp;
        for my $i (5 .. $#sp) {
            my $n = grep { $_ >= $sp[$i] && $_ < $sp[$i] + 1 } @sp[5 .. $#sp];
            $reload_rate = $n if $n > $reload_rate;
        }
    }
    my $now = $d->worker_pids;
    is($reload_served, $reload_asked, "SIGHUP into a generation that crashes at start: the old one keeps serving ($reload_served/$reload_asked)");
    ok(!grep({ /retiring/ } map { $_->[1] } @e), 'no old worker was retired');
    hook(undef);
    $off = length $d->log_since_start;
    kill 'HUP', $mpid;
    $reload_ok = $t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload finished gen=4/ }, 15);
    ok($reload_ok, 'hook removed + SIGHUP: generation 4 replaces the old one') or diag(substr($d->log_since_start, $off));
    battery('T04c', 'crash loop: reload into a generation that crashes at start',
        sprintf('old generation served %d/%d health checks over 4 s; %d crashing starts over 2 slots, per slot after the first 5: max %d per 1 s; next good reload %s',
                $reload_served, $reload_asked, $reload_total, $reload_rate, $reload_ok ? 'took over' : 'did NOT take over'),
        'old config keeps serving; per-slot respawns <= 2/s after the first 5',
        $reload_served == $reload_asked && $reload_rate <= 2 && $reload_ok);
}

# ---------------------------------------------------------------- fatal configuration exit
{
    my $w = $d->worker_pids;
    my $v = $w->{$slot};
    hook('exit 5');
    $off = length $d->log_since_start;
    kill 'KILL', $v;
    my $fatal = $t->wait_for(sub {
        substr($d->log_since_start, $off) =~ /worker $slot exited status=5 pid=\d+ gen=\d+: fatal configuration error, not restarting it/ }, 10);
    ok($fatal, 'status 5: logged as fatal, not restarted') or diag(substr($d->log_since_start, $off));
    # watch the slot for 2 s: nothing is started for it
    my $t1 = time;
    my $again = 0;
    while (time - $t1 < 2) {
        my @s = substr($d->log_since_start, $off) =~ /worker $slot started pid=/g;
        $again = @s - 1 if @s > 1;
        sleep 0.1;
    }
    is($again, 0, 'no respawn of the slot within 2 s');
    is($d->http('GET', '/health')->{status}, 200, 'the master and the other worker serve');
    hook(undef);
    $off = length $d->log_since_start;
    kill 'HUP', $mpid;
    my $refill = $t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload finished gen=5/ }, 15);
    ok($refill, 'a reload refills the slot') or diag(substr($d->log_since_start, $off));
    is($d->stop, 0, 'SIGTERM: exit 0');

    # every worker fatal at start: the master gives up with status 1
    hook('exit 5');
    my $d2 = $t->start(workers => 2, args => ['--enable-test-rpc'], expect_exit => 1, exit_timeout => 15,
                       env => { EVENTODB_TEST_WORKER_CRASH => $hook });
    hook(undef);
    my @st = $d2->log_since_start =~ /worker \d started pid=/g;
    is($d2->exit_code, 1, 'every worker fatal at start: the master exits 1');
    is(scalar @st, 2, 'after one start per slot (no respawn)');
    like($d2->log_since_start, qr/every worker exited with a fatal configuration error: stopping/, 'and says why');
    # one worker fatal at start, the other fine: the master still gets
    # READY (it used to wait for the empty slot forever: no READY=1 to
    # systemd) and serves with one worker
    hook('exit 5 @1');
    my $d3 = $t->start(workers => 2, args => ['--enable-test-rpc'],
                       env => { EVENTODB_TEST_WORKER_CRASH => $hook });
    hook(undef);
    my $d3ready = $t->wait_for(sub { $d3->log_since_start =~ /master state start -> ready/ }, 10);
    ok($d3ready, 'one worker fatal at start: the master still reaches READY') or diag($d3->log_since_start);
    is($d3->http('GET', '/health')->{status}, 200, '... and serves');
    is($d3->stop, 0, '... and stops with 0');
    battery('T04b', 'crash loop: "fatal configuration" exit not respawned',
        sprintf('status 5: %s, %d respawns in 2 s, %s; all workers fatal at start: master exit %s after %d forks; one of two fatal at start: %s',
                $fatal ? 'logged fatal' : 'NOT logged', $again, $refill ? 'reload refills' : 'reload did NOT refill',
                $d2->exit_code // 'none', scalar @st, $d3ready ? 'READY with one worker' : 'never READY'),
        'not respawned; master keeps serving; exit 1 when no worker can run',
        $fatal && !$again && $refill && ($d2->exit_code // -1) == 1 && @st == 2 && $d3ready);
}

done_testing;
