//! Radiotap header (LINKTYPE_IEEE802_11_RADIOTAP 127; <https://www.radiotap.org>): version,
//! length, the chain of present bitmaps, and of the fields only Flags, which says whether
//! the 802.11 frame ends in an FCS, is padded after its header, or failed its FCS check.
//!
//! All multi-byte fields are little-endian. Fields follow the last present bitmap, each
//! aligned to its natural size relative to the start of the header; Flags (bit 1 of the
//! first bitmap) is preceded only by TSFT (bit 0, 8 bytes, 8-aligned).

use super::{split_header, WireError};

/// Version, pad, length and the first present bitmap.
pub const MIN_HEADER_LEN: usize = 8;

/// Bits of the first present bitmap the parser uses.
pub mod present {
    pub const TSFT: u32 = 1 << 0;
    pub const FLAGS: u32 = 1 << 1;
    /// Another present bitmap follows this one.
    pub const EXT: u32 = 1 << 31;
}

/// Bits of the Flags field.
pub mod flags {
    pub const CFP: u8 = 0x01;
    pub const SHORT_PREAMBLE: u8 = 0x02;
    pub const WEP: u8 = 0x04;
    pub const FRAGMENTED: u8 = 0x08;
    /// The frame ends in its 4-byte FCS.
    pub const FCS: u8 = 0x10;
    /// Padding between the 802.11 header and the body, to a multiple of 4 bytes.
    pub const DATA_PAD: u8 = 0x20;
    /// The frame failed its FCS check.
    pub const BAD_FCS: u8 = 0x40;
    pub const SHORT_GI: u8 = 0x80;
}

/// Length of the 802.11 FCS that [`flags::FCS`] announces.
pub const FCS_LEN: usize = 4;

/// A checked view of a radiotap header.
///
/// `new_checked` guarantees: version 0, a length of at least 8 bytes that was captured,
/// every present bitmap inside that length, and the Flags field inside it when present.
#[derive(Clone, Copy, Debug)]
pub struct RadiotapHeader<'a> {
    hdr: &'a [u8; MIN_HEADER_LEN],
    bitmaps: usize,
    flags: Option<u8>,
    payload: &'a [u8],
}

impl<'a> RadiotapHeader<'a> {
    /// Fails with [`WireError::LinkTrunc`] if the header (as long as its length field says)
    /// was not captured, and with [`WireError::LinkBadHeader`] for a version other than 0,
    /// a length below 8, or bitmaps or the Flags field beyond the length.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, _) = split_header::<MIN_HEADER_LEN>(buf).ok_or(WireError::LinkTrunc)?;
        if hdr[0] != 0 {
            return Err(WireError::LinkBadHeader);
        }
        let len = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
        if len < MIN_HEADER_LEN {
            return Err(WireError::LinkBadHeader);
        }
        let (header, payload) = buf.split_at_checked(len).ok_or(WireError::LinkTrunc)?;
        let first = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        // Each bitmap with bit 31 set announces another; every one must fit in the
        // header, so the walk ends within len / 4 steps.
        let (mut word, mut off, mut bitmaps) = (first, MIN_HEADER_LEN, 1usize);
        while word & present::EXT != 0 {
            let w = header
                .get(off..)
                .and_then(|r| r.first_chunk::<4>())
                .ok_or(WireError::LinkBadHeader)?;
            word = u32::from_le_bytes(*w);
            off += 4;
            bitmaps += 1;
        }
        let flags = if first & present::FLAGS != 0 {
            if first & present::TSFT != 0 {
                off = off.next_multiple_of(8) + 8;
            }
            Some(*header.get(off).ok_or(WireError::LinkBadHeader)?)
        } else {
            None
        };
        Ok(RadiotapHeader {
            hdr,
            bitmaps,
            flags,
            payload,
        })
    }

    pub fn version(&self) -> u8 {
        self.hdr[0]
    }

    /// The header length field: where the 802.11 frame starts.
    pub fn header_len(&self) -> usize {
        usize::from(u16::from_le_bytes([self.hdr[2], self.hdr[3]]))
    }

    /// The first present bitmap.
    pub fn present(&self) -> u32 {
        u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    /// Number of present bitmaps (1 + the extended ones).
    pub fn bitmaps(&self) -> usize {
        self.bitmaps
    }

    /// The Flags field, if present.
    pub fn flags(&self) -> Option<u8> {
        self.flags
    }

    fn flag(&self, bit: u8) -> bool {
        self.flags.is_some_and(|f| f & bit != 0)
    }

    /// The frame ends in a 4-byte FCS.
    pub fn has_fcs(&self) -> bool {
        self.flag(flags::FCS)
    }

    /// The 802.11 header is padded to a multiple of 4 bytes.
    pub fn data_pad(&self) -> bool {
        self.flag(flags::DATA_PAD)
    }

    /// The frame failed its FCS check.
    pub fn bad_fcs(&self) -> bool {
        self.flag(flags::BAD_FCS)
    }

    /// The 802.11 frame (and its FCS, if any), as captured.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A radiotap header with the given bitmaps and field bytes (after the bitmaps).
    pub(crate) fn header(bitmaps: &[u32], fields: &[u8]) -> Vec<u8> {
        let len = 4 + 4 * bitmaps.len() + fields.len();
        let mut b = vec![0, 0];
        b.extend_from_slice(&(len as u16).to_le_bytes());
        for w in bitmaps {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(fields);
        b
    }

    #[test]
    fn zeek_radiotap_pcap_headers() {
        // Frame 1 of linktypes/radiotap.pcap: one bitmap 0x001c086b, TSFT at 8, Flags 0x10
        // at 16, length 48.
        let mut b = header(&[0x001c_086b], &[0; 40]);
        b[16] = 0x10;
        b.extend_from_slice(&[0x88, 0x01]);
        let h = RadiotapHeader::new_checked(&b).unwrap();
        assert_eq!((h.version(), h.header_len(), h.bitmaps()), (0, 48, 1));
        assert_eq!(h.present(), 0x001c_086b);
        assert_eq!(h.flags(), Some(0x10));
        assert!(h.has_fcs() && !h.data_pad() && !h.bad_fcs());
        assert_eq!(h.payload(), &[0x88, 0x01]);
    }

    #[test]
    fn extended_bitmaps_move_the_fields() {
        // arkime's 80211http.pcap: bitmaps 0xa000402f, 0x00000820; fields start at 12, TSFT
        // aligned to 16, Flags at 24.
        let mut b = header(&[0xa000_402f, 0x0000_0820], &[0; 24]);
        b[24] = 0x10;
        let h = RadiotapHeader::new_checked(&b).unwrap();
        assert_eq!(
            (h.header_len(), h.bitmaps(), h.flags()),
            (36, 2, Some(0x10))
        );
        // Three bitmaps, no TSFT: Flags right after them, at 16.
        let mut b = header(&[0x8000_0002, 0x8000_0000, 0], &[0x30, 0, 0, 0]);
        b[16] = flags::FCS | flags::DATA_PAD;
        let h = RadiotapHeader::new_checked(&b).unwrap();
        assert_eq!((h.bitmaps(), h.flags()), (3, Some(0x30)));
        assert!(h.has_fcs() && h.data_pad());
        // Two bitmaps and TSFT: 12 is aligned up to 16, Flags at 24.
        let mut b = header(&[0x8000_0003, 0], &[0; 16]);
        b[24] = flags::BAD_FCS;
        assert!(RadiotapHeader::new_checked(&b).unwrap().bad_fcs());
    }

    #[test]
    fn no_flags_field() {
        // Only TSFT and Channel: no flags, so no FCS.
        let b = header(&[0x0000_0009], &[0xff; 12]);
        let h = RadiotapHeader::new_checked(&b).unwrap();
        assert_eq!(h.flags(), None);
        assert!(!h.has_fcs() && !h.data_pad() && !h.bad_fcs());
        // The bare 8-byte header.
        let b = header(&[0], &[]);
        let h = RadiotapHeader::new_checked(&b).unwrap();
        assert_eq!((h.header_len(), h.flags()), (8, None));
        assert!(h.payload().is_empty());
    }

    #[test]
    fn malformed_and_truncated() {
        let good = header(&[0x0000_0002], &[0x10, 0, 0, 0]);
        assert!(RadiotapHeader::new_checked(&good).is_ok());
        // Cut inside the fixed part, or before the length the header announces.
        for n in [0, 3, 7, 8, 11] {
            assert_eq!(
                RadiotapHeader::new_checked(&good[..n]).unwrap_err(),
                WireError::LinkTrunc,
                "{n}"
            );
        }
        // Version 1.
        let mut b = good.clone();
        b[0] = 1;
        assert_eq!(
            RadiotapHeader::new_checked(&b).unwrap_err(),
            WireError::LinkBadHeader
        );
        // Length below 8.
        for len in [0u16, 7] {
            let mut b = good.clone();
            b[2..4].copy_from_slice(&len.to_le_bytes());
            assert_eq!(
                RadiotapHeader::new_checked(&b).unwrap_err(),
                WireError::LinkBadHeader
            );
        }
        // An extended bitmap announced beyond the length.
        let b = header(&[0x8000_0000], &[]);
        assert_eq!(
            RadiotapHeader::new_checked(&b).unwrap_err(),
            WireError::LinkBadHeader
        );
        // Every bitmap says another follows: the walk stops at the length.
        let b = header(&[0xffff_ffff; 200], &[]);
        assert_eq!(
            RadiotapHeader::new_checked(&b).unwrap_err(),
            WireError::LinkBadHeader
        );
        // Flags announced, but the header ends before it (TSFT pushes it to 16).
        let b = header(&[0x0000_0003], &[0; 8]);
        assert_eq!(
            RadiotapHeader::new_checked(&b).unwrap_err(),
            WireError::LinkBadHeader
        );
        let b = header(&[0x0000_0002], &[]);
        assert_eq!(
            RadiotapHeader::new_checked(&b).unwrap_err(),
            WireError::LinkBadHeader
        );
    }
}
