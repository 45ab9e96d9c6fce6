#!/usr/bin/perl
# gen-counters.pl - keep the COUNTERS section of evdump(1) generated.
#
# The counters, their descriptions and label sets are declared once, in
# shm/counters.def and shm/labels.def; `evdump --man-counters` prints them
# as mdoc.  This script puts that text between the markers
#   .\" BEGIN GENERATED COUNTERS
#   .\" END GENERATED COUNTERS
# of man/evdump.1 ("make man-counters"), or with --check only reports
# whether the page is up to date (t/72-evdump-man.t; exit 1 if not).
#
# usage: gen-counters.pl [--check] EVDUMP MANPAGE
use strict;
use warnings;

my $check = @ARGV && $ARGV[0] eq '--check' ? shift @ARGV : 0;
die "usage: $0 [--check] EVDUMP MANPAGE\n" unless @ARGV == 2;
my ($evdump, $page) = @ARGV;

my $gen = `"$evdump" --man-counters`;
die "$0: $evdump --man-counters failed\n" if $? || !length $gen;
open my $fh, '<', $page or die "$0: $page: $!\n";
my $txt = do { local $/; <$fh> };
close $fh;
my $begin = qq{.\\" BEGIN GENERATED COUNTERS\n};
my $end = qq{.\\" END GENERATED COUNTERS\n};
my ($pre, $old, $post) = $txt =~ /\A(.*?\Q$begin\E)(.*?)(\Q$end\E.*)\z/s
    or die "$0: $page has no generated-counters markers\n";
if ($check) {
    exit 0 if $old eq $gen;
    print STDERR "$0: the COUNTERS section of $page is out of date: run make man-counters\n";
    exit 1;
}
exit 0 if $old eq $gen;
open $fh, '>', "$page.tmp" or die "$0: $page.tmp: $!\n";
print $fh $pre, $gen, $post;
close $fh or die "$0: $page.tmp: $!\n";
rename "$page.tmp", $page or die "$0: $page: $!\n";
print "$page: COUNTERS section updated\n";
