#!/usr/bin/env python3
"""Per-packet oracle from nfstream's C engine (nfstream 6.6, bundled nDPI/libpcap).

For every frame of a capture, calls nfstream's own `capture_next` (the function NFStreamer's
meter calls, i.e. packet_process in lib_engine.c) with decode_tunnels on, one meter, and
prints what nfstream makes of the frame: ignored, or the fields of its `nf_packet`.

Usage: nfstream_packets.py CAPTURE  (run with /opt/streamml-venv/bin/python)
Output (TSV, one line per frame, in file order):
  ignored:   <idx> I
  processed: <idx> P ip_version protocol src_ip dst_ip src_port dst_port vlan_id tunnel_id
             raw_size ip_size transport_size payload_size tcp_flags src_mac dst_mac
The frame index is 0-based and counts every record libpcap returned. A read error ends the
file with a line `<idx> E`.
"""
import ipaddress
import struct
import sys

from _lib_engine import ffi, lib

MODE_SINGLE_FILE = 0


def ip_str(words, version):
    raw = struct.pack("<QQ", words[0], words[1])
    if version == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def mac_str(m):
    return ":".join("%02x" % m[i] for i in range(6))


def main(path):
    err = ffi.new("char[256]")
    cap = lib.capture_open(path.encode(), MODE_SINGLE_FILE, err, 0)
    if cap == ffi.NULL:
        print("# open failed: %s" % ffi.string(err).decode(errors="replace"))
        return
    if lib.capture_activate(cap, MODE_SINGLE_FILE, err):
        print("# activate failed")
        return
    out = sys.stdout
    idx = 0
    while True:
        pkt = ffi.new("struct nf_packet *")
        ret = lib.capture_next(cap, pkt, 1, 1, 0, MODE_SINGLE_FILE)
        if ret == -2:
            break
        if ret == -1:
            out.write("%d\tE\n" % idx)
            break
        if ret == 0:
            out.write("%d\tI\n" % idx)
        else:
            flags = (pkt.fin | pkt.syn << 1 | pkt.rst << 2 | pkt.psh << 3 | pkt.ack << 4
                     | pkt.urg << 5 | pkt.ece << 6 | pkt.cwr << 7)
            out.write("\t".join(str(x) for x in (
                idx, "P", pkt.ip_version, pkt.protocol,
                ip_str(pkt.src_ip, pkt.ip_version), ip_str(pkt.dst_ip, pkt.ip_version),
                pkt.src_port, pkt.dst_port, pkt.vlan_id, pkt.tunnel_id,
                pkt.raw_size, pkt.ip_size, pkt.transport_size, pkt.payload_size, flags,
                mac_str(pkt.src_mac), mac_str(pkt.dst_mac))) + "\n")
        idx += 1
    lib.capture_close(cap)


if __name__ == "__main__":
    main(sys.argv[1])
