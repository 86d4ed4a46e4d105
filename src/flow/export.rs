//! Exported flows: [`FlowRecord`] (a view of an expired flow), its columns in nfstream's
//! order and spelling, CSV and JSON-lines rows, and the total order the outputs are sorted
//! by.
//!
//! Values are written as nfstream 6.6's `to_csv` writes them (Python's `csv.writer` over
//! the `NFlow` values): integers in decimal, floats as Python's `repr` (shortest
//! round-trip digits, `1e+16` / `1e-05` exponents, `0.0`), IPs as glibc `inet_ntop`, MACs
//! as `%02x:` pairs, the OUI as the MAC's first 8 characters, SPLT lists as Python lists
//! (`"[0, 1, -1]"`, quoted because they hold commas). Rows end with `\n` (nfstream's
//! `csv.writer` ends them with `\r\n`).

use super::features::{flag, DirState, FlowState, SpltEntry};

/// Why a flow left the table. [`Expiration::id`] is nfstream's `expiration_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expiration {
    /// No packet for the idle timeout (nfstream 0).
    Idle,
    /// Older than the active timeout when its next packet came (nfstream 1); that packet
    /// starts a new flow.
    Active,
    /// Still in the table at the end of the input (nfstream exports these with 0, too).
    Flush,
    /// Pushed out, least recently used, to make room for a new flow in a full table. No
    /// nfstream equivalent (its table is unbounded): exported as 2.
    Evicted,
}

impl Expiration {
    /// nfstream's `expiration_id` (2 for [`Expiration::Evicted`], ours).
    pub const fn id(self) -> u8 {
        match self {
            Expiration::Idle | Expiration::Flush => 0,
            Expiration::Active => 1,
            Expiration::Evicted => 2,
        }
    }
}

/// An expired flow, borrowed from its table slot for the duration of the emit callback.
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord<'a> {
    pub flow: &'a FlowState,
    /// The recorded SPLT entries: min(packets, splt) of them.
    pub splt: &'a [SpltEntry],
    /// The configured SPLT length (0: no SPLT columns).
    pub splt_len: u16,
    pub expiration: Expiration,
}

/// Length of [`FlowRecord::sort_key`].
pub const SORT_KEY_LEN: usize = 49;

/// Columns without SPLT, in nfstream 6.6's order (`NFlow.__slots__` with
/// n_dissections=0, statistical_analysis=True, decode_tunnels=True).
pub const COLUMNS: [&str; 77] = [
    "id",
    "expiration_id",
    "src_ip",
    "src_mac",
    "src_oui",
    "src_port",
    "dst_ip",
    "dst_mac",
    "dst_oui",
    "dst_port",
    "protocol",
    "ip_version",
    "vlan_id",
    "tunnel_id",
    "bidirectional_first_seen_ms",
    "bidirectional_last_seen_ms",
    "bidirectional_duration_ms",
    "bidirectional_packets",
    "bidirectional_bytes",
    "src2dst_first_seen_ms",
    "src2dst_last_seen_ms",
    "src2dst_duration_ms",
    "src2dst_packets",
    "src2dst_bytes",
    "dst2src_first_seen_ms",
    "dst2src_last_seen_ms",
    "dst2src_duration_ms",
    "dst2src_packets",
    "dst2src_bytes",
    "bidirectional_min_ps",
    "bidirectional_mean_ps",
    "bidirectional_stddev_ps",
    "bidirectional_max_ps",
    "src2dst_min_ps",
    "src2dst_mean_ps",
    "src2dst_stddev_ps",
    "src2dst_max_ps",
    "dst2src_min_ps",
    "dst2src_mean_ps",
    "dst2src_stddev_ps",
    "dst2src_max_ps",
    "bidirectional_min_piat_ms",
    "bidirectional_mean_piat_ms",
    "bidirectional_stddev_piat_ms",
    "bidirectional_max_piat_ms",
    "src2dst_min_piat_ms",
    "src2dst_mean_piat_ms",
    "src2dst_stddev_piat_ms",
    "src2dst_max_piat_ms",
    "dst2src_min_piat_ms",
    "dst2src_mean_piat_ms",
    "dst2src_stddev_piat_ms",
    "dst2src_max_piat_ms",
    "bidirectional_syn_packets",
    "bidirectional_cwr_packets",
    "bidirectional_ece_packets",
    "bidirectional_urg_packets",
    "bidirectional_ack_packets",
    "bidirectional_psh_packets",
    "bidirectional_rst_packets",
    "bidirectional_fin_packets",
    "src2dst_syn_packets",
    "src2dst_cwr_packets",
    "src2dst_ece_packets",
    "src2dst_urg_packets",
    "src2dst_ack_packets",
    "src2dst_psh_packets",
    "src2dst_rst_packets",
    "src2dst_fin_packets",
    "dst2src_syn_packets",
    "dst2src_cwr_packets",
    "dst2src_ece_packets",
    "dst2src_urg_packets",
    "dst2src_ack_packets",
    "dst2src_psh_packets",
    "dst2src_rst_packets",
    "dst2src_fin_packets",
];

/// The SPLT columns, appended when SPLT is on.
pub const SPLT_COLUMNS: [&str; 3] = ["splt_direction", "splt_ps", "splt_piat_ms"];

/// A column value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    U64(u64),
    F64(f64),
    /// An IP address (16 bytes, IPv4 in the first 4) and its version.
    Ip(&'a [u8; 16], u8),
    Mac(&'a [u8; 6]),
    /// The first three bytes of a MAC.
    Oui(&'a [u8; 6]),
    /// One of the SPLT lists.
    Splt(SpltField),
}

/// Which SPLT list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpltField {
    Direction,
    Ps,
    PiatMs,
}

impl<'a> FlowRecord<'a> {
    /// Column names for `splt` (0: none), comma separated, ending with `\n`.
    pub fn csv_header(splt: u16) -> String {
        let mut s = COLUMNS.join(",");
        if splt > 0 {
            for c in SPLT_COLUMNS {
                s.push(',');
                s.push_str(c);
            }
        }
        s.push('\n');
        s
    }

    /// Calls `f` with every column value in column order (`id` first).
    pub fn for_each_value(&self, id: u64, mut f: impl FnMut(Value<'a>)) {
        let fl: &'a FlowState = self.flow;
        let k = &fl.key;
        use Value::*;
        f(U64(id));
        f(U64(u64::from(self.expiration.id())));
        f(Ip(&k.src_ip, k.ip_version));
        f(Mac(&fl.src_mac));
        f(Oui(&fl.src_mac));
        f(U64(u64::from(k.src_port)));
        f(Ip(&k.dst_ip, k.ip_version));
        f(Mac(&fl.dst_mac));
        f(Oui(&fl.dst_mac));
        f(U64(u64::from(k.dst_port)));
        f(U64(u64::from(k.protocol)));
        f(U64(u64::from(k.ip_version)));
        f(U64(u64::from(k.vlan_id)));
        f(U64(u64::from(k.tunnel_id)));
        // first/last seen, duration, packets, bytes
        f(U64(fl.first_seen_ms()));
        f(U64(fl.last_seen_ms));
        f(U64(fl.duration_ms()));
        f(U64(fl.packets()));
        f(U64(fl.bytes()));
        for d in [&fl.s2d, &fl.d2s] {
            f(U64(d.first_seen_ms));
            f(U64(d.last_seen_ms));
            f(U64(d.duration_ms()));
            f(U64(d.packets));
            f(U64(d.bytes));
        }
        // packet sizes
        f(U64(u64::from(fl.bi_ps.min)));
        f(F64(fl.bi_ps.mean));
        f(F64(fl.stddev_ps()));
        f(U64(u64::from(fl.bi_ps.max)));
        for d in [&fl.s2d, &fl.d2s] {
            f(U64(u64::from(d.ps.min)));
            f(F64(d.ps.mean));
            f(F64(d.stddev_ps()));
            f(U64(u64::from(d.ps.max)));
        }
        // inter-arrival times
        f(U64(fl.bi_piat_ms.min));
        f(F64(fl.bi_piat_ms.mean));
        f(F64(fl.stddev_piat_ms()));
        f(U64(fl.bi_piat_ms.max));
        for d in [&fl.s2d, &fl.d2s] {
            f(U64(d.piat_ms.min));
            f(F64(d.piat_ms.mean));
            f(F64(d.stddev_piat_ms()));
            f(U64(d.piat_ms.max));
        }
        // TCP flags
        for i in 0..flag::NAMES.len() {
            f(U64(fl.flags(i)));
        }
        for d in [&fl.s2d, &fl.d2s] {
            let d: &DirState = d;
            for &c in &d.flags {
                f(U64(u64::from(c)));
            }
        }
        if self.splt_len > 0 {
            f(Splt(SpltField::Direction));
            f(Splt(SpltField::Ps));
            f(Splt(SpltField::PiatMs));
        }
    }

    /// Appends one CSV row (with `\n`) for this flow with the given `id`.
    pub fn write_csv(&self, out: &mut Vec<u8>, id: u64) {
        out.reserve(1024 + usize::from(self.splt_len) * 30);
        let mut first = true;
        self.for_each_value(id, |v| {
            if !first {
                out.push(b',');
            }
            first = false;
            match v {
                Value::Splt(which) => {
                    out.push(b'"');
                    self.write_splt(out, which, b", ");
                    out.push(b'"');
                }
                v => write_scalar(out, v),
            }
        });
        out.push(b'\n');
    }

    /// Appends one JSON object (one line, with `\n`) for this flow with the given `id`.
    pub fn write_jsonl(&self, out: &mut Vec<u8>, id: u64) {
        out.reserve(3072 + usize::from(self.splt_len) * 30);
        let mut i = 0usize;
        out.push(b'{');
        self.for_each_value(id, |v| {
            let name = COLUMNS
                .get(i)
                .copied()
                .unwrap_or_else(|| SPLT_COLUMNS[i - COLUMNS.len()]);
            if i > 0 {
                out.push(b',');
            }
            i += 1;
            out.push(b'"');
            push_short(out, name.as_bytes());
            push_short(out, b"\":");
            match v {
                Value::Splt(which) => self.write_splt(out, which, b","),
                Value::Ip(..) | Value::Mac(_) | Value::Oui(_) => {
                    out.push(b'"');
                    write_scalar(out, v);
                    out.push(b'"');
                }
                Value::F64(x) if !x.is_finite() => out.extend_from_slice(b"null"),
                v => write_scalar(out, v),
            }
        });
        out.extend_from_slice(b"}\n");
    }

    /// `[a, b, ...]` with `splt_len` entries, -1 past the recorded ones (as nfstream).
    fn write_splt(&self, out: &mut Vec<u8>, which: SpltField, sep: &[u8]) {
        out.push(b'[');
        for i in 0..usize::from(self.splt_len) {
            if i > 0 {
                push_short(out, sep);
            }
            match self.splt.get(i) {
                None => push_short(out, b"-1"),
                Some(e) => write_u64(
                    out,
                    match which {
                        SpltField::Direction => u64::from(e.direction),
                        SpltField::Ps => u64::from(e.ps),
                        SpltField::PiatMs => e.piat_ms,
                    },
                ),
            }
        }
        out.push(b']');
    }

    /// A byte string whose bytewise order is the output order: first seen, then the flow
    /// key (IP version, src IP, src port, dst IP, dst port, protocol, VLAN, tunnel). It
    /// depends only on the flow, so sorting by it gives the same order for any number of
    /// shards. Two flows can only tie if they have the same key and start in the same
    /// millisecond (possible only through capacity eviction); sort ties by the row.
    pub fn sort_key(&self) -> [u8; SORT_KEY_LEN] {
        let k = &self.flow.key;
        let mut b = [0u8; SORT_KEY_LEN];
        b[0..8].copy_from_slice(&self.flow.first_seen_ms().to_be_bytes());
        b[8] = k.ip_version;
        b[9..25].copy_from_slice(&k.src_ip);
        b[25..27].copy_from_slice(&k.src_port.to_be_bytes());
        b[27..43].copy_from_slice(&k.dst_ip);
        b[43..45].copy_from_slice(&k.dst_port.to_be_bytes());
        b[45] = k.protocol;
        b[46..48].copy_from_slice(&k.vlan_id.to_be_bytes());
        b[48] = k.tunnel_id;
        b
    }
}

fn write_scalar(out: &mut Vec<u8>, v: Value<'_>) {
    match v {
        Value::U64(x) => write_u64(out, x),
        Value::F64(x) => write_py_float(out, x),
        Value::Ip(ip, ver) => write_ip(out, ip, ver),
        Value::Mac(m) => write_mac(out, &m[..]),
        Value::Oui(m) => write_mac(out, &m[..3]),
        Value::Splt(_) => {}
    }
}

/// Appends a short byte string. A plain byte loop: for the few bytes of a field this is
/// several times cheaper than the `memcpy` call `extend_from_slice` becomes.
#[inline(always)]
fn push_short(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
    }
}

/// Decimal, no allocation.
#[inline]
pub fn write_u64(out: &mut Vec<u8>, x: u64) {
    if x < 10 {
        out.push(b'0' + x as u8);
    } else if x < 100 {
        out.push(b'0' + (x / 10) as u8);
        out.push(b'0' + (x % 10) as u8);
    } else {
        push_short(out, itoa::Buffer::new().format(x).as_bytes());
    }
}

/// A float as Python's `repr` writes it: shortest round-trip digits (ties to even);
/// `.0` on integral values; scientific notation below 1e-4 and from 1e16 on, with a
/// signed exponent of at least two digits (`1e+16`, `1.5e-05`); `nan`, `inf`, `-inf`.
#[inline]
pub fn write_py_float(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        out.extend_from_slice(if x.is_nan() {
            b"nan"
        } else if x > 0.0 {
            b"inf"
        } else {
            b"-inf"
        });
        return;
    }
    let mut buf = zmij::Buffer::new();
    let s = buf.format_finite(x).as_bytes();
    // In fixed notation (1e-4 <= |x| < 1e16, and 0) Żmij prints exactly what Python's repr
    // prints. Elsewhere (rare here) its digits are right but the notation differs.
    let a = x.abs();
    if a == 0.0 {
        push_short(
            out,
            if x.is_sign_negative() {
                b"-0.0"
            } else {
                b"0.0"
            },
        );
    } else if (1e-4..1e16).contains(&a) {
        push_short(out, s);
    } else {
        respell_scientific(out, s);
    }
}

/// Rewrites a Żmij rendering (`-0.0000123`, `1.5e-7`, `1e16`, `1.2345e+20`) of a value
/// outside [1e-4, 1e16) in Python's scientific notation: `d[.ddd]e±XX`.
fn respell_scientific(out: &mut Vec<u8>, s: &[u8]) {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (mant, exp) = match s.iter().position(|&c| c == b'e' || c == b'E') {
        Some(e) => (&s[..e], &s[e + 1..]),
        None => (s, &b""[..]),
    };
    let mut exp10: i32 = std::str::from_utf8(exp)
        .ok()
        .and_then(|e| e.trim_start_matches('+').parse().ok())
        .unwrap_or(0);
    // Significant digits, and the exponent of the first one.
    let mut digits = [0u8; 40];
    let mut n = 0usize;
    let mut int_len: i32 = 0;
    let mut seen_point = false;
    let mut leading = true;
    let mut zeros_after_point: i32 = 0;
    for &c in mant {
        if c == b'.' {
            seen_point = true;
            continue;
        }
        if leading && c == b'0' {
            if seen_point {
                zeros_after_point += 1;
            }
            continue;
        }
        leading = false;
        if !seen_point {
            int_len += 1;
        }
        if n < digits.len() {
            digits[n] = c;
            n += 1;
        }
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    exp10 += if int_len > 0 {
        int_len - 1
    } else {
        -(zeros_after_point + 1)
    };
    if neg {
        out.push(b'-');
    }
    out.push(digits[0]);
    if n > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..n]);
    }
    out.push(b'e');
    out.push(if exp10 < 0 { b'-' } else { b'+' });
    let e = exp10.unsigned_abs();
    if e < 10 {
        out.push(b'0');
    }
    write_u64(out, u64::from(e));
}

fn write_hex16(out: &mut Vec<u8>, w: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let d = (w >> shift) & 0xf;
        if d != 0 || started || shift == 0 {
            out.push(HEX[d as usize]);
            started = true;
        }
    }
}

fn write_ipv4(out: &mut Vec<u8>, b: &[u8]) {
    for (i, &o) in b.iter().take(4).enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        write_u64(out, u64::from(o));
    }
}

/// An IP as glibc's `inet_ntop` writes it (IPv6: the first longest run of two or more
/// zero groups compressed, `::a.b.c.d` for IPv4-compatible and `::ffff:a.b.c.d` for
/// IPv4-mapped addresses).
pub fn write_ip(out: &mut Vec<u8>, ip: &[u8; 16], version: u8) {
    if version != 6 {
        write_ipv4(out, &ip[..4]);
        return;
    }
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([ip[2 * i], ip[2 * i + 1]]));
    // Longest run of zero words (the first one on ties), if at least 2 long.
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let (mut cur_base, mut cur_len) = (usize::MAX, 0usize);
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            if cur_base == usize::MAX {
                cur_base = i;
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if cur_base != usize::MAX {
            if best_base == usize::MAX || cur_len > best_len {
                (best_base, best_len) = (cur_base, cur_len);
            }
            cur_base = usize::MAX;
        }
    }
    if cur_base != usize::MAX && (best_base == usize::MAX || cur_len > best_len) {
        (best_base, best_len) = (cur_base, cur_len);
    }
    if best_base != usize::MAX && best_len < 2 {
        best_base = usize::MAX;
    }
    let in_best = |i: usize| best_base != usize::MAX && i >= best_base && i < best_base + best_len;
    for (i, &w) in words.iter().enumerate() {
        if in_best(i) {
            if i == best_base {
                out.push(b':');
            }
            continue;
        }
        if i != 0 {
            out.push(b':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            write_ipv4(out, &ip[12..16]);
            return;
        }
        write_hex16(out, w);
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(b':');
    }
}

fn write_mac(out: &mut Vec<u8>, m: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, &b) in m.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pyf(x: f64) -> String {
        let mut v = Vec::new();
        write_py_float(&mut v, x);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn floats_as_python_repr() {
        // Expected strings are what CPython 3.11 `repr()` prints.
        for (x, s) in [
            (0.0, "0.0"),
            (98.0, "98.0"),
            (448.00000000000006, "448.00000000000006"),
            (497.8363184822899, "497.8363184822899"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (123456789012345.67, "123456789012345.67"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000099, "9.9e-05"),
            (1e-6, "1e-06"),
            (1e100, "1e+100"),
            (-2.6431007831575263e14, "-264310078315752.62"),
            (1.2345678901234567e20, "1.2345678901234567e+20"),
            (5e-324, "5e-324"),
            (-1.5e-5, "-1.5e-05"),
            (0.000012345, "1.2345e-05"),
            (1.5e-7, "1.5e-07"),
            (2.5e-300, "2.5e-300"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-3.25, "-3.25"),
            (-0.0, "-0.0"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(pyf(x), s, "{x:e}");
        }
    }

    fn ip6(s: &str) -> String {
        let a: std::net::Ipv6Addr = s.parse().unwrap();
        let mut v = Vec::new();
        write_ip(&mut v, &a.octets(), 6);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn ipv6_as_glibc_inet_ntop() {
        // Expected strings are glibc 2.36 inet_ntop(AF_INET6) output.
        for (a, s) in [
            ("::", "::"),
            ("::1", "::1"),
            ("fe80::8c36:6ff:fe44:acaf", "fe80::8c36:6ff:fe44:acaf"),
            (
                "2200::244:212:3fff:feae:22f7",
                "2200::244:212:3fff:feae:22f7",
            ),
            ("2200:0:0:0:240:2:0:4", "2200::240:2:0:4"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"),
            ("1:2:3:4:5:0:0:0", "1:2:3:4:5::"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
            ("::192.0.2.1", "::192.0.2.1"),
            ("ff02::1:3", "ff02::1:3"),
        ] {
            assert_eq!(ip6(a), s, "{a}");
        }
        let mut v = Vec::new();
        let mut ip = [0u8; 16];
        ip[..4].copy_from_slice(&[192, 168, 0, 10]);
        write_ip(&mut v, &ip, 4);
        assert_eq!(v, b"192.168.0.10");
    }

    use crate::flow::key::{Direction, FlowKey};

    fn flow(first_ms: u64, src: [u8; 4], sport: u16) -> FlowState {
        let mut key = FlowKey {
            src_port: sport,
            dst_port: 443,
            protocol: 6,
            ip_version: 4,
            ..FlowKey::default()
        };
        key.src_ip[..4].copy_from_slice(&src);
        key.dst_ip[..4].copy_from_slice(&[198, 19, 0, 1]);
        let mut f = FlowState::default();
        f.start(key, [0, 0x1b, 0x21, 1, 2, 3], [0xff; 6], first_ms, 74, 0x02);
        f.add(Direction::Dst2Src, first_ms + 1, 74, 0x12);
        f.add(Direction::Src2Dst, first_ms + 3, 1514, 0x18);
        f
    }

    #[test]
    fn csv_and_jsonl_rows() {
        let f = flow(1_700_000_000_123, [198, 18, 0, 9], 40000);
        let splt = [
            SpltEntry {
                piat_ms: 0,
                ps: 74,
                direction: 0,
            },
            SpltEntry {
                piat_ms: 1,
                ps: 74,
                direction: 1,
            },
            SpltEntry {
                piat_ms: 2,
                ps: 1514,
                direction: 0,
            },
        ];
        let r = FlowRecord {
            flow: &f,
            splt: &splt,
            splt_len: 5,
            expiration: Expiration::Active,
        };
        let mut csv = Vec::new();
        r.write_csv(&mut csv, 42);
        let line = String::from_utf8(csv).unwrap();
        assert!(line.starts_with("42,1,198.18.0.9,00:1b:21:01:02:03,00:1b:21,40000,198.19.0.1,ff:ff:ff:ff:ff:ff,ff:ff:ff,443,6,4,0,0,1700000000123,1700000000126,3,3,1662,"), "{line}");
        assert!(
            line.ends_with(
                ",\"[0, 1, 0, -1, -1]\",\"[74, 74, 1514, -1, -1]\",\"[0, 1, 2, -1, -1]\"\n"
            ),
            "{line}"
        );
        // As many fields as the header has (the quoted lists hold commas).
        let unquoted: String = line.split('"').step_by(2).collect();
        assert_eq!(unquoted.matches(',').count() + 1, COLUMNS.len() + 3);
        let mut js = Vec::new();
        r.write_jsonl(&mut js, 42);
        assert!(js.ends_with(b"}\n"));
        let v: serde_json::Value = serde_json::from_slice(&js).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), COLUMNS.len() + 3);
        assert_eq!(o["id"], 42);
        assert_eq!(o["expiration_id"], 1);
        assert_eq!(o["src_ip"], "198.18.0.9");
        assert_eq!(o["src_oui"], "00:1b:21");
        assert_eq!(o["bidirectional_bytes"], 1662);
        assert_eq!(o["src2dst_psh_packets"], 1);
        assert_eq!(o["dst2src_syn_packets"], 1);
        assert_eq!(o["bidirectional_mean_ps"], 554.0);
        assert_eq!(o["splt_ps"], serde_json::json!([74, 74, 1514, -1, -1]));
        let keys: Vec<&String> = o.keys().collect();
        let mut want: Vec<&str> = COLUMNS.to_vec();
        want.extend(SPLT_COLUMNS);
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        want.sort();
        assert_eq!(keys_sorted, want);
    }

    #[test]
    fn sort_key_orders_by_first_seen_then_key() {
        let a = flow(1000, [198, 18, 0, 9], 40000);
        let b = flow(1000, [198, 18, 0, 10], 1);
        let c = flow(999, [255, 255, 255, 255], 65535);
        let k = |f: &FlowState| {
            FlowRecord {
                flow: f,
                splt: &[],
                splt_len: 0,
                expiration: Expiration::Idle,
            }
            .sort_key()
        };
        assert!(k(&c) < k(&a) && k(&a) < k(&b));
        let mut v6 = flow(999, [0, 0, 0, 0], 0);
        v6.key.ip_version = 6;
        assert!(k(&c) < k(&v6), "IPv4 before IPv6 at the same time");
    }

    #[test]
    fn header_has_nfstream_columns() {
        let h = FlowRecord::csv_header(0);
        assert!(h.starts_with("id,expiration_id,src_ip,src_mac,src_oui,src_port,dst_ip,"));
        assert!(h.ends_with(",dst2src_rst_packets,dst2src_fin_packets\n"));
        let h = FlowRecord::csv_header(10);
        assert!(h.ends_with(",dst2src_fin_packets,splt_direction,splt_ps,splt_piat_ms\n"));
    }
}
