package EventoTest;

# EventoTest - the one harness of the eventodbd TAP suite (t/*.t).
#
# Each test file makes one EventoTest object.  It owns a short temporary
# directory, a private PostgreSQL cluster started on first use (initdb +
# pg_ctl, unix socket only, no fsync), and any number of eventodbd daemons,
# each on a free port with a fresh database of its own.  Everything is
# stopped and removed in an END block, also when the test dies or gets
# SIGINT/SIGTERM/SIGALRM (watchdog).
#
# Core Perl modules only.  Environment:
#   EVENTODBD                     daemon binary (default <top>/eventodbd)
#   EVENTODB_TOP                  source tree top (default: from this file)
#   EVENTODB_PG_BINDIR            PostgreSQL binaries (default: highest
#                                 /usr/lib/postgresql/*/bin)
#   EVENTODB_TEST_TIMEOUT_MULT    multiply every deadline (slow machines)
#   EVENTODB_TEST_LEAVE=1         keep the temporary directory, print it
#   EVENTODB_TEST_CATLOG=1        print every daemon log at the end
#   EVENTODB_TEST_EXTERNAL=h:p    run against an already running server
#                                 (only files that pass external_ok => 1)
#   EVENTODB_TEST_WATCHDOG=secs   hard limit per test file (default 240)
#
# Typical use:
#   use lib 't/lib'; use Test::More; use EventoTest;
#   my $t = EventoTest->new;            # skip_all if eventodbd is missing
#   $t->start(workers => 2);            # first daemon = $t's default
#   my ($st, $body) = $t->rpc($t->admin_token, 'sys.version');

use strict;
use warnings;

use B ();
use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex);
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Exporter 'import';
use File::Basename qw(dirname);
use File::Path qw(rmtree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use Socket ();
use MIME::Base64 qw(encode_base64url);
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Test::More ();
use Time::HiRes ();
use Time::Local qw(timegm);

our @EXPORT_OK = qw(
    ADMIN_TOKEN mult json_encode json_decode jtype num make_token
    rfc3339_epoch pid_alive parse_responses uuid_re semver_re sha256_hex arr obj
    battery battery_full new_id put_file
);

use constant ADMIN_TOKEN =>
    'ns_ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000';

my $JSON_ENC = JSON::PP->new->utf8->canonical->allow_nonref;
my $JSON_DEC = JSON::PP->new->utf8->allow_nonref;

our @ALL;           # every live EventoTest object (for END)
my $SEQ = 0;        # database / log name counter

# Under `make battery` a file that fails says so in the rows file, with
# its failed tests' names and the message it died of, so the table's end
# names it: CI shows only the last lines of a run, where prove's own
# summary (and the failure's diagnostics) have long scrolled away.
my $MAIN_PID = $$;
my $LAST_DIE;
$SIG{__DIE__} = sub { $LAST_DIE = $_[0] unless $^S } unless $SIG{__DIE__};

# ---------------------------------------------------------------------------
# small pure helpers (exportable)

# battery(ID, TITLE, FIGURE, PASS_FIGURE, OK): one row of the reliability
# and security battery (make battery; ../shared/ref/reliability-security.md
# section 6).  It is a TAP test (ok OK, "ID TITLE: FIGURE (pass: PASS)")
# and, when EVENTODB_BATTERY_OUT names a file, a tab-separated line
# appended to it that tools/battery-report turns into the table.
# FIGURE is what was measured, PASS_FIGURE what it must meet.
sub battery {
    my ($id, $title, $figure, $pass, $ok) = @_;
    $ok = $ok ? 1 : 0;
    for ($id, $title, $figure, $pass) { $_ //= ''; s/[\t\r\n]+/ /g }
    if (my $out = $ENV{EVENTODB_BATTERY_OUT}) {
        if (open my $fh, '>>', $out) {
            # the file's name last: the report knows which file owes which row
            (my $file = $0) =~ s{.*/}{};
            printf {$fh} "%s\t%s\t%s\t%s\t%s\t%s\n", $id, $title, $figure, $pass,
                $ok ? 'PASS' : 'FAIL', $file;
            close $fh;
        }
    }
    return Test::More::ok($ok, "$id $title: $figure (pass: $pass)");
}

# True when the battery runs its long tier (EVENTODB_BATTERY_FULL=1):
# tests then use the durations of the nightly tier instead of CI's.
sub battery_full { return ($ENV{EVENTODB_BATTERY_FULL} // '') =~ /^[1-9yY]/ ? 1 : 0 }

sub mult {
    my $m = $ENV{EVENTODB_TEST_TIMEOUT_MULT};
    return (defined $m && $m =~ /^\d+(\.\d+)?$/ && $m > 0) ? $m : 1;
}

sub json_encode { return $JSON_ENC->encode($_[0]) }

# Decode JSON text (bytes).  Returns (1, value) or (0, error).
sub json_decode {
    my ($text) = @_;
    my $v = eval { $JSON_DEC->decode($text) };
    return $@ ? (0, $@) : (1, $v);
}

# arr($x) / obj($x): $x if it is an array / hash reference, else a fresh
# empty one, so a test reports a wrong answer instead of dying on it.
sub arr { return ref $_[0] eq 'ARRAY' ? $_[0] : [] }
sub obj { return ref $_[0] eq 'HASH' ? $_[0] : {} }

# Force a Perl value to be sent as a JSON number.
sub num { return 0 + $_[0] }

# A random UUID (version 4), e.g. for options.id.
# new_id(): a random UUID (version 4) from the kernel's generator, not
# Perl's rand: forked writers seeded from their pid and the time could
# repeat each other's sequences (pid ^ ms collides for consecutive pids
# forked a millisecond apart), and the server rightly answered the second
# writer 409 MESSAGE_ID_CONFLICT (battery T08b, seen once in CI).
my ($urandom, $urandom_pid) = (undef, 0);
sub new_id {
    if (!$urandom || $urandom_pid != $$) {
        open($urandom, '<:raw', '/dev/urandom') or die "/dev/urandom: $!";
        $urandom_pid = $$;
    }
    read($urandom, my $raw, 16) == 16 or die "/dev/urandom: short read";
    my @b = unpack 'C16', $raw;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $h = join '', map { sprintf '%02x', $_ } @b;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4), substr($h, 16, 4), substr($h, 20);
}

# put_file(PATH, TEXT): replace PATH atomically (write PATH.tmp, mode 0644,
# rename), so a reader (the daemon) never sees half a file.
sub put_file {
    my ($path, $text) = @_;
    open my $fh, '>', "$path.tmp" or die "$path: $!";
    print $fh $text;
    close $fh or die "$path: $!";
    chmod 0644, "$path.tmp";
    rename "$path.tmp", $path or die "rename: $!";
}

sub uuid_re { qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/ }
sub semver_re { qr/^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$/ }

# JSON type of a value found at @path inside raw JSON text, decoded afresh
# (flags of an already-used Perl scalar cannot be trusted).  Returns one of
# null bool int number string array object, or undef if the path is missing.
sub jtype {
    my ($raw, @path) = @_;
    my ($ok, $v) = json_decode($raw);
    return undef unless $ok;
    for my $k (@path) {
        if (ref $v eq 'HASH') { return undef unless exists $v->{$k}; $v = $v->{$k} }
        elsif (ref $v eq 'ARRAY') { return undef unless $k < @$v; $v = $v->[$k] }
        else { return undef }
    }
    return _type_of($v);
}

sub _type_of {
    my ($v) = @_;
    return 'null' unless defined $v;
    if (ref $v) {
        return 'array'  if ref $v eq 'ARRAY';
        return 'object' if ref $v eq 'HASH';
        return 'bool'   if JSON::PP::is_bool($v);
        return 'number' if ref($v) =~ /^Math::Big/;
        return ref $v;
    }
    my $f = B::svref_2object(\$v)->FLAGS;
    return 'string' if $f & B::SVp_POK;
    return 'int'    if $f & B::SVp_IOK;
    return 'number' if $f & B::SVp_NOK;
    return 'string';
}

# Token for namespace $ns with random part $hex (default: random).
sub make_token {
    my ($ns, $hex) = @_;
    my $bytes = $ns;
    utf8::encode($bytes);    # namespace ids are character strings
    $hex //= join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
    return 'ns_' . encode_base64url($bytes) . '_' . $hex;
}

# RFC 3339 UTC time ("...Z") to epoch seconds (float), undef if malformed.
sub rfc3339_epoch {
    my ($s) = @_;
    return undef unless defined $s && !ref $s;
    my ($Y, $M, $D, $h, $m, $sec, $frac) =
        $s =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z$/ or return undef;
    my $t = eval { timegm($sec, $m, $h, $D, $M - 1, $Y) };
    return undef unless defined $t;
    return $t + ($frac ? "0$frac" : 0);
}

# True if $pid is a live process (a zombie counts as dead: orphans are not
# always reaped promptly in containers).
sub pid_alive {
    my ($pid) = @_;
    return 0 unless $pid && $pid > 1;
    return 0 unless kill 0, $pid;
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $st = <$fh> // '';
        close $fh;
        return 0 if $st =~ /^\d+ \(.*\) [ZX] /s;
    }
    return 1;
}

# Parse a byte string holding zero or more HTTP/1.x responses.  Returns
# (\@responses, $rest, $error).  Each response: {status, reason, version,
# headers => {lc name => last value}, header_list => [[name, value]...],
# body, raw}.  A response without length information consumes the rest
# only when $eof is true.
sub parse_responses {
    my ($buf, $eof) = @_;
    my @out;
    while (length $buf) {
        my $hend = index $buf, "\r\n\r\n";
        return (\@out, $buf, undef) if $hend < 0;
        my $head = substr $buf, 0, $hend;
        my @lines = split /\r\n/, $head;
        my $sl = shift @lines;
        my ($ver, $status, $reason) = $sl =~ m{^(HTTP/\d\.\d) (\d{3})(?: (.*))?$}
            or return (\@out, $buf, "bad status line: $sl");
        my (%h, @hl);
        for my $l (@lines) {
            my ($n, $v) = $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
            push @hl, [$n, $v];
            $h{lc $n} = $v;
        }
        my $pos = $hend + 4;
        my $body;
        if ($status =~ /^1/ || $status == 204 || $status == 304) {
            $body = '';
        } elsif (($h{'transfer-encoding'} // '') =~ /chunked/i) {
            $body = '';
            my $p = $pos;
            while (1) {
                my $le = index $buf, "\r\n", $p;
                return (\@out, $buf, undef) if $le < 0;
                my ($size) = substr($buf, $p, $le - $p) =~ /^([0-9a-fA-F]+)/;
                return (\@out, $buf, 'bad chunk size') unless defined $size;
                $size = hex $size;
                $p = $le + 2;
                if ($size == 0) {
                    # trailers until an empty line
                    while (1) {
                        my $te = index $buf, "\r\n", $p;
                        return (\@out, $buf, undef) if $te < 0;
                        my $empty = $te == $p;
                        $p = $te + 2;
                        last if $empty;
                    }
                    last;
                }
                return (\@out, $buf, undef) if length($buf) < $p + $size + 2;
                $body .= substr $buf, $p, $size;
                $p += $size + 2;
            }
            $pos = $p;
        } elsif (defined $h{'content-length'}) {
            my $cl = $h{'content-length'};
            return (\@out, $buf, "bad content-length $cl") unless $cl =~ /^\d+$/;
            return (\@out, $buf, undef) if length($buf) < $pos + $cl;
            $body = substr $buf, $pos, $cl;
            $pos += $cl;
        } else {
            return (\@out, $buf, undef) unless $eof;
            $body = substr $buf, $pos;
            $pos = length $buf;
        }
        push @out, {
            version => $ver, status => 0 + $status, reason => $reason // '',
            headers => \%h, header_list => \@hl, body => $body,
            raw => substr($buf, 0, $pos),
        };
        $buf = substr $buf, $pos;
    }
    return (\@out, $buf, undef);
}

# ---------------------------------------------------------------------------
# locations

sub top_dir {
    return $ENV{EVENTODB_TOP} if $ENV{EVENTODB_TOP};
    my $pm = abs_path(__FILE__);
    return dirname(dirname(dirname($pm)));    # <top>/t/lib/EventoTest.pm
}

sub daemon_binary {
    return $ENV{EVENTODBD} if $ENV{EVENTODBD};
    return top_dir() . '/eventodbd';
}

# A built tool (evdump, evcheck, evload): $EVDUMP, $EVCHECK or $EVLOAD,
# else next to the daemon binary, else in the build or source tree.
sub tool_binary {
    my ($name) = @_;
    return $ENV{uc $name} if $ENV{uc $name};
    my $d = dirname(daemon_binary());
    for my $c ("$d/$name", ($ENV{EVENTODB_BUILDDIR} ? "$ENV{EVENTODB_BUILDDIR}/$name" : ()),
               top_dir() . "/$name") {
        return $c if -x $c;
    }
    return top_dir() . "/$name";
}

sub evdump_binary { tool_binary('evdump') }

sub pg_bindir {
    if (my $d = $ENV{EVENTODB_PG_BINDIR}) { return -x "$d/initdb" ? $d : undef }
    my @c = sort { _vers($b) <=> _vers($a) } grep { -x "$_/initdb" } glob '/usr/lib/postgresql/*/bin';
    return $c[0] if @c;
    for my $p (split /:/, $ENV{PATH} // '') {
        return $p if -x "$p/initdb" && -x "$p/pg_ctl";
    }
    return undef;
}

sub _vers { my ($d) = @_; my ($v) = $d =~ m{/postgresql/(\d+(?:\.\d+)?)/}; return $v // 0 }

# Version declared in configure.ac (AC_INIT), undef if not found.
sub configure_version {
    my $f = top_dir() . '/configure.ac';
    open my $fh, '<', $f or return undef;
    local $/;
    my $txt = <$fh>;
    close $fh;
    my ($v) = $txt =~ /AC_INIT\(\s*\[?[^\],]*\]?\s*,\s*\[?\s*([0-9][^\],\s]*)/;
    return $v;
}

sub external { return $ENV{EVENTODB_TEST_EXTERNAL} }

# ---------------------------------------------------------------------------
# the test context

# new(%o):
#   need => [qw(daemon pg)]   features required, else plan skip_all
#                             (default: ['daemon'])
#   external_ok => 1          this file can run against EVENTODB_TEST_EXTERNAL
#   cluster_opts => {..}      settings of the private cluster instead of the
#                             defaults (fsync=off synchronous_commit=off
#                             full_page_writes=off max_connections=200), e.g.
#                             { synchronous_commit => 'on', max_connections => 20 }
#                             (a crash must not lose acknowledged commits);
#                             key data_dir: PGDATA there instead (a tmpfs;
#                             its parent must exist, t/lib/EventoFault.pm);
#                             key tcp => 1: also listen on 127.0.0.1 at a
#                             free port (cluster_info->{port}); tcp_db_url
sub new {
    my ($class, %o) = @_;
    my $need = $o{need} // ['daemon'];
    if (external() && !$o{external_ok}) {
        Test::More::plan(skip_all => 'needs to control the daemon; EVENTODB_TEST_EXTERNAL is set');
    }
    for my $f (@$need) {
        next if external() && $f eq 'daemon';
        next if $class->has($f);
        my $why = $f eq 'daemon' ? 'eventodbd binary not found at ' . daemon_binary()
                : $f eq 'pg'     ? 'PostgreSQL binaries (initdb, pg_ctl) not found'
                :                  "feature '$f' missing";
        Test::More::plan(skip_all => $why);
    }
    my $tmproot = (defined $ENV{TMPDIR} && length($ENV{TMPDIR}) <= 40 && -d $ENV{TMPDIR})
        ? $ENV{TMPDIR} : '/tmp';
    my $base = tempdir('evt-XXXXXX', DIR => $tmproot, CLEANUP => 0);
    chmod 0755, $base;
    my $self = bless {
        owner => $$, base => $base, daemons => [], cluster => undef,
        sfx => _b36($$) . _b36(int(Time::HiRes::time() * 10) % 46656),
        nsseq => 0, cluster_opts => $o{cluster_opts},
    }, $class;
    push @ALL, $self;
    _install_signal_handlers();
    return $self;
}

sub _b36 {
    my ($n) = @_;
    my $s = '';
    do { $s = (0 .. 9, 'a' .. 'z')[$n % 36] . $s; $n = int($n / 36) } while $n > 0;
    return $s;
}

my $SIGNALS_DONE;
sub _install_signal_handlers {
    return if $SIGNALS_DONE++;
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub { Test::More::diag("caught SIG$sig, cleaning up"); exit 128 + 2 };
    }
    $SIG{PIPE} = 'IGNORE';
    my $wd = ($ENV{EVENTODB_TEST_WATCHDOG} || 240) * mult();
    $SIG{ALRM} = sub { Test::More::diag("watchdog: test file exceeded ${wd}s"); exit 124 };
    alarm int $wd;
}

sub dir { $_[0]{base} }

# has($feature): daemon (binary executable), pg (initdb found), process
# (we start the daemons ourselves), root.
sub has {
    my ($self, $f) = @_;
    return -x daemon_binary() && -f _ ? 1 : 0 if $f eq 'daemon';
    return defined pg_bindir() ? 1 : 0        if $f eq 'pg';
    return external() ? 0 : 1                 if $f eq 'process';
    return $> == 0 ? 1 : 0                    if $f eq 'root';
    return 0;
}

# Namespace id unique to this run when testing an external server.
sub nsid {
    my ($self, $name) = @_;
    return external() ? $name . 'x' . $self->{sfx} : $name;
}

# Create a fresh namespace (admin token) and return ($id, $token).
sub fresh_ns {
    my ($self, $prefix) = @_;
    my $id = ($prefix // 'tns') . '-' . $self->{sfx} . '-' . ++$self->{nsseq};
    my $tok = $self->create_ns($id);
    return ($id, $tok);
}

# ------------------------------------------------------------- cluster

# Run a command, capturing output.  %o: env => {k => v|undef}, timeout
# (seconds, default 60 x mult), as_user => name (uses runuser when root),
# stdin => string, cwd => dir.  Returns {exit, signal, stdout, stderr,
# timed_out}.
sub run_cmd {
    my ($self, $cmd, %o) = @_;
    my @cmd = @$cmd;
    if ($o{as_user} && $> == 0 && $o{as_user} ne 'root') {
        @cmd = ('runuser', '-u', $o{as_user}, '--', @cmd);
    }
    my $dir = ref $self ? $self->{base} : '/tmp';
    my $n = ++$SEQ;
    my ($out, $err, $in) = map { "$dir/.cmd$n.$_" } qw(out err in);
    if (defined $o{stdin}) {
        open my $fh, '>', $in or croak "$in: $!";
        print $fh $o{stdin};
        close $fh;
    }
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        open STDIN, '<', (defined $o{stdin} ? $in : '/dev/null');
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        if ($o{env}) {
            for my $k (keys %{ $o{env} }) {
                if (defined $o{env}{$k}) { $ENV{$k} = $o{env}{$k} } else { delete $ENV{$k} }
            }
        }
        chdir($o{cwd} // $dir);
        alarm 0;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    my $deadline = Time::HiRes::time() + ($o{timeout} // 60) * mult();
    my ($st, $timed_out);
    while (1) {
        my $r = waitpid $pid, WNOHANG;
        if ($r == $pid) { $st = $?; last }
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            $st = $?;
            $timed_out = 1;
            last;
        }
        Time::HiRes::sleep(0.02);
    }
    my %r = (exit => $st >> 8, signal => $st & 127, timed_out => $timed_out,
             stdout => _slurp($out), stderr => _slurp($err));
    unlink $out, $err, $in;
    return \%r;
}

sub _slurp {
    my ($f, $off) = @_;
    open my $fh, '<', $f or return '';
    binmode $fh;
    seek $fh, $off, 0 if $off;
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s // '';
}

# Start the private PostgreSQL cluster (once).  Returns $self.
sub cluster {
    my ($self) = @_;
    return $self if $self->{cluster};
    croak 'cluster(): EVENTODB_TEST_EXTERNAL is set' if external();
    my $bindir = pg_bindir() or croak 'PostgreSQL binaries not found (set EVENTODB_PG_BINDIR)';
    my $pgdir = "$self->{base}/pg";
    mkdir $pgdir or croak "mkdir $pgdir: $!";
    chmod 0755, $pgdir;
    my $user;
    if ($> == 0) {
        for my $cand (qw(postgres nobody)) {
            my @pw = getpwnam $cand or next;
            chown $pw[2], $pw[3], $pgdir or croak "chown $pgdir: $!";
            $user = $cand;
            last;
        }
        croak 'running as root and neither user postgres nor nobody exists' unless $user;
    }
    my %set = (fsync => 'off', synchronous_commit => 'off', full_page_writes => 'off',
               max_connections => 200, %{ $self->{cluster_opts} || {} });
    my $data = delete $set{data_dir} // "$pgdir/data";
    my $tcp = delete $set{tcp};
    my %c = (bindir => $bindir, dir => $pgdir, data => $data, sock => $pgdir,
             user => $user, port => $tcp ? free_port() : 5432, tcp => $tcp ? 1 : 0);
    my $r = $self->run_cmd(["$bindir/initdb", '-D', $data, '-A', 'trust', '-E', 'UTF8',
                            '--locale=C.UTF-8', '-U', 'postgres', '--no-sync'],
                           as_user => $user, cwd => $pgdir, timeout => 120);
    croak "initdb failed (exit $r->{exit}):\n$r->{stdout}$r->{stderr}" if $r->{exit} || $r->{signal};
    my %rank = (fsync => 1, synchronous_commit => 2, full_page_writes => 3, max_connections => 4);
    my $opts = "-k $pgdir -c listen_addresses='" . ($tcp ? '127.0.0.1' : '') . "' "
             . join('', map { "-c $_=$set{$_} " }
                        sort { ($rank{$a} // 9) <=> ($rank{$b} // 9) || $a cmp $b } keys %set)
             . "-p $c{port}";
    $r = $self->run_cmd(["$bindir/pg_ctl", '-D', $data, '-l', "$pgdir/postgres.log", '-w',
                         '-t', int(60 * mult()), '-o', $opts, 'start'],
                        as_user => $user, cwd => $pgdir, timeout => 120);
    if ($r->{exit} || $r->{signal}) {
        my $log = _slurp("$pgdir/postgres.log");
        croak "pg_ctl start failed (exit $r->{exit}):\n$r->{stdout}$r->{stderr}\n$log";
    }
    my $pidline = (split /\n/, _slurp("$data/postmaster.pid"))[0] // '';
    $c{postmaster_pid} = $pidline =~ /^(\d+)/ ? $1 : undef;
    $c{opts} = $opts;
    $self->{cluster} = \%c;
    return $self;
}

# The unprivileged user daemons run as when the tests run as root.
sub service_user {
    for my $cand (qw(postgres nobody)) {
        return $cand if getpwnam $cand;
    }
    return undef;
}

# cluster_stop(mode => fast|immediate|smart) and cluster_start: stop the
# private cluster and start it again on the same data directory and
# socket (to test how daemons live through a PostgreSQL restart).
# cluster_restart(%o) does both.  Each croaks on failure.
sub cluster_stop {
    my ($self, %o) = @_;
    my $c = $self->cluster_info;
    my $r = $self->run_cmd(["$c->{bindir}/pg_ctl", '-D', $c->{data}, '-m', $o{mode} // 'fast', '-w',
                            '-t', int(60 * mult()), 'stop'],
                           as_user => $c->{user}, cwd => $c->{dir}, timeout => 90);
    croak "pg_ctl stop failed (exit $r->{exit}):\n$r->{stdout}$r->{stderr}" if $r->{exit} || $r->{signal};
    return $self;
}

sub cluster_start {
    my ($self) = @_;
    my $c = $self->cluster_info;
    my $r = $self->run_cmd(["$c->{bindir}/pg_ctl", '-D', $c->{data}, '-l', "$c->{dir}/postgres.log", '-w',
                            '-t', int(60 * mult()), '-o', $c->{opts}, 'start'],
                           as_user => $c->{user}, cwd => $c->{dir}, timeout => 120);
    croak "pg_ctl start failed (exit $r->{exit}):\n$r->{stdout}$r->{stderr}" if $r->{exit} || $r->{signal};
    my $pidline = (split /\n/, _slurp("$c->{data}/postmaster.pid"))[0] // '';
    $c->{postmaster_pid} = $pidline =~ /^(\d+)/ ? $1 : undef;
    return $self;
}

sub cluster_restart {
    my ($self, %o) = @_;
    $self->cluster_stop(%o);
    return $self->cluster_start;
}

sub cluster_info { $_[0]->cluster->{cluster} }

# psql($db, $sql): run SQL, return the unaligned tuples-only output
# (chomped).  Dies on error.
sub psql {
    my ($self, $db, $sql) = @_;
    my $c = $self->cluster_info;
    my $r = $self->run_cmd(["$c->{bindir}/psql", '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1',
                            '-h', $c->{sock}, '-p', $c->{port}, '-U', 'postgres', '-d', $db,
                            '-c', $sql]);
    croak "psql failed: $r->{stderr}" if $r->{exit} || $r->{signal};
    my $o = $r->{stdout};
    chomp $o;
    return $o;
}

# stop_child($obj): SIGTERM the helper process $obj->{pid}, reap it and
# forget it (the stop method of the test helpers that fork one).
sub stop_child {
    my ($obj) = @_;
    my $pid = $obj->{pid} or return;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    delete $obj->{pid};
}

# lock_messages($db, $schema, $secs): a psql in the background holds an
# ACCESS EXCLUSIVE lock on $schema.messages for $secs seconds.  Returns
# its pid and whether the lock was seen granted within 10 s.
sub lock_messages {
    my ($self, $db, $schema, $secs) = @_;
    my $c = $self->cluster_info;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 0;
        my @cmd = ("$c->{bindir}/psql", '-X', '-q', '-h', $c->{sock}, '-p', $c->{port}, '-U', 'postgres', '-d', $db,
                   '-c', qq{BEGIN; LOCK TABLE "$schema".messages IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($secs); COMMIT;});
        @cmd = ('runuser', '-u', $c->{user}, '--', @cmd) if $> == 0 && $c->{user};
        open STDOUT, '>', '/dev/null';
        { no warnings 'exec'; exec @cmd; }
        POSIX::_exit(127);
    }
    my $locked = $self->wait_for(sub {
        $self->psql($db, q{SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation IS NOT NULL}) > 0
    }, 10);
    return ($pid, $locked);
}

# Create a fresh database; returns its name.
sub createdb {
    my ($self, $name) = @_;
    $name //= 'evt_' . ++$SEQ;
    $self->psql('postgres', qq{CREATE DATABASE "$name"});
    return $name;
}

sub db_url {
    my ($self, $db) = @_;
    my $c = $self->cluster_info;
    return "host=$c->{sock} port=$c->{port} dbname=$db user=postgres";
}

# The same over TCP (a cluster started with cluster_opts => { tcp => 1 }).
sub tcp_db_url {
    my ($self, $db) = @_;
    my $c = $self->cluster_info;
    croak 'tcp_db_url: the cluster does not listen on TCP (cluster_opts tcp => 1)' unless $c->{tcp};
    return "host=127.0.0.1 port=$c->{port} dbname=$db user=postgres";
}

sub _stop_cluster {
    my ($self) = @_;
    my $c = delete $self->{cluster} or return;
    $self->run_cmd(["$c->{bindir}/pg_ctl", '-D', $c->{data}, '-m', 'immediate', '-w',
                    '-t', 30, 'stop'], as_user => $c->{user}, cwd => $c->{dir}, timeout => 60);
    if ($c->{postmaster_pid} && pid_alive($c->{postmaster_pid})) {
        kill 'KILL', $c->{postmaster_pid};
    }
}

# ------------------------------------------------------------- daemons

# start(%o) -> EventoTest::Daemon (healthy).  Options:
#   workers => n (default 2; undef = leave the option out)
#   token => t   (default ADMIN_TOKEN; undef = no --token)
#   test_mode => 1, no_db => 1 (no --db-url: test mode's own cluster)
#   db => name   (reuse a database; default: a fresh one)
#   db_url => s  (explicit URL)
#   port => p    (default: a free port)
#   args => [..] (extra arguments), env => {k => v|undef}
#   user => name (as root: --user, default postgres or nobody; undef =
#                 none), no_user_arg => 1 (never add --user)
#   style => long|eq|single   option syntax (--port 1 / --port=1 / -port 1)
#   no_port_arg => 1, no_host_arg => 1, no_db_arg => 1 (leave the option
#                 out, e.g. to pass it through the environment instead)
#   expect_exit => 1  do not wait for health; wait for the process to exit
#                     and return the daemon with ->exit_code set
#   health_timeout => secs (default 15)
#   binary => path    run this binary instead of daemon_binary() (e.g. the
#                     sanitizer build eventodbd-asan, t/battery/62-asan.t)
sub start {
    my ($self, %o) = @_;
    my $d = EventoTest::Daemon->_new($self, %o);
    push @{ $self->{daemons} }, $d;
    $self->{primary} //= $d;
    $d->_launch;
    return $d;
}

sub daemon { $_[0]{primary} or croak 'no daemon started' }

for my $m (qw(rpc raw_rpc http raw connect read_responses log_text log_since_start
              worker_pids worker_info stop restart port pid base_url create_ns
              rpc_ka write_many)) {
    no strict 'refs';
    *{$m} = sub { my $self = shift; $self->daemon->$m(@_) };
}

sub admin_token { ADMIN_TOKEN }

# wait_for(sub {...}, $secs): poll every 50 ms until the sub returns true
# (returned) or the deadline (secs x mult) passes (undef).
sub wait_for {
    my ($self, $code, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 10) * mult();
    while (1) {
        my $v = $code->();
        return $v if $v;
        return undef if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.05);
    }
}

# run_eventodbd([args], %o): run the binary to completion (for --help,
# --version, bad options).  Same result hash as run_cmd.  EVENTODB_* server
# variables are removed from its environment unless given in env.
sub run_eventodbd {
    my ($self, $args, %o) = @_;
    my %env = map { $_ => undef } _server_env_keys();
    %env = (%env, %{ $o{env} || {} });
    return $self->run_cmd([daemon_binary(), @$args], %o, env => \%env,
                          timeout => $o{timeout} // 20);
}

# evdump(@args) -> run_cmd result hash ({exit, stdout, stderr, ...}); the
# EVENTODB_* server variables are removed from its environment.
sub evdump {
    my ($self, @args) = @_;
    my %env = map { $_ => undef } _server_env_keys();
    return $self->run_cmd([evdump_binary(), @args], env => \%env, timeout => 30);
}

sub _server_env_keys {
    return grep { /^EVENTODB_/ && !/^EVENTODB_(TEST_|PG_BINDIR$|TOP$)/ } keys %ENV;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                  Listen => 1, ReuseAddr => 1) or croak "free_port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

# parallel($n, sub { my $i = shift; ...; return $scalar_or_ref }):
# fork $n children that all start together (after every one is forked) and
# return their results (JSON round-tripped) in order.  A child that dies
# returns {error => message}.
sub parallel {
    my ($self, $n, $code) = @_;
    pipe my $go_r, my $go_w or croak "pipe: $!";
    my @kids;
    for my $i (0 .. $n - 1) {
        pipe my $rr, my $rw or croak "pipe: $!";
        my $pid = fork // croak "fork: $!";
        if (!$pid) {
            alarm 0;
            close $go_w;
            close $rr;
            my $x = '';
            sysread $go_r, $x, 1;    # EOF when the parent releases us
            my $res = eval { $code->($i) };
            $res = { error => "$@" } if $@;
            my $out = eval { json_encode([$res]) } // json_encode([{ error => "encode: $@" }]);
            syswrite $rw, $out;
            close $rw;
            POSIX::_exit(0);
        }
        close $rw;
        push @kids, [$pid, $rr];
    }
    close $go_r;
    close $go_w;    # release
    my @res;
    for my $k (@kids) {
        my ($pid, $rr) = @$k;
        local $/;
        my $txt = <$rr> // '';
        close $rr;
        waitpid $pid, 0;
        my ($ok, $v) = json_decode($txt);
        push @res, $ok ? $v->[0] : { error => "child $pid returned nothing: $txt" };
    }
    return @res;
}

# ------------------------------------------------------------- teardown

sub cleanup {
    my ($self) = @_;
    return if $self->{cleaned}++ || $self->{owner} != $$;
    local ($?, $!, $@);
    alarm 0;
    my $failed = $self->{_exit_code} || !Test::More->builder->is_passing;
    for my $d (@{ $self->{daemons} }) {
        eval { $d->_shutdown_for_cleanup };
    }
    for my $d (@{ $self->{daemons} }) {
        next unless -f ($d->{log} // '');
        my $txt = _slurp($d->{log});
        if ($ENV{EVENTODB_TEST_CATLOG}) {
            Test::More::diag("---- daemon log $d->{log} ----\n$txt---- end of log ----");
        } elsif ($failed && length $txt) {
            my @l = split /\n/, $txt;
            @l = @l[-40 .. -1] if @l > 40;
            Test::More::diag("---- last lines of $d->{log} ----\n" . join("\n", @l) . "\n----");
        }
    }
    eval { $self->_stop_cluster };
    if ($ENV{EVENTODB_TEST_LEAVE}) {
        Test::More::diag("EVENTODB_TEST_LEAVE: kept $self->{base}"
            . ($self->{_had_cluster} ? " (cluster data in $self->{base}/pg/data)" : ''));
    } else {
        rmtree($self->{base});
    }
}

sub DESTROY {
    my ($self) = @_;
    $self->cleanup if ${^GLOBAL_PHASE} ne 'DESTRUCT' && $self->{owner} == $$;
}

END {
    my $code = $?;
    for my $t (reverse @ALL) {
        next unless $t->{owner} == $$;
        $t->{_exit_code} = $code;
        $t->{_had_cluster} = 1 if $t->{cluster};
        eval { $t->cleanup };
    }
    @ALL = ();
    _battery_notes($code) if $$ == $MAIN_PID;
    $? = $code;
}

sub _battery_notes {
    my ($code) = @_;
    my $out = $ENV{EVENTODB_BATTERY_OUT} or return;
    my $tb = Test::More->builder;
    my @d = $tb->details;
    (my $file = $0) =~ s{.*/}{};
    # skipped tests: a row the file leaves out then is not a lost row
    my @skips = map { $_->{reason} // '' } grep { ($_->{type} // '') eq 'skip' } @d;
    if (@skips && open my $fh, '>>', $out) {
        for my $r (@skips) {
            $r =~ s/[\t\r\n]+/ /g;
            printf {$fh} "#skip\t%s\t%s\n", $file, $r;
        }
        close $fh;
    }
    my @failed = grep { !$d[$_]{ok} } 0 .. $#d;
    my @what;
    if (@failed) {
        my $show = @failed > 3 ? 3 : @failed;
        push @what, join '; ', map { 'not ok ' . ($_ + 1) . ': ' . ($d[$_]{name} // '') } @failed[0 .. $show - 1];
        push @what, sprintf '(%d more)', @failed - $show if @failed > $show;
    }
    push @what, "died: $LAST_DIE" if defined $LAST_DIE && $code;
    push @what, "exit status $code" if $code && !@what;
    return unless @what;
    my $what = join '; ', @what;
    $what =~ s/[\t\r\n]+/ /g;
    if (open my $fh, '>>', $out) {
        printf {$fh} "#failed\t%s\t%s\n", $0, $what;
        close $fh;
    }
}

# ===========================================================================

package EventoTest::Daemon;

use strict;
use warnings;
use Carp qw(croak);
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Errno qw(EINTR EAGAIN EWOULDBLOCK ECONNRESET);

sub _new {
    my ($class, $t, %o) = @_;
    my $self = bless { opts => \%o, n => ++$SEQ }, $class;
    $self->{t} = $t;
    weaken $self->{t};
    $self->{log} = "$t->{base}/daemon$self->{n}.log";
    if (EventoTest::external()) {
        my ($h, $p) = EventoTest::external() =~ /^(.*):(\d+)$/ or croak 'EVENTODB_TEST_EXTERNAL must be host:port';
        @$self{qw(host port external)} = ($h, $p, 1);
        return $self;
    }
    $self->{host} = $o{host} // '127.0.0.1';
    if (!$o{no_db} && !defined $o{db_url}) {
        $t->cluster;
        $self->{db} = $o{db} // $t->createdb;
        $self->{db_url} = $t->db_url($self->{db});
    } elsif (defined $o{db_url}) {
        $self->{db_url} = $o{db_url};
    }
    $self->{port} = $o{port} // EventoTest::free_port();
    $self->{port_fixed} = defined $o{port};
    return $self;
}

sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub db   { $_[0]{db} }
sub db_url { $_[0]{db_url} }
sub host { $_[0]{host} }
sub exit_code   { $_[0]{exit_code} }
sub exit_signal { $_[0]{exit_signal} }
sub startup_seconds { $_[0]{startup_seconds} }
sub log_file { $_[0]{log} }
sub base_url { my $s = shift; "http://$s->{host}:$s->{port}" }
sub admin_token { EventoTest::ADMIN_TOKEN }

sub argv {
    my ($self) = @_;
    my $o = $self->{opts};
    my $style = $o->{style} // 'long';
    my @a;
    my $opt = sub {
        my ($name, $val) = @_;
        my $dash = $style eq 'single' ? '-' : '--';
        if (!defined $val) { push @a, "$dash$name"; return }
        if ($style eq 'eq') { push @a, "--$name=$val" } else { push @a, "$dash$name", $val }
    };
    $opt->('port', $self->{port}) unless $o->{no_port_arg};
    $opt->('host', $self->{host}) unless $o->{no_host_arg};
    $opt->('db-url', $self->{db_url}) if defined $self->{db_url} && !$o->{no_db_arg};
    my $workers = exists $o->{workers} ? $o->{workers} : 2;
    $opt->('workers', $workers) if defined $workers;
    my $token = exists $o->{token} ? $o->{token} : EventoTest::ADMIN_TOKEN;
    $opt->('token', $token) if defined $token;
    $opt->('test-mode') if $o->{test_mode};
    # As root, eventodbd refuses to serve unless told whom to run as
    # (server/privdrop.h): run it as the cluster's unprivileged user, or as
    # user => name; no_user_arg => 1 leaves the choice to the test.
    if ($> == 0 && !$o->{no_user_arg} && !grep { /^--?(?:user|allow-root)\b/ } @{ $o->{args} || [] }) {
        my $u = exists $o->{user} ? $o->{user} : EventoTest::service_user();
        $opt->('user', $u) if defined $u;
    }
    push @a, @{ $o->{args} || [] };
    return @a;
}

sub _launch {
    my ($self) = @_;
    return $self->_wait_external if $self->{external};
    my $o = $self->{opts};
    for my $attempt (1 .. 3) {
        $self->_spawn;
        if ($o->{expect_exit}) {
            $self->_wait_exit(($o->{exit_timeout} // 15));
            return $self;
        }
        my $ok = $self->_wait_healthy($o->{health_timeout} // 15);
        return $self if $ok;
        my $log = $self->log_since_start;
        if (!$self->{port_fixed} && $attempt < 3 && defined $self->{exit_code}
            && $log =~ /address already in use|EADDRINUSE/i) {
            $self->{port} = EventoTest::free_port();
            next;
        }
        $self->_kill_hard;
        croak sprintf "eventodbd did not become healthy (%s); log:\n%s",
            (defined $self->{exit_code} ? "exited with $self->{exit_code}" :
             defined $self->{exit_signal} ? "killed by signal $self->{exit_signal}" : 'timeout'),
            $log;
    }
}

sub _wait_external {
    my ($self) = @_;
    my $ok = $self->{t}->wait_for(sub { ($self->http('GET', '/health')->{status} // 0) == 200 }, 15);
    croak "external server $self->{host}:$self->{port} not healthy" unless $ok;
    return $self;
}

sub _spawn {
    my ($self) = @_;
    my $o = $self->{opts};
    my @argv = $self->argv;
    open my $lfh, '>>', $self->{log} or croak "$self->{log}: $!";
    $self->{log_offset} = -s $self->{log} // 0;
    # Tokens never go into the log (02-auth.t checks the daemon's part).
    my $bin = $o->{binary} // EventoTest::daemon_binary();
    my $shown = join ' ', $bin, @argv;
    $shown =~ s/\bns_[A-Za-z0-9_-]*/ns_<redacted>/g;
    print $lfh "### eventotest: starting $shown\n";
    close $lfh;
    $self->{log_offset} = -s $self->{log};
    delete @$self{qw(exit_code exit_signal)};
    $self->{t0} = Time::HiRes::time();
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        alarm 0;
        delete $ENV{$_} for EventoTest::_server_env_keys();
        for my $k (keys %{ $o->{env} || {} }) {
            if (defined $o->{env}{$k}) { $ENV{$k} = $o->{env}{$k} } else { delete $ENV{$k} }
        }
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $self->{log};
        open STDERR, '>&', \*STDOUT;
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE ALRM);
        chdir $self->{t}{base};
        # Die with the test script (Linux prctl PR_SET_PDEATHSIG = SIGTERM).
        my %nr = (x86_64 => 157, aarch64 => 167);
        my ($arch) = (POSIX::uname())[4];
        eval { syscall($nr{$arch}, 1, 15) } if $nr{$arch // ''};
        { no warnings 'exec'; exec { $bin } $bin, @argv; }
        print STDERR "exec failed: $!\n";
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $self->{running} = 1;
}

sub _reap {
    my ($self, $block) = @_;
    return 1 unless $self->{running};
    my $r = waitpid $self->{pid}, $block ? 0 : WNOHANG;
    if ($r == $self->{pid} || $r == -1) {
        my $st = $r == -1 ? 0 : $?;
        $self->{running} = 0;
        if ($st & 127) { $self->{exit_signal} = $st & 127; $self->{exit_code} = undef }
        else           { $self->{exit_code} = $st >> 8 }
        return 1;
    }
    return 0;
}

sub alive { my ($self) = @_; return !$self->_reap(0) }

sub _wait_healthy {
    my ($self, $secs) = @_;
    my $deadline = $self->{t0} + $secs * EventoTest::mult();
    my $ua = HTTP::Tiny->new(timeout => 1, keep_alive => 0);
    while (Time::HiRes::time() < $deadline) {
        return 0 if $self->_reap(0);
        my $r = $ua->get($self->base_url . '/health');
        if ($r->{status} == 200) {
            $self->{startup_seconds} = Time::HiRes::time() - $self->{t0};
            return 1;
        }
        Time::HiRes::sleep(0.05);
    }
    return 0;
}

sub _wait_exit {
    my ($self, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs * EventoTest::mult();
    while (Time::HiRes::time() < $deadline) {
        return 1 if $self->_reap(0);
        Time::HiRes::sleep(0.05);
    }
    $self->_kill_hard;
    $self->{exit_code} = undef;
    $self->{exit_signal} = undef;
    $self->{timed_out} = 1;
    return 0;
}

sub timed_out { $_[0]{timed_out} }

sub _kill_hard {
    my ($self) = @_;
    return unless $self->{running};
    kill 'KILL', $self->{pid};
    $self->_reap(1);
}

# stop(%o): send signal (default TERM), wait (timeout secs, default 10),
# then SIGKILL.  Returns the exit code (undef if killed by a signal).
sub stop {
    my ($self, %o) = @_;
    croak 'stop(): external server' if $self->{external};
    return $self->{exit_code} unless $self->{running};
    my $sig = $o{signal} // 'TERM';
    kill $sig, $self->{pid};
    my $deadline = Time::HiRes::time() + ($o{timeout} // 10) * EventoTest::mult();
    while (Time::HiRes::time() < $deadline) {
        if ($self->_reap(0)) {
            $self->_no_faults;
            return $self->{exit_code};
        }
        Time::HiRes::sleep(0.02);
    }
    $self->{stop_timed_out} = 1;
    $self->_kill_hard;
    $self->_no_faults;
    return $self->{exit_code};
}

# A worker that faulted (SIGSEGV/SIGBUS/SIGFPE/SIGILL at an address, or
# an abort()) fails the test that stopped the daemon, whatever the test
# was about: such a crash once hid behind a check of something else
# (t/100-sse.t, a NULL body in http.c on shutdown).  Signals sent by
# another process (the fault tests' kill -SEGV) are not faults.  Only a
# failing check is added, so plans keep their counts.
sub _no_faults {
    my ($self) = @_;
    # crashes on purpose: the crash hook (battery T04), or crashes_ok => 1
    return if $self->{opts}{crashes_ok} || ($self->{opts}{env} // {})->{EVENTODB_TEST_WORKER_CRASH};
    my @f = grep { /crash report \(pid (\d+)[^)]*\): SIG\w+ (?:at address|sent by pid \1\b)/ }
            split /\n/, $self->log_since_start;
    return unless @f;
    Test::More::ok(0, 'no worker faulted') or Test::More::diag(join "\n", @f[0 .. ($#f < 3 ? $#f : 3)]);
}

sub stop_timed_out { $_[0]{stop_timed_out} }

# kill_master($sig): signal the master without waiting for it.
sub kill_master {
    my ($self, $sig) = @_;
    kill $sig, $self->{pid};
}

# restart(%o): stop, then start again with the same database and port; %o
# overrides the original start options (e.g. token => ..., expect_exit => 1).
sub restart {
    my ($self, %o) = @_;
    $self->stop if $self->{running};
    # Workers may outlive a dying master for a moment; wait for the port.
    $self->_wait_workers_gone(5);
    my %new = (%{ $self->{opts} }, %o);
    delete $new{expect_exit} unless exists $o{expect_exit};
    $self->{opts} = \%new;
    $self->{timed_out} = 0;
    $self->_launch;
    return $self;
}

sub _wait_workers_gone {
    my ($self, $secs) = @_;
    my @pids = values %{ $self->worker_pids };
    $self->{t}->wait_for(sub { !grep { EventoTest::pid_alive($_) } @pids }, $secs);
}

sub _shutdown_for_cleanup {
    my ($self) = @_;
    return if $self->{external};
    my %w = %{ $self->worker_pids };
    if ($self->{running}) {
        $self->stop(timeout => 10);
    }
    # Workers must die with the master; make sure none outlives the test.
    my @left = grep { EventoTest::pid_alive($_) && _is_our_daemon($_) } values %w;
    if (@left) {
        $self->{t}->wait_for(sub { !grep { EventoTest::pid_alive($_) } @left }, 3);
        for my $p (grep { EventoTest::pid_alive($_) && _is_our_daemon($_) } @left) {
            Test::More::diag("worker pid $p outlived its master; killing it");
            kill 'KILL', $p;
        }
    }
    # A master that was killed leaves its shared-memory segment behind (the
    # next start on the port would replace it); do not let tests pile them up.
    my $seg = '/dev/shm' . $self->shm_name;
    if ($self->{pid} && !EventoTest::pid_alive($self->{pid}) && -e $seg
        && open my $fh, '<', $seg) {
        my $hdr = '';
        read $fh, $hdr, 28;
        close $fh;
        my $mpid = length $hdr == 28 ? unpack('l<', substr($hdr, 24, 4)) : 0;
        unlink $seg if substr($hdr, 0, 6) eq 'EVSHM-' && $mpid == $self->{pid};
    }
}

sub _is_our_daemon {
    my ($pid) = @_;
    my $exe = readlink "/proc/$pid/exe" // return 1;
    my $bin = EventoTest::daemon_binary();
    my $abs = Cwd::abs_path($bin) // $bin;
    return $exe =~ /eventodbd/ || $exe eq $abs;
}

# ------------------------------------------------------------- logs

# ---- shared memory (shm/, evdump)

# Segment name of this daemon (the default, or the --shm-name given in args).
sub shm_name {
    my ($self) = @_;
    my @a = @{ $self->{opts}{args} || [] };
    for my $i (0 .. $#a) {
        return $1 =~ m{^/} ? $1 : "/$1" if $a[$i] =~ /^--?shm-name=(.+)$/;
        return $a[$i + 1] =~ m{^/} ? $a[$i + 1] : "/$a[$i + 1]"
            if $a[$i] =~ /^--?shm-name$/ && defined $a[$i + 1];
    }
    return "/eventodbd.$self->{port}";
}

# evdump(@args) against this daemon's segment -> run_cmd result hash.
sub evdump {
    my ($self, @args) = @_;
    return $self->{t}->evdump('--name', $self->shm_name, @args);
}

# The snapshot document (evdump --json) as a Perl hash; dies if evdump fails.
sub evdump_json {
    my ($self, @args) = @_;
    my $r = $self->evdump('--json', @args);
    croak "evdump failed (exit $r->{exit}): $r->{stderr}" if $r->{exit};
    my ($ok, $v) = EventoTest::json_decode($r->{stdout});
    croak "evdump printed no JSON: $v" unless $ok;
    return $v;
}

sub log_text { EventoTest::_slurp($_[0]{log}) }

# The log written since the latest (re)start.
sub log_since_start { EventoTest::_slurp($_[0]{log}, $_[0]{log_offset} // 0) }

# {slot => {pid, gen}} from "worker N started pid=P gen=G" lines of the
# current run (latest line per slot wins).
sub worker_info {
    my ($self) = @_;
    my %w;
    for my $l (split /\n/, $self->log_since_start) {
        next unless $l =~ /worker[ =](\d+) started:?\s*pid[= ](\d+),?\s*gen(?:eration)?[= ](\d+)/;
        $w{$1} = { pid => 0 + $2, gen => 0 + $3 };
    }
    return \%w;
}

sub worker_pids {
    my ($self) = @_;
    my $w = $self->worker_info;
    return { map { $_ => $w->{$_}{pid} } keys %$w };
}

# conn_worker($sock): pid of the worker process holding the server side of
# our connected socket $sock (found through /proc/net/tcp* inodes and the
# workers' /proc/<pid>/fd), or undef.  Linux only; the daemon must be local.
sub conn_worker {
    my ($self, $sock) = @_;
    my $cport = $sock->sockport or return undef;
    my $sport = $self->{port};
    my %inode;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (my $l = <$fh>) {
            my @c = split ' ', $l;
            next unless @c > 9 && $c[1] =~ /:([0-9A-F]{4})$/;
            my $lp = hex $1;
            my ($rp) = $c[2] =~ /:([0-9A-F]{4})$/ or next;
            $inode{$c[9]} = 1 if $lp == $sport && hex($rp) == $cport && $c[9];
        }
        close $fh;
    }
    return undef unless %inode;
    for my $pid (values %{ $self->worker_pids }) {
        opendir my $dh, "/proc/$pid/fd" or next;
        for my $fd (readdir $dh) {
            my $l = readlink "/proc/$pid/fd/$fd" // next;
            if ($l =~ /^socket:\[(\d+)\]$/ && $inode{$1}) { closedir $dh; return $pid }
        }
        closedir $dh;
    }
    return undef;
}

# Open file descriptors of process $pid (undef if it is gone).
sub fd_count {
    my ($self, $pid) = @_;
    opendir my $dh, "/proc/$pid/fd" or return undef;
    my $n = grep { /^\d+$/ } readdir $dh;
    closedir $dh;
    return $n;
}

# ------------------------------------------------------------- HTTP

sub _agent {
    my ($self) = @_;
    return $self->{ua} //= HTTP::Tiny->new(timeout => 15 * EventoTest::mult(), keep_alive => 0,
                                           agent => 'eventotest/1');
}

# One request over this daemon's persistent keep-alive connection (raw
# socket with TCP_NODELAY, whole request in one write: HTTP::Tiny writes
# headers and body separately, and Nagle plus delayed ACKs then cost 40 ms
# per request).  Returns an HTTP::Tiny-like {status, headers, content}.
sub _ka_request {
    my ($self, $method, $path, $headers, $body) = @_;
    $body //= '';
    my $s = $self->{ka_sock};
    if ($s && IO::Select->new($s)->can_read(0)) {    # EOF or junk: start over
        close $s;
        $s = undef;
    }
    $s ||= eval { $self->connect } or return { status => 599, headers => {}, content => "connect: $@" };
    my $req = "$method $path HTTP/1.1\r\nHost: $self->{host}:$self->{port}\r\n";
    $req .= "$_: $headers->{$_}\r\n" for sort keys %$headers;
    $req .= 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    if (!$self->send_all($s, $req)) {
        close $s;
        delete $self->{ka_sock};
        return { status => 599, headers => {}, content => "send: $!" };
    }
    my ($resp, $closed) = $self->read_responses($s, count => 1, timeout => 15);
    my $r = $resp->[0];
    if (!$r || $closed || ($r->{headers}{connection} // '') =~ /close/i) {
        close $s;
        delete $self->{ka_sock};
    } else {
        $self->{ka_sock} = $s;
    }
    return { status => 599, headers => {}, content => 'no response' . ($closed ? ' (closed)' : '') } unless $r;
    return { status => $r->{status}, headers => $r->{headers}, content => $r->{body} };
}

sub _uri_escape {
    my ($s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

# rpc($token|undef, $method, @args) -> (status, decoded body (or raw text
# if not JSON), headers, raw body text).
sub rpc {
    my ($self, $token, $method, @args) = @_;
    return $self->raw_rpc($token, EventoTest::json_encode([$method, @args]));
}

# Same over a keep-alive connection (for bulk work).
sub rpc_ka {
    my ($self, $token, $method, @args) = @_;
    return $self->raw_rpc($token, EventoTest::json_encode([$method, @args]), keep_alive => 1);
}

# raw_rpc($token|undef, $body, %o): %o query_token => t (?token=),
# headers => {...}, keep_alive => 1, method => 'POST'.
sub raw_rpc {
    my ($self, $token, $body, %o) = @_;
    utf8::encode($body) if defined $body && utf8::is_utf8($body);
    my %h = ('content-type' => 'application/json', %{ $o{headers} || {} });
    $h{authorization} = "Bearer $token" if defined $token;
    my $path = '/rpc';
    $path .= '?token=' . _uri_escape($o{query_token}) if defined $o{query_token};
    my $r = $o{keep_alive}
        ? $self->_ka_request($o{method} // 'POST', $path, \%h, $body)
        : $self->_agent->request($o{method} // 'POST', $self->base_url . $path,
                                 { headers => \%h, (defined $body ? (content => $body) : ()) });
    my ($ok, $v) = EventoTest::json_decode($r->{content} // '');
    return ($r->{status}, $ok ? $v : $r->{content}, $r->{headers}, $r->{content});
}

# http($method, $path, %o) -> {status, headers, content, json_ok, json}
#   %o: headers => {...}, content => bytes, token => t (Bearer)
sub http {
    my ($self, $method, $path, %o) = @_;
    my %h = %{ $o{headers} || {} };
    utf8::encode($o{content}) if defined $o{content} && utf8::is_utf8($o{content});
    $h{authorization} = "Bearer $o{token}" if defined $o{token};
    my $r = $self->_agent->request($method, $self->base_url . $path,
                                   { headers => \%h, (defined $o{content} ? (content => $o{content}) : ()) });
    my ($ok, $v) = EventoTest::json_decode($r->{content} // '');
    $r->{json_ok} = $ok;
    $r->{json} = $ok ? $v : undef;
    return $r;
}

sub create_ns {
    my ($self, $id, %opts) = @_;
    my ($st, $b, undef, $raw) = $self->rpc(EventoTest::ADMIN_TOKEN, 'ns.create', $id, {%opts});
    croak "ns.create '$id' failed: $st $raw" unless $st == 200 && ref $b eq 'HASH' && $b->{token};
    return $b->{token};
}

# write_many($token, $stream, $n, $make) -> list of results; $make->($i)
# returns the message (default {type => 'T', data => {i => $i}}).
sub write_many {
    my ($self, $token, $stream, $n, $make) = @_;
    my @res;
    for my $i (0 .. $n - 1) {
        my $msg = $make ? $make->($i) : { type => 'T', data => { i => $i } };
        my ($st, $b, undef, $raw) = $self->rpc_ka($token, 'stream.write', $stream, $msg);
        croak "write_many: write $i to $stream failed: $st $raw" unless $st == 200;
        push @res, $b;
    }
    return @res;
}

# ------------------------------------------------------------- raw sockets

sub connect {
    my ($self, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $self->{host}, PeerPort => $self->{port},
                                  Proto => 'tcp', Timeout => 5 * EventoTest::mult())
        or croak "connect $self->{host}:$self->{port}: $!";
    binmode $s;
    $s->autoflush(1);
    setsockopt($s, Socket::IPPROTO_TCP(), Socket::TCP_NODELAY(), 1);
    return $s;
}

# Write all bytes (returns false if the peer closed).
sub send_all {
    my ($self, $s, $bytes) = @_;
    my $off = 0;
    while ($off < length $bytes) {
        my $w = syswrite $s, $bytes, 65536, $off;
        if (!defined $w) {
            next if $! == EINTR;
            if ($! == EAGAIN || $! == EWOULDBLOCK) { IO::Select->new($s)->can_write(1); next }
            return 0;
        }
        $off += $w;
    }
    return 1;
}

# read_responses($sock, %o) -> (\@responses, $closed, $rest)
#   %o: count => n (stop after n complete responses), until => qr//,
#   timeout => secs (default 5, x mult), idle => secs (stop after this
#   much silence once something was read).
sub read_responses {
    my ($self, $s, %o) = @_;
    my ($buf, $closed) = $self->read_raw($s, %o, _count => $o{count});
    my ($resp, $rest) = EventoTest::parse_responses($buf, $closed);
    return ($resp, $closed, $rest);
}

sub read_raw {
    my ($self, $s, %o) = @_;
    my $deadline = Time::HiRes::time() + ($o{timeout} // 5) * EventoTest::mult();
    my $buf = '';
    my $closed = 0;
    my $sel = IO::Select->new($s);
    while (1) {
        if (defined $o{_count}) {
            my ($r) = EventoTest::parse_responses($buf, 0);
            last if @$r >= $o{_count};
        }
        last if $o{until} && $buf =~ $o{until};
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        my $wait = $left;
        $wait = $o{idle} if $o{idle} && length $buf && $o{idle} < $wait;
        my @ready = $sel->can_read($wait);
        if (!@ready) {
            last if $o{idle} && length $buf;
            next;
        }
        my $n = sysread $s, $buf, 65536, length $buf;
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            $closed = 1;    # ECONNRESET and friends
            last;
        }
        if ($n == 0) { $closed = 1; last }
    }
    return ($buf, $closed);
}

# raw($bytes, %o): send bytes on a fresh connection and read what comes
# back until EOF, the timeout (default 5 s), count => n responses or until
# => qr//.  List context: ($data, $closed_by_peer).  %o: half_close => 1
# shuts down our write side after sending.
sub raw {
    my ($self, $bytes, %o) = @_;
    utf8::encode($bytes) if utf8::is_utf8($bytes);
    my $s = $self->connect;
    $self->send_all($s, $bytes);
    shutdown $s, 1 if $o{half_close};
    my ($buf, $closed) = $self->read_raw($s, %o, _count => $o{count});
    close $s;
    return wantarray ? ($buf, $closed) : $buf;
}

1;
