package EventoProc;

# EventoProc - helpers of the process-fault battery files
# (t/battery/10-*.t .. 17-*.t: T03 T04 T05 T06 T07 T17).
#
#   log_events($d)         the daemon's log lines since its start, each
#                          [epoch seconds (ms), text], from the ISO time stamps
#   line_time($line)       the epoch seconds of one log line
#   load_start($d, %o)     background load with a history check: evcheck
#                          (the history checker, ./evcheck) when it is
#                          built, else EventoLoad's keep-alive writers;
#                          ->stop returns a uniform summary hash
#   pg_conns($t, $db)      backends connected to database $db
#   loadavg()              1-minute load average; overloaded() is true when
#                          it is above 2 x the number of CPUs (timing
#                          figures are then reported, not judged)
#   pct(\@v, $p)           percentile of a list
#
# Core Perl only, like the rest of t/lib.

use strict;
use warnings;
use Exporter 'import';
use POSIX ();
use Time::HiRes ();
use Time::Local qw(timegm);
use EventoTest qw(ADMIN_TOKEN json_decode mult);
use EventoLoad;

our @EXPORT_OK = qw(line_time log_events load_start pg_conns pg_monitor loadavg overloaded ncpu pct
                    timing_ok rss_kb);

sub line_time {
    my ($l) = @_;
    my ($Y, $M, $D, $h, $m, $s, $ms) =
        ($l // '') =~ /(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z/ or return undef;
    return timegm($s, $m, $h, $D, $M - 1, $Y) + $ms / 1000;
}

sub log_events {
    my ($d, $from) = @_;
    my $txt = $d->log_since_start;
    $txt = substr($txt, $from) if $from;
    my @e;
    for my $l (split /\n/, $txt) {
        my $t = line_time($l) // next;
        push @e, [$t, $l];
    }
    return @e;
}

sub ncpu {
    my $n = 0;
    if (open my $fh, '<', '/proc/cpuinfo') {
        $n = grep { /^processor\s*:/ } <$fh>;
        close $fh;
    }
    return $n || 1;
}

sub loadavg {
    open my $fh, '<', '/proc/loadavg' or return 0;
    my ($l) = split ' ', scalar <$fh>;
    close $fh;
    return $l + 0;
}

sub overloaded { return loadavg() > 2 * ncpu() }

# timing_ok($ok): the verdict of a timing figure; on an overloaded machine
# it passes with a note (BATTERY.md: never skip correctness, only timing).
# Returns ($verdict, $note).
sub timing_ok {
    my ($ok) = @_;
    return (1, '') if $ok;
    my $la = loadavg();
    return (1, sprintf(' [machine overloaded: load %.1f; timing not judged]', $la))
        if $la > 2 * ncpu();
    return (0, '');
}

sub pct {
    my ($v, $p) = @_;
    my @s = sort { $a <=> $b } @$v;
    return undef unless @s;
    my $i = int($p / 100 * @s + 0.999999) - 1;
    $i = 0 if $i < 0;
    $i = $#s if $i > $#s;
    return $s[$i];
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) { return $1 + 0 if /^VmRSS:\s+(\d+)/ }
    return undef;
}

sub pg_conns {
    my ($t, $db) = @_;
    my $n = eval {
        $t->psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")
    };
    return defined $n && $n =~ /^(\d+)$/ ? $1 + 0 : undef;
}

# pg_monitor($t, $db, $secs): one psql session sampling the backends of
# database $db every 50 ms for $secs (a server-side loop, so polling costs
# no process per sample).  ->samples: ([epoch, count], ...); ->stop.
sub pg_monitor {
    my ($t, $db, $secs) = @_;
    my $c = $t->cluster_info;
    my $out = $t->dir . "/pgmon.$db." . int(rand 1e6);
    my $n = int($secs * 20);
    my $sql = "DO \$\$ BEGIN FOR i IN 1..$n LOOP PERFORM pg_stat_clear_snapshot(); "
            . "RAISE NOTICE 'pgc % %', extract(epoch from clock_timestamp()), "
            . "(SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'); "
            . "PERFORM pg_sleep(0.05); END LOOP; END \$\$;";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 0;
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $out;
        { no warnings 'exec';
          exec "$c->{bindir}/psql", '-X', '-q', '-h', $c->{sock}, '-p', $c->{port}, '-U', 'postgres',
               '-d', 'postgres', '-c', $sql; }
        POSIX::_exit(127);
    }
    my $m = bless { pid => $pid, out => $out }, 'EventoProc::PgMon';
    # wait for its first sample
    $t->wait_for(sub { -s $out }, 10);
    return $m;
}

package EventoProc::PgMon;
sub samples {
    my ($self) = @_;
    open my $fh, '<', $self->{out} or return ();
    my @s;
    while (<$fh>) { push @s, [$1 + 0, $2 + 0] if /pgc (\d+(?:\.\d+)?) (\d+)/ }
    close $fh;
    return @s;
}
sub stop { EventoTest::stop_child($_[0]) }
sub DESTROY { $_[0]->stop }
package EventoProc;

sub evcheck_binary {
    my $b = EventoTest::tool_binary('evcheck');
    return -x $b ? $b : undef;
}

# load_start($d, %o): clients => n (default 8), duration => secs (the
# evcheck run ends by itself then; EventoLoad stops at ->stop), prefix =>
# p, timeout_ms => per-request deadline (default 5000), engine =>
# 'evcheck'|'load' (default: evcheck if built).
sub load_start {
    my ($d, %o) = @_;
    my $t = $d->{t};
    my $n = $o{clients} // 8;
    my $prefix = $o{prefix} // ('pf' . int(rand 1e6));
    my $self = bless { d => $d, prefix => $prefix, t0 => Time::HiRes::time() }, __PACKAGE__;
    my $engine = $o{engine} // (evcheck_binary() ? 'evcheck' : 'load');
    $self->{engine} = $engine;
    if ($engine eq 'evcheck') {
        my $json = $t->dir . "/$prefix.evcheck.json";
        my $err = $t->dir . "/$prefix.evcheck.err";
        unlink $json;
        $self->{json} = $json;
        $self->{err} = $err;
        my @cmd = (evcheck_binary(), '--url', $d->base_url, '--token', $o{token} // ADMIN_TOKEN,
                   '--workload', 'mixed', '--clients', $n,
                   '--duration', $o{duration} // 600, '--prefix', $prefix,
                   '--timeout', $o{timeout_ms} // int(5000 * mult()),
                   '--final-timeout', int(30 * mult()), '--json', $json,
                   '--history', $t->dir . "/$prefix.history");
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            alarm 0;
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
            open STDIN, '<', '/dev/null';
            open STDOUT, '>', $err;
            open STDERR, '>&', \*STDOUT;
            exec { $cmd[0] } @cmd or POSIX::_exit(127);
        }
        $self->{pid} = $pid;
    } else {
        $self->{load} = EventoLoad->start($d, writers => $n, keep_alive => 1, prefix => $prefix);
    }
    return $self;
}

sub engine { $_[0]{engine} }

# Acknowledged writes so far (EventoLoad only; evcheck: undef).
sub acked {
    my ($self) = @_;
    return $self->{load} ? $self->{load}->count('ok') : undef;
}

# wait_running($secs): true once the load has acknowledged writes (or,
# with evcheck, once it is running and the server answers).
sub wait_running {
    my ($self, $secs) = @_;
    my $t = $self->{d}{t};
    if ($self->{load}) {
        return $t->wait_for(sub { $self->{load}->count('ok') >= 20 }, $secs // 20);
    }
    # evcheck: running, and the server counts requests
    my $n0 = _rpc_count($self->{d});
    return $t->wait_for(sub {
        return 0 unless kill 0, $self->{pid};
        return _rpc_count($self->{d}) >= $n0 + 50;
    }, $secs // 20);
}

sub _rpc_count {
    my ($d) = @_;
    my $j = eval { $d->evdump_json } or return 0;
    return $j->{totals}{counters}{http_requests}{rpc} // 0;
}

# stop(): end the load phase and return the summary:
#   {engine, ops, ok, errors, error_rate, indeterminate, errors_5xx,
#    violations, examples => [...], exit, retries, acked, stored}
sub stop {
    my ($self) = @_;
    return $self->{summary} if $self->{summary};
    my $d = $self->{d};
    my %s = (engine => $self->{engine});
    if ($self->{pid}) {
        kill 'TERM', $self->{pid};
        my $deadline = Time::HiRes::time() + 60 * mult();
        my $st;
        while (1) {
            my $r = waitpid $self->{pid}, POSIX::WNOHANG();
            if ($r == $self->{pid}) { $st = $?; last }
            if (Time::HiRes::time() > $deadline) { kill 'KILL', $self->{pid}; waitpid $self->{pid}, 0; $st = -1; last }
            Time::HiRes::sleep(0.05);
        }
        $s{exit} = $st == -1 ? 'timeout' : ($st & 127) ? "signal " . ($st & 127) : $st >> 8;
        my $txt = '';
        if (open my $fh, '<', $self->{json}) { local $/; $txt = <$fh>; close $fh }
        my ($ok, $v) = json_decode($txt);
        if (!$ok || ref $v ne 'HASH') {
            my $err = '';
            if (open my $fh, '<', $self->{err}) { local $/; $err = <$fh> // ''; close $fh }
            %s = (%s, ops => 0, errors => 0, error_rate => 0, violations => -1,
                  examples => ["evcheck gave no summary (exit $s{exit}): $err"]);
        } else {
            $s{$_} = $v->{$_} // 0 for qw(ops ok writes reads conflicts fail indeterminate errors_5xx reconnects connect_failures);
            $s{violations} = $v->{violations_total} // -1;
            $s{examples} = $v->{examples} || [];
            $s{error_rate} = $v->{client_error_rate} // 0;
            $s{errors} = int($s{error_rate} * $s{ops} + 0.5);
            $s{violations} = -1 if $s{exit} ne '0' && !$s{violations};
            push @{ $s{examples} }, "evcheck exit $s{exit}" if $s{exit} ne '0';
            $s{latency} = $v->{latency_ms};
        }
    } else {
        my $load = $self->{load};
        $load->stop;
        my @l = $load->lines;
        my @ok = grep { $_->[0] eq 'ok' } @l;
        my @fail = grep { $_->[0] eq 'fail' } @l;
        $s{ok} = @ok;
        $s{ops} = @ok + @fail;
        $s{errors} = @fail;
        $s{indeterminate} = scalar grep { $_->[5] !~ /^\d{3} / } @fail;
        $s{errors_5xx} = scalar grep { $_->[5] =~ /^5\d\d / } @fail;
        $s{retries} = scalar grep { $_->[0] eq 'retry' } @l;
        $s{error_rate} = $s{ops} ? $s{errors} / $s{ops} : 0;
        $s{fail_examples} = [map { join ' ', @$_ } @fail[0 .. ($#fail < 4 ? $#fail : 4)]];
        # The checks EventoLoad can make: N1 (every acknowledged write is
        # stored as acknowledged), N2 (positions gap-free: stream.get
        # returns them; unique acked positions), N3 (ids at most once).
        my ($lost, $stored) = eval { $load->verify($d) };
        my @ex;
        if (!$lost) {
            push @ex, "final read failed: $@";
            $lost = [];
            $s{violations} = -1;
        }
        push @ex, map { "N1 lost ack: " . join(' ', @$_) } @$lost;
        my %pos;
        for my $o (@ok) {
            push @ex, "N1 position $o->[3] acknowledged twice on writer $o->[1]" if $pos{"$o->[1]/$o->[3]"}++;
        }
        my (%ids, $gaps) = ();
        for my $sname ($load->streams) {
            my ($st, $b) = $d->rpc(ADMIN_TOKEN, 'stream.get', $sname, { batchSize => -1 });
            next unless $st == 200 && ref $b eq 'ARRAY';
            for my $i (0 .. $#$b) {
                push @ex, "N2 $sname: position $b->[$i][2] at index $i" if $b->[$i][2] != $i;
                push @ex, "N3 $sname: id $b->[$i][0] twice" if $ids{ $b->[$i][0] }++;
            }
        }
        $s{stored} = $stored;
        $s{acked} = scalar @ok;
        $s{violations} //= scalar @ex;
        $s{examples} = [@ex[0 .. ($#ex < 9 ? $#ex : 9)]];
    }
    $self->{summary} = \%s;
    return \%s;
}

# One-line description of a summary.
sub describe {
    my ($s) = @_;
    return sprintf '%s: %d ops, %d violations, %d client errors (%.2f %%)%s', $s->{engine},
        $s->{ops} // 0, $s->{violations} // -1, $s->{errors} // 0, 100 * ($s->{error_rate} // 0),
        defined $s->{errors_5xx} ? ", $s->{errors_5xx} x 5xx" : '';
}

sub DESTROY {
    my ($self) = @_;
    if ($self->{pid} && !$self->{summary} && kill 0, $self->{pid}) {
        kill 'KILL', $self->{pid};
        waitpid $self->{pid}, 0;
    }
}

1;
