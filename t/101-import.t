#!/usr/bin/perl
# 101-import.t - POST /import (api.md 10, decisions.md 8): records stored
# with their global positions, ids, data and exact times; the sequence
# moved to max(current, imported); progress streamed as batches commit
# (before the body is complete); error events with their code, message
# and the line that caused them; earlier batches kept, the failing one
# not; force; auth; memory bounded while a large body streams in.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN json_encode json_decode mult);

my $t = EventoTest->new;
my $d = $t->start(workers => 2);

sub uuid { sprintf '00000000-0000-4000-8000-%012d', $_[0] }
sub rec {
    my (%o) = @_;
    my %r = (id => uuid($o{n} // 1), stream => 'order-1', type => 'T', pos => 0, gpos => 1,
             data => { n => 1 }, meta => undef, time => '2025-07-15T10:00:00Z', %o);
    delete $r{n};
    return json_encode(\%r) . "\n";
}
sub import_ {
    my ($tok, $body, %o) = @_;
    my $r = $d->http('POST', '/import' . ($o{force} ? '?force=true' : ''), token => $tok,
                     content => $body, headers => { 'content-type' => 'application/x-ndjson' });
    my @ev;
    for my $l (split /\n/, $r->{content} // '') {
        next unless $l =~ /^data: (.*)$/;
        my ($ok, $v) = json_decode($1);
        push @ev, $ok ? $v : { bad => $1 };
    }
    return ($r, @ev);
}
sub get_all {
    my ($tok) = @_;
    my ($st, $b) = $d->rpc($tok, 'category.get', '', { batchSize => -1 });
    return $b;
}

# ---- the api.md 15.1 transcript
{
    my (undef, $T) = $t->fresh_ns('imp');
    my $body = qq({"id":"550e8400-e29b-41d4-a716-446655440000","stream":"order-1","type":"Created","pos":0,"gpos":47,"data":{"n":1},"meta":null,"time":"2025-07-15T10:00:00Z"}\n)
             . qq({"id":"550e8400-e29b-41d4-a716-446655440001","stream":"order-1","type":"Updated","pos":1,"gpos":52,"data":{"n":2},"meta":{"correlationStreamName":"x-1"},"time":"2025-07-15T10:01:00.123456+02:00"}\n);
    my ($r, @ev) = import_($T, $body);
    is($r->{status}, 200, 'status 200');
    is($r->{headers}{'content-type'}, 'text/event-stream', 'text/event-stream');
    is($r->{headers}{'cache-control'}, 'no-cache', 'Cache-Control: no-cache');
    is($r->{headers}{'x-accel-buffering'}, 'no', 'X-Accel-Buffering: no');
    is_deeply(\@ev, [{ done => JSON::PP::true(), imported => 2, elapsed => '0.0s' }], 'one done event')
        or diag($r->{content});
    like($r->{content}, qr/^data: \{"done":true,"imported":2,"elapsed":"\d+\.\ds"\}\n\n\z/, 'exact framing');
    my ($st, $m) = $d->rpc($T, 'stream.get', 'order-1');
    is_deeply([map { [@$_[0 .. 5]] } @$m], [
        ['550e8400-e29b-41d4-a716-446655440000', 'Created', 0, 47, { n => 1 }, undef],
        ['550e8400-e29b-41d4-a716-446655440001', 'Updated', 1, 52, { n => 2 }, { correlationStreamName => 'x-1' }],
    ], 'ids, types, positions, global positions, data and metadata kept');
    is($m->[0][6], '2025-07-15T10:00:00Z', 'time kept');
    is($m->[1][6], '2025-07-15T08:01:00.123456Z', 'offset normalised to UTC, microseconds kept');
    my (undef, $w) = $d->rpc($T, 'stream.write', 'order-1', { type => 'Next', data => {} });
    is_deeply($w, { position => 2, globalPosition => 53 }, 'the next write continues after the imported positions');
    ($r, @ev) = import_($T, rec(n => 9, stream => 'low-1', gpos => 10));
    ok($ev[-1]{done}, 'a sparse import below existing positions');
    (undef, $w) = $d->rpc($T, 'stream.write', 'order-1', { type => 'Next', data => {} });
    is($w->{globalPosition}, 54, 'does not move the sequence back (max of current and imported)');
    ($r, @ev) = import_($T, '');
    is_deeply(\@ev, [{ done => JSON::PP::true(), imported => 0, elapsed => '0.0s' }], 'empty body: done, 0');
}

# ---- batches: progress per committed batch, error keeps earlier batches
{
    my (undef, $T) = $t->fresh_ns('imp');
    my $body = join '', map { rec(n => $_, stream => 'b-' . ($_ % 10), pos => int($_ / 10), gpos => $_) } 1 .. 2500;
    my ($r, @ev) = import_($T, $body);
    is_deeply([map { [$_->{imported}, $_->{gpos}] } @ev[0, 1]], [[1000, 1000], [2000, 2000]], 'progress after each batch of 1000');
    ok($ev[2]{done} && $ev[2]{imported} == 2500, 'then done with 2500');
    is(scalar @{ get_all($T) }, 2500, '2500 stored');

    my (undef, $T2) = $t->fresh_ns('imp');
    $body = join '', map { rec(n => $_, gpos => $_, pos => $_) } 1 .. 1500;
    $body .= "{not json\n";
    $body .= join '', map { rec(n => $_, gpos => $_, pos => $_) } 1502 .. 1600;
    ($r, @ev) = import_($T2, $body);
    is($ev[0]{imported}, 1000, 'progress for the first batch');
    is($ev[-1]{error}, 'INVALID_JSON', 'then INVALID_JSON');
    is($ev[-1]{line}, 1501, 'naming line 1501');
    like($ev[-1]{message}, qr/^malformed JSON at line 1501: /, 'message format');
    ok(!grep({ $_->{done} } @ev), 'no done event after an error');
    is(scalar @{ get_all($T2) }, 1000, 'the committed batch stays, the failing one is not inserted');
}

# ---- every error code, with the offending line
{
    my (undef, $T) = $t->fresh_ns('imp');
    import_($T, rec(n => 1, gpos => 5, pos => 0, stream => 'e-1'));
    my @cases = (
        ['INVALID_JSON', 3, qr/^malformed JSON at line 3: /, rec(n => 10, gpos => 10) . "\n[1,2]\n"],
        ['INVALID_JSON', 2, qr/Record\.pos of type int64/, rec(n => 10, gpos => 10) . rec(n => 11, gpos => 11, pos => 1.5)],
        ['INVALID_JSON', 1, qr/Record\.data/, rec(n => 10, gpos => 10, data => [1])],
        ['INVALID_JSON', 1, qr/Record\.stream of type string/, rec(n => 10, gpos => 10, stream => 5)],
        ['INVALID_RECORD', 2, qr/^invalid record at line 2: invalid time format: /, rec(n => 10, gpos => 10) . rec(n => 11, gpos => 11, time => '2025-13-01T00:00:00Z')],
        ['INVALID_RECORD', 1, qr/invalid time format/, rec(n => 10, gpos => 10, time => '2025-07-15 10:00:00')],
        ['INVALID_RECORD', 1, qr/invalid time format/, do { my $x = rec(n => 10, gpos => 10); $x =~ s/,"time":"[^"]*"//; $x }],
        ['IMPORT_FAILED', 2, qr/uuid/, rec(n => 10, gpos => 10) . rec(id => 'not-a-uuid', gpos => 11)],
        ['IMPORT_FAILED', 1, qr/global position/, rec(n => 10, gpos => 0)],
        ['POSITION_EXISTS', 3, qr/^global position already exists: 5$/, join('', map { rec(n => 20 + $_, gpos => [6, 7, 5, 8, 9]->[$_], pos => $_, stream => 'e-2') } 0 .. 4)],
        ['POSITION_EXISTS', 2, qr/^global position already exists: 31$/, rec(n => 30, gpos => 30, stream => 'e-3') . rec(n => 1, gpos => 31, stream => 'e-4') . rec(n => 32, gpos => 32, stream => 'e-5')],
        ['POSITION_EXISTS', 2, qr/^global position already exists: 41$/, rec(n => 40, gpos => 40, stream => 'e-6') . rec(n => 41, gpos => 41, stream => 'e-1', pos => 0)],
        ['READ_ERROR', 2, qr/^error reading input: /, rec(n => 50, gpos => 50) . '{"data":"' . ('x' x (1024 * 1024 + 10)) . "\"}\n"],
    );
    for my $c (@cases) {
        my ($code, $line, $re, $body) = @$c;
        my ($r, @ev) = import_($T, $body);
        my $e = $ev[-1] // {};
        is($e->{error}, $code, "$code") or diag($r->{content});
        is($e->{line}, $line, "  at line $line");
        like($e->{message} // '', $re, "  message " . ($e->{message} // ''));
    }
    is(scalar @{ get_all($T) }, 1, 'nothing from the failing batches was stored');
    my ($r, @ev) = import_($T, "\n  \n" . (rec(n => 60, gpos => 60) =~ s/\n\z//r) . "\r\n\n{oops}\n");
    is($ev[-1]{line}, 5, 'blank lines are skipped but counted; CRLF accepted');
}

# ---- force clears the namespace and restarts the sequence
{
    my (undef, $T) = $t->fresh_ns('imp');
    $d->rpc($T, 'stream.write', "f-$_", { type => 'T', data => {} }) for 1 .. 3;
    my ($r, @ev) = import_($T, rec(n => 1, gpos => 1, stream => 'g-1'), force => 1);
    ok($ev[-1]{done}, 'force import done');
    my $all = get_all($T);
    is_deeply([map { $_->[1] } @$all], ['g-1'], 'old messages gone');
    my (undef, $w) = $d->rpc($T, 'stream.write', 'g-1', { type => 'T', data => {} });
    is($w->{globalPosition}, 2, 'sequence restarted');
    ($r, @ev) = import_($T, rec(n => 1, gpos => 1, stream => 'g-1'), force => 0);
    is($ev[-1]{error}, 'POSITION_EXISTS', 'without force the same import conflicts');
}

# ---- auth
{
    my $r = $d->http('POST', '/import', content => rec());
    is($r->{status}, 401, 'no token: 401');
    is($r->{json}{error}{code}, 'AUTH_REQUIRED', 'AUTH_REQUIRED as JSON');
    $r = $d->http('POST', '/import', token => EventoTest::make_token('default'), content => rec());
    is($r->{status}, 403, 'wrong token: 403');
    my (undef, $T) = $t->fresh_ns('imp');
    $r = $d->http('POST', '/import?token=' . $T, content => rec());
    like($r->{content}, qr/"done":true/, 'token in the query string');
}

# ---- streamed: progress arrives before the body is complete; keep-alive after
{
    my (undef, $T) = $t->fresh_ns('imp');
    my $s = $d->connect;
    $d->send_all($s, "POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\n"
        . "Transfer-Encoding: chunked\r\n\r\n");
    my $first = join '', map { rec(n => $_, gpos => $_, pos => $_ - 1) } 1 .. 1200;
    $d->send_all($s, sprintf("%x\r\n%s\r\n", length $first, $first));
    my ($buf) = $d->read_raw($s, until => qr/"imported":1000/, timeout => 10);
    like($buf, qr/^HTTP\/1.1 200/, 'headers before the end of the body');
    like($buf, qr/data: \{"imported":1000,"gpos":1000\}/, 'first progress event before the body is complete');
    my $rest = join '', map { rec(n => $_, gpos => $_, pos => $_ - 1) } 1201 .. 1300;
    $d->send_all($s, sprintf("%x\r\n%s\r\n0\r\n\r\n", length $rest, $rest));
    my ($buf2) = $d->read_raw($s, until => qr/"done":true.*\r\n0\r\n\r\n/s, timeout => 10);
    like($buf2, qr/"done":true,"imported":1300/, 'done after the rest');
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    my ($resp) = $d->read_responses($s, count => 1, timeout => 5);
    is($resp->[0]{status}, 200, 'the connection is reusable after the import');
    close $s;

    # An error before the body ends: the rest is skipped, the connection stays in sync.
    $s = $d->connect;
    my $bad = "{bad\n" . join('', map { rec(n => 5000 + $_, gpos => 5000 + $_) } 1 .. 3000);
    $d->send_all($s, "POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Length: "
        . length($bad) . "\r\n\r\n$bad");
    ($buf) = $d->read_raw($s, until => qr/INVALID_JSON.*\r\n0\r\n\r\n/s, timeout => 10);
    like($buf, qr/"error":"INVALID_JSON".*"line":1/s, 'error event at line 1');
    $d->send_all($s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    ($resp) = $d->read_responses($s, count => 1, timeout => 5);
    is($resp->[0]{status}, 200, 'the rest of the body was skipped; next request answered');
    close $s;
}

# ---- memory stays bounded while a large body streams in
{
    my (undef, $T) = $t->fresh_ns('imp');
    my %w = %{ $d->worker_pids };
    my $rss = sub {
        my $kb = 0;
        for my $pid (values %w) {
            open my $f, '<', "/proc/$pid/status" or next;
            while (my $l = <$f>) { $kb += $1 if $l =~ /^VmRSS:\s+(\d+)/ }
        }
        return $kb;
    };
    my $before = $rss->();
    my $s = $d->connect;
    $d->send_all($s, "POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nTransfer-Encoding: chunked\r\n\r\n");
    my $pad = 'p' x 400;
    my ($n, $peak, $bytes) = (0, 0, 0);
    for my $chunk (1 .. 60) {
        my $body = join '', map { $n++; qq({"id":") . uuid(100000 + $n) . qq(","stream":"m-) . ($n % 100) . qq(","type":"T","pos":) . int($n / 100) . qq(,"gpos":$n,"data":{"p":"$pad"},"meta":null,"time":"2025-01-01T00:00:00.5Z"}\n) } 1 .. 1000;
        $bytes += length $body;
        $d->send_all($s, sprintf("%x\r\n%s\r\n", length $body, $body));
        my $r = $rss->();
        $peak = $r if $r > $peak;
    }
    $d->send_all($s, "0\r\n\r\n");
    my ($buf) = $d->read_raw($s, until => qr/"done":true/, timeout => 60);
    like($buf, qr/"done":true,"imported":60000/, sprintf 'imported 60000 records (%.0f MiB)', $bytes / 1048576);
    my $grow = ($peak - $before) / 1024;
    cmp_ok($grow, '<', 24, sprintf 'workers grew by %.1f MiB at most while %.0f MiB streamed through', $grow, $bytes / 1048576);
    close $s;
}

done_testing;
