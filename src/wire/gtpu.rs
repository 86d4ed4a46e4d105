//! GTPv1-U header (3GPP TS 29.281) with its optional fields and extension header chain.

use super::{split_header, WireError};

/// The well-known GTP-U port.
pub const PORT: u16 = 2152;
pub const MIN_HEADER_LEN: usize = 8;
/// Message type of a T-PDU (user data).
pub const MSG_TPDU: u8 = 0xff;

/// A checked view of the mandatory 8-byte GTPv1 header.
#[derive(Clone, Copy, Debug)]
pub struct GtpuHeader<'a> {
    hdr: &'a [u8; MIN_HEADER_LEN],
    rest: &'a [u8],
}

impl<'a> GtpuHeader<'a> {
    /// `buf` is the UDP payload as far as it was captured (and announced).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, rest) = split_header(buf).ok_or(WireError::GtpTrunc)?;
        Ok(GtpuHeader { hdr, rest })
    }

    pub fn version(&self) -> u8 {
        self.hdr[0] >> 5
    }

    /// Protocol type: 1 = GTP, 0 = GTP'.
    pub fn protocol_type(&self) -> bool {
        self.hdr[0] & 0x10 != 0
    }

    /// E: an extension header follows.
    pub fn has_ext(&self) -> bool {
        self.hdr[0] & 0x04 != 0
    }

    /// S: the sequence number field is meaningful.
    pub fn has_seq(&self) -> bool {
        self.hdr[0] & 0x02 != 0
    }

    /// PN: the N-PDU number field is meaningful.
    pub fn has_npdu(&self) -> bool {
        self.hdr[0] & 0x01 != 0
    }

    pub fn msg_type(&self) -> u8 {
        self.hdr[1]
    }

    /// Length of everything after the mandatory header.
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    pub fn teid(&self) -> u32 {
        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    /// GTPv1 T-PDU: a user packet follows (the test nfstream applies).
    pub fn is_tpdu(&self) -> bool {
        self.version() == 1 && self.msg_type() == MSG_TPDU
    }

    /// Offset of the carried packet from the start of the GTP header: 8, plus 4 when any
    /// of E/S/PN is set, plus the extension headers. Each extension header's length is in
    /// 4-byte units and must be > 0; its last byte is the next extension type (0 = end).
    /// Fails with [`WireError::GtpTrunc`] if a field or extension is cut or malformed, or
    /// if no byte of the inner packet was captured.
    pub fn inner_offset(&self) -> Result<usize, WireError> {
        if self.hdr[0] & 0x07 == 0 {
            return if self.rest.is_empty() {
                Err(WireError::GtpTrunc)
            } else {
                Ok(MIN_HEADER_LEN)
            };
        }
        let (opt, _) = split_header::<4>(self.rest).ok_or(WireError::GtpTrunc)?;
        let mut off = 4usize; // within self.rest
        let mut next = if self.has_ext() { opt[3] } else { 0 };
        // Each extension is >= 4 bytes, so this ends within rest.len() / 4 steps.
        while next != 0 {
            let units = *self.rest.get(off).ok_or(WireError::GtpTrunc)?;
            if units == 0 {
                return Err(WireError::GtpTrunc);
            }
            off += usize::from(units) * 4;
            next = *self
                .rest
                .get(off.wrapping_sub(1))
                .ok_or(WireError::GtpTrunc)?;
        }
        if off >= self.rest.len() {
            return Err(WireError::GtpTrunc);
        }
        Ok(MIN_HEADER_LEN + off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let b = [0x30, 0xff, 0x00, 0x54, 0x00, 0x00, 0x00, 0x01, 0x45];
        let g = GtpuHeader::new_checked(&b).unwrap();
        assert_eq!(g.version(), 1);
        assert!(g.protocol_type());
        assert!(!g.has_ext() && !g.has_seq() && !g.has_npdu());
        assert_eq!(g.msg_type(), MSG_TPDU);
        assert!(g.is_tpdu());
        assert_eq!(g.length(), 0x54);
        assert_eq!(g.teid(), 1);
        assert_eq!(g.inner_offset(), Ok(8));
        // Nothing of the inner packet captured.
        let g = GtpuHeader::new_checked(&b[..8]).unwrap();
        assert_eq!(g.inner_offset(), Err(WireError::GtpTrunc));
        assert_eq!(
            GtpuHeader::new_checked(&b[..7]).unwrap_err(),
            WireError::GtpTrunc
        );
    }

    #[test]
    fn seq_and_ext() {
        // S set, no extension: 12-byte header.
        let b = [0x32, 0xff, 0, 8, 0, 0, 0, 1, 0x12, 0x34, 0, 0, 0x45];
        let g = GtpuHeader::new_checked(&b).unwrap();
        assert!(g.has_seq());
        assert_eq!(g.inner_offset(), Ok(12));
        // E set, next ext 0x85 (PDU session container), one 4-byte ext then end.
        let b = [
            0x34, 0xff, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x85, 1, 0x10, 0x01, 0x00, 0x45,
        ];
        assert_eq!(GtpuHeader::new_checked(&b).unwrap().inner_offset(), Ok(16));
        // Two extensions (8 + 4 bytes).
        let b = [
            0x34, 0xff, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0xc0, 2, 1, 2, 3, 4, 5, 6, 0x85, 1, 0, 0, 0,
            0x60,
        ];
        assert_eq!(GtpuHeader::new_checked(&b).unwrap().inner_offset(), Ok(24));
        // Zero-length extension: malformed.
        let b = [
            0x34, 0xff, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x85, 0, 0, 0, 0, 0x45,
        ];
        assert_eq!(
            GtpuHeader::new_checked(&b).unwrap().inner_offset(),
            Err(WireError::GtpTrunc)
        );
        // Extension announced but cut.
        let b = [0x34, 0xff, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x85, 2, 0, 0];
        assert_eq!(
            GtpuHeader::new_checked(&b).unwrap().inner_offset(),
            Err(WireError::GtpTrunc)
        );
        // Optional fields cut.
        let b = [0x32, 0xff, 0, 8, 0, 0, 0, 1, 0x12];
        assert_eq!(
            GtpuHeader::new_checked(&b).unwrap().inner_offset(),
            Err(WireError::GtpTrunc)
        );
    }

    #[test]
    fn not_tpdu() {
        // GTPv1 echo request; GTPv2-C header.
        let echo = [0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(!GtpuHeader::new_checked(&echo).unwrap().is_tpdu());
        let v2 = [0x48, 0xff, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(!GtpuHeader::new_checked(&v2).unwrap().is_tpdu());
    }
}
