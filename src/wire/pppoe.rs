//! PPPoE session header (RFC 2516, EtherType 0x8864) with the 2-byte PPP protocol field.

use super::{split_header, WireError};

/// PPPoE header (6) + PPP protocol (2).
pub const HEADER_LEN: usize = 8;

/// PPP protocol numbers that carry IP.
pub mod ppp_protocol {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
}

/// A checked view of a PPPoE session header followed by the PPP protocol field.
#[derive(Clone, Copy, Debug)]
pub struct PppoeSession<'a> {
    hdr: &'a [u8; HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> PppoeSession<'a> {
    /// Fails with [`WireError::VlanTrunc`] (the encapsulation counter) if cut short. The
    /// PPPoE length field is not enforced: nfstream ignores it, and real captures
    /// (vlan/pppoe-over-qinq.pcap) carry frames whose length field is too small.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::VlanTrunc)?;
        Ok(PppoeSession { hdr, payload })
    }

    pub fn version(&self) -> u8 {
        self.hdr[0] >> 4
    }

    pub fn pppoe_type(&self) -> u8 {
        self.hdr[0] & 0x0f
    }

    /// 0 for session data.
    pub fn code(&self) -> u8 {
        self.hdr[1]
    }

    pub fn session_id(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// Length of the PPP payload including the protocol field, as announced.
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    pub fn ppp_protocol(&self) -> u16 {
        u16::from_be_bytes([self.hdr[6], self.hdr[7]])
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
        let b = [0x11, 0x00, 0x12, 0x34, 0x00, 0x2a, 0x00, 0x21, 0x45];
        let p = PppoeSession::new_checked(&b).unwrap();
        assert_eq!((p.version(), p.pppoe_type(), p.code()), (1, 1, 0));
        assert_eq!(p.session_id(), 0x1234);
        assert_eq!(p.length(), 42);
        assert_eq!(p.ppp_protocol(), ppp_protocol::IPV4);
        assert_eq!(p.payload(), &[0x45]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            PppoeSession::new_checked(&[0x11, 0, 0, 1, 0, 2, 0]).unwrap_err(),
            WireError::VlanTrunc
        );
    }
}
