#!/usr/bin/env bash
# Replay wall time without and with each fleet sink, alternating (docs/fleet.md "Cost").
# Usage: ROUNDS=9 benches/fleet_compare.sh [BENCH.pcap]   (synth --preset bench makes one)
# Starts nfcapd on a loopback port (killed at exit, by PID); NATS points at a closed port.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-target/release/streamml-sensor}
CAP=${1:-/tmp/bench.pcap}
PCAPS=${STREAMML_PCAPS:-tests/data/pcaps}
W=$(mktemp -d)
nfcapd -b 127.0.0.1 -p 42790 -w "$W" -t 3600 -B 8388608 >/dev/null 2>&1 & NF=$!
trap 'kill $NF 2>/dev/null; rm -rf "$W"' EXIT
profile='[[profile]]
name = "every-flow"
mode = "flow"
[profile.hst]
n_trees = 5
height = 4
window_size = 1
[profile.threshold]
fixed = 0.0
require_out_of_range = false
cooldown_s = 0
[profile.evidence]
pre_s = 0
post_s = 0'
printf '[evidence]\nring_mib = 8\n%s\n' "$profile" > "$W/none.toml"
printf '[evidence]\nring_mib = 8\n[nats]\nserver = "nats://127.0.0.1:1"\nspool_max_bytes = 16384\ndrain_timeout_s = 0\n%s\n' "$profile" > "$W/nats.toml"
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
for i in $(seq "${ROUNDS:-9}"); do
  rm -rf "$W"/s?
  a=$(t "$B" replay "$CAP" --state-dir "$W/s1" --ring-mib 64 --shards 1)
  b=$(t "$B" replay "$CAP" --state-dir "$W/s2" --ring-mib 64 --shards 1 --ipfix 127.0.0.1:42790)
  c=$(t "$B" replay "$PCAPS/large/1kxun.pcap" --config "$W/none.toml" --state-dir "$W/s3")
  d=$(t "$B" replay "$PCAPS/large/1kxun.pcap" --config "$W/nats.toml" --state-dir "$W/s4")
  echo "round $i: replay $a s, with --ipfix $b s (ratio $(echo "scale=2; $b / $a" | bc)); 1kxun $c s, with NATS spool $d s (ratio $(echo "scale=2; $d / $c" | bc))"
done
