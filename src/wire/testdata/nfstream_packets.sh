#!/bin/sh
# Regenerates nfstream-6.6-packets.tsv.zst: for every frame of every capture in
# tests/data/pcaps (without large/echo-connections.pcap, 82k frames of one TCP host pair,
# to keep the fixture small), what nfstream's own C decoder makes of it (see
# nfstream_packets.py). Needs the venv from scripts/deps.sh (nfstream 6.6.0).
# Usage: src/wire/testdata/nfstream_packets.sh [PCAPS_DIR] [PYTHON]   (from the package root)
set -eu
pcaps=${1:-tests/data/pcaps}
py=${2:-/opt/streamml-venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
out=$here/nfstream-6.6-packets.tsv.zst
cd "$pcaps"
find . -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' \) | sed 's|^\./||' \
  | grep -v '^large/echo-connections.pcap$' | LC_ALL=C sort \
  | while read -r f; do
    echo "# $f"
    "$py" "$here/nfstream_packets.py" "$f"
  done | zstd -19 -q -f -o "$out"
echo "wrote $out (nfstream $("$py" -c 'import nfstream; print(nfstream.__version__)'))"
