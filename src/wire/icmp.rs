//! ICMP (RFC 792) and ICMPv6 (RFC 4443): type, code, checksum. Both start the same way.

use super::{split_header, WireError};

/// Type, code, checksum. (The full header is 8 bytes; the last 4 are type-specific.)
pub const MIN_HEADER_LEN: usize = 4;
/// Header length nfstream subtracts for `payload_size` (`sizeof(struct ndpi_icmphdr)`).
pub const HEADER_LEN: usize = 8;

/// A checked view of the first 4 bytes of an ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug)]
pub struct IcmpHeader<'a> {
    hdr: &'a [u8; MIN_HEADER_LEN],
}

impl<'a> IcmpHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, _) = split_header(buf).ok_or(WireError::IcmpTrunc)?;
        Ok(IcmpHeader { hdr })
    }

    pub fn msg_type(&self) -> u8 {
        self.hdr[0]
    }

    pub fn code(&self) -> u8 {
        self.hdr[1]
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let b = [3, 3, 0x12, 0x34, 0, 0, 0, 0];
        let i = IcmpHeader::new_checked(&b).unwrap();
        assert_eq!((i.msg_type(), i.code(), i.checksum()), (3, 3, 0x1234));
        assert_eq!(
            IcmpHeader::new_checked(&b[..3]).unwrap_err(),
            WireError::IcmpTrunc
        );
    }
}
