#!/usr/bin/perl
# 103-sse-params.t - the /subscribe request decoder at the HTTP level
# (worker/sse_params.c, fuzzed by t/fuzz/fuzz_sse.c): the bugs the fuzzer
# found.  Query values are byte strings: a %00 used to cut a value short,
# so stream=abc%00def followed stream "abc", position=1%00x was position
# 1 and all=true%00 was all=true; a name with invalid UTF-8 was accepted
# and its catch-up query then failed in PostgreSQL, ending the stream
# right after ": ready".  Now each is a JSON 400 (decisions.md 5), while
# valid UTF-8 names (2-, 3- and 4-byte sequences, '+' as a space) still
# subscribe and get their pokes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(json_encode);
use EventoSSE;

my $t = EventoTest->new;
my $d = $t->start(workers => 1);
my (undef, $T) = $t->fresh_ns('sseparams');

sub W {
    my ($stream) = @_;
    my ($st, $b, undef, $raw) = $d->rpc($T, 'stream.write', $stream, { type => 'T', data => {} });
    die "write $stream: $st $raw" unless $st == 200;
    return $b;
}
sub sub_ { return EventoSSE->new($d, token => $T, query_list => [@_]) }
sub show { my $s = join '&', map { "$_->[0]=$_->[1]" } @_; $s =~ s/([^\x21-\x7e])/sprintf '\\x%02x', ord $1/ge; $s }

# ---- rejected: 400 INVALID_REQUEST with the message of the first failing rule
my @bad = (
    [[[stream => "abc\x00def"]], 'Invalid stream parameter'],
    [[[stream => "\x00"]], 'Invalid stream parameter'],
    [[[category => "abc\x00"]], 'Invalid category parameter'],
    [[[stream => "\xff-1"]], 'Invalid stream parameter'],
    [[[stream => "\xc0\xaf"]], 'Invalid stream parameter'],           # overlong '/'
    [[[category => "\xed\xa0\x80"]], 'Invalid category parameter'],  # a surrogate
    [[[stream => "\xf4\x90\x80\x80"]], 'Invalid stream parameter'],   # above U+10FFFF
    [[[stream => "caf\xc3"]], 'Invalid stream parameter'],            # truncated
    [[[stream => 's'], [position => "1\x00x"]], 'Invalid position parameter'],
    [[[stream => 's'], [position => "1\x00"]], 'Invalid position parameter'],
    [[[all => "true\x00"]], q(Either 'stream', 'category', or 'all=true' parameter required)],
    [[[category => 'c'], [consumer => "1\x00"], [size => '2']], 'Invalid consumer parameter'],
    [[[category => 'c'], [consumerGroupSize => "2\x00"]], 'Invalid size parameter'],
    # the order of api.md 9.2 still holds: rules 1-3 before the name check
    [[[all => 'true'], [stream => "\xff"]], q(Cannot combine 'all' with 'stream' or 'category')],
    [[[stream => "\xff"], [category => 'c']], q(Cannot specify both 'stream' and 'category')],
);
for my $c (@bad) {
    my $s = sub_(@{ $c->[0] });
    $s->wait_for(sub { $_[0]->closed || ($_[0]->status && length $_[0]->body) }, 5);
    my $what = show(@{ $c->[0] });
    is($s->status, 400, "400 for $what");
    is_deeply($s->json, { error => { code => 'INVALID_REQUEST', message => $c->[1] } }, "  $c->[1]");
}

# ---- a name cut at %00 must not follow the stream before the NUL
{
    my $ok = sub_([stream => 'abc-1']);
    ok($ok->wait_for(sub { $_[0]->ready }, 5), 'stream=abc-1 subscribes');
    my $cut = sub_([stream => "abc-1\x00x"]);
    $cut->wait_for(sub { $_[0]->closed || ($_[0]->status && length $_[0]->body) }, 5);
    my $w = W('abc-1');
    $ok->wait_pokes(1, 5);
    is(scalar $ok->pokes, 1, 'abc-1 subscriber poked');
    $cut->pump(0.2);
    is(scalar $cut->pokes, 0, 'stream=abc-1%00x gets no poke of abc-1');
    isnt($cut->status, 200, '  and is not a subscription');
}

# ---- accepted: valid UTF-8, '+' as a space, 4-byte sequences
for my $name ("caf\xc3\xa9-1", "\xe2\x82\xac-2", "\xf0\x9f\x98\x80-3", "a b-4") {
    my $esc = show([stream => $name]);
    my $s = $name =~ / /
        ? EventoSSE->new($d, token => $T, path => '/subscribe?stream=a+b-4')
        : sub_([stream => $name]);
    ok($s->wait_for(sub { $_[0]->ready }, 5), "$esc subscribes") or next;
    my $w = W(do { my $u = $name; utf8::decode($u); $u });
    my @p = $s->wait_pokes(1, 5);
    my $got = @p ? $p[0]{stream} : undef;
    utf8::encode($got) if defined $got && utf8::is_utf8($got);
    is($got, $name, "  poked with the same name");
    is(@p ? $p[0]{globalPosition} : undef, $w->{globalPosition}, '  for the message written');
}
# ---- parameter names are percent-decoded too (as the original's Go
# url.ParseQuery): %73tream is stream, and the token in ?%74oken= counts.
{
    my $s = EventoSSE->new($d, path => "/subscribe?%73tream=pct-1&%74oken=$T");
    ok($s->wait_for(sub { $_[0]->ready }, 5), '%73tream=pct-1&%74oken=... subscribes');
    my $w = W('pct-1');
    my @p = $s->wait_pokes(1, 5);
    is(@p ? $p[0]{globalPosition} : undef, $w->{globalPosition}, '  and is poked for pct-1');
    my $n = EventoSSE->new($d, token => $T, path => '/subscribe?%7stream=pct-1');
    $n->wait_for(sub { $_[0]->closed || ($_[0]->status && length $_[0]->body) }, 5);
    is($n->status, 400, 'a key with a bad escape (%7stream) is not stream');
}
{
    my $s = sub_([category => "caf\xc3\xa9"]);
    ok($s->wait_for(sub { $_[0]->ready }, 5), 'category=caf%C3%A9 subscribes');
    my @p = $s->wait_pokes(1, 5);
    is(scalar @p, 1, '  and gets the poke of its stream (catch-up)');
}

done_testing;
