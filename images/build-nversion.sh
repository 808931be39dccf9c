#!/usr/bin/env bash
# Builds one C program twice, with different compilers or flags, as two
# variants of an N-version cluster (dmvx-vmm --variant-program, or per-variant
# `program` digests in a cluster file; see docs/policy.md).
#
#   images/build-nversion.sh SRC.c OUTDIR    -> OUTDIR/NAME-a, OUTDIR/NAME-b,
#                                               OUTDIR/NAME.digests
#
# What differs between the builds: optimisation level, inlining, stack
# protector, PLT calls, control-flow protection, so code, gadgets and frame
# layouts differ (the default builds are non-PIE: their code sits at fixed
# addresses, which only a different build moves). What must stay equal for
# MVX to compare them: the system calls they make. So both builds link the
# same shared libraries in the same order and have the same RELRO and stack
# flags (the dynamic loader's mmap and mprotect calls follow from those), and
# nothing in the program may depend on addresses; the script checks the
# first two and refuses builds that differ there.
#
# Override with CC_A, CFLAGS_A, CC_B, CFLAGS_B (e.g. CC_B=clang if installed).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SRC.c OUTDIR" >&2; exit 2; }
src=$1
out=$2
name=$(basename "$src" .c)
CC_A=${CC_A:-gcc}
CC_B=${CC_B:-gcc}
CFLAGS_A=${CFLAGS_A:--O2 -fstack-protector-strong -fcf-protection=full -no-pie}
CFLAGS_B=${CFLAGS_B:--O1 -fno-inline -fno-stack-protector -fno-plt -fcf-protection=none -fno-omit-frame-pointer -no-pie}
mkdir -p "$out"
# shellcheck disable=SC2086  # the flags are word lists
"$CC_A" $CFLAGS_A -g0 -Wall -o "$out/$name-a" "$src"
# shellcheck disable=SC2086
"$CC_B" $CFLAGS_B -g0 -Wall -o "$out/$name-b" "$src"

# What the dynamic loader does must not differ: same libraries, same order.
needed() { readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
segs() { readelf -lW "$1" | awk '$1 == "GNU_RELRO" || $1 == "GNU_STACK" || $1 == "INTERP" { print $1, $NF }'; }
if [ "$(needed "$out/$name-a")" != "$(needed "$out/$name-b")" ]; then
    echo "$0: the builds link different libraries; their system calls would differ" >&2
    exit 1
fi
if [ "$(segs "$out/$name-a")" != "$(segs "$out/$name-b")" ]; then
    echo "$0: the builds differ in RELRO, stack or interpreter; their system calls would differ" >&2
    exit 1
fi
: >"$out/$name.digests"
for v in a b; do
    echo "$v sha256:$(sha256sum "$out/$name-$v" | cut -d' ' -f1)" >>"$out/$name.digests"
done
main_of() { nm "$1" | awk '$3 == "main" { print $1 }'; }
echo "$name-a: $CC_A $CFLAGS_A (main at 0x$(main_of "$out/$name-a"))"
echo "$name-b: $CC_B $CFLAGS_B (main at 0x$(main_of "$out/$name-b"))"
cat "$out/$name.digests"
