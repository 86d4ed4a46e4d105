//! Ethernet II header, and the IEEE 802.2 LLC / SNAP header that follows an 802.3 length
//! field.

use super::{split_header, EtherType, WireError};

/// Length of the Ethernet II header (no FCS, no tags).
pub const HEADER_LEN: usize = 14;

/// A checked view of an Ethernet II header and the bytes after it.
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<'a> {
    hdr: &'a [u8; HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    /// After `Ok`, no accessor can panic: the fixed header is a `&[u8; 14]`.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(EthernetFrame { hdr, payload })
    }

    pub fn dst_addr(&self) -> [u8; 6] {
        let h = self.hdr;
        [h[0], h[1], h[2], h[3], h[4], h[5]]
    }

    pub fn src_addr(&self) -> [u8; 6] {
        let h = self.hdr;
        [h[6], h[7], h[8], h[9], h[10], h[11]]
    }

    /// The type/length field: an EtherType when >= 0x0600, an 802.3 length when <= 1500.
    pub fn type_or_len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[12], self.hdr[13]])
    }

    /// The EtherType, or `None` when the field is an 802.3 length (LLC follows) or in the
    /// undefined range 1501..=1535.
    pub fn ethertype(&self) -> Option<EtherType> {
        let v = self.type_or_len();
        (v >= 0x0600).then_some(EtherType::from(v))
    }

    /// Bytes after the 14-byte header (the whole rest of the captured frame).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// IEEE 802.2 LLC header (3 bytes), optionally followed by a SNAP extension (5 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Llc<'a> {
    hdr: &'a [u8; 3],
    rest: &'a [u8],
}

/// DSAP/SSAP value announcing a SNAP extension.
pub const SAP_SNAP: u8 = 0xaa;
/// DSAP/SSAP value of the Spanning Tree Protocol.
pub const SAP_STP: u8 = 0x42;
/// LLC (3) + SNAP (OUI 3 + protocol 2).
pub const LLC_SNAP_LEN: usize = 8;

impl<'a> Llc<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, rest) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(Llc { hdr, rest })
    }

    pub fn dsap(&self) -> u8 {
        self.hdr[0]
    }

    pub fn ssap(&self) -> u8 {
        self.hdr[1]
    }

    pub fn control(&self) -> u8 {
        self.hdr[2]
    }

    /// nfstream (and nDPI's reader) treat a frame as SNAP when *either* SAP is 0xAA.
    pub fn is_snap(&self) -> bool {
        self.dsap() == SAP_SNAP || self.ssap() == SAP_SNAP
    }

    /// The SNAP protocol id (an EtherType for OUI 0), if this is SNAP and it was captured.
    pub fn snap_protocol(&self) -> Result<Option<u16>, WireError> {
        if !self.is_snap() {
            return Ok(None);
        }
        let (snap, _) = split_header::<5>(self.rest).ok_or(WireError::LinkTrunc)?;
        Ok(Some(u16::from_be_bytes([snap[3], snap[4]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0x00, 0x10, 0xdb, 0x88, 0xd2, 0xef, // dst
        0xc8, 0xbc, 0xc8, 0x96, 0xd2, 0xa0, // src
        0x08, 0x00, // IPv4
        0x45, 0x00,
    ];

    #[test]
    fn fields() {
        let f = EthernetFrame::new_checked(&FRAME).unwrap();
        assert_eq!(f.dst_addr(), [0x00, 0x10, 0xdb, 0x88, 0xd2, 0xef]);
        assert_eq!(f.src_addr(), [0xc8, 0xbc, 0xc8, 0x96, 0xd2, 0xa0]);
        assert_eq!(f.ethertype(), Some(EtherType::Ipv4));
        assert_eq!(f.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]).unwrap_err(),
            WireError::LinkTrunc
        );
        assert!(EthernetFrame::new_checked(&FRAME[..14]).is_ok());
    }

    #[test]
    fn length_field_is_not_an_ethertype() {
        let mut f = FRAME;
        f[12..14].copy_from_slice(&100u16.to_be_bytes());
        let e = EthernetFrame::new_checked(&f).unwrap();
        assert_eq!(e.ethertype(), None);
        assert_eq!(e.type_or_len(), 100);
        f[12..14].copy_from_slice(&1536u16.to_be_bytes());
        assert_eq!(
            EthernetFrame::new_checked(&f).unwrap().ethertype(),
            Some(EtherType::Unknown(1536))
        );
    }

    #[test]
    fn llc_snap() {
        let snap = [0xaa, 0xaa, 0x03, 0, 0, 0, 0x86, 0xdd, 0x60];
        let l = Llc::new_checked(&snap).unwrap();
        assert!(l.is_snap());
        assert_eq!(l.snap_protocol(), Ok(Some(0x86dd)));
        assert_eq!(
            Llc::new_checked(&snap[..7]).unwrap().snap_protocol(),
            Err(WireError::LinkTrunc)
        );
        let stp = [0x42, 0x42, 0x03, 0, 0];
        let l = Llc::new_checked(&stp).unwrap();
        assert_eq!((l.dsap(), l.ssap(), l.control()), (0x42, 0x42, 3));
        assert_eq!(l.snap_protocol(), Ok(None));
        assert_eq!(
            Llc::new_checked(&stp[..2]).unwrap_err(),
            WireError::LinkTrunc
        );
    }
}
