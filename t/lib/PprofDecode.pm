package PprofDecode;
# PprofDecode - a minimal reader of pprof profiles (profile.proto, gzip or
# raw) for the tests, independent of the C encoder and of Go: it decodes
# the wire format by hand (varints and length-delimited fields) with the
# field numbers of google/pprof's profile.proto.
#
#   my $p = PprofDecode::load($file_or_bytes) or die $PprofDecode::error;
#   $p->{types}        [[type, unit], ...]
#   $p->{default}      default sample type name ('' if unset)
#   $p->{period_type}  [type, unit]; $p->{period}
#   $p->{samples}      [{locs => [loc ids, leaf first], values => [...], labels => [...]}]
#   $p->{loc}{id}      {address, mapping, functions => [function ids]}
#   $p->{func}{id}     {name, system_name, filename}
#   $p->{mappings}     [{id, start, limit, offset, filename, build_id, has_functions}]
#   $p->{strings}, $p->{comments}, $p->{duration_nanos}, $p->{time_nanos}
#   PprofDecode::total($p, 'alloc_space')            sum over samples
#   PprofDecode::by_function($p, 'alloc_space')      {name => [flat, cum]}
use strict;
use warnings;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);

our $error = '';

sub _varint {
    my ($buf, $pos) = @_;
    my ($v, $shift) = (0, 0);
    while (1) {
        die "truncated varint\n" if $$pos >= length $$buf;
        my $b = ord substr($$buf, $$pos++, 1);
        $v += ($b & 0x7f) * (2**$shift);
        last unless $b & 0x80;
        $shift += 7;
        die "varint too long\n" if $shift > 63;
    }
    return $v;
}

# fields($bytes) -> list of [field, wiretype, value] (value: number or bytes)
sub _fields {
    my ($bytes) = @_;
    my ($pos, @f) = (0);
    while ($pos < length $bytes) {
        my $tag = _varint(\$bytes, \$pos);
        my ($field, $wt) = (int($tag / 8), $tag % 8);
        if ($wt == 0) {
            push @f, [$field, 0, _varint(\$bytes, \$pos)];
        } elsif ($wt == 2) {
            my $len = _varint(\$bytes, \$pos);
            die "truncated field $field\n" if $pos + $len > length $bytes;
            push @f, [$field, 2, substr($bytes, $pos, $len)];
            $pos += $len;
        } elsif ($wt == 1) {
            push @f, [$field, 1, unpack('Q<', substr($bytes, $pos, 8))];
            $pos += 8;
        } elsif ($wt == 5) {
            push @f, [$field, 5, unpack('V', substr($bytes, $pos, 4))];
            $pos += 4;
        } else {
            die "unknown wire type $wt\n";
        }
    }
    return @f;
}

# repeated integers: packed (wire type 2) or one per field
sub _ints {
    my ($f) = @_;
    return ($f->[2]) if $f->[1] == 0;
    my ($pos, @v) = (0);
    my $b = $f->[2];
    push @v, _varint(\$b, \$pos) while $pos < length $b;
    return @v;
}

sub _signed { my ($v) = @_; return $v >= 2**63 ? $v - 2**64 : $v }

sub load {
    my ($src) = @_;
    my $data = $src;
    if (length($src) < 4096 && $src !~ /\0/ && -f $src) {
        open my $fh, '<:raw', $src or do { $error = "$src: $!"; return undef };
        local $/;
        $data = <$fh>;
        close $fh;
    }
    if (substr($data, 0, 2) eq "\x1f\x8b") {
        my $raw;
        gunzip(\$data => \$raw) or do { $error = "gunzip: $GunzipError"; return undef };
        $data = $raw;
    }
    my %p = (types => [], samples => [], loc => {}, func => {}, mappings => [], strings => [],
             comments => []);
    my (@st, $def, @pt, @cm);
    my $ok = eval {
        for my $f (_fields($data)) {
            my ($n, $wt, $v) = @$f;
            if ($n == 1) {
                my %vt = map { $_->[0] => $_->[2] } _fields($v);
                push @st, [$vt{1} // 0, $vt{2} // 0];
            } elsif ($n == 2) {
                my (@locs, @vals, @labels);
                for my $sf (_fields($v)) {
                    if ($sf->[0] == 1) { push @locs, _ints($sf) }
                    elsif ($sf->[0] == 2) { push @vals, map { _signed($_) } _ints($sf) }
                    elsif ($sf->[0] == 3) { push @labels, { map { $_->[0] => $_->[2] } _fields($sf->[2]) } }
                }
                push @{ $p{samples} }, { locs => \@locs, values => \@vals, labels => \@labels };
            } elsif ($n == 3) {
                my %m = map { $_->[0] => $_->[2] } _fields($v);
                push @{ $p{mappings} }, { id => $m{1}, start => $m{2} // 0, limit => $m{3} // 0,
                    offset => $m{4} // 0, filename => $m{5} // 0, build_id => $m{6} // 0,
                    has_functions => $m{7} // 0 };
            } elsif ($n == 4) {
                my (%l, @fns);
                for my $lf (_fields($v)) {
                    if ($lf->[0] == 4) {
                        my %line = map { $_->[0] => $_->[2] } _fields($lf->[2]);
                        push @fns, $line{1} // 0;
                    } else {
                        $l{ $lf->[0] } = $lf->[2];
                    }
                }
                die "location id 0\n" unless $l{1};
                die "duplicate location $l{1}\n" if $p{loc}{ $l{1} };
                $p{loc}{ $l{1} } = { address => $l{3} // 0, mapping => $l{2} // 0, functions => \@fns };
            } elsif ($n == 5) {
                my %fn = map { $_->[0] => $_->[2] } _fields($v);
                die "function id 0\n" unless $fn{1};
                die "duplicate function $fn{1}\n" if $p{func}{ $fn{1} };
                $p{func}{ $fn{1} } = { name => $fn{2} // 0, system_name => $fn{3} // 0,
                                       filename => $fn{4} // 0 };
            } elsif ($n == 6) {
                push @{ $p{strings} }, $v;
            } elsif ($n == 9) { $p{time_nanos} = $v }
            elsif ($n == 10) { $p{duration_nanos} = $v }
            elsif ($n == 11) { my %vt = map { $_->[0] => $_->[2] } _fields($v); @pt = ($vt{1} // 0, $vt{2} // 0) }
            elsif ($n == 12) { $p{period} = $v }
            elsif ($n == 13) { push @cm, _ints($f) }
            elsif ($n == 14) { $def = $v }
        }
        1;
    };
    if (!$ok) { $error = "malformed profile: $@"; return undef }
    my $s = $p{strings};
    if (!@$s || $s->[0] ne '') { $error = 'string_table[0] is not ""'; return undef }
    my $str = sub { my $i = shift // 0; die "string index $i out of range\n" if $i > $#$s; $s->[$i] };
    $ok = eval {
        $p{types} = [map { [$str->($_->[0]), $str->($_->[1])] } @st];
        $p{default} = $str->($def // 0);
        $p{period_type} = [map { $str->($_) } @pt];
        $p{comments} = [map { $str->($_) } @cm];
        for my $fn (values %{ $p{func} }) {
            $fn->{$_} = $str->($fn->{$_}) for qw(name system_name filename);
        }
        for my $m (@{ $p{mappings} }) {
            $m->{$_} = $str->($m->{$_}) for qw(filename build_id);
        }
        for my $smp (@{ $p{samples} }) {
            die "sample has " . scalar(@{ $smp->{values} }) . " values for " . scalar(@st) . " types\n"
                unless @{ $smp->{values} } == @st;
            for my $l (@{ $smp->{locs} }) { die "unknown location $l\n" unless $p{loc}{$l} }
            for my $lb (@{ $smp->{labels} }) { $lb->{key} = $str->($lb->{1}) }
        }
        for my $l (values %{ $p{loc} }) {
            for my $f (@{ $l->{functions} }) { die "unknown function $f\n" unless $p{func}{$f} }
        }
        1;
    };
    if (!$ok) { $error = "malformed profile: $@"; return undef }
    return \%p;
}

sub _type_index {
    my ($p, $type) = @_;
    for my $i (0 .. $#{ $p->{types} }) { return $i if $p->{types}[$i][0] eq $type }
    return undef;
}

sub total {
    my ($p, $type) = @_;
    my $i = _type_index($p, $type) // return undef;
    my $t = 0;
    $t += $_->{values}[$i] for @{ $p->{samples} };
    return $t;
}

# {function name => [flat, cum]} for a sample type (flat: leaf frame)
sub by_function {
    my ($p, $type) = @_;
    my $i = _type_index($p, $type) // return {};
    my %r;
    for my $smp (@{ $p->{samples} }) {
        my $v = $smp->{values}[$i];
        my %seen;
        my $first = 1;
        for my $l (@{ $smp->{locs} }) {
            for my $fid (@{ $p->{loc}{$l}{functions} }) {
                my $name = $p->{func}{$fid}{name};
                $r{$name} //= [0, 0];
                $r{$name}[0] += $v if $first;
                $r{$name}[1] += $v unless $seen{$name}++;
                $first = 0;
            }
        }
    }
    return \%r;
}

1;
