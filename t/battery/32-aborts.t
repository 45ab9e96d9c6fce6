#!/usr/bin/perl
# 32-aborts.t - battery row T12: client aborts
# (../shared/ref/reliability-security.md 6.3).
#
#   T12a  1,000 stream.write requests cut at random byte offsets (in the
#         head, in the body, or just after the complete body), half with
#         a FIN and half with an RST (SO_LINGER 0), in waves of 50
#   T12b  200 SSE subscribers reset with SO_LINGER 0 at once
#   T12c  100 /import bodies cut mid-way (FIN or RST)
#
# Pass figures: 0 worker crashes; open fds per worker back to the baseline
# +-5 within 5 s; no `idle in transaction` session within 1 s; the shm SSE
# subscriber gauge back to 0 within 1 s; a write cut before its body was
# complete never committed; one cut after its complete body committed at
# most once (N3); an import batch is all or nothing (N10).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Socket qw(SOL_SOCKET SO_LINGER);
use IO::Select;
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN battery battery_full json_encode mult arr obj);

my $FULL = battery_full();
my $NREQ = 1000;
my $NSSE = 200;
my $NIMP = 100;
srand($ENV{EVENTODB_SEED} // $$);
my $t = EventoTest->new;
my $d = $t->start(workers => 2);
my $A = ADMIN_TOKEN;
my %workers = %{ $d->worker_pids };
my $RUN = sprintf '%x', $$;
my $log0 = length $d->log_since_start;

sub gauge {
    my ($name) = @_;
    my $j = eval { $d->evdump_json } or return undef;
    return $j->{totals}{counters}{$name};
}
sub fds { return { map { $_ => $d->fd_count($workers{$_}) // -1 } keys %workers } }
sub rst_close {
    my ($s) = @_;
    setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
    close $s;
}
sub idle_in_tx {
    my $n = eval { $t->psql($d->db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   . "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()") };
    return $n // -1;
}
# Wait until $cond returns true; returns the seconds it took, or undef.
sub settle {
    my ($cond, $secs) = @_;
    my $t0 = time;
    while (1) {
        return time - $t0 if $cond->();
        return undef if time - $t0 > $secs * mult();
        Time::HiRes::sleep(0.02);
    }
}

# Warm up: every worker opens its database pool, then the fd baseline.
for my $i (1 .. 40) { $d->rpc($A, 'stream.write', "warm$RUN-1", { type => 'T', data => { i => $i } }) }
my $base = fds();
diag('fd baseline: ' . join(', ', map { "worker $_: $base->{$_}" } sort keys %$base));

# ---- T12a: 1,000 cut requests
my (%cut_before, %cut_after, $nfin, $nrst);
{
    my @where = (0, 0, 0);
    my $n = 0;
    while ($n < $NREQ) {
        my @wave;
        for (1 .. 50) {
            last if $n >= $NREQ;
            $n++;
            my $id = sprintf '0190a000-0000-7000-8000-%012x', $n;
            my $stream = "abort$RUN-" . ($n % 20);
            my $body = json_encode(['stream.write', $stream, { type => 'Cut', data => { n => $n, pad => 'p' x int(rand 200) } },
                                    { id => $id }]);
            my $head = "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\nContent-Type: application/json\r\n"
                     . "Content-Length: " . length($body) . "\r\n\r\n";
            my $req = $head . $body;
            my $kind = $n % 3;    # 0: in the head, 1: in the body, 2: after the complete body
            my $k = $kind == 0 ? 1 + int(rand(length($head) - 1))
                  : $kind == 1 ? length($head) + int(rand(length $body))
                  : length $req;
            $where[$kind]++;
            if ($kind == 2) { $cut_after{$id} = 1 } else { $cut_before{$id} = 1 }
            my $s = eval { $d->connect } or next;
            $d->send_all($s, substr($req, 0, $k));
            push @wave, $s;
        }
        # Cut them all: alternately FIN and RST.
        my $i = 0;
        for my $s (@wave) {
            if ($i++ % 2) { rst_close($s); $nrst++ } else { close $s; $nfin++ }
        }
    }
    diag("cut: $where[0] in the head, $where[1] in the body, $where[2] after the body; $nfin FIN, $nrst RST");
}
# Control: complete writes with ids of the same form are found below.
my @control;
for my $i (1 .. 20) {
    my $id = sprintf '0190a000-0000-7000-8000-%012x', $NREQ + $i;
    my ($st) = $d->rpc($A, 'stream.write', "abort$RUN-" . ($i % 20), { type => 'Ok', data => {} }, { id => $id });
    push @control, $id if $st == 200;
}
# Responses to normal requests are not disturbed.
is($d->http('GET', '/health')->{status}, 200, 'served after 1,000 cut requests');
my $fd_secs_a = settle(sub { my $f = fds(); !grep { abs($f->{$_} - $base->{$_}) > 5 } keys %$base }, 5);
my $fds_a = fds();
my (%seen, $dups);
$dups = 0;
for my $i (0 .. 19) {
    my ($st, $b) = $d->rpc($A, 'stream.get', "abort$RUN-$i", { batchSize => -1 });
    for my $m (@{ arr($b) }) { $dups++ if $seen{ $m->[0] }++ }
}
my $before_committed = grep { $seen{$_} } keys %cut_before;
my $after_committed = grep { $seen{$_} } keys %cut_after;
is(scalar(grep { $seen{$_} } @control), 20, 'control: the 20 complete writes are found by id');
is($before_committed, 0, 'no write cut before its complete body was committed');
is($dups, 0, 'no message id stored twice (N3)');
my $tx_a = settle(sub { idle_in_tx() == 0 }, 1);
ok(defined $tx_a, 'no idle-in-transaction session');
my $alive_a = $d->alive && !grep { !EventoTest::pid_alive($workers{$_}) } keys %workers;
battery('T12a', "$NREQ requests cut at random offsets (head/body/after body; FIN and RST)",
        sprintf('0 crashes: %s; fds back to baseline +-5 in %s (%s); %d cut before the full body committed; '
                . '%d of %d cut after it committed, 0 twice (dups %d); idle in transaction: %s',
                $alive_a ? 'yes' : 'NO', defined $fd_secs_a ? sprintf('%.2f s', $fd_secs_a) : 'NOT within 5 s',
                join(', ', map { "w$_ $base->{$_}->$fds_a->{$_}" } sort keys %$base),
                $before_committed, $after_committed, scalar keys %cut_after, $dups,
                defined $tx_a ? 0 : 'some after 1 s'),
        '0 crashes; fds baseline +-5 within 5 s; cut before the body: 0 committed; after: at most once',
        $alive_a && defined $fd_secs_a && $before_committed == 0 && $dups == 0 && defined $tx_a
        && (grep { $seen{$_} } @control) == 20);

# ---- T12b: 200 SSE subscribers reset with SO_LINGER 0
{
    my (@subs, %buf);
    for my $i (1 .. $NSSE) {
        my $s = eval { $d->connect } or last;
        $d->send_all($s, "GET /subscribe?stream=ssecut$RUN-$i HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\n\r\n");
        push @subs, $s;
    }
    my $sel = IO::Select->new(@subs);
    my %ready;
    my $deadline = time + 20 * mult();
    while (keys %ready < @subs && time < $deadline) {
        for my $s ($sel->can_read(0.2)) {
            my $n = sysread $s, $buf{fileno $s}, 4096, length($buf{fileno $s} // '');
            if (!$n) { $sel->remove($s); next }
            $ready{fileno $s} = 1 if $buf{fileno $s} =~ /: ready/;
        }
    }
    my $nready = keys %ready;
    is($nready, scalar @subs, "$NSSE subscribers ready");
    my $g_open = settle(sub { (gauge('sse_subscribers') // -1) == $nready }, 5);
    my $gauge_before = gauge('sse_subscribers') // -1;
    my $t0 = time;
    rst_close($_) for @subs;
    my $to_zero = settle(sub { (gauge('sse_subscribers') // -1) == 0 }, 5);
    my $fd_secs = settle(sub { my $f = fds(); !grep { abs($f->{$_} - $base->{$_}) > 5 } keys %$base }, 5);
    my $f = fds();
    my $alive = $d->alive && !grep { !EventoTest::pid_alive($workers{$_}) } keys %workers;
    battery('T12b', "$NSSE SSE subscribers reset (SO_LINGER 0)",
            sprintf('%d ready, shm gauge %d; back to 0 in %s; fds back in %s (%s); 0 crashes: %s', $nready,
                    $gauge_before, defined $to_zero ? sprintf('%.2f s', $to_zero) : 'NOT within 5 s',
                    defined $fd_secs ? sprintf('%.2f s', $fd_secs) : 'NOT within 5 s',
                    join(', ', map { "w$_ $base->{$_}->$f->{$_}" } sort keys %$base), $alive ? 'yes' : 'NO'),
            'SSE subscriber count (shm) back to 0 within 1 s; fds baseline +-5 within 5 s; 0 crashes',
            $nready == $NSSE && $gauge_before == $nready && defined $to_zero && $to_zero <= 1
            && defined $fd_secs && $alive);
}

# ---- T12c: 100 imports cut mid-body
{
    my $T = $d->create_ns("abortimp$RUN");
    my (%sent, %expect_max);
    my ($nbig, $cuts_fin, $cuts_rst) = (0, 0, 0);
    my $last_cut;
    for my $i (1 .. $NIMP) {
        # One import in ten sends more than a batch (1,000 records) first.
        my $nrec = $i % 10 == 0 ? 1001 + int(rand 300) : 1 + int(rand 400);
        $nbig++ if $nrec > 1000;
        my $stream = "imp$RUN$i-1";
        my $body = '';
        for my $j (0 .. $nrec - 1) {
            $body .= json_encode({ id => sprintf('0190b000-0000-7000-8000-%06x%06x', $i, $j), stream => $stream,
                                   type => 'T', pos => $j, gpos => 1_000_000 + $i * 10_000 + $j,
                                   data => { j => $j }, meta => undef, time => '2025-07-15T10:00:00Z' }) . "\n";
        }
        # Cut inside the next record, well before the announced length.
        my $extra = json_encode({ id => 'x', stream => $stream }) ;
        $body .= substr($extra, 0, int(rand length $extra));
        my $s = eval { $d->connect } or next;
        $d->send_all($s, "POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\n"
                       . "Content-Type: application/x-ndjson\r\nContent-Length: " . (length($body) * 2 + 1000)
                       . "\r\n\r\n$body");
        if ($nrec > 1000) {
            # Let the first batch be taken in (its progress event), then cut.
            my ($data) = $d->read_raw($s, timeout => 10, until => qr/"imported":1000/);
        }
        if ($i % 2) { rst_close($s); $cuts_rst++ } else { close $s; $cuts_fin++ }
        $sent{$stream} = $nrec;
        $last_cut = time;
    }
    my $tx = settle(sub { idle_in_tx() == 0 }, 1);
    my $tx_secs = defined $tx ? time - $last_cut : undef;
    my ($bad, $stored_batches) = (0, 0);
    for my $stream (sort keys %sent) {
        my ($st, $b) = $d->rpc($T, 'stream.get', $stream, { batchSize => -1 });
        my $n = scalar @{ arr($b) };
        $stored_batches++ if $n == 1000;
        # All or nothing per batch of 1,000: 0, or 1,000 when more than that was sent.
        unless ($n == 0 || ($n == 1000 && $sent{$stream} > 1000)) {
            $bad++;
            diag("$stream: $n stored of $sent{$stream} sent");
        }
    }
    my $fd_secs = settle(sub { my $f = fds(); !grep { abs($f->{$_} - $base->{$_}) > 5 } keys %$base }, 5);
    my $f = fds();
    my $alive = $d->alive && !grep { !EventoTest::pid_alive($workers{$_}) } keys %workers;
    battery('T12c', "$NIMP /import bodies cut mid-way ($cuts_fin FIN, $cuts_rst RST)",
            sprintf('%d partial batches stored (of %d imports; %d full batches committed before the cut); '
                    . 'idle in transaction 0 %s; fds back in %s (%s); 0 crashes: %s', $bad, $NIMP, $stored_batches,
                    defined $tx_secs ? sprintf('%.2f s after the last cut', $tx_secs) : 'NOT within 1 s',
                    defined $fd_secs ? sprintf('%.2f s', $fd_secs) : 'NOT within 5 s',
                    join(', ', map { "w$_ $base->{$_}->$f->{$_}" } sort keys %$base), $alive ? 'yes' : 'NO'),
            'batches all or nothing (N10); idle in transaction = 0 within 1 s; fds +-5 within 5 s; 0 crashes',
            $bad == 0 && defined $tx && defined $fd_secs && $alive);
}

# ---- nothing crashed
is($d->http('GET', '/health')->{status}, 200, '/health at the end');
is_deeply($d->worker_pids, \%workers, 'no worker was replaced');
my $log = substr($d->log_since_start, $log0);
unlike($log, qr/worker \d+ exited/, 'no worker exit in the log');
my $j = eval { $d->evdump_json };
is($j ? $j->{totals}{counters}{http_responses}{500} : -1, 0, '0 responses 500');

done_testing;
