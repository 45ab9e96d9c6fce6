#!/usr/bin/perl
# 22-groupcommit.t - natural group commit of stream.write (issue 8): with
# one worker and many concurrent writers, writes share transactions, and
# every write keeps its own meaning: expected versions checked one by one,
# idempotent ids, positions as a sequential replay would give them, mixed
# namespaces and categories in one batch, and a worker killed mid-batch
# loses nothing it acknowledged.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(arr obj);

my $t = EventoTest->new;
my $d = $t->start(workers => 1, args => ['--log-level', 'debug']);
my @ns = map { [ $t->fresh_ns("gc$_") ]->[1] } 0 .. 2;
my $T = $ns[0];

sub batches_seen {
    my @n = ($d->log_text =~ /write batch writes=(\d+)/g);
    return scalar grep { $_ > 1 } @n;
}

sub stream_msgs {
    my ($tok, $s) = @_;
    my ($st, $b) = $d->rpc($tok, 'stream.get', $s, { batchSize => -1 });
    return arr($b);
}

# ---- conflict storm on one stream: optimistic writers racing
{
    my $clients = 24;
    my @r = $t->parallel($clients, sub {
        my $p = shift;
        my ($ok, $conf, $other) = (0, 0, 0);
        for (1 .. 15) {
            my ($st, $v) = $d->rpc($T, 'stream.version', 'storm-1');
            my $ev = defined $v ? $v : -1;
            my ($ws, $wb) = $d->rpc($T, 'stream.write', 'storm-1', { type => 'T', data => { p => $p } },
                { expectedVersion => $ev + 0 });
            if ($ws == 200) { $ok++ }
            elsif ($ws == 409 && obj(obj($wb)->{error})->{code} eq 'STREAM_VERSION_CONFLICT') { $conf++ }
            else { $other++ }
        }
        return { ok => $ok, conf => $conf, other => $other };
    });
    my ($ok, $conf, $other) = (0, 0, 0);
    for (@r) { $ok += obj($_)->{ok} // 0; $conf += obj($_)->{conf} // 0; $other += obj($_)->{other} // 1 }
    is($other, 0, 'storm: only 200 and 409 answers');
    cmp_ok($ok, '>', 0, 'storm: some writes won');
    my $m = stream_msgs($T, 'storm-1');
    is(scalar @$m, $ok, 'storm: one stored message per acknowledged write');
    is_deeply([map { $_->[2] } @$m], [0 .. $#$m], 'storm: positions gapless');
}

# ---- mixed namespaces and categories, ledger of acknowledgements
{
    my @r = $t->parallel(24, sub {
        my $p = shift;
        my @acks;
        for my $k (0 .. 19) {
            my $n = ($p + $k) % 3;
            my $s = ('alpha', 'beta', 'gamma')[($p * 7 + $k) % 3] . '-' . (($p + $k * 5) % 4);
            my ($st, $b, undef, $raw) = $d->rpc($ns[$n], 'stream.write', $s,
                { type => 'T', data => { p => $p, k => $k } });
            return { error => "$st $raw" } unless $st == 200;
            push @acks, [$n, $s, $b->{position}, $b->{globalPosition}, "$p/$k"];
        }
        return \@acks;
    });
    my @errs = grep { ref $_ eq 'HASH' } @r;
    is(scalar @errs, 0, 'mixed: every write acknowledged') or diag(explain(\@errs));
    my @acks = map { @$_ } grep { ref $_ eq 'ARRAY' } @r;
    is(scalar @acks, 480, 'mixed: 480 acknowledgements');
    my ($bad, %streams) = (0);
    $streams{"$_->[0]|$_->[1]"} = 1 for @acks;
    my %stored;
    for my $key (keys %streams) {
        my ($n, $s) = split /\|/, $key, 2;
        my $m = stream_msgs($ns[$n], $s);
        # A sequential replay in global-position order gives 0, 1, 2, ...
        my @byg = sort { $a->[3] <=> $b->[3] } @$m;
        $bad++ unless join(',', map { $_->[2] } @byg) eq join(',', 0 .. $#byg);
        $stored{"$n|$s|$_->[2]"} = "$_->[3]|$_->[4]{p}/$_->[4]{k}" for @$m;
    }
    is($bad, 0, 'mixed: in every stream, positions follow global positions gaplessly');
    my $mismatch = grep { ($stored{"$_->[0]|$_->[1]|$_->[2]"} // '') ne "$_->[3]|$_->[4]" } @acks;
    is($mismatch, 0, 'mixed: every acknowledgement matches the stored message');
    is(scalar(keys %stored), 480, 'mixed: nothing stored twice');
}

# ---- idempotent retries racing inside one batch
{
    my $id = 'aa0e8400-e29b-41d4-a716-4466554400aa';
    my @r = $t->parallel(16, sub {
        my ($st, $b) = $d->rpc($T, 'stream.write', 'idem-9', { type => 'Paid', data => { a => 1 } }, { id => $id });
        return { st => $st, pos => obj($b)->{position}, g => obj($b)->{globalPosition} };
    });
    is(scalar(grep { obj($_)->{st} == 200 } @r), 16, 'same id 16 times at once: all 200');
    my %g = map { (obj($_)->{g} // 'x') => 1 } @r;
    is(scalar keys %g, 1, '... all with the same globalPosition');
    is(scalar @{ stream_msgs($T, 'idem-9') }, 1, '... and one stored message');
}

cmp_ok(batches_seen(), '>', 0, 'writes were committed in shared transactions (batches of 2 or more)')
    or diag('no batch formed: the tests above ran one write per transaction');

# The write lane's counters (shm segment, /metrics) agree with the log.
{
    my $m = $d->http('GET', '/metrics')->{content} // '';
    my %v = map { /^(eventodb_write_\w+)(?:\{[^}]*\})? (\S+)$/ ? ($1 => $2) : () } split /\n/, $m;
    my $tx = $v{eventodb_write_batches_total} // 0;
    my $w = $v{eventodb_write_batched_total} // 0;
    cmp_ok($tx, '>', 0, "write transactions counted ($tx)");
    cmp_ok($w, '>', $tx, "more writes than transactions: average batch " . ($tx ? sprintf('%.2f', $w / $tx) : 'n/a'));
    my $sum = 0;
    $sum += $v{$_} // 0 for grep { /^eventodb_write_batches_\d/ } keys %v;
    is($sum, $tx, 'the batch-size classes add up to the transactions');
    my @log = ($d->log_text =~ /write batch writes=(\d+)/g);
    is($v{eventodb_write_batches_1_total} // 0, $tx - scalar(@log), 'lone writes = transactions not logged as batches');
    like($m, qr/^eventodb_write_batch_wait_seconds_count \d+/m, 'batch wait histogram exported');
}

# ---- regression: pipelined writes on one connection while batches form
# (an answer used to start the next pipelined request from inside the
# batch's completion, which reused the batch being answered: double
# answers, lost writes, double free)
{
    my @r = $t->parallel(6, sub {
        my $p = shift;
        my $req = '';
        for my $k (0 .. 15) {
            my $body = EventoTest::json_encode(['stream.write', "pipe-$p",
                { type => 'T', data => { k => $k } }]);
            $req .= "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\n"
                . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
        }
        my $buf = $d->raw($req, count => 16);
        my ($resp) = EventoTest::parse_responses($buf, 0);
        return { n => scalar @$resp, ok => scalar(grep { $_->{status} == 200 } @$resp),
            pos => join(',', map { (EventoTest::json_decode($_->{body}))[1]{position} // 'x' } @$resp) };
    });
    my $bad = grep { obj($_)->{n} != 16 || obj($_)->{ok} != 16 || obj($_)->{pos} ne join(',', 0 .. 15) } @r;
    is($bad, 0, 'pipelined writes: 16 answers per connection, in order, positions 0..15')
        or diag(explain(\@r));
    my $stored = 0;
    $stored += scalar @{ stream_msgs($T, "pipe-$_") } for 0 .. 5;
    is($stored, 96, 'pipelined writes: exactly 96 messages stored');
}

# ---- kill -9 of the worker with batches in flight
{
    my $pid0 = $d->worker_pids->{0};
    my @r = $t->parallel(13, sub {
        my $p = shift;
        if ($p == 12) {
            # The killer: wait until writes are flowing, then SIGKILL the worker.
            $t->wait_for(sub { my (undef, $v) = $d->rpc($T, 'stream.version', 'kill-0'); ($v // -1) >= 10 }, 20);
            kill 'KILL', $pid0;
            return { killed => 1 };
        }
        my @acks;
        for my $k (0 .. 150) {
            my ($st, $b) = eval { $d->rpc($T, 'stream.write', "kill-$p", { type => 'T', data => { k => $k } }) };
            push @acks, [$b->{position}, $b->{globalPosition}, $k] if ($st // 0) == 200;
        }
        return \@acks;
    });
    ok(obj($r[12])->{killed}, 'worker killed while writers were running');
    ok($t->wait_for(sub { my $p = $d->worker_pids->{0}; $p && $p != $pid0 }, 10), 'worker replaced');
    my ($acked, $lost, $gaps) = (0, 0, 0);
    for my $p (0 .. 11) {
        my $m = stream_msgs($T, "kill-$p");
        my %m = map { $_->[2] => "$_->[3]|$_->[4]{k}" } @$m;
        $gaps++ unless join(',', map { $_->[2] } @$m) eq join(',', 0 .. $#$m);
        for my $a (@{ arr($r[$p]) }) {
            $acked++;
            $lost++ if ($m{ $a->[0] } // '') ne "$a->[1]|$a->[2]";
        }
    }
    cmp_ok($acked, '>', 0, "writes acknowledged around the kill ($acked)");
    is($lost, 0, 'every acknowledged write survived with its position and global position');
    is($gaps, 0, 'no stream has a gap (a batch commits all or nothing)');
}

# ---- regression: batches spanning namespaces on two workers never deadlock
# (advisory locks are keyed by category alone, database-wide; taking them
# namespace by namespace let two batches take the same two keys in
# opposite orders)
{
    my $d2 = $t->start(workers => 2);
    my @tok = map { $d2->create_ns($t->nsid("dl$_")) } 0 .. 1;
    my @r = $t->parallel(16, sub {
        my $p = shift;
        my $bad = 0;
        for my $k (0 .. 39) {
            # ns 0 writes cat a then b, ns 1 writes b then a: opposite orders.
            # Half the writers pair (ns 0, dla) with (ns 1, dlb), the other
            # half (ns 0, dlb) with (ns 1, dla).
            my $n = $k % 2;
            my $cat = (($p % 2) ^ $n) ? 'dlb' : 'dla';
            my ($st, $b, undef, $raw) = $d2->rpc($tok[$n], 'stream.write', "$cat-" . ($p % 3),
                { type => 'T', data => { p => $p, k => $k } });
            $bad++ unless $st == 200;
        }
        return { bad => $bad };
    });
    my $bad = 0;
    $bad += obj($_)->{bad} // 40 for @r;
    is($bad, 0, 'two workers, two namespaces, crossing categories: every write acknowledged');
    unlike($d2->log_text, qr/deadlock/, 'no deadlock reported');
}

# ---- --write-batch-max 1: one write per transaction
{
    my $d1 = $t->start(workers => 1, args => ['--log-level', 'debug', '--write-batch-max', '1']);
    my $T1 = $t->admin_token;
    my @r = $t->parallel(16, sub {
        my $p = shift;
        my $ok = 0;
        for (1 .. 10) { my ($st) = $d1->rpc($T1, 'stream.write', 'one-1', { type => 'T', data => {} }); $ok++ if $st == 200 }
        return { ok => $ok };
    });
    is(scalar(grep { obj($_)->{ok} == 10 } @r), 16, 'batch max 1: all writes acknowledged');
    my @n = ($d1->log_text =~ /write batch writes=(\d+)/g);
    is(scalar @n, 0, 'batch max 1: no shared transaction');
}

done_testing;
