#!/usr/bin/perl
# Allocation-heavy Perl workload with a deterministic digest: big hashes of
# strings and arrays, string growth, regexes, sorting, nested structures.
# The output must be byte-identical with and without librulloc preloaded
# (PERL_HASH_SEED is fixed by the harness; nothing printed depends on hash
# order or addresses).
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);

my $total = Digest::MD5->new;
sub section {
    my ($name, @values) = @_;
    my $digest = md5_hex(join("\x1f", @values));
    $total->add("$name:$digest");
    printf "%-10s %s\n", $name, $digest;
}

# A tiny deterministic PRNG (perl's rand() depends on the platform).
my $state = 12345;
sub rnd { my ($n) = @_; $state = ($state * 1103515245 + 12345) % 2147483648; return $state % $n; }

# Hashes: insert, delete half, rebuild with transformed keys.
{
    my %h;
    for my $i (0 .. 99_999) {
        $h{"key$i-" . rnd(1_000_000)} = [ $i, "x" x ($i % 13), { n => $i } ];
    }
    my $n = 0;
    for my $k (sort keys %h) { delete $h{$k} if $n++ % 2 }
    my %r = map { scalar(reverse $_) => length($h{$_}[1]) } keys %h;
    my $sum = 0;
    $sum += $_ for values %r;
    section("hashes", scalar(keys %h), $sum, (sort keys %r)[0 .. 9]);
}

# Strings: repeated appends, substitutions, split/join, sprintf.
{
    my $s = "";
    for my $i (0 .. 49_999) { $s .= chr(97 + rnd(26)) x (1 + rnd(5)); $s .= " " if rnd(7) == 0 }
    (my $t = $s) =~ s/([aeiou])/uc($1) x 3/ge;
    my @words = split / /, $t;
    my @found = ($s =~ /\b([b-d]\w{3,})\b/g);
    my $joined = join ",", map { sprintf "%06d:%s", $_, $words[$_] } 0 .. $#words;
    section("strings", length($s), length($t), scalar(@words), scalar(@found), md5_hex($joined));
}

# Arrays and sorting: numeric and string sorts of records, splice, grep.
{
    my @recs = map { [ rnd(1000), "n" . rnd(100_000), $_ ] } 0 .. 99_999;
    my @sorted = sort { $a->[0] <=> $b->[0] or $a->[1] cmp $b->[1] or $a->[2] <=> $b->[2] } @recs;
    splice(@sorted, 1000, 50_000);
    my @even = grep { $_->[0] % 2 == 0 } @sorted;
    section("arrays", scalar(@sorted), scalar(@even), join(";", map { "@$_" } @sorted[0 .. 4, -5 .. -1]));
}

# Nested structures and their destruction.
{
    my %tree;
    for my $i (0 .. 29_999) {
        my @path = map { "p" . rnd(20) } 1 .. 4;
        my $node = \%tree;
        $node = ($node->{$_} //= {}) for @path;
        push @{ $node->{items} }, $i;
    }
    my @stack = (\%tree);
    my ($nodes, $items) = (0, 0);
    while (my $n = pop @stack) {
        $nodes++;
        for my $k (sort keys %$n) {
            if ($k eq "items") { $items += @{ $n->{items} } } else { push @stack, $n->{$k} }
        }
    }
    undef %tree;
    section("nested", $nodes, $items);
}

printf "%-10s %s\n", "total", $total->hexdigest;
