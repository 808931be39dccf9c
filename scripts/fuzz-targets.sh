#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (libFuzzer, AddressSanitizer) on the
# VMM's and the sync crate's parsers of untrusted bytes:
#   elf           the ELF parser (vmm/src/elf.rs)
#   bzimage       Linux kernel detection and loading (vmm/src/linux/boot.rs)
#   cluster_file  the cluster file (dmvx_sync::config)
#   record        event records and shipped entries (dmvx_sync::record)
#   frames        the link's messages, batches, frames and handshake messages
#
#   scripts/fuzz-targets.sh [TARGET|all] [SECONDS per target, default 60]
#
# Needs a nightly toolchain (libFuzzer's instrumentation is nightly-only):
# exits 2 if `cargo +nightly` is unavailable. Installs cargo-fuzz if it is
# missing. The corpus starts from seeds the stable tests write (valid
# inputs) and is kept in fuzz/corpus/TARGET; crashes go to
# fuzz/artifacts/TARGET, with the command that reproduces them. The same
# entry functions run on stable in sync/tests/fuzz_entries.rs and
# vmm/tests/fuzz_entries.rs (part of the normal test suite).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
all=(elf bzimage cluster_file record frames)
which="${1:-all}" seconds="${2:-60}"
if [ "$which" = all ]; then
    targets=("${all[@]}")
elif [[ " ${all[*]} " == *" $which "* ]]; then
    targets=("$which")
else
    echo "unknown target '$which'; one of: ${all[*]} (or all)" >&2
    exit 1
fi
if ! cargo +nightly --version > /dev/null 2>&1; then
    echo "fuzz-targets.sh: needs a nightly Rust toolchain (cargo +nightly), which is not installed." >&2
    echo "  install it with: rustup toolchain install nightly" >&2
    echo "  (the same entry functions run on stable: cargo test --release -p dmvx-sync --test fuzz_entries;" >&2
    echo "   cargo test --release -p dmvx-vmm --test fuzz_entries)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
cd "$root"
# Valid inputs to start from, written by the stable tests.
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
DMVX_WRITE_FUZZ_SEEDS="$seeds" cargo test --release -q -p dmvx-sync --test fuzz_entries write_seeds > /dev/null
DMVX_WRITE_FUZZ_SEEDS="$seeds" cargo test --release -q -p dmvx-vmm --test fuzz_entries write_seeds > /dev/null
cd "$root/fuzz"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    for f in "$seeds/$t"/*; do
        [ -e "corpus/$t/${f##*/}" ] || cp "$f" "corpus/$t/"
    done
    echo "== $t: ${seconds}s"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536
done
echo "fuzz-targets.sh: no crash in ${targets[*]}"
