#!/usr/bin/perl
# 02-auth.t - authentication and authorisation: every row of the
# production decision table (api.md 4.4, 4.5), token parse errors (4.2,
# 15.2), admin rules (decisions.md 3), the test-mode relaxations (4.5 test
# mode table, decisions.md 2) and the stored default token (decisions.md 3).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN make_token sha256_hex arr obj);

my $t = EventoTest->new;
my $d = $t->start;
my $A = ADMIN_TOKEN;
my $BODY = '["sys.version"]';
my @bodies;    # every response body seen, checked for hashes at the end
my @tokens = ($A);

sub post {
    my (%o) = @_;
    my $path = '/rpc' . (defined $o{query} ? "?token=$o{query}" : '');
    my %h = ('content-type' => 'application/json');
    $h{authorization} = $o{auth} if defined $o{auth};
    my $r = $d->http($o{method} // 'POST', $path, headers => \%h, content => $o{body} // $BODY);
    push @bodies, $r->{content} // '';
    return $r;
}

sub R {
    my @r = $d->rpc(@_);
    push @bodies, $r[3] // '';
    return @r;
}

sub err_is {
    my ($r, $status, $err, $name) = @_;
    is($r->{status}, $status, "$name: status $status");
    is_deeply($r->{json}, { error => $err }, "$name: body") or diag($r->{content});
}

# Raw request with an exact header line (empty values, trailing spaces).
sub raw_auth {
    my ($line) = @_;
    my $req = "POST /rpc HTTP/1.1\r\nHost: x\r\n$line\r\nContent-Type: application/json\r\n"
            . "Content-Length: " . length($BODY) . "\r\nConnection: close\r\n\r\n$BODY";
    my ($data, $closed) = $d->raw($req, timeout => 5);
    my ($resp) = EventoTest::parse_responses($data, $closed);
    my $r = $resp->[0] || { status => 0, body => $data };
    my ($ok, $v) = EventoTest::json_decode($r->{body} // '');
    return { status => $r->{status}, json => $ok ? $v : undef, content => $r->{body} };
}

my $REQ = { code => 'AUTH_REQUIRED', message => 'Authorization header required' };
my $SCHEME = { code => 'AUTH_REQUIRED', message => 'Authorization header must use Bearer scheme' };

# ---- 401 AUTH_REQUIRED
err_is(post(), 401, $REQ, 'no credentials');
err_is(post(query => ''), 401, $REQ, 'empty ?token= and no header');
err_is(raw_auth('Authorization: '), 401, $REQ, 'empty Authorization header');
err_is(post(auth => 'Basic dXNlcjpwYXNz'), 401, $SCHEME, 'Basic scheme');
err_is(post(auth => "bearer $A"), 401, $SCHEME, 'lower-case bearer (scheme is case-sensitive)');
err_is(post(auth => "Token $A"), 401, $SCHEME, 'Token scheme');
err_is(post(auth => 'Bearer'), 401, $SCHEME, '"Bearer" without a space');
{
    my $r = raw_auth('Authorization: Bearer ');
    is($r->{status}, 401, '"Bearer " with nothing after it: 401');
    is(obj($r->{json})->{error}{code}, 'AUTH_REQUIRED', '"Bearer ": AUTH_REQUIRED');
    like(obj($r->{json})->{error}{message} // '', qr/^(Token required|Authorization header must use Bearer scheme)$/,
         '"Bearer ": Token required (or the scheme message if the space is trimmed)');
}

# ---- 401 AUTH_INVALID_TOKEN with the parse error (api 4.2 / 15.2)
my $Z64 = '0' x 64;
my @bad = (
    ['invalid-token',                 q{invalid token format: missing 'ns_' prefix}],
    ["tk_ZGVmYXVsdA_$Z64",            q{invalid token format: missing 'ns_' prefix}],
    ['ns_ZGVmYXVsdA',                 'invalid token format: expected 2 parts after prefix, got 1'],
    ["ns_ZGVmYXVsdA$Z64",             'invalid token format: expected 2 parts after prefix, got 1'],
    ['ns_dGVzdA_abc_def',             'invalid token format: expected 2 parts after prefix, got 3'],
    ['ns_dGVzdA_abc',                 'invalid token format: random part must be 64 hex characters, got 3'],
    ['ns_dGVzdA_' . ('a' x 67),       'invalid token format: random part must be 64 hex characters, got 67'],
    ['ns_dGVzdA_' . ('g' x 64),       qr/^invalid token format: random part is not valid hexadecimal: ./],
    ["ns__$Z64",                      'invalid token format: namespace is empty'],
    ["ns_ZGVm=XVsdA_$Z64",            qr/^invalid token format: namespace part is not valid base64url: ./],
    ["ns_ZG!mYXVsdA_$Z64",            qr/^invalid token format: namespace part is not valid base64url: ./],
    # 'ab?' encodes to YWI_, so its tokens have 3 parts (api 4.2)
    ["ns_YWI__$Z64",                  'invalid token format: expected 2 parts after prefix, got 3'],
);
for my $b (@bad) {
    my ($tok, $want) = @{ arr($b) };
    my $r = post(auth => "Bearer $tok");
    is($r->{status}, 401, "bad token $tok: 401");
    is(obj($r->{json})->{error}{code}, 'AUTH_INVALID_TOKEN', "bad token $tok: AUTH_INVALID_TOKEN");
    is(obj($r->{json})->{error}{message}, 'Invalid token format', "bad token $tok: message");
    is_deeply([sort keys %{ obj($r->{json})->{error}{details} || {} }], ['error'], "bad token $tok: details has one key, error");
    if (ref $want) { like(obj($r->{json})->{error}{details}{error} // '', $want, "bad token $tok: details.error") }
    else           { is(obj($r->{json})->{error}{details}{error}, $want, "bad token $tok: details.error") }
}

# ---- 403 AUTH_UNAUTHORIZED
err_is(post(auth => 'Bearer ' . make_token('no-such-namespace')), 403,
       { code => 'AUTH_UNAUTHORIZED', message => 'Token not authorized for namespace',
         details => { namespace => 'no-such-namespace' } }, 'namespace not in the registry');
err_is(post(auth => 'Bearer ' . make_token('default', '1' x 64)), 403,
       { code => 'AUTH_UNAUTHORIZED', message => 'Token not authorized for namespace',
         details => { namespace => 'default' } }, 'wrong hash for default');
err_is(post(auth => 'Bearer ' . make_token('default', 'A' x 64)), 403,
       { code => 'AUTH_UNAUTHORIZED', message => 'Token not authorized for namespace',
         details => { namespace => 'default' } }, 'upper-case hex parses; hash mismatch');
is(post(auth => "Bearer $A")->{status}, 200, 'the admin token works');

# ---- credentials: query parameter wins over the header (api 4.4)
is(post(query => $A, auth => 'Bearer garbage')->{status}, 200, '?token=<valid> wins over a garbage header');
is(post(query => $A)->{status}, 200, '?token=<valid> alone');
{
    my $r = post(query => 'garbage', auth => "Bearer $A");
    is($r->{status}, 401, '?token=garbage wins over a valid header: 401');
    is(obj($r->{json})->{error}{details}{error}, q{invalid token format: missing 'ns_' prefix}, '... parse error of the query token');
}

# ---- auth runs before the method check and the body parse (api 5.1)
err_is(post(method => 'GET', body => ''), 401, $REQ, 'GET /rpc without a token: 401, not 405');
err_is(post(body => 'this is not json'), 401, $REQ, 'malformed body without a token: 401');
is(post(body => '["nope"]', auth => 'Bearer x')->{json}{error}{code}, 'AUTH_INVALID_TOKEN', 'unknown method with a bad token: auth error first');
for my $m (qw(sys.version sys.health ns.list ns.create ns.info ns.delete stream.write stream.get category.get ns.streams)) {
    my ($st, $b) = R(undef, $m, 'x');
    is($st, 401, "$m without a token: 401");
}

# ---- admin rules (decisions 3)
my $alpha = $t->nsid('alpha');
my $beta = $t->nsid('beta');
my (undef, $ca) = R($A, 'ns.create', $alpha, {});
my (undef, $cb) = R($A, 'ns.create', $beta, {});
my $TA = $ca->{token} or BAIL_OUT('ns.create alpha failed');
my $TB = $cb->{token} or BAIL_OUT('ns.create beta failed');
push @tokens, $TA, $TB;
is((R($TA, 'sys.version'))[0], 200, 'namespace token works for sys.version');
{
    my ($st, $b) = R($TA, 'ns.create', $t->nsid('gamma'), {});
    is($st, 403, 'ns.create with a non-admin token: 403');
    is(obj($b)->{error}{code}, 'AUTH_UNAUTHORIZED', '... AUTH_UNAUTHORIZED');
    ($st) = R($A, 'ns.info', $t->nsid('gamma'));
    is($st, 404, '... and nothing was created');
    ($st, $b) = R($TA, 'ns.list');
    is($st, 403, 'ns.list with a non-admin token: 403');
    is(obj($b)->{error}{code}, 'AUTH_UNAUTHORIZED', '... AUTH_UNAUTHORIZED');
    ($st, $b) = R($TA, 'ns.info', $alpha);
    is($st, 200, 'ns.info of its own namespace: 200');
    is(obj($b)->{namespace}, $alpha, '... right namespace');
    ($st, $b) = R($TA, 'ns.info', $beta);
    is($st, 403, 'ns.info of another namespace: 403');
    is(obj($b)->{error}{code}, 'AUTH_UNAUTHORIZED', '... AUTH_UNAUTHORIZED');
    ($st, $b) = R($TA, 'ns.info', $t->nsid('missing-ns'));
    is($st, 403, 'ns.info of a missing namespace with a non-admin token: 403');
    ($st) = R($A, 'ns.info', $beta);
    is($st, 200, 'ns.info of any namespace with the admin token: 200');
    ($st, $b) = R($TA, 'ns.delete', $beta);
    is($st, 403, 'ns.delete of another namespace: 403');
    is(obj($b)->{error}{code}, 'AUTH_UNAUTHORIZED', '... AUTH_UNAUTHORIZED');
    ($st) = R($TB, 'sys.version');
    is($st, 200, '... and that namespace still works');
    ($st, $b) = R($TA, 'stream.write', 'x-1', { type => 'T', data => {} });
    is($st, 200, 'data op with its own token');
    ($st, $b) = R($TA, 'ns.delete', $alpha);
    is($st, 200, 'ns.delete of its own namespace: 200');
    is(obj($b)->{namespace}, $alpha, '... right namespace');
    ($st, $b) = R($TA, 'sys.version');
    is($st, 403, 'token of the deleted namespace: 403');
    is(obj($b)->{error}{code}, 'AUTH_UNAUTHORIZED', '... AUTH_UNAUTHORIZED');
    ($st) = R($A, 'ns.delete', $beta);
    is($st, 200, 'admin deletes another namespace: 200');
    ($st) = R($TB, 'sys.version');
    is($st, 403, '... its token stops working');
}

# ---- the query token selects the namespace
{
    my $id = $t->nsid('qns');
    my $tq = $d->create_ns($id);
    push @tokens, $tq;
    my $r = post(query => $tq, auth => "Bearer $A",
                 body => '["stream.write","qstream-1",{"type":"T","data":{"q":1}}]');
    is($r->{status}, 200, 'write with ?token=<ns> and the admin header');
    my ($st, $b) = R($tq, 'stream.get', 'qstream-1');
    is(scalar @{ ref $b eq 'ARRAY' ? $b : [] }, 1, '... landed in the query token namespace');
    ($st, $b) = R($A, 'stream.get', 'qstream-1');
    is_deeply($b, [], '... not in default');
}

# ---- token hashes never in responses; tokens never in the log
{
    my @hashes = map { sha256_hex($_) } @tokens;
    my ($st, $list) = R($A, 'ns.list');
    my ($st2) = R($A, 'ns.info', 'default');
    my $leak = grep { my $b = $_; grep { index($b, $_) >= 0 } @hashes } @bodies;
    is($leak, 0, 'no response contains a token hash');
    ok(!grep({ /token_?hash/i } @bodies), 'no response has a token_hash field');
    for my $e (ref $list eq 'ARRAY' ? @{ arr($list) } : ()) {
        ok(!exists $e->{token}, "ns.list entry $e->{namespace} has no token") or last;
    }
    my $log = $d->log_text;
    for my $tok (@tokens) {
        my ($rand) = $tok =~ /_([0-9a-f]{64})$/;
        ok(index($log, $tok) < 0 && index($log, $rand) < 0, 'token absent from the daemon log');
    }
}

# ---- test mode with a database URL (api 4.5 test mode table)
{
    my $tm = $t->start(test_mode => 1);
    my ($st, $b) = $tm->rpc(undef, 'sys.version');
    is($st, 200, 'test mode: no token -> works');
    ($st, $b) = $tm->rpc(undef, 'stream.write', 'tm-1', { type => 'T', data => { v => 1 } });
    is($st, 200, 'test mode: write without a token (default namespace)');
    ($st, $b) = $tm->rpc(undef, 'stream.get', 'tm-1');
    is(scalar @{ arr($b) }, 1, 'test mode: read it back without a token');
    for my $cred (['Basic abc', 'bad scheme'], ['Bearer garbage', 'unparseable token'], ["Bearer $A", 'admin token']) {
        my $r = $tm->http('POST', '/rpc', headers => { authorization => $cred->[0] },
                          content => '["stream.get","tm-1"]');
        is($r->{status}, 200, "test mode: $cred->[1] -> 200");
        is(scalar @{ $r->{json} || [] }, 1, "test mode: $cred->[1] -> default namespace");
    }
    ($st, $b) = $tm->rpc(undef, 'ns.create', 'tmns');
    is($st, 200, 'test mode: ns.create without a token');
    my $real = obj($b)->{token};
    my $wrong = make_token('tmns', 'f' x 64);
    ($st) = $tm->rpc($wrong, 'stream.write', 'tmx-1', { type => 'T', data => {} });
    is($st, 200, 'test mode: parseable token with the wrong hash works');
    ($st, $b) = $tm->rpc($real, 'stream.get', 'tmx-1');
    is(scalar @{ ref $b eq 'ARRAY' ? $b : [] }, 1, '... and wrote into that namespace');
    ($st, $b) = $tm->rpc(undef, 'stream.get', 'tmx-1');
    is_deeply($b, [], '... not into default');
    ($st, $b) = $tm->rpc(make_token('ghost'), 'stream.write', 'g-1', { type => 'T', data => {} });
    is($st, 500, 'test mode: token of a missing namespace -> 500');
    is(obj($b)->{error}{code}, 'BACKEND_ERROR', '... BACKEND_ERROR');
    like(obj($b)->{error}{message} // '', qr/namespace not found$/, '... message ends with "namespace not found"');
    # never wipes the database; tolerates default already existing
    $tm->restart;
    ($st, $b) = $tm->rpc(undef, 'stream.get', 'tm-1');
    is(scalar @{ ref $b eq 'ARRAY' ? $b : [] }, 1, 'test mode restart keeps the data');
    $tm->stop;
}

# ---- the stored default token (decisions 3, api 4.6)
{
    my ($st) = $d->rpc($A, 'stream.write', 'keep-1', { type => 'T', data => {} });
    is($st, 200, 'write before restarts');
    my $other = make_token('default', 'b' x 64);
    $d->restart(token => $other, expect_exit => 1);
    ok(!$d->timed_out, 'different --token: the daemon exits by itself');
    ok(defined $d->exit_code && $d->exit_code != 0, 'different --token: non-zero exit')
        or diag('exit ' . ($d->exit_code // 'undef') . ' signal ' . ($d->exit_signal // 'none'));
    my $log = $d->log_since_start;
    like($log, qr/token/i, 'different --token: the log says why');
    ok(index($log, 'b' x 64) < 0, 'different --token: the token itself is not logged');

    $d->restart(token => undef, expect_exit => 0);
    ($st) = $d->rpc($A, 'sys.version');
    is($st, 200, 'restart without --token: the stored admin token still works');
    $d->restart(token => $A);
    ($st, my $b) = $d->rpc($A, 'stream.get', 'keep-1');
    is($st, 200, 'restart with the right --token works');
    is(scalar @{ ref $b eq 'ARRAY' ? $b : [] }, 1, '... data kept');

    my $x = $t->start(token => make_token('notdefault', '0' x 64), expect_exit => 1);
    ok(defined $x->exit_code && $x->exit_code != 0, '--token for another namespace: non-zero exit');
    $x = $t->start(token => 'not-a-token', expect_exit => 1);
    ok(defined $x->exit_code && $x->exit_code != 0, 'unparseable --token: non-zero exit');
}

done_testing;
