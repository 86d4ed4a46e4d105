//! TCP header (RFC 9293): ports, flags, data offset.

use super::{split_header, WireError};

pub const MIN_HEADER_LEN: usize = 20;

/// A checked view of the fixed 20-byte TCP header.
///
/// `new_checked` guarantees the fixed header was captured and the data offset is >= 5.
/// Options may be cut by snaplen or, in a first IP fragment, continue in the next
/// fragment: [`TcpHeader::header_len`] is what the header announces.
#[derive(Clone, Copy, Debug)]
pub struct TcpHeader<'a> {
    hdr: &'a [u8; MIN_HEADER_LEN],
}

impl<'a> TcpHeader<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, _) = split_header::<MIN_HEADER_LEN>(buf).ok_or(WireError::TcpTrunc)?;
        if usize::from(hdr[12] >> 4) * 4 < MIN_HEADER_LEN {
            return Err(WireError::TcpBadHlen);
        }
        Ok(TcpHeader { hdr })
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    pub fn seq_number(&self) -> u32 {
        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    pub fn ack_number(&self) -> u32 {
        u32::from_be_bytes([self.hdr[8], self.hdr[9], self.hdr[10], self.hdr[11]])
    }

    /// Header length in bytes from the data offset field (20..=60).
    pub fn header_len(&self) -> usize {
        usize::from(self.hdr[12] >> 4) * 4
    }

    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN), see [`super::tcp_flags`].
    pub fn flags(&self) -> u8 {
        self.hdr[13]
    }

    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.hdr[14], self.hdr[15]])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tcp_flags;
    use super::*;

    pub(crate) const SYN: [u8; 20] = [
        0xe9, 0xd0, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff,
        0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn fields() {
        let t = TcpHeader::new_checked(&SYN).unwrap();
        assert_eq!(t.src_port(), 59856);
        assert_eq!(t.dst_port(), 80);
        assert_eq!(t.seq_number(), 1);
        assert_eq!(t.ack_number(), 0);
        assert_eq!(t.header_len(), 20);
        assert_eq!(t.flags(), tcp_flags::SYN);
        assert_eq!(t.window(), 0xffff);
    }

    #[test]
    fn errors() {
        assert_eq!(
            TcpHeader::new_checked(&SYN[..19]).unwrap_err(),
            WireError::TcpTrunc
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            TcpHeader::new_checked(&b).unwrap_err(),
            WireError::TcpBadHlen
        );
        b[12] = 0xf0;
        assert_eq!(TcpHeader::new_checked(&b).unwrap().header_len(), 60);
    }
}
