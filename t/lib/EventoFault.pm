package EventoFault;

# EventoFault - PostgreSQL fault injection for the battery's PostgreSQL
# rows (t/battery/2x-*.t; ../shared/ref/reliability-security.md 5, 6.3
# T08-T11).  Everything acts only on what the calling test started: its
# EventoTest private cluster, its own proxy processes and its own tmpfs
# mounts.  Core Perl only.
#
#   pg_pids($t)            the cluster's postmaster, then its children
#                          (/proc ppid), all owned by this test
#   freeze($t) / thaw($t)  SIGSTOP / SIGCONT the postmaster and every
#                          backend (T11d); thaw also runs at exit, so a
#                          dying test never leaves a stopped cluster
#   pg_isready($t, $secs)  poll pg_isready until the cluster accepts
#                          connections; returns the time it did, or undef
#   pg_log($t)             the cluster's server log text
#
#   EventoFault::Proxy->start($t, delay_ms => 50)
#       a TCP proxy on 127.0.0.1:<port> to the cluster's unix socket that
#       delivers every chunk delay_ms after it was read, in each direction
#       (netem is missing from this kernel).  ->conninfo($db) is a db-url
#       through it; ->hold / ->release (SIGUSR1 / SIGUSR2) turn it into a
#       black hole (nothing read, written or accepted: a partition) and
#       back; ->stop.  Its stderr goes to <test dir>/proxy.<port>.log.
#
#   EventoFault::Tmpfs->mount($t, size => '96m')
#       a tmpfs of that size on a fresh directory of the test's, owned by
#       the cluster's user (as root; mount(8)); ->dir; ->fill_file($name,
#       $bytes) writes a filler file, ->remove($name) frees it; ->unmount
#       (also at exit: the cluster on it is stopped first).
#
#   checker($t, $d, %o)   the history checker (./evcheck or $EVCHECK; evcheck(1)) in
#                         the background against daemon $d; %o: clients,
#                         duration, timeout_ms, args => [...].  Returns
#                         undef when evcheck is not built.  ->stop (SIGTERM:
#                         end the load phase), ->wait($secs) -> the summary
#                         hash (or {error => ...}), ->history -> list of
#                         op hashes.
use strict;
use warnings;
use Carp qw(croak);
use Errno qw(EINTR EAGAIN EWOULDBLOCK EINPROGRESS);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();
use EventoTest qw(json_decode mult);

my %FROZEN;     # pid => 1 while we hold it stopped
my @MOUNTS;     # EventoFault::Tmpfs objects still mounted

# ------------------------------------------------------------ the cluster

sub pg_pids {
    my ($t) = @_;
    my $c = $t->cluster_info;
    my $pm = $c->{postmaster_pid} or return ();
    return () unless EventoTest::pid_alive($pm);
    my @kids;
    opendir my $dh, '/proc' or return ($pm);
    for my $p (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$p/stat" or next;
        my $st = <$fh> // '';
        close $fh;
        # pid (comm) state ppid ...: comm may hold spaces or parentheses
        my ($ppid) = $st =~ /\)\s+\S+\s+(\d+)/ or next;
        push @kids, $p if $ppid == $pm;
    }
    closedir $dh;
    return ($pm, sort { $a <=> $b } @kids);
}

# SIGSTOP the postmaster first (no new backends), then every child.
sub freeze {
    my ($t) = @_;
    my @p = pg_pids($t) or croak 'freeze: the cluster is not running';
    for my $p (@p) {
        kill 'STOP', $p and $FROZEN{$p} = 1;
    }
    # a child forked between the listing and the postmaster's stop
    for my $p (pg_pids($t)) {
        next if $FROZEN{$p};
        kill 'STOP', $p and $FROZEN{$p} = 1;
    }
    return scalar keys %FROZEN;
}

sub thaw {
    my @p = sort { $b <=> $a } keys %FROZEN;    # children (higher pids, mostly) first
    kill 'CONT', $_ for @p;
    %FROZEN = ();
    return scalar @p;
}

sub pg_isready {
    my ($t, $secs) = @_;
    my $c = $t->cluster_info;
    my $bin = -x "$c->{bindir}/pg_isready" ? "$c->{bindir}/pg_isready" : 'pg_isready';
    my $ok = $t->wait_for(sub {
        my $r = $t->run_cmd([$bin, '-q', '-h', $c->{sock}, '-p', $c->{port}, '-t', 1], timeout => 5);
        return !$r->{exit} && !$r->{signal} ? Time::HiRes::time() : 0;
    }, $secs // 30);
    return $ok;
}

sub pg_log {
    my ($t) = @_;
    return EventoTest::_slurp($t->cluster_info->{dir} . '/postgres.log');
}

# ------------------------------------------------------------ timing rows

# BATTERY.md: a timing figure that fails while the machine is overloaded
# (load average > 2 x cores) is reported, with the load, but not failed.
# timing_ok($ok, \$figure): the verdict, the figure amended if excused.
sub timing_ok {
    my ($ok, $figref) = @_;
    return 1 if $ok;
    open my $fh, '<', '/proc/loadavg' or return 0;
    my ($l1) = split ' ', scalar <$fh> // '';
    close $fh;
    my $cores = () = (EventoTest::_slurp('/proc/cpuinfo') =~ /^processor\s*:/mg);
    $cores ||= 1;
    if (defined $l1 && $l1 > 2 * $cores) {
        $$figref .= " (SKIP timing: machine overloaded, load $l1)";
        return 1;
    }
    return 0;
}

# Per-worker counters of daemon $d from its shared memory: {pid => {name
# => n}}; in list context also the snapshot's time (epoch seconds).
sub worker_counters {
    my ($d) = @_;
    my $j = eval { $d->evdump_json } or return wantarray ? ({}, Time::HiRes::time()) : {};
    my %w;
    for my $w (@{ $j->{workers} || [] }) {
        next unless $w->{alive};
        $w{ $w->{pid} } = { %{ $w->{counters} || {} }, oldest_request_ns => $w->{oldest_request_ns} // 0,
                            loop_lag_ns => $w->{loop_lag_ns} // 0, heartbeat_unix => $w->{heartbeat_unix} };
    }
    return wantarray ? (\%w, $j->{taken_unix} // Time::HiRes::time()) : \%w;
}

# The error code of an EventoLoad failure reason "STATUS BODY" when it is
# a 5xx answer with a JSON error body ({"error": {"code": ...}}), else undef.
sub json_5xx_code {
    my ($reason) = @_;
    my ($st, $body) = ($reason // '') =~ /^(5\d\d) (.*)$/s or return undef;
    my ($ok, $v) = EventoTest::json_decode($body);
    return $ok && ref $v eq 'HASH' && ref $v->{error} eq 'HASH' ? $v->{error}{code} : undef;
}

# ------------------------------------------------------------ the checker

sub evcheck_binary {
    my $b = EventoTest::tool_binary('evcheck');
    return -x $b && -f _ ? $b : undef;
}

sub checker {
    my ($t, $d, %o) = @_;
    my $bin = evcheck_binary() or return undef;
    my $n = ++$EventoFault::SEQ;
    my $dir = $t->dir;
    my $self = bless { json => "$dir/evcheck$n.json", history => "$dir/evcheck$n.history",
                       log => "$dir/evcheck$n.log", t0 => Time::HiRes::time() }, 'EventoFault::Checker';
    my @argv = ($bin, '--url', $d->base_url, '--token', $o{token} // EventoTest::ADMIN_TOKEN,
                '--clients', $o{clients} // 8, '--duration', $o{duration} // 30,
                '--timeout', $o{timeout_ms} // 5000, '--json', $self->{json},
                '--history', $self->{history}, @{ $o{args} || [] });
    $self->{argv} = \@argv;
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        alarm 0;
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE ALRM);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $self->{log};
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec { $argv[0] } @argv; }
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    return $self;
}

# ------------------------------------------------------------ at exit

sub _cleanup_all {
    thaw();
    # a cluster may have files on any of the mounts (PGDATA, pg_wal)
    for my $m (@MOUNTS) {
        my $t = $m->{t} or next;
        eval { $t->_stop_cluster } if $t->{cluster};
    }
    for my $m (reverse @{ [@MOUNTS] }) {
        eval { $m->unmount };
    }
}

END {
    my $code = $?;
    _cleanup_all();
    $? = $code;
}

# =========================================================================

package EventoFault::Checker;

use strict;
use warnings;
use POSIX qw(WNOHANG);

sub pid { $_[0]{pid} }

# End the load phase now (the final read and the check follow).
sub stop {
    my ($self) = @_;
    kill 'TERM', $self->{pid} if $self->{pid} && !defined $self->{status};
}

sub running {
    my ($self) = @_;
    return 0 if defined $self->{status};
    my $r = waitpid $self->{pid}, WNOHANG;
    return 1 if $r == 0;
    $self->{status} = $r == $self->{pid} ? $? : -1;
    return 0;
}

# Wait for the checker to finish (up to $secs x mult); the summary hash,
# with exit => its exit status, or {error => ...}.
sub wait {
    my ($self, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 120) * EventoTest::mult();
    while ($self->running) {
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $self->{pid};
            waitpid $self->{pid}, 0;
            $self->{status} = $?;
            return { error => 'evcheck did not finish in time', exit => -1 };
        }
        Time::HiRes::sleep(0.05);
    }
    my $txt = EventoTest::_slurp($self->{json});
    my ($ok, $v) = EventoTest::json_decode($txt);
    my $exit = $self->{status} & 127 ? -1 : $self->{status} >> 8;
    return { error => "evcheck exit $exit, no summary: " . EventoTest::_slurp($self->{log}), exit => $exit }
        unless $ok && ref $v eq 'HASH';
    $v->{exit} = $exit;
    return $v;
}

sub log_text { EventoTest::_slurp($_[0]{log}) }

# Every recorded operation (after wait), as hashes; t_inv/t_done are
# microseconds since the checker's run started (about t0 + start-up).
sub history {
    my ($self) = @_;
    my @ops;
    open my $fh, '<', $self->{history} or return ();
    while (my $l = <$fh>) {
        my ($ok, $v) = EventoTest::json_decode($l);
        push @ops, $v if $ok;
    }
    close $fh;
    return @ops;
}

sub DESTROY {
    my ($self) = @_;
    if ($self->{pid} && !defined $self->{status} && kill 0, $self->{pid}) {
        kill 'KILL', $self->{pid};
        waitpid $self->{pid}, 0;
    }
}

# =========================================================================

package EventoFault::Proxy;

use strict;
use warnings;
use Carp qw(croak);
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX qw(WNOHANG);
use Socket qw(IPPROTO_TCP TCP_NODELAY);

sub start {
    my ($class, $t, %o) = @_;
    my $c = $t->cluster_info;
    my $target = $o{target} // "$c->{sock}/.s.PGSQL.$c->{port}";
    my $delay = ($o{delay_ms} // 50) / 1000;
    my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                   Listen => 128, ReuseAddr => 1) or croak "proxy listen: $!";
    my $port = $ls->sockport;
    my $log = $t->dir . "/proxy.$port.log";
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        alarm 0;
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP ALRM);
        $SIG{PIPE} = 'IGNORE';
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        my $hold = 0;
        $SIG{USR1} = sub { $hold = 1 };
        $SIG{USR2} = sub { $hold = 0 };
        eval { _serve($ls, $target, $delay, \$hold) };
        print STDERR "proxy: $@" if $@;
        POSIX::_exit(0);
    }
    close $ls;
    return bless { pid => $pid, port => $port, delay_ms => $o{delay_ms} // 50, log => $log }, $class;
}

sub port { $_[0]{port} }

sub conninfo {
    my ($self, $db) = @_;
    return "host=127.0.0.1 port=$self->{port} dbname=$db user=postgres";
}

sub hold    { kill 'USR1', $_[0]{pid} }
sub release { kill 'USR2', $_[0]{pid} }

sub stop { EventoTest::stop_child($_[0]) }

sub DESTROY { $_[0]->stop if $_[0]{pid} && $$ != $_[0]{pid} }

# The proxy loop.  A pair is two sockets; for each direction a FIFO of
# [due time, bytes] and an output buffer.  Bytes read at time T are
# written from T + delay on, so the delay is added once per direction and
# order is kept.
sub _serve {
    my ($ls, $target, $delay, $hold) = @_;
    $ls->blocking(0);
    my %peer;       # fileno => {sock, other (fileno), q => [[due, bytes]], out => '', eof}
    my $now = sub { Time::HiRes::time() };
    my $close_pair = sub {
        my ($fd) = @_;
        for my $f ($fd, $peer{$fd} ? $peer{$fd}{other} : ()) {
            my $p = delete $peer{$f} or next;
            close $p->{sock};
        }
    };
    while (1) {
        if ($$hold) {    # black hole: touch nothing
            select(undef, undef, undef, 0.05);
            next;
        }
        my ($rin, $win) = ('', '');
        vec($rin, fileno($ls), 1) = 1;
        my $next_due;
        my $t = $now->();
        for my $fd (keys %peer) {
            my $p = $peer{$fd};
            vec($rin, $fd, 1) = 1 unless $p->{eof};
            # move due chunks of the other side's reads into our output
            while (@{ $p->{q} } && $p->{q}[0][0] <= $t) {
                $p->{out} .= (shift @{ $p->{q} })->[1];
            }
            $next_due = $p->{q}[0][0] if @{ $p->{q} } && (!defined $next_due || $p->{q}[0][0] < $next_due);
            vec($win, $fd, 1) = 1 if length $p->{out};
        }
        my $timeout = defined $next_due ? $next_due - $t : 0.2;
        $timeout = 0 if $timeout < 0;
        $timeout = 0.2 if $timeout > 0.2;
        my $n = select(my $rout = $rin, my $wout = $win, undef, $timeout);
        next if $n < 0 && $! == EINTR;
        die "select: $!" if $n < 0;
        next if $$hold;
        if (vec($rout, fileno($ls), 1)) {
            while (my $cs = $ls->accept) {
                my $us = IO::Socket::UNIX->new(Peer => $target, Type => Socket::SOCK_STREAM());
                if (!$us) {
                    print STDERR "proxy: connect $target: $!\n";
                    close $cs;
                    next;
                }
                $cs->blocking(0);
                $us->blocking(0);
                setsockopt($cs, IPPROTO_TCP, TCP_NODELAY, 1);
                my ($a, $b) = (fileno($cs), fileno($us));
                $peer{$a} = { sock => $cs, other => $b, q => [], out => '' };
                $peer{$b} = { sock => $us, other => $a, q => [], out => '' };
            }
        }
        $t = $now->();
        for my $fd (keys %peer) {
            my $p = $peer{$fd} or next;
            if (vec($wout, $fd, 1) && length $p->{out}) {
                my $w = syswrite $p->{sock}, $p->{out};
                if (defined $w) {
                    substr($p->{out}, 0, $w) = '';
                } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                    $close_pair->($fd);
                    next;
                }
            }
            if (vec($rout, $fd, 1) && !$p->{eof}) {
                my $buf;
                my $r = sysread $p->{sock}, $buf, 65536;
                if ($r) {
                    push @{ $peer{ $p->{other} }{q} }, [$t + $delay, $buf] if $peer{ $p->{other} };
                } elsif (defined $r || ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR)) {
                    $p->{eof} = 1;
                }
            }
            # a side that ended: close the pair once the other side got
            # everything it had sent
            if ($p->{eof} && $peer{ $p->{other} }) {
                my $o = $peer{ $p->{other} };
                $close_pair->($fd) if !@{ $o->{q} } && !length $o->{out};
            }
        }
    }
}

# =========================================================================

package EventoFault::Tmpfs;

use strict;
use warnings;
use Carp qw(croak);

sub mount {
    my ($class, $t, %o) = @_;
    croak 'tmpfs mount needs root' unless $> == 0;
    my $dir = $t->dir . '/tmpfs' . ++$EventoFault::SEQ;
    mkdir $dir or croak "mkdir $dir: $!";
    my $size = $o{size} // '96m';
    my $r = $t->run_cmd(['mount', '-t', 'tmpfs', '-o', "size=$size,mode=0755", 'tmpfs', $dir], timeout => 20);
    croak "mount tmpfs on $dir failed: $r->{stderr}" if $r->{exit} || $r->{signal};
    my $self = bless { t => $t, dir => $dir, mounted => 1 }, $class;
    Scalar::Util::weaken($self->{t});
    my $u = $o{owner} // EventoTest::service_user();
    if (defined $u) {
        my @pw = getpwnam $u;
        chown $pw[2], $pw[3], $dir if @pw;
    }
    push @MOUNTS, $self;
    return $self;
}

sub dir { $_[0]{dir} }

# Bytes free on the filesystem (df), or undef.
sub free_bytes {
    my ($self) = @_;
    my $out = `df -B1 --output=avail $self->{dir} 2>/dev/null`;
    my ($n) = $out =~ /(\d+)\s*\z/;
    return $n;
}

sub fill_file {
    my ($self, $name, $bytes) = @_;
    my $f = "$self->{dir}/$name";
    open my $fh, '>', $f or croak "$f: $!";
    binmode $fh;
    my $chunk = "\0" x 65536;
    my $left = $bytes;
    while ($left > 0) {
        my $n = $left < 65536 ? $left : 65536;
        my $w = syswrite $fh, $chunk, $n;
        croak "$f: $!" unless defined $w;
        $left -= $w;
    }
    close $fh or croak "$f: $!";
    return $f;
}

sub remove {
    my ($self, $name) = @_;
    return unlink "$self->{dir}/$name";
}

# Stop the cluster if its data lives here, then unmount (lazily if busy).
sub unmount {
    my ($self) = @_;
    return unless $self->{mounted};
    my $t = $self->{t};
    if ($t && $t->{cluster} && index($t->{cluster}{data} // '', $self->{dir}) == 0) {
        EventoFault::thaw();
        eval { $t->_stop_cluster };
    }
    my $r = system('umount', $self->{dir});
    system('umount', '-l', $self->{dir}) if $r != 0;
    $self->{mounted} = 0;
    @MOUNTS = grep { $_ != $self } @MOUNTS;
}

1;
