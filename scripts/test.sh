#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, checks formatting and
# lints, then builds and runs every test (unit, integration with real captures, golden
# parity, live AF_XDP tests in private network namespaces) and compiles the benchmarks.
#
# The live tests need root and network namespaces. Where they cannot run, this fails with
# one line saying why, unless STREAMML_SKIP_LIVE=1 opts out (the summary then says what
# was skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

LIVE_TESTS=(live live_warm fallbacks doctor service bench)
skip_live=${STREAMML_SKIP_LIVE:-0}
if [ "$skip_live" != 1 ]; then
  why=""
  if [ "$(id -u)" -ne 0 ]; then
    why="not running as root"
  elif ! command -v ip >/dev/null; then
    why="the ip command (iproute2) is missing"
  else
    probe="smlt-probe-$$"
    if ! err=$(ip netns add "$probe" 2>&1); then
      why="cannot create a network namespace: $err"
    else
      ip netns del "$probe"
    fi
  fi
  if [ -n "$why" ]; then
    echo "scripts/test.sh: the live tests cannot run here: $why (run as root, or set STREAMML_SKIP_LIVE=1 to skip them)" >&2
    exit 1
  fi
fi

t0=$(date +%s)
echo "== cargo fmt --check" >&2
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test --release --all-targets" >&2
# Benchmarks are compiled and run once each as tests (criterion's --test mode).
cargo test --release --all-targets
echo "== summary: all tests passed in $(( $(date +%s) - t0 )) s" >&2
if [ "$skip_live" = 1 ]; then
  echo "== SKIPPED (STREAMML_SKIP_LIVE=1): the live tests in ${LIVE_TESTS[*]/%/.rs} did not run" >&2
fi
