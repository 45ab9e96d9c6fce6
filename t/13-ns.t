#!/usr/bin/perl
# 13-ns.t - namespace methods (api.md 6.8-6.13, decisions.md 3 and 6):
# ns.create, ns.delete, ns.list, ns.info, ns.streams, ns.categories,
# namespace isolation, sys.version and sys.health.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use EventoTest qw(ADMIN_TOKEN jtype num make_token rfc3339_epoch semver_re arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start;
my $A = ADMIN_TOKEN;
my $RFC = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/;

sub R { return $d->rpc(@_) }
sub near_now { my $e = rfc3339_epoch($_[0]); return defined $e && abs($e - time) < 60 }
sub W {
    my ($tok, $s) = @_;
    my ($st, $b, $h, $raw) = R($tok, 'stream.write', $s, { type => 'T', data => {} });
    die "write $s: $st $raw" unless $st == 200;
    return obj($b);
}
sub invalid {
    my ($method, $args, $msg, $name, $tok) = @_;
    my ($st, $b, $h, $raw) = R($tok // $A, $method, @$args);
    is($st, 400, "$method $name: 400");
    is_deeply($b, { error => { code => 'INVALID_REQUEST', message => $msg } }, "$method $name: $msg")
        or diag($raw);
}

# ---- ns.create
my $one = $t->nsid('ns-one');
my ($T1, $created1);
{
    my ($st, $b, $h, $raw) = R($A, 'ns.create', $one);
    is($st, 200, 'ns.create 200') or diag($raw);
    is_deeply([sort keys %{ ref $b eq 'HASH' ? $b : {} }], [qw(createdAt namespace token)], 'result keys');
    is(obj($b)->{namespace}, $one, 'namespace echoed');
    my $b64 = encode_base64url($one);
    like(obj($b)->{token}, qr/^ns_\Q$b64\E_[0-9a-f]{64}$/, 'token format ns_<base64url(id)>_<64 hex>');
    like(obj($b)->{createdAt}, $RFC, 'createdAt is RFC 3339 UTC');
    ok(near_now(obj($b)->{createdAt}), 'createdAt is now');
    $T1 = obj($b)->{token};
    $created1 = obj($b)->{createdAt};
    ($st) = R($T1, 'sys.version');
    is($st, 200, 'the new token works');
    W($T1, 'one-1');
    ($st, $b) = R($A, 'ns.create', $one);
    is($st, 409, 'existing id: 409');
    is_deeply($b, { error => { code => 'NAMESPACE_EXISTS', message => "Namespace '$one' already exists" } },
              'existing id: NAMESPACE_EXISTS message');
    my ($ab, $a_b) = map { $t->nsid($_) } 'ab-cd', 'ab_cd';
    ($st) = R($A, 'ns.create', $ab);
    is($st, 200, "create $ab");
    ($st, $b) = R($A, 'ns.create', $a_b);
    is($st, 409, "create $a_b after $ab (same schema name): 409");
    is_deeply($b, { error => { code => 'NAMESPACE_EXISTS', message => "Namespace '$a_b' already exists" } },
              'schema collision message');
    my (undef, $x1) = R($A, 'ns.create', $t->nsid('ns-rand-b'));
    my (undef, $x2) = R($A, 'ns.create', $t->nsid('ns-rand-c'));
    isnt(substr(obj($x1)->{token}, -64), substr(obj($x2)->{token}, -64), 'generated random parts differ');
}
{
    my $two = $t->nsid('ns-two');
    my $sup = make_token($two);
    my ($st, $b, $h, $raw) = R($A, 'ns.create', $two, { token => $sup, description => 'two' });
    is($st, 200, 'ns.create with a supplied token') or diag($raw);
    is(obj($b)->{token}, $sup, 'supplied token returned');
    is((R($sup, 'stream.write', 'two-1', { type => 'T', data => {} }))[0], 200, 'supplied token works');
    my $three = $t->nsid('ns-three');
    invalid('ns.create', [$three, { token => make_token('other') }],
            "Token is for namespace 'other', not '$three'", 'token for another namespace');
    invalid('ns.create', [$three, { token => 'bad' }],
            q{Invalid token format: invalid token format: missing 'ns_' prefix}, 'unparseable token');
    invalid('ns.create', [$three, { token => '' }],
            q{Invalid token format: invalid token format: missing 'ns_' prefix}, 'empty token');
    invalid('ns.create', [$three, { token => 5 }], 'options.token must be a string', 'numeric token');
    invalid('ns.create', [$three, { description => 5 }], 'options.description must be a string', 'numeric description');
    invalid('ns.create', [$three, { description => 5, token => 'bad' }], 'options.description must be a string', 'description before token');
    invalid('ns.create', [$three, { token => 5, metadata => 'x' }], 'options.token must be a string', 'token before metadata');
    invalid('ns.create', [$three, { metadata => 'x' }], 'options.metadata must be an object', 'string metadata');
    invalid('ns.create', [$three, { metadata => [] }], 'options.metadata must be an object', 'array metadata');
    invalid('ns.create', [$three, { metadata => undef }], 'options.metadata must be an object', 'null metadata');
    invalid('ns.create', [$three, 'x'], 'options must be an object', 'string options');
    invalid('ns.create', [$three, undef], 'options must be an object', 'null options');
    invalid('ns.create', [], 'ns.create requires at least 1 argument: namespace ID', 'no arguments');
    invalid('ns.create', [''], 'namespace ID must be a non-empty string', 'empty id');
    invalid('ns.create', [5], 'namespace ID must be a non-empty string', 'numeric id');
    invalid('ns.create', [undef], 'namespace ID must be a non-empty string', 'null id');
    ($st) = R($A, 'ns.info', $three);
    is($st, 404, 'nothing was created by the rejected requests');
    ($st) = R($A, 'ns.create', $three, { metadata => { a => 1 } });
    is($st, 200, 'metadata object accepted');
}
{
    # namespace id rules (decisions 3)
    my $base = $t->nsid('len');
    my $id54 = $base . ('x' x (54 - length $base));
    my ($st, $b, $h, $raw) = R($A, 'ns.create', $id54);
    is($st, 200, '54-character id accepted') or diag($raw);
    ok((R(obj($b)->{token} // 'x', 'sys.version'))[0] == 200, '... and its token works');
    for my $bad ($id54 . 'x', 'a.b', '-ab', '_ab', 'ab?', 'a b', 'é', 'ab/c', "ab\x{7f}", 'ab"c', 'ab;c') {
        my ($st2, $b2, $h2, $raw2) = R($A, 'ns.create', $bad);
        is($st2, 400, "invalid id '$bad': 400") or diag($raw2);
        is(obj($b2)->{error}{code}, 'INVALID_REQUEST', "invalid id '$bad': INVALID_REQUEST");
        ($st2) = R($A, 'ns.info', $bad);
        is($st2, 404, "invalid id '$bad': not created");
    }
    for my $good (map { $t->nsid($_) } 'A', '9lives', 'Mixed_Case-id-0') {
        my ($st2, $b2, $h2, $raw2) = R($A, 'ns.create', $good);
        is($st2, 200, "valid id '$good'") or diag($raw2);
    }
}

# ---- ns.info
{
    my ($st, $b, $h, $raw) = R($A, 'ns.info', $one);
    is($st, 200, 'ns.info 200');
    is_deeply([sort keys %{ ref $b eq 'HASH' ? $b : {} }],
              [qw(createdAt description lastActivity messageCount namespace streamCount)], 'ns.info keys');
    is(obj($b)->{namespace}, $one, 'namespace');
    is(obj($b)->{description}, '', 'default description ""');
    like(obj($b)->{createdAt}, $RFC, 'createdAt format');
    ok(abs((rfc3339_epoch(obj($b)->{createdAt}) // 0) - (rfc3339_epoch($created1) // 1e12)) < 2, 'createdAt matches creation');
    is(obj($b)->{messageCount}, 1, 'messageCount 1');
    is(obj($b)->{streamCount}, 1, 'streamCount 1');
    is(jtype($raw, 'messageCount'), 'int', 'messageCount is an integer');
    is(jtype($raw, 'streamCount'), 'int', 'streamCount is an integer');
    like(obj($b)->{lastActivity} // '', $RFC, 'lastActivity RFC 3339');
    ok(near_now(obj($b)->{lastActivity}), 'lastActivity is recent');
    W($T1, 'one-1') for 1 .. 2;
    W($T1, 'one-2');
    W($T1, 'other-9');
    ($st, $b) = R($A, 'ns.info', $one);
    is(obj($b)->{messageCount}, 5, 'messageCount 5 after more writes');
    is(obj($b)->{streamCount}, 3, 'streamCount 3 (distinct streams)');
    ($st, $b) = R($A, 'ns.info', $t->nsid('ns-two'));
    is(obj($b)->{description}, 'two', 'description stored');
    my $empty = $t->nsid('ns-empty');
    $d->create_ns($empty, description => 'nothing here');
    ($st, $b, $h, $raw) = R($A, 'ns.info', $empty);
    is(obj($b)->{messageCount}, 0, 'empty namespace: messageCount 0');
    is(obj($b)->{streamCount}, 0, 'empty namespace: streamCount 0');
    is(jtype($raw, 'lastActivity'), 'null', 'empty namespace: lastActivity null');
    my $missing = $t->nsid('nope-x');
    ($st, $b) = R($A, 'ns.info', $missing);
    is($st, 404, 'ns.info missing: 404');
    is_deeply($b, { error => { code => 'NAMESPACE_NOT_FOUND', message => "Namespace '$missing' not found" } },
              'ns.info missing: message');
    invalid('ns.info', [], 'ns.info requires 1 argument: namespace ID', 'no arguments');
    invalid('ns.info', [''], 'namespace ID must be a non-empty string', 'empty id');
    invalid('ns.info', [5], 'namespace ID must be a non-empty string', 'numeric id');
    ($st, $b) = R($A, 'ns.info', 'default');
    is($st, 200, 'ns.info default');
}

# ---- ns.list
{
    my $old = $t->nsid('ord-old');
    my (undef, $c) = R($A, 'ns.create', $old);
    my $e = rfc3339_epoch(obj($c)->{createdAt}) // time;
    ok($t->wait_for(sub { time >= int($e) + 1.05 }, 3), 'waited for the next second');
    my $new = $t->nsid('ord-new');
    R($A, 'ns.create', $new);
    my ($st, $b, $h, $raw) = R($A, 'ns.list');
    is($st, 200, 'ns.list 200');
    is(ref $b, 'ARRAY', 'ns.list is an array');
    my %by = map { $_->{namespace} => $_ } @{ arr($b) };
    ok($by{default}, 'default listed');
    ok($by{$one} && $by{$new} && $by{$old}, 'created namespaces listed');
    my $bad = grep { join(',', sort keys %$_) ne 'createdAt,description,messageCount,namespace' } @{ arr($b) };
    is($bad, 0, 'every entry has exactly createdAt, description, messageCount, namespace');
    is($by{$one}{messageCount}, 5, 'messageCount real (5)');
    is($by{$t->nsid('ns-empty')}{messageCount}, 0, 'messageCount 0 for an empty namespace');
    is($by{$t->nsid('ns-empty')}{description}, 'nothing here', 'description');
    is(jtype($raw, 0, 'messageCount'), 'int', 'messageCount is an integer');
    my @ts = map { rfc3339_epoch($_->{createdAt}) } @{ arr($b) };
    is(scalar(grep { !defined } @ts), 0, 'every createdAt is RFC 3339');
    my $sorted = 1;
    for my $i (1 .. $#ts) { $sorted = 0 if defined $ts[$i] && defined $ts[$i - 1] && $ts[$i] > $ts[$i - 1] }
    ok($sorted, 'ordered by createdAt, newest first');
    my ($in, $io) = map { my $n = $_; (grep { arr($b)->[$_]{namespace} eq $n } 0 .. $#{ arr($b) })[0] } $new, $old;
    ok(defined $in && defined $io && $in < $io, 'a namespace created a second later comes first');
    ($st, my $b2) = R($A, 'ns.list', { limit => 1 });
    is(scalar @{ arr($b2) }, scalar @{ arr($b) }, 'arguments are ignored');
}

# ---- ns.delete
{
    my $del = $t->nsid('ns-del');
    my $td = $d->create_ns($del);
    W($td, 'del-1') for 1 .. 2;
    W($td, 'del-2');
    my ($st, $b, $h, $raw) = R($A, 'ns.delete', $del);
    is($st, 200, 'ns.delete 200') or diag($raw);
    is_deeply([sort keys %{ ref $b eq 'HASH' ? $b : {} }], [qw(deletedAt messagesDeleted namespace)], 'result keys');
    is(obj($b)->{namespace}, $del, 'namespace');
    is(obj($b)->{messagesDeleted}, 3, 'messagesDeleted is the real count (3)');
    is(jtype($raw, 'messagesDeleted'), 'int', 'messagesDeleted is an integer');
    like(obj($b)->{deletedAt}, $RFC, 'deletedAt RFC 3339');
    ok(near_now(obj($b)->{deletedAt}), 'deletedAt is now');
    ($st, $b) = R($A, 'ns.info', $del);
    is($st, 404, 'deleted namespace: ns.info 404');
    is(obj($b)->{error}{code}, 'NAMESPACE_NOT_FOUND', '... NAMESPACE_NOT_FOUND');
    ($st, $b) = R($td, 'stream.get', 'del-1');
    is($st, 403, 'deleted namespace token: 403');
    is(obj($b)->{error}{code}, 'AUTH_UNAUTHORIZED', '... AUTH_UNAUTHORIZED');
    ($st, $b) = R($A, 'ns.delete', $del);
    is($st, 404, 'delete again: 404');
    is_deeply($b, { error => { code => 'NAMESPACE_NOT_FOUND', message => "Namespace '$del' not found" } },
              'delete again: message');
    ($st, $b) = R($A, 'ns.list');
    ok(!grep({ $_->{namespace} eq $del } @{ arr($b) }), 'no longer listed');
    my $td2 = $d->create_ns($del);
    ($st, $b) = R($td2, 'stream.get', 'del-1');
    is_deeply($b, [], 'recreated namespace is empty (data gone)');
    ($st, $b) = R($A, 'ns.info', $del);
    is(obj($b)->{messageCount}, 0, 'recreated namespace messageCount 0');
    ($st) = R($td, 'sys.version');
    is($st, 403, 'the old token does not work for the recreated namespace');
    my $e = $t->nsid('ns-del-empty');
    $d->create_ns($e);
    ($st, $b) = R($A, 'ns.delete', $e);
    is(obj($b)->{messagesDeleted}, 0, 'deleting an empty namespace: messagesDeleted 0');
    invalid('ns.delete', [], 'ns.delete requires 1 argument: namespace ID', 'no arguments');
    invalid('ns.delete', [''], 'namespace ID must be a non-empty string', 'empty id');
    invalid('ns.delete', [undef], 'namespace ID must be a non-empty string', 'null id');
}

# ---- ns.streams and ns.categories (byte order, decisions 6)
my (undef, $TS) = $t->fresh_ns('streams');
{
    my ($st, $b) = R($TS, 'ns.streams');
    is_deeply($b, [], 'ns.streams of an empty namespace: []');
    ($st, $b) = R($TS, 'ns.categories');
    is_deeply($b, [], 'ns.categories of an empty namespace: []');
    W($TS, $_) for qw(order-1 account-1 a-1 B-1 account-1 account-2 account);
    my @all = qw(B-1 a-1 account account-1 account-2 order-1);
    my $names = sub { [map { $_->{stream} } @{ ref $_[0] eq 'ARRAY' ? $_[0] : [] }] };
    my ($raw);
    ($st, $b, undef, $raw) = R($TS, 'ns.streams');
    is($st, 200, 'ns.streams 200');
    is_deeply($names->($b), \@all, 'all streams in byte order (B-1 before a-1)');
    my $bad = grep { join(',', sort keys %$_) ne 'lastActivity,stream,version' } @{ arr($b) };
    is($bad, 0, 'rows have exactly lastActivity, stream, version');
    my %v = map { $_->{stream} => $_->{version} } @{ arr($b) };
    is_deeply(\%v, { 'B-1' => 0, 'a-1' => 0, account => 0, 'account-1' => 1, 'account-2' => 0, 'order-1' => 0 },
              'version = max position');
    is(jtype($raw, 3, 'version'), 'int', 'version is an integer');
    ok(!grep({ !near_now($_->{lastActivity}) } @{ arr($b) }), 'lastActivity RFC 3339 and recent');
    is_deeply($names->((R($TS, 'ns.streams', { prefix => 'account' }))[1]), [qw(account account-1 account-2)], 'prefix account');
    is_deeply($names->((R($TS, 'ns.streams', { prefix => 'account-' }))[1]), [qw(account-1 account-2)], 'prefix account-');
    is_deeply($names->((R($TS, 'ns.streams', { prefix => 'B' }))[1]), ['B-1'], 'prefix B');
    is_deeply($names->((R($TS, 'ns.streams', { prefix => 'b' }))[1]), [], 'prefix is case-sensitive');
    is_deeply($names->((R($TS, 'ns.streams', { prefix => 'zzz' }))[1]), [], 'prefix with no match');
    is_deeply($names->((R($TS, 'ns.streams', { cursor => 'account' }))[1]), [qw(account-1 account-2 order-1)], 'cursor is exclusive');
    is_deeply($names->((R($TS, 'ns.streams', { cursor => 'a-1' }))[1]), [qw(account account-1 account-2 order-1)], 'cursor a-1');
    is_deeply($names->((R($TS, 'ns.streams', { cursor => 'B-1' }))[1]), [@all[1 .. $#all]], 'cursor B-1 (byte order)');
    is_deeply($names->((R($TS, 'ns.streams', { cursor => 'zzz' }))[1]), [], 'cursor past the end');
    is_deeply($names->((R($TS, 'ns.streams', { prefix => 'account', cursor => 'account-1' }))[1]), ['account-2'], 'prefix and cursor');
    is_deeply($names->((R($TS, 'ns.streams', { limit => 2 }))[1]), [qw(B-1 a-1)], 'limit 2');
    is_deeply($names->((R($TS, 'ns.streams', { limit => 1000 }))[1]), \@all, 'limit 1000');
    my (@paged, $cursor);
    for (1 .. 10) {
        my (undef, $p) = R($TS, 'ns.streams', { limit => 2, (defined $cursor ? (cursor => $cursor) : ()) });
        last unless ref $p eq 'ARRAY' && @{ arr($p) };
        push @paged, @{ $names->($p) };
        $cursor = arr($p)->[-1]{stream};
    }
    is_deeply(\@paged, \@all, 'paging with limit 2 and cursors visits every stream once');
    invalid('ns.streams', ['x'], 'options must be an object', 'string options', $TS);
    invalid('ns.streams', [undef], 'options must be an object', 'null options', $TS);
    invalid('ns.streams', [{ prefix => 5 }], 'prefix must be a string', 'numeric prefix', $TS);
    invalid('ns.streams', [{ prefix => 5, cursor => 5 }], 'prefix must be a string', 'prefix before cursor', $TS);
    invalid('ns.streams', [{ cursor => 5 }], 'cursor must be a string', 'numeric cursor', $TS);
    invalid('ns.streams', [{ cursor => 5, limit => 'x' }], 'cursor must be a string', 'cursor before limit', $TS);
    invalid('ns.streams', [{ limit => 'x' }], 'limit must be a number', 'string limit', $TS);
    invalid('ns.streams', [{ limit => undef }], 'limit must be a number', 'null limit', $TS);
    for my $l (0, -1, 1001, 5000) {
        invalid('ns.streams', [{ limit => $l }], 'limit must be between 1 and 1000', "limit $l", $TS);
    }

    ($st, $b, undef, $raw) = R($TS, 'ns.categories');
    is($st, 200, 'ns.categories 200');
    is_deeply($b, [
        { category => 'B',       messageCount => 1, streamCount => 1 },
        { category => 'a',       messageCount => 1, streamCount => 1 },
        { category => 'account', messageCount => 4, streamCount => 3 },
        { category => 'order',   messageCount => 1, streamCount => 1 },
    ], 'ns.categories: counts, byte order; "account" and "account-1" share a category');
    is(jtype($raw, 0, 'messageCount'), 'int', 'messageCount is an integer');
    is(jtype($raw, 0, 'streamCount'), 'int', 'streamCount is an integer');
    ($st, $b) = R($TS, 'ns.categories', 'ignored', { x => 1 });
    is(scalar @{ arr($b) }, 4, 'ns.categories ignores arguments');
}

# ---- isolation
{
    my (undef, $TA) = $t->fresh_ns('iso-a');
    my ($ib, $TB) = $t->fresh_ns('iso-b');
    my $w = W($TB, 'first-1');
    is($w->{globalPosition}, 1, 'global positions start at 1 in a new namespace');
    W($TA, 'iso-1');
    W($TA, 'iso-1');
    my ($st, $b) = R($TB, 'stream.get', 'iso-1');
    is_deeply($b, [], 'stream.get: other namespace invisible');
    ($st, $b) = R($TB, 'stream.version', 'iso-1');
    ok(!defined $b, 'stream.version: other namespace invisible');
    ($st, $b) = R($TB, 'stream.last', 'iso-1');
    ok(!defined $b, 'stream.last: other namespace invisible');
    ($st, $b) = R($TB, 'category.get', 'iso');
    is_deeply($b, [], 'category.get: other namespace invisible');
    ($st, $b) = R($TB, 'category.get', '');
    is_deeply([map { $_->[1] } @{ arr($b) }], ['first-1'], 'category.get "": only own messages');
    ($st, $b) = R($TB, 'ns.streams');
    is_deeply([map { $_->{stream} } @{ arr($b) }], ['first-1'], 'ns.streams: only own streams');
    ($st, $b) = R($TB, 'ns.categories');
    is_deeply([map { $_->{category} } @{ arr($b) }], ['first'], 'ns.categories: only own categories');
    ($st, $b) = R($A, 'ns.info', $ib);
    is(obj($b)->{messageCount}, 1, 'ns.info counts only its own messages');
    my $w2 = W($TB, 'iso-1');
    is($w2->{position}, 0, 'same stream name in another namespace starts at position 0');
    ($st, $b) = R($A, 'stream.get', 'iso-1');
    is_deeply($b, [], 'default namespace sees nothing either');
}

# ---- sys.version, sys.health
{
    my ($st, $b, $h, $raw) = R($A, 'sys.version');
    is($st, 200, 'sys.version 200');
    is(jtype($raw), 'string', 'sys.version is a string');
    like($b, semver_re(), "sys.version is a semver ($b)");
    is($b, $d->http('GET', '/version')->{json}{version}, 'sys.version equals /version');
    ($st, $b, $h, $raw) = R($A, 'sys.health');
    is($st, 200, 'sys.health 200');
    is_deeply([sort keys %{ ref $b eq 'HASH' ? $b : {} }], [qw(backend connections status)], 'sys.health keys');
    is(obj($b)->{backend}, 'postgres', 'backend postgres');
    is(obj($b)->{status}, 'ok', 'status ok');
    is(jtype($raw, 'connections'), 'int', 'connections is an integer');
    cmp_ok(obj($b)->{connections}, '>=', 1, 'at least one open database connection');
    ($st) = R($T1, 'sys.health');
    is($st, 200, 'sys.health with a namespace token');
}

done_testing;
