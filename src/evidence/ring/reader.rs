//! The reader end of the ring: scan, seq-checked copies, recovery walks.

use super::*;

/// A reader of a ring: cheap to clone, `Send + Sync`. Either shares the writer's mapping
/// (same process, [`EvidenceRing::reader`]) or maps a ring file read-only
/// ([`RingReader::open_readonly`]: `evidence recover`, also while a sensor is running).
#[derive(Clone)]
pub struct RingReader {
    pub(super) map: Arc<Map>,
    /// Records with a smaller seq are not this run's and are never copied.
    pub(super) min_seq: u64,
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("shard", &self.map.layout.shard)
            .field("data_len", &self.map.layout.data_len)
            .finish()
    }
}

/// What a walk's `pre` visitor wants for a record whose header validated.
pub(super) enum WalkStep {
    /// Copy the bytes, check the record's CRC and, if it is intact, call `on_valid`.
    Copy,
    /// Skip the bytes unread (and unchecked), go on.
    SkipPayload,
    /// Skip the bytes and end the walk at this record.
    Stop,
}

/// Why [`RingReader::read_at`] returned no record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMiss {
    /// The writer overwrote the record since it was scanned.
    Overwritten,
    /// The record is there but its header or CRC does not check (the file changed since
    /// the scan: something other than the writer wrote it).
    Corrupt,
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
    /// validated records (header, CRC, seqlock) are handed to `filter` or copied.
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
        let RecordBuf { metas, bytes } = out;
        let mut st = self.walk(
            from,
            to,
            false,
            bytes,
            |m| {
                if m.ts_ns > beyond_ts {
                    beyond += 1;
                    if beyond >= END_RUN {
                        return WalkStep::Stop;
                    }
                } else {
                    beyond = 0;
                }
                if m.ts_ns < from_ts || m.ts_ns > to.ts_ns {
                    out_of_range += 1;
                    WalkStep::SkipPayload
                } else {
                    WalkStep::Copy
                }
            },
            |meta, _, off, bytes| {
                let v = RecordView {
                    meta: *meta,
                    data: &bytes[off..],
                };
                let keep = filter(&v);
                if keep {
                    metas.push((*meta, off));
                } else {
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
    /// validated record (header, CRC, seqlock) in ring order.
    pub fn scan(&self, mut visit: impl FnMut(&RecordView<'_>)) -> CopyStats {
        let mut buf = Vec::new();
        let mut n = 0u64;
        let mut st = self.all().walk(
            Start::Oldest,
            End::HEAD,
            true,
            &mut buf,
            |_| WalkStep::Copy,
            |meta, _, off, bytes| {
                visit(&RecordView {
                    meta: *meta,
                    data: &bytes[off..],
                });
                n += 1;
                false
            },
        );
        st.copied = n;
        st
    }

    /// Visits the header of every valid record (like [`RingReader::scan`]: each record's
    /// bytes are read to check its CRC, but not kept) with its position, for a later
    /// [`RingReader::read_at`].
    pub fn scan_headers(&self, mut visit: impl FnMut(&RecordMeta, RecordPos)) -> CopyStats {
        let mut buf = Vec::new();
        let mut n = 0u64;
        let mut st = self.all().walk(
            Start::Oldest,
            End::HEAD,
            true,
            &mut buf,
            |_| WalkStep::Copy,
            |m, pos, _, _| {
                n += 1;
                visit(m, RecordPos { pos, seq: m.seq });
                false
            },
        );
        st.copied = n;
        st
    }

    /// This reader without its run bound: it sees the records of earlier runs too.
    fn all(&self) -> RingReader {
        RingReader {
            map: self.map.clone(),
            min_seq: 0,
        }
    }

    /// Appends the bytes of the record at `at` to `out` and returns its header, if it is
    /// still there (not overwritten since it was scanned) and intact (header and CRC).
    pub fn read_at(&self, at: RecordPos, out: &mut Vec<u8>) -> Result<RecordMeta, ReadMiss> {
        let map = &*self.map;
        let phys = at.pos % map.layout.data_len;
        let h = map.read_header(phys).filter(|h| h.meta.seq == at.seq);
        let start = out.len();
        if let Some(h) = &h {
            map.copy_out(phys + RECORD_HDR, h.meta.cap_len as usize, out);
        }
        fence(Ordering::Acquire);
        if map.hdr_atomic(HDR_TAIL).load(Ordering::Relaxed) > at.pos {
            out.truncate(start);
            return Err(ReadMiss::Overwritten);
        }
        match h {
            Some(h) if map.intact(&h, &out[start..]) => Ok(h.meta),
            _ => {
                out.truncate(start);
                Err(ReadMiss::Corrupt)
            }
        }
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
            // (An entry of a damaged file may point anywhere: unaligned ones are skipped.)
            if e_seq.load(Ordering::Relaxed) != s1 || pos < tail || !pos.is_multiple_of(8) {
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

    /// The walk: visits each record from `from` on. `pre` sees each header that validated
    /// and in sequence (not yet checked against overwrite) and says whether to copy its
    /// bytes; a copied record is then checked (seqlock: not overwritten while copied; CRC:
    /// intact) and, if valid, handed to `on_valid(meta, pos, offset of its bytes in buf,
    /// buf)`, which keeps its bytes at the end of `buf` by returning true. Invalid records
    /// are skipped and counted (`corrupt`, `torn`: see the module doc); overwrite
    /// resynchronises at the new tail.
    ///
    /// Bounded whatever the file holds: every step moves forward by at least 8 bytes,
    /// over at most three laps' worth of positions, and a record's bytes are read at most
    /// once per lap (a header that validates is stepped over whole, corrupt or not).
    pub(super) fn walk(
        &self,
        from: Start,
        to: End,
        past_head: bool,
        buf: &mut Vec<u8>,
        mut pre: impl FnMut(&RecordMeta) -> WalkStep,
        mut on_valid: impl FnMut(&RecordMeta, u64, usize, &Vec<u8>) -> bool,
    ) -> CopyStats {
        let map = &*self.map;
        let lay = map.layout;
        let d = lay.data_len;
        let tail_a = map.hdr_atomic(HDR_TAIL);
        // Positions are 8-aligned in any file that passed `map_existing`; masking keeps
        // every load aligned even if a damaged file changes under the walk.
        let load_tail = |o: Ordering| tail_a.load(o) & !7;
        let mut st = CopyStats::default();
        let head = map.hdr_atomic(HDR_HEAD).load(Ordering::Acquire) & !7;
        let mut tail = load_tail(Ordering::Acquire);
        let (mut pos, mut expect) = self.start_pos(from, tail);
        let start_seq = match from {
            Start::Seq(s) => s.max(self.min_seq),
            _ => self.min_seq,
        };
        // The last located record (gaps after it are lost, torn or corrupt records).
        let mut last_seq: Option<u64> = None;
        // Bounded: at most two laps' worth of positions past the head (three from the
        // start).
        let limit = head
            .max(tail)
            .saturating_add(2 * d)
            .min(pos.saturating_add(3 * d));
        let mut resyncing = false;
        while pos < limit {
            if pos >= head && !past_head {
                break;
            }
            let phys = pos % d;
            let w = map.read_u64(phys + R_SEQ);
            if w == WRAP && !resyncing {
                fence(Ordering::Acquire);
                tail = load_tail(Ordering::Relaxed);
                if tail > pos {
                    pos = tail;
                    expect = None;
                    continue;
                }
                pos = pos.saturating_add(d - phys);
                continue;
            }
            let hdr = map.read_header(phys).filter(|h| {
                expect.is_none_or(|e| e == h.meta.seq) && last_seq.is_none_or(|l| h.meta.seq > l)
            });
            // Decide on the header before validating against overwrite.
            let step = hdr.and_then(|h| {
                let s = h.meta.seq;
                (s <= to.seq && s >= start_seq).then(|| pre(&h.meta))
            });
            let copied_at = match (&hdr, &step) {
                (Some(h), Some(WalkStep::Copy)) => {
                    let off = buf.len();
                    map.copy_out(phys + RECORD_HDR, h.meta.cap_len as usize, buf);
                    Some(off)
                }
                _ => None,
            };
            // Seqlock check: nothing read above was overwritten iff tail <= pos.
            fence(Ordering::Acquire);
            tail = load_tail(Ordering::Relaxed);
            if tail > pos {
                if let Some(off) = copied_at {
                    buf.truncate(off);
                }
                // Overwritten under us: jump to the oldest record; the seq gap is counted.
                pos = tail;
                expect = None;
                resyncing = false;
                continue;
            }
            let Some(h) = hdr else {
                if pos >= head {
                    // Past the stored head: the first invalid slot is the end.
                    break;
                }
                // Damaged or torn header: scan forward for the next valid one. A resync
                // always starts where a record was expected (the end of the last one, the
                // tail, or the start of a lap).
                resyncing = true;
                pos = pos.saturating_add(8);
                expect = None;
                continue;
            };
            // A located record: count what lies between it and the last one.
            let w = h.meta.seq;
            if last_seq.is_none() {
                if let Start::Seq(_) = from {
                    // The requested first record was overwritten before the walk began.
                    if w > start_seq {
                        st.lost_overwritten = st.lost_overwritten.saturating_add(w - start_seq);
                    }
                }
            }
            match last_seq {
                Some(l) => {
                    let gap = w - l - 1;
                    if resyncing {
                        // One missing record between two valid ones: it sat where the
                        // resync began, its header damaged. More: their places are lost.
                        match gap {
                            0 => {}
                            1 => st.corrupt += 1,
                            // (Saturating: a damaged file can claim any sequence numbers.)
                            g => st.torn = st.torn.saturating_add(g),
                        }
                    } else if gap > 0 && l + 1 >= start_seq {
                        st.lost_overwritten = st.lost_overwritten.saturating_add(gap);
                    }
                }
                // The first slot of the walk was damaged: one record at least.
                None if resyncing => st.corrupt += 1,
                None => {}
            }
            resyncing = false;
            if let Some(off) = copied_at {
                if !map.intact(&h, &buf[off..]) {
                    st.corrupt += 1;
                    buf.truncate(off);
                } else if !on_valid(&h.meta, pos, off, buf) {
                    buf.truncate(off);
                }
            }
            if w > to.seq || matches!(step, Some(WalkStep::Stop)) {
                break;
            }
            last_seq = Some(w);
            expect = Some(w + 1);
            pos = pos.saturating_add(record_len(h.meta.cap_len));
        }
        if resyncing {
            // Invalid bytes up to the end. The head's seq says how many records are
            // missing when it is consistent with the last one located; else at least one.
            let head_seq = map.hdr_atomic(HDR_HEAD_SEQ).load(Ordering::Acquire);
            let missing = match last_seq {
                Some(l) if head_seq > l && head_seq - l <= d / RECORD_HDR => head_seq - l,
                _ => 1,
            };
            if missing == 1 {
                st.corrupt += 1;
            } else {
                st.torn = st.torn.saturating_add(missing);
            }
        }
        st
    }
}
