counts = Hash.new(0)
File.foreach("words.txt") { |l| l.scan(/\w+/) { |w| counts[w] += 1 } }
counts.sort_by { |w, n| [-n, w] }.first(5).each { |w, n| printf("%-12s %d\n", w, n) }
puts (1..20).map { |i| i * i }.select(&:even?).sum
puts [3, 1, 2].sort.inspect
