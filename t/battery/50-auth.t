#!/usr/bin/perl
# 50-auth.t - battery row T23: the auth and tenancy matrix
# (../shared/ref/reliability-security.md 4 and 6.3 T23; issue 9 item 5).
#
#   T23a  every endpoint and RPC method x 8 token states x {Authorization
#         header, ?token=} x {production mode, --test-mode with a database
#         URL}: the exact status and error code of each cell, from an
#         expectation table built below from the spec (each rule cites it);
#   T23b  tenant isolation: what one namespace writes (stream.write,
#         /import) is invisible to every other token, through every read,
#         listing and /subscribe; psql confirms where the rows are;
#   T23c  hostile namespace ids -> 400 or NAMESPACE_EXISTS as specified,
#         and pg_namespace plus the registry unchanged by every rejected id;
#   T23d  no token (nor a ?token= value) in any daemon log line (run at
#         --log-level debug), error body, debug endpoint output or the
#         shared-memory segment;
#   T23e  the token table holds only 64-hex SHA-256 digests.
#
# 02-auth.t checks the messages of each auth error in detail; this file is
# the exhaustive matrix.  About 15 s.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use IPC::Open2 ();
use MIME::Base64 qw(encode_base64url);
use EventoTest qw(ADMIN_TOKEN make_token json_decode json_encode battery arr obj);

my $t = EventoTest->new(need => [qw(daemon pg)]);
my $A = ADMIN_TOKEN;
my (@secrets, @error_bodies, @fail);
my $MARK = 'isolation-marker-' . join '', map { ('a' .. 'z')[rand 26] } 1 .. 12;

# ---------------------------------------------------------------- HTTP

# One request on a fresh connection (Connection: close).  %o: method, path,
# headers => [[k, v]...], body, stream => 1 (an event stream: stop reading
# at ": ready").  Returns {status, code (error.code or ''), body, ready}.
sub hreq {
    my ($d, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $o{addr} // '127.0.0.1', PeerPort => $d->port,
                                  Proto => 'tcp', Timeout => 5 * EventoTest::mult())
        or return { status => 0, code => '', body => "connect: $!" };
    binmode $s;
    my $body = $o{body} // '';
    my $req = "$o{method} $o{path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";
    $req .= "$_->[0]: $_->[1]\r\n" for @{ $o{headers} || [] };
    $req .= 'Content-Length: ' . length($body) . "\r\n" if $o{method} eq 'POST';
    $req .= "\r\n$body";
    $d->send_all($s, $req);
    my ($buf, $closed) = $d->read_raw($s, timeout => 10,
                             ($o{stream} ? (until => qr/: ready|\r\n\r\n[^\r]*"error"[^\n]*\n/) : ()));
    # linger => secs: keep reading the event stream (catch-up pokes follow ": ready").
    if ($o{linger} && !$closed) {
        my ($more) = $d->read_raw($s, timeout => $o{linger}, until => $o{linger_until});
        $buf .= $more;
    }
    close $s;
    my ($st) = $buf =~ m{^HTTP/1\.[01] (\d{3})};
    my ($hdr, $b) = split /\r\n\r\n/, $buf, 2;
    $b //= '';
    my ($code) = $b =~ /"error":\{"code":"([A-Z_]+)"/;
    return { status => $st // 0, code => $code // '', body => $b, head => $hdr // '',
             ready => $b =~ /: ready/ ? 1 : 0 };
}

sub qesc { my $s = shift; $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge; $s }

sub rpc {
    my ($d, $tok, @call) = @_;
    my $r = hreq($d, method => 'POST', path => '/rpc', body => json_encode([@call]),
                 headers => [['Content-Type', 'application/json'],
                             (defined $tok ? (['Authorization', "Bearer $tok"]) : ())]);
    push @error_bodies, $r->{body} if $r->{status} >= 400;
    my ($ok, $v) = json_decode($r->{body});
    $r->{json} = $ok ? $v : undef;
    return $r;
}

# One long-lived psql per database (spawning one per query costs ~0.3 s
# on a loaded machine; the corpus needs ~200 catalog snapshots).
my %PSQL;
sub psql1 {
    my ($d, $sql) = @_;
    my $p = $PSQL{ $d->db } //= do {
        my $c = $t->cluster_info;
        my ($out, $in);
        my $pid = IPC::Open2::open2($out, $in, "$c->{bindir}/psql", '-X', '-A', '-t', '-q',
                                    '-h', $c->{sock}, '-p', $c->{port}, '-U', 'postgres', '-d', $d->db);
        { pid => $pid, out => $out, in => $in };
    };
    $sql =~ s/\s+/ /g;
    print { $p->{in} } "$sql;\n\\echo __eot__\n";
    $p->{in}->flush;
    my $res = '';
    while (defined(my $l = readline $p->{out})) {
        last if $l eq "__eot__\n";
        $res .= $l;
    }
    chomp $res;
    return $res;
}
END { for my $p (values %PSQL) { close $p->{in}; waitpid $p->{pid}, 0 } }

# ---------------------------------------------------------------- daemons

# Production mode and test mode, each with a database URL, at debug log
# level (so the token grep covers every line the daemon can write).
my $P = $t->start(workers => 2, args => ['--log-level', 'debug']);
my $T = $t->start(workers => 2, test_mode => 1, args => ['--log-level', 'debug']);
my %mode = (prod => $P, test => $T);

# Per daemon: own, oth (another tenant), gone (created, then deleted).
my %tok;
for my $m (sort keys %mode) {
    my $d = $mode{$m};
    for my $id (qw(own oth gone)) {
        my $r = rpc($d, $A, 'ns.create', $id);
        $tok{$m}{$id} = obj($r->{json})->{token} or BAIL_OUT("$m: ns.create $id: $r->{status} $r->{body}");
        push @secrets, $tok{$m}{$id};
    }
    my $r = rpc($d, $A, 'ns.delete', 'gone');
    $r->{status} == 200 or BAIL_OUT("$m: ns.delete gone: $r->{status} $r->{body}");
}
# Distinctive malformed and forged tokens, so the leak grep means something.
my $MALFORMED = 'ns_' . encode_base64url('malformed' . int(rand 1e9)) . '_' . ('zq' x 32);
my $FORGED = make_token('own');    # right namespace, wrong secret
push @secrets, $A, $MALFORMED, $FORGED;

my @STATES = qw(none scheme malformed other deleted forged admin own);

# The request's credentials for a state: (token or undef, scheme text).
sub state_token {
    my ($m, $state) = @_;
    return {
        none => undef, scheme => $tok{$m}{own}, malformed => $MALFORMED,
        other => $tok{$m}{oth}, deleted => $tok{$m}{gone}, forged => $FORGED,
        admin => $A, own => $tok{$m}{own},
    }->{$state};
}

# Headers and query for a state sent via 'header' or 'query'.
#  header: none = no Authorization; scheme = "Basic <token>"; else "Bearer <token>".
#  query:  none = an empty ?token= (api.md 4.4: present but empty -> the
#          header is used, and there is none); scheme = ?token=Bearer%20<token>
#          (the query value is the whole token: no scheme is stripped);
#          else ?token=<token>.
sub creds {
    my ($m, $via, $state, $tokover) = @_;
    my $tk = $tokover // state_token($m, $state);
    if ($via eq 'header') {
        return ([], '') if $state eq 'none';
        return ([['Authorization', "Basic $tk"]], '') if $state eq 'scheme';
        return ([['Authorization', "Bearer $tk"]], '');
    }
    return ([], 'token=') if $state eq 'none';
    return ([], 'token=' . qesc("Bearer $tk")) if $state eq 'scheme';
    return ([], 'token=' . qesc($tk));
}

# ---------------------------------------------------------------- expectations

# Authentication outcome (api.md 4.4, 4.5; decisions.md 3):
#   production: returns [status, code] of the rejection, or the effective
#   namespace (a string);  test mode: never rejects (api.md 4.5 test-mode
#   table): no/bad scheme/unparseable token -> default; parseable token ->
#   its namespace, existing or not, hash unchecked.
sub auth_outcome {
    my ($m, $via, $state) = @_;
    if ($m eq 'test') {
        return { none => 'default', scheme => 'default', malformed => 'default',
                 other => 'oth', deleted => 'gone', forged => 'own', admin => 'default',
                 own => 'own' }->{$state};
    }
    # api.md 4.5 rows 1-2: no credentials / not "Bearer " -> 401 AUTH_REQUIRED.
    return [401, 'AUTH_REQUIRED'] if $state eq 'none';
    return [401, 'AUTH_REQUIRED'] if $state eq 'scheme' && $via eq 'header';
    # api.md 4.5 row 4 (4.2 parse): "Bearer ns_..." in ?token= and garbage -> 401 AUTH_INVALID_TOKEN.
    return [401, 'AUTH_INVALID_TOKEN'] if $state eq 'scheme' || $state eq 'malformed';
    # api.md 4.5 rows 5-6: namespace not in the registry, or hash mismatch -> 403.
    return [403, 'AUTH_UNAUTHORIZED'] if $state eq 'deleted' || $state eq 'forged';
    return { other => 'oth', admin => 'default', own => 'own' }->{$state};
}

# Endpoints: name => {kind, method, path, body, target rules}.  Order = report order.
my @EP = (
    (map { { name => $_, kind => 'rpc' } }
     qw(sys.version sys.health stream.write stream.get stream.last stream.version category.get
        ns.create ns.delete ns.info ns.list ns.streams ns.categories)),
    { name => 'unknown.method', kind => 'rpc' },
    { name => 'GET /rpc', kind => 'rpcget' },
    { name => '/subscribe', kind => 'sse' },
    { name => '/import', kind => 'import' },
    { name => '/health', kind => 'open' },
    { name => '/version', kind => 'open' },
    { name => '/metrics', kind => 'open' },
    { name => '/debug/pprof/', kind => 'debug' },
);
my %DATA = map { $_ => 1 } qw(stream.write stream.get stream.last stream.version category.get
                             ns.streams ns.categories);

# Expected [status, code] of a cell.
sub expect {
    my ($m, $via, $state, $ep) = @_;
    my $k = $ep->{kind};
    # api.md 2.1 and 3.2: /health and /version need no auth; decisions.md 9:
    # /metrics is the counters' Prometheus text (no auth), /debug/* answers
    # loopback clients (this test is one) whatever the token.
    return [200, ''] if $k eq 'open' || $k eq 'debug';
    # api.md 5.1 step 1 (and 9.10, 10.1): auth runs first on /rpc, /subscribe, /import.
    my $a = auth_outcome($m, $via, $state);
    return $a if ref $a;
    my $missing = $a eq 'gone';    # test mode only: a parseable token of a missing namespace
    # api.md 4.5 test-mode table: data operations then fail with 500 BACKEND_ERROR.
    return [500, 'BACKEND_ERROR'] if $missing && ($k eq 'sse' || $k eq 'import');
    return [200, ''] if $k eq 'sse' || $k eq 'import';
    return [405, 'INVALID_REQUEST'] if $k eq 'rpcget';          # api.md 5.1 step 2
    my $n = $ep->{name};
    return [404, 'METHOD_NOT_FOUND'] if $n eq 'unknown.method';  # api.md 5.1 step 6
    return [500, 'BACKEND_ERROR'] if $missing && $DATA{$n};
    if ($m eq 'prod') {
        # decisions.md 3: ns.create and ns.list need the admin token; ns.info
        # and ns.delete the admin token or the namespace's own.
        return [403, 'AUTH_UNAUTHORIZED'] if ($n eq 'ns.create' || $n eq 'ns.list') && $state ne 'admin';
        return [403, 'AUTH_UNAUTHORIZED'] if ($n eq 'ns.info' || $n eq 'ns.delete')
            && $state ne 'admin' && $state ne 'own';
    }
    # api.md 2.2 / 6.x: everything else succeeds for an authenticated caller
    # (test mode: no admin checks, api.md 4.5 "no admin check").
    return [200, ''];
}

# ---------------------------------------------------------------- T23a: the matrix

my ($cells, $cells_ok, $seq) = (0, 0, 0);
my @owned_bodies;    # success bodies answered for a namespace other than own (isolation)
for my $m (qw(prod test)) {
    my $d = $mode{$m};
    # Give own a message to find: it must never show up for another caller.
    my $w = rpc($d, $tok{$m}{own}, 'stream.write', 'mx-1', { type => 'T', data => { m => $MARK } });
    $w->{status} == 200 or BAIL_OUT("$m: write as own: $w->{status} $w->{body}");
    for my $via (qw(header query)) {
        for my $state (@STATES) {
            for my $ep (@EP) {
                $seq++;
                my ($tokover, @call);
                my $n = $ep->{name};
                if ($ep->{kind} eq 'rpc') {
                    @call = ($n);
                    push @call, 'mx-1', { type => 'T', data => { seq => $seq } } if $n eq 'stream.write';
                    push @call, 'mx-1' if $n =~ /^stream\.(get|last|version)$/;
                    push @call, 'mx' if $n eq 'category.get';
                    push @call, "c$seq" if $n eq 'ns.create';
                    # ns.info: the target is own, for every state (own's own
                    # token may, admin may, other tenants may not).
                    push @call, 'own' if $n eq 'ns.info';
                    if ($n eq 'ns.delete') {
                        # own state: a fresh namespace deletes itself; else a
                        # fresh victim that is not the caller's.
                        my $id = ($state eq 'own' ? 's' : 'v') . $seq;
                        my $r = rpc($d, $A, 'ns.create', $id);
                        my $vt = obj($r->{json})->{token} or BAIL_OUT("victim $id: $r->{body}");
                        push @secrets, $vt;
                        $tokover = $vt if $state eq 'own';
                        push @call, $id;
                    }
                    @call = ('no.such.method') if $n eq 'unknown.method';
                }
                my ($hdrs, $q) = creds($m, $via, $state, $tokover);
                my %req = (headers => [@$hdrs]);
                my $qs = length $q ? $q : '';
                if ($ep->{kind} eq 'rpc') {
                    %req = (%req, method => 'POST', path => '/rpc' . ($qs ? "?$qs" : ''),
                            body => json_encode([@call]));
                    push @{ $req{headers} }, ['Content-Type', 'application/json'];
                } elsif ($ep->{kind} eq 'rpcget') {
                    %req = (%req, method => 'GET', path => '/rpc' . ($qs ? "?$qs" : ''));
                } elsif ($ep->{kind} eq 'sse') {
                    %req = (%req, method => 'GET', path => '/subscribe?stream=mx-1' . ($qs ? "&$qs" : ''),
                            stream => 1);
                } elsif ($ep->{kind} eq 'import') {
                    %req = (%req, method => 'POST', path => '/import' . ($qs ? "?$qs" : ''), body => '');
                } else {
                    %req = (%req, method => 'GET', path => $n . ($qs ? "?$qs" : ''));
                }
                my $r = hreq($d, %req);
                my $want = expect($m, $via, $state, $ep);
                $cells++;
                my $ok = $r->{status} == $want->[0] && $r->{code} eq $want->[1];
                $ok &&= $r->{ready} if $ep->{kind} eq 'sse' && $want->[0] == 200;
                $ok &&= $r->{body} =~ /"done":true/ if $ep->{kind} eq 'import' && $want->[0] == 200;
                $cells_ok++ if $ok;
                push @fail, "$m/$via/$state/$n: got $r->{status} $r->{code}, want $want->[0] $want->[1]"
                    . " [" . substr($r->{body}, 0, 160) . "]" unless $ok;
                push @error_bodies, $r->{body} if $r->{status} >= 400;
                my $eff = auth_outcome($m, $via, $state);
                push @owned_bodies, "$m/$via/$state/$n\t$r->{body}"
                    if !ref $eff && $eff ne 'own' && $r->{status} == 200;
            }
        }
    }
}
diag($_) for @fail[0 .. ($#fail < 24 ? $#fail : 24)];
battery('T23a', sprintf('auth matrix: %d endpoints x %d token states x header/?token= x prod/test mode',
                        scalar @EP, scalar @STATES),
        "$cells_ok/$cells cells with the specified status and error code",
        '100 % expected 401/403/2xx per api.md 4.5, decisions.md 3', $cells && $cells_ok == $cells);

# ---------------------------------------------------------------- T23b: isolation

my ($probes, $leaks) = (0, 0);
my @leak;
sub no_leak {
    my ($what, $cond) = @_;
    $probes++;
    return if $cond;
    $leaks++;
    push @leak, $what;
}
{
    my $d = $P;
    my ($TO, $TT) = ($tok{prod}{own}, $tok{prod}{oth});
    my $w = rpc($d, $TO, 'stream.write', 'iso-1', { type => 'Secret', data => { m => $MARK } });
    is($w->{status}, 200, 'own writes iso-1');
    my $imp = json_encode({ id => '0190b2c4-0000-7000-8000-00000000a001', stream => 'isoimp-1', type => 'Imp',
                            pos => 0, gpos => 1000, data => { m => $MARK }, time => '2026-01-01T00:00:00Z' });
    my $ir = hreq($d, method => 'POST', path => '/import', body => "$imp\n",
                  headers => [['Authorization', "Bearer $TO"]]);
    like($ir->{body}, qr/"imported":1/, 'own imports isoimp-1');
    for my $who (['other tenant', $TT], ['admin (default namespace)', $A]) {
        my ($name, $tk) = @$who;
        my $r = rpc($d, $tk, 'stream.get', 'iso-1');
        no_leak("$name stream.get iso-1: $r->{body}", $r->{status} == 200 && $r->{body} eq "[]\n");
        $r = rpc($d, $tk, 'stream.get', 'isoimp-1');
        no_leak("$name stream.get isoimp-1: $r->{body}", $r->{status} == 200 && $r->{body} eq "[]\n");
        $r = rpc($d, $tk, 'stream.last', 'iso-1');
        no_leak("$name stream.last: $r->{body}", $r->{status} == 200 && $r->{body} eq "null\n");
        $r = rpc($d, $tk, 'stream.version', 'iso-1');
        no_leak("$name stream.version: $r->{body}", $r->{status} == 200 && $r->{body} eq "null\n");
        for my $cat ('iso', 'isoimp', '') {
            $r = rpc($d, $tk, 'category.get', $cat);
            no_leak("$name category.get '$cat': $r->{body}", $r->{status} == 200 && index($r->{body}, $MARK) < 0
                    && $r->{body} !~ /"iso(imp)?-1"/);
        }
        $r = rpc($d, $tk, 'ns.streams');
        no_leak("$name ns.streams: $r->{body}", $r->{status} == 200 && $r->{body} !~ /iso/);
        $r = rpc($d, $tk, 'ns.streams', { prefix => 'iso' });
        no_leak("$name ns.streams prefix iso: $r->{body}", $r->{status} == 200 && $r->{body} eq "[]\n");
        $r = rpc($d, $tk, 'ns.categories');
        no_leak("$name ns.categories: $r->{body}", $r->{status} == 200 && $r->{body} !~ /iso/);
        # /subscribe from position 0: catch-up pokes at once (after ": ready")
        # for an existing message; own's token is the positive control.
        # (all=true has no catch-up, api.md 9.4: it is checked live below.)
        for my $p ('stream=iso-1', 'category=iso') {
            my $s = hreq($d, method => 'GET', path => "/subscribe?$p&token=" . qesc($tk), stream => 1,
                         linger => 1);
            no_leak("$name /subscribe?$p: $s->{status} $s->{body}",
                    $s->{status} == 200 && $s->{ready} && $s->{body} !~ /iso-1|isoimp-1/);
            my $c = hreq($d, method => 'GET', path => "/subscribe?$p&token=" . qesc($TO), stream => 1,
                         linger => 5, linger_until => qr/"iso-1"/);
            $probes++;
            if ($c->{body} !~ /"stream":"iso-1"/) {
                $leaks++;    # counted as a failure: the probe could not have seen a leak
                push @leak, "control: own's /subscribe?$p got no poke for iso-1: $c->{body}";
            }
        }
    }
    # Live pokes: subscriptions of the other tenant and of admin (all three
    # modes) are open while own writes iso-2; own's subscriptions (the
    # control) get the poke, the others get nothing.
    {
        my @subs;
        for my $who (['own', $TO], ['other tenant', $TT], ['admin', $A]) {
            for my $p ('stream=iso-2', 'category=iso', 'all=true') {
                my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $d->port, Proto => 'tcp')
                    or next;
                binmode $sock;
                $d->send_all($sock, "GET /subscribe?$p&token=" . qesc($who->[1]) . " HTTP/1.1\r\nHost: t\r\n\r\n");
                my ($b) = $d->read_raw($sock, timeout => 5, until => qr/: ready/);
                push @subs, { who => $who->[0], p => $p, s => $sock, buf => $b };
            }
        }
        my $w2 = rpc($d, $TO, 'stream.write', 'iso-2', { type => 'Secret', data => { m => $MARK } });
        for my $x (@subs) {    # own's first, with time to get the poke; the others after it
            my ($more) = $d->read_raw($x->{s}, timeout => $x->{who} eq 'own' ? 5 : 0.5,
                                      until => qr/"stream":"iso-2"/);
            $x->{buf} .= $more;
            close $x->{s};
            my $got = $x->{buf} =~ /"stream":"iso-2"/;
            $probes++;
            next if $x->{buf} =~ /: ready/ && ($x->{who} eq 'own' ? $got : !$got);
            $leaks++;
            push @leak, ($x->{who} eq 'own' ? 'control: ' : '') . "live /subscribe?$x->{p} as $x->{who}: "
                . ($got ? 'poked for iso-2' : 'no poke') . " [$x->{buf}]";
        }
        is($w2->{status}, 200, 'own writes iso-2 while everyone listens');
    }
    # A write by the other tenant to the same stream name starts at position 0 of its own.
    my $r = rpc($d, $TT, 'stream.write', 'iso-1', { type => 'T', data => {} });
    no_leak("other tenant's write to iso-1: $r->{body}", $r->{status} == 200 && obj($r->{json})->{position} == 0);
    $r = rpc($d, $TO, 'stream.get', 'iso-1');
    no_leak("own still has exactly its message: $r->{body}", scalar @{ arr($r->{json}) } == 1
            && index($r->{body}, $MARK) >= 0);
    # Listings: ns.list and ns.info of another namespace are admin-only (decisions.md 3).
    $r = rpc($d, $TO, 'ns.list');
    no_leak("ns.list with a tenant token: $r->{status}", $r->{status} == 403 && $r->{body} !~ /oth/);
    $r = rpc($d, $TO, 'ns.info', 'oth');
    no_leak("ns.info oth with own's token: $r->{status}", $r->{status} == 403 && $r->{body} !~ /messageCount/);
    $r = rpc($d, $A, 'ns.list');
    no_leak("ns.list (admin) shows no token or hash: $r->{body}",
            $r->{status} == 200 && $r->{body} !~ /ns_[A-Za-z0-9-]+_[0-9a-f]{64}|[0-9a-f]{64}/);
    # Where the rows really are.
    my $rows = psql1($d, q{SELECT (SELECT count(*) FROM eventodb_own.messages WHERE stream_name IN ('iso-1','isoimp-1'))
        || ',' || (SELECT count(*) FROM eventodb_oth.messages WHERE stream_name = 'iso-1')
        || ',' || (SELECT count(*) FROM eventodb_default.messages WHERE stream_name LIKE 'iso%')
        || ',' || (SELECT count(*) FROM eventodb_oth.messages WHERE data::text LIKE '%} . $MARK . q{%')});
    no_leak("rows own,oth,default,oth-with-marker = $rows (want 2,1,0,0)", $rows eq '2,1,0,0');
    # Test mode: the token-less default namespace and own do not see each other.
    my $w2 = rpc($T, undef, 'stream.write', 'tiso-1', { type => 'T', data => { m => 'tm' } });
    $r = rpc($T, $tok{test}{own}, 'stream.get', 'tiso-1');
    no_leak("test mode: own does not see default's tiso-1: $r->{body}", $w2->{status} == 200 && $r->{body} eq "[]\n");
    $r = rpc($T, undef, 'stream.get', 'mx-1');
    no_leak("test mode: no token does not see own's mx-1 marker", $r->{status} == 200 && index($r->{body}, $MARK) < 0);
    # Every successful matrix answer given to a caller other than own.
    for my $b (@owned_bodies) {
        $probes++;
        next if index($b, $MARK) < 0;
        $leaks++;
        push @leak, "matrix answer carries own's data: " . substr($b, 0, 200);
    }
}
diag($_) for @leak[0 .. ($#leak < 15 ? $#leak : 15)];
battery('T23b', 'tenant isolation: writes/imports of one namespace seen by others',
        "$leaks leaks in $probes probes (reads, category all, listings, SSE, psql)",
        'data ops never touch another namespace; listings do not leak', $probes > 30 && $leaks == 0);

# ---------------------------------------------------------------- T23c: hostile ids

my $snap = sub {
    my $d = shift;
    return psql1($d, q{SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace})
        . ' | ' . psql1($d, q{SELECT string_agg(id || '=' || schema_name || '=' || token_hash, ',' ORDER BY id)
                             FROM eventodb_store.namespaces});
};
my @hostile = (
    # [label, id (Perl string; undef = raw JSON body), expected status, code]
    # decisions.md 3: 1-54 characters of A-Z a-z 0-9 _ - starting with a letter or digit, else 400.
    ['single quote', q{'}, 400, 'INVALID_REQUEST'],
    ['quote inside', q{a'b}, 400, 'INVALID_REQUEST'],
    ['double quote', q{a"b}, 400, 'INVALID_REQUEST'],
    ['";drop table', q{";drop table eventodb_store.namespaces;--}, 400, 'INVALID_REQUEST'],
    ['drop in quotes', q{x'); DROP SCHEMA eventodb_default CASCADE;--}, 400, 'INVALID_REQUEST'],
    ['semicolon', 'a;b', 400, 'INVALID_REQUEST'],
    ['space', 'a b', 400, 'INVALID_REQUEST'],
    ['dot', 'eventodb_store.namespaces', 400, 'INVALID_REQUEST'],
    ['slash', 'a/b', 400, 'INVALID_REQUEST'],
    ['backslash', 'a\\b', 400, 'INVALID_REQUEST'],
    ['newline', "a\nb", 400, 'INVALID_REQUEST'],
    ['tab', "a\tb", 400, 'INVALID_REQUEST'],
    ['DEL', "ab\x7f", 400, 'INVALID_REQUEST'],
    # decisions.md 5: U+0000 in any string -> 400; raw NUL is not JSON -> 400.
    ['escaped NUL', "a\x{0}b", 400, 'INVALID_REQUEST'],
    ['raw NUL byte', undef, 400, 'INVALID_REQUEST', qq{["ns.create","a\x00b"]}],
    ['empty', '', 400, 'INVALID_REQUEST'],
    ['number id', undef, 400, 'INVALID_REQUEST', '["ns.create",42]'],
    ['null id', undef, 400, 'INVALID_REQUEST', '["ns.create",null]'],
    ['leading -', '-ab', 400, 'INVALID_REQUEST'],
    ['leading _', '_ab', 400, 'INVALID_REQUEST'],
    ['55 characters', 'n' . ('x' x 54), 400, 'INVALID_REQUEST'],
    ['64 bytes', 'n' x 64, 400, 'INVALID_REQUEST'],
    ['70 bytes, 63-byte prefix shared', ('p' x 63) . 'aaaaaaa', 400, 'INVALID_REQUEST'],
    ['very long (100 kB)', 'v' x 100_000, 400, 'INVALID_REQUEST'],
    ['homoglyph (Cyrillic e)', "d\x{435}fault", 400, 'INVALID_REQUEST'],
    ['fullwidth', "\x{ff44}\x{ff45}\x{ff46}", 400, 'INVALID_REQUEST'],
    ['zero-width space', "own\x{200b}", 400, 'INVALID_REQUEST'],
    ['combining accent', "e\x{301}", 400, 'INVALID_REQUEST'],
    ['e acute', "\x{e9}", 400, 'INVALID_REQUEST'],
    ['RTL override', "ab\x{202e}cd", 400, 'INVALID_REQUEST'],
    ['emoji', "x\x{1f600}", 400, 'INVALID_REQUEST'],
    ['ab? (token would not parse)', 'ab?', 400, 'INVALID_REQUEST'],
    # reliability-security.md 4.1 / decisions.md 3: a schema name colliding
    # with an existing schema -> 400 (eventodb_store is the registry).
    ['store -> eventodb_store', 'store', 400, 'INVALID_REQUEST'],
    ['hand-made schema eventodb_squat', 'squat', 400, 'INVALID_REQUEST'],
    # api.md 6.8 / 8.2: an existing id, or another id with the same schema name -> 409.
    ['existing id default', 'default', 409, 'NAMESPACE_EXISTS'],
    ['a-b (first)', 'hz-a-b', 200, ''],
    ['a_b after a-b', 'hz_a_b', 409, 'NAMESPACE_EXISTS'],
    ['a-_b (first)', 'hz-_c', 200, ''],
    ['a--b after a-_b', 'hz--c', 409, 'NAMESPACE_EXISTS'],
    # Accepted: distinct, harmless schema names (eventodb_ prefix: never pg_*).
    ['case differs from default', 'Default', 200, ''],
    ['pg_catalog -> eventodb_pg_catalog', 'pg_catalog', 200, ''],
    ['pg_toast', 'pg_toast', 200, ''],
    ['public', 'public', 200, ''],
    ['information_schema', 'information_schema', 200, ''],
    ['54 characters', 'm' . ('y' x 53), 200, ''],
);
# A schema made by hand, outside the registry: ns.create must not adopt it.
psql1($P, 'CREATE SCHEMA eventodb_squat');
{
    my $s0 = $snap->($P);
    ok($s0 =~ /(^|,)eventodb_store(,|$)/ && $s0 =~ /(^|,)default=eventodb_default=[0-9a-f]{64}(,|$)/m,
       'catalog snapshot self-test: it sees the schemas and the registry');
}
my ($hn, $hok, $rejected, $unchanged) = (0, 0, 0, 0);
my @hfail;
for my $h (@hostile) {
    my ($label, $id, $st, $code, $raw) = @$h;
    my $before = $snap->($P);
    my $r;
    if (defined $raw) {
        $r = hreq($P, method => 'POST', path => '/rpc', body => $raw,
                  headers => [['Authorization', "Bearer $A"], ['Content-Type', 'application/json']]);
        push @error_bodies, $r->{body} if $r->{status} >= 400;
    } else {
        $r = rpc($P, $A, 'ns.create', $id);
    }
    $hn++;
    my $ok = $r->{status} == $st && $r->{code} eq $code;
    if ($st == 200) {
        my ($okj, $v) = json_decode($r->{body});
        my $tk = $okj ? obj($v)->{token} : undef;
        push @secrets, $tk if $tk;
        (my $schema = "eventodb_$id") =~ s/[^A-Za-z0-9_]/_/g;
        $ok &&= psql1($P, "SELECT count(*) FROM pg_namespace WHERE nspname = '$schema'") eq '1';
    } else {
        $rejected++;
        my $after = $snap->($P);
        if ($after eq $before) { $unchanged++ } else { $ok = 0; push @hfail, "$label: catalog changed" }
    }
    # The same id through the lookups: never a 500, never a change.
    if (defined $id && length $id && $st != 200) {
        my $before2 = $snap->($P);
        for my $mth ('ns.info', 'ns.delete') {
            # 'default' and the 409 ids exist (as ids or schema names): no delete.
            next if $mth eq 'ns.delete' && $st == 409;
            my $x = rpc($P, $A, $mth, $id);
            my $good = ($x->{status} == 404 && $x->{code} eq 'NAMESPACE_NOT_FOUND')
                || ($x->{status} == 400 && $x->{code} eq 'INVALID_REQUEST')
                || ($x->{status} == 200 && $mth eq 'ns.info' && $id eq 'default');
            $ok &&= $good;
            push @hfail, "$label: $mth -> $x->{status} $x->{code}" unless $good;
            my $y = rpc($P, $tok{prod}{own}, $mth, $id);
            my $good2 = $y->{status} == 403 || $y->{status} == 400;
            $ok &&= $good2;
            push @hfail, "$label: $mth with a tenant token -> $y->{status}" unless $good2;
        }
        my $after2 = $snap->($P);
        if ($after2 ne $before2 && $st != 409) { $ok = 0; push @hfail, "$label: lookups changed the catalog" }
        # A token naming the hostile id: 403 in production (not in the
        # registry), nothing changes.  (Ids beyond 1 kB would only hit the
        # header size limit.)
        if (length $id <= 1000) {
            my $ht = make_token($id);
            my $z = rpc($P, $ht, 'stream.write', 'h-1', { type => 'T', data => {} });
            my $good3 = ($z->{status} == 403 && $z->{code} eq 'AUTH_UNAUTHORIZED')
                || ($z->{status} == 401 && $z->{code} eq 'AUTH_INVALID_TOKEN');
            $ok &&= $good3;
            push @hfail, "$label: token naming it -> $z->{status} $z->{code}" unless $good3;
        }
    }
    $hok++ if $ok;
    push @hfail, "$label: ns.create -> $r->{status} $r->{code} (want $st $code) " . substr($r->{body}, 0, 120)
        unless $r->{status} == $st && $r->{code} eq $code;
}
# The registry schema and the default namespace survived everything.
my $alive = rpc($P, $A, 'stream.get', 'mx-1');
ok($alive->{status} == 200, 'default namespace still serves after the corpus');
is(psql1($P, q{SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pg\_%' AND nspname NOT IN
                 ('pg_catalog','pg_toast') AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'}),
   '0', 'no pg_* schema was created');
is(psql1($P, q{SELECT count(*) FROM information_schema.tables WHERE table_schema = 'eventodb_store'}), '1',
   'eventodb_store holds only the registry table');
diag($_) for @hfail[0 .. ($#hfail < 20 ? $#hfail : 20)];
battery('T23c', 'hostile namespace ids (quotes, ";drop, NUL, 64+ bytes, a-b/a_b, homoglyphs, store, squatted schema)',
        "$hok/$hn ids as specified; catalog unchanged by $unchanged/$rejected rejected ids",
        '400 or NAMESPACE_EXISTS as specified; pg_namespace unchanged by rejected ids',
        $hn && $hok == $hn && $unchanged == $rejected);

# ---------------------------------------------------------------- T23d: no token anywhere

# One event, one log line: a namespace id with a newline (possible in a
# database the original server created: it accepted any id) reaches a log
# line through /import?force=true; worker/log.c writes it as \x0a instead
# of letting it forge a second line.
{
    my $r = rpc($P, $A, 'ns.create', 'evilx');
    my $forged = '2026-01-01T00:00:00.000Z info master: forged line';
    my $evil = "evil\n$forged";
    my $etok = make_token($evil);
    push @secrets, obj($r->{json})->{token}, $etok;
    psql1($P, "UPDATE eventodb_store.namespaces SET id = E'evil\\n$forged', token_hash = '"
              . sha256_hex($etok) . "' WHERE id = 'evilx'");
    my $x = hreq($P, method => 'POST', path => '/import?force=true', body => '',
                 headers => [['Authorization', "Bearer $etok"]]);
    is($x->{status}, 200, 'a namespace id with a newline (registry row from elsewhere) still works');
    ok($t->wait_for(sub { index($P->log_text, 'evil\x0a2026-01-01') >= 0 }, 5),
       'its id is logged with the newline escaped');
    unlike($P->log_text, qr/^\Q$forged\E/m, 'no forged log line');
}

# Self-test of the grep: a body that does carry a token is found.
{
    my $r = rpc($P, $A, 'ns.create', 'greptest');
    my $tk = obj($r->{json})->{token} // '';
    push @secrets, $tk;
    ok($tk && (grep { index($r->{body}, $_) >= 0 } $tk, ($tk =~ /_([0-9a-f]{64})$/)) == 2,
       'grep self-test: the ns.create answer (a success body, not checked) holds its token');
}
my @debug_out;
my ($cmdlines, $cmdline_token) = (0, 0);
for my $d ($P, $T) {
    for my $p ('/debug/pprof/', '/debug/pprof/workers', '/debug/pprof/goroutine?debug=2',
               '/debug/pprof/goroutine?debug=1', '/metrics') {
        my $r = hreq($d, method => 'GET', path => $p);
        push @debug_out, [$p, $r->{body}];
    }
    for my $p ('/debug/pprof/heap', '/debug/pprof/allocs', '/debug/pprof/goroutine') {
        my $r = hreq($d, method => 'GET', path => $p);
        # gzip'd pprof: decompress when possible to search its strings
        my $raw = $r->{body};
        my $plain = eval { require IO::Uncompress::Gunzip; my $o; IO::Uncompress::Gunzip::gunzip(\$raw => \$o) ? $o : $raw } // $raw;
        push @debug_out, [$p, $plain];
    }
    # ps(1) shows /proc/PID/cmdline to every local user: the daemon hides
    # the value of --token (and --db-url) there.
    for my $pid ($d->pid, values %{ $d->worker_pids }) {
        if (open my $fh, '<:raw', "/proc/$pid/cmdline") {
            local $/;
            my $cl = <$fh> // '';
            close $fh;
            push @debug_out, ["cmdline of $pid", $cl];
            $cmdlines++ if length $cl;
            $cmdline_token++ if $cl =~ /--token\0/;
        }
    }
    my $seg = '/dev/shm' . $d->shm_name;
    if (open my $fh, '<:raw', $seg) { local $/; push @debug_out, ["shm $seg", scalar <$fh>]; close $fh }
}
my %uniq = map { $_ => 1 } grep { defined && length } @secrets;
my @needles;
for my $s (sort keys %uniq) {
    push @needles, $s, EventoTest::Daemon::_uri_escape($s);
    my ($rand) = $s =~ /_([0-9a-fA-F]{64})$/;
    push @needles, $rand if $rand && $rand !~ /^0+$/;    # the admin token's random part is all zeros
}
my @logs = map { $_->log_text } ($P, $T);
my $loglines = 0;
$loglines += () = $_ =~ /\n/g for @logs;
my ($hits, @where) = (0);
for my $n (@needles) {
    for my $i (0 .. $#logs) {
        if (index($logs[$i], $n) >= 0) { $hits++; push @where, "log of daemon $i: " . substr($n, 0, 24) }
    }
    for my $b (@error_bodies) {
        if (index($b, $n) >= 0) { $hits++; push @where, "error body: " . substr($b, 0, 120) }
    }
    for my $o (@debug_out) {
        if (index($o->[1], $n) >= 0) { $hits++; push @where, "$o->[0]: " . substr($n, 0, 24) }
    }
}
# Also any token-shaped string at all, and any "token=" query value, in the logs.
for my $i (0 .. $#logs) {
    for my $l (split /\n/, $logs[$i]) {
        next if $l =~ /^### eventotest: /;    # the harness's own line (tokens redacted)
        if ($l =~ /ns_[A-Za-z0-9-]{2,}_[0-9a-fA-F]{16}|token=[^\s&"]/) { $hits++; push @where, "log line: $l" }
    }
}
diag($_) for @where[0 .. ($#where < 15 ? $#where : 15)];
ok($cmdlines >= 4 && $cmdline_token >= 1,
   "process command lines searched too ($cmdlines, $cmdline_token started with --token)");
battery('T23d', 'tokens in logs (debug level), error bodies, debug output, shm, ps',
        sprintf('%d hits for %d tokens in %d log lines, %d error bodies, %d debug outputs',
                $hits, scalar keys %uniq, $loglines, scalar @error_bodies, scalar @debug_out),
        'grep = 0', $hits == 0 && @error_bodies > 100 && $loglines > 10);

# ---------------------------------------------------------------- T23e: the token table

my ($rows, $bad) = (0, 0);
for my $d ($P, $T) {
    my $cols = psql1($d, q{SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns
                          WHERE table_schema = 'eventodb_store' AND table_name = 'namespaces'});
    is($cols, 'id,token_hash,schema_name,description,created_at,metadata', 'registry columns: no token column');
    # One line per row (an id may hold a newline): the digest, and whether
    # any column of the row holds something token-shaped.
    for my $l (split /\n/, psql1($d, q{SELECT token_hash || '|' || (n::text ~ 'ns_[A-Za-z0-9-]+_[0-9a-fA-F]{64}')
                                      FROM eventodb_store.namespaces n})) {
        my ($h, $has_token) = split /\|/, $l, 2;
        $rows++;
        $bad++ unless $h =~ /^[0-9a-f]{64}$/;
        $bad++ if $has_token ne 'false';
    }
    # Known tokens map to their stored digests.
    for my $id (qw(own oth)) {
        my $m = $d == $P ? 'prod' : 'test';
        is(psql1($d, "SELECT token_hash FROM eventodb_store.namespaces WHERE id = '$id'"),
           sha256_hex($tok{$m}{$id}), "$m: $id stores sha256(token)");
    }
}
battery('T23e', 'token table holds only digests', "$rows rows, $bad not a 64-hex SHA-256 digest or holding a token",
        'only 64-hex digests', $rows > 10 && $bad == 0);

done_testing;
