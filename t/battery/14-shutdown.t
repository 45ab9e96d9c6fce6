#!/usr/bin/perl
# 14-shutdown.t - battery row T07 (reliability-security.md 6.3): SIGTERM
# during load (the history checker plus 4 keep-alive probe connections
# writing back to back) with 50 open SSE streams.
#
# Rows:
#   T07   every request sent before the signal completes (0 resets); every
#         probe connection ends with a response carrying Connection: close
#         (none cut, none closed without it); the 50 SSE streams end with
#         the chunked terminator; exit 0; shared memory unlinked; 0
#         backends of our database left; 0 violations (the checker's final
#         read runs against a restarted server)
#   T07b  the workers stop accepting <= 100 ms after the master got the
#         signal (log time stamps: master "SIGTERM received" -> each
#         "worker N stopping: SIGTERM"), and how long the drain took
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN pid_alive mult json_encode battery);
use EventoSSE;
use EventoProc qw(log_events load_start pg_conns pct timing_ok line_time);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $nw = 4;
my $d = $t->start(workers => $nw, args => ['--shutdown-timeout', 10]);
my $port = $d->port;
my $seg = '/dev/shm' . $d->shm_name;

# ---- 50 SSE streams
my @sse = map { EventoSSE->new($d, token => ADMIN_TOKEN, query => { stream => "shsse-$_" }) } 1 .. 50;
my $ready = 0;
for my $s (@sse) { $ready++ if $s->wait_for(sub { $_[0]->ready }, 10) }
is($ready, 50, '50 SSE streams open and ready');

# ---- load: the checker, and the probes
my $load = load_start($d, clients => 4, prefix => 'sh');
my $dir = $t->dir;
my $stopfile = "$dir/probe.stop";
my @kids;
for my $p (0 .. 3) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 0;
        open my $fh, '>', "$dir/probe.$p" or POSIX::_exit(1);
        $fh->autoflush(1);
        my ($s, $cid) = (undef, 0);
        my $t0 = time;
        for (my $i = 0; !-e $stopfile && time - $t0 < 60; $i++) {
            if (!$s) {
                $s = eval { $d->connect };
                if (!$s) { printf $fh "refused %.4f\n", time; sleep 0.02; next }
                $cid++;
            }
            my $body = json_encode(['stream.write', "shprobe-$p", { type => 'P', data => { i => $i } }]);
            my $req = "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " . ADMIN_TOKEN
                    . "\r\nContent-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
            my $ts = time;
            if (!$d->send_all($s, $req)) { printf $fh "sendfail %.4f %d\n", $ts, $cid; close $s; undef $s; next }
            my ($resp, $closed, $rest) = $d->read_responses($s, count => 1, timeout => 15);
            my $tr = time;
            if (@$resp) {
                my $cl = ($resp->[0]{headers}{connection} // '') =~ /close/i ? 1 : 0;
                printf $fh "resp %.4f %.4f %d %d %d\n", $ts, $tr, $resp->[0]{status}, $cl, $cid;
                if ($cl) {
                    # the server closes after it: wait for the EOF
                    my (undef, $c2) = $d->read_responses($s, timeout => 5);
                    printf $fh "closed %.4f %d %d\n", time, $cid, $c2 ? 1 : 0;
                    close $s;
                    undef $s;
                }
            } else {
                printf $fh "eof %.4f %.4f %d %d\n", $ts, $tr, length($rest // ''), $cid;
                close $s;
                undef $s;
            }
        }
        close $fh;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
ok($load->wait_running(20), 'checker load running (' . $load->engine . ')');
ok($t->wait_for(sub { my $n = 0; for (0 .. 3) { $n += () = `grep -c '^resp' $dir/probe.$_ 2>/dev/null` =~ /([1-9]\d*)/ } $n >= 4 }, 10),
   'probes running');
sleep 1;    # (let every probe have a request in flight)

# ---- SIGTERM
my $t_sig = time;
my $code = $d->stop(timeout => 15);
my $t_exit = time;
my $drain_s = $t_exit - $t_sig;
is($code, 0, sprintf 'exit 0 (%.2f s after the signal)', $drain_s);
my $shm_gone = !-e $seg;
ok($shm_gone, "shared memory $seg unlinked");
my $pg_left = pg_conns($t, $d->db);
$t->wait_for(sub { ($pg_left = pg_conns($t, $d->db)) == 0 }, 2);
is($pg_left, 0, 'no backend of our database left');

# SSE streams: each ends with the chunked terminator
my $ended = 0;
for my $s (@sse) {
    $s->wait_for(sub { $_[0]->ended }, 5);
    $ended++ if $s->ended;
}
is($ended, 50, 'every SSE stream ended with the chunked terminator');

open my $sf, '>', $stopfile or die;
close $sf;
for my $k (@kids) { waitpid $k, 0 }

# probes
my (@cut_before, @no_close, $resp_after, $close_after, $conns);
for my $p (0 .. 3) {
    open my $fh, '<', "$dir/probe.$p" or next;
    my (%last, %closed);
    while (my $l = <$fh>) {
        my @f = split ' ', $l;
        if ($f[0] eq 'resp') {
            $last{ $f[5] } = [@f];
            if ($f[2] > $t_sig) { $resp_after++; $close_after++ if $f[4] }
        } elsif ($f[0] eq 'eof' || $f[0] eq 'sendfail') {
            push @cut_before, "probe $p: $l" if $f[1] < $t_sig || ($f[0] eq 'eof' && $f[3] > 0);
            $last{ $f[-1] } = [@f];
        } elsif ($f[0] eq 'closed') {
            $closed{ $f[2] } = 1;
        }
    }
    close $fh;
    for my $cid (keys %last) {
        my $f = $last{$cid};
        next if $f->[0] eq 'resp' && $f->[1] < $t_sig && $f->[4] == 0 && !$closed{$cid} && 0;
        # connections open at the signal: the last thing seen must be a response with Connection: close
        next if $f->[0] eq 'resp' && $f->[2] < $t_sig;    # ended before the signal (cannot be: it was reused)
        $conns++;
        push @no_close, "probe $p conn $cid: @$f" unless $f->[0] eq 'resp' && $f->[4] == 1;
    }
}
diag("cut: @cut_before") if @cut_before;
diag("without Connection: close: @no_close") if @no_close;

# stop accepting: master's signal -> each worker stopping (log)
my @ev = log_events($d);
my ($t_m) = map { $_->[0] } grep { $_->[1] =~ /SIGTERM received: stopping/ } @ev;
my @wstop = map { $_->[0] } grep { $_->[1] =~ /worker \d+ stopping: SIGTERM/ } @ev;
my $acc = $t_m && @wstop ? (pct(\@wstop, 100) - $t_m) * 1000 : 9999;

# the checker's final read: against the restarted server
kill 'TERM', $load->{pid} if $load->{pid};
$d->restart;
my $s = $load->stop;
diag(EventoProc::describe($s));
diag("examples: @{ $s->{examples} }") if @{ $s->{examples} || [] };

battery('T07', 'graceful shutdown: SIGTERM under load with 50 SSE streams',
    sprintf('%d requests cut (sent before the signal or mid-response); %d of %d probe connections ended without Connection: close (%d of %d responses after the signal had it); %d/50 SSE streams ended with the terminator; exit %s after %.2f s; shm %s; %s backends left; %d violations (%s)',
            scalar @cut_before, scalar @no_close, $conns // 0, $close_after // 0, $resp_after // 0, $ended,
            $code // 'signal', $drain_s, $shm_gone ? 'unlinked' : 'LEFT', $pg_left // '?', $s->{violations}, $s->{engine}),
    '0 resets of started requests; Connection: close on keep-alive responses; SSE chunked terminator; exit 0; shm unlinked; 0 PG connections; 0 violations',
    !@cut_before && !@no_close && ($conns // 0) > 0 && $ended == 50 && defined $code && $code == 0
    && $shm_gone && defined $pg_left && $pg_left == 0 && $s->{violations} == 0);

my ($tok, $note) = timing_ok($acc <= 100);
battery('T07b', 'graceful shutdown: stop accepting',
    sprintf('every worker stopped accepting %.0f ms after the master got SIGTERM (%d workers; log time stamps); drained and exited in %.2f s%s',
            $acc, scalar @wstop, $drain_s, $note),
    '<= 100 ms', $tok && @wstop == $nw);

is($d->stop, 0, 'restarted server: exit 0');
done_testing;
