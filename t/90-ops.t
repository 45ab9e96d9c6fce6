#!/usr/bin/perl
# 90-ops.t - graceful reload and stop under load (issue 7, decisions.md 10):
#   - SIGHUP, five times in a row, while writers run (new connection per
#     request, and keep-alive): zero failed requests, every acknowledged
#     write stored, a new worker generation each time;
#   - a broken configuration file on SIGHUP: logged, nothing changes, the
#     server keeps serving; a fixed one is applied; a setting that needs a
#     restart keeps its running value with a warning;
#   - SIGTERM under load: requests in flight (held up in PostgreSQL, or
#     with a body still arriving) finish with 200, no acknowledged write is
#     lost, exit 0 within shutdown-timeout;
#   - a worker that does not finish in time is killed at shutdown-timeout.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time);
use EventoTest qw(ADMIN_TOKEN pid_alive mult json_encode);
use EventoLoad;

my $t = EventoTest->new(need => [qw(daemon pg)]);

sub gens_in_log {
    my ($d) = @_;
    return [ $d->log_since_start =~ /reload finished gen=(\d+)/g ];
}

sub write_file {
    my ($f, $txt) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $txt;
    close $fh;
    chmod 0644, $f;
}

# ---------------------------------------------------------------- SIGHUP under load
{
    my $conf = $t->dir . '/hup.conf';
    write_file($conf, "# test configuration\nshutdown-timeout = 10\nidle-timeout = 60\n");
    my $d = $t->start(workers => 2, args => ['--config', $conf]);
    my $fresh = EventoLoad->start($d, writers => 3, keep_alive => 0, prefix => 'hupnew');
    my $ka = EventoLoad->start($d, writers => 3, keep_alive => 1, prefix => 'hupka');
    ok($t->wait_for(sub { $fresh->count('ok') >= 20 && $ka->count('ok') >= 20 }, 20),
       'load running (both kinds of writers acknowledged)');
    my $before = $d->worker_info;
    for my $round (1 .. 5) {
        my $gen = $round + 1;
        my $n0 = $fresh->count('ok') + $ka->count('ok');
        ok(kill('HUP', $d->pid), "SIGHUP #$round");
        ok($t->wait_for(sub { grep { $_ == $gen } @{ gens_in_log($d) } }, 20),
           "reload #$round finished (generation $gen)") or diag($d->log_since_start);
        ok($t->wait_for(sub { $fresh->count('ok') + $ka->count('ok') >= $n0 + 20 }, 20),
           "reload #$round: writes keep being acknowledged");
    }
    $fresh->stop;
    $ka->stop;
    my $after = $d->worker_info;
    for my $s (sort keys %$before) {
        ok($after->{$s} && $after->{$s}{gen} == 6 && $after->{$s}{pid} != $before->{$s}{pid},
           "slot $s: now generation 6 with a new pid");
    }
    for my $l ([$fresh, 'new connection per request'], [$ka, 'keep-alive']) {
        my ($load, $name) = @$l;
        my @fail = grep { $_->[0] eq 'fail' } $load->lines;
        is(scalar @fail, 0, "$name: zero failed requests across 5 reloads ("
            . $load->count('ok') . ' acknowledged)')
            or diag(join "\n", map { join ' ', @$_ } @fail[0 .. ($#fail < 9 ? $#fail : 9)]);
        my ($lost, $n) = $load->verify($d);
        is(scalar @$lost, 0, "$name: every acknowledged write is stored as acknowledged ($n stored)");
    }
    is($ka->count('retry'), 0, 'keep-alive: no request met a connection closed under it (no retry needed)');
    my $log = $d->log_since_start;
    my @retired = $log =~ /worker \d+ retiring pid=\d+ gen=\d+: replaced by the new generation/g;
    cmp_ok(scalar @retired, '>=', 10, 'old workers retired only once replaced (' . scalar(@retired) . ' lines)');
    unlike($log, qr/sending SIGKILL/, 'no worker needed SIGKILL');

    # ---------------------------------------------------------- broken config on SIGHUP
    my %w = map { $_ => $after->{$_}{pid} } keys %$after;
    write_file($conf, "shutdown-timeout = 10\nthis is not a setting\n");
    my $off = length $d->log_since_start;
    ok(kill('HUP', $d->pid), 'SIGHUP with a broken configuration file');
    ok($t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload failed: .*hup\.conf:2: expected "name = value"; keeping the current configuration/ }, 10),
       'the error is logged with file and line') or diag(substr($d->log_since_start, $off));
    ok($d->alive, 'the master keeps running');
    is($d->http('GET', '/health')->{status}, 200, '... and serving');
    my ($st) = $d->rpc(ADMIN_TOKEN, 'stream.write', 'after-broken-1', { type => 'T', data => {} });
    is($st, 200, '... writes too');
    is_deeply({ map { $_ => $d->worker_pids->{$_} } keys %w }, \%w, 'no worker was replaced');
    unlike(substr($d->log_since_start, $off), qr/gen=7/, 'no new generation');

    write_file($conf, "shutdown-timeout = 10\nmax-conns = 0\n");
    $off = length $d->log_since_start;
    kill 'HUP', $d->pid;
    ok($t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload failed: limits must be positive/ }, 10),
       'an invalid value is rejected too');

    # a valid file that also tries to change the port
    my $otherport = EventoTest::free_port();
    write_file($conf, "shutdown-timeout = 10\nidle-timeout = 30\ntest-mode = true\n");
    $off = length $d->log_since_start;
    kill 'HUP', $d->pid;
    ok($t->wait_for(sub { substr($d->log_since_start, $off) =~ /reload finished gen=7/ }, 20),
       'a valid file is applied (generation 7)') or diag(substr($d->log_since_start, $off));
    my $rl = substr($d->log_since_start, $off);
    like($rl, qr/reload: idle-timeout changed from 60 to 30/, 'the changed setting is logged');
    like($rl, qr/reload: test-mode cannot change without a restart; keeping false \(not true\)/,
         'test-mode needs a restart: warned, old value kept');
    my ($st4) = $d->rpc(undef, 'stream.write', 'no-token-1', { type => 'T', data => {} });
    is($st4, 401, 'auth still enforced (test mode stays off)');
    is($d->stop, 0, 'SIGTERM: exit 0');
}

# ---------------------------------------------------------------- SIGTERM under load
{
    # One write per transaction, so each held write waits in PostgreSQL
    # itself (with group commit, writes behind the first would wait in the
    # worker's write lane, invisible to pg_locks).
    my $d = $t->start(workers => 2, args => ['--shutdown-timeout', 8, '--write-batch-max', 1]);
    my $T = $d->create_ns('term-1');
    my ($st) = $d->rpc($T, 'stream.write', 'held-0', { type => 'T', data => {} });
    is($st, 200, 'namespace ready');
    my $load = EventoLoad->start($d, writers => 4, keep_alive => 1, prefix => 'term', token => $T);
    ok($t->wait_for(sub { $load->count('ok') >= 40 }, 20), 'load running');

    # Requests in flight for a while: hold the namespace's messages table
    # in PostgreSQL, then send writes that queue behind the lock.
    my $schema = $t->psql($d->db, q{SELECT schema_name FROM eventodb_store.namespaces WHERE id = 'term-1'});
    ok($schema, "namespace schema found ($schema)");
    my ($locker, $locked) = $t->lock_messages($d->db, $schema, 5);
    ok($locked, 'the messages table is locked');
    # held writers: each its own connection, answered only after the lock goes
    my @held = map {
        my $k = $_;
        my $pid = open my $fh, '-|' // die;
        if (!$pid) {
            alarm 0;
            my ($s2, $b2) = $d->rpc($T, 'stream.write', "held-$k", { type => 'Held', data => { k => $k } });
            print "$s2 " . (ref $b2 eq 'HASH' ? $b2->{position} // 'x' : 'x') . "\n";
            POSIX::_exit(0);
        }
        [$pid, $fh];
    } 1 .. 3;
    # a request whose body is still arriving
    my $body = json_encode(['stream.write', 'held-body', { type => 'Slow', data => { pad => 'x' x 2000 } }]);
    my $sock = $d->connect;
    $d->send_all($sock, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n"
        . substr($body, 0, 100));
    # Let the held writers reach PostgreSQL, where they wait on the lock
    # for the rest of its 5 s; and let a worker accept the slow request.
    Time::HiRes::sleep(1.5);
    my @wpids = values %{ $d->worker_pids };
    my $t0 = time;
    ok(kill('TERM', $d->pid), 'SIGTERM while requests are in flight');
    Time::HiRes::sleep(0.3);
    $d->send_all($sock, substr($body, 100));
    my ($resp) = $d->read_responses($sock, count => 1, timeout => 10);
    is($resp->[0]{status}, 200, 'the request whose body arrived after SIGTERM got 200')
        or diag($resp->[0]{raw} // 'no response');
    like($resp->[0]{headers}{connection} // '', qr/close/i, '... with Connection: close');
    for my $h (@held) {
        my $fh = $h->[1];
        my $line = <$fh> // '';
        close $fh;
        like($line, qr/^200 \d+$/, 'a write held in PostgreSQL across SIGTERM finished with 200');
    }
    waitpid $locker, 0;
    my $code = $d->stop(timeout => 10);
    my $took = time - $t0;
    ok(!$d->stop_timed_out, sprintf('the master exited by itself (%.2f s after SIGTERM)', $took));
    is($code, 0, 'exit status 0');
    cmp_ok($took, '<', 8 + 1, 'within shutdown-timeout (8 s)');
    ok($t->wait_for(sub { !grep { pid_alive($_) } @wpids }, 3), 'workers gone');
    $load->stop;
    my @l = $load->lines;
    my @fail = grep { $_->[0] eq 'fail' } @l;
    diag(scalar(@fail) . ' requests failed after the stop (expected: the server is gone)');

    my $d2 = $t->start(workers => 1, db => $d->db);
    my ($lost, $n) = $load->verify($d2, $T);
    is(scalar @$lost, 0, "no acknowledged write lost ($n stored, " . $load->count('ok') . ' acknowledged)')
        or diag(join "\n", map { join ' ', @$_ } @$lost[0 .. ($#$lost < 5 ? $#$lost : 5)]);
    my ($st3, $b3) = $d2->rpc($T, 'stream.get', 'held-body');
    is(scalar @{ $b3 || [] }, 1, 'the slow-body write is stored');
    $d2->stop;
}

# ---------------------------------------------------------------- escalation
{
    my $d = $t->start(workers => 2, args => ['--shutdown-timeout', 2, '--heartbeat-timeout', 0]);
    my $w = $d->worker_pids;
    my ($slot) = sort keys %$w;
    ok(kill('STOP', $w->{$slot}), "worker $slot frozen (SIGSTOP)");
    my $t0 = time;
    my $code = $d->stop(timeout => 10);
    my $took = time - $t0;
    is($code, 0, sprintf('SIGTERM with a frozen worker: exit 0 after %.2f s', $took));
    cmp_ok($took, '>=', 1.9, '... not before shutdown-timeout (2 s)');
    cmp_ok($took, '<', 4, '... soon after it');
    like($d->log_since_start, qr/1 workers still running after shutdown-timeout 2 s: sending SIGKILL/,
         'the escalation is logged');
    ok($t->wait_for(sub { !pid_alive($w->{$slot}) }, 3), 'the frozen worker is gone');
}

done_testing;
