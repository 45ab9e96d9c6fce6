#!/usr/bin/perl
# 22-disk-full.t - battery row T10 (../shared/ref/reliability-security.md
# 6.3): disk full.  PGDATA lives on a small tmpfs with a filler file
# placed beforehand; 100 KB events (incompressible) are written until
# PostgreSQL runs out of space, then the filler is deleted and PostgreSQL
# restarted.  Twice: first pg_wal (moved to a second tmpfs, as initdb
# --waldir would) fills: a PANIC; then the data files fill: an ERROR per
# write.
# The cluster runs with synchronous_commit=on.
#
#   T10   every write acknowledged before (and during) ENOSPC is readable
#         afterwards, exactly where it was acknowledged (N1, and N2 per
#         stream); writes during ENOSPC get JSON errors, never an ok that
#         is lost; the server survives (no worker crash, master alive)
#   T10t  the server serves writes again <= 5 s after PostgreSQL is up
#   T10b  eventodbd's own log on a full tmpfs: it keeps serving
# Root only (mount).  CI tier: a 192 MiB tmpfs; full tier: 256 MiB.
#
# After a restart each worker's pool reconnects on its own back-off (up
# to 500 ms), so a request on a new connection may land on a worker whose
# pool is still down and get a 500 "PostgreSQL is unavailable": an honest
# error, not a loss.  Hence:
#  - the final read retries a stream until it is answered (<= 30 s).  It
#    once counted such a failed read as all of the stream's writes
#    missing: a false "61 missing" (one stream's acknowledged writes;
#    the daemon log had the read's BACKEND_ERROR in that window).  A
#    stream still unreadable fails the row, reported apart ("unreadable");
#  - "unavailable" before a phase's first ok is polled past, not counted
#    as the phase's ENOSPC errors (without the pg_isready wait it ended the
#    data phase with 0 writes); each phase must acknowledge writes.
# A missing write is reported with its phase, stream, position, time of
# acknowledgement, and the daemon's and PostgreSQL's log lines nearest it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use HTTP::Tiny;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time);
use Time::Local qw(timegm);
use EventoTest qw(battery battery_full mult new_id);
use EventoFault;

plan skip_all => 'needs root (mount -t tmpfs)' unless $> == 0;
my $copts = { synchronous_commit => 'on' };
my $t = EventoTest->new(need => [qw(daemon pg)], cluster_opts => $copts);
my $full = battery_full();
my $fs = EventoFault::Tmpfs->mount($t, size => $full ? '256m' : '192m');
$copts->{data_dir} = $fs->dir . '/data';
# pg_wal on a second tmpfs (what initdb --waldir does)
$t->cluster;
$t->cluster_stop(mode => 'fast');
my $wfs = EventoFault::Tmpfs->mount($t, size => '128m');
my $data = $copts->{data_dir};
my $wal = $wfs->dir . '/pg_wal';
my $r = $t->run_cmd(['sh', '-c', "cp -a '$data/pg_wal' '$wal' && rm -rf '$data/pg_wal' && ln -s '$wal' '$data/pg_wal'"]);
is($r->{exit}, 0, 'pg_wal moved to its own tmpfs') or diag($r->{stderr});
$t->cluster_start;
my $d = $t->start(workers => 2);
my $pids0 = $d->worker_pids;

my (@acks, @errs, %bad, @rec, %phase);
my $T0 = time;
sub stamp { diag(sprintf '[%.1f s] %s', time - $T0, $_[0]) }

# Write 100 KB events (incompressible) until 30 errors in a row.
sub fill {
    my ($label) = @_;
    open my $rnd, '<:raw', '/dev/urandom' or die "/dev/urandom: $!";
    my ($streak, $first_err, $ok_after, $nacks, $nerr, $early) = (0, undef, 0, 0, 0, 0);
    my $t0 = time;
    for (my $i = 0; $i < 4000 && time - $t0 < 120 * mult(); $i++) {
        read $rnd, my $bytes, 75 * 1024;
        my $stream = 'full-' . ($i % 10);
        my $id = new_id();
        my ($st, $b) = $d->rpc_ka($d->admin_token, 'stream.write', $stream,
            { type => 'Blob', data => { p => $label, i => $i, blob => encode_base64($bytes, '') } }, { id => $id });
        if ($st == 200 && ref $b eq 'HASH' && defined $b->{position}) {
            push @acks, [$stream, $b->{position}, $b->{globalPosition}, $id, $label, time];
            $nacks++;
            $ok_after++ if defined $first_err;
            $streak = 0;
            next;
        }
        my $code = ref $b eq 'HASH' && ref $b->{error} eq 'HASH' ? $b->{error}{code} : undef;
        if (!$nacks && defined $code && ($b->{error}{message} // '') =~ /PostgreSQL is unavailable|connection to PostgreSQL lost/) {
            # Before the phase's first ok: this worker's pool is still
            # reconnecting after the previous restart, nothing is full
            # yet.  Not an ENOSPC error; poll again.
            $early++;
            Time::HiRes::sleep(0.05);
            next;
        }
        if (!defined $code) { $bad{$st}++ } else { push @errs, [$label, $st, $code, $b->{error}{message} // ''] }
        $nerr++;
        $first_err //= time;
        last if ++$streak >= 30;
    }
    close $rnd;
    my %m;
    $m{ substr($_->[3], 0, 100) }++ for grep { $_->[0] eq $label } @errs;
    diag(sprintf '%s: %d acknowledged 100 KB writes in %.1f s, then %d errors; %d ok after the first error%s',
        $label, $nacks, time - $t0, $nerr, $ok_after,
        $early ? "; $early 'unavailable' before the first ok (a worker still reconnecting)" : '');
    diag("  $m{$_} x $_") for grep { defined } (sort { $m{$b} <=> $m{$a} } keys %m)[0 .. 2];
    $phase{$label} = { acks => $nacks, errs => $nerr, ok_after => $ok_after };
    return $nerr;
}

# Free the filler, restart PostgreSQL, time until a write succeeds.
sub recover {
    my ($label, $filler_fs) = @_;
    $filler_fs->remove('filler');
    eval { $t->cluster_stop(mode => 'immediate') };
    (my $e = $@) =~ s/\n.*//s;
    diag("$label: pg_ctl stop: $e") if $e;
    my $t_start = time;
    eval { $t->cluster_start };
    ($e = $@) =~ s/\n.*//s;
    diag("$label: pg_ctl start: $e") if $e;
    my $t_up = EventoFault::pg_isready($t, 60);
    ok($t_up, sprintf '%s: PostgreSQL up again (%.1f s after pg_ctl start)', $label, ($t_up // time) - $t_start);
    return undef unless $t_up;
    my $t_back = $t->wait_for(sub {
        my $ts = time;
        my ($st) = $d->rpc($d->admin_token, 'stream.write', 'after-full', { type => 'T', data => {} });
        $st == 200 ? $ts : 0;
    }, 30);
    push @rec, defined $t_back ? $t_back - $t_up : 99;
    return $t_back;
}

# ---- phase 1: pg_wal, on its own tmpfs, fills (PANIC)
stamp('daemon up');
my $log0 = length EventoFault::pg_log($t);
$wfs->fill_file('filler', ($wfs->free_bytes // 0) - (20 << 20));
diag(sprintf 'pg_wal on a tmpfs, %.1f MiB free after the filler', ($wfs->free_bytes // 0) / 1048576);
fill('wal');
my $pglog = substr(EventoFault::pg_log($t), $log0);
my $panic = $pglog =~ /PANIC:.*No space left/ ? 1 : 0;
my @pl = grep { /PANIC|terminated by signal|shutting down because/ } split /\n/, $pglog;
diag('wal: PostgreSQL log: ' . join(' | ', map { substr($_, 0, 140) } @pl[0 .. ($#pl < 2 ? $#pl : 2)]));
ok($panic, 'wal: PostgreSQL PANICked on ENOSPC');
recover('wal', $wfs);

# ---- phase 2: the data files' filesystem fills (an ERROR per write)
stamp('WAL phase done');
$log0 = length EventoFault::pg_log($t);
$fs->fill_file('filler', ($fs->free_bytes // 0) - (40 << 20));
diag(sprintf 'PGDATA on a tmpfs, %.1f MiB free after the filler; pg_wal %.1f MiB free',
    ($fs->free_bytes // 0) / 1048576, ($wfs->free_bytes // 0) / 1048576);
fill('data');
$pglog = substr(EventoFault::pg_log($t), $log0);
ok($pglog =~ /could not extend file.*No space left on device/, 'data: PostgreSQL ran out of space for data');
recover('data', $fs);

# ---- every acknowledged write is where it was acknowledged
stamp('data phase done');
my ($missing, $moved, $gaps, $nread, $unreadable, $retried) = (0, 0, 0, 0, 0, 0);
my (%by, @lost, %lost_in);
push @{ $by{ $_->[0] } }, $_ for @acks;
for my $s (map { "full-$_" } 0 .. 9) {
    # 6 MB of JSON per stream: JSON::PP would take seconds, so pick the
    # [id, type, position, globalPosition, ...] heads out of the raw body.
    # A failed read (e.g. 500 "PostgreSQL is unavailable" from a worker
    # still reconnecting) is retried; it says nothing about the writes.
    my $res;
    my $got = $t->wait_for(sub {
        $res = HTTP::Tiny->new(timeout => 60 * mult())->post($d->base_url . '/rpc', {
            headers => { 'content-type' => 'application/json', authorization => 'Bearer ' . $d->admin_token },
            content => EventoTest::json_encode(['stream.get', $s, { batchSize => -1 }]) });
        return 1 if $res->{status} == 200 && $res->{content} =~ /^\s*\[/;
        $retried++;
        diag(sprintf 'final read of %s: %s %s', $s, $res->{status}, substr($res->{content} // '', 0, 160)) if $retried <= 5;
        return 0;
    }, 30);
    if (!$got) { $unreadable += @{ $by{$s} || [] }; next }
    my $msgs = [];
    push @$msgs, [$1, $2, $3, $4] while $res->{content} =~ /\["([0-9a-f-]{36})","([^"]*)",(\d+),(\d+),/g;
    my %at = map { $_->[2] => $_ } @$msgs;
    $nread += @$msgs;
    for my $k (0 .. $#$msgs) { $gaps++ if $msgs->[$k][2] != $k }
    for my $a (@{ $by{$s} || [] }) {
        my $m = $at{ $a->[1] };
        if (!$m) { $missing++; push @lost, $a; $lost_in{ $a->[4] }++ }
        elsif ($m->[0] ne $a->[3] || $m->[3] != $a->[2]) { $moved++ }
    }
}
# Evidence for a loss: which phase, where, when, and the logs around it.
if (@lost) {
    diag(sprintf 'missing: %d from the WAL phase, %d from the data phase', $lost_in{wal} // 0, $lost_in{data} // 0);
    for my $a (@lost[0 .. ($#lost < 9 ? $#lost : 9)]) {
        diag(sprintf '  missing %s phase: %s position %d globalPosition %d id %s, acknowledged at %.3f s',
            $a->[4], $a->[0], $a->[1], $a->[2], $a->[3], $a->[5] - $T0);
    }
    # the log lines nearest (within 1 s) to the first and the last loss
    my @when = map { $_->[5] } $lost[0], $lost[-1];
    for my $src (['daemon', EventoTest::_slurp($d->log_file)], ['pg', EventoFault::pg_log($t)]) {
        my ($name, $txt) = @$src;
        my @l;
        for my $line (split /\n/, $txt // '') {
            next unless $line =~ /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d(?:\.\d+)?)/;
            my $ts = timegm(0, $5, $4, $3, $2 - 1, $1) + $6;
            my ($dt) = sort { $a <=> $b } map { abs($ts - $_) } @when;
            push @l, [$dt, scalar @l, substr($line, 0, 200)] if $dt <= 1;
        }
        @l = sort { $a->[1] <=> $b->[1] } grep { defined } (sort { $a->[0] <=> $b->[0] } @l)[0 .. 29];
        diag(sprintf '  %s log, the %d lines nearest to the losses:', $name, scalar @l);
        diag("    $_->[2]") for @l;
    }
}
my $pids1 = $d->worker_pids;
my $crashed = grep { ($pids1->{$_} // 0) != $pids0->{$_} } keys %$pids0;
my $alive = $d->alive;
my $ok_after = ($phase{data}{ok_after} // 0) + ($phase{wal}{ok_after} // 0);
battery('T10', 'disk full: pg_wal, then PGDATA, on a tmpfs; 100 KB writes until ENOSPC, free, restart',
    sprintf('%d acknowledged (%d in the data phase, %d in the WAL phase): %d missing (%d WAL phase, %d data phase), %d moved, %d gaps, '
        . '%d in streams never readable (%d reads retried); %d errors during ENOSPC (%d not JSON), '
        . '%d ok after the first error (all readable); WAL PANIC %s; workers crashed %d, master %s',
        scalar @acks, $phase{data}{acks} // 0, $phase{wal}{acks} // 0, $missing, $lost_in{wal} // 0, $lost_in{data} // 0,
        $moved, $gaps, $unreadable, $retried,
        scalar(@errs) + scalar(keys %bad), scalar(keys %bad), $ok_after,
        $panic ? 'yes' : 'no', $crashed, $alive ? 'alive' : 'DEAD'),
    'every acknowledged write readable (N1); errors during ENOSPC, never a lost ok; server survives the PANIC',
    ($phase{data}{acks} // 0) && ($phase{wal}{acks} // 0) && !$missing && !$moved && !$gaps && !$unreadable && !%bad
    && ($phase{data}{errs} // 0) && ($phase{wal}{errs} // 0)
    && $panic && !$crashed && $alive);
my ($worst) = sort { $b <=> $a } @rec;
my $fig = @rec == 2 && $worst < 99
    ? sprintf('first successful write sent %.2f s (WAL) and %.2f s (data) after pg_isready', @rec)
    : 'not served again within 30 s after a restart';
battery('T10t', 'disk full: recovery', $fig, '<= 5 s after PostgreSQL is up',
    @rec == 2 && $worst < 99 && EventoFault::timing_ok($worst <= 5, \$fig));

# ---- eventodbd's own log on a full filesystem
stamp('verified');
{
    my $lfs = EventoFault::Tmpfs->mount($t, size => '1m');
    my $d2 = EventoTest::Daemon->_new($t, workers => 2, args => ['--log-level', 'debug']);
    $d2->{log} = $lfs->dir . '/eventodbd.log';
    push @{ $t->{daemons} }, $d2;
    $d2->_launch;
    my $wp = $d2->worker_pids;
    eval { $lfs->fill_file('filler', ($lfs->free_bytes // 0) + 65536) };    # until ENOSPC
    my $free = $lfs->free_bytes // -1;
    my ($ok2, $n2) = (0, 200);
    for my $i (1 .. $n2) {
        my ($st) = $d2->rpc_ka($d2->admin_token, 'stream.write', 'logfull-' . ($i % 5), { type => 'T', data => { i => $i } });
        $ok2++ if $st == 200;
        $d2->rpc_ka('ns_bogus', 'stream.get', 'x');    # an error: more log lines
    }
    my $wp2 = $d2->worker_pids;
    my $same = !grep { ($wp2->{$_} // 0) != $wp->{$_} } keys %$wp;
    battery('T10b', "disk full: eventodbd's log on a full tmpfs",
        sprintf('%d of %d writes ok with the log filesystem full (%d bytes free), workers unchanged: %s', $ok2, $n2, $free,
            $same ? 'yes' : 'no'),
        'keeps serving', $ok2 == $n2 && $free < 4096 && $same && $d2->alive);
    is($d2->stop, 0, 'log-full daemon: SIGTERM, exit 0');
    stamp('log phase done');
}

is($d->stop, 0, 'SIGTERM: exit 0');
done_testing;
