#!/usr/bin/env bash
# Live-capture benchmark on a veth pair between two private namespaces, in one run:
# the same generator (streamml-pktgen, AF_XDP TX, one thread per queue, 64-byte frames,
# as fast as it goes for DURATION seconds) against three receivers in turn:
#   1. a bare XDP_DROP program (bpf/xdp_drop.bpf.c), counted by veth's rx_queue_N_xdp_drops
#   2. streamml-sensor with its whole pipeline (XDP + AF_XDP readers + evidence rings +
#      decode + profile filters + flows, windows and Half-Space Trees of the default
#      configuration + evidence writer), counted by its --stats-json
#   3. tcpdump -w /dev/null (AF_PACKET), counted by its "packets captured"
# and prints what each received, as pps and as a share of what was sent and of XDP_DROP.
# Optional receivers for side-by-side comparisons of the sensor itself:
#   sensor_noprof  the sensor with a configuration without profiles (evidence rings and
#                  flows, no filters, windows or trees)
#   sensor_base    another build, BASE_BIN=path (e.g. a build of an earlier commit, or
#                  this one with other options); it gets the sensor args, then BASE_ARGS,
#                  but no --state-dir unless BASE_STATE=1
#
# Usage: sudo benches/live_capture.sh [sensor args...]
#   env: DURATION=5 QUEUES=2 SIZE=64 ROUNDS=1 THREADED_NAPI=0|1 BUILD=1 PPS=0
#        RECEIVERS="xdp_drop sensor tcpdump" NICE=0 DST_MAC=host|other BASE_BIN= BASE_STATE=0
#        BASE_ARGS="--idle adaptive" (extra args for sensor_base)
#        FRESH_STATE=1: a new state directory (new evidence rings) for every sensor run;
#        default: the runs share one, so the rings' pages are in the page cache after the
#        first run (as for a sensor that has run for a while)
#   NICE=-20 runs generator and receivers at that nice level: on a VM whose cores other
#   jobs share, the measurement otherwise reflects the scheduler's share more than the
#   receivers' cost.
# Columns: gen_cpu = the generator's user+sys CPU seconds, softirq = the whole machine's
# softirq seconds during the run (where veth runs XDP and the copy into the UMEM; these
# ticks can also be in gen_cpu's sys time), rx_cpu = the receiving process's CPU seconds
# while the generator ran (0 for XDP_DROP), kf/cpu_s = thousands of frames received per
# CPU second of the three (a rough cost measure).
# Addresses are from 198.18.0.0/15, every run is bounded by DURATION, and the namespaces
# (and with them the veth pair) are deleted on exit, also on failure or Ctrl-C.
set -euo pipefail

DURATION=${DURATION:-5}
QUEUES=${QUEUES:-2}
SIZE=${SIZE:-64}
ROUNDS=${ROUNDS:-1}
THREADED_NAPI=${THREADED_NAPI:-0}
PPS=${PPS:-0}
NICE=${NICE:-0}
RECEIVERS=${RECEIVERS:-"xdp_drop sensor tcpdump"}
SENSOR_ARGS=("$@")

# With sched_autogroup (the default) nice only works inside a session's group: run in a
# session of our own and give that group the nice level.
if [ "$NICE" != 0 ] && [ -w /proc/self/autogroup ] && [ -z "${LIVE_CAPTURE_SESSION:-}" ]; then
  LIVE_CAPTURE_SESSION=1 exec setsid --wait "$0" "$@"
fi
if [ "$NICE" != 0 ] && [ -w /proc/self/autogroup ]; then
  echo "$NICE" >/proc/$$/autogroup
fi

cd "$(dirname "$0")/.."
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet
fi
BIN=target/release
DROP_OBJ=$(ls -t target/release/build/streamml-sensor-*/out/xdp_drop.bpf.o | head -1)
[ "$(id -u)" -eq 0 ] || { echo "live_capture.sh: needs root" >&2; exit 2; }

NS_S=smbench$$s
NS_P=smbench$$p
IF_S=sens0
IF_P=peer0
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS_S" 2>/dev/null || true
  ip netns del "$NS_P" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS_S"
ip netns add "$NS_P"
for ns in "$NS_S" "$NS_P"; do
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip link add "$IF_S" numrxqueues "$QUEUES" numtxqueues "$QUEUES" netns "$NS_S" type veth \
  peer name "$IF_P" numrxqueues "$QUEUES" numtxqueues "$QUEUES" netns "$NS_P"
ip -n "$NS_S" addr add 198.19.0.1/15 dev "$IF_S"
ip -n "$NS_P" addr add 198.18.0.1/15 dev "$IF_P"
ip -n "$NS_S" link set "$IF_S" up
ip -n "$NS_P" link set "$IF_P" up
MAC_S=$(ip netns exec "$NS_S" cat /sys/class/net/$IF_S/address)
# DST_MAC=other: frames not addressed to the receiving host, as on a tap/mirror port (its
# stack drops them right after the taps); default: addressed to it (UDP to a closed port).
[ "${DST_MAC:-host}" = other ] && MAC_S=02:00:00:00:00:99

qlist=$(seq -s, 0 $((QUEUES - 1)))
# Frames per queue: more than the generator can send in DURATION, so time bounds the run.
COUNT=100000000

softirq_ticks() { awk '/^cpu / {print $8}' /proc/stat; }
gen() {  # prints total sent; CPU use of the generator and of softirqs in $WORK/gen.cpu
  local si0 si1
  si0=$(softirq_ticks)
  /usr/bin/time -f "%U %S" -o "$WORK/gen.time" nice -n "$NICE" ip netns exec "$NS_P" "$BIN/streamml-pktgen" --iface "$IF_P" --queues "$qlist" \
    --count "$COUNT" --pps "$PPS" --duration "$DURATION" --size "$SIZE" --flows 64 \
    --dst-mac "$MAC_S" --src 198.18.0.1 --dst 198.19.0.1 >"$WORK/gen.json"
  si1=$(softirq_ticks)
  awk -v a="$si0" -v b="$si1" -v hz="$(getconf CLK_TCK)" '{printf "%.2f %.2f\n", $1 + $2, (b - a) / hz}' \
    "$WORK/gen.time" >"$WORK/gen.cpu"
  jq -r .sent "$WORK/gen.json"
}

threaded() {  # threaded NAPI on the receiving veth (only possible while XDP is attached)
  if [ "$THREADED_NAPI" = 1 ]; then
    ip netns exec "$NS_S" sh -c "echo 1 > /sys/class/net/$IF_S/threaded"
  fi
}

thread_ticks() {  # "tid comm ticks" per thread of a process
  for f in /proc/"$1"/task/*/stat; do
    awk '{c = $0; sub(/^[^(]*\(/, "", c); sub(/\).*/, "", c); gsub(/ /, "_", c); n = split($0, a, ") "); split(a[n], b, " "); print $1, c, b[12] + b[13]}' "$f" 2>/dev/null || true
  done
}
thread_cpu_delta() {  # FILE_BEFORE FILE_AFTER -> "comm=seconds ..." for threads that used CPU
  awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {t0[$1] = $3; next} {d = ($3 - t0[$1]) / hz; if (d > 0) printf "%s=%.2f ", $2, d}' "$1" "$2"
}

proc_cpu() {  # user+sys seconds of a process (all its threads), "0" if gone
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

xdp_drops() {
  ip netns exec "$NS_S" ethtool -S "$IF_S" | awk '/rx_queue_[0-9]+_xdp_drops/ {s += $2} END {print s + 0}'
}

run_xdp_drop() {
  ip -n "$NS_S" link set dev "$IF_S" xdpdrv obj "$DROP_OBJ" sec xdp
  threaded
  local before sent after
  before=$(xdp_drops)
  sent=$(gen)
  sleep 0.2
  after=$(xdp_drops)
  echo 0 >"$WORK/rx.cpu"
  ip netns exec "$NS_S" sh -c "echo 0 > /sys/class/net/$IF_S/threaded" 2>/dev/null || true
  ip -n "$NS_S" link set dev "$IF_S" xdpdrv off
  echo "$sent $((after - before))"
}

run_sensor() { sensor_with "$BIN/streamml-sensor" --state-dir "$WORK/state"; }
run_sensor_noprof() {
  printf '[evidence]\nring_mib = 256\n' >"$WORK/noprofiles.toml"
  sensor_with "$BIN/streamml-sensor" --state-dir "$WORK/state" --config "$WORK/noprofiles.toml"
}
run_sensor_base() {
  local extra
  read -r -a extra <<<"${BASE_ARGS:-}"
  if [ "${BASE_STATE:-0}" = 1 ]; then
    sensor_with "${BASE_BIN:?BASE_BIN=path of the build to compare}" --state-dir "$WORK/state" "${extra[@]}"
  else
    sensor_with "${BASE_BIN:?BASE_BIN=path of the build to compare}" "${extra[@]}"
  fi
}

sensor_with() {  # BINARY [extra args...]
  local bin=$1
  shift
  local args=(--iface "$IF_S" --queues "$QUEUES" --report-interval 0 --stats-json "$WORK/sensor.json" "$@")
  [ "$THREADED_NAPI" = 1 ] && args+=(--threaded-napi)
  rm -f "$WORK/sensor.json"
  [ "${FRESH_STATE:-0}" = 1 ] && rm -rf "$WORK/state"
  nice -n "$NICE" ip netns exec "$NS_S" "$bin" "${args[@]}" "${SENSOR_ARGS[@]}" 2>"$WORK/sensor.err" &
  local pid=$!
  PIDS+=("$pid")
  touch "$WORK/sensor.err"
  for _ in $(seq 100); do grep -q "capturing on" "$WORK/sensor.err" && break; sleep 0.05; done
  grep -q "capturing on" "$WORK/sensor.err" || { cat "$WORK/sensor.err" >&2; exit 1; }
  local sent c0
  c0=$(proc_cpu "$pid")
  thread_ticks "$pid" >"$WORK/threads.0"
  sent=$(gen)
  sleep 0.2
  awk -v a="$c0" -v b="$(proc_cpu "$pid")" 'BEGIN {printf "%.2f", b - a}' >"$WORK/rx.cpu"
  thread_ticks "$pid" >"$WORK/threads.1"
  thread_cpu_delta "$WORK/threads.0" "$WORK/threads.1" >"$WORK/threads.${FUNCNAME[1]#run_}"
  kill -TERM "$pid"
  wait "$pid" || { cat "$WORK/sensor.err" >&2; exit 1; }
  jq -c '{mode: .mode | {attach, bind, idle, threaded_napi, pinned}, kernel, ring_full: .pipeline["shard.ring_full"], windows: .pipeline["detect.windows_scored"], flows: .pipeline["detect.flows_scored"], alerts: .pipeline["detect.alerts"], evidence_files: .pipeline["evidence.files_written"], queues: [.queues[] | {queue, packets_received, batches, syscalls}]}' \
    "$WORK/sensor.json" >"$WORK/detail.${FUNCNAME[1]#run_}"
  echo "$sent $(jq -r .packets_received "$WORK/sensor.json")"
}

run_tcpdump() {
  nice -n "$NICE" ip netns exec "$NS_S" tcpdump -i "$IF_S" -n -w /dev/null 2>"$WORK/tcpdump.err" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do grep -q "listening on" "$WORK/tcpdump.err" && break; sleep 0.05; done
  local sent c0
  c0=$(proc_cpu "$pid")
  sent=$(gen)
  sleep 0.2
  awk -v a="$c0" -v b="$(proc_cpu "$pid")" 'BEGIN {printf "%.2f", b - a}' >"$WORK/rx.cpu"
  kill -INT "$pid"
  wait "$pid" || true
  echo "$sent $(awk '/packets captured/ {print $1}' "$WORK/tcpdump.err")"
}

echo "# live capture on veth, ${QUEUES} queues, ${SIZE} B frames to ${DST_MAC:-host} MAC, ${DURATION} s per run, $(nproc) cores, threaded NAPI ${THREADED_NAPI}"
echo "# kernel $(uname -r); nice $NICE ($(cat /proc/$$/autogroup 2>/dev/null || echo no autogroup)); load average $(cut -d' ' -f1-3 /proc/loadavg); sensor args: ${SENSOR_ARGS[*]:-(defaults)}"
printf '%-10s %12s %12s %12s %12s %9s %9s %8s %8s %8s %9s\n' receiver sent sent_pps received recv_pps of_sent of_drop gen_cpu softirq rx_cpu kf/cpu_s
RATIO_DROP=()
RATIO_TCPDUMP=()
declare -A RATIO_VS=()
for round in $(seq "$ROUNDS"); do
  declare -A R=()
  for r in $RECEIVERS; do
    read -r sent got < <(run_"$r")
    R[$r]=$got
    base=${R[xdp_drop]:-}
    rel="-"
    [ -n "$base" ] && [ "$base" -gt 0 ] && rel=$(awk -v a="$got" -v b="$base" 'BEGIN {printf "%.1f%%", 100 * a / b}')
    read -r gcpu sirq <"$WORK/gen.cpu"
    rcpu=$(cat "$WORK/rx.cpu")
    eff=$(awk -v n="$got" -v a="$gcpu" -v b="$sirq" -v c="$rcpu" 'BEGIN {t = a + b + c; printf "%.0f", (t > 0) ? n / t / 1000 : 0}')
    printf '%-10s %12d %12.0f %12d %12.0f %8.1f%% %9s %7.2fs %7.2fs %7.2fs %9s\n' "$r" "$sent" \
      "$(awk -v s="$sent" -v d="$DURATION" 'BEGIN {print s / d}')" "$got" \
      "$(awk -v s="$got" -v d="$DURATION" 'BEGIN {print s / d}')" \
      "$(awk -v a="$got" -v b="$sent" 'BEGIN {print (b > 0) ? 100 * a / b : 0}')" "$rel" "$gcpu" "$sirq" "$rcpu" "$eff"
  done
  if [ -n "${R[sensor]:-}" ] && [ -n "${R[tcpdump]:-}" ] && [ "${R[tcpdump]}" -gt 0 ]; then
    RATIO_TCPDUMP+=("$(awk -v a="${R[sensor]}" -v b="${R[tcpdump]}" 'BEGIN {printf "%.2f", a / b}')")
    echo "# sensor / tcpdump: ${RATIO_TCPDUMP[-1]}x"
  fi
  if [ -n "${R[sensor]:-}" ] && [ -n "${R[xdp_drop]:-}" ] && [ "${R[xdp_drop]}" -gt 0 ]; then
    RATIO_DROP+=("$(awk -v a="${R[sensor]}" -v b="${R[xdp_drop]}" 'BEGIN {printf "%.3f", a / b}')")
  fi
  for r in $RECEIVERS; do
    case $r in
      sensor_*)
        if [ -n "${R[sensor]:-}" ] && [ "${R[$r]:-0}" -gt 0 ]; then
          RATIO_VS[$r]="${RATIO_VS[$r]:-} $(awk -v a="${R[sensor]}" -v b="${R[$r]}" 'BEGIN {printf "%.3f", a / b}')"
          echo "# sensor / $r: $(awk -v a="${R[sensor]}" -v b="${R[$r]}" 'BEGIN {printf "%.3f", a / b}')"
        fi ;;
    esac
    [ -f "$WORK/detail.$r" ] && echo "# $r detail: $(cat "$WORK/detail.$r")"
    [ -f "$WORK/threads.$r" ] && echo "# $r threads (CPU s during the run): $(cat "$WORK/threads.$r")"
  done
  rm -f "$WORK"/detail.* "$WORK"/threads.*
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
if [ "${#RATIO_DROP[@]}" -gt 0 ]; then
  echo "# median over ${#RATIO_DROP[@]} rounds: sensor / XDP_DROP = $(median "${RATIO_DROP[@]}") (rounds: ${RATIO_DROP[*]})"
fi
if [ "${#RATIO_TCPDUMP[@]}" -gt 0 ]; then
  echo "# median over ${#RATIO_TCPDUMP[@]} rounds: sensor / tcpdump = $(median "${RATIO_TCPDUMP[@]}")x (rounds: ${RATIO_TCPDUMP[*]})"
fi
for r in "${!RATIO_VS[@]}"; do
  # shellcheck disable=SC2086
  echo "# median over rounds: sensor / $r = $(median ${RATIO_VS[$r]}) (rounds:${RATIO_VS[$r]})"
done
