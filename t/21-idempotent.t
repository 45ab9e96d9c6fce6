#!/usr/bin/perl
# 21-idempotent.t - idempotent retries by options.id (decisions.md 4): the
# same write again returns the original result and stores nothing; a
# different write with a used id is 409 MESSAGE_ID_CONFLICT.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(jtype arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start(workers => 3);
my (undef, $T) = $t->fresh_ns('idem');

sub W { return $d->rpc($T, 'stream.write', @_) }
sub count { my (undef, $b) = $d->rpc($T, 'stream.get', $_[0], { batchSize => -1 }); return scalar @{ ref $b eq 'ARRAY' ? $b : [] } }

my $id = '5a1e0b3c-7d2f-4e8a-9b1c-0d2e3f4a5b6c';
my $msg = { type => 'Paid', data => { amount => 10, cur => 'EUR' }, metadata => { by => 'x' } };

W('idem-0', { type => 'Pad', data => {} });    # so the first global position is not trivially 1
my ($st, $first, $h, $raw) = W('idem-1', $msg, { id => $id });
is($st, 200, 'first write') or diag($raw);
my ($p, $g) = @{$first}{qw(position globalPosition)};

($st, my $again, $h, $raw) = W('idem-1', $msg, { id => $id });
is($st, 200, 'identical retry: 200') or diag($raw);
is_deeply($again, $first, 'identical retry: same position and globalPosition');
is(count('idem-1'), 1, 'one message in the stream');

my ($st2, $other) = W('idem-1', { type => 'Paid', data => { amount => 11 } });
is(obj($other)->{position}, 1, 'another write moves the stream on');

($st, $again, $h, $raw) = W('idem-1', $msg, { id => $id });
is($st, 200, 'retry after the stream moved on: 200');
is_deeply($again, $first, '... still the original result');

($st, $again, $h, $raw) = W('idem-1', $msg, { id => $id, expectedVersion => -1 });
is($st, 200, 'retry with an expectedVersion that no longer matches: 200 (it already happened)') or diag($raw);
is_deeply($again, $first, '... the original result');

($st, $again, $h, $raw) = W('idem-1', $msg, { id => uc $id });
is($st, 200, 'retry with the id in upper case (same UUID): 200') or diag($raw);
is_deeply($again, $first, '... the original result');

{
    my $body = qq{["stream.write", "idem-1", {"metadata": {"by": "x"}, "data": {"cur": "EUR", "amount": 10}, "type": "Paid"}, {"id": "$id"}]};
    my ($s, $b, undef, $r) = $d->raw_rpc($T, $body);
    is($s, 200, 'retry with other key order and whitespace (same JSON values): 200') or diag($r);
    is_deeply($b, $first, '... the original result');
}
is(count('idem-1'), 2, 'still only two messages in the stream');

# ---- conflicting reuse of the id
for my $case (
    ['different data',     'idem-1', { %$msg, data => { amount => 99, cur => 'EUR' } }],
    ['different type',     'idem-1', { %$msg, type => 'Refunded' }],
    ['different stream',   'idem-2', $msg],
    ['different metadata', 'idem-1', { %$msg, metadata => { by => 'y' } }],
    ['metadata dropped',   'idem-1', { type => $msg->{type}, data => $msg->{data} }],
) {
    my ($name, $stream, $m) = @$case;
    my ($s, $b, undef, $r) = W($stream, $m, { id => $id });
    is($s, 409, "$name: 409") or diag($r);
    is(obj($b)->{error}{code}, 'MESSAGE_ID_CONFLICT', "$name: MESSAGE_ID_CONFLICT");
    like($r, qr/^\{"error":\{/, "$name: JSON error body");
}
is(count('idem-1'), 2, 'conflicts wrote nothing to idem-1');
is(count('idem-2'), 0, 'conflicts wrote nothing to idem-2');
{
    my (undef, $b) = $d->rpc($T, 'stream.get', 'idem-1');
    is(arr($b)->[0][0], $id, 'the stored message keeps its id');
    is_deeply(arr($b)->[0][4], $msg->{data}, 'the stored message keeps its data');
}

# ---- ids are unique per namespace, not global
{
    my (undef, $T2) = $t->fresh_ns('idem-other');
    my ($s, $b, undef, $r) = $d->rpc($T2, 'stream.write', 'idem-1', { type => 'Other', data => {} }, { id => $id });
    is($s, 200, 'the same id in another namespace is a new message') or diag($r);
    is(obj($b)->{position}, 0, '... position 0 there');
    is(count('idem-1'), 2, '... nothing changed here');
}

# ---- concurrent identical retries never duplicate
{
    my $cid = '0b6e5c9d-2f1a-4c3b-8d7e-6f5a4b3c2d1e';
    my $m = { type => 'Once', data => { n => 1 } };
    my @r = $t->parallel(8, sub {
        my ($s, $b, undef, $r) = W('idem-3', $m, { id => $cid });
        return { status => $s, body => $b };
    });
    is(scalar(grep { $_->{status} == 200 } @r), 8, '8 concurrent identical writes: all 200')
        or diag(join "\n", map { "$_->{status} " . EventoTest::json_encode($_->{body}) } @r);
    my %res = map { EventoTest::json_encode($_->{body}) => 1 } grep { $_->{status} == 200 } @r;
    is(scalar keys %res, 1, '... all with the same result');
    is(count('idem-3'), 1, '... one message stored');
}

is($d->http('GET', '/health')->{status}, 200, 'still healthy');
done_testing;
