#!/usr/bin/env bash
# Builds everything and runs every test: unit tests and the end-to-end tests
# (real programs in real KVM microVMs). Sets up first: scripts/setup-host.sh
# installs the Debian packages the tests need (as root; only a check when
# they are there). Extra arguments go to `cargo test`.
#   scripts/test.sh [--setup-only | CARGO-TEST-ARGS...]
#     --setup-only   set up and build, run no test
set -euo pipefail
cd "$(dirname "$0")/.."
setup_only=0
if [ "${1:-}" = "--setup-only" ]; then
    setup_only=1
    shift
fi
scripts/setup-host.sh || {
    echo "test: setting up the host failed (see above); the tests need those packages" >&2
    exit 1
}
if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "*** WARNING: /dev/kvm is absent or not usable: every test that needs KVM will be SKIPPED (and say so) ***" >&2
fi
cargo build --release --workspace --locked
[ "$setup_only" = 1 ] && exit 0
cargo test --release --workspace --locked --no-fail-fast "$@"
