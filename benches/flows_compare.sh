#!/usr/bin/env bash
# Flow-meter comparison on one deterministic synthetic capture (~1M packets, ~130k
# flows), all tools timed in the same run on the same machine:
#   streamml-sensor flows --shards 1   (all nfstream features)
#   nfstream 6.6                       (statistical_analysis=True, n_dissections=0)
#   softflowd                          (NetFlow v9 export to a loopback port)
#   tcpdump -r FILE -w /dev/null       (the bare read+write floor)
# Prints packets/s per tool and the sensor's speed-up over each.
# Usage: benches/flows_compare.sh [OUTDIR]   (env: SEED=1 RUNS=3 SKIP_NFSTREAM=0
#        BASE_BIN=path: another build of the sensor (e.g. an earlier commit), timed beside
#        this one, its runs interleaved with this build's; its output must be identical)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
VENV=${STREAMML_VENV:-/opt/streamml-venv}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/streamml-sensor
CAP="$OUT/bench-$SEED.pcap"
[ -s "$CAP" ] || "$BIN" synth --preset bench --seed "$SEED" -o "$CAP"
NPKT=$(capinfos -c -M "$CAP" | awk -F: '/Number of packets/ {gsub(/ /,"",$2); print $2}')
cat "$CAP" > /dev/null # warm the page cache

# best-of-RUNS wall time in seconds, and max RSS in KiB of the best run
timeit() {
  local best="" rss=""
  for _ in $(seq "$RUNS"); do
    rm -f "$OUT/sf.ctl" "$OUT/sf.pid" # softflowd hangs if its control socket is left over
    /usr/bin/time -f "%e %M" -o "$OUT/.t" timeout 900 "$@" > /dev/null 2>&1 || { echo "FAILED: $*" >&2; return 1; }
    read -r t m < "$OUT/.t"
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
  done
  echo "$best $rss"
}

declare -A T M
if [ -n "${BASE_BIN:-}" ]; then
  # interleaved: this build, the base build, this build, ... (best of RUNS each)
  bt="" bm="" st="" sm=""
  for _ in $(seq "$RUNS"); do
    read -r t m < <(RUNS=1 timeit "$BIN" flows "$CAP" --shards 1 -o "$OUT/sensor.csv")
    if [ -z "$st" ] || awk "BEGIN{exit !($t < $st)}"; then st=$t; sm=$m; fi
    read -r t m < <(RUNS=1 timeit "$BASE_BIN" flows "$CAP" --shards 1 -o "$OUT/sensor_base.csv")
    if [ -z "$bt" ] || awk "BEGIN{exit !($t < $bt)}"; then bt=$t; bm=$m; fi
  done
  T[sensor]=$st M[sensor]=$sm T[sensor_base]=$bt M[sensor_base]=$bm
  cmp -s "$OUT/sensor.csv" "$OUT/sensor_base.csv" || echo "WARNING: the base build's output differs" >&2
else
  read -r T[sensor] M[sensor] < <(timeit "$BIN" flows "$CAP" --shards 1 -o "$OUT/sensor.csv")
fi
read -r T[softflowd] M[softflowd] < <(timeit softflowd -d -r "$CAP" -n 127.0.0.1:9995 -v 9 -m 262144 -p "$OUT/sf.pid" -c none)
read -r T[tcpdump] M[tcpdump] < <(timeit tcpdump -r "$CAP" -w /dev/null)
if [ "${SKIP_NFSTREAM:-0}" != 1 ]; then
  cat > "$OUT/nfstream_run.py" <<'PY'
import sys
from nfstream import NFStreamer
NFStreamer(source=sys.argv[1], statistical_analysis=True, n_dissections=0,
           decode_tunnels=True, accounting_mode=0, n_meters=1).to_csv(path=sys.argv[2])
PY
  read -r T[nfstream] M[nfstream] < <(RUNS=1 timeit "$VENV/bin/python" "$OUT/nfstream_run.py" "$CAP" "$OUT/nfstream.csv")
fi

printf "capture: %s (%s packets, %s flows by the sensor)\n" "$CAP" "$NPKT" "$(($(wc -l < "$OUT/sensor.csv") - 1))"
printf "%-12s %10s %14s %10s %12s\n" tool seconds packets/s maxRSS_MiB sensor_x
for k in sensor sensor_base nfstream softflowd tcpdump; do
  [ -n "${T[$k]:-}" ] || continue
  awk -v k="$k" -v t="${T[$k]}" -v m="${M[$k]}" -v n="$NPKT" -v s="${T[sensor]}" \
    'BEGIN{ if (t<=0) t=0.001; printf "%-12s %10.3f %14.0f %10.1f %12.2f\n", k, t, n/t, m/1024, t/s }'
done
