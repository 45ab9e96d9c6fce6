#!/usr/bin/perl
# 24-commitfail.t - a write whose statement succeeds but whose commit
# fails is not acknowledged.  In pipeline mode the implicit transaction
# commits at Sync, after the statement's rows have arrived; an error
# there used to be dropped and the write answered 200 without being
# stored.  A deferred constraint trigger (checked at commit) makes the
# commit of writes to one stream fail, alone and inside a batch.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(obj arr);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $d = $t->start(workers => 1);
my ($id, $T) = $t->fresh_ns('cfail');
(my $schema = "eventodb_$id") =~ s/[^A-Za-z0-9_]/_/g;
my $n = $t->psql($d->db, "SELECT count(*) FROM pg_namespace WHERE nspname = '$schema'");
is($n, 1, "namespace schema $schema exists") or BAIL_OUT('schema name');

$t->psql($d->db, <<"SQL");
CREATE FUNCTION "$schema".refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
  IF NEW.stream_name LIKE 'doomed-%' THEN
    RAISE EXCEPTION 'refused at commit';
  END IF;
  RETURN NULL;
END \$\$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON "$schema".messages
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "$schema".refuse_at_commit();
SQL

my ($st, $b) = $d->rpc($T, 'stream.write', 'fine-1', { type => 'T', data => {} });
is($st, 200, 'a write the trigger lets through is acknowledged');

($st, $b) = $d->rpc($T, 'stream.write', 'doomed-1', { type => 'T', data => {} });
isnt($st, 200, 'a write whose commit fails is not acknowledged') or diag(explain $b);
is(obj(obj($b)->{error})->{code}, 'BACKEND_ERROR', '... it gets BACKEND_ERROR');
my (undef, $r) = $d->rpc($T, 'stream.get', 'doomed-1');
is(scalar @{ arr($r) }, 0, '... and nothing was stored');

# Inside a batch: many concurrent writes, one worker, so they group.
my @c = map { $d->connect } 1 .. 12;
my $i = 0;
for my $s (@c) {
    my $stream = ($i % 3 == 0 ? 'doomed-' : 'fine-') . (10 + $i);
    my $body = EventoTest::json_encode(['stream.write', $stream, { type => 'T', data => { i => $i } }]);
    $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body");
    $i++;
}
my ($acked, $acked_doomed, $stored_doomed) = (0, 0, 0);
$i = 0;
for my $s (@c) {
    my ($rl) = $d->read_responses($s, count => 1);
    my @resp = @{ $rl || [] };
    my $stream = ($i % 3 == 0 ? 'doomed-' : 'fine-') . (10 + $i);
    if (@resp && $resp[0]{status} == 200) {
        $acked++;
        $acked_doomed++ if $stream =~ /^doomed/;
    }
    my (undef, $g) = $d->rpc($T, 'stream.get', $stream);
    $stored_doomed += @{ arr($g) } if $stream =~ /^doomed/;
    if (@resp && $resp[0]{status} == 200) {
        is(scalar @{ arr($g) }, 1, "acknowledged $stream is stored");
    }
    $i++;
}
is($acked_doomed, 0, 'no write of a batch whose commit failed is acknowledged');
is($stored_doomed, 0, 'none of the refused writes is stored');
done_testing;
