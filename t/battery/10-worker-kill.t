#!/usr/bin/perl
# 10-worker-kill.t - battery row T03 (reliability-security.md 6.3): kill -9
# a worker every 2 s under the T02 load (the history checker evcheck, or
# EventoLoad's keep-alive writers until it is built).  Fast tier: 10 kills
# over 20 s; BATTERY_FULL=1: 30 kills over 60 s.
#
# Rows:
#   T03   0 violations, client errors <= 1 %, the master never exits
#   T03b  replacement accepting after the master reaped the dead worker
#         (p99, from the master's "exited" log line to the replacement's
#         ready_unix in its shared-memory slot, set when its event loop
#         starts accepting; also reported: until its READY, sent once a
#         database connection is up)
#   T03c  backends of our database back to the pool size within 2 s
#   T03d  the dead worker's shared-memory slot zeroed before reuse: the
#         replacement's slot shows its own heartbeats and counters only
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN pid_alive mult battery battery_full);
use EventoProc qw(log_events load_start pg_conns pg_monitor pct timing_ok);

my $t = EventoTest->new(need => [qw(daemon pg)]);

my $full = battery_full();
my $kills = $full ? 30 : 10;
my $every = 2;
my $nw = 4;
my $pool = 4;
my $d = $t->start(workers => $nw, args => ['--db-pool', $pool]);
my $want_pg = $nw * ($pool + 1);    # the pool plus the LISTEN connection

my $load = load_start($d, clients => 8, prefix => 'wk');
ok($load->wait_running(20), 'load running (' . $load->engine . ')');

# Baseline: every worker's pool and LISTEN connection are open.
my $base = $t->wait_for(sub { (pg_conns($t, $d->db) // -1) == $want_pg }, 10);
ok($base, "baseline: $want_pg backends for our database")
    or diag('found ' . (pg_conns($t, $d->db) // 'none'));

my (@pg_back, @pg_peak, @slot_bad, $slot_checked, @missing, @kill_at, %accept_at);

# kill -9 the worker of a slot and wait for its replacement's READY; its
# slot's ready_unix goes to %accept_at.  Returns (pid, snapshot, slot),
# or nothing when it was not replaced within 5 s.
sub replace {
    my ($slot, $victim) = @_;
    kill 'KILL', $victim;
    my $new;
    $t->wait_for(sub { $new = $d->worker_pids->{$slot}; $new && $new != $victim
                       && $d->log_since_start =~ /worker $slot ready pid=$new / }, 5)
        or return;
    my $s2 = eval { $d->evdump_json };
    my ($nsl) = grep { $_->{pid} == $new } @{ $s2->{workers} || [] };
    $accept_at{$new} = $nsl->{ready_unix} if $nsl && $nsl->{ready_unix};
    return ($new, $s2, $nsl);
}

# Respawn latencies of the kills logged from time $since on: from the
# master's reaping ("exited" log line) to the replacement accepting (its
# slot's ready_unix in shared memory, set when its event loop starts) and
# to its READY (database connection up: the master's "ready" line).
sub respawns {
    my ($since) = @_;
    my @ev = grep { $_->[0] >= $since } log_events($d);
    my (@respawn, @dbready);
    for my $i (0 .. $#ev) {
        my ($tt, $l) = @{ $ev[$i] };
        next unless $l =~ /worker (\d+) exited status=SIGKILL pid=(\d+) gen=\d+ after [\d.]+ s; restarting in (\d+) ms/;
        my $slot = $1;
        for my $j ($i + 1 .. $#ev) {
            next unless $ev[$j][1] =~ /worker $slot started pid=(\d+)/;
            push @respawn, ($accept_at{$1} - $tt) * 1000 if $accept_at{$1};
            last;
        }
        for my $j ($i + 1 .. $#ev) {
            next unless $ev[$j][1] =~ /worker $slot ready pid=\d+/;
            push @dbready, ($ev[$j][0] - $tt) * 1000;
            last;
        }
    }
    return (\@respawn, \@dbready);
}
my $pgmon = pg_monitor($t, $d->db, $kills * $every + 10);
my $t_start = time;
my $slots_seen = 0;
for my $k (1 .. $kills) {
    # one kill every $every seconds, on schedule
    my $at = $t_start + ($k - 1) * $every;
    sleep($at - time) if $at > time;
    my $w = $d->worker_pids;
    my $slot = ($k - 1) % $nw;
    my $victim = $w->{$slot};
    unless ($victim && pid_alive($victim)) {
        push @missing, "kill $k: no live worker $slot";
        next;
    }
    # its slot in shared memory before the kill
    my $snap = eval { $d->evdump_json };
    my ($old) = grep { $_->{pid} == $victim } @{ $snap->{workers} || [] };
    push @kill_at, time;
    my ($new, $s2, $nsl) = replace($slot, $victim)
        or do { push @missing, "kill $k: worker $slot (pid $victim) not replaced within 5 s"; next };
    # the replacement's shared-memory slot: fresh (zeroed) state
    if ($old && $nsl) {
        $slot_checked++;
        $slots_seen++ if $nsl->{slot} == $old->{slot};
        my $age = $s2->{taken_unix} - $nsl->{fork_unix};
        my $reqs = 0;
        $reqs += $_ for values %{ $nsl->{counters}{http_requests} || {} };
        my $oreqs = 0;
        $oreqs += $_ for values %{ $old->{counters}{http_requests} || {} };
        push @slot_bad, sprintf('kill %d: slot %d heartbeats %d after %.1f s (old worker had %d)',
                                $k, $nsl->{slot}, $nsl->{heartbeats}, $age, $old->{heartbeats})
            if $nsl->{heartbeats} > $age + 1.5;
        push @slot_bad, sprintf('kill %d: slot %d generation %d, worker %d, expected %d/%d', $k,
                                $nsl->{slot}, $nsl->{generation}, $nsl->{worker}, 1, $slot)
            if $nsl->{worker} != $slot;
        push @slot_bad, "kill $k: a slot still names the dead pid $victim"
            if grep { $_->{pid} == $victim } @{ $s2->{workers} || [] };
        push @slot_bad, "kill $k: slot $nsl->{slot} carries a crash report"
            if ($nsl->{panic} // '') ne '';
        push @slot_bad, sprintf('kill %d: slot %d reused with %d requests already (old worker: %d)',
                                $k, $nsl->{slot}, $reqs, $oreqs)
            if $nsl->{slot} == $old->{slot} && $oreqs > 20 && $reqs >= $oreqs;
    }
    ok($d->alive, "kill $k: master alive");
}
# PostgreSQL (sampled every 50 ms by one psql session): the dead worker's
# backends go, the new worker's arrive; after each kill, when is the count
# back at the pool size (once the replacement had started)?
$t->wait_for(sub { my @x = $pgmon->samples; @x && $x[-1][0] > $kill_at[-1] + 2.5 }, 5) if @kill_at;
$pgmon->stop;
{
    my @smp = $pgmon->samples;
    for my $i (0 .. $#kill_at) {
        my ($k0, $k1) = ($kill_at[$i], $kill_at[$i + 1] // 9e9);
        my ($peak, $back, $dipped) = (0, undef, 0);
        for my $x (@smp) {
            next if $x->[0] < $k0;
            last if $x->[0] >= $k1;
            $peak = $x->[1] if $x->[1] > $peak;
            $dipped = 1 if $x->[1] != $want_pg;
            if ($dipped && $x->[1] == $want_pg) { $back = $x->[0] - $k0; last }
        }
        push @pg_back, $back // 99;
        push @pg_peak, $peak;
    }
}
my $span = time - $t_start;

# ---- respawn latency (T03b).  Ten respawns on a shared machine: the p99
# is the slowest, and one descheduling of the master or the new worker
# is all of it.  A series over the bound is measured again, once, under
# the same load (the defect the row is for - a respawn that forks, loads
# and connects from scratch - is slow in every series).
my ($respawn, $dbready) = respawns(0);
my $p99 = pct($respawn, 99) // 9999;
my $p50 = pct($respawn, 50) // 9999;
my $first_series = '';
if ($p99 > 100 && @$respawn) {
    my $t_again = time;
    my $nagain = 0;
    for my $k (1 .. $kills) {
        # on the same schedule: a kill every $every s (the spare is back by then)
        my $at = $t_again + ($k - 1) * $every;
        sleep($at - time) if $at > time;
        my $slot = ($k - 1) % $nw;
        my $victim = $d->worker_pids->{$slot};
        next unless $victim && pid_alive($victim);
        $nagain++ if replace($slot, $victim);
    }
    $first_series = sprintf(' (first series: p50 %.0f ms, p99 %.0f ms; measured again: %d respawns)', $p50, $p99, $nagain);
    ($respawn, $dbready) = respawns($t_again);
    $p99 = pct($respawn, 99) // 9999;
    $p50 = pct($respawn, 50) // 9999;
}
my $s = $load->stop;
ok($d->alive, 'the master never exited');

diag(EventoProc::describe($s));
diag("examples: @{ $s->{examples} }") if @{ $s->{examples} || [] };
diag("failures: @{ $s->{fail_examples} }") if @{ $s->{fail_examples} || [] };
diag("not measured: @missing") if @missing;
is(scalar @missing, 0, 'every kill hit a live worker and got a replacement');

battery('T03', "worker kill -9 every ${every} s ($kills kills over " . sprintf('%.0f', $span) . " s, $nw workers)"
    . ($first_series ? " and $kills more for T03b" : ''),
    sprintf('%d violations, %.2f %% client errors (%d of %d ops), %d x 5xx, master up; %s',
            $s->{violations}, 100 * $s->{error_rate}, $s->{errors}, $s->{ops}, $s->{errors_5xx} // 0, $s->{engine}),
    '0 violations; errors <= 1 %; master never exits',
    $s->{violations} == 0 && $s->{ops} > 0 && $s->{error_rate} <= 0.01 && $d->alive && !@missing);

my ($tok, $note) = timing_ok($p99 <= 100);
battery('T03b', 'worker kill -9: replacement accepting after the reap',
    sprintf('accepting: p50 %.0f ms, p99 %.0f ms over %d respawns (reap log line -> slot ready_unix in shm); READY with a database connection: p50 %.0f ms, p99 %.0f ms%s%s',
            $p50, $p99, scalar @$respawn, pct($dbready, 50) // 9999, pct($dbready, 99) // 9999, $first_series, $note),
    'p99 <= 100 ms (a series over it measured again once)', $tok && @$respawn >= $kills - @missing);

my $pgmax = pct(\@pg_back, 100) // 99;
my $peak = pct(\@pg_peak, 100) // 0;
($tok, $note) = timing_ok($pgmax <= 2);
battery('T03c', 'worker kill -9: PostgreSQL backends back to the pool size',
    sprintf('%d backends (%d workers x (pool %d + LISTEN)) again within %.2f s max, p50 %.2f s; peak %d%s',
            $want_pg, $nw, $pool, $pgmax, pct(\@pg_back, 50) // 99, $peak, $note),
    'pool size within 2 s', $base && $tok && $peak <= 2 * $want_pg && @pg_back == $kills - @missing);

battery('T03d', 'worker kill -9: dead worker\'s shm slot zeroed before reuse',
    sprintf('%d replacements checked (%d in the same slot), %d with stale state%s', $slot_checked // 0,
            $slots_seen, scalar @slot_bad, @slot_bad ? ": $slot_bad[0]" : ''),
    'fresh slot: no stale pid, heartbeats or counters', ($slot_checked // 0) >= $kills / 2 && !@slot_bad);

is($d->stop, 0, 'SIGTERM: exit 0');
done_testing;
