//! MPLS label stack entry (RFC 3032), after EtherType 0x8847 / 0x8848.

use super::{split_header, WireError};

pub const LABEL_LEN: usize = 4;

/// A checked view of one 4-byte label stack entry.
#[derive(Clone, Copy, Debug)]
pub struct MplsLabel<'a> {
    hdr: &'a [u8; LABEL_LEN],
    payload: &'a [u8],
}

impl<'a> MplsLabel<'a> {
    /// Fails with [`WireError::VlanTrunc`] (the tag-stack counter) if the entry was cut.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::VlanTrunc)?;
        Ok(MplsLabel { hdr, payload })
    }

    fn word(&self) -> u32 {
        u32::from_be_bytes(*self.hdr)
    }

    /// The 20-bit label.
    pub fn label(&self) -> u32 {
        self.word() >> 12
    }

    /// Traffic class (3 bits).
    pub fn tc(&self) -> u8 {
        ((self.word() >> 9) & 0x7) as u8
    }

    /// Bottom-of-stack bit: the payload follows this entry.
    pub fn bottom_of_stack(&self) -> bool {
        self.hdr[2] & 0x01 != 0
    }

    pub fn ttl(&self) -> u8 {
        self.hdr[3]
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
        // label 18, TC 0, S=1, TTL 64, then an IPv4 nibble.
        let b = [0x00, 0x01, 0x21, 0x40, 0x45];
        let l = MplsLabel::new_checked(&b).unwrap();
        assert_eq!(l.label(), 18);
        assert_eq!(l.tc(), 0);
        assert!(l.bottom_of_stack());
        assert_eq!(l.ttl(), 64);
        assert_eq!(l.payload(), &[0x45]);
        let b = [0xff, 0xff, 0xfe, 0x01];
        let l = MplsLabel::new_checked(&b).unwrap();
        assert_eq!(l.label(), 0xfffff);
        assert_eq!(l.tc(), 7);
        assert!(!l.bottom_of_stack());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            MplsLabel::new_checked(&[0, 1, 0x21]).unwrap_err(),
            WireError::VlanTrunc
        );
    }
}
