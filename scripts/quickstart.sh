#!/usr/bin/env bash
# Quick start: the sensor's main job, live capture, on a private veth pair.
#
# Installs what is missing, builds, creates two private network namespaces joined by a
# veth pair (2 queues, addresses from 198.18.0.0/15 only), starts the live sensor on one
# end with the embedded default configuration (plus --idle-timeout 1, so that flows end and
# are scored within the demo, and --ring-mib 64), drives streamml-pktgen from the other
# end: benign UDP (12000 flows of 6 packets, enough for the "flows" profile's trees and quantile
# threshold to warm up), then one injected attack (a bulk transfer to port 443: one flow of
# 3000 full-size packets, an exfiltration). Prints the alerts with their evidence files and
# how to open them with tshark/Wireshark, stops the sensor and removes the namespaces
# (which removes the veth pair and any XDP program) — also on Ctrl-C or an error.
#
# Needs root for the namespaces (uses sudo when run as a user). Environment:
#   STREAMML_DEMO_DIR  where the state directory and logs go [a new /tmp/streamml-demo.*]
#   STREAMML_BIN_DIR   use streamml-sensor and streamml-pktgen from there (skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

STREAMML_SKIP_VENV=1 bash scripts/deps.sh
if [ -n "${STREAMML_BIN_DIR:-}" ]; then
  BIN_DIR=$(cd "$STREAMML_BIN_DIR" && pwd)
else
  cargo build --release --quiet --bin streamml-sensor --bin streamml-pktgen
  BIN_DIR=$PWD/target/release
fi
SENSOR=$BIN_DIR/streamml-sensor
PKTGEN=$BIN_DIR/streamml-pktgen
WORK=${STREAMML_DEMO_DIR:-$(mktemp -d /tmp/streamml-demo.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
STATE=$WORK/state

NS_S=smlq$$s
NS_P=smlq$$p
IF_S=demo0
IF_P=peer0
ADDR_S=198.19.0.1
ADDR_P=198.18.0.1
SENSOR_PID=""

# Running and not a zombie (works on root's processes too when run as a user with sudo).
alive() {
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"
}

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$SENSOR_PID" ] && alive "$SENSOR_PID"; then
    $SUDO kill -TERM "$SENSOR_PID" 2>/dev/null || true
    for _ in $(seq 150); do alive "$SENSOR_PID" || break; sleep 0.1; done
    $SUDO kill -KILL "$SENSOR_PID" 2>/dev/null || true
  fi
  # Deleting a namespace deletes its end of the veth pair, the pair, and its XDP program.
  $SUDO ip netns del "$NS_S" 2>/dev/null || true
  $SUDO ip netns del "$NS_P" 2>/dev/null || true
}
trap 'cleanup' EXIT
trap 'echo "quickstart: interrupted, cleaning up" >&2; cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

echo "== namespaces $NS_S (sensor, $IF_S $ADDR_S) and $NS_P (generator, $IF_P $ADDR_P)"
$SUDO ip netns add "$NS_S"
$SUDO ip netns add "$NS_P"
for ns in "$NS_S" "$NS_P"; do
  $SUDO ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
$SUDO ip link add "$IF_S" numrxqueues 2 numtxqueues 2 netns "$NS_S" type veth \
  peer name "$IF_P" numrxqueues 2 numtxqueues 2 netns "$NS_P"
$SUDO ip -n "$NS_S" addr add "$ADDR_S/15" dev "$IF_S"
$SUDO ip -n "$NS_P" addr add "$ADDR_P/15" dev "$IF_P"
$SUDO ip -n "$NS_S" link set "$IF_S" up
$SUDO ip -n "$NS_P" link set "$IF_P" up
MAC_S=$($SUDO ip netns exec "$NS_S" cat "/sys/class/net/$IF_S/address")

echo "== live sensor on $IF_S: embedded default configuration, --idle-timeout 1 --ring-mib 64"
: > "$WORK/sensor.log"
$SUDO ip netns exec "$NS_S" "$SENSOR" --iface "$IF_S" --state-dir "$STATE" \
  --stats-json "$WORK/stats.json" --idle-timeout 1 --ring-mib 64 --no-pin \
  --report-interval 0 2> "$WORK/sensor.log" &
SENSOR_PID=$!
for _ in $(seq 300); do
  grep -q "capturing on" "$WORK/sensor.log" && break
  alive "$SENSOR_PID" || { cat "$WORK/sensor.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "capturing on" "$WORK/sensor.log" || { echo "quickstart: the sensor did not start" >&2; cat "$WORK/sensor.log" >&2; exit 1; }
grep "capturing on" "$WORK/sensor.log"

pktgen() {
  $SUDO ip netns exec "$NS_P" "$PKTGEN" --iface "$IF_P" --dst-mac "$MAC_S" --dst "$ADDR_S" --duration 30 "$@"
}
echo "== benign traffic: 12000 UDP flows of 6 packets from $ADDR_P and 198.18.0.2, 2 s"
pktgen --queues 0,1 --src "$ADDR_P" --flows 6000 --count 36000 --pps 18000
# Every benign flow ends (idle for 1 s) and is scored: the trees and the threshold are warm.
sleep 3
echo "== attack: a bulk transfer to $ADDR_S:443, one flow of 3000 packets of 1400 bytes"
pktgen --queues 0 --src 198.18.7.7 --flows 1 --dport 443 --count 3000 --size 1400 --pps 3000

echo "== waiting for the alert and its evidence (the flow ends 1 s after its last packet; the evidence is written 2 s later)"
ALERTS=$STATE/alerts.jsonl
for _ in $(seq 300); do
  if [ -s "$ALERTS" ] && jq -e 'select(.evidence.path != null)' "$ALERTS" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
$SUDO kill -TERM "$SENSOR_PID"
wait "$SENSOR_PID" || true
SENSOR_PID=""
grep "summary:" "$WORK/sensor.log" || true

echo
echo "alerts ($ALERTS):"
if ! [ -s "$ALERTS" ]; then
  echo "quickstart: no alert (sensor log: $WORK/sensor.log)" >&2
  exit 1
fi
jq -c '{timestamp, profile: .anomaly.profile, mode: .anomaly.mode, score: (.anomaly.score*1000|round/1000),
        flow: "\(.src_ip):\(.src_port) -> \(.dest_ip):\(.dest_port) \(.proto)",
        why: [.anomaly.top_features[].name], evidence: .evidence.path, packets: .evidence.packets}' "$ALERTS"
echo
echo "evidence files:"
jq -r 'select(.evidence.path != null) | .evidence.path' "$ALERTS" | while read -r p; do
  echo "  $STATE/$p"
done
first=$(jq -r 'select(.evidence.path != null) | .evidence.path' "$ALERTS" | head -1)
echo
echo "open one with tshark (or: zstd -d FILE, then wireshark FILE.pcap):"
echo "  zstd -dc $STATE/$first | tshark -r - | head"
