#!/usr/bin/env bash
# Foundation benchmark: prints, from one run on this machine,
#  - the cost of a trapped system call (a getppid loop in the VM) against the
#    bare exit round trip of a guest that only exits (the floor), at CPL3
#    (where programs run) and CPL0, and against native;
#  - launch-to-first-guest-instruction time;
#  - total time of `busybox true` in the VM and natively;
#  - VMM resident memory beyond the guest pages in use;
#  - what the VMM's jail costs: launch, a trapped call and an open+close
#    (the sandbox's path lookup) with the jail and with --no-jail;
#  - the two system-call paths (--syscall-path exit|ring): getppid and a
#    4 KiB pread of a file of the root, each pair interleaved, against
#    native, and the exits per call on the ring;
#  - the peer: the same getppid and 4 KiB pread under gVisor (`runsc
#    --rootless --network=host --platform=ptrace do`, Debian package runsc),
#    against the same native baseline; skipped, saying why, when runsc is
#    missing or does not start.
# Usage: scripts/bench-foundation.sh [ITERATIONS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-20000}"
reps=5
cd "$root"
cargo build --release --workspace --locked -q
vmm="${CARGO_TARGET_DIR:-$root/target}/release/dmvx-vmm"
work="$(mktemp -d)"
# The VMM reads the programs as its jail identity (nobody), not as root.
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
gcc -O2 -static -o "$work/percall" scripts/bench/percall.c
gcc -O2 -o "$work/launch" scripts/bench/launch.c
bb=/bin/busybox

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
now_ns() { date +%s%N; }

floor3=$(for i in $(seq $reps); do "$vmm" --bench-exit-loop "$n" --bench-cpl 3; done | median)
floor0=$(for i in $(seq $reps); do "$vmm" --bench-exit-loop "$n" --bench-cpl 0; done | median)
trapped=$(for i in $(seq $reps); do "$vmm" -- "$work/percall" getppid "$n"; done | median)
native=$(for i in $(seq $reps); do "$work/percall" getppid 1000000; done | median)
launch=$(for i in $(seq 21); do "$work/launch" "$vmm" --stats -- "$bb" true 2>&1 | sed -n 's/.*first guest instruction \([0-9.]*\) ms/\1/p'; done | median)
runs=30
t0=$(now_ns); for i in $(seq $runs); do "$vmm" -- "$bb" true; done; t1=$(now_ns)
vm_true=$(awk -v a="$t0" -v b="$t1" -v n=$runs 'BEGIN { printf "%.3f", (b - a) / n / 1e6 }')
t0=$(now_ns); for i in $(seq $runs); do "$bb" true; done; t1=$(now_ns)
nat_true=$(awk -v a="$t0" -v b="$t1" -v n=$runs 'BEGIN { printf "%.3f", (b - a) / n / 1e6 }')
# The jail's cost: each pair interleaved (jailed, then --no-jail), so load
# from other work on the machine falls on both alike.
pairs() { # MODE N -> "jailed_median no_jail_median"
    : >"$work/j"; : >"$work/nj"
    for i in $(seq $reps); do
        "$vmm" -- "$work/percall" "$1" "$2" >>"$work/j"
        "$vmm" --no-jail -- "$work/percall" "$1" "$2" 2>/dev/null >>"$work/nj"
    done
    echo "$(median <"$work/j") $(median <"$work/nj")"
}
read -r trapped_j trapped_nj <<<"$(pairs getppid "$n")"
read -r open_j open_nj <<<"$(pairs open $((n / 4)))"
# The system-call paths, each pair interleaved (exit, then ring).
paths() { # MODE N [FILE] -> "exit_median ring_median"
    : >"$work/pe"; : >"$work/pr"
    for i in $(seq $reps); do
        "$vmm" --syscall-path exit -- "$work/percall" "$@" >>"$work/pe"
        "$vmm" --syscall-path ring -- "$work/percall" "$@" >>"$work/pr"
    done
    echo "$(median <"$work/pe") $(median <"$work/pr")"
}
read -r ppid_exit ppid_ring <<<"$(paths getppid "$n")"
read -r rd_exit rd_ring <<<"$(paths read4k "$n" "$bb")"
native_rd=$(for i in $(seq $reps); do "$work/percall" read4k 200000 "$bb"; done | median)
# The peer, gVisor's runsc on its ptrace platform (its KVM platform hangs
# on nested PVM hosts).
runsc_cmd=(runsc --rootless --network=host --platform=ptrace --ignore-cgroups do -quiet)
runsc_skip=""
if ! command -v runsc >/dev/null; then
    runsc_skip="runsc is not installed (Debian package runsc; scripts/setup-host.sh --bench)"
elif ! out=$(timeout 60 "${runsc_cmd[@]}" "$work/percall" getppid 10 2>&1 </dev/null) || ! [[ "$out" =~ ^[0-9.]+$ ]]; then
    runsc_skip="runsc did not start: $(echo "$out" | tail -1)"
fi
if [ -z "$runsc_skip" ]; then
    # Its output must go to a file or pipe (on a terminal it can be lost).
    runsc_ppid=$(for i in $(seq $reps); do timeout 120 "${runsc_cmd[@]}" "$work/percall" getppid "$n" </dev/null | cat; done | median)
    runsc_rd=$(for i in $(seq $reps); do timeout 120 "${runsc_cmd[@]}" "$work/percall" read4k "$n" "$bb" </dev/null | cat; done | median)
fi
ring_stats=$("$vmm" --stats --syscall-path ring -- "$work/percall" getppid "$n" 2>&1 >/dev/null | grep ' exits, ')
ring_exits=$(echo "$ring_stats" | sed -n 's/.*stats: \([0-9]*\) exits, \([0-9]*\) system calls.*/\1 \2/p')
first_ms() { "$work/launch" "$vmm" "$@" --stats -- "$bb" true 2>&1 | sed -n 's/.*first guest instruction \([0-9.]*\) ms/\1/p'; }
: >"$work/lj"; : >"$work/lnj"
for i in $(seq 21); do first_ms >>"$work/lj"; first_ms --no-jail >>"$work/lnj"; done
launch_j=$(median <"$work/lj")
launch_nj=$(median <"$work/lnj")
mem_line=$("$vmm" --stats -- "$bb" sh -c 'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done' 2>&1 | grep 'resident memory')
overhead_kib=$(echo "$mem_line" | sed -n 's/.*VMM overhead \([0-9]*\) KiB.*/\1/p')

echo "# dmvx foundation benchmark"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cpus, kernel $(uname -r); $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "iterations: $n per loop, median of $reps runs"
echo
printf "| %-52s | %12s | %s |\n" "measure" "value" "ratio"
printf "|%s|%s|%s|\n" "------------------------------------------------------" "--------------" "-------------------------"
printf "| %-52s | %9.1f us | %s |\n" "floor: bare exit round trip, guest at CPL3" "$(awk -v x="$floor3" 'BEGIN{print x/1000}')" "1.00 (baseline)"
printf "| %-52s | %9.1f us | %s x CPL3 floor |\n" "floor: bare exit round trip, guest at CPL0" "$(awk -v x="$floor0" 'BEGIN{print x/1000}')" "$(ratio "$floor0" "$floor3")"
printf "| %-52s | %9.1f us | %s x CPL3 floor (target <= 1.3) |\n" "trapped system call (getppid loop in the VM)" "$(awk -v x="$trapped" 'BEGIN{print x/1000}')" "$(ratio "$trapped" "$floor3")"
printf "| %-52s | %9.3f us | trapped = %s x native |\n" "native getppid" "$(awk -v x="$native" 'BEGIN{print x/1000}')" "$(ratio "$trapped" "$native")"
printf "| %-52s | %9.2f ms | target <= 5 ms |\n" "launch to first guest instruction (median of 21)" "$launch"
printf "| %-52s | %9.2f ms | %s x native |\n" "busybox true, whole run in the VM (mean of $runs)" "$vm_true" "$(ratio "$vm_true" "$nat_true")"
printf "| %-52s | %9.2f ms | 1.00 |\n" "busybox true, native (mean of $runs)" "$nat_true"
printf "| %-52s | %8s KiB | target <= 5120 KiB |\n" "VMM resident memory beyond guest pages in use" "$overhead_kib"
printf "| %-52s | %9.2f ms | %s x without the jail |\n" "launch to first instruction, jailed (median of 21)" "$launch_j" "$(ratio "$launch_j" "$launch_nj")"
printf "| %-52s | %9.2f ms | 1.00 |\n" "launch to first instruction, --no-jail" "$launch_nj"
printf "| %-52s | %9.1f us | %s x without the jail |\n" "trapped getppid, jailed" "$(awk -v x="$trapped_j" 'BEGIN{print x/1000}')" "$(ratio "$trapped_j" "$trapped_nj")"
printf "| %-52s | %9.1f us | 1.00 |\n" "trapped getppid, --no-jail" "$(awk -v x="$trapped_nj" 'BEGIN{print x/1000}')"
printf "| %-52s | %9.1f us | %s x without the jail |\n" "open+close of /bin/sh, jailed" "$(awk -v x="$open_j" 'BEGIN{print x/1000}')" "$(ratio "$open_j" "$open_nj")"
printf "| %-52s | %9.1f us | 1.00 |\n" "open+close of /bin/sh, --no-jail" "$(awk -v x="$open_nj" 'BEGIN{print x/1000}')"
printf "| %-52s | %9.1f us | %s x native |\n" "getppid, --syscall-path exit" "$(awk -v x="$ppid_exit" 'BEGIN{print x/1000}')" "$(ratio "$ppid_exit" "$native")"
printf "| %-52s | %9.2f us | %s x native (target <= 20); %s x faster than exit |\n" "getppid, --syscall-path ring" "$(awk -v x="$ppid_ring" 'BEGIN{print x/1000}')" "$(ratio "$ppid_ring" "$native")" "$(ratio "$ppid_exit" "$ppid_ring")"
printf "| %-52s | %9.3f us | 1.00 |\n" "native 4 KiB pread of $bb" "$(awk -v x="$native_rd" 'BEGIN{print x/1000}')"
printf "| %-52s | %9.1f us | %s x native |\n" "4 KiB pread, --syscall-path exit" "$(awk -v x="$rd_exit" 'BEGIN{print x/1000}')" "$(ratio "$rd_exit" "$native_rd")"
printf "| %-52s | %9.2f us | %s x native (target <= 20); %s x faster than exit |\n" "4 KiB pread, --syscall-path ring" "$(awk -v x="$rd_ring" 'BEGIN{print x/1000}')" "$(ratio "$rd_ring" "$native_rd")" "$(ratio "$rd_exit" "$rd_ring")"
printf "| %-52s | %12s | %s |\n" "ring: exits / system calls of a getppid loop" "${ring_exits/ / \/ }" "(exit path: one exit per call)"
if [ -z "$runsc_skip" ]; then
    printf "| %-52s | %9.2f us | %s x native; %s x the ring's time, %s x the exit path's |\n" "getppid, runsc --platform=ptrace (gVisor)" "$(awk -v x="$runsc_ppid" 'BEGIN{print x/1000}')" "$(ratio "$runsc_ppid" "$native")" "$(ratio "$runsc_ppid" "$ppid_ring")" "$(ratio "$runsc_ppid" "$ppid_exit")"
    printf "| %-52s | %9.2f us | %s x native; %s x the ring's time, %s x the exit path's |\n" "4 KiB pread, runsc --platform=ptrace (gVisor)" "$(awk -v x="$runsc_rd" 'BEGIN{print x/1000}')" "$(ratio "$runsc_rd" "$native_rd")" "$(ratio "$runsc_rd" "$rd_ring")" "$(ratio "$runsc_rd" "$rd_exit")"
fi
echo
echo "($mem_line)"
if [ -n "$runsc_skip" ]; then
    echo "(runsc rows skipped: $runsc_skip)"
fi
