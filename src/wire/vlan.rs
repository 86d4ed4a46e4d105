//! IEEE 802.1Q / 802.1ad VLAN tag: the 4 bytes after a TPID of 0x8100, 0x88a8 or 0x9100.

use super::{split_header, EtherType, WireError};

pub const TAG_LEN: usize = 4;

/// A checked view of one VLAN tag (TCI + the EtherType that follows it).
#[derive(Clone, Copy, Debug)]
pub struct VlanTag<'a> {
    hdr: &'a [u8; TAG_LEN],
    payload: &'a [u8],
}

impl<'a> VlanTag<'a> {
    /// `buf` starts right after the TPID. Fails with [`WireError::VlanTrunc`] if the tag
    /// was not captured.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::VlanTrunc)?;
        Ok(VlanTag { hdr, payload })
    }

    fn tci(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        self.hdr[0] >> 5
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.hdr[0] & 0x10 != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The EtherType (or 802.3 length) after the tag.
    pub fn inner_type(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    pub fn ethertype(&self) -> EtherType {
        EtherType::from(self.inner_type())
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // PCP 5, DEI 1, VID 2001, inner ARP.
        let b = [0xb7, 0xd1, 0x08, 0x06, 0xff];
        let t = VlanTag::new_checked(&b).unwrap();
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.vid(), 2001);
        assert_eq!(t.ethertype(), EtherType::Arp);
        assert_eq!(t.payload(), &[0xff]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            VlanTag::new_checked(&[0, 1, 8]).unwrap_err(),
            WireError::VlanTrunc
        );
    }
}
