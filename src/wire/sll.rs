//! Linux cooked capture headers: SLL (LINKTYPE_LINUX_SLL 113, 16 bytes) and SLL2
//! (LINKTYPE_LINUX_SLL2 276, 20 bytes).

use super::{split_header, WireError};

pub const SLL_LEN: usize = 16;
pub const SLL2_LEN: usize = 20;

/// A checked view of a Linux cooked v1 header.
#[derive(Clone, Copy, Debug)]
pub struct SllHeader<'a> {
    hdr: &'a [u8; SLL_LEN],
    payload: &'a [u8],
}

impl<'a> SllHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(SllHeader { hdr, payload })
    }

    /// 0 to us, 1 broadcast, 2 multicast, 3 to someone else, 4 sent by us.
    pub fn packet_type(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    /// ARPHRD_ type of the interface (1 = Ethernet).
    pub fn arphrd_type(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    pub fn addr_len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    /// The protocol: an EtherType for IP (0x0800, 0x86dd), VLAN, MPLS ...
    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes([self.hdr[14], self.hdr[15]])
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// A checked view of a Linux cooked v2 header.
#[derive(Clone, Copy, Debug)]
pub struct Sll2Header<'a> {
    hdr: &'a [u8; SLL2_LEN],
    payload: &'a [u8],
}

impl<'a> Sll2Header<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(Sll2Header { hdr, payload })
    }

    /// The protocol (EtherType), first field in v2.
    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    pub fn interface_index(&self) -> u32 {
        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    pub fn arphrd_type(&self) -> u16 {
        u16::from_be_bytes([self.hdr[8], self.hdr[9]])
    }

    pub fn packet_type(&self) -> u8 {
        self.hdr[10]
    }

    pub fn addr_len(&self) -> u8 {
        self.hdr[11]
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sll_fields() {
        let mut b = [0u8; 17];
        b[0..2].copy_from_slice(&4u16.to_be_bytes());
        b[2..4].copy_from_slice(&1u16.to_be_bytes());
        b[4..6].copy_from_slice(&6u16.to_be_bytes());
        b[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        b[16] = 0x45;
        let h = SllHeader::new_checked(&b).unwrap();
        assert_eq!(h.packet_type(), 4);
        assert_eq!(h.arphrd_type(), 1);
        assert_eq!(h.addr_len(), 6);
        assert_eq!(h.protocol(), 0x0800);
        assert_eq!(h.payload(), &[0x45]);
        assert_eq!(
            SllHeader::new_checked(&b[..15]).unwrap_err(),
            WireError::LinkTrunc
        );
    }

    #[test]
    fn sll2_fields() {
        let mut b = [0u8; 21];
        b[0..2].copy_from_slice(&0x86ddu16.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[8..10].copy_from_slice(&1u16.to_be_bytes());
        b[10] = 4;
        b[11] = 6;
        b[20] = 0x60;
        let h = Sll2Header::new_checked(&b).unwrap();
        assert_eq!(h.protocol(), 0x86dd);
        assert_eq!(h.interface_index(), 3);
        assert_eq!(h.arphrd_type(), 1);
        assert_eq!((h.packet_type(), h.addr_len()), (4, 6));
        assert_eq!(h.payload(), &[0x60]);
        assert_eq!(
            Sll2Header::new_checked(&b[..19]).unwrap_err(),
            WireError::LinkTrunc
        );
    }
}
