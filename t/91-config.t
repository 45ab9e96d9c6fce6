#!/usr/bin/perl
# 91-config.t - the configuration (issue 7, decisions.md 10): one option
# table behind --help, the man pages and the sample file (kept in step
# here); the configuration file and the precedence flag > environment >
# file > default; --check-config and --print-config; refusing to serve
# as root and running as --user.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest qw(ADMIN_TOKEN pid_alive);

my $t = EventoTest->new;
my $top = EventoTest::top_dir();

sub slurp { my $f = shift; open my $fh, '<', $f or return ''; local $/; my $s = <$fh>; close $fh; $s }
sub spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh; chmod 0644, $f }

# ---------------------------------------------------------------- the table
my $help = $t->run_eventodbd(['--help']);
is($help->{exit}, 0, '--help');
my (%opt, @sigs);
{
    my $in = '';
    for my $l (split /\n/, $help->{stdout}) {
        $in = 'o' if $l =~ /^options/;
        $in = 's' if $l =~ /^signals/;
        if ($in eq 'o' && $l =~ /^  --([a-z][a-z0-9-]+)(?: [A-Z]+)?\s+(.*)$/) {
            my ($name, $h) = ($1, $2);
            next if $name eq 'help' || $name eq 'version';
            $opt{$name} = { restart => ($h =~ /\[restart\]/ ? 1 : 0), help => $h };
        } elsif ($in eq 's' && $l =~ /^  (SIG[A-Z]+)\s+(.*)$/) {
            push @sigs, [$1, $2];
        }
    }
}
cmp_ok(scalar keys %opt, '>=', 25, scalar(keys %opt) . ' options in --help');
ok($opt{$_}, "--help lists --$_") for qw(config check-config print-config user group allow-root shutdown-timeout heartbeat-timeout);
ok($opt{$_}{restart}, "--$_ is marked [restart]") for qw(port host db-url test-mode token user group);
ok(!$opt{$_}{restart}, "--$_ is reloadable") for qw(workers max-conns idle-timeout log-level shutdown-timeout heartbeat-timeout);
my %cli_only = map { $_ => 1 } qw(config check-config print-config);

# ---------------------------------------------------------------- docs in step
my $man8 = slurp("$top/man/eventodbd.8");
my $man5 = slurp("$top/man/eventodbd.conf.5");
my $sample = slurp("$top/etc/eventodbd.conf.sample");
ok(length $man8 && length $man5 && length $sample, 'eventodbd.8, eventodbd.conf.5 and the sample exist');
my %items5;
for my $chunk (split /^(?=\.It Cm )/m, $man5) {
    $items5{$1} = $chunk if $chunk =~ /^\.It Cm ([a-z0-9-]+)/;
}
my %items8;
for my $chunk (split /^(?=\.It Fl )/m, $man8) {
    $items8{$1} = $chunk if $chunk =~ /^\.It Fl \\-([a-z0-9-]+)/;
}
for my $o (sort keys %opt) {
    ok($items8{$o}, "eventodbd(8) documents --$o");
    if ($items8{$o} && !$cli_only{$o}) {
        is($items8{$o} =~ /\[restart\]/ ? 1 : 0, $opt{$o}{restart},
           "eventodbd(8): --$o " . ($opt{$o}{restart} ? 'marked' : 'not marked') . ' [restart]');
    }
    if ($cli_only{$o}) {
        like($man5, qr/\b\Q$o\E\b/, "eventodbd.conf(5) mentions $o (command line only)");
        like($sample, qr/--\Q$o\E\b/, "the sample mentions --$o (command line only)");
        next;
    }
    ok($items5{$o}, "eventodbd.conf(5) documents $o");
    is(($items5{$o} // '') =~ /Needs a restart/ ? 1 : 0, $opt{$o}{restart},
       "eventodbd.conf(5): $o " . ($opt{$o}{restart} ? 'needs' : 'does not need') . ' a restart');
    like($sample, qr/^#?\Q$o\E =/m, "the sample configuration lists $o");
}
for my $k (sort keys %items5) {
    ok($opt{$k}, "eventodbd.conf(5) documents no unknown setting ($k)");
}
{
    my $r = $t->run_eventodbd(['--print-config']);
    is($r->{exit}, 1, '--print-config with nothing set: exit 1 (no db-url), printed anyway');
    is($r->{stdout}, $sample, 'etc/eventodbd.conf.sample is exactly "eventodbd --print-config"')
        or diag('regenerate: ./eventodbd --print-config > etc/eventodbd.conf.sample');
}
{
    my ($sec) = $man8 =~ /^\.Sh SIGNALS\n(.*?)^\.Sh /ms;
    $sec //= '';
    (my $flat = $sec) =~ s/\s+/ /g;
    for my $s (@sigs) {
        my ($name, $text) = @$s;
        like($sec, qr/^\.It Dv \Q$name\E$/m, "eventodbd(8) SIGNALS lists $name");
        (my $want = $text) =~ s/\s+/ /g;
        ok(index($flat, $want) >= 0, "eventodbd(8) SIGNALS says what --help says for $name");
    }
}
SKIP: {
    my $mandoc = (grep { -x "$_/mandoc" } split /:/, $ENV{PATH} // '')[0];
    skip 'mandoc not installed', 1 unless $mandoc;
    for my $page (glob("$top/man/*.[1-9]")) {
        my $r = $t->run_cmd(["$mandoc/mandoc", '-T', 'lint', '-W', 'warning', $page]);
        is($r->{exit}, 0, "mandoc -T lint -W warning: " . ($page =~ s{.*/}{}r))
            or diag($r->{stdout} . $r->{stderr});
    }
}

# ---------------------------------------------------------------- file, env, flags
my $dir = $t->dir;
sub pc {
    my ($args, %env) = @_;
    my $r = $t->run_eventodbd(['--print-config', @$args], env => \%env);
    my %v;
    my $from = 'default';
    for my $l (split /\n/, $r->{stdout}) {
        if ($l =~ /^# \(from (.*)\)$/) { $from = $1; next }
        if ($l =~ /^([a-z][a-z0-9-]*) = (.*)$/) { $v{$1} = [$2, $from]; $from = 'default'; next }
        $from = 'default' if $l =~ /^#[a-z]/;
    }
    return ($r, \%v);
}
my $f1 = "$dir/a.conf";
spew($f1, <<"EOF");
# a comment
   # an indented comment

port = 9001
workers = 3   # inline comment
db_pool = 2
log-level = "warn"
host = "127.0.0.1"
idle-timeout=45
test-mode = yes
EOF
{
    my ($r, $v) = pc(['--config', $f1]);
    is($r->{exit}, 0, 'a configuration file with comments, quotes, underscores: valid') or diag($r->{stderr});
    is_deeply($v->{port}, ['9001', $f1], 'port from the file');
    is_deeply($v->{'db-pool'}, ['2', $f1], 'db_pool = 2 (underscore) from the file');
    is_deeply($v->{'log-level'}, ['warn', $f1], 'quoted value');
    is_deeply($v->{workers}, ['3', $f1], 'inline comment stripped');
    is_deeply($v->{'idle-timeout'}, ['45', $f1], 'no blanks around =');
    ($r, $v) = pc(['--config', $f1], EVENTODB_WORKERS => 5, EVENTODB_PORT => 9002);
    is_deeply($v->{workers}, ['5', 'the environment: EVENTODB_WORKERS'], 'environment beats the file');
    ($r, $v) = pc(['--config', $f1, '--workers', 7], EVENTODB_WORKERS => 5);
    is_deeply($v->{workers}, ['7', 'the command line'], 'flag beats environment and file');
    is_deeply($v->{port}, ['9001', $f1], '... and the file still beats the default');
    ($r, $v) = pc([], EVENTODB_CONFIG => $f1);
    is_deeply($v->{port}, ['9001', $f1], 'EVENTODB_CONFIG names the file');
    ($r, $v) = pc(['--config', $f1, '--token', ADMIN_TOKEN, '--db-url', 'host=/nowhere dbname=x']);
    unlike($r->{stdout}, qr/ns_ZGVm|nowhere/, 'secrets are not printed');
}

# ---------------------------------------------------------------- --check-config
sub cc {
    my ($args, %env) = @_;
    return $t->run_eventodbd(['--check-config', @$args], env => \%env, timeout => 10);
}
{
    my $r = cc(['--config', $f1]);
    is($r->{exit}, 0, '--check-config: valid file, exit 0');
    like($r->{stdout}, qr/configuration is valid/, '... and says so');
    $r = cc(['--test-mode']);
    is($r->{exit}, 0, '--check-config --test-mode (no file): exit 0');
    $r = cc([]);
    is($r->{exit}, 1, '--check-config without db-url or test mode: exit 1');
    like($r->{stderr}, qr/db-url is required/, '... naming db-url');
    $r = cc(['--test-mode', '--bogus']);
    is($r->{exit}, 1, '--check-config with an unknown flag: exit 1 (not 2)');
    $r = cc(['--test-mode', '--port', '70000']);
    is($r->{exit}, 1, '--check-config with port 70000: exit 1');
    $r = cc(['--test-mode'], EVENTODB_CONFIG => "$dir/missing.conf");
    is($r->{exit}, 1, 'missing file: exit 1');
    like($r->{stderr}, qr/could not open configuration file ".*missing\.conf"/, '... says which');
    $r = cc(['--test-mode', '--user', 'no-such-user-xyz']);
    is($r->{exit}, 1, 'unknown --user: exit 1');
    like($r->{stderr}, qr/user "no-such-user-xyz" does not exist/, '... says so');
    my @bad = (
        ["portt = 1\n",                  qr/:1: unknown setting "portt"/,          'unknown setting'],
        ["port = 1\nport = 2\n",          qr/:2: "port" is already set on line 1/,  'a setting given twice'],
        ["\n\nport 8080\n",               qr/:3: expected "name = value"/,          'no ='],
        ["port = eighty\n",              qr/:1: invalid value "eighty" for "port"/, 'a malformed number'],
        ["test-mode = maybe\n",          qr/:1: invalid value "maybe"/,             'a malformed boolean'],
        ["host = \"127.0.0.1\n",         qr/:1: badly quoted value/,                'an unterminated quote'],
        ["config = /etc/x.conf\n",       qr/:1: "config" cannot be set in a configuration file/, 'config in the file'],
        ["check-config = true\n",        qr/cannot be set in a configuration file/, 'an action in the file'],
        ["token = ns_secret_value_x\nmax-conns = 0\n", qr/limits must be positive/, 'a value out of range'],
    );
    for my $b (@bad) {
        my ($txt, $re, $name) = @$b;
        spew("$dir/bad.conf", $txt);
        $r = cc(['--test-mode', '--config', "$dir/bad.conf"]);
        is($r->{exit}, 1, "--check-config, $name: exit 1");
        like($r->{stderr}, $re, "... $name: the reason, with file and line") or diag($r->{stderr});
        unlike($r->{stderr}, qr/ns_secret/, "... $name: no secret in the message");
    }
    spew("$dir/bad.conf", "token = ns_notanumber\nworkers = many\n");
    $r = $t->run_eventodbd(['--test-mode', '--config', "$dir/bad.conf", '--port', EventoTest::free_port()], timeout => 10);
    is($r->{exit}, 2, 'starting with an invalid file: exit 2 at once');
    $r = cc(['--test-mode'], EVENTODB_WORKERS => 'many');
    is($r->{exit}, 0, 'a malformed environment value is ignored (as the original)');
    like($r->{stderr}, qr/ignoring EVENTODB_WORKERS/, '... with a warning');
}

# ---------------------------------------------------------------- a daemon using the file
{
    my $f2 = "$dir/d.conf";
    spew($f2, "workers = 3\nlog-format = json\n");
    my $d = $t->start(workers => undef, args => ['--config', $f2]);
    ok($t->wait_for(sub { my $l = $d->log_since_start; () = $l =~ /worker \d started pid=/g; scalar(() = $l =~ /worker \d started pid=/g) >= 3 }, 10),
       'workers = 3 from the file: three workers');
    like($d->log_since_start, qr/^\{"ts":/m, 'log-format = json from the file');
    is($d->stop, 0, 'stopped');
}

# ---------------------------------------------------------------- root
SKIP: {
    skip 'not running as root', 14 unless $> == 0;
    my $su = EventoTest::service_user();
    my @pw = getpwnam($su);
    my $d = $t->start(workers => 2);    # the harness passes --user $su as root
    like($d->log_since_start, qr/running as user \Q$su\E uid=$pw[2]/, "started as root: runs as $su");
    my $uid_of = sub { open my $fh, '<', "/proc/$_[0]/status" or return -1; my ($u) = join('', <$fh>) =~ /^Uid:\s+\d+\s+(\d+)/m; $u };
    is($uid_of->($d->pid), $pw[2], 'the master runs as that user (effective uid)');
    is($uid_of->($_), $pw[2], "worker pid $_ runs as that user") for values %{ $d->worker_pids };
    my ($st) = $d->rpc(ADMIN_TOKEN, 'stream.write', 'as-user-1', { type => 'T', data => {} });
    is($st, 200, 'and serves');
    $d->stop;

    my $r = $t->run_eventodbd(['--port', EventoTest::free_port(), '--host', '127.0.0.1',
                               '--db-url', $t->db_url($t->createdb)], timeout => 15);
    is($r->{exit}, 1, 'as root without --user: exit 1');
    like($r->{stderr} . $r->{stdout}, qr/refusing to run as root: give --user USER/, '... refusing, and saying what to do');
    $r = $t->run_eventodbd(['--port', EventoTest::free_port(), '--test-mode', '--user', 'root'], timeout => 15);
    is($r->{exit}, 1, '--user root without --allow-root: exit 1');
    like($r->{stderr} . $r->{stdout}, qr/refusing to run as root \(--user root\)/, '... refusing');

    my $d2 = $t->start(workers => 1, no_user_arg => 1, args => ['--allow-root']);
    like($d2->log_since_start, qr/running as root \(--allow-root\)/, '--allow-root: a warning');
    is($uid_of->($d2->pid), 0, '--allow-root: runs as root');
    $d2->stop;

    my $d3 = $t->start(workers => 1, user => 'nobody', args => ['--group', 'nogroup']);
    my @nb = getpwnam('nobody');
    is($uid_of->($d3->pid), $nb[2], '--user nobody --group nogroup: runs as nobody');
    open my $fh, '<', '/proc/' . $d3->pid . '/status';
    my ($gid) = join('', <$fh>) =~ /^Gid:\s+\d+\s+(\d+)/m;
    is($gid, scalar getgrnam('nogroup'), '... in group nogroup');
    $d3->stop;
}

done_testing;
