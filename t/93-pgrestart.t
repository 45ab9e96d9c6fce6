#!/usr/bin/perl
# 93-pgrestart.t - PostgreSQL restarted under load (issue 7): requests
# fail (quickly, with a JSON error) only while PostgreSQL is down, every
# request is answered (none hangs), writes succeed again within 2 s of
# PostgreSQL being back, /health says 503 while it is down and 200 after,
# and no acknowledged write is lost.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN mult);
use EventoLoad;

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $d = $t->start(workers => 2);
my $load = EventoLoad->start($d, writers => 3, keep_alive => 1, prefix => 'pgr', pause => 0.01);
ok($t->wait_for(sub { $load->count('ok') >= 30 }, 20), 'load running');

my $t_down0 = time;
$t->cluster_stop(mode => 'fast');
my $t_down1 = time;
diag(sprintf 'PostgreSQL stopped in %.2f s', $t_down1 - $t_down0);
ok($t->wait_for(sub { ($d->http('GET', '/health')->{status} // 0) == 503 }, 5),
   '/health answers 503 while PostgreSQL is down');
my $fails_down = $t->wait_for(sub { scalar grep { $_->[0] eq q(fail) && $_->[4] > $t_down1 } $load->lines }, 5);
ok($fails_down, 'writes fail while it is down');
Time::HiRes::sleep(3);    # stay down long enough for the reconnect back-off to reach its cap
my $t_up0 = time;
$t->cluster_start;
my $t_up = time;
diag(sprintf 'PostgreSQL started again in %.2f s', $t_up - $t_up0);
my $healthy = $t->wait_for(sub { ($d->http('GET', '/health')->{status} // 0) == 200 }, 5);
ok($healthy, sprintf('/health is 200 again %.2f s after PostgreSQL is back', time - $t_up));
ok($t->wait_for(sub { scalar grep { $_->[0] eq 'ok' && ($_->[7] // 0) > $t_up } $load->lines }, 5),
   'writes succeed again');
ok($t->wait_for(sub { scalar(grep { $_->[0] eq 'ok' && ($_->[7] // 0) > $t_up + 2 } $load->lines) >= 30 }, 10),
   'load continues');
$load->stop;

my @l = $load->lines;
my @ok = grep { $_->[0] eq 'ok' } @l;
my @fail = grep { $_->[0] eq 'fail' } @l;
# ok: [ok, w, i, pos, gpos, ms, id, t]   fail: [fail, w, i, ms, t, reason]
my @late = grep { $_->[4] > $t_up + 2 } @fail;
is(scalar @late, 0, 'no failure starting later than 2 s after PostgreSQL is back')
    or diag(join "\n", map { join ' ', @$_ } @late[0 .. ($#late < 5 ? $#late : 5)]);
my @early = grep { $_->[4] + $_->[3] / 1000 < $t_down0 } @fail;
is(scalar @early, 0, 'no failure that ended before the stop began');
my @hung = grep { $_->[0] eq 'fail' && $_->[5] =~ /timeout/ } @l;
is(scalar @hung, 0, 'no request hung (all answered within 10 s)');
my ($slowest) = sort { $b <=> $a } map { $_->[0] eq 'ok' ? $_->[5] : $_->[3] } @l;
diag("slowest request: $slowest ms; " . scalar(@fail) . ' failed while PostgreSQL was down, ' . scalar(@ok) . ' acknowledged');
cmp_ok($slowest, '<', 5000 * mult(), 'every request answered within 5 s');
my %reasons;
for (@fail) { my ($st) = $_->[5] =~ /^(\d{3}|\S+)/; $reasons{$st // '?'}++ }
diag('failures by status: ' . join ', ', map { "$_: $reasons{$_}" } sort keys %reasons);
ok(!grep({ !/^(?:5\d\d|nobyte)$/ } keys %reasons), 'failures are 5xx answers (or a connection closed by a worker with nothing sent)');
my ($first_back) = sort { $a <=> $b } map { $_->[7] } grep { $_->[7] > $t_up } @ok;
if (defined $first_back) {
    diag(sprintf 'first acknowledged write started %.2f s after PostgreSQL was back', $first_back - $t_up);
    cmp_ok($first_back - $t_up, '<', 2, 'writes acknowledged again within 2 s');
}
my ($lost, $n) = $load->verify($d);
is(scalar @$lost, 0, "no acknowledged write lost ($n stored)");
ok($t->wait_for(sub { ($d->http('GET', '/health')->{status} // 0) == 200 }, 3), 'healthy at the end');
is($d->stop, 0, 'SIGTERM: exit 0');

done_testing;
