#!/usr/bin/env bash
# Whole-pipeline cost of detection and evidence, side by side on one capture:
#   flows   streamml-sensor flows --shards 1 -o FILE
#           (flow meter alone: read, decode, shard, flow table, CSV of every flow, written
#           to FILE.tmp, fsync'd, renamed)
#   replay  streamml-sensor replay --shards 1 --state-dir DIR
#           (the same, plus the evidence ring (every frame copied into a 256 MiB mmap
#           file), window and flow features, Half-Space Trees on every window and every
#           flow, thresholds, alerts and evidence files; no flow CSV)
#   replay+csv  replay with --flows FILE (the same flow output as `flows`, too)
# The runs are interleaved (flows, replay, replay+csv, flows, ...) so that load from other
# processes hits all of them alike; per command the best wall time of RUNS and its CPU time
# (user + system) are kept. Prints packets/s and replay / flows (target >= 0.70).
#
# Usage: benches/replay_compare.sh [OUTDIR]
#   env: CAPTURE=file.pcap (default: the bench capture, `synth --preset bench`, 1M packets)
#        SEED=1 RUNS=5 CONFIG=file.toml (default: the embedded config)
#        BASE_BIN=path: another build (e.g. an earlier commit): its flows and replay runs
#        are interleaved with this build's and shown as flows_base and replay_base
# The state directory is OUTDIR/state (on the file system of OUTDIR, default bench-out/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out}
SEED=${SEED:-1}
RUNS=${RUNS:-5}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/streamml-sensor
CAP=${CAPTURE:-$OUT/bench-$SEED.pcap}
[ -s "$CAP" ] || "$BIN" synth --preset bench --seed "$SEED" -o "$CAP" 2> /dev/null
CFG=()
[ -n "${CONFIG:-}" ] && CFG=(--config "$CONFIG")
cat "$CAP" > /dev/null # warm the page cache

declare -A BEST CPU
# run NAME CMD...: one timed run; keeps the best wall time and that run's CPU time.
run() {
  local name=$1
  shift
  /usr/bin/time -f "%e %U %S" -o "$OUT/.t" "$@" > /dev/null 2> "$OUT/.$name.err" ||
    { echo "FAILED: $*" >&2; cat "$OUT/.$name.err" >&2; exit 1; }
  read -r e u s < "$OUT/.t"
  if [ -z "${BEST[$name]:-}" ] || awk "BEGIN{exit !($e < ${BEST[$name]})}"; then
    BEST[$name]=$e
    CPU[$name]=$(awk "BEGIN{print $u + $s}")
  fi
}

for _ in $(seq "$RUNS"); do
  run flows "$BIN" flows "$CAP" --shards 1 -o "$OUT/flows.csv"
  rm -rf "$OUT/state"
  run replay "$BIN" replay "$CAP" --shards 1 --state-dir "$OUT/state" "${CFG[@]}" --stats-json "$OUT/replay-stats.json"
  rm -rf "$OUT/state"
  run replay+csv "$BIN" replay "$CAP" --shards 1 --state-dir "$OUT/state" "${CFG[@]}" --flows "$OUT/replay-flows.csv"
  if [ -n "${BASE_BIN:-}" ]; then
    run flows_base "$BASE_BIN" flows "$CAP" --shards 1 -o "$OUT/flows_base.csv"
    rm -rf "$OUT/state"
    run replay_base "$BASE_BIN" replay "$CAP" --shards 1 --state-dir "$OUT/state" "${CFG[@]}"
  fi
  rm -rf "$OUT/state"
done
COMMANDS="flows replay replay+csv"
[ -n "${BASE_BIN:-}" ] && COMMANDS="$COMMANDS flows_base replay_base"

N=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["reader.frames"])' "$OUT/replay-stats.json")
ALERTS=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["detect.alerts"], d["detect.windows_scored"], d["detect.flows_scored"])' "$OUT/replay-stats.json")
echo "capture: $CAP ($N packets); replay scored: alerts windows flows = $ALERTS; best of $RUNS, interleaved"
printf "%-11s %9s %12s %9s %14s %9s\n" command wall_s packets/s cpu_s packets/cpu_s vs_flows
for k in $COMMANDS; do
  awk -v k="$k" -v t="${BEST[$k]}" -v c="${CPU[$k]}" -v n="$N" -v f="${BEST[flows]}" \
    'BEGIN{ if (t<=0) t=0.001; if (c<=0) c=0.001; printf "%-11s %9.3f %12.0f %9.3f %14.0f %9.2f\n", k, t, n/t, c, n/c, f/t }'
done
