//! Evidence: the mmap ring under concurrency and kill -9, evidence files checked with the
//! zstd and tshark commands, alerts.jsonl, disk errors on a real (tmpfs) filesystem, and
//! `streamml-sensor evidence recover`. Frames come from the real captures in
//! tests/data/pcaps.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{frames, read_pcap_zst, tshark_count, Mount, Pkt};
use streamml_sensor::capture::LinkType;
use streamml_sensor::evidence::ring::{End, RecordBuf, RingConfig, Start};
use streamml_sensor::evidence::writer::{EvidenceRequest, Scope, SendOutcome, WriterConfig};
use streamml_sensor::evidence::{
    Alert, AlertMode, EvidenceRing, EvidenceWriter, RingReader, Sink, StateDir,
};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

fn small_ring(path: &Path, size: u64, snaplen: u32, shard: u32) -> EvidenceRing {
    EvidenceRing::create(
        path,
        &RingConfig {
            size_bytes: size,
            snaplen,
            shard,
        },
    )
    .unwrap()
}

fn cut(p: &Pkt, snaplen: usize) -> Pkt {
    Pkt {
        ts_ns: p.ts_ns,
        orig_len: p.orig_len,
        data: p.data[..p.data.len().min(snaplen)].to_vec(),
    }
}

/// Log lines captured from the writer.
fn capture_log() -> (
    Arc<Mutex<Vec<String>>>,
    streamml_sensor::evidence::writer::LogFn,
) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    (
        lines,
        Arc::new(move |s: &str| l2.lock().unwrap().push(s.to_string())),
    )
}

fn alert_lines(state: &StateDir) -> Vec<Alert> {
    common::alerts(&state.alerts_path())
}

mod seqlock {
    use super::*;

    fn pattern(seq: u64) -> Vec<u8> {
        let len = 20 + (seq.wrapping_mul(7919) % 700) as usize;
        (0..len)
            .map(|i| (seq as u8).wrapping_mul(31) ^ (i as u8) ^ ((seq >> 8) as u8))
            .collect()
    }

    /// A writer laps a 64 KiB ring continuously while readers copy ranges out of it: every
    /// record a reader returns must be exactly the one written with its seq (header and
    /// bytes). Overwrites during copies must actually happen (the contended path runs).
    #[test]
    fn reader_never_returns_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = small_ring(&dir.path().join("s.ring"), 64 * 1024, 512, 0);
        let reader = ring.reader();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let writer = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut seq = 0u64;
            while !s2.load(Ordering::Relaxed) && seq < 200_000_000 {
                let p = pattern(seq + 1);
                let got = ring.append(
                    (seq + 1) * 10,
                    p.len() as u32 + 4,
                    LinkType::Ethernet,
                    (seq + 1) ^ 0xabcdef,
                    &p,
                );
                seq += 1;
                assert_eq!(got, seq);
                if seq.is_multiple_of(4096) && t0.elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            seq
        });
        let mut readers = Vec::new();
        for r in 0..2u64 {
            let rd = reader.clone();
            readers.push(std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut out = RecordBuf::new();
                let (mut verified, mut lost, mut copies) = (0u64, 0u64, 0u64);
                while t0.elapsed() < Duration::from_secs(20) {
                    let h = rd.head_seq();
                    let from = match copies % 3 {
                        0 => Start::Oldest,
                        1 => Start::Seq(h.saturating_sub(50 + r * 7)),
                        _ => Start::TsNs(h.saturating_sub(80) * 10),
                    };
                    let st = rd.copy_range(
                        from,
                        End::HEAD,
                        |v| v.seq() % 2 == r || copies % 2 == 0,
                        &mut out,
                    );
                    copies += 1;
                    lost += st.lost_overwritten;
                    assert_eq!(
                        (st.torn, st.corrupt),
                        (0, 0),
                        "a live overwrite is not damage"
                    );
                    let mut prev = 0;
                    for v in out.iter() {
                        let s = v.seq();
                        assert!(s > prev, "records out of order");
                        prev = s;
                        let p = pattern(s);
                        assert_eq!(v.ts_ns(), s * 10, "torn header (ts) for seq {s}");
                        assert_eq!(
                            v.flow_hash(),
                            s ^ 0xabcdef,
                            "torn header (hash) for seq {s}"
                        );
                        assert_eq!(
                            v.orig_len(),
                            p.len() as u32 + 4,
                            "torn header (len) for seq {s}"
                        );
                        assert_eq!(v.data, &p[..p.len().min(512)], "torn bytes for seq {s}");
                        verified += 1;
                    }
                    if lost > 100 && verified > 200_000 && copies > 2000 {
                        break;
                    }
                }
                (verified, lost, copies)
            }));
        }
        let mut total = (0, 0, 0);
        for h in readers {
            let (v, l, c) = h.join().unwrap();
            total = (total.0 + v, total.1 + l, total.2 + c);
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(written > 100_000, "writer appended only {written} records");
        assert!(total.0 > 10_000, "verified only {} records", total.0);
        assert!(
            total.1 > 0,
            "no record was ever overwritten during a copy in {} copies: the race was not exercised",
            total.2
        );
    }
}

mod kill9 {
    use super::*;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    const BASE_NS: u64 = 1_700_000_000_000_000_000;
    const SNAP: usize = 256;

    /// A child process appends real frames (cycled from 443-curl.pcap, ts = BASE + seq µs)
    /// to a shard ring in a tight loop and is killed with SIGKILL at an arbitrary moment;
    /// `streamml-sensor evidence recover` then dumps the ring. The PCAP reads in tshark
    /// without warnings, holds the most recent records up to at least the last one
    /// committed before the kill, consecutive, each byte-identical to what was appended.
    #[test]
    fn kill9_mid_append_then_recover() {
        let src = frames("basic/443-curl.pcap");
        for round in 0..3u64 {
            let dir = tempfile::tempdir().unwrap();
            let state = StateDir::create(&dir.path().join("state")).unwrap();
            let path = state.ring_path(0);
            let mut ring = small_ring(&path, 512 * 1024, SNAP as u32, 0);
            // SAFETY (test): the child only appends to the already-mapped ring (no
            // allocation, no locks), reads the monotonic clock and exits with _exit; it
            // never returns into the test harness.
            let pid = match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    let t0 = Instant::now();
                    let mut seq = 0u64;
                    loop {
                        let f = &src[(seq % src.len() as u64) as usize];
                        seq += 1;
                        ring.append(
                            BASE_NS + seq * 1000,
                            f.orig_len,
                            LinkType::Ethernet,
                            seq,
                            &f.data,
                        );
                        if seq.is_multiple_of(4096) && t0.elapsed() > Duration::from_secs(60) {
                            // SAFETY (test): leave without running destructors or the harness.
                            unsafe { libc::_exit(3) };
                        }
                    }
                }
                ForkResult::Parent { child } => child,
            };
            let ro = RingReader::open_readonly(&path).unwrap();
            let t0 = Instant::now();
            while ro.head_seq() < 20_000 + round * 7_000 {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "child made no progress"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let seen_before_kill = ro.head_seq();
            kill(pid, Signal::SIGKILL).unwrap();
            match waitpid(pid, None).unwrap() {
                WaitStatus::Signaled(_, Signal::SIGKILL, _) => {}
                other => panic!("child ended with {other:?}"),
            }
            drop(ro);
            drop(ring);
            let out = dir.path().join("recovered.pcap.zst");
            let o = Command::new(BIN)
                .args(["evidence", "recover", "--state-dir"])
                .arg(state.root())
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "recover failed: {stderr}");
            assert!(stderr.contains("skipped: 0 corrupt, 0 torn,"), "{stderr}");
            let (link, pk) = read_pcap_zst(&out);
            assert_eq!(link, 1);
            assert!(
                stderr.contains(&format!("recovered {} packets", pk.len())),
                "{stderr}"
            );
            let (n, warn) = tshark_count(&out);
            assert_eq!(n, pk.len() as u64);
            assert_eq!(warn, "", "tshark warned");
            assert!(pk.len() > 500, "only {} packets recovered", pk.len());
            let first_seq = (pk[0].ts_ns - BASE_NS) / 1000;
            assert!(first_seq > 1, "ring did not wrap");
            for (k, p) in pk.iter().enumerate() {
                let seq = (p.ts_ns - BASE_NS) / 1000;
                assert_eq!(seq, first_seq + k as u64, "gap or reorder at packet {k}");
                let f = &src[((seq - 1) % src.len() as u64) as usize];
                assert_eq!(
                    p,
                    &cut(
                        &Pkt {
                            ts_ns: p.ts_ns,
                            ..f.clone()
                        },
                        SNAP
                    ),
                    "packet {k} (seq {seq}) differs"
                );
            }
            let last_seq = first_seq + pk.len() as u64 - 1;
            assert!(
                last_seq >= seen_before_kill,
                "last recovered seq {last_seq} < head seen before the kill {seen_before_kill}"
            );
        }
    }
}

mod writer {
    use super::*;

    fn writer_cfg(state: &StateDir, log: streamml_sensor::evidence::writer::LogFn) -> WriterConfig {
        let mut c = WriterConfig::new(state.clone());
        c.ordered = true;
        c.file.fsync = false;
        c.log = log;
        c
    }

    fn check_file(state: &StateDir, a: &Alert) -> Vec<Pkt> {
        let rel = a.evidence.path.as_ref().expect("evidence path");
        let p = state.root().join(rel);
        let (n, warn) = tshark_count(&p);
        assert_eq!(warn, "", "tshark warned on {rel}");
        assert_eq!(n, a.evidence.packets, "{rel}: tshark count vs alert");
        let (_, pk) = read_pcap_zst(&p);
        assert_eq!(pk.len() as u64, a.evidence.packets);
        pk
    }

    /// Evidence of captures of every non-Ethernet link type the reader accepts beyond the
    /// first ones (PPP, PPP in HDLC framing, Cisco HDLC, 802.11, radiotap, NFLOG): frames
    /// go through the sensor's own reader into a ring each, a window alert per ring asks
    /// for all of them, and each evidence file is a PCAP of the capture's link type
    /// holding exactly its frames, which tshark reads without a warning.
    #[test]
    fn evidence_files_keep_the_capture_link_type() {
        use streamml_sensor::capture::pcap::PcapFileSource;
        use streamml_sensor::capture::PacketSource;
        let cases: [(&str, Option<LinkType>, u32); 6] = [
            ("linktypes/ppp-quic-udp.pcap", None, 9),
            // The FF 03 frames of a LINKTYPE_PPP capture, labelled LINKTYPE_PPP_HDLC.
            (
                "linktypes/ppp-ff03-mpls-tcp-udp.pcap",
                Some(LinkType::PppHdlc),
                50,
            ),
            ("linktypes/chdlc-icmp-slarp-cdp.pcap", None, 104),
            ("linktypes/80211-mgmt-noip.pcap", None, 105),
            ("linktypes/radiotap-data-http.pcap", None, 127),
            ("linktypes/nflog-3.pcap", None, 239),
        ];
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(&dir.path().join("state")).unwrap();
        let mut rings = Vec::new();
        let mut want = Vec::new();
        for (shard, (rel, relabel, linktype)) in cases.iter().enumerate() {
            let mut ring = small_ring(&state.ring_path(shard), 1 << 20, 65_535, shard as u32);
            let mut src = PcapFileSource::open(common::pcaps_dir().join(rel)).unwrap();
            while let Some(f) = src.next_frame().unwrap() {
                let link = relabel.unwrap_or(f.link);
                assert_eq!(link.to_linktype(), *linktype, "{rel}");
                ring.append(f.ts_ns, f.orig_len, link, 0, f.data);
            }
            want.push(frames(rel));
            rings.push(ring);
        }
        let (log_lines, log) = capture_log();
        let readers = rings.iter().map(|r| r.reader()).collect();
        let (tx, h) = EvidenceWriter::spawn(writer_cfg(&state, log), readers).unwrap();
        for (shard, w) in want.iter().enumerate() {
            let (first, last) = (w[0].ts_ns, w.last().unwrap().ts_ns);
            let a = Alert::new(
                shard as u64 + 1,
                last,
                "link",
                AlertMode::Window,
                0.99,
                0.9,
                shard as u32,
            );
            let req = EvidenceRequest {
                shard,
                from_ts_ns: first,
                to_ts_ns: last,
                scope: Scope::Window { filter: None },
                limits: Default::default(),
            };
            assert_eq!(tx.send_blocking(a, Some(req)), SendOutcome::Queued);
            tx.clock_blocking(shard, last, rings[shard].last_seq());
        }
        drop(tx);
        let snap = h.join();
        assert!(
            log_lines.lock().unwrap().is_empty(),
            "{:?}",
            log_lines.lock().unwrap()
        );
        assert_eq!(snap["evidence.files_written"], cases.len() as u64);
        let alerts = alert_lines(&state);
        assert_eq!(alerts.len(), cases.len());
        for a in &alerts {
            let shard = a.anomaly.shard as usize;
            let (rel, _, linktype) = cases[shard];
            let got = check_file(&state, a);
            assert_eq!(got, want[shard], "{rel}");
            let p = state.root().join(a.evidence.path.as_ref().unwrap());
            assert_eq!(read_pcap_zst(&p).0, linktype, "{rel}");
        }
    }

    /// Two shards with real traffic; alerts with flow scope, window scope (with and
    /// without a filter), none, and one bounded by its clock's seq. Each evidence file
    /// holds exactly the expected packets (bytes and ns timestamps), reads in tshark
    /// without warnings with the count the alert reports, and includes pre-trigger packets.
    #[test]
    fn evidence_files_hold_exactly_the_requested_packets() {
        let curl = frames("basic/443-curl.pcap");
        let scan = frames("anomaly/synscan.pcap");
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(&dir.path().join("state")).unwrap();
        let mut r0 = small_ring(&state.ring_path(0), 1 << 20, 65_535, 0);
        let mut r1 = small_ring(&state.ring_path(1), 1 << 20, 65_535, 1);
        for (i, f) in curl.iter().enumerate() {
            r0.append(
                f.ts_ns,
                f.orig_len,
                LinkType::Ethernet,
                i as u64 % 3,
                &f.data,
            );
        }
        for (i, f) in scan.iter().enumerate() {
            r1.append(
                f.ts_ns,
                f.orig_len,
                LinkType::Ethernet,
                i as u64 % 5,
                &f.data,
            );
        }
        let (log_lines, log) = capture_log();
        let (tx, h) =
            EvidenceWriter::spawn(writer_cfg(&state, log), vec![r0.reader(), r1.reader()]).unwrap();

        // A1: shard 0, flow hash 1, pre-trigger from packet 20, post-trigger to packet 90.
        let t_alert = curl[60].ts_ns;
        let mut a1 = Alert::new(1, t_alert, "flows", AlertMode::Flow, 0.95, 0.9, 0);
        a1.anomaly
            .top_features
            .push(streamml_sensor::evidence::FeatureContribution {
                name: "bytes".into(),
                value: 1.0,
                contribution: 0.5,
            });
        let req1 = EvidenceRequest {
            shard: 0,
            from_ts_ns: curl[20].ts_ns,
            to_ts_ns: curl[90].ts_ns,
            scope: Scope::Flow { hash: 1 },
            limits: Default::default(),
        };
        // A2: shard 1, whole window. A3: same span, only frames longer than 60 bytes.
        let (w0, w1) = (scan[100].ts_ns, scan[400].ts_ns);
        let a2 = Alert::new(2, w1, "scan", AlertMode::Window, 0.99, 0.9, 1);
        let req2 = EvidenceRequest {
            shard: 1,
            from_ts_ns: w0,
            to_ts_ns: w1,
            scope: Scope::Window { filter: None },
            limits: Default::default(),
        };
        let a3 = Alert::new(3, w1, "scan-low-ports", AlertMode::Window, 0.99, 0.9, 1);
        let big: streamml_sensor::evidence::writer::RecordFilter = Arc::new(|v| low_port(v.data));
        let req3 = EvidenceRequest {
            shard: 1,
            from_ts_ns: w0,
            to_ts_ns: w1,
            scope: Scope::Window { filter: Some(big) },
            limits: Default::default(),
        };
        // A4: no evidence.
        let a4 = Alert::new(4, curl[5].ts_ns, "flows", AlertMode::Flow, 0.91, 0.9, 0);
        // A5: shard 0, window from packet 10 to the end, but the clock that makes it due
        // reports seq 30: records after it are not this alert's, even though they are in
        // the ring and in the time span.
        let a5 = Alert::new(
            5,
            curl[30].ts_ns,
            "bounded",
            AlertMode::Window,
            0.97,
            0.9,
            0,
        );
        let req5 = EvidenceRequest {
            shard: 0,
            from_ts_ns: curl[10].ts_ns,
            to_ts_ns: curl[29].ts_ns,
            scope: Scope::Window { filter: None },
            limits: Default::default(),
        };

        assert_eq!(tx.send_blocking(a5, Some(req5)), SendOutcome::Queued);
        tx.clock_blocking(0, curl[29].ts_ns, 30); // seq 30 = packet index 29
        assert_eq!(tx.send_blocking(a1, Some(req1)), SendOutcome::Queued);
        assert_eq!(tx.send_blocking(a2, Some(req2)), SendOutcome::Queued);
        assert_eq!(tx.send_blocking(a3, Some(req3)), SendOutcome::Queued);
        assert_eq!(tx.send_blocking(a4, None), SendOutcome::Queued);
        tx.clock_blocking(1, scan.last().unwrap().ts_ns, r1.last_seq());
        tx.clock_blocking(0, curl.last().unwrap().ts_ns, r0.last_seq());
        drop(tx);
        let snap = h.join();
        assert!(
            log_lines.lock().unwrap().is_empty(),
            "{:?}",
            log_lines.lock().unwrap()
        );

        let alerts = alert_lines(&state);
        assert_eq!(alerts.len(), 5);
        // Ordered by (timestamp, shard, id).
        let keys: Vec<(u64, u32, u64)> = alerts
            .iter()
            .map(|a| (a.ts_ns(), a.anomaly.shard, a.alert_id))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let by_id = |id: u64| alerts.iter().find(|a| a.alert_id == id).unwrap().clone();

        let in_span = |v: &Vec<Pkt>, a: u64, b: u64| -> Vec<(usize, Pkt)> {
            v.iter()
                .cloned()
                .enumerate()
                .filter(|(_, p)| p.ts_ns >= a && p.ts_ns <= b)
                .collect()
        };
        // A1
        let a1 = by_id(1);
        let want1: Vec<Pkt> = in_span(&curl, curl[20].ts_ns, curl[90].ts_ns)
            .into_iter()
            .filter(|(i, _)| i % 3 == 1)
            .map(|(_, p)| p)
            .collect();
        let got1 = check_file(&state, &a1);
        assert_eq!(got1, want1);
        assert!(
            got1.iter().any(|p| p.ts_ns < a1.ts_ns()),
            "no pre-trigger packet"
        );
        assert!(
            got1.iter().any(|p| p.ts_ns > a1.ts_ns()),
            "no post-trigger packet"
        );
        assert!(!a1.evidence.dropped && !a1.evidence.truncated);
        assert!(a1.evidence.path.as_ref().unwrap().starts_with("evidence/"));
        // A2, A3
        let want2: Vec<Pkt> = in_span(&scan, w0, w1).into_iter().map(|(_, p)| p).collect();
        assert_eq!(check_file(&state, &by_id(2)), want2);
        let want3: Vec<Pkt> = want2
            .iter()
            .filter(|p| low_port(&p.data))
            .cloned()
            .collect();
        assert!(!want3.is_empty() && want3.len() < want2.len());
        assert_eq!(check_file(&state, &by_id(3)), want3);
        // A4
        let a4 = by_id(4);
        assert_eq!(a4.evidence.path, None);
        assert_eq!(a4.evidence.packets, 0);
        // A5: packets 10..=29 (seq 11..=30).
        assert_eq!(check_file(&state, &by_id(5)), curl[10..30].to_vec());

        assert_eq!(snap["evidence.files_written"], 4);
        assert_eq!(snap["alerts.written"], 5);
        assert_eq!(snap["evidence.write_errors"], 0);
        // No temporary files left.
        for e in std::fs::read_dir(state.evidence_dir()).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(n.ends_with(".pcap.zst") && !n.starts_with('.'), "{n}");
        }
    }

    /// IPv4/TCP over Ethernet with destination port < 1024 (a profile-like filter).
    fn low_port(d: &[u8]) -> bool {
        d.len() >= 38 && d[23] == 6 && u16::from_be_bytes([d[36], d[37]]) < 1024
    }

    /// A sink that blocks until released: holds the writer thread so the queues fill.
    struct Gate(crossbeam_channel::Receiver<()>);
    impl Sink for Gate {
        fn name(&self) -> &str {
            "gate"
        }
        fn send_alert(&mut self, _: &Alert) -> std::io::Result<()> {
            let _ = self.0.recv_timeout(Duration::from_secs(30));
            Ok(())
        }
    }

    /// With the writer busy, a full queue drops the evidence but the alert is still logged
    /// (evidence.dropped = true); when the overflow queue is full too the alert is lost;
    /// both counted. `send` never blocks.
    #[test]
    fn full_queue_drops_evidence_not_the_alert() {
        let curl = frames("basic/443-curl.pcap");
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(&dir.path().join("state")).unwrap();
        let mut r0 = small_ring(&state.ring_path(0), 1 << 20, 65_535, 0);
        for f in &curl {
            r0.append(f.ts_ns, f.orig_len, LinkType::Ethernet, 7, &f.data);
        }
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
        let (_, log) = capture_log();
        let mut cfg = writer_cfg(&state, log);
        cfg.ordered = false;
        cfg.queue = 1;
        cfg.overflow_queue = 2;
        cfg.extra_sinks.push(Box::new(Gate(gate_rx)));
        let (tx, h) = EvidenceWriter::spawn(cfg, vec![r0.reader()]).unwrap();
        // The first alert (no evidence) parks the writer in the gate sink.
        tx.send(
            Alert::new(1, curl[0].ts_ns, "p", AlertMode::Flow, 1.0, 0.5, 0),
            None,
        );
        let t0 = Instant::now();
        while h.snapshot()["alerts.written"] < 1 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut outcomes = Vec::new();
        let t0 = Instant::now();
        for id in 2..=11 {
            let req = EvidenceRequest::around(
                0,
                curl[50].ts_ns,
                1_000_000_000,
                0,
                Scope::Flow { hash: 7 },
            );
            outcomes.push(tx.send(
                Alert::new(id, curl[50].ts_ns, "p", AlertMode::Flow, 1.0, 0.5, 0),
                Some(req),
            ));
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "send blocked");
        use SendOutcome::*;
        assert_eq!(
            outcomes,
            vec![
                Queued,
                EvidenceDropped,
                EvidenceDropped,
                AlertLost,
                AlertLost,
                AlertLost,
                AlertLost,
                AlertLost,
                AlertLost,
                AlertLost
            ]
        );
        tx.clock(0, curl.last().unwrap().ts_ns, r0.last_seq());
        for _ in 0..20 {
            gate_tx.send(()).unwrap();
        }
        drop(tx);
        let snap = h.join();
        assert_eq!(snap["evidence.dropped_queue_full"], 9);
        assert_eq!(snap["alerts.lost_queue_full"], 7);
        let alerts = alert_lines(&state);
        assert_eq!(alerts.len(), 4);
        let dropped: Vec<u64> = alerts
            .iter()
            .filter(|a| a.evidence.dropped)
            .map(|a| a.alert_id)
            .collect();
        assert_eq!(dropped, vec![3, 4]);
        let with_file = alerts.iter().find(|a| a.alert_id == 2).unwrap();
        assert!(with_file.evidence.packets > 0);
        check_file(&state, with_file);
    }

    /// Retention keeps the newest files within max_files; deletions are counted.
    #[test]
    fn retention_bounds_the_evidence_directory() {
        let curl = frames("basic/443-curl.pcap");
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(&dir.path().join("state")).unwrap();
        let mut r0 = small_ring(&state.ring_path(0), 1 << 20, 65_535, 0);
        for f in &curl {
            r0.append(f.ts_ns, f.orig_len, LinkType::Ethernet, 0, &f.data);
        }
        let (_, log) = capture_log();
        let mut cfg = writer_cfg(&state, log);
        cfg.retention.max_files = 3;
        let (tx, h) = EvidenceWriter::spawn(cfg, vec![r0.reader()]).unwrap();
        for id in 1..=5u64 {
            let t = curl[id as usize * 10].ts_ns;
            let req = EvidenceRequest::around(0, t, 0, 0, Scope::Window { filter: None });
            tx.send_blocking(
                Alert::new(id, t, "r", AlertMode::Window, 1.0, 0.5, 0),
                Some(req),
            );
        }
        tx.clock_blocking(0, curl.last().unwrap().ts_ns, r0.last_seq());
        drop(tx);
        let snap = h.join();
        assert_eq!(snap["evidence.files_written"], 5);
        assert_eq!(snap["retention.deleted_files"], 2);
        let alerts = alert_lines(&state);
        let exists: Vec<bool> = alerts
            .iter()
            .map(|a| {
                state
                    .root()
                    .join(a.evidence.path.as_ref().unwrap())
                    .exists()
            })
            .collect();
        assert_eq!(exists, vec![false, false, true, true, true]);
    }
}

mod disk_errors {
    use super::*;

    fn wait_done(h: &streamml_sensor::evidence::writer::EvidenceWriterHandle, n: u64) {
        let t0 = Instant::now();
        loop {
            let s = h.snapshot();
            if s["alerts.written"] + s["alerts.write_errors"] >= n {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "writer stuck: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn fill(dir: &Path) -> PathBuf {
        use std::io::Write;
        let p = dir.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        p
    }

    fn check_state_files(state: &StateDir, curl: &[Pkt]) -> Vec<Alert> {
        let alerts = alert_lines(state);
        let mut checked = 0;
        for e in std::fs::read_dir(state.evidence_dir()).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "temporary file left: {name}");
            let (n, warn) = tshark_count(&p);
            assert_eq!(warn, "");
            assert_eq!(n, curl.len() as u64, "{name}");
            let (_, pk) = read_pcap_zst(&p);
            assert_eq!(pk, curl);
            checked += 1;
        }
        assert!(checked >= 1);
        alerts
    }

    fn setup(dir: &Path) -> (Vec<Pkt>, EvidenceRing) {
        let curl = frames("basic/443-curl.pcap");
        // Rings live outside the state directory under test (they are preallocated).
        let mut r0 = small_ring(&dir.join("shard-0.ring"), 1 << 20, 65_535, 0);
        for f in &curl {
            r0.append(f.ts_ns, f.orig_len, LinkType::Ethernet, 0, &f.data);
        }
        (curl, r0)
    }

    fn whole(curl: &[Pkt], id: u64) -> (Alert, Option<EvidenceRequest>) {
        let req = EvidenceRequest {
            shard: 0,
            from_ts_ns: curl[0].ts_ns,
            to_ts_ns: curl.last().unwrap().ts_ns,
            scope: Scope::Window { filter: None },
            limits: Default::default(),
        };
        (
            Alert::new(id, curl[1].ts_ns, "disk", AlertMode::Window, 1.0, 0.5, 0),
            Some(req),
        )
    }

    /// The state directory on a 400 KiB tmpfs: evidence of incompressible TLS traffic
    /// fills it (ENOSPC); then the disk is filled to the last block so alert lines fail
    /// too; then space is freed. Errors become counters and rate-limited one-line logs;
    /// the writer keeps going and writes again once it can; every file that exists is
    /// complete and reads in tshark; alerts.jsonl holds only whole lines; no temporary
    /// file is left.
    #[test]
    fn full_state_dir_counts_errors_and_keeps_files_intact() {
        if !nix::unistd::geteuid().is_root() {
            // Without root there is no tmpfs to fill; a read-only directory still works
            // for users other than root (root ignores permissions).
            readonly_dir_without_root();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (curl, r0) = setup(dir.path());
        let mnt = Mount::tmpfs(&dir.path().join("mnt"), "400k");
        let state = StateDir::create(&mnt.0.join("state")).unwrap();
        let (log_lines, log) = capture_log();
        let mut cfg = WriterConfig::new(state.clone());
        cfg.log = log;
        cfg.log_every = Duration::from_secs(3600);
        cfg.file.zstd_level = 1;
        let (tx, h) = EvidenceWriter::spawn(cfg, vec![r0.reader()]).unwrap();
        tx.clock(0, curl.last().unwrap().ts_ns, r0.last_seq());
        // Phase 1: ~75 KB per file into 400 KiB: the disk fills.
        for id in 1..=12 {
            let (a, r) = whole(&curl, id);
            tx.send_blocking(a, r);
        }
        wait_done(&h, 12);
        let s1 = h.snapshot();
        assert!(s1["evidence.write_errors"] >= 1, "{s1:?}");
        assert!(s1["evidence.files_written"] >= 2, "{s1:?}");
        {
            let l = log_lines.lock().unwrap();
            assert!(
                l.iter().any(|x| x.contains("No space left on device")),
                "{l:?}"
            );
            // Rate-limited: at most one line per kind (evidence, alerts.jsonl) within the
            // interval, however many errors.
            assert!(l.len() <= 2, "{l:?}");
            assert!(l.iter().all(|x| !x.contains('\n')));
        }
        let intact_before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(state.evidence_dir())
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        // Phase 2: not one free block. alerts.jsonl keeps ALERT_RESERVE bytes allocated
        // past its end, so alert lines (each saying why its evidence is missing) go on
        // being written for a while; once the reserve is used up they fail too, counted.
        let filler = fill(&mnt.0);
        let mut id = 12;
        let mut lines_on_full_disk = 0;
        loop {
            id += 1;
            let (a, r) = whole(&curl, id);
            tx.send_blocking(a, r);
            wait_done(&h, id);
            let s = h.snapshot();
            if s["alerts.write_errors"] > 0 {
                break;
            }
            lines_on_full_disk += 1;
            assert!(id < 2000, "the alert reserve never ran out: {s:?}");
        }
        let s2 = h.snapshot();
        let line_len = std::fs::metadata(state.alerts_path()).unwrap().len() / s2["alerts.written"];
        eprintln!("{lines_on_full_disk} alert lines of ~{line_len} B written on a full disk");
        assert!(
            lines_on_full_disk * line_len >= streamml_sensor::evidence::alertlog::ALERT_RESERVE / 2,
            "{lines_on_full_disk} lines of {line_len} B: the reserve did not hold"
        );
        assert!(
            s2["evidence.write_errors"] > s1["evidence.write_errors"] + lines_on_full_disk,
            "{s2:?}"
        );
        let n2 = id;
        // Phase 3: space again (the filler and the two oldest evidence files go); the
        // writer carries on.
        std::fs::remove_file(filler).unwrap();
        let mut intact_before = intact_before;
        intact_before.sort();
        for (p, _) in intact_before.drain(..2) {
            std::fs::remove_file(p).unwrap();
        }
        let (a, r) = whole(&curl, n2 + 1);
        tx.send_blocking(a, r);
        drop(tx);
        let s3 = h.join();
        assert_eq!(s3["alerts.written"], s2["alerts.written"] + 1, "{s3:?}");
        assert_eq!(
            s3["alerts.written"] + s3["alerts.write_errors"],
            n2 + 1,
            "{s3:?}"
        );
        // Files written before the trouble are unchanged.
        for (p, b) in &intact_before {
            assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
        }
        let alerts = check_state_files(&state, &curl);
        assert_eq!(alerts.len() as u64, s3["alerts.written"]);
        let last = alerts.last().unwrap();
        assert_eq!(last.alert_id, n2 + 1);
        assert_eq!(last.evidence.packets, curl.len() as u64);
        // Alerts whose evidence failed say why.
        assert!(alerts.iter().any(|a| a
            .evidence
            .error
            .as_deref()
            .is_some_and(|e| e.contains("No space left"))));
        let l = log_lines.lock().unwrap();
        assert!(l.iter().any(|x| x.contains("alerts.jsonl")), "{l:?}");
    }

    /// A state directory on a read-only filesystem (EROFS) at start: evidence and alert
    /// lines fail, counted and logged; once it is writable again both resume.
    #[test]
    fn readonly_state_dir_counts_errors_then_recovers() {
        if !nix::unistd::geteuid().is_root() {
            readonly_dir_without_root();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (curl, r0) = setup(dir.path());
        let mnt = Mount::tmpfs(&dir.path().join("mnt"), "4m");
        let state = StateDir::create(&mnt.0.join("state")).unwrap();
        mnt.remount("ro");
        let (log_lines, log) = capture_log();
        let mut cfg = WriterConfig::new(state.clone());
        cfg.log = log;
        let (tx, h) = EvidenceWriter::spawn(cfg, vec![r0.reader()]).unwrap();
        tx.clock(0, curl.last().unwrap().ts_ns, r0.last_seq());
        for id in 1..=3 {
            let (a, r) = whole(&curl, id);
            tx.send_blocking(a, r);
        }
        wait_done(&h, 3);
        let s1 = h.snapshot();
        assert_eq!(s1["alerts.write_errors"], 3, "{s1:?}");
        assert_eq!(s1["evidence.write_errors"], 3, "{s1:?}");
        {
            let l = log_lines.lock().unwrap();
            assert!(
                l.iter()
                    .any(|x| x.contains("Read-only file system") && x.contains("evidence")),
                "{l:?}"
            );
            assert!(
                l.iter()
                    .any(|x| x.contains("Read-only file system") && x.contains("alerts.jsonl")),
                "{l:?}"
            );
        }
        mnt.remount("rw");
        let (a, r) = whole(&curl, 4);
        tx.send_blocking(a, r);
        drop(tx);
        let s2 = h.join();
        assert_eq!(s2["alerts.written"], 1, "{s2:?}");
        let alerts = check_state_files(&state, &curl);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert_id, 4);
        assert_eq!(alerts[0].evidence.packets, curl.len() as u64);
    }

    fn readonly_dir_without_root() {
        use std::os::unix::fs::PermissionsExt;
        let curl = frames("basic/443-curl.pcap");
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(&dir.path().join("state")).unwrap();
        let mut r0 = small_ring(&state.ring_path(0), 1 << 20, 65_535, 0);
        for f in &curl {
            r0.append(f.ts_ns, f.orig_len, LinkType::Ethernet, 0, &f.data);
        }
        std::fs::set_permissions(state.evidence_dir(), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        let (log_lines, log) = capture_log();
        let mut cfg = WriterConfig::new(state.clone());
        cfg.log = log;
        let (tx, h) = EvidenceWriter::spawn(cfg, vec![r0.reader()]).unwrap();
        let req = EvidenceRequest::around(0, curl[5].ts_ns, 0, 0, Scope::Window { filter: None });
        tx.send_blocking(
            Alert::new(1, curl[5].ts_ns, "ro", AlertMode::Window, 1.0, 0.5, 0),
            Some(req),
        );
        tx.clock_blocking(0, curl.last().unwrap().ts_ns, r0.last_seq());
        drop(tx);
        let s = h.join();
        assert_eq!(s["evidence.write_errors"], 1);
        assert_eq!(s["alerts.written"], 1);
        assert!(log_lines.lock().unwrap()[0].contains("Permission denied"));
    }
}

mod recover_cli {
    use super::*;

    fn run(args: &[&str], state: &Path, out: &Path) -> (bool, String) {
        let o = Command::new(BIN)
            .args(["evidence", "recover", "--state-dir"])
            .arg(state)
            .args(args)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// tcpdump's own count for a filter on a capture: the oracle for --filter.
    fn tcpdump_count(rel: &str, filter: &str) -> usize {
        let o = Command::new("tcpdump")
            .args(["-nr"])
            .arg(common::pcaps_dir().join(rel))
            .arg(filter)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).lines().count()
    }

    /// Two shard rings (HTTP and HTTPS captures) recovered by the CLI: all packets in time
    /// order across shards; --since (RFC 3339) / --until (epoch seconds); --filter with
    /// tcpdump's semantics; a corrupted record skipped and counted; one-line errors.
    #[test]
    fn recover_merges_filters_and_counts_corrupt() {
        let http = frames("basic/http-get.pcap");
        let curl = frames("basic/443-curl.pcap");
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(&dir.path().join("state")).unwrap();
        {
            let mut r0 = small_ring(&state.ring_path(0), 1 << 20, 65_535, 0);
            let mut r1 = small_ring(&state.ring_path(1), 1 << 20, 65_535, 1);
            for f in &http {
                r0.append(f.ts_ns, f.orig_len, LinkType::Ethernet, 0, &f.data);
            }
            for f in &curl {
                r1.append(f.ts_ns, f.orig_len, LinkType::Ethernet, 0, &f.data);
            }
        }
        let out = |n: &str| dir.path().join(n);
        // Everything, time-ordered.
        let (ok, msg) = run(&[], state.root(), &out("all.pcap.zst"));
        assert!(ok, "{msg}");
        assert!(
            msg.contains(&format!("recovered {} packets", http.len() + curl.len())),
            "{msg}"
        );
        let (_, pk) = read_pcap_zst(&out("all.pcap.zst"));
        let mut want: Vec<Pkt> = http.iter().chain(curl.iter()).cloned().collect();
        want.sort_by_key(|p| p.ts_ns);
        assert_eq!(pk.len(), want.len());
        assert!(pk.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        let mut a = pk.clone();
        a.sort_by(|x, y| (x.ts_ns, &x.data).cmp(&(y.ts_ns, &y.data)));
        want.sort_by(|x, y| (x.ts_ns, &x.data).cmp(&(y.ts_ns, &y.data)));
        assert_eq!(a, want);
        assert_eq!(
            tshark_count(&out("all.pcap.zst")),
            (pk.len() as u64, String::new())
        );
        // Time range on the HTTPS capture.
        let since = streamml_sensor::evidence::time::rfc3339_ns(curl[10].ts_ns);
        let until = format!(
            "{}.{:09}",
            curl[50].ts_ns / 1_000_000_000,
            curl[50].ts_ns % 1_000_000_000
        );
        let (ok, msg) = run(
            &["--since", &since, "--until", &until],
            state.root(),
            &out("range.pcap.zst"),
        );
        assert!(ok, "{msg}");
        let (_, pk) = read_pcap_zst(&out("range.pcap.zst"));
        let want: Vec<Pkt> = http
            .iter()
            .chain(curl.iter())
            .filter(|p| p.ts_ns >= curl[10].ts_ns && p.ts_ns <= curl[50].ts_ns)
            .cloned()
            .collect();
        assert_eq!(pk.len(), want.len());
        // Filter, against tcpdump's own count.
        for f in [
            "tcp port 80",
            "tcp[tcpflags] & tcp-syn != 0",
            "greater 1000",
        ] {
            let (ok, msg) = run(&["--filter", f], state.root(), &out("f.pcap.zst"));
            assert!(ok, "{msg}");
            let (_, pk) = read_pcap_zst(&out("f.pcap.zst"));
            let want =
                tcpdump_count("basic/http-get.pcap", f) + tcpdump_count("basic/443-curl.pcap", f);
            assert_eq!(pk.len(), want, "filter {f}");
            std::fs::remove_file(out("f.pcap.zst")).unwrap();
        }
        // One-line errors.
        for (args, needle) in [
            (vec!["--filter", "tcp port"], "bad filter"),
            (vec!["--since", "yesterday"], "RFC 3339"),
        ] {
            let (ok, msg) = run(&args, state.root(), &out("e.pcap.zst"));
            assert!(!ok);
            assert!(msg.contains(needle), "{msg}");
            assert_eq!(msg.trim_end().lines().count(), 1, "{msg}");
        }
        let (ok, msg) = run(&[], &dir.path().join("nowhere"), &out("e.pcap.zst"));
        assert!(
            !ok && msg.contains("nowhere") && msg.trim_end().lines().count() == 1,
            "{msg}"
        );
        let (ok, msg) = run(&[], state.root(), &out("all.pcap.zst"));
        assert!(!ok && msg.contains("exists"), "{msg}");
        // Corrupt the first record of shard 0 (its timestamp): skipped and counted.
        {
            use std::os::unix::fs::FileExt;
            let p = state.ring_path(0);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap();
            let mut hl = [0u8; 4];
            f.read_exact_at(&mut hl, 12).unwrap();
            let header_len = u64::from(u32::from_le_bytes(hl));
            f.write_all_at(&[0x5a, 0x5a], header_len + 8).unwrap();
        }
        let (ok, msg) = run(&[], state.root(), &out("torn.pcap.zst"));
        assert!(ok, "{msg}");
        assert!(msg.contains("skipped: 1 corrupt, 0 torn,"), "{msg}");
        assert!(msg.contains("rings_unreadable 0;"), "{msg}");
        let (_, pk) = read_pcap_zst(&out("torn.pcap.zst"));
        assert_eq!(pk.len(), http.len() + curl.len() - 1);
        assert!(!pk.contains(&http[0]));
    }
}
