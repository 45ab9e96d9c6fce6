#!/usr/bin/perl
# 51-hardening.t - battery row T24: process and deployment hardening
# (../shared/ref/reliability-security.md 4.3-4.5 and 6.3 T24).
#
#   T24a  started as root with --user: the master, every worker and (test
#         mode) the private PostgreSQL cluster run as the service user, with
#         no root group and no capabilities (CapEff/CapPrm/CapAmb = 0);
#   T24b  started through `setpriv --no-new-privs`: NoNewPrivs = 1 in every
#         process (inherited; systemd's NoNewPrivileges=yes does the same);
#         started without it, eventodbd sets no_new_privs itself;
#   T24c  the shared-memory segment: mode 0600, owned by the service user;
#         created with O_EXCL: a pre-created object of another user (empty
#         and fresh, empty and old, or a fake segment header of a dead
#         master) makes start-up fail and is left untouched; a stale
#         segment of our own user (a crashed master) is still replaced
#         (decisions.md 11);
#   T24d  /debug/* on the public port (a non-loopback client) -> 404 with
#         the body of an unknown path, whatever the credentials, except the
#         admin token in the Authorization header (decisions.md 9);
#   T24e  systemd-analyze security --offline=yes --threshold=30 and
#         systemd-analyze verify on eventodbd.service (t/95-systemd.t checks
#         the unit's lines and the stricter 2.5 threshold);
#   T24f  the libevent runtime the binary loads is >= 2.1.12-stable-8+deb12u1;
#   T24g  start-up warns about fsync=off, synchronous_commit=off and a
#         superuser database role outside test mode, and says nothing with
#         fsync=on, synchronous_commit=on and a role that only owns its
#         database (which then runs everything: migrations, ns.create,
#         writes); the workers' sessions are not superuser.
# About 30 s.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Fcntl qw(:mode);
use POSIX ();
use Cwd ();
use EventoTest qw(ADMIN_TOKEN make_token battery);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $A = ADMIN_TOKEN;
my $ROOT = $> == 0;

sub proc_status {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    my %s;
    while (my $l = <$fh>) { $s{$1} = $2 if $l =~ /^(\w+):\s*(.*?)\s*$/ }
    close $fh;
    return \%s;
}

# Every process below $pid (by PPid), and $pid itself.
sub tree {
    my ($root) = @_;
    my %kids;
    opendir my $dh, '/proc' or return ($root);
    for my $p (grep { /^\d+$/ } readdir $dh) {
        my $s = proc_status($p) or next;
        push @{ $kids{ $s->{PPid} // 0 } }, $p;
    }
    closedir $dh;
    my @out = ($root);
    for (my $i = 0; $i < @out; $i++) { push @out, @{ $kids{ $out[$i] } || [] } }
    return @out;
}

# A public (non-loopback) IPv4 address of this machine, for T24d.
my ($PUB) = map { m{inet (\d+\.\d+\.\d+\.\d+)/} ? $1 : () } grep { !/ lo / }
    split /\n/, `ip -o -4 addr show scope global 2>/dev/null`;

my $svc = EventoTest::service_user();
my ($svc_uid, $svc_gid) = (getpwnam($svc))[2, 3];

# ------------------------------------------------------------ T24a / T24c / T24d: one daemon
my $D = $t->start(workers => 2, ($PUB ? (host => $PUB) : ()));

SKIP: {
    skip 'not running as root: no privilege drop to check', 1 unless $ROOT;
    my @bad;
    my @procs = tree($D->pid);
    for my $p (@procs) {
        my $s = proc_status($p) or next;
        my @uid = split /\s+/, $s->{Uid};
        my @gid = split /\s+/, $s->{Gid};
        push @bad, "pid $p uid @uid" if grep { $_ != $svc_uid } @uid;
        push @bad, "pid $p gid @gid" if grep { $_ == 0 } @gid;
        push @bad, "pid $p groups $s->{Groups}" if grep { $_ == 0 } split /\s+/, ($s->{Groups} // '');
        for my $c (qw(CapEff CapPrm CapAmb)) {
            push @bad, "pid $p $c=$s->{$c}" if ($s->{$c} // '0') !~ /^0+$/;
        }
    }
    # Test mode's private cluster (decisions.md 2): the postgres processes too.
    my $tm = $t->start(workers => 1, test_mode => 1, no_db => 1, token => undef, health_timeout => 60);
    my ($dir) = $tm->log_since_start =~ /private PostgreSQL cluster in (\S+)/;
    my @pg;
    if ($dir) {    # the postmaster names its data directory; its children descend from it
        opendir my $dh, '/proc';
        for my $p (grep { /^\d+$/ } readdir $dh) {
            open my $fh, '<', "/proc/$p/cmdline" or next;
            my $cl = do { local $/; <$fh> } // '';
            push @pg, tree($p) if index($cl, $dir) >= 0;
        }
    }
    my @tmprocs = (tree($tm->pid), @pg);
    my %seen;
    for my $p (grep { !$seen{$_}++ } @tmprocs) {
        my $s = proc_status($p) or next;
        push @bad, "test mode pid $p ($s->{Name}) uid $s->{Uid}" if grep { $_ != $svc_uid } split /\s+/, $s->{Uid};
        push @bad, "test mode pid $p CapEff=$s->{CapEff}" if ($s->{CapEff} // '0') !~ /^0+$/;
    }
    like($tm->log_since_start, qr/running as user \Q$svc\E/, 'test mode: the log says whom it runs as');
    unlike($tm->log_since_start, qr/fsync=|superuser/, 'test mode: no durability warnings (its cluster is meant to be fast)');
    $tm->stop;
    diag($_) for @bad[0 .. ($#bad < 10 ? $#bad : 10)];
    battery('T24a', "processes run as the service user ($svc) when started as root with --user",
            sprintf('%d processes (master, workers; test mode with %d postgres processes): %d with a wrong uid/gid, root group or capabilities',
                    scalar(@procs) + scalar(keys %seen), scalar @pg, scalar @bad),
            'all processes as the service user; CapEff = 0', @procs >= 3 && @pg >= 2 && !@bad);
}

# ---- T24c: the segment
{
    my $seg = '/dev/shm' . $D->shm_name;
    my @st = stat $seg;
    my ($mode, $uid) = (@st ? S_IMODE($st[2]) : -1, $st[4] // -1);
    my @why;
    push @why, sprintf('mode %04o', $mode) if $mode != 0600;
    push @why, "owner uid $uid" if $ROOT && $uid != $svc_uid;
    push @why, "owner uid $uid (not ours)" if !$ROOT && $uid != $>;

    # Squats: objects another user made under the name the next daemon will use.
    my ($squatter) = grep { defined getpwnam($_) && getpwnam($_) != $svc_uid } qw(nobody daemon bin);
    my ($sq_uid, $sq_gid) = (getpwnam($squatter // 'nobody'))[2, 3];
    my ($squats, $refused) = (0, 0);
    SKIP: {
        skip 'not root: cannot make objects of another user', 1 unless $ROOT && defined $squatter;
        my $dead = 4_000_000;    # a pid that is not running
        $dead-- while kill 0, $dead;
        my $fake = 'EVSHM-1' . ("\0" x 17) . pack('l<', $dead) . ("\0" x (4096 - 28));
        # The last case runs the daemon as root (--allow-root): root may
        # remove anything in /dev/shm (the sticky bit does not stop it), so
        # only the owner/mode check keeps it from replacing the object.
        my @cases = (['empty, just created', '', 0], ['empty, an hour old', '', 3600],
                     ['fake header of a dead master, an hour old', $fake, 3600],
                     ['fake header of a dead master, daemon running as root', $fake, 3600, 1]);
        for my $c (@cases) {
            my ($label, $content, $age, $asroot) = @$c;
            my $port = EventoTest::free_port();
            my $path = "/dev/shm/eventodbd.$port";
            open my $fh, '>:raw', $path or die "$path: $!";
            print $fh $content;
            close $fh;
            chown $sq_uid, $sq_gid, $path;
            chmod 0666, $path;
            my $old = time - $age;
            utime $old, $old, $path;
            my @before = stat $path;
            my $x = $t->start(port => $port, expect_exit => 1, workers => 1,
                              ($asroot ? (no_user_arg => 1, args => ['--allow-root']) : ()));
            $x->stop if !defined $x->exit_code && $x->alive;
            my @after = stat $path;
            my $now = do { open my $r, '<:raw', $path; local $/; <$r> } // 'gone';
            $squats++;
            my $ok = defined $x->exit_code && $x->exit_code != 0 && !$x->timed_out
                && @after && $after[1] == $before[1] && $after[4] == $sq_uid
                && S_IMODE($after[2]) == 0666 && $now eq $content;
            $refused++ if $ok;
            ok($ok, "squat ($label): start-up fails, the object is left as it was")
                or diag('exit ' . ($x->exit_code // 'none') . "; log:\n" . $x->log_since_start);
            like($x->log_since_start, qr/shared memory segment "\/eventodbd\.$port"/, "... the log names the segment");
            unlink $path;
        }
        # Our own user's leftover (a crashed master's segment) is replaced.
        my $port = EventoTest::free_port();
        my $path = "/dev/shm/eventodbd.$port";
        open my $fh, '>:raw', $path or die;
        print $fh $fake;
        close $fh;
        chown $svc_uid, $svc_gid, $path;
        chmod 0600, $path;
        my $y = eval { $t->start(port => $port, workers => 1) };
        ok($y && ($y->log_since_start // '') =~ /removing stale shared memory segment/,
           "a stale segment of the service user's own dead master is replaced");
        $y->stop if $y;
    }
    battery('T24c', 'shm segment: mode, owner, O_EXCL against squatting',
            sprintf('mode %04o, owner %s; %d/%d squatted objects (other user, 0666) refused and untouched',
                    $mode, ($ROOT ? ($uid == $svc_uid ? "$svc" : "uid $uid") : "uid $uid"), $refused, $squats),
            'mode 0600, owner = service user, created with O_EXCL; squat -> start-up fails',
            !@why && $refused == $squats && ($squats == 4 || !$ROOT));
}

# ---- T24d: /debug/* from a non-loopback client
SKIP: {
    skip 'no non-loopback IPv4 address on this machine', 1 unless $PUB;
    my $tenant = $D->create_ns('tenant');
    my @paths = ('/debug/pprof/', '/debug/pprof/heap', '/debug/pprof/allocs', '/debug/pprof/goroutine?debug=2',
                 '/debug/pprof/workers', '/debug/pprof/profile?seconds=1', '/debug/pprof/cmdline',
                 '/debug/test/burn?ms=1', '/debug/', '/debug');
    my $nf = $D->http('GET', '/no/such/path');
    my @creds = (
        ['no credentials', {}],
        ['tenant token', { authorization => "Bearer $tenant" }],
        ['malformed token', { authorization => 'Bearer ns_nope' }],
        ['forged default token', { authorization => 'Bearer ' . make_token('default') }],
        ['admin token in ?token=', {}, "token=$A"],
        ['admin token, Basic scheme', { authorization => "Basic $A" }],
    );
    my ($n, $good, @bad) = (0, 0);
    for my $p (@paths) {
        for my $c (@creds) {
            my ($label, $h, $q) = @$c;
            my $path = $p . ($q ? ($p =~ /\?/ ? '&' : '?') . $q : '');
            my $r = $D->http('GET', $path, headers => $h);
            $n++;
            if ($r->{status} == 404 && $r->{content} eq $nf->{content}) { $good++ }
            else { push @bad, "$path with $label: $r->{status}" }
        }
    }
    # decisions.md 9: the admin token opens it (the test endpoints exist only with --enable-test-rpc).
    my $adm = $D->http('GET', '/debug/pprof/', headers => { authorization => "Bearer $A" });
    is($adm->{status}, 200, '/debug/pprof/ with the admin token from a non-loopback client: 200');
    my $adt = $D->http('GET', '/debug/test/burn?ms=1', headers => { authorization => "Bearer $A" });
    is($adt->{status}, 404, '/debug/test/* without --enable-test-rpc: 404 even for the admin');
    diag($_) for @bad[0 .. ($#bad < 10 ? $#bad : 10)];
    battery('T24d', "/debug/* from a non-loopback client ($PUB)",
            "$good/$n requests (10 paths x 6 credential states) answered 404 like an unknown path; admin token: $adm->{status}",
            '/debug/* on the public port -> 404', $n && $good == $n && $adm->{status} == 200);
}

# ------------------------------------------------------------ T24b: setpriv --no-new-privs
SKIP: {
    my $setpriv = (grep { -x "$_/setpriv" } split(/:/, $ENV{PATH} // ''), '/usr/bin', '/bin')[0];
    skip 'setpriv not installed', 1 unless $setpriv;
    my $wrap = $t->dir . '/setpriv-eventodbd';
    open my $fh, '>', $wrap or die;
    print $fh "#!/bin/sh\nexec $setpriv/setpriv --no-new-privs " . EventoTest::daemon_binary() . " \"\$@\"\n";
    close $fh;
    chmod 0755, $wrap;
    my $d;
    {
        local $ENV{EVENTODBD} = $wrap;
        $d = $t->start(workers => 2);
    }
    my @procs = tree($d->pid);
    my ($nnp, $cap0) = (0, 0);
    for my $p (@procs) {
        my $s = proc_status($p) or next;
        $nnp++ if ($s->{NoNewPrivs} // '') eq '1';
        $cap0++ if ($s->{CapEff} // '') =~ /^0+$/;
    }
    my $exe = readlink('/proc/' . $d->pid . '/exe') // '';
    like($exe, qr/eventodbd/, 'the master is eventodbd itself (setpriv exec()ed it)');
    my ($st) = $d->rpc($A, 'sys.version');
    is($st, 200, 'serves under no_new_privs');
    # Without setpriv (the daemon D above): eventodbd sets no_new_privs itself (server/main.c).
    my $own = proc_status($D->pid) // {};
    battery('T24b', 'NoNewPrivs and CapEff when started via setpriv --no-new-privs',
            sprintf('%d/%d processes NoNewPrivs=1, %d/%d CapEff=0 (started without setpriv: NoNewPrivs=%s)',
                    $nnp, scalar @procs, $cap0, scalar @procs, $own->{NoNewPrivs} // '?'),
            'CapEff = 0 and NoNewPrivs = 1', @procs >= 3 && $nnp == @procs && $cap0 == @procs
            && ($own->{NoNewPrivs} // '') eq '1');
    $d->stop;
}

# ------------------------------------------------------------ T24e: systemd-analyze
SKIP: {
    my $sa = (grep { -x "$_/systemd-analyze" } split(/:/, $ENV{PATH} // ''), '/usr/bin', '/bin')[0];
    skip 'systemd-analyze not installed', 1 unless $sa;
    my $top = EventoTest::top_dir();
    open my $fh, '<', "$top/eventodbd.service" or die "eventodbd.service: $!";
    my $unit = do { local $/; <$fh> };
    close $fh;
    # As t/95-systemd.t: verify checks that ExecStart's binary exists.
    my $dir = $t->dir . '/unit';
    mkdir $dir;
    (my $local = $unit) =~ s{/usr/sbin/eventodbd}{EventoTest::daemon_binary()}ge;
    open my $out, '>', "$dir/eventodbd.service" or die;
    print $out $local;
    close $out;
    my $v = $t->run_cmd(["$sa/systemd-analyze", 'verify', '--man=no', "$dir/eventodbd.service"], cwd => $dir);
    my $vout = $v->{stdout} . $v->{stderr};
    my $s = $t->run_cmd(["$sa/systemd-analyze", 'security', '--offline=yes', '--threshold=30', '--no-pager',
                         "$dir/eventodbd.service"], cwd => $dir);
    my ($score, $word) = $s->{stdout} =~ /Overall exposure level for \S+: ([\d.]+) (\S+)/;
    diag($vout) if length $vout;
    battery('T24e', 'systemd-analyze security --offline=yes --threshold=30 and verify on eventodbd.service',
            sprintf('security exit %d, exposure %s %s; verify exit %d, %d bytes of warnings',
                    $s->{exit}, $score // '?', $word // '', $v->{exit}, length $vout),
            'security exits 0 at threshold 30; verify clean', $s->{exit} == 0 && defined $score && $v->{exit} == 0 && !length $vout);
}

# ------------------------------------------------------------ T24f: libevent
SKIP: {
    my $dpkg = (grep { -x "$_/dpkg" } split(/:/, $ENV{PATH} // ''), '/usr/bin')[0];
    skip 'not a dpkg system', 1 unless $dpkg;
    my $ldd = $t->run_cmd(['ldd', EventoTest::daemon_binary()]);
    my @libs = $ldd->{stdout} =~ m{(libevent\S*\.so\S*) => (\S+)}g;
    my (@found, $ok) = ();
    $ok = @libs ? 1 : 0;
    while (my ($name, $path) = splice @libs, 0, 2) {
        my $real = Cwd::abs_path($path) // $path;
        my $pkg;
        for my $cand ($path, $real, map { my $x = $_; $x =~ s{^/lib/}{/usr/lib/}; $x } $path, $real) {
            my $r = $t->run_cmd(["$dpkg/dpkg", '-S', $cand]);
            ($pkg) = $r->{stdout} =~ /^([^:\s]+(?::\w+)?):/ and last if $r->{exit} == 0;
        }
        my $ver = $pkg ? $t->run_cmd(["$dpkg/dpkg-query", '-W', '-f=${Version}', $pkg])->{stdout} : '';
        my $ge = length $ver
            && $t->run_cmd(["$dpkg/dpkg", '--compare-versions', $ver, 'ge', '2.1.12-stable-8+deb12u1'])->{exit} == 0;
        push @found, sprintf('%s from %s %s', $name, $pkg // '?', $ver || '?');
        $ok &&= $ge;
    }
    battery('T24f', 'libevent runtime loaded by eventodbd', join('; ', @found) || 'no libevent found by ldd',
            '>= 2.1.12-stable-8+deb12u1 (DSA-6493-1)', $ok);
}

# ------------------------------------------------------------ T24g: durability settings and the role
{
    # D runs on the harness cluster: fsync=off, synchronous_commit=off, role postgres (a superuser).
    my $log = $D->log_since_start;
    my @warned = grep { $log =~ $_->[1] } (['fsync', qr/warn master: PostgreSQL runs with fsync=off/],
                                           ['synchronous_commit', qr/warn master: PostgreSQL synchronous_commit=off/],
                                           ['superuser', qr/warn master: database role "postgres" is a superuser/]);
    is(scalar @warned, 3, 'fsync=off, synchronous_commit=off and a superuser role: three start-up warnings')
        or diag($log);
    # A production-like setup: the cluster restarted with fsync=on and
    # synchronous_commit=on (the harness starts it with both off on its
    # command line, which ALTER SYSTEM cannot override; a restart costs
    # less than a second initdb), and a role that owns its database and
    # nothing more.
    $D->stop;
    my $t2 = $t;
    my $c = $t2->cluster_info;
    $c->{opts} =~ s/-c fsync=off/-c fsync=on/;
    $c->{opts} =~ s/-c synchronous_commit=off/-c synchronous_commit=on/;
    $t2->cluster_restart;
    $t2->psql('postgres', q{CREATE ROLE h6svc LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE});
    $t2->psql('postgres', q{CREATE DATABASE h6svc OWNER h6svc});
    is($t2->psql('h6svc', q{SELECT current_setting('fsync') || current_setting('synchronous_commit')}), 'onon',
       'restarted cluster: fsync and synchronous_commit on');
    my $url = "host=$c->{sock} port=$c->{port} dbname=h6svc user=h6svc";
    my $p = $t2->start(workers => 2, db_url => $url);
    my $plog = $p->log_since_start;
    unlike($plog, qr/fsync=|synchronous_commit=|superuser/, 'fsync=on, synchronous_commit=on, ordinary role: no warning');
    my $tok = $p->create_ns('h6');
    my ($st) = $p->rpc($tok, 'stream.write', 'h-1', { type => 'T', data => {} });
    is($st, 200, 'the ordinary role runs migrations, ns.create and writes');
    my $sess = $t2->psql('postgres', q{SELECT count(*) || ',' || count(*) FILTER (WHERE r.rolsuper)
                                      FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
                                      WHERE a.datname = 'h6svc'});
    my ($nsess, $nsuper) = split /,/, $sess;
    $p->stop;
    battery('T24g', 'start-up checks of fsync, synchronous_commit and the role (rolsuper)',
            sprintf('off/off/superuser: %d of 3 warnings; on/on/owner role: %s; its %d sessions: %d superuser',
                    scalar @warned, ($plog =~ /fsync=|synchronous_commit=|superuser/ ? 'warned' : 'silent'),
                    $nsess, $nsuper),
            'warn when fsync or synchronous_commit is off or the role is a superuser (not in test mode); role rolsuper = f',
            @warned == 3 && $plog !~ /fsync=|synchronous_commit=|superuser/ && $st == 200 && $nsess > 0 && $nsuper == 0);
}

done_testing;
