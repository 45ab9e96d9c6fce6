#!/usr/bin/perl
# 23-nsdelete.t - regression: once ns.delete has answered, no worker of
# the instance accepts the deleted namespace's token, even a worker whose
# cache held it and has not yet read the NOTIFY (workers used to learn
# of the delete only from NOTIFY, a few milliseconds later).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(obj);

my $t = EventoTest->new;
my $d = $t->start(workers => 4);
my $A = $t->admin_token;
my $late = 0;
for my $round (1 .. 15) {
    my $id = $t->nsid("del$round");
    my $tok = $d->create_ns($id);
    # Warm every worker's cache with the namespace (new connections spread over workers).
    $d->rpc($tok, 'stream.write', 'w-1', { type => 'T', data => {} }) for 1 .. 12;
    my ($st) = $d->rpc($A, 'ns.delete', $id);
    is($st, 200, "round $round: deleted") or next;
    for (1 .. 8) {
        my ($s2) = $d->rpc($tok, 'sys.version');
        $late++ if $s2 != 403;
    }
}
is($late, 0, 'no request after ns.delete answered was let through with the deleted token');
done_testing;
