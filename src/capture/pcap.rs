//! Replay source: classic pcap (µs and ns, both byte orders) and pcapng (any number of
//! sections and interfaces, per-interface `if_tsresol`/`if_tsoffset`), read through
//! pcap-file's slice parsers over a buffer the file is read into in steps (so a file
//! truncated under the reader is an error with its offset, and FIFOs and standard input
//! are read as streams).
//!
//! The reader is lenient where tshark is (a record longer than the snaplen, a
//! microsecond field ≥ 10^6) and counts each leniency; it stops with
//! [`CaptureError::Corrupt`] naming the byte offset where the file stops making sense.
//! Frames returned before such an error are valid.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use pcap_file::pcap::{PcapParser, RawPcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, TsResolution};

use super::{interrupt, CaptureError, Frame, LinkType, PacketSource};

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;

/// Counters for things the reader tolerated. Named like every other counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCounters {
    /// Records whose captured length exceeds the file's snaplen (accepted, as tshark does).
    pub caplen_gt_snaplen: u64,
    /// Records whose captured length exceeds the original length (orig_len raised to it).
    pub caplen_gt_origlen: u64,
    /// Microsecond/nanosecond fields out of range (normalised into the seconds).
    pub ts_frac_invalid: u64,
    /// pcapng blocks that are not packets (skipped): statistics, name resolution, custom.
    pub pcapng_other_blocks: u64,
    /// Timestamps after 2554-07-21 (u64 nanoseconds overflow): clamped to the maximum.
    pub ts_out_of_range: u64,
    /// pcapng blocks with strings (comments, names) that are not UTF-8: read with those
    /// bytes shown as `?`, as tshark reads them.
    pub pcapng_non_utf8: u64,
}

impl ReaderCounters {
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("capture.file.pcapng_non_utf8", self.pcapng_non_utf8),
            ("capture.file.ts_out_of_range", self.ts_out_of_range),
            ("capture.file.caplen_gt_snaplen", self.caplen_gt_snaplen),
            ("capture.file.caplen_gt_origlen", self.caplen_gt_origlen),
            ("capture.file.ts_frac_invalid", self.ts_frac_invalid),
            ("capture.file.pcapng_other_blocks", self.pcapng_other_blocks),
        ]
    }
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    link: Option<LinkType>,
    raw_linktype: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_s: i64,
}

enum Kind {
    Pcap {
        parser: PcapParser,
        link: LinkType,
        nanos: bool,
        snaplen: u32,
    },
    PcapNg {
        parser: Box<PcapNgParser>,
        ifaces: Vec<Iface>,
    },
}

/// A pcap or pcapng file, a FIFO, or standard input (`-`), read as a stream.
pub struct PcapFileSource {
    input: Input,
    kind: Kind,
    index: u64,
    /// A block whose strings were not UTF-8, copied with them made ASCII (see
    /// [`ascii_strings`]).
    scratch: Vec<u8>,
    /// What the reader tolerated so far.
    pub counters: ReaderCounters,
}

/// Bytes of a capture, read in steps into one buffer: a record is parsed in place from
/// the buffer (no copy per packet); the buffer is refilled when the next record is not
/// whole in it. Reading (instead of mapping the file) makes a file truncated under the
/// reader an error with its offset instead of a SIGBUS, lets FIFOs and pipes be read,
/// keeps the memory bounded by the buffer, and lets a signal stop the reader between two
/// reads.
struct Input {
    file: File,
    path: PathBuf,
    /// A regular file's size when it was opened (None: a FIFO, pipe or device).
    size_at_open: Option<u64>,
    buf: Vec<u8>,
    /// Unread bytes are `buf[lo..hi]`.
    lo: usize,
    hi: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    /// The source is finished (end of input or an error): no more frames.
    done: bool,
}

/// Bytes read per step (the buffer grows for a record larger than it).
const READ_STEP: usize = 1 << 20;
/// The largest record (pcap record or pcapng block) the reader accepts: tshark's limit
/// for a packet is 256 KiB; pcapng blocks with many options are larger but nowhere near.
pub const MAX_RECORD: usize = 64 << 20;
/// How long a stream read waits before looking at the stop flag again.
const POLL_MS: u16 = 200;

impl Input {
    #[inline]
    fn avail(&self) -> usize {
        self.hi - self.lo
    }

    /// File offset of the next unread byte.
    #[inline]
    fn offset(&self) -> u64 {
        self.base + self.lo as u64
    }

    /// Makes at least `n` unread bytes available if the input has them. `Ok(false)`: the
    /// input ended with fewer. `n` must be at most [`MAX_RECORD`].
    fn ensure(&mut self, n: usize) -> Result<bool, CaptureError> {
        if self.avail() >= n {
            return Ok(true);
        }
        debug_assert!(n <= MAX_RECORD);
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.base += self.lo as u64;
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.buf.len() < n {
            // A small file gets a buffer of its size, not a whole step.
            let step = self.size_at_open.map_or(READ_STEP, |sz| {
                (sz as usize).saturating_add(1).min(READ_STEP)
            });
            self.buf.resize(n.next_power_of_two().max(step), 0);
        }
        while self.hi < n && !self.eof {
            if let Some(signal) = interrupt::requested() {
                return Err(CaptureError::Interrupted {
                    path: self.path.clone(),
                    signal,
                    offset: self.offset(),
                });
            }
            if self.size_at_open.is_none() && !self.wait_readable()? {
                continue;
            }
            match self.file.read(&mut self.buf[self.hi..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.hi += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        if self.eof {
            if let Some(was) = self.size_at_open {
                let now = self.base + self.hi as u64;
                if now < was {
                    return Err(CaptureError::Shrank {
                        path: self.path.clone(),
                        offset: self.offset(),
                        now,
                        was,
                    });
                }
            }
        }
        Ok(self.avail() >= n)
    }

    /// Waits until a stream has bytes (or its writer left) for up to [`POLL_MS`].
    fn wait_readable(&self) -> Result<bool, CaptureError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(CaptureError::Io {
                path: self.path.clone(),
                source: e.into(),
            }),
        }
    }
}

fn err_corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> CaptureError {
    CaptureError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// A human name for a LINKTYPE_ value, for error messages (the supported ones, and a few
/// others a capture may well have).
pub fn linktype_name(v: u32) -> &'static str {
    match v {
        0 => "NULL",
        1 => "ETHERNET",
        9 => "PPP",
        50 => "PPP_HDLC",
        101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        108 => "LOOP",
        113 => "LINUX_SLL",
        119 => "IEEE802_11_PRISM",
        127 => "IEEE802_11_RADIOTAP",
        147..=162 => "USER",
        163 => "IEEE802_11_AVS",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        192 => "PPI",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        274 => "ETHERNET_MPACKET",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// Opens `path` for reading: `-` is standard input; a FIFO is opened without waiting for
/// its writer (the first read waits, and can be interrupted).
fn open_input(path: &Path) -> Result<(File, Option<u64>), CaptureError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let io = |source: std::io::Error| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.as_os_str() == "-" {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(io)?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(io)?;
        let size = meta.file_type().is_file().then_some(meta.len());
        return Ok((file, size));
    }
    let meta = std::fs::metadata(path).map_err(io)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(CaptureError::Other(format!(
            "{}: is a directory, expected a pcap or pcapng file",
            path.display()
        )));
    }
    let mut oo = std::fs::OpenOptions::new();
    oo.read(true);
    if ft.is_fifo() {
        oo.custom_flags(libc::O_NONBLOCK);
    }
    let file = oo.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let size = meta.file_type().is_file().then_some(meta.len());
    Ok((file, size))
}

impl PcapFileSource {
    /// Opens `path` (`-`: standard input). Fails with a one-line error for a missing
    /// file, a directory, a file that is neither pcap nor pcapng, or an unsupported link
    /// type.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let (file, size_at_open) = open_input(&path)?;
        if let Some(size) = size_at_open {
            // Readahead hint only; failure changes nothing.
            let _ = nix::fcntl::posix_fadvise(
                file.as_raw_fd(),
                0,
                size as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
            );
        }
        let mut input = Input {
            file,
            path: path.clone(),
            size_at_open,
            buf: Vec::new(),
            lo: 0,
            hi: 0,
            base: 0,
            eof: false,
            done: false,
        };
        if !input.ensure(4)? {
            return Err(CaptureError::Other(format!(
                "{}: too short to be a capture file ({} bytes)",
                path.display(),
                input.avail()
            )));
        }
        let mut counters = ReaderCounters::default();
        let head = &input.buf[..4];
        let magic_le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let magic_be = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = if [PCAP_MAGIC_US, PCAP_MAGIC_NS].contains(&magic_le)
            || [PCAP_MAGIC_US, PCAP_MAGIC_NS].contains(&magic_be)
        {
            input.ensure(24)?;
            let bytes = &input.buf[input.lo..input.hi];
            let (rem, parser) = PcapParser::new(bytes).map_err(|e| {
                err_corrupt(&path, 0, format!("bad pcap file header: {}", pcap_err(&e)))
            })?;
            let used = bytes.len() - rem.len();
            let hdr = parser.header();
            let raw_lt = u32::from(hdr.datalink);
            let lt16 = raw_lt & 0xffff;
            let link = LinkType::from_linktype(lt16).ok_or(CaptureError::LinkType {
                path: path.clone(),
                linktype: lt16,
                name: linktype_name(lt16),
            })?;
            let nanos = hdr.ts_resolution == TsResolution::NanoSecond;
            let snaplen = hdr.snaplen;
            input.lo += used;
            Kind::Pcap {
                parser,
                link,
                nanos,
                snaplen,
            }
        } else if magic_le == PCAPNG_SHB {
            let len = ng_block_len(&mut input, None)?;
            let bytes = &input.buf[input.lo..input.hi];
            let bytes = &bytes[..len.unwrap_or(bytes.len()).min(bytes.len())];
            let bad = |e: PcapError| {
                err_corrupt(
                    &path,
                    0,
                    format!("bad pcapng section header: {}", pcap_err(&e)),
                )
            };
            let parser = match PcapNgParser::new(bytes) {
                Ok((rem, parser)) => {
                    input.lo += bytes.len() - rem.len();
                    parser
                }
                Err(e) if is_utf8(&e) => {
                    let mut copy = bytes.to_vec();
                    ascii_strings(&mut copy, None);
                    let (rem, parser) = PcapNgParser::new(&copy).map_err(bad)?;
                    counters.pcapng_non_utf8 += 1;
                    input.lo += copy.len() - rem.len();
                    parser
                }
                Err(e) => return Err(bad(e)),
            };
            Kind::PcapNg {
                parser: Box::new(parser),
                ifaces: Vec::new(),
            }
        } else {
            return Err(CaptureError::NotACapture {
                path,
                magic: magic_be,
            });
        };
        Ok(PcapFileSource {
            input,
            kind,
            index: 0,
            scratch: Vec::new(),
            counters,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.input.path
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// Link type of a classic pcap file, or of the first interface of a pcapng file once
    /// it has been seen.
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.kind {
            Kind::Pcap { link, .. } => Some(*link),
            Kind::PcapNg { ifaces, .. } => ifaces.first().and_then(|i| i.link),
        }
    }

    /// A regular file's size when it was opened (None for a stream).
    pub fn size_at_open(&self) -> Option<u64> {
        self.input.size_at_open
    }
}

/// The total length of the pcapng block at the reader's position, with the block made
/// whole in the buffer. `Ok(None)`: the input ends before a block header or inside the
/// block (the parser then reports what is missing on what is there). `endian`: the
/// section's byte order (None: the block must be a section header, which says it).
fn ng_block_len(
    input: &mut Input,
    endian: Option<Endianness>,
) -> Result<Option<usize>, CaptureError> {
    if !input.ensure(12)? {
        return Ok(None);
    }
    let b = &input.buf[input.lo..input.lo + 12];
    let word = |x: &[u8], e: Endianness| {
        let a = [x[0], x[1], x[2], x[3]];
        match e {
            Endianness::Little => u32::from_le_bytes(a),
            Endianness::Big => u32::from_be_bytes(a),
        }
    };
    let is_shb = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PCAPNG_SHB;
    let e = if is_shb || endian.is_none() {
        // The byte-order magic 0x1A2B3C4D.
        if u32::from_le_bytes([b[8], b[9], b[10], b[11]]) == 0x1A2B_3C4D {
            Endianness::Little
        } else {
            Endianness::Big
        }
    } else {
        endian.unwrap_or(Endianness::Little)
    };
    let len = word(&b[4..8], e) as usize;
    if !(12..=MAX_RECORD).contains(&len) {
        // The parser gives the error for a short length; a huge one is refused here
        // (before a buffer of that size is made).
        if len > MAX_RECORD {
            return Err(err_corrupt(
                &input.path,
                input.offset() as usize,
                format!(
                    "bad pcapng block: it claims {len} bytes, more than the {} MiB a block may have",
                    MAX_RECORD >> 20
                ),
            ));
        }
        return Ok(Some(12));
    }
    Ok(input.ensure(len)?.then_some(len))
}

fn pcap_err(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "file ends in the middle of a record".to_string(),
        other => other.to_string(),
    }
}

fn iface_from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Iface {
    let raw: u32 = u32::from(idb.linktype);
    let lt16 = raw & 0xffff;
    let mut units_per_sec = 1_000_000u64;
    let mut offset_s = 0i64;
    for opt in &idb.options {
        match opt {
            InterfaceDescriptionOption::IfTsResol(r) => {
                let r = *r;
                units_per_sec = if r & 0x80 != 0 {
                    1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(0)
                } else {
                    10u64.checked_pow(u32::from(r)).unwrap_or(0)
                };
            }
            InterfaceDescriptionOption::IfTsOffset(o) => offset_s = *o as i64,
            _ => {}
        }
    }
    Iface {
        link: LinkType::from_linktype(lt16),
        raw_linktype: lt16,
        units_per_sec,
        offset_s,
    }
}

/// Converts a pcapng timestamp (in the interface's units) to ns since the epoch.
fn ng_ts_ns(ts_units: u64, iface: &Iface) -> Option<u64> {
    if iface.units_per_sec == 0 {
        return Some(0);
    }
    let secs = ts_units / iface.units_per_sec;
    let frac = ts_units % iface.units_per_sec;
    let frac_ns = (u128::from(frac) * 1_000_000_000u128 / u128::from(iface.units_per_sec)) as u64;
    let secs = (secs as i64).checked_add(iface.offset_s)?;
    if secs < 0 {
        return Some(0);
    }
    (secs as u64)
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

impl PacketSource for PcapFileSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.input.done {
            return Ok(None);
        }
        // Finished unless a frame comes back (an error or the end finishes the source).
        self.input.done = true;
        self.next_inner()
    }
}

impl PcapFileSource {
    fn next_inner(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match &self.kind {
            Kind::Pcap { .. } => self.next_pcap(),
            Kind::PcapNg { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let Kind::Pcap {
            parser,
            link,
            nanos,
            snaplen,
        } = &mut self.kind
        else {
            unreachable!("next_pcap on a pcapng source")
        };
        let input = &mut self.input;
        // The record header, then the whole record, in the buffer.
        if !input.ensure(16)? && input.avail() == 0 {
            return Ok(None);
        }
        let mut need = 16;
        if input.avail() >= 16 {
            let h = &input.buf[input.lo + 8..input.lo + 12];
            let a = [h[0], h[1], h[2], h[3]];
            let incl = match parser.header().endianness {
                Endianness::Little => u32::from_le_bytes(a),
                Endianness::Big => u32::from_be_bytes(a),
            } as usize;
            let beyond_file = input
                .size_at_open
                .is_some_and(|sz| input.offset() + 16 + incl as u64 > sz);
            if 16 + incl > MAX_RECORD && !beyond_file {
                return Err(err_corrupt(
                    &input.path,
                    input.offset() as usize,
                    format!(
                        "record claims {incl} captured bytes, more than the {} MiB a record may have",
                        MAX_RECORD >> 20
                    ),
                ));
            }
            if 16 + incl <= MAX_RECORD {
                input.ensure(16 + incl)?;
                need = 16 + incl;
            }
        }
        let off = input.offset();
        let rest = &input.buf[input.lo..input.hi];
        let rest = if rest.len() > need && need > 16 {
            &rest[..need]
        } else {
            rest
        };
        let (rem, raw): (&[u8], RawPcapPacket<'_>) = match parser.next_raw_packet(rest) {
            Ok(x) => x,
            Err(e) => {
                // Where a record is cut by the end of the file, say how far it goes.
                let rest_len = input.size_at_open.map_or(rest.len(), |sz| {
                    (sz.saturating_sub(off) as usize).max(rest.len())
                });
                return Err(err_corrupt(
                    &input.path,
                    off as usize,
                    record_err(rest, rest_len, &e),
                ));
            }
        };
        let used = rest.len() - rem.len();
        let data: &[u8] = match raw.data {
            std::borrow::Cow::Borrowed(d) => d,
            std::borrow::Cow::Owned(_) => unreachable_owned(),
        };
        if raw.incl_len > *snaplen {
            self.counters.caplen_gt_snaplen += 1;
        }
        let mut orig_len = raw.orig_len;
        if raw.incl_len > orig_len {
            self.counters.caplen_gt_origlen += 1;
            orig_len = raw.incl_len;
        }
        let frac_per_sec: u64 = if *nanos { 1_000_000_000 } else { 1_000_000 };
        let frac = u64::from(raw.ts_frac);
        if frac >= frac_per_sec {
            self.counters.ts_frac_invalid += 1;
        }
        let frac_ns = if *nanos { frac } else { frac * 1000 };
        let ts_ns = u64::from(raw.ts_sec) * 1_000_000_000 + frac_ns;
        input.lo += used;
        input.done = false;
        let index = self.index;
        self.index += 1;
        Ok(Some(Frame {
            ts_ns,
            orig_len,
            data,
            link: *link,
            index,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        // Blocks that carry no packet are handled in this loop, which never hands out a
        // borrow of the buffer; the packet block is parsed after it.
        let (block_off, block_len) = loop {
            let Kind::PcapNg { parser, ifaces } = &mut self.kind else {
                unreachable!("next_pcapng on a pcap source")
            };
            let input = &mut self.input;
            if !input.ensure(1)? {
                return Ok(None);
            }
            let len = ng_block_len(input, Some(parser.section().endianness))?;
            let off = input.offset();
            let bytes = &input.buf[input.lo..input.hi];
            let bytes = &bytes[..len.unwrap_or(bytes.len()).min(bytes.len())];
            let btype = bytes
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let packet_block = len.is_some()
                && btype.is_some_and(|t| {
                    let t = if parser.section().endianness == Endianness::Big {
                        t.swap_bytes()
                    } else {
                        t
                    };
                    matches!(t, 2 | 3 | 6)
                });
            if let (true, Some(len)) = (packet_block, len) {
                break (off, len);
            }
            let bad = |e: PcapError| {
                err_corrupt(
                    &input.path,
                    off as usize,
                    format!("bad pcapng block: {}", pcap_err(&e)),
                )
            };
            let endian = parser.section().endianness;
            let (used, block) = match parser.next_block(bytes) {
                Ok((rem, block)) => (bytes.len() - rem.len(), block),
                Err(e) if is_utf8(&e) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(bytes);
                    ascii_strings(&mut self.scratch, Some(endian));
                    let (rem, block) = parser.next_block(&self.scratch).map_err(bad)?;
                    self.counters.pcapng_non_utf8 += 1;
                    (self.scratch.len() - rem.len(), block)
                }
                Err(e) => return Err(bad(e)),
            };
            if used == 0 {
                // Never the case for a parsed block; a guard against looping forever.
                return Err(err_corrupt(
                    &input.path,
                    off as usize,
                    "bad pcapng block: empty block",
                ));
            }
            match block {
                Block::SectionHeader(_) => ifaces.clear(),
                Block::InterfaceDescription(idb) => ifaces.push(iface_from_idb(&idb)),
                _ => self.counters.pcapng_other_blocks += 1,
            }
            input.lo += used;
        };
        let Kind::PcapNg { parser, ifaces } = &mut self.kind else {
            unreachable!("next_pcapng on a pcap source")
        };
        let input = &mut self.input;
        let bytes = &input.buf[input.lo..input.hi];
        let bad = |e: PcapError| {
            err_corrupt(
                &input.path,
                block_off as usize,
                format!("bad pcapng block: {}", pcap_err(&e)),
            )
        };
        let block = match parser.next_block(bytes) {
            Ok((rem, block)) => {
                input.lo += bytes.len() - rem.len();
                block
            }
            Err(e) if is_utf8(&e) => {
                // The block is whole in the buffer (made so in the loop above).
                let bytes = &bytes[..block_len];
                self.scratch.clear();
                self.scratch.extend_from_slice(bytes);
                ascii_strings(&mut self.scratch, Some(parser.section().endianness));
                let (rem, block) = parser.next_block(&self.scratch).map_err(|e| {
                    err_corrupt(
                        &input.path,
                        block_off as usize,
                        format!("bad pcapng block: {}", pcap_err(&e)),
                    )
                })?;
                self.counters.pcapng_non_utf8 += 1;
                input.lo += self.scratch.len() - rem.len();
                block
            }
            Err(e) => return Err(bad(e)),
        };
        let (iface_id, ts_units, orig_len, data) = match block {
            Block::EnhancedPacket(EnhancedPacketBlock {
                interface_id,
                timestamp,
                original_len,
                data,
                ..
            }) => {
                // pcap-file stores the raw 64-bit timestamp as nanoseconds; it is in the
                // interface's units.
                let units = timestamp.as_nanos() as u64;
                let d: &[u8] = match data {
                    std::borrow::Cow::Borrowed(d) => d,
                    std::borrow::Cow::Owned(_) => unreachable_owned(),
                };
                (interface_id, units, original_len, d)
            }
            Block::SimplePacket(sp) => {
                let d: &[u8] = match sp.data {
                    std::borrow::Cow::Borrowed(d) => d,
                    std::borrow::Cow::Owned(_) => unreachable_owned(),
                };
                (0, 0, sp.original_len, d)
            }
            Block::Packet(pb) => {
                let d: &[u8] = match pb.data {
                    std::borrow::Cow::Borrowed(d) => d,
                    std::borrow::Cow::Owned(_) => unreachable_owned(),
                };
                (u32::from(pb.interface_id), pb.timestamp, pb.original_len, d)
            }
            _ => {
                return Err(err_corrupt(
                    &input.path,
                    block_off as usize,
                    "bad pcapng block: a packet block parsed as another kind",
                ))
            }
        };
        let Some(iface) = ifaces.get(iface_id as usize).copied() else {
            return Err(err_corrupt(
                &input.path,
                block_off as usize,
                format!("packet refers to interface {iface_id}, which was never described"),
            ));
        };
        let Some(link) = iface.link else {
            return Err(CaptureError::LinkType {
                path: input.path.clone(),
                linktype: iface.raw_linktype,
                name: linktype_name(iface.raw_linktype),
            });
        };
        let ts_ns = match ng_ts_ns(ts_units, &iface) {
            Some(t) => t,
            None => {
                self.counters.ts_out_of_range += 1;
                u64::MAX
            }
        };
        let mut orig_len = orig_len;
        if data.len() as u64 > u64::from(orig_len) {
            self.counters.caplen_gt_origlen += 1;
            orig_len = data.len() as u32;
        }
        input.done = false;
        let index = self.index;
        self.index += 1;
        Ok(Some(Frame {
            ts_ns,
            orig_len,
            data,
            link,
            index,
        }))
    }
}

fn is_utf8(e: &PcapError) -> bool {
    matches!(e, PcapError::Utf8Error(_) | PcapError::FromUtf8Error(_))
}

/// Makes the strings of a pcapng block ASCII in place (every byte >= 0x80 of a string
/// option or a name becomes `?`), so that a block whose comment, interface name or DNS
/// names are not UTF-8 is read — as tshark reads it — instead of ending the capture.
/// Only string fields change; `endian`: the section's byte order (None: the block is a
/// section header, which says it).
fn ascii_strings(b: &mut [u8], endian: Option<Endianness>) {
    let big = |b: &[u8]| match endian {
        Some(e) => e == Endianness::Big,
        None => b.get(8..12) != Some(&[0x4d, 0x3c, 0x2b, 0x1a][..]),
    };
    let is_big = big(b);
    let rd16 = |x: &[u8]| {
        if is_big {
            u16::from_be_bytes([x[0], x[1]])
        } else {
            u16::from_le_bytes([x[0], x[1]])
        }
    };
    let rd32 = |x: &[u8]| {
        if is_big {
            u32::from_be_bytes([x[0], x[1], x[2], x[3]])
        } else {
            u32::from_le_bytes([x[0], x[1], x[2], x[3]])
        }
    };
    if b.len() < 12 {
        return;
    }
    let btype = rd32(&b[0..4]);
    let end = b.len() - 4; // the trailing length
    let ascii = |x: &mut [u8]| x.iter_mut().filter(|c| **c >= 0x80).for_each(|c| *c = b'?');
    let pad = |n: usize| (n + 3) & !3;
    // Where the options start, and which option codes are strings.
    let (mut p, strings): (usize, &[u16]) = match btype {
        PCAPNG_SHB => (24, &[1, 2, 3, 4]),
        1 => (16, &[1, 2, 3, 12, 15]),
        2 | 6 if b.len() >= 28 => (28 + pad(rd32(&b[20..24]) as usize), &[1]),
        5 => (20, &[1]),
        4 => {
            // Name records first: {type, len, value}, names after the address.
            let mut p = 8;
            while p + 4 <= end {
                let (t, l) = (rd16(&b[p..]), rd16(&b[p + 2..]) as usize);
                let v = p + 4;
                if t == 0 || v + l > end {
                    p = v;
                    break;
                }
                let addr = match t {
                    1 => 4,
                    2 => 16,
                    _ => l,
                };
                ascii(&mut b[v + addr.min(l)..v + l]);
                p = v + pad(l);
            }
            (p, &[1, 2])
        }
        _ => return,
    };
    while p + 4 <= end {
        let (code, l) = (rd16(&b[p..]), rd16(&b[p + 2..]) as usize);
        let v = p + 4;
        if code == 0 || v + l > end {
            break;
        }
        if strings.contains(&code) || code == 2988 || code == 19372 {
            // Custom UTF-8 options carry a 4-byte enterprise number first.
            let from = if code == 2988 || code == 19372 { 4 } else { 0 };
            ascii(&mut b[v + from.min(l)..v + l]);
        }
        p = v + pad(l);
    }
}

#[cold]
fn unreachable_owned() -> ! {
    // pcap-file's slice parsers always borrow; an owned buffer would be a change in the
    // crate's behaviour that the tests would catch.
    panic!("pcap-file returned an owned buffer from a slice parser")
}

fn record_err(rest: &[u8], rest_len: usize, e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer if rest.len() >= 16 => {
            let incl = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
            let incl_be = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            format!(
                "record claims {} captured bytes but the file ends {} bytes later (cut short in the middle of a packet)",
                incl.min(incl_be),
                rest_len - 16
            )
        }
        PcapError::IncompleteBuffer => format!(
            "file ends inside a record header ({} of 16 bytes)",
            rest.len()
        ),
        other => other.to_string(),
    }
}

/// Byte order of a classic pcap file, for tools that rewrite captures.
pub fn endianness_name(e: Endianness) -> &'static str {
    match e {
        Endianness::Big => "big-endian",
        Endianness::Little => "little-endian",
    }
}

#[cfg(test)]
mod tests {

    /// The exported columns are milliseconds: taking them from the ns timestamp (floor)
    /// gives what libpcap and nfstream give, which scale the fraction to µs first (integer
    /// division, `sf-pcapng.c`) and then take ms (integer division), for decimal and
    /// binary `if_tsresol` alike and with an `if_tsoffset`.
    #[test]
    fn ms_from_ns_equal_libpcap_us_then_ms() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for units in [
            1_000_000u64,
            1_000_000_000,
            1 << 20,
            1 << 30,
            1 << 10,
            10,
            1_000,
        ] {
            for offset_s in [0i64, 3600] {
                let iface = Iface {
                    link: Some(LinkType::Ethernet),
                    raw_linktype: 1,
                    units_per_sec: units,
                    offset_s,
                };
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let t = x % (units * 2_000_000_000);
                    let ns = ng_ts_ns(t, &iface).unwrap();
                    let (sec, frac) = (t / units + offset_s as u64, t % units);
                    let us = u128::from(frac) * 1_000_000 / u128::from(units);
                    let libpcap_ms = sec * 1000 + (us / 1000) as u64;
                    assert_eq!(ns / 1_000_000, libpcap_ms, "units {units} t {t}");
                }
            }
        }
    }

    use super::*;
    use std::io::Write;

    fn shared(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pcaps")
            .join(p)
    }

    fn count(p: &str) -> (u64, Option<String>) {
        let mut s = PcapFileSource::open(shared(p)).unwrap();
        let mut n = 0;
        loop {
            match s.next_frame() {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, None),
                Err(e) => return (n, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn reads_pcap_and_pcapng_variants() {
        assert_eq!(count("basic/http-get.pcap"), (14, None));
        assert_eq!(count("formats/pptp.pcap"), (23, None)); // big-endian
        assert_eq!(count("formats/tcp-handshake-nano.pcap"), (3, None)); // ns
        assert_eq!(count("large/tor.pcap"), (3859, None)); // pcapng named .pcap
        assert_eq!(count("formats/dhcp_big_endian.pcapng"), (4, None));
        assert_eq!(count("formats/pcapng-multi-interface.pcapng"), (6, None));
        assert_eq!(count("formats/modify-request.pcapng"), (17, None));
        assert_eq!(count("formats/empty.pcap"), (0, None));
    }

    #[test]
    fn ns_and_us_timestamps_agree_with_tshark() {
        // tcp-handshake-nano.pcap first packet: tshark -t e shows 1406137577.254545000
        let mut s = PcapFileSource::open(shared("formats/tcp-handshake-nano.pcap")).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.link, LinkType::LinuxSll);
        assert!(f.ts_ns > 1_000_000_000 * 1_000_000_000);
        // 2038: ts_sec = 2^31 must not go negative.
        let mut s = PcapFileSource::open(shared("formats/time_2038_overflow.pcap")).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.ts_ns / 1_000_000_000, 1u64 << 31);
    }

    #[test]
    fn pcapng_multi_interface_resolutions() {
        let mut s = PcapFileSource::open(shared("formats/pcapng-multi-interface.pcapng")).unwrap();
        let mut ts = vec![];
        while let Some(f) = s.next_frame().unwrap() {
            ts.push(f.ts_ns);
        }
        // Both interfaces captured the same minutes: all timestamps are plausible dates.
        for t in ts {
            let secs = t / 1_000_000_000;
            assert!((1_500_000_000..2_000_000_000).contains(&secs), "{secs}");
        }
    }

    /// A classic pcap file header (little-endian, µs) with `linktype`, then `records`.
    fn pcap_bytes(linktype: u32, records: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, linktype] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for (i, r) in records.iter().enumerate() {
            for v in [1_700_000_000 + i as u32, 0, r.len() as u32, r.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(r);
        }
        b
    }

    #[test]
    fn unsupported_linktype_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for (lt, name) in [(147u32, "USER"), (192, "PPI"), (274, "ETHERNET_MPACKET")] {
            let p = dir.path().join(format!("lt{lt}.pcap"));
            std::fs::write(&p, pcap_bytes(lt, &[&[0x45; 40]])).unwrap();
            let e = PcapFileSource::open(&p).err().unwrap().to_string();
            assert!(
                e.contains(&format!("lt{lt}.pcap"))
                    && e.contains(&format!("unsupported link type {lt} ({name})")),
                "{e}"
            );
        }
    }

    #[test]
    fn reads_every_supported_linktype() {
        // The captures of each link type.
        for (rel, link, n) in [
            ("linktypes/nflog-http.pcap", LinkType::Nflog, 13),
            ("linktypes/radiotap.pcap", LinkType::Ieee80211Radiotap, 3),
            ("linktypes/linux_dlt_sll2.pcap", LinkType::LinuxSll2, 6),
            ("linktypes/socks.pcap", LinkType::Null, 18),
        ] {
            let mut s = PcapFileSource::open(shared(rel)).unwrap();
            assert_eq!(s.link_type(), Some(link), "{rel}");
            let mut k = 0;
            while let Some(f) = s.next_frame().unwrap() {
                assert_eq!(f.link, link);
                k += 1;
            }
            assert_eq!(k, n, "{rel}");
        }
        // Every supported LINKTYPE_ value opens, and its frames carry that link type
        // (LINKTYPE_PPP_HDLC stays 50, DLT_RAW's 12 and 14 read as RAW).
        let dir = tempfile::tempdir().unwrap();
        for l in LinkType::ALL {
            let p = dir.path().join("x.pcap");
            std::fs::write(&p, pcap_bytes(l.to_linktype(), &[&[0xff, 0x03, 0, 0x21]])).unwrap();
            let mut s = PcapFileSource::open(&p).unwrap();
            assert_eq!(s.next_frame().unwrap().unwrap().link, l);
        }
        for lt in [12, 14] {
            let p = dir.path().join("raw.pcap");
            std::fs::write(&p, pcap_bytes(lt, &[&[0x45; 20]])).unwrap();
            let mut s = PcapFileSource::open(&p).unwrap();
            assert_eq!(s.next_frame().unwrap().unwrap().link, LinkType::Raw);
        }
    }

    #[test]
    fn cut_short_file_names_offset() {
        let (n, e) = count("../pcaps/malformed/fuzz-2021-10-13.pcap");
        assert_eq!(n, 0);
        let e = e.unwrap();
        assert!(e.contains("offset 24") && e.contains("cut short"), "{e}");
    }

    #[test]
    fn not_a_capture_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pcap");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(b"hello world, this is not a capture")
            .unwrap();
        let e = PcapFileSource::open(&p).err().unwrap().to_string();
        assert!(e.contains("not a pcap or pcapng"), "{e}");
        let e = PcapFileSource::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = PcapFileSource::open(dir.path().join("missing.pcap"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("missing.pcap") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn truncated_after_some_records_keeps_earlier_frames() {
        let full = std::fs::read(shared("basic/http-get.pcap")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.pcap");
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        let mut s = PcapFileSource::open(&p).unwrap();
        let mut n = 0;
        let err = loop {
            match s.next_frame() {
                Ok(Some(_)) => n += 1,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert_eq!(n, 13);
        let e = err.unwrap().to_string();
        assert!(e.contains("cut.pcap") && e.contains("offset"), "{e}");
        // After an error the source is finished.
        assert!(s.next_frame().unwrap().is_none());
    }
}
