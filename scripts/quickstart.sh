#!/usr/bin/env bash
# Quick start: installs what is missing, builds the sensor, generates a labelled capture
# (20 minutes of benign traffic with a SYN flood, a port scan, a UDP flood and a slow
# exfiltration, all in 198.18.0.0/15) and runs the whole sensor pipeline over it with the
# default configuration: flows, windows, Half-Space Trees, alerts.jsonl and zstd PCAP
# evidence. Prints the summary, the alerts and where the evidence is.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMML_SKIP_VENV=1 bash scripts/deps.sh
cargo build --release --quiet
BIN=target/release/streamml-sensor
WORK=${STREAMML_DEMO_DIR:-$(mktemp -d /tmp/streamml-demo.XXXXXX)}
"$BIN" synth --preset labelled --minutes 20 --seed 7 -o "$WORK/demo.pcap" --labels "$WORK/demo.labels.json"
"$BIN" replay "$WORK/demo.pcap" --state-dir "$WORK/state" --flows "$WORK/flows.csv" --stats-json "$WORK/stats.json"
echo
echo "alerts ($WORK/state/alerts.jsonl):"
jq -c '{timestamp, profile: .anomaly.profile, mode: .anomaly.mode, score: (.anomaly.score*1000|round/1000),
        why: [.anomaly.top_features[].name], evidence: .evidence.path, packets: .evidence.packets}' \
   "$WORK/state/alerts.jsonl"
echo
echo "attack episodes in the capture ($WORK/demo.labels.json):"
jq -c '.episodes[] | {kind, start_s: (.start_s|round), duration_s}' "$WORK/demo.labels.json"
echo
echo "read an evidence file with: zstd -dc $WORK/state/evidence/<file>.pcap.zst | tshark -r -"
