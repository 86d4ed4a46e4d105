//! IPv6 header (RFC 8200), extension headers, and the Jumbo Payload option (RFC 2675).

use super::{split_header, IpProtocol, WireError};

pub const HEADER_LEN: usize = 40;

/// A checked view of the fixed IPv6 header.
///
/// `new_checked` guarantees the 40 bytes were captured and the version is 6. The payload
/// may be cut by snaplen; [`Ipv6Packet::rest`] is whatever was captured after the header.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<'a> {
    hdr: &'a [u8; HEADER_LEN],
    rest: &'a [u8],
}

impl<'a> Ipv6Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, rest) = split_header::<HEADER_LEN>(buf).ok_or(WireError::Ipv6Trunc)?;
        if hdr[0] >> 4 != 6 {
            return Err(WireError::IpBadVersion);
        }
        Ok(Ipv6Packet { hdr, rest })
    }

    pub fn version(&self) -> u8 {
        self.hdr[0] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (self.hdr[0] << 4) | (self.hdr[1] >> 4)
    }

    pub fn flow_label(&self) -> u32 {
        u32::from_be_bytes([0, self.hdr[1] & 0x0f, self.hdr[2], self.hdr[3]])
    }

    /// Payload length field (0 for a jumbogram).
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.hdr[6])
    }

    pub fn hop_limit(&self) -> u8 {
        self.hdr[7]
    }

    pub fn src_addr(&self) -> [u8; 16] {
        addr(self.hdr, 8)
    }

    pub fn dst_addr(&self) -> [u8; 16] {
        addr(self.hdr, 24)
    }

    /// All captured bytes after the fixed header (not clipped to the payload length).
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The Jumbo Payload length when this is a jumbogram: payload length 0 and a
    /// Hop-by-Hop header carrying the Jumbo Payload option. `Ok(None)` otherwise.
    pub fn jumbo_payload_len(&self) -> Result<Option<u32>, WireError> {
        if self.payload_len() != 0 || self.next_header() != IpProtocol::HopByHop {
            return Ok(None);
        }
        let hbh = Ipv6ExtHeader::new_checked(self.rest)?;
        Ok(hbh.jumbo_payload_len())
    }

    /// Payload length as announced: the payload length field, or the jumbo length. A
    /// jumbo length is capped at `u32::MAX - 40`, so that header + payload still fits the
    /// `u32` sizes of [`super::PacketMeta`] (no such packet fits in a capture anyway).
    pub fn declared_payload_len(&self) -> Result<usize, WireError> {
        match self.jumbo_payload_len()? {
            Some(j) => Ok(j.min(u32::MAX - HEADER_LEN as u32) as usize),
            None => Ok(usize::from(self.payload_len())),
        }
    }
}

fn addr(hdr: &[u8; HEADER_LEN], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if let Some(s) = hdr.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    a
}

/// A checked view of a generic extension header with the RFC 8200 layout (next header,
/// length in 8-octet units not counting the first 8): Hop-by-Hop, Routing, Destination
/// Options, Mobility.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6ExtHeader<'a> {
    hdr: &'a [u8; 2],
    /// The rest of this extension header (len*8 + 6 bytes), all captured.
    body: &'a [u8],
}

impl<'a> Ipv6ExtHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, rest) = split_header::<2>(buf).ok_or(WireError::Ipv6ExthdrTrunc)?;
        let body_len = usize::from(hdr[1]) * 8 + 6;
        let body = rest.get(..body_len).ok_or(WireError::Ipv6ExthdrTrunc)?;
        Ok(Ipv6ExtHeader { hdr, body })
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.hdr[0])
    }

    /// Total length of this header in bytes (a multiple of 8, at least 8).
    pub fn header_len(&self) -> usize {
        usize::from(self.hdr[1]) * 8 + 8
    }

    /// Options area (Hop-by-Hop / Destination Options) or type-specific data.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Walks the TLV options of a Hop-by-Hop header looking for Jumbo Payload (0xC2).
    pub fn jumbo_payload_len(&self) -> Option<u32> {
        let mut opts = self.body;
        // Each step consumes at least one byte, so this ends within body.len() steps.
        while let Some((&kind, rest)) = opts.split_first() {
            if kind == 0 {
                opts = rest; // Pad1
                continue;
            }
            let (&len, data) = rest.split_first()?;
            let data_here = data.get(..usize::from(len))?;
            if kind == 0xc2 && len == 4 {
                if let Ok(v) = <[u8; 4]>::try_from(data_here) {
                    return Some(u32::from_be_bytes(v));
                }
            }
            opts = data.get(usize::from(len)..)?;
        }
        None
    }
}

pub const FRAG_HEADER_LEN: usize = 8;

/// A checked view of the Fragment extension header (fixed 8 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Ipv6FragHeader<'a> {
    hdr: &'a [u8; FRAG_HEADER_LEN],
}

impl<'a> Ipv6FragHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, _) = split_header(buf).ok_or(WireError::Ipv6ExthdrTrunc)?;
        Ok(Ipv6FragHeader { hdr })
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.hdr[0])
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u32 {
        u32::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]]) >> 3) * 8
    }

    pub fn more_frags(&self) -> bool {
        self.hdr[3] & 0x01 != 0
    }

    pub fn ident(&self) -> u32 {
        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }
}

/// What the extension header chain leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtChain {
    /// The first header that is not skipped: the transport protocol, or AH/ESP/No Next
    /// Header, which end the chain as they do in nDPI.
    pub protocol: IpProtocol,
    /// Bytes of extension headers skipped.
    pub len: usize,
    /// A Fragment header with offset 0 and M set was seen.
    pub first_fragment: bool,
}

/// Skips the extension headers nDPI's `ndpi_handle_ipv6_extension_headers` skips
/// (Hop-by-Hop 0, Routing 43, Fragment 44, Destination Options 60, Mobility 135) in
/// `buf`, the bytes after the fixed header that are both captured and announced.
///
/// Unlike nDPI, a chain ending in No Next Header (59) is a valid packet of protocol 59
/// rather than a failure. A fragment with offset > 0 is [`WireError::Ipv6FragLater`]; a
/// header that does not fit in `buf` is [`WireError::Ipv6ExthdrTrunc`]. Every step
/// consumes at least 8 bytes, so the walk ends within `buf.len() / 8` steps.
pub fn walk_ext_headers(first: IpProtocol, buf: &[u8]) -> Result<ExtChain, WireError> {
    let mut nh = first;
    let mut off = 0usize;
    let mut first_fragment = false;
    loop {
        let here = buf.get(off..).unwrap_or(&[]);
        match nh {
            IpProtocol::HopByHop
            | IpProtocol::Ipv6Route
            | IpProtocol::Ipv6Opts
            | IpProtocol::Ipv6Mobility => {
                let e = Ipv6ExtHeader::new_checked(here)?;
                nh = e.next_header();
                off += e.header_len();
            }
            IpProtocol::Ipv6Frag => {
                let f = Ipv6FragHeader::new_checked(here)?;
                if f.frag_offset() != 0 {
                    return Err(WireError::Ipv6FragLater);
                }
                first_fragment |= f.more_frags();
                nh = f.next_header();
                off += FRAG_HEADER_LEN;
            }
            _ => {
                return Ok(ExtChain {
                    protocol: nh,
                    len: off,
                    first_fragment,
                })
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2001:db8::1 -> 2001:db8::2, next header UDP, payload length 8, hop limit 64.
    pub(crate) fn header(next: u8, plen: u16) -> Vec<u8> {
        let mut b = vec![0x60, 0x00, 0x00, 0x00];
        b.extend_from_slice(&plen.to_be_bytes());
        b.push(next);
        b.push(64);
        let mut a = [0u8; 16];
        a[0..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = 1;
        b.extend_from_slice(&a);
        a[15] = 2;
        b.extend_from_slice(&a);
        b
    }

    #[test]
    fn fields() {
        let mut b = header(17, 8);
        b[0] = 0x6a;
        b[1] = 0xb1;
        b[2] = 0x23;
        b[3] = 0x45;
        b.extend_from_slice(&[0; 8]);
        let p = Ipv6Packet::new_checked(&b).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xab);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr()[15], 1);
        assert_eq!(p.dst_addr()[0..2], [0x20, 0x01]);
        assert_eq!(p.rest().len(), 8);
        assert_eq!(p.jumbo_payload_len(), Ok(None));
        assert_eq!(p.declared_payload_len(), Ok(8));
    }

    #[test]
    fn errors() {
        let b = header(17, 0);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).unwrap_err(),
            WireError::Ipv6Trunc
        );
        let mut b = header(17, 0);
        b[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&b).unwrap_err(),
            WireError::IpBadVersion
        );
    }

    #[test]
    fn jumbogram() {
        let mut b = header(0, 0);
        // HbH: next ICMPv6, len 0; Jumbo option 0xC2 len 4 value 65536.
        b.extend_from_slice(&[58, 0, 0xc2, 4, 0x00, 0x01, 0x00, 0x00]);
        let p = Ipv6Packet::new_checked(&b).unwrap();
        assert_eq!(p.jumbo_payload_len(), Ok(Some(65536)));
        assert_eq!(p.declared_payload_len(), Ok(65536));
        // The largest jumbo length is capped so that 40 + length fits in a u32.
        let mut big = b.clone();
        big[44..48].copy_from_slice(&[0xff; 4]);
        let p = Ipv6Packet::new_checked(&big).unwrap();
        assert_eq!(p.jumbo_payload_len(), Ok(Some(u32::MAX)));
        assert_eq!(p.declared_payload_len(), Ok(u32::MAX as usize - 40));
        // Pad1 before the option, PadN after.
        let mut b = header(0, 0);
        b.extend_from_slice(&[58, 1, 0, 0xc2, 4, 0, 1, 0, 8, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&b).unwrap().jumbo_payload_len(),
            Ok(Some(65544))
        );
        // HbH announced but cut.
        let mut b = header(0, 0);
        b.extend_from_slice(&[58, 0, 0xc2]);
        assert_eq!(
            Ipv6Packet::new_checked(&b).unwrap().jumbo_payload_len(),
            Err(WireError::Ipv6ExthdrTrunc)
        );
        // HbH without the option: not a jumbogram.
        let mut b = header(0, 0);
        b.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&b).unwrap().jumbo_payload_len(),
            Ok(None)
        );
    }

    #[test]
    fn ext_chain() {
        // HbH(8) -> Routing(24) -> Frag(8, offset 0, M) -> DestOpts(8) -> TCP
        let mut e = vec![43, 0, 1, 4, 0, 0, 0, 0];
        e.extend_from_slice(&[44, 2, 0, 0, 0, 0, 0, 0]);
        e.extend_from_slice(&[0; 16]);
        e.extend_from_slice(&[60, 0, 0x00, 0x01, 0, 0, 0, 7]);
        e.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        let c = walk_ext_headers(IpProtocol::HopByHop, &e).unwrap();
        assert_eq!(c.protocol, IpProtocol::Tcp);
        assert_eq!(c.len, 48);
        assert!(c.first_fragment);
        // Each cut point inside the chain is an ExthdrTrunc.
        for cut in [1, 7, 9, 31, 33, 47] {
            assert_eq!(
                walk_ext_headers(IpProtocol::HopByHop, &e[..cut]),
                Err(WireError::Ipv6ExthdrTrunc),
                "cut {cut}"
            );
        }
        // Atomic fragment (offset 0, M clear) is not a first fragment.
        let f = [17, 0, 0, 0, 0, 0, 0, 1];
        let c = walk_ext_headers(IpProtocol::Ipv6Frag, &f).unwrap();
        assert_eq!(
            (c.protocol, c.len, c.first_fragment),
            (IpProtocol::Udp, 8, false)
        );
        // Later fragment.
        let f = [17, 0, 0x05, 0x28, 0, 0, 0, 1];
        assert_eq!(
            walk_ext_headers(IpProtocol::Ipv6Frag, &f),
            Err(WireError::Ipv6FragLater)
        );
        let fh = Ipv6FragHeader::new_checked(&f).unwrap();
        assert_eq!(fh.frag_offset(), 0x528 & !7);
        assert_eq!(fh.ident(), 1);
        assert!(!fh.more_frags());
        // AH, ESP and No Next Header end the chain (nDPI does not skip AH).
        for p in [51u8, 50, 59] {
            let c = walk_ext_headers(IpProtocol::from(p), &[]).unwrap();
            assert_eq!((u8::from(c.protocol), c.len), (p, 0));
        }
        let c = walk_ext_headers(IpProtocol::Ipv6Opts, &[51, 0, 1, 4, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.protocol, IpProtocol::Ah);
        // Mobility header is skipped.
        let c = walk_ext_headers(IpProtocol::Ipv6Mobility, &[59, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.protocol, IpProtocol::Ipv6NoNxt);
    }
}
