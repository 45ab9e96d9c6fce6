#!/usr/bin/perl
# 25-bigwrite.t - a large stream.write and the worker's memory afterwards:
# the body read in pieces into one block (worker/http.c body_take), the
# write stored and read back byte for byte, and the database connection
# that carried it reopened (worker/db.c, counter db_recycled) so that
# libpq's buffers do not keep the worker at the size of its largest
# message; ordinary writes never trigger that.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use EventoTest qw(json_encode json_decode);

my $t = EventoTest->new;
my $d = $t->start(workers => 1, args => ['--spare-worker=false']);
my (undef, $T) = $t->fresh_ns('big');

sub worker_pid { return (values %{ $d->worker_pids })[0] }
sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}
sub recycled {
    my $j = $d->evdump_json;
    my $n = 0;
    for my $w (@{ $j->{workers} // [] }) { $n += $w->{counters}{db_recycled} // 0 }
    return $n;
}

# warm up: the pool connected, the namespace cached
for my $i (1 .. 20) { $d->rpc($T, 'stream.write', 'small-1', { type => 'T', data => { i => $i } }) }
ok($t->wait_for(sub { my $j = eval { $d->evdump_json }; $j && @{ $j->{workers} // [] } }, 10), 'evdump reads the worker');
is(recycled(), 0, '20 small writes: no connection reopened');
my $pid = worker_pid();
my $rss0 = rss_kb($pid);

# A 10 MiB message, sent in 64 KiB pieces so that the body arrives in many reads.
my $pad = join '', map { chr(97 + $_ % 26) } 0 .. 1023;
$pad x= 10 * 1024;
my $body = json_encode(['stream.write', 'big-1', { type => 'Big', data => { pad => $pad } }]);
my $s = $d->connect;
my $head = "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Type: application/json\r\n"
         . 'Content-Length: ' . length($body) . "\r\n\r\n";
ok($d->send_all($s, $head), 'head sent');
for (my $o = 0; $o < length $body; $o += 65536) {
    $d->send_all($s, substr($body, $o, 65536)) or last;
}
my ($resp) = $d->read_responses($s, count => 1, timeout => 60);
is($resp->[0]{status}, 200, 'a 10 MiB write sent in 64 KiB pieces: 200') or diag($resp->[0]{body});
my ($st, $msgs) = $d->rpc($T, 'stream.get', 'big-1');
is($st, 200, 'read back');
ok(ref $msgs eq 'ARRAY' && @$msgs == 1 && $msgs->[0][4]{pad} eq $pad, 'the data comes back byte for byte')
    or diag('got ' . (ref $msgs eq 'ARRAY' ? scalar @$msgs : 'no') . ' messages');

# The connection that carried it (10 MiB out, 10 MiB in for the read) was reopened.
ok($t->wait_for(sub { recycled() >= 1 }, 10), 'db_recycled counts the reopened connection') or diag('db_recycled ' . recycled());
is(worker_pid(), $pid, 'the same worker');
my $rss1 = rss_kb($pid);
ok($rss1 < $rss0 + 8 * 1024, sprintf('worker RSS %d kB -> %d kB afterwards (libpq\'s 16-32 MiB given back)', $rss0, $rss1));

# and it keeps working
my ($st2) = $d->rpc($T, 'stream.write', 'small-1', { type => 'T', data => { after => 1 } });
is($st2, 200, 'a write after it');
my $n = recycled();
for my $i (1 .. 20) { $d->rpc($T, 'stream.write', 'small-2', { type => 'T', data => { i => $i } }) }
is(recycled(), $n, 'small writes after it reopen nothing');

done_testing;
