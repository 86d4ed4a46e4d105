//! IPv4 header (RFC 791) with options and fragmentation fields.

use super::{split_header, IpProtocol, WireError};

/// Length of the fixed part of the header.
pub const MIN_HEADER_LEN: usize = 20;

/// A checked view of an IPv4 header.
///
/// `new_checked` guarantees: version 4, IHL >= 5, the whole header (options included) was
/// captured, and total length >= header length. It does *not* require the whole packet
/// to be captured (snaplen): [`Ipv4Packet::payload`] is what was captured of it.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<'a> {
    hdr: &'a [u8; MIN_HEADER_LEN],
    /// Options (IHL*4 - 20 bytes), all captured.
    options: &'a [u8],
    /// Captured bytes after the header, clipped to the total length.
    payload: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, rest) = split_header::<MIN_HEADER_LEN>(buf).ok_or(WireError::Ipv4Trunc)?;
        if hdr[0] >> 4 != 4 {
            return Err(WireError::IpBadVersion);
        }
        let hlen = usize::from(hdr[0] & 0x0f) * 4;
        if hlen < MIN_HEADER_LEN {
            return Err(WireError::Ipv4BadHlen);
        }
        let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        if total < hlen {
            return Err(WireError::Ipv4BadLen);
        }
        let (options, rest) = rest
            .split_at_checked(hlen - MIN_HEADER_LEN)
            .ok_or(WireError::Ipv4Trunc)?;
        let payload = rest.get(..total - hlen).unwrap_or(rest);
        Ok(Ipv4Packet {
            hdr,
            options,
            payload,
        })
    }

    pub fn version(&self) -> u8 {
        self.hdr[0] >> 4
    }

    /// Header length in bytes (20..=60).
    pub fn header_len(&self) -> usize {
        usize::from(self.hdr[0] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.hdr[1]
    }

    /// Total length field (header + payload), >= `header_len()`.
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// Payload length announced by the header: total length - header length.
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_len()).saturating_sub(self.header_len())
    }

    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    pub fn dont_frag(&self) -> bool {
        self.hdr[6] & 0x40 != 0
    }

    pub fn more_frags(&self) -> bool {
        self.hdr[6] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u32 {
        u32::from(u16::from_be_bytes([self.hdr[6], self.hdr[7]]) & 0x1fff) * 8
    }

    pub fn ttl(&self) -> u8 {
        self.hdr[8]
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.hdr[9])
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[10], self.hdr[11]])
    }

    pub fn src_addr(&self) -> [u8; 4] {
        [self.hdr[12], self.hdr[13], self.hdr[14], self.hdr[15]]
    }

    pub fn dst_addr(&self) -> [u8; 4] {
        [self.hdr[16], self.hdr[17], self.hdr[18], self.hdr[19]]
    }

    pub fn options(&self) -> &'a [u8] {
        self.options
    }

    /// Captured payload, at most `payload_len()` bytes (Ethernet padding is cut off).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// True when snaplen cut the packet: fewer payload bytes captured than announced.
    pub fn is_truncated(&self) -> bool {
        self.payload.len() < self.payload_len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 192.168.1.1 -> 10.0.0.2, UDP, total length 28, DF, TTL 64.
    pub(crate) const UDP_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 168, 1, 1, 10,
        0, 0, 2,
    ];

    #[test]
    fn fields() {
        let mut b = UDP_HDR.to_vec();
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0xee, 0xee]); // 8 payload + 2 padding
        let p = Ipv4Packet::new_checked(&b).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.checksum(), 0);
        assert_eq!(p.src_addr(), [192, 168, 1, 1]);
        assert_eq!(p.dst_addr(), [10, 0, 0, 2]);
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!p.is_truncated());
    }

    #[test]
    fn options_and_fragment() {
        let mut b = UDP_HDR.to_vec();
        b[0] = 0x46; // IHL 6: 4 bytes of options
        b[3] = 32;
        b[6] = 0x20 | 0x01; // MF, offset 0x100 * 8
        b[7] = 0x00;
        b.extend_from_slice(&[0x94, 0x04, 0, 0]); // router alert
        b.extend_from_slice(&[9, 9, 9, 9, 9, 9]); // 6 of 8 payload bytes captured
        let p = Ipv4Packet::new_checked(&b).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0, 0]);
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 256 * 8);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.payload().len(), 6);
        assert!(p.is_truncated());
    }

    #[test]
    fn errors() {
        assert_eq!(
            Ipv4Packet::new_checked(&UDP_HDR[..19]).unwrap_err(),
            WireError::Ipv4Trunc
        );
        let mut b = UDP_HDR;
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b).unwrap_err(),
            WireError::IpBadVersion
        );
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b).unwrap_err(),
            WireError::Ipv4BadHlen
        );
        b[0] = 0x46; // options announced but not captured
        assert_eq!(
            Ipv4Packet::new_checked(&b).unwrap_err(),
            WireError::Ipv4Trunc
        );
        b[0] = 0x45;
        b[3] = 19; // total length smaller than the header
        assert_eq!(
            Ipv4Packet::new_checked(&b).unwrap_err(),
            WireError::Ipv4BadLen
        );
        b[3] = 0; // TSO / bogus total length 0
        assert_eq!(
            Ipv4Packet::new_checked(&b).unwrap_err(),
            WireError::Ipv4BadLen
        );
    }
}
