#!/usr/bin/perl
# 62-asan.t - battery row T15h (reliability-security.md 6.3, T15's
# "valgrind/ASan variant: 0 leaks on graceful exit"): eventodbd built with
# AddressSanitizer, LeakSanitizer and UBSan (`make eventodbd-asan`,
# Makefile.am) under a mixed load, then stopped gracefully.
#
# The load, 20 s (5 minutes with BATTERY_FULL=1): evcheck's mixed
# workload (4 clients), 20 SSE subscribers on its categories and on all=true,
# a 3 MB /import (and one every minute in the long tier), and in a loop
# bad input: malformed JSON, an oversize body, bad tokens, a malformed
# request line, an /import cut mid-body, SSE subscribers cut mid-stream,
# a CPU profile.  Half way through, SIGHUP: generation 1 retires (a
# graceful worker exit); at the end SIGTERM, with subscribers, an idle
# keep-alive connection and a half-sent request open.  Then a regression
# check (a use-after-free this row found, see below) and a control run.
#
# Reports: ASan errors and leaks land in files per pid (log_path=<dir>/asan),
# UBSan runtime errors (-fno-sanitize-recover: the first one ends the
# process) on stderr whatever log_path says (gcc 12's combined runtime),
# which for the workers too is the daemon log: both are read.  A worker runs LeakSanitizer's check itself at its
# graceful stop (worker.c: _exit() skips the atexit check) and exits 23
# if it found leaks; the master is checked by LSan at exit (exit 1 then).
# The verdict: 0 of each, evcheck 0 violations, every worker exit 0 and
# the master's exit 0.  A control run (LSAN_OPTIONS use_globals=0: all
# that only globals reach counts as leaked) shows the check runs in the
# workers and the reports are found: without it "0 leaks" proves nothing.
#
# The allocation profiler (worker/prof_alloc.c) interposes malloc, which
# cannot coexist with ASan's allocator: the ASan build compiles it out, and
# the daemon runs with --profile-alloc-rate 0.
#
# Builds eventodbd-asan when missing or stale (make, in the build tree), or
# uses EVENTODBD_ASAN; skipped when the compiler cannot link
# -fsanitize=address,undefined (no libasan/libubsan).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use File::Basename qw(dirname);
use POSIX ();
use Time::HiRes qw(time sleep);
use EventoTest qw(ADMIN_TOKEN battery battery_full json_encode);
use EventoProc qw(load_start log_events);
use EventoSSE;

my $full = battery_full();
my $load_secs = $full ? 300 : 20;
my $nsubs = 20;
my $import_mb = 3;
$ENV{EVENTODB_TEST_WATCHDOG} ||= $full ? 900 : 240;

# ---- the binary: build it (or say why not)
my $build = $ENV{EVENTODB_BUILDDIR} || dirname(EventoTest::daemon_binary());
my $asan = $ENV{EVENTODBD_ASAN} || "$build/eventodbd-asan";
my $build_note = 'prebuilt';
if (!$ENV{EVENTODBD_ASAN}) {
    plan skip_all => "no Makefile in $build to build eventodbd-asan" unless -f "$build/Makefile";
    my ($cc) = do { open my $fh, '<', "$build/Makefile" or die; map { /^CC = (.*?)\s*$/ ? $1 : () } <$fh> };
    $cc ||= 'cc';
    my $probe = "/tmp/asan-probe-$$";
    open my $fh, '|-', "$cc -fsanitize=address,undefined -x c -o $probe - >/dev/null 2>&1" or die;
    print {$fh} "int main(void) { return 0; }\n";
    my $can = close $fh;
    unlink $probe;
    plan skip_all => "$cc cannot link -fsanitize=address,undefined (libasan/libubsan missing)" unless $can;
    my $t0 = time;
    my $out = `make -C '$build' eventodbd-asan 2>&1`;
    my $st = $?;
    my $secs = time - $t0;
    if ($st != 0 || !-x $asan) {
        plan tests => 1;
        fail("make eventodbd-asan");
        diag($out);
        exit;
    }
    $build_note = $out =~ /\bCCLD\b|-o eventodbd-asan\b/ ? sprintf('built in %.0f s', $secs) : 'up to date';
}
plan skip_all => "$asan not executable" unless -x $asan;

my $t = EventoTest->new(need => [qw(pg)]);

# Options of the sanitizers; each daemon its own report directory.  The
# service user (the daemon drops root) writes the reports.  Stacks through
# libevent (built without frame pointers) need fast_unwind_on_malloc=0.
# Reports from inside libevent, libpq or json-c that are not ours would go
# in t/lsan.supp, each with a comment saying why; none has been needed.
sub san_env {
    my ($dir, %o) = @_;
    mkdir $dir or die "$dir: $!";
    chmod 01777, $dir;
    my $log = "log_path=$dir/asan";
    my $lsan = join ':', 'detect_leaks=1', $log, ($o{lsan} ? $o{lsan} : ());
    my $supp = EventoTest::top_dir() . '/t/lsan.supp';
    $lsan .= ":suppressions=$supp:print_suppressions=0" if -f $supp;
    return {
        ASAN_OPTIONS => "detect_leaks=1:abort_on_error=0:halt_on_error=1:fast_unwind_on_malloc=0:$log",
        LSAN_OPTIONS => $lsan,
        UBSAN_OPTIONS => "print_stacktrace=1:halt_on_error=1:$log",
    };
}

# The reports of daemon $d in $dir and in its log: {asan => [..], ubsan =>
# [..], leaks => [..], leak_bytes => n, lsan_fatal => n, files => n}; each
# report "ROLE PID: what at top frame".  ASan's and LSan's reports go to
# the log_path files, UBSan's (in this combined runtime, gcc 12) to stderr
# whatever log_path says: the daemon log, which the workers' stderr is.
sub reports {
    my ($dir, $d) = @_;
    my $roles = roles($d);
    my %r = (asan => [], ubsan => [], leaks => [], leak_bytes => 0, lsan_fatal => 0, files => 0);
    my @src = (['log', [split /\n/, $d->log_since_start]]);
    for my $f (sort glob "$dir/asan.*") {
        my ($pid) = $f =~ /\.(\d+)$/ or next;
        $r{files}++;
        push @src, [($roles->{$pid} // 'pid') . " $pid", [split /\n/, EventoTest::_slurp($f)], 1];
    }
    for my $src (@src) {
        my ($who, $lines, $is_file) = @$src;
        my @l = @$lines;
        my $n0 = @{ $r{asan} } + @{ $r{ubsan} } + @{ $r{leaks} };
        for my $i (0 .. $#l) {
            # the top frame outside the sanitizer; if it is in a library,
            # also the first one in our sources ("event_new < db_init db.c:948")
            my $top = sub {
                my @f;
                for my $j ($i + 1 .. ($i + 60 < $#l ? $i + 60 : $#l)) {
                    last if $l[$j] =~ /^\s*$/ && $j > $i + 1;
                    next unless $l[$j] =~ /^\s*#\d+ 0x[0-9a-f]+ in (\S+) (\S+)/;
                    my ($fn, $where) = ($1, $2);
                    next if $where =~ /libsanitizer|libasan|libubsan/ || $fn =~ /^__interceptor_|^__asan_|^__ubsan_/;
                    my $ours = $where =~ m{^(?:\./)?(?:worker|server|shm|tools)/[^/]+\.[ch]:\d+};
                    $where =~ s{^.*/}{};
                    push @f, [$fn, $where, $ours];
                    last if $ours;
                }
                return '?' unless @f;
                return "$f[0][0] $f[0][1]" if $f[0][2] || !$f[-1][2];
                return "$f[0][0] < $f[-1][0] $f[-1][1]";
            };
            if ($l[$i] =~ /ERROR: AddressSanitizer: (\S+)/) {
                push @{ $r{asan} }, "$who: $1 at " . $top->();
            } elsif (my ($at, $what) = $l[$i] =~ /^(\S+): runtime error: (.*)$/) {
                $at =~ s{^.*/}{};
                push @{ $r{ubsan} }, "$who: $at $what";
            } elsif ($l[$i] =~ /^(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object/) {
                $r{leak_bytes} += $2;
                push @{ $r{leaks} }, "$who: " . lc($1) . " $2 B in $3 from " . $top->();
            } elsif ($l[$i] =~ /LeakSanitizer has encountered a fatal error|LeakSanitizer: .*(?:failed|cannot)/) {
                $r{lsan_fatal}++;
                push @{ $r{asan} }, "$who: $l[$i]";
            }
        }
        # a report file of a kind not recognised above still counts
        if ($is_file && @{ $r{asan} } + @{ $r{ubsan} } + @{ $r{leaks} } == $n0 && grep { /\S/ } @l) {
            my ($first) = grep { /\S/ && !/^=+$/ } @l;
            push @{ $r{asan} }, "$who: unrecognised report: " . ($first // '?');
        }
    }
    return \%r;
}

# Roles of the pids in a daemon's log: master, worker N genG, spare.
sub roles {
    my ($d) = @_;
    my %r = ($d->pid => 'master');
    for my $l (split /\n/, $d->log_text) {
        $r{$2} = "worker $1 gen$3" if $l =~ /worker (\d+) started pid=(\d+) gen=(\d+)/;
        $r{$1} = 'spare' if $l =~ /spare worker started pid=(\d+)/;
    }
    return \%r;
}

# Worker exits in the log: (\@all, \@bad) of "worker N exited status=S ...".
sub worker_exits {
    my ($d) = @_;
    my (@all, @bad);
    for my $l (split /\n/, $d->log_since_start) {
        next unless $l =~ /master: ((?:spare )?worker .*exited (status=\S+).*)$/;
        my ($what, $st) = ($1, $2);
        push @all, $what;
        push @bad, $what if $st ne 'status=0';
    }
    return (\@all, \@bad);
}

# ---- the run under load
my $adir = $t->dir . '/asan-run';
my $d = $t->start(workers => 2, binary => $asan, health_timeout => 60, env => san_env($adir),
                  args => ['--profile-alloc-rate', '0', '--shutdown-timeout', '10']);
ok($d->alive, "eventodbd-asan runs (pid " . $d->pid . ", $build_note)");

my $max_body = do {
    my $src = EventoTest::_slurp(EventoTest::top_dir() . '/server/cfg.c');
    $src =~ /\{\s*"max-body",[^"]*"(\d+)"/ ? $1 : 16777216;
};
my $prefix = 'asan' . int(rand 1e6);
my $load = load_start($d, clients => 4, prefix => $prefix, duration => $load_secs + 120);
ok($load->wait_running(30), 'evcheck running');

# 20 subscribers: evcheck's 5 categories, all=true, some streams
my @subs;
sub subscribe {
    my ($i) = @_;
    my %q = $i % 4 == 3 ? (all => 'true') : $i % 4 == 2 ? (stream => "${prefix}" . ($i % 5) . '-1')
          : (category => $prefix . ($i % 5));
    return EventoSSE->new($d, token => ADMIN_TOKEN, query => \%q);
}
push @subs, subscribe($_) for 0 .. $nsubs - 1;
my $ready = 0;
for my $s (@subs) { $ready++ if $s->wait_for(sub { $_[0]->ready }, 10) }
is($ready, $nsubs, "$nsubs SSE subscribers ready");
# read what the subscribers have (up to 50 reads each)
sub pump_subs { my ($l) = @_; for my $s (grep { !$_->closed } @$l) { for (1 .. 50) { my $n = length $s->body; $s->pump(0); last if length $s->body == $n } } }
sub pump_all { pump_subs(\@subs) }

my %bad;    # what => [expected status re, got]
sub bad {
    my ($what, $want, $got) = @_;
    $got //= 'none';
    push @{ $bad{$what} }, $got;
    $bad{"$what!"}++ unless $got =~ $want;
}
sub status_of { my ($buf) = @_; return $buf =~ m{^HTTP/1\.[01] (\d{3})} ? $1 : 'none' }

# One import of $mb MB into a fresh namespace: (records, done?)
sub import_mb {
    my ($mb) = @_;
    my (undef, $tok) = $t->fresh_ns('imp');
    my $pad = 'p' x 2000;
    my $n = int($mb * 1048576 / 2150);
    my $body = '';
    $body .= json_encode({ id => sprintf('00000000-0000-4000-8000-%012d', $_), stream => 'imp-' . ($_ % 50),
                           type => 'Imported', pos => int(($_ - 1) / 50), gpos => $_, data => { pad => $pad },
                           meta => undef, time => '2025-07-15T10:00:00Z' }) . "\n" for 1 .. $n;
    my $r = $d->http('POST', '/import', token => $tok, content => $body,
                     headers => { 'content-type' => 'application/x-ndjson' });
    my $done = ($r->{content} // '') =~ /"done":true/ ? 1 : 0;
    return ($n, $done, length $body);
}

# One round of bad input.
my $rounds = 0;
sub bad_round {
    $rounds++;
    my ($r) = $d->raw_rpc(ADMIN_TOKEN, '["stream.write", "x-1", {"type": "T", "data": {');
    bad('malformed JSON', qr/^400$/, $r);
    ($r) = $d->raw_rpc(ADMIN_TOKEN, '{"not":"an array"}');
    bad('not an array', qr/^400$/, $r);
    ($r) = $d->rpc(ADMIN_TOKEN, 'stream.write', 'x-1', { type => 1, data => [] });
    bad('wrong types', qr/^400$/, $r);
    ($r) = $d->rpc(ADMIN_TOKEN, 'no.such.method');
    bad('unknown method', qr/^4\d\d$/, $r);
    ($r) = $d->rpc('ns_ZGVmYXVsdA_' . ('f' x 64), 'stream.get', 'x-1');
    bad('wrong token', qr/^40[13]$/, $r);
    ($r) = $d->rpc('garbage', 'stream.get', 'x-1');
    bad('malformed token', qr/^401$/, $r);
    ($r) = $d->rpc(undef, 'stream.get', 'x-1');
    bad('no token', qr/^401$/, $r);
    # oversize: the head announces more than --max-body, a little body follows, then the close
    {
        my $s = $d->connect;
        $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " . ADMIN_TOKEN
                       . "\r\nContent-Type: application/json\r\nContent-Length: " . ($max_body + 1) . "\r\n\r\n"
                       . ('[' x 1000));
        my ($buf) = $d->read_raw($s, timeout => 5, _count => 1);
        close $s;
        bad('oversize body', qr/^413$/, status_of($buf));
    }
    # a malformed request line, a header without a colon
    bad('bad request line', qr/^400$/, status_of(scalar $d->raw("GET /rpc HTTP/9\r\n\r\n", count => 1)));
    bad('bad header', qr/^400$/, status_of(scalar $d->raw("GET /health HTTP/1.1\r\nHost x\r\n\r\n", count => 1)));
    bad('unknown path', qr/^404$/, status_of(scalar $d->raw("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
    # an /rpc body cut mid-way, an /import cut mid-body
    {
        my $s = $d->connect;
        $d->send_all($s, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " . ADMIN_TOKEN
                       . "\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n[\"stream.get\"");
        close $s;
        $s = $d->connect;
        my $rec = json_encode({ id => '00000000-0000-4000-8000-000000000001', stream => 'cut-1', type => 'T',
                                pos => 0, gpos => 1, data => { pad => 'c' x 500 }, meta => undef,
                                time => '2025-07-15T10:00:00Z' }) . "\n";
        $d->send_all($s, "POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " . ADMIN_TOKEN
                       . "\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000000\r\n\r\n"
                       . substr($rec x 20, 0, 7000));
        close $s;
    }
    # an import with a bad line: an error event
    {
        my $r2 = $d->http('POST', '/import', token => ADMIN_TOKEN, content => "{\"id\":\n",
                          headers => { 'content-type' => 'application/x-ndjson' });
        bad('import bad line', qr/^(?:200|400)$/, $r2->{status});
    }
    # SSE: a bad token, bad parameters, one cut right away and one after it is ready
    {
        my $x = EventoSSE->new($d, token => 'nope', query => { stream => 'x-1' });
        $x->wait_for(sub { defined $_[0]->status }, 5);
        bad('SSE bad token', qr/^401$/, $x->status);
        $x->close;
        $x = EventoSSE->new($d, token => ADMIN_TOKEN, query => { stream => 'x-1', category => 'x' });
        $x->wait_for(sub { defined $_[0]->status }, 5);
        bad('SSE bad parameters', qr/^400$/, $x->status);
        $x->close;
        EventoSSE->new($d, token => ADMIN_TOKEN, query => { category => $prefix . '0' })->close;
        $x = EventoSSE->new($d, token => ADMIN_TOKEN, query => { category => $prefix . '1' });
        $x->wait_for(sub { $_[0]->ready }, 5);
        $x->pump(0.05);
        $x->close;
    }
}

my $t_start = time;
my $t_end = $t_start + $load_secs;
my ($hup_at, @imports, $gen1);
my $next_import = $t_start + 2;
while (time < $t_end) {
    if (time >= $next_import) {
        push @imports, [import_mb($import_mb)];
        $next_import = $full ? time + 60 : $t_end + 1;
    }
    bad_round();
    pump_all();
    if (!$hup_at && time >= $t_start + $load_secs / 2) {
        $gen1 = { %{ $d->worker_pids } };
        kill 'HUP', $d->pid;
        $hup_at = time;
        # a CPU profile across the reload
        my $r = $d->http('GET', '/debug/pprof/profile?seconds=1', token => ADMIN_TOKEN);
        bad('CPU profile', qr/^200$/, $r->{status});
    }
    sleep 0.2;
}
# generation 1 is gone (retired after the reload: exits of their own)
my $reloaded = $t->wait_for(sub { $d->log_since_start =~ /reload finished gen=2/ }, 30);
ok($reloaded, 'SIGHUP: generation 2 took over');
my $retired = $t->wait_for(sub { !grep { EventoTest::pid_alive($_) } values %$gen1 }, 30);
ok($retired, 'generation 1 retired: ' . join(' ', map { "pid $_" } sort values %$gen1));

my $sum = $load->stop;
pump_all();
my $pokes = 0;
$pokes += scalar($_->pokes) for @subs;
$_->close for @subs;
my ($gen1_exits) = worker_exits($d);
my @gen1_exits = grep { /gen=1\b/ } @$gen1_exits;

# open through the stop (the drain ends them): subscribers of generation 2,
# an idle keep-alive connection, a request half sent.  The subscribers are
# read throughout: a client that does not read holds the drain until its
# deadline with its unsent output (evcheck's categories would give them a
# long catch-up), and the workers' leak checks would then meet the
# master's SIGKILL.
my @late = map { subscribe($_) } 0 .. 9;
my $late_ready = grep { $_->wait_for(sub { pump_subs(\@late); $_[0]->ready }, 10) } @late;
is($late_ready, scalar @late, scalar(@late) . ' subscribers open through SIGTERM');
my $idle = $d->connect;
$d->send_all($idle, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
$d->read_responses($idle, count => 1, timeout => 5);
my $half = $d->connect;
$d->send_all($half, "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Le");

# SIGTERM; the half-sent request's client gives up once the workers drain
# (else the drain waits for it until its deadline, 9.5 s)
my $t_term = time;
$d->kill_master('TERM');
$t->wait_for(sub { pump_subs(\@late); my @s = $d->log_since_start =~ /worker \d+ stopping: SIGTERM/g; @s >= 2 }, 10);
close $half;
$t->wait_for(sub { pump_subs(\@late); !$d->alive }, 60);
my $exit = $d->stop(signal => 0, timeout => 60);    # (a second SIGTERM would kill the workers)
my $stop_s = time - $t_term;
# each worker's leak check: from its "stopped" line to the master's "exited" line
my ($check_ms, %stopped_at) = (0);
for my $e (log_events($d)) {
    $stopped_at{$1} = $e->[0] if $e->[1] =~ /worker (\d+): worker \d+ stopped$/;
    if ($e->[1] =~ /master: worker (\d+) exited .*gen=2/ && defined $stopped_at{$1}) {
        my $ms = ($e->[0] - $stopped_at{$1}) * 1000;
        $check_ms = $ms if $ms > $check_ms;
    }
}
my $late_ended = grep { $_->wait_for(sub { $_[0]->closed || $_[0]->ended }, 5) } @late;
$_->close for @late;
close $idle;
close $half;
my ($exits, $bad_exits) = worker_exits($d);
my $rep = reports($adir, $d);

my @bad_input = sort grep { !/!$/ } keys %bad;
my @bad_wrong = map { s/!$//r } sort grep { /!$/ } keys %bad;
ok(!@bad_wrong, sprintf('%d kinds of bad input x %d rounds answered as expected', scalar @bad_input, $rounds))
    or diag(join "\n", map { "$_: got " . join(',', @{ $bad{$_} }[0 .. 4]) } @bad_wrong);
my @imp_done = grep { $_->[1] } @imports;
is(scalar @imp_done, scalar @imports, sprintf('%d import(s) of %d MB done', scalar @imports, $import_mb));
is($exit, 0, 'the master exited 0 (LeakSanitizer exits 1 on leaks at its exit)')
    or diag('exit signal ' . ($d->exit_signal // 'none'));
ok(!@$bad_exits, sprintf('%d worker exits, all status=0%s', scalar @$exits,
                         @$bad_exits ? ' (not: ' . join('; ', @$bad_exits) . ')' : ''));
ok(@gen1_exits >= 2, 'the retired generation exited: ' . join('; ', @gen1_exits));
for my $k (qw(asan ubsan leaks)) {
    diag("$k: $_") for @{ $rep->{$k} }[0 .. ($#{ $rep->{$k} } < 9 ? $#{ $rep->{$k} } : 9)];
}
diag("evcheck: @{ $sum->{examples} }") if ($sum->{violations} // -1) != 0;

my $nasan = @{ $rep->{asan} };
my $nub = @{ $rep->{ubsan} };
my $nleak = @{ $rep->{leaks} };
my $what_leaked = $nleak ? sprintf(' (%d B: %s)', $rep->{leak_bytes}, join('; ', @{ $rep->{leaks} }[0 .. ($nleak < 3 ? $nleak - 1 : 2)])) : '';
my $ok = !$nasan && !$nub && !$nleak && ($sum->{violations} // -1) == 0 && defined $exit && $exit == 0
    && !@$bad_exits && $reloaded && $retired;
battery('T15h', sprintf('ASan/LSan/UBSan variant, %d s load%s; alloc sampler off (--profile-alloc-rate 0, '
                        . 'compiled out): its malloc hooks would bypass ASan\'s allocator', $load_secs,
                        $full ? '' : ' (5 min with BATTERY_FULL=1)'),
    sprintf('%d ASan errors, %d UBSan errors, %d leaks%s; evcheck %d ops %d violations; %d subscribers (%d pokes), '
          . '%d x %d MB import, %d bad-input rounds; SIGHUP: %d gen-1 exits; SIGTERM with %d subscribers open '
          . '(%d ended): stopped in %.1f s, leak check <= %.0f ms, master exit %s, %d worker exits %s; %s',
        $nasan, $nub, $nleak, $what_leaked, $sum->{ops} // 0, $sum->{violations} // -1, $nsubs, $pokes,
        scalar @imports, $import_mb, $rounds, scalar @gen1_exits, scalar @late, $late_ended, $stop_s, $check_ms,
        $exit // 'signal ' . ($d->exit_signal // '?'),
        scalar @$exits, @$bad_exits ? 'NOT all 0' : 'all 0', $build_note),
    '0 ASan/UBSan reports, 0 leaks on graceful exit; 0 violations; exit 0', $ok);

# ---- regression (found by this row): an SSE catch-up query waiting in
# db.c's queue behind a busy pool kept a pointer into its topic, which the
# client's going freed (heap-use-after-free in send_query); the catch-up
# now has its own copy of the name.  One pool connection, held by a write
# behind a table lock; the subscriber goes while its query waits.
{
    my $rdir = $t->dir . '/asan-regress';
    my $g = $t->start(workers => 1, binary => $asan, health_timeout => 60, env => san_env($rdir),
                      args => ['--profile-alloc-rate', '0', '--db-pool', '1', '--write-batch-max', '1']);
    my $T = $g->create_ns('reg');
    my ($st) = $g->rpc($T, 'stream.write', 'reg-1', { type => 'T', data => {} });
    my $schema = $t->psql($g->db, q{SELECT schema_name FROM eventodb_store.namespaces WHERE id = 'reg'});
    my ($locker, $locked) = $t->lock_messages($g->db, $schema, 3);
    my $body = json_encode(['stream.write', 'reg-2', { type => 'T', data => {} }]);
    my $ws = $g->connect;
    $g->send_all($ws, "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $T\r\nContent-Type: application/json\r\n"
                    . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
    my $waiting = $t->wait_for(sub { $t->psql($g->db, q{SELECT count(*) FROM pg_locks WHERE NOT granted}) > 0 }, 10);
    my $x = EventoSSE->new($g, token => $T, query => { stream => 'reg-3' });
    my $xready = $x->wait_for(sub { $_[0]->ready }, 5);
    $x->close;
    my ($resp) = $g->read_responses($ws, count => 1, timeout => 15);
    close $ws;
    waitpid $locker, 0;
    my ($st2) = $g->rpc($T, 'stream.get', 'reg-3');    # behind the catch-up on the one connection
    my $gexit = $g->stop(timeout => 60);
    my $grep = reports($rdir, $g);
    my (undef, $gbad) = worker_exits($g);
    ok($st == 200 && $locked && $waiting && $xready && @$resp && $resp->[0]{status} == 200 && $st2 == 200
       && !@{ $grep->{asan} } && !@{ $grep->{leaks} } && !@$gbad && defined $gexit && $gexit == 0,
       'regression: a subscriber gone while its catch-up query waits for the pool: no use-after-free')
        or diag(sprintf "write %s, locked %s, waiting %s, ready %s, held write %s, get %s, exit %s; %s; %s",
                        $st, $locked // 0, $waiting // 0, $xready // 0, @$resp ? $resp->[0]{status} : 'none', $st2,
                        $gexit // 'signal', join('; ', @{ $grep->{asan} }, @{ $grep->{leaks} }), join('; ', @$gbad));
}

# ---- control: everything only globals reach counts as leaked; the worker's
# own check must find it, exit 23, and its report must be read here.
my $cdir = $t->dir . '/asan-control';
my $c = $t->start(workers => 1, binary => $asan, health_timeout => 60,
                  env => san_env($cdir, lsan => 'use_globals=0'), args => ['--profile-alloc-rate', '0']);
my ($cst) = $c->rpc(ADMIN_TOKEN, 'stream.write', 'ctl-1', { type => 'T', data => {} });
$c->stop(timeout => 60);
my $crep = reports($cdir, $c);
my (undef, $cbad) = worker_exits($c);
my @wleaks = grep { /^worker/ } @{ $crep->{leaks} };
ok(@wleaks && grep({ /status=23/ } @$cbad),
    sprintf('control (use_globals=0): the worker\'s check found %d leak reports and exited 23', scalar @wleaks))
    or diag("control: write $cst; exits: @$cbad; reports: @{ $crep->{leaks} }[0 .. 2]");

done_testing;
