//! Helpers shared by the integration tests (`mod common;`): the test captures, reading
//! PCAP and PCAP+zstd independently of the sensor's own reader, tshark as the oracle,
//! the alert log, and file systems the tests mount themselves.
#![allow(dead_code)] // each test crate uses its own part

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use streamml_sensor::evidence::Alert;

/// tests/data/pcaps, or `STREAMML_PCAPS`.
pub fn pcaps_dir() -> PathBuf {
    match std::env::var_os("STREAMML_PCAPS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps"),
    }
}

/// Every capture file under the pcaps folder (with `malformed/` or without), sorted.
pub fn captures(with_malformed: bool) -> Vec<PathBuf> {
    fn walk(d: &Path, with_malformed: bool, out: &mut Vec<PathBuf>) {
        let mut es: Vec<_> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().path())
            .collect();
        es.sort();
        for p in es {
            if p.is_dir() {
                if with_malformed || p.file_name().unwrap() != "malformed" {
                    walk(&p, with_malformed, out);
                }
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng" | "cap")
            ) {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&pcaps_dir(), with_malformed, &mut v);
    assert!(
        v.len() >= 60,
        "{} captures in {}",
        v.len(),
        pcaps_dir().display()
    );
    v
}

/// One packet of a PCAP file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkt {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Frames of a PCAP byte stream and its link type (the pcap-file crate: independent of
/// the sensor's reader).
pub fn read_pcap(bytes: &[u8]) -> (u32, Vec<Pkt>) {
    let mut r = pcap_file::pcap::PcapReader::new(bytes).expect("pcap header");
    let link = u32::from(r.header().datalink);
    let mut v = Vec::new();
    let nanos = r.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
    // Raw records: pcap-file's checked packets refuse orig_len > snaplen, which is what
    // a file cut to a snaplen is.
    while let Some(p) = r.next_raw_packet() {
        let p = p.expect("pcap packet");
        let frac = u64::from(p.ts_frac) * if nanos { 1 } else { 1000 };
        v.push(Pkt {
            ts_ns: u64::from(p.ts_sec) * 1_000_000_000 + frac,
            orig_len: p.orig_len,
            data: p.data.into_owned(),
        });
    }
    (link, v)
}

/// Frames of a test capture, by its path under the pcaps folder.
pub fn frames(rel: &str) -> Vec<Pkt> {
    let p = pcaps_dir().join(rel);
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    read_pcap(&b).1
}

/// An evidence file (PCAP inside zstd), decompressed with the zstd crate.
pub fn read_pcap_zst(path: &Path) -> (u32, Vec<Pkt>) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d = zstd::stream::read::Decoder::new(f).unwrap();
    let mut b = Vec::new();
    d.read_to_end(&mut b)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    read_pcap(&b)
}

/// `zstd -dc FILE | tshark -r -`: (packets tshark read, stderr of both without tshark's
/// "running as root" notice). Panics if either command fails.
pub fn tshark_count(path: &Path) -> (u64, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; zstd -q -dc \"$1\" | tshark -r - -T fields -e frame.number")
        .arg("bash")
        .arg(path)
        .output()
        .expect("bash, zstd and tshark are installed (scripts/deps.sh)");
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("Running as user \"root\""))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "zstd | tshark failed on {}: {stderr}",
        path.display()
    );
    (
        String::from_utf8_lossy(&out.stdout).lines().count() as u64,
        stderr,
    )
}

/// [`tshark_count`] that also fails on any warning of either command.
pub fn tshark_count_clean(path: &Path) -> u64 {
    let (n, stderr) = tshark_count(path);
    assert!(
        stderr.is_empty(),
        "zstd | tshark on {}: {stderr}",
        path.display()
    );
    n
}

/// The alerts of an alert log, every line whole.
pub fn alerts(alerts_jsonl: &Path) -> Vec<Alert> {
    let text = std::fs::read_to_string(alerts_jsonl).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "partial last line in {}",
        alerts_jsonl.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad alert line {l}: {e}")))
        .collect()
}

/// A file system mounted by a test, unmounted on drop (also when the test fails).
pub struct Mount(pub PathBuf);

impl Mount {
    /// A tmpfs of `size` (e.g. "4m") at `at` (the tests run as root).
    pub fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs (the tests run as root)");
        Mount(at.to_path_buf())
    }

    /// `at` read-only, bind-mounted onto itself.
    pub fn readonly_bind(at: &Path) -> Mount {
        let st = Command::new("mount")
            .arg("--bind")
            .arg(at)
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount --bind");
        let m = Mount(at.to_path_buf());
        m.remount("bind,ro");
        m
    }

    /// `mount -o remount,OPT`.
    pub fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opt}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// xorshift64* seeded through splitmix64 (nearby seeds give unrelated streams): small,
/// seeded, good enough to pick bytes. The seeded mutation tests of frames, captures,
/// ring files and configuration files share it.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}
