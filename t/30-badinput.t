#!/usr/bin/perl
# 30-badinput.t - hostile and malformed input (decisions.md 5, api.md 5.1,
# 3.6): each gets a 4xx (JSON for /rpc-level errors), never a 500 or a
# crash; HTTP framing attacks; size limits; slow clients.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use IO::Select;
use EventoTest qw(ADMIN_TOKEN mult arr obj);

my $t = EventoTest->new;
my $d = $t->start(workers => 2,
                  args => ['--max-body', 65536, '--header-timeout', 1, '--body-timeout', 2, '--idle-timeout', 2]);
my $A = ADMIN_TOKEN;
ok($t->wait_for(sub { keys %{ $d->worker_pids } >= 2 }, 10), 'two workers logged');
my %workers_before = %{ $d->worker_pids };

sub bad {
    my ($body, $status, $code, $msg, $name) = @_;
    my ($st, $b, $h, $raw) = $d->raw_rpc($A, $body);
    is($st, $status, "$name: $status") or diag(substr($raw // '', 0, 300));
    like($h->{'content-type'} // '', qr{^application/json\b}, "$name: JSON content type");
    is(ref $b eq 'HASH' && ref obj($b)->{error} eq 'HASH' ? obj($b)->{error}{code} : undef, $code, "$name: $code");
    if (defined $msg) {
        if (ref $msg) { like(obj($b)->{error}{message} // '', $msg, "$name: message") }
        else          { is(obj($b)->{error}{message}, $msg, "$name: $msg") }
    }
    return $b;
}
my $GOOD_WRITES = 0;
sub good {
    my ($body, $name) = @_;
    $GOOD_WRITES++ if $body =~ /^\["stream\.write","bad-1"/;
    my ($st, $b, $h, $raw) = $d->raw_rpc($A, $body);
    is($st, 200, "$name: 200") or diag(substr($raw // '', 0, 300));
}
my $MAL = 'Malformed JSON request';
my $W = sub { qq{["stream.write","bad-1",{"type":"T","data":$_[0]}]} };

# ---- envelope (api 5.1)
for my $case (['not json', 'not JSON'], ['{}', 'an object'], ['', 'empty body'], ['"x"', 'a string'],
              ['42', 'a number'], ['["sys.version"] x', 'trailing data'], ['["sys.version"][]', 'two values'],
              ["['sys.version']", 'single quotes'], ['["sys.version",]', 'trailing comma'],
              ['["sys.version"', 'truncated'], ['/*c*/["sys.version"]', 'a comment'],
              ['["stream.get","s",{"position":01}]', 'leading zero']) {
    my $b = bad($case->[0], 400, 'INVALID_REQUEST', $MAL, $case->[1]);
    ok(ref $b eq 'HASH' && defined obj($b)->{error}{details}{error} && length obj($b)->{error}{details}{error},
       "$case->[1]: details.error carries the parser message");
}
bad('[]', 400, 'INVALID_REQUEST', 'Missing method name', '[]');
bad('null', 400, 'INVALID_REQUEST', 'Missing method name', 'null body');
bad('[1]', 400, 'INVALID_REQUEST', 'Method name must be a string', '[1]');
bad('[null]', 400, 'INVALID_REQUEST', 'Method name must be a string', '[null]');
bad('[["sys.version"]]', 400, 'INVALID_REQUEST', 'Method name must be a string', 'nested array as method');
bad('["nope"]', 404, 'METHOD_NOT_FOUND', 'Unknown method: nope', 'unknown method');
bad('["SYS.VERSION"]', 404, 'METHOD_NOT_FOUND', 'Unknown method: SYS.VERSION', 'method names are case-sensitive');
bad('["ns.rotateToken","x"]', 404, 'METHOD_NOT_FOUND', 'Unknown method: ns.rotateToken', 'ns.rotateToken does not exist');
bad('["stream.get","s",null]', 400, 'INVALID_REQUEST', 'options must be an object', 'null options');
good(qq{  ["sys.version"] \n\t\r\n }, 'surrounding whitespace is fine');

# ---- strings (decisions 5)
for my $case (["\"\xff\"", 'byte 0xFF'], ["\"\xc0\xaf\"", 'overlong encoding'], ["\"\xed\xa0\x80\"", 'UTF-8 encoded surrogate'],
              ["\"\xe2\x82\"", 'truncated sequence'], ["\"\xf4\x90\x80\x80\"", 'code point above U+10FFFF'],
              ["\"\x80\"", 'lone continuation byte']) {
    bad($W->(qq/{"k":$case->[0]}/), 400, 'INVALID_REQUEST', undef, "invalid UTF-8 in a value: $case->[1]");
}
bad(qq{["stream.write","bad-\xff",{"type":"T","data":{}}]}, 400, 'INVALID_REQUEST', undef, 'invalid UTF-8 in the stream name');
bad(qq{["sys.version\xff"]}, 400, 'INVALID_REQUEST', undef, 'invalid UTF-8 in the method name');
bad($W->(qq/{"k\xff":1}/), 400, 'INVALID_REQUEST', undef, 'invalid UTF-8 in a key');
bad($W->('{"k":"a\u0000b"}'), 400, 'INVALID_REQUEST', undef, '\u0000 escape');
bad($W->(qq/{"k":"a\x00b"}/), 400, 'INVALID_REQUEST', undef, 'raw NUL byte');
bad($W->(qq/{"k":"a\x01b"}/), 400, 'INVALID_REQUEST', undef, 'raw control character');
bad($W->('{"k":"\ud800"}'), 400, 'INVALID_REQUEST', undef, 'lone high surrogate escape');
bad($W->('{"k":"\udc00x"}'), 400, 'INVALID_REQUEST', undef, 'lone low surrogate escape');
bad($W->('{"k":"\x"}'), 400, 'INVALID_REQUEST', undef, 'unknown escape');
good($W->('{"k":"\ud83d\ude00 \u00e9 \u2028"}'), 'valid surrogate pair and escapes');

# ---- numbers (decisions 5)
for my $case (['NaN', 'NaN'], ['Infinity', 'Infinity'], ['-Infinity', '-Infinity'], ['1e400', '1e400'],
              ['-1e400', '-1e400'], ['1e131071', '1e131071'], ['1' . ('0' x 400), 'a 401-digit integer'],
              ['+1', 'leading plus'], ['.5', 'leading dot'], ['1.', 'trailing dot'], ['0x10', 'hex']) {
    bad($W->(qq/{"n":$case->[0]}/), 400, 'INVALID_REQUEST', undef, "number $case->[1]");
}
bad('["stream.get","s",{"position":1e400}]', 400, 'INVALID_REQUEST', undef, '1e400 as an option');
good($W->('{"n":1e308,"m":-1e308}'), '1e308 and -1e308 are accepted');
good($W->('{"s":1e-400}'), '1e-400 (tiny, not beyond 1e308) is accepted');

# ---- nesting depth (decisions 5: deeper than 64 is rejected)
bad(('[' x 64) . (']' x 64), 400, 'INVALID_REQUEST', 'Method name must be a string', 'depth 64 parses');
bad(('[' x 65) . (']' x 65), 400, 'INVALID_REQUEST', $MAL, 'depth 65 is rejected');
{
    my $nest = sub { my $k = shift; my $s = '{}'; $s = qq/{"a":$s}/ for 2 .. $k; $s };
    good($W->($nest->(62)), 'stream.write with total depth 64');
    bad($W->($nest->(63)), 400, 'INVALID_REQUEST', $MAL, 'stream.write with total depth 65');
    bad($W->($nest->(5000)), 400, 'INVALID_REQUEST', $MAL, 'depth 5000');
    bad('[' x 60000, 400, 'INVALID_REQUEST', $MAL, '60000 open brackets (under --max-body)');
}
{
    my (undef, $b) = $d->rpc($A, 'stream.get', 'bad-1');
    is(scalar @{ arr($b) }, $GOOD_WRITES, "only the $GOOD_WRITES good writes were stored");
}

# ---- HTTP framing
my $RPC = '["sys.version"]';
sub http_req {
    my ($hdrs, $body) = @_;
    return "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\n$hdrs\r\n" . ($body // '');
}
sub status_of {
    my ($data, $closed) = @_;
    my ($resp) = EventoTest::parse_responses($data, $closed);
    return @$resp ? $resp->[0]{status} : ($data =~ m{^HTTP/1\.[01] (\d{3})} ? $1 : 0);
}
{
    my ($data, $closed) = $d->raw(http_req("Content-Length: 15\r\nContent-Length: 5\r\n", $RPC), timeout => 5);
    is(status_of($data, $closed), 400, 'two different Content-Length headers: 400');
    ok($closed, '... and the connection is closed');
    ($data, $closed) = $d->raw(http_req("Content-Length: 15\r\nTransfer-Encoding: chunked\r\n", "f\r\n$RPC\r\n0\r\n\r\n"), timeout => 5);
    is(status_of($data, $closed), 400, 'Content-Length with Transfer-Encoding: 400');
    ok($closed, '... and the connection is closed');
    ($data, $closed) = $d->raw(http_req("Transfer-Encoding: chunked\r\nContent-Length: 15\r\n", "f\r\n$RPC\r\n0\r\n\r\n"), timeout => 5);
    is(status_of($data, $closed), 400, 'Transfer-Encoding then Content-Length: 400');
    ok($closed, '... and the connection is closed');
    ($data, $closed) = $d->raw(http_req("Content-Length: -1\r\n", $RPC), timeout => 5);
    is(status_of($data, $closed), 400, 'negative Content-Length: 400');
    ($data, $closed) = $d->raw(http_req("Content-Length: abc\r\n", $RPC), timeout => 5);
    is(status_of($data, $closed), 400, 'non-numeric Content-Length: 400');

    my $chunked = "Transfer-Encoding: chunked\r\nConnection: close\r\n";
    ($data, $closed) = $d->raw(http_req($chunked, "6\r\n[\"sys.\r\n9\r\nversion\"]\r\n0\r\n\r\n"), timeout => 5);
    my ($resp) = EventoTest::parse_responses($data, $closed);
    is($resp->[0]{status}, 200, 'chunked body accepted on /rpc');
    like($resp->[0]{body} // '', qr/^"\d+\.\d+\.\d+/, '... and answered');
    ($data, $closed) = $d->raw(http_req($chunked, "zz\r\nabc\r\n0\r\n\r\n"), timeout => 5);
    is(status_of($data, $closed), 400, 'bad chunk size: 400');

    for my $line ("HELLO\r\n\r\n", "GET\r\n\r\n", "GET /health HTTP/1.1 junk\r\n\r\n", "\x00\x01\x02\r\n\r\n",
                  "GET /health FTP/1.0\r\n\r\n", "GET  /health HTTP/1.1\r\n\r\n",
                  "GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
                  "GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
                  "GET /health HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n") {
        ($data, $closed) = $d->raw($line, timeout => 5);
        (my $shown = $line) =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
        is(status_of($data, $closed), 400, "malformed request '$shown': 400");
    }

    my $big = 'a' x 17000;
    ($data, $closed) = $d->raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: $big\r\n\r\n", timeout => 5);
    is(status_of($data, $closed), 431, 'one 17000-byte header: 431');
    my $many = join '', map { "X-H$_: " . ('b' x 40) . "\r\n" } 1 .. 400;
    ($data, $closed) = $d->raw("GET /health HTTP/1.1\r\nHost: x\r\n$many\r\n", timeout => 5);
    is(status_of($data, $closed), 431, '400 headers, about 20 KiB in all: 431');
    ($data, $closed) = $d->raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Ok: " . ('c' x 8000) . "\r\n\r\n", timeout => 5);
    is(status_of($data, $closed), 200, 'an 8 KB header is fine');
}

# ---- body limit (--max-body 65536)
{
    my $pad = sub { my $total = shift; my $pre = '["stream.write","size-1",{"type":"T","data":{"p":"'; my $post = '"}}]';
                    return $pre . ('x' x ($total - length($pre) - length($post))) . $post };
    my $exact = $pad->(65536);
    is(length $exact, 65536, 'test body is exactly 65536 bytes');
    my ($st, $b, $h, $raw) = $d->raw_rpc($A, $exact);
    is($st, 200, 'a body of exactly --max-body is accepted') or diag(substr($raw // '', 0, 200));
    my $over = $pad->(70000);
    ($st, $b, $h, $raw) = $d->raw_rpc($A, $over);
    is($st, 413, 'a body over --max-body: 413');
    like($h->{'content-type'} // '', qr{^application/json\b}, '413 is JSON');
    is(ref $b eq 'HASH' ? obj($b)->{error}{code} : undef, 'PAYLOAD_TOO_LARGE', '413 code PAYLOAD_TOO_LARGE');
    my $req = "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\nTransfer-Encoding: chunked\r\n\r\n";
    $req .= sprintf("%x\r\n%s\r\n", 10000, 'y' x 10000) for 1 .. 8;
    $req .= "0\r\n\r\n";
    my ($data, $closed) = $d->raw($req, timeout => 5);
    is(status_of($data, $closed), 413, 'a chunked body over --max-body: 413');
    ($data, $closed) = $d->raw("POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\nContent-Length: 999999999999\r\n\r\n[", timeout => 5);
    is(status_of($data, $closed), 413, 'a huge announced Content-Length: 413 at once');
    (undef, $b) = $d->rpc($A, 'stream.get', 'size-1');
    is(scalar @{ arr($b) }, 1, 'only the accepted body was written');

    # Regression: an early answer must survive the client going on sending.
    # The server answers 413 from the headers alone and closes; a client
    # that keeps uploading used to get an RST that destroyed the 413 before
    # it was read.  The server now half-closes and drains for a moment.
    my $s = $d->connect;
    $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\n"
        . "Content-Length: 2000000\r\n\r\n" . ('z' x 200000));
    Time::HiRes::sleep(0.3);    # the 413 is sent and the server closes its side
    my $sent = 200000;
    local $SIG{PIPE} = 'IGNORE';
    for (1 .. 64) {
        my $n = syswrite($s, 'z' x 16384);
        last unless defined $n;
        $sent += $n;
    }
    my ($data2, $closed2) = $d->read_raw($s, timeout => 5);
    close $s;
    is(status_of($data2 // '', $closed2), 413, "the early 413 is still readable after uploading $sent more bytes");
}

# ---- slow clients
{
    my $s = $d->connect;
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a");
    my $t0 = time;
    my $r = $d->http('GET', '/health');
    is($r->{status}, 200, 'another client is served while a header is pending');
    ok(time - $t0 < 0.9, 'and promptly');
    my ($buf, $closed) = $d->read_raw($s, timeout => 8);
    my $el = time - $t0;
    ok($closed, 'partial header: connection closed by the server (--header-timeout 1)');
    ok($el >= 0.5 && $el <= 4 * mult(), sprintf('... after %.1f s', $el));
    close $s;

    $s = $d->connect;
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\n");
    $t0 = time;
    my $sel = IO::Select->new($s);
    my $gone = 0;
    my $i = 0;
    while (time - $t0 < 8 * mult()) {
        if (!$d->send_all($s, "X-Drip-" . $i++ . ": y\r\n")) { $gone = 1; last }    # EPIPE: closed
        if ($sel->can_read(0.3)) {
            my $n = sysread $s, my $x, 4096;
            if (!defined $n || $n == 0) { $gone = 1; last }
        }
    }
    $el = time - $t0;
    ok($gone && $el <= 4 * mult(), sprintf('header lines dripped every 0.3 s: closed after %.1f s (deadline is for the whole header)', $el));
    close $s;

    $s = $d->connect;
    $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\nContent-Length: 100\r\n\r\n[\"sys.");
    $t0 = time;
    ($buf, $closed) = $d->read_raw($s, timeout => 10);
    $el = time - $t0;
    ok($closed && $el <= 6 * mult(), sprintf('incomplete body: closed after %.1f s (--body-timeout 2)', $el));
    close $s;

    $s = $d->connect;
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    my ($resp) = $d->read_responses($s, count => 1);
    is($resp->[0]{status}, 200, 'keep-alive request answered');
    $t0 = time;
    ($buf, $closed) = $d->read_raw($s, timeout => 10);
    $el = time - $t0;
    ok($closed && $el >= 1 && $el <= 6 * mult(), sprintf('idle keep-alive connection closed after %.1f s (--idle-timeout 2)', $el));
    close $s;
}

# ---- still serving, nothing crashed
{
    is($d->http('GET', '/health')->{status}, 200, '/health after the batch');
    my ($st, $b) = $d->rpc($A, 'stream.write', 'after-1', { type => 'T', data => { ok => 1 } });
    is($st, 200, 'a real write after the batch');
    ($st, $b) = $d->rpc($A, 'stream.get', 'after-1');
    is(arr($b)->[0][4]{ok}, 1, '... and it reads back');
    ok($d->alive, 'master alive');
    is_deeply($d->worker_pids, \%workers_before, 'no worker was replaced (nothing crashed)');
    unlike($d->log_since_start, qr/worker \d+ exited/, 'no worker exit in the log');
}

done_testing;
