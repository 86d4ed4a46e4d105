//! The evidence ring: the last N bytes of one shard's packets in a memory-mapped file, so
//! that an alert can include packets from before it fired and so that a crash (even
//! `kill -9`) leaves them on disk for `streamml-sensor evidence recover`.
//!
//! # Layout (version 1, native little-endian, self-describing)
//!
//! ```text
//! 0       file header (offsets in HDR_*): magic "SMLRING\0", version, header_len,
//!         file_len, data_len, snaplen, shard, index geometry, salt, created_ns;
//!         one cache line of atomics: head, head_seq, tail, overwritten_max_ts_ns
//! 4096    index: one 32-byte entry per data chunk {seq, pos, max_ts_before, _}
//! header_len .. file_len   data area of `data_len` bytes (a multiple of 8)
//! ```
//!
//! Positions are *logical* byte offsets that only grow (`phys = pos % data_len`). A record
//! starts at an 8-aligned position and never straddles the end of the data area: when it
//! does not fit, the writer puts a wrap marker (`u64::MAX` in the seq slot) and starts at
//! physical offset 0 of the next lap. A record is
//!
//! ```text
//! 0  seq        u64  commit word, stored LAST with Release (0 = never written)
//! 8  ts_ns      u64  capture time
//! 16 flow_hash  u64  the 5-tuple symmetric flow hash (the reader computes it) (evidence for one flow)
//! 24 orig_len   u32  length on the wire
//! 28 cap_len    u32  stored bytes, <= snaplen
//! 32 link       u16  LINKTYPE_ value
//! 34 flags      u16  reserved, 0
//! 36 check      u32  keyed hash of the fields above (the key is the file's salt)
//! 40 bytes      cap_len bytes, padded to 8
//! ```
//!
//! # Concurrency: one writer, any number of readers, nobody waits
//!
//! The writer (the capture reader thread) owns [`EvidenceRing`]; it never reads anything a ring reader
//! writes and never waits. Before it overwrites old bytes it advances `tail` past every
//! record it is about to destroy (`tail.store(Relaxed)` then `fence(Release)`), then
//! writes the new record, its seq word (Release), and `head` (Release). This is a seqlock
//! whose sequence is `tail`: a reader ([`RingReader`]) copies a record at position `p`,
//! then `fence(Acquire)` and loads `tail`; if `tail <= p` the copy is intact, otherwise
//! the record may have been overwritten while being copied and is discarded (counted as
//! lost to overwrite). If a copied byte came from a write after the writer's fence, the
//! fences synchronise and the reader's `tail` load sees the advanced value (Boehm, "Can
//! seqlocks get along with programming language memory models?", 2012).
//!
//! Racy reads of plain memory are formally undefined in Rust's model; like crossbeam's
//! `AtomicCell` seqlock fallback, readers copy with `read_volatile` (8-byte words) and
//! trust nothing they read until the `tail` check has passed; all bytes are plain
//! integers with no invalid values, and every length read is bounds-checked before use.
//!
//! # Crash recovery
//!
//! After `kill -9` every store the process made is in the page cache (the mapping is
//! shared), in program order on x86-64 and complete on any CPU (a killed process's
//! retired stores are not discarded). The record being written at the moment of death has
//! no valid commit word (its seq slot still holds a stale value) and `head` still points
//! before it, so [`RingReader::scan`] walks `tail..head`, validates each record (seq in
//! sequence, keyed check, lengths), skips and counts anything invalid and resynchronises
//! on the next valid header. Power loss without `msync` is not covered (the page cache
//! may reach the disk in any order); the check catches torn headers, not payload bytes.
//!
//! The file is preallocated with `posix_fallocate`, so a full disk fails at creation with
//! a clear error instead of a SIGBUS on the hot path. The writer holds an exclusive
//! `flock` so that two sensors never write one ring.
#![allow(unsafe_code)] // the memory-mapped packet ring; every block has a SAFETY comment

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::wire::LinkType;

/// File magic (first 8 bytes).
pub const MAGIC: [u8; 8] = *b"SMLRING\0";
/// Layout version written by this code.
pub const VERSION: u32 = 1;
/// Size of a record header in bytes.
pub const RECORD_HDR: u64 = 40;
/// Seq-slot value of a wrap marker: the rest of this lap is empty.
const WRAP: u64 = u64::MAX;
/// Smallest data area accepted.
pub const MIN_DATA_LEN: u64 = 16 * 1024;
/// Largest snaplen accepted (the pcap convention's maximum).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Default ring size per shard (ARCHITECTURE.md: "the last N MiB of packets").
pub const DEFAULT_RING_BYTES: u64 = 256 << 20;

const PAGE: u64 = 4096;
const MAX_INDEX_ENTRIES: u64 = 4096;
const INDEX_ENTRY: u64 = 32;

// File header offsets.
const HDR_MAGIC: usize = 0;
const HDR_VERSION: usize = 8;
const HDR_HEADER_LEN: usize = 12;
const HDR_FILE_LEN: usize = 16;
const HDR_DATA_LEN: usize = 24;
const HDR_SNAPLEN: usize = 32;
const HDR_SHARD: usize = 36;
const HDR_INDEX_LEN: usize = 40;
const HDR_CHUNK_SHIFT: usize = 44;
const HDR_SALT: usize = 48;
const HDR_CREATED_NS: usize = 56;
const HDR_HEAD: usize = 128;
const HDR_HEAD_SEQ: usize = 136;
const HDR_TAIL: usize = 144;
const HDR_OVERWRITTEN_MAX_TS: usize = 152;

// Record header offsets.
const R_SEQ: u64 = 0;
const R_TS: u64 = 8;
const R_HASH: u64 = 16;
const R_ORIG: u64 = 24;
const R_CAP: u64 = 28;
const R_LINK: u64 = 32;
const R_FLAGS: u64 = 34;
const R_CHECK: u64 = 36;

/// Errors opening or creating a ring file. One line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an evidence ring file ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: ring file is in use by another sensor process (exclusive lock held)")]
    Locked { path: PathBuf },
    #[error("{path}: invalid ring geometry: {reason}")]
    Config { path: PathBuf, reason: String },
}

fn io_err(path: &Path, source: std::io::Error) -> RingError {
    RingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Geometry of a ring file, validated once.
#[derive(Clone, Copy, Debug)]
struct Layout {
    header_len: u64,
    data_len: u64,
    snaplen: u32,
    shard: u32,
    index_len: u64,
    chunk_shift: u32,
    salt: u64,
}

impl Layout {
    fn new(size_bytes: u64, snaplen: u32, shard: u32, salt: u64) -> Result<Layout, String> {
        if snaplen == 0 || snaplen > MAX_SNAPLEN {
            return Err(format!("snaplen {snaplen} must be in 1..={MAX_SNAPLEN}"));
        }
        // Index: at most 4096 entries, chunks of at least one page.
        let approx_data = size_bytes.saturating_sub(PAGE);
        let mut chunk_shift = 12u32;
        while (approx_data >> chunk_shift) > MAX_INDEX_ENTRIES {
            chunk_shift += 1;
        }
        let index_len = (approx_data >> chunk_shift) + 1;
        let header_len = round_up(PAGE + index_len * INDEX_ENTRY, PAGE);
        let data_len = size_bytes.saturating_sub(header_len) & !7;
        let min_data = MIN_DATA_LEN.max(8 * record_len(snaplen));
        if data_len < min_data {
            return Err(format!(
                "size {size_bytes} bytes leaves a data area of {data_len} bytes; with snaplen {snaplen} at least {} bytes are needed",
                min_data + header_len
            ));
        }
        if ((data_len - 1) >> chunk_shift) >= index_len {
            return Err("index too small (internal)".into());
        }
        Ok(Layout {
            header_len,
            data_len,
            snaplen,
            shard,
            index_len,
            chunk_shift,
            salt,
        })
    }

    fn file_len(&self) -> u64 {
        self.header_len + self.data_len
    }
}

#[inline(always)]
fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Bytes a record with `cap_len` stored bytes occupies.
#[inline(always)]
pub const fn record_len(cap_len: u32) -> u64 {
    (RECORD_HDR + cap_len as u64 + 7) & !7
}

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 31)
}

/// Keyed check over a record header (the key is the file's random salt, so packet bytes
/// that happen to look like a header do not validate).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record_check(
    salt: u64,
    seq: u64,
    ts_ns: u64,
    flow_hash: u64,
    orig_len: u32,
    cap_len: u32,
    link: u16,
    flags: u16,
) -> u32 {
    let mut h = mix(salt, seq);
    h = mix(h, ts_ns);
    h = mix(h, flow_hash);
    h = mix(h, u64::from(orig_len) | u64::from(cap_len) << 32);
    h = mix(h, u64::from(link) | u64::from(flags) << 16);
    (h ^ (h >> 32)) as u32
}

/// A ring record header as read back (after validation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub seq: u64,
    pub ts_ns: u64,
    pub flow_hash: u64,
    pub orig_len: u32,
    pub cap_len: u32,
    /// LINKTYPE_ value.
    pub link: u16,
}

/// A validated record: header plus its stored bytes.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub meta: RecordMeta,
    pub data: &'a [u8],
}

impl RecordView<'_> {
    pub fn seq(&self) -> u64 {
        self.meta.seq
    }
    pub fn ts_ns(&self) -> u64 {
        self.meta.ts_ns
    }
    pub fn flow_hash(&self) -> u64 {
        self.meta.flow_hash
    }
    pub fn orig_len(&self) -> u32 {
        self.meta.orig_len
    }
    pub fn link(&self) -> u16 {
        self.meta.link
    }
}

/// Records copied out of a ring; reusable (cleared, not freed, by each copy).
#[derive(Debug, Default, Clone)]
pub struct RecordBuf {
    metas: Vec<(RecordMeta, usize)>,
    bytes: Vec<u8>,
}

impl RecordBuf {
    pub fn new() -> RecordBuf {
        RecordBuf::default()
    }
    pub fn clear(&mut self) {
        self.metas.clear();
        self.bytes.clear();
    }
    pub fn len(&self) -> usize {
        self.metas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }
    pub fn get(&self, i: usize) -> RecordView<'_> {
        let (meta, off) = self.metas[i];
        RecordView {
            meta,
            data: &self.bytes[off..off + meta.cap_len as usize],
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = RecordView<'_>> + '_ {
        (0..self.metas.len()).map(|i| self.get(i))
    }
    /// Appends a copy of `v` (used to merge and sort records from several sources).
    pub fn push(&mut self, v: &RecordView<'_>) {
        let off = self.bytes.len();
        self.bytes.extend_from_slice(v.data);
        self.metas.push((v.meta, off));
    }
    /// Sorts the records by (timestamp, seq).
    pub fn sort_by_time(&mut self) {
        self.metas.sort_by_key(|(m, _)| (m.ts_ns, m.seq));
    }
}

/// Where a record was found by [`RingReader::scan_headers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPos {
    pos: u64,
    seq: u64,
}

/// Where a copy starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest record still in the ring.
    Oldest,
    /// The record with this sequence number (or the oldest after it, if overwritten).
    Seq(u64),
    /// The first record with `ts_ns >= t`.
    TsNs(u64),
}

/// Where a copy ends (both bounds inclusive; records past them are not copied).
///
/// Records are appended in capture order, so a copy with a time bound stops walking once
/// [`END_RUN`] consecutive records lie more than [`END_SLACK_NS`] past `ts_ns` instead of
/// reading every later record up to the head: a flow alert raised when its flow expires
/// (up to the idle timeout after its last packet) would otherwise walk minutes of
/// records. A few records out of order (or one with a bogus time) do not stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    pub seq: u64,
    pub ts_ns: u64,
}

/// See [`End`].
pub const END_SLACK_NS: u64 = 1_000_000_000;
/// See [`End`].
pub const END_RUN: u32 = 1024;

impl End {
    /// Everything up to the current head.
    pub const HEAD: End = End {
        seq: u64::MAX,
        ts_ns: u64::MAX,
    };
}

/// What one copy saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Records copied into the output (passed range and filter).
    pub copied: u64,
    /// Records in range that the filter rejected.
    pub filtered_out: u64,
    /// Records skipped because their timestamp is outside the range.
    pub out_of_range: u64,
    /// Records that were overwritten by the writer before they could be copied (a seq gap
    /// inside the walk).
    pub lost_overwritten: u64,
    /// The start of the requested range had already been overwritten (records older than
    /// the oldest one in the ring fell inside the range): the copy is missing its
    /// beginning.
    pub start_overwritten: bool,
    /// Records that failed validation (torn or corrupt) and were skipped.
    pub torn: u64,
}

/// Per-ring facts for reports and `evidence recover`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingInfo {
    pub shard: u32,
    pub snaplen: u32,
    pub data_len: u64,
    pub file_len: u64,
    pub head_seq: u64,
    pub head: u64,
    pub tail: u64,
    pub created_ns: u64,
}

/// Settings for a new ring.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Total file size in bytes (header + index + data).
    pub size_bytes: u64,
    /// Bytes kept per packet; longer frames are cut (orig_len keeps the wire length).
    pub snaplen: u32,
    /// Shard number (recorded in the header).
    pub shard: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            size_bytes: DEFAULT_RING_BYTES,
            snaplen: 65_535,
            shard: 0,
        }
    }
}

/// What keeps a mapping's file open: the writer's flock'ed handle or a plain one.
enum KeepAlive {
    Locked(#[allow(dead_code)] nix::fcntl::Flock<File>),
    Plain(#[allow(dead_code)] File),
}

/// A shared mapping: pointer arithmetic in one place.
struct Map {
    raw: MmapRaw,
    layout: Layout,
    _keep: KeepAlive,
}

impl Map {
    #[inline(always)]
    fn base(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }

    /// An atomic u64 in the file header at byte offset `off` (8-aligned, < 4096).
    #[inline(always)]
    fn hdr_atomic(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && (off as u64) < PAGE);
        // SAFETY: the mapping is at least header_len >= 4096 bytes long, page-aligned, and
        // `off` is 8-aligned and inside the first page, so the pointer is valid and aligned
        // for AtomicU64 for the lifetime of `self`; all accesses to this word go through
        // atomics.
        unsafe { &*(self.base().wrapping_add(off) as *const AtomicU64) }
    }

    /// Index entry `i`, field `f` (0 seq, 1 pos, 2 max_ts_before).
    #[inline(always)]
    fn index_atomic(&self, i: u64, f: u64) -> &AtomicU64 {
        debug_assert!(i < self.layout.index_len && f < 4);
        let off = PAGE + i * INDEX_ENTRY + f * 8;
        // SAFETY: PAGE + index_len * 32 <= header_len (Layout::new), so the word lies inside
        // the mapping; it is 8-aligned; all accesses to index words are atomic.
        unsafe { &*(self.base().wrapping_add(off as usize) as *const AtomicU64) }
    }

    /// Pointer to physical data offset `phys` (< data_len).
    #[inline(always)]
    fn data_ptr(&self, phys: u64) -> *mut u8 {
        debug_assert!(phys < self.layout.data_len);
        // SAFETY: header_len + phys < header_len + data_len = mapping length.
        unsafe { self.base().add((self.layout.header_len + phys) as usize) }
    }

    /// The seq (commit) word of the record slot at physical offset `phys`.
    #[inline(always)]
    fn seq_atomic(&self, phys: u64) -> &AtomicU64 {
        debug_assert!(phys.is_multiple_of(8) && phys + 8 <= self.layout.data_len);
        // SAFETY: in bounds (phys + 8 <= data_len), 8-aligned (data area starts on a page,
        // phys is a multiple of 8). The writer stores it atomically; readers load it
        // atomically.
        unsafe { &*(self.data_ptr(phys) as *const AtomicU64) }
    }

    #[inline(always)]
    fn read_u64(&self, phys: u64) -> u64 {
        debug_assert!(phys.is_multiple_of(8) && phys + 8 <= self.layout.data_len);
        // SAFETY: in bounds and aligned (see seq_atomic). The value may be concurrently
        // overwritten (seqlock); it is a plain integer, used only after validation.
        unsafe { ptr::read_volatile(self.data_ptr(phys) as *const u64) }
    }

    #[inline(always)]
    fn read_u32(&self, phys: u64) -> u32 {
        debug_assert!(phys.is_multiple_of(4) && phys + 4 <= self.layout.data_len);
        // SAFETY: as read_u64, 4-aligned.
        unsafe { ptr::read_volatile(self.data_ptr(phys) as *const u32) }
    }

    #[inline(always)]
    fn read_u16(&self, phys: u64) -> u16 {
        debug_assert!(phys.is_multiple_of(2) && phys + 2 <= self.layout.data_len);
        // SAFETY: as read_u64, 2-aligned.
        unsafe { ptr::read_volatile(self.data_ptr(phys) as *const u16) }
    }

    /// Reads and checks the record header at physical `phys`: structure, lengths and the
    /// keyed check. Not yet validated against concurrent overwrite (the caller's seqlock
    /// check does that).
    fn read_header(&self, phys: u64) -> Option<RecordMeta> {
        let lay = &self.layout;
        if !phys.is_multiple_of(8) || phys + RECORD_HDR > lay.data_len {
            return None;
        }
        let seq = self.read_u64(phys + R_SEQ);
        if seq == 0 || seq == WRAP {
            return None;
        }
        let m = RecordMeta {
            seq,
            ts_ns: self.read_u64(phys + R_TS),
            flow_hash: self.read_u64(phys + R_HASH),
            orig_len: self.read_u32(phys + R_ORIG),
            cap_len: self.read_u32(phys + R_CAP),
            link: self.read_u16(phys + R_LINK),
        };
        let flags = self.read_u16(phys + R_FLAGS);
        let check = self.read_u32(phys + R_CHECK);
        let ok = flags == 0
            && m.cap_len <= lay.snaplen
            && m.orig_len >= m.cap_len
            && phys + record_len(m.cap_len) <= lay.data_len
            && check
                == record_check(
                    lay.salt,
                    seq,
                    m.ts_ns,
                    m.flow_hash,
                    m.orig_len,
                    m.cap_len,
                    m.link,
                    flags,
                );
        ok.then_some(m)
    }

    /// Copies `len` bytes starting at physical `phys` (8-aligned; the record slot is
    /// padded to 8, so whole words stay inside it) to the end of `out`.
    fn copy_out(&self, phys: u64, len: usize, out: &mut Vec<u8>) {
        let words = len.div_ceil(8);
        debug_assert!(phys.is_multiple_of(8) && phys + 8 * words as u64 <= self.layout.data_len);
        let start = out.len();
        out.reserve(words * 8);
        for w in 0..words {
            let v = self.read_u64(phys + 8 * w as u64);
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.truncate(start + len);
    }
}

/// Reads and validates the header of `file` (already open) and maps it.
fn map_existing(path: &Path, file: &File, writable: bool) -> Result<(MmapRaw, Layout), RingError> {
    let fmt = |reason: String| RingError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let flen = file.metadata().map_err(|e| io_err(path, e))?.len();
    if flen < PAGE {
        return Err(fmt(format!(
            "file is {flen} bytes, shorter than its header"
        )));
    }
    let mut hdr = [0u8; 64];
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut hdr, 0)
            .map_err(|e| io_err(path, e))?;
    }
    let u32_at = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(hdr[o..o + 8].try_into().unwrap());
    if hdr[HDR_MAGIC..HDR_MAGIC + 8] != MAGIC {
        return Err(fmt("bad magic".into()));
    }
    let version = u32_at(HDR_VERSION);
    if version != VERSION {
        return Err(fmt(format!(
            "layout version {version}, this build reads {VERSION}"
        )));
    }
    let layout = Layout {
        header_len: u64::from(u32_at(HDR_HEADER_LEN)),
        data_len: u64_at(HDR_DATA_LEN),
        snaplen: u32_at(HDR_SNAPLEN),
        shard: u32_at(HDR_SHARD),
        index_len: u64::from(u32_at(HDR_INDEX_LEN)),
        chunk_shift: u32_at(HDR_CHUNK_SHIFT),
        salt: u64_at(HDR_SALT),
    };
    let file_len = u64_at(HDR_FILE_LEN);
    let ok = file_len == flen
        && layout.header_len >= PAGE + layout.index_len * INDEX_ENTRY
        && layout.header_len.is_multiple_of(PAGE)
        && layout.header_len.checked_add(layout.data_len) == Some(file_len)
        && layout.data_len.is_multiple_of(8)
        && layout.data_len >= MIN_DATA_LEN
        && layout.snaplen > 0
        && layout.snaplen <= MAX_SNAPLEN
        && record_len(layout.snaplen) * 8 <= layout.data_len
        && (12..40).contains(&layout.chunk_shift)
        && layout.index_len > 0
        && ((layout.data_len - 1) >> layout.chunk_shift) < layout.index_len;
    if !ok {
        return Err(fmt(format!(
            "inconsistent header (file {flen} bytes, header says {file_len}, header_len {}, data_len {}, snaplen {}, index {}x2^{})",
            layout.header_len, layout.data_len, layout.snaplen, layout.index_len, layout.chunk_shift
        )));
    }
    let raw = if writable {
        MmapOptions::new().map_raw(file)
    } else {
        MmapOptions::new().map_raw_read_only(file)
    }
    .map_err(|e| io_err(path, e))?;
    if (raw.len() as u64) < file_len {
        return Err(fmt("mapping shorter than the file".into()));
    }
    Ok((raw, layout))
}

/// The writer end of a shard's evidence ring. Owned by one reader thread; not `Clone`.
pub struct EvidenceRing {
    map: Arc<Map>,
    path: PathBuf,
    // Writer-private copies of the shared state: the writer never reads what readers write.
    head: u64,
    head_phys: u64,
    next_seq: u64,
    tail: u64,
    overwritten_max_ts: u64,
    max_ts: u64,
    last_chunk: u64,
    /// First seq of this process's run (readers of this process see nothing older).
    run_first_seq: u64,
    /// Frames longer than snaplen that were cut.
    pub cut_to_snaplen: u64,
    /// Bytes kept per frame (<= the file's snaplen, which bounds record size).
    snaplen: u32,
}

/// What [`EvidenceRing::open_or_create`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A new, empty ring was created (no file, or an incompatible one was replaced).
    Created,
    /// An existing ring was continued: `records` valid records from an earlier run are
    /// kept for `evidence recover` (and `torn` invalid ones were skipped).
    Resumed { records: u64, torn: u64 },
}

impl EvidenceRing {
    /// Creates (or truncates) `path` as an empty ring.
    pub fn create(path: &Path, cfg: &RingConfig) -> Result<EvidenceRing, RingError> {
        let salt = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let layout =
            Layout::new(cfg.size_bytes, cfg.snaplen, cfg.shard, salt).map_err(|reason| {
                RingError::Config {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let file = lock_exclusive(path, file)?;
        file.set_len(0).map_err(|e| io_err(path, e))?;
        // Reserve every block now: a sparse file on a full disk would SIGBUS on the hot
        // path when a page is first touched.
        nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, layout.file_len() as libc::off_t)
            .map_err(|e| io_err(path, std::io::Error::from(e)))?;
        let mut hdr = vec![0u8; PAGE as usize];
        hdr[HDR_MAGIC..HDR_MAGIC + 8].copy_from_slice(&MAGIC);
        hdr[HDR_VERSION..HDR_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        hdr[HDR_HEADER_LEN..HDR_HEADER_LEN + 4]
            .copy_from_slice(&(layout.header_len as u32).to_le_bytes());
        hdr[HDR_FILE_LEN..HDR_FILE_LEN + 8].copy_from_slice(&layout.file_len().to_le_bytes());
        hdr[HDR_DATA_LEN..HDR_DATA_LEN + 8].copy_from_slice(&layout.data_len.to_le_bytes());
        hdr[HDR_SNAPLEN..HDR_SNAPLEN + 4].copy_from_slice(&layout.snaplen.to_le_bytes());
        hdr[HDR_SHARD..HDR_SHARD + 4].copy_from_slice(&layout.shard.to_le_bytes());
        hdr[HDR_INDEX_LEN..HDR_INDEX_LEN + 4]
            .copy_from_slice(&(layout.index_len as u32).to_le_bytes());
        hdr[HDR_CHUNK_SHIFT..HDR_CHUNK_SHIFT + 4]
            .copy_from_slice(&layout.chunk_shift.to_le_bytes());
        hdr[HDR_SALT..HDR_SALT + 8].copy_from_slice(&layout.salt.to_le_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        hdr[HDR_CREATED_NS..HDR_CREATED_NS + 8].copy_from_slice(&now.to_le_bytes());
        {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&hdr, 0).map_err(|e| io_err(path, e))?;
        }
        let (raw, layout) = map_existing(path, &file, true)?;
        let map = Map {
            raw,
            layout,
            _keep: KeepAlive::Locked(file),
        };
        Ok(EvidenceRing::from_map(map, path, 0, 1, 0, 0, 0))
    }

    /// Continues the ring at `path` if it exists with the same size (keeping an earlier
    /// run's records for `evidence recover`, e.g. after a crash and a service restart);
    /// otherwise creates a new one. The records of earlier runs are never handed to this
    /// run's readers ([`RingReader::copy_range`] starts at this run's first record).
    pub fn open_or_create(
        path: &Path,
        cfg: &RingConfig,
    ) -> Result<(EvidenceRing, Opened), RingError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((EvidenceRing::create(path, cfg)?, Opened::Created));
            }
            Err(e) => return Err(io_err(path, e)),
        };
        let file = lock_exclusive(path, file)?;
        let map = match map_existing(path, &file, true) {
            Ok((raw, layout)) => Map {
                raw,
                layout,
                _keep: KeepAlive::Locked(file),
            },
            Err(RingError::Format { .. }) => {
                drop(file);
                return Ok((EvidenceRing::create(path, cfg)?, Opened::Created));
            }
            Err(e) => return Err(e),
        };
        let want = Layout::new(cfg.size_bytes, cfg.snaplen, cfg.shard, 0).map_err(|reason| {
            RingError::Config {
                path: path.to_path_buf(),
                reason,
            }
        })?;
        if map.layout.data_len != want.data_len
            || map.layout.header_len != want.header_len
            || map.layout.snaplen < cfg.snaplen
            || map.layout.shard != cfg.shard
        {
            drop(map);
            return Ok((EvidenceRing::create(path, cfg)?, Opened::Created));
        }
        // Find the real end of the valid records (head may lag the last commit by one).
        let map = Arc::new(map);
        let reader = RingReader {
            map: map.clone(),
            min_seq: 0,
        };
        let mut last: Option<(u64, u64, u64)> = None; // (seq, end pos, ts)
        let mut max_ts = 0u64;
        let mut records = 0u64;
        let st = reader.walk(Start::Oldest, End::HEAD, true, |m, pos, _| {
            last = Some((m.seq, pos + record_len(m.cap_len), m.ts_ns));
            max_ts = max_ts.max(m.ts_ns);
            records += 1;
            WalkStep::SkipPayload
        });
        let tail = map.hdr_atomic(HDR_TAIL).load(Ordering::Acquire);
        let owmax = map
            .hdr_atomic(HDR_OVERWRITTEN_MAX_TS)
            .load(Ordering::Acquire);
        let (head, next_seq) = match last {
            Some((seq, end, _)) => (end, seq + 1),
            None => (
                tail,
                map.hdr_atomic(HDR_HEAD_SEQ).load(Ordering::Acquire) + 1,
            ),
        };
        map.hdr_atomic(HDR_HEAD).store(head, Ordering::Release);
        map.hdr_atomic(HDR_HEAD_SEQ)
            .store(next_seq - 1, Ordering::Release);
        let mut ring = EvidenceRing::from_arc(map, path, head, next_seq, tail, owmax, max_ts);
        ring.run_first_seq = next_seq;
        // A smaller snaplen than the file's fits in its records.
        ring.snaplen = cfg.snaplen;
        Ok((
            ring,
            Opened::Resumed {
                records,
                torn: st.torn,
            },
        ))
    }

    fn from_map(
        map: Map,
        path: &Path,
        head: u64,
        next_seq: u64,
        tail: u64,
        owmax: u64,
        max_ts: u64,
    ) -> EvidenceRing {
        EvidenceRing::from_arc(Arc::new(map), path, head, next_seq, tail, owmax, max_ts)
    }

    fn from_arc(
        map: Arc<Map>,
        path: &Path,
        head: u64,
        next_seq: u64,
        tail: u64,
        owmax: u64,
        max_ts: u64,
    ) -> EvidenceRing {
        let d = map.layout.data_len;
        let d_snaplen = map.layout.snaplen;
        EvidenceRing {
            head,
            head_phys: head % d,
            next_seq,
            tail,
            overwritten_max_ts: owmax,
            max_ts,
            last_chunk: u64::MAX,
            run_first_seq: next_seq,
            cut_to_snaplen: 0,
            snaplen: d_snaplen,
            path: path.to_path_buf(),
            map,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes kept per record at most.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Records the ring holds at least (every one `snaplen` long).
    pub fn capacity_records(&self) -> u64 {
        self.map.layout.data_len / record_len(self.snaplen)
    }

    /// Sequence number of the last appended record (0 before the first).
    #[inline]
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A reader over this ring for another thread. It sees only this run's records.
    pub fn reader(&self) -> RingReader {
        RingReader {
            map: self.map.clone(),
            min_seq: self.run_first_seq,
        }
    }

    /// Appends one frame (cut to snaplen) and returns its sequence number. Never blocks,
    /// never allocates, makes no system call: a memcpy into the mapping plus a few stores.
    /// The oldest records are overwritten when the ring is full.
    #[inline]
    pub fn append(
        &mut self,
        ts_ns: u64,
        orig_len: u32,
        link: LinkType,
        flow_hash: u64,
        bytes: &[u8],
    ) -> u64 {
        let map = &*self.map;
        let d = map.layout.data_len;
        let mut cap = bytes.len();
        if cap > self.snaplen as usize {
            cap = self.snaplen as usize;
            self.cut_to_snaplen += 1;
        }
        let cap32 = cap as u32;
        let orig_len = orig_len.max(cap32);
        let len = record_len(cap32);
        let seq = self.next_seq;
        let mut phys = self.head_phys;
        let mut start = self.head;
        let wrap = phys + len > d;
        let skip = if wrap { d - phys } else { 0 };
        let end = start + skip + len;
        // 1. Advance tail past everything this record (and a wrap marker) will overwrite,
        //    and publish it before touching those bytes.
        if end > d && self.tail < end - d {
            reclaim(
                map,
                &mut self.tail,
                self.head,
                &mut self.overwritten_max_ts,
                end - d,
            );
            map.hdr_atomic(HDR_TAIL).store(self.tail, Ordering::Relaxed);
            map.hdr_atomic(HDR_OVERWRITTEN_MAX_TS)
                .store(self.overwritten_max_ts, Ordering::Relaxed);
            fence(Ordering::Release);
        }
        // 2. Wrap marker, then the record: bytes, header fields, commit word last.
        if wrap {
            // There are always >= 8 bytes left: phys < d and both are multiples of 8.
            map.seq_atomic(phys).store(WRAP, Ordering::Relaxed);
            start += skip;
            phys = 0;
        }
        let link16 = link.to_linktype() as u16;
        let check = record_check(
            map.layout.salt,
            seq,
            ts_ns,
            flow_hash,
            orig_len,
            cap32,
            link16,
            0,
        );
        let p = map.data_ptr(phys);
        // SAFETY: the record slot [phys, phys + len) lies inside the data area (phys + len
        // <= d after the wrap decision) and `bytes[..cap]` is in bounds. They cannot
        // overlap: no API hands out references into the mapping (readers copy out), so
        // `bytes` is memory of the caller's. Only this thread writes the mapping (one
        // EvidenceRing per file, flock'ed); readers validate what they copy (seqlock).
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), p.wrapping_add(RECORD_HDR as usize), cap);
        }
        // SAFETY: each field write is in bounds (inside the 40-byte header of this slot)
        // and naturally aligned (slot 8-aligned, offsets 8/16/24/28/32/34/36).
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_TS as usize) as *mut u64, ts_ns);
        }
        // SAFETY: as above.
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_HASH as usize) as *mut u64, flow_hash);
        }
        // SAFETY: as above.
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_ORIG as usize) as *mut u32, orig_len);
        }
        // SAFETY: as above.
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_CAP as usize) as *mut u32, cap32);
        }
        // SAFETY: as above.
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_LINK as usize) as *mut u16, link16);
        }
        // SAFETY: as above.
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_FLAGS as usize) as *mut u16, 0);
        }
        // SAFETY: as above.
        unsafe {
            ptr::write_volatile(p.wrapping_add(R_CHECK as usize) as *mut u32, check);
        }
        map.seq_atomic(phys + R_SEQ).store(seq, Ordering::Release);
        // 3. Index: the first record starting in each chunk.
        let chunk = phys >> map.layout.chunk_shift;
        if chunk != self.last_chunk {
            self.last_chunk = chunk;
            let e_seq = map.index_atomic(chunk, 0);
            e_seq.store(0, Ordering::Relaxed);
            fence(Ordering::Release);
            map.index_atomic(chunk, 1).store(start, Ordering::Relaxed);
            map.index_atomic(chunk, 2)
                .store(self.max_ts, Ordering::Relaxed);
            e_seq.store(seq, Ordering::Release);
        }
        if ts_ns > self.max_ts {
            self.max_ts = ts_ns;
        }
        // 4. Publish.
        let new_phys = phys + len;
        self.head_phys = if new_phys == d { 0 } else { new_phys };
        self.head = start + len;
        self.next_seq = seq + 1;
        map.hdr_atomic(HDR_HEAD_SEQ).store(seq, Ordering::Relaxed);
        map.hdr_atomic(HDR_HEAD).store(self.head, Ordering::Release);
        seq
    }
}

/// Moves `tail` forward past every record that starts before `upto` (logical), keeping the
/// largest overwritten timestamp. Reads only what this (the writer) thread wrote.
#[inline]
fn reclaim(map: &Map, tail: &mut u64, head: u64, overwritten_max_ts: &mut u64, upto: u64) {
    let d = map.layout.data_len;
    while *tail < upto && *tail < head {
        let phys = *tail % d;
        let w = map.read_u64(phys + R_SEQ);
        if w == WRAP {
            *tail += d - phys;
            continue;
        }
        let cap = map.read_u32(phys + R_CAP);
        let ts = map.read_u64(phys + R_TS);
        if ts > *overwritten_max_ts {
            *overwritten_max_ts = ts;
        }
        *tail += record_len(cap);
    }
    if *tail > head {
        *tail = head;
    }
}

fn lock_exclusive(path: &Path, file: File) -> Result<nix::fcntl::Flock<File>, RingError> {
    use nix::fcntl::{Flock, FlockArg};
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(RingError::Locked {
            path: path.to_path_buf(),
        }),
        Err((_, e)) => Err(io_err(path, std::io::Error::from(e))),
    }
}

/// A reader of a ring: cheap to clone, `Send + Sync`. Either shares the writer's mapping
/// (same process, [`EvidenceRing::reader`]) or maps a ring file read-only
/// ([`RingReader::open_readonly`]: `evidence recover`, also while a sensor is running).
#[derive(Clone)]
pub struct RingReader {
    map: Arc<Map>,
    /// Records with a smaller seq are not this run's and are never copied.
    min_seq: u64,
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("shard", &self.map.layout.shard)
            .field("data_len", &self.map.layout.data_len)
            .finish()
    }
}

/// What a walk's visitor wants for a record whose header validated.
enum WalkStep {
    /// Copy the payload and call `on_payload`.
    Copy,
    /// Skip the payload, go on.
    SkipPayload,
    /// Skip the payload and end the walk (if this record validates).
    Stop,
}

impl RingReader {
    /// Maps a ring file read-only (no lock: a live sensor may keep writing; every record
    /// is still validated, and ones overwritten while being read are skipped).
    pub fn open_readonly(path: &Path) -> Result<RingReader, RingError> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let (raw, layout) = map_existing(path, &file, false)?;
        Ok(RingReader {
            map: Arc::new(Map {
                raw,
                layout,
                _keep: KeepAlive::Plain(file),
            }),
            min_seq: 0,
        })
    }

    /// Whether another process holds the ring's writer lock (a sensor is running).
    pub fn is_locked_by_writer(path: &Path) -> bool {
        use nix::fcntl::{Flock, FlockArg};
        let Ok(f) = File::open(path) else {
            return false;
        };
        Flock::lock(f, FlockArg::LockSharedNonblock).is_err()
    }

    pub fn info(&self) -> RingInfo {
        let m = &*self.map;
        RingInfo {
            shard: m.layout.shard,
            snaplen: m.layout.snaplen,
            data_len: m.layout.data_len,
            file_len: m.layout.file_len(),
            head_seq: m.hdr_atomic(HDR_HEAD_SEQ).load(Ordering::Acquire),
            head: m.hdr_atomic(HDR_HEAD).load(Ordering::Acquire),
            tail: m.hdr_atomic(HDR_TAIL).load(Ordering::Acquire),
            created_ns: m.hdr_atomic(HDR_CREATED_NS).load(Ordering::Relaxed),
        }
    }

    /// Sequence number of the last committed record (0 if none).
    pub fn head_seq(&self) -> u64 {
        self.map.hdr_atomic(HDR_HEAD_SEQ).load(Ordering::Acquire)
    }

    /// Copies the records in `[from, to]` for which `filter` returns true into `out`
    /// (cleared first), oldest first. Never blocks the writer: records that the writer
    /// overwrites during the copy are skipped and counted in `lost_overwritten`. Only
    /// validated records are handed to `filter` or copied.
    pub fn copy_range(
        &self,
        from: Start,
        to: End,
        mut filter: impl FnMut(&RecordView<'_>) -> bool,
        out: &mut RecordBuf,
    ) -> CopyStats {
        out.clear();
        let from_ts = match from {
            Start::TsNs(t) => t,
            _ => 0,
        };
        let mut filtered = 0u64;
        let mut out_of_range = 0u64;
        let beyond_ts = to.ts_ns.saturating_add(END_SLACK_NS);
        let mut beyond = 0u32;
        let mut st = self.walk_payloads(
            from,
            to,
            false,
            out,
            |m| {
                if m.ts_ns > beyond_ts {
                    beyond += 1;
                    if beyond >= END_RUN {
                        return None;
                    }
                } else {
                    beyond = 0;
                }
                if m.ts_ns < from_ts || m.ts_ns > to.ts_ns {
                    out_of_range += 1;
                    Some(false)
                } else {
                    Some(true)
                }
            },
            |v| {
                let keep = filter(v);
                if !keep {
                    filtered += 1;
                }
                keep
            },
        );
        st.filtered_out = filtered;
        st.out_of_range = out_of_range;
        st.copied = out.len() as u64;
        if let Start::TsNs(t) = from {
            let owmax = self
                .map
                .hdr_atomic(HDR_OVERWRITTEN_MAX_TS)
                .load(Ordering::Acquire);
            if owmax >= t && owmax != 0 {
                st.start_overwritten = true;
            }
        }
        st
    }

    /// Walks every valid record (recovery): like `copy_range(Oldest, HEAD, ..)` but also
    /// follows records committed after the stored head (a writer killed between its
    /// commit and its head store), and sees records of earlier runs. `visit` gets each
    /// validated record in ring order.
    pub fn scan(&self, mut visit: impl FnMut(&RecordView<'_>)) -> CopyStats {
        let mut out = RecordBuf::new();
        let mut n = 0u64;
        let all = RingReader {
            map: self.map.clone(),
            min_seq: 0,
        };
        let mut st = all.walk_payloads(
            Start::Oldest,
            End::HEAD,
            true,
            &mut out,
            |_| Some(true),
            |v| {
                visit(v);
                n += 1;
                false
            },
        );
        st.copied = n;
        st
    }

    /// Visits the header of every valid record (like [`RingReader::scan`], payloads not
    /// read) with its position, for a later [`RingReader::read_at`].
    pub fn scan_headers(&self, mut visit: impl FnMut(&RecordMeta, RecordPos)) -> CopyStats {
        let all = RingReader {
            map: self.map.clone(),
            min_seq: 0,
        };
        let mut n = 0u64;
        let mut st = all.walk(Start::Oldest, End::HEAD, true, |m, pos, valid| {
            if valid == Some(true) {
                n += 1;
                visit(m, RecordPos { pos, seq: m.seq });
            }
            // "Copy" only asks for the second, validated call; nothing is copied.
            WalkStep::Copy
        });
        st.copied = n;
        st
    }

    /// Appends the bytes of the record at `at` to `out` and returns its header, if it is
    /// still there (not overwritten since it was scanned, and valid).
    pub fn read_at(&self, at: RecordPos, out: &mut Vec<u8>) -> Option<RecordMeta> {
        let map = &*self.map;
        let phys = at.pos % map.layout.data_len;
        let m = map.read_header(phys)?;
        if m.seq != at.seq {
            return None;
        }
        let start = out.len();
        map.copy_out(phys + RECORD_HDR, m.cap_len as usize, out);
        fence(Ordering::Acquire);
        if map.hdr_atomic(HDR_TAIL).load(Ordering::Relaxed) > at.pos {
            out.truncate(start);
            return None;
        }
        Some(m)
    }

    /// Walk that copies payloads of records accepted by `pre` (on the header) into `out`
    /// and keeps those accepted by `keep` (on the validated record); `pre` returning None
    /// ends the walk at that record (once it validates).
    fn walk_payloads(
        &self,
        from: Start,
        to: End,
        past_head: bool,
        out: &mut RecordBuf,
        mut pre: impl FnMut(&RecordMeta) -> Option<bool>,
        mut keep: impl FnMut(&RecordView<'_>) -> bool,
    ) -> CopyStats {
        let map = &*self.map;
        self.walk(from, to, past_head, |m, pos, validated_payload| {
            match validated_payload {
                None => {
                    match pre(m) {
                        None => return WalkStep::Stop,
                        Some(false) => return WalkStep::SkipPayload,
                        Some(true) => {}
                    }
                    // Copy the payload now; validation follows in walk().
                    let off = out.bytes.len();
                    let phys = pos % map.layout.data_len;
                    map.copy_out(phys + RECORD_HDR, m.cap_len as usize, &mut out.bytes);
                    out.metas.push((*m, off));
                    WalkStep::Copy
                }
                Some(valid) => {
                    // Called after the copy: keep or roll back.
                    let (meta, off) = out.metas.pop().expect("pushed above");
                    if valid {
                        let v = RecordView {
                            meta,
                            data: &out.bytes[off..off + meta.cap_len as usize],
                        };
                        if keep(&v) {
                            out.metas.push((meta, off));
                            return WalkStep::Copy;
                        }
                    }
                    out.bytes.truncate(off);
                    WalkStep::Copy
                }
            }
        })
    }

    /// Finds where a walk starts: (logical position, seq expected there if known).
    fn start_pos(&self, from: Start, tail: u64) -> (u64, Option<u64>) {
        let map = &*self.map;
        let (seq_target, ts_target) = match from {
            Start::Oldest => ((self.min_seq > 0).then_some(self.min_seq), None),
            Start::Seq(s) => (Some(s.max(self.min_seq)), None),
            Start::TsNs(t) => (None, Some(t)),
        };
        if seq_target.is_none() && ts_target.is_none() {
            return (tail, None);
        }
        // Best index entry still inside the ring: the largest position whose record is
        // not after the requested start.
        let mut best: Option<(u64, u64)> = None;
        for i in 0..map.layout.index_len {
            let e_seq = map.index_atomic(i, 0);
            let s1 = e_seq.load(Ordering::Acquire);
            if s1 == 0 {
                continue;
            }
            let pos = map.index_atomic(i, 1).load(Ordering::Relaxed);
            let max_before = map.index_atomic(i, 2).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if e_seq.load(Ordering::Relaxed) != s1 || pos < tail {
                continue;
            }
            if seq_target.is_some_and(|s| s1 > s) {
                continue;
            }
            // Every record before this entry has ts <= max_before.
            if ts_target.is_some_and(|t| max_before >= t) {
                continue;
            }
            if best.is_none_or(|(p, _)| pos > p) {
                best = Some((pos, s1));
            }
        }
        match best {
            Some((pos, s)) => (pos, Some(s)),
            None => (tail, None),
        }
    }

    /// The walk: visits each record from `from` on. For each record the visitor is called
    /// twice: first with `None` (header read, not yet validated against overwrite: the
    /// visitor may copy the payload), then with `Some(valid)` once the seqlock check ran.
    /// Records failing validation are skipped and counted; overwrite resynchronises at
    /// the new tail.
    fn walk(
        &self,
        from: Start,
        to: End,
        past_head: bool,
        mut visit: impl FnMut(&RecordMeta, u64, Option<bool>) -> WalkStep,
    ) -> CopyStats {
        let map = &*self.map;
        let lay = map.layout;
        let d = lay.data_len;
        let tail_a = map.hdr_atomic(HDR_TAIL);
        let mut st = CopyStats::default();
        let head = map.hdr_atomic(HDR_HEAD).load(Ordering::Acquire);
        let mut tail = tail_a.load(Ordering::Acquire);
        let (mut pos, mut expect) = self.start_pos(from, tail);
        let start_seq = match from {
            Start::Seq(s) => s.max(self.min_seq),
            _ => self.min_seq,
        };
        // The last valid record seen (gaps after it are lost or torn records).
        let mut last_seq: Option<u64> = None;
        // Bounded: at most two laps' worth of 8-byte steps.
        let limit = head.max(tail) + 2 * d;
        let mut resyncing = false;
        while pos < limit {
            if pos >= head && !past_head {
                break;
            }
            let phys = pos % d;
            let w = map.read_u64(phys + R_SEQ);
            if w == WRAP && !resyncing {
                fence(Ordering::Acquire);
                tail = tail_a.load(Ordering::Relaxed);
                if tail > pos {
                    pos = tail;
                    expect = None;
                    continue;
                }
                pos += d - phys;
                continue;
            }
            let hdr = map.read_header(phys);
            let well_formed = hdr.is_some_and(|m| {
                expect.is_none_or(|e| e == m.seq) && last_seq.is_none_or(|l| m.seq > l)
            });
            let meta = hdr.unwrap_or(RecordMeta {
                seq: w,
                ts_ns: 0,
                flow_hash: 0,
                orig_len: 0,
                cap_len: 0,
                link: 0,
            });
            // Decide on the header before validating against overwrite.
            let in_range = well_formed && w <= to.seq;
            let step = (in_range && w >= start_seq).then(|| visit(&meta, pos, None));
            let copied = matches!(step, Some(WalkStep::Copy));
            // Seqlock check: nothing read above was overwritten iff tail <= pos.
            fence(Ordering::Acquire);
            tail = tail_a.load(Ordering::Relaxed);
            if tail > pos {
                if copied {
                    visit(&meta, pos, Some(false));
                }
                // Overwritten under us: jump to the oldest record; the seq gap is counted.
                pos = tail;
                expect = None;
                resyncing = false;
                continue;
            }
            if !well_formed {
                if pos >= head {
                    // Past the stored head: the first invalid slot is the end.
                    break;
                }
                if !resyncing {
                    resyncing = true;
                }
                // Torn or corrupt: scan forward for the next valid header.
                pos += 8;
                expect = None;
                continue;
            }
            // A valid record.
            if last_seq.is_none() {
                if let Start::Seq(_) = from {
                    // The requested first record was overwritten before the walk began.
                    if w > start_seq {
                        st.lost_overwritten += w - start_seq;
                    }
                }
            }
            if let Some(l) = last_seq {
                let gap = w - l - 1;
                if gap > 0 {
                    if resyncing {
                        st.torn += gap;
                    } else if l + 1 >= start_seq {
                        st.lost_overwritten += gap;
                    }
                }
            } else if resyncing {
                st.torn += 1;
            }
            resyncing = false;
            if copied {
                visit(&meta, pos, Some(true));
            }
            if w > to.seq || matches!(step, Some(WalkStep::Stop)) {
                break;
            }
            last_seq = Some(w);
            expect = Some(w + 1);
            pos += record_len(meta.cap_len);
        }
        if resyncing {
            // Invalid bytes up to the end: at least one record lost.
            st.torn += 1;
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    fn small(dir: &Path, size: u64, snaplen: u32) -> EvidenceRing {
        EvidenceRing::create(
            &dir.join("r.ring"),
            &RingConfig {
                size_bytes: size,
                snaplen,
                shard: 3,
            },
        )
        .unwrap()
    }

    #[test]
    fn append_and_copy_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = small(dir.path(), 1 << 20, 1600);
        for i in 1..=100u64 {
            let f = frame(i, 60 + i as usize);
            assert_eq!(
                r.append(i * 1000, f.len() as u32, LinkType::Ethernet, i % 7, &f),
                i
            );
        }
        let rd = r.reader();
        let mut out = RecordBuf::new();
        let st = rd.copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
        assert_eq!(st.copied, 100);
        assert_eq!(st.lost_overwritten + st.torn, 0);
        for (i, v) in out.iter().enumerate() {
            let s = i as u64 + 1;
            assert_eq!(v.seq(), s);
            assert_eq!(v.ts_ns(), s * 1000);
            assert_eq!(v.data, &frame(s, 60 + s as usize)[..]);
            assert_eq!(v.link(), 1);
        }
        // Time range and filter.
        let st = rd.copy_range(
            Start::TsNs(10_000),
            End {
                seq: u64::MAX,
                ts_ns: 20_000,
            },
            |v| v.flow_hash() == 3,
            &mut out,
        );
        let seqs: Vec<u64> = out.iter().map(|v| v.seq()).collect();
        assert_eq!(seqs, vec![10, 17]);
        assert_eq!(st.copied, 2);
        assert!(!st.start_overwritten);
        // Seq range.
        rd.copy_range(
            Start::Seq(95),
            End {
                seq: 97,
                ts_ns: u64::MAX,
            },
            |_| true,
            &mut out,
        );
        assert_eq!(
            out.iter().map(|v| v.seq()).collect::<Vec<_>>(),
            vec![95, 96, 97]
        );
    }

    #[test]
    fn time_bounded_copy_stops_after_a_run_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = small(dir.path(), 4 << 20, 256);
        let ms = 1_000_000u64;
        // 100 ms apart; seq 50 carries a bogus far-future time, seq 80 is 4 s late, seq
        // 1500 is 146 s late.
        for i in 1..=5000u64 {
            let ts = match i {
                50 => 1 << 62,
                80 => 4_000 * ms,
                1500 => 3_800 * ms,
                _ => i * 100 * ms,
            };
            r.append(ts, 60, LinkType::Ethernet, 0, &frame(i, 60));
        }
        let rd = r.reader();
        let mut out = RecordBuf::new();
        // [3 s, 7 s]: records 30..=70 except the bogus 50, and the late 80.
        rd.copy_range(
            Start::TsNs(3_000 * ms),
            End {
                seq: u64::MAX,
                ts_ns: 7_000 * ms,
            },
            |_| true,
            &mut out,
        );
        let want: Vec<u64> = (30..=70).filter(|&i| i != 50).chain([80]).collect();
        assert_eq!(out.iter().map(|v| v.seq()).collect::<Vec<_>>(), want);
        // [3.5 s, 4 s]: the late record 80 is 1 s past the end of 35..=40, within the
        // run of END_RUN records: still found.
        rd.copy_range(
            Start::TsNs(3_500 * ms),
            End {
                seq: u64::MAX,
                ts_ns: 4_000 * ms,
            },
            |_| true,
            &mut out,
        );
        let got: Vec<u64> = out.iter().map(|v| v.seq()).collect();
        assert_eq!(got, vec![35, 36, 37, 38, 39, 40, 80]);
        // A walk without the early stop (End::HEAD, then filtered) also finds 1500, more
        // than END_RUN records past the end of the span: the documented limit.
        let (a, b) = (3_500 * ms, 4_000 * ms);
        rd.copy_range(
            Start::Oldest,
            End::HEAD,
            |v| (a..=b).contains(&v.ts_ns()),
            &mut out,
        );
        let all: Vec<u64> = out.iter().map(|v| v.seq()).collect();
        assert_eq!(all, [&got[..], &[1500]].concat());
        assert!(1500 - 80 > u64::from(END_RUN));
    }

    #[test]
    fn wraps_and_keeps_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = small(dir.path(), 64 * 1024, 512);
        let n = 5000u64;
        for i in 1..=n {
            let f = frame(i, (i as usize * 37) % 700);
            r.append(i, f.len() as u32, LinkType::Raw, 0, &f);
        }
        assert!(r.cut_to_snaplen > 0);
        let rd = r.reader();
        let mut out = RecordBuf::new();
        let st = rd.copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
        assert!(st.copied > 50 && st.copied < n);
        assert_eq!(st.torn, 0);
        let last = out.get(out.len() - 1);
        assert_eq!(last.seq(), n);
        let first = out.get(0).seq();
        for (k, v) in out.iter().enumerate() {
            let s = first + k as u64;
            assert_eq!(v.seq(), s);
            let f = frame(s, (s as usize * 37) % 700);
            assert_eq!(v.orig_len(), f.len() as u32);
            assert_eq!(v.data, &f[..f.len().min(512)]);
        }
        // A start older than the ring is reported.
        let st = rd.copy_range(Start::TsNs(1), End::HEAD, |_| true, &mut out);
        assert!(st.start_overwritten);
        let st = rd.copy_range(Start::Seq(1), End::HEAD, |_| true, &mut out);
        assert_eq!(out.get(0).seq(), first);
        assert_eq!(st.lost_overwritten, first - 1);
        // The index finds a start in the middle.
        let mid = n - 20;
        rd.copy_range(Start::TsNs(mid), End::HEAD, |_| true, &mut out);
        assert_eq!(out.get(0).seq(), mid);
        assert_eq!(out.len(), 21);
    }

    #[test]
    fn readonly_scan_matches_and_counts_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ring");
        let mut r = small(dir.path(), 64 * 1024, 256);
        for i in 1..=50u64 {
            let f = frame(i, 100);
            r.append(i, 100, LinkType::Ethernet, 0, &f);
        }
        let ro = RingReader::open_readonly(&path).unwrap();
        let mut seqs = vec![];
        let st = ro.scan(|v| seqs.push(v.seq()));
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        assert_eq!(st.torn, 0);
        drop(ro);
        drop(r);
        // Corrupt record 10's header (ts), as a torn write would.
        let hdr_len = {
            let ro = RingReader::open_readonly(&path).unwrap();
            ro.map.layout.header_len
        };
        let off = hdr_len + 9 * record_len(100) + R_TS;
        {
            use std::os::unix::fs::FileExt;
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&[0xff], off).unwrap();
        }
        let ro = RingReader::open_readonly(&path).unwrap();
        let mut seqs = vec![];
        let st = ro.scan(|v| seqs.push(v.seq()));
        let want: Vec<u64> = (1..=50).filter(|&s| s != 10).collect();
        assert_eq!(seqs, want);
        assert_eq!(st.torn, 1);
    }

    #[test]
    fn rejects_bad_files_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ring");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let e = RingReader::open_readonly(&p).unwrap_err().to_string();
        assert!(e.contains("x.ring") && e.contains("bad magic"), "{e}");
        assert!(!e.contains('\n'));
        let e = EvidenceRing::create(
            &dir.path().join("y.ring"),
            &RingConfig {
                size_bytes: 1000,
                snaplen: 100,
                shard: 0,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("y.ring") && e.contains("data area"), "{e}");
    }

    #[test]
    fn second_writer_is_refused_and_resume_keeps_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ring");
        let cfg = RingConfig {
            size_bytes: 64 * 1024,
            snaplen: 256,
            shard: 0,
        };
        let mut r = EvidenceRing::create(&path, &cfg).unwrap();
        for i in 1..=10u64 {
            r.append(i, 80, LinkType::Ethernet, 0, &frame(i, 80));
        }
        let e = EvidenceRing::open_or_create(&path, &cfg).err().unwrap();
        assert!(matches!(e, RingError::Locked { .. }), "{e}");
        drop(r);
        let (mut r, how) = EvidenceRing::open_or_create(&path, &cfg).unwrap();
        assert_eq!(
            how,
            Opened::Resumed {
                records: 10,
                torn: 0
            }
        );
        assert_eq!(r.append(100, 80, LinkType::Ethernet, 0, &frame(11, 80)), 11);
        // This run's reader sees only this run's record; a scan sees all.
        let mut out = RecordBuf::new();
        r.reader()
            .copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
        assert_eq!(out.iter().map(|v| v.seq()).collect::<Vec<_>>(), vec![11]);
        let mut n = 0;
        r.reader().scan(|_| n += 1);
        assert_eq!(n, 11);
    }
}
