#!/usr/bin/env bash
# One command, one machine, one run: how the sensor compares, as one table of ratios.
#   1. bench --synthetic, 64-byte frames and IMIX, detection on (the default
#      configuration): the pipeline's ceiling per scorer core, no NIC
#   2. bench --generate --search: the zero-loss rate on a private 2-queue veth
#   3. on the same kind of veth, with the same generator: a bare XDP_DROP program at the
#      generator's maximum (the ceiling), and XDP_DROP and tcpdump at the zero-loss rate
#      (benches/live_capture.sh)
#   4. flows vs nfstream and softflowd on the 1M-packet bench capture
#      (benches/flows_compare.sh)
#   5. Half-Space Trees vs River (cargo bench --bench hst, scripts/river_hst_bench.py)
# Prints the table and writes it as Markdown to OUTDIR/compare.md (for the README).
# Needs root (namespaces, XDP). Everything it creates is bounded in time and deleted.
# Usage: sudo benches/compare.sh [OUTDIR]
#   env: DURATION=10 (synthetic seconds) TRIAL=2 (search trial seconds) MAX_TRIALS=8
#        LIVE_DURATION=4 SKIP_FLOWS=0 SKIP_HST=0 BUILD=1 NICE=0
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out}
DURATION=${DURATION:-10}
TRIAL=${TRIAL:-2}
MAX_TRIALS=${MAX_TRIALS:-8}
LIVE_DURATION=${LIVE_DURATION:-4}
VENV=${STREAMML_VENV:-/opt/streamml-venv}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "compare.sh: needs root (namespaces, XDP)" >&2; exit 2; }
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet
fi
BIN=target/release/streamml-sensor
STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT
jqn() { jq -r "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
mpps() { awk -v a="$1" 'BEGIN {printf "%.2f Mpps", a / 1e6}'; }

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# compare.sh: $(nproc) cores ($(awk -F: '/model name/ {sub(/^ /, "", $2); print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load average $LOAD0" >&2

echo "# 1. bench --synthetic" >&2
"$BIN" bench --synthetic --size 64 --duration "$DURATION" --state-dir "$STATE/syn64" \
  --status plain --json "$OUT/synthetic64.json" >"$OUT/synthetic64.txt"
"$BIN" bench --synthetic --size imix --duration "$DURATION" --state-dir "$STATE/synimix" \
  --status plain --json "$OUT/synthetic_imix.json" >"$OUT/synthetic_imix.txt"
SYN64=$(jqn .pps_per_scorer_core "$OUT/synthetic64.json")
SYN64_SHARDS=$(jqn '.shards | length' "$OUT/synthetic64.json")
SYNIMIX=$(jqn .pps_per_scorer_core "$OUT/synthetic_imix.json")
SYNIMIX_BPS=$(jqn .received_bps "$OUT/synthetic_imix.json")
SCORER_NS=$(jqn .latency.scorer_per_packet.p50_ns "$OUT/synthetic64.json")
SYN64_CPU=$(jqn .pps_per_scorer_cpu_second "$OUT/synthetic64.json")
SYNIMIX_CPU=$(jqn .pps_per_scorer_cpu_second "$OUT/synthetic_imix.json")

echo "# 2. bench --generate --search" >&2
"$BIN" bench --generate --search --queues 2 --trial "$TRIAL" --max-trials "$MAX_TRIALS" \
  --state-dir "$STATE/gen" --status plain --json "$OUT/generate.json" --plot "$OUT/generate.svg" \
  >"$OUT/generate.txt"
ZL=$(jqn .zero_loss_pps "$OUT/generate.json")
GEN_SCORER_CPU=$(jqn .pps_per_scorer_cpu_second "$OUT/generate.json")
GEN_READER_CPU=$(jqn .pps_per_reader_cpu_second "$OUT/generate.json")
GENMAX=$(jqn '.trials[0].offered_pps' "$OUT/generate.json")
# CPU seconds per million frames received, readers and scorers (for projecting a box)
FRAMES=$(jqn .received "$OUT/generate.json")
READER_S=$(jq -r '[.cpu_seconds | to_entries[] | select(.key | startswith("xsk-q")) | .value] | add // 0' "$OUT/generate.json")
SCORER_S=$(jq -r '[.cpu_seconds | to_entries[] | select(.key | startswith("scorer-")) | .value] | add // 0' "$OUT/generate.json")

echo "# 3. XDP_DROP and tcpdump on the veth (benches/live_capture.sh)" >&2
# live_capture.sh prints: receiver sent sent_pps received recv_pps ...
live() {  # PPS_PER_QUEUE RECEIVERS -> "receiver recv_pps" lines
  PPS=$1 RECEIVERS=$2 DURATION=$LIVE_DURATION QUEUES=2 BUILD=0 NICE=${NICE:-0} \
    bash benches/live_capture.sh 2>/dev/null | awk '$1 ~ /^(xdp_drop|tcpdump|sensor)$/ {print $1, $5}'
}
DROP_MAX=$(live 0 xdp_drop | awk '$1 == "xdp_drop" {print $2}')
ZLQ=$(awk -v z="$ZL" 'BEGIN {printf "%d", z / 2}')
AT_ZL=$(live "$ZLQ" "xdp_drop tcpdump")
DROP_ZL=$(echo "$AT_ZL" | awk '$1 == "xdp_drop" {print $2}')
TCPDUMP_ZL=$(echo "$AT_ZL" | awk '$1 == "tcpdump" {print $2}')

NFS="n/a" SFD="n/a"
if [ "${SKIP_FLOWS:-0}" != 1 ]; then
  echo "# 4. flows vs nfstream and softflowd (benches/flows_compare.sh)" >&2
  RUNS=1 bash benches/flows_compare.sh "$OUT/flows" >"$OUT/flows.txt" 2>/dev/null || true
  NFS=$(awk '$1 == "nfstream" {print $5}' "$OUT/flows.txt")
  SFD=$(awk '$1 == "softflowd" {print $5}' "$OUT/flows.txt")
fi

HST="n/a"
if [ "${SKIP_HST:-0}" != 1 ]; then
  echo "# 5. Half-Space Trees vs River" >&2
  cargo bench --quiet --bench hst -- 'hst_T10_h8_w250_d10/score_and_learn' >/dev/null 2>&1 || true
  "$VENV/bin/python" scripts/river_hst_bench.py --dims 10 --samples 50000 --repeat 2 \
    --criterion target/criterion >"$OUT/hst.txt" 2>/dev/null || true
  HST=$(grep -m1 'HST, x in' "$OUT/hst.txt" | grep -o '\*\*[0-9]*×\*\*' | tr -d '*' || true)
  HST=${HST:-n/a}
fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "Machine: $(nproc) vCPUs ($(awk -F: '/model name/ {sub(/^ /, "", $2); print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load average $LOAD0 at the start and $LOAD1 at the end; one run of \`sudo benches/compare.sh\`."
  echo
  echo "| what | result | ratio |"
  echo "|---|---|---|"
  echo "| \`bench --synthetic\`, 64 B frames, detection on (default config), per scorer core ($SYN64_SHARDS shard) | $(mpps "$SYN64") | $(ratio "$SYN64" 5000000) of the 5 Mpps target |"
  echo "| same, frames per CPU second of the scorer thread (a core to itself) | $(mpps "$SYN64_CPU") | $(ratio "$SYN64_CPU" 5000000) of the 5 Mpps target |"
  echo "| \`bench --synthetic\`, IMIX, per scorer core | $(mpps "$SYNIMIX") ($(awk -v b="$SYNIMIX_BPS" 'BEGIN {printf "%.2f Gbit/s", b / 1e9}')); $(mpps "$SYNIMIX_CPU") per scorer CPU second | |"
  echo "| scorer time per packet (p50, 64 B, synthetic) | ${SCORER_NS} ns | |"
  echo "| XDP_DROP on a 2-queue veth, streamml-pktgen at its maximum (the ceiling) | $(mpps "$DROP_MAX") | 1 |"
  echo "| \`bench --generate --search\`: zero-loss rate, 64 B, 2 queues, detection on | $(mpps "$ZL") | $(ratio "$ZL" "$DROP_MAX") of XDP_DROP (target 0.80) |"
  echo "| generator's maximum in the search's first trial | $(mpps "$GENMAX") | $(ratio "$GENMAX" "$DROP_MAX") of XDP_DROP's run |"
  echo "| XDP_DROP at the zero-loss rate | $(mpps "$DROP_ZL") | $(ratio "$DROP_ZL" "$ZL") of offered |"
  echo "| tcpdump -w /dev/null at the zero-loss rate | $(mpps "$TCPDUMP_ZL") | $(ratio "$TCPDUMP_ZL" "$ZL") of offered |"
  echo "| \`--generate\` frames per CPU second: scorer / readers (AF_XDP copy mode) | $(mpps "$GEN_SCORER_CPU") / $(mpps "$GEN_READER_CPU") | |"
  echo "| CPU per million frames in the search (all trials): readers / scorers | $(awk -v r="$READER_S" -v s="$SCORER_S" -v n="$FRAMES" 'BEGIN {if (n > 0) printf "%.2f s / %.2f s", r / n * 1e6, s / n * 1e6; else print "n/a"}') | |"
  echo "| \`flows\` vs nfstream 6.6 (1M packets, one shard) | | ${NFS}× faster |"
  echo "| \`flows\` vs softflowd | | ${SFD}× faster |"
  echo "| HST score+learn vs River 0.26.1 (T10 h8 w250 d10, CPU time) | | ${HST} faster |"
} | tee "$OUT/compare.md"
