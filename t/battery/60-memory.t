#!/usr/bin/perl
# 60-memory.t - battery row T16 (reliability-security.md 6.3), memory
# pressure: one worker moved into a cgroup v1 memory group limited to
# 128 MiB, then, on connections held by that worker,
#   T16   4 concurrent imports of the largest records /import takes (lines
#         just under its 1 MiB line limit, so every batch is 4 MiB);
#   T16b  4 concurrent /rpc stream.write requests of the largest body
#         (--max-body, 16 MiB by default, server/cfg.c).
# Either the worker lives within the limit or the kernel OOM-kills it and
# the master replaces it; the master is unaffected, the other worker keeps
# serving (a prober on a connection it holds), the history checker's load
# runs throughout with 0 violations, and no acknowledged write or import
# batch is lost.  The memory the group saw at its peak
# (memory.max_usage_in_bytes) is the figure.
#
# /import is streamed (import.c): its memory is one batch (1000 records or
# 4 MiB), one line (1 MiB) and http.c's 2 MiB body buffer per import,
# whatever the size of the body, so the bound is per import, not "body
# limit x imports"; an /rpc body is held whole, so there the bound is
# max-body x concurrent requests x the copies a request makes of its body
# (T16b measures one request alone to give that factor).  Sizes: the fast tier imports 8 MiB per
# import, BATTERY_FULL=1 64 MiB; the limit stays 128 MiB in both, as
# /import's memory does not grow with the body (scaling the limit with the
# body size would only test a smaller machine).
#
# The group is made under this process's own memory cgroup (so it stays
# inside whatever limits that one has); skipped when that is not writable.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN json_encode json_decode pid_alive mult battery battery_full);
use EventoProc qw(log_events load_start timing_ok overloaded loadavg);

my $LIMIT = 128 * 1024 * 1024;
my $full = battery_full();
my $import_mb = $full ? 64 : 8;
my $nconc = 4;

# ---- the cgroup: a child of our own memory cgroup
my $cgroot = '/sys/fs/cgroup/memory';
my $mine;
if (open my $fh, '<', '/proc/self/cgroup') {
    while (<$fh>) { $mine = $1 if /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/ }
    close $fh;
}
plan skip_all => 'no cgroup v1 memory controller (/proc/self/cgroup has no memory line)' unless defined $mine;
my $parent = "$cgroot$mine";
$parent =~ s{/+$}{};
plan skip_all => "cgroup v1 memory hierarchy not mounted at $cgroot" unless -f "$parent/cgroup.procs";
my $cg = "$parent/eventodb-t16-$$";
plan skip_all => "cannot create a memory cgroup under $parent: $!" unless mkdir $cg;
my $cg_owner = $$;
END { cg_remove() if $cg_owner && $$ == $cg_owner }

sub cg_write {
    my ($file, $val) = @_;
    open my $fh, '>', "$cg/$file" or return 0;
    my $ok = print {$fh} $val;
    return close($fh) && $ok;
}
sub cg_read { my ($f) = @_; open my $fh, '<', "$cg/$f" or return undef; my $v = <$fh>; close $fh; chomp $v if defined $v; return $v }
sub cg_procs { my $v = do { open my $fh, '<', "$cg/cgroup.procs" or return (); local $/; <$fh> }; return grep { /^\d+$/ } split /\n/, $v // '' }
sub cg_remove {
    return unless -d $cg;
    # anything still inside goes back to the parent, then the group goes
    for my $p (cg_procs()) {
        if (open my $fh, '>', "$parent/cgroup.procs") { print {$fh} $p; close $fh }
    }
    rmdir $cg or diag("could not remove $cg: $!");
}

# charges of what the worker already has move with it (3: anon + file)
cg_write('memory.move_charge_at_immigrate', 3);
cg_write('memory.limit_in_bytes', $LIMIT) or do { cg_remove(); plan skip_all => "cannot set memory.limit_in_bytes in $cg: $!" };
cg_write('memory.memsw.limit_in_bytes', $LIMIT) if -f "$cg/memory.memsw.limit_in_bytes";
is(cg_read('memory.limit_in_bytes'), $LIMIT, "cgroup $cg limited to 128 MiB");

# the long tier's 4 x 64 MiB imports take minutes on 2 shared cores
$ENV{EVENTODB_TEST_WATCHDOG} ||= 900 if $full;
my $t = EventoTest->new(need => [qw(daemon pg)]);
my $d = $t->start(workers => 2);
# --max-body's default, from the option table (server/cfg.c); the daemon runs with it
my $max_body = do {
    my $src = EventoTest::_slurp(EventoTest::top_dir() . '/server/cfg.c');
    $src =~ /\{\s*"max-body",[^"]*"(\d+)"/ ? $1 : 16777216;
};

# ---- helpers

# conns_on($pid, $n): $n connections held by worker $pid (others closed).
sub conns_on {
    my ($pid, $n) = @_;
    my (@mine, @other);
    for (1 .. 400) {
        last if @mine >= $n;
        my $s = eval { $d->connect } or next;
        my $w;
        for (1 .. 50) { last if defined($w = $d->conn_worker($s)); sleep 0.01 }
        if (defined $w && $w == $pid) { push @mine, $s } else { push @other, $s }
        # keep the others open for a while: the next accept may go elsewhere
        if (@other > 40) { close $_ for splice @other, 0, 20 }
    }
    close $_ for @other;
    return @mine;
}

# move($pid): into the group; true when it is listed there
sub move_in {
    my ($pid) = @_;
    cg_write('cgroup.procs', $pid) or return 0;
    return scalar grep { $_ == $pid } cg_procs();
}

# A prober on a connection held by $pid: a write and a read every 50 ms
# until SIGTERM; prints "ok N fail M maxms X" on exit.
sub prober {
    my ($sock, $token, $out) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 0;
        my $stop = 0;
        $SIG{TERM} = sub { $stop = 1 };
        $SIG{PIPE} = 'IGNORE';
        my ($ok, $fail, $max, $i) = (0, 0, 0, 0);
        my @fails;
        while (!$stop) {
            my $body = json_encode(['stream.write', 'probe-1', { type => 'P', data => { i => $i++ } }]);
            my $req = "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $token\r\n"
                    . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
            my $t0 = time;
            if (!$d->send_all($sock, $req)) { $fail++; push @fails, 'send'; last }
            my ($resp, $closed) = $d->read_responses($sock, count => 1, timeout => 10);
            my $ms = (time - $t0) * 1000;
            $max = $ms if $ms > $max;
            if (@$resp && $resp->[0]{status} == 200) { $ok++ } else { $fail++; push @fails, @$resp ? $resp->[0]{status} : 'no answer'; last if $closed }
            sleep 0.05;
        }
        open my $fh, '>', $out;
        printf {$fh} "ok %d fail %d maxms %.0f %s\n", $ok, $fail, $max, join(',', @fails[0 .. ($#fails < 4 ? $#fails : 4)]);
        close $fh;
        POSIX::_exit(0);
    }
    return $pid;
}
sub prober_stop {
    my ($pid, $out) = @_;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    my $l = EventoTest::_slurp($out);
    my ($ok, $fail, $max, $why) = $l =~ /^ok (\d+) fail (\d+) maxms (\d+) ?(.*)$/ or return { ok => 0, fail => -1, why => "no result: $l" };
    return { ok => $ok, fail => $fail, max_ms => $max, why => $why };
}

# Send $body on each socket at once (one child each); each child reads the
# whole answer until EOF or 300 s.  Returns the answers' texts (or '').
sub send_concurrently {
    my ($socks, $make_req) = @_;
    my @kids;
    my $dir = $t->dir;
    for my $i (0 .. $#$socks) {
        my $out = "$dir/conc.$$." . int(rand 1e9);
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            alarm 0;
            $SIG{PIPE} = 'IGNORE';
            my $s = $socks->[$i];
            my $req = $make_req->($i);
            $d->send_all($s, $req);
            my ($buf) = $d->read_raw($s, timeout => 300);    # Connection: close: until EOF
            open my $fh, '>', $out;
            print {$fh} $buf;
            close $fh;
            POSIX::_exit(0);
        }
        push @kids, [$pid, $out];
    }
    close $_ for @$socks;
    my @res;
    for my $k (@kids) {
        waitpid $k->[0], 0;
        push @res, EventoTest::_slurp($k->[1]);
    }
    return @res;
}

# The replacement of slot $slot after $old died: (new pid, respawn ms from
# the master's "exited" line to the new worker's "ready" line).
sub respawn {
    my ($slot, $old) = @_;
    my $new;
    $t->wait_for(sub { $new = $d->worker_pids->{$slot}; $new && $new != $old
                       && $d->log_since_start =~ /worker $slot ready pid=$new / }, 10) or return;
    my ($t_exit, $t_ready);
    for my $e (log_events($d)) {
        $t_exit = $e->[0] if $e->[1] =~ /worker $slot exited .*pid=$old\b/;
        $t_ready = $e->[0] if $e->[1] =~ /worker $slot ready pid=$new\b/;
    }
    return ($new, defined $t_exit && defined $t_ready ? ($t_ready - $t_exit) * 1000 : undef);
}

# ---- set-up: the load, the namespaces, the prober on the other worker

my $w = $d->worker_pids;
my ($slot) = sort { $a <=> $b } keys %$w;
my ($oslot) = grep { $_ != $slot } sort { $a <=> $b } keys %$w;
my $victim = $w->{$slot};
my $master = $d->pid;
my $master_rss0 = EventoProc::rss_kb($master);
my $load = load_start($d, clients => 4, prefix => 'mem');
ok($load->wait_running(30), 'load running (' . $load->engine . ')');

my (undef, $ptok) = $t->fresh_ns('probe');
my ($psock) = conns_on($w->{$oslot}, 1);
ok($psock, "a connection held by the other worker (pid $w->{$oslot})");
my $pout = $t->dir . '/prober.out';
my $ppid = prober($psock, $ptok, $pout);
close $psock;

# ---- T16: four concurrent imports of maximum-size records

my @imp_ns = map { [$t->fresh_ns('imp')] } 1 .. $nconc;
my $rec_data = 1048576 - 4096;    # a line just under IMP_LINE_MAX (1 MiB)
my $pad = 'x' x $rec_data;
my $nrec = int($import_mb * 1048576 / ($rec_data + 200)) || 1;
my $import_bytes = 0;
{
    my $l = json_encode({ id => '00000000-0000-4000-8000-000000000001', stream => 'imp-1', type => 'Big', pos => 0,
                          gpos => 1, data => { pad => $pad }, meta => undef, time => '2025-07-15T10:00:00Z' }) . "\n";
    $import_bytes = length($l) * $nrec;
}
ok(move_in($victim), "worker $slot (pid $victim) moved into the cgroup");
cg_write('memory.max_usage_in_bytes', 0);
my $base_usage = cg_read('memory.usage_in_bytes') // 0;
my @isocks = conns_on($victim, $nconc);
is(scalar @isocks, $nconc, "$nconc connections held by the cgroup's worker");
my $t_imp = time;
my @iresp = send_concurrently(\@isocks, sub {
    my ($i) = @_;
    my $tok = $imp_ns[$i][1];
    my $body = '';
    for my $k (1 .. $nrec) {
        $body .= json_encode({ id => sprintf('00000000-0000-4000-8000-%012d', $k), stream => 'imp-1', type => 'Big',
                               pos => $k - 1, gpos => $k, data => { pad => $pad }, meta => undef,
                               time => '2025-07-15T10:00:00Z' }) . "\n";
    }
    return "POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $tok\r\nContent-Type: application/x-ndjson\r\n"
         . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body";
});
my $imp_s = time - $t_imp;
my $peak_imp = cg_read('memory.max_usage_in_bytes') // 0;
my $failcnt_imp = cg_read('memory.failcnt') // 0;
my $killed_imp = !pid_alive($victim) || !grep { $_ == $victim } values %{ $d->worker_pids };
# acknowledged batches: the largest "imported" seen per import; stored: the stream's version + 1
my ($lost, $acked_total, $stored_total, $done) = (0, 0, 0, 0);
my @imp_detail;
for my $i (0 .. $nconc - 1) {
    my $txt = $iresp[$i];
    my $acked = 0;
    while ($txt =~ /^data: (\{.*\})$/mg) {
        my ($ok, $v) = json_decode($1);
        next unless $ok && ref $v eq 'HASH';
        $acked = $v->{imported} if defined $v->{imported} && $v->{imported} > $acked;
        $done++ if $v->{done};
    }
    my ($st, $ver) = $d->rpc($imp_ns[$i][1], 'stream.version', 'imp-1');
    my $stored = $st == 200 && defined $ver && !ref $ver ? $ver + 1 : 0;
    $lost++ if $stored < $acked;
    $acked_total += $acked;
    $stored_total += $stored;
    push @imp_detail, "$acked/$stored";
}
my ($new, $respawn_ms);
if ($killed_imp) {
    ($new, $respawn_ms) = respawn($slot, $victim);
    ok($new, "worker $slot replaced after the OOM kill (pid $new)");
}
my $mib = sub { sprintf '%.1f MiB', $_[0] / 1048576 };
my $per_import = ($peak_imp - $base_usage) / $nconc;
battery('T16', sprintf('memory: %d x %d MiB imports, worker in 128 MiB', $nconc, $import_mb),
    sprintf('%s; peak %s (base %s, %s per import); %d/%d done, acked/stored %s, %d lost; %.1f s%s',
        $killed_imp ? 'OOM-killed' . (defined $respawn_ms ? sprintf(', respawn %.0f ms', $respawn_ms) : '') : 'survived',
        $mib->($peak_imp), $mib->($base_usage), $mib->($per_import), $done, $nconc, join(' ', @imp_detail), $lost, $imp_s,
        $full ? '' : ' (8 MiB imports: 64 MiB with BATTERY_FULL=1; limit kept: /import is streamed)'),
    'survives within the limit, or OOM-killed and respawned; 0 acked batches lost',
    $lost == 0 && ($killed_imp ? defined $new : $done == $nconc));

# ---- T16b: four concurrent /rpc bodies of --max-body bytes

$victim = $d->worker_pids->{$slot};
ok(move_in($victim), "worker $slot (pid $victim) in the cgroup");
cg_write('memory.max_usage_in_bytes', 0);
my $failcnt0 = cg_read('memory.failcnt') // 0;
$base_usage = cg_read('memory.usage_in_bytes') // 0;
my (undef, $btok) = $t->fresh_ns('big');
my @bsocks = conns_on($victim, $nconc);
is(scalar @bsocks, $nconc, "$nconc connections held by the cgroup's worker");
my $envelope = json_encode(['stream.write', 'big-0', { type => 'Big', data => { pad => '' } }]);
my $fill = $max_body - length($envelope) - 2;
my $big_req = sub {
    my ($stream) = @_;
    my $body = json_encode(['stream.write', $stream, { type => 'Big', data => { pad => 'y' x $fill } }]);
    return "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $btok\r\nContent-Type: application/json\r\n"
         . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body";
};
# first one such request alone: what one max-body request costs the worker
my ($one_status, $one_cost) = ('none', 0);
{
    my @one = conns_on($victim, 1);
    my ($r) = send_concurrently(\@one, sub { $big_req->('big-one') });
    ($one_status) = $r =~ m{^HTTP/1\.1 (\d{3})};
    $one_status //= 'none';
    $one_cost = (cg_read('memory.max_usage_in_bytes') // 0) - $base_usage;
    ok(pid_alive($victim), "one $max_body-byte request alone: the worker lives (answer $one_status)");
    cg_write('memory.max_usage_in_bytes', 0);
    $base_usage = cg_read('memory.usage_in_bytes') // 0;
}
my $t_big = time;
my @bresp = send_concurrently(\@bsocks, sub { $big_req->("big-$_[0]") });
my $big_s = time - $t_big;
my $peak_big = cg_read('memory.max_usage_in_bytes') // 0;
my $killed_big = !pid_alive($victim) || !grep { $_ == $victim } values %{ $d->worker_pids };
my (%bst, $blost);
$blost = 0;
for my $i (0 .. $nconc - 1) {
    my ($code) = $bresp[$i] =~ m{^HTTP/1\.1 (\d{3})};
    $code //= 'none';
    $bst{$code}++;
    next unless $code eq '200';
    # acknowledged: it must be stored, position 0 of its stream
    my ($st, $ver) = $d->rpc($btok, 'stream.version', "big-$i");
    $blost++ unless $st == 200 && defined $ver && !ref $ver && $ver == 0;
}
my $respawn_big;
if ($killed_big) {
    ($new, $respawn_big) = respawn($slot, $victim);
    ok($new, "worker $slot replaced after the OOM kill (pid " . ($new // 'none') . ')');
}
my $statuses = join ' ', map { "$bst{$_} x $_" } sort keys %bst;
my $bad_status = grep { $_ ne '200' && $_ ne '413' && $_ ne 'none' && $_ !~ /^5/ } keys %bst;
battery('T16b', sprintf('memory: %d x %s /rpc bodies, worker in 128 MiB', $nconc, $mib->($max_body)),
    sprintf('%s; peak %s (max-body x %d = %s; one request alone: %s = %.1f x max-body); answers %s; %d acked lost; %.1f s',
        $killed_big ? 'OOM-killed' . (defined $respawn_big ? sprintf(', respawn %.0f ms', $respawn_big) : '') : 'survived',
        $mib->($peak_big), $nconc, $mib->($max_body * $nconc), $mib->($one_cost), $one_cost / $max_body,
        $statuses, $blost, $big_s),
    'survives within the limit, or OOM-killed and respawned; 0 acked writes lost',
    $blost == 0 && !$bad_status && ($killed_big ? defined $new : 1));

# ---- T16c: an OOM kill's respawn.  When the worker lived within 128 MiB
# through T16 and T16b (a write costs it about twice its body now), the
# kill is forced: the limit drops to what the worker uses plus 8 MiB and
# one more max-body request goes to it.
my ($forced, $respawn_forced) = ('', undef);
if (!$killed_imp && !$killed_big) {
    $victim = $d->worker_pids->{$slot};
    if (move_in($victim)) {
        my $use = cg_read('memory.usage_in_bytes') // 0;
        my $low = $use + 8 * 1048576;
        cg_write('memory.memsw.limit_in_bytes', $LIMIT) if -f "$cg/memory.memsw.limit_in_bytes";
        if (cg_write('memory.limit_in_bytes', $low)) {
            cg_write('memory.memsw.limit_in_bytes', $low) if -f "$cg/memory.memsw.limit_in_bytes";
            my @one = conns_on($victim, 1);
            my ($r) = send_concurrently(\@one, sub { $big_req->('big-f') });
            my $killed = !pid_alive($victim) || !grep { $_ == $victim } values %{ $d->worker_pids };
            if ($killed) {
                my $nw;
                ($nw, $respawn_forced) = respawn($slot, $victim);
                ok($nw, "forced OOM kill: worker $slot replaced (pid " . ($nw // 'none') . ')');
                $forced = sprintf '; forced (limit %s = usage + 8 MiB, one more max-body write)', $mib->($low);
            } else {
                my ($code) = ($r // '') =~ m{^HTTP/1\.1 (\d{3})};
                ok(0, 'forced OOM kill: the worker was not killed (answer ' . ($code // 'none') . ')');
            }
            # raising: memory+swap first (it may never be below memory's)
            cg_write('memory.memsw.limit_in_bytes', $LIMIT) if -f "$cg/memory.memsw.limit_in_bytes";
            cg_write('memory.limit_in_bytes', $LIMIT);
        } else {
            ok(0, "forced OOM kill: cannot lower memory.limit_in_bytes to $low: $!");
        }
    } else {
        ok(0, 'forced OOM kill: cannot move the worker into the cgroup');
    }
}

# respawn time (timing: judged unless the machine is overloaded)
my @resp = grep { defined } ($killed_imp ? $respawn_ms : undef), ($killed_big ? $respawn_big : undef), $respawn_forced;
if (@resp) {
    my $worst = (sort { $b <=> $a } @resp)[0];
    my ($v, $note) = timing_ok($worst <= 100);
    battery('T16c', 'memory: OOM-killed worker respawned', sprintf('%.0f ms (master exited -> new worker ready)%s%s', $worst, $forced, $note),
        '<= 100 ms', $v);
} else {
    battery('T16c', 'memory: OOM-killed worker respawned', 'no OOM kill happened, and none could be forced',
        '<= 100 ms', 0);
}

# ---- the rest of the server: master, the other worker, the history

my $pr = prober_stop($ppid, $pout);
my $sum = $load->stop;
my $master_ok = pid_alive($master) && $d->alive;
my $master_rss1 = EventoProc::rss_kb($master);
my $other_same = ($d->worker_pids->{$oslot} // 0) == $w->{$oslot};
battery('T16d', 'memory: master and the other worker unaffected',
    sprintf('master %s (RSS %d -> %d kB); other worker %s, prober %d ok %d failed (max %d ms)%s; %s',
        $master_ok ? 'alive' : 'GONE', $master_rss0 // 0, $master_rss1 // 0, $other_same ? 'same pid' : 'REPLACED',
        $pr->{ok}, $pr->{fail}, $pr->{max_ms} // 0, $pr->{why} ? " ($pr->{why})" : '', EventoProc::describe($sum)),
    'master alive; other worker 0 failures; 0 violations',
    $master_ok && $other_same && $pr->{fail} == 0 && $pr->{ok} > 0 && ($sum->{violations} // -1) == 0);
diag("violations: @{ $sum->{examples} }") if ($sum->{violations} // -1) != 0;
my $log = $d->log_since_start;
unlike($log, qr/worker \d+ exited .*status=(?!SIGKILL)/, 'no worker died of anything but the OOM kill')
    or diag(join "\n", grep { /exited/ } split /\n/, $log);

done_testing;
