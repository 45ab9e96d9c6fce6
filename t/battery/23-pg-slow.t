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

# A fault under load and its two rows (t/lib/EventoFault.pm).
sub fault_run {
    my ($d, $name, $inject, $heal, $secs) = @_;
    return EventoFault::fault_run($t, $d, name => $name, inject => $inject, heal => $heal, secs => $secs,
                                  deadline_s => $deadline_s, timeout_ms => $ck_timeout_ms);
}

sub fault_rows { EventoFault::fault_rows(@_) }

# ---- (c) partition: the proxy holds everything
{
    my $r = fault_run($dp, 'hole', sub { $proxy->hold }, sub { $proxy->release }, $hole_s);
    fault_rows('T11c', "server-PG black hole ${hole_s} s (user-space proxy; T11e: kernel drop)", $r);
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
