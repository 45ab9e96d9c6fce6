#!/usr/bin/perl
# 10-write.t - stream.write: every validation message of api.md 6.3 in
# order, results, positions, expectedVersion (api 7.3, decisions 4),
# supplied and generated ids, invalid ids (decisions 5), exact storage of
# data and metadata (decisions 4), U+0000.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN jtype num uuid_re json_decode arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start;
my (undef, $T) = $t->fresh_ns('write');

sub W { return $d->rpc($T, 'stream.write', @_) }

sub invalid {
    my ($args, $msg, $name) = @_;
    my ($st, $b, $h, $raw) = $d->rpc($T, 'stream.write', @$args);
    is($st, 400, "$name: 400");
    is_deeply($b, { error => { code => 'INVALID_REQUEST', message => $msg } }, "$name: $msg")
        or diag($raw);
}

# ---- validation, api 6.3 in order
my $M = { type => 'T', data => {} };
my $A2 = 'stream.write requires at least 2 arguments: streamName and message';
invalid([], $A2, 'no arguments');
invalid(['val-1'], $A2, 'one argument');
my $SN = 'streamName must be a non-empty string';
invalid(['', $M], $SN, 'empty stream name');
invalid([123, $M], $SN, 'numeric stream name');
invalid([undef, $M], $SN, 'null stream name');
invalid([['a'], $M], $SN, 'array stream name');
invalid(['', undef], $SN, 'stream name checked before message');
my $MO = 'message must be an object';
invalid(['val-1', undef], $MO, 'null message');
invalid(['val-1', 'x'], $MO, 'string message');
invalid(['val-1', []], $MO, 'array message');
my $TY = 'message.type must be a non-empty string';
invalid(['val-1', { data => {} }], $TY, 'missing type');
invalid(['val-1', { type => '', data => {} }], $TY, 'empty type');
invalid(['val-1', { type => 5, data => {} }], $TY, 'numeric type');
invalid(['val-1', { type => undef, data => {} }], $TY, 'null type');
invalid(['val-1', { type => '' }], $TY, 'type checked before data');
my $DA = 'message.data must be an object';
invalid(['val-1', { type => 'T' }], $DA, 'missing data');
invalid(['val-1', { type => 'T', data => undef }], $DA, 'null data');
invalid(['val-1', { type => 'T', data => [] }], $DA, 'array data');
invalid(['val-1', { type => 'T', data => 'x' }], $DA, 'string data');
invalid(['val-1', { type => 'T', data => 1 }], $DA, 'number data');
invalid(['val-1', { type => 'T', data => [], metadata => 'x' }], $DA, 'data checked before metadata');
my $ME = 'message.metadata must be an object';
invalid(['val-1', { type => 'T', data => {}, metadata => undef }], $ME, 'null metadata');
invalid(['val-1', { type => 'T', data => {}, metadata => [] }], $ME, 'array metadata');
invalid(['val-1', { type => 'T', data => {}, metadata => 'x' }], $ME, 'string metadata');
invalid(['val-1', { type => 'T', data => {}, metadata => 'x' }, 'x'], $ME, 'metadata checked before options');
my $OP = 'options must be an object';
invalid(['val-1', $M, 'x'], $OP, 'string options');
invalid(['val-1', $M, []], $OP, 'array options');
invalid(['val-1', $M, undef], $OP, 'null options');
my $ID = 'options.id must be a string';
invalid(['val-1', $M, { id => 5 }], $ID, 'numeric id');
invalid(['val-1', $M, { id => undef }], $ID, 'null id');
invalid(['val-1', $M, { id => 5, expectedVersion => 'x' }], $ID, 'id checked before expectedVersion');
my $EV = 'options.expectedVersion must be a number';
invalid(['val-1', $M, { expectedVersion => '1' }], $EV, 'string expectedVersion');
invalid(['val-1', $M, { expectedVersion => undef }], $EV, 'null expectedVersion');
invalid(['val-1', $M, { expectedVersion => [] }], $EV, 'array expectedVersion');
{
    my ($st, $b) = $d->rpc($T, 'stream.version', 'val-1');
    is($st, 200, 'stream.version after rejected writes');
    ok(!defined $b, 'nothing was written by rejected requests');
}

# ---- results and positions
my @r;
for my $i (0 .. 2) {
    my ($st, $b, $h, $raw) = W('acct-1', { type => 'Deposited', data => { amount => $i } });
    is($st, 200, "write $i: 200") or diag($raw);
    is_deeply([sort keys %$b], ['globalPosition', 'position'], "write $i: result keys");
    is(jtype($raw, 'position'), 'int', "write $i: position is an integer");
    is(jtype($raw, 'globalPosition'), 'int', "write $i: globalPosition is an integer");
    push @r, $b;
}
is_deeply([map { $_->{position} } @r], [0, 1, 2], 'positions 0, 1, 2');
ok($r[0]{globalPosition} >= 1, 'global positions start at 1 or more');
ok($r[0]{globalPosition} < $r[1]{globalPosition} && $r[1]{globalPosition} < $r[2]{globalPosition},
   'global positions increase');
{
    my ($st, $b) = W('acct-2', { type => 'X', data => {} });
    is(obj($b)->{position}, 0, 'another stream starts at 0');
    ok(obj($b)->{globalPosition} > $r[2]{globalPosition}, 'global position keeps increasing across streams');
    ($st, $b) = W('acct-1', { type => 'Deposited', data => {} }, { id => '' });
    is($st, 200, 'empty options.id is treated as absent');
    is(obj($b)->{position}, 3, '... position 3');
    ($st, $b) = W('acct-1', { type => 'X', data => {}, extra => 1 }, { unknown => 1, condition => 'x' });
    is($st, 200, 'unknown message and option keys are ignored');
    ($st, $b) = $d->rpc($T, 'stream.get', 'acct-1');
    is_deeply([map { $_->[3] } @{ arr($b) }], [(map { $_->{globalPosition} } @r), arr($b)->[3][3], arr($b)->[4][3]],
              'stream.get returns the acknowledged global positions');
}

# ---- expectedVersion (api 7.3, decisions 4)
sub conflict {
    my ($args, $exp, $act, $name) = @_;
    my ($st, $b, $h, $raw) = W(@$args);
    is($st, 409, "$name: 409");
    is_deeply($b, { error => { code => 'STREAM_VERSION_CONFLICT',
                               message => "Expected version $exp, stream is at version $act",
                               details => { expected => $exp, actual => $act } } }, "$name: body")
        or diag($raw);
    is(jtype($raw, 'error', 'details', 'expected'), 'int', "$name: details.expected is an integer");
    is(jtype($raw, 'error', 'details', 'actual'), 'int', "$name: details.actual is an integer");
}
{
    my $m = { type => 'E', data => {} };
    conflict(['ev-1', $m, { expectedVersion => 0 }], 0, -1, 'expectedVersion 0 on a new stream');
    my ($st, $b) = W('ev-1', $m, { expectedVersion => -1 });
    is($st, 200, 'expectedVersion -1 on a new stream');
    is(obj($b)->{position}, 0, '... position 0');
    conflict(['ev-1', $m, { expectedVersion => -1 }], -1, 0, 'expectedVersion -1 on an existing stream');
    ($st, $b) = W('ev-1', $m, { expectedVersion => 0 });
    is($st, 200, 'expectedVersion matching');
    is(obj($b)->{position}, 1, '... position 1');
    conflict(['ev-1', $m, { expectedVersion => 5 }], 5, 1, 'expectedVersion ahead');
    conflict(['ev-1', $m, { expectedVersion => 0 }], 0, 1, 'expectedVersion behind');
    ($st, $b) = W('ev-1', $m, { expectedVersion => 1.9 });
    is($st, 200, 'expectedVersion 1.9 is truncated to 1 (api 3.6)');
    is(obj($b)->{position}, 2, '... position 2');
    ($st, $b) = $d->rpc($T, 'stream.get', 'ev-1');
    is(scalar @{ arr($b) }, 3, 'conflicting writes wrote nothing');
    ($st, $b) = $d->rpc($T, 'stream.version', 'ev-1');
    is($b, 2, 'stream.version 2');
}

# ---- ids
my $uuid = uuid_re();
{
    my $lower = '0f8fad5b-d9cb-469f-a165-70867728950e';
    my ($st, $b) = W('id-1', { type => 'T', data => {} }, { id => $lower });
    is($st, 200, 'write with a lower-case id');
    my $upper = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11';
    ($st, $b) = W('id-1', { type => 'T', data => {} }, { id => $upper });
    is($st, 200, 'write with an upper-case id');
    ($st, $b) = W('id-1', { type => 'T', data => {} });
    is($st, 200, 'write with a generated id');
    ($st, $b) = $d->rpc($T, 'stream.get', 'id-1');
    is(arr($b)->[0][0], $lower, 'supplied id echoed');
    is(arr($b)->[1][0], lc $upper, 'upper-case id comes back canonical lower-case');
    like(arr($b)->[2][0], $uuid, 'generated id is a canonical lower-case UUID');
    is(substr(arr($b)->[2][0], 14, 1), '7', 'generated id is a UUIDv7 (api 7.6)');
    like(substr(arr($b)->[2][0], 19, 1), qr/^[89ab]$/, 'generated id has the RFC 9562 variant');

    for my $bad ('not-a-uuid', '0f8fad5b-d9cb-469f-a165-70867728950', 'zzzzzzzz-d9cb-469f-a165-70867728950e', '12345') {
        my ($st2, $b2, $h2, $raw2) = W('id-2', { type => 'T', data => {} }, { id => $bad });
        is($st2, 400, "invalid id '$bad': 400 (decisions 5)") or diag($raw2);
        is(obj($b2)->{error}{code}, 'INVALID_REQUEST', "invalid id '$bad': INVALID_REQUEST");
    }
    for my $odd ('urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950f', '{0f8fad5b-d9cb-469f-a165-708677289510}') {
        my ($st2, $b2, $h2, $raw2) = W('id-3', { type => 'T', data => {} }, { id => $odd });
        ok($st2 == 200 || ($st2 >= 400 && $st2 < 500), "id form '$odd': 200 or 4xx, never 5xx ($st2)")
            or diag($raw2);
    }
    ($st, $b) = $d->rpc($T, 'stream.get', 'id-2');
    is_deeply($b, [], 'rejected ids wrote nothing');
    ($st, $b) = $d->rpc($T, 'stream.get', 'id-3');
    like($_->[0], $uuid, 'accepted odd id form is stored canonical') for @{ arr($b) };
}

# ---- data and metadata stored exactly (decisions 4)
{
    my $body = '["stream.write","num-1",{"type":"N","data":{"big":12345678901234567890,'
             . '"huge":123456789012345678901234567890,"pi":3.14159,"e":1.0e2,"neg":-100,"z":0,'
             . '"f":99.99,"tiny":1e-7,"s":"h\u00e9llo \u2603 \ud83d\ude00 \"q\" \\\\ / <>&",'
             . '"raw":"日本語","nested":{"a":[1,{"b":null,"c":true,"d":false}],"empty":{},"arr":[]}},'
             . '"metadata":{"correlationStreamName":"wf-1","n":1.5}}]';
    my ($st, $b, $h, $raw) = $d->raw_rpc($T, $body);
    is($st, 200, 'write with rich data') or diag($raw);
    ($st, $b, $h, $raw) = $d->rpc($T, 'stream.get', 'num-1');
    like($raw, qr/12345678901234567890(?![0-9])/, 'the digits 12345678901234567890 survive');
    like($raw, qr/123456789012345678901234567890(?![0-9])/, 'a 30-digit integer survives');
    like($raw, qr/3\.14159(?![0-9])/, '3.14159 survives');
    my $m = arr($b)->[0];
    is(scalar @$m, 7, 'stream message has 7 elements');
    my $data = $m->[4];
    cmp_ok($data->{e}, '==', 100, '1.0e2 reads back as 100');
    cmp_ok($data->{pi}, '==', 3.14159, 'pi numerically equal');
    cmp_ok($data->{neg}, '==', -100, '-100');
    cmp_ok($data->{z}, '==', 0, '0');
    cmp_ok($data->{f}, '==', 99.99, '99.99');
    cmp_ok($data->{tiny}, '==', 1e-7, '1e-7');
    is($data->{s}, "h\x{e9}llo \x{2603} \x{1F600} \"q\" \\ / <>&", 'escaped unicode string round-trips');
    is($data->{raw}, '日本語', 'raw UTF-8 string round-trips');
    is_deeply($data->{nested}, { a => [1, { b => undef, c => JSON::PP::true, d => JSON::PP::false }],
                                 empty => {}, arr => [] }, 'nested objects and arrays round-trip');
    is(jtype($raw, 0, 4, 'nested', 'a', 1, 'c'), 'bool', 'true stays a boolean');
    is(jtype($raw, 0, 4, 'nested', 'a', 1, 'b'), 'null', 'null stays null');
    is_deeply($m->[5], { correlationStreamName => 'wf-1', n => 1.5 }, 'metadata round-trips');

    ($st, $b) = W('num-2', { type => 'N', data => {} });
    ($st, $b) = $d->rpc($T, 'stream.get', 'num-2');
    is_deeply(arr($b)->[0][4], {}, 'empty data object');
    ok(!defined arr($b)->[0][5], 'no metadata reads back as null');
    ($st, $b) = W('num-2', { type => 'N', data => {}, metadata => {} });
    is($st, 200, 'empty metadata object accepted');

    # unicode stream names and types
    ($st, $b) = W('ünï-çødé 1', { type => 'Tÿpe ☃', data => { k => 'v' } });
    is($st, 200, 'unicode stream name and type');
    ($st, $b) = $d->rpc($T, 'stream.get', 'ünï-çødé 1');
    is(arr($b)->[0][1], 'Tÿpe ☃', 'unicode type round-trips');
    ($st, $b) = $d->rpc($T, 'category.get', 'ünï');
    is(arr($b)->[0][1], 'ünï-çødé 1', 'unicode stream name round-trips (category.get)');

    # a large message (about 200 KB)
    my $big = 'x' x 200_000;
    ($st, $b) = W('big-1', { type => 'Big', data => { blob => $big } });
    is($st, 200, '200 KB message accepted');
    ($st, $b) = $d->rpc($T, 'stream.get', 'big-1');
    is(length(arr($b)->[0][4]{blob} // ''), 200_000, '200 KB message reads back whole');
}

# ---- U+0000 (decisions 5)
{
    for my $case (['data value', '{"type":"T","data":{"k":"a\u0000b"}}'],
                  ['data key', '{"type":"T","data":{"a\u0000":1}}'],
                  ['metadata value', '{"type":"T","data":{},"metadata":{"k":"\u0000"}}'],
                  ['type', '{"type":"T\u0000","data":{}}']) {
        my ($st, $b, $h, $raw) = $d->raw_rpc($T, qq{["stream.write","nul-1",$case->[1]]});
        is($st, 400, "U+0000 in $case->[0]: 400") or diag($raw);
        is(obj($b)->{error}{code}, 'INVALID_REQUEST', "U+0000 in $case->[0]: INVALID_REQUEST");
    }
    my ($st, $b, $h, $raw) = $d->raw_rpc($T, '["stream.write","nul\u0000-1",{"type":"T","data":{}}]');
    is($st, 400, 'U+0000 in the stream name: 400') or diag($raw);
    ($st, $b) = $d->rpc($T, 'stream.get', 'nul-1');
    is_deeply($b, [], 'nothing written');
}

is($d->http('GET', '/health')->{status}, 200, 'still healthy');
done_testing;
