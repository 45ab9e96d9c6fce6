package EventoSSE;

# EventoSSE - a raw-socket client of GET /subscribe for the TAP suite.
#
# Opens its own connection, sends the request, and parses the response
# incrementally: the head, the chunked body, then the event blocks.  Each
# block becomes {comment => 'ready'} or {event => 'poke', data => {...},
# raw => "..."}.  Nothing here sleeps for a fixed time: wait_for polls the
# socket until a condition holds or a deadline passes.
#
#   my $s = EventoSSE->new($daemon, token => $T, query => { stream => 's-1' });
#   $s->wait_for(sub { $s->ready }, 5) or fail(...);
#   my @p = $s->pokes;          # decoded poke data, in order

use strict;
use warnings;

use Carp qw(croak);
use Errno qw(EINTR EAGAIN);
use IO::Select;
use Time::HiRes ();

use EventoTest ();

sub _esc {
    my ($s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

# new($daemon, %o): token => t (Authorization: Bearer), query => {k => v}
# (also token=...), query_list => [[k, v], ...] (ordered), path => '/subscribe',
# http10 => 1, extra => "raw header lines\r\n".
sub new {
    my ($class, $d, %o) = @_;
    my @q = @{ $o{query_list} || [] };
    push @q, map { [$_, $o{query}{$_}] } sort keys %{ $o{query} || {} };
    my $path = ($o{path} // '/subscribe') . (@q ? '?' . join('&', map { _esc($_->[0]) . '=' . _esc($_->[1]) } @q) : '');
    my $sock = $d->connect;
    my $req = "GET $path HTTP/" . ($o{http10} ? '1.0' : '1.1') . "\r\nHost: test\r\n";
    $req .= "Authorization: Bearer $o{token}\r\n" if defined $o{token};
    $req .= $o{extra} // '';
    $req .= "\r\n";
    $d->send_all($sock, $req);
    return bless {
        d => $d, sock => $sock, raw => '', head => undef, status => undef, headers => {},
        chunked => 0, body => '', blocks => [], closed => 0, ended => 0, t0 => Time::HiRes::time(),
        first_byte_at => undef, ready_at => undef,
    }, $class;
}

sub sock    { $_[0]{sock} }
sub status  { $_[0]{status} }
sub headers { $_[0]{headers} }
sub closed  { $_[0]{closed} }
sub ended   { $_[0]{ended} }     # the chunked terminator arrived
sub blocks  { @{ $_[0]{blocks} } }
sub body    { $_[0]{body} }      # everything decoded so far (or the error body)
sub ready   { scalar grep { defined $_->{comment} && $_->{comment} eq 'ready' } @{ $_[0]{blocks} } }
sub ready_at { $_[0]{ready_at} }
sub comments { map { $_->{comment} } grep { defined $_->{comment} } @{ $_[0]{blocks} } }
sub pokes   { map { $_->{data} } grep { ($_->{event} // '') eq 'poke' } @{ $_[0]{blocks} } }
sub json    { my ($ok, $v) = EventoTest::json_decode($_[0]{body}); $ok ? $v : undef }

sub worker { my ($self) = @_; return $self->{d}->conn_worker($self->{sock}) }

# Read what arrives within $secs (default 0: only what is there now).
sub pump {
    my ($self, $secs) = @_;
    return if $self->{closed};
    my $sel = IO::Select->new($self->{sock});
    my $deadline = Time::HiRes::time() + ($secs // 0);
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        $left = 0 if $left < 0;
        last unless $sel->can_read($left);
        my $n = sysread $self->{sock}, $self->{raw}, 65536, length $self->{raw};
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            $self->{closed} = 1;
            last;
        }
        if ($n == 0) { $self->{closed} = 1; last }
        $self->{first_byte_at} //= Time::HiRes::time();
        $self->_parse;
        last if $left == 0;
    }
    $self->_parse;
}

# Poll until $cond->($self) is true (returned) or $secs (x mult) pass (undef).
sub wait_for {
    my ($self, $cond, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 5) * EventoTest::mult();
    while (1) {
        my $v = $cond->($self);
        return $v if $v;
        return undef if $self->{closed} || Time::HiRes::time() > $deadline;
        $self->pump(0.05);
    }
}

# Wait until at least $n pokes arrived; returns the pokes.
sub wait_pokes {
    my ($self, $n, $secs) = @_;
    $self->wait_for(sub { scalar($_[0]->pokes) >= $n }, $secs);
    return $self->pokes;
}

sub _parse {
    my ($self) = @_;
    if (!defined $self->{head}) {
        my $i = index $self->{raw}, "\r\n\r\n";
        return if $i < 0;
        $self->{head} = substr $self->{raw}, 0, $i;
        substr($self->{raw}, 0, $i + 4) = '';
        my @l = split /\r\n/, $self->{head};
        my $sl = shift @l;
        ($self->{status}) = $sl =~ m{^HTTP/\d\.\d (\d{3})};
        for (@l) { my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or next; $self->{headers}{lc $k} = $v }
        $self->{chunked} = ($self->{headers}{'transfer-encoding'} // '') =~ /chunked/i;
        if ($self->{status} && $self->{status} == 100) {   # interim
            $self->{head} = undef;
            %{ $self->{headers} } = ();
            return $self->_parse;
        }
    }
    if ($self->{chunked}) {
        while (1) {
            my $i = index $self->{raw}, "\r\n";
            last if $i < 0;
            my $size = hex substr($self->{raw}, 0, $i);
            if ($size == 0) {
                $self->{ended} = 1 if length($self->{raw}) >= $i + 4;
                last;
            }
            last if length($self->{raw}) < $i + 2 + $size + 2;
            $self->{body} .= substr $self->{raw}, $i + 2, $size;
            substr($self->{raw}, 0, $i + 2 + $size + 2) = '';
        }
    } else {
        $self->{body} .= $self->{raw};
        $self->{raw} = '';
    }
    return unless ($self->{status} // 0) == 200;
    # Complete blocks: up to "\n\n".
    while ((my $j = index $self->{body}, "\n\n", $self->{_off} // 0) >= 0) {
        my $off = $self->{_off} // 0;
        my $blk = substr $self->{body}, $off, $j - $off;
        $self->{_off} = $j + 2;
        my %b = (raw => "$blk\n\n");
        for my $line (split /\n/, $blk) {
            if ($line =~ /^: ?(.*)$/) { $b{comment} = $1 }
            elsif ($line =~ /^event: (.*)$/) { $b{event} = $1 }
            elsif ($line =~ /^data: (.*)$/) {
                $b{data_raw} = $1;
                my ($ok, $v) = EventoTest::json_decode($1);
                $b{data} = $ok ? $v : undef;
            } else { $b{bad} = $line }
        }
        $b{at} = Time::HiRes::time();
        $self->{ready_at} //= $b{at} if defined $b{comment} && $b{comment} eq 'ready';
        push @{ $self->{blocks} }, \%b;
    }
}

sub close {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
    $self->{sock} = undef;
    $self->{closed} = 1;
}

sub DESTROY { my ($self) = @_; CORE::close($self->{sock}) if $self->{sock} }

1;
