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
