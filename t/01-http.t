#!/usr/bin/perl
# 01-http.t - the HTTP surface: /health, /version, 404s, Server header,
# keep-alive, pipelining, 405 on GET /rpc, content types and framing
# (api.md 2.1, 3.2, 5.2; decisions.md 9).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN jtype semver_re arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start;
my $T = ADMIN_TOKEN;

# ---- /health
my $h = $d->http('GET', '/health');
is($h->{status}, 200, '/health 200');
like($h->{headers}{'content-type'} // '', qr{^application/json\b}, '/health is application/json');
ok($h->{json_ok} && ref $h->{json} eq 'HASH', '/health body is a JSON object') or diag($h->{content});
is(obj($h->{json})->{status}, 'ok', '/health status ok');
is(obj($h->{json})->{backend}, 'postgres', '/health backend postgres (decisions 9)');
like(jtype($h->{content}, 'connections') // 'missing', qr/^int$/, '/health connections is an integer');
cmp_ok(obj($h->{json})->{connections} // -1, '>=', 0, '/health connections >= 0');
is($d->http('POST', '/health')->{status}, 200, '/health answers any method');
is($d->http('GET', '/health?probe=1')->{status}, 200, '/health with a query string');
is($d->http('GET', '/health', headers => { authorization => 'Bearer garbage' })->{status}, 200,
   '/health needs no auth and ignores a bad token');

# ---- /version
my $v = $d->http('GET', '/version');
is($v->{status}, 200, '/version 200');
like($v->{headers}{'content-type'} // '', qr{^application/json\b}, '/version is application/json');
my $ver = obj($v->{json})->{version} // '';
like($ver, semver_re(), "/version is a semver ($ver)");
SKIP: {
    my $cv = EventoTest::configure_version();
    skip 'configure.ac version not found', 1 unless defined $cv;
    is($ver, $cv, 'version equals AC_INIT version in configure.ac');
}
my ($st, $sv) = $d->rpc($T, 'sys.version');
is($st, 200, 'sys.version 200');
is($sv, $ver, 'sys.version equals /version');

# ---- Server header
for my $path ('/health', '/version', '/nope') {
    my $r = $d->http('GET', $path);
    is($r->{headers}{server}, "eventodbd/$ver", "Server header on $path");
}
{
    my ($s, undef, $hd) = $d->rpc($T, 'sys.version');
    is($hd->{server}, "eventodbd/$ver", 'Server header on /rpc');
}

# ---- unknown paths
my $nf = { error => { code => 'NOT_FOUND', message => 'Endpoint not found' } };
for my $case (['GET', '/nope'], ['POST', '/nope'], ['POST', '/rpc/'], ['GET', '/rpc/'],
              ['GET', '/debug/pprof'], ['GET', '/health/'], ['GET', '/'], ['GET', '/RPC']) {
    my ($m, $p) = @$case;
    my $r = $d->http($m, $p, token => $T, headers => { 'content-type' => 'application/json' },
                     ($m eq 'POST' ? (content => '["sys.version"]') : ()));
    is($r->{status}, 404, "$m $p -> 404");
    is_deeply($r->{json}, $nf, "$m $p -> NOT_FOUND body") or diag($r->{content});
    like($r->{headers}{'content-type'} // '', qr{^application/json\b}, "$m $p -> JSON content type");
}

# ---- GET /rpc with a valid token
{
    my $r = $d->http('GET', '/rpc', token => $T);
    is($r->{status}, 405, 'GET /rpc -> 405');
    is_deeply($r->{json}, { error => { code => 'INVALID_REQUEST', message => 'Only POST method allowed' } },
              'GET /rpc body') or diag($r->{content});
    my $p = $d->http('PUT', '/rpc', token => $T, content => '["sys.version"]');
    is(obj($p)->{status}, 405, 'PUT /rpc -> 405');
}

# ---- RPC content type and trailing newline (api 5.2)
{
    my ($s, $b, $hd, $raw) = $d->rpc($T, 'sys.version');
    like($hd->{'content-type'} // '', qr{^application/json\b}, 'rpc success is application/json');
    like($raw, qr/\n\z/, 'rpc success body ends with \n');
    unlike($raw, qr/\n\n\z/, '... a single \n');
    ($s, $b, $hd, $raw) = $d->rpc($T, 'no.such.method');
    is($s, 404, 'unknown method 404');
    like($hd->{'content-type'} // '', qr{^application/json\b}, 'rpc error is application/json');
    like($raw, qr/\n\z/, 'rpc error body ends with \n');
    ($s, $b, $hd, $raw) = $d->rpc($T, 'stream.version', 'no-such-stream-x');
    is($s, 200, 'stream.version of a missing stream 200');
    is($raw, "null\n", 'a null result is the body "null\n"');
}

# ---- keep-alive: two requests on one socket
{
    my $s = $d->connect;
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    my ($r1, $closed1) = $d->read_responses($s, count => 1);
    is(scalar @$r1, 1, 'keep-alive: first response');
    is($r1->[0]{status}, 200, 'keep-alive: first is 200');
    ok(!$closed1, 'keep-alive: connection still open');
    $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\n"
                   . "Content-Type: application/json\r\nContent-Length: 15\r\n\r\n[\"sys.version\"]");
    my ($r2) = $d->read_responses($s, count => 1);
    is(scalar @$r2, 1, 'keep-alive: second response on the same socket');
    is($r2->[0]{status}, 200, 'keep-alive: second is 200');
    is($r2->[0]{body}, "\"$ver\"\n", 'keep-alive: second body is the version');
    close $s;
}

# ---- pipelining: several requests in one write, answered in order
{
    my $body = '["sys.health"]';
    my $req = "GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
            . "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
            . "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Length: "
            . length($body) . "\r\n\r\n$body"
            . "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    my ($data, $closed) = $d->raw($req, timeout => 10);
    my ($resp, $rest) = EventoTest::parse_responses($data, $closed);
    is(scalar @$resp, 4, 'pipelining: four responses') or diag($data);
    is_deeply([map { $_->{status} } @$resp], [200, 404, 200, 200], 'pipelining: statuses in request order');
    like($resp->[0]{body} // '', qr/"version"/, 'pipelining: 1st is /version');
    like($resp->[1]{body} // '', qr/NOT_FOUND/, 'pipelining: 2nd is the 404');
    like($resp->[2]{body} // '', qr/"backend"/, 'pipelining: 3rd is sys.health');
    like($resp->[3]{body} // '', qr/"status"/, 'pipelining: 4th is /health');
    ok($closed, 'pipelining: Connection: close honoured after the last response');
    is($rest, '', 'pipelining: nothing after the last response');
}

# ---- Connection: close and HTTP/1.0
{
    my ($data, $closed) = $d->raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout => 5);
    my ($resp) = EventoTest::parse_responses($data, $closed);
    is($resp->[0]{status}, 200, 'Connection: close -> 200');
    ok($closed, 'Connection: close -> server closes');
    ($data, $closed) = $d->raw("GET /health HTTP/1.0\r\n\r\n", timeout => 5);
    ($resp) = EventoTest::parse_responses($data, $closed);
    is($resp->[0]{status}, 200, 'HTTP/1.0 request -> 200');
    ok($closed, 'HTTP/1.0 without keep-alive -> server closes');
}

# ---- HEAD /health: headers, no body
{
    my ($data, $closed) = $d->raw("HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout => 5);
    like($data, qr{^HTTP/1\.1 200 }, 'HEAD /health 200');
    my ($head, $after) = split /\r\n\r\n/, $data, 2;
    is($after // '', '', 'HEAD response has no body');
}

# ---- the server is still fine
is($d->http('GET', '/health')->{status}, 200, 'still healthy at the end');

done_testing;
