#!/usr/bin/perl
# 00-harness.t - the test harness itself: private PostgreSQL cluster
# start/stop and cleanup (also when a test dies or is signalled), the HTTP
# response parser, small helpers, and (if eventodbd is built) one daemon
# start/stop cycle.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use EventoTest qw(ADMIN_TOKEN parse_responses rfc3339_epoch make_token jtype pid_alive mult);

my $t = EventoTest->new(need => ['pg']);

# ---- helpers that need no processes
{
    my $two = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: x\r\n\r\nabc"
            . "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n"
            . "HTTP/1.1 200 OK\r\nContent-Len";
    my ($r, $rest, $err) = parse_responses($two, 0);
    is(scalar @$r, 2, 'parse_responses: two complete responses');
    is($r->[0]{body}, 'abc', 'content-length body');
    is($r->[0]{headers}{server}, 'x', 'header lookup is case-insensitive');
    is($r->[1]{status}, 404, 'second status');
    is($r->[1]{body}, 'hi!', 'chunked body');
    like($rest, qr/^HTTP\/1.1 200 OK\r\nContent-Len$/, 'incomplete remainder kept');
    ok(!$err, 'no parse error');

    is(rfc3339_epoch('1970-01-01T00:00:01.5Z'), 1.5, 'rfc3339_epoch with fraction');
    is(rfc3339_epoch('2025-01-15T10:30:00Z'), 1736937000, 'rfc3339_epoch without fraction');
    ok(!defined rfc3339_epoch('2025-01-15T10:30:00+01:00'), 'non-Z offset rejected');
    is(make_token('default', '0' x 64), ADMIN_TOKEN, 'make_token(default) is the admin token');
    like(make_token('tenant-a'), qr/^ns_dGVuYW50LWE_[0-9a-f]{64}$/, 'make_token random part');
    is(make_token("\x{e9}", 'a' x 64), 'ns_w6k_' . 'a' x 64, 'make_token encodes UTF-8 (api 15.2)');
    is(jtype('{"a":1,"b":"1","c":1.5,"d":null,"e":[true]}', 'a'), 'int', 'jtype int');
    is(jtype('{"a":1,"b":"1"}', 'b'), 'string', 'jtype string');
    is(jtype('{"c":1.5}', 'c'), 'number', 'jtype number');
    is(jtype('{"d":null}', 'd'), 'null', 'jtype null');
    is(jtype('{"e":[true]}', 'e', 0), 'bool', 'jtype bool');
    ok(!defined jtype('{"e":[true]}', 'x'), 'jtype missing key');
}

# ---- parallel helper
{
    my @r = $t->parallel(4, sub { my $i = shift; return { i => $i, pid => $$ } });
    is_deeply([map { $_->{i} } @r], [0 .. 3], 'parallel returns results in order');
    my %pids = map { $_->{pid} => 1 } @r;
    is(scalar keys %pids, 4, 'parallel ran 4 distinct processes');
    ok(!grep({ $_ == $$ } keys %pids), 'children are not the test process');
    my ($e) = $t->parallel(1, sub { die "boom\n" });
    like($e->{error}, qr/boom/, 'parallel reports a dying child');
}

# ---- the cluster
$t->cluster;
my $c = $t->cluster_info;
ok(-S "$c->{sock}/.s.PGSQL.5432", 'unix socket exists');
ok(length("$c->{sock}/.s.PGSQL.5432") < 100, 'socket path is short');
ok($c->{postmaster_pid} && pid_alive($c->{postmaster_pid}), 'postmaster running');
is($t->psql('postgres', 'SELECT 1'), '1', 'psql connects');
is($t->psql('postgres', 'SHOW fsync'), 'off', 'fsync off');
is($t->psql('postgres', "SHOW listen_addresses"), '', 'no TCP listener');
is($t->psql('postgres', 'SHOW server_encoding'), 'UTF8', 'UTF8 encoding');
cmp_ok($t->psql('postgres', 'SHOW server_version_num'), '>=', 150000, 'PostgreSQL 15 or newer');
my $db1 = $t->createdb;
my $db2 = $t->createdb;
isnt($db1, $db2, 'createdb gives distinct names');
is($t->psql($db1, 'SELECT current_database()'), $db1, 'new database reachable');
like($t->db_url($db1), qr/^host=\S+ port=5432 dbname=\Q$db1\E user=postgres$/, 'db_url shape');

# ---- cleanup on die and on SIGTERM, in a child perl
my $perl = $^X;
my $lib = "$FindBin::Bin/lib";
for my $how (qw(die term)) {
    my $script = <<'PERL';
use Test::More; use EventoTest;
my $t = EventoTest->new(need => ['pg']); $t->cluster;
$| = 1;
print "DIR ", $t->dir, " PID ", $t->cluster_info->{postmaster_pid}, "\n";
if ($ARGV[0] eq 'die') { die "deliberate\n" }
sleep 60;
PERL
    open my $saved, '>&', \*STDERR or die;
    open STDERR, '>', '/dev/null';    # the child's "deliberate" death is noise
    my $pid = open(my $fh, '-|', $perl, "-I$lib", '-e', $script, $how) or die "spawn: $!";
    open STDERR, '>&', $saved;
    my $line = '';
    my $ok = $t->wait_for(sub { $line = <$fh>; defined $line }, 60);
    my ($dir, $pm) = ($line // '') =~ /^DIR (\S+) PID (\d+)/;
    ok($dir && -d $dir, "[$how] child created its directory");
    kill 'TERM', $pid if $how eq 'term';
    { local $/; my $rest = <$fh>; }
    close $fh;
    ok($dir && !-e $dir, "[$how] directory removed");
    ok($pm && $t->wait_for(sub { !pid_alive($pm) }, 10), "[$how] postmaster stopped");
}

# ---- a daemon, if built
SKIP: {
    skip 'eventodbd not built yet', 8 unless $t->has('daemon');
    my $d = $t->start(workers => 1);
    my $r = $d->http('GET', '/health');
    is($r->{status}, 200, 'daemon /health 200');
    ok($d->pid && pid_alive($d->pid), 'daemon pid alive');
    my ($st, $b) = $d->rpc(ADMIN_TOKEN, 'sys.version');
    is($st, 200, 'sys.version with admin token');
    ok($t->wait_for(sub { scalar keys %{ $d->worker_pids } }, 10), 'worker start line logged')
        or diag($d->log_text);
    my $pid = $d->pid;
    my $code = $d->stop;
    is($code, 0, 'SIGTERM: exit 0');
    ok(!$d->stop_timed_out, 'stopped without SIGKILL');
    ok(!pid_alive($pid), 'daemon gone');
    $d->restart;
    is($d->http('GET', '/health')->{status}, 200, 'restart works');
}

# new_id() in forked children (the load writers fork, then make ids):
# no two children may repeat each other, whatever their pids and start
# times (a pid ^ time seed did, battery T08b).
{
    my @kids;
    for my $k (1 .. 8) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) { close $r; print $w join("\n", map { EventoTest::new_id() } 1 .. 50), "\n"; close $w; POSIX::_exit(0) }
        close $w;
        push @kids, [$pid, $r];
    }
    my %seen;
    for my $k (@kids) { my $fh = $k->[1]; $seen{$_}++ for map { chomp; $_ } <$fh>; waitpid $k->[0], 0 }
    is(scalar keys %seen, 400, '8 forked children x 50 new_id(): 400 distinct ids');
    ok(!grep({ $_ !~ EventoTest::uuid_re() } keys %seen), 'all of them UUIDs');
}

done_testing;
