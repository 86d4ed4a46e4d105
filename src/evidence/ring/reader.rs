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

/// What a walk's visitor wants for a record whose header validated.
pub(super) enum WalkStep {
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
    pub(super) fn walk(
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
