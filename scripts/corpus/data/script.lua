local counts = {}
for line in io.lines("words.txt") do
  for w in line:gmatch("%a+") do counts[w] = (counts[w] or 0) + 1 end
end
local words = {}
for w in pairs(counts) do words[#words + 1] = w end
table.sort(words, function(a, b) if counts[a] ~= counts[b] then return counts[a] > counts[b] end return a < b end)
for i = 1, 5 do print(string.format("%-12s %d", words[i], counts[words[i]])) end
local fib = {1, 1}
for i = 3, 30 do fib[i] = fib[i - 1] + fib[i - 2] end
print(fib[30], #words)
