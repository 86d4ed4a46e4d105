//! `streamml-sensor evidence recover`: dumps what the shard rings of a state directory
//! still hold — after a crash or `kill -9`, or on an analyst's request while the sensor
//! runs — as one PCAP inside zstd, in time order across shards. Every record is validated
//! (sequence, keyed header check, lengths, CRC-32C over header and bytes); invalid ones
//! are skipped and counted, as `corrupt` (one record at a known place that does not check)
//! or `torn` (records whose place was lost): see `ring`'s module doc. No record that fails
//! its check is ever written as a packet.
//!
//! Each ring is opened on its own. A ring that cannot be read (bad magic, another layout
//! version, a damaged file header, truncated, a header inconsistent with the file's size,
//! an I/O error) is reported in [`RecoverReport::unreadable`] with the reason and skipped;
//! the others are recovered. Exit codes of the command (the `flows`/`replay` convention
//! for a damaged input: what could be read is written, and the run says what was not):
//!
//! - 0: every ring was read (its corrupt and torn records are counted in the summary);
//! - 1: at least one ring was unreadable and at least one was read: the output holds the
//!   readable rings' packets; one `streamml-sensor: warning: ...` line per unreadable ring;
//! - 2: nothing to recover from (no ring file, or none readable), or bad arguments: no
//!   output is written.
//!
//! `--filter` takes a tcpdump expression, compiled by libpcap (`pcap_compile` on a dead
//! handle of the ring's link type) and run with `pcap_offline_filter` on each record: the
//! analyst gets exactly tcpdump's semantics, and a bad expression is libpcap's own error.

use std::collections::BinaryHeap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::file::{FileConfig, PcapZstWriter, TsRes};
use super::ring::{ReadMiss, RecordMeta, RecordPos, RingReader};
use super::statedir::StateDir;

/// What a recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Ring files found (readable or not).
    pub rings: usize,
    /// Valid records per readable ring file.
    pub per_ring: Vec<(PathBuf, u64)>,
    /// Ring files that could not be read, with the reason; none of their records is in the
    /// output.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Packets written to the output.
    pub packets: u64,
    /// Records whose place was lost (a resynchronisation over more than one record).
    pub torn: u64,
    /// Records at a known place that failed their check (CRC over header and bytes, or a
    /// damaged header between two valid records): skipped, never written.
    pub corrupt: u64,
    /// Records overwritten by a running sensor between scan and copy.
    pub lost_overwritten: u64,
    /// Records outside --since/--until.
    pub out_of_range: u64,
    /// Records the filter rejected.
    pub filtered_out: u64,
    /// Records of another link type than the output's (a PCAP has one).
    pub link_skipped: u64,
    /// Whether a sensor held a ring's writer lock (the rings were read live).
    pub live: bool,
    pub output: PathBuf,
}

/// Library form of the command.
#[derive(Clone, Debug, Default)]
pub struct RecoverOptions {
    pub state_dir: PathBuf,
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub filter: Option<String>,
    pub ts_res: TsRes,
    pub output: PathBuf,
}

/// The ring files of a state directory, sorted by shard number.
pub fn ring_files(state: &StateDir) -> anyhow::Result<Vec<PathBuf>> {
    let dir = state.ring_dir();
    let rd = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("shard-")
            .and_then(|s| s.strip_suffix(".ring"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// A compiled tcpdump expression for one link type.
pub struct BpfFilter {
    prog: pcap::BpfProgram,
}

impl BpfFilter {
    /// Compiles `expr` for LINKTYPE_ `link`; the error is libpcap's message.
    pub fn compile(expr: &str, link: u16) -> Result<BpfFilter, String> {
        let cap = pcap::Capture::dead(pcap::Linktype(i32::from(link)))
            .map_err(|e| format!("libpcap: {e}"))?;
        let prog = cap
            .compile(expr, true)
            .map_err(|e| format!("bad filter '{expr}': {e}"))?;
        Ok(BpfFilter { prog })
    }

    pub fn matches(&self, frame: &[u8]) -> bool {
        self.prog.filter(frame)
    }
}

/// Recovers the rings of `opts.state_dir` into `opts.output`.
pub fn recover(opts: &RecoverOptions) -> anyhow::Result<RecoverReport> {
    let state = StateDir::existing(&opts.state_dir);
    let files = ring_files(&state)?;
    if files.is_empty() {
        bail!(
            "{}: no ring files (shard-<n>.ring) to recover from",
            state.ring_dir().display()
        );
    }
    let mut rep = RecoverReport {
        rings: files.len(),
        output: opts.output.clone(),
        ..RecoverReport::default()
    };
    let since = opts.since_ns.unwrap_or(0);
    let until = opts.until_ns.unwrap_or(u64::MAX);
    if since > until {
        bail!("--since is after --until");
    }
    // Pass 1: every valid header, per ring, sorted by time.
    let mut readers = Vec::new();
    let mut lists: Vec<Vec<(u64, u64, u16, RecordPos)>> = Vec::new();
    let mut link_counts: Vec<(u16, u64)> = Vec::new();
    for f in &files {
        let r = match RingReader::open_readonly(f) {
            Ok(r) => r,
            Err(e) => {
                rep.unreadable.push((f.clone(), e.reason()));
                continue;
            }
        };
        if RingReader::is_locked_by_writer(f) {
            rep.live = true;
        }
        let mut list = Vec::new();
        let mut oor = 0u64;
        let st = r.scan_headers(|m: &RecordMeta, at| {
            if m.ts_ns < since || m.ts_ns > until {
                oor += 1;
                return;
            }
            list.push((m.ts_ns, m.seq, m.link, at));
        });
        rep.torn = rep.torn.saturating_add(st.torn);
        rep.corrupt = rep.corrupt.saturating_add(st.corrupt);
        rep.lost_overwritten = rep.lost_overwritten.saturating_add(st.lost_overwritten);
        rep.out_of_range += oor;
        rep.per_ring.push((f.clone(), st.copied));
        list.sort_by_key(|&(ts, seq, _, _)| (ts, seq));
        for &(_, _, l, _) in &list {
            match link_counts.iter_mut().find(|(x, _)| *x == l) {
                Some((_, n)) => *n += 1,
                None => link_counts.push((l, 1)),
            }
        }
        readers.push(r);
        lists.push(list);
    }
    if readers.is_empty() {
        let why: Vec<String> = rep
            .unreadable
            .iter()
            .map(|(p, r)| format!("{}: {r}", p.display()))
            .collect();
        bail!("no readable ring: {}", why.join("; "));
    }
    link_counts.sort_by_key(|&(l, n)| (std::cmp::Reverse(n), l));
    // Ethernet for an empty result: the file is still a valid (empty) PCAP.
    let link = link_counts.first().map_or(1, |&(l, _)| l);
    let filter = match &opts.filter {
        Some(expr) => Some(BpfFilter::compile(expr, link).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let snaplen = readers
        .iter()
        .map(|r| r.info().snaplen)
        .max()
        .unwrap_or(65_535)
        .max(65_535);
    let cfg = FileConfig {
        ts_res: opts.ts_res,
        ..FileConfig::default()
    };
    // The output must not be replaced silently: recover writes exactly the named file.
    if opts.output.exists() {
        bail!("{}: output file exists", opts.output.display());
    }
    let mut w = PcapZstWriter::create(&opts.output, link, snaplen, cfg)
        .with_context(|| format!("creating {}", opts.output.display()))?;
    // Pass 2: k-way merge by (ts, shard, seq).
    let mut heap = BinaryHeap::new();
    let mut next = vec![0usize; lists.len()];
    for (i, l) in lists.iter().enumerate() {
        if let Some(&(ts, seq, _, _)) = l.first() {
            heap.push(std::cmp::Reverse((ts, i, seq)));
        }
    }
    let mut buf = Vec::with_capacity(65_536);
    while let Some(std::cmp::Reverse((_, i, _))) = heap.pop() {
        let (_, _, l, at) = lists[i][next[i]];
        next[i] += 1;
        if let Some(&(ts, seq, _, _)) = lists[i].get(next[i]) {
            heap.push(std::cmp::Reverse((ts, i, seq)));
        }
        if l != link {
            rep.link_skipped += 1;
            continue;
        }
        buf.clear();
        let m = match readers[i].read_at(at, &mut buf) {
            Ok(m) => m,
            Err(ReadMiss::Overwritten) => {
                rep.lost_overwritten += 1;
                continue;
            }
            Err(ReadMiss::Corrupt) => {
                rep.corrupt += 1;
                continue;
            }
        };
        if let Some(f) = &filter {
            if !f.matches(&buf) {
                rep.filtered_out += 1;
                continue;
            }
        }
        w.write(m.ts_ns, m.orig_len, &buf)
            .with_context(|| format!("writing {}", opts.output.display()))?;
    }
    rep.packets = w.packets();
    let fin = w
        .finish()
        .with_context(|| format!("writing {}", opts.output.display()))?;
    rep.output = fin.path;
    Ok(rep)
}

/// The command's exit code for a report: 0 when every ring was read, 1 when some ring was
/// unreadable (the others were recovered). An `Err` from [`recover`] is 2.
pub fn exit_code(rep: &RecoverReport) -> u8 {
    if rep.unreadable.is_empty() {
        0
    } else {
        1
    }
}

/// One line per unreadable ring, for stderr before the summary.
pub fn warnings(rep: &RecoverReport) -> Vec<String> {
    rep.unreadable
        .iter()
        .map(|(p, why)| {
            format!(
                "streamml-sensor: warning: {}: unreadable ring, skipped: {why}",
                p.display()
            )
        })
        .collect()
}

/// The one-paragraph summary printed at the end.
pub fn summary(rep: &RecoverReport) -> String {
    let rings: Vec<String> = rep
        .per_ring
        .iter()
        .map(|(p, n)| {
            format!(
                "{}: {n}",
                p.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            )
        })
        .collect();
    let unreadable = if rep.unreadable.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = rep
            .unreadable
            .iter()
            .map(|(p, _)| {
                p.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            })
            .collect();
        format!(" ({})", names.join(", "))
    };
    format!(
        "recovered {} packets to {} from {} of {} ring(s) ({}){}; rings_unreadable {}{}; skipped: {} corrupt, {} torn, {} overwritten while reading, {} outside the time range, {} filtered out, {} of another link type",
        rep.packets,
        rep.output.display(),
        rep.per_ring.len(),
        rep.rings,
        rings.join(", "),
        if rep.live { "; a running sensor holds the rings (read live)" } else { "" },
        rep.unreadable.len(),
        unreadable,
        rep.corrupt,
        rep.torn,
        rep.lost_overwritten,
        rep.out_of_range,
        rep.filtered_out,
        rep.link_skipped,
    )
}
