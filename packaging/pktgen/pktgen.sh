#!/usr/bin/env bash
# Kernel pktgen traffic for benchmarking streamml-sensor on real hardware: run it on a
# *separate* sender box wired (or mirrored) to the sensor's capture port. One pktgen
# thread per CPU in the list; thread i sends on TX queue i (queue_map) with its own UDP
# source port range, so an RSS NIC on the sensor spreads the flows over its RX queues.
#
# Usage: sudo packaging/pktgen/pktgen.sh -i IF -m DST_MAC [-d DST_IP] [-s SRC_IP]
#            [-c COUNT_PER_THREAD] [-z SIZE] [-t CPUS] [-r PPS_PER_THREAD] [-f FLOWS] [-k CLONE]
#   -i IF     sender interface            -m DST_MAC  the sensor port's MAC
#   -d DST    destination (198.19.0.1)    -s SRC      first source (198.18.0.1)
#   -c COUNT  frames per thread (1000000; 0 is refused: every run is bounded)
#   -z SIZE   frame size incl. FCS (64)   -t CPUS     e.g. 0-3 (0)
#   -r PPS    rate per thread, 0 = line rate (0)
#   -f FLOWS  UDP source ports per thread (1024)
#   -k CLONE  send each built skb CLONE+1 times (0): faster, but the source port then
#             changes only every CLONE+1 frames
# Addresses must lie in 198.18.0.0/15 (RFC 2544 benchmarking range). Needs the pktgen
# module (modprobe pktgen); results are printed per thread from /proc/net/pktgen.
set -euo pipefail

IFACE= DST_MAC= DST=198.19.0.1 SRC=198.18.0.1 COUNT=1000000 SIZE=64 CPUS=0 RATE=0 FLOWS=1024 CLONE=0
while getopts "i:m:d:s:c:z:t:r:f:k:h" o; do
  case $o in
    i) IFACE=$OPTARG ;; m) DST_MAC=$OPTARG ;; d) DST=$OPTARG ;; s) SRC=$OPTARG ;;
    c) COUNT=$OPTARG ;; z) SIZE=$OPTARG ;; t) CPUS=$OPTARG ;; r) RATE=$OPTARG ;;
    f) FLOWS=$OPTARG ;; k) CLONE=$OPTARG ;; *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
die() { echo "pktgen.sh: $*" >&2; exit 2; }
[ -n "$IFACE" ] || die "-i IF is required"
[ -n "$DST_MAC" ] || die "-m DST_MAC is required"
[ "$(id -u)" -eq 0 ] || die "needs root"
[ "$COUNT" -gt 0 ] 2>/dev/null || die "-c COUNT must be > 0 (runs are bounded)"
in_range() { [[ $1 =~ ^198\.(18|19)\.[0-9]+\.[0-9]+$ ]]; }
in_range "$DST" || die "$DST: only 198.18.0.0/15 may be used"
in_range "$SRC" || die "$SRC: only 198.18.0.0/15 may be used"
[ -d /proc/net/pktgen ] || modprobe pktgen || die "no pktgen module (modprobe pktgen failed)"

expand() {  # "0-2,5" -> "0 1 2 5"
  local out=() part
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi
  done
  echo "${out[@]}"
}
pg() {  # pg FILE CMD: write a pktgen command and check its result
  echo "$2" >"$1"
  if ! grep -q "Result: OK" "$1" && ! [[ $1 == */pgctrl ]]; then
    die "pktgen refused '$2' on $1: $(grep Result "$1")"
  fi
}

cpus=($(expand "$CPUS"))
pg /proc/net/pktgen/pgctrl reset
i=0
for cpu in "${cpus[@]}"; do
  dev="$IFACE@$i"
  thr=/proc/net/pktgen/kpktgend_$cpu
  pg "$thr" rem_device_all
  pg "$thr" "add_device $dev"
  d=/proc/net/pktgen/$dev
  pg "$d" "count $COUNT"
  pg "$d" "pkt_size $((SIZE - 4))"   # pktgen sizes exclude the FCS
  pg "$d" "dst_mac $DST_MAC"
  pg "$d" "dst_min $DST"
  pg "$d" "dst_max $DST"
  pg "$d" "src_min $SRC"
  pg "$d" "src_max $SRC"
  pg "$d" "udp_src_min $((10000 + i * FLOWS))"
  pg "$d" "udp_src_max $((10000 + (i + 1) * FLOWS - 1))"
  pg "$d" "udp_dst_min 5000"
  pg "$d" "udp_dst_max 5000"
  pg "$d" "flag UDPSRC_RND"
  pg "$d" "queue_map_min $i"
  pg "$d" "queue_map_max $i"
  pg "$d" "burst 32"
  pg "$d" "clone_skb $CLONE"
  [ "$RATE" -gt 0 ] && pg "$d" "ratep $RATE"
  i=$((i + 1))
done
echo "pktgen.sh: ${#cpus[@]} thread(s) x $COUNT frames of $SIZE B on $IFACE -> $DST_MAC" >&2
echo start >/proc/net/pktgen/pgctrl   # returns when every thread has sent its COUNT
for ((j = 0; j < ${#cpus[@]}; j++)); do
  echo "== $IFACE@$j"; grep -A2 "Result:" "/proc/net/pktgen/$IFACE@$j"
done
pg /proc/net/pktgen/pgctrl reset
