#!/usr/bin/perl
# 94-notify.t - the systemd notification protocol (issue 7), checked
# without systemd: the test binds the datagram socket itself and passes
# it as NOTIFY_SOCKET, once as a path and once as an abstract name
# ('@...').  Expected from the master: STATUS while starting, READY=1
# once the workers accept, RELOADING=1 with MONOTONIC_USEC on SIGHUP then
# READY=1, STOPPING=1 on SIGTERM; a STATUS line for a failed reload.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use Socket qw(AF_UNIX SOCK_DGRAM pack_sockaddr_un);
use Time::HiRes qw(time CLOCK_MONOTONIC clock_gettime);
use EventoTest qw(mult);

my $t = EventoTest->new(need => [qw(daemon pg)]);

sub listener {
    my ($name) = @_;
    socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
    my $addr = $name =~ /^@(.*)/ ? pack_sockaddr_un("\0$1") : pack_sockaddr_un($name);
    bind($s, $addr) or die "bind $name: $!";
    chmod 0777, $name if $name !~ /^@/;    # the daemon runs as its service user
    return $s;
}

# Read datagrams until one matches $re (or the deadline); returns all read.
sub read_until {
    my ($s, $re, $secs, $seen) = @_;
    my $sel = IO::Select->new($s);
    my $deadline = time + $secs * mult();
    while (time < $deadline) {
        next unless $sel->can_read($deadline - time);
        my $msg = '';
        defined recv($s, $msg, 4096, 0) or next;
        push @$seen, $msg;
        return 1 if $msg =~ $re;
    }
    return 0;
}

for my $kind ('path', 'abstract') {
    my $name = $kind eq 'path' ? $t->dir . "/notify-$kind.sock" : '@eventotest-notify-' . $$ . '-' . int(rand 1e9);
    my $s = listener($name);
    my @seen;
    my $d = $t->start(workers => 2, env => { NOTIFY_SOCKET => $name });
    ok(read_until($s, qr/^READY=1$/m, 10, \@seen), "$kind: READY=1") or diag(explain \@seen);
    ok((grep { /^STATUS=starting 2 workers/m } @seen), "$kind: STATUS while starting");
    my ($ready) = grep { /^READY=1$/m } @seen;
    like($ready, qr/^STATUS=ready: 2 workers, generation 1$/m, "$kind: READY with a STATUS line");
    like($d->log_since_start, qr/worker 0 ready pid=\d+ gen=1/, "$kind: READY came after the workers reported in")
        if $kind eq 'path';

    @seen = ();
    my $mono0 = clock_gettime(CLOCK_MONOTONIC);
    kill 'HUP', $d->pid;
    ok(read_until($s, qr/^RELOADING=1$/m, 10, \@seen), "$kind: RELOADING=1 on SIGHUP");
    my ($rl) = grep { /^RELOADING=1$/m } @seen;
    my ($usec) = ($rl // '') =~ /^MONOTONIC_USEC=(\d+)$/m;
    ok(defined $usec, "$kind: MONOTONIC_USEC in the same datagram");
    my $mono1 = clock_gettime(CLOCK_MONOTONIC);
    ok(defined $usec && $usec / 1e6 >= $mono0 - 0.01 && $usec / 1e6 <= $mono1 + 0.01,
       "$kind: MONOTONIC_USEC is CLOCK_MONOTONIC at the reload") or diag("$mono0 $usec $mono1");
    ok(read_until($s, qr/^READY=1$/m, 10, \@seen), "$kind: READY=1 when the reload is done");
    my ($r2) = grep { /^READY=1$/m } @seen;
    like($r2, qr/generation 2/, "$kind: ... generation 2");

    @seen = ();
    kill 'TERM', $d->pid;
    ok(read_until($s, qr/^STOPPING=1$/m, 10, \@seen), "$kind: STOPPING=1 on SIGTERM");
    is($d->stop, 0, "$kind: exit 0");
    unlink $name if $kind eq 'path';
}

# A reload that fails: a STATUS line says so, no RELOADING.
{
    my $conf = $t->dir . '/n.conf';
    open my $fh, '>', $conf or die;
    print $fh "idle-timeout = 60\n";
    close $fh;
    chmod 0644, $conf;
    my $name = $t->dir . '/notify-bad.sock';
    my $s = listener($name);
    my @seen;
    my $d = $t->start(workers => 1, env => { NOTIFY_SOCKET => $name }, args => ['--config', $conf]);
    ok(read_until($s, qr/^READY=1$/m, 10, \@seen), 'READY=1');
    open $fh, '>', $conf or die;
    print $fh "idle-timeout = soon\n";
    close $fh;
    @seen = ();
    kill 'HUP', $d->pid;
    ok(read_until($s, qr/^STATUS=reload failed/m, 10, \@seen), 'a failed reload: STATUS=reload failed ...');
    ok(!grep({ /RELOADING=1/ } @seen), '... and no RELOADING=1');
    is($d->stop, 0, 'exit 0');
}

done_testing;
