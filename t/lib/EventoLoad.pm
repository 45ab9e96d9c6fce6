package EventoLoad;

# EventoLoad - a small load generator for the operations tests (t/9x-*.t).
#
# start($daemon, %o) forks writer processes that call stream.write in a
# loop until stopped, each on its own stream, and record every outcome in
# a file of their own:  "ok <i> <position> <globalPosition> <ms> <id> <t>"
# or "fail <i> <ms> <t> <status and body, or what went wrong>", where t is
# when the request started (epoch seconds) and ms how long it took.  Every write carries options.id, so
# retrying it is safe (decisions.md 4: a repeated id returns the original
# result).
#
# Modes (keep_alive => 0|1):
#   0  a new TCP connection per request: nothing may ever fail.
#   1  one persistent connection per writer.  A server may close an idle
#      keep-alive connection at any moment (here: a retiring worker), and
#      a request sent at that instant meets a closed socket.  As RFC 9112
#      9.3.1 allows, the writer then retries once on a new connection, but
#      only if the connection had already carried a response and nothing
#      of the new response arrived; such retries are counted ("retry"
#      lines), not failures.
#
# Core Perl only; the HTTP client is a minimal one so that the exact
# failure (refused, reset before any byte, timeout, status) is known.

use strict;
use warnings;
use Errno qw(EINTR EAGAIN);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();
use EventoTest qw(json_encode json_decode mult new_id);

# One request on $conn (a hash: sock, used).  Returns (status, body, why);
# status 0 = no response; why 'nobyte' if the connection ended before any
# byte of the response arrived.
sub _request {
    my ($c, $host, $port, $path, $body, $token, $timeout) = @_;
    if (!$c->{sock}) {
        $c->{sock} = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp',
                                           Timeout => $timeout)
            or return (0, undef, "connect: $!");
        binmode $c->{sock};
        $c->{used} = 0;
    }
    my $s = $c->{sock};
    my $req = "POST $path HTTP/1.1\r\nHost: $host:$port\r\nContent-Type: application/json\r\n"
            . "Authorization: Bearer $token\r\nContent-Length: " . length($body) . "\r\n"
            . ($c->{keep} ? '' : "Connection: close\r\n") . "\r\n" . $body;
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $req) {
        my $w = syswrite $s, $req, length($req) - $off, $off;
        if (!defined $w) {
            next if $! == EINTR;
            return (0, undef, 'nobyte');    # peer closed before reading the request
        }
        $off += $w;
    }
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = Time::HiRes::time() + $timeout;
    while (1) {
        my ($resp) = EventoTest::parse_responses($buf, 0);
        if (@$resp) {
            my $r = $resp->[0];
            $c->{used}++;
            if (!$c->{keep} || lc($r->{headers}{connection} // '') eq 'close') {
                close $s;
                delete $c->{sock};
            }
            return ($r->{status}, $r->{body}, undef);
        }
        my $left = $deadline - Time::HiRes::time();
        return (0, undef, 'timeout') if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $s, $buf, 65536, length $buf;
        next if !defined $n && $! == EINTR;
        if (!$n) {
            my $why = length $buf ? 'truncated' : 'nobyte';
            close $s;
            delete $c->{sock};
            return (0, undef, $why);
        }
    }
}

# start($daemon, %o): writers => n (default 4), keep_alive => 0|1,
# token => t (default admin), prefix => stream prefix, dir => where the
# result files go (default the test's directory), pause => seconds
# between writes (default 0).
sub start {
    my ($class, $d, %o) = @_;
    my $n = $o{writers} // 4;
    my $dir = $o{dir} // $d->{t}->dir;
    my $prefix = $o{prefix} // ('load' . int(rand 1e6));
    my $self = bless { d => $d, n => $n, dir => $dir, prefix => $prefix, kids => [],
                       stopfile => "$dir/$prefix.stop", files => [] }, $class;
    unlink $self->{stopfile};
    for my $w (0 .. $n - 1) {
        my $file = "$dir/$prefix.$w.txt";
        unlink $file;
        push @{ $self->{files} }, $file;
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            alarm 0;
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
            open my $fh, '>>', $file or POSIX::_exit(1);
            $fh->autoflush(1);
            my $c = { keep => $o{keep_alive} ? 1 : 0 };
            my $stream = "$prefix-$w";
            my $token = $o{token} // EventoTest::ADMIN_TOKEN;
            my $t0 = Time::HiRes::time();
            for (my $i = 0; !-e $self->{stopfile} && Time::HiRes::time() - $t0 < 120; $i++) {
                my $id = new_id();
                my $body = json_encode(['stream.write', $stream,
                                        { type => 'Load', data => { w => $w, i => $i } }, { id => $id }]);
                my $ts = Time::HiRes::time();
                my $reused = $c->{sock} && $c->{used};
                my ($st, $rb, $why) = _request($c, $d->host, $d->port, '/rpc', $body, $token,
                                               10 * mult());
                if (!$st && $reused && ($why // '') eq 'nobyte') {
                    printf $fh "retry %d %s %.3f\n", $i, $why, Time::HiRes::time();
                    ($st, $rb, $why) = _request($c, $d->host, $d->port, '/rpc', $body, $token,
                                                10 * mult());
                }
                my $ms = int((Time::HiRes::time() - $ts) * 1000);
                my ($ok, $v) = $st ? json_decode($rb // '') : (0);
                if ($st == 200 && $ok && ref $v eq 'HASH') {
                    printf $fh "ok %d %s %s %d %s %.3f\n", $i, $v->{position}, $v->{globalPosition}, $ms, $id, $ts;
                } else {
                    my $r = $st ? "$st " . ($rb // '') : ($why // '?');
                    $r =~ s/\s+/ /g;
                    printf $fh "fail %d %d %.3f %s\n", $i, $ms, $ts, $r;
                }
                Time::HiRes::sleep($o{pause}) if $o{pause};
            }
            close $fh;
            POSIX::_exit(0);
        }
        push @{ $self->{kids} }, $pid;
    }
    return $self;
}

sub streams { my $s = shift; map { "$s->{prefix}-$_" } 0 .. $s->{n} - 1 }

# lines(): all outcome lines so far, as [kind, writer, fields...].
sub lines {
    my ($self) = @_;
    my @l;
    for my $w (0 .. $#{ $self->{files} }) {
        open my $fh, '<', $self->{files}[$w] or next;
        while (my $x = <$fh>) {
            chomp $x;
            next unless $x =~ /\S/;
            my @f = split / /, $x, ($x =~ /^fail / ? 5 : 7);    # a fail reason stays whole
            push @l, [$f[0], $w, @f[1 .. $#f]];
        }
        close $fh;
    }
    return @l;
}

sub count {
    my ($self, $kind) = @_;
    return scalar grep { $_->[0] eq $kind } $self->lines;
}

# stop(): ask the writers to finish their current request and wait.
sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    open my $fh, '>', $self->{stopfile} or die "$self->{stopfile}: $!";
    close $fh;
    my $deadline = Time::HiRes::time() + 30 * mult();
    for my $pid (@{ $self->{kids} }) {
        while (waitpid($pid, POSIX::WNOHANG()) == 0) {
            if (Time::HiRes::time() > $deadline) { kill 'KILL', $pid; waitpid $pid, 0; last }
            Time::HiRes::sleep(0.02);
        }
    }
}

# verify($daemon, $token): read every stream back; returns (lost, stored)
# where lost lists acknowledged writes that are not stored exactly as
# acknowledged (same position, global position and id).
sub verify {
    my ($self, $d, $token) = @_;
    $token //= EventoTest::ADMIN_TOKEN;
    my %stored;
    my $n = 0;
    for my $w (0 .. $self->{n} - 1) {
        # The read-back may meet the tail of a fault (a worker reconnecting
        # after a PostgreSQL restart answers 5xx for a moment, a retiring
        # worker closes): retry for a while rather than lose the file's rows.
        my ($st, $b, $raw);
        my $until = Time::HiRes::time() + 15 * EventoTest::mult();
        while (1) {
            ($st, $b, undef, $raw) = $d->rpc($token, 'stream.get', "$self->{prefix}-$w", { batchSize => -1 });
            last if $st == 200 || ($st >= 400 && $st < 500) || Time::HiRes::time() > $until;
            Time::HiRes::sleep(0.2);
        }
        die "stream.get failed: $st " . ($raw // '') unless $st == 200;
        for my $m (@$b) {
            $stored{"$w/$m->[2]"} = $m;
            $n++;
        }
    }
    my @lost;
    for my $l (grep { $_->[0] eq 'ok' } $self->lines) {
        my (undef, $w, $i, $pos, $gpos, undef, $id) = @$l;
        my $m = $stored{"$w/$pos"};
        push @lost, $l unless $m && $m->[0] eq $id && $m->[3] == $gpos && $m->[4]{i} == $i;
    }
    return (\@lost, $n);
}

sub DESTROY {
    my ($self) = @_;
    return unless $self->{kids};
    for my $pid (@{ $self->{kids} }) {
        kill 'KILL', $pid if kill 0, $pid;
    }
}

1;
