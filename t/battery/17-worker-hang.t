#!/usr/bin/perl
# 17-worker-hang.t - battery row T17 (reliability-security.md 6.3): SIGSTOP
# one worker for 6 s (BATTERY_FULL=1: 10 s) under the T02 load, with
# --heartbeat-timeout 2 (the smallest accepted; the default is 10 s).
#
# Row T17: the master detects the stale heartbeat <= 3 s after the stop
# (log time stamp of "sent no heartbeat") and replaces the worker; clients
# with a request on one of its connections get an error or EOF within the
# request deadline (5 s); after SIGCONT the old worker does not serve (it
# is gone); 0 violations.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use IO::Select;
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN pid_alive mult battery battery_full);
use EventoProc qw(log_events load_start pct timing_ok);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $hb = 2;
my $stop_s = battery_full() ? 10 : 6;    # the master acts after 1-2 s either way
my $deadline = 5;
my $d = $t->start(workers => 4, args => ['--heartbeat-timeout', $hb]);
my $load = load_start($d, clients => 8, prefix => 'wh', timeout_ms => $deadline * 1000);
ok($load->wait_running(20), 'load running (' . $load->engine . ')');

# keep-alive connections of our own; the victim is a worker holding some
my $w = $d->worker_pids;
my %by;
for my $i (1 .. 16) {
    my $s = $d->connect;
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    my ($r) = $d->read_responses($s, count => 1, timeout => 5);
    next unless @$r && $r->[0]{status} == 200;
    my $wp = $d->conn_worker($s) // next;
    push @{ $by{$wp} }, $s;
}
my %slot_of = reverse %$w;
my ($victim) = sort { @{ $by{$b} } <=> @{ $by{$a} } || $a <=> $b } grep { defined $slot_of{$_} } keys %by;
$victim //= $w->{2};
my $slot = $slot_of{$victim} // 2;
my @mine = @{ $by{$victim} || [] };
my @others = map { @{ $by{$_} } } grep { $_ != $victim } keys %by;
ok(@mine >= 1, scalar(@mine) . " keep-alive connections on worker $slot (pid $victim)");

my $off = length $d->log_since_start;
my $t_stop = time;
ok(kill('STOP', $victim), "SIGSTOP worker $slot");
# a request on each of its connections: stuck until the master acts
my $req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
$d->send_all($_, $req) for @mine, @others;
my %done;
my $sel = IO::Select->new(@mine);
my $stuck_until = time + ($deadline + 2) * mult();
while ($sel->count && time < $stuck_until) {
    for my $s ($sel->can_read(0.1)) {
        my $buf = '';
        my $n = sysread $s, $buf, 4096;
        $done{$s} = [time - $t_stop, ($n // 0) > 0 ? 'data' : 'eof'];
        $sel->remove($s);
    }
}
my @took = map { $done{$_} ? $done{$_}[0] : 99 } @mine;
my @served = grep { $done{$_} && $done{$_}[1] eq 'data' } @mine;
my $others_ok = 0;
for my $s (@others) {
    my ($r) = $d->read_responses($s, count => 1, timeout => 5);
    $others_ok++ if @$r && $r->[0]{status} == 200;
}
is($others_ok, scalar @others, 'connections on the other workers answered');

my ($det_line, $ready_line);
$t->wait_for(sub {
    my $l = substr($d->log_since_start, $off);
    ($det_line) = $l =~ /^(.*worker $slot pid=$victim gen=\d+ sent no heartbeat for $hb s: sending SIGKILL.*)$/m;
    ($ready_line) = $l =~ /^(.*worker $slot ready pid=(?!$victim)\d+.*)$/m;
    $det_line && $ready_line;
}, 10);
my $detect = $det_line ? EventoProc::line_time($det_line) - $t_stop : 99;
my $replaced = $ready_line ? EventoProc::line_time($ready_line) - $t_stop : 99;
ok($det_line, sprintf 'the master noticed after %.2f s', $detect) or diag(substr($d->log_since_start, $off));
ok($ready_line, sprintf 'a replacement was ready %.2f s after the stop', $replaced);

# SIGCONT after $stop_s s: the old worker must not serve
my $cont_at = $t_stop + $stop_s;
sleep($cont_at - time) if $cont_at > time;
kill 'CONT', $victim;
my $gone = $t->wait_for(sub { !pid_alive($victim) }, 2);
ok($gone, 'after SIGCONT the old worker is gone');
my $s = $load->stop;
diag(EventoProc::describe($s));
diag("examples: @{ $s->{examples} }") if @{ $s->{examples} || [] };

my $tmax = pct(\@took, 100) // 99;
# timing (judged unless the machine is overloaded); the rest is strict
my ($tok, $note) = timing_ok($detect <= 3 && $tmax <= $deadline);
battery('T17', "worker hang: SIGSTOP one worker $stop_s s (heartbeat-timeout $hb s)",
    sprintf('master killed it %.2f s after the stop, replacement ready at %.2f s; %d stuck client requests got %s <= %.2f s (deadline %d s); %d of them served by the frozen worker; old worker %s after SIGCONT; %d violations, %.2f %% client errors (%s)%s',
            $detect, $replaced, scalar @mine, join('/', sort keys %{ { map { $_->[1] => 1 } values %done } }) || 'nothing',
            $tmax, $deadline, scalar @served, $gone ? 'gone' : 'ALIVE', $s->{violations}, 100 * $s->{error_rate}, $s->{engine}, $note),
    'detected <= 3 s and replaced; stuck clients error/EOF <= request deadline; old worker never serves after SIGCONT; 0 violations',
    $tok && $det_line && $replaced < 99 && @mine && $tmax < 99 && !@served && $gone && $s->{violations} == 0);

is($d->stop, 0, 'SIGTERM: exit 0');
done_testing;
