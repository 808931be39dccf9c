#!/bin/sh
# Runs tests/programs/threads.c ("all") N times (default 100) in 2 variants:
# every run must print what it prints natively, with no divergence.
set -eu
cd "$(dirname "$0")/.."
N=${1:-100}
cargo build --release --workspace
DMVX_THREAD_RUNS=$N cargo test --release -p dmvx --test threads two_variants_agree_run_after_run -- --nocapture
