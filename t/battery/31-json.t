#!/usr/bin/perl
# 31-json.t - battery rows T20 (JSON conformance) and T21 (amplification
# poison) (../shared/ref/reliability-security.md 3.3, 3.4 and 6.3;
# decisions.md 4 and 5).
#
# Each input of the json-c table is sent as stream.write data and inside
# an envelope; the answer must be the documented one: 400
# INVALID_REQUEST for what decisions.md 5 rejects, 200 for the rest, with
# numbers read back exactly as sent (data is stored from its raw text),
# and never a 500.  The large inputs (1 MB string, 100k-element array, 10k
# keys) are timed through a request that parses its whole body.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN battery battery_full mult arr obj);

my $t = EventoTest->new;
my $d = $t->start(workers => 1);
my $A = ADMIN_TOKEN;
my %workers_before = %{ $d->worker_pids };
my $RUN = sprintf '%x%x', time, $$;
my $n500 = 0;

sub loadavg { open my $f, '<', '/proc/loadavg' or return 0; my ($l) = split ' ', scalar <$f>; return $l }
sub ncpu { my $n = () = do { open my $f, '<', '/proc/cpuinfo' or return 1; grep { /^processor\s*:/ } <$f> }; $n || 1 }
sub overloaded { loadavg() > 2 * ncpu() }
sub status_kb {
    my ($pid, $key) = @_;
    open my $f, '<', "/proc/$pid/status" or return undef;
    while (my $l = <$f>) { return $1 + 0 if $l =~ /^$key:\s+(\d+)/ }
    return undef;
}

my $NS = 0;
# write(value_text) -> (status, raw body, stream)
sub write_data {
    my ($x) = @_;
    my $stream = "json$RUN-" . ++$NS;
    my ($st, undef, undef, $raw) = $d->raw_rpc($A, qq{["stream.write","$stream",{"type":"T","data":{"v":$x}}]});
    $n500++ if ($st // 0) >= 500;
    return ($st, $raw // '', $stream);
}
sub envelope {
    my ($x) = @_;
    # the same depth as in stream.write data: [ [ { "v": X
    my ($st, undef, undef, $raw) = $d->raw_rpc($A, qq{["sys.version",[{"v":$x}]]});
    $n500++ if ($st // 0) >= 500;
    return ($st, $raw // '');
}
# The stored data of the only message of $stream, as raw JSON text.
sub read_raw_data {
    my ($stream) = @_;
    my ($st, $b, undef, $raw) = $d->raw_rpc($A, qq{["stream.get","$stream"]});
    $n500++ if ($st // 0) >= 500;
    return $st == 200 ? $raw : undef;
}

# [name, value text, expect (400 or 200), check-on-read regexp (optional)]
my @cases = (
    ['depth 32', ('[' x 32) . (']' x 32), 200],
    ['depth 33', ('[' x 33) . (']' x 33), 200],
    ['total depth 64', ('[' x 61) . (']' x 61), 200],
    ['total depth 65', ('[' x 62) . (']' x 62), 400],
    ['single quotes', q{{'a':1}}, 400],
    ['single-quoted string', q{'x'}, 400],
    ['NaN', 'NaN', 400],
    ['Infinity', 'Infinity', 400],
    ['-Infinity', '-Infinity', 400],
    ['raw tab in a string', qq{"a\tb"}, 400],
    ['raw newline in a string', qq{"a\nb"}, 400],
    ['raw 0x1f in a string', qq{"a\x1fb"}, 400],
    ['raw NUL in a string', qq{"a\x00b"}, 400],
    ['invalid UTF-8 \xff\xfe', qq{"\xff\xfe"}, 400],
    ['overlong UTF-8', qq{"\xc0\xaf"}, 400],
    ['UTF-8 encoded surrogate', qq{"\xed\xa0\x80"}, 400],
    ['lone \ud800', '"\ud800"', 400],
    ['lone \udc00', '"\udc00"', 400],
    ['\ud800 followed by a non-surrogate', '"\ud800\u0041"', 400],
    ['\u0000', '"a\u0000b"', 400],
    ['valid pair \ud83d\ude00', '"\ud83d\ude00"', 200, qr/"v":\s*"\x{f0}\x{9f}\x{98}\x{80}"/],
    ['1e400', '1e400', 400],
    ['-1e400', '-1e400', 400],
    ['1e131071', '1e131071', 400],
    ['1e-16384 (beyond PostgreSQL numeric)', '1e-16384', 400],
    ['0.<16384 digits> (beyond PostgreSQL numeric)', '0.' . ('1' x 16384), 400],
    ['1.<20000 zeros>e300', '1.' . ('0' x 20000) . 'e300', 400],
    ['1e308', '1e308', 200, qr/"v":\s*1${\ ('0' x 308)}\b/],
    ['-1e308', '-1e308', 200, qr/"v":\s*-1${\ ('0' x 308)}\b/],
    ['1e-400', '1e-400', 200, qr/"v":\s*0\.${\ ('0' x 399)}1\b/],
    ['20-digit integer 2^64', '18446744073709551616', 200, qr/"v":\s*18446744073709551616\b/],
    ['30-digit integer', '123456789012345678901234567890', 200, qr/"v":\s*123456789012345678901234567890\b/],
    ['-30-digit integer', '-123456789012345678901234567890', 200, qr/"v":\s*-123456789012345678901234567890\b/],
    ['300-digit integer', '9' x 300, 200, qr/"v":\s*${\ ('9' x 300)}\b/],
    ['37-digit decimal', '3.141592653589793238462643383279502884', 200,
        qr/"v":\s*3\.141592653589793238462643383279502884\b/],
    ['duplicate keys', '{"a":1,"a":2}', 200, qr/"v":\s*\{"a":\s*2\}/],
    ['trailing comma', '[1,]', 400],
    ['comment', '/*c*/1', 400],
    ['leading zero', '01', 400],
    ['hex number', '0x10', 400],
);

my (%bad, $good_cases) = ();
my ($rows_ok, $rows) = (0, 0);
for my $c (@cases) {
    my ($name, $x, $want, $check) = @$c;
    my ($st, $raw, $stream) = write_data($x);
    my $ok = ($st // 0) == $want;
    ok($ok, "data $name: $want") or diag("got $st: " . substr($raw, 0, 300));
    if ($ok && $want == 400) {
        like($raw, qr/"code":"INVALID_REQUEST"/, "data $name: INVALID_REQUEST");
    }
    if ($want == 400) {
        my $exists = (read_raw_data($stream) // '') =~ /\[\[/;
        ok(!$exists, "data $name: nothing stored");
        $ok &&= !$exists;
    } elsif ($ok && $check) {
        my $got = read_raw_data($stream) // '';
        my $same = $got =~ $check;
        ok($same, "data $name: read back exactly") or diag(substr($got, 0, 300));
        $ok &&= $same;
    }
    my ($est, $eraw) = envelope($x);
    my $eok = ($est // 0) == $want;
    ok($eok, "envelope $name: $want") or diag("got $est: " . substr($eraw, 0, 300));
    $bad{$name} = "data $st, envelope $est" unless $ok && $eok;
    $rows++;
    $rows_ok++ if $ok && $eok;
}

# ---- the same inputs as /import NDJSON lines: an error event naming
# line 1 (never a 5xx, nothing stored) or, for what is accepted, done.
# The value sits at the same depth as above: {"data":{"v":[X]}}.
my $IMPN = 0;
my ($imp_ok, $imp_n, %imp_bad) = (0, 0);
for my $c (@cases) {
    my ($name, $x, $want) = @$c;
    next if length $x > 100_000;
    $IMPN++;
    my $stream = "ndjson$RUN-$IMPN";
    my $line = qq({"id":"0190c000-0000-7000-8000-) . sprintf('%012x', $IMPN) . qq(","stream":"$stream","type":"T",)
             . qq("pos":0,"gpos":) . (5_000_000 + $IMPN) . qq(,"data":{"v":[$x]},"meta":null,"time":"2025-07-15T10:00:00Z"}\n);
    my $r = $d->http('POST', '/import', token => $A, content => $line,
                     headers => { 'content-type' => 'application/x-ndjson' });
    $n500++ if ($r->{status} // 0) >= 500;
    my $body = $r->{content} // '';
    my $ok = ($r->{status} // 0) == 200 && ($want == 200 ? $body =~ /"done":true,"imported":1\b/
                                                         : $body =~ /"error":"[A-Z_]+".*"line":1\b/s && $body !~ /"done"/);
    if ($want == 400) {
        my $stored = (read_raw_data($stream) // '') =~ /\[\[/;
        $ok &&= !$stored;
    }
    ok($ok, "import line $name: " . ($want == 200 ? 'imported' : 'error event for line 1')) or diag(substr($body, 0, 300));
    $imp_n++;
    $imp_ok++ if $ok;
    $imp_bad{$name} = substr($body, 0, 80) unless $ok;
}

# Envelope-only rows: trailing data after the top-level value.
for my $c (['trailing junk', '["sys.version"] xyz', 400], ['two values', '["sys.version"]["sys.version"]', 400],
           ['trailing NUL', "[\"sys.version\"]\x00", 400], ['trailing whitespace', "[\"sys.version\"] \r\n\t", 200]) {
    my ($name, $body, $want) = @$c;
    my ($st, undef, undef, $raw) = $d->raw_rpc($A, $body);
    $n500++ if ($st // 0) >= 500;
    my $ok = ($st // 0) == $want;
    ok($ok, "envelope $name: $want") or diag("got $st: $raw");
    $bad{$name} = "got $st" unless $ok;
    $rows++;
    $rows_ok++ if $ok;
}

# ---- large inputs: accepted, stored, parse time measured through a
# request that parses the whole body and does nothing else (sys.version
# with the input as an argument), RSS through the worker's VmHWM.
my ($wpid) = values %{ $d->worker_pids };
my @large = (
    ['1 MB string', '"' . ('s' x 1_000_000) . '"'],
    ['100k-element array', '[' . join(',', (7) x 100_000) . ']'],
    ['10k keys', '{' . join(',', map { qq{"k$_":$_} } 1 .. 10_000) . '}'],
);
my (@lat, $worst_ms, $worst_rss);
$worst_ms = 0;
$worst_rss = 0;
for my $c (@large) {
    my ($name, $x) = @$c;
    my $len = length $x;
    # stored and read back whole
    my ($st, $raw, $stream) = write_data($x);
    is($st, 200, "$name: stored") or diag(substr($raw, 0, 200));
    my $back = read_raw_data($stream) // '';
    my $okback = length($back) >= $len && length($back) < 3 * $len + 1000;
    ok($okback, sprintf '%s: read back (%d bytes)', $name, length $back);
    $rows++;
    $rows_ok++ if $st == 200 && $okback;
    $bad{$name} = "stored $st" unless $st == 200 && $okback;
    # Parse timing: the body is sent but its last byte, then the clock runs
    # from the last byte to the answer (a request that parses the whole
    # body and does nothing else); best of 5, the machine being shared.
    my $hwm0 = status_kb($wpid, 'VmHWM') // 0;
    my $best = 1e9;
    my $body = qq{["sys.version",[{"v":$x}]]};
    my $s = $d->connect;
    for my $i (1 .. 5) {
        $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A\r\nContent-Length: "
                         . length($body) . "\r\n\r\n" . substr($body, 0, -1));
        Time::HiRes::sleep(0.5);    # let the server take in the rest: only the answer is timed
        my $t0 = time;
        $d->send_all($s, substr($body, -1));
        my ($r) = $d->read_responses($s, count => 1, timeout => 10);
        my $ms = (time - $t0) * 1000;
        $best = $ms if $ms < $best;
        is($r->[0]{status}, 200, "$name: parsed in an envelope") if $i == 1;
    }
    close $s;
    my $hwm1 = status_kb($wpid, 'VmHWM') // 0;
    my $grow = ($hwm1 - $hwm0) * 1024;
    push @lat, sprintf '%s %.0f ms', $name, $best;
    $worst_ms = $best if $best > $worst_ms;
    $worst_rss = $grow / $len if $grow / $len > $worst_rss;
}

my $time_ok = $worst_ms < 50;
my $load = loadavg();
my $time_note = !$time_ok && overloaded() ? " (machine overloaded: load $load; timing not judged)" : '';
battery('T20', 'JSON conformance (data, envelopes, NDJSON lines; depth limit 64 per decisions.md 5)',
        sprintf('%d/%d inputs answered as documented%s; NDJSON lines %d/%d%s; %d x 5xx; numbers read back exactly; '
                . 'large inputs, last body byte to answer (best of 5): %s; worker peak RSS growth %.1fx input%s',
                $rows_ok, $rows, (%bad ? ' (wrong: ' . join('; ', map { "$_: $bad{$_}" } sort keys %bad) . ')' : ''),
                $imp_ok, $imp_n, (%imp_bad ? ' (wrong: ' . join('; ', sort keys %imp_bad) . ')' : ''), $n500, join(', ', @lat), $worst_rss, $time_note),
        'documented 400s; 0 x 500; numbers exact; large-input parse < 50 ms, < 8x input in RSS',
        $rows_ok == $rows && $imp_ok == $imp_n && $n500 == 0 && $worst_rss < 8 && ($time_ok || $time_note));

# ---- T21: amplification poison
{
    my $cat = "poison$RUN";
    my $ok_before = 0;
    for my $i (1 .. 3) {
        my ($st) = $d->raw_rpc($A, qq{["stream.write","$cat-$i",{"type":"T","data":{"i":$i}}]});
        $ok_before++ if $st == 200;
    }
    my @poison = (
        ['1e131071 x 9000', '{"x":[' . join(',', ('1e131071') x 9000) . ']}'],
        ['1e308 x 9000', '{"x":[' . join(',', ('1e308') x 9000) . ']}'],
        ['1e-16383 x 9000', '{"x":[' . join(',', ('1e-16383') x 9000) . ']}'],
        ['1e-400 x 9000', '{"x":[' . join(',', ('1e-400') x 9000) . ']}'],
    );
    my @fig;
    my $all_ok = 1;
    for my $p (@poison) {
        my ($name, $data) = @$p;
        my ($st, undef, undef, $raw) = $d->raw_rpc($A, qq{["stream.write","$cat-p",{"type":"Poison","data":$data}]});
        $n500++ if ($st // 0) >= 500;
        my $t0 = time;
        my ($gst, $gb, undef, $graw) = $d->raw_rpc($A, qq{["category.get","$cat"]});
        my $ms = (time - $t0) * 1000;
        my $readable = $gst == 200 && ref $gb eq 'ARRAY';
        my $ok = ($st == 400 || $st == 200) && $readable;
        $all_ok &&= $ok;
        ok($ok, "$name: write $st, category.get $gst") or diag(substr($raw // '', 0, 200));
        push @fig, sprintf '%s: write %d, category.get %d in %.0f ms (%.1f MB)', $name, $st, $gst, $ms,
            length($graw // '') / 1e6;
    }
    my ($gst, $gb) = $d->raw_rpc($A, qq{["category.get","$cat"]});
    my $n = scalar @{ arr($gb) };
    ok($gst == 200 && $n >= 3, "category still readable: $n messages");
    battery('T21', 'amplification poison {"x":[1e131071 x 9000]} and relatives', join('; ', @fig)
            . "; category readable ($n messages)",
            'write rejected with 400 (or stored and every read still succeeds); category stays readable',
            $all_ok && $gst == 200 && $n >= 3);
}

# ---- nothing crashed
is($n500, 0, 'no 5xx answer in this file');
ok($d->alive, 'master alive');
is_deeply($d->worker_pids, \%workers_before, 'no worker was replaced');

done_testing;
