#!/usr/bin/env bash
# The long run of the guest system-call fuzzer (tests/programs/fuzz.c):
# SEEDS seeds (default 200) of BATCHES batches of CALLS random calls, in 1
# and 2 variants, in a writable scratch root. Stops at the first VMM panic
# or change beside the root, and says which seed.
#   scripts/fuzz.sh [SEEDS] [BATCHES] [CALLS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seeds="${1:-200}" batches="${2:-20}" calls="${3:-500}"
cd "$root"
cargo build --release --workspace -q
vmm="$root/target/release/dmvx-vmm"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/reports"
gcc -O1 -Wall -static -o "$work/root/bin/fuzz" tests/programs/fuzz.c
echo "outside the root" > "$work/sentinel"
chmod 600 "$work/sentinel"
state() { (cd "$work" && stat -c '%n %a %u %h %s' sentinel && sha256sum sentinel); }
want="$(state)"
for seed in $(seq 1 "$seeds"); do
    for n in 1 2; do
        set +e
        "$vmm" --variants "$n" --report-dir "$work/reports" --rootfs "$work/root" -- \
            /bin/fuzz "$seed" "$batches" "$calls" > "$work/out" 2> "$work/err" < /dev/null
        status=$?
        set -e
        if grep -q panicked "$work/err"; then
            echo "seed $seed, $n variants: the VMM panicked"; cat "$work/err"; exit 1
        fi
        if [ "$status" != 0 ] && ! { [ "$n" = 2 ] && [ "$status" = 121 ]; }; then
            echo "seed $seed, $n variants: status $status"; tail -20 "$work/err"; exit 1
        fi
        if [ "$(state)" != "$want" ]; then
            echo "seed $seed, $n variants: the file beside the root changed"; exit 1
        fi
    done
    echo "seed $seed: ok"
done
echo "fuzz: $seeds seeds in 1 and 2 variants, no panic, nothing beside the root changed"
