//! The writer end of the ring: append, reclaim, the file lock.

use super::reader::WalkStep;
use super::*;

/// The writer end of a shard's evidence ring. Owned by one reader thread; not `Clone`.
pub struct EvidenceRing {
    pub(super) map: Arc<Map>,
    pub(super) path: PathBuf,
    // Writer-private copies of the shared state: the writer never reads what readers write.
    pub(super) head: u64,
    pub(super) head_phys: u64,
    pub(super) next_seq: u64,
    pub(super) tail: u64,
    pub(super) overwritten_max_ts: u64,
    pub(super) max_ts: u64,
    pub(super) last_chunk: u64,
    /// First seq of this process's run (readers of this process see nothing older).
    pub(super) run_first_seq: u64,
    /// Frames longer than snaplen that were cut.
    pub cut_to_snaplen: u64,
    /// Bytes kept per frame (<= the file's snaplen, which bounds record size).
    pub(super) snaplen: u32,
}

/// What [`EvidenceRing::open_or_create`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A new, empty ring was created (no file, or an incompatible one was replaced).
    Created,
    /// An existing ring was continued: `records` valid records from an earlier run are
    /// kept for `evidence recover` (`torn` and `corrupt` invalid ones were skipped: see
    /// [`CopyStats`]).
    Resumed {
        records: u64,
        torn: u64,
        corrupt: u64,
    },
}

impl EvidenceRing {
    /// Creates `path` as an empty ring: a new file, preallocated and with its header
    /// written under a temporary name beside it (`.NAME.XXXXXX.tmp`), then renamed over
    /// `path`. An existing file is never shortened in place, so a reader that has it
    /// mapped (`evidence recover`) keeps its whole mapping (no SIGBUS); it stays locked
    /// until it is replaced, so a second sensor is refused as with a running one.
    /// Temporaries a killed creation left are removed.
    pub fn create(path: &Path, cfg: &RingConfig) -> Result<EvidenceRing, RingError> {
        use std::os::unix::fs::PermissionsExt;
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
        let old = match File::open(path) {
            Ok(f) => Some(lock_exclusive(path, f)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(path, e)),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let prefix = format!(
            ".{}.",
            path.file_name()
                .map_or_else(|| "ring".into(), |n| n.to_string_lossy())
        );
        remove_stale_temporaries(dir, &prefix);
        let (file, tmp_path) = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| io_err(path, e))?
            .into_parts();
        let file = lock_exclusive(path, file)?;
        // Reserve every block now: a sparse file on a full disk would SIGBUS on the hot
        // path when a page is first touched.
        if let Err(e) =
            nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, layout.file_len() as libc::off_t)
        {
            // A file left half-allocated would hold the space of a ring that does not exist.
            let _ = std::fs::remove_file(path);
            return Err(io_err(path, std::io::Error::from(e)));
        }
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
        let check = file_header_crc(&hdr);
        hdr[HDR_CHECK..HDR_CHECK + 4].copy_from_slice(&check.to_le_bytes());
        {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&hdr, 0).map_err(|e| io_err(path, e))?;
        }
        let (raw, layout) = map_existing(path, &file, true)?;
        tmp_path.persist(path).map_err(|e| io_err(path, e.error))?;
        drop(old);
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
            Err(RingError::Format { .. } | RingError::Version { .. }) => {
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
        let mut scratch = Vec::new();
        let st = reader.walk(
            Start::Oldest,
            End::HEAD,
            true,
            &mut scratch,
            |_| WalkStep::Copy,
            |m, pos, _, _| {
                last = Some((m.seq, pos + record_len(m.cap_len), m.ts_ns));
                max_ts = max_ts.max(m.ts_ns);
                records += 1;
                false
            },
        );
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
                corrupt: st.corrupt,
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
        let h = header_hash(
            map.layout.salt,
            seq,
            ts_ns,
            flow_hash,
            orig_len,
            cap32,
            link16,
        );
        let hcheck = h as u16;
        let check = record_crc(h, &bytes[..cap]);
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
            ptr::write_volatile(p.wrapping_add(R_HCHECK as usize) as *mut u16, hcheck);
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
pub(super) fn reclaim(
    map: &Map,
    tail: &mut u64,
    head: u64,
    overwritten_max_ts: &mut u64,
    upto: u64,
) {
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

/// Removes the temporaries named `PREFIX*.tmp` in `dir` that no creation holds (locked).
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(prefix) && name.ends_with(".tmp")) {
            continue;
        }
        let p = e.path();
        if let Ok(f) = File::open(&p) {
            if lock_exclusive(&p, f).is_ok() {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

pub(super) fn lock_exclusive(
    path: &Path,
    file: File,
) -> Result<nix::fcntl::Flock<File>, RingError> {
    use nix::fcntl::{Flock, FlockArg};
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(RingError::Locked {
            path: path.to_path_buf(),
        }),
        Err((_, e)) => Err(io_err(path, std::io::Error::from(e))),
    }
}
