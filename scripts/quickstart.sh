#!/usr/bin/env bash
# Quick start: installs what is missing, builds the sensor, generates a labelled capture
# (benign traffic with a SYN flood, a port scan, a UDP flood and a slow exfiltration) and
# runs the sensor's pipeline over it, printing a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMML_SKIP_VENV=1 bash scripts/deps.sh
cargo build --release --quiet
BIN=target/release/streamml-sensor
WORK=${STREAMML_DEMO_DIR:-$(mktemp -d /tmp/streamml-demo.XXXXXX)}
"$BIN" synth --preset labelled --minutes 20 --seed 7 -o "$WORK/demo.pcap" --labels "$WORK/demo.labels.json"
"$BIN" flows "$WORK/demo.pcap" -o "$WORK/flows.csv" --stats
echo "demo output in $WORK"
