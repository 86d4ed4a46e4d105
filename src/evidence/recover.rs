//! `streamml-sensor evidence recover`: dumps what the shard rings of a state directory
//! still hold — after a crash or `kill -9`, or on an analyst's request while the sensor
//! runs — as one PCAP inside zstd, in time order across shards. Every record is validated
//! (sequence, keyed header check, lengths); invalid (torn) ones are skipped and counted.
//!
//! `--filter` takes a tcpdump expression, compiled by libpcap (`pcap_compile` on a dead
//! handle of the ring's link type) and run with `pcap_offline_filter` on each record: the
//! analyst gets exactly tcpdump's semantics, and a bad expression is libpcap's own error.

use std::collections::BinaryHeap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::file::{FileConfig, PcapZstWriter, TsRes};
use super::ring::{RecordMeta, RecordPos, RingReader};
use super::statedir::StateDir;

/// What a recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverReport {
    pub rings: usize,
    /// Valid records per ring file.
    pub per_ring: Vec<(PathBuf, u64)>,
    /// Packets written to the output.
    pub packets: u64,
    /// Invalid (torn or corrupt) records skipped.
    pub torn: u64,
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
        if RingReader::is_locked_by_writer(f) {
            rep.live = true;
        }
        let r = RingReader::open_readonly(f).map_err(anyhow::Error::from)?;
        let mut list = Vec::new();
        let mut oor = 0u64;
        let st = r.scan_headers(|m: &RecordMeta, at| {
            if m.ts_ns < since || m.ts_ns > until {
                oor += 1;
                return;
            }
            list.push((m.ts_ns, m.seq, m.link, at));
        });
        rep.torn += st.torn;
        rep.lost_overwritten += st.lost_overwritten;
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
        let Some(m) = readers[i].read_at(at, &mut buf) else {
            rep.lost_overwritten += 1;
            continue;
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
    format!(
        "recovered {} packets to {} from {} ring(s) ({}){}; skipped: {} torn/invalid, {} overwritten while reading, {} outside the time range, {} filtered out, {} of another link type",
        rep.packets,
        rep.output.display(),
        rep.rings,
        rings.join(", "),
        if rep.live { "; a running sensor holds the rings (read live)" } else { "" },
        rep.torn,
        rep.lost_overwritten,
        rep.out_of_range,
        rep.filtered_out,
        rep.link_skipped,
    )
}
