//! The evidence ring: the last N bytes of one shard's packets in a memory-mapped file, so
//! that an alert can include packets from before it fired and so that a crash (even
//! `kill -9`) leaves them on disk for `streamml-sensor evidence recover`.
//!
//! # Layout (version 2, native little-endian, self-describing)
//!
//! ```text
//! 0       file header (offsets in HDR_*): magic "SMLRING\0", version, header_len,
//!         file_len, data_len, snaplen, shard, index geometry, salt, created_ns;
//!         at 64 the header check: CRC-32C of bytes 0..64 (these fields never change);
//!         one cache line of atomics at 128: head, head_seq, tail, overwritten_max_ts_ns
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
//! 34 hcheck     u16  low 16 bits of H, a keyed 64-bit hash of the fields above (the key
//!                    is the file's salt): tells a record boundary from packet bytes,
//!                    cheaply, while resynchronising
//! 36 check      u32  CRC-32C (Castagnoli) of the cap_len stored bytes, continuing from
//!                    the high 32 bits of H (`crc32c_append(H >> 32, bytes)`): covers the
//!                    header fields through H and every stored byte; tells a damaged record
//! 40 bytes      cap_len bytes, padded to 8
//! ```
//!
//! Any change to a header field changes H (each step of the hash is a bijection of its
//! state for a fixed input, so two headers differing in a field differ in H), hence the
//! CRC's initial value (unless the high halves collide, 2^-32), and a CRC from another
//! initial value over the same bytes always differs; any 1 to 3 flipped bits and any burst
//! of up to 32 bits in the stored bytes change the CRC. The CRC runs on the capture reader
//! thread for every packet: `crc-fast` folds with (VP)CLMULQDQ where the CPU has it, about
//! 3x faster than the SSE 4.2 `crc32` instruction alone on 1500-byte frames.
//!
//! Version 1 had a reserved `flags` u16 at 34, a keyed hash of the header alone at 36 and
//! no file header check: a flipped bit in a packet's bytes went unnoticed. A file of
//! another version is refused ([`RingError::Version`], naming both versions); a sensor
//! starting on one replaces it with a new ring.
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
//! sequence, `hcheck`, lengths, then `check` over header and bytes), skips and counts
//! anything invalid and resynchronises on the next valid header. What it skips is counted
//! under one of two names ([`CopyStats`]):
//!
//! - `corrupt`: one record at a known place that does not check: its header validates but
//!   its CRC does not (a flipped bit in its bytes or in `check`), or its header does not
//!   validate and the next valid record is the one after it (a flipped bit in a header
//!   field). Never copied.
//! - `torn`: records whose place is lost: the walk resynchronised over a stretch missing
//!   more than one sequence number (a half-written stretch, pages of an older lap left by
//!   a power loss without `msync`, neighbouring damaged headers).
//!
//! Power loss without `msync` is not otherwise covered (the page cache may reach the disk
//! in any order); whatever it leaves fails the checks (short of a 2^-32 CRC collision)
//! and is never copied as a packet.
//!
//! # Damaged files
//!
//! Opening a ring checks, before mapping anything, the magic, the version, the file
//! header's CRC, the geometry against the file's real size (a file shorter than its
//! header says is "truncated" and never mapped, so never a SIGBUS), and that `tail <=
//! head <= tail + 2 * data_len` (a writer keeps them within one lap; the two are not read
//! at one instant), both 8-aligned. A file failing any of them is refused with one line
//! naming it and the reason ([`RingError`]); `evidence recover` reports it as unreadable
//! and recovers the other rings. The sensor never shortens a ring file in place: a new
//! ring is a new file renamed over the old one, so the mapping of a reader of the old one
//! stays whole (another program truncating a mapped ring would still raise SIGBUS in the
//! reader). Readers bound every walk and mask every position they load to 8 bytes, so
//! whatever the atomics and the index hold, a walk ends and reads only aligned words
//! inside the data area.
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
pub const VERSION: u32 = 2;
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
/// CRC-32C of bytes 0..64 (the fields above, written once at creation).
const HDR_CHECK: usize = 64;
/// Bytes of the file header read (with `pread`) and checked before mapping.
const HDR_READ: usize = 160;
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
const R_HCHECK: u64 = 34;
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
    /// Not a ring file, or a damaged one: the reason says which.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: ring layout version {found}, this build reads version {want} only")]
    Version {
        path: PathBuf,
        found: u32,
        want: u32,
    },
    #[error("{path}: ring file is in use by another sensor process (exclusive lock held)")]
    Locked { path: PathBuf },
    #[error("{path}: invalid ring geometry: {reason}")]
    Config { path: PathBuf, reason: String },
}

impl RingError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            RingError::Io { path, .. }
            | RingError::Format { path, .. }
            | RingError::Version { path, .. }
            | RingError::Locked { path }
            | RingError::Config { path, .. } => path,
        }
    }

    /// The message without the leading path (for reports that name the file apart).
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.path().display());
        full.strip_prefix(&prefix).unwrap_or(&full).to_string()
    }
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

/// H: a keyed hash of a record header's fields (the key is the file's random salt, so
/// packet bytes that happen to look like a header, or a header of another ring file, do
/// not validate). Its low 16 bits are `hcheck` (it only has to make a false boundary rare
/// while resynchronising); its high 32 bits start the record's CRC.
#[inline(always)]
fn header_hash(
    salt: u64,
    seq: u64,
    ts_ns: u64,
    flow_hash: u64,
    orig_len: u32,
    cap_len: u32,
    link: u16,
) -> u64 {
    let mut h = mix(salt, seq);
    h = mix(h, ts_ns);
    h = mix(h, flow_hash);
    h = mix(h, u64::from(orig_len) | u64::from(cap_len) << 32);
    mix(h, u64::from(link))
}

/// `check`: CRC-32C of `bytes` continuing from the high half of H (the same value as the
/// `crc32c` crate's `crc32c_append(H >> 32, bytes)`).
#[inline(always)]
fn record_crc(h: u64, bytes: &[u8]) -> u32 {
    let init = (h >> 32) as u32;
    let mut d =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(!init));
    d.update(bytes);
    d.finalize() as u32
}

/// A record header whose structure, lengths and `hcheck` validated; `check` still to be
/// compared with the CRC of its bytes.
#[derive(Clone, Copy, Debug)]
struct Header {
    meta: RecordMeta,
    /// H, the keyed hash of the fields (its low 16 bits matched `hcheck`).
    hash: u64,
    check: u32,
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
    /// Records lost where the walk resynchronised over a stretch missing more than one
    /// sequence number (their place is unknown): see the module doc.
    pub torn: u64,
    /// Records at a known place that failed their check (CRC over header and bytes, or a
    /// damaged header between two valid records): skipped, never copied.
    pub corrupt: u64,
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

    /// Reads and checks the record header at physical `phys`: structure, lengths and
    /// `hcheck`. Neither its CRC nor the seqlock check (concurrent overwrite) is done here.
    fn read_header(&self, phys: u64) -> Option<Header> {
        let lay = &self.layout;
        if !phys.is_multiple_of(8) || phys + RECORD_HDR > lay.data_len {
            return None;
        }
        let seq = self.read_u64(phys + R_SEQ);
        if seq == 0 || seq == WRAP {
            return None;
        }
        let meta = RecordMeta {
            seq,
            ts_ns: self.read_u64(phys + R_TS),
            flow_hash: self.read_u64(phys + R_HASH),
            orig_len: self.read_u32(phys + R_ORIG),
            cap_len: self.read_u32(phys + R_CAP),
            link: self.read_u16(phys + R_LINK),
        };
        let hcheck = self.read_u16(phys + R_HCHECK);
        let check = self.read_u32(phys + R_CHECK);
        let hash = header_hash(
            lay.salt,
            seq,
            meta.ts_ns,
            meta.flow_hash,
            meta.orig_len,
            meta.cap_len,
            meta.link,
        );
        let ok = meta.cap_len <= lay.snaplen
            && meta.orig_len >= meta.cap_len
            && phys + record_len(meta.cap_len) <= lay.data_len
            && hcheck == hash as u16;
        ok.then_some(Header { meta, hash, check })
    }

    /// Whether `bytes` (a copy of the record's stored bytes) match the header's CRC.
    #[inline]
    fn intact(&self, h: &Header, bytes: &[u8]) -> bool {
        record_crc(h.hash, bytes) == h.check
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

/// The file header's check: CRC-32C of its first 64 bytes.
fn file_header_crc(hdr: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &hdr[..HDR_CHECK]) as u32
}

/// Reads and validates the header of `file` (already open) against the file's real size,
/// then maps it. Nothing is mapped unless the whole file the header describes is there.
fn map_existing(path: &Path, file: &File, writable: bool) -> Result<(MmapRaw, Layout), RingError> {
    let fmt = |reason: String| RingError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let flen = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut hdr = [0u8; HDR_READ];
    let got = (flen as usize).min(HDR_READ);
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut hdr[..got], 0)
            .map_err(|e| io_err(path, e))?;
    }
    let u32_at = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(hdr[o..o + 8].try_into().unwrap());
    let truncated = || {
        fmt(format!(
            "truncated: file is {flen} bytes, shorter than its {PAGE}-byte header"
        ))
    };
    if got < MAGIC.len() {
        return Err(truncated());
    }
    if hdr[HDR_MAGIC..HDR_MAGIC + 8] != MAGIC {
        return Err(fmt("not an evidence ring file (bad magic)".into()));
    }
    if got < HDR_VERSION + 4 {
        return Err(truncated());
    }
    let version = u32_at(HDR_VERSION);
    if version != VERSION {
        return Err(RingError::Version {
            path: path.to_path_buf(),
            found: version,
            want: VERSION,
        });
    }
    if flen < PAGE {
        return Err(truncated());
    }
    if u32_at(HDR_CHECK) != file_header_crc(&hdr) {
        return Err(fmt(
            "damaged file header (its CRC-32C does not match)".into()
        ));
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
    let ok = layout.header_len >= PAGE + layout.index_len * INDEX_ENTRY
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
            "inconsistent header (file_len {file_len}, header_len {}, data_len {}, snaplen {}, index {}x2^{})",
            layout.header_len, layout.data_len, layout.snaplen, layout.index_len, layout.chunk_shift
        )));
    }
    if flen < file_len {
        return Err(fmt(format!(
            "truncated: file is {flen} bytes, its header says {file_len}"
        )));
    }
    if flen != file_len {
        return Err(fmt(format!(
            "file is {flen} bytes, its header says {file_len}"
        )));
    }
    // The atomics as they are now. A running writer keeps tail <= head <= tail + data_len,
    // both 8-aligned, at every instant; the two loads here are not one snapshot, hence the
    // slack of a lap.
    let (head, tail) = (u64_at(HDR_HEAD), u64_at(HDR_TAIL));
    if tail > head
        || head - tail > 2 * layout.data_len
        || !head.is_multiple_of(8)
        || !tail.is_multiple_of(8)
    {
        return Err(fmt(format!(
            "inconsistent head {head} / tail {tail} for a data area of {} bytes",
            layout.data_len
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

mod reader;
mod writer;

pub use reader::{ReadMiss, RingReader};
pub use writer::{EvidenceRing, Opened};

#[cfg(test)]
mod tests;
