//! BSD loopback header (LINKTYPE_NULL 0 and LINKTYPE_LOOP 108): a 4-byte address family.
//!
//! NULL stores the family in the capturing host's byte order, LOOP in big-endian. The
//! values in use (2 for IPv4; 24, 28 or 30 for IPv6 depending on the BSD) cannot be
//! confused across byte orders, so both orders are accepted for both link types.

use super::{split_header, WireError};

pub const HEADER_LEN: usize = 4;

pub const AF_INET: u32 = 2;
/// NetBSD, OpenBSD, BSD/OS.
pub const AF_INET6_BSD: u32 = 24;
/// FreeBSD, DragonFly.
pub const AF_INET6_FREEBSD: u32 = 28;
/// macOS, iOS.
pub const AF_INET6_DARWIN: u32 = 30;

/// A checked view of the 4-byte family field.
#[derive(Clone, Copy, Debug)]
pub struct LoopbackHeader<'a> {
    hdr: &'a [u8; HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> LoopbackHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(LoopbackHeader { hdr, payload })
    }

    pub fn family_le(&self) -> u32 {
        u32::from_le_bytes(*self.hdr)
    }

    pub fn family_be(&self) -> u32 {
        u32::from_be_bytes(*self.hdr)
    }

    /// 4 or 6 for the IP families, `None` for anything else.
    pub fn ip_version(&self) -> Option<u8> {
        let ver = |af: u32| match af {
            AF_INET => Some(4),
            AF_INET6_BSD | AF_INET6_FREEBSD | AF_INET6_DARWIN => Some(6),
            _ => None,
        };
        ver(self.family_le()).or_else(|| ver(self.family_be()))
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let v = |b: [u8; 4]| LoopbackHeader::new_checked(&b).unwrap().ip_version();
        assert_eq!(v([2, 0, 0, 0]), Some(4));
        assert_eq!(v([0, 0, 0, 2]), Some(4));
        assert_eq!(v([24, 0, 0, 0]), Some(6));
        assert_eq!(v([0, 0, 0, 28]), Some(6));
        assert_eq!(v([30, 0, 0, 0]), Some(6));
        assert_eq!(v([7, 0, 0, 0]), None);
        assert_eq!(v([0, 0, 0, 10]), None);
        let h = LoopbackHeader::new_checked(&[2, 0, 0, 0, 0x45]).unwrap();
        assert_eq!(h.payload(), &[0x45]);
        assert_eq!(h.family_le(), 2);
        assert_eq!(h.family_be(), 0x0200_0000);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            LoopbackHeader::new_checked(&[2, 0, 0]).unwrap_err(),
            WireError::LinkTrunc
        );
    }
}
