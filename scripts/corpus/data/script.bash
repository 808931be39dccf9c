# bash without child processes: builtins, arrays, functions, arithmetic.
declare -A count
while read -r -a ws; do
    for w in "${ws[@]}"; do count[$w]=$(( ${count[$w]:-0} + 1 )); done
done < words.txt
n=0
for w in "${!count[@]}"; do n=$((n + 1)); done
echo "distinct $n"
fact() { local i; r=1; for ((i = 2; i <= $1; i++)); do r=$((r * i)); done; }
fact 20
echo "20! = $r"
s="Hello, multi-variant world"
echo "${s^^} ${#s} ${s/world/execution}"
printf '%05d|%-6s|%x\n' 42 ab 255
