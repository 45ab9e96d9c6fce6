#!/usr/bin/perl
# 95-systemd.t - the unit file and "make install" (issue 7):
#   - eventodbd.service: Type=notify, ExecReload validates before it
#     signals, KillMode=mixed, an unprivileged User=, and every hardening
#     directive preceded by a comment saying why;
#   - "systemd-analyze verify" and "systemd-analyze security --offline=yes"
#     pass (skipped where systemd-analyze is missing; .ci/run installs it);
#   - "make install DESTDIR=..." installs the daemon, the unit (with the
#     install paths), both man pages and the sample configuration.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest;

my $t = EventoTest->new(need => []);
my $top = EventoTest::top_dir();
my $unit_file = "$top/eventodbd.service";
ok(-f $unit_file, 'eventodbd.service is in the tree');
open my $fh, '<', $unit_file or die "$unit_file: $!";
my @lines = <$fh>;
close $fh;
chomp @lines;
my $unit = join "\n", @lines;

like($unit, qr/^Type=notify$/m, 'Type=notify');
like($unit, qr/^NotifyAccess=main$/m, 'NotifyAccess=main');
like($unit, qr/^KillMode=mixed$/m, 'KillMode=mixed');
like($unit, qr/^Documentation=man:eventodbd\(8\)/m, 'Documentation=man:eventodbd(8)');
like($unit, qr/^User=(?!root)\w+$/m, 'runs as an unprivileged user');
my @reload = $unit =~ /^ExecReload=(.*)$/mg;
is(scalar @reload, 2, 'two ExecReload lines');
like($reload[0] // '', qr/eventodbd --check-config --config \S+/, 'first: eventodbd --check-config');
like($reload[1] // '', qr{^/bin/kill -HUP \$MAINPID$}, 'then: kill -HUP $MAINPID');
my ($conf) = $unit =~ /^ExecStart=\S+ --config (\S+)$/m;
ok($conf, "ExecStart names the configuration file ($conf)");

my @hardening = qw(NoNewPrivileges ProtectSystem ProtectHome PrivateTmp PrivateDevices
    ProtectKernelTunables ProtectKernelModules ProtectKernelLogs ProtectControlGroups
    RestrictAddressFamilies MemoryDenyWriteExecute SystemCallFilter LockPersonality
    RestrictNamespaces RestrictRealtime CapabilityBoundingSet);
for my $k (@hardening) {
    my ($i) = grep { $lines[$_] =~ /^\Q$k\E=/ } 0 .. $#lines;
    ok(defined $i, "$k is set");
    next unless defined $i;
    my $j = $i - 1;
    $j-- while $j >= 0 && $lines[$j] =~ /^[A-Za-z]+=/;    # a group of related lines shares a comment
    like($lines[$j] // '', qr/^#\s*\S/, "$k has a comment saying why");
}
like($unit, qr/^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$/m, 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6');
like($unit, qr/^SystemCallFilter=\@system-service$/m, 'SystemCallFilter=@system-service');
like($unit, qr/^CapabilityBoundingSet=$/m, 'CapabilityBoundingSet= (empty)');
like($unit, qr/^ProtectSystem=strict$/m, 'ProtectSystem=strict');

my $sa = (grep { -x "$_/systemd-analyze" } split(/:/, $ENV{PATH} // ''), '/usr/bin', '/bin')[0];
SKIP: {
    skip 'systemd-analyze not installed', 4 unless $sa;
    skip 'the daemon binary is missing', 4 unless $t->has('daemon');
    # verify checks that ExecStart's binary exists: point it at the build.
    my $bin = EventoTest::daemon_binary();
    my $dir = $t->dir . '/unit';
    mkdir $dir;
    (my $local = $unit) =~ s{/usr/sbin/eventodbd}{$bin}g;
    open my $out, '>', "$dir/eventodbd.service" or die;
    print $out "$local\n";
    close $out;
    my $r = $t->run_cmd(["$sa/systemd-analyze", 'verify', '--man=no', "$dir/eventodbd.service"], cwd => $dir);
    is($r->{exit}, 0, 'systemd-analyze verify passes') or diag($r->{stdout} . $r->{stderr});
    is($r->{stdout} . $r->{stderr}, '', 'systemd-analyze verify prints no warning');
    $r = $t->run_cmd(["$sa/systemd-analyze", 'security', '--offline=yes', '--threshold=25', '--no-pager',
                      "$dir/eventodbd.service"], cwd => $dir);
    is($r->{exit}, 0, 'systemd-analyze security --offline=yes passes (threshold 2.5)')
        or diag($r->{stdout} . $r->{stderr});
    my ($score) = $r->{stdout} =~ /Overall exposure level for \S+: ([\d.]+)/;
    ok(defined $score && $score <= 2.5, 'exposure level ' . ($score // '?') . ' (OK is below 4.0)');
}

SKIP: {
    my $build = $ENV{EVENTODB_BUILDDIR} // (-f "$top/Makefile" ? $top : undef);
    skip 'no configured build tree (set EVENTODB_BUILDDIR)', 7 unless $build && -f "$build/Makefile";
    my $dest = $t->dir . '/destdir';
    my $r = $t->run_cmd(['make', '-C', $build, 'install', "DESTDIR=$dest", 'prefix=/usr', 'sysconfdir=/etc'],
                        timeout => 300);
    is($r->{exit}, 0, 'make install DESTDIR=... prefix=/usr sysconfdir=/etc') or diag($r->{stdout} . $r->{stderr});
    ok(-x "$dest/usr/sbin/eventodbd", 'installs sbin/eventodbd');
    my $iu = "$dest/usr/lib/systemd/system/eventodbd.service";
    ok(-f $iu, 'installs lib/systemd/system/eventodbd.service');
    my $txt = -f $iu ? do { local (@ARGV, $/) = $iu; <> } : '';
    like($txt, qr{^ExecStart=/usr/sbin/eventodbd --config /etc/eventodbd\.conf$}m, '... with the install paths');
    ok(-f "$dest/usr/share/man/man8/eventodbd.8", 'installs eventodbd(8)');
    ok(-f "$dest/usr/share/man/man5/eventodbd.conf.5", 'installs eventodbd.conf(5)');
    ok(-f "$dest/usr/share/doc/eventodbd/eventodbd.conf.sample", 'installs the sample configuration');
}

done_testing;
