#!/usr/bin/perl
# 72-evdump-man.t - evdump(1) is complete and generated where it should
# be: every counter and histogram of shm/counters.def and every label of
# shm/labels.def is documented, the COUNTERS section is what
# `evdump --man-counters` generates (man/gen-counters.pl --check), every
# command and option of `evdump --help` appears, and mandoc -T lint finds
# nothing worse than style notes.  eventodbd(8) documents /metrics and
# the shared-memory options.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use EventoTest;

my $top = EventoTest::top_dir();
my $evdump = EventoTest::evdump_binary();
plan skip_all => "evdump not built ($evdump)" unless -x $evdump;
my $t = EventoTest->new(need => []);

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; return scalar <$fh> }
my $man = slurp("$top/man/evdump.1");

# ---- every counter, histogram and label
my $def = slurp("$top/shm/counters.def");
my @counters = $def =~ /^EVSHM_COUNTER\((\w+),/mg;
my @hists = $def =~ /^EVSHM_HISTOGRAM\((\w+),/mg;
cmp_ok(scalar @counters, '>=', 20, scalar(@counters) . ' counters in counters.def');
cmp_ok(scalar @hists, '>=', 2, scalar(@hists) . ' histograms in counters.def');
for my $c (@counters, @hists) {
    like($man, qr/^\.It Sy \Q$c\E\b/m, "evdump(1) documents $c");
}
my $labels = slurp("$top/shm/labels.def");
my @lab = $labels =~ /^EVSHM_(?:METHOD|ENDPOINT|STATUS|ERRCODE)\(\w+,\s*"([^"]+)"\)/mg;
cmp_ok(scalar @lab, '>=', 50, scalar(@lab) . ' labels in labels.def');
is(scalar(grep { $man !~ /^\.Ql \Q$_\E(?: ,| \.)$/m } @lab), 0, 'every label is listed');

# ---- the generated section is up to date
{
    my $r = $t->run_cmd([$^X, "$top/man/gen-counters.pl", '--check', $evdump, "$top/man/evdump.1"]);
    is($r->{exit}, 0, 'COUNTERS section equals evdump --man-counters (make man-counters)')
        or diag($r->{stderr});
}

# ---- commands and options
{
    my $r = $t->evdump('--help');
    my @cmds = $r->{stdout} =~ /^  ([a-z][a-z-]+) /mg;
    my @opts = $r->{stdout} =~ /--([a-z][a-z-]+)/g;
    cmp_ok(scalar @cmds, '>=', 9, 'commands in --help: ' . join(' ', @cmds));
    for my $c (@cmds) {
        like($man, qr/^\.It Cm \Q$c\E\b/m, "evdump(1) documents the $c command");
    }
    my %seen;
    for my $o (grep { !$seen{$_}++ } @opts) {
        like($man, qr/(?:Fl|,)\s+\\-\Q$o\E\b/, "evdump(1) documents --$o");
    }
    like($man, qr/^\.Sh EXIT STATUS/m, 'exit status documented');
    for my $code (0 .. 5) {
        like($man, qr/^\.It $code$/m, "exit status $code documented");
    }
}

# ---- mandoc
SKIP: {
    my $mandoc = `command -v mandoc 2>/dev/null`;
    chomp $mandoc;
    skip 'mandoc not installed', 2 unless $mandoc;
    for my $page ('man/evdump.1', 'man/eventodbd.8') {
        my $r = $t->run_cmd([$mandoc, '-T', 'lint', '-W', 'warning', "$top/$page"]);
        my @w = grep { !/mandoc\.db|referenced manual not found/ } split /\n/, $r->{stdout} . $r->{stderr};
        is(scalar @w, 0, "mandoc -T lint -W warning $page") or diag(join "\n", @w);
    }
}

# ---- eventodbd(8): /metrics and the options
{
    my $m8 = slurp("$top/man/eventodbd.8");
    like($m8, qr{GET /metrics}, 'eventodbd(8) documents GET /metrics');
    like($m8, qr/\\-shm-name/, 'eventodbd(8) documents --shm-name');
    like($m8, qr/\\-publish-counters/, 'eventodbd(8) documents --publish-counters');
    like($m8, qr/Xr evdump 1/, 'eventodbd(8) refers to evdump(1)');
}

done_testing;
