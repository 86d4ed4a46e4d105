//! Captures that are not quiet files on disk: standard input, FIFOs, a file truncated
//! while it is read, a run stopped by SIGINT or SIGTERM. The binary is run as a user runs
//! it, and what it wrote is compared with a run over the same bytes as a plain file.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

fn cap(rel: &str) -> PathBuf {
    common::pcaps_dir().join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `flows CAPTURE -o OUT` as a plain run; panics unless it succeeds.
fn flows_of(capture: &Path, out: &Path) -> Vec<u8> {
    let o = Command::new(BIN)
        .args(["flows", s(capture), "-o", s(out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(out).unwrap()
}

/// Byte offsets where the records of a little-endian classic pcap end (the first entry is
/// the end of the file header).
fn record_ends(b: &[u8]) -> Vec<usize> {
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian µs pcap");
    let mut v = vec![24];
    let mut p = 24;
    while p + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[p + 8..p + 12].try_into().unwrap()) as usize;
        p += 16 + incl;
        assert!(p <= b.len());
        v.push(p);
    }
    v
}

/// A FIFO in `dir`.
fn fifo(dir: &Path) -> PathBuf {
    let p = dir.join("capture.fifo");
    assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
    p
}

/// Waits (bounded) until nothing is left in the pipe behind `w`: the reader has taken
/// every byte written so far.
fn wait_pipe_drained(w: &std::fs::File) {
    let t0 = Instant::now();
    loop {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let r = unsafe { libc::ioctl(w.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        if n == 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the sensor stopped reading"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a signal to our own child, by its PID.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits for `child` (bounded: a hang fails the test and kills the child).
fn finish(mut child: Child, secs: u64) -> Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("no exit within {secs} s: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `-` (standard input, from a file and from a pipe) and a FIFO give the same flows as
/// the file, for pcap and pcapng.
#[test]
fn stdin_and_fifo_are_read_as_streams() {
    let d = tempfile::tempdir().unwrap();
    for rel in ["large/echo-connections.pcap", "large/tor.pcap"] {
        let input = cap(rel);
        let want = flows_of(&input, &d.path().join("want.csv"));
        assert!(want.len() > 1000);
        // stdin redirected from the file
        let out = d.path().join("stdin-file.csv");
        let o = Command::new(BIN)
            .args(["flows", "-", "-o", s(&out)])
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(std::fs::read(&out).unwrap() == want, "{rel}: stdin (file)");
        // stdin a pipe, written in small pieces
        let out = d.path().join("stdin-pipe.csv");
        let mut child = Command::new(BIN)
            .args(["flows", "-", "-o", s(&out)])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut w = child.stdin.take().unwrap();
        let bytes = std::fs::read(&input).unwrap();
        let t = std::thread::spawn(move || {
            for c in bytes.chunks(7_777) {
                w.write_all(c).unwrap();
            }
        });
        t.join().unwrap();
        let o = finish(child, 60);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(std::fs::read(&out).unwrap() == want, "{rel}: stdin (pipe)");
        // a FIFO
        let f = fifo(d.path());
        let out = d.path().join("fifo.csv");
        let child = Command::new(BIN)
            .args(["flows", s(&f), "-o", s(&out)])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let bytes = std::fs::read(&input).unwrap();
        let f2 = f.clone();
        let t = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(f2).unwrap();
            w.write_all(&bytes).unwrap();
        });
        t.join().unwrap();
        let o = finish(child, 60);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(std::fs::read(&out).unwrap() == want, "{rel}: FIFO");
        std::fs::remove_file(&f).unwrap();
    }
}

/// SIGINT to `flows` and SIGTERM to `replay` reading a FIFO whose writer is still there:
/// every packet written before the signal is in the outputs — the same flows as a run
/// over those bytes as a file — the run says it was interrupted, the counters carry the
/// signal, and the exit code is 128 + the signal.
#[test]
fn a_signal_ends_the_run_with_whole_outputs_for_what_was_read() {
    let d = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(cap("large/echo-connections.pcap")).unwrap();
    let ends = record_ends(&bytes);
    let cut = ends[ends.len() / 2];
    let prefix = d.path().join("prefix.pcap");
    std::fs::write(&prefix, &bytes[..cut]).unwrap();
    let want = flows_of(&prefix, &d.path().join("want.csv"));
    for (sig, cmd) in [(libc::SIGINT, "flows"), (libc::SIGTERM, "replay")] {
        let f = fifo(d.path());
        let out = d.path().join(format!("{cmd}.csv"));
        let stats = d.path().join(format!("{cmd}.json"));
        let state = d.path().join("state");
        let mut args: Vec<String> = vec![cmd.into(), s(&f).into()];
        if cmd == "flows" {
            args.extend(["-o".into(), s(&out).into(), "--stats".into()]);
        } else {
            args.extend([
                "--flows".into(),
                s(&out).into(),
                "--stats-json".into(),
                s(&stats).into(),
                "--state-dir".into(),
                s(&state).into(),
            ]);
        }
        let child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The writer stays open: without the signal the run would wait for more.
        let mut w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        w.write_all(&bytes[..cut]).unwrap();
        wait_pipe_drained(&w);
        signal(&child, sig);
        let o = finish(child, 60);
        drop(w);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(128 + sig), "{cmd}: {e}");
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        assert!(
            e.contains(&format!("interrupted by {name} at byte offset {cut}")),
            "{e}"
        );
        assert!(
            std::fs::read(&out).unwrap() == want,
            "{cmd}: flows differ from the prefix's"
        );
        if cmd == "flows" {
            assert!(
                e.contains(&format!("run.interrupted_by_signal {sig}")),
                "{e}"
            );
        } else {
            assert!(e.contains("replay: drops"), "summary printed: {e}");
            let j: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
            assert_eq!(j["run.interrupted_by_signal"], sig, "{j}");
            assert_eq!(j["reader.frames"], (ends.len() / 2) as u64, "{j}");
        }
        // Nothing but the outputs was left beside them.
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| !n.contains("tmp")),
            "temporaries left: {names:?}"
        );
        std::fs::remove_file(&f).unwrap();
    }
}

/// A FIFO nobody writes to does not hang the sensor: it waits, and SIGINT ends it.
#[test]
fn a_fifo_without_a_writer_waits_until_a_signal() {
    let d = tempfile::tempdir().unwrap();
    let f = fifo(d.path());
    let out = d.path().join("out.csv");
    let child = Command::new(BIN)
        .args(["flows", s(&f), "-o", s(&out)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The sensor must be waiting in its own read loop (not in open): give it time to get
    // there, then ask it to stop.
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGINT);
    let o = finish(child, 20);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("interrupted by SIGINT at byte offset 0"), "{e}");
    assert!(!out.exists());
}

/// The read position of `pid`'s descriptor open on `file`, if there is one.
fn read_pos(pid: u32, file: &Path) -> Option<u64> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let e = e.ok()?;
        if std::fs::read_link(e.path()).ok().as_deref() == Some(file) {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            return info
                .lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

/// A capture truncated by another process while the sensor reads it: one line naming the
/// file and the offset up to which it was read, exit 1, and the flows of what was read
/// written whole (no SIGBUS, no temporary left).
#[test]
fn a_capture_truncated_under_the_reader_is_an_error_with_the_offset() {
    let d = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(cap("large/echo-connections.pcap")).unwrap();
    let ends = record_ends(&bytes);
    // ~270 MB: 40 copies of the records, each copy a day later.
    let big = d.path().join("big.pcap");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        w.write_all(&bytes[..24]).unwrap();
        for k in 0..40u32 {
            for r in ends.windows(2) {
                let mut rec = bytes[r[0]..r[1]].to_vec();
                let sec = u32::from_le_bytes(rec[..4].try_into().unwrap()) + k * 86_400;
                rec[..4].copy_from_slice(&sec.to_le_bytes());
                w.write_all(&rec).unwrap();
            }
        }
        w.flush().unwrap();
    }
    let size = std::fs::metadata(&big).unwrap().len();
    let out = d.path().join("out.csv");
    let child = Command::new(BIN)
        .args(["flows", s(&big), "-o", s(&out), "--shards", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let pos = loop {
        if let Some(p) = read_pos(child.id(), &big).filter(|&p| p > 0) {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the sensor never read"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    signal(&child, libc::SIGSTOP);
    let now_pos = read_pos(child.id(), &big).unwrap_or(pos);
    assert!(
        now_pos < size,
        "the sensor read the whole file before it could be stopped"
    );
    let cut = now_pos + (4 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(cut)
        .unwrap();
    signal(&child, libc::SIGCONT);
    let o = finish(child, 120);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains(s(&big))
            && e.contains("shrank while being read")
            && e.contains(&format!("it now ends at byte {cut}, it had {size} bytes")),
        "{e}"
    );
    let off: u64 = e
        .split("before byte offset ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {e}"));
    assert!(
        off <= cut && off + 65_536 + 16 > cut,
        "offset {off}, cut {cut}"
    );
    // The flows written are those of the records before the offset.
    let prefix = d.path().join("prefix.pcap");
    let _ = std::fs::remove_file(&prefix);
    std::fs::copy(&big, &prefix).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&prefix)
        .unwrap()
        .set_len(off)
        .unwrap();
    drop(std::fs::remove_file(&big));
    let want = flows_of(&prefix, &d.path().join("want.csv"));
    assert!(std::fs::read(&out).unwrap() == want);
}

/// One packet dated 50 years ahead in a real capture (82 k packets): the flows of every
/// other packet keep their times (at most the outlier's own flow differs, and nothing is
/// dated in the future), the same windows are scored, and the run says so in a warning
/// line and in the counters (`capture.time_jump`).
#[test]
fn one_packet_fifty_years_ahead_does_not_redate_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let src = cap("large/echo-connections.pcap");
    let mut bytes = std::fs::read(&src).unwrap();
    let ends = record_ends(&bytes);
    let k = ends.len() / 3; // the packet whose record starts at ends[k]
    let at = ends[k];
    let sec = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let fifty_years = 1_577_880_000u32;
    bytes[at..at + 4].copy_from_slice(&(sec + fifty_years).to_le_bytes());
    let jumped = d.path().join("jumped.pcap");
    std::fs::write(&jumped, &bytes).unwrap();

    let want = String::from_utf8(flows_of(&src, &d.path().join("want.csv"))).unwrap();
    let out = d.path().join("got.csv");
    let o = Command::new(BIN)
        .args(["flows", s(&jumped), "-o", s(&out), "--stats"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("capture.time_jump 1\n"), "{e}");
    let warn: Vec<&str> = e.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warn.len(), 1, "{e}");
    assert!(
        warn[0].contains("1 packet(s) dated more than 1 h after the packets around them")
            && warn[0].contains(&format!("the first is packet {}", k + 1)),
        "{e}"
    );
    let got = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    // Rows without the id column, as sets.
    let rows = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .skip(1)
            .map(|l| l.split_once(',').unwrap().1.to_string())
            .collect()
    };
    let (w, g) = (rows(&want), rows(&got));
    assert_eq!(w.len(), g.len(), "same number of flows");
    assert!(
        w.difference(&g).count() <= 1,
        "only the outlier's own flow may differ"
    );
    // No flow dated in the future: every first/last-seen ms below 2040.
    let header: Vec<&str> = got.lines().next().unwrap().split(',').collect();
    let cols: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.ends_with("_seen_ms"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(cols.len(), 6, "{header:?}");
    for l in got.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        for &c in &cols {
            let ms: u64 = f[c].parse().unwrap();
            assert!(ms < 2_208_988_800_000, "flow dated {ms} ms: {l}");
        }
    }
    // Replay scores the same windows (on the capture's real clock).
    let windows = |cap: &Path, name: &str| -> serde_json::Value {
        let j = d.path().join(format!("{name}.json"));
        let o = Command::new(BIN)
            .args([
                "replay",
                s(cap),
                "--stats-json",
                s(&j),
                "--state-dir",
                s(&d.path().join(name)),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap()
    };
    let (a, b) = (windows(&src, "orig"), windows(&jumped, "jumped"));
    assert!(a["detect.windows_scored"].as_u64().unwrap() >= 5, "{a}");
    assert_eq!(a["detect.windows_scored"], b["detect.windows_scored"]);
    assert_eq!(b["capture.time_jump"], 1);
    assert_eq!(a["capture.time_jump"], 0);
}

/// pcapng blocks (section, interface, packets, name resolution) whose strings are not
/// UTF-8: read as tshark reads them (every packet), counted
/// (`capture.file.pcapng_non_utf8`), and the flows are those of the same file with ASCII
/// strings.
#[test]
fn pcapng_strings_that_are_not_utf8_are_read() {
    fn opt(b: &mut Vec<u8>, code: u16, v: &[u8]) {
        b.extend_from_slice(&code.to_le_bytes());
        b.extend_from_slice(&(v.len() as u16).to_le_bytes());
        b.extend_from_slice(v);
        b.resize(b.len().div_ceil(4) * 4, 0);
    }
    fn block(out: &mut Vec<u8>, btype: u32, body: &[u8]) {
        let len = (12 + body.len()) as u32;
        out.extend_from_slice(&btype.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&len.to_le_bytes());
    }
    let pkts = common::frames("basic/http-get.pcap");
    let make = |s: &dyn Fn(&str) -> Vec<u8>| -> Vec<u8> {
        let mut f = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        opt(&mut shb, 1, &s("captured at the caf\u{e9}"));
        opt(&mut shb, 3, &s("Linux \u{fc}ber"));
        opt(&mut shb, 0, &[]);
        block(&mut f, 0x0A0D_0D0A, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&65535u32.to_le_bytes());
        opt(&mut idb, 2, &s("\u{e9}th0"));
        opt(&mut idb, 9, &[6]); // if_tsresol: µs
        opt(&mut idb, 0, &[]);
        block(&mut f, 1, &idb);
        let mut nrb = Vec::new();
        let mut rec = vec![198, 18, 0, 1];
        rec.extend_from_slice(&s("h\u{f6}st.example"));
        rec.push(0);
        opt(&mut nrb, 1, &rec);
        opt(&mut nrb, 0, &[]);
        opt(&mut nrb, 1, &s("r\u{e9}solved"));
        opt(&mut nrb, 0, &[]);
        block(&mut f, 4, &nrb);
        for p in &pkts {
            let us = p.ts_ns / 1000;
            let mut epb = Vec::new();
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(us as u32).to_le_bytes());
            epb.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&p.orig_len.to_le_bytes());
            epb.extend_from_slice(&p.data);
            epb.resize(epb.len().div_ceil(4) * 4, 0);
            opt(&mut epb, 1, &s("d\u{e9}j\u{e0} vu"));
            opt(&mut epb, 0, &[]);
            block(&mut f, 6, &epb);
        }
        f
    };
    // Latin-1 bytes (not UTF-8), and the same strings with '?' for them.
    let latin1 = |t: &str| t.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>();
    let ascii = |t: &str| {
        t.chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect::<Vec<u8>>()
    };
    let d = tempfile::tempdir().unwrap();
    let (bad, good) = (d.path().join("bad.pcapng"), d.path().join("good.pcapng"));
    std::fs::write(&bad, make(&latin1)).unwrap();
    std::fs::write(&good, make(&ascii)).unwrap();
    assert!(std::str::from_utf8(&std::fs::read(&bad).unwrap()[28..60]).is_err());
    // tshark reads every packet of it.
    let t = Command::new("tshark")
        .args(["-r", s(&bad), "-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap();
    assert!(t.status.success());
    assert_eq!(
        String::from_utf8_lossy(&t.stdout).lines().count(),
        pkts.len()
    );
    let want = flows_of(&good, &d.path().join("good.csv"));
    let out = d.path().join("bad.csv");
    let o = Command::new(BIN)
        .args(["flows", s(&bad), "-o", s(&out), "--stats"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    // section, interface, name resolution, and every packet block
    let n = 3 + pkts.len();
    assert!(
        e.contains(&format!("capture.file.pcapng_non_utf8 {n}\n")),
        "{e}"
    );
    assert!(
        e.contains(&format!("reader.frames {}\n", pkts.len())),
        "{e}"
    );
    assert!(std::fs::read(&out).unwrap() == want);
}

/// Seeded mutations of real pcap and pcapng files (bit flips, length fields set to
/// extremes, cuts, inserted and deleted bytes) read by the capture reader the commands
/// use: never a panic, never a loop (every read ends), and an error names a byte offset
/// inside the file.
#[test]
fn mutated_capture_files_never_panic_or_hang() {
    use streamml_sensor::capture::pcap::PcapFileSource;
    use streamml_sensor::capture::{CaptureError, PacketSource};
    let d = tempfile::tempdir().unwrap();
    let seeds: Vec<Vec<u8>> = [
        "basic/http-get.pcap",
        "formats/pptp.pcap",
        "formats/tcp-handshake-nano.pcap",
        "formats/dhcp_big_endian.pcapng",
        "formats/pcapng-multi-interface.pcapng",
        "formats/modify-request.pcapng",
    ]
    .iter()
    .map(|r| std::fs::read(cap(r)).unwrap())
    .collect();
    let mut rng = common::XorShift::new(0x5EED_CAFE_F00D_0001);
    let mut rnd = |n: usize| rng.below(n);
    let path = d.path().join("m.pcap");
    let cases = 6_000;
    for case in 0..cases {
        let mut b = seeds[case % seeds.len()].clone();
        for _ in 0..1 + rnd(4) {
            let i = rnd(b.len());
            match rnd(7) {
                0 => b[i] ^= 1 << rnd(8),
                1 => b[i] = [0, 0xff, 0x7f, 0x80][rnd(4)],
                2 => {
                    // a 32-bit field (a length, often) set to an extreme
                    let v = [0u32, 1, 11, 12, 0xffff_ffff, 0x7fff_ffff, 65_536][rnd(7)];
                    let i = i.min(b.len().saturating_sub(4));
                    let k = (b.len() - i).min(4);
                    b[i..i + k].copy_from_slice(&v.to_le_bytes()[..k]);
                }
                3 => b.truncate(i),
                4 => b.insert(i, rnd(256) as u8),
                5 if !b.is_empty() => {
                    b.remove(i);
                }
                _ => {
                    let j = rnd(b.len());
                    b.swap(i, j);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        std::fs::write(&path, &b).unwrap();
        let size = b.len() as u64;
        let r = std::panic::catch_unwind(|| {
            let mut src = match PcapFileSource::open(&path) {
                Ok(s) => s,
                Err(_) => return,
            };
            let mut n = 0u64;
            loop {
                match src.next_frame() {
                    Ok(Some(f)) => {
                        assert!(f.data.len() <= b.len());
                        n += 1;
                        assert!(n <= size / 16 + 1, "more frames than the file can hold");
                    }
                    Ok(None) => break,
                    Err(CaptureError::Corrupt { offset, .. }) => {
                        assert!(offset <= size, "offset {offset} beyond {size}");
                        break;
                    }
                    Err(_) => break,
                }
            }
            assert!(
                src.next_frame().unwrap().is_none(),
                "a finished source stays finished"
            );
        });
        assert!(r.is_ok(), "case {case}: panic");
    }
}

/// A full disk under an output: one line with the OS's words (not pcap-file's "Error
/// reading bytes"), exit 2 for `synth` and 1-or-2 for `flows` (never 0), and no file
/// or temporary left on the full file system; an older file of the same name is kept.
#[test]
fn a_full_disk_is_one_line_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("tiny");
    let m = common::Mount::tmpfs(&mnt, "256k");
    let old = mnt.join("f.csv");
    std::fs::write(&old, "the previous run's output\n").unwrap();
    let out = mnt.join("s.pcap");
    let o = Command::new(BIN)
        .args(["synth", "--minutes", "1", "-o", s(&out)])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("No space left on device") && !e.contains("Error reading"),
        "{e}"
    );
    let o = Command::new(BIN)
        .args([
            "flows",
            s(&cap("large/echo-connections.pcap")),
            "-o",
            s(&old),
        ])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains(&format!(
            "{}: writing flows: No space left on device",
            s(&old)
        )),
        "{e}"
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["f.csv"]);
    assert_eq!(
        std::fs::read_to_string(&old).unwrap(),
        "the previous run's output\n"
    );
    drop(m);
}
