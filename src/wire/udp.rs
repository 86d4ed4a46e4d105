//! UDP header (RFC 768).

use super::{split_header, WireError};

pub const HEADER_LEN: usize = 8;

/// A checked view of the 8-byte UDP header. The length field is not enforced: like
/// nfstream, sizes come from the IP header.
#[derive(Clone, Copy, Debug)]
pub struct UdpHeader<'a> {
    hdr: &'a [u8; HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> UdpHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::UdpTrunc)?;
        Ok(UdpHeader { hdr, payload })
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[6], self.hdr[7]])
    }

    /// Bytes after the header, as far as the caller's buffer went.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let b = [0xf1, 0x2a, 0x00, 0x35, 0x00, 0x0a, 0xbe, 0xef, 1, 2];
        let u = UdpHeader::new_checked(&b).unwrap();
        assert_eq!(u.src_port(), 61738);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.length(), 10);
        assert_eq!(u.checksum(), 0xbeef);
        assert_eq!(u.payload(), &[1, 2]);
        assert_eq!(
            UdpHeader::new_checked(&b[..7]).unwrap_err(),
            WireError::UdpTrunc
        );
    }
}
