//! PPP framing (LINKTYPE_PPP 9 and LINKTYPE_PPP_HDLC 50): the protocol field of RFC 1661,
//! optionally behind the `FF 03` address and control bytes of HDLC-like framing
//! (RFC 1662), with protocol-field compression (RFC 1661 §6.5: a protocol field whose first
//! byte is odd is that one byte).

use super::{EtherType, WireError};

/// The HDLC "all stations" address of PPP in HDLC-like framing.
pub const ADDRESS_ALL_STATIONS: u8 = 0xff;
/// The HDLC Unnumbered Information control byte.
pub const CONTROL_UI: u8 = 0x03;

/// PPP protocol numbers the decoder acts on, and a few it names in tests.
pub mod protocol {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
    pub const MPLS_UNICAST: u16 = 0x0281;
    pub const MPLS_MULTICAST: u16 = 0x0283;
    /// IP Control Protocol.
    pub const IPCP: u16 = 0x8021;
    /// Link Control Protocol.
    pub const LCP: u16 = 0xc021;
}

/// The EtherType that continues the decoder's walk for a PPP protocol: IPv4, IPv6 and
/// MPLS; `None` for everything else (LCP, IPCP, CHAP, compressed TCP ...: not IP).
pub fn ethertype(proto: u16) -> Option<EtherType> {
    match proto {
        protocol::IPV4 => Some(EtherType::Ipv4),
        protocol::IPV6 => Some(EtherType::Ipv6),
        protocol::MPLS_UNICAST => Some(EtherType::MplsUnicast),
        protocol::MPLS_MULTICAST => Some(EtherType::MplsMulticast),
        _ => None,
    }
}

/// A checked view of a PPP header: optional address/control, then a 1- or 2-byte
/// protocol field.
#[derive(Clone, Copy, Debug)]
pub struct PppHeader<'a> {
    framed: bool,
    protocol: u16,
    header_len: usize,
    payload: &'a [u8],
}

impl<'a> PppHeader<'a> {
    /// Fails with [`WireError::LinkTrunc`] if the protocol field was not captured.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let framed = buf.starts_with(&[ADDRESS_ALL_STATIONS, CONTROL_UI]);
        let start = if framed { 2 } else { 0 };
        let first = *buf.get(start).ok_or(WireError::LinkTrunc)?;
        let (protocol, field_len) = if first & 1 == 1 {
            (u16::from(first), 1)
        } else {
            let second = *buf.get(start + 1).ok_or(WireError::LinkTrunc)?;
            (u16::from_be_bytes([first, second]), 2)
        };
        let header_len = start + field_len;
        Ok(PppHeader {
            framed,
            protocol,
            header_len,
            payload: buf.get(header_len..).unwrap_or(&[]),
        })
    }

    /// The frame starts with the `FF 03` address and control bytes.
    pub fn hdlc_framed(&self) -> bool {
        self.framed
    }

    /// The protocol, a compressed 1-byte field widened (0x21 → 0x0021).
    pub fn protocol(&self) -> u16 {
        self.protocol
    }

    /// Bytes before the payload: 1 to 4.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> (bool, u16, usize, Vec<u8>) {
        let h = PppHeader::new_checked(b).unwrap();
        (
            h.hdlc_framed(),
            h.protocol(),
            h.header_len(),
            h.payload().to_vec(),
        )
    }

    #[test]
    fn framing_and_protocol_compression() {
        // Plain 2-byte protocol field (zeek's quic-go captures).
        assert_eq!(parse(&[0x00, 0x21, 0x45]), (false, 0x0021, 2, vec![0x45]));
        assert_eq!(parse(&[0x00, 0x57, 0x60]), (false, 0x0057, 2, vec![0x60]));
        // HDLC-like framing (tcpdump's lspping captures).
        assert_eq!(
            parse(&[0xff, 0x03, 0x02, 0x81, 0x18]),
            (true, protocol::MPLS_UNICAST, 4, vec![0x18])
        );
        // Compressed 1-byte protocol field, with and without address/control.
        assert_eq!(parse(&[0x21, 0x45]), (false, 0x0021, 1, vec![0x45]));
        assert_eq!(
            parse(&[0xff, 0x03, 0x57, 0x60]),
            (true, 0x0057, 3, vec![0x60])
        );
        // LCP; nothing after the header.
        assert_eq!(parse(&[0xc0, 0x21]), (false, protocol::LCP, 2, vec![]));
        // FF without 03 is not framing: a (reserved) 1-byte protocol 0xff.
        assert_eq!(
            parse(&[0xff, 0x21, 0x45]),
            (false, 0x00ff, 1, vec![0x21, 0x45])
        );
    }

    #[test]
    fn truncated() {
        for b in [&[][..], &[0x00], &[0xff, 0x03], &[0xff, 0x03, 0x00]] {
            assert_eq!(
                PppHeader::new_checked(b).unwrap_err(),
                WireError::LinkTrunc,
                "{b:?}"
            );
        }
    }

    #[test]
    fn ethertypes() {
        assert_eq!(ethertype(protocol::IPV4), Some(EtherType::Ipv4));
        assert_eq!(ethertype(protocol::IPV6), Some(EtherType::Ipv6));
        assert_eq!(
            ethertype(protocol::MPLS_UNICAST),
            Some(EtherType::MplsUnicast)
        );
        assert_eq!(
            ethertype(protocol::MPLS_MULTICAST),
            Some(EtherType::MplsMulticast)
        );
        for p in [protocol::LCP, protocol::IPCP, 0x002d, 0x0800, 0x00ff] {
            assert_eq!(ethertype(p), None, "{p:#06x}");
        }
    }
}
