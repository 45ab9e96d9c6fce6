#!/usr/bin/perl
# 21-pg-connections.t - battery row T09 (../shared/ref/reliability-security.md
# 6.3): PostgreSQL out of connections.  The cluster runs with
# max_connections=20; 18 of them are held by sleeping psql sessions
# before eventodbd starts with 4 workers x 8 pool connections (36 + 4
# LISTEN wanted, 2 available), so most connection attempts fail with
# 53300 "too many clients" and some workers get no connection at all.
#
#   T09   the server starts and serves; every request is answered: 200,
#         or a JSON error (500 BACKEND_ERROR) within connect_timeout (2 s);
#         no worker crash
#   T09b  53300 is logged at most once per 10 s per worker
#   T09t  the slowest error answer (timing)
#   T09c  after the sessions go (20 slots, 36 wanted), every worker gets a
#         connection and every request succeeds (figure: how long that
#         took; starved workers probe every 0.5 s and a pool grows one
#         connection at a time, stopping at the first refusal)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time);
use POSIX ();
use EventoTest qw(battery battery_full mult json_encode json_decode);
use EventoFault;

my $t = EventoTest->new(need => [qw(daemon pg)], cluster_opts => { max_connections => 20 });
my $full = battery_full();
my $phase_s = $full ? 30 : 12;
$t->cluster;
my $db = $t->createdb;
is($t->psql('postgres', 'SHOW max_connections'), '20', 'cluster runs with max_connections=20');

# 18 sessions that just sleep
my $c = $t->cluster_info;
my @holders;
for my $k (1 .. 18) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 0;
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        my @cmd = ("$c->{bindir}/psql", '-X', '-q', '-h', $c->{sock}, '-p', $c->{port}, '-U', 'postgres',
                   '-d', 'postgres', '-c', 'SELECT pg_sleep(600)');
        @cmd = ('runuser', '-u', $c->{user}, '--', @cmd) if $> == 0 && $c->{user};
        { no warnings 'exec'; exec @cmd; }
        POSIX::_exit(127);
    }
    push @holders, $pid;
}
my $held = $t->wait_for(sub {
    my $n = eval { $t->psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'}) };
    defined $n && $n >= 18 ? $n : 0;
}, 20);
ok($held, "18 sessions hold connections ($held)");

my $t_start = time;
my $d = $t->start(db => $db, workers => 4, args => ['--db-pool', 8], health_timeout => 30);
diag(sprintf 'eventodbd healthy %.2f s after start with 2 free connection slots', time - $t_start);
my $pids0 = $d->worker_pids;
is(scalar keys %$pids0, 4, '4 workers');

# Phase A: requests on fresh connections (spread over the workers)
sub one_write {
    my ($d, $stream) = @_;
    my $t0 = time;
    my ($st, $b) = $d->rpc($d->admin_token, 'stream.write', $stream, { type => 'T', data => { x => 1 } });
    my $ms = (time - $t0) * 1000;
    my $json_err = ref $b eq 'HASH' && ref $b->{error} eq 'HASH' && defined $b->{error}{code} ? $b->{error}{code} : undef;
    return ($st, $ms, $json_err, ref $b eq 'HASH' ? $b : { raw => $b });
}
my ($okA, $failA, $badA, $slowfailA, $n) = (0, 0, 0, 0, 0);
my %codes;
my $tA = time;
while (time - $tA < $phase_s) {
    my ($st, $ms, $code, $b) = one_write($d, 'conn-' . ($n++ % 20));
    if ($st == 200) { $okA++ }
    elsif ($st =~ /^5/ && defined $code) {
        $failA++;
        $codes{"$st $code"}++;
        $slowfailA = $ms if $ms > $slowfailA;
    } else {
        $badA++;
        diag("unexpected answer: $st " . json_encode($b)) if $badA <= 3;
    }
    Time::HiRes::sleep(0.02);
}
diag(sprintf 'phase A (%d s, 18 of 20 slots held): %d ok, %d JSON errors (%s), %d other, slowest error %.0f ms',
    $phase_s, $okA, $failA, join(', ', map { "$_: $codes{$_}" } sort keys %codes), $badA, $slowfailA);
my $open = EventoFault::worker_counters($d);
diag('pool connections open per worker: ' . join(' ', map { $open->{$_}{db_pool_open} // '?' } sort keys %$open));

# Phase B: release the slots.  A backend in pg_sleep does not notice its
# client going away, and every slot is taken, so SIGTERM the holders'
# backends (what pg_terminate_backend does): those on database postgres.
my @hb;
for my $p (EventoFault::pg_pids($t)) {
    my $cmd = EventoTest::_slurp("/proc/$p/cmdline");
    push @hb, $p if $cmd =~ /^postgres: \S+ postgres \[local\]/;
}
is(scalar @hb, 18, 'found the 18 holding backends');
kill 'TERM', @hb;
waitpid $_, 0 for @holders;
my $tB = time;
my $streak = 0;
my $t_all_ok;
my ($okB, $failB, $badB) = (0, 0, 0);
while (time - $tB < 20 * mult()) {
    my $ts = time;
    my ($st, $ms, $code) = one_write($d, 'conn-b-' . ($n++ % 20));
    if ($st == 200) { $okB++; $t_all_ok = $ts if !$streak++ }
    else { $streak = 0; $st =~ /^5/ && defined $code ? $failB++ : $badB++ }
    last if $streak >= 40;
    Time::HiRes::sleep(0.02);
}
# 20 slots for 36 pool connections: every worker should hold at least one
my $full_pool = $t->wait_for(sub {
    my $w = EventoFault::worker_counters($d);
    my @o = map { $w->{$_}{db_pool_open} // 0 } keys %$w;
    @o == 4 && !grep { $_ < 1 } @o;
}, 10);
my $w = EventoFault::worker_counters($d);
diag('after release, pool connections open per worker: ' . join(' ', map { $w->{$_}{db_pool_open} // '?' } sort keys %$w));

# no crash
my $pids1 = $d->worker_pids;
my $crashed = grep { ($pids1->{$_} // 0) != $pids0->{$_} } keys %$pids0;
ok($d->alive, 'master alive');

battery('T09', 'PostgreSQL out of connections (max_connections=20, 18 held, 40 wanted)',
    sprintf('serves: %d ok and %d JSON 5xx errors in %d s, %d other answers, %d workers crashed',
        $okA, $failA, $phase_s, $badA + $badB, $crashed),
    'starts and serves; requests without a connection fail with a JSON error; no crash',
    $okA > 0 && !$badA && !$badB && !$crashed);
my $fig = sprintf 'slowest error answer %.0f ms', $slowfailA;
battery('T09t', 'PostgreSQL out of connections: time to fail', $fig, '<= connect_timeout (2 s)',
    EventoFault::timing_ok($slowfailA <= 2000, \$fig));

# 53300 in the log: per worker, at most one line per 10 s
my %times;
for my $l (split /\n/, $d->log_since_start) {
    next unless $l =~ /too many clients/;
    my ($ts, $who) = $l =~ /^(\S+Z) \S+ (worker \d+):/ or next;
    my ($hh, $mm, $ss) = $ts =~ /T(\d\d):(\d\d):(\d\d\.\d+)Z/;
    push @{ $times{$who} }, $hh * 3600 + $mm * 60 + $ss;
}
my ($lines, $closest) = (0, 1e9);
for my $who (keys %times) {
    my @s = sort { $a <=> $b } @{ $times{$who} };
    $lines += @s;
    for my $i (1 .. $#s) {
        my $gap = $s[$i] - $s[$i - 1];
        $closest = $gap if $gap < $closest;
    }
}
battery('T09b', 'PostgreSQL out of connections: 53300 logging',
    sprintf('%d "too many clients" lines from %d workers over %.0f s; closest two of one worker %s apart',
        $lines, scalar keys %times, time - $t_start, $closest < 1e9 ? sprintf('%.1f s', $closest) : 'never'),
    'at most once per 10 s per worker',
    $lines > 0 && $closest >= 9.9);

my $rec = $streak >= 40 ? $t_all_ok - $tB : undef;
$fig = defined $rec
    ? sprintf('40 writes in a row ok %.2f s after the sessions went (%d errors before); every worker holds a connection: %s',
              $rec, $failB, $full_pool ? 'yes' : 'no')
    : "never 40 writes in a row ok within 20 s ($okB ok, $failB errors)";
battery('T09c', 'PostgreSQL out of connections: recovery', $fig,
    'every request succeeds once connections are free (every worker gets one)',
    defined $rec && $full_pool && !$badB);

is($d->stop, 0, 'SIGTERM: exit 0');
done_testing;
