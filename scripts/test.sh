#!/usr/bin/env bash
# Builds everything and runs every test: unit tests and the end-to-end tests
# (real programs in real KVM microVMs). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "*** WARNING: /dev/kvm is absent or not usable: every test that needs KVM will be SKIPPED (and say so) ***" >&2
fi
cargo build --release --workspace --locked
cargo test --release --workspace --locked --no-fail-fast "$@"
