#!/usr/bin/perl
# 26-directwrite.t - responses are written straight to the socket
# (worker/http.c write_response): a response to a keep-alive connection
# with nothing queued goes out in one writev, and only what the socket
# does not take is left to the bufferevent.  Queued always, each response
# switched EPOLLOUT on and off (two epoll_ctl calls) and waited a loop
# turn.  The counter http_write_queued tells the two apart: 0 for small
# answers to a client that reads them, more than 0 for a response larger
# than the socket's buffers to a client that reads nothing for a while,
# and for an answer that closes the connection.  Pipelined requests and a
# large response read late must still arrive whole and in order.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use EventoTest qw(json_encode json_decode);

my $t = EventoTest->new;
my $d = $t->start(workers => 1, args => ['--spare-worker=false']);
my (undef, $T) = $t->fresh_ns('direct');

sub queued {
    my $j = $d->evdump_json;
    my $n = 0;
    for my $w (@{ $j->{workers} // [] }) { $n += $w->{counters}{http_write_queued} // 0 }
    return $n;
}
ok($t->wait_for(sub { my $j = eval { $d->evdump_json }; $j && @{ $j->{workers} // [] } }, 10), 'evdump reads the worker');

# ---- 100 requests on one keep-alive connection, each read before the next
my $q0 = queued();
{
    my $s = $d->connect;
    my $good = 0;
    for my $i (1 .. 100) {
        $d->send_all($s, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
        my ($r) = $d->read_responses($s, count => 1, timeout => 5);
        $good++ if @$r && $r->[0]{status} == 200;
    }
    is($good, 100, '100 keep-alive requests answered');
    close $s;
}
is(queued() - $q0, 0, 'none of them was queued: each went out directly');

# ---- 50 pipelined requests in one send: all answered, in order
{
    my $s = $d->connect;
    my $req = join '', map {
        my $b = json_encode(['stream.write', 'pipe-1', { type => 'T', data => { i => $_ } }]);
        "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Type: application/json\r\n"
          . 'Content-Length: ' . length($b) . "\r\n\r\n$b"
    } 0 .. 49;
    $d->send_all($s, $req);
    my ($r) = $d->read_responses($s, count => 50, timeout => 20);
    my @pos = map { my ($ok, $v) = json_decode($_->{body}); $ok && ref $v eq 'HASH' ? $v->{position} // -1 : -1 } @$r;
    is_deeply(\@pos, [0 .. 49], '50 pipelined writes answered in order (positions 0-49)');
    close $s;
}

# ---- a response larger than the socket's buffers, read late: queued, whole
{
    my $pad = 'p' x 60000;
    for my $i (0 .. 99) {
        my ($st) = $d->rpc($T, 'stream.write', 'large-1', { type => 'T', data => { i => $i, pad => $pad } });
        $st == 200 or BAIL_OUT("write $i: $st");
    }
    my $q1 = queued();
    my $s = $d->connect;
    my $b = json_encode(['stream.get', 'large-1', { batchSize => -1 }]);
    $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Type: application/json\r\n"
                   . 'Content-Length: ' . length($b) . "\r\n\r\n$b");
    sleep 0.5 * EventoTest::mult();    # the client reads nothing for a while
    my ($r) = $d->read_responses($s, count => 1, timeout => 20);
    my ($ok, $v) = @$r ? json_decode($r->[0]{body}) : (0);
    ok($ok && ref $v eq 'ARRAY' && @$v == 100 && $v->[99][4]{i} == 99, 'a 6 MB response arrives whole')
        or diag('got ' . (@$r ? length($r->[0]{body}) . ' bytes' : 'nothing'));
    ok(queued() - $q1 >= 1, 'and was queued: the socket did not take it at once (' . (queued() - $q1) . ')');
    # the connection is still usable for a small one afterwards
    $d->send_all($s, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
    ($r) = $d->read_responses($s, count => 1, timeout => 5);
    is(@$r ? $r->[0]{status} : 0, 200, 'the same connection answers the next request');
    close $s;
}

# ---- an answer that closes the connection takes the queued path
{
    my $q2 = queued();
    my $s = $d->connect;
    $d->send_all($s, "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my ($r, $closed) = $d->read_responses($s, count => 1, timeout => 5);
    is(@$r ? $r->[0]{status} : 0, 200, 'Connection: close answered');
    my $eof = $closed;
    if (!$eof) {
        my $rin = '';
        vec($rin, fileno($s), 1) = 1;
        $eof = select(my $rout = $rin, undef, undef, 3 * EventoTest::mult()) > 0 && !sysread($s, my $x, 1);
    }
    ok($eof, 'and the connection closed');
    is(queued() - $q2, 1, 'through the queue, which closes once it is flushed');
    close $s;
}

done_testing;
