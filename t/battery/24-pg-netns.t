#!/usr/bin/perl
# 24-pg-netns.t - battery rows T11b and T11e (../shared/ref/
# reliability-security.md 5 and 6.3 T11): PostgreSQL reached over TCP
# whose traffic the kernel shapes or drops.  The whole file (its private
# cluster, eventodbd, the history checker) runs in a network namespace of
# its own (unshare -n, t/lib/EventoFault.pm EventoFault::Netns), so tc and
# nftables act on that namespace's lo only and vanish with it.
#
#   T11b  TBF 1 mbit (burst 32kb, latency 200ms; lo mtu 1500) on the
#         PostgreSQL port only (HTB root, u32 filters on sport/dport: the
#         client-eventodbd traffic is not throttled), under the T02 load of
#         evcheck: 0 errors, 0 false conflicts, 0 violations; throughput
#         and p50/p99 reported.  Sanity: 512 KiB from PostgreSQL over the
#         shaped port takes > 3 s, 512 KiB over another port < 1 s.
#   T11e  the kernel-level partition (T11c of the reference; 23-pg-slow.t's
#         T11c is a user-space black-hole proxy): an nftables rule in an
#         inet table, output hook, drops tcp dport <pg port> for 6 s, then
#         is deleted.  Requests fail within the request deadline
#         (--db-timeout 3: 4 s), no request held by a worker longer than
#         the deadline + 1 s (shm oldest_request), recovery <= 5 s after
#         healing, indeterminate writes resolved by evcheck, 0 violations.
#         Sanity: the rule's counter shows dropped packets and a write sent
#         during the partition fails.
# Not root: skip.  Root but ip/tc/nft/unshare/nsenter missing (CI installs
# iproute2 and nftables): both rows FAIL with what is missing.
# CI tier: 12 s of T11b load, a 6 s partition; full tier (BATTERY_FULL=1):
# 60 s and 30 s.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time);
use EventoTest qw(battery battery_full mult);
use EventoFault;

my $full = battery_full();
my $b_s = $full ? 60 : 12;       # T11b load
my $hole_s = $full ? 30 : 6;     # T11e partition
my $dbt = 3;                     # --db-timeout
my $deadline_s = $dbt + 1;       # worker/db.c: statement_timeout + 1 s grace
my $ck_timeout_ms = 8000;        # a request unanswered this long is a hang

my $b_title = "PG over TCP shaped by kernel TBF 1 mbit (PG port only, netns), T02 load ${b_s} s";
my $b_pass = '0 errors, 0 false conflicts, 0 violations';
my $e_title = "server-PG partition by a kernel nftables drop of the PG port ${hole_s} s (netns; not the proxy T11c)";
my $e_pass = '0 violations; every request answered with an error, none hangs; no crash';

my $ns = EventoFault::Netns::enter(tools => [qw(ip tc nft)]);
plan skip_all => $ns->{skip} if $ns->{skip};
if (!$ns->{inside} || $ns->{error}) {
    my $why = $ns->{missing} ? join(', ', map { "$_ not installed" } @{ $ns->{missing} }) : $ns->{error};
    battery('T11b', $b_title, $why, $b_pass, 0);
    battery('T11e', $e_title, $why, $e_pass, 0);
    done_testing;
    exit 0;
}

my $t = EventoTest->new(need => [qw(daemon pg)], cluster_opts => { tcp => 1 });
my $host0 = EventoFault::Netns::host_state($t);
$t->cluster;
my $c = $t->cluster_info;
my $pgport = $c->{port};
my $db = $t->createdb;
my $d = $t->start(db_url => $t->tcp_db_url($db), workers => 2, args => ['--db-timeout', $dbt]);
ok($t->wait_for(sub {
    $t->psql($db, q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'eventodbd'
                    AND client_addr = '127.0.0.1'}) > 0 }, 10),
   "eventodbd talks to PostgreSQL over TCP 127.0.0.1:$pgport");

# psql over TCP; seconds it took, or undef when it failed.
sub tcp_psql_secs {
    my ($sql) = @_;
    my $t0 = time;
    my $r = $t->run_cmd(["$c->{bindir}/psql", '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1',
                         '-d', "host=127.0.0.1 port=$pgport dbname=$db user=postgres connect_timeout=2",
                         '-c', $sql, '-o', '/dev/null'], timeout => 30);
    return $r->{exit} || $r->{signal} ? undef : time - $t0;
}

# ---- T11b: TBF 1 mbit on the PostgreSQL port
{
    my $how = EventoFault::Netns::shape_port($t, $pgport, rate => '1mbit', burst => '32kb', latency => '200ms');
    diag("shaping: $how");
    my $pg = tcp_psql_secs(q{SELECT repeat('x', 524288)});
    ok(defined $pg && $pg > 3, sprintf 'TBF shapes: 512 KiB from PostgreSQL over the shaped port took %s s (> 3)',
       defined $pg ? sprintf('%.2f', $pg) : 'failed');
    my $other = EventoFault::Netns::transfer_secs(524288);
    ok(defined $other && $other < 1, sprintf 'other ports are not shaped: 512 KiB over another port of lo took %s s (< 1)',
       defined $other ? sprintf('%.3f', $other) : 'failed');
    my ($st0, $w0) = (EventoFault::Netns::tbf_stats($t), time);
    my $chk = EventoFault::checker($t, $d, clients => 8, duration => $b_s, timeout_ms => $ck_timeout_ms);
    if (!$chk) {
        battery('T11b', $b_title, 'evcheck not built', $b_pass, 0);
    } else {
        my $s = $chk->wait($b_s + 120);
        my ($st1, $w1) = (EventoFault::Netns::tbf_stats($t), time);
        my $kb = (($st1->{sent_bytes} // 0) - ($st0->{sent_bytes} // 0)) / 1024;
        my $drops = ($st1->{dropped} // 0) - ($st0->{dropped} // 0);
        my $errs = ($s->{fail} // 0) - ($s->{conflicts} // 0);
        my $fig = $s->{error} ? $s->{error}
            : sprintf('%d ops in %d s (%.0f/s), %d conflicts, %d errors, %d indeterminate, %d x 5xx, %d violations, '
                      . 'p50 %.0f ms p99 %.0f ms max %.0f ms; the TBF passed %.0f KiB in %.1f s with the final read (%.0f kbit/s), dropped %d packets',
                $s->{ops}, $b_s, $s->{ops_per_s} // 0, $s->{conflicts} // 0, $errs, $s->{indeterminate} // 0,
                $s->{errors_5xx} // 0, $s->{violations_total} // -1, $s->{latency_ms}{p50} // 0,
                $s->{latency_ms}{p99} // 0, $s->{latency_ms}{max} // 0, $kb, $w1 - $w0,
                $kb * 8.192 / (($w1 - $w0) || 1), $drops);
        diag('evcheck examples: ' . join(' | ', @{ $s->{examples} || [] })) if $s->{violations_total};
        battery('T11b', $b_title, $fig, $b_pass,
            !$s->{error} && $s->{exit} == 0 && ($s->{violations_total} // 1) == 0 && !$errs
            && !($s->{indeterminate} // 1) && !($s->{errors_5xx} // 1) && ($s->{ops} // 0) > 0);
        ok($kb > 0, sprintf 'the load went through the TBF (%.0f KiB)', $kb);
    }
    EventoFault::Netns::unshape($t);
    my $pg2 = tcp_psql_secs(q{SELECT repeat('x', 524288)});
    ok(defined $pg2 && $pg2 < 1, sprintf 'shaping removed: 512 KiB from PostgreSQL in %s s',
       defined $pg2 ? sprintf('%.3f', $pg2) : 'failed');
}

# ---- T11e: nftables drops tcp dport <pg port>
{
    my $dropped;
    my $r = EventoFault::fault_run($t, $d, name => 'nft', secs => $hole_s, deadline_s => $deadline_s,
        timeout_ms => $ck_timeout_ms,
        inject => sub { EventoFault::Netns::drop_port($t, $pgport) },
        heal => sub { $dropped = EventoFault::Netns::heal($t) },
        during => sub {    # in a child process
            my $t0 = time;
            my ($st) = $d->rpc($d->admin_token, 'stream.write', "nftprobe-$$", { type => 'T', data => {} });
            return [$st, time - $t0];
        });
    my $probe = ref $r->{during} eq 'ARRAY' ? $r->{during} : undef;
    ok($probe && $probe->[0] != 200, sprintf 'a write during the partition fails: status %s after %.2f s',
       $probe ? @$probe : ('none: ' . EventoTest::json_encode($r->{during}), 0));
    ok(($dropped // 0) > 0, "the nft rule dropped packets (counter: " . ($dropped // 'none') . ')');
    EventoFault::fault_rows('T11e', $e_title, $r);
}

is($d->stop, 0, 'SIGTERM, exit 0');
$t->cluster_stop(mode => 'fast');
my @left;
$t->wait_for(sub { @left = EventoFault::Netns::ns_processes(); !@left }, 10);
is("@left", '', 'nothing but this test is left in the namespace: it vanishes when the test exits');
my $host1 = EventoFault::Netns::host_state($t);
is($host1, $host0, 'the host namespace: nft ruleset and lo qdiscs unchanged');
unlike($host1, qr/evt_netns|qdisc (?:htb|tbf)/, 'no table or qdisc of this test on the host');
done_testing;
