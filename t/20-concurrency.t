#!/usr/bin/perl
# 20-concurrency.t - concurrent writers (api.md 7.3, 8.6): optimistic
# concurrency with expectedVersion lets exactly one writer win; writers
# without it get gapless, unique positions; concurrent ns.create of one id.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN arr obj);

my $t = EventoTest->new(external_ok => 1);
my $d = $t->start(workers => 3);
my (undef, $T) = $t->fresh_ns('conc');

sub outcome {
    my ($st, $b, $h, $raw) = @_;
    return { status => $st,
             code => (ref $b eq 'HASH' && ref obj($b)->{error} eq 'HASH') ? obj($b)->{error}{code} : undef,
             position => (ref $b eq 'HASH') ? obj($b)->{position} : undef,
             gpos => (ref $b eq 'HASH') ? obj($b)->{globalPosition} : undef,
             raw => $raw };
}

# ---- 20 writers, expectedVersion -1, one new stream
for my $round ([-1, 'race-1', 0], [0, 'race-1', 1]) {
    my ($ev, $stream, $pos) = @$round;
    my @r = $t->parallel(20, sub {
        my $i = shift;
        return outcome($d->rpc($T, 'stream.write', $stream, { type => 'T', data => { w => $i } },
                               { expectedVersion => $ev }));
    });
    my @ok = grep { ($_->{status} // 0) == 200 } @r;
    my @conf = grep { ($_->{status} // 0) == 409 && ($_->{code} // '') eq 'STREAM_VERSION_CONFLICT' } @r;
    is(scalar @ok, 1, "expectedVersion $ev, 20 writers: exactly one 200");
    is(scalar @conf, 19, "expectedVersion $ev, 20 writers: 19 x 409 STREAM_VERSION_CONFLICT")
        or diag(join "\n", map { "$_->{status} " . ($_->{raw} // $_->{error} // '') } grep { ($_->{status} // 0) != 200 } @r);
    is($ok[0]{position}, $pos, "expectedVersion $ev: the winner got position $pos") if @ok;
    my ($st, $b) = $d->rpc($T, 'stream.get', $stream);
    is(scalar @{ arr($b) }, $pos + 1, "expectedVersion $ev: the stream holds " . ($pos + 1) . ' message(s)');
    is((arr($b)->[-1] // [])->[3], $ok[0]{gpos}, 'the stored message is the acknowledged one') if @ok;
}

# ---- 10 processes x 15 writes, no expectedVersion, one stream
{
    my @r = $t->parallel(10, sub {
        my $p = shift;
        my @acks;
        for my $k (0 .. 14) {
            my $o = outcome($d->rpc($T, 'stream.write', 'pile-1', { type => 'T', data => { p => $p, k => $k } }));
            return { error => "write failed: $o->{status} $o->{raw}" } unless $o->{status} == 200;
            push @acks, [$o->{position}, $o->{gpos}, $p, $k];
        }
        return \@acks;
    });
    my @errors = grep { ref $_ eq 'HASH' } @r;
    is(scalar @errors, 0, 'all 150 writes acknowledged') or diag(join "\n", map { $_->{error} } @errors);
    my @acks = map { @$_ } grep { ref $_ eq 'ARRAY' } @r;
    my ($st, $msgs) = $d->rpc($T, 'stream.get', 'pile-1', { batchSize => -1 });
    is($st, 200, 'stream.get -1');
    is(scalar @{ arr($msgs) }, 150, '150 messages stored');
    is_deeply([map { $_->[2] } @{ arr($msgs) }], [0 .. 149], 'positions 0..149, each exactly once, in order');
    my %g = map { $_->[3] => 1 } @{ arr($msgs) };
    is(scalar keys %g, 150, 'global positions unique');
    my @gs = map { $_->[3] } @{ arr($msgs) };
    is_deeply(\@gs, [sort { $a <=> $b } @gs], 'global positions increase with position (one stream, one lock)');
    is_deeply([sort { $a <=> $b } map { $_->[0] } @acks], [0 .. 149], 'acknowledged positions are 0..149');
    my %stored = map { $_->[2] => "$_->[3]/$_->[4]{p}/$_->[4]{k}" } @{ arr($msgs) };
    my $mismatch = grep { ($stored{$_->[0]} // '') ne "$_->[1]/$_->[2]/$_->[3]" } @acks;
    is($mismatch, 0, 'every acknowledgement matches the stored message (position, global position, data)');
    my %per = ();
    $per{ $_->[2] }++ for @acks;
    is_deeply([map { $per{$_} } 0 .. 9], [(15) x 10], 'each process wrote 15');
}

# ---- concurrent writers on several streams of one category
{
    my @r = $t->parallel(6, sub {
        my $p = shift;
        my @acks;
        for my $k (0 .. 8) {
            my $o = outcome($d->rpc($T, 'stream.write', 'multi-' . ($k % 3), { type => 'T', data => { p => $p } }));
            return { error => "$o->{status} $o->{raw}" } unless $o->{status} == 200;
            push @acks, $o->{gpos};
        }
        return \@acks;
    });
    is(scalar(grep { ref $_ eq 'HASH' } @r), 0, '54 writes to 3 streams acknowledged');
    my ($st, $cat) = $d->rpc($T, 'category.get', 'multi', { batchSize => -1 });
    is(scalar @{ arr($cat) }, 54, '54 messages in the category');
    for my $s (0 .. 2) {
        my @p = map { $_->[3] } grep { $_->[1] eq "multi-$s" } @{ arr($cat) };
        is_deeply(\@p, [0 .. 17], "multi-$s: positions 0..17");
    }
    my @g = map { $_->[4] } @{ arr($cat) };
    is_deeply(\@g, [sort { $a <=> $b } @g], 'category.get returns ascending global positions');
}

# ---- concurrent ns.create of one id
{
    my $id = $t->nsid('race-ns');
    my @r = $t->parallel(8, sub { outcome($d->rpc(ADMIN_TOKEN, 'ns.create', $id)) });
    is(scalar(grep { $_->{status} == 200 } @r), 1, 'concurrent ns.create: exactly one 200');
    is(scalar(grep { $_->{status} == 409 && ($_->{code} // '') eq 'NAMESPACE_EXISTS' } @r), 7,
       'concurrent ns.create: the others 409 NAMESPACE_EXISTS')
        or diag(join "\n", map { "$_->{status} " . ($_->{raw} // '') } @r);
}

is($d->http('GET', '/health')->{status}, 200, 'still healthy');
done_testing;
