#!/bin/sh
# Regenerates tshark-4.0-fields.tsv.zst: what tshark shows of every frame of every capture
# in tests/data/pcaps outside malformed/ (and without large/echo-connections.pcap, 82k
# frames of one TCP host pair, to keep the fixture small). One `# <capture>` line per
# file, then one line per frame with the fields below (all occurrences, comma-separated).
# The 802.11 frame control fields let the test check the reason a frame is dropped for.
# IP/IPv6 reassembly and TCP reassembly are off so that every frame shows its own headers.
# Usage: src/wire/testdata/tshark_fields.sh [PCAPS_DIR]   (from the package root)
set -eu
pcaps=${1:-tests/data/pcaps}
out=$(cd "$(dirname "$0")" && pwd)/tshark-4.0-fields.tsv.zst
cd "$pcaps"
find . -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' \) | sed 's|^\./||' \
  | grep -v '^malformed/' | grep -v '^large/echo-connections.pcap$' | LC_ALL=C sort \
  | while read -r f; do
    echo "# $f"
    tshark -r "$f" -o ip.defragment:FALSE -o ipv6.defragment:FALSE \
      -o tcp.desegment_tcp_streams:FALSE -T fields -E occurrence=a -E aggregator=, \
      -e frame.number -e frame.protocols -e vlan.id -e ieee8021ad.id \
      -e ip.src -e ip.dst -e ip.proto -e ip.frag_offset \
      -e ipv6.src -e ipv6.dst -e ipv6.fraghdr.offset \
      -e tcp.srcport -e tcp.dstport -e tcp.flags -e udp.srcport -e udp.dstport \
      -e icmp.type -e icmpv6.type -e wlan.fc.type_subtype -e wlan.fc.protected \
      2>/dev/null || true
  done | zstd -19 -q -f -o "$out"
echo "wrote $out ($(tshark -v | head -1))"
