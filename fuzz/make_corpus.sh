#!/bin/sh
# Builds the seed corpus for the `decode` fuzz target from the shared captures.
# Usage (from the package root): fuzz/make_corpus.sh [PCAPS_DIR]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pcaps=${1:-$root/tests/data/pcaps}
cargo run --quiet --release --manifest-path "$root/fuzz/Cargo.toml" --bin make-corpus -- \
  "$pcaps" "$root/fuzz/corpus/decode"
