//! Where frames come from. Every source implements [`PacketSource`]; the rest of the
//! pipeline never knows whether a frame came from a file, the generator or a NIC queue.

pub mod afxdp;
pub mod doctor;
pub mod live;
pub mod pcap;
pub mod probe;
pub mod synth;
pub mod sys;
pub mod xdp;

use std::path::PathBuf;

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
}

impl LinkType {
    /// Maps a pcap LINKTYPE_ value (the low 16 bits; the FCS bits are masked off by the
    /// caller) to a supported link type.
    pub fn from_linktype(v: u32) -> Option<LinkType> {
        Some(match v {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// The LINKTYPE_ value written to PCAP files for this link type.
    pub fn to_linktype(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
        }
    }
}

/// One captured frame, borrowed from its source until the next call.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire (may exceed `data.len()` when snaplen cut it).
    pub orig_len: u32,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Link-layer framing of `data`.
    pub link: LinkType,
    /// Index of the frame in its source (0-based), for error messages.
    pub index: u64,
}

/// Fatal source errors. A malformed *packet* is never one of these: it is a counted drop.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file (magic {magic:#010x})")]
    NotACapture { path: PathBuf, magic: u32 },
    #[error("{path}: unsupported link type {linktype} ({name})")]
    LinkType {
        path: PathBuf,
        linktype: u32,
        name: &'static str,
    },
    #[error("{path}: corrupt capture at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}

/// A source of frames: a capture file (replay), the synthetic generator (bench) or an
/// AF_XDP socket (live).
pub trait PacketSource {
    /// The next frame, `Ok(None)` at the end of the input. After an `Err` the source is
    /// finished: frames returned before it stay valid results.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;
}
