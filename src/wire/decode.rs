//! Frame bytes → [`PacketMeta`], with nfstream's packet semantics.
//!
//! The walk: link header ([`LinkType`]: Ethernet, Linux SLL/SLL2, BSD loopback, raw IP,
//! PPP, Cisco HDLC, 802.11 with or without radiotap, NFLOG) → EtherType chain
//! (802.1Q/802.1ad tags, MPLS labels, PPPoE session) → IP header(s) (IPv4 with options, IPv6 with extension headers;
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

use super::chdlc::{self, ChdlcHeader};
use super::ethernet::{EthernetFrame, Llc, LLC_SNAP_LEN};
use super::gtpu::{self, GtpuHeader};
use super::icmp::{self, IcmpHeader};
use super::ieee80211::{self, DataFrame, FrameControl, LlcSnap};
use super::ipv4::Ipv4Packet;
use super::ipv6::{self, walk_ext_headers, Ipv6Packet};
use super::loopback::LoopbackHeader;
use super::mpls::{MplsLabel, LABEL_LEN};
use super::nflog::{self, NflogHeader};
use super::ppp::{self, PppHeader};
use super::pppoe::{ppp_protocol, PppoeSession};
use super::radiotap::{self, RadiotapHeader};
use super::sll::{Sll2Header, SllHeader, SLL2_LEN, SLL_LEN};
use super::tcp::{self, TcpHeader};
use super::udp::{self, UdpHeader};
use super::vlan::{VlanTag, TAG_LEN};
use super::LinkType;
use super::{
    ethernet, meta_flags, tunnel, DecodeOptions, EtherType, IpProtocol, PacketMeta, WireError,
};

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
    let l3 = link_layer(frame, orig_len, link, &mut m)?;
    // The link layer's payload ends at l3.end (before an FCS, or at the end of NFLOG's
    // payload TLV): the IP layers see nothing after it.
    m.trailer_len = to_u16(frame.len().saturating_sub(l3.end))?;
    let frame = frame.get(..l3.end).unwrap_or(frame);
    ip_layers(frame, l3.version, l3.off, opts, &mut m)?;
    Ok(m)
}

fn rest(frame: &[u8], off: usize) -> &[u8] {
    frame.get(off..).unwrap_or(&[])
}

/// Where the link layer puts the IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct L3 {
    /// The IP version the link layer announces.
    version: u8,
    /// Offset of the IP header.
    off: usize,
    /// End of the link layer's payload (`<= frame.len()`).
    end: usize,
}

/// An IP packet that runs to the end of the captured frame.
fn to_end(frame: &[u8], (version, off): (u8, usize)) -> L3 {
    L3 {
        version,
        off,
        end: frame.len(),
    }
}

/// The IP version the link layer announces, the offset of the IP header and the end of
/// the link layer's payload.
fn link_layer(
    frame: &[u8],
    orig_len: u32,
    link: LinkType,
    m: &mut PacketMeta,
) -> Result<L3, WireError> {
    let ip = match link {
        LinkType::Ethernet => {
            let eth = EthernetFrame::new_checked(frame)?;
            m.src_mac = eth.src_addr();
            m.dst_mac = eth.dst_addr();
            match eth.ethertype() {
                Some(t) => ethertype_chain(frame, t, ethernet::HEADER_LEN, m)?,
                None if eth.type_or_len() > 1500 => return Err(WireError::NotIp),
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
                        )?,
                        None => return Err(WireError::NotIp),
                    }
                }
            }
        }
        LinkType::LinuxSll => {
            let h = SllHeader::new_checked(frame)?;
            ethertype_chain(frame, EtherType::from(h.protocol()), SLL_LEN, m)?
        }
        LinkType::LinuxSll2 => {
            let h = Sll2Header::new_checked(frame)?;
            ethertype_chain(frame, EtherType::from(h.protocol()), SLL2_LEN, m)?
        }
        LinkType::Null | LinkType::Loop => {
            let h = LoopbackHeader::new_checked(frame)?;
            let v = h.ip_version().ok_or(WireError::NotIp)?;
            (v, super::loopback::HEADER_LEN)
        }
        LinkType::Raw => match frame.first() {
            Some(b) if b >> 4 == 4 || b >> 4 == 6 => (b >> 4, 0),
            Some(_) => return Err(WireError::IpBadVersion),
            None => return Err(WireError::LinkTrunc),
        },
        LinkType::Ipv4 => (4, 0),
        LinkType::Ipv6 => (6, 0),
        LinkType::Ppp | LinkType::PppHdlc => {
            // Cisco HDLC framing under a PPP link type (libpcap's LINKTYPE_PPP_HDLC
            // description, Wireshark and nfstream accept it): no PPP frame starts with
            // 0x0f or 0x8f (an odd first byte is a 1-byte protocol, and those are not
            // assigned).
            if frame.first().is_some_and(|&b| chdlc::is_address(b)) {
                chdlc_frame(frame, m)?
            } else {
                let h = PppHeader::new_checked(frame)?;
                let t = ppp::ethertype(h.protocol()).ok_or(WireError::NotIp)?;
                ethertype_chain(frame, t, h.header_len(), m)?
            }
        }
        LinkType::CHdlc => chdlc_frame(frame, m)?,
        LinkType::Ieee80211 => wlan_frame(frame, 0, false, m)?,
        LinkType::Ieee80211Radiotap => {
            let rt = RadiotapHeader::new_checked(frame)?;
            if rt.bad_fcs() {
                return Err(WireError::WlanBadFcs);
            }
            // With an FCS, the frame's last 4 bytes on the wire are not the packet's.
            // A capture cut by snaplen may hold none or part of them.
            let end = if rt.has_fcs() {
                let fcs_at = usize::try_from(orig_len)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(radiotap::FCS_LEN);
                frame.len().min(fcs_at)
            } else {
                frame.len()
            };
            let frame = frame.get(..end).ok_or(WireError::LinkTrunc)?;
            let (version, off) = wlan_frame(frame, rt.header_len(), rt.data_pad(), m)?;
            return Ok(L3 { version, off, end });
        }
        LinkType::Nflog => {
            let h = NflogHeader::new_checked(frame)?;
            let version = match h.family() {
                nflog::AF_INET => 4,
                nflog::AF_INET6 => 6,
                _ => return Err(WireError::NotIp),
            };
            let p = h.payload()?;
            return Ok(L3 {
                version,
                off: p.start,
                end: p.end,
            });
        }
    };
    Ok(to_end(frame, ip))
}

/// A Cisco HDLC frame: the protocol is an EtherType (SLARP and CDP are not IP).
fn chdlc_frame(frame: &[u8], m: &mut PacketMeta) -> Result<(u8, usize), WireError> {
    let h = ChdlcHeader::new_checked(frame)?;
    ethertype_chain(frame, EtherType::from(h.protocol()), chdlc::HEADER_LEN, m)
}

/// An 802.11 frame starting at `off`: only unprotected data frames with a body carry
/// packets; the body starts with LLC/SNAP. `pad`: radiotap's Data Pad flag.
fn wlan_frame(
    frame: &[u8],
    off: usize,
    pad: bool,
    m: &mut PacketMeta,
) -> Result<(u8, usize), WireError> {
    let buf = rest(frame, off);
    let fc = FrameControl::new_checked(buf)?;
    if fc.version() != 0 {
        return Err(WireError::LinkBadHeader);
    }
    match fc.frame_type() {
        ieee80211::frame_type::DATA => {}
        ieee80211::frame_type::CONTROL => return Err(WireError::WlanCtrl),
        _ => return Err(WireError::WlanMgmt),
    }
    if fc.is_null_data() {
        return Err(WireError::WlanNullData);
    }
    let d = DataFrame::new_checked(buf, pad)?;
    if fc.protected() {
        return Err(WireError::WlanProtected);
    }
    if d.fragment_number() != 0 {
        return Err(WireError::WlanFragLater);
    }
    if d.amsdu() {
        return Err(WireError::WlanAmsdu);
    }
    m.src_mac = d.src_addr();
    m.dst_mac = d.dst_addr();
    let llc = LlcSnap::new_checked(d.body())?;
    let t = llc.ethertype()?.ok_or(WireError::NotIp)?;
    ethertype_chain(
        frame,
        EtherType::from(t),
        off + d.header_len() + ieee80211::LLC_SNAP_LEN,
        m,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn eth(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = DST_MAC.to_vec();
        b.extend_from_slice(&SRC_MAC);
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn tag(vid: u16, inner: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = (0xa000 | vid).to_be_bytes().to_vec(); // PCP 5
        b.extend_from_slice(&inner.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn ipv4_with(proto: u8, flags_frag: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + options.len();
        let total = (hlen + payload.len()) as u16;
        let mut b = vec![0x40 | (hlen / 4) as u8, 0];
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&[0x12, 0x34]);
        b.extend_from_slice(&flags_frag.to_be_bytes());
        b.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        b.extend_from_slice(options);
        b.extend_from_slice(payload);
        b
    }

    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_with(proto, 0x4000, &[], payload)
    }

    fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = super::super::ipv6::tests::header(nh, payload.len() as u16);
        b.extend_from_slice(payload);
        b
    }

    fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = sport.to_be_bytes().to_vec();
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x60, flags, 0xff, 0xff, 0, 0, 0, 0]);
        b.extend_from_slice(&[2, 4, 5, 0xb4]); // MSS option: data offset 6
        b.extend_from_slice(payload);
        b
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = sport.to_be_bytes().to_vec();
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        b
    }

    fn icmp(ty: u8, code: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![ty, code, 0, 0, 0, 1, 0, 1];
        b.extend_from_slice(payload);
        b
    }

    fn gtpu(flags: u8, opt_and_ext: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut b = vec![flags, 0xff];
        b.extend_from_slice(&((opt_and_ext.len() + inner.len()) as u16).to_be_bytes());
        b.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        b.extend_from_slice(opt_and_ext);
        b.extend_from_slice(inner);
        b
    }

    fn dec(frame: &[u8], link: LinkType) -> Result<PacketMeta, WireError> {
        decode(frame, frame.len() as u32, link, &DecodeOptions::default())
    }

    fn dec_eth(frame: &[u8]) -> PacketMeta {
        dec(frame, LinkType::Ethernet).unwrap()
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        v4_mapped(a)
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let f = eth(0x0800, &ipv4(6, &tcp(40000, 443, 0x18, b"hello")));
        let m = dec_eth(&f);
        assert_eq!(m.src_mac, SRC_MAC);
        assert_eq!(m.dst_mac, DST_MAC);
        assert_eq!((m.ip_version, m.protocol), (4, 6));
        assert_eq!(m.src_ip, v4([10, 0, 0, 1]));
        assert_eq!(m.dst_ip, v4([10, 0, 0, 2]));
        assert_eq!((m.src_port, m.dst_port), (40000, 443));
        assert_eq!(m.tcp_flags, tcp_flags::ACK | tcp_flags::PSH);
        assert_eq!((m.vlan_id, m.tunnel_id, m.flags), (0, tunnel::NONE, 0));
        assert_eq!((m.l3_off, m.l4_off), (14, 34));
        assert_eq!(m.wire_len, f.len() as u32);
        // 20 IP + 24 TCP + 5 payload.
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (49, 29, 5));
    }

    use super::super::tcp_flags;

    #[test]
    fn sizes_come_from_the_ip_header_not_the_capture() {
        // Ethernet padding after a short UDP packet.
        let mut f = eth(0x0800, &ipv4(17, &udp(53, 5353, &[1, 2])));
        f.extend_from_slice(&[0; 16]);
        let m = decode(&f, 1000, LinkType::Ethernet, &DecodeOptions::default()).unwrap();
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (30, 10, 2));
        assert_eq!(m.wire_len, 1000);
        assert_eq!(m.flags, 0);
        // Snaplen cut the payload: sizes still from the header, TRUNCATED set.
        let f = eth(0x0800, &ipv4(6, &tcp(1, 2, 0x10, &[7; 100])));
        let m = dec_eth(&f[..70]);
        assert_eq!(
            (m.ip_size, m.transport_size, m.payload_size),
            (144, 124, 100)
        );
        assert_eq!(m.flags, meta_flags::TRUNCATED);
        assert_eq!((m.src_port, m.dst_port), (1, 2));
    }

    #[test]
    fn icmp_and_icmpv6() {
        let m = dec_eth(&eth(0x0800, &ipv4(1, &icmp(8, 0, &[0; 56]))));
        assert_eq!((m.protocol, m.icmp_type, m.icmp_code), (1, 8, 0));
        assert_eq!((m.src_port, m.dst_port), (0, 0));
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (84, 64, 56));
        let m = dec_eth(&eth(0x86dd, &ipv6(58, &icmp(135, 0, &[0; 16]))));
        assert_eq!((m.ip_version, m.protocol, m.icmp_type), (6, 58, 135));
        assert_eq!(m.src_ip[15], 1);
        assert_eq!((m.l3_off, m.l4_off), (14, 54));
        // ip_size is the whole IPv6 packet: 40 + payload length.
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (64, 24, 16));
    }

    #[test]
    fn other_protocols_have_no_ports_and_no_transport_size() {
        // GRE (47) carrying something: nfstream counts transport and payload as 0.
        let m = dec_eth(&eth(0x0800, &ipv4(47, &[0, 0, 0x08, 0x00, 0x45, 0, 0, 0])));
        assert_eq!(m.protocol, 47);
        assert_eq!((m.src_port, m.dst_port, m.tcp_flags), (0, 0, 0));
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (28, 0, 0));
        assert_eq!(m.l4_off, 34);
        // SCTP over IPv6.
        let m = dec_eth(&eth(0x86dd, &ipv6(132, &[0; 12])));
        assert_eq!((m.protocol, m.transport_size, m.ip_size), (132, 0, 52));
    }

    #[test]
    fn vlan_tags_keep_the_innermost_id() {
        let ip = ipv4(17, &udp(1, 2, &[]));
        let one = eth(0x8100, &tag(42, 0x0800, &ip));
        assert_eq!(dec_eth(&one).vlan_id, 42);
        assert_eq!(dec_eth(&one).l3_off, 18);
        let qinq = eth(0x8100, &tag(10, 0x8100, &tag(20, 0x0800, &ip)));
        assert_eq!(dec_eth(&qinq).vlan_id, 20);
        let ad = eth(0x88a8, &tag(200, 0x8100, &tag(2001, 0x0800, &ip)));
        let m = dec_eth(&ad);
        assert_eq!((m.vlan_id, m.l3_off), (2001, 22));
        let legacy = eth(0x9100, &tag(7, 0x0800, &ip));
        assert_eq!(dec_eth(&legacy).vlan_id, 7);
        let triple = eth(
            0x8100,
            &tag(
                30,
                0x8100,
                &tag(20, 0x8100, &tag(10, 0x86dd, &ipv6(59, &[]))),
            ),
        );
        let m = dec_eth(&triple);
        assert_eq!((m.vlan_id, m.ip_version, m.protocol), (10, 6, 59));
        // 802.1ad carrying ARP is not IP.
        let arp = eth(0x88a8, &tag(200, 0x8100, &tag(2001, 0x0806, &[0; 28])));
        assert_eq!(dec(&arp, LinkType::Ethernet), Err(WireError::NotIp));
        // A tag cut short.
        assert_eq!(
            dec(&eth(0x8100, &[0, 42, 8]), LinkType::Ethernet),
            Err(WireError::VlanTrunc)
        );
        // 17 tags: too deep.
        let mut inner = ip.clone();
        let mut ty = 0x0800;
        for _ in 0..17 {
            inner = tag(1, ty, &inner);
            ty = 0x8100;
        }
        assert_eq!(
            dec(&eth(0x8100, &inner), LinkType::Ethernet),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn mpls() {
        let ip = ipv4(6, &tcp(80, 1025, 0x12, &[]));
        let labels = |last: &[u8]| {
            let mut b = vec![0x00, 0x01, 0x20, 0x40]; // label 18, not bottom
            b.extend_from_slice(&[0x00, 0x02, 0x01, 0x40]); // label 32, bottom
            b.extend_from_slice(last);
            b
        };
        let m = dec_eth(&eth(0x8847, &labels(&ip)));
        assert_eq!((m.l3_off, m.protocol, m.src_port), (22, 6, 80));
        let m = dec_eth(&eth(0x8848, &labels(&ipv6(17, &udp(5, 6, &[])))));
        assert_eq!((m.ip_version, m.dst_port), (6, 6));
        // Ethernet pseudowire (control word 0): not IP.
        let pw = labels(&[0, 0, 0, 0, 0x02, 0, 0, 0]);
        assert_eq!(
            dec(&eth(0x8847, &pw), LinkType::Ethernet),
            Err(WireError::NotIp)
        );
        // Stack cut before the bottom label / before the payload.
        let cut = labels(&[]);
        assert_eq!(
            dec(&eth(0x8847, &cut[..6]), LinkType::Ethernet),
            Err(WireError::VlanTrunc)
        );
        assert_eq!(
            dec(&eth(0x8847, &cut), LinkType::Ethernet),
            Err(WireError::VlanTrunc)
        );
        // VLAN then MPLS.
        let m = dec_eth(&eth(0x8100, &tag(5, 0x8847, &labels(&ip))));
        assert_eq!((m.vlan_id, m.l3_off), (5, 26));
    }

    #[test]
    fn pppoe() {
        let sess = |proto: u16, payload: &[u8]| {
            let mut b = vec![0x11, 0x00, 0x00, 0x01];
            b.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
            b.extend_from_slice(&proto.to_be_bytes());
            b.extend_from_slice(payload);
            b
        };
        let m = dec_eth(&eth(0x8864, &sess(0x0021, &ipv4(17, &udp(1, 2, &[0; 4])))));
        assert_eq!((m.l3_off, m.ip_version, m.payload_size), (22, 4, 4));
        let m = dec_eth(&eth(0x8864, &sess(0x0057, &ipv6(17, &udp(1, 2, &[])))));
        assert_eq!(m.ip_version, 6);
        // LCP is not IP; PPPoE discovery is not IP.
        let lcp = eth(0x8864, &sess(0xc021, &[1, 1, 0, 4]));
        assert_eq!(dec(&lcp, LinkType::Ethernet), Err(WireError::NotIp));
        let padi = eth(0x8863, &[0x11, 0x09, 0, 0, 0, 0]);
        assert_eq!(dec(&padi, LinkType::Ethernet), Err(WireError::NotIp));
        // Cut inside the PPPoE header.
        let cut = eth(0x8864, &sess(0x0021, &[])[..7]);
        assert_eq!(dec(&cut, LinkType::Ethernet), Err(WireError::VlanTrunc));
        // A PPPoE length field smaller than the IP packet is ignored (as nfstream).
        let mut short = sess(0x0021, &ipv4(17, &udp(1, 2, &[0; 10])));
        short[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(dec_eth(&eth(0x8864, &short)).payload_size, 10);
    }

    #[test]
    fn llc_snap_and_8023() {
        let ip = ipv4(17, &udp(1, 2, &[]));
        let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
        snap.extend_from_slice(&ip);
        let m = dec_eth(&eth(snap.len() as u16, &snap));
        assert_eq!((m.l3_off, m.protocol), (22, 17));
        // STP (LLC 0x42) and other LLC frames are not IP.
        let stp = eth(38, &[0x42, 0x42, 0x03, 0, 0, 0, 0, 0]);
        assert_eq!(dec(&stp, LinkType::Ethernet), Err(WireError::NotIp));
        // The undefined range 1501..=1535 is neither a length nor an EtherType.
        assert_eq!(
            dec(&eth(1501, &ip), LinkType::Ethernet),
            Err(WireError::NotIp)
        );
        // SNAP cut short; LLC cut short.
        assert_eq!(
            dec(&eth(30, &snap[..6]), LinkType::Ethernet),
            Err(WireError::LinkTrunc)
        );
        assert_eq!(
            dec(&eth(30, &snap[..2]), LinkType::Ethernet),
            Err(WireError::LinkTrunc)
        );
    }

    #[test]
    fn other_link_types() {
        let ip4 = ipv4(6, &tcp(1, 2, 0x02, &[]));
        let ip6 = ipv6(17, &udp(3, 4, &[]));
        // Linux SLL v1 and v2.
        let mut sll = vec![0, 4, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip4);
        let m = dec(&sll, LinkType::LinuxSll).unwrap();
        assert_eq!((m.l3_off, m.src_port, m.src_mac), (16, 1, [0; 6]));
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&ip6);
        let m = dec(&sll2, LinkType::LinuxSll2).unwrap();
        assert_eq!((m.l3_off, m.ip_version, m.dst_port), (20, 6, 4));
        let mut sll_arp = sll2.clone();
        sll_arp[0..2].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(dec(&sll_arp, LinkType::LinuxSll2), Err(WireError::NotIp));
        assert_eq!(
            dec(&sll[..15], LinkType::LinuxSll),
            Err(WireError::LinkTrunc)
        );
        assert_eq!(
            dec(&sll2[..19], LinkType::LinuxSll2),
            Err(WireError::LinkTrunc)
        );
        // BSD loopback, both byte orders, both link types.
        for (link, af, ip) in [
            (LinkType::Null, [2, 0, 0, 0], &ip4),
            (LinkType::Null, [0, 0, 0, 2], &ip4),
            (LinkType::Null, [30, 0, 0, 0], &ip6),
            (LinkType::Loop, [0, 0, 0, 24], &ip6),
            (LinkType::Loop, [0, 0, 0, 28], &ip6),
        ] {
            let mut f = af.to_vec();
            f.extend_from_slice(ip);
            let m = dec(&f, link).unwrap();
            assert_eq!(m.l3_off, 4);
        }
        let mut af_bad = vec![0, 0, 0, 17];
        af_bad.extend_from_slice(&ip4);
        assert_eq!(dec(&af_bad, LinkType::Null), Err(WireError::NotIp));
        let mut mismatch = vec![2, 0, 0, 0];
        mismatch.extend_from_slice(&ip6);
        assert_eq!(dec(&mismatch, LinkType::Null), Err(WireError::IpBadVersion));
        assert_eq!(dec(&[2, 0, 0], LinkType::Null), Err(WireError::LinkTrunc));
        // Raw: the version nibble decides.
        assert_eq!(dec(&ip4, LinkType::Raw).unwrap().ip_version, 4);
        assert_eq!(dec(&ip6, LinkType::Raw).unwrap().ip_version, 6);
        assert_eq!(
            dec(&[0x50; 40], LinkType::Raw),
            Err(WireError::IpBadVersion)
        );
        assert_eq!(dec(&[], LinkType::Raw), Err(WireError::LinkTrunc));
        // A Raw IPv4 packet shorter than 28 bytes (nfstream ignores these).
        let tiny = ipv4(59, &[]);
        assert_eq!(dec(&tiny, LinkType::Raw).unwrap().ip_size, 20);
        // LINKTYPE_IPV4 / IPV6 insist on their version.
        assert_eq!(dec(&ip4, LinkType::Ipv4).unwrap().l3_off, 0);
        assert_eq!(dec(&ip6, LinkType::Ipv6).unwrap().l3_off, 0);
        assert_eq!(dec(&ip6, LinkType::Ipv4), Err(WireError::IpBadVersion));
        assert_eq!(dec(&ip4, LinkType::Ipv6), Err(WireError::IpBadVersion));
        // Ethernet saying IPv4 over an IPv6 packet.
        assert_eq!(
            dec(&eth(0x0800, &ip6), LinkType::Ethernet),
            Err(WireError::IpBadVersion)
        );
    }

    fn checked(frame: &[u8], orig_len: u32, link: LinkType) -> Result<PacketMeta, WireError> {
        let r = decode(frame, orig_len, link, &DecodeOptions::default());
        if let Ok(m) = &r {
            assert_eq!(m.check_consistency(frame), Ok(()), "{m:?}");
        }
        r
    }

    fn dec_ok(frame: &[u8], link: LinkType) -> PacketMeta {
        checked(frame, frame.len() as u32, link).unwrap()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn ppp() {
        let ip4 = ipv4(17, &udp(1, 2, &[0; 4]));
        let ip6 = ipv6(6, &tcp(3, 4, 0x02, &[]));
        for link in [LinkType::Ppp, LinkType::PppHdlc] {
            // 2-byte protocol, FF 03 framing, compressed 1-byte protocol, both.
            for (hdr, l3) in [
                (&[0x00, 0x21][..], 2),
                (&[0xff, 0x03, 0x00, 0x21], 4),
                (&[0x21], 1),
                (&[0xff, 0x03, 0x21], 3),
            ] {
                let m = dec_ok(&cat(&[hdr, &ip4]), link);
                assert_eq!((m.l3_off, m.ip_version, m.dst_port), (l3, 4, 2));
                assert_eq!((m.src_mac, m.dst_mac, m.trailer_len), ([0; 6], [0; 6], 0));
            }
            let m = dec_ok(&cat(&[&[0xff, 0x03, 0x00, 0x57], &ip6]), link);
            assert_eq!((m.l3_off, m.ip_version, m.src_port), (4, 6, 3));
            assert_eq!(dec_ok(&cat(&[&[0x57], &ip6]), link).l3_off, 1);
            // MPLS (unicast and multicast) through the same label handling as Ethernet's.
            let label = [0x00, 0x01, 0x21, 0x40]; // label 18, bottom of stack
            for proto in [[0x02, 0x81], [0x02, 0x83]] {
                let f = cat(&[&[0xff, 0x03], &proto, &label, &ip4]);
                let m = dec_ok(&f, link);
                assert_eq!((m.l3_off, m.protocol), (8, 17));
            }
            let f = cat(&[&[0xff, 0x03, 0x02, 0x81], &label]);
            assert_eq!(dec(&f, link), Err(WireError::VlanTrunc));
            // Cisco HDLC framing under a PPP link type.
            let m = dec_ok(&cat(&[&[0x0f, 0x00, 0x08, 0x00], &ip4]), link);
            assert_eq!(m.l3_off, 4);
            let slarp = cat(&[&[0x8f, 0x00, 0x80, 0x35], &[0; 20]]);
            assert_eq!(dec(&slarp, link), Err(WireError::NotIp));
            // LCP, IPCP, VJ-compressed TCP, an EtherType in the protocol field: not IP.
            for proto in [[0xc0, 0x21], [0x80, 0x21], [0x00, 0x2d], [0x08, 0x00]] {
                let f = cat(&[&[0xff, 0x03], &proto, &ip4]);
                assert_eq!(dec(&f, link), Err(WireError::NotIp), "{proto:?}");
            }
            // Cut, and an IPv6 packet behind the IPv4 protocol.
            for cut in [&[][..], &[0x00], &[0xff, 0x03], &[0xff, 0x03, 0x00]] {
                assert_eq!(dec(cut, link), Err(WireError::LinkTrunc), "{cut:?}");
            }
            assert_eq!(dec(&[0x00, 0x21, 0x45], link), Err(WireError::Ipv4Trunc));
            assert_eq!(
                dec(&cat(&[&[0x00, 0x21], &ip6]), link),
                Err(WireError::IpBadVersion)
            );
        }
    }

    #[test]
    fn cisco_hdlc() {
        let ip4 = ipv4(1, &icmp(8, 0, &[0; 8]));
        let m = dec_ok(&cat(&[&[0x0f, 0x00, 0x08, 0x00], &ip4]), LinkType::CHdlc);
        assert_eq!((m.l3_off, m.protocol, m.icmp_type), (4, 1, 8));
        let ip6 = ipv6(17, &udp(5, 6, &[]));
        let m = dec_ok(&cat(&[&[0x8f, 0x00, 0x86, 0xdd], &ip6]), LinkType::CHdlc);
        assert_eq!((m.l3_off, m.ip_version), (4, 6));
        // MPLS, and a VLAN tag: the EtherType chain.
        let f = cat(&[&[0x0f, 0x00, 0x88, 0x47], &[0x00, 0x01, 0x21, 0x40], &ip4]);
        assert_eq!(dec_ok(&f, LinkType::CHdlc).l3_off, 8);
        let f = cat(&[&[0x0f, 0x00, 0x81, 0x00], &tag(7, 0x0800, &ip4)]);
        assert_eq!(dec_ok(&f, LinkType::CHdlc).vlan_id, 7);
        // SLARP and CDP are not IP.
        for proto in [[0x80, 0x35], [0x20, 0x00]] {
            let f = cat(&[&[0x8f, 0x00], &proto, &[0; 20]]);
            assert_eq!(dec(&f, LinkType::CHdlc), Err(WireError::NotIp));
        }
        assert_eq!(
            dec(&[0x0f, 0x00, 0x08], LinkType::CHdlc),
            Err(WireError::LinkTrunc)
        );
        assert_eq!(
            dec(&[0x0f, 0x00, 0x08, 0x00, 0x45], LinkType::CHdlc),
            Err(WireError::Ipv4Trunc)
        );
    }

    use super::super::ieee80211::tests::{header as wlan_hdr, A1, A2, A3, A4};

    const SNAP_IPV4: [u8; 8] = [0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
    const SNAP_IPV6: [u8; 8] = [0xaa, 0xaa, 0x03, 0, 0, 0, 0x86, 0xdd];

    #[test]
    fn ieee80211_data_frames() {
        let l = LinkType::Ieee80211;
        let ip4 = ipv4(17, &udp(61738, 53, &[0; 12]));
        // QoS data to the AP (zeek's wlanmon.pcap): 26-byte header, SA = addr2, DA = addr3.
        let f = cat(&[&wlan_hdr(0x88, 0x01, 0x0060, &[0, 0]), &SNAP_IPV4, &ip4]);
        let m = dec_ok(&f, l);
        assert_eq!((m.l3_off, m.src_port, m.dst_port), (34, 61738, 53));
        assert_eq!((m.src_mac, m.dst_mac), (A2, A3));
        // Data from the AP, IPv6: SA = addr3, DA = addr1.
        let ip6 = ipv6(17, &udp(5353, 5353, &[]));
        let f = cat(&[&wlan_hdr(0x08, 0x02, 0, &[]), &SNAP_IPV6, &ip6]);
        let m = dec_ok(&f, l);
        assert_eq!((m.l3_off, m.ip_version), (32, 6));
        assert_eq!((m.src_mac, m.dst_mac), (A3, A1));
        // Ad hoc (no DS bits): SA = addr2, DA = addr1.
        let f = cat(&[&wlan_hdr(0x08, 0x00, 0, &[]), &SNAP_IPV4, &ip4]);
        assert_eq!((dec_ok(&f, l).src_mac, dec_ok(&f, l).dst_mac), (A2, A1));
        // Four addresses (WDS): 30-byte header, SA = addr4, DA = addr3.
        let f = cat(&[&wlan_hdr(0x08, 0x03, 0, &[]), &SNAP_IPV4, &ip4]);
        let m = dec_ok(&f, l);
        assert_eq!((m.l3_off, m.src_mac, m.dst_mac), (38, A4, A3));
        // QoS data with +HTC (tcpdump's ieee802.11_htc.pcap): 26 + 4.
        let f = cat(&[
            &wlan_hdr(0x88, 0x81, 0, &[0, 0, 1, 2, 3, 4]),
            &SNAP_IPV4,
            &ip4,
        ]);
        assert_eq!(dec_ok(&f, l).l3_off, 38);
        // QoS + HTC + 4 addresses.
        let f = cat(&[
            &wlan_hdr(0x88, 0x83, 0, &[0, 0, 1, 2, 3, 4]),
            &SNAP_IPV4,
            &ip4,
        ]);
        assert_eq!(dec_ok(&f, l).l3_off, 44);
        // The Order bit on a non-QoS data frame adds no HT Control.
        let f = cat(&[&wlan_hdr(0x08, 0x81, 0, &[]), &SNAP_IPV4, &ip4]);
        assert_eq!(dec_ok(&f, l).l3_off, 32);
        // The 802.1H bridge-tunnel OUI; a VLAN tag behind SNAP.
        let f = cat(&[
            &wlan_hdr(0x08, 0x01, 0, &[]),
            &[0xaa, 0xaa, 0x03, 0, 0, 0xf8, 0x08, 0x00],
            &ip4,
        ]);
        assert_eq!(dec_ok(&f, l).l3_off, 32);
        let f = cat(&[
            &wlan_hdr(0x08, 0x01, 0, &[]),
            &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x81, 0x00],
            &tag(9, 0x0800, &ip4),
        ]);
        assert_eq!(dec_ok(&f, l).vlan_id, 9);
        // The first fragment of a fragmented MSDU is decoded (cut: TRUNCATED).
        let f = cat(&[&wlan_hdr(0x08, 0x05, 0x0070, &[]), &SNAP_IPV4, &ip4[..30]]);
        assert_eq!(dec_ok(&f, l).flags, meta_flags::TRUNCATED);
    }

    #[test]
    fn ieee80211_frames_without_packets() {
        let l = LinkType::Ieee80211;
        let ip4 = ipv4(17, &udp(1, 2, &[]));
        let data = |fc0: u8, fc1: u8, seq: u16, tail: &[u8]| {
            cat(&[&wlan_hdr(fc0, fc1, seq, tail), &SNAP_IPV4, &ip4])
        };
        let cases: [(Vec<u8>, WireError); 14] = [
            // Beacon, probe request, deauthentication; an extension frame.
            (wlan_hdr(0x80, 0x00, 0, &[0; 12]), WireError::WlanMgmt),
            (wlan_hdr(0x40, 0x00, 0, &[]), WireError::WlanMgmt),
            (wlan_hdr(0xc0, 0x00, 0, &[3, 0]), WireError::WlanMgmt),
            (wlan_hdr(0x0c, 0x00, 0, &[]), WireError::WlanMgmt),
            // ACK (10 bytes), RTS (16 bytes).
            (cat(&[&[0xd4, 0x00, 0, 0], &A1]), WireError::WlanCtrl),
            (cat(&[&[0xb4, 0x00, 0, 0], &A1, &A2]), WireError::WlanCtrl),
            // Null function, QoS Null.
            (wlan_hdr(0x48, 0x11, 0, &[]), WireError::WlanNullData),
            (wlan_hdr(0xc8, 0x01, 0, &[0, 0]), WireError::WlanNullData),
            // Protected data (libpcap's Network_Join_Nokia_Mobile.pcap), protected QoS data.
            (data(0x08, 0x41, 0, &[]), WireError::WlanProtected),
            (data(0x88, 0x42, 0, &[0, 0]), WireError::WlanProtected),
            // Fragment 1 of an MSDU; an A-MSDU.
            (data(0x08, 0x01, 0x0071, &[]), WireError::WlanFragLater),
            (data(0x88, 0x01, 0, &[0x80, 0]), WireError::WlanAmsdu),
            // Protocol version 1; EAPOL behind SNAP.
            (data(0x09, 0x01, 0, &[]), WireError::LinkBadHeader),
            (
                cat(&[
                    &wlan_hdr(0x08, 0x01, 0, &[]),
                    &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x88, 0x8e],
                    &[1, 3, 0, 0],
                ]),
                WireError::NotIp,
            ),
        ];
        for (f, want) in &cases {
            assert_eq!(dec(f, l), Err(*want), "{}", want.name());
        }
        // Not SNAP; SNAP with another OUI (Cisco); cut LLC; cut header; one byte.
        let f = cat(&[&wlan_hdr(0x08, 0x01, 0, &[]), &[0x42, 0x42, 0x03, 0, 0]]);
        assert_eq!(dec(&f, l), Err(WireError::NotIp));
        let f = cat(&[
            &wlan_hdr(0x08, 0x01, 0, &[]),
            &[0xaa, 0xaa, 0x03, 0, 0, 0x0c, 0x20, 0x00],
        ]);
        assert_eq!(dec(&f, l), Err(WireError::NotIp));
        let f = data(0x08, 0x01, 0, &[]);
        assert_eq!(dec(&f[..24 + 7], l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&f[..24 + 2], l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&f[..24], l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&f[..23], l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&f[..1], l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&f[..24 + 8 + 10], l), Err(WireError::Ipv4Trunc));
    }

    use super::super::radiotap::tests::header as rt_hdr;

    #[test]
    fn radiotap() {
        let l = LinkType::Ieee80211Radiotap;
        let ip4 = ipv4(6, &tcp(49417, 80, 0x02, &[]));
        let wlan = cat(&[&wlan_hdr(0x08, 0x01, 0, &[]), &SNAP_IPV4, &ip4]);
        let fcs = [0xde, 0xad, 0xbe, 0xef];
        // Flags 0x10 (FCS at the end), as in zeek's radiotap.pcap and arkime's
        // 80211http.pcap: the 4 FCS bytes are the link's, not the packet's.
        let rt = rt_hdr(&[0x0000_0002], &[0x10, 0, 0, 0]);
        let f = cat(&[&rt, &wlan, &fcs]);
        let m = dec_ok(&f, l);
        assert_eq!((m.l3_off, m.trailer_len, m.flags), (12 + 32, 4, 0));
        assert_eq!(
            (m.src_port, m.tcp_flags, m.wire_len),
            (49417, 2, f.len() as u32)
        );
        assert_eq!((m.src_mac, m.dst_mac), (A2, A3));
        // Without the FCS flag nothing is cut off (the IP length bounds the packet).
        let rt0 = rt_hdr(&[0x0000_0002], &[0, 0, 0, 0]);
        let m = dec_ok(&cat(&[&rt0, &wlan, &fcs]), l);
        assert_eq!((m.trailer_len, m.flags), (0, 0));
        // A TCP header that only fits by taking the FCS bytes: cut, and seen as cut only
        // when the FCS is known to be there.
        let short = &wlan[..wlan.len() - 8];
        let f = cat(&[&rt, short, &fcs]);
        assert_eq!(checked(&f, f.len() as u32, l), Err(WireError::TcpTrunc));
        let f0 = cat(&[&rt0, short, &fcs]);
        assert_eq!(dec_ok(&f0, l).src_port, 49417);
        // An IP packet running 4 bytes into the FCS: TRUNCATED.
        let f = cat(&[&rt, &wlan[..wlan.len() - 4], &fcs]);
        assert_eq!(dec_ok(&f, l).flags, meta_flags::TRUNCATED);
        // Snaplen: the FCS was not captured (nothing to cut), or only part of it.
        let f = cat(&[&rt, &wlan]);
        let m = checked(&f, f.len() as u32 + 4, l).unwrap();
        assert_eq!((m.trailer_len, m.flags), (0, 0));
        let f = cat(&[&rt, &wlan, &fcs[..2]]);
        let m = checked(&f, f.len() as u32 + 2, l).unwrap();
        assert_eq!(m.trailer_len, 2);
        let f = cat(&[&rt, &wlan[..74]]);
        let m = checked(&f, f.len() as u32 + 100, l).unwrap();
        assert_eq!((m.trailer_len, m.flags), (0, meta_flags::TRUNCATED));
        // Extended bitmaps and TSFT (arkime): Flags at 24, header 36.
        let mut fields = vec![0u8; 24];
        fields[12] = 0x10;
        let rt2 = rt_hdr(&[0xa000_402f, 0x0000_0820], &fields);
        let m = dec_ok(&cat(&[&rt2, &wlan, &fcs]), l);
        assert_eq!((m.l3_off, m.trailer_len), (36 + 32, 4));
        // Data Pad: a 26-byte QoS header padded to 28.
        let rt_pad = rt_hdr(&[0x0000_0002], &[0x20, 0, 0, 0]);
        let qos = cat(&[
            &wlan_hdr(0x88, 0x01, 0, &[0, 0, 0xee, 0xee]),
            &SNAP_IPV4,
            &ip4,
        ]);
        let m = dec_ok(&cat(&[&rt_pad, &qos]), l);
        assert_eq!(m.l3_off, 12 + 28 + 8);
        // Bad FCS; management and control frames; a protected frame.
        let rt_bad = rt_hdr(&[0x0000_0002], &[0x50, 0, 0, 0]);
        assert_eq!(
            dec(&cat(&[&rt_bad, &wlan, &fcs]), l),
            Err(WireError::WlanBadFcs)
        );
        let beacon = wlan_hdr(0x80, 0x00, 0, &[0; 12]);
        assert_eq!(dec(&cat(&[&rt0, &beacon]), l), Err(WireError::WlanMgmt));
        assert_eq!(
            dec(&cat(&[&rt0, &[0xd4, 0, 0, 0], &A1]), l),
            Err(WireError::WlanCtrl)
        );
        let mut prot = wlan.clone();
        prot[1] |= 0x40;
        assert_eq!(dec(&cat(&[&rt0, &prot]), l), Err(WireError::WlanProtected));
        // Malformed radiotap: version 1, length below 8, length beyond the frame; a frame
        // whose FCS leaves no room for the 802.11 header.
        let mut v1 = cat(&[&rt0, &wlan]);
        v1[0] = 1;
        assert_eq!(dec(&v1, l), Err(WireError::LinkBadHeader));
        let mut short_len = cat(&[&rt0, &wlan]);
        short_len[2] = 4;
        assert_eq!(dec(&short_len, l), Err(WireError::LinkBadHeader));
        assert_eq!(dec(&rt[..10], l), Err(WireError::LinkTrunc));
        let f = cat(&[&rt, &[0x08]]);
        assert_eq!(dec(&f, l), Err(WireError::LinkTrunc));
        assert_eq!(checked(&f, 3, l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&[], l), Err(WireError::LinkTrunc));
    }

    use super::super::nflog::tests::{record as nflog_record, tlv as nflog_tlv};

    #[test]
    fn nflog() {
        let l = LinkType::Nflog;
        let ip4 = ipv4(6, &tcp(54064, 80, 0x02, &[0; 3])); // 47 bytes: 1 byte of padding
        for be in [false, true] {
            let f = nflog_record(2, &ip4, be);
            let m = dec_ok(&f, l);
            assert_eq!((m.l3_off, m.src_port, m.ip_size), (28, 54064, 47));
            assert_eq!((m.trailer_len, m.flags, m.src_mac), (1, 0, [0; 6]));
            let ip6 = ipv6(17, &udp(53, 42585, &[0; 4]));
            let m = dec_ok(&nflog_record(10, &ip6, be), l);
            assert_eq!((m.ip_version, m.dst_port, m.trailer_len), (6, 42585, 0));
        }
        // TLVs after the payload: the packet ends with its TLV.
        let mut f = nflog_record(2, &ip4, false);
        f.extend(nflog_tlv(11, &[0, 0, 3, 232], false));
        let m = dec_ok(&f, l);
        assert_eq!((m.trailer_len, m.flags), (9, 0));
        // An IP header claiming more than its TLV holds: cut, though bytes follow.
        let mut long = ip4.clone();
        long[3] += 8;
        let mut f = nflog_record(2, &long, false);
        f.extend(nflog_tlv(11, &[0; 8], false));
        assert_eq!(dec_ok(&f, l).flags, meta_flags::TRUNCATED);
        // Snaplen inside the payload.
        let f = nflog_record(2, &ip4, false);
        let m = checked(&f[..28 + 45], f.len() as u32, l).unwrap();
        assert_eq!((m.flags, m.trailer_len), (meta_flags::TRUNCATED, 0));
        assert_eq!(
            checked(&f[..28 + 10], f.len() as u32, l),
            Err(WireError::Ipv4Trunc)
        );
        // The family decides: another family is not IP; IPv6 under AF_INET is bad.
        assert_eq!(dec(&nflog_record(7, &ip4, false), l), Err(WireError::NotIp));
        assert_eq!(
            dec(&nflog_record(2, &ipv6(59, &[]), false), l),
            Err(WireError::IpBadVersion)
        );
        // No payload TLV; version 1; a TLV length of 2; cut.
        let mut none = vec![2, 0, 0, 1];
        none.extend(nflog_tlv(1, &[8, 0, 1, 0], false));
        assert_eq!(dec(&none, l), Err(WireError::NotIp));
        let mut v1 = nflog_record(2, &ip4, false);
        v1[1] = 1;
        assert_eq!(dec(&v1, l), Err(WireError::LinkBadHeader));
        let mut bad = nflog_record(2, &ip4, false);
        bad[4] = 2;
        assert_eq!(dec(&bad, l), Err(WireError::LinkBadHeader));
        assert_eq!(dec(&f[..10], l), Err(WireError::LinkTrunc));
        assert_eq!(dec(&f[..3], l), Err(WireError::LinkTrunc));
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let opts = [0x94, 0x04, 0x00, 0x00];
        let m = dec_eth(&eth(
            0x0800,
            &ipv4_with(17, 0, &opts, &udp(67, 68, &[0; 10])),
        ));
        assert_eq!(
            (m.l4_off, m.src_port, m.ip_size, m.transport_size),
            (38, 67, 42, 18)
        );
        // First fragment: ports, FIRST_FRAGMENT, sizes of this fragment.
        let first = eth(
            0x0800,
            &ipv4_with(17, 0x2000, &[], &udp(53, 1234, &[0; 32])),
        );
        let m = dec_eth(&first);
        assert_eq!(m.flags, meta_flags::FIRST_FRAGMENT);
        assert_eq!((m.src_port, m.transport_size, m.payload_size), (53, 40, 32));
        // Later fragments: counted, no flow, whatever they carry.
        for ff in [0x2001u16, 0x0010, 0x3fff] {
            let later = eth(0x0800, &ipv4_with(17, ff, &[], &[0; 16]));
            assert_eq!(
                dec(&later, LinkType::Ethernet),
                Err(WireError::Ipv4FragLater)
            );
        }
        let later_ipip = eth(0x0800, &ipv4_with(4, 0x0004, &[], &ipv4(6, &[0; 20])));
        assert_eq!(
            dec(&later_ipip, LinkType::Ethernet),
            Err(WireError::Ipv4FragLater)
        );
        // A TCP SYN whose options go on in the next fragment (fragments/fragmented-syn).
        let mut seg = tcp(1000, 80, 0x02, &[]);
        seg[12] = 0xa0; // data offset 10 (40 bytes), only 24 in this fragment
        let m = dec_eth(&eth(0x0800, &ipv4_with(6, 0x2000, &[], &seg)));
        assert_eq!(
            (m.src_port, m.tcp_flags, m.transport_size, m.payload_size),
            (1000, 2, 24, 0)
        );
    }

    #[test]
    fn ipv6_extension_headers() {
        // HbH -> Routing -> DestOpts -> UDP
        let mut ext = vec![43, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&udp(53, 53, &[0; 5]));
        let m = dec_eth(&eth(0x86dd, &ipv6(0, &ext)));
        assert_eq!((m.protocol, m.l4_off, m.src_port), (17, 14 + 40 + 24, 53));
        assert_eq!(
            (m.ip_size, m.transport_size, m.payload_size),
            (40 + 37, 13, 5)
        );
        // First fragment (M set) and atomic fragment; later fragment.
        let frag = |off_m: u16, payload: &[u8]| {
            let mut b = vec![17, 0];
            b.extend_from_slice(&off_m.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 9]);
            b.extend_from_slice(payload);
            b
        };
        let m = dec_eth(&eth(0x86dd, &ipv6(44, &frag(1, &udp(1, 2, &[0; 8])))));
        assert_eq!(
            (m.flags, m.src_port, m.transport_size),
            (meta_flags::FIRST_FRAGMENT, 1, 16)
        );
        let m = dec_eth(&eth(0x86dd, &ipv6(44, &frag(0, &udp(1, 2, &[])))));
        assert_eq!(m.flags, 0);
        assert_eq!(
            dec(
                &eth(0x86dd, &ipv6(44, &frag(0x0b91, &[0; 8]))),
                LinkType::Ethernet
            ),
            Err(WireError::Ipv6FragLater)
        );
        // AH ends the walk (as in nDPI): protocol 51, no ports, no transport size.
        let m = dec_eth(&eth(
            0x86dd,
            &ipv6(51, &[58, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]),
        ));
        assert_eq!((m.protocol, m.transport_size, m.l4_off), (51, 0, 54));
        // An extension header longer than the payload length says: cut.
        let mut f = eth(0x86dd, &ipv6(0, &[17, 1, 0, 0, 0, 0, 0, 0]));
        f.extend_from_slice(&[0; 8]); // bytes present, but beyond the payload length
        assert_eq!(dec(&f, LinkType::Ethernet), Err(WireError::Ipv6ExthdrTrunc));
        // Announced but not captured.
        let f = eth(
            0x86dd,
            &ipv6(0, &[17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        );
        assert_eq!(
            dec(&f[..f.len() - 1], LinkType::Ethernet),
            Err(WireError::Ipv6ExthdrTrunc)
        );
        // IPv6 header cut.
        assert_eq!(
            dec(&eth(0x86dd, &ipv6(59, &[]))[..53], LinkType::Ethernet),
            Err(WireError::Ipv6Trunc)
        );
        // Snaplen cut after the transport header: kept, TRUNCATED.
        let f = eth(0x86dd, &ipv6(6, &tcp(9, 10, 0x10, &[0; 500])));
        let m = dec_eth(&f[..100]);
        assert_eq!(
            (m.flags, m.ip_size, m.payload_size),
            (meta_flags::TRUNCATED, 564, 500)
        );
    }

    #[test]
    fn ipv6_jumbogram() {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let body = 65536u32;
        p.extend_from_slice(&[58, 0, 0xc2, 4]);
        p.extend_from_slice(&body.to_be_bytes());
        p.extend_from_slice(&icmp(128, 0, &vec![0xab; body as usize - 16]));
        let f = eth(0x86dd, &p);
        let m = decode(
            &f,
            f.len() as u32,
            LinkType::Ethernet,
            &DecodeOptions::default(),
        )
        .unwrap();
        assert_eq!(m.wire_len, 65590);
        assert_eq!((m.protocol, m.icmp_type), (58, 128));
        assert_eq!(
            (m.ip_size, m.transport_size, m.payload_size),
            (65576, 65528, 65520)
        );
        assert_eq!(m.flags, 0);
    }

    #[test]
    fn ip_in_ip() {
        let inner4 = ipv4(6, &tcp(5000, 22, 0x10, &[0; 3]));
        let inner6 = ipv6(17, &udp(546, 547, &[0; 7]));
        // IPv4 in IPv4.
        let m = dec_eth(&eth(0x0800, &ipv4(4, &inner4)));
        assert_eq!((m.l3_off, m.l4_off, m.src_port), (34, 54, 5000));
        assert_eq!(
            (m.flags, m.tunnel_id),
            (meta_flags::TUNNELLED, tunnel::NONE)
        );
        assert_eq!(m.ip_size, inner4.len() as u32);
        // 6in4, 4in6, 6in6.
        let m = dec_eth(&eth(0x0800, &ipv4(41, &inner6)));
        assert_eq!((m.ip_version, m.l3_off, m.payload_size), (6, 34, 7));
        let m = dec_eth(&eth(0x86dd, &ipv6(4, &inner4)));
        assert_eq!((m.ip_version, m.l3_off), (4, 54));
        let m = dec_eth(&eth(0x86dd, &ipv6(41, &inner6)));
        assert_eq!((m.ip_version, m.l3_off), (6, 54));
        // Protocol 4 announcing IPv4 but carrying IPv6.
        assert_eq!(
            dec(&eth(0x0800, &ipv4(4, &inner6)), LinkType::Ethernet),
            Err(WireError::IpBadVersion)
        );
        // Inner packet cut by the outer total length: TRUNCATED.
        let mut outer = ipv4(4, &inner4);
        outer[3] -= 3; // cuts the inner payload, not its headers
        let m = dec_eth(&eth(0x0800, &outer));
        assert_ne!(m.flags & meta_flags::TRUNCATED, 0);
        // Four tunnels are fine, five are too deep.
        let mut p = inner4.clone();
        for _ in 0..4 {
            p = ipv4(4, &p);
        }
        assert_eq!(dec_eth(&eth(0x0800, &p)).src_port, 5000);
        p = ipv4(4, &p);
        assert_eq!(
            dec(&eth(0x0800, &p), LinkType::Ethernet),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn gtpu_decapsulation() {
        let inner4 = ipv4(1, &icmp(8, 0, &[0; 56]));
        let outer = |g: &[u8]| eth(0x0800, &ipv4(17, &udp(2152, 2152, g)));
        let f = outer(&gtpu(0x30, &[], &inner4));
        let m = dec_eth(&f);
        assert_eq!(m.tunnel_id, tunnel::GTP);
        assert_eq!(m.flags, meta_flags::TUNNELLED);
        assert_eq!((m.protocol, m.icmp_type, m.l3_off), (1, 8, 50));
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (84, 64, 56));
        assert_eq!(m.src_mac, SRC_MAC);
        // decode_tunnels off: the outer UDP packet is the flow.
        let opts = DecodeOptions {
            decode_tunnels: false,
        };
        let m = decode(&f, f.len() as u32, LinkType::Ethernet, &opts).unwrap();
        assert_eq!(
            (m.tunnel_id, m.protocol, m.src_port),
            (tunnel::NONE, 17, 2152)
        );
        // Sequence number and an extension header; IPv6 inside.
        let inner6 = ipv6(6, &tcp(443, 50000, 0x11, &[]));
        let f = outer(&gtpu(0x36, &[0, 1, 0, 0x85, 1, 0x10, 0x01, 0x00], &inner6));
        let m = dec_eth(&f);
        assert_eq!((m.ip_version, m.src_port, m.tcp_flags), (6, 443, 0x11));
        assert_eq!(m.l3_off, 14 + 20 + 8 + 16);
        // Only one port needs to be 2152.
        let f = eth(
            0x0800,
            &ipv4(17, &udp(40000, 2152, &gtpu(0x30, &[], &inner4))),
        );
        assert_eq!(dec_eth(&f).tunnel_id, tunnel::GTP);
        // Not a T-PDU (echo request): the outer packet is the flow.
        let mut echo = gtpu(0x32, &[0, 1, 0, 0], &[]);
        echo[1] = 1;
        let m = dec_eth(&outer(&echo));
        assert_eq!(
            (m.tunnel_id, m.protocol, m.dst_port),
            (tunnel::NONE, 17, 2152)
        );
        // Fewer than 8 bytes of GTP: the outer packet is the flow.
        assert_eq!(dec_eth(&outer(&[0x30, 0xff, 0])).tunnel_id, tunnel::NONE);
        // T-PDU carrying something that is not IP.
        let f = outer(&gtpu(0x30, &[], &[0x00; 20]));
        assert_eq!(dec(&f, LinkType::Ethernet), Err(WireError::NotIp));
        // T-PDU whose extension chain is cut, or with a zero-length extension.
        let f = outer(&gtpu(0x34, &[0, 0, 0, 0x85, 2, 0], &[]));
        assert_eq!(dec(&f, LinkType::Ethernet), Err(WireError::GtpTrunc));
        let f = outer(&gtpu(0x34, &[0, 0, 0, 0x85, 0, 0, 0, 0], &inner4));
        assert_eq!(dec(&f, LinkType::Ethernet), Err(WireError::GtpTrunc));
        // Inner packet cut inside its header.
        let f = outer(&gtpu(0x30, &[], &inner4[..12]));
        assert_eq!(dec(&f, LinkType::Ethernet), Err(WireError::Ipv4Trunc));
        // GTP over IPv6 (nfstream looks for the UDP header in the wrong place here).
        let f = eth(
            0x86dd,
            &ipv6(17, &udp(2152, 2152, &gtpu(0x30, &[], &inner4))),
        );
        let m = dec_eth(&f);
        assert_eq!((m.tunnel_id, m.ip_version, m.protocol), (tunnel::GTP, 4, 1));
    }

    #[test]
    fn transport_errors_and_short_payloads() {
        let tcp_seg = tcp(1, 2, 0x02, &[]);
        // Header announced but cut by snaplen: a counted drop.
        let f = eth(0x0800, &ipv4(6, &tcp_seg));
        assert_eq!(
            dec(&f[..14 + 20 + 19], LinkType::Ethernet),
            Err(WireError::TcpTrunc)
        );
        let mut bad = tcp_seg.clone();
        bad[12] = 0x40;
        assert_eq!(
            dec(&eth(0x0800, &ipv4(6, &bad)), LinkType::Ethernet),
            Err(WireError::TcpBadHlen)
        );
        let f = eth(0x0800, &ipv4(17, &udp(1, 2, &[])));
        assert_eq!(
            dec(&f[..14 + 20 + 7], LinkType::Ethernet),
            Err(WireError::UdpTrunc)
        );
        let f = eth(0x0800, &ipv4(1, &icmp(0, 0, &[])));
        assert_eq!(
            dec(&f[..14 + 20 + 3], LinkType::Ethernet),
            Err(WireError::IcmpTrunc)
        );
        // IP payload shorter than the transport header (a tiny fragment): kept, as
        // nfstream keeps it, with ports 0 and L4_SHORT.
        let m = dec_eth(&eth(0x0800, &ipv4_with(6, 0x2000, &[], &tcp_seg[..16])));
        assert_eq!(
            (m.protocol, m.src_port, m.dst_port, m.tcp_flags),
            (6, 0, 0, 0)
        );
        assert_eq!((m.ip_size, m.transport_size, m.payload_size), (36, 0, 0));
        assert_eq!(m.flags, meta_flags::FIRST_FRAGMENT | meta_flags::L4_SHORT);
        let m = dec_eth(&eth(0x0800, &ipv4(17, &[0, 53, 0, 53])));
        assert_eq!(
            (m.src_port, m.transport_size, m.flags),
            (0, 0, meta_flags::L4_SHORT)
        );
        let m = dec_eth(&eth(0x0800, &ipv4(1, &[8, 0])));
        assert_eq!(
            (m.icmp_type, m.transport_size, m.flags),
            (0, 2, meta_flags::L4_SHORT)
        );
    }

    #[test]
    fn every_error_reason_has_a_fixture() {
        let ip4 = ipv4(6, &tcp(1, 2, 2, &[]));
        let mut hlen4 = ip4.clone();
        hlen4[0] = 0x44;
        let mut badlen = ip4.clone();
        badlen[2..4].copy_from_slice(&[0, 0]);
        let mut deep = ip4.clone();
        for _ in 0..5 {
            deep = ipv4(4, &deep);
        }
        let mut tcp_hlen = tcp(1, 2, 2, &[]);
        tcp_hlen[12] = 0x10;
        let fixtures: Vec<(WireError, Vec<u8>, LinkType)> = vec![
            (WireError::NotIp, eth(0x0806, &[0; 28]), LinkType::Ethernet),
            (WireError::LinkTrunc, DST_MAC.to_vec(), LinkType::Ethernet),
            (
                WireError::VlanTrunc,
                eth(0x8100, &[0, 1]),
                LinkType::Ethernet,
            ),
            (
                WireError::Ipv4Trunc,
                eth(0x0800, &ip4[..19]),
                LinkType::Ethernet,
            ),
            (
                WireError::Ipv4BadHlen,
                eth(0x0800, &hlen4),
                LinkType::Ethernet,
            ),
            (
                WireError::Ipv4BadLen,
                eth(0x0800, &badlen),
                LinkType::Ethernet,
            ),
            (WireError::IpBadVersion, ipv6(59, &[]), LinkType::Ipv4),
            (
                WireError::Ipv4FragLater,
                eth(0x0800, &ipv4_with(6, 0x0001, &[], &[0; 8])),
                LinkType::Ethernet,
            ),
            (
                WireError::Ipv6Trunc,
                ipv6(59, &[])[..39].to_vec(),
                LinkType::Ipv6,
            ),
            (
                WireError::Ipv6ExthdrTrunc,
                ipv6(60, &[6, 0, 0]),
                LinkType::Ipv6,
            ),
            (
                WireError::Ipv6FragLater,
                ipv6(44, &[6, 0, 0, 8, 0, 0, 0, 1]),
                LinkType::Ipv6,
            ),
            (WireError::TcpTrunc, ip4[..39].to_vec(), LinkType::Ipv4),
            (WireError::TcpBadHlen, ipv4(6, &tcp_hlen), LinkType::Ipv4),
            (
                WireError::UdpTrunc,
                ipv4(17, &udp(1, 2, &[]))[..27].to_vec(),
                LinkType::Raw,
            ),
            (
                WireError::IcmpTrunc,
                ipv6(58, &[0; 8])[..42].to_vec(),
                LinkType::Raw,
            ),
            (
                WireError::GtpTrunc,
                ipv4(17, &udp(2152, 2152, &gtpu(0x30, &[], &[]))),
                LinkType::Raw,
            ),
            (WireError::TooDeep, deep, LinkType::Raw),
            (
                WireError::LinkBadHeader,
                vec![1, 0, 8, 0, 0, 0, 0, 0],
                LinkType::Ieee80211Radiotap,
            ),
            (
                WireError::WlanMgmt,
                wlan_hdr(0x80, 0, 0, &[0; 12]),
                LinkType::Ieee80211,
            ),
            (
                WireError::WlanCtrl,
                cat(&[&[0xd4, 0, 0, 0], &A1]),
                LinkType::Ieee80211,
            ),
            (
                WireError::WlanNullData,
                wlan_hdr(0x48, 0x01, 0, &[]),
                LinkType::Ieee80211,
            ),
            (
                WireError::WlanProtected,
                wlan_hdr(0x08, 0x41, 0, &[0; 16]),
                LinkType::Ieee80211,
            ),
            (
                WireError::WlanFragLater,
                cat(&[&wlan_hdr(0x08, 0x01, 0x0011, &[]), &SNAP_IPV4, &ip4]),
                LinkType::Ieee80211,
            ),
            (
                WireError::WlanAmsdu,
                wlan_hdr(0x88, 0x01, 0, &[0x80, 0, 0, 0]),
                LinkType::Ieee80211,
            ),
            (
                WireError::WlanBadFcs,
                cat(&[&rt_hdr(&[2], &[0x40, 0, 0, 0]), &wlan_hdr(0x08, 0, 0, &[])]),
                LinkType::Ieee80211Radiotap,
            ),
        ];
        for e in WireError::ALL {
            assert!(
                fixtures.iter().any(|(want, _, _)| *want == e),
                "no fixture for {e:?}"
            );
        }
        for (want, frame, link) in &fixtures {
            assert_eq!(dec(frame, *link), Err(*want), "{}", want.name());
        }
    }

    #[test]
    fn consistency_check_catches_broken_metas() {
        let f = eth(0x0800, &ipv4(6, &tcp(1, 2, 2, &[9; 3])));
        let m = dec_eth(&f);
        assert_eq!(m.check_consistency(&f), Ok(()));
        let broken: [fn(&mut PacketMeta); 8] = [
            |m| m.l4_off = 1000,
            |m| m.l3_off = m.l4_off,
            |m| m.payload_size = m.transport_size + 1,
            |m| m.ip_size = 10,
            |m| m.flags |= meta_flags::TRUNCATED,
            |m| m.src_ip[5] = 1,
            |m| m.protocol = 47,
            |m| m.tunnel_id = tunnel::GTP,
        ];
        for (i, b) in broken.iter().enumerate() {
            let mut x = m;
            b(&mut x);
            assert!(x.check_consistency(&f).is_err(), "case {i}");
        }
        assert!(m.check_consistency(&f[..40]).is_err());
    }

    /// Found by `cargo fuzz` (fuzz/artifacts/decode/crash-52b2bab4...): a jumbogram
    /// announcing 0xffffffff bytes made ip_size saturate below transport_size + headers.
    #[test]
    fn fuzz_regression_huge_jumbo_length() {
        let hex = "000013c4c784f000123fae22f786dd600000000000002322000000000002ffffffffffffff\
                   32f722000000000002ffffff2400000000043a00c204ffffffffffffffffffffffffffffff\
                   ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
                   ffffffffff0001f868afd11051421168bf";
        // The first byte is the fuzz target's selector (0: Ethernet, tunnels on).
        let f: Vec<u8> = (1..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let m = dec_eth(&f);
        assert_eq!(m.check_consistency(&f), Ok(()));
        assert_eq!(m.ip_size, u32::MAX);
        assert_eq!(m.flags, meta_flags::TRUNCATED);
    }

    #[test]
    fn offsets_beyond_64k_are_too_deep() {
        // A 70 KB frame whose transport header sits past 64 KiB: a chain of 8-byte
        // Destination Options headers inside a jumbogram.
        let n_ext = 8200;
        let mut ext = Vec::new();
        for _ in 0..n_ext {
            ext.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let last = ext.len() - 8;
        ext[last] = 17;
        ext.extend_from_slice(&udp(1, 2, &[]));
        let mut hbh = vec![60, 0, 0xc2, 4];
        hbh.extend_from_slice(&((8 + ext.len()) as u32).to_be_bytes());
        hbh.extend_from_slice(&ext);
        let mut p = super::super::ipv6::tests::header(0, 0);
        p.extend_from_slice(&hbh);
        assert_eq!(dec(&p, LinkType::Ipv6), Err(WireError::TooDeep));
    }
}
