#!/usr/bin/perl
# 11-read.t - stream.get, stream.last, stream.version: semantics and every
# validation message of api.md 6.4-6.6; positions (7.4), batchSize (7.5),
# message arrays (5.3) and times (3.7).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use EventoTest qw(jtype num uuid_re rfc3339_epoch arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start;
my (undef, $T) = $t->fresh_ns('read');

sub W {
    my ($st, $b, $h, $raw) = $d->rpc($T, 'stream.write', @_);
    die "write failed: $st $raw" unless $st == 200;
    return obj($b);
}
# Gx: (status, body, raw text); G: just the body (also in list context).
sub Gx { my ($st, $b, $h, $raw) = $d->rpc($T, 'stream.get', @_); return ($st, $b, $raw) }
sub G { return (Gx(@_))[1] }
sub positions { return [map { $_->[2] } @{ $_[0] || [] }] }

# ---- data: read-1 (5 messages) interleaved with read-2 and read-10
my @types = qw(A B A B C);
my @g;    # global positions of read-1 messages
for my $i (0 .. 4) {
    push @g, W('read-1', { type => $types[$i], data => { n => $i }, ($i == 1 ? (metadata => { m => 1 }) : ()) })->{globalPosition};
    W('read-2', { type => 'Other', data => { n => $i } });
    W('read-10', { type => 'Other', data => { n => $i } });
}
my $now = time;

# ---- stream.get: shape
{
    my ($st, $b, $raw) = Gx('read-1');
    is($st, 200, 'stream.get 200');
    is(ref $b, 'ARRAY', 'result is an array');
    is(scalar @{ arr($b) }, 5, 'five messages, no others (read-10 is another stream)');
    is_deeply(positions($b), [0 .. 4], 'ascending positions');
    is_deeply([map { $_->[3] } @{ arr($b) }], \@g, 'global positions as acknowledged');
    is_deeply([map { $_->[1] } @{ arr($b) }], \@types, 'types');
    is_deeply([map { $_->[4]{n} } @{ arr($b) }], [0 .. 4], 'data');
    is_deeply(arr($b)->[1][5], { m => 1 }, 'metadata');
    ok(!defined arr($b)->[0][5], 'absent metadata is null');
    for my $i (0 .. 4) {
        my $m = arr($b)->[$i];
        is(scalar @$m, 7, "message $i has 7 elements");
        like($m->[0], uuid_re(), "message $i id is a UUID");
        is(jtype($raw, $i, 1), 'string', "message $i type is a string");
        is(jtype($raw, $i, 2), 'int', "message $i position is an integer");
        is(jtype($raw, $i, 3), 'int', "message $i globalPosition is an integer");
        is(jtype($raw, $i, 4), 'object', "message $i data is an object");
        like($m->[6], qr/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, "message $i time format");
        like($m->[6], qr/^[^.]*(\.\d{1,6})?Z$/, "message $i time has at most 6 fraction digits");
        unlike($m->[6], qr/\.\d*0Z$/, "message $i time fraction has no trailing zeros");
        my $e = rfc3339_epoch($m->[6]);
        ok(defined $e && abs($e - $now) < 60, "message $i time within a minute of now ($m->[6])");
    }
    my %ids = map { $_->[0] => 1 } @{ arr($b) };
    is(scalar keys %ids, 5, 'ids are distinct');
}

# ---- stream.get: positions
is_deeply(positions(G('read-1', { position => 2 })), [2, 3, 4], 'position 2');
is_deeply(positions(G('read-1', { position => 4 })), [4], 'position 4');
is_deeply(G('read-1', { position => 5 }), [], 'position past the end -> []');
is_deeply(G('read-1', { position => 1000 }), [], 'position far past the end -> []');
is_deeply(positions(G('read-1', { position => -5 })), [0 .. 4], 'negative position acts like 0');
is_deeply(positions(G('read-1', { position => 2.9 })), [2, 3, 4], 'position 2.9 truncated to 2');
is_deeply(positions(G('read-1', { globalPosition => num($g[3]) })), [3, 4], 'globalPosition of message 3');
is_deeply(positions(G('read-1', { globalPosition => num($g[3]) + 1 })), [4], 'globalPosition between messages');
is_deeply(positions(G('read-1', { globalPosition => num($g[1]), position => 4 })), [1 .. 4],
          'globalPosition overrides position (lower)');
is_deeply(positions(G('read-1', { globalPosition => num($g[3]), position => 0 })), [3, 4],
          'globalPosition overrides position (higher)');
is_deeply(G('read-1', { globalPosition => num($g[4]) + 1000 }), [], 'globalPosition past the end -> []');
is_deeply(positions(G('read-1', { globalPosition => num($g[3]), batchSize => 1 })), [3], 'globalPosition with batchSize 1');
is_deeply(G('no-such-stream-1'), [], 'missing stream -> []');
is_deeply(G('read'), [], 'category name as a stream name -> [] (matched literally)');
is_deeply(positions(G('read-1', { condition => 'x', unknown => 1 })), [0 .. 4], 'unknown option keys ignored');

# ---- stream.get: batchSize
is_deeply(positions(G('read-1', { batchSize => 2 })), [0, 1], 'batchSize 2');
is_deeply(positions(G('read-1', { batchSize => 2, position => 2 })), [2, 3], 'batchSize 2 from position 2');
is_deeply(positions(G('read-1', { batchSize => -1 })), [0 .. 4], 'batchSize -1 unlimited');
is_deeply(G('read-1', { batchSize => 0 }), [], 'batchSize 0 -> []');
is_deeply(positions(G('read-1', { batchSize => 2.7 })), [0, 1], 'batchSize 2.7 truncated to 2');
is_deeply(positions(G('read-1', { batchSize => 10000 })), [0 .. 4], 'batchSize 10000 allowed');
for my $bs (10001, 20000) {
    my ($st, $b, $raw) = Gx('read-1', { batchSize => $bs });
    is($st, 400, "batchSize $bs -> 400");
    is_deeply($b, { error => { code => 'INVALID_REQUEST',
                               message => 'options.batchSize must be <= 10000 or -1 for unlimited' } },
              "batchSize $bs message") or diag($raw);
    like(obj($b)->{error}{message} // '', qr/batchSize/i, 'message contains batchSize');
}
for my $bs (-2, -100) {
    my ($st, $b, $raw) = Gx('read-1', { batchSize => $bs });
    ok($st >= 400 && $st < 500, "batchSize $bs -> 4xx, not 500 (decisions 5) [$st]") or diag($raw);
    ok(ref $b eq 'HASH' && obj($b)->{error}{code}, "batchSize $bs -> JSON error");
}
{
    $d->write_many($T, 'bulk-1', 1001);
    is(scalar @{ arr(G('bulk-1')) }, 1000, 'default batchSize is 1000');
    is((positions(G('bulk-1'))->[-1] // -1), 999, '... positions 0..999');
    is(scalar @{ arr(G('bulk-1', { batchSize => -1 })) }, 1001, 'batchSize -1 returns all 1001');
    is(scalar @{ arr(G('bulk-1', { batchSize => 10000 })) }, 1001, 'batchSize 10000 returns all 1001');
    is_deeply(positions(G('bulk-1', { position => 1000 })), [1000], 'position 1000 -> the last one');
}

# ---- stream.get validation (api 6.4)
sub invalid {
    my ($method, $args, $msg, $name) = @_;
    my ($st, $b, $h, $raw) = $d->rpc($T, $method, @$args);
    is($st, 400, "$method $name: 400");
    is_deeply($b, { error => { code => 'INVALID_REQUEST', message => $msg } }, "$method $name: $msg")
        or diag($raw);
}
invalid('stream.get', [], 'stream.get requires at least 1 argument: streamName', 'no arguments');
invalid('stream.get', [''], 'streamName must be a non-empty string', 'empty name');
invalid('stream.get', [5], 'streamName must be a non-empty string', 'numeric name');
invalid('stream.get', [undef], 'streamName must be a non-empty string', 'null name');
invalid('stream.get', ['', 'x'], 'streamName must be a non-empty string', 'name checked before options');
invalid('stream.get', ['read-1', 'x'], 'options must be an object', 'string options');
invalid('stream.get', ['read-1', undef], 'options must be an object', 'null options');
invalid('stream.get', ['read-1', [1]], 'options must be an object', 'array options');
invalid('stream.get', ['read-1', { position => '1' }], 'options.position must be a number', 'string position');
invalid('stream.get', ['read-1', { position => undef }], 'options.position must be a number', 'null position');
invalid('stream.get', ['read-1', { position => 'x', globalPosition => 'x', batchSize => 'x' }],
        'options.position must be a number', 'position checked first');
invalid('stream.get', ['read-1', { globalPosition => 'x' }], 'options.globalPosition must be a number', 'string globalPosition');
invalid('stream.get', ['read-1', { globalPosition => undef }], 'options.globalPosition must be a number', 'null globalPosition');
invalid('stream.get', ['read-1', { globalPosition => 'x', batchSize => 'x' }],
        'options.globalPosition must be a number', 'globalPosition checked before batchSize');
invalid('stream.get', ['read-1', { batchSize => 'x' }], 'options.batchSize must be a number', 'string batchSize');
invalid('stream.get', ['read-1', { batchSize => undef }], 'options.batchSize must be a number', 'null batchSize');
invalid('stream.get', ['read-1', { batchSize => JSON::PP::true }], 'options.batchSize must be a number', 'boolean batchSize');

# ---- stream.last (api 6.5)
{
    my ($st, $b, $h, $raw) = $d->rpc($T, 'stream.last', 'read-1');
    is($st, 200, 'stream.last 200');
    is(scalar @{ ref $b eq 'ARRAY' ? $b : [] }, 7, 'stream.last gives one 7-element array');
    is(arr($b)->[2], 4, 'last message is position 4');
    is(arr($b)->[1], 'C', '... type C');
    is(arr($b)->[3], $g[4], '... its global position');
    is(jtype($raw, 2), 'int', 'position is an integer');
    ($st, $b) = $d->rpc($T, 'stream.last', 'read-1', { type => 'A' });
    is(arr($b)->[2], 2, 'stream.last type A -> position 2');
    ($st, $b) = $d->rpc($T, 'stream.last', 'read-1', { type => 'B' });
    is(arr($b)->[2], 3, 'stream.last type B -> position 3');
    ($st, $b) = $d->rpc($T, 'stream.last', 'read-1', { type => 'C' });
    is(arr($b)->[2], 4, 'stream.last type C -> position 4');
    for my $case ([['read-1', { type => 'Z' }], 'type with no match'], [['read-1', { type => '' }], 'type ""'],
                  [['no-such-stream-2'], 'missing stream'], [['no-such-stream-2', { type => 'A' }], 'missing stream with type']) {
        ($st, $b, $h, $raw) = $d->rpc($T, 'stream.last', @{ $case->[0] });
        is($st, 200, "stream.last $case->[1]: 200");
        is($raw, "null\n", "stream.last $case->[1]: null");
    }
    ($st, $b) = $d->rpc($T, 'stream.last', 'read-1', {});
    is(arr($b)->[2], 4, 'stream.last with empty options');
}
invalid('stream.last', [], 'stream.last requires at least 1 argument: streamName', 'no arguments');
invalid('stream.last', [''], 'streamName must be a non-empty string', 'empty name');
invalid('stream.last', [7], 'streamName must be a non-empty string', 'numeric name');
invalid('stream.last', ['read-1', 'x'], 'options must be an object', 'string options');
invalid('stream.last', ['read-1', undef], 'options must be an object', 'null options');
invalid('stream.last', ['read-1', { type => 5 }], 'options.type must be a string', 'numeric type');
invalid('stream.last', ['read-1', { type => undef }], 'options.type must be a string', 'null type');

# ---- stream.version (api 6.6)
{
    my ($st, $b, $h, $raw) = $d->rpc($T, 'stream.version', 'read-1');
    is($st, 200, 'stream.version 200');
    is($raw, "4\n", 'stream.version read-1 is 4');
    ($st, $b, $h, $raw) = $d->rpc($T, 'stream.version', 'bulk-1');
    is($b, 1000, 'stream.version bulk-1 is 1000');
    ($st, $b, $h, $raw) = $d->rpc($T, 'stream.version', 'no-such-stream-3');
    is($st, 200, 'stream.version missing: 200');
    is($raw, "null\n", 'stream.version missing: null');
    ($st, $b) = $d->rpc($T, 'stream.version', 'read-1', 'extra', 'args');
    is($b, 4, 'extra arguments are ignored');
    W('ver-1', { type => 'T', data => {} });
    ($st, $b) = $d->rpc($T, 'stream.version', 'ver-1');
    is($b, 0, 'one message -> version 0');
}
invalid('stream.version', [], 'stream.version requires 1 argument: streamName', 'no arguments');
invalid('stream.version', [''], 'streamName must be a non-empty string', 'empty name');
invalid('stream.version', [undef], 'streamName must be a non-empty string', 'null name');

done_testing;
