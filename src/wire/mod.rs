//! Zero-copy views over frame bytes, and [`decode`]: frame → [`PacketMeta`].
//!
//! Contract (smoltcp style): every header type has a `new_checked` constructor; after it
//! succeeds no accessor can panic. This module does no I/O and no allocation, and must
//! never panic on any input (it is the fuzz target).

use crate::capture::LinkType;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Tunnel the flow was found in (nfstream's `tunnel_id` numbering, from nDPI's
/// `ndpi_packet_tunnel`: 0 none, 1 GTP, 2 CAPWAP, 3 TZSP).
pub mod tunnel {
    pub const NONE: u8 = 0;
    pub const GTP: u8 = 1;
    pub const CAPWAP: u8 = 2;
    pub const TZSP: u8 = 3;
}

/// Bits of [`PacketMeta::flags`].
pub mod meta_flags {
    /// IPv4 packet with MF set or a fragment header in IPv6 (a fragment at offset 0).
    pub const FIRST_FRAGMENT: u8 = 0x01;
    /// The captured bytes end before the IP packet does (snaplen cut it).
    pub const TRUNCATED: u8 = 0x02;
    /// The packet was found inside a tunnel (GTP-U, IP-in-IP, 6in4 ...).
    pub const TUNNELLED: u8 = 0x04;
}

/// Everything later stages need from one frame, decoded once. `Copy`, fixed size, no
/// references into the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PacketMeta {
    /// Source IP. IPv4 addresses use the first 4 bytes, the rest are zero.
    pub src_ip: [u8; 16],
    /// Destination IP, same layout as `src_ip`.
    pub dst_ip: [u8; 16],
    /// Ethernet source MAC (zero for link types without one).
    pub src_mac: [u8; 6],
    /// Ethernet destination MAC.
    pub dst_mac: [u8; 6],
    /// Transport source port (0 for ICMP, ICMPv6 and other protocols).
    pub src_port: u16,
    /// Transport destination port.
    pub dst_port: u16,
    /// 802.1Q VLAN id (12 bits) as nfstream takes it: the innermost tag; 0 if untagged.
    pub vlan_id: u16,
    /// One of [`tunnel`].
    pub tunnel_id: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Transport protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// TCP flags byte ([`tcp_flags`]), 0 for non-TCP.
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type (0 otherwise).
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code (0 otherwise).
    pub icmp_code: u8,
    /// Bits from [`meta_flags`].
    pub flags: u8,
    pub _pad: u8,
    /// Offset of the (innermost) IP header in the frame.
    pub l3_off: u16,
    /// Offset of the transport header in the frame.
    pub l4_off: u16,
    /// Frame length on the wire (pcap orig_len): accounting mode "link".
    pub wire_len: u32,
    /// IP length: IPv4 total length; IPv6 payload length (nfstream's `ip_size`).
    pub ip_size: u32,
    /// Transport length: IP payload after the IP header and extension headers.
    pub transport_size: u32,
    /// Payload length after the transport header.
    pub payload_size: u32,
}

const _: () = assert!(std::mem::size_of::<PacketMeta>() == 80);

/// Why a frame could not be turned into a [`PacketMeta`]. Each variant is a named drop
/// counter (`decoder.*`); see [`WireError::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Not IPv4/IPv6 (ARP, LLDP, STP ...): not an error, but not a flow packet either.
    NotIp,
    /// Frame shorter than its link-layer header.
    LinkTrunc,
    /// VLAN/MPLS/PPPoE tag stack cut short.
    VlanTrunc,
    Ipv4Trunc,
    /// IPv4 header length < 20 or larger than the packet.
    Ipv4BadHlen,
    /// IPv4 total length smaller than the header.
    Ipv4BadLen,
    /// Version nibble disagrees with the link type (e.g. IPv6 under LINKTYPE_IPV4).
    IpBadVersion,
    /// IPv4 fragment with offset > 0: counted at IP level, carries no ports, no flow.
    Ipv4FragLater,
    Ipv6Trunc,
    /// Extension header chain cut short or malformed.
    Ipv6ExthdrTrunc,
    /// IPv6 fragment with offset > 0.
    Ipv6FragLater,
    TcpTrunc,
    /// TCP data offset < 5.
    TcpBadHlen,
    UdpTrunc,
    IcmpTrunc,
    /// GTP-U header malformed or cut short.
    GtpTrunc,
    /// Too many nested encapsulations (IP-in-IP, tunnels).
    TooDeep,
}

impl WireError {
    pub const ALL: [WireError; 17] = [
        WireError::NotIp,
        WireError::LinkTrunc,
        WireError::VlanTrunc,
        WireError::Ipv4Trunc,
        WireError::Ipv4BadHlen,
        WireError::Ipv4BadLen,
        WireError::IpBadVersion,
        WireError::Ipv4FragLater,
        WireError::Ipv6Trunc,
        WireError::Ipv6ExthdrTrunc,
        WireError::Ipv6FragLater,
        WireError::TcpTrunc,
        WireError::TcpBadHlen,
        WireError::UdpTrunc,
        WireError::IcmpTrunc,
        WireError::GtpTrunc,
        WireError::TooDeep,
    ];

    /// Stable counter name (suricata style).
    pub const fn name(self) -> &'static str {
        match self {
            WireError::NotIp => "decoder.not_ip",
            WireError::LinkTrunc => "decoder.link.trunc_pkt",
            WireError::VlanTrunc => "decoder.vlan.trunc_pkt",
            WireError::Ipv4Trunc => "decoder.ipv4.trunc_pkt",
            WireError::Ipv4BadHlen => "decoder.ipv4.bad_hlen",
            WireError::Ipv4BadLen => "decoder.ipv4.bad_len",
            WireError::IpBadVersion => "decoder.ip.bad_version",
            WireError::Ipv4FragLater => "decoder.ipv4.frag_later",
            WireError::Ipv6Trunc => "decoder.ipv6.trunc_pkt",
            WireError::Ipv6ExthdrTrunc => "decoder.ipv6.trunc_exthdr",
            WireError::Ipv6FragLater => "decoder.ipv6.frag_later",
            WireError::TcpTrunc => "decoder.tcp.trunc_pkt",
            WireError::TcpBadHlen => "decoder.tcp.bad_hlen",
            WireError::UdpTrunc => "decoder.udp.trunc_pkt",
            WireError::IcmpTrunc => "decoder.icmp.trunc_pkt",
            WireError::GtpTrunc => "decoder.gtpu.trunc_pkt",
            WireError::TooDeep => "decoder.too_deep",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Decoder options (from config/CLI).
#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    /// Decode GTP-U (UDP 2152) and treat the inner packet as the flow (nfstream's
    /// `decode_tunnels`).
    pub decode_tunnels: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            decode_tunnels: true,
        }
    }
}

/// Decodes one frame. `orig_len` is the length on the wire (`wire_len`).
pub fn decode(
    frame: &[u8],
    orig_len: u32,
    link: LinkType,
    opts: &DecodeOptions,
) -> Result<PacketMeta, WireError> {
    let _ = (frame, orig_len, link, opts);
    Err(WireError::NotIp)
}
