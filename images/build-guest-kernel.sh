#!/usr/bin/env bash
# Builds the dmvx guest kernel (guest/kernel) as a freestanding ELF file,
# the same image dmvx-vmm embeds, for use with `dmvx-vmm --kernel FILE`.
# Output: images/out/dmvx-guest.elf and its sha256 in images/out/dmvx-guest.elf.sha256.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/images/out"
mkdir -p "$out"
(cd "$root/guest/kernel" && cargo build --release --locked --target-dir "$root/target/guest-kernel")
cp "$root/target/guest-kernel/x86_64-unknown-linux-gnu/release/dmvx-guest" "$out/dmvx-guest.elf"
(cd "$out" && sha256sum dmvx-guest.elf > dmvx-guest.elf.sha256)
echo "built $out/dmvx-guest.elf"
cat "$out/dmvx-guest.elf.sha256"
