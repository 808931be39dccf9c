#!/usr/bin/env bash
# The dmvx demo on this machine: sets up what it needs (Debian packages,
# a release build), then runs real Debian programs in dmvx microVMs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
    else
        echo "demo: please install: ${need[*]}" >&2
        exit 1
    fi
fi
if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "demo: /dev/kvm is missing or not accessible; dmvx needs KVM" >&2
    exit 1
fi
cargo build --release --workspace --locked -q
vmm="$root/target/release/dmvx-vmm"
echo "== Debian's busybox in dmvx microVMs (every system call trapped to the VMM):"
"$vmm" -- /bin/busybox uname -a
"$vmm" -- /bin/busybox ls -la /etc/apt
"$vmm" --stats -- /bin/busybox sha256sum /etc/os-release
echo "== the same sandbox refuses writes to the host (read-only root by default):"
"$vmm" -- /bin/busybox touch /etc/dmvx-was-here || echo "(refused, as it should be)"
