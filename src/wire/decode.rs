//! Frame bytes → [`PacketMeta`], with nfstream's packet semantics.
//!
//! The walk: link header ([`LinkType`]) → EtherType chain (802.1Q/802.1ad tags, MPLS
//! labels, PPPoE session) → IP header(s) (IPv4 with options, IPv6 with extension headers;
//! IP-in-IP and 6in4 continue with the inner packet) → transport header (TCP, UDP, ICMP,
//! ICMPv6; GTP-U on UDP 2152 continues with the inner packet when
//! [`DecodeOptions::decode_tunnels`] is set). Every loop is bounded: tags by
//! [`MAX_TAGS`], tunnels by [`MAX_TUNNELS`], extension headers by the packet length.
//!
//! What nfstream defines and this reproduces (nfstream 6.6 `lib_engine.c`,
//! `packet_process` and friends): the innermost 802.1Q tag is the VLAN id; the innermost
//! IP packet of IP-in-IP, 6in4 and GTP-U is the flow (tunnel id 1 for GTP); later IP
//! fragments carry no flow; sizes come from the IP header's length fields, not from the
//! captured length; ports are 0 for everything but TCP and UDP; transport and payload
//! sizes are 0 for protocols other than TCP, UDP, ICMP and ICMPv6. Where nfstream is
//! wrong this does the right thing; `docs/wire-vs-nfstream.md` lists each case.

use super::ethernet::{EthernetFrame, Llc, LLC_SNAP_LEN};
use super::gtpu::{self, GtpuHeader};
use super::icmp::{self, IcmpHeader};
use super::ipv4::Ipv4Packet;
use super::ipv6::{self, walk_ext_headers, Ipv6Packet};
use super::loopback::LoopbackHeader;
use super::mpls::{MplsLabel, LABEL_LEN};
use super::pppoe::{ppp_protocol, PppoeSession};
use super::sll::{Sll2Header, SllHeader, SLL2_LEN, SLL_LEN};
use super::tcp::{self, TcpHeader};
use super::udp::{self, UdpHeader};
use super::vlan::{VlanTag, TAG_LEN};
use super::{
    ethernet, meta_flags, tunnel, DecodeOptions, EtherType, IpProtocol, PacketMeta, WireError,
};
use crate::capture::LinkType;

/// Most VLAN tags plus MPLS labels accepted in front of the IP header.
pub const MAX_TAGS: usize = 16;
/// Most tunnels (IP-in-IP, 6in4, GTP-U) entered before giving up with
/// [`WireError::TooDeep`].
pub const MAX_TUNNELS: usize = 4;

/// Decodes one frame. `orig_len` is the length on the wire (`wire_len`); `frame` is what
/// was captured of it. Never panics, never allocates.
pub fn decode(
    frame: &[u8],
    orig_len: u32,
    link: LinkType,
    opts: &DecodeOptions,
) -> Result<PacketMeta, WireError> {
    let mut m = PacketMeta {
        wire_len: orig_len,
        ..PacketMeta::default()
    };
    let (version, l3_off) = link_layer(frame, link, &mut m)?;
    ip_layers(frame, version, l3_off, opts, &mut m)?;
    Ok(m)
}

fn rest(frame: &[u8], off: usize) -> &[u8] {
    frame.get(off..).unwrap_or(&[])
}

/// The IP version the link layer announces and the offset of the IP header.
fn link_layer(frame: &[u8], link: LinkType, m: &mut PacketMeta) -> Result<(u8, usize), WireError> {
    match link {
        LinkType::Ethernet => {
            let eth = EthernetFrame::new_checked(frame)?;
            m.src_mac = eth.src_addr();
            m.dst_mac = eth.dst_addr();
            match eth.ethertype() {
                Some(t) => ethertype_chain(frame, t, ethernet::HEADER_LEN, m),
                None if eth.type_or_len() > 1500 => Err(WireError::NotIp),
                None => {
                    // 802.3 length: LLC follows; only SNAP can carry IP (an STP or other
                    // LLC frame is not IP, as nfstream's BSTP check and version test say).
                    let llc = Llc::new_checked(eth.payload())?;
                    match llc.snap_protocol()? {
                        Some(p) => ethertype_chain(
                            frame,
                            EtherType::from(p),
                            ethernet::HEADER_LEN + LLC_SNAP_LEN,
                            m,
                        ),
                        None => Err(WireError::NotIp),
                    }
                }
            }
        }
        LinkType::LinuxSll => {
            let h = SllHeader::new_checked(frame)?;
            ethertype_chain(frame, EtherType::from(h.protocol()), SLL_LEN, m)
        }
        LinkType::LinuxSll2 => {
            let h = Sll2Header::new_checked(frame)?;
            ethertype_chain(frame, EtherType::from(h.protocol()), SLL2_LEN, m)
        }
        LinkType::Null | LinkType::Loop => {
            let h = LoopbackHeader::new_checked(frame)?;
            let v = h.ip_version().ok_or(WireError::NotIp)?;
            Ok((v, super::loopback::HEADER_LEN))
        }
        LinkType::Raw => match frame.first() {
            Some(b) if b >> 4 == 4 || b >> 4 == 6 => Ok((b >> 4, 0)),
            Some(_) => Err(WireError::IpBadVersion),
            None => Err(WireError::LinkTrunc),
        },
        LinkType::Ipv4 => Ok((4, 0)),
        LinkType::Ipv6 => Ok((6, 0)),
    }
}

/// Follows VLAN tags, MPLS labels and PPPoE to the IP header.
fn ethertype_chain(
    frame: &[u8],
    mut ty: EtherType,
    mut off: usize,
    m: &mut PacketMeta,
) -> Result<(u8, usize), WireError> {
    for _ in 0..MAX_TAGS {
        match ty {
            EtherType::Ipv4 => return Ok((4, off)),
            EtherType::Ipv6 => return Ok((6, off)),
            EtherType::Vlan | EtherType::QinQ | EtherType::QinQLegacy => {
                let tag = VlanTag::new_checked(rest(frame, off))?;
                // The innermost tag wins, as in nfstream.
                m.vlan_id = tag.vid();
                ty = tag.ethertype();
                off += TAG_LEN;
            }
            EtherType::MplsUnicast | EtherType::MplsMulticast => {
                let label = MplsLabel::new_checked(rest(frame, off))?;
                off += LABEL_LEN;
                if label.bottom_of_stack() {
                    // No payload type in MPLS: the IP version nibble tells (an Ethernet
                    // pseudowire or anything else is not IP).
                    return match label.payload().first().map(|b| b >> 4) {
                        Some(4) => Ok((4, off)),
                        Some(6) => Ok((6, off)),
                        Some(_) => Err(WireError::NotIp),
                        None => Err(WireError::VlanTrunc),
                    };
                }
            }
            EtherType::PppoeSession => {
                let p = PppoeSession::new_checked(rest(frame, off))?;
                off += super::pppoe::HEADER_LEN;
                return match p.ppp_protocol() {
                    ppp_protocol::IPV4 => Ok((4, off)),
                    ppp_protocol::IPV6 => Ok((6, off)),
                    _ => Err(WireError::NotIp),
                };
            }
            _ => return Err(WireError::NotIp),
        }
    }
    Err(WireError::TooDeep)
}

fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

fn to_u16(v: usize) -> Result<u16, WireError> {
    u16::try_from(v).map_err(|_| WireError::TooDeep)
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Decodes the IP header at `off` and what follows, entering tunnels.
fn ip_layers(
    frame: &[u8],
    mut version: u8,
    mut off: usize,
    opts: &DecodeOptions,
    m: &mut PacketMeta,
) -> Result<(), WireError> {
    // End of the bytes that belong to the current packet: the frame, clipped by every
    // enclosing IP header's length (an inner packet cannot extend past its carrier).
    let mut limit = frame.len();
    let mut tunnels = 0usize;
    loop {
        let buf = frame.get(off..limit).unwrap_or(&[]);
        m.l3_off = to_u16(off)?;
        // (protocol, absolute transport offset, absolute end announced by the IP header)
        let (proto, l4_off, ip_end) = match version {
            4 => {
                let p = Ipv4Packet::new_checked(buf)?;
                if p.frag_offset() != 0 {
                    return Err(WireError::Ipv4FragLater);
                }
                if p.more_frags() {
                    m.flags |= meta_flags::FIRST_FRAGMENT;
                }
                m.ip_version = 4;
                m.src_ip = v4_mapped(p.src_addr());
                m.dst_ip = v4_mapped(p.dst_addr());
                m.ip_size = u32::from(p.total_len());
                (
                    p.protocol(),
                    off + p.header_len(),
                    off + usize::from(p.total_len()),
                )
            }
            6 => {
                let p = Ipv6Packet::new_checked(buf)?;
                let plen = p.declared_payload_len()?;
                let announced = p.rest().get(..plen).unwrap_or(p.rest());
                let chain = walk_ext_headers(p.next_header(), announced)?;
                if chain.first_fragment {
                    m.flags |= meta_flags::FIRST_FRAGMENT;
                }
                m.ip_version = 6;
                m.src_ip = p.src_addr();
                m.dst_ip = p.dst_addr();
                m.ip_size = to_u32(ipv6::HEADER_LEN.saturating_add(plen));
                (
                    chain.protocol,
                    off + ipv6::HEADER_LEN + chain.len,
                    off.saturating_add(ipv6::HEADER_LEN).saturating_add(plen),
                )
            }
            _ => return Err(WireError::IpBadVersion),
        };
        if limit < ip_end {
            m.flags |= meta_flags::TRUNCATED;
        } else {
            m.flags &= !meta_flags::TRUNCATED;
        }
        limit = limit.min(ip_end);
        m.protocol = u8::from(proto);
        m.l4_off = to_u16(l4_off)?;
        // Announced transport length, and the transport bytes both captured and announced.
        let l4_len = ip_end.saturating_sub(l4_off);
        let l4 = frame.get(l4_off..limit).unwrap_or(&[]);
        // A fresh inner packet must not inherit the carrier's transport fields.
        m.src_port = 0;
        m.dst_port = 0;
        m.tcp_flags = 0;
        m.icmp_type = 0;
        m.icmp_code = 0;
        m.transport_size = 0;
        m.payload_size = 0;
        match proto {
            IpProtocol::IpIp | IpProtocol::Ipv6 => {
                if tunnels == MAX_TUNNELS {
                    return Err(WireError::TooDeep);
                }
                tunnels += 1;
                m.flags |= meta_flags::TUNNELLED;
                version = if proto == IpProtocol::IpIp { 4 } else { 6 };
                off = l4_off;
                continue;
            }
            // An IP payload announced shorter than the transport's minimum header is kept
            // as nfstream keeps it (ports, flags, type 0; see `meta_flags::L4_SHORT`). A
            // header announced but not captured (snaplen) is a counted drop: its ports
            // are unknown, and nfstream would read them from past the capture.
            IpProtocol::Tcp if l4_len < tcp::MIN_HEADER_LEN => m.flags |= meta_flags::L4_SHORT,
            IpProtocol::Udp if l4_len < udp::HEADER_LEN => m.flags |= meta_flags::L4_SHORT,
            IpProtocol::Icmp | IpProtocol::Icmpv6 if l4_len < icmp::MIN_HEADER_LEN => {
                m.flags |= meta_flags::L4_SHORT;
                m.transport_size = to_u32(l4_len);
            }
            IpProtocol::Tcp => {
                let t = TcpHeader::new_checked(l4)?;
                m.src_port = t.src_port();
                m.dst_port = t.dst_port();
                m.tcp_flags = t.flags();
                m.transport_size = to_u32(l4_len);
                m.payload_size = to_u32(l4_len.saturating_sub(t.header_len()));
            }
            IpProtocol::Udp => {
                let u = UdpHeader::new_checked(l4)?;
                let (sport, dport) = (u.src_port(), u.dst_port());
                if opts.decode_tunnels && (sport == gtpu::PORT || dport == gtpu::PORT) {
                    if let Ok(g) = GtpuHeader::new_checked(u.payload()) {
                        if g.is_tpdu() {
                            let inner = l4_off + udp::HEADER_LEN + g.inner_offset()?;
                            version = match frame.get(inner).map(|b| b >> 4) {
                                Some(v @ (4 | 6)) => v,
                                Some(_) => return Err(WireError::NotIp),
                                None => return Err(WireError::GtpTrunc),
                            };
                            if tunnels == MAX_TUNNELS {
                                return Err(WireError::TooDeep);
                            }
                            tunnels += 1;
                            m.tunnel_id = tunnel::GTP;
                            m.flags |= meta_flags::TUNNELLED;
                            off = inner;
                            continue;
                        }
                    }
                }
                m.src_port = sport;
                m.dst_port = dport;
                m.transport_size = to_u32(l4_len);
                m.payload_size = to_u32(l4_len.saturating_sub(udp::HEADER_LEN));
            }
            IpProtocol::Icmp | IpProtocol::Icmpv6 => {
                let i = IcmpHeader::new_checked(l4)?;
                m.icmp_type = i.msg_type();
                m.icmp_code = i.code();
                m.transport_size = to_u32(l4_len);
                m.payload_size = to_u32(l4_len.saturating_sub(icmp::HEADER_LEN));
            }
            _ => {}
        }
        return Ok(());
    }
}
