#!/usr/bin/perl
# 23-pg-slow.t - battery row T11 (../shared/ref/reliability-security.md
# 6.3): PostgreSQL slow, cut off or frozen, under the T02 load of the
# history checker.
#
#   T11a  a delay proxy (t/lib/EventoFault.pm, +50 ms each way) between
#         eventodbd and PostgreSQL: 0 errors, 0 violations (so no false
#         conflict: every 409 is a write that is absent, N5)
#   T11c  the same proxy turned into a black hole for 6 s (a partition at
#         the TCP level; nftables is not installed here): requests fail
#         within the request deadline, recovery <= 5 s after healing
#   T11d  SIGSTOP of the postmaster and every backend for 10 s: requests
#         fail within the request deadline (--db-timeout 3: 4 s), no request
#         held by a worker longer than the deadline + 1 s (shm
#         oldest_request), recovery <= 5 s after SIGCONT, indeterminate
#         writes resolved by the checker, 0 violations
# CI tier: 10 s of (a), 6 s of (c), 10 s of (d); full tier: 60 s of (a),
# 30 s faults.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time);
use EventoTest qw(battery battery_full mult);
use EventoFault;
use EventoLoad;

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $full = battery_full();
my $a_s = $full ? 60 : 10;
my $fault_s = $full ? 30 : 10;   # SIGSTOP (d)
my $hole_s = $full ? 30 : 6;     # black hole (c)
my $dbt = 3;                  # --db-timeout
my $deadline_s = $dbt + 1;    # worker/db.c: statement_timeout + 1 s grace
my $ck_timeout_ms = 8000;     # a request unanswered this long is a hang

$t->cluster;
my $proxy = EventoFault::Proxy->start($t, delay_ms => 50);
my $db = $t->createdb;
my $dp = $t->start(db_url => $proxy->conninfo($db), workers => 2, args => ['--db-timeout', $dbt]);

# ---- (a) +50 ms each way
{
    my $t0 = time;
    my ($st) = $dp->rpc($dp->admin_token, 'stream.version', 'probe-x');
    my $rtt = time - $t0;
    diag(sprintf 'one request through the delay proxy: %.0f ms', $rtt * 1000);
    my $chk = EventoFault::checker($t, $dp, clients => 8, duration => $a_s, timeout_ms => $ck_timeout_ms);
    if (!$chk) {
        battery('T11a', 'PG behind a +50 ms/direction proxy', 'evcheck not built', '0 errors, 0 false conflicts', 0);
    } else {
        my $s = $chk->wait($a_s + 120);
        my $errs = ($s->{fail} // 0) - ($s->{conflicts} // 0);
        my $fig = $s->{error} ? $s->{error}
            : sprintf('%d ops in %d s (%.0f/s), %d conflicts, %d errors, %d indeterminate, %d x 5xx, %d violations, p50 %.0f ms p99 %.0f ms',
                $s->{ops}, $a_s, $s->{ops_per_s} // 0, $s->{conflicts} // 0, $errs, $s->{indeterminate} // 0,
                $s->{errors_5xx} // 0, $s->{violations_total} // -1, $s->{latency_ms}{p50} // 0, $s->{latency_ms}{p99} // 0);
        battery('T11a', "PG behind a +50 ms/direction proxy, T02 load ${a_s} s", $fig,
            '0 errors, 0 false conflicts (0 violations)',
            !$s->{error} && $s->{exit} == 0 && ($s->{violations_total} // 1) == 0 && !$errs
            && !($s->{indeterminate} // 1) && !($s->{errors_5xx} // 1) && ($s->{ops} // 0) > 0);
    }
}

# A fault under load: checker + probe writers, inject, hold, heal.
sub fault_run {
    my ($d, $name, $inject, $heal, $secs) = @_;
    my %r = (name => $name);
    my $pids0 = $d->worker_pids;
    my $chk = EventoFault::checker($t, $d, clients => 8, duration => 600, timeout_ms => $ck_timeout_ms);
    my $probe = EventoLoad->start($d, writers => 2, keep_alive => 1, prefix => "$name$$", pause => 0.02);
    ok($t->wait_for(sub { $probe->count('ok') >= 10 }, 20), "$name: load running");
    Time::HiRes::sleep(1);
    $r{t_fault} = time;
    $inject->();
    my ($oldest, $lag) = (0, 0);
    while (time < $r{t_fault} + $secs) {
        my $w = EventoFault::worker_counters($d);
        for my $x (values %$w) {
            $oldest = $x->{oldest_request_ns} if $x->{oldest_request_ns} > $oldest;
            $lag = $x->{loop_lag_ns} if $x->{loop_lag_ns} > $lag;
        }
        Time::HiRes::sleep(0.25);
    }
    $heal->();
    $r{t_heal} = time;
    my $back = $t->wait_for(sub {
        my ($f) = sort { $a <=> $b } map { $_->[7] } grep { $_->[0] eq 'ok' && $_->[7] >= $r{t_heal} } $probe->lines;
        $f;
    }, 15);
    $r{first_ok} = defined $back ? $back - $r{t_heal} : undef;
    # keep going a little, still watching the workers
    my $until = time + 3;
    while (time < $until) {
        my $w = EventoFault::worker_counters($d);
        for my $x (values %$w) {
            $oldest = $x->{oldest_request_ns} if $x->{oldest_request_ns} > $oldest;
            $lag = $x->{loop_lag_ns} if $x->{loop_lag_ns} > $lag;
        }
        Time::HiRes::sleep(0.25);
    }
    $probe->stop;
    @r{qw(oldest_s lag_s)} = ($oldest / 1e9, $lag / 1e9);
    if ($chk) {
        $chk->stop;
        $r{sum} = $chk->wait(180);
        ($r{ck_timeouts}, $r{ck_maxfail}) = (0, 0);
        for my $op ($chk->history) {
            $r{ck_timeouts}++ if ($op->{why} // '') eq 'timeout';
            next if ($op->{outcome} // '') eq 'ok';
            my $ms = (($op->{t_done_us} // 0) - ($op->{t_inv_us} // 0)) / 1000;
            $r{ck_maxfail} = $ms if $ms > $r{ck_maxfail};
        }
    }
    # probe: ok [ok, w, i, pos, gpos, ms, id, t]; fail [fail, w, i, ms, t, reason]
    my @l = $probe->lines;
    my @fail = grep { $_->[0] eq 'fail' } @l;
    ($r{p_maxfail}, $r{p_hung}, $r{p_bad}, $r{last_fail}) = (0, 0, 0, undef);
    for my $f (@fail) {
        $r{p_maxfail} = $f->[3] if $f->[3] > $r{p_maxfail};
        $r{p_hung}++ if $f->[5] =~ /^timeout/;
        $r{p_bad}++ unless defined EventoFault::json_5xx_code($f->[5]);
        my $end = $f->[4] + $f->[3] / 1000;
        $r{last_fail} = $end if $f->[4] >= $r{t_heal} - $deadline_s - 1 && (!defined $r{last_fail} || $end > $r{last_fail});
    }
    $r{p_fail} = scalar @fail;
    $r{p_ok} = grep { $_->[0] eq 'ok' } @l;
    $r{recovery} = defined $r{last_fail} && $r{last_fail} > $r{t_heal} ? $r{last_fail} - $r{t_heal} : 0;
    $r{recovery} = $r{first_ok} if defined $r{first_ok} && $r{first_ok} > $r{recovery};
    my ($lost, $stored) = $probe->verify($d);
    $r{lost} = scalar @$lost;
    my $pids1 = $d->worker_pids;
    $r{crashed} = grep { ($pids1->{$_} // 0) != $pids0->{$_} } keys %$pids0;
    diag(sprintf '%s: probe %d ok, %d failed (slowest %d ms, %d not a JSON 5xx, %d timeouts), first ok %.2f s after healing, '
        . 'oldest request held %.2f s, loop lag %.3f s, checker slowest failure %d ms',
        $name, $r{p_ok}, $r{p_fail}, $r{p_maxfail}, $r{p_bad}, $r{p_hung}, $r{first_ok} // -1,
        $r{oldest_s}, $r{lag_s}, $r{ck_maxfail} // -1);
    return \%r;
}

sub fault_rows {
    my ($id, $title, $r) = @_;
    my $s = $r->{sum};
    my $viol = $s && !$s->{error} ? $s->{violations_total} // -1 : undef;
    my $corr = sprintf('%s, %d indeterminate writes resolved, %d client timeouts, %d answers not a JSON 5xx, %d probe writes lost, %d workers crashed',
        defined $viol ? "$viol violations" : 'evcheck ' . ($s ? 'failed' : 'not built'),
        $s && !$s->{error} ? $s->{indeterminate} // 0 : 0,
        ($r->{ck_timeouts} // 0) + $r->{p_hung}, $r->{p_bad}, $r->{lost}, $r->{crashed});
    diag("evcheck: $s->{error}") if $s && $s->{error};
    diag('evcheck examples: ' . join(' | ', @{ $s->{examples} || [] })) if $viol;
    battery($id, $title, $corr, '0 violations; every request answered with an error, none hangs; no crash',
        (!$s || (defined $viol && $viol == 0 && $s->{exit} == 0)) && !$r->{ck_timeouts} && !$r->{p_hung}
        && !$r->{p_bad} && !$r->{lost} && !$r->{crashed});
    my $maxfail = ($r->{ck_maxfail} // 0) > $r->{p_maxfail} ? $r->{ck_maxfail} : $r->{p_maxfail};
    my $fig = sprintf('slowest failed request %.2f s, oldest request held by a worker %.2f s, recovery %.2f s after healing',
        $maxfail / 1000, $r->{oldest_s}, $r->{recovery});
    battery("${id}t", "$title: timings", $fig,
        "requests fail <= deadline + 1 s ($deadline_s s; measured client-side); none held > deadline + 1 s; recovery <= 5 s",
        EventoFault::timing_ok($maxfail <= $deadline_s * 1000 + 1000 && $r->{oldest_s} <= $deadline_s + 1
                               && defined $r->{first_ok} && $r->{recovery} <= 5, \$fig));
}

# ---- (c) partition: the proxy holds everything
{
    my $r = fault_run($dp, 'hole', sub { $proxy->hold }, sub { $proxy->release }, $hole_s);
    fault_rows('T11c', "server-PG black hole ${hole_s} s (proxy; no nftables here)", $r);
}
is($dp->stop, 0, 'proxied daemon: SIGTERM, exit 0');

# ---- (d) PostgreSQL frozen
{
    my $d = $t->start(workers => 2, args => ['--db-timeout', $dbt]);

    # A live but blocked PostgreSQL is not a frozen one: a write waiting on
    # a lock longer than --db-timeout is cancelled by statement_timeout (a
    # clean, definite error on a connection that stays up), not cut off.
    my ($st0) = $d->rpc($d->admin_token, 'stream.write', 'locked-0', { type => 'T', data => {} });
    my $schema = $t->psql($d->db, q{SELECT schema_name FROM eventodb_store.namespaces WHERE id = 'default'});
    my ($locker, $locked) = $t->lock_messages($d->db, $schema, $dbt + 1);
    ok($locked, 'messages table locked for ' . ($dbt + 1) . ' s');
    my $t0 = time;
    my ($st, $b) = $d->rpc($d->admin_token, 'stream.write', 'locked-1', { type => 'T', data => { x => 1 } });
    my $el = time - $t0;
    my $msg = ref $b eq 'HASH' && ref $b->{error} eq 'HASH' ? "$b->{error}{code}: $b->{error}{message}" : "$st";
    like($msg, qr/^BACKEND_ERROR: .*statement timeout/, sprintf('lock wait: BACKEND_ERROR from statement_timeout after %.1f s', $el));
    waitpid $locker, 0;
    $t0 = time;
    ($st) = $d->rpc($d->admin_token, 'stream.write', 'locked-1', { type => 'T', data => { x => 2 } });
    is($st, 200, sprintf 'lock gone: the next write succeeds at once (%.2f s)', time - $t0);
    my ($st2, $msgs) = $d->rpc($d->admin_token, 'stream.get', 'locked-1', { batchSize => -1 });
    is(scalar @{ EventoTest::arr($msgs) }, 1, 'the cancelled write was not committed');
    unlike($d->log_since_start, qr/PostgreSQL is not answering/, 'a lock wait does not count as PostgreSQL not answering');

    my $nfrozen;
    my $r = fault_run($d, 'stop', sub { $nfrozen = EventoFault::freeze($t) }, sub { EventoFault::thaw() }, $fault_s);
    diag("froze $nfrozen PostgreSQL processes");
    fault_rows('T11d', "SIGSTOP PostgreSQL (postmaster + backends) ${fault_s} s", $r);
    is($d->stop, 0, 'SIGTERM, exit 0');
}
$proxy->stop;
done_testing;
