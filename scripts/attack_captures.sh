#!/usr/bin/env bash
# The "Public attack captures" table of docs/detection.md: every capture of
# tests/data/attacks injected at 900 s into 20 minutes of the deployment background
# (`synth --preset background --inject FILE@900`), replayed with the default
# configuration, one row per capture and background seed. Runs the test
# `tests/detection.rs public_captures::mixed_into_background` and prints its table.
#
#   scripts/attack_captures.sh                    # seeds 1,2; addresses remapped
#   SEEDS=1-5 scripts/attack_captures.sh          # more background seeds
#   ADDRESSES=keep scripts/attack_captures.sh     # the captures' own addresses
#   CONFIG=path.toml scripts/attack_captures.sh   # another configuration file
#
# The test requires what is detected today (CAPTURES in tests/detection.rs) and at most
# one false alert per hour of background; the table is printed even when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(mktemp)
trap 'rm -f "$table"' EXIT
if [ -n "${CONFIG:-}" ] && [ ! -f "$CONFIG" ]; then
  echo "scripts/attack_captures.sh: CONFIG=$CONFIG: no such file" >&2
  exit 2
fi
rc=0
STREAMML_PUBLIC_SEEDS=${SEEDS:-1,2} STREAMML_INJECT_ADDRESSES=${ADDRESSES:-remap} \
  STREAMML_PUBLIC_CONFIG=${CONFIG:+$(realpath "$CONFIG")} STREAMML_PUBLIC_TABLE="$table" \
  cargo test --release --test detection public_captures::mixed_into_background -- --nocapture >&2 || rc=$?
cat "$table"
exit "$rc"
