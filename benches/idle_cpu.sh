#!/usr/bin/env bash
# CPU the live sensor uses on an idle link: a 2-queue veth between two private
# namespaces, no traffic, the sensor with its defaults; prints the CPU ticks of each of
# its threads over SECONDS (after a 3-s settle). Sends nothing. The namespaces are deleted
# on exit, also on failure.
# Usage: sudo benches/idle_cpu.sh   (env: SECONDS_IDLE=5, BIN=target/release/streamml-sensor)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/streamml-sensor}
T=${SECONDS_IDLE:-5}
NS=smidle$$
D=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
  ip netns del "${NS}s" 2>/dev/null || true
  ip netns del "${NS}p" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT INT TERM
ip netns add "${NS}s"
ip netns add "${NS}p"
ip link add sens0 numrxqueues 2 numtxqueues 2 netns "${NS}s" type veth \
  peer name peer0 numrxqueues 2 numtxqueues 2 netns "${NS}p"
for n in s p; do ip netns exec "${NS}$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
ip -n "${NS}s" link set sens0 up
ip -n "${NS}p" link set peer0 up
ip netns exec "${NS}s" "$BIN" --iface sens0 --queues 2 --state-dir "$D/state" --report-interval 0 2>"$D/err" &
PID=$!
sleep 3
ticks() { for t in /proc/"$PID"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done; }
ticks >"$D/t0"
sleep "$T"
ticks >"$D/t1"
echo "# idle sensor, 2 queues, CPU seconds per thread over ${T} s:"
awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {a[$1] = $2; next} {d = ($2 - a[$1]) / hz; s += d; printf "%-16s %.2f\n", $1, d} END {printf "%-16s %.2f (%.1f %% of one core)\n", "total", s, 100 * s / '"$T"'}' "$D/t0" "$D/t1"
kill -TERM "$PID"
wait "$PID"
PID=""
