//! Bad input never destroys anything: the binary run as a careless or hostile user would.
//! Outputs: devices, FIFOs, directories, links and the input itself are refused and left
//! as they were; two runs writing one file leave one run's whole file; an unusable output
//! fails before the first packet. Evidence rings: `evidence recover` recovers every
//! readable ring and names each unreadable one (exit 1; none readable: exit 2), and a
//! damaged record is counted and never written as a packet.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running the sensor")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A refused run: exit 2, one line, naming `needle`.
fn refused(o: &Output, needle: &str) {
    let e = err(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains(needle), "{e} lacks {needle:?}");
}

fn cap(rel: &str) -> String {
    common::pcaps_dir().join(rel).to_string_lossy().into_owned()
}

#[test]
fn device_fifo_directory_and_link_outputs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let input = cap("basic/http-get.pcap");
    // a copy of /dev/null (root makes one; the real one is not put at risk)
    let dev = d.path().join("null");
    let st = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod (the tests run as root)");
    let fifo = d.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let target = d.path().join("real.csv");
    std::fs::write(&target, "keep me\n").unwrap();
    let link = d.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&dev, "is a character device; outputs must be regular files"),
        (&fifo, "is a FIFO; outputs must be regular files"),
        (d.path(), "is a directory; outputs must be regular files"),
        (&link, "is a symbolic link"),
    ];
    for (out, why) in cases {
        let o = out.to_str().unwrap();
        refused(&run(&["flows", &input, "-o", o]), why);
        refused(&run(&["synth", "--minutes", "0.1", "-o", o]), why);
        let state = d.path().join("state");
        refused(
            &run(&[
                "replay",
                &input,
                "--state-dir",
                state.to_str().unwrap(),
                "--flows",
                o,
            ]),
            why,
        );
        refused(
            &run(&[
                "replay",
                &input,
                "--state-dir",
                state.to_str().unwrap(),
                "--stats-json",
                o,
            ]),
            why,
        );
    }
    // all still what they were
    assert!(std::fs::metadata(&dev)
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
}

#[test]
fn the_input_is_never_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("in.pcap");
    std::fs::copy(cap("basic/443-curl.pcap"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let c = copy.to_str().unwrap();
    refused(&run(&["flows", c, "-o", c]), "is the input");
    let state = d.path().join("s");
    let s = state.to_str().unwrap();
    refused(
        &run(&["replay", c, "--state-dir", s, "--flows", c]),
        "is the input",
    );
    refused(
        &run(&["replay", c, "--state-dir", s, "--stats-json", c]),
        "is the input",
    );
    // the same file under another name (a hard link) is the input too
    let hard = d.path().join("hard.pcap");
    std::fs::hard_link(&copy, &hard).unwrap();
    refused(
        &run(&["flows", c, "-o", hard.to_str().unwrap()]),
        "is the input",
    );
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}

/// Two runs writing the same output at once: the file is one run's whole output (every
/// row of it, nothing torn), and no temporary is left beside it.
#[test]
fn concurrent_runs_to_one_output_leave_one_whole_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("same.csv");
    let o = out.to_str().unwrap();
    let (a, b) = (cap("large/1kxun.pcap"), cap("large/echo-connections.pcap"));
    let want_a = {
        let p = d.path().join("a.csv");
        assert!(run(&["flows", &a, "-o", p.to_str().unwrap()])
            .status
            .success());
        std::fs::read(p).unwrap()
    };
    let want_b = {
        let p = d.path().join("b.csv");
        assert!(run(&["flows", &b, "-o", p.to_str().unwrap()])
            .status
            .success());
        std::fs::read(p).unwrap()
    };
    for round in 0..4 {
        let ca = Command::new(BIN)
            .args(["flows", &a, "-o", o])
            .spawn()
            .unwrap();
        let cb = Command::new(BIN)
            .args(["flows", &b, "-o", o])
            .spawn()
            .unwrap();
        let (ra, rb) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        assert!(ra.status.success() && rb.status.success(), "round {round}");
        let got = std::fs::read(&out).unwrap();
        assert!(
            got == want_a || got == want_b,
            "round {round}: a torn or mixed file"
        );
        let extra: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "same.csv" && n != "a.csv" && n != "b.csv")
            .collect();
        assert!(extra.is_empty(), "left behind: {extra:?}");
    }
}

/// An output that cannot be written fails at once, before the capture is read: no state
/// written, no alert logged.
#[test]
fn unusable_outputs_fail_before_the_first_packet() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let s = state.to_str().unwrap();
    let input = cap("large/1kxun.pcap");
    for flag in ["--flows", "--stats-json"] {
        let t = std::time::Instant::now();
        let o = run(&[
            "replay",
            &input,
            "--state-dir",
            s,
            flag,
            "/missing/dir/f.csv",
        ]);
        refused(&o, "directory /missing/dir does not exist");
        assert!(
            err(&o).starts_with(&format!("streamml-sensor: {flag}: ")),
            "{}",
            err(&o)
        );
        assert!(
            !state.join("alerts.jsonl").exists()
                || std::fs::read(state.join("alerts.jsonl"))
                    .unwrap()
                    .is_empty(),
            "the capture was processed"
        );
        assert!(t.elapsed().as_secs() < 5);
    }
    refused(
        &run(&["flows", &input, "-o", "/missing/dir/f.csv"]),
        "directory /missing/dir does not exist",
    );
    refused(
        &run(&["synth", "--minutes", "1", "-o", "/missing/dir/x.pcap"]),
        "directory /missing/dir does not exist",
    );
}

/// A run killed part-way leaves neither its output nor a temporary.
#[test]
fn a_killed_run_leaves_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.pcap");
    assert!(
        run(&["synth", "--preset", "bench", "-o", big.to_str().unwrap()])
            .status
            .success()
    );
    let out = d.path().join("flows.csv");
    let mut c = Command::new(BIN)
        .args(["flows", big.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    c.kill().unwrap();
    c.wait().unwrap();
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["big.pcap"], "left behind after SIGKILL");
}

// ---------------------------------------------------------------------------------------
// Damaged evidence rings: `evidence recover` recovers every readable ring, reports each
// unreadable one, and never writes a damaged record as a packet.

use common::{frames, read_pcap_zst, Pkt};

/// `replay` of a test capture into a fresh state directory (the sensor writes the ring);
/// returns the ring file and the capture's frames as the ring holds them (cut to the
/// default snaplen, 1514).
fn replayed_ring(d: &Path, rel: &str) -> (std::path::PathBuf, Vec<Pkt>) {
    let state = d.join(format!("state-{}", rel.replace('/', "-")));
    let o = run(&[
        "replay",
        &cap(rel),
        "--state-dir",
        state.to_str().unwrap(),
        "--ring-mib",
        "16",
    ]);
    assert!(o.status.success(), "replay {rel}: {}", err(&o));
    let want = frames(rel)
        .into_iter()
        .map(|p| Pkt {
            ts_ns: p.ts_ns,
            orig_len: p.orig_len,
            data: p.data[..p.data.len().min(1514)].to_vec(),
        })
        .collect();
    (state.join("ring").join("shard-0.ring"), want)
}

fn recover(state: &Path, out: &Path) -> Output {
    Command::new(BIN)
        .args(["evidence", "recover", "--state-dir"])
        .arg(state)
        .arg("-o")
        .arg(out)
        .output()
        .expect("running the sensor")
}

/// Packets in the order recover writes them for one ring: by time, then by sequence.
fn by_time(mut v: Vec<Pkt>) -> Vec<Pkt> {
    v.sort_by_key(|p| p.ts_ns); // stable: capture order (= ring seq) among equal times
    v
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Offsets (in the file) of the records of a ring that never wrapped, in seq order.
fn record_offsets(ring: &[u8]) -> Vec<usize> {
    let header_len = u32_at(ring, 12) as usize;
    let head = u64::from_le_bytes(ring[128..136].try_into().unwrap()) as usize;
    let mut v = Vec::new();
    let mut pos = 0usize;
    while pos < head {
        v.push(header_len + pos);
        let cap = u32_at(ring, header_len + pos + 28) as usize;
        pos += (40 + cap + 7) & !7;
    }
    v
}

/// One bad ring out of two: the other is recovered whole, the bad one is named with the
/// reason on one warning line, the summary counts it, and the exit code is 1 (a damaged
/// input, like a capture cut short in `flows`); both bad: exit 2 and no output. Every kind
/// of unreadable ring: bad magic, another layout version, truncated (shorter than its
/// header says, or than a header), a flipped bit in the file header, longer than its
/// header says.
#[test]
fn one_bad_ring_out_of_two_still_recovers_the_other() {
    let d = tempfile::tempdir().unwrap();
    let (good, good_pkts) = replayed_ring(d.path(), "large/1kxun.pcap");
    let (other, other_pkts) = replayed_ring(d.path(), "large/ps_vue.pcap");
    let state = good.parent().unwrap().parent().unwrap().to_path_buf();
    let bad = state.join("ring").join("shard-1.ring");
    std::fs::rename(&other, &bad).unwrap();
    let intact = std::fs::read(&bad).unwrap();
    // Both readable: every packet of both captures.
    let out = d.path().join("both.pcap.zst");
    let o = recover(&state, &out);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains("rings_unreadable 0;"), "{}", err(&o));
    let (_, pk) = read_pcap_zst(&out);
    assert_eq!(pk.len(), good_pkts.len() + other_pkts.len());
    let mut damaged_version = intact.clone();
    damaged_version[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut magic = intact.clone();
    magic[..8].copy_from_slice(b"PCAPNG\0\0");
    let mut flipped = intact.clone();
    flipped[24] ^= 0x10; // data_len
    let mut longer = intact.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("magic", magic, "not an evidence ring file (bad magic)"),
        (
            "version",
            damaged_version,
            "ring layout version 1, this build reads version 2 only",
        ),
        (
            "truncated",
            intact[..intact.len() - 8192].to_vec(),
            &format!(
                "truncated: file is {} bytes, its header says {}",
                intact.len() - 8192,
                intact.len()
            ),
        ),
        (
            "short",
            intact[..1000].to_vec(),
            "truncated: file is 1000 bytes, shorter than its 4096-byte header",
        ),
        (
            "flipped",
            flipped,
            "damaged file header (its CRC-32C does not match)",
        ),
        (
            "longer",
            longer,
            &format!(
                "file is {} bytes, its header says {}",
                intact.len() + 4096,
                intact.len()
            ),
        ),
    ];
    for (name, bytes, why) in &cases {
        std::fs::write(&bad, bytes).unwrap();
        let out = d.path().join(format!("{name}.pcap.zst"));
        let o = recover(&state, &out);
        let e = err(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        let lines: Vec<&str> = e.trim_end().lines().collect();
        assert_eq!(lines.len(), 2, "{name}: {e}");
        assert_eq!(
            lines[0],
            format!(
                "streamml-sensor: warning: {}: unreadable ring, skipped: {why}",
                bad.display()
            ),
            "{name}"
        );
        assert!(
            lines[1].starts_with(&format!(
                "recovered {} packets to {} from 1 of 2 ring(s) (shard-0.ring: {}); rings_unreadable 1 (shard-1.ring);",
                good_pkts.len(),
                out.display(),
                good_pkts.len()
            )),
            "{name}: {e}"
        );
        // The intact ring's packets, every one, byte for byte.
        let (_, pk) = read_pcap_zst(&out);
        assert_eq!(pk, by_time(good_pkts.clone()), "{name}");
    }
    // Nothing readable: exit 2, one line naming both, no output.
    std::fs::write(&good, b"not a ring").unwrap();
    std::fs::write(&bad, &cases[4].1).unwrap(); // the flipped header bit
    let out = d.path().join("none.pcap.zst");
    let o = recover(&state, &out);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("no readable ring")
            && e.contains("shard-0.ring: not an evidence ring file (bad magic)")
            && e.contains("shard-1.ring: damaged file header"),
        "{e}"
    );
    assert!(!out.exists());
}

/// Bits flipped in the headers and the bytes of records of a ring the sensor wrote
/// (`replay`): every damaged record is counted as corrupt and left out, every other one
/// is recovered, and every recovered packet equals its original byte for byte (none
/// differs). Each field of the record header is hit, and bytes anywhere in the packet.
#[test]
fn a_flipped_bit_in_a_ring_record_is_counted_and_not_recovered() {
    let d = tempfile::tempdir().unwrap();
    let (ring, want) = replayed_ring(d.path(), "large/1kxun.pcap");
    let state = ring.parent().unwrap().parent().unwrap().to_path_buf();
    let out = d.path().join("clean.pcap.zst");
    let o = recover(&state, &out);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(read_pcap_zst(&out).1, by_time(want.clone()));
    let mut bytes = std::fs::read(&ring).unwrap();
    let recs = record_offsets(&bytes);
    assert_eq!(recs.len(), want.len(), "one record per packet");
    // Every 5th record (never two neighbours), each field in turn: seq, ts, flow hash,
    // orig_len, cap_len, link, hcheck, check, then bytes at the start, middle and end.
    let spots = |i: usize, cap: usize| -> usize {
        match i % 11 {
            0 => 3,
            1 => 8 + 5,
            2 => 16 + 2,
            3 => 24,
            4 => 28,
            5 => 32,
            6 => 34 + 1,
            7 => 36 + 3,
            8 => 40,
            9 => 40 + cap / 2,
            _ => 40 + cap - 1,
        }
    };
    let mut damaged = std::collections::BTreeSet::new();
    for (k, i) in (2..recs.len()).step_by(5).enumerate() {
        let cap = u32_at(&bytes, recs[i] + 28) as usize;
        bytes[recs[i] + spots(k, cap)] ^= 1 << (k % 8);
        damaged.insert(i);
    }
    assert!(damaged.len() > 300);
    std::fs::write(&ring, &bytes).unwrap();
    let out = d.path().join("flipped.pcap.zst");
    let o = recover(&state, &out);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains(&format!("recovered {} packets", want.len() - damaged.len()))
            && e.contains(&format!("skipped: {} corrupt, 0 torn,", damaged.len())),
        "{e}"
    );
    let kept: Vec<Pkt> = want
        .iter()
        .enumerate()
        .filter(|(i, _)| !damaged.contains(i))
        .map(|(_, p)| p.clone())
        .collect();
    let (_, got) = read_pcap_zst(&out);
    let kept = by_time(kept);
    assert_eq!(got.len(), kept.len());
    let differing = got.iter().zip(&kept).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "recovered packets differ from the originals");
}

// ---------------------------------------------------------------------------------------
// Seeded mutation run over ring files (the ring counterpart of the frame mutation run in
// tests/wire_captures.rs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamml_sensor::capture::LinkType;
use streamml_sensor::evidence::recover::{exit_code, recover as recover_lib, RecoverOptions};
use streamml_sensor::evidence::ring::{End, RecordBuf, RingConfig, RingReader, Start};
use streamml_sensor::evidence::EvidenceRing;

/// xorshift64* (as in tests/wire_captures.rs): small, seeded, good enough to pick bytes.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A ring written by the library's writer from a real capture's frames, with unique
/// timestamps (`t0 + i µs`): its file bytes and every packet ever appended, by time.
fn written_ring(
    dir: &Path,
    name: &str,
    rel: &str,
    n: usize,
    t0: u64,
) -> (Vec<u8>, BTreeMap<u64, Pkt>) {
    let p = dir.join(name);
    let snaplen = 512usize;
    let mut ring = EvidenceRing::create(
        &p,
        &RingConfig {
            size_bytes: 64 * 1024,
            snaplen: snaplen as u32,
            shard: 0,
        },
    )
    .unwrap();
    let mut all = BTreeMap::new();
    for (i, f) in frames(rel).iter().cycle().take(n).enumerate() {
        let ts = t0 + i as u64 * 1000;
        ring.append(ts, f.orig_len, LinkType::Ethernet, i as u64, &f.data);
        let data = f.data[..f.data.len().min(snaplen)].to_vec();
        let orig_len = f.orig_len.max(data.len() as u32);
        all.insert(
            ts,
            Pkt {
                ts_ns: ts,
                orig_len,
                data,
            },
        );
    }
    drop(ring);
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    (b, all)
}

/// File offsets of the records between tail and head (following wrap markers).
fn live_records(b: &[u8]) -> Vec<usize> {
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let header_len = u32_at(b, 12) as u64;
    let d = u64_at(24);
    let (head, mut pos) = (u64_at(128), u64_at(144));
    let mut v = Vec::new();
    while pos < head {
        let phys = pos % d;
        let at = (header_len + phys) as usize;
        if u64_at(at) == u64::MAX {
            pos += d - phys;
            continue;
        }
        v.push(at);
        pos += (40 + u64::from(u32_at(b, at + 28)) + 7) & !7;
    }
    v
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    7,
    8,
    40,
    4096,
    65_536,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    u64::MAX - 7,
    u64::MAX,
];

/// One random mutation of the ring bytes `b` (in place). `recs`: record offsets of the
/// unmutated ring.
fn mutate_ring(rng: &mut XorShift, b: &mut Vec<u8>, recs: &[usize]) {
    let header_len = u32_at(b, 12) as usize;
    let len = b.len();
    // Aim at the file header, the index, the records' headers and the data area.
    let pick = |rng: &mut XorShift| -> usize {
        match rng.below(6) {
            0 => rng.below(160),
            1 => 4096 + rng.below(header_len - 4096),
            2 | 3 => recs[rng.below(recs.len())] + rng.below(40),
            _ => header_len + rng.below(len - header_len),
        }
    };
    let value = |rng: &mut XorShift, cur: u64| -> u64 {
        match rng.below(4) {
            0 => INTERESTING[rng.below(INTERESTING.len())],
            1 => rng.next(),
            2 => cur.wrapping_add(8 * (rng.below(5) as u64)).wrapping_sub(16),
            _ => cur ^ (1 << rng.below(64)),
        }
    };
    let set = |b: &mut Vec<u8>, at: usize, width: usize, v: u64| {
        if at + width <= b.len() {
            b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
    };
    let get = |b: &[u8], at: usize, width: usize| -> u64 {
        let mut x = [0u8; 8];
        if at + width <= b.len() {
            x[..width].copy_from_slice(&b[at..at + width]);
        }
        u64::from_le_bytes(x)
    };
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            return;
        }
        match rng.below(12) {
            0..=2 => {
                let at = pick(rng).min(b.len() - 1);
                b[at] ^= 1 << rng.below(8);
            }
            3 => {
                let at = pick(rng).min(b.len() - 1);
                b[at] = rng.next() as u8;
            }
            4 => {
                // Truncation: anywhere, a little, or into the header.
                let n = b.len();
                let to = match rng.below(3) {
                    0 => rng.below(n),
                    1 => n - 1 - rng.below(8192.min(n)),
                    _ => rng.below(4200.min(n)),
                };
                b.truncate(to);
            }
            5 => {
                let k = 1 + rng.below(8192);
                let fill = rng.below(2) == 0;
                for _ in 0..k {
                    b.push(if fill { rng.next() as u8 } else { 0 });
                }
            }
            6 | 7 => {
                // A file header field: version, header_len, file_len, data_len, snaplen,
                // shard, index_len, chunk_shift, salt, head, head_seq, tail,
                // overwritten_max_ts; then, half the time, a recomputed header CRC (a
                // header that lies consistently).
                let (at, w) = [
                    (8, 4),
                    (12, 4),
                    (16, 8),
                    (24, 8),
                    (32, 4),
                    (36, 4),
                    (40, 4),
                    (44, 4),
                    (48, 8),
                    (128, 8),
                    (136, 8),
                    (144, 8),
                    (152, 8),
                ][rng.below(13)];
                let v = value(rng, get(b, at, w));
                set(b, at, w, v);
                if rng.below(2) == 0 && b.len() >= 68 {
                    let c = crc32c::crc32c(&b[..64]);
                    b[64..68].copy_from_slice(&c.to_le_bytes());
                }
            }
            8 | 9 => {
                // A record header field: seq, ts, flow hash, orig_len, cap_len, link,
                // hcheck, check.
                let r = recs[rng.below(recs.len())];
                let (off, w) = [
                    (0, 8),
                    (8, 8),
                    (16, 8),
                    (24, 4),
                    (28, 4),
                    (32, 2),
                    (34, 2),
                    (36, 4),
                ][rng.below(8)];
                let v = value(rng, get(b, r + off, w));
                set(b, r + off, w, v);
            }
            10 => {
                // A stretch zeroed or overwritten with bytes from elsewhere (a lost page,
                // an older lap, a record duplicated).
                let at = pick(rng).min(b.len() - 1);
                let n = (1 + rng.below(4096)).min(b.len() - at);
                if rng.below(2) == 0 {
                    b[at..at + n].fill(0);
                } else {
                    let from = rng.below(b.len() - n + 1);
                    let chunk = b[from..from + n].to_vec();
                    b[at..at + n].copy_from_slice(&chunk);
                }
            }
            _ => {
                // An index entry {seq, pos, max_ts_before}.
                let e = 4096 + 32 * rng.below((header_len - 4096) / 32);
                let f = 8 * rng.below(3);
                let v = value(rng, get(b, e + f, 8));
                set(b, e + f, 8, v);
            }
        }
    }
}

/// Keeps the ring file of a failing case: the base ring's salt is random, so the seed alone
/// does not reproduce a case.
struct KeepOnPanic<'a>(&'a Path, u64, u64);

impl Drop for KeepOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!(
                "streamml-ring-mutation-seed{}-case{}.ring",
                self.1, self.2
            ));
            if std::fs::copy(self.0, &keep).is_ok() {
                eprintln!("the failing case's ring file: {}", keep.display());
            }
        }
    }
}

/// The kind of an unreadable ring's reason (`RingError::reason`).
fn reason_kind(why: &str) -> &'static str {
    [
        ("not an evidence ring file (bad magic)", "bad magic"),
        ("ring layout version ", "version"),
        ("truncated: ", "truncated"),
        ("damaged file header", "header CRC"),
        ("inconsistent header (", "geometry"),
        ("inconsistent head ", "head/tail"),
        ("file is ", "longer"),
    ]
    .iter()
    .find(|(p, _)| why.starts_with(p))
    .map_or("other", |&(_, k)| k)
}

/// Aborts the test process when a case runs longer than `limit`: a hang fails the run
/// instead of stalling it.
struct Watchdog {
    started_ms: Arc<AtomicU64>,
    case: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    t0: Instant,
}

impl Watchdog {
    fn spawn(limit: Duration, seed: u64) -> Watchdog {
        let w = Watchdog {
            started_ms: Arc::new(AtomicU64::new(u64::MAX)),
            case: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicBool::new(false)),
            t0: Instant::now(),
        };
        let (s, c, d, t0) = (w.started_ms.clone(), w.case.clone(), w.done.clone(), w.t0);
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let st = s.load(Ordering::Relaxed);
                let now = t0.elapsed().as_millis() as u64;
                if st != u64::MAX && now.saturating_sub(st) > limit.as_millis() as u64 {
                    eprintln!(
                        "ring mutation case {} (seed {seed}) still running after {limit:?}: a hang",
                        c.load(Ordering::Relaxed)
                    );
                    std::process::abort();
                }
            }
        });
        w
    }
    fn start(&self, case: u64) {
        self.case.store(case, Ordering::Relaxed);
        self.started_ms
            .store(self.t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn stop(&self) {
        self.started_ms.store(u64::MAX, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The binary on a state directory, killed if it runs longer than `limit`: (exit code,
/// stderr).
fn recover_bin_bounded(state: &Path, out: &Path, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let mut c = Command::new(BIN)
        .args(["evidence", "recover", "--state-dir"])
        .arg(state)
        .arg("-o")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let st = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            c.kill().unwrap();
            c.wait().unwrap();
            panic!("evidence recover still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut e = String::new();
    c.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    (st.code(), e)
}

/// Seeded mutations of a real ring file (written by the library's writer from a real
/// capture, wrapped several times): bit flips, byte sets, truncations, extensions, file
/// header fields set to extreme values (half of them with the header CRC recomputed, so
/// the geometry checks are reached), record header fields, zeroed or copied stretches,
/// index entries. A third of the cases also hold an intact second ring. Each mutated ring
/// is also read the live sensor's way (`copy_range` from a time, a sequence number and
/// the oldest record, through the index): no panic, no hang, no record that differs.
///
/// Every case runs `evidence recover`'s library entry point in-process — the function
/// `cmd/evidence.rs` calls, with the exit code it maps the result to (`exit_code`, or 2
/// for an error) — under `catch_unwind` and a watchdog (30 s per case aborts the run: a
/// hang). Every 40th case also runs the binary, whose exit code must be the same. In
/// both: no panic, no hang, exit codes 0/1/2 only; 1 exactly when a ring was unreadable
/// and another read; every recovered packet equals the packet appended with its
/// timestamp, byte for byte; an error leaves no output. Seeded (STREAMML_SEED), sized by
/// STREAMML_RING_MUTATIONS (default 10 000 cases, 250 of them through the binary). The
/// ring's salt is random, so a failing case's file is kept in the temp directory.
#[test]
fn mutated_rings_never_panic_hang_or_recover_a_damaged_packet() {
    let seed: u64 = std::env::var("STREAMML_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0006);
    let n: u64 = std::env::var("STREAMML_RING_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    // tmpfs when there is one: recover fsyncs its output.
    let d = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let (base, mut originals) = written_ring(d.path(), "a.ring", "large/1kxun.pcap", 600, 1 << 60);
    let (second, second_pkts) =
        written_ring(d.path(), "b.ring", "basic/443-curl.pcap", 40, 1 << 61);
    assert_eq!(live_records(&second).len(), 40, "the second ring holds all");
    originals.extend(second_pkts);
    let recs = live_records(&base);
    assert!(
        recs.len() > 50 && u64::from_le_bytes(base[144..152].try_into().unwrap()) > 0,
        "the base ring wrapped"
    );
    let state = d.path().join("state");
    let ring_dir = state.join("ring");
    std::fs::create_dir_all(&ring_dir).unwrap();
    let (r0, r1) = (ring_dir.join("shard-0.ring"), ring_dir.join("shard-1.ring"));
    let out = d.path().join("out.pcap.zst");
    let out_bin = d.path().join("out-bin.pcap.zst");
    let mut rng = XorShift::new(seed);
    let dog = Watchdog::spawn(Duration::from_secs(30), seed);
    let mut codes = [0u64; 3];
    let (mut with_corrupt, mut with_torn, mut via_binary) = (0u64, 0u64, 0u64);
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let mut buf = Vec::with_capacity(base.len() + 8192);
    for case in 0..n {
        buf.clear();
        buf.extend_from_slice(&base);
        mutate_ring(&mut rng, &mut buf, &recs);
        std::fs::write(&r0, &buf).unwrap();
        let _keep = KeepOnPanic(&r0, seed, case);
        let two = rng.below(3) == 0;
        if two {
            std::fs::write(&r1, &second).unwrap();
        } else {
            let _ = std::fs::remove_file(&r1);
        }
        let _ = std::fs::remove_file(&out);
        let opts = RecoverOptions {
            state_dir: state.clone(),
            output: out.clone(),
            ..RecoverOptions::default()
        };
        dog.start(case);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recover_lib(&opts)));
        dog.stop();
        let res = res.unwrap_or_else(|_| panic!("recover panicked: seed {seed} case {case}"));
        // The live sensor's path on the same file: copies that start from the index (a
        // time or a sequence number) instead of the tail.
        let t_lo = *originals.keys().next().unwrap();
        let (from_ts, from_seq) = (t_lo + 1000 * rng.below(700) as u64, rng.below(700) as u64);
        dog.start(case);
        let copied = std::panic::catch_unwind(|| {
            let mut got = Vec::new();
            if let Ok(rd) = RingReader::open_readonly(&r0) {
                let mut out = RecordBuf::new();
                for from in [Start::TsNs(from_ts), Start::Seq(from_seq), Start::Oldest] {
                    rd.copy_range(from, End::HEAD, |_| true, &mut out);
                    got.extend(
                        out.iter()
                            .map(|v| (v.ts_ns(), v.orig_len(), v.data.to_vec())),
                    );
                }
            }
            got
        });
        dog.stop();
        for (ts, orig_len, data) in
            copied.unwrap_or_else(|_| panic!("copy_range panicked: seed {seed} case {case}"))
        {
            let p = Pkt {
                ts_ns: ts,
                orig_len,
                data,
            };
            assert_eq!(
                originals.get(&ts),
                Some(&p),
                "seed {seed} case {case}: copy_range returned a record that differs"
            );
        }
        let code = match &res {
            Ok(rep) => {
                let code = exit_code(rep);
                assert_eq!(
                    code == 1,
                    !rep.unreadable.is_empty(),
                    "seed {seed} case {case}"
                );
                for (_, why) in &rep.unreadable {
                    *reasons.entry(reason_kind(why)).or_default() += 1;
                }
                assert!(code == 0 || two, "seed {seed} case {case}: 1 with one ring");
                with_corrupt += u64::from(rep.corrupt > 0);
                with_torn += u64::from(rep.torn > 0);
                let (_, pk) = read_pcap_zst(&out);
                assert_eq!(pk.len() as u64, rep.packets, "seed {seed} case {case}");
                for p in &pk {
                    assert_eq!(
                        originals.get(&p.ts_ns),
                        Some(p),
                        "seed {seed} case {case}: a recovered packet differs from the one appended"
                    );
                }
                if code == 1 {
                    // The mutated ring was unreadable: the intact one, whole.
                    assert_eq!(pk.len(), 40, "seed {seed} case {case}");
                }
                code
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(!msg.contains('\n'), "seed {seed} case {case}: {msg}");
                assert!(!out.exists(), "seed {seed} case {case}: output left");
                if let Some(r) = msg.strip_prefix("no readable ring: ") {
                    for one in r.split("; ") {
                        let why = one.split_once(".ring: ").map_or(one, |x| x.1);
                        *reasons.entry(reason_kind(why)).or_default() += 1;
                    }
                }
                2
            }
        };
        codes[code as usize] += 1;
        if case % 40 == 0 {
            via_binary += 1;
            let _ = std::fs::remove_file(&out_bin);
            let (bc, e) = recover_bin_bounded(&state, &out_bin, Duration::from_secs(30));
            assert_eq!(
                bc,
                Some(i32::from(code)),
                "seed {seed} case {case}: binary and library disagree: {e}"
            );
            assert!(
                !e.contains("panicked") && !e.contains("internal error"),
                "seed {seed} case {case}: {e}"
            );
            if let Ok(rep) = &res {
                assert!(
                    e.contains(&format!("recovered {} packets", rep.packets)),
                    "seed {seed} case {case}: {e}"
                );
            } else {
                assert_eq!(
                    e.trim_end().lines().count(),
                    1,
                    "seed {seed} case {case}: {e}"
                );
            }
        }
    }
    drop(dog);
    eprintln!(
        "seed {seed}: {n} mutated rings ({via_binary} through the binary): exit codes {codes:?}, \
         {with_corrupt} with corrupt records, {with_torn} with torn ones, unreadable: {reasons:?}"
    );
    // The mutations reach every outcome and every check of a ring file.
    assert!(codes.iter().all(|&c| c > 0), "exit codes {codes:?}");
    assert!(with_corrupt > n / 20 && with_torn > 0);
    for kind in [
        "bad magic",
        "version",
        "truncated",
        "header CRC",
        "geometry",
        "head/tail",
        "longer",
    ] {
        assert!(
            reasons.contains_key(kind),
            "no case ended as '{kind}': {reasons:?}"
        );
    }
}
