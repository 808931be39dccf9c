use strict;
use warnings;
my %count;
open(my $fh, '<', 'words.txt') or die "words.txt: $!";
while (my $line = <$fh>) {
    $count{$_}++ for ($line =~ /(\w+)/g);
}
close $fh;
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0..4];
printf "%-12s %d\n", $_, $count{$_} for @top;
my $total = 0;
$total += $_ for values %count;
print "total $total distinct ", scalar(keys %count), "\n";
my $s = join ",", map { sprintf "%03x", $_ * 37 % 4096 } 1..10;
print "$s\n";
