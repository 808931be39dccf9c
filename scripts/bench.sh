#!/usr/bin/env bash
# The dmvx benchmarks: sets up what they need (Debian packages, a release
# build, the lighttpd and nginx images), then runs scripts/bench.py, which
# writes docs/benchmarks.md and docs/benchmarks.png. Runs as root (network
# namespaces, chroot). Takes some 10 minutes.
#   scripts/bench.sh [--seconds N] [--quick] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "$(id -u)" != 0 ]; then
    echo "bench: run as root (network namespaces, chroot)" >&2
    exit 1
fi
if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "bench: /dev/kvm is missing or not accessible; dmvx needs KVM" >&2
    exit 1
fi
scripts/setup-host.sh --bench || {
    echo "bench: setting up the host failed (see above)" >&2
    exit 1
}
cargo build --release --workspace --locked -q
images/build-rootfs.sh lighttpd >/dev/null
images/build-rootfs.sh nginx >/dev/null
work="$(mktemp -d /tmp/dmvx-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
gcc -O2 -static -o "$work/percall" scripts/bench/percall.c
gcc -O2 -o "$work/launch" scripts/bench/launch.c
# Debian's python3, which has python3-matplotlib (not a pyenv one first on PATH).
/usr/bin/python3 scripts/bench.py --work "$work" --images images/out "$@"
# Processes: its own section of docs/benchmarks.md (kept when bench.py rewrites the rest).
/usr/bin/python3 scripts/bench_procs.py $(printf '%s\n' "$@" | grep -qx -- --quick && echo --quick)
