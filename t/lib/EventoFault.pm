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
#
#   fault_run($t, $d, name => .., inject => sub, heal => sub, secs => n,
#             deadline_s => n, timeout_ms => n, during => sub)
#                         a fault under load (T08-T11): the checker and two
#                         EventoLoad probe writers against daemon $d, then
#                         inject, hold secs (during runs once, 1 s in, in
#                         a child process so as not to stop the sampling;
#                         what it returns, JSON round-tripped, is the
#                         result's {during}), heal, wait for the first
#                         probe write after
#                         healing; shm oldest_request and loop lag are
#                         sampled throughout.  Returns a result hash for
#   fault_rows($id, $title, $r)
#                         the two battery rows of such a run: $id
#                         (correctness: 0 violations, nothing hangs, no
#                         crash) and "${id}t" (timings: failures within
#                         the deadline + 1 s, none held longer, recovery
#                         <= 5 s after healing).
#
#   EventoFault::Netns    a private network namespace for a whole test file
#                         (T11b, T11c-nft: tc and nftables act on it only):
#                         enter(tools => [...]) re-executes the test under
#                         `unshare -n` and brings lo up there;
#                         shape_port($t, $port, ...) / unshape($t) TBF on
#                         one TCP port of lo; drop_port($t, $port) /
#                         heal($t) an nftables drop rule; host_cmd($t, ...)
#                         runs a command in the namespace the test came from.
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
use Test::More ();
use EventoTest qw(json_decode mult);
use EventoLoad;

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

# ------------------------------------------------------------ faults under load

sub _sample_workers {
    my ($d, $oldest, $lag) = @_;
    my $w = worker_counters($d);
    for my $x (values %$w) {
        $$oldest = $x->{oldest_request_ns} if $x->{oldest_request_ns} > $$oldest;
        $$lag = $x->{loop_lag_ns} if $x->{loop_lag_ns} > $$lag;
    }
}

# A fault under load: checker + probe writers, inject, hold, heal.
sub fault_run {
    my ($t, $d, %o) = @_;
    my ($name, $inject, $heal, $secs) = @o{qw(name inject heal secs)};
    my $deadline_s = $o{deadline_s} // 4;
    my %r = (name => $name, deadline_s => $deadline_s);
    my $pids0 = $d->worker_pids;
    my $chk = checker($t, $d, clients => 8, duration => 600, timeout_ms => $o{timeout_ms} // 8000);
    my $probe = EventoLoad->start($d, writers => 2, keep_alive => 1, prefix => "$name$$", pause => 0.02);
    Test::More::ok($t->wait_for(sub { $probe->count('ok') >= 10 }, 20), "$name: load running");
    Time::HiRes::sleep(1);
    $r{t_fault} = Time::HiRes::time();
    $inject->();
    my ($oldest, $lag) = (0, 0);
    my $during = $o{during};
    my ($dpid, $drd);
    while (Time::HiRes::time() < $r{t_fault} + $secs) {
        _sample_workers($d, \$oldest, \$lag);
        if ($during && Time::HiRes::time() >= $r{t_fault} + 1) {
            pipe $drd, my $dwr or croak "pipe: $!";
            $dpid = fork // croak "fork: $!";
            if (!$dpid) {
                alarm 0;
                close $drd;
                my $v = eval { $during->() };
                print {$dwr} EventoTest::json_encode(defined $v ? $v : { error => $@ || 'undef' });
                close $dwr;
                POSIX::_exit(0);
            }
            close $dwr;
            undef $during;
        }
        Time::HiRes::sleep(0.25);
    }
    $heal->();
    $r{t_heal} = Time::HiRes::time();
    if ($dpid) {
        local $/;
        my $txt = <$drd> // '';
        close $drd;
        waitpid $dpid, 0;
        my ($ok, $v) = json_decode($txt);
        $r{during} = $ok ? $v : { error => "during: no result ($txt)" };
    }
    my $back = $t->wait_for(sub {
        my ($f) = sort { $a <=> $b } map { $_->[7] } grep { $_->[0] eq 'ok' && $_->[7] >= $r{t_heal} } $probe->lines;
        $f;
    }, 15);
    $r{first_ok} = defined $back ? $back - $r{t_heal} : undef;
    # keep going a little, still watching the workers
    my $until = Time::HiRes::time() + 3;
    while (Time::HiRes::time() < $until) {
        _sample_workers($d, \$oldest, \$lag);
        Time::HiRes::sleep(0.25);
    }
    $probe->stop;
    @r{qw(oldest_s lag_s)} = ($oldest / 1e9, $lag / 1e9);
    if ($chk) {
        $chk->stop;
        $r{sum} = $chk->wait(180);
        ($r{ck_timeouts}, $r{ck_maxfail}) = (0, 0);
        for my $op ($chk->history) {
            $r{ck_timeouts}++ if ($op->{why} // '') eq 'timeout';
            next if ($op->{outcome} // '') eq 'ok';
            my $ms = (($op->{t_done_us} // 0) - ($op->{t_inv_us} // 0)) / 1000;
            $r{ck_maxfail} = $ms if $ms > $r{ck_maxfail};
        }
    }
    # probe: ok [ok, w, i, pos, gpos, ms, id, t]; fail [fail, w, i, ms, t, reason]
    my @l = $probe->lines;
    my @fail = grep { $_->[0] eq 'fail' } @l;
    ($r{p_maxfail}, $r{p_hung}, $r{p_bad}, $r{last_fail}) = (0, 0, 0, undef);
    for my $f (@fail) {
        $r{p_maxfail} = $f->[3] if $f->[3] > $r{p_maxfail};
        $r{p_hung}++ if $f->[5] =~ /^timeout/;
        $r{p_bad}++ unless defined json_5xx_code($f->[5]);
        my $end = $f->[4] + $f->[3] / 1000;
        $r{last_fail} = $end if $f->[4] >= $r{t_heal} - $deadline_s - 1 && (!defined $r{last_fail} || $end > $r{last_fail});
    }
    $r{p_fail} = scalar @fail;
    $r{p_ok} = grep { $_->[0] eq 'ok' } @l;
    $r{recovery} = defined $r{last_fail} && $r{last_fail} > $r{t_heal} ? $r{last_fail} - $r{t_heal} : 0;
    $r{recovery} = $r{first_ok} if defined $r{first_ok} && $r{first_ok} > $r{recovery};
    my ($lost, $stored) = $probe->verify($d);
    $r{lost} = scalar @$lost;
    my $pids1 = $d->worker_pids;
    $r{crashed} = grep { ($pids1->{$_} // 0) != $pids0->{$_} } keys %$pids0;
    Test::More::diag(sprintf '%s: probe %d ok, %d failed (slowest %d ms, %d not a JSON 5xx, %d timeouts), first ok %.2f s after healing, '
        . 'oldest request held %.2f s, loop lag %.3f s, checker slowest failure %d ms',
        $name, $r{p_ok}, $r{p_fail}, $r{p_maxfail}, $r{p_bad}, $r{p_hung}, $r{first_ok} // -1,
        $r{oldest_s}, $r{lag_s}, $r{ck_maxfail} // -1);
    return \%r;
}

sub fault_rows {
    my ($id, $title, $r) = @_;
    my $deadline_s = $r->{deadline_s};
    my $s = $r->{sum};
    my $viol = $s && !$s->{error} ? $s->{violations_total} // -1 : undef;
    my $corr = sprintf('%s, %d indeterminate writes resolved, %d client timeouts, %d answers not a JSON 5xx, %d probe writes lost, %d workers crashed',
        defined $viol ? "$viol violations" : 'evcheck ' . ($s ? 'failed' : 'not built'),
        $s && !$s->{error} ? $s->{indeterminate} // 0 : 0,
        ($r->{ck_timeouts} // 0) + $r->{p_hung}, $r->{p_bad}, $r->{lost}, $r->{crashed});
    Test::More::diag("evcheck: $s->{error}") if $s && $s->{error};
    Test::More::diag('evcheck examples: ' . join(' | ', @{ $s->{examples} || [] })) if $viol;
    EventoTest::battery($id, $title, $corr, '0 violations; every request answered with an error, none hangs; no crash',
        (!$s || (defined $viol && $viol == 0 && $s->{exit} == 0)) && !$r->{ck_timeouts} && !$r->{p_hung}
        && !$r->{p_bad} && !$r->{lost} && !$r->{crashed});
    my $maxfail = ($r->{ck_maxfail} // 0) > $r->{p_maxfail} ? $r->{ck_maxfail} : $r->{p_maxfail};
    my $fig = sprintf('slowest failed request %.2f s, oldest request held by a worker %.2f s, recovery %.2f s after healing',
        $maxfail / 1000, $r->{oldest_s}, $r->{recovery});
    EventoTest::battery("${id}t", "$title: timings", $fig,
        "requests fail <= deadline + 1 s ($deadline_s s; measured client-side); none held > deadline + 1 s; recovery <= 5 s",
        timing_ok($maxfail <= $deadline_s * 1000 + 1000 && $r->{oldest_s} <= $deadline_s + 1
                  && defined $r->{first_ok} && $r->{recovery} <= 5, \$fig));
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

# =========================================================================

package EventoFault::Netns;

# A test file that needs tc or nftables runs whole in a network namespace
# of its own (unshare -n): its cluster, daemons and clients talk over that
# namespace's lo, and every qdisc and rule vanishes with the namespace
# when the file's last process exits.  The host's network is never
# touched; host_cmd only reads it (to show it unchanged).

use strict;
use warnings;
use Carp qw(croak);
use Fcntl qw(F_GETFD F_SETFD FD_CLOEXEC);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

my %TOOL;           # name => path
my $TABLE = 'evt_netns';
our $HOSTNS;        # /proc/<pid>/fd/<n>: the namespace the test came from
our $HOSTFH;        # that fd, kept open

sub tool {
    my ($name) = @_;
    return $TOOL{$name} if $TOOL{$name};
    for my $d (split(/:/, $ENV{PATH} // ''), qw(/usr/sbin /sbin /usr/bin /bin)) {
        next unless length $d;
        return $TOOL{$name} = "$d/$name" if -x "$d/$name" && -f _;
    }
    return undef;
}

sub _ns_id { my ($p) = @_; return readlink($p) // '' }

# enter(tools => [..]): called first thing by the test file.
#   - already inside the namespace this made: lo up (mtu 1500, so that a
#     small TBF burst does not black-hole 64 KiB packets), returns
#     { inside => 1 } (or { error => ... } when lo cannot be set up)
#   - not root: { skip => reason }
#   - a tool missing: { missing => [names] }; unshare -n unusable: { error => .. }
#   - else re-executes the test (same perl, @INC through PERL5LIB, env,
#     arguments) under `unshare -n`, keeping an fd on the host namespace
#     for host_cmd; does not return.
sub enter {
    my (%o) = @_;
    my @tools = ('unshare', 'nsenter', @{ $o{tools} || [] });
    if (($ENV{EVENTODB_NETNS_HOSTFD} // '') =~ /^(\d+)$/) {
        my $fd = $1;
        my $host = _ns_id("/proc/self/fd/$fd");
        if ($host =~ /^net:/ && $host ne _ns_id('/proc/self/ns/net')) {
            # the children (cluster, daemons) need not hold the host namespace
            if (open my $fh, '<&=', $fd) {
                my $fl = fcntl($fh, F_GETFD, 0);
                fcntl($fh, F_SETFD, $fl | FD_CLOEXEC) if defined $fl;
                $HOSTFH = $fh;
            }
            $HOSTNS = "/proc/$$/fd/$fd";
            for my $c (['link', 'set', 'lo', 'mtu', '1500'], ['link', 'set', 'lo', 'up']) {
                my $out = `'${\ tool('ip')}' @$c 2>&1`;
                return { inside => 1, error => "ip @$c: $out" } if $?;
            }
            return { inside => 1 };
        }
    }
    return { skip => 'a network namespace (unshare -n), tc and nft need root' } unless $> == 0;
    my @missing = grep { !tool($_) } @tools;
    return { missing => \@missing } if @missing;
    my $out = `'${\ tool('unshare')}' -n -- true 2>&1`;
    return { error => "unshare -n does not work here: $out" } if $?;
    open my $host, '<', '/proc/self/ns/net' or return { error => "/proc/self/ns/net: $!" };
    my $fl = fcntl($host, F_GETFD, 0);
    fcntl($host, F_SETFD, $fl & ~FD_CLOEXEC) or return { error => "fcntl: $!" };
    $ENV{EVENTODB_NETNS_HOSTFD} = fileno $host;
    $ENV{PERL5LIB} = join ':', grep { !ref } @INC;
    { no warnings 'exec'; exec tool('unshare'), '-n', '--', $^X, $0, @ARGV; }
    return { error => "exec unshare: $!" };
}

sub inside { defined $HOSTNS }

# host_cmd($t, @cmd): run a command in the namespace the test came from
# (to read the host's state); the run_cmd result hash.
sub host_cmd {
    my ($t, @cmd) = @_;
    croak 'host_cmd: not inside a namespace made by enter()' unless inside();
    return $t->run_cmd([tool('nsenter'), "--net=$HOSTNS", '--', @cmd], timeout => 20);
}

# The host's nftables ruleset and lo qdiscs, as text.
sub host_state {
    my ($t) = @_;
    my $n = host_cmd($t, tool('nft'), 'list', 'ruleset');
    my $q = host_cmd($t, tool('tc'), 'qdisc', 'show', 'dev', 'lo');
    return "nft (exit $n->{exit}):\n$n->{stdout}$n->{stderr}tc (exit $q->{exit}):\n$q->{stdout}$q->{stderr}";
}

# Processes other than this one in this namespace (after everything was
# stopped there should be none: the namespace dies with this process).
sub ns_processes {
    my $me = _ns_id('/proc/self/ns/net');
    my @p;
    opendir my $dh, '/proc' or return ();
    for my $p (grep { /^\d+$/ && $_ != $$ } readdir $dh) {
        push @p, $p if _ns_id("/proc/$p/ns/net") eq $me;
    }
    closedir $dh;
    return sort { $a <=> $b } @p;
}

sub _run {
    my ($t, $cmd, %o) = @_;
    my $r = $t->run_cmd($cmd, timeout => 20, %o);
    croak "@$cmd: exit $r->{exit}: $r->{stderr}$r->{stdout}" if ($r->{exit} || $r->{signal}) && !$o{may_fail};
    return $r;
}

# shape_port($t, $port, rate => '1mbit', burst => '32kb', latency =>
# '200ms'): TBF on lo for TCP packets from or to $port only.  The root is
# an HTB (prio is not built into every kernel; HTB and TBF are) with two
# 10gbit classes: 1:10 (its child the TBF) gets sport/dport == $port by
# u32 filters, everything else goes to 1:20, in effect unshaped.
sub shape_port {
    my ($t, $port, %o) = @_;
    my ($rate, $burst, $lat) = ($o{rate} // '1mbit', $o{burst} // '32kb', $o{latency} // '200ms');
    my $tc = tool('tc');
    _run($t, [$tc, qw(qdisc add dev lo root handle 1: htb default 20)]);
    _run($t, [$tc, qw(class add dev lo parent 1: classid), "1:$_", qw(htb rate 10gbit quantum 60000)]) for 10, 20;
    _run($t, [$tc, qw(qdisc add dev lo parent 1:10 handle 10: tbf rate), $rate, 'burst', $burst, 'latency', $lat]);
    for my $dir (qw(sport dport)) {
        _run($t, [$tc, qw(filter add dev lo parent 1: protocol ip prio 1 u32 match ip), $dir, $port, '0xffff',
                  qw(flowid 1:10)]);
    }
    return "htb root, tbf rate $rate burst $burst latency $lat on tcp port $port of lo (mtu 1500)";
}

# Counters of the TBF (handle 10:): {sent_bytes, pkts, dropped, overlimits}.
sub tbf_stats {
    my ($t) = @_;
    my $r = _run($t, [tool('tc'), qw(-s qdisc show dev lo)], may_fail => 1);
    my ($s) = $r->{stdout} =~ /^(qdisc tbf 10:.*?)(?=^qdisc |\z)/ms or return {};
    my %h;
    @h{qw(sent_bytes pkts dropped overlimits)} = $s =~ /Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)/;
    return \%h;
}

sub unshape {
    my ($t) = @_;
    _run($t, [tool('tc'), qw(qdisc del dev lo root)]);
}

# drop_port($t, $port): an inet table with an output-hook chain whose rule
# drops (and counts) every TCP packet to $port: a partition of everything
# that connects to that port (its replies have nothing to answer).
sub drop_port {
    my ($t, $port) = @_;
    _run($t, [tool('nft'), '-f', '-'], stdin => "add table inet $TABLE\n"
        . "add chain inet $TABLE out { type filter hook output priority 0; policy accept; }\n"
        . "add rule inet $TABLE out tcp dport $port counter drop\n");
}

# heal($t): delete the rule (by its handle), then the empty table.
# Returns the packets it dropped.
sub heal {
    my ($t) = @_;
    my $r = _run($t, [tool('nft'), '-a', 'list', 'chain', 'inet', $TABLE, 'out']);
    my ($n) = $r->{stdout} =~ /counter packets (\d+)/;
    my ($h) = $r->{stdout} =~ /drop # handle (\d+)/ or croak "nft: no drop rule in\n$r->{stdout}";
    _run($t, [tool('nft'), 'delete', 'rule', 'inet', $TABLE, 'out', 'handle', $h]);
    _run($t, [tool('nft'), 'delete', 'table', 'inet', $TABLE]);
    return $n;
}

# transfer_secs($bytes): seconds to move $bytes over a fresh TCP
# connection on 127.0.0.1 (a port of no interest to any filter).
sub transfer_secs {
    my ($bytes) = @_;
    my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1)
        or croak "listen: $!";
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        alarm 0;
        my $c = $ls->accept or POSIX::_exit(1);
        my $buf = 'x' x $bytes;
        my $off = 0;
        while ($off < $bytes) {
            my $w = syswrite $c, $buf, $bytes - $off, $off;
            POSIX::_exit(1) unless defined $w;
            $off += $w;
        }
        close $c;
        POSIX::_exit(0);
    }
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ls->sockport) or croak "connect: $!";
    my $t0 = Time::HiRes::time();
    my $n = 0;
    while (my $r = sysread $c, my $b, 65536) { $n += $r }
    my $el = Time::HiRes::time() - $t0;
    waitpid $pid, 0;
    return $n == $bytes ? $el : undef;
}

1;
