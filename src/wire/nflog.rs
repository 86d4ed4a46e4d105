//! Linux NFLOG (LINKTYPE_NFLOG 239; libpcap `pcap/nflog.h`): a 4-byte header (address
//! family, version 0, resource id big-endian) followed by TLVs, one of which
//! (`NFULA_PAYLOAD`) holds the logged packet from its network header on.
//!
//! A TLV is a 2-byte length (which counts the 4-byte TLV header) and a 2-byte type, both
//! in the byte order of the host that captured (little-endian on x86 and ARM); the next
//! TLV starts at the length rounded up to a multiple of 4. The byte order is read off the
//! first TLV's type, as Wireshark used to: attribute types are below 0x100 (bit 15 may
//! flag a nested attribute), so the type's high byte is 0 in the writer's order and the
//! other byte is not.

use super::{split_header, WireError};

pub const HEADER_LEN: usize = 4;
pub const TLV_HEADER_LEN: usize = 4;

/// Address families of the NFLOG header (Linux values).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// TLV types (`enum nfulnl_attr_type`).
pub mod tlv_type {
    pub const PACKET_HDR: u16 = 1;
    pub const MARK: u16 = 2;
    pub const TIMESTAMP: u16 = 3;
    pub const IFINDEX_INDEV: u16 = 4;
    pub const IFINDEX_OUTDEV: u16 = 5;
    pub const HWADDR: u16 = 8;
    /// The logged packet.
    pub const PAYLOAD: u16 = 9;
    pub const PREFIX: u16 = 10;
    pub const UID: u16 = 11;
    pub const GID: u16 = 14;
}

/// A checked view of the NFLOG header and the TLVs after it.
#[derive(Clone, Copy, Debug)]
pub struct NflogHeader<'a> {
    hdr: &'a [u8; HEADER_LEN],
    tlvs: &'a [u8],
}

/// Where the packet of an `NFULA_PAYLOAD` TLV lies, in bytes from the start of the NFLOG
/// header: `start..end`, `end` clipped to what was captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub start: usize,
    pub end: usize,
    /// The TLV announces more bytes than were captured.
    pub cut: bool,
}

impl<'a> NflogHeader<'a> {
    /// Fails with [`WireError::LinkTrunc`] if the header was not captured and with
    /// [`WireError::LinkBadHeader`] for a version other than 0.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, tlvs) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        if hdr[1] != 0 {
            return Err(WireError::LinkBadHeader);
        }
        Ok(NflogHeader { hdr, tlvs })
    }

    /// AF_INET (2) or AF_INET6 (10) for IP; other netfilter families (ARP, bridge ...)
    /// are possible.
    pub fn family(&self) -> u8 {
        self.hdr[0]
    }

    pub fn version(&self) -> u8 {
        self.hdr[1]
    }

    /// The netlink group the rule logged to (big-endian, unlike the TLVs).
    pub fn resource_id(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// The TLVs are big-endian (written on a big-endian host).
    pub fn big_endian(&self) -> bool {
        match self.tlvs.first_chunk::<TLV_HEADER_LEN>() {
            Some(t) => t[3] & 0x7f != 0 && t[2] & 0x7f == 0,
            None => false,
        }
    }

    /// Finds the `NFULA_PAYLOAD` TLV. Fails with [`WireError::NotIp`] if there is none
    /// (the rule logged no packet bytes) or it is empty, [`WireError::LinkBadHeader`] for
    /// a TLV length below 4, and [`WireError::LinkTrunc`] if a TLV before it was cut.
    pub fn payload(&self) -> Result<Payload, WireError> {
        let be = self.big_endian();
        let u16_at = |b: [u8; 2]| {
            if be {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let mut off = 0usize; // within self.tlvs
                              // Every TLV is at least 4 bytes long: at most tlvs.len() / 4 steps.
        loop {
            let Some(rest) = self.tlvs.get(off..).filter(|r| !r.is_empty()) else {
                return Err(WireError::NotIp);
            };
            let (t, _) = split_header::<TLV_HEADER_LEN>(rest).ok_or(WireError::LinkTrunc)?;
            let len = usize::from(u16_at([t[0], t[1]]));
            let ty = u16_at([t[2], t[3]]) & 0x7fff;
            if len < TLV_HEADER_LEN {
                return Err(WireError::LinkBadHeader);
            }
            if ty == tlv_type::PAYLOAD {
                if len == TLV_HEADER_LEN {
                    return Err(WireError::NotIp);
                }
                let start = HEADER_LEN + off + TLV_HEADER_LEN;
                let announced = HEADER_LEN + off + len;
                let captured = HEADER_LEN + self.tlvs.len();
                return Ok(Payload {
                    start,
                    end: announced.min(captured),
                    cut: announced > captured,
                });
            }
            if len > rest.len() {
                return Err(WireError::LinkTrunc);
            }
            off += len.next_multiple_of(4);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TLV in the given byte order, padded to 4 bytes.
    pub(crate) fn tlv(ty: u16, value: &[u8], be: bool) -> Vec<u8> {
        let len = (TLV_HEADER_LEN + value.len()) as u16;
        let mut b = if be {
            [len.to_be_bytes(), ty.to_be_bytes()].concat()
        } else {
            [len.to_le_bytes(), ty.to_le_bytes()].concat()
        };
        b.extend_from_slice(value);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// An NFLOG record as the kernel writes it: packet header, prefix, the payload.
    pub(crate) fn record(family: u8, payload: &[u8], be: bool) -> Vec<u8> {
        let mut b = vec![family, 0, 0, 1];
        b.extend(tlv(tlv_type::PACKET_HDR, &[0x08, 0x00, 1, 0], be));
        b.extend(tlv(tlv_type::PREFIX, b"http\0", be));
        b.extend(tlv(tlv_type::PAYLOAD, payload, be));
        b
    }

    #[test]
    fn finds_the_payload_in_either_byte_order() {
        for be in [false, true] {
            let r = record(AF_INET, &[0x45, 1, 2, 3, 4], be);
            let h = NflogHeader::new_checked(&r).unwrap();
            assert_eq!((h.family(), h.version(), h.resource_id()), (AF_INET, 0, 1));
            assert_eq!(h.big_endian(), be);
            // 4 + 8 (packet header) + 12 (prefix, 9 bytes padded) + TLV header.
            let p = h.payload().unwrap();
            assert_eq!(
                p,
                Payload {
                    start: 28,
                    end: 33,
                    cut: false
                }
            );
            assert_eq!(r[p.start], 0x45);
        }
    }

    #[test]
    fn tcpdump_nflog_pcap_first_frame() {
        // Frame 1 of tcpdump's tests/nflog.pcap (little-endian) up to its payload TLV:
        // packet header, prefix, input interface, hardware address, type, length and
        // header, timestamp.
        let hex = "02000014080001000800012705000a0000000000080004000000000210000800\
                   0006ffffb8a386b9c3d6000006000f000001000006001100000e000012001000\
                   0811961c10c8b8a386b9c3d6080000001400030000000000522a1f9e00000000\
                   000960fc";
        let mut b: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let h = NflogHeader::new_checked(&b).unwrap();
        assert!(!h.big_endian());
        assert_eq!(h.resource_id(), 20);
        assert_eq!(b.len(), 100);
        // No payload TLV in what is here: the TLVs end cleanly.
        assert_eq!(h.payload(), Err(WireError::NotIp));
        b.extend(tlv(tlv_type::PAYLOAD, &[0x45; 20], false));
        let n = b.len();
        assert_eq!(
            NflogHeader::new_checked(&b).unwrap().payload(),
            Ok(Payload {
                start: n - 20,
                end: n,
                cut: false
            })
        );
    }

    #[test]
    fn cut_and_malformed() {
        let r = record(AF_INET6, &[0x60; 40], false);
        // Snaplen inside the payload: what is there, flagged as cut.
        let h = NflogHeader::new_checked(&r[..40]).unwrap();
        assert_eq!(
            h.payload(),
            Ok(Payload {
                start: 28,
                end: 40,
                cut: true
            })
        );
        // Cut right after the payload TLV header: an empty captured payload.
        let h = NflogHeader::new_checked(&r[..28]).unwrap();
        assert_eq!(
            h.payload(),
            Ok(Payload {
                start: 28,
                end: 28,
                cut: true
            })
        );
        // Cut inside the payload TLV header, or inside an earlier TLV.
        for n in [26, 18] {
            assert_eq!(
                NflogHeader::new_checked(&r[..n]).unwrap().payload(),
                Err(WireError::LinkTrunc),
                "{n}"
            );
        }
        // Header cut; version 1.
        assert_eq!(
            NflogHeader::new_checked(&r[..3]).unwrap_err(),
            WireError::LinkTrunc
        );
        let mut v1 = r.clone();
        v1[1] = 1;
        assert_eq!(
            NflogHeader::new_checked(&v1).unwrap_err(),
            WireError::LinkBadHeader
        );
        // A TLV length below 4 (would loop forever if not refused).
        for len in [0u16, 3] {
            let mut bad = r.clone();
            bad[12..14].copy_from_slice(&len.to_le_bytes());
            assert_eq!(
                NflogHeader::new_checked(&bad).unwrap().payload(),
                Err(WireError::LinkBadHeader),
                "{len}"
            );
        }
        // No TLVs at all; an empty payload TLV.
        assert_eq!(
            NflogHeader::new_checked(&[2, 0, 0, 0]).unwrap().payload(),
            Err(WireError::NotIp)
        );
        let mut empty = vec![2, 0, 0, 0];
        empty.extend(tlv(tlv_type::PAYLOAD, &[], false));
        assert_eq!(
            NflogHeader::new_checked(&empty).unwrap().payload(),
            Err(WireError::NotIp)
        );
        // A nested-attribute bit on the type is ignored.
        let mut nested = vec![2, 0, 0, 0];
        nested.extend(tlv(0x8000 | tlv_type::PAYLOAD, &[0x45], false));
        assert_eq!(
            NflogHeader::new_checked(&nested).unwrap().payload(),
            Ok(Payload {
                start: 8,
                end: 9,
                cut: false
            })
        );
    }
}
