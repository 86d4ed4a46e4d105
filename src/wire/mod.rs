//! Zero-copy views over frame bytes, and [`decode`]: frame → [`PacketMeta`].
//!
//! Contract (smoltcp style): every header type has a `new_checked` constructor; after it
//! succeeds no accessor can panic. The views hold their fixed header as a `&[u8; N]`, so
//! the accessors index arrays with constants: the compiler proves them in bounds, and
//! there is nothing left to panic. This module does no I/O and no allocation, and must
//! never panic on any input (it is the fuzz target).
//!
//! One file per header: [`ethernet`] (+ LLC/SNAP), [`vlan`], [`mpls`], [`pppoe`], [`sll`],
//! [`loopback`], [`ppp`], [`chdlc`], [`radiotap`], [`ieee80211`] (+ LLC/SNAP), [`nflog`],
//! [`ipv4`], [`ipv6`] (+ extension headers), [`tcp`], [`udp`], [`icmp`], [`gtpu`];
//! [`decode()`](decode::decode) in `decode.rs` ties them together with nfstream's packet
//! semantics (see `docs/wire-vs-nfstream.md` for where and why it differs).
#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
#![cfg_attr(
    test,
    allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

pub mod chdlc;
pub mod decode;
pub mod ethernet;
pub mod gtpu;
pub mod icmp;
pub mod ieee80211;
pub mod ipv4;
pub mod ipv6;
pub mod link;
pub mod loopback;
pub mod mpls;
pub mod nflog;
pub mod ppp;
pub mod pppoe;
pub mod radiotap;
pub mod sll;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use decode::decode;
pub use link::LinkType;

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
    /// The first of several fragments: an IPv4 header with MF set and offset 0, or an
    /// IPv6 Fragment header with M set and offset 0 (an atomic fragment, M clear, is a
    /// whole packet). Set if any IP layer of the packet, outer or inner, is one.
    pub const FIRST_FRAGMENT: u8 = 0x01;
    /// The captured bytes end before the (innermost) IP packet does: snaplen cut it, or
    /// it sits in an outer first fragment. Sizes still come from the IP header.
    pub const TRUNCATED: u8 = 0x02;
    /// The packet was found inside a tunnel (GTP-U, IP-in-IP, 6in4 ...).
    pub const TUNNELLED: u8 = 0x04;
    /// The IP payload is shorter than the transport's minimum header (TCP 20, UDP 8,
    /// ICMP/ICMPv6 4 bytes), e.g. a tiny first fragment. Kept, as nfstream keeps it:
    /// ports, TCP flags and ICMP type/code are 0; transport and payload sizes are 0 for
    /// TCP/UDP, and for ICMP the transport size is the IP payload length.
    pub const L4_SHORT: u8 = 0x08;
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
    /// Source MAC: Ethernet's source address, or an 802.11 data frame's source address
    /// (SA, wherever To DS / From DS put it); zero for link types without one.
    pub src_mac: [u8; 6],
    /// Destination MAC: Ethernet's destination address, or 802.11's DA.
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
    /// Offset of the transport header in the frame (after IPv6 extension headers);
    /// `l3_off < l4_off <= frame.len()`. For TCP/UDP/ICMP the header is captured there.
    pub l4_off: u16,
    /// Bytes at the end of the captured frame that belong to the link layer, not to the
    /// packet: the 802.11 FCS radiotap announces, or what follows NFLOG's payload TLV.
    /// The packet, and everything [`decode`] reads of it, ends at
    /// `frame.len() - trailer_len`; 0 for the other link types.
    pub trailer_len: u16,
    /// Frame length on the wire (pcap orig_len): accounting mode "link".
    pub wire_len: u32,
    /// IP length (nfstream's `ip_size`, accounting mode "ip"): IPv4 total length; IPv6
    /// header + payload length (40 + payload length field, or 40 + the Jumbo Payload
    /// length of a jumbogram).
    pub ip_size: u32,
    /// Transport length (accounting mode "transport"): the IP payload after the IP header
    /// and extension headers, as announced by the IP header, for TCP, UDP, ICMP and
    /// ICMPv6; 0 for every other protocol (as nfstream).
    pub transport_size: u32,
    /// Payload length (accounting mode "payload"): `transport_size` minus the TCP data
    /// offset, or minus 8 for UDP, ICMP and ICMPv6, floored at 0; 0 for other protocols.
    pub payload_size: u32,
}

const _: () = assert!(std::mem::size_of::<PacketMeta>() == 80);

impl PacketMeta {
    /// Checks the relations [`decode`] guarantees between a `PacketMeta` and the frame it
    /// was decoded from. The tests, the mutation run and the fuzz target call it on every
    /// decoded frame; `Err` names the first relation that does not hold.
    pub fn check_consistency(&self, frame: &[u8]) -> Result<(), &'static str> {
        let ensure = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(what) };
        // What the link layer gave the IP layer.
        let frame = frame
            .len()
            .checked_sub(usize::from(self.trailer_len))
            .and_then(|end| frame.get(..end))
            .ok_or("trailer_len longer than the frame")?;
        let (l3, l4) = (usize::from(self.l3_off), usize::from(self.l4_off));
        ensure(l3 < l4, "l3_off >= l4_off")?;
        ensure(l4 <= frame.len(), "l4_off beyond the frame")?;
        ensure(
            self.ip_version == 4 || self.ip_version == 6,
            "ip_version not 4 or 6",
        )?;
        let min_hdr = if self.ip_version == 4 { 20 } else { 40 };
        ensure(l4 - l3 >= min_hdr, "IP header shorter than its minimum")?;
        ensure(
            frame.get(l3).map(|b| b >> 4) == Some(self.ip_version),
            "no IP header of that version at l3_off",
        )?;
        ensure(
            self.payload_size <= self.transport_size,
            "payload_size > transport_size",
        )?;
        ensure(
            u64::from(self.transport_size) + (l4 - l3) as u64 <= u64::from(self.ip_size),
            "transport_size + headers > ip_size",
        )?;
        if self.ip_version == 4 {
            ensure(
                self.src_ip.iter().skip(4).all(|&b| b == 0)
                    && self.dst_ip.iter().skip(4).all(|&b| b == 0),
                "IPv4 address with non-zero bytes after the first 4",
            )?;
        }
        let cut = l3 as u64 + u64::from(self.ip_size) > frame.len() as u64;
        let flagged = self.flags & meta_flags::TRUNCATED != 0;
        if self.flags & meta_flags::TUNNELLED == 0 {
            ensure(cut == flagged, "TRUNCATED disagrees with the frame length")?;
        } else {
            ensure(!cut || flagged, "cut inner packet not flagged TRUNCATED")?;
        }
        if self.tunnel_id != tunnel::NONE {
            ensure(
                self.flags & meta_flags::TUNNELLED != 0,
                "tunnel_id without TUNNELLED",
            )?;
        }
        let short = self.flags & meta_flags::L4_SHORT != 0;
        let no_ports = self.src_port == 0 && self.dst_port == 0 && self.tcp_flags == 0;
        let no_icmp = self.icmp_type == 0 && self.icmp_code == 0;
        match self.protocol {
            6 | 17 if short => ensure(
                no_ports && no_icmp && self.transport_size == 0 && self.payload_size == 0,
                "short TCP/UDP with ports or sizes",
            ),
            1 | 58 if short => ensure(
                no_ports && no_icmp && self.payload_size == 0 && self.transport_size < 4,
                "short ICMP with type or sizes",
            ),
            6 => ensure(
                l4 + 20 <= frame.len() && self.transport_size >= 20 && no_icmp,
                "TCP header not captured",
            ),
            17 => ensure(
                l4 + 8 <= frame.len() && self.transport_size >= 8 && self.tcp_flags == 0,
                "UDP header not captured",
            ),
            1 | 58 => ensure(
                l4 + 4 <= frame.len() && no_ports,
                "ICMP header not captured",
            ),
            _ => ensure(
                no_ports && no_icmp && self.transport_size == 0 && self.payload_size == 0,
                "ports or transport size for a protocol without them",
            ),
        }
    }
}

/// Why a frame could not be turned into a [`PacketMeta`]. Each variant is a named drop
/// counter (`decoder.*`); see [`WireError::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Not IPv4/IPv6 (ARP, LLDP, STP, PPP control, Cisco SLARP/CDP, 802.11 EAPOL, an
    /// NFLOG record without packet bytes or of a non-IP family, a GTP T-PDU carrying
    /// something else ...): not an error, but not a flow packet either.
    NotIp,
    /// Frame shorter than its link-layer header (for 802.11: the data frame header, with
    /// LLC/SNAP; for NFLOG: the TLVs before the payload TLV).
    LinkTrunc,
    /// VLAN/MPLS/PPPoE tag stack cut short.
    VlanTrunc,
    /// IPv4 header (options included) not captured.
    Ipv4Trunc,
    /// IPv4 header length field < 5 (20 bytes).
    Ipv4BadHlen,
    /// IPv4 total length smaller than the header.
    Ipv4BadLen,
    /// Version nibble disagrees with the link type (e.g. IPv6 under LINKTYPE_IPV4).
    IpBadVersion,
    /// IPv4 fragment with offset > 0: counted at IP level, carries no ports, no flow.
    Ipv4FragLater,
    /// IPv6 fixed header not captured.
    Ipv6Trunc,
    /// Extension header chain cut short or malformed.
    Ipv6ExthdrTrunc,
    /// IPv6 fragment with offset > 0.
    Ipv6FragLater,
    /// The IP header announces a TCP header (>= 20 bytes) that was not captured.
    TcpTrunc,
    /// TCP data offset < 5.
    TcpBadHlen,
    /// The IP header announces a UDP header (>= 8 bytes) that was not captured.
    UdpTrunc,
    /// The IP header announces an ICMP/ICMPv6 header (>= 4 bytes: type, code, checksum)
    /// that was not captured.
    IcmpTrunc,
    /// GTP-U T-PDU whose header or extension chain is cut short or malformed, or that
    /// carries no captured byte of the inner packet.
    GtpTrunc,
    /// Too many nested tags or encapsulations (more than 16 VLAN/MPLS entries or 4 IP
    /// tunnels), or a transport header beyond the first 64 KiB of the frame, or more
    /// than 64 KiB of NFLOG TLVs after the payload (the offsets and `trailer_len` in
    /// [`PacketMeta`] are `u16`).
    TooDeep,
    /// A link-layer header whose fields contradict themselves: radiotap version not 0,
    /// length below 8 or bitmaps beyond it; NFLOG version not 0 or a TLV length below 4;
    /// an 802.11 protocol version other than 0.
    LinkBadHeader,
    /// 802.11 management frame (beacon, probe, (de)authentication ...) or extension frame
    /// (DMG/S1G beacon): no user data.
    WlanMgmt,
    /// 802.11 control frame (ACK, RTS, CTS, block ack ...): no user data.
    WlanCtrl,
    /// 802.11 data frame of a subtype without a body (Null, QoS Null, CF-Poll/CF-Ack
    /// without data): power-save signalling, no packet.
    WlanNullData,
    /// 802.11 data frame with the Protected bit set: the body is encrypted (WEP, TKIP,
    /// CCMP, GCMP) and cannot be decoded.
    WlanProtected,
    /// 802.11 data frame that is a later fragment of an MSDU (fragment number > 0): like
    /// an IP later fragment, it carries the middle of a packet.
    WlanFragLater,
    /// 802.11 QoS data frame whose body is an A-MSDU (several packets, each behind its own
    /// subframe header): not decoded.
    WlanAmsdu,
    /// Radiotap says the 802.11 frame failed its FCS check: its bytes cannot be trusted.
    WlanBadFcs,
}

impl WireError {
    pub const ALL: [WireError; 25] = [
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
        WireError::LinkBadHeader,
        WireError::WlanMgmt,
        WireError::WlanCtrl,
        WireError::WlanNullData,
        WireError::WlanProtected,
        WireError::WlanFragLater,
        WireError::WlanAmsdu,
        WireError::WlanBadFcs,
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
            WireError::LinkBadHeader => "decoder.link.bad_header",
            WireError::WlanMgmt => "decoder.wlan.mgmt",
            WireError::WlanCtrl => "decoder.wlan.ctrl",
            WireError::WlanNullData => "decoder.wlan.null_data",
            WireError::WlanProtected => "decoder.wlan.protected",
            WireError::WlanFragLater => "decoder.wlan.frag_later",
            WireError::WlanAmsdu => "decoder.wlan.amsdu",
            WireError::WlanBadFcs => "decoder.wlan.bad_fcs",
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

/// Splits off a fixed-size header as an array reference: the views' accessors then index
/// with constants, which the compiler checks.
pub(crate) fn split_header<const N: usize>(buf: &[u8]) -> Option<(&[u8; N], &[u8])> {
    buf.split_first_chunk::<N>()
}

/// EtherType values the decoder acts on; everything else is `Unknown` (not IP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    /// 802.1Q customer tag (0x8100).
    Vlan,
    /// 802.1ad service tag (0x88a8).
    QinQ,
    /// Pre-standard QinQ service tag (0x9100).
    QinQLegacy,
    Ipv6,
    MplsUnicast,
    MplsMulticast,
    PppoeDiscovery,
    PppoeSession,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x9100 => EtherType::QinQLegacy,
            0x86dd => EtherType::Ipv6,
            0x8847 => EtherType::MplsUnicast,
            0x8848 => EtherType::MplsMulticast,
            0x8863 => EtherType::PppoeDiscovery,
            0x8864 => EtherType::PppoeSession,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::QinQLegacy => 0x9100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::MplsUnicast => 0x8847,
            EtherType::MplsMulticast => 0x8848,
            EtherType::PppoeDiscovery => 0x8863,
            EtherType::PppoeSession => 0x8864,
            EtherType::Unknown(v) => v,
        }
    }
}

/// IP protocol / IPv6 next-header numbers the decoder acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    HopByHop,
    Icmp,
    /// IPv4 in IP (4).
    IpIp,
    Tcp,
    Udp,
    /// IPv6 in IP (41): 6in4, or IPv6 in IPv6.
    Ipv6,
    Ipv6Route,
    Ipv6Frag,
    Esp,
    Ah,
    Icmpv6,
    Ipv6NoNxt,
    Ipv6Opts,
    Ipv6Mobility,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            0 => IpProtocol::HopByHop,
            1 => IpProtocol::Icmp,
            4 => IpProtocol::IpIp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            41 => IpProtocol::Ipv6,
            43 => IpProtocol::Ipv6Route,
            44 => IpProtocol::Ipv6Frag,
            50 => IpProtocol::Esp,
            51 => IpProtocol::Ah,
            58 => IpProtocol::Icmpv6,
            59 => IpProtocol::Ipv6NoNxt,
            60 => IpProtocol::Ipv6Opts,
            135 => IpProtocol::Ipv6Mobility,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::IpIp => 4,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6 => 41,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Esp => 50,
            IpProtocol::Ah => 51,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Ipv6Mobility => 135,
            IpProtocol::Unknown(v) => v,
        }
    }
}

#[cfg(test)]
mod enum_tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in 0..=u8::MAX {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        for v in 0..=u16::MAX {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(EtherType::from(0x88a8), EtherType::QinQ);
    }

    #[test]
    fn error_names_are_unique_and_indexed() {
        let mut names: Vec<&str> = WireError::ALL.iter().map(|e| e.name()).collect();
        for (i, e) in WireError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(e.name().starts_with("decoder."));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), WireError::ALL.len());
    }
}
