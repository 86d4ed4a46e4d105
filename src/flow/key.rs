//! Flow keys: the oriented 5-tuple (plus VLAN, tunnel and IP version) a flow is stored
//! under, the symmetric match of a packet against it, and the symmetric hash.
//!
//! nfstream keys a flow by (IP pair, port pair, protocol, VLAN id, tunnel id) regardless of
//! direction (`meter.py: get_flow_key`): both endpoints `(ip, port)` are put in a canonical
//! order. Here a flow stores its key once, oriented as its first packet (src = the first
//! packet's sender), and a packet matches it in either orientation. That is the same
//! equivalence: two packets share a flow iff they have the same set of endpoints and the
//! same protocol, VLAN and tunnel. We also keep the IP version in the key, which nfstream
//! does not: an IPv4 address and the IPv6 address whose first 4 bytes equal it and whose
//! other 12 are zero would otherwise share flows.

use crate::wire::PacketMeta;

/// The symmetric flow hash the sharding uses (A→B and B→A equal), and its key modes.
/// Defined next to the shard rings; re-exported here because it is a property of the
/// flow key.
pub use crate::shard::{symmetric_hash, KeyMode};

/// A flow's key, oriented like its first packet. 42 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    /// Source IP of the first packet (IPv4: first 4 bytes, rest zero).
    pub src_ip: [u8; 16],
    /// Destination IP of the first packet.
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// 802.1Q VLAN id (nfstream: the innermost tag), 0 if untagged.
    pub vlan_id: u16,
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// nfstream's tunnel id (0 none, 1 GTP, 2 CAPWAP, 3 TZSP).
    pub tunnel_id: u8,
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 42);

/// How a packet relates to a flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Same orientation as the flow's first packet (nfstream direction 0).
    Src2Dst,
    /// Reversed (nfstream direction 1).
    Dst2Src,
}

impl FlowKey {
    /// The key of a flow whose first packet is `m`.
    #[inline]
    pub fn from_meta(m: &PacketMeta) -> FlowKey {
        FlowKey {
            src_ip: m.src_ip,
            dst_ip: m.dst_ip,
            src_port: m.src_port,
            dst_port: m.dst_port,
            vlan_id: m.vlan_id,
            protocol: m.protocol,
            ip_version: m.ip_version,
            tunnel_id: m.tunnel_id,
        }
    }

    /// Does `m` belong to this flow, and in which direction? Like nfstream's
    /// `flow_set_packet_direction`, a packet whose endpoints equal the flow's in both
    /// orientations (src == dst) counts as src→dst.
    #[inline]
    pub fn direction_of(&self, m: &PacketMeta) -> Option<Direction> {
        if self.protocol != m.protocol
            || self.vlan_id != m.vlan_id
            || self.tunnel_id != m.tunnel_id
            || self.ip_version != m.ip_version
        {
            return None;
        }
        if self.src_port == m.src_port
            && self.dst_port == m.dst_port
            && self.src_ip == m.src_ip
            && self.dst_ip == m.dst_ip
        {
            Some(Direction::Src2Dst)
        } else if self.src_port == m.dst_port
            && self.dst_port == m.src_port
            && self.src_ip == m.dst_ip
            && self.dst_ip == m.src_ip
        {
            Some(Direction::Dst2Src)
        } else {
            None
        }
    }
}

#[inline(always)]
fn mix(mut h: u64, v: u64) -> u64 {
    h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Hash of a packet's flow for the flow table's own index: symmetric, covers everything
/// [`FlowKey::direction_of`] compares (the shard hash leaves out the IP version).
#[inline]
pub fn table_hash(m: &PacketMeta) -> u64 {
    let a = (u128::from_be_bytes(m.src_ip), m.src_port);
    let b = (u128::from_be_bytes(m.dst_ip), m.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = 0x1319_8A2E_0370_7344u64;
    h = mix(h, lo.0 as u64);
    h = mix(h, (lo.0 >> 64) as u64);
    h = mix(h, hi.0 as u64);
    h = mix(h, (hi.0 >> 64) as u64);
    h = mix(
        h,
        u64::from(lo.1)
            | u64::from(hi.1) << 16
            | u64::from(m.protocol) << 32
            | u64::from(m.tunnel_id) << 40
            | u64::from(m.ip_version) << 48
            | u64::from(m.vlan_id & 0xff) << 56,
    );
    h = mix(h, u64::from(m.vlan_id >> 8));
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(a: [u8; 4], ap: u16, b: [u8; 4], bp: u16, proto: u8) -> PacketMeta {
        let mut m = PacketMeta::default();
        m.src_ip[..4].copy_from_slice(&a);
        m.dst_ip[..4].copy_from_slice(&b);
        m.src_port = ap;
        m.dst_port = bp;
        m.protocol = proto;
        m.ip_version = 4;
        m
    }

    fn rev(m: &PacketMeta) -> PacketMeta {
        let mut r = *m;
        std::mem::swap(&mut r.src_ip, &mut r.dst_ip);
        std::mem::swap(&mut r.src_port, &mut r.dst_port);
        r
    }

    #[test]
    fn direction_and_symmetric_hash() {
        let m = meta([198, 18, 0, 1], 40000, [198, 18, 0, 2], 80, 6);
        let k = FlowKey::from_meta(&m);
        assert_eq!(k.direction_of(&m), Some(Direction::Src2Dst));
        assert_eq!(k.direction_of(&rev(&m)), Some(Direction::Dst2Src));
        assert_eq!(table_hash(&m), table_hash(&rev(&m)));
        for mode in [KeyMode::FiveTuple, KeyMode::IpPair] {
            assert_eq!(symmetric_hash(&m, mode), symmetric_hash(&rev(&m), mode));
        }
        // Anything else in the key makes it another flow.
        let mut o = m;
        o.vlan_id = 7;
        assert_eq!(k.direction_of(&o), None);
        assert_ne!(table_hash(&m), table_hash(&o));
        let mut o = m;
        o.tunnel_id = 1;
        assert_eq!(k.direction_of(&o), None);
        let mut o = m;
        o.protocol = 17;
        assert_eq!(k.direction_of(&o), None);
        let mut o = m;
        o.ip_version = 6;
        assert_eq!(k.direction_of(&o), None);
        // Same ports, swapped only one side: not this flow.
        let o = meta([198, 18, 0, 2], 40000, [198, 18, 0, 1], 80, 6);
        assert_eq!(k.direction_of(&o), None);
    }

    #[test]
    fn self_flow_is_src2dst() {
        // src == dst endpoint (e.g. ICMP to itself): nfstream counts every packet src→dst.
        let m = meta([192, 0, 2, 1], 0, [192, 0, 2, 1], 0, 1);
        let k = FlowKey::from_meta(&m);
        assert_eq!(k.direction_of(&m), Some(Direction::Src2Dst));
        assert_eq!(k.direction_of(&rev(&m)), Some(Direction::Src2Dst));
    }
}
