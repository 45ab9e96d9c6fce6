#!/usr/bin/perl
# 60-cli.t - the command line (decisions.md 10, api.md 11): --version,
# --help (checked against man/eventodbd.8), bad options (exit 2), the
# EVENTODB_* environment, precedence, and the --x=y and -x y forms.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN semver_re);

my $t = EventoTest->new;
my $cv = EventoTest::configure_version();

# ---- --version
{
    my $r = $t->run_eventodbd(['--version']);
    is($r->{exit}, 0, '--version exits 0');
    ok(!$r->{timed_out}, '--version returns at once');
    my ($v) = $r->{stdout} =~ /(\d+\.\d+\.\d+\S*)/;
    like($v // '', semver_re(), "--version prints a semver on stdout (" . ($v // 'none') . ')');
    is($v, $cv, '--version matches configure.ac') if defined $cv;
    is(scalar(() = $r->{stdout} =~ /\n/g), 1, '--version prints one line');
}

# ---- --help
my @opts;
{
    my $r = $t->run_eventodbd(['--help']);
    is($r->{exit}, 0, '--help exits 0');
    ok(length $r->{stdout}, '--help prints on stdout');
    for my $l (split /\n/, $r->{stdout}) {
        push @opts, $1 if $l =~ /^\s+-{1,2}([a-z][a-z0-9-]+)/;
    }
    my %have = map { $_ => 1 } @opts;
    for my $o (qw(port host db-url token test-mode workers log-level log-format db-pool max-body max-header
                  header-timeout body-timeout idle-timeout max-conns user help version)) {
        ok($have{$o}, "--help lists --$o");
    }
    my $h = $t->run_eventodbd(['-h']);
    is($h->{exit}, 0, '-h exits 0');
    is($h->{stdout}, $r->{stdout}, '-h prints the same help');
}

# ---- man page covers every option --help lists
{
    my $man = EventoTest::top_dir() . '/man/eventodbd.8';
    ok(-f $man, 'man/eventodbd.8 exists');
    my $txt = '';
    if (open my $fh, '<', $man) { local $/; $txt = <$fh>; close $fh }
    for my $o (@opts) {
        # roff: \-\-name or --name; mdoc: Fl \-name (Fl adds the first dash)
        like($txt, qr/(?:\\-\\-|--|\bFl\s+\\?-)\Q$o\E(?![a-z0-9-])/, "man page documents --$o");
    }
}

# ---- bad options: exit 2 without starting
for my $case ([['--bogus-option'], 'unknown long option'], [['-bogus'], 'unknown single-dash option'],
              [['--port', 'notanumber'], 'non-numeric --port'], [['--workers'], 'missing value']) {
    my $r = $t->run_eventodbd($case->[0], timeout => 10);
    ok(!$r->{timed_out}, "$case->[1]: returns at once");
    is($r->{exit}, 2, "$case->[1]: exit 2") or diag($r->{stdout} . $r->{stderr});
    ok(length $r->{stderr}, "$case->[1]: says why on stderr");
}
{
    my $r = $t->run_eventodbd(['--port', EventoTest::free_port(), '--host', '127.0.0.1'], timeout => 10);
    ok(!$r->{timed_out}, 'no --db-url and no --test-mode: returns at once');
    isnt($r->{exit}, 0, 'no --db-url and no --test-mode: non-zero exit');
    like($r->{stderr} . $r->{stdout}, qr/db-url|database/i, '... and names the missing database URL');
}

sub serves {
    my ($d, $name) = @_;
    is($d->http('GET', '/health')->{status}, 200, "$name: /health");
    my ($st) = $d->rpc(ADMIN_TOKEN, 'sys.version');
    is($st, 200, "$name: admin token works");
}

# ---- EVENTODB_PORT
{
    my $p = EventoTest::free_port();
    my $d = $t->start(port => $p, no_port_arg => 1, env => { EVENTODB_PORT => $p });
    is($d->port, $p, 'EVENTODB_PORT: daemon up on that port');
    serves($d, 'EVENTODB_PORT');
    $d->stop;
}

# ---- flag beats environment
{
    my $envp = EventoTest::free_port();
    my $d = $t->start(env => { EVENTODB_PORT => $envp });
    serves($d, '--port with a different EVENTODB_PORT');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $envp, Proto => 'tcp', Timeout => 2);
    ok(!$s, '... the EVENTODB_PORT port is not used');
    $d->stop;
}

# ---- EVENTODB_DB_URL and EVENTODB_TOKEN
{
    my $db = $t->createdb;
    my $d = $t->start(db => $db, no_db_arg => 1, token => undef,
                      env => { EVENTODB_DB_URL => $t->db_url($db), EVENTODB_TOKEN => ADMIN_TOKEN });
    serves($d, 'EVENTODB_DB_URL and EVENTODB_TOKEN');
    $d->stop;
}

# ---- option syntaxes
{
    my $d = $t->start(style => 'single');
    like(join(' ', $d->argv), qr/^-port \d+ -host /, 'single-dash form used (-port N -host H ...)');
    serves($d, 'single-dash options');
    $d->stop;
    $d = $t->start(style => 'eq');
    like(join(' ', $d->argv), qr/^--port=\d+ --host=/, '--x=y form used');
    serves($d, '--x=y options');
    $d->stop;
    $d = $t->start(style => 'single', args => ['-log-level', 'debug']);
    serves($d, 'single-dash -log-level debug');
    $d->stop;
    $d = $t->start(args => ['--log-level=warn', '--db-pool', '2', '--max-conns=100', '--idle-timeout', '30']);
    serves($d, 'mixed forms of other options');
    $d->stop;
}

done_testing;
