#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then builds and runs
# every test (unit, integration with real captures, golden parity, live AF_XDP tests in
# private network namespaces — these need root) and compiles the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Benchmarks are compiled and run once each as tests (criterion's --test mode).
cargo test --release --all-targets
