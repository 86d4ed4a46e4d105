//! IEEE 802.11 MAC header (LINKTYPE_IEEE802_11 105, and behind radiotap): the frame
//! control field, the header of data frames (three or four addresses, QoS Control, HT
//! Control) and the LLC/SNAP header that starts the body of an unprotected data frame.
//!
//! Only data frames carry flows. Management and control frames carry none; null-data
//! subtypes have no body; a protected body is encrypted.

use super::{split_header, WireError};

pub const FC_LEN: usize = 2;
/// Frame control, duration, three addresses, sequence control.
pub const DATA_HEADER_LEN: usize = 24;
/// The fourth address, present when both To DS and From DS are set (a WDS/mesh frame).
pub const ADDR4_LEN: usize = 6;
/// QoS Control, in QoS data subtypes.
pub const QOS_CONTROL_LEN: usize = 2;
/// HT Control, in QoS data frames whose Order bit is set (+HTC).
pub const HT_CONTROL_LEN: usize = 4;
/// LLC (DSAP, SSAP, control) + SNAP (OUI, protocol).
pub const LLC_SNAP_LEN: usize = 8;

/// The type field of frame control.
pub mod frame_type {
    pub const MANAGEMENT: u8 = 0;
    pub const CONTROL: u8 = 1;
    pub const DATA: u8 = 2;
    /// Extension frames (DMG beacon, S1G beacon).
    pub const EXTENSION: u8 = 3;
}

/// Subtype bits of data frames.
pub mod data_subtype {
    /// Set in the subtypes without a body: Null, QoS Null, CF-Ack/CF-Poll without data.
    pub const NO_DATA: u8 = 0x4;
    /// Set in the QoS subtypes: a QoS Control field follows the addresses.
    pub const QOS: u8 = 0x8;
}

/// The flags byte of frame control.
pub mod fc_flags {
    pub const TO_DS: u8 = 0x01;
    pub const FROM_DS: u8 = 0x02;
    pub const MORE_FRAGMENTS: u8 = 0x04;
    pub const RETRY: u8 = 0x08;
    pub const POWER_MGMT: u8 = 0x10;
    pub const MORE_DATA: u8 = 0x20;
    pub const PROTECTED: u8 = 0x40;
    /// +HTC/Order: in a QoS data frame, an HT Control field follows QoS Control.
    pub const ORDER: u8 = 0x80;
}

/// QoS Control bit 7: the body is an A-MSDU (several subframes), not an LLC header.
pub const QOS_AMSDU_PRESENT: u16 = 0x0080;

/// A checked view of the frame control field, enough to classify any 802.11 frame
/// (control frames are as short as 10 bytes).
#[derive(Clone, Copy, Debug)]
pub struct FrameControl<'a> {
    fc: &'a [u8; FC_LEN],
}

impl<'a> FrameControl<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (fc, _) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(FrameControl { fc })
    }

    /// Protocol version: 0 for the frames this parser knows.
    pub fn version(&self) -> u8 {
        self.fc[0] & 0x03
    }

    /// One of [`frame_type`].
    pub fn frame_type(&self) -> u8 {
        (self.fc[0] >> 2) & 0x03
    }

    pub fn subtype(&self) -> u8 {
        self.fc[0] >> 4
    }

    /// The flags byte ([`fc_flags`]).
    pub fn flags(&self) -> u8 {
        self.fc[1]
    }

    pub fn to_ds(&self) -> bool {
        self.fc[1] & fc_flags::TO_DS != 0
    }

    pub fn from_ds(&self) -> bool {
        self.fc[1] & fc_flags::FROM_DS != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.fc[1] & fc_flags::MORE_FRAGMENTS != 0
    }

    pub fn protected(&self) -> bool {
        self.fc[1] & fc_flags::PROTECTED != 0
    }

    pub fn order(&self) -> bool {
        self.fc[1] & fc_flags::ORDER != 0
    }

    pub fn is_data(&self) -> bool {
        self.frame_type() == frame_type::DATA
    }

    /// A QoS data subtype.
    pub fn is_qos_data(&self) -> bool {
        self.is_data() && self.subtype() & data_subtype::QOS != 0
    }

    /// A data subtype without a body (Null, QoS Null, CF-Poll/CF-Ack without data).
    pub fn is_null_data(&self) -> bool {
        self.is_data() && self.subtype() & data_subtype::NO_DATA != 0
    }

    /// Length of a data frame's header as this frame control announces it: 24, + 6 for
    /// the fourth address, + 2 for QoS Control, + 4 for HT Control (QoS data with Order).
    pub fn data_header_len(&self) -> usize {
        let mut n = DATA_HEADER_LEN;
        if self.to_ds() && self.from_ds() {
            n += ADDR4_LEN;
        }
        if self.is_qos_data() {
            n += QOS_CONTROL_LEN;
            if self.order() {
                n += HT_CONTROL_LEN;
            }
        }
        n
    }
}

/// A checked view of a data frame's header and its body.
///
/// `new_checked` guarantees: a data frame whose whole header (fourth address, QoS and HT
/// Control included, and the radiotap padding after it when asked for) was captured.
#[derive(Clone, Copy, Debug)]
pub struct DataFrame<'a> {
    fc: FrameControl<'a>,
    hdr: &'a [u8; DATA_HEADER_LEN],
    addr4: Option<&'a [u8; ADDR4_LEN]>,
    qos: Option<&'a [u8; QOS_CONTROL_LEN]>,
    header_len: usize,
    body: &'a [u8],
}

impl<'a> DataFrame<'a> {
    /// `pad` asks for the header to be padded to a multiple of 4 bytes (radiotap's
    /// Data Pad flag). Fails with [`WireError::NotIp`] for a frame that is not a data
    /// frame and [`WireError::LinkTrunc`] if the header was not captured.
    pub fn new_checked(buf: &'a [u8], pad: bool) -> Result<Self, WireError> {
        let fc = FrameControl::new_checked(buf)?;
        if !fc.is_data() {
            return Err(WireError::NotIp);
        }
        let (hdr, mut rest) = split_header::<DATA_HEADER_LEN>(buf).ok_or(WireError::LinkTrunc)?;
        let mut addr4 = None;
        if fc.to_ds() && fc.from_ds() {
            let (a, r) = split_header(rest).ok_or(WireError::LinkTrunc)?;
            addr4 = Some(a);
            rest = r;
        }
        let mut qos = None;
        if fc.is_qos_data() {
            let (q, r) = split_header(rest).ok_or(WireError::LinkTrunc)?;
            qos = Some(q);
            rest = r;
            if fc.order() {
                let (_, r) = split_header::<HT_CONTROL_LEN>(rest).ok_or(WireError::LinkTrunc)?;
                rest = r;
            }
        }
        let mut header_len = fc.data_header_len();
        if pad {
            let skip = header_len.next_multiple_of(4) - header_len;
            rest = rest.get(skip..).ok_or(WireError::LinkTrunc)?;
            header_len += skip;
        }
        Ok(DataFrame {
            fc,
            hdr,
            addr4,
            qos,
            header_len,
            body: rest,
        })
    }

    pub fn frame_control(&self) -> FrameControl<'a> {
        self.fc
    }

    pub fn addr1(&self) -> [u8; 6] {
        let h = self.hdr;
        [h[4], h[5], h[6], h[7], h[8], h[9]]
    }

    pub fn addr2(&self) -> [u8; 6] {
        let h = self.hdr;
        [h[10], h[11], h[12], h[13], h[14], h[15]]
    }

    pub fn addr3(&self) -> [u8; 6] {
        let h = self.hdr;
        [h[16], h[17], h[18], h[19], h[20], h[21]]
    }

    /// The fourth address (To DS and From DS both set).
    pub fn addr4(&self) -> Option<[u8; 6]> {
        self.addr4.copied()
    }

    /// Sequence control: fragment number (low 4 bits) and sequence number.
    pub fn seq_ctrl(&self) -> u16 {
        u16::from_le_bytes([self.hdr[22], self.hdr[23]])
    }

    pub fn fragment_number(&self) -> u8 {
        (self.seq_ctrl() & 0x000f) as u8
    }

    /// QoS Control (little-endian), in QoS data frames.
    pub fn qos_control(&self) -> Option<u16> {
        self.qos.map(|q| u16::from_le_bytes(*q))
    }

    /// The body is an A-MSDU.
    pub fn amsdu(&self) -> bool {
        self.qos_control()
            .is_some_and(|q| q & QOS_AMSDU_PRESENT != 0)
    }

    /// The source address (SA): the station that sent the MSDU, whichever address field
    /// To DS / From DS put it in.
    pub fn src_addr(&self) -> [u8; 6] {
        let fc = self.frame_control();
        match (fc.to_ds(), fc.from_ds()) {
            (_, false) => self.addr2(),
            (false, true) => self.addr3(),
            (true, true) => self.addr4().unwrap_or_else(|| self.addr2()),
        }
    }

    /// The destination address (DA): the station the MSDU is for.
    pub fn dst_addr(&self) -> [u8; 6] {
        if self.frame_control().to_ds() {
            self.addr3()
        } else {
            self.addr1()
        }
    }

    /// Bytes before the body (padding included).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The body as captured (up to the FCS when the caller cut it off).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// A checked view of an LLC header (DSAP, SSAP, control) at the start of a body.
#[derive(Clone, Copy, Debug)]
pub struct LlcSnap<'a> {
    hdr: &'a [u8; 3],
    rest: &'a [u8],
}

/// OUI 00-00-00 (RFC 1042) and 00-00-F8 (802.1H bridge tunnel): SNAP's protocol is an
/// EtherType.
const ETHERTYPE_OUIS: [[u8; 3]; 2] = [[0, 0, 0], [0, 0, 0xf8]];

impl<'a> LlcSnap<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, rest) = split_header(buf).ok_or(WireError::LinkTrunc)?;
        Ok(LlcSnap { hdr, rest })
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

    /// The EtherType of an `AA AA 03` SNAP header with an EtherType OUI; `None` for any
    /// other LLC header (not IP), [`WireError::LinkTrunc`] if the SNAP part was cut.
    pub fn ethertype(&self) -> Result<Option<u16>, WireError> {
        if *self.hdr != [0xaa, 0xaa, 0x03] {
            return Ok(None);
        }
        let (snap, _) = split_header::<5>(self.rest).ok_or(WireError::LinkTrunc)?;
        if !ETHERTYPE_OUIS.contains(&[snap[0], snap[1], snap[2]]) {
            return Ok(None);
        }
        Ok(Some(u16::from_be_bytes([snap[3], snap[4]])))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const A1: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    pub(crate) const A2: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    pub(crate) const A3: [u8; 6] = [0x02, 0, 0, 0, 0, 3];
    pub(crate) const A4: [u8; 6] = [0x02, 0, 0, 0, 0, 4];

    /// An 802.11 header: frame control, duration 0, three addresses, sequence control,
    /// then the fourth address when To DS and From DS are set, and `tail` (QoS, HTC ...).
    pub(crate) fn header(fc0: u8, fc1: u8, seq: u16, tail: &[u8]) -> Vec<u8> {
        let mut b = vec![fc0, fc1, 0, 0];
        for a in [A1, A2, A3] {
            b.extend_from_slice(&a);
        }
        b.extend_from_slice(&seq.to_le_bytes());
        if fc1 & 3 == 3 {
            b.extend_from_slice(&A4);
        }
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn frame_control_classifies() {
        let fc = |b: &'static [u8; 2]| FrameControl::new_checked(b).unwrap();
        // Beacon, ACK, QoS data, null function, protected data, version 1.
        assert_eq!(fc(&[0x80, 0]).frame_type(), frame_type::MANAGEMENT);
        assert_eq!(fc(&[0x80, 0]).subtype(), 8);
        assert_eq!(fc(&[0xd4, 0]).frame_type(), frame_type::CONTROL);
        let q = fc(&[0x88, 0x01]);
        assert!(q.is_data() && q.is_qos_data() && !q.is_null_data() && q.to_ds());
        assert_eq!(q.data_header_len(), 26);
        assert!(fc(&[0x48, 0x01]).is_null_data());
        assert!(fc(&[0xc8, 0x01]).is_null_data()); // QoS Null
        assert!(fc(&[0x08, 0x41]).protected());
        assert_eq!(fc(&[0x09, 0]).version(), 1);
        assert_eq!(fc(&[0x0c, 0]).frame_type(), frame_type::EXTENSION);
        // Header lengths: plain, 4 addresses, QoS + HTC, QoS + HTC + 4 addresses; the
        // Order bit adds nothing to a non-QoS data frame.
        assert_eq!(fc(&[0x08, 0x02]).data_header_len(), 24);
        assert_eq!(fc(&[0x08, 0x03]).data_header_len(), 30);
        assert_eq!(fc(&[0x88, 0x81]).data_header_len(), 30);
        assert_eq!(fc(&[0x88, 0x83]).data_header_len(), 36);
        assert_eq!(fc(&[0x08, 0x81]).data_header_len(), 24);
        assert!(fc(&[0x08, 0x04]).more_fragments());
        assert_eq!(fc(&[0x08, 0xff]).flags(), 0xff);
        assert_eq!(
            FrameControl::new_checked(&[0x08]).unwrap_err(),
            WireError::LinkTrunc
        );
    }

    #[test]
    fn addresses_follow_to_ds_and_from_ds() {
        let sa_da = |fc1: u8| {
            let f = header(0x08, fc1, 0, &[0xaa]);
            let d = DataFrame::new_checked(&f, false).unwrap();
            (d.src_addr(), d.dst_addr())
        };
        assert_eq!(sa_da(0x00), (A2, A1)); // ad hoc: DA, SA, BSSID
        assert_eq!(sa_da(0x01), (A2, A3)); // to the AP: BSSID, SA, DA
        assert_eq!(sa_da(0x02), (A3, A1)); // from the AP: DA, BSSID, SA
        assert_eq!(sa_da(0x03), (A4, A3)); // WDS: RA, TA, DA, SA
        let f = header(0x08, 0x03, 0x1234, &[0xaa]);
        let d = DataFrame::new_checked(&f, false).unwrap();
        assert_eq!(
            (d.addr1(), d.addr2(), d.addr3(), d.addr4()),
            (A1, A2, A3, Some(A4))
        );
        assert_eq!((d.header_len(), d.body()), (30, &[0xaa][..]));
        assert_eq!((d.seq_ctrl(), d.fragment_number()), (0x1234, 4));
        assert_eq!(d.qos_control(), None);
        assert!(!d.amsdu());
    }

    #[test]
    fn qos_htc_and_padding() {
        // QoS data to the AP, TID 5.
        let f = header(0x88, 0x01, 0, &[0x05, 0x00, 0xaa]);
        let d = DataFrame::new_checked(&f, false).unwrap();
        assert_eq!(
            (d.header_len(), d.qos_control(), d.body()),
            (26, Some(5), &[0xaa][..])
        );
        // Radiotap's Data Pad: 26 is padded to 28.
        let f = header(0x88, 0x01, 0, &[0x05, 0x00, 0xee, 0xee, 0xaa]);
        let d = DataFrame::new_checked(&f, true).unwrap();
        assert_eq!((d.header_len(), d.body()), (28, &[0xaa][..]));
        // +HTC: 4 bytes of HT Control after QoS Control (tcpdump's ieee802.11_htc.pcap).
        let f = header(0x88, 0x81, 0, &[0x00, 0x00, 1, 2, 3, 4, 0xaa]);
        let d = DataFrame::new_checked(&f, false).unwrap();
        assert_eq!((d.header_len(), d.body()), (30, &[0xaa][..]));
        // A-MSDU present.
        let f = header(0x88, 0x02, 0, &[0x80, 0x00]);
        assert!(DataFrame::new_checked(&f, false).unwrap().amsdu());
        // 4 addresses + QoS + HTC, padded: 36 is already a multiple of 4.
        let f = header(0x88, 0x83, 0, &[0, 0, 1, 2, 3, 4]);
        let d = DataFrame::new_checked(&f, true).unwrap();
        assert_eq!((d.header_len(), d.body().len()), (36, 0));
    }

    #[test]
    fn data_frame_truncated_or_not_data() {
        let f = header(0x88, 0x83, 0, &[0, 0, 1, 2, 3, 4]);
        for n in [0, 1, 23, 24, 29, 31, 35] {
            assert_eq!(
                DataFrame::new_checked(&f[..n], false).unwrap_err(),
                WireError::LinkTrunc,
                "{n}"
            );
        }
        // Padding cut off.
        let f = header(0x88, 0x01, 0, &[0, 0, 0xee]);
        assert_eq!(
            DataFrame::new_checked(&f, true).unwrap_err(),
            WireError::LinkTrunc
        );
        // A beacon is not a data frame.
        let f = header(0x80, 0x00, 0, &[0; 12]);
        assert_eq!(
            DataFrame::new_checked(&f, false).unwrap_err(),
            WireError::NotIp
        );
    }

    #[test]
    fn llc_snap() {
        let l = LlcSnap::new_checked(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00, 0x45]).unwrap();
        assert_eq!((l.dsap(), l.ssap(), l.control()), (0xaa, 0xaa, 3));
        assert_eq!(l.ethertype(), Ok(Some(0x0800)));
        // 802.1H bridge tunnel OUI.
        let l = LlcSnap::new_checked(&[0xaa, 0xaa, 0x03, 0, 0, 0xf8, 0x86, 0xdd]).unwrap();
        assert_eq!(l.ethertype(), Ok(Some(0x86dd)));
        // Cisco OUI (CDP), other LLC (STP), only one SAP 0xaa: not an EtherType.
        for b in [
            [0xaa, 0xaa, 0x03, 0, 0, 0x0c, 0x20, 0x00],
            [0x42, 0x42, 0x03, 0, 0, 0, 0, 0],
            [0xaa, 0x42, 0x03, 0, 0, 0, 0x08, 0x00],
            [0xaa, 0xaa, 0x00, 0, 0, 0, 0x08, 0x00],
        ] {
            assert_eq!(LlcSnap::new_checked(&b).unwrap().ethertype(), Ok(None));
        }
        // Cut inside the SNAP part, or inside the LLC header.
        let l = LlcSnap::new_checked(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08]).unwrap();
        assert_eq!(l.ethertype(), Err(WireError::LinkTrunc));
        assert_eq!(
            LlcSnap::new_checked(&[0xaa, 0xaa]).unwrap_err(),
            WireError::LinkTrunc
        );
        // A short non-SNAP LLC frame is fine: not IP.
        let l = LlcSnap::new_checked(&[0x42, 0x42, 0x03]).unwrap();
        assert_eq!(l.ethertype(), Ok(None));
    }
}
