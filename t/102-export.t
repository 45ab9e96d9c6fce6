#!/usr/bin/perl
# 102-export.t - `eventodbd export` and `eventodbd import` (api.md 11.3-11.4,
# decisions.md 8): export then import into an empty namespace gives back
# every message with the same id, stream, type, positions, data, metadata
# and time to the microsecond; gzip both ways; --categories, --since,
# --until; the original's flags, messages and exit codes; --force asks.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN json_encode json_decode);

my $t = EventoTest->new;
my $d = $t->start(workers => 2);
my $url = $d->base_url;
my $dir = $t->dir;
my (undef, $A) = $t->fresh_ns('exp');

sub run { my ($args, %o) = @_; return $t->run_eventodbd($args, timeout => 60, %o) }
sub all_msgs {
    my ($tok) = @_;
    my ($st, $b) = $d->rpc($tok, 'category.get', '', { batchSize => -1 });
    return $b;
}
sub W {
    my ($stream, $data, $meta) = @_;
    my ($st, $b, undef, $raw) = $d->rpc_ka($A, 'stream.write', $stream,
        { type => "T$stream", data => $data, (defined $meta ? (metadata => $meta) : ()) });
    die "write: $raw" unless $st == 200;
    return $b;
}

# ---- data: several categories, odd payloads, metadata or not, > one page
my $big = '123456789012345678901234567890.5';
for my $i (0 .. 1199) {
    W('acc-' . ($i % 13), { i => $i });
}
W('acc-x', { "k\x{e9}y" => "\x{2603} snow <&> \"q\"", n => [1, 2.5, -3e-5], deep => { a => { b => [undef, \1] } } },
  { correlationStreamName => 'wf-1', traceId => 't' });
{
    my ($st, undef, undef, $raw) = $d->raw_rpc($A, qq(["stream.write","num-1",{"type":"N","data":{"big":$big}}]));
    die "big number write: $raw" unless $st == 200;
}
W('other-1', {}, { m => 1 });
W('nodash', { x => 1 });
my $src = all_msgs($A);
is(scalar @$src, 1204, '1204 messages written');

# ---- export to a file, import into an empty namespace, compare everything
{
    my $r = run(['export', '--url', $url, '--token', $A, '--output', "$dir/a.ndjson"]);
    is($r->{exit}, 0, 'export exits 0') or diag($r->{stderr});
    like($r->{stderr}, qr/Exported: 1204 events total\n\z/, 'progress on stderr ends with the total');
    open my $fh, '<', "$dir/a.ndjson" or die;
    my @lines = <$fh>;
    close $fh;
    is(scalar @lines, 1204, 'one line per message');
    like($lines[0], qr/^\{"id":"[^"]+","stream":"[^"]+","type":"[^"]+","pos":\d+,"gpos":\d+,"data":.*,"meta":.*,"time":"[^"]+"\}\n\z/,
        'keys in the original order');
    my ($ok, $rec) = json_decode($lines[-4]);
    like($rec->{time}, qr/\.\d{6}Z$|\.\d+Z$/, 'time with sub-second precision');
    ok(scalar(grep { /"big":\Q$big\E/ } @lines), 'numbers written exactly as stored');

    my (undef, $B) = $t->fresh_ns('exp');
    $r = run(['import', '--url', $url, '--token', $B, '--input', "$dir/a.ndjson"]);
    is($r->{exit}, 0, 'import exits 0') or diag($r->{stderr});
    like($r->{stderr}, qr/Imported: 1204 events in \d+\.\ds\n\z/, 'import prints the total');
    like($r->{stderr}, qr/Imported: 1000 events \(gpos: \d+\)\.\.\./, 'and progress per batch');
    is_deeply(all_msgs($B), $src, 'the copy equals the original: ids, streams, types, positions, global positions, data, metadata, times');
    my (undef, $w) = $d->rpc($B, 'stream.write', 'acc-1', { type => 'T', data => {} });
    is($w->{globalPosition}, $src->[-1][4] + 1, 'writes continue after the imported positions');

    # Same again from standard input, with gzip both ways.
    $r = run(['export', '--url', $url, '--token', $A, '--gzip', '--output', "$dir/a.ndjson.gz"]);
    is($r->{exit}, 0, 'export --gzip');
    open $fh, '<:raw', "$dir/a.ndjson.gz" or die;
    read $fh, my $magic, 2;
    close $fh;
    is(unpack('H4', $magic), '1f8b', 'gzip output');
    my (undef, $C) = $t->fresh_ns('exp');
    open $fh, '<:raw', "$dir/a.ndjson.gz" or die;
    my $gz = do { local $/; <$fh> };
    close $fh;
    $r = run(['import', '-url', $url, '-token', $C, '-gzip'], stdin => $gz);
    is($r->{exit}, 0, 'import --gzip from standard input (single-dash flags)') or diag($r->{stderr});
    is_deeply(all_msgs($C), $src, 'identical again');

    $r = run(['export', "--url=$url", "--token=$A"]);
    is($r->{exit}, 0, 'export to standard output');
    is($r->{stdout}, join('', @lines), 'same bytes as the file');
}

# ---- categories and the time window
{
    my $r = run(['export', '--url', $url, '--token', $A, '--categories', ' other , num ']);
    my @l = split /\n/, $r->{stdout};
    is_deeply([map { (json_decode($_))[1]{stream} } @l], ['other-1', 'num-1'], '--categories: in the order given, trimmed');
    # Times as sortable strings (the fraction padded to microseconds).
    my $norm = sub { my ($x) = @_; $x =~ s/(?:\.(\d+))?Z$/sprintf '.%-06sZ', $1 \/\/ ''/e; $x =~ tr/ /0/; $x };
    my $mid = $src->[600][7];
    my $after = grep { $norm->($_->[7]) ge $norm->($mid) } @$src;
    $r = run(['export', '--url', $url, '--token', $A, '--since', $mid]);
    is(scalar(split /\n/, $r->{stdout}), $after, "--since is inclusive (RFC 3339 with fraction): $after");
    $r = run(['export', '--url', $url, '--token', $A, '--until', $mid]);
    is(scalar(split /\n/, $r->{stdout}), 1204 - $after, '--until is exclusive');
    $r = run(['export', '--url', $url, '--token', $A, '--since', '2000-01-01', '--until', '2000-01-02']);
    is($r->{stdout}, '', 'YYYY-MM-DD dates: nothing in 2000');
    $r = run(['export', '--url', $url, '--token', $A, '--until', '2999-01-01']);
    is(scalar(split /\n/, $r->{stdout}), 1204, 'everything before 2999');
}

# ---- errors, as the original
{
    my $r = run(['export', '--token', $A]);
    is($r->{exit}, 1, 'no --url: exit 1');
    is($r->{stderr}, "Error: --url is required\n", 'Error: --url is required');
    $r = run(['export', '--url', $url]);
    is($r->{stderr}, "Error: --token is required\n", 'Error: --token is required');
    $r = run(['export', '--url', $url, '--token', $A, '--since', 'yesterday']);
    is($r->{stderr}, "Error: invalid --since: expected YYYY-MM-DD or RFC3339 format\n", 'bad --since');
    $r = run(['export', '--url', $url, '--token', 'bogus']);
    is($r->{exit}, 1, 'bad token: exit 1');
    like($r->{stderr}, qr/^Error: HTTP 401: \{"error":\{"code":"AUTH_INVALID_TOKEN"/, 'Error: HTTP 401: <body>');
    $r = run(['export', '--bogus']);
    is($r->{exit}, 2, 'unknown flag: exit 2');
    like($r->{stderr}, qr/flag provided but not defined: -bogus/, 'Go flag message');
    $r = run(['import', '--url', $url]);
    is($r->{stderr}, "Error: --token is required\n", 'import: Error: --token is required');
    $r = run(['import', '--url', $url, '--token', 'bogus'], stdin => "{}\n");
    is($r->{exit}, 1, 'import with a bad token: exit 1');
    like($r->{stderr}, qr/^Error: server error \(HTTP 401\): \{"error"/, 'Error: server error (HTTP 401): <body>');
    my (undef, $E) = $t->fresh_ns('exp');
    $r = run(['import', '--url', $url, '--token', $E], stdin => qq({"id":"00000000-0000-4000-8000-000000000001","stream":"a-1","type":"T","pos":0,"gpos":1,"time":"2025-01-01T00:00:00Z"}\nnope\n));
    is($r->{exit}, 1, 'import error: exit 1');
    like($r->{stderr}, qr/Error: INVALID_JSON: malformed JSON at line 2: .* \(line 2\)\n\z/, 'Error: CODE: message (line N)');
    $r = run(['export', '--url', 'http://127.0.0.1:1', '--token', $A]);
    is($r->{exit}, 1, 'server down: exit 1');
    like($r->{stderr}, qr/^Error: could not connect/, 'could not connect');
}

# ---- --force asks first
{
    my (undef, $F) = $t->fresh_ns('exp');
    $d->rpc($F, 'stream.write', 'keep-1', { type => 'T', data => {} });
    open my $fh, '>', "$dir/one.ndjson" or die;
    print $fh qq({"id":"00000000-0000-4000-8000-000000000009","stream":"new-1","type":"T","pos":0,"gpos":1,"data":{},"meta":null,"time":"2025-01-01T00:00:00Z"}\n);
    close $fh;
    my $r = run(['import', '--url', $url, '--token', $F, '--input', "$dir/one.ndjson", '--force'], stdin => "n\n");
    is($r->{exit}, 0, 'answer n: exit 0');
    like($r->{stderr}, qr/This action cannot be undone\.\nAre you sure you want to continue\? \[y\/N\]: Import cancelled\.\n\z/, 'the prompt, then Import cancelled.');
    is_deeply([map { $_->[1] } @{ all_msgs($F) }], ['keep-1'], 'nothing deleted');
    $r = run(['import', '--url', $url, '--token', $F, '--input', "$dir/one.ndjson", '--force'], stdin => "YES\n");
    is($r->{exit}, 0, 'answer YES: imported') or diag($r->{stderr});
    is_deeply([map { $_->[1] } @{ all_msgs($F) }], ['new-1'], 'namespace replaced');
}

done_testing;
