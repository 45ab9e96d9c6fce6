#!/usr/bin/perl
# 80-evload.t - evload, the load generator (man/evload.1): against a real
# daemon its counts agree with the database (ns.info messageCount equals
# the successful writes), the results JSON has the original's keys and
# ours, the write body has the original's shape, the error threshold
# makes it exit 1 (wrong token: 403/401, no server: connect errors),
# --rate is roughly respected, and its own HTTP parser copes with chunked,
# interim, close-delimited and Connection: close responses from a fake
# server.  Every option of --help is documented in evload(1).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use POSIX ();
use EventoTest qw(ADMIN_TOKEN json_decode make_token);

my $EVLOAD = EventoTest::tool_binary('evload');
plan skip_all => "evload not built ($EVLOAD)" unless -x $EVLOAD;

my $t = EventoTest->new;
my $dir = $t->dir;

# run evload; returns (result hash of run_cmd, decoded --json document or undef)
sub evload {
    my (@args) = @_;
    my $r = $t->run_cmd([$EVLOAD, @args], timeout => 60);
    my $doc;
    if ($r->{stdout} =~ /^\{/) {
        my ($ok, $v) = json_decode($r->{stdout});
        $doc = $v if $ok;
    }
    return ($r, $doc);
}

sub slurp { my ($f) = @_; open my $fh, '<', $f or return undef; local $/; my $s = <$fh>; close $fh; return $s }

# ---------------------------------------------------------------- CLI, man page

{
    my ($r) = evload('--help');
    is($r->{exit}, 0, '--help exits 0');
    my @opts = $r->{stdout} =~ /^\s+--([a-z][a-z-]*)/mg;
    ok(@opts >= 20, scalar(@opts) . ' options listed by --help');
    for my $o (qw(duration workers url profile-dir token streams read-every batch payload-size
                  rate json max-error-rate output pipeline mix timeout)) {
        ok((grep { $_ eq $o } @opts), "--help lists --$o");
    }
    my $man = slurp(EventoTest::top_dir() . '/man/evload.1') // '';
    for my $o (@opts) {
        like($man, qr/^\.It Fl \\-\Q$o\E\b/m, "evload(1) documents --$o");
    }
  SKIP: {
        my $mandoc = (grep { -x "$_/mandoc" } split /:/, $ENV{PATH} // '')[0];
        skip 'mandoc not installed', 1 unless $mandoc;
        my $l = $t->run_cmd(["$mandoc/mandoc", '-T', 'lint', EventoTest::top_dir() . '/man/evload.1']);
        is($l->{exit} . $l->{stdout} . $l->{stderr}, '0', 'mandoc -T lint evload.1 is clean');
    }
    ($r) = evload('--version');
    like($r->{stdout}, qr/^evload \d+\.\d+\.\d+/, '--version');
    ($r) = evload('--no-such-option');
    is($r->{exit}, 2, 'unknown option: exit 2');
    like($r->{stderr}, qr/unknown option/, 'unknown option: message');
    ($r) = evload('--duration', 'soon');
    is($r->{exit}, 2, 'bad duration: exit 2');
    ($r) = evload('--profile-dir', "$dir/does-not-exist", '--duration', '1s');
    is($r->{exit}, 2, 'missing profile directory: exit 2, before any load');
    ($r) = evload('--url', 'https://127.0.0.1:1', '--duration', '1s');
    is($r->{exit}, 2, 'https URL: exit 2');
}

# ---------------------------------------------------------------- the default load

my $d = $t->start(workers => 2);
my $url = $d->base_url;
my ($ns, $tok) = $t->fresh_ns('evl');

my @ORIG_KEYS = qw(avg_latency_ms duration_s errors ops_per_sec reads timestamp total_ops writes);
my @OUR_KEYS = qw(client_cpu_s config error_rate errors_by_kind gets latency_ms max_latency_ms mode
                  p50_latency_ms p90_latency_ms p99_latency_ms p999_latency_ms reads_per_sec
                  requests_sent tool unsent writes_per_sec);

{
    mkdir "$dir/run1" or die "mkdir: $!";
    my ($r, $doc) = evload('--url', $url, '--token', $tok, '--duration', '2s', '--workers', '4',
                           '--profile-dir', "$dir/run1", '--json');
    is($r->{exit}, 0, 'default mix against the daemon: exit 0') or diag($r->{stderr});
    ok($doc, '--json prints the results document') or diag($r->{stdout});
    $doc //= {};
    like($r->{stderr}, qr/^evload:\s+\d+s\s+writes \d+ \(\d+\/s\)\s+reads \d+/m, 'a progress line on stderr');
    like($r->{stderr}, qr/Starting load test: duration=2s, workers=4/, 'with --json the banner goes to stderr');

    my $raw = slurp("$dir/run1/load-test-results.json");
    ok(defined $raw, 'load-test-results.json written into --profile-dir');
    $raw //= '';
    my ($ok, $file) = json_decode($raw);
    ok($ok, 'results file is JSON');
    is_deeply($file, $doc, 'file and --json output are the same document');
    unlike($raw, qr/\n\z/, 'no trailing newline (as the original)');
    like($raw, qr/^\{\n  "avg_latency_ms": /, 'two-space indentation');
    my @top = $raw =~ /^  "([^"]+)":/mg;
    is_deeply(\@top, [sort @top], 'top-level keys in byte order');
    is(sprintf('%o', (stat "$dir/run1/load-test-results.json")[2] & 0777), '644', 'file mode 0644');
    ok(exists $doc->{$_}, "results have the original's key $_") for @ORIG_KEYS;
    ok(exists $doc->{$_}, "results have key $_") for @OUR_KEYS;
    for my $op (qw(all write read get)) {
        ok(exists $doc->{latency_ms}{$op}{$_}, "latency_ms.$op.$_")
            for qw(count mean p50 p90 p99 p999 max min);
    }
    ok(exists $doc->{errors_by_kind}{$_}, "errors_by_kind.$_") for qw(connect timeout closed protocol status code);

    my $w = $doc->{writes} // 0;
    my $rd = $doc->{reads} // 0;
    ok($w > 0, "writes: $w");
    ok($rd > 0, "reads: $rd");
    is($doc->{errors}, 0, 'no errors');
    is($doc->{total_ops}, $w + $rd, 'total_ops = writes + reads');
    ok(abs($rd - $w / 10) <= 4 + 1, "one read per 10 writes per worker ($w writes, $rd reads)");
    ok($doc->{duration_s} >= 2 && $doc->{duration_s} < 7, "duration_s $doc->{duration_s} covers 2 s plus the drain");
    ok(abs($doc->{ops_per_sec} - $doc->{total_ops} / $doc->{duration_s}) < 1e-6 * $doc->{ops_per_sec} + 1e-9,
       'ops_per_sec = total_ops / duration_s');
    like($doc->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)$/, 'timestamp is RFC 3339');
    is($doc->{mode}, 'closed', 'closed loop by default');
    is($doc->{config}{workers}, 4, 'config.workers');
    is($doc->{config}{streams}, 100, 'config.streams default 100');
    is($doc->{config}{read_every}, 10, 'config.read_every default 10');
    is($doc->{config}{batch}, 10, 'config.batch default 10');
    my $l = $doc->{latency_ms};
    is($l->{write}{count}, $w, 'write histogram count = writes');
    is($l->{read}{count}, $rd, 'read histogram count = reads');
    is($l->{all}{count}, $w + $rd, 'all histogram count = total_ops');
    is($l->{get}{count}, 0, 'no gets');
    ok(!defined $l->{get}{p50}, 'empty histogram: percentiles are null');
    my $a = $l->{all};
    ok($a->{min} <= $a->{p50} && $a->{p50} <= $a->{p90} && $a->{p90} <= $a->{p99}
       && $a->{p99} <= $a->{p999} && $a->{p999} <= $a->{max}, 'min <= p50 <= p90 <= p99 <= p99.9 <= max');
    ok($a->{mean} >= $a->{min} && $a->{mean} <= $a->{max}, 'mean within [min, max]');
    is($doc->{avg_latency_ms}, $a->{mean}, 'avg_latency_ms is the mean of all');
    is($doc->{p99_latency_ms}, $a->{p99}, 'p99_latency_ms is the p99 of all');

    my ($st, $info) = $d->rpc(ADMIN_TOKEN, 'ns.info', $ns);
    is($st, 200, 'ns.info');
    is($info->{messageCount}, $w, "messages in the database = evload's successful writes ($w)");

    # what the original sent
    my ($st2, $msgs) = $d->rpc($tok, 'stream.get', 'test-stream-0', { batchSize => 1 });
    is($st2, 200, 'stream.get test-stream-0');
    my $m = ref $msgs eq 'ARRAY' ? $msgs->[0] : [];
    is($m->[1], 'TestEvent', 'type TestEvent');
    my $data = $m->[4] // {};
    like($data->{counter} // '', qr/^\d{19}$/, 'data.counter: Unix time in ns (19 digits)');
    is_deeply($data->{nested}, { field1 => 'value1', field2 => 42, field3 => JSON::PP::true() },
              'data.nested');
    is($data->{payload}, 'test data for profiling with some content to make it realistic', 'data.payload');
    is_deeply($m->[5], { correlationStreamName => 'test-correlation', source => 'load-test' }, 'metadata');
    my ($st3, $cat) = $d->rpc($tok, 'category.get', 'test', { batchSize => -1 });
    is(ref $cat eq 'ARRAY' ? scalar @$cat : -1, $w, 'category test holds every write');
    my %streams = map { $_->[1] => 1 } ref $cat eq 'ARRAY' ? @$cat : ();
    ok(!(grep { !/^test-stream-(\d|[1-9]\d)$/ } keys %streams), 'only streams test-stream-0..99');
}

# ---------------------------------------------------------------- open loop, options

{
    my ($ns2, $tok2) = $t->fresh_ns('evlrate');
    my ($r, $doc) = evload('--url', $url, '--token', $tok2, '--duration', '2s', '--rate', '100',
                           '--json', '--quiet');
    is($r->{exit}, 0, '--rate 100: exit 0') or diag($r->{stderr});
    $doc //= {};
    is($doc->{mode}, 'open', 'mode open');
    is($doc->{config}{rate}, 100, 'config.rate');
    my $sent = $doc->{requests_sent} // 0;
    ok($sent >= 120 && $sent <= 202, "--rate 100 for 2 s sent $sent requests (expected about 200)");
    is(($doc->{total_ops} // 0) + ($doc->{errors} // 0), $sent, 'every sent request answered');
    unlike($r->{stderr}, qr/^evload:\s+\d+s/m, '--quiet: no progress lines');
    my (undef, $info) = $d->rpc(ADMIN_TOKEN, 'ns.info', $ns2);
    is($info->{messageCount}, $doc->{writes}, "open loop: messages in the database = writes ($doc->{writes})");
}

{
    my ($ns3, $tok3) = $t->fresh_ns('evlopt');
    my ($r, $doc) = evload('--url', $url, '--token', $tok3, '--duration', '1s', '--workers', '3',
                           '--pipeline', '4', '--mix', 'write', '--streams', '7', '--payload-size', '1000',
                           '--stream-prefix', 'opt-s', '--output', "$dir/opt.json", '--json', '--quiet');
    is($r->{exit}, 0, 'pipelined writes: exit 0') or diag($r->{stderr});
    $doc //= {};
    ok(($doc->{writes} // 0) > 0 && $doc->{reads} == 0, "--mix write: $doc->{writes} writes, no reads");
    is($doc->{errors}, 0, 'pipelined writes: the server answered each one once, with 200')
        or diag(EventoTest::json_encode($doc->{errors_by_kind}) . "\n" . $r->{stderr});
    ok(-s "$dir/opt.json", '--output writes the file');
    my (undef, $info) = $d->rpc(ADMIN_TOKEN, 'ns.info', $ns3);
    is($info->{messageCount}, $doc->{writes}, 'pipelined: messages in the database = writes');
    my (undef, $cat) = $d->rpc($tok3, 'category.get', 'opt', { batchSize => -1 });
    my %s = map { $_->[1] => 1 } ref $cat eq 'ARRAY' ? @$cat : ();
    is_deeply([sort keys %s], [map { "opt-s$_" } 0 .. 6], '--streams 7 --stream-prefix opt-s');
    is(length(($cat->[0][5] // {})->{payload} // q()), 1000, q(--payload-size 1000));

    ($r, $doc) = evload('--url', $url, '--duration', '1s', '--mix', 'version', '--pipeline', '8',
                        '--json', '--quiet');
    is($r->{exit}, 0, '--mix version: exit 0');
    ok(($doc->{gets} // 0) > 0 && $doc->{total_ops} == $doc->{gets} && $doc->{writes} == 0,
       "--mix version: $doc->{gets} gets");
}

# ---------------------------------------------------------------- errors and the threshold

{
    my $wrong = make_token($ns);    # right namespace, wrong secret
    my ($r, $doc) = evload('--url', $url, '--token', $wrong, '--duration', '1s', '--workers', '2',
                           '--output', "$dir/wrong.json", '--json', '--quiet');
    is($r->{exit}, 1, 'wrong token: exit 1');
    like($r->{stderr}, qr/no request succeeded|error rate/, 'wrong token: says why');
    $doc //= {};
    ok($doc->{errors} > 0, "wrong token: $doc->{errors} errors");
    is($doc->{total_ops}, 0, 'wrong token: no successful request');
    ok(!exists $doc->{avg_latency_ms}, 'avg_latency_ms absent when total_ops is 0 (as the original)');
    is($doc->{errors_by_kind}{status}{403}, $doc->{errors}, 'errors by status: all 403');
    is($doc->{errors_by_kind}{code}{AUTH_UNAUTHORIZED}, $doc->{errors}, 'errors by code: AUTH_UNAUTHORIZED');
    ok(-s "$dir/wrong.json", 'results written even when the run failed');

    ($r, $doc) = evload('--url', $url, '--token', 'not-a-token', '--duration', '1s', '--json', '--quiet',
                        '--max-error-rate', '100');
    is($r->{exit}, 1, 'unparseable token: exit 1 even with --max-error-rate 100 (nothing succeeded)');
    is(($doc // {})->{errors_by_kind}{code}{AUTH_INVALID_TOKEN}, $doc->{errors}, 'errors by code: AUTH_INVALID_TOKEN');
    is($doc->{errors_by_kind}{status}{401}, $doc->{errors}, 'errors by status: 401');

    my $port = EventoTest::free_port();
    ($r, $doc) = evload('--url', "http://127.0.0.1:$port", '--duration', '1s', '--json', '--quiet');
    is($r->{exit}, 1, 'no server: exit 1');
    ok(($doc // {})->{errors_by_kind}{connect} > 0, "no server: $doc->{errors_by_kind}{connect} connect errors");
}

# Error threshold with partial failure: a fake server answering every 4th
# request with a 500 gives a 25 % error rate.
sub fake_server {
    my ($handler) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16,
                                  ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP ALRM);
        alarm 60;
        my $n = 0;
        while (my $c = $l->accept) {
            binmode $c;
            my $buf = '';
            my $open = 1;
            while ($open) {
                my $got = sysread $c, $buf, 65536, length $buf;
                last unless $got;
                while ((my $e = index $buf, "\r\n\r\n") >= 0) {
                    my $head = substr $buf, 0, $e + 4, '';
                    my ($cl) = $head =~ /^Content-Length:\s*(\d+)/mi;
                    if ($cl) {
                        while (length $buf < $cl) { sysread($c, $buf, 65536, length $buf) or last }
                        substr $buf, 0, $cl, '';
                    }
                    my ($out, $close) = $handler->($n++);
                    print $c $out;
                    if ($close) { $open = 0; last }
                }
            }
            close $c;
        }
        POSIX::_exit(0);
    }
    my $port = $l->sockport;
    close $l;
    return ($pid, $port);
}

sub stop_fake { my ($pid) = @_; kill 'TERM', $pid; waitpid $pid, 0 }

{
    my ($pid, $port) = fake_server(sub {
        my ($n) = @_;
        return $n % 4 == 3
            ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 56\r\n\r\n"
              . '{"error":{"code":"BACKEND_ERROR","message":"fake 500!"}}'
            : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
    });
    my ($r, $doc) = evload('--url', "http://127.0.0.1:$port", '--workers', '1', '--duration', '1s',
                           '--json', '--quiet');
    is($r->{exit}, 1, '25 % errors, default limit 1 %: exit 1');
    $doc //= {};
    ok($doc->{total_ops} > 0 && $doc->{errors} > 0, "partial failure: $doc->{total_ops} ok, $doc->{errors} errors");
    ok(abs($doc->{error_rate} - 0.25) < 0.01, "error_rate $doc->{error_rate} is about 0.25");
    is($doc->{errors_by_kind}{code}{BACKEND_ERROR}, $doc->{errors}, 'code counted from the 500 body');
    ($r) = evload('--url', "http://127.0.0.1:$port", '--workers', '1', '--duration', '1s', '--quiet',
                  '--max-error-rate', '30%');
    is($r->{exit}, 0, '25 % errors with --max-error-rate 30%: exit 0');
    stop_fake($pid);
}

# ---------------------------------------------------------------- the response parser

{
    my @forms = (
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"ve\r\nB\r\nrsion\":\"1\"}\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n[1]",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until the connection closes",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    );
    my ($pid, $port) = fake_server(sub {
        my ($n) = @_;
        my $f = $forms[$n % @forms];
        my $close = $f =~ /Connection: close|^HTTP\/1\.0/ ? 1 : 0;
        return ($f, $close);
    });
    my ($r, $doc) = evload('--url', "http://127.0.0.1:$port", '--mix', 'version', '--workers', '2',
                           '--duration', '1s', '--json', '--quiet', '--max-error-rate', '50');
    $doc //= {};
    is($r->{exit}, 0, 'chunked, interim, 204, close-delimited and HTTP/1.0 responses: exit 0')
        or diag($r->{stdout} . $r->{stderr});
    ok($doc->{gets} >= scalar @forms, "fake server: $doc->{gets} responses parsed");
    # Only 200 is a success (as in the original): the 204s are the only errors.
    ok($doc->{errors} > 0, "fake server: $doc->{errors} errors");
    is($doc->{errors_by_kind}{status}{204}, $doc->{errors}, 'fake server: every error is a 204, framing intact');
    my $per = ($doc->{gets} + $doc->{errors}) / @forms;
    ok(abs($doc->{errors} - $per) <= 2 * 2, 'fake server: one 204 in ' . scalar(@forms) . ' responses');
    stop_fake($pid);

    ($pid, $port) = fake_server(sub { return ("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", 1) });
    ($r, $doc) = evload('--url', "http://127.0.0.1:$port", '--mix', 'version', '--workers', '1',
                        '--duration', '1s', '--json', '--quiet');
    is($r->{exit}, 1, 'malformed responses: exit 1');
    ok(($doc // {})->{errors_by_kind}{protocol} > 0, 'malformed responses count as protocol errors');
    stop_fake($pid);
}

{
    # A server that never answers: requests time out.
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64,
                                  ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
    my ($r, $doc) = evload('--url', 'http://127.0.0.1:' . $l->sockport, '--workers', '2',
                           '--duration', '1s', '--timeout', '300ms', '--json', '--quiet');
    is($r->{exit}, 1, 'silent server: exit 1');
    ok(($doc // {})->{errors_by_kind}{timeout} >= 2, "silent server: $doc->{errors_by_kind}{timeout} timeouts");
    ok($doc->{duration_s} < 3, 'the drain is bounded by --timeout');
    close $l;
}

done_testing;
