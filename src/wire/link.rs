//! Link-layer types: how a frame starts (the capture file header or the interface says).

/// Link-layer framing of a frame, from the capture file header or the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1)
    Ethernet,
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte address family in host byte order.
    Null,
    /// LINKTYPE_LOOP (108): like NULL but the family is big-endian.
    Loop,
    /// LINKTYPE_RAW (101) and DLT_RAW (12/14): raw IPv4 or IPv6, version from the first nibble.
    Raw,
    /// LINKTYPE_IPV4 (228)
    Ipv4,
    /// LINKTYPE_IPV6 (229)
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1, 16-byte header.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2, 20-byte header.
    LinuxSll2,
    /// LINKTYPE_PPP (9): the PPP protocol field (RFC 1661), optionally behind the FF 03
    /// address and control bytes of HDLC-like framing (RFC 1662).
    Ppp,
    /// LINKTYPE_PPP_HDLC (50): PPP in HDLC-like framing; decoded as [`LinkType::Ppp`], kept
    /// apart so that a capture's link type is written back unchanged.
    PppHdlc,
    /// LINKTYPE_C_HDLC (104): Cisco HDLC, address, control and a 2-byte EtherType.
    CHdlc,
    /// LINKTYPE_IEEE802_11 (105): an 802.11 MAC header, no radio header.
    Ieee80211,
    /// LINKTYPE_IEEE802_11_RADIOTAP (127): a radiotap header, then an 802.11 frame.
    Ieee80211Radiotap,
    /// LINKTYPE_NFLOG (239): Linux netfilter log, a header and TLVs, one holding the packet.
    Nflog,
}

impl LinkType {
    /// Every supported link type, in the order of their LINKTYPE_ values.
    pub const ALL: [LinkType; 14] = [
        LinkType::Null,
        LinkType::Ethernet,
        LinkType::Ppp,
        LinkType::PppHdlc,
        LinkType::Raw,
        LinkType::CHdlc,
        LinkType::Ieee80211,
        LinkType::Loop,
        LinkType::LinuxSll,
        LinkType::Ieee80211Radiotap,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::Nflog,
        LinkType::LinuxSll2,
    ];

    /// Maps a pcap LINKTYPE_ value (the low 16 bits; the FCS bits are masked off by the
    /// caller) to a supported link type.
    pub fn from_linktype(v: u32) -> Option<LinkType> {
        Some(match v {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            12 | 14 | 101 => LinkType::Raw,
            50 => LinkType::PppHdlc,
            104 => LinkType::CHdlc,
            105 => LinkType::Ieee80211,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            127 => LinkType::Ieee80211Radiotap,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            239 => LinkType::Nflog,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// The LINKTYPE_ value written to PCAP files for this link type.
    pub fn to_linktype(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Ppp => 9,
            LinkType::PppHdlc => 50,
            LinkType::Raw => 101,
            LinkType::CHdlc => 104,
            LinkType::Ieee80211 => 105,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ieee80211Radiotap => 127,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::Nflog => 239,
            LinkType::LinuxSll2 => 276,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linktype_numbers_round_trip() {
        for l in LinkType::ALL {
            assert_eq!(LinkType::from_linktype(l.to_linktype()), Some(l), "{l:?}");
        }
        let mut numbers: Vec<u32> = LinkType::ALL.iter().map(|l| l.to_linktype()).collect();
        let sorted = {
            let mut s = numbers.clone();
            s.sort_unstable();
            s.dedup();
            s
        };
        assert_eq!(numbers, sorted, "ALL is in LINKTYPE_ order, no duplicates");
        numbers.extend([12, 14]);
        for v in 0..=u16::MAX as u32 {
            assert_eq!(
                LinkType::from_linktype(v).is_some(),
                numbers.contains(&v),
                "{v}"
            );
        }
        // DLT_RAW's platform values read as LINKTYPE_RAW, written back as 101.
        assert_eq!(LinkType::from_linktype(12), Some(LinkType::Raw));
        assert_eq!(LinkType::from_linktype(14), Some(LinkType::Raw));
        assert_eq!(LinkType::from_linktype(147), None);
    }
}
