//! Where frames come from. Every source implements [`PacketSource`]; the rest of the
//! pipeline never knows whether a frame came from a file, the generator or a NIC queue.

pub mod afxdp;
pub mod doctor;
pub mod gen;
pub mod inject;
pub mod interrupt;
pub mod netns;
pub mod pcap;
pub mod probe;
pub mod synth;
pub mod sys;
pub mod xdp;

use std::path::PathBuf;

pub use crate::wire::LinkType;

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
    /// A regular file that got shorter while it was read (another process truncated or
    /// replaced it): the frames before `offset` were read.
    #[error("{path}: the file shrank while being read: it now ends at byte {now}, it had {was} bytes when opened; the packets before byte offset {offset} were read")]
    Shrank {
        path: PathBuf,
        offset: u64,
        now: u64,
        was: u64,
    },
    /// SIGINT or SIGTERM asked the reader to stop (`capture::interrupt`).
    #[error("{path}: interrupted by {} at byte offset {offset}; the packets before it were read", interrupt::signal_name(*signal))]
    Interrupted {
        path: PathBuf,
        signal: i32,
        offset: u64,
    },
    #[error("{0}")]
    Other(String),
}

/// What a source has next: a frame, nothing yet (live sources, past a deadline), or the
/// end of its input.
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// Nothing arrived before the deadline.
    Idle,
    /// The end: the file is read, or the live source was stopped and is drained.
    End,
}

/// A source of frames: a capture file (replay), the synthetic generator (bench) or an
/// AF_XDP socket (live).
pub trait PacketSource {
    /// The next frame, `Ok(None)` at the end of the input. After an `Err` the source is
    /// finished: frames returned before it stay valid results.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;

    /// The next frame, or [`Next::Idle`] when none came before `deadline` (sources that
    /// wait, i.e. live ones; a file never idles), or [`Next::End`].
    #[inline]
    fn next_or_idle(
        &mut self,
        _deadline: Option<std::time::Instant>,
    ) -> Result<Next<'_>, CaptureError> {
        Ok(match self.next_frame()? {
            Some(f) => Next::Frame(f),
            None => Next::End,
        })
    }
}
