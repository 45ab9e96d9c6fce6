#!/usr/bin/perl
# 12-master-kill.t - battery row T05 (reliability-security.md 6.3): kill -9
# the master under the T02 load; the harness plays systemd's
# Restart=on-failure and starts a new master 100 ms after the old one was
# reaped, on the same port, shared-memory name and database.  Fast tier:
# 3 rounds; BATTERY_FULL=1: 10.
#
# Row T05: the old workers exit <= 2 s after the kill (death pipe EOF,
# PDEATHSIG), the new master binds <= 1 s after its start without
# EADDRINUSE (from its log: "listening" line), 0 violations over the run.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN pid_alive mult battery battery_full);
use EventoProc qw(log_events load_start pg_conns pct timing_ok line_time);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $rounds = battery_full() ? 10 : 3;
my $nw = 4;
my $pool = 4;
my $d = $t->start(workers => $nw, args => ['--db-pool', $pool]);
my $want_pg = $nw * ($pool + 1);

my $load = load_start($d, clients => 4, prefix => 'mk');
ok($load->wait_running(20), 'load running (' . $load->engine . ')');

my (@gone, @bind, @healthy, @pgback, @problems, $frozen_bind);
for my $r (1 .. $rounds + 1) {
    my @old = values %{ $d->worker_pids };
    # The last round (a regression check): one old worker is frozen, so
    # it still holds the listening socket when the new master binds; the
    # new master must wait for the port (EADDRINUSE retried), not exit.
    my $frozen = $r > $rounds ? $old[0] : undef;
    kill 'STOP', $frozen if $frozen;
    my $t_kill = time;
    $d->kill_master('KILL');
    # reap it (the harness is its parent, like systemd)
    $t->wait_for(sub { !$d->alive }, 5) or push @problems, "round $r: master not reaped";
    # Restart=on-failure, RestartSec=100ms: 100 ms after the reaping,
    # whether or not the old workers are still there
    my $start_at = time + 0.1;
    sleep($start_at - time) if $start_at > time;
    $d->_spawn;
    my $t_start = time;
    if ($frozen) {
        # thaw it once the new master is up and waiting for the port
        $t->wait_for(sub { $d->log_since_start =~ /port \d+ is busy/ || !$d->alive }, 5);
        kill 'CONT', $frozen;
    }
    # old workers gone within 2 s of the kill? (polled while the new master starts)
    my ($gone_at, $ok, $t_healthy);
    my $deadline = time + 15 * mult();
    while (time < $deadline) {
        $gone_at //= time unless grep { pid_alive($_) } @old;
        $ok = $t_healthy = time if !$ok && ($d->http('GET', '/health')->{status} // 0) == 200;
        last if $ok && $gone_at;
        last if !$d->alive;
        sleep 0.02;
    }
    my $log = $d->log_since_start;
    if (!$ok) {
        push @problems, "round $r: new master not healthy: " . join(' | ', grep { /fatal|error|could not/i } split /\n/, $log);
        last;
    }
    my ($l) = grep { /listening on/ } split /\n/, $log;
    if ($frozen) {
        $frozen_bind = $l ? line_time($l) - $t_start : 99;
        ok($log =~ /port \d+ is busy; retrying/ && $log =~ /bound after waiting/,
           sprintf('frozen old worker: the new master waited for the port (listening after %.2f s)', $frozen_bind))
            or diag($log);
        last;
    }
    push @gone, defined $gone_at ? $gone_at - $t_kill : 99;
    push @bind, $l ? line_time($l) - $t_start : 99;
    push @healthy, ($t_healthy // 99) - $t_start;
    push @problems, "round $r: EADDRINUSE" if $log =~ /address already in use|port \d+ is busy/i;
    # the old workers' backends are gone, the new ones there
    my $pg = $t->wait_for(sub { (pg_conns($t, $d->db) // -1) == $want_pg && time }, 5);
    push @pgback, $pg ? $pg - $t_start : 99;
    ok(1, sprintf 'round %d: workers gone %.2f s after the kill; new master listening %.2f s, healthy %.2f s after its start',
       $r, $gone[-1], $bind[-1], $healthy[-1]);
    # load flows again through the new master
    my $n0 = _rpc($d);
    $t->wait_for(sub { _rpc($d) >= $n0 + 30 }, 10) or push @problems, "round $r: no load after the restart";
}
my $s = $load->stop;
diag(EventoProc::describe($s));
diag("examples: @{ $s->{examples} }") if @{ $s->{examples} || [] };
diag("problems: @problems") if @problems;
is(scalar @problems, 0, 'every round restarted cleanly');

sub _rpc {
    my ($d) = @_;
    my $j = eval { $d->evdump_json } or return 0;
    return $j->{totals}{counters}{http_requests}{rpc} // 0;
}

my $gmax = pct(\@gone, 100) // 99;
my $bmax = pct(\@bind, 100) // 99;
my ($tok, $note) = timing_ok($gmax <= 2 && $bmax <= 1);
battery('T05', "master kill -9, restarted after 100 ms ($rounds rounds under load)",
    sprintf('%d violations (%s, %d ops); old workers gone <= %.2f s; new master listening <= %.2f s (healthy <= %.2f s) after start, %s; backends back to %d <= %.2f s; with a frozen old worker holding the port: listening after %.2f s%s',
            $s->{violations}, $s->{engine}, $s->{ops}, $gmax, $bmax, pct(\@healthy, 100) // 99,
            (grep { /EADDRINUSE/ } @problems) ? 'EADDRINUSE seen' : 'no EADDRINUSE', $want_pg,
            pct(\@pgback, 100) // 99, $frozen_bind // 99, $note),
    'old workers exit <= 2 s; new master binds <= 1 s, no EADDRINUSE; 0 violations',
    $s->{violations} == 0 && !@problems && @gone == $rounds && defined $frozen_bind && $frozen_bind < 99 && $tok);

is($d->stop, 0, 'SIGTERM: exit 0');
done_testing;
