#!/usr/bin/perl
# 100-sse.t - GET /subscribe (api.md 9, decisions.md 7): framing and
# headers, ": ready" before anything else, catch-up in order past 1000
# messages, register-before-catch-up under concurrent writes (no gap, no
# duplicate), live pokes across workers and across two instances on one
# database, consumer groups equal to category.get, validation and auth
# errors as JSON, the per-namespace limit, keepalive comments, prompt
# cleanup of disconnected clients (no leaked fds), and shutdown.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN json_encode json_decode mult);
use EventoSSE;

my $t = EventoTest->new;
my $d = $t->start(workers => 3, args => ['--sse-keepalive', '1']);
ok($t->wait_for(sub { keys %{ $d->worker_pids } >= 3 }, 10), 'three workers');
my (undef, $T) = $t->fresh_ns('sse');

sub W {
    my ($stream, $tok) = @_;
    my ($st, $b, undef, $raw) = $d->rpc_ka($tok // $T, 'stream.write', $stream, { type => 'T', data => { s => $stream } });
    die "write $stream: $st $raw" unless $st == 200;
    return $b;
}
sub sub_ { my (%q) = @_; my $tok = delete $q{_token} // $T; return EventoSSE->new($d, token => $tok, query => \%q) }

# ---- headers, framing, ": ready" at once with nothing to catch up
{
    my $s = sub_(stream => 'fresh-1');
    ok($s->wait_for(sub { $_[0]->ready }, 5), 'stream subscription: ": ready" arrives with nothing to catch up');
    is($s->status, 200, 'status 200');
    is($s->headers->{'content-type'}, 'text/event-stream', 'Content-Type: text/event-stream');
    is($s->headers->{'cache-control'}, 'no-cache', 'Cache-Control: no-cache');
    is($s->headers->{'access-control-allow-origin'}, '*', 'Access-Control-Allow-Origin: *');
    like($s->headers->{'transfer-encoding'} // '', qr/chunked/, 'chunked');
    is(($s->blocks)[0]{raw}, ": ready\n\n", 'first bytes are exactly ": ready\n\n"');
    my $r = W('fresh-1');
    my @p = $s->wait_pokes(1, 5);
    is(scalar @p, 1, 'a live poke');
    my $want = sprintf qq(event: poke\ndata: {"stream":"fresh-1","position":0,"globalPosition":%d}\n\n),
        $r->{globalPosition};
    is(($s->blocks)[1]{raw}, $want, 'poke framing is byte-exact');
    for my $q ({ category => 'fresh' }, { all => 'true' }) {
        my $x = sub_(%$q);
        ok($x->wait_for(sub { $_[0]->ready }, 5), (keys %$q)[0] . ' subscription: ": ready"');
    }
}

# ---- catch-up: in order, beyond 1000 messages, then live
{
    my $n = 2300;
    my $lines = join '', map {
        sprintf qq({"id":"%s","stream":"big-%d","type":"T","pos":%d,"gpos":%d,"data":{},"meta":null,"time":"2025-01-01T00:00:00Z"}\n),
            sprintf('00000000-0000-4000-8000-%012d', $_), $_ % 7, int($_ / 7), 100000 + $_
    } 0 .. $n - 1;
    my $r = $d->http('POST', '/import', token => $T, content => $lines);
    like($r->{content}, qr/"done":true,"imported":$n/, "imported $n messages for the catch-up test")
        or diag("status $r->{status}: " . substr($r->{content} // '', 0, 500));
    my $s = sub_(category => 'big');
    my @p = $s->wait_pokes($n, 20);
    is(scalar @p, $n, "category catch-up pokes all $n missed messages (not capped at 1000)");
    my @g = map { $_->{globalPosition} } @p;
    is_deeply(\@g, [map { 100000 + $_ } 0 .. $n - 1], 'in global-position order, no duplicates');
    my $s2 = sub_(stream => 'big-3', position => 5);
    my @q = $s2->wait_pokes(int(($n - 1 - 3) / 7) + 1 - 5, 10);
    is_deeply([map { $_->{position} } @q], [5 .. int(($n - 1 - 3) / 7)], 'stream catch-up from position 5, in order');
    my $w = W('big-3');
    @q = $s2->wait_pokes(scalar(@q) + 1, 5);
    is($q[-1]{globalPosition}, $w->{globalPosition}, 'then live');
    my $s3 = sub_(category => 'big', position => 100000 + $n - 10);
    is(scalar $s3->wait_pokes(11, 10), 11, 'category position is a global position (10 imported + 1 written)');
}

# ---- position beyond the end: nothing, then exactly the new message (EXT T10)
{
    W('t10-1') for 1 .. 3;
    my $s = sub_(stream => 't10-1', position => 10);
    $s->wait_for(sub { $_[0]->ready }, 5);
    $s->pump(0.3);
    is(scalar $s->pokes, 0, 'no poke within 300 ms when position is past the end');
    W('t10-1') for 1 .. 8;     # positions 3..10
    my @p = $s->wait_pokes(1, 5);
    $s->pump(0.2);
    @p = $s->pokes;
    is_deeply([map { $_->{position} } @p], [10], 'then only the message at position 10');
}

# ---- register before catch-up: no gap, no duplicate, under concurrent writes
{
    my $n = 300;
    my $dir = $t->dir;
    my $writer = fork // die;
    if (!$writer) {
        alarm 0;
        for my $i (0 .. $n - 1) {
            my ($st) = $d->rpc($T, 'stream.write', 'race-1', { type => 'T', data => { i => $i } });
            POSIX::_exit(1) unless $st == 200;
        }
        POSIX::_exit(0);
    }
    my @subs;
    my $t0 = time;
    # Subscribe at different moments while the writer runs.
    while (@subs < 12 && time - $t0 < 20 * mult()) {
        push @subs, sub_(stream => 'race-1');
        push @subs, sub_(category => 'race') if @subs % 3 == 0;
        $_->pump(0.05) for @subs;
    }
    waitpid $writer, 0;
    is($? >> 8, 0, "writer wrote $n messages");
    my ($st, $msgs) = $d->rpc($T, 'stream.get', 'race-1', { batchSize => -1 });
    my @gp = map { $_->[3] } @$msgs;
    is(scalar @gp, $n, 'all messages stored');
    my $ok = 1;
    for my $s (@subs) {
        my @p = $s->wait_pokes($n, 15);
        my @got = map { $_->{globalPosition} } @p;
        if (!is_deeply(\@got, \@gp, 'subscriber got every message exactly once, in order')) {
            diag("got " . scalar(@got) . " pokes");
            $ok = 0;
            last;
        }
    }
}

# ---- cross-worker delivery: subscriber and writer on different workers
{
    my (@subs, %on);
    for (1 .. 40) {
        my $s = sub_(stream => 'xw-1');
        $s->wait_for(sub { $_[0]->ready }, 5);
        my $w = $s->worker // next;
        push @subs, $s;
        $on{$w}++;
        last if keys %on >= 3 && @subs >= 6;
    }
    cmp_ok(scalar keys %on, '>=', 2, 'subscriptions landed on ' . scalar(keys %on) . ' different workers');
    my $ws = $d->connect;
    # connect() returns once the kernel has the connection; a worker
    # accepts it a moment later.
    my $wpid = $t->wait_for(sub { $d->conn_worker($ws) }, 5) // '';
    ok($wpid, "writer connection is on worker pid $wpid");
    my @other = grep { ($_->worker // 0) != $wpid } @subs;
    ok(scalar @other, scalar(@other) . ' subscribers on other workers');
    my $body = json_encode(['stream.write', 'xw-1', { type => 'T', data => {} }]);
    for my $i (1 .. 5) {
        $d->send_all($ws, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Length: "
            . length($body) . "\r\n\r\n$body");
        my ($resp) = $d->read_responses($ws, count => 1);
        die 'write failed' unless $resp->[0] && $resp->[0]{status} == 200;
    }
    my $all = 1;
    for my $s (@subs) {
        my @p = $s->wait_pokes(5, 5);
        $all = 0 unless @p == 5 && $p[-1]{position} == 4;
    }
    ok($all, 'every subscriber, on every worker, got all 5 pokes');
    my $s = $other[0];
    my $t1 = time;
    $d->send_all($ws, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Length: "
        . length($body) . "\r\n\r\n$body");
    $s->wait_pokes(6, 5);
    my $lat = ($s->blocks)[-1]{at} - $t1;
    ok(scalar($s->pokes) == 6, sprintf 'poke on another worker %.1f ms after the write was sent', $lat * 1000);
    close $ws;
}

# ---- consumer groups: the same partition as category.get (and the aliases)
{
    W($_) for qw(grp-1 grp-2 grp-3 grp-4 grp grp-1+x);
    my %cg;
    for my $m (0, 1) {
        my ($st, $rows) = $d->rpc($T, 'category.get', 'grp', { consumerGroup => { member => $m, size => 2 } });
        $cg{$m} = [map { $_->[4] } @$rows];
    }
    my ($st0, $allrows) = $d->rpc($T, 'category.get', 'grp');
    is(scalar(@{ $cg{0} }) + scalar(@{ $cg{1} }), scalar(@$allrows) - 1,
        'category.get: the two members share every stream with an id (not "grp")');
    for my $m (0, 1) {
        for my $alias (0, 1) {
            my %q = $alias ? (consumerGroupMember => $m, consumerGroupSize => 2) : (consumer => $m, size => 2);
            my $s = sub_(category => 'grp', %q);
            my @p = $s->wait_pokes(scalar @{ $cg{$m} }, 5);
            $s->pump(0.1);
            @p = $s->pokes;
            is_deeply([map { $_->{globalPosition} } @p], $cg{$m},
                "member $m of 2 " . ($alias ? '(consumerGroupMember/Size)' : '(consumer/size)') . ': catch-up = category.get');
            $s->{_m} = $m;
            push @{ $cg{subs} }, $s;
        }
    }
    W($_) for qw(grp-5 grp-6 grp-7 grp-8 grp);
    for my $m (0, 1) {
        my ($st, $rows) = $d->rpc($T, 'category.get', 'grp', { consumerGroup => { member => $m, size => 2 } });
        my @want = map { $_->[4] } @$rows;
        my @s = grep { $_->{_m} == $m } @{ $cg{subs} };
        for my $s (@s) {
            $s->wait_pokes(scalar @want, 5);
            $s->pump(0.1);
            is_deeply([map { $_->{globalPosition} } $s->pokes], \@want, "member $m: live pokes = category.get");
        }
    }
    # "1" goes to member 0 and "2" to member 1 (api.md 7.8 vectors)
    my $s0 = sub_(category => 'vec', consumer => 0, size => 2);
    my $s1 = sub_(category => 'vec', consumer => 1, size => 2);
    $_->wait_for(sub { $_[0]->ready }, 5) for $s0, $s1;
    W($_) for qw(vec-1 vec-2 vec-3 vec-4);
    $s0->wait_pokes(2, 5);
    $s1->wait_pokes(2, 5);
    is_deeply([map { $_->{stream} } $s0->pokes], [qw(vec-1 vec-3)], 'member 0 of 2: vec-1, vec-3');
    is_deeply([map { $_->{stream} } $s1->pokes], [qw(vec-2 vec-4)], 'member 1 of 2: vec-2, vec-4');
    my $neg = sub_(category => 'vec', consumer => -1, size => 2);
    $neg->wait_for(sub { $_[0]->ready }, 5);
    W('vec-5');
    W('vec');
    $neg->pump(0.3);
    is(scalar $neg->pokes, 0, 'consumer=-1&size=2 is accepted and receives nothing');
}

# ---- validation (after auth) and auth errors: JSON
{
    my @cases = (
        [{}, q(Either 'stream', 'category', or 'all=true' parameter required)],
        [{ all => 'yes' }, q(Either 'stream', 'category', or 'all=true' parameter required)],
        [{ all => 'true', stream => 's' }, q(Cannot combine 'all' with 'stream' or 'category')],
        [{ stream => 's', category => 'c' }, q(Cannot specify both 'stream' and 'category')],
        [{ stream => 's', position => 'x' }, 'Invalid position parameter'],
        [{ stream => 's', position => '1.5' }, 'Invalid position parameter'],
        [{ category => 'c', consumer => 'x' }, 'Invalid consumer parameter'],
        [{ category => 'c', size => '2x' }, 'Invalid size parameter'],
        [{ category => 'c', consumer => 2, size => 2 }, 'Invalid consumer group: member must be < size'],
        [{ category => 'c', consumer => 1 }, 'Invalid consumer group: member must be < size'],
    );
    for my $c (@cases) {
        my $s = sub_(%{ $c->[0] });
        $s->wait_for(sub { $_[0]->closed || ($_[0]->status && length $_[0]->body) }, 5);
        my $j = $s->json;
        is($s->status, 400, "400 for " . json_encode($c->[0]));
        is_deeply($j, { error => { code => 'INVALID_REQUEST', message => $c->[1] } }, "  JSON error: $c->[1]");
        like($s->headers->{'content-type'} // '', qr{application/json}, '  as application/json');
    }
    my $s = sub_(stream => 's', consumer => 'x', size => 'y');
    $s->wait_for(sub { $_[0]->status }, 5);
    is($s->status, 200, 'consumer/size are ignored for stream subscriptions');
    for my $a ([undef, 401, 'AUTH_REQUIRED'], ['bogus', 401, 'AUTH_INVALID_TOKEN'],
               [EventoTest::make_token('default'), 403, 'AUTH_UNAUTHORIZED']) {
        my $x = EventoSSE->new($d, token => $a->[0], query => { stream => 's' });
        $x->wait_for(sub { $_[0]->status && length $_[0]->body }, 5);
        is($x->status, $a->[1], "auth: $a->[1]");
        is(($x->json // {})->{error}{code}, $a->[2], "auth: $a->[2]");
    }
    my $q = EventoSSE->new($d, query => { stream => 'fresh-1', token => $T });
    ok($q->wait_for(sub { $_[0]->ready }, 5), 'token in the query string works');
}

# ---- cross-instance: a second daemon on the same database
{
    my $d2 = $t->start(workers => 2, db => $d->db);
    my $s2 = EventoSSE->new($d2, token => $T, query => { stream => 'xi-1' });
    my $c2 = EventoSSE->new($d2, token => $T, query => { category => 'xi' });
    my $a2 = EventoSSE->new($d2, token => $T, query => { all => 'true' });
    my $s1 = sub_(stream => 'xi-2');
    $_->wait_for(sub { $_[0]->ready }, 5) for $s2, $c2, $a2, $s1;
    for my $i (1 .. 5) {
        W('xi-1');
        my $n = $s2->wait_pokes($i, 5);
        is(scalar $s2->pokes, $i, "instance 2 stream subscriber got poke $i for a write through instance 1");
    }
    is(scalar $c2->wait_pokes(5, 5), 5, 'instance 2 category subscriber: 5 pokes');
    ok(scalar($a2->wait_pokes(5, 5)) >= 5, 'instance 2 all subscriber: 5 pokes');
    my ($st, $b) = $d2->rpc($T, 'stream.write', 'xi-2', { type => 'T', data => {} });
    my @p = $s1->wait_pokes(1, 5);
    is($p[0]{globalPosition}, $b->{globalPosition}, 'and the other way: a write through instance 2 pokes instance 1');
    $d2->stop;
}

# ---- disconnect cleanup: no leaked fds, subscriptions released
{
    my %w = %{ $d->worker_pids };
    my $sum = sub { my $n = 0; $n += $d->fd_count($w{$_}) // 0 for keys %w; $n };
    # Connections of the sections above may still be closing: settle first.
    my $prev = -1;
    $t->wait_for(sub { my $n = $sum->(); my $same = $n == $prev; $prev = $n; $same }, 10);
    my %before = map { $_ => $d->fd_count($w{$_}) } keys %w;
    my $base = $sum->();
    for my $round (1 .. 4) {
        my @s = map { sub_($_ % 2 ? (stream => "dc-$_") : (category => 'dc')) } 1 .. 50;
        $_->wait_for(sub { $_[0]->ready }, 5) for @s;
        cmp_ok($sum->(), '>=', $base + 50, "round $round: 50 subscriptions hold 50 more fds") if $round == 1;
        $_->close for @s;
    }
    my $ok = $t->wait_for(sub {
        for (keys %w) { return 0 if ($d->fd_count($w{$_}) // 0) > $before{$_} + 2 }
        return 1;
    }, 10);
    ok($ok, 'worker fd counts back to where they were after 200 subscribe/disconnect cycles')
        or diag(join ' ', map { "$_: $before{$_} -> " . ($d->fd_count($w{$_}) // '?') } keys %w);
    # A write to a stream whose subscribers left must not trip over them.
    W('dc-1');
    my ($st) = $d->rpc($T, 'sys.health');
    is($st, 200, 'server fine after the cycles');
}

# ---- keepalive (--sse-keepalive 1): a comment without the word "ready"
{
    my $s = sub_(stream => 'ka-1');
    ok($s->wait_for(sub { grep { $_ eq 'keepalive' } $_[0]->comments }, 5), 'keepalive comment on an idle subscription');
    ok(!grep({ $_ ne 'ready' && /ready/ } $s->comments), 'keepalive does not contain "ready"');
    is(scalar(grep { $_ eq 'ready' } $s->comments), 1, 'exactly one ": ready"');
}

# ---- per-namespace limit, released on disconnect
{
    my $dl = $t->start(workers => 2, args => ['--max-subscriptions', '5']);
    my (undef, $L) = $t->fresh_ns('lim');
    my $tok = $dl->create_ns('lim2');
    my @s = map { EventoSSE->new($dl, token => $tok, query => { stream => "l-$_" }) } 1 .. 5;
    ok(!grep({ !$_->wait_for(sub { $_[0]->ready }, 5) } @s), '5 subscriptions accepted');
    # Make sure both workers hold some, so a per-worker count could not pass.
    for (1 .. 20) {
        my %on = map { ($_->worker // 0) => 1 } @s;
        last if keys %on >= 2;
        (shift @s)->close;
        my $y;
        $t->wait_for(sub {
            $y = EventoSSE->new($dl, token => $tok, query => { stream => 'l-x' });
            $y->wait_for(sub { $_[0]->status }, 5);
            ($y->status // 0) == 200;
        }, 5);
        push @s, $y;
    }
    my %on;
    $on{ $_->worker // 0 }++ for @s;
    is(scalar keys %on, 2, 'they are spread over both workers (' . join('+', values %on) . ')');
    my $x = EventoSSE->new($dl, token => $tok, query => { stream => 'l-6' });
    $x->wait_for(sub { $_[0]->status && length $_[0]->body }, 5);
    is($x->status, 429, 'the 6th is refused: 429 (over both workers)');
    is(($x->json // {})->{error}{code}, 'TOO_MANY_SUBSCRIPTIONS', 'TOO_MANY_SUBSCRIPTIONS');
    $_->close for @s[0, 1];
    my $ok = $t->wait_for(sub {
        my $y = EventoSSE->new($dl, token => $tok, query => { stream => 'l-7' });
        $y->wait_for(sub { $_[0]->status }, 5);
        push @s, $y;
        return ($y->status // 0) == 200;
    }, 5);
    ok($ok, 'accepted again after two subscribers disconnected');
    $_->close for @s;
    $dl->stop;
}

# ---- shutdown ends subscriptions with the chunked terminator, promptly
{
    my $s = sub_(stream => 'bye-1');
    $s->wait_for(sub { $_[0]->ready }, 5);
    my $t0 = time;
    my $rc = $d->stop(timeout => 10);
    is($rc, 0, 'SIGTERM: exit 0');
    cmp_ok(time - $t0, '<', 5, 'without waiting for the drain deadline');
    $s->wait_for(sub { $_[0]->ended || $_[0]->closed }, 5);
    ok($s->ended, 'the stream ended with the chunked terminator');
}

done_testing;
