# POSIX sh without child processes.
i=0
total=0
while [ "$i" -lt 200 ]; do
    total=$((total + i * i))
    i=$((i + 1))
done
echo "sum of squares $total"
set -- alpha beta gamma
for a; do printf '%s:%s\n' "$a" "${#a}"; done
case "multi-variant" in *vari*) echo matched ;; esac
while IFS=: read -r user _ uid _; do echo "$user $uid"; done < passwd
