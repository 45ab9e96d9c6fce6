package EventoConns;

# EventoConns - many client connections held by a child process, for the
# protocol battery (t/battery/33-slow.t, 34-connections.t: T13, T14).
#
#   my $h = EventoConns->hold($daemon, n => 2000, mode => 'partial', max_secs => 30);
#   my $r = $h->ready;        # {opened, failed}: once every connection is set up
#   ...                       # run load alongside
#   my $res = $h->result;     # waits for the child: see below
#
# Modes (what each connection does once connected):
#   idle       nothing: a keep-alive connection that never sends a request
#   partial    a request line and one header line, never the end of the head
#   slowloris  the request line, then one header line every `interval` s
#   slowbody   a complete head announcing Content-Length 10000 for /rpc,
#              then one body byte every `interval` s
#   slowread   a complete request (`request` bytes), then reads `read_bytes`
#              bytes every `interval` s with a small receive buffer; with
#              ready_bytes => N, ready() waits until each connection has N
#              bytes of answer waiting (the server did the request's work)
#
# The child polls every socket (IO::Poll: select() stops at 1024 fds),
# notes when the server closes each one (EOF or reset), counts answers
# that were a 503 (refused past the connection cap) or a 408, and stops
# when all are closed, after max_secs, or on SIGTERM.  result() returns
# {opened, failed, closed, open_left, refused, s408, close_min, close_p50,
# close_max, bytes_read, cpu_s, wall_s}, close times in seconds from the connection's
# first byte sent (from connect for idle); cpu_s is the child's own CPU
# time (user + system), wall_s its run time.
#
# Core Perl only.

use strict;
use warnings;
use Errno qw(EINTR EAGAIN EWOULDBLOCK EINPROGRESS);
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use POSIX ();
use Socket qw(PF_INET SOCK_STREAM IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_RCVBUF inet_aton sockaddr_in);
use Time::HiRes ();
use EventoTest qw(json_encode json_decode mult);

sub hold {
    my ($class, $d, %o) = @_;
    pipe my $r, my $w or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        alarm 0;
        $SIG{TERM} = sub { $EventoConns::STOP = 1 };
        my $res = eval { _child($d->host, $d->port, $w, %o) } // { error => "$@" };
        syswrite $w, 'RESULT ' . json_encode($res) . "\n";
        close $w;
        POSIX::_exit(0);
    }
    close $w;
    return bless { pid => $pid, r => $r, buf => '' }, $class;
}

sub _line {
    my ($self, $prefix, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (1) {
        if ($self->{buf} =~ s/^\Q$prefix\E (.*)\n//m) {
            my ($ok, $v) = json_decode($1);
            return $ok ? $v : { error => "bad line: $1" };
        }
        my $left = $deadline - Time::HiRes::time();
        return { error => "no $prefix line within $secs s" } if $left <= 0;
        my $rin = '';
        vec($rin, fileno $self->{r}, 1) = 1;
        next unless select(my $rout = $rin, undef, undef, $left);
        my $n = sysread $self->{r}, $self->{buf}, 65536, length $self->{buf};
        return { error => "child ended: $self->{buf}" } if !$n && $self->{buf} !~ /^\Q$prefix\E /m;
    }
}

sub ready { my ($self) = @_; return $self->{ready} //= $self->_line('READY', 120 * mult()) }

sub result {
    my ($self, $secs) = @_;
    return $self->{result} if $self->{result};
    $self->{result} = $self->_line('RESULT', $secs // 300);
    waitpid $self->{pid}, 0;
    return $self->{result};
}

# A holder that holds nothing (a test leaving one kind of client out).
sub none { return bless { pid => 0, ready => {}, result => {} }, $_[0] }

sub stop { my ($self) = @_; kill "TERM", $self->{pid} if $self->{pid}; return $self->result(60) }
sub pid { $_[0]{pid} }

sub DESTROY {
    my ($self) = @_;
    return unless $self->{pid} && !$self->{result};
    kill 'KILL', $self->{pid};
    waitpid $self->{pid}, 0;
}

sub _child {
    my ($host, $port, $w, %o) = @_;
    my $n = $o{n};
    my $mode = $o{mode} // 'idle';
    my $interval = $o{interval} // 1;
    my $max = ($o{max_secs} // 60) * mult();
    my $addr = sockaddr_in($port, inet_aton($host));
    my (@s, %fd2i);
    my ($opened, $failed) = (0, 0);
    my $t_start = Time::HiRes::time();
    for my $i (0 .. $n - 1) {
        socket(my $s, PF_INET, SOCK_STREAM, 0) or do { $failed++; next };
        setsockopt($s, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}) if $o{rcvbuf};
        if (!connect($s, $addr)) { $failed++; close $s; next }
        setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
        my $c = { s => $s, t0 => Time::HiRes::time(), closed => undef, buf => '', sent => 0, next => 0 };
        my $first = $mode eq 'partial' ? "GET /health HTTP/1.1\r\nHost: x\r\n"
                  : $mode eq 'slowloris' ? "GET /health HTTP/1.1\r\n"
                  : $mode eq 'slowbody' ? "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
                  : $mode eq 'slowread' ? $o{request}
                  : '';
        if (length $first) {
            my $k = syswrite $s, $first;
            if (!defined $k) { $failed++; close $s; next }
        }
        $c->{next} = $c->{t0} + $interval;
        push @s, $c;
        $opened++;
        # Keep the server's accept queue (backlog 1024) from overflowing:
        # an overflowed queue holds a connection the client believes open
        # for seconds (SYN-ACK retries), which would count against the
        # server's deadlines.  At most 2,000 connections a second.
        Time::HiRes::sleep(0.05) unless $opened % 100;
    }
    for my $c (@s) { POSIX::fcntl($c->{s}, POSIX::F_SETFL(), POSIX::O_NONBLOCK()) }
    # ready_bytes => N: READY only once every connection has N answer
    # bytes waiting in its receive buffer (or was closed), that is once the
    # server has done the work of the request and the client is in its
    # slow phase.  Nothing is read: the bytes are counted (FIONREAD).
    my ($answered, $t_answer) = (0, Time::HiRes::time());
    if ($o{ready_bytes}) {
        my %wait = map { $_ => $s[$_] } 0 .. $#s;
        my $until = Time::HiRes::time() + 30 * mult();
        while (%wait && Time::HiRes::time() < $until) {
            for my $i (keys %wait) {
                my $n = pack 'i', 0;
                my $r = ioctl($wait{$i}{s}, 0x541B, $n);    # FIONREAD (Linux)
                next if $r && unpack('i', $n) < $o{ready_bytes};
                delete $wait{$i};
                $answered++;
            }
            Time::HiRes::sleep(0.02) if %wait;
        }
    }
    syswrite $w, 'READY ' . json_encode({ opened => $opened, failed => $failed, answered => $answered,
                                         answer_secs => Time::HiRes::time() - $t_answer,
                                         secs => Time::HiRes::time() - $t_start }) . "\n";
    my $poll = IO::Poll->new;
    # Slow readers read on their schedule only: polling their (always
    # readable) sockets would spin this process and starve the server.
    my $slowread = $mode eq 'slowread' && !$o{read_all};
    $poll->mask($_->{s} => POLLIN) for $slowread ? () : @s;
    my $open = @s;
    my ($refused, $s408, $bytes) = (0, 0, 0);
    my $deadline = Time::HiRes::time() + $max;
    my $drip = $mode eq 'slowloris' || $mode eq 'slowbody' || $mode eq 'slowread';
    my %byfd = map { fileno($_->{s}) => $_ } @s;
    while ($open > 0 && !$EventoConns::STOP && Time::HiRes::time() < $deadline) {
        my $nready = $slowread ? Time::HiRes::sleep(0.05) && 0 : $poll->poll($drip ? 0.05 : 0.2);
        my $now = Time::HiRes::time();
        if ($nready && $nready > 0) {
            for my $h ($poll->handles(POLLIN | POLLERR | POLLHUP)) {
                my $c = $byfd{ fileno $h } or next;
                next if defined $c->{closed};
                next if $mode eq 'slowread' && !$o{read_all};    # read on schedule below
                my $k = sysread $h, my $x, 65536;
                if (!defined $k && ($! == EAGAIN || $! == EINTR)) { next }
                if ($k) {
                    $bytes += $k;
                    $c->{buf} .= $x if length $c->{buf} < 64;
                    next;
                }
                $c->{closed} = $now - $c->{t0};
                $refused++ if $c->{buf} =~ m{^HTTP/1\.1 503};
                $s408++ if $c->{buf} =~ m{^HTTP/1\.1 408};
                $poll->remove($h);
                close $h;
                $open--;
            }
        }
        next unless $drip;
        for my $c (@s) {
            next if defined $c->{closed} || $now < $c->{next};
            $c->{next} = $now + $interval;
            my $ok = 1;
            if ($mode eq 'slowloris') {
                $ok = defined syswrite $c->{s}, 'X-Drip-' . $c->{sent}++ . ": y\r\n";
            } elsif ($mode eq 'slowbody') {
                $ok = defined syswrite $c->{s}, 'x';
            } else {
                my $k = sysread $c->{s}, my $x, $o{read_bytes} // 1;
                next if !defined $k && ($! == EAGAIN || $! == EINTR);
                $bytes += $k if $k;
                $c->{buf} .= $x if $k && length $c->{buf} < 64;
                $ok = $k;
            }
            next if $ok || ($! == EAGAIN || $! == EWOULDBLOCK);
            $c->{closed} = $now - $c->{t0};
            $refused++ if $c->{buf} =~ m{^HTTP/1\.1 503};
            $s408++ if $c->{buf} =~ m{^HTTP/1\.1 408};
            $poll->remove($c->{s}) unless $slowread;
            close $c->{s};
            $open--;
        }
    }
    my @ct = sort { $a <=> $b } map { $_->{closed} } grep { defined $_->{closed} } @s;
    my $pct = sub { @ct ? $ct[int(($#ct) * $_[0])] : undef };
    my @cpu = times;
    return { opened => $opened, failed => $failed, closed => scalar @ct, open_left => $open,
             cpu_s => $cpu[0] + $cpu[1], wall_s => Time::HiRes::time() - $t_start,
             refused => $refused, s408 => $s408, bytes_read => $bytes,
             close_min => $ct[0], close_p50 => $pct->(0.5), close_max => $ct[-1] };
}

1;
