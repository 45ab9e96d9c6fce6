#!/usr/bin/perl
# 42-accept-balance.t - new connections are spread over the workers
# (worker/worker.c accept_batch).  The listening socket is shared and the
# first worker to wake took a whole burst: the 10 keep-alive connections
# of a client's pool all landed on one worker and the other idled.  Now a
# worker takes one per wake-up, more only when it holds fewer than
# another, and yields while it holds clearly more than the least loaded.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use EventoTest qw(mult);

my $t = EventoTest->new;
my $d = $t->start(workers => 2, args => ['--spare-worker=false']);
ok($t->wait_for(sub { keys %{ $d->worker_pids } >= 2 }, 10), 'two workers');

# Open connections per worker, by slot, from the shared-memory segment.
sub per_worker {
    my ($dd) = @_;
    my $j = eval { $dd->evdump_json } or return {};
    my %o;
    for my $w (@{ $j->{workers} || [] }) {
        $o{ $w->{slot} // scalar keys %o } = $w->{counters}{connections_open} // 0;
    }
    return \%o;
}
sub total { my $s = 0; $s += $_ for values %{ $_[0] }; $s }

# A burst of N connections, opened back to back; held open until closed.
sub burst {
    my ($dd, $n) = @_;
    my @s = map { $dd->connect } 1 .. $n;
    return \@s;
}

for my $n (10, 40) {
    my $socks = burst($d, $n);
    my $c;
    $t->wait_for(sub { $c = per_worker($d); total($c) >= $n }, 10);
    my @v = map { $c->{$_} // 0 } sort keys %$c;
    is(total($c), $n, "$n connections opened in a burst are all accepted");
    my $min = (sort { $a <=> $b } @v)[0] // 0;
    # an even split is n/2; the rule allows 2 + a quarter more on one side
    ok(@v == 2 && $min >= int($n / 2) - 2 - int($n / 8), "  and spread over both workers: @v")
        or diag(explain $c);
    # every one of them is served
    my $ok = 0;
    for my $s (@$socks) {
        $d->send_all($s, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
        my ($r) = $d->read_responses($s, count => 1, timeout => 10);
        $ok++ if ($r->[0]{status} // 0) == 200;
    }
    is($ok, $n, '  and served');
    close $_ for @$socks;
    $t->wait_for(sub { total(per_worker($d)) == 0 }, 10);
}

# A worker that does not accept (stopped) does not stop the other from
# taking every connection: it yields only ACCEPT_YIELD_MS at a time.
{
    my %w = %{ $d->worker_pids };
    my ($a, $b) = @w{ sort keys %w };
    kill 'STOP', $b;
    my $t0 = time;
    my $socks = burst($d, 30);
    my $ok = 0;
    for my $s (@$socks) {
        $d->send_all($s, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
        my ($r) = $d->read_responses($s, count => 1, timeout => 10);
        $ok++ if ($r->[0]{status} // 0) == 200;
    }
    my $secs = time - $t0;
    kill 'CONT', $b;
    is($ok, 30, sprintf('with one worker stopped, the other serves all 30 new connections (%.2f s)', $secs));
    close $_ for @$socks;
}

# One worker alone takes bursts in batches.
{
    my $d1 = $t->start(workers => 1, args => ['--spare-worker=false']);
    my $socks = burst($d1, 100);
    ok($t->wait_for(sub { total(per_worker($d1)) >= 100 }, 10), 'one worker: 100 connections of a burst accepted');
    close $_ for @$socks;
    is($d1->stop, 0, 'it stops cleanly');
}

is($d->stop, 0, 'the daemon stops cleanly');
done_testing;
