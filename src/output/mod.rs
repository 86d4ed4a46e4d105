//! Sorted output with bounded memory: records (a sort key and a formatted line) are
//! buffered per shard, spilled to anonymous temporary files as sorted runs when the buffer
//! passes its limit, and merged at the end. The output order is therefore a total order
//! that does not depend on the number of shards or on thread timing, and memory stays
//! bounded however many flows a capture has.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

pub mod file;
pub mod plot;

pub use file::{check_output, OutputError, OutputFile};

/// Buffers `(key, line)` records; spills sorted runs to disk past `limit_bytes`.
pub struct RunSorter {
    buf: Vec<u8>,
    /// Per record: the first 8 key bytes as a big-endian integer (most comparisons end
    /// there, without touching the record) and the record's offset in `buf`.
    idx: Vec<(u64, u32)>,
    limit_bytes: usize,
    spill_dir: PathBuf,
    runs: Vec<File>,
    records: u64,
}

fn rec_at(buf: &[u8], off: u32) -> (&[u8], &[u8]) {
    let o = off as usize;
    let kl = u16::from_le_bytes([buf[o], buf[o + 1]]) as usize;
    let key = &buf[o + 2..o + 2 + kl];
    let p = o + 2 + kl;
    let ll = u32::from_le_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]) as usize;
    (key, &buf[p + 4..p + 4 + ll])
}

/// The first 8 bytes of a key, big-endian, zero-padded: orders like the key's prefix.
fn key_prefix(key: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = key.len().min(8);
    p[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(p)
}

fn cmp_rec(a: (&[u8], &[u8]), b: (&[u8], &[u8])) -> Ordering {
    a.0.cmp(b.0).then_with(|| a.1.cmp(b.1))
}

impl RunSorter {
    /// `limit_bytes`: buffered bytes before a run is spilled to an anonymous file in
    /// `spill_dir`.
    pub fn new(limit_bytes: usize, spill_dir: PathBuf) -> Self {
        RunSorter {
            buf: Vec::new(),
            idx: Vec::new(),
            limit_bytes: limit_bytes.clamp(4096, u32::MAX as usize / 2),
            spill_dir,
            runs: Vec::new(),
            records: 0,
        }
    }

    /// Adds one record. Keys are compared bytewise; equal keys are ordered by line.
    pub fn push(&mut self, key: &[u8], line: &[u8]) -> io::Result<()> {
        let key = &key[..key.len().min(u16::MAX as usize)];
        self.idx.push((key_prefix(key), self.buf.len() as u32));
        self.buf
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(line.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(line);
        self.records += 1;
        if self.buf.len() >= self.limit_bytes {
            self.spill()?;
        }
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Number of runs written to disk so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    fn sort_mem(&mut self) {
        let buf = &self.buf;
        self.idx.sort_unstable_by(|&(pa, a), &(pb, b)| {
            pa.cmp(&pb)
                .then_with(|| cmp_rec(rec_at(buf, a), rec_at(buf, b)))
        });
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.idx.is_empty() {
            return Ok(());
        }
        self.sort_mem();
        let f = tempfile::tempfile_in(&self.spill_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating a sort run in {}: {e}", self.spill_dir.display()),
            )
        })?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        for &(_, o) in &self.idx {
            let (k, l) = rec_at(&self.buf, o);
            w.write_all(&(k.len() as u16).to_le_bytes())?;
            w.write_all(k)?;
            w.write_all(&(l.len() as u32).to_le_bytes())?;
            w.write_all(l)?;
        }
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        self.runs.push(f);
        self.buf.clear();
        self.idx.clear();
        Ok(())
    }
}

enum Source {
    Mem {
        buf: Vec<u8>,
        idx: Vec<(u64, u32)>,
        pos: usize,
    },
    File(BufReader<File>),
}

struct Head {
    key: Vec<u8>,
    line: Vec<u8>,
    src: usize,
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the smallest first.
        cmp_rec((&o.key, &o.line), (&self.key, &self.line)).then_with(|| o.src.cmp(&self.src))
    }
}

fn next_from(src: &mut Source, key: &mut Vec<u8>, line: &mut Vec<u8>) -> io::Result<bool> {
    match src {
        Source::Mem { buf, idx, pos } => {
            if *pos >= idx.len() {
                return Ok(false);
            }
            let (k, l) = rec_at(buf, idx[*pos].1);
            *pos += 1;
            key.clear();
            key.extend_from_slice(k);
            line.clear();
            line.extend_from_slice(l);
            Ok(true)
        }
        Source::File(r) => {
            let mut kl = [0u8; 2];
            match r.read_exact(&mut kl) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            key.resize(u16::from_le_bytes(kl) as usize, 0);
            r.read_exact(key)?;
            let mut ll = [0u8; 4];
            r.read_exact(&mut ll)?;
            line.resize(u32::from_le_bytes(ll) as usize, 0);
            r.read_exact(line)?;
            Ok(true)
        }
    }
}

/// Merges the records of all sorters in (key, line) order, calling `emit(index, line)`
/// with a 0-based running index.
pub fn merge(
    sorters: Vec<RunSorter>,
    mut emit: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut sources: Vec<Source> = Vec::new();
    let mut sorters = sorters;
    // Each sorter's in-memory part is sorted on its own thread (one per shard, at the
    // end of a run: the cores are otherwise idle).
    if sorters.len() > 1 {
        std::thread::scope(|sc| {
            for s in sorters.iter_mut() {
                sc.spawn(move || s.sort_mem());
            }
        });
    } else {
        for s in sorters.iter_mut() {
            s.sort_mem();
        }
    }
    for mut s in sorters {
        for f in s.runs.drain(..) {
            sources.push(Source::File(BufReader::with_capacity(1 << 18, f)));
        }
        sources.push(Source::Mem {
            buf: std::mem::take(&mut s.buf),
            idx: std::mem::take(&mut s.idx),
            pos: 0,
        });
    }
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (i, src) in sources.iter_mut().enumerate() {
        let (mut k, mut l) = (Vec::new(), Vec::new());
        if next_from(src, &mut k, &mut l)? {
            heap.push(Head {
                key: k,
                line: l,
                src: i,
            });
        }
    }
    let mut n = 0u64;
    while let Some(mut h) = heap.pop() {
        emit(n, &h.line)?;
        n += 1;
        if next_from(&mut sources[h.src], &mut h.key, &mut h.line)? {
            heap.push(h);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(x: &mut u64) -> u64 {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *x >> 33
    }

    #[test]
    fn merge_is_sorted_and_independent_of_partitioning() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 7u64;
        let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000)
            .map(|i| {
                let k = (lcg(&mut seed) % 5000).to_be_bytes().to_vec();
                (k, format!("line-{i}").into_bytes())
            })
            .collect();
        let mut outs = vec![];
        for parts in [1usize, 3, 4] {
            // Small limit: forces many spilled runs.
            let mut sorters: Vec<RunSorter> = (0..parts)
                .map(|_| RunSorter::new(4096, dir.path().to_path_buf()))
                .collect();
            for (i, (k, l)) in recs.iter().enumerate() {
                sorters[i % parts].push(k, l).unwrap();
            }
            assert!(sorters.iter().any(|s| s.spilled_runs() > 1));
            let mut out: Vec<Vec<u8>> = vec![];
            let n = merge(sorters, |i, l| {
                assert_eq!(i as usize, out.len());
                out.push(l.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(n, 20_000);
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
        let mut expect = recs.clone();
        expect.sort();
        let expect: Vec<Vec<u8>> = expect.into_iter().map(|x| x.1).collect();
        assert_eq!(outs[0], expect);
    }
}
