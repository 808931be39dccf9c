set f [open words.txt]
set counts [dict create]
while {[gets $f line] >= 0} {
    foreach w $line { dict incr counts $w }
}
close $f
set pairs {}
dict for {w n} $counts { lappend pairs [list $w $n] }
set pairs [lsort -index 0 $pairs]
set pairs [lsort -integer -decreasing -index 1 $pairs]
foreach p [lrange $pairs 0 4] { puts [format "%-12s %d" {*}$p] }
puts [expr {2 ** 40}]
puts [string map {a A e E} "a tcl script here"]
