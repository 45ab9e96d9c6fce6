#!/usr/bin/perl
# 13-reload.t - battery row T06 (reliability-security.md 6.3): SIGHUP every
# 3 s under keep-alive load (the history checker's clients, 8 keep-alive
# connections) plus writers opening a new connection per request (to see
# any refused connection), one of the reloads with a broken configuration
# file.  Fast tier: 5 reloads over 15 s; BATTERY_FULL=1: 12 over 60 s
# (every 5 s).  T06b: a reload while PostgreSQL refuses new connections
# to our database (the new generation must not take over).
#
# Row T06: 0 connect errors; 0 x 5xx and no failed request but planned
# 409s; read errors (keep-alive close race) <= 0.1 %; every old worker
# gone within the drain deadline (shutdown-timeout 10 s) after it was told
# to retire; the broken file logged, the old configuration keeps serving,
# the master keeps running (exit 0 at the end); 0 violations.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN pid_alive mult battery battery_full put_file);
use EventoLoad;
use EventoProc qw(log_events load_start pct timing_ok);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $full = battery_full();
my $reloads = $full ? 12 : 5;
my $every = $full ? 5 : 3;
my $broken_at = 3;
my $drain = 10;

my $conf = $t->dir . '/reload.conf';
sub conf { put_file($conf, $_[0]) }
chmod 0755, $t->dir;
conf("# 13-reload.t\nshutdown-timeout = $drain\nidle-timeout = 60\n");
my $d = $t->start(workers => 4, args => ['--config', $conf]);

my $load = load_start($d, clients => 8, prefix => 'rl');
my $fresh = EventoLoad->start($d, writers => 2, keep_alive => 0, prefix => 'rlnew');
ok($load->wait_running(20), 'load running (' . $load->engine . ')');
ok($t->wait_for(sub { $fresh->count('ok') >= 10 }, 20), 'new-connection writers running');

my $gen = 1;
my (@problems, $broken_logged, $broken_kept);
my $t0 = time;
for my $k (1 .. $reloads) {
    my $at = $t0 + ($k - 1) * $every;
    sleep($at - time) if $at > time;
    my $off = length $d->log_since_start;
    if ($k == $broken_at) {
        my $before = $d->worker_pids;
        conf("shutdown-timeout = $drain\nthis is not a setting\n");
        kill 'HUP', $d->pid;
        $broken_logged = $t->wait_for(sub {
            substr($d->log_since_start, $off) =~ /reload failed: .*reload\.conf:2: .*keeping the current configuration/ }, 10);
        my $after = $d->worker_pids;
        $broken_kept = $broken_logged && $d->alive
            && join(',', map { $after->{$_} } sort keys %$after) eq join(',', map { $before->{$_} } sort keys %$before)
            && ($d->http('GET', '/health')->{status} // 0) == 200
            && substr($d->log_since_start, $off) !~ /starting generation/;
        ok($broken_logged, "reload $k: the broken file is logged and rejected") or diag(substr($d->log_since_start, $off));
        ok($broken_kept, "reload $k: same workers, still serving");
        conf("# 13-reload.t\nshutdown-timeout = $drain\nidle-timeout = 60\n");
        next;
    }
    # a real change each time, so every reload applies something
    conf("# 13-reload.t\nshutdown-timeout = $drain\nidle-timeout = " . (60 + $k) . "\n");
    kill 'HUP', $d->pid;
    $gen++;
    ok($t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload finished gen=$gen\b/ }, 20),
       "reload $k: generation $gen serves") or push @problems, "reload $k: generation $gen not finished";
}
# ---- T06b: a reload while PostgreSQL refuses new connections to our
# database: the new generation cannot connect, so it must not take over;
# the old one keeps serving (regression: READY used to be sent before the
# pool had a connection, and the old workers were retired at once).
my ($t06b_kept, $t06b_served, $t06b_asked, $t06b_done, $t06b_took) = (0, 0, 0, 0, 99);
{
    my $db = $d->db;
    my $off = length $d->log_since_start;
    $t->psql('postgres', qq{ALTER DATABASE "$db" WITH ALLOW_CONNECTIONS false});
    conf("# 13-reload.t\nshutdown-timeout = $drain\nidle-timeout = 90\n");
    kill 'HUP', $d->pid;
    $gen++;
    my $t1 = time;
    while (time - $t1 < 3) {
        $t06b_asked++;
        my ($st) = $d->rpc(ADMIN_TOKEN, 'stream.write', 'rl06b-1', { type => 'T', data => {} });
        $t06b_served++ if $st == 200;
        sleep 0.2;
    }
    my $win = substr($d->log_since_start, $off);
    $t06b_kept = $win =~ /starting generation $gen/ && $win !~ /retiring pid=\d+ gen=\d+: replaced/;
    ok($t06b_kept, "new generation $gen cannot reach PostgreSQL: no old worker retired") or diag($win);
    is($t06b_served, $t06b_asked, "writes kept succeeding on the old generation ($t06b_served/$t06b_asked)");
    my $t2 = time;
    $t->psql('postgres', qq{ALTER DATABASE "$db" WITH ALLOW_CONNECTIONS true});
    $t06b_done = $t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload finished gen=$gen\b/ }, 15);
    $t06b_took = time - $t2;
    ok($t06b_done, sprintf 'connections allowed again: generation %d took over after %.2f s', $gen, $t06b_took)
        or diag(substr($d->log_since_start, $off));
}

# let the last generation's old workers drain while the load still runs
$t->wait_for(sub { my @r = $d->log_since_start =~ /retiring pid=(\d+)/g; !grep { pid_alive($_) } @r }, $drain + 2);
my $span = time - $t0;
$fresh->stop;
my $s = $load->stop;
ok($d->alive, 'the master never exited');

# fresh-connection writers: every failure counts (connect refused, reset)
my @ffail = grep { $_->[0] eq 'fail' } $fresh->lines;
my ($flost) = $fresh->verify($d);
my $conn_err = ($s->{connect_failures} // 0) + scalar grep { $_->[5] =~ /connect|nobyte/ } @ffail;

# old workers: from "retiring" to "exited"
my @ev = log_events($d);
my (%ret, @drain_s);
for my $e (@ev) {
    $ret{$1} = $e->[0] if $e->[1] =~ /worker \d+ retiring pid=(\d+)/;
    push @drain_s, $e->[0] - delete $ret{$1} if $e->[1] =~ /worker \d+ exited .*pid=(\d+)/ && exists $ret{$1};
}
my $still = grep { pid_alive($_) } keys %ret;
my $killed = () = $d->log_since_start =~ /still draining after \d+ s: sending SIGKILL/g;
my $dmax = pct(\@drain_s, 100) // 99;

diag(EventoProc::describe($s));
diag("examples: @{ $s->{examples} }") if @{ $s->{examples} || [] };
diag('fresh failures: ' . join(' | ', map { join ' ', @$_ } @ffail[0 .. ($#ffail < 4 ? $#ffail : 4)])) if @ffail;
diag("problems: @problems") if @problems;

my $ops = $s->{ops} + $fresh->count('ok') + @ffail;
my $read_err = ($s->{indeterminate} // 0) + @ffail;
is(scalar @$flost, 0, 'new-connection writers: every acknowledged write stored');
is($d->stop, 0, 'SIGTERM at the end: exit 0 (the broken reload changed nothing)');

battery('T06', sprintf('graceful reload: SIGHUP every %d s, %d reloads (1 broken) under keep-alive load', $every, $reloads),
    sprintf('%d violations (%s); %d connect errors; %d x 5xx; %d failed requests of %d (%.3f %%; indeterminate %d); old workers gone <= %.1f s after retiring (%d retired, %d SIGKILLed, %d left); broken file: %s',
            $s->{violations}, $s->{engine}, $conn_err, $s->{errors_5xx} // 0, $s->{errors} + @ffail, $ops,
            100 * ($s->{errors} + @ffail) / ($ops || 1), $s->{indeterminate} // 0, $dmax, scalar @drain_s, $killed, $still,
            $broken_kept ? 'logged, old config kept serving' : 'NOT handled'),
    "0 connect errors; 0 non-2xx but planned 409s; read errors <= 0.1 %; old workers gone <= drain deadline (${drain} s); broken config keeps old; 0 violations",
    $s->{violations} == 0 && $conn_err == 0 && !($s->{errors_5xx} // 0) && $read_err <= 0.001 * $ops
    && ($s->{errors} + @ffail) <= 0.001 * $ops && $dmax <= $drain && !$killed && !$still && $broken_kept
    && !@problems && !@$flost);

battery('T06b', 'graceful reload while PostgreSQL refuses new connections to our database',
    sprintf('old generation %s; %d/%d writes succeeded during 3 s; new generation took over %.2f s after connections were allowed again',
            $t06b_kept ? 'kept serving, none retired' : 'RETIRED', $t06b_served, $t06b_asked, $t06b_took),
    'the generation that cannot connect does not take over; 0 failed requests',
    $t06b_kept && $t06b_served == $t06b_asked && $t06b_done);

done_testing;
