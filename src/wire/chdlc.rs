//! Cisco HDLC header (LINKTYPE_C_HDLC 104; also the `0F`/`8F` frames libpcap and Wireshark
//! accept under the PPP link types): address, control, and a 2-byte EtherType.

use super::{split_header, WireError};

pub const HEADER_LEN: usize = 4;

/// Address byte of a unicast frame.
pub const ADDRESS_UNICAST: u8 = 0x0f;
/// Address byte of a multicast/broadcast frame.
pub const ADDRESS_MULTICAST: u8 = 0x8f;

/// Protocols seen on Cisco HDLC links besides the IP EtherTypes.
pub mod protocol {
    /// Serial Line ARP: keepalives and address requests.
    pub const SLARP: u16 = 0x8035;
    /// Cisco Discovery Protocol.
    pub const CDP: u16 = 0x2000;
}

/// Whether a first byte is a Cisco HDLC address (how the PPP link types tell the two
/// framings apart: no PPP frame starts with 0x0f or 0x8f).
pub fn is_address(b: u8) -> bool {
    b == ADDRESS_UNICAST || b == ADDRESS_MULTICAST
}

/// A checked view of the 4-byte Cisco HDLC header.
#[derive(Clone, Copy, Debug)]
pub struct ChdlcHeader<'a> {
    hdr: &'a [u8; HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> ChdlcHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(ChdlcHeader { hdr, payload })
    }

    pub fn address(&self) -> u8 {
        self.hdr[0]
    }

    pub fn control(&self) -> u8 {
        self.hdr[1]
    }

    /// The protocol: an EtherType (0x0800, 0x86dd, 0x8847 ...) or SLARP/CDP.
    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
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
        // The first frame of suricata-verify's hdlc-http_1tx.pcap.
        let b = [0x0f, 0x00, 0x08, 0x00, 0x45];
        let h = ChdlcHeader::new_checked(&b).unwrap();
        assert_eq!((h.address(), h.control()), (ADDRESS_UNICAST, 0));
        assert_eq!(h.protocol(), 0x0800);
        assert_eq!(h.payload(), &[0x45]);
        // A SLARP keepalive of tcpdump's HDLC.pcap.
        let b = [0x8f, 0x00, 0x80, 0x35, 0, 0, 0, 2];
        let h = ChdlcHeader::new_checked(&b).unwrap();
        assert_eq!(
            (h.address(), h.protocol()),
            (ADDRESS_MULTICAST, protocol::SLARP)
        );
        assert!(is_address(0x0f) && is_address(0x8f));
        assert!(!is_address(0xff) && !is_address(0x00));
    }

    #[test]
    fn truncated() {
        assert_eq!(
            ChdlcHeader::new_checked(&[0x0f, 0x00, 0x08]).unwrap_err(),
            WireError::LinkTrunc
        );
        assert!(ChdlcHeader::new_checked(&[0x0f, 0x00, 0x08, 0x00]).is_ok());
    }
}
