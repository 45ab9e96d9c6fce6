#!/usr/bin/perl
# 20-pg-restart.t - battery row T08 (../shared/ref/reliability-security.md
# 6.3): PostgreSQL restarted with pg_ctl restart -m fast, then -m
# immediate, several times under the T02 load of the history checker.
#
#   T08   0 violations of N1-N9 (evcheck; synchronous_commit=on, so a
#         crash keeps every acknowledged commit), 0 workers crashed
#   T08b  during every outage each request gets a JSON error answer
#         (500 BACKEND_ERROR) within the request deadline (db-timeout + 1 s),
#         none hangs
#   T08c  error rate back to 0 <= 2 s after pg_isready succeeds (from
#         probe writers with wall-clock timestamps)
#   T08d  no reconnect storm: connection attempts per worker <= pool size
#         per second while PostgreSQL is down (db_disconnects in shm)
#
# CI tier: 3 fast + 3 immediate restarts, about 2.5 s down each; full
# tier (BATTERY_FULL=1): 5 + 5 with 4 s down.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time);
use EventoTest qw(battery battery_full mult);
use EventoFault;
use EventoLoad;

my $t = EventoTest->new(need => [qw(daemon pg)], cluster_opts => { synchronous_commit => 'on' });
my $full = battery_full();
my $n_each = $full ? 5 : 3;
my $down_s = $full ? 4 : 2.5;
my $pool = 4;
my $deadline_s = 10 + 1;    # --db-timeout default 10, plus the 1 s grace of worker/db.c
my $d = $t->start(workers => 4, args => ['--db-pool', $pool]);
is($t->psql('postgres', 'SHOW synchronous_commit'), 'on', 'cluster runs with synchronous_commit=on');
my $pids0 = $d->worker_pids;

my $chk = EventoFault::checker($t, $d, clients => 8, duration => 600, timeout_ms => ($deadline_s + 4) * 1000);
diag($chk ? 'history checker: ' . join(' ', @{ $chk->{argv} }) : 'evcheck not built: N1 checked by the probe writers only');
my $probe = EventoLoad->start($d, writers => 2, keep_alive => 1, prefix => 'pgr' . $$, pause => 0.02);
ok($t->wait_for(sub { $probe->count('ok') >= 20 }, 20), 'probe writers running');

my @cycles;
my $max_rate = 0;
for my $i (1 .. 2 * $n_each) {
    my $mode = $i <= $n_each ? 'fast' : 'immediate';
    # some acknowledged traffic before each outage
    my $since = time;
    $t->wait_for(sub { scalar grep { $_->[0] eq 'ok' && $_->[7] > $since } $probe->lines }, 10);
    Time::HiRes::sleep(1);
    my $c = { mode => $mode, t_stop => time };
    $t->cluster_stop(mode => $mode);
    $c->{t_down} = time;
    # once the losses and the first quick retries are over (1 s), count
    # connection attempts (each failed one is a db_disconnect) while it
    # stays down
    my $health503;
    while (time < $c->{t_down} + 1) {
        $health503 ||= ($d->http('GET', '/health')->{status} // 0) == 503;
        Time::HiRes::sleep(0.1);
    }
    my ($w0, $tw0) = EventoFault::worker_counters($d);
    while (time < $c->{t_down} + $down_s || time < $tw0 + 1.5) {    # a window of >= 1.5 s
        $health503 ||= ($d->http('GET', '/health')->{status} // 0) == 503;
        Time::HiRes::sleep(0.1);
    }
    my ($w1, $tw1) = EventoFault::worker_counters($d);
    my $el = $tw1 - $tw0;
    for my $pid (keys %$w1) {
        next unless $w0->{$pid};
        my $n = ($w1->{$pid}{db_disconnects} // 0) - ($w0->{$pid}{db_disconnects} // 0);
        my $rate = $el > 0 ? $n / $el : 0;
        $max_rate = $rate if $rate > $max_rate;
    }
    $c->{health503} = $health503;
    $t->cluster_start;
    $c->{t_ready} = EventoFault::pg_isready($t, 30) // time;
    my $back = $t->wait_for(sub {
        my ($f) = sort { $a <=> $b } map { $_->[7] } grep { $_->[0] eq 'ok' && $_->[7] > $c->{t_ready} } $probe->lines;
        $f;
    }, 10);
    ok($back, sprintf 'restart %d (-m %s): writes acknowledged again', $i, $mode);
    $c->{back} = $back ? $back - $c->{t_ready} : 99;
    diag(sprintf 'restart %d -m %s: stop %.2f s, down %.2f s, start to ready %.2f s, writes back %.2f s after ready',
        $i, $mode, $c->{t_down} - $c->{t_stop}, $c->{t_ready} - $c->{t_down}, $c->{t_ready} - $c->{t_down} - $down_s,
        time - $c->{t_ready});
    push @cycles, $c;
}
my $t_load_end = time;
Time::HiRes::sleep(2);
$probe->stop;
my $sum;
if ($chk) {
    $chk->stop;
    $sum = $chk->wait(180);
    diag(sprintf 'evcheck final read and check: %.1f s', time - $t_load_end);
}

# ---- the probe writers' outcomes per cycle
# ok: [ok, w, i, pos, gpos, ms, id, t]   fail: [fail, w, i, ms, t, reason]
my @l = $probe->lines;
my @fail = grep { $_->[0] eq 'fail' } @l;
my @ok = grep { $_->[0] eq 'ok' } @l;
my ($worst_rec, $bad_answers, $slowest_fail, $hung) = (0, 0, 0, 0);
my @bad;
for my $k (0 .. $#cycles) {
    my $c = $cycles[$k];
    my $end = $k < $#cycles ? $cycles[$k + 1]{t_stop} : 9e9;
    my @f = grep { $_->[4] >= $c->{t_stop} - 15 && $_->[4] < $end } @fail;
    for my $f (@f) {
        my $fin = $f->[4] + $f->[3] / 1000;
        my $rec = $fin - $c->{t_ready};
        $worst_rec = $rec if $rec > $worst_rec;
    }
}
for my $f (@fail) {
    $slowest_fail = $f->[3] if $f->[3] > $slowest_fail;
    $hung++ if $f->[5] =~ /^timeout/;
    # a JSON error answer: 5xx with {"error": {"code": ...}}
    my ($st, $body) = $f->[5] =~ /^(\d{3}) (.*)$/;
    my ($jok, $v) = defined $body ? EventoTest::json_decode($body) : (0);
    my $code = $jok && ref $v eq 'HASH' && ref $v->{error} eq 'HASH' ? $v->{error}{code} : undef;
    if (!defined $st || $st !~ /^5/ || !defined $code) {
        $bad_answers++;
        push @bad, $f->[5];
    }
}
diag(sprintf 'probe: %d acknowledged, %d failed (all during outages), slowest failure %d ms', scalar @ok, scalar @fail, $slowest_fail);
diag("answers that were not a JSON 5xx error: @bad[0 .. ($#bad < 4 ? $#bad : 4)]") if @bad;
my ($lost, $stored) = $probe->verify($d);
is(scalar @$lost, 0, "probe: no acknowledged write lost ($stored stored)");

my $pids1 = $d->worker_pids;
my $crashed = grep { ($pids1->{$_} // 0) != $pids0->{$_} } keys %$pids0;
my $exits = () = $d->log_since_start =~ /worker \d+ exited status=(?!0\b)/g;
ok($d->alive, 'master alive');

# ---- T08: correctness
my $nrest = scalar @cycles;
my $title = sprintf '%d x pg_ctl restart (%d -m fast, %d -m immediate) under T02 load', $nrest, $n_each, $n_each;
if ($sum && !$sum->{error}) {
    my $v = $sum->{violations_total} // -1;
    battery('T08', $title,
        sprintf('%d violations (%s), %d ops, %d ok, %d fail, %d indeterminate, %d probe writes lost, %d workers crashed',
            $v, join(' ', map { "$_=$sum->{violations}{$_}" } grep { $sum->{violations}{$_} } sort keys %{ $sum->{violations} || {} }) || 'none',
            $sum->{ops} // 0, $sum->{ok} // 0, $sum->{fail} // 0, $sum->{indeterminate} // 0,
            scalar @$lost, $crashed + $exits),
        '0 violations of N1-N9; no worker crash',
        $v == 0 && ($sum->{exit} // 1) == 0 && !@$lost && !$crashed && !$exits);
    diag('evcheck examples: ' . join(' | ', @{ $sum->{examples} || [] })) if $v;
} else {
    diag('evcheck: ' . ($sum ? $sum->{error} : 'not built')) ;
    battery('T08', $title,
        sprintf('evcheck %s: probe writes lost %d of %d acknowledged, %d workers crashed',
            $sum ? 'failed' : 'not built', scalar @$lost, scalar @ok, $crashed + $exits),
        '0 violations of N1-N9; no worker crash',
        !$sum && !@$lost && !$crashed && !$exits);
}

# ---- T08b: every request answered with a JSON error, within the deadline
my ($ck_timeouts, $ck_maxfail) = (0, 0);
if ($chk && $sum && !$sum->{error}) {
    for my $op ($chk->history) {
        $ck_timeouts++ if ($op->{why} // '') eq 'timeout';
        if (($op->{outcome} // '') ne 'ok') {
            my $ms = (($op->{t_done_us} // 0) - ($op->{t_inv_us} // 0)) / 1000;
            $ck_maxfail = $ms if $ms > $ck_maxfail;
        }
    }
}
my $maxfail = $slowest_fail > $ck_maxfail ? $slowest_fail : $ck_maxfail;
battery('T08b', 'PostgreSQL restart: every request answered during the outage',
    sprintf('%d probe answers not a JSON 5xx, %d client timeouts (%d checker, %d probe), slowest failed request %d ms, /health 503 in %d of %d outages',
        $bad_answers, $ck_timeouts + $hung, $ck_timeouts, $hung, $maxfail,
        scalar(grep { $_->{health503} } @cycles), $nrest),
    "JSON error (500 BACKEND_ERROR) within the request deadline (${deadline_s} s), no hang",
    !$bad_answers && !$ck_timeouts && !$hung && $maxfail <= $deadline_s * 1000);

# ---- T08c: recovery
my ($worst_back) = sort { $b <=> $a } map { $_->{back} } @cycles;
my $fig = sprintf 'last failed request ended %s; first acknowledged write sent %.2f s after pg_isready (worst of %d restarts)',
    $worst_rec > 0 ? sprintf('%.2f s after pg_isready', $worst_rec) : 'before pg_isready', $worst_back, $nrest;
battery('T08c', 'PostgreSQL restart: recovery', $fig, 'error rate 0 <= 2 s after pg_isready',
    EventoFault::timing_ok($worst_rec <= 2 && $worst_back <= 2, \$fig));

# ---- T08d: reconnect attempts
$fig = sprintf '%.1f connection attempts per worker per second while down (max over workers and outages, after the first second; pool %d)', $max_rate, $pool;
battery('T08d', 'PostgreSQL restart: no reconnect storm', $fig, "<= pool size ($pool) per worker per second",
    $max_rate <= $pool);

is($d->stop, 0, 'SIGTERM: exit 0');
done_testing;
