#!/usr/bin/env python3
"""Regenerates the golden flow files that tests/flows_parity.rs compares the sensor with.

Run from the repository root (nfstream 6.6 is installed in /opt/streamml-venv by
scripts/deps.sh):

    /opt/streamml-venv/bin/python tests/golden/gen_nfstream.py [PCAP_DIR]

PCAP_DIR defaults to $STREAMML_PCAPS or tests/data/pcaps. For every capture outside
malformed/ it writes:

  tests/golden/nfstream/<dir>/<name>.csv         nfstream's own to_csv() output with
                                                 n_dissections=0, statistical_analysis=True,
                                                 accounting_mode=0, decode_tunnels=True,
                                                 idle 120 s, active 1800 s, splt off
  tests/golden/nfstream/<dir>/<name>.splt10.csv  the same with splt_analysis=10

  tests/golden/nfstream/<dir>/<name>.accounting.csv
                                                 for accounting_mode 1 (ip), 2 (transport)
                                                 and 3 (payload), splt off: the key, first
                                                 seen and the size columns
                                                 (ACCOUNTING_COLUMNS), one row per flow and
                                                 mode, written by csv.writer as to_csv does

An empty file means nfstream produced no flow. n_meters=1 so that nfstream's id order and
its monotonic packet clock are those of a single meter (our parity test uses one shard).
For every capture where nfstream produces no flow it also writes

  tests/golden/tshark/<dir>/<name>.tsv           one line per frame, tshark's view of it
                                                 (see TSHARK_FIELDS), the oracle for those
                                                 captures

tests/golden/python_float_repr.tsv (f64 bit patterns and Python's repr of them, the
reference for the float formatting of our CSV), and tests/golden/MANIFEST.tsv (versions, capture sizes and sha256, flow counts). The script
is deterministic: re-running it on the same captures gives byte-identical files.
"""

import csv
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nfstream
from nfstream import NFStreamer
from nfstream.engine import create_engine

HERE = Path(__file__).resolve().parent
SPLT = 10

# tshark fields of the oracle for captures nfstream does not read. Empty when absent;
# tshark prints repeated fields (several VLAN tags, tunnels) comma-separated.
TSHARK_FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "frame.len",
    "frame.cap_len",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "tcp.flags",
    "_ws.col.Protocol",
]


ACCOUNTING_COLUMNS = [
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "protocol",
    "vlan_id",
    "tunnel_id",
    "bidirectional_first_seen_ms",
] + [
    f"{d}_{c}"
    for d in ("bidirectional", "src2dst", "dst2src")
    for c in ("bytes", "min_ps", "mean_ps", "stddev_ps", "max_ps")
]


def captures(root: Path):
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name == "README.md":
            continue
        rel = p.relative_to(root)
        if rel.parts[0] == "malformed":
            continue
        yield rel


def run_nfstream(path: Path, splt: int, out: Path) -> int:
    streamer = NFStreamer(
        source=str(path),
        decode_tunnels=True,
        n_dissections=0,
        statistical_analysis=True,
        accounting_mode=0,
        splt_analysis=splt,
        idle_timeout=120,
        active_timeout=1800,
        n_meters=1,
    )
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "flows.csv"
        n = streamer.to_csv(path=str(tmp))
        data = tmp.read_bytes() if tmp.exists() else b""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return n


def run_accounting(path: Path, out: Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accounting_mode"] + ACCOUNTING_COLUMNS)
        for mode in (1, 2, 3):
            streamer = NFStreamer(
                source=str(path),
                decode_tunnels=True,
                n_dissections=0,
                statistical_analysis=True,
                accounting_mode=mode,
                idle_timeout=120,
                active_timeout=1800,
                n_meters=1,
            )
            for flow in streamer:
                w.writerow([mode] + [getattr(flow, c) for c in ACCOUNTING_COLUMNS])


def run_tshark(path: Path, out: Path) -> int:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "header=y", "-E", "separator=/t"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(res.stdout)
    return max(0, res.stdout.count(b"\n") - 1)


def write_float_reprs(out: Path) -> None:
    """Python's repr of 10,000 doubles: random bit patterns, values with ties at the 17th
    digit (large values with few fraction bits), and feature-like means and stddevs."""
    import math
    import random
    import struct

    rng = random.Random(20240601)
    values = []
    while len(values) < 3000:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            values.append(x)
    for _ in range(3000):
        values.append(rng.getrandbits(53) * 2.0 ** rng.randint(-60, 30) * rng.choice((1, -1)))
    for _ in range(4000):
        n = rng.randint(2, 2000)
        sizes = [rng.randint(40, 1514) for _ in range(min(n, 50))]
        m = sum(sizes) / len(sizes)
        sd = math.sqrt(sum((s - m) ** 2 for s in sizes) / (len(sizes) - 1))
        values.append(rng.choice((m, sd, sd / 1000.0, m * 1e-7, m * 1e13)))
    with open(out, "w", newline="") as f:
        for x in values:
            f.write(f"{struct.unpack('<Q', struct.pack('<d', x))[0]:016x}\t{x!r}\n")


def main() -> int:
    default = os.environ.get("STREAMML_PCAPS", str(HERE.parent / "data" / "pcaps"))
    root = Path(sys.argv[1] if len(sys.argv) > 1 else default).resolve()
    if not root.is_dir():
        print(f"gen_nfstream: {root}: not a directory", file=sys.stderr)
        return 2
    ffi, lib = create_engine()
    versions = {
        "nfstream": nfstream.__version__,
        "engine": ffi.string(lib.engine_lib_version()).decode(),
        "ndpi": ffi.string(lib.engine_lib_ndpi_version()).decode(),
        "libpcap": ffi.string(lib.engine_lib_pcap_version()).decode(),
        "tshark": subprocess.run(["tshark", "-v"], stdout=subprocess.PIPE, check=False)
        .stdout.decode()
        .splitlines()[0],
    }
    write_float_reprs(HERE / "python_float_repr.tsv")
    rows = []
    for rel in captures(root):
        src = root / rel
        base = HERE / "nfstream" / rel.parent
        n = run_nfstream(src, 0, base / (rel.name + ".csv"))
        n_splt = run_nfstream(src, SPLT, base / (rel.name + f".splt{SPLT}.csv"))
        assert n == n_splt, (rel, n, n_splt)
        if n > 0:
            run_accounting(src, base / (rel.name + ".accounting.csv"))
        n_tshark = ""
        if n == 0:
            n_tshark = run_tshark(src, HERE / "tshark" / rel.parent / (rel.name + ".tsv"))
        data = src.read_bytes()
        rows.append([str(rel), len(data), hashlib.sha256(data).hexdigest(), n, n_tshark])
        print(f"{rel}: {n} flows" + (f", tshark oracle: {n_tshark} frames" if n == 0 else ""))
    with open(HERE / "MANIFEST.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        for k, v in versions.items():
            w.writerow(["#", k, v])
        w.writerow(["capture", "bytes", "sha256", "nfstream_flows", "tshark_frames"])
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
