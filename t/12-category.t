#!/usr/bin/perl
# 12-category.t - category.get: semantics and every validation message of
# api.md 6.7, correlation (7.7), consumer groups with the exact vectors of
# 7.8 and 15.3, compound ids (7.2).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(jtype num uuid_re rfc3339_epoch arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start;
my (undef, $T) = $t->fresh_ns('cat');

sub W {
    my ($stream, %m) = @_;
    my ($st, $b, $h, $raw) = $d->rpc($T, 'stream.write', $stream, { type => 'T', data => {}, %m });
    die "write $stream failed: $st $raw" unless $st == 200;
    return obj($b);
}
# Cx: (status, body, raw text); C: just the body (also in list context).
sub Cx { my ($st, $b, $h, $raw) = $d->rpc($T, 'category.get', @_); return ($st, $b, $raw) }
sub C { return (Cx(@_))[1] }
sub streams { return [map { $_->[1] } @{ ref $_[0] eq 'ARRAY' ? $_[0] : [] }] }
sub gpos { return [map { $_->[4] } @{ ref $_[0] eq 'ARRAY' ? $_[0] : [] }] }

# ---- data
my @order = qw(cat-1 cat-2 catX-1 cat-3 cat cat-4 cat-123 cat-456 cat-alice cat-1);
my (@catg, %byname);
my $i = 0;
for my $s (@order) {
    my $r = W($s, data => { i => $i++ });
    push @catg, $r->{globalPosition} if $s =~ /^cat(-|$)/;
    push @{ $byname{$s} }, $r;
}
my @cat_streams = grep { /^cat(-|$)/ } @order;

# ---- shape and basic semantics
{
    my ($st, $b, $raw) = Cx('cat');
    is($st, 200, 'category.get 200');
    is_deeply(streams($b), \@cat_streams, 'category "cat": its streams (including the bare "cat"), in order');
    is_deeply(gpos($b), \@catg, 'ascending global positions as acknowledged');
    my $m = arr($b)->[0];
    is(scalar @$m, 8, '8-element arrays');
    like($m->[0], uuid_re(), 'id');
    is($m->[1], 'cat-1', 'stream name');
    is($m->[2], 'T', 'type');
    is($m->[3], 0, 'position');
    is(jtype($raw, 0, 3), 'int', 'position is an integer');
    is(jtype($raw, 0, 4), 'int', 'globalPosition is an integer');
    is_deeply($m->[5], { i => 0 }, 'data');
    ok(!defined $m->[6], 'metadata null');
    like($m->[7], qr/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, 'time format');
    ok(abs((rfc3339_epoch($m->[7]) // 0) - time) < 60, 'time within a minute');
    is((arr($b)->[-1] // [])->[3], 1, 'second message of cat-1 has position 1');
}
is_deeply(streams(C('cat', { position => num($catg[2]) })), [@cat_streams[2 .. $#cat_streams]], 'position is a global position (inclusive)');
is_deeply(streams(C('cat', { position => 0 })), \@cat_streams, 'position 0 -> all');
is_deeply(streams(C('cat', { position => -3 })), \@cat_streams, 'negative position -> all');
is_deeply(streams(C('cat', { globalPosition => num($catg[3]), position => 1 })), [@cat_streams[3 .. $#cat_streams]],
          'globalPosition wins over position (higher)');
is_deeply(streams(C('cat', { globalPosition => num($catg[1]), position => num($catg[5]) })),
          [@cat_streams[1 .. $#cat_streams]], 'globalPosition wins over position (lower)');
is_deeply(C('cat', { position => num($catg[-1]) + 1 }), [], 'past the end -> []');
is_deeply(streams(C('cat', { batchSize => 2 })), [@cat_streams[0, 1]], 'batchSize 2');
is_deeply(streams(C('cat', { batchSize => 2, position => num($catg[2]) })), [@cat_streams[2, 3]], 'batchSize 2 from a position');
is_deeply(streams(C('cat', { batchSize => -1 })), \@cat_streams, 'batchSize -1');
is_deeply(C('cat', { batchSize => 0 }), [], 'batchSize 0 -> []');
is_deeply(streams(C('cat', { batchSize => 10000 })), \@cat_streams, 'batchSize 10000');
is_deeply(streams(C('catX')), ['catX-1'], 'category catX');
is_deeply(C('cat-1'), [], 'a name containing "-" matches nothing');
is_deeply(C('ca'), [], 'a prefix of a category matches nothing');
is_deeply(C('CAT'), [], 'category match is case-sensitive');
is_deeply(C('nosuchcategory'), [], 'missing category -> []');
{
    my $all = C('');
    is_deeply(streams($all), \@order, '"" returns every message of the namespace in global order');
    my $g = gpos($all);
    is_deeply($g, [sort { $a <=> $b } @$g], '... ascending');
    is_deeply(streams(C('', { position => num(arr($all)->[5][4]) })), [@order[5 .. $#order]], '"" with a position');
    is_deeply(streams(C('', { batchSize => 3 })), [@order[0 .. 2]], '"" with batchSize 3');
}
for my $bs (-2, -50) {
    my ($st, $b, $raw) = Cx('cat', { batchSize => $bs });
    ok($st >= 400 && $st < 500, "batchSize $bs -> 4xx, not 500 [$st]") or diag($raw);
}

# ---- correlation (api 7.7)
{
    W('corr-1', data => { k => 'workflow-123' }, metadata => { correlationStreamName => 'workflow-123' });
    W('corr-1', data => { k => 'workflow' }, metadata => { correlationStreamName => 'workflow' });
    W('corr-1', data => { k => 'workflowX-1' }, metadata => { correlationStreamName => 'workflowX-1' });
    W('corr-2', data => { k => 'nometa' });
    W('corr-2', data => { k => 'nokey' }, metadata => { other => 'workflow-1' });
    W('corr-2', data => { k => 'other-1' }, metadata => { correlationStreamName => 'other-1' });
    W('corr-3', data => { k => 'workflow-9+x' }, metadata => { correlationStreamName => 'workflow-9+x' });
    W('corr-3', data => { k => 'Workflow-1' }, metadata => { correlationStreamName => 'Workflow-1' });
    W('corr-3', data => { k => 'number' }, metadata => { correlationStreamName => 5 });
    my $keys = sub { [map { $_->[5]{k} } @{ $_[0] }] };
    is_deeply($keys->(C('corr', { correlation => 'workflow' })), ['workflow-123', 'workflow', 'workflow-9+x'],
              'correlation "workflow": workflow-123, workflow, workflow-9+x; not workflowX-1, no metadata, no key, Workflow-1');
    is_deeply($keys->(C('corr', { correlation => 'other' })), ['other-1'], 'correlation "other"');
    is_deeply(C('corr', { correlation => 'workflow-123' }), [], 'correlation with "-" matches nothing');
    is_deeply(C('corr', { correlation => 'nothing' }), [], 'correlation with no match');
    is_deeply($keys->(C('corr', { correlation => 'workflow', batchSize => 1 })), ['workflow-123'], 'correlation with batchSize');
    is(scalar @{ arr(C('corr')) }, 9, 'no correlation -> everything');
}

# ---- validation (api 6.7, in order)
sub invalid {
    my ($args, $msg, $name) = @_;
    my ($st, $b, $raw) = Cx(@$args);
    is($st, 400, "$name: 400");
    is_deeply($b, { error => { code => 'INVALID_REQUEST', message => $msg } }, "$name: $msg") or diag($raw);
}
invalid([], 'category.get requires at least 1 argument: categoryName', 'no arguments');
invalid([5], 'categoryName must be a string', 'numeric category');
invalid([undef], 'categoryName must be a string', 'null category');
invalid([{}], 'categoryName must be a string', 'object category');
invalid([5, 'x'], 'categoryName must be a string', 'category checked before options');
invalid(['cat', 'x'], 'options must be an object', 'string options');
invalid(['cat', undef], 'options must be an object', 'null options');
invalid(['cat', { position => 'x' }], 'options.position must be a number', 'string position');
invalid(['cat', { position => undef }], 'options.position must be a number', 'null position');
invalid(['cat', { position => 'x', globalPosition => 'x' }], 'options.position must be a number', 'position first');
invalid(['cat', { globalPosition => 'x' }], 'options.globalPosition must be a number', 'string globalPosition');
invalid(['cat', { globalPosition => 'x', batchSize => 'x' }], 'options.globalPosition must be a number', 'globalPosition before batchSize');
invalid(['cat', { batchSize => 'x' }], 'options.batchSize must be a number', 'string batchSize');
invalid(['cat', { batchSize => 10001 }], 'options.batchSize must be <= 10000 or -1 for unlimited', 'batchSize 10001');
invalid(['cat', { batchSize => 10001, correlation => 5 }], 'options.batchSize must be <= 10000 or -1 for unlimited', 'batchSize before correlation');
invalid(['cat', { correlation => 5 }], 'options.correlation must be a string', 'numeric correlation');
invalid(['cat', { correlation => undef }], 'options.correlation must be a string', 'null correlation');
invalid(['cat', { correlation => 5, consumerGroup => 'x' }], 'options.correlation must be a string', 'correlation before consumerGroup');
invalid(['cat', { consumerGroup => 'x' }], 'options.consumerGroup must be an object', 'string consumerGroup');
invalid(['cat', { consumerGroup => undef }], 'options.consumerGroup must be an object', 'null consumerGroup');
invalid(['cat', { consumerGroup => [0, 2] }], 'options.consumerGroup must be an object', 'array consumerGroup');
invalid(['cat', { consumerGroup => { member => '0', size => 2 } }], 'options.consumerGroup.member must be a number', 'string member');
invalid(['cat', { consumerGroup => { member => '0', size => '2' } }], 'options.consumerGroup.member must be a number', 'member before size');
invalid(['cat', { consumerGroup => { member => 0, size => '2' } }], 'options.consumerGroup.size must be a number', 'string size');
invalid(['cat', { consumerGroup => { member => 0, size => undef } }], 'options.consumerGroup.size must be a number', 'null size');
invalid(['cat', { consumerGroup => { member => -1, size => 2 } }], 'options.consumerGroup.member must be non-negative', 'negative member');
invalid(['cat', { consumerGroup => { member => -1, size => 0 } }], 'options.consumerGroup.member must be non-negative', 'member sign checked first');
invalid(['cat', { consumerGroup => { member => 0, size => 0 } }], 'options.consumerGroup.size must be positive', 'size 0');
invalid(['cat', { consumerGroup => { member => 0, size => -2 } }], 'options.consumerGroup.size must be positive', 'negative size');
invalid(['cat', { consumerGroup => { member => 2, size => 2 } }], 'options.consumerGroup.member must be < size', 'member == size');
invalid(['cat', { consumerGroup => { member => 5, size => 2 } }], 'options.consumerGroup.member must be < size', 'member > size');
invalid(['cat', { consumerGroup => { member => 0 } }], 'options.consumerGroup requires both member and size', 'member only');
invalid(['cat', { consumerGroup => { size => 2 } }], 'options.consumerGroup requires both member and size', 'size only');
is_deeply(streams(C('cat', { consumerGroup => {} })), \@cat_streams, 'consumerGroup {} accepted, no grouping');

# ---- consumer groups (api 7.8, 15.3)
sub members {
    my ($cat, $size, %o) = @_;
    my %who;
    for my $m (0 .. $size - 1) {
        my ($st, $b, $raw) = Cx($cat, { consumerGroup => { member => $m, size => $size }, batchSize => -1, %o });
        is($st, 200, "$cat size $size member $m: 200") or diag($raw);
        my %seen;
        push @{ $who{$_} }, $m for grep { !$seen{$_}++ } @{ streams($b) };
    }
    return \%who;
}
{
    W("payment-stream$_") for 0 .. 11;
    my %want = (stream0 => 1, stream1 => 2, stream2 => 2, stream3 => 1, stream4 => 2, stream5 => 0,
                stream6 => 1, stream7 => 1, stream8 => 0, stream9 => 1, stream10 => 0, stream11 => 1);
    my $who = members('payment', 3);
    is_deeply($who, { map { ("payment-$_" => [$want{$_}]) } keys %want },
              'payment-stream0..11, size 3: the assignment table of api 15.3 (each stream exactly one member)');
}
{
    # cardinal id => [s=2, s=3, s=4] (api 7.8)
    my %vec = (1 => [0, 0, 2], 2 => [1, 1, 1], 3 => [0, 2, 2], 4 => [1, 0, 3],
               123 => [1, 1, 3], 456 => [1, 1, 3], alice => [1, 0, 1]);
    for my $si (0 .. 2) {
        my $size = (2, 3, 4)[$si];
        my $who = members('cat', $size);
        for my $cid (sort keys %vec) {
            is_deeply($who->{"cat-$cid"}, [$vec{$cid}[$si]], "cat-$cid, size $size -> member $vec{$cid}[$si]");
        }
        ok(!exists $who->{cat}, "category-only stream 'cat' excluded from every member (size $size)");
        is(scalar(grep { @$_ > 1 } values %$who), 0, "size $size: no stream in two members");
    }
    my $who = members('cat', 1);
    is_deeply([sort keys %$who], [sort grep { /^cat-/ } keys %byname], 'size 1: member 0 gets every cat- stream (not "cat")');
}
{
    W($_) for qw(account-123+alice account-123+bob account-123 account-456 account);
    for my $size (2, 3, 4) {
        my $who = members('account', $size);
        my $m123 = (1, 1, 3)[$size - 2];
        is_deeply($who->{'account-123+alice'}, [$m123], "account-123+alice, size $size -> member of cardinal id 123 ($m123)");
        is_deeply($who->{'account-123+bob'}, [$m123], "account-123+bob, size $size -> same member");
        is_deeply($who->{'account-123'}, [$m123], "account-123, size $size -> same member");
        ok(!exists $who->{account}, "category-only 'account' excluded (size $size)");
    }
    my ($st, $b) = Cx('account', { consumerGroup => { member => 1, size => 2 }, correlation => 'x' });
    is_deeply($b, [], 'consumer group combined with a correlation that matches nothing');
    ($st, $b) = Cx('account', { consumerGroup => { member => 1, size => 2 }, batchSize => 1 });
    is(scalar @{ arr($b) }, 1, 'consumer group with batchSize 1');
    ($st, $b) = Cx('account', { consumerGroup => { member => 1.9, size => 2.2 } });
    is($st, 200, 'member/size are truncated numbers (1, 2)');
    is_deeply([sort @{ streams($b) }], [sort qw(account-123+alice account-123+bob account-123 account-456)],
              '... member 1 of 2 (cardinal ids 123 and 456)');
}

done_testing;
