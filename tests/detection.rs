//! Detection end to end, through the `streamml-sensor` binary: labelled replays with the
//! default configuration (every attack episode alerts, with its packets in the evidence),
//! a benign hour, the sensor's window ROC-AUC against River's committed reference, kill -9
//! of a replay then `evidence recover`, evidence files read back with the zstd and tshark
//! commands, byte-identical alerts.jsonl for the same input, bad configuration values, and
//! a full or read-only state directory (a tmpfs this test mounts itself).
//!
//! Captures come from the sensor's deterministic generator (`streamml-sensor synth`); the
//! attack packets are identified from its labels file, independently of the detector.
//! `docs/detection.md` has the numbers and the commands.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{read_pcap_zst, Mount, Pkt};
use streamml_sensor::capture::synth::{Episode, EpisodeKind};
use streamml_sensor::capture::LinkType;
use streamml_sensor::evidence::{Alert, AlertMode, RingReader, StateDir};
use streamml_sensor::wire::{self, DecodeOptions};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");
const DEFAULT_CONFIG: &str = include_str!("../config/sensor.toml");
/// The host behaviour profile, appended to the default configuration to enable it.
const HOST_PROFILE: &str = include_str!("../config/host-profile.toml");

/// The default configuration with the host profile appended, written into `dir`.
fn with_host_profile(dir: &Path) -> PathBuf {
    let p = dir.join("with-hosts.toml");
    std::fs::write(&p, format!("{DEFAULT_CONFIG}\n{HOST_PROFILE}")).unwrap();
    p
}
const RIVER_GOLDEN: &str = include_str!("golden/river_window_auc.json");

/// sha256 of `eval-windows --seeds 1,2,3,4,5 --features-csv F` without its `score` column
/// (`cut -d, -f1-4,6- F | sha256sum`): the feature stream River's reference was computed
/// on. If this changes, regenerate tests/golden/river_window_auc.json (docs/detection.md).
const RIVER_FEATURES_SHA256: &str =
    "8a802b5bedbcb48a690aa22a28328fbe675cfc1d14c3de45f21f84a01f75202f";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running streamml-sensor")
}

fn ok(o: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what} failed: {stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Writes a generated capture (`preset` benign or labelled) and returns its labels.
fn synth(preset: &str, minutes: u32, seed: u64, out: &Path) -> Labels {
    let labels = out.with_extension("json");
    let o = run(&[
        "synth",
        "--preset",
        preset,
        "--minutes",
        &minutes.to_string(),
        "--seed",
        &seed.to_string(),
        "-o",
        s(out),
        "--labels",
        s(&labels),
    ]);
    ok(&o, "synth");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&labels).unwrap()).expect("labels JSON");
    Labels {
        start_ns: v["start_ns"].as_u64().unwrap(),
        duration_s: v["duration_s"].as_f64().unwrap(),
        episodes: serde_json::from_value(v["episodes"].clone()).unwrap(),
    }
}

struct Labels {
    start_ns: u64,
    duration_s: f64,
    episodes: Vec<Episode>,
}

/// Runs `replay`; returns stderr and the final counters (--stats-json).
fn replay(capture: &Path, state: &Path, extra: &[&str]) -> (String, BTreeMap<String, u64>) {
    // Not in the state directory's file system, which a test may fill.
    let stats_file = tempfile::NamedTempFile::new().unwrap();
    let stats = stats_file.path().to_path_buf();
    let mut args = vec!["replay", s(capture), "--state-dir", s(state)];
    args.extend_from_slice(&["--stats-json", s(&stats)]);
    args.extend_from_slice(extra);
    let stderr = ok(&run(&args), "replay");
    let st: BTreeMap<String, u64> =
        serde_json::from_slice(&std::fs::read(&stats).unwrap()).expect("stats JSON");
    (stderr, st)
}

fn alerts(state: &Path) -> Vec<Alert> {
    common::alerts(&state.join("alerts.jsonl"))
}

/// IPv4 endpoints, protocol and TCP flags of an Ethernet frame (the sensor's wire decoder).
fn endpoints(p: &Pkt) -> Option<([u8; 4], [u8; 4], u8, u8)> {
    let m = wire::decode(
        &p.data,
        p.orig_len,
        LinkType::Ethernet,
        &DecodeOptions {
            decode_tunnels: true,
        },
    )
    .ok()?;
    (m.ip_version == 4).then(|| {
        let a: [u8; 4] = m.src_ip[..4].try_into().unwrap();
        let b: [u8; 4] = m.dst_ip[..4].try_into().unwrap();
        (a, b, m.protocol, m.tcp_flags)
    })
}

/// Whether `p` is a packet of episode `e`: inside its time span (plus 1 s for replies) and
/// between attacker and target. The SYN flood spoofs its sources from 198.18.128.0/17
/// (src/capture/synth.rs), so there it is a SYN to the target from that block.
fn is_attack(e: &Episode, start_ns: u64, p: &Pkt) -> bool {
    let t0 = start_ns + (e.start_s * 1e9) as u64;
    let t1 = t0 + (e.duration_s * 1e9) as u64 + 1_000_000_000;
    if p.ts_ns < t0 || p.ts_ns > t1 {
        return false;
    }
    let Some((src, dst, proto, flags)) = endpoints(p) else {
        return false;
    };
    if (src == e.attacker && dst == e.target) || (src == e.target && dst == e.attacker) {
        return true;
    }
    // The slow scan probes random hosts of 198.19.128.0/17 (its label names the block).
    let in_scan_block = |a: [u8; 4]| a[0] == 198 && a[1] == 19 && a[2] >= 128;
    if e.kind == EpisodeKind::SlowScan
        && ((src == e.attacker && in_scan_block(dst)) || (dst == e.attacker && in_scan_block(src)))
    {
        return true;
    }
    e.kind == EpisodeKind::SynFlood
        && dst == e.target
        && proto == 6
        && flags & 0x12 == 0x02
        && src[0] == 198
        && src[1] == 18
        && src[2] >= 128
}

/// Every alert line an analyst reads (an incident's first line, `anomaly`, and the alerts
/// that joined it, `anomaly_update`) with the packets of its evidence: first lines
/// through [`check_evidence`] (every check), updates read as they are.
fn alert_lines(state: &Path, tshark: bool) -> (Vec<Alert>, Vec<Vec<Pkt>>) {
    let all = alerts(state);
    let mut lines: Vec<Alert> = all
        .iter()
        .filter(|a| a.event_type == "anomaly")
        .cloned()
        .collect();
    let mut pk = check_evidence(state, &lines, tshark);
    for a in all.into_iter().filter(|a| a.event_type == "anomaly_update") {
        pk.push(match &a.evidence.path {
            Some(rel) => read_pcap_zst(&state.join(rel)).1,
            None => Vec::new(),
        });
        lines.push(a);
    }
    (lines, pk)
}

/// Checks every evidence file of a replay against its alert line: present, decompresses
/// with the zstd command, reads in tshark without warnings, as many packets as the alert
/// says, every packet inside the requested span, and (window alerts: pre_s = 5) packets
/// from before the trigger window. Returns each alert's packets (empty without a file).
fn check_evidence(state: &Path, alerts: &[Alert], tshark: bool) -> Vec<Vec<Pkt>> {
    let mut out = Vec::new();
    for a in alerts {
        let Some(rel) = &a.evidence.path else {
            assert!(
                a.evidence.packets == 0,
                "alert {} has packets but no file",
                a.alert_id
            );
            out.push(Vec::new());
            continue;
        };
        let path = state.join(rel);
        let (link, pk) = read_pcap_zst(&path);
        assert_eq!(link, 1, "{rel}: link type");
        assert_eq!(
            pk.len() as u64,
            a.evidence.packets,
            "{rel}: packets in the file vs the alert line"
        );
        if tshark {
            assert_eq!(
                common::tshark_count_clean(&path),
                a.evidence.packets,
                "{rel}: tshark"
            );
        }
        assert!(!pk.is_empty(), "{rel}: empty evidence file");
        match a.anomaly.mode {
            AlertMode::Window => {
                let w = a.anomaly.window.expect("window span");
                let (from, to) = (w.start - 5_000_000_000, w.end + 5_000_000_000);
                assert!(
                    pk.iter().all(|p| p.ts_ns >= from && p.ts_ns <= to),
                    "{rel}: packet outside [start - pre, end + post]"
                );
                assert!(
                    pk.iter().any(|p| p.ts_ns < w.start),
                    "{rel}: no pre-trigger packet (before the window)"
                );
                assert!(pk.iter().any(|p| p.ts_ns < a.ts_ns()));
            }
            AlertMode::Host => {
                // Every packet from or to the host, in [alert - pre_s, alert + post_s]
                // (the default host profile: 120 s, 30 s).
                let host: std::net::IpAddr =
                    a.anomaly.extra["host"].as_str().unwrap().parse().unwrap();
                let std::net::IpAddr::V4(h) = host else {
                    panic!("{rel}: IPv6 host")
                };
                let (from, to) = (a.ts_ns() - 120_000_000_000, a.ts_ns() + 30_000_000_000);
                assert!(
                    pk.iter().all(|p| p.ts_ns >= from
                        && p.ts_ns <= to
                        && endpoints(p)
                            .is_some_and(|(s, d, _, _)| s == h.octets() || d == h.octets())),
                    "{rel}: a packet outside the span or not the host's"
                );
            }
            AlertMode::Flow => {
                let first_ms = a.anomaly.extra["flow_first_seen_ms"].as_u64().unwrap();
                assert!(
                    pk.iter()
                        .all(|p| p.ts_ns >= first_ms * 1_000_000
                            && p.ts_ns <= a.ts_ns() + 2_000_000_000),
                    "{rel}: packet outside the flow's span + post"
                );
            }
        }
        out.push(pk);
    }
    out
}

/// Alerts matched to episodes by the attack packets in their evidence.
#[derive(Default)]
struct Score {
    /// Per kind: (episodes, episodes with an alert holding their packets).
    recall: BTreeMap<&'static str, (u32, u32)>,
    /// Per kind: (alerts holding its packets, alerts during its episodes holding none).
    precision: BTreeMap<&'static str, (u32, u32)>,
    /// Alerts holding no attack packet, outside every episode.
    false_outside: u32,
    alerts: u32,
    minutes: f64,
}

impl Score {
    fn add(&mut self, labels: &Labels, alerts: &[Alert], packets: &[Vec<Pkt>]) -> Vec<String> {
        self.minutes += labels.duration_s / 60.0;
        let mut found = vec![false; labels.episodes.len()];
        let mut missed = Vec::new();
        for (a, pk) in alerts.iter().zip(packets) {
            self.alerts += 1;
            let mut kinds = Vec::new();
            for (i, e) in labels.episodes.iter().enumerate() {
                if pk.iter().any(|p| is_attack(e, labels.start_ns, p)) {
                    found[i] = true;
                    kinds.push(e.kind);
                }
            }
            for k in &kinds {
                self.precision.entry(k.name()).or_default().0 += 1;
            }
            if kinds.is_empty() {
                // A false alert: charged to the episode it fired during, if any.
                let during = labels.episodes.iter().find(|e| {
                    let t0 = labels.start_ns + (e.start_s * 1e9) as u64;
                    let t1 = t0 + ((e.duration_s + 130.0) * 1e9) as u64;
                    (t0..=t1).contains(&a.ts_ns())
                });
                match during {
                    Some(e) => self.precision.entry(e.kind.name()).or_default().1 += 1,
                    None => self.false_outside += 1,
                }
            }
        }
        for (i, e) in labels.episodes.iter().enumerate() {
            let r = self.recall.entry(e.kind.name()).or_default();
            r.0 += 1;
            r.1 += u32::from(found[i]);
            if !found[i] {
                missed.push(format!("{}@{:.0}s", e.kind.name(), e.start_s));
            }
        }
        missed
    }

    fn table(&self) -> String {
        let mut t = String::from(
            "| kind | episodes | detected | recall | alerts with its packets | false alerts during it | precision |\n|---|---|---|---|---|---|---|\n",
        );
        for (k, (n, d)) in &self.recall {
            let (tp, fp) = self.precision.get(k).copied().unwrap_or_default();
            t += &format!(
                "| {k} | {n} | {d} | {:.2} | {tp} | {fp} | {:.2} |\n",
                f64::from(*d) / f64::from(*n),
                f64::from(tp) / f64::from((tp + fp).max(1)),
            );
        }
        t += &format!(
            "\n{} alerts in {:.0} min of traffic; {} false alerts outside the episodes\n",
            self.alerts, self.minutes, self.false_outside
        );
        t
    }
}

/// Seeds of the labelled test: `STREAMML_DETECTION_SEEDS` ("1-20" or "1,4,6") for the
/// figures in docs/detection.md, else four seeds (4 and 6 failed before the detector
/// fixes of this branch: a SYN flood before 650 s, an exfil flow inside the gate).
fn labelled_seeds() -> Vec<u64> {
    seeds_from("STREAMML_DETECTION_SEEDS", &[1, 4, 6, 7])
}

/// Seeds from an environment variable ("1-20" or "1,4,6"), else `default`.
fn seeds_from(var: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(var) {
        Ok(v) if v.contains('-') => {
            let (a, b) = v.split_once('-').unwrap();
            (a.trim().parse().unwrap()..=b.trim().parse().unwrap()).collect()
        }
        Ok(v) => v.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => default.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// (a) + (d): labelled replays and a benign hour with the default configuration
// ---------------------------------------------------------------------------------------

mod labelled {
    use super::*;

    /// For each seed, a 20-minute labelled capture replayed with the embedded default
    /// configuration (no --config; one shard so that the result does not depend on the
    /// machine's core count): every episode raises at least one alert whose evidence holds
    /// that episode's attack packets; every evidence file passes [`check_evidence`] (tshark
    /// on the first two seeds, the zstd crate on all); false alerts at most one per 10
    /// minutes. Prints precision and recall per kind.
    #[test]
    fn every_episode_alerts_with_its_packets() {
        let seeds = labelled_seeds();
        let mut score = Score::default();
        let mut failures = Vec::new();
        for (i, &seed) in seeds.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let cap = dir.path().join("lab.pcap");
            let labels = synth("labelled", 20, seed, &cap);
            assert_eq!(labels.episodes.len(), 4);
            let state = dir.path().join("state");
            let (_, st) = replay(&cap, &state, &["--shards", "1"]);
            std::fs::remove_file(&cap).unwrap();
            let al = alerts(&state);
            assert_eq!(st["detect.alerts"], al.len() as u64);
            assert_eq!(st["evidence.write_errors"], 0);
            let pk = check_evidence(&state, &al, i < 2);
            for a in &al {
                assert!(!a.evidence.dropped && !a.evidence.truncated, "{a:?}");
            }
            let missed = score.add(&labels, &al, &pk);
            if !missed.is_empty() {
                failures.push(format!(
                    "seed {seed}: no alert with the packets of {missed:?}"
                ));
            }
        }
        eprintln!(
            "labelled replay, seeds {seeds:?}, default config, --shards 1:\n{}",
            score.table()
        );
        assert!(failures.is_empty(), "{failures:?}");
        let false_alerts =
            score.false_outside + score.precision.values().map(|(_, fp)| fp).sum::<u32>();
        assert!(
            f64::from(false_alerts) <= score.minutes / 10.0,
            "{false_alerts} false alerts in {} min",
            score.minutes
        );
    }

    /// A 60-minute benign capture (`--preset benign`) with the default configuration:
    /// at most one alert per 10 minutes of traffic (measured: none), and any evidence
    /// file it has reads back.
    #[test]
    fn benign_hour_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("benign.pcap");
        synth("benign", 60, 11, &cap);
        let state = dir.path().join("state");
        let (_, st) = replay(&cap, &state, &["--shards", "1"]);
        std::fs::remove_file(&cap).unwrap();
        let al = alerts(&state);
        eprintln!("benign hour: {} alerts", al.len());
        assert!(st["detect.windows_scored"] >= 3500, "{st:?}");
        assert!(st["detect.flows_scored"] >= 300_000, "{st:?}");
        assert!(
            al.len() <= 6,
            "{} alerts in 60 min of benign traffic",
            al.len()
        );
        check_evidence(&state, &al, true);
    }
}

// ---------------------------------------------------------------------------------------
// Regression: flow evidence after the evidence ring wraps
// ---------------------------------------------------------------------------------------

mod ring_wrap {
    use super::*;

    /// The reader appends every frame to the evidence ring before a scorer sees it; in
    /// replay it used to run up to 65 536 packets ahead, more than a small ring holds, so
    /// once the ring had wrapped every flow alert came out with `packets: 0, truncated:
    /// true`. Here: a 16 MiB ring (~45 s of this traffic), flows expire after 10 s idle,
    /// a low fixed flow threshold gives ~100 flow alerts, all after several wraps; every
    /// one must hold all of its flow's packets.
    #[test]
    fn flow_evidence_survives_ring_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("benign.pcap");
        synth("benign", 10, 3, &cap);
        let cfg = dir.path().join("wrap.toml");
        let text = DEFAULT_CONFIG
            .replacen("idle_timeout_s = 120 ", "idle_timeout_s = 10 ", 1)
            .replacen(
                "quantile = 0.999\nquantile_window = 20000\nmin_score = 0.85\nrequire_out_of_range = true\ncooldown_s = 300",
                "fixed = 0.7\ncooldown_s = 20",
                1,
            )
            // Every alert, no budget: this test wants many flow alerts.
            .replacen("max_alerts_per_min = 10\n", "max_alerts_per_min = 0\n", 1);
        assert!(text.contains("fixed = 0.7") && text.contains("idle_timeout_s = 10 "));
        std::fs::write(&cfg, text).unwrap();
        let state = dir.path().join("state");
        let (_, st) = replay(
            &cap,
            &state,
            &["--config", s(&cfg), "--ring-mib", "16", "--shards", "1"],
        );
        let info = RingReader::open_readonly(&StateDir::create(&state).unwrap().ring_path(0))
            .unwrap()
            .info();
        assert!(
            info.tail > 3 * info.data_len,
            "the ring did not wrap several times: {info:?}"
        );
        let al: Vec<Alert> = alerts(&state)
            .into_iter()
            .filter(|a| a.anomaly.mode == AlertMode::Flow)
            .collect();
        assert!(al.len() >= 50, "only {} flow alerts: {st:?}", al.len());
        let bad: Vec<String> = al
            .iter()
            .filter(|a| {
                a.evidence.truncated
                    || a.evidence.packets < a.anomaly.extra["flow_packets"].as_u64().unwrap()
            })
            .map(|a| {
                format!(
                    "alert {} at {}: {} of {} packets, truncated {}",
                    a.alert_id,
                    a.ts_ns(),
                    a.evidence.packets,
                    a.anomaly.extra["flow_packets"],
                    a.evidence.truncated
                )
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{} of {} flow alerts lost evidence: {:?}",
            bad.len(),
            al.len(),
            &bad[..bad.len().min(5)]
        );
        assert_eq!(st["evidence.records_lost_overwritten"], 0, "{st:?}");
        check_evidence(&state, &al, false);
    }
}

// ---------------------------------------------------------------------------------------
// (b) window ROC-AUC against River's committed reference
// ---------------------------------------------------------------------------------------

mod roc_auc {
    use super::*;

    /// `eval-windows` on seeds 1–5: mean ROC-AUC at least 0.95 and above River's committed
    /// figure (tests/golden/river_window_auc.json, River 0.26.1's MinMaxScaler → HST on
    /// the same windows), on every seed too; the feature stream it writes is still the one
    /// River's figure was computed on (sha256 without the score column, and the window
    /// counts per seed).
    #[test]
    fn sensor_beats_river_on_the_same_windows() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("features.csv");
        let out = dir.path().join("eval.json");
        let o = run(&[
            "eval-windows",
            "--seeds",
            "1,2,3,4,5",
            "--features-csv",
            s(&csv),
            "--out",
            s(&out),
        ]);
        ok(&o, "eval-windows");
        let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let river: serde_json::Value = serde_json::from_str(RIVER_GOLDEN).unwrap();
        let mean = ev["mean_auc"].as_f64().unwrap();
        let river_mean = river["mean_auc"].as_f64().unwrap();
        eprintln!("window ROC-AUC, seeds 1-5: sensor {mean:.4}, River (committed) {river_mean:.4}");
        assert!(mean >= 0.95, "sensor mean ROC-AUC {mean}");
        assert!(mean > river_mean, "{mean} <= River's {river_mean}");
        // Same feature stream as River's reference.
        assert_eq!(ev["features"], river["features"], "feature list changed");
        assert_eq!(ev["warmup"], river["warmup"]);
        for r in ev["seeds"].as_array().unwrap() {
            let seed = r["seed"].as_u64().unwrap().to_string();
            let rv = &river["seeds"][&seed];
            assert_eq!(r["windows"], rv["windows"], "seed {seed}: windows");
            assert_eq!(
                r["anomalous"], rv["anomalous"],
                "seed {seed}: anomalous windows"
            );
            let (a, b) = (r["auc"].as_f64().unwrap(), rv["auc"].as_f64().unwrap());
            assert!(a > b, "seed {seed}: sensor {a} <= River {b}");
        }
        // The raw features River read: everything but the sensor's score column.
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut stripped = String::with_capacity(text.len());
        for line in text.lines() {
            let mut cols: Vec<&str> = line.split(',').collect();
            cols.remove(4);
            stripped += &cols.join(",");
            stripped.push('\n');
        }
        assert!(text.starts_with("seed,window_start_ns,label,kind,score,"));
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stripped.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let sum = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            sum.split_whitespace().next(),
            Some(RIVER_FEATURES_SHA256),
            "the window feature stream changed: River's reference \
             (tests/golden/river_window_auc.json) is stale; regenerate it (docs/detection.md)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// (c) kill -9 of a replay, then evidence recover
// ---------------------------------------------------------------------------------------

mod kill9 {
    use super::*;

    /// A replay (child process) of a 30-minute benign capture with a 16 MiB ring is killed
    /// with SIGKILL by PID once its ring holds 300 000 records; `evidence recover` then
    /// dumps the ring: tshark reads it without warnings, the recover reports nothing torn,
    /// and the packets are a consecutive run of the capture, byte for byte, ending at or
    /// after the last record seen before the kill: the most recent packets.
    #[test]
    fn replay_killed_then_recover() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("benign.pcap");
        synth("benign", 30, 5, &cap);
        let state = dir.path().join("state");
        let ring = state.join("ring").join("shard-0.ring");
        let mut child = Command::new(BIN)
            .args(["replay", s(&cap), "--state-dir", s(&state)])
            .args(["--ring-mib", "16", "--shards", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let t0 = Instant::now();
        let seen = loop {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "replay made no progress"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "replay ended before it could be killed"
            );
            // The file appears before its header is written: retry until it maps.
            if let Ok(r) = RingReader::open_readonly(&ring) {
                let h = r.head_seq();
                if h >= 300_000 {
                    break h;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9), "{st:?}");
        let out = dir.path().join("recovered.pcap.zst");
        let o = run(&[
            "evidence",
            "recover",
            "--state-dir",
            s(&state),
            "-o",
            s(&out),
        ]);
        let stderr = ok(&o, "evidence recover");
        assert!(stderr.contains(" 0 corrupt, 0 torn,"), "{stderr}");
        let (link, rec) = read_pcap_zst(&out);
        assert_eq!(link, 1);
        assert_eq!(common::tshark_count_clean(&out), rec.len() as u64);
        assert!(rec.len() > 10_000, "only {} packets recovered", rec.len());
        // Find the recovered run in the capture (seq = index + 1: replay appends every
        // frame in order).
        let f = std::io::BufReader::new(std::fs::File::open(&cap).unwrap());
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        let mut idx = 0u64;
        let mut k = 0usize;
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            idx += 1;
            let cur = Pkt {
                ts_ns: p.timestamp.as_nanos() as u64,
                orig_len: p.orig_len,
                data: p.data.into_owned(),
            };
            if k == 0 && cur != rec[0] {
                continue;
            }
            assert_eq!(
                cur, rec[k],
                "recovered packet {k} is not capture frame {idx}"
            );
            k += 1;
            if k == rec.len() {
                break;
            }
        }
        assert_eq!(k, rec.len(), "recovered packets not found in the capture");
        assert!(
            idx >= seen,
            "last recovered frame {idx} < ring head {seen} seen before the kill"
        );
        assert!(
            idx - rec.len() as u64 > 0,
            "the ring did not wrap: not a 'most recent' test"
        );
    }
}

// ---------------------------------------------------------------------------------------
// (e) determinism
// ---------------------------------------------------------------------------------------

mod determinism {
    use super::*;

    fn evidence_contents(state: &Path) -> BTreeMap<String, Vec<Pkt>> {
        std::fs::read_dir(state.join("evidence"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    read_pcap_zst(&p).1,
                )
            })
            .collect()
    }

    /// The same labelled capture replayed twice with the default configuration gives a
    /// byte-identical alerts.jsonl and identical evidence, with one shard and with two
    /// (checked separately: the alert ids depend on the shard count).
    #[test]
    fn same_input_same_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("lab.pcap");
        synth("labelled", 20, 4, &cap);
        for shards in ["1", "2"] {
            let mut runs = Vec::new();
            for i in 0..2 {
                let state = dir.path().join(format!("s{shards}-{i}"));
                replay(&cap, &state, &["--shards", shards]);
                let bytes = std::fs::read(state.join("alerts.jsonl")).unwrap();
                runs.push((bytes, evidence_contents(&state)));
            }
            let n = runs[0].0.iter().filter(|&&b| b == b'\n').count();
            assert!(n >= 4, "--shards {shards}: only {n} alerts");
            assert!(
                runs[0].0 == runs[1].0,
                "--shards {shards}: alerts.jsonl differs between two runs"
            );
            assert!(
                runs[0].1 == runs[1].1,
                "--shards {shards}: evidence differs"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// (f) bad input
// ---------------------------------------------------------------------------------------

mod bad_input {
    use super::*;

    /// Invalid configuration values through the CLI: exit code 2, one line on stderr that
    /// names the file and the key.
    #[test]
    fn bad_config_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cap =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps/basic/443-curl.pcap");
        let cases: &[(&str, &str, &str)] = &[
            ("window_s = 1.0", "window_s = 0.0", "window_s"),
            ("window_s = 1.0", "window_s = -1.5", "window_s"),
            ("height = 8", "height = 0", "hst.height"),
            ("height = 10", "height = 0", "hst.height"),
            ("quantile = 0.995", "quantile = 1.5", "threshold.quantile"),
            ("min_score = 0.6", "min_score = -0.1", "threshold.min_score"),
            ("quantile = 0.995 ", "fixed = 1.2 ", "threshold.fixed"),
            ("quantile = 0.999\n", "fixed = -0.5\n", "threshold.fixed"),
            (
                "\"bidirectional_packets\",",
                "\"bidirectional_packets\", \"no_such_feature\",",
                "no_such_feature",
            ),
            (
                "window_s = 1.0",
                "window_s = 1.0\nwindow_features = [\"packets\", \"bogus\"]",
                "window_features",
            ),
            (
                "filter = \"tcp or udp\"",
                "filter = \"tcp and and\"",
                "filter",
            ),
            ("filter = \"\"", "filter = \"port 99999\"", "filter"),
        ];
        // The host profile (appended to the default configuration).
        let host_cases: &[(&str, &str, &str)] = &[
            ("host_rate = 500", "host_rate = 0", "host_rate"),
            ("host_rate = 500", "host_rate = -3.5", "host_rate"),
            ("host_table = 16384", "host_table = 1", "host_table"),
            (
                "host_table = 16384",
                "host_table = 99999999999",
                "host_table",
            ),
            (
                "\"dst_rarity\"]",
                "\"dst_rarity\", \"nope\"]",
                "host_features",
            ),
            ("scope = \"flow\"", "scope = \"host\"", "evidence.scope"),
            (
                "mode = \"flow\"",
                "mode = \"flow\"\nhost_features = [\"src_pkts_1\"]",
                "host_features",
            ),
            (
                "host_table = 16384",
                "host_table = 16384\nbeacon_ignore_hosts = [\"10.0.0.0/33\"]",
                "beacon_ignore_hosts",
            ),
            (
                "host_table = 16384",
                "host_table = 16384\nbeacon_ignore_hosts = [\"not-an-address\"]",
                "beacon_ignore_hosts",
            ),
            (
                "host_table = 16384",
                "host_table = 16384\nbeacon_ignore_ports = [70000]",
                "beacon_ignore_ports",
            ),
            (
                "mode = \"flow\"",
                "mode = \"flow\"\nbeacon_ignore_ports = [161]",
                "beacon_ignore_ports",
            ),
        ];
        let with_hosts = format!("{DEFAULT_CONFIG}\n{HOST_PROFILE}");
        let all = cases
            .iter()
            .map(|c| (DEFAULT_CONFIG, c))
            .chain(host_cases.iter().map(|c| (with_hosts.as_str(), c)));
        for (i, (base, (from, to, key))) in all.enumerate() {
            assert!(
                base.contains(from),
                "case {i}: {from:?} not in the default config"
            );
            let cfg = dir.path().join(format!("bad{i}.toml"));
            std::fs::write(&cfg, base.replacen(from, to, 1)).unwrap();
            let state = dir.path().join(format!("state{i}"));
            let o = run(&[
                "replay",
                s(&cap),
                "--config",
                s(&cfg),
                "--state-dir",
                s(&state),
            ]);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "case {i} ({to}): {stderr}");
            assert_eq!(
                stderr.lines().count(),
                1,
                "case {i}: not one line: {stderr}"
            );
            assert!(
                stderr.contains(key) && stderr.contains(&format!("bad{i}.toml")),
                "case {i}: error does not name {key}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }

    /// A config that alerts on many flows (low fixed threshold, short idle timeout):
    /// thousands of small evidence files.
    fn noisy_config(dir: &Path) -> PathBuf {
        let p = dir.join("noisy.toml");
        let text = DEFAULT_CONFIG
            .replacen("idle_timeout_s = 120 ", "idle_timeout_s = 10 ", 1)
            .replacen(
                "quantile = 0.999\nquantile_window = 20000\nmin_score = 0.85\nrequire_out_of_range = true\ncooldown_s = 300",
                "fixed = 0.6\ncooldown_s = 20",
                1,
            )
            // Every alert, no budget: the disk must fill.
            .replacen("max_alerts_per_min = 10\n", "max_alerts_per_min = 0\n", 1);
        assert!(text.contains("fixed = 0.6"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Every evidence file that exists is whole and matches its alert line (if the line
    /// made it); every line is whole JSON; no temporary file is left. tshark on a few.
    fn check_intact(state: &Path) -> Vec<Alert> {
        let al = alerts(state);
        let by_path: BTreeMap<String, &Alert> = al
            .iter()
            .filter_map(|a| a.evidence.path.clone().map(|p| (p, a)))
            .collect();
        for (n, e) in std::fs::read_dir(state.join("evidence"))
            .unwrap()
            .enumerate()
        {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "temporary file left: {name}");
            let (link, pk) = read_pcap_zst(&p);
            assert_eq!(link, 1);
            assert!(!pk.is_empty(), "{name}");
            if let Some(a) = by_path.get(&format!("evidence/{name}")) {
                assert_eq!(a.evidence.packets, pk.len() as u64, "{name}");
            }
            if n < 3 {
                assert_eq!(common::tshark_count_clean(&p), pk.len() as u64);
            }
        }
        for a in &al {
            if let Some(rel) = &a.evidence.path {
                assert!(
                    state.join(rel).exists(),
                    "{rel} in alerts.jsonl but missing"
                );
            }
        }
        al
    }

    /// The state directory on a 16 MiB tmpfs, 8 MiB of it the preallocated ring: the
    /// evidence of ~3 000 flow alerts fills it. The replay completes (exit 0), disk errors
    /// become counters and rate-limited log lines naming the file and the cause, and every
    /// file already written stays whole.
    #[test]
    fn full_state_dir_counts_errors_and_completes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: no tmpfs; the read-only case below still runs");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("benign.pcap");
        synth("benign", 10, 3, &cap);
        let cfg = noisy_config(dir.path());
        let mnt = dir.path().join("mnt");
        let _m = Mount::tmpfs(&mnt, "16m");
        let state = mnt.join("state");
        let (stderr, st) = replay(
            &cap,
            &state,
            &["--config", s(&cfg), "--ring-mib", "8", "--shards", "1"],
        );
        assert!(st["detect.alerts"] >= 1000, "{st:?}");
        assert!(st["evidence.write_errors"] > 0, "disk never filled: {st:?}");
        assert!(st["evidence.files_written"] > 100, "{st:?}");
        assert_eq!(
            st["alerts.written"] + st["alerts.write_errors"],
            st["detect.alerts"],
            "{st:?}"
        );
        let logs: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("No space left on device") || l.contains("short write"))
            .collect();
        assert!(!logs.is_empty(), "no log line: {stderr}");
        assert!(
            logs.len() <= 10,
            "log lines are not rate-limited: {}",
            logs.len()
        );
        assert!(stderr.contains("evidence.write_errors="), "{stderr}");
        let al = check_intact(&state);
        assert_eq!(al.len() as u64, st["alerts.written"]);
        assert!(al.iter().any(|a| a.evidence.error.is_some()));
    }

    /// evidence/ made read-only (a read-only bind mount: root ignores permissions) after a
    /// first replay wrote files there: a second replay completes, counts one write error
    /// per evidence file and logs it, still appends every alert line (alerts.jsonl is
    /// writable) with the error in it, and the first run's files and lines are unchanged.
    #[test]
    fn readonly_evidence_dir_counts_errors_and_keeps_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("lab.pcap");
        synth("labelled", 20, 6, &cap);
        let state = dir.path().join("state");
        replay(&cap, &state, &["--shards", "1"]);
        let before_alerts = std::fs::read(state.join("alerts.jsonl")).unwrap();
        let mut before_files = BTreeMap::new();
        for e in std::fs::read_dir(state.join("evidence")).unwrap() {
            let p = e.unwrap().path();
            before_files.insert(p.clone(), std::fs::read(&p).unwrap());
        }
        let n1 = alerts(&state).len();
        assert!(n1 >= 4 && before_files.len() == n1);
        let ev = state.join("evidence");
        let _m = if nix::unistd::geteuid().is_root() {
            Some(Mount::readonly_bind(&ev))
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ev, std::fs::Permissions::from_mode(0o555)).unwrap();
            None
        };
        // The same replay again, cold (a replay continues the models a previous one saved
        // in models/; this test wants the same alerts as the first run).
        std::fs::remove_dir_all(state.join("models")).unwrap();
        let (stderr, st) = replay(&cap, &state, &["--shards", "1"]);
        assert_eq!(st["evidence.write_errors"], n1 as u64, "{st:?}");
        assert_eq!(st["alerts.written"], n1 as u64, "{st:?}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("streamml-sensor: evidence: writing ")
                    && (l.contains("Read-only file system") || l.contains("Permission denied"))),
            "{stderr}"
        );
        let after = std::fs::read(state.join("alerts.jsonl")).unwrap();
        assert_eq!(&after[..before_alerts.len()], &before_alerts[..]);
        let al = alerts(&state);
        assert_eq!(al.len(), 2 * n1);
        for a in &al[n1..] {
            assert!(
                a.evidence.path.is_none() && a.evidence.error.is_some(),
                "{a:?}"
            );
        }
        for (p, b) in &before_files {
            assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
        }
        check_evidence(&state, &al[..n1], true);
    }

    /// `[profile.evidence] snaplen` and `max_packets` shape the files: the same alerts as
    /// with the defaults, each file the first `max_packets` packets of the uncapped one,
    /// each cut to `snaplen`, and the packets left out counted (`evidence.packets_capped`).
    #[test]
    fn profile_snaplen_and_max_packets_shape_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("lab.pcap");
        synth("labelled", 20, 6, &cap);
        let base =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sensor.toml"))
                .unwrap();
        let mut text = base
            .replace("max_packets = 100000 ", "# max_packets = 100000 ")
            .replace(
                "[profile.evidence]\n",
                "[profile.evidence]\nmax_packets = 50\n",
            );
        for (from, to) in [
            (
                "snaplen = 1514                      # 64..262144\n# max_packets",
                "snaplen = 96\n# max_packets",
            ),
            (
                "pre_s = 0\npost_s = 2\n",
                "pre_s = 0\npost_s = 2\nsnaplen = 96\n",
            ),
        ] {
            assert!(text.contains(from), "config/sensor.toml changed: {from:?}");
            text = text.replacen(from, to, 1);
        }
        assert_eq!(text.matches("max_packets = 50").count(), 2);
        let cfg = dir.path().join("capped.toml");
        std::fs::write(&cfg, &text).unwrap();
        let (full, capped) = (dir.path().join("full"), dir.path().join("capped"));
        let (_, st_full) = replay(&cap, &full, &["--shards", "1"]);
        let (_, st) = replay(&cap, &capped, &["--shards", "1", "--config", s(&cfg)]);
        let (a_full, a_cap) = (alerts(&full), alerts(&capped));
        assert!(a_full.len() >= 4);
        assert_eq!(a_full.len(), a_cap.len());
        let mut left_out = 0u64;
        let mut cut = 0;
        for (a, b) in a_full.iter().zip(&a_cap) {
            assert_eq!(a.evidence.path, b.evidence.path);
            let Some(rel) = &a.evidence.path else {
                continue;
            };
            let (_, pf) = read_pcap_zst(&full.join(rel));
            let (_, pc) = read_pcap_zst(&capped.join(rel));
            assert_eq!(pc.len(), pf.len().min(50), "{rel}");
            assert_eq!(b.evidence.packets, pc.len() as u64);
            left_out += (pf.len() - pc.len()) as u64;
            for (x, y) in pf.iter().zip(&pc) {
                assert_eq!(y.ts_ns, x.ts_ns);
                assert_eq!(y.orig_len, x.orig_len);
                assert_eq!(y.data[..], x.data[..x.data.len().min(96)]);
                cut += usize::from(x.data.len() > 96);
            }
        }
        assert!(left_out > 0 && cut > 0, "the test must cap something");
        assert_eq!(st["evidence.packets_capped"], left_out);
        assert_eq!(st_full["evidence.packets_capped"], 0);
    }
}

// ---------------------------------------------------------------------------------------
// Deployment-like traffic (issue 13): a flood does not become the new normal, the alert
// budget summarises a storm, flows alert while active
// ---------------------------------------------------------------------------------------

mod deployment {
    use super::*;

    /// Seeds of the deployment tests: `STREAMML_DEPLOYMENT_SEEDS` ("1-20" or "1,4"),
    /// else two.
    fn seeds() -> Vec<u64> {
        seeds_from("STREAMML_DEPLOYMENT_SEEDS", &[1, 2])
    }

    fn span_ns(labels: &Labels, e: &Episode) -> (u64, u64) {
        let t0 = labels.start_ns + (e.start_s * 1e9) as u64;
        (t0, t0 + (e.duration_s * 1e9) as u64)
    }

    /// The alerts (event_type "anomaly") of a replay of `cap` whose evidence holds no
    /// packet of any episode and that fired in `[from, to)`, and whether one alert held
    /// packets of `episode`.
    fn quiet_false_alerts(
        state: &Path,
        labels: &Labels,
        episode: usize,
        from: u64,
        to: u64,
        tshark: bool,
    ) -> (Vec<String>, bool) {
        let (al, pk) = alert_lines(state, tshark);
        let mut detected = false;
        let mut false_alerts = Vec::new();
        for (a, p) in al.iter().zip(&pk) {
            let hits: Vec<usize> = (0..labels.episodes.len())
                .filter(|&i| {
                    p.iter()
                        .any(|x| is_attack(&labels.episodes[i], labels.start_ns, x))
                })
                .collect();
            detected |= hits.contains(&episode);
            if hits.is_empty() && (from..to).contains(&a.ts_ns()) {
                false_alerts.push(format!(
                    "alert {} {} {} at +{:.0}s score {:.3}",
                    a.alert_id,
                    a.anomaly.profile,
                    if a.flow.is_some() { "flow" } else { "window" },
                    (a.ts_ns() - from) as f64 / 1e9,
                    a.anomaly.score
                ));
            }
        }
        // A budget summary in the quiet period is an alert an analyst reads, too.
        for a in alerts(state) {
            if a.event_type == "anomaly_summary" && (from..to).contains(&a.ts_ns()) {
                false_alerts.push(format!(
                    "summary of {} alerts",
                    a.anomaly.extra["suppressed"]
                ));
            }
        }
        (false_alerts, detected)
    }

    /// `synth --preset deployment`: a 5 s SYN flood at 20 000 pps from spoofed sources
    /// (~100 000 one-packet flows) after a 15-minute warm-up, then 12 minutes of benign
    /// traffic at ~1 500 pps. Replayed with the default configuration: the flood raises an
    /// alert holding its packets, and the quiet period after it has at most one false
    /// alert per hour over all seeds (before learning hygiene and the alert budget, the
    /// `flows` profile raised ~5 000 alerts there: the flood's flows filled its mass window
    /// and ordinary flows became the outliers; `without_hygiene_the_flood_storms` keeps
    /// that failure visible).
    #[test]
    fn flood_then_quiet() {
        let mut failures = Vec::new();
        let (mut n_false, mut quiet_min) = (0usize, 0.0f64);
        for (i, seed) in seeds().into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let cap = dir.path().join("dep.pcap");
            let labels = synth("deployment", 1, seed, &cap);
            let flood = &labels.episodes[0];
            assert_eq!(flood.kind, EpisodeKind::SynFlood);
            let state = dir.path().join("state");
            let (_, st) = replay(&cap, &state, &["--shards", "1"]);
            std::fs::remove_file(&cap).unwrap();
            let (_, flood_end) = span_ns(&labels, flood);
            let (next_start, _) = span_ns(&labels, &labels.episodes[1]);
            let (fa, detected) =
                quiet_false_alerts(&state, &labels, 0, flood_end, next_start, i == 0);
            if !detected {
                failures.push(format!("seed {seed}: no alert holds the flood's packets"));
            }
            eprintln!(
                "seed {seed}: flood detected {detected}; {} false alerts in the {:.0} quiet minutes after it {fa:?}; flows not learnt {}",
                fa.len(),
                (next_start - flood_end) as f64 / 60e9,
                st["detect.flows_not_learnt"]
            );
            n_false += fa.len();
            quiet_min += (next_start - flood_end) as f64 / 60e9;
        }
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            n_false as f64 <= quiet_min / 60.0,
            "{n_false} false alerts in {quiet_min:.0} quiet minutes after floods"
        );
    }

    /// The host profile (`hosts`, mode `host`, config/host-profile.toml appended to the
    /// default configuration) on the deployment capture: the telnet brute force and the infected client's slow outbound
    /// scan each raise an alert whose evidence (the host's packets) holds that episode's
    /// packets, on every seed; host alerts name the attacker; alerts holding no attack
    /// packet (any profile, the whole capture) stay at or below one per hour of traffic.
    /// The C2 beaconing is reported, not required (docs/detection.md: not detected
    /// reliably).
    #[test]
    fn host_profile_detects_brute_force_slow_scan_and_beacons() {
        let mut failures = Vec::new();
        let (mut n_false, mut minutes) = (0usize, 0.0f64);
        for (i, seed) in seeds().into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let cap = dir.path().join("dep.pcap");
            let labels = synth("deployment", 1, seed, &cap);
            let state = dir.path().join("state");
            let cfg = with_host_profile(dir.path());
            let (_, st) = replay(&cap, &state, &["--shards", "1", "--config", s(&cfg)]);
            std::fs::remove_file(&cap).unwrap();
            // Every host event scored or skipped, every table entry live or evicted.
            let bad = streamml_sensor::stats::conservation(&st);
            assert!(bad.is_empty(), "seed {seed}: {bad:?}");
            assert!(st["detect.host_table_evicted"] > 0 && st["detect.host_skipped_rate"] > 0);
            let (al, pk) = alert_lines(&state, i == 0);
            let mut line = format!("seed {seed}:");
            for (k, e) in labels.episodes.iter().enumerate() {
                let hits: Vec<&Alert> = al
                    .iter()
                    .zip(&pk)
                    .filter(|(_, p)| p.iter().any(|x| is_attack(e, labels.start_ns, x)))
                    .map(|(a, _)| a)
                    .collect();
                let by_host = hits
                    .iter()
                    .filter(|a| a.anomaly.mode == AlertMode::Host)
                    .count();
                let named = hits.iter().any(|a| {
                    a.anomaly.extra.get("host").and_then(|h| h.as_str())
                        == Some(&std::net::Ipv4Addr::from(e.attacker).to_string())
                });
                line += &format!(
                    " {} {} alerts ({by_host} host, attacker named {named});",
                    e.kind.name(),
                    hits.len()
                );
                let required = matches!(
                    e.kind,
                    EpisodeKind::BruteForce | EpisodeKind::SlowScan | EpisodeKind::Beacon
                );
                if e.kind == EpisodeKind::Beacon {
                    let beacon_line = hits.iter().any(|a| {
                        a.anomaly.extra.get("host_event").and_then(|h| h.as_str()) == Some("beacon")
                    });
                    line += &format!(" (beacon line {beacon_line})");
                }
                if required && (by_host == 0 || !named) {
                    failures.push(format!(
                        "seed {seed}: {} (episode {k}) not detected by the host profile",
                        e.kind.name()
                    ));
                }
            }
            let false_alerts: Vec<String> = al
                .iter()
                .zip(&pk)
                .filter(|(_, p)| {
                    !labels
                        .episodes
                        .iter()
                        .any(|e| p.iter().any(|x| is_attack(e, labels.start_ns, x)))
                })
                .map(|(a, _)| {
                    format!(
                        "{} {} at {:.0}s {:?}",
                        a.anomaly.profile,
                        a.alert_id,
                        (a.ts_ns() - labels.start_ns) as f64 / 1e9,
                        a.anomaly.extra.get("host")
                    )
                })
                .collect();
            eprintln!(
                "{line} false alerts {false_alerts:?}; host events {} scored {} skipped {} table evictions {}",
                st["detect.host_events"],
                st["detect.host_scored"],
                st["detect.host_skipped_rate"],
                st["detect.host_table_evicted"]
            );
            n_false += false_alerts.len();
            minutes += labels.duration_s / 60.0;
        }
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            n_false as f64 <= minutes / 60.0,
            "{n_false} false alerts in {minutes:.0} minutes"
        );
    }

    /// Known pollers: `beacon_ignore_hosts` naming the beacon's destination (a network
    /// holding it) silences its beacon alert, counted in `detect.host_beacons_ignored`;
    /// `beacon_ignore_ports` naming another port does not; the brute force and the scan
    /// are still detected.
    #[test]
    fn beacon_ignore_lists_silence_a_known_poller() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("dep.pcap");
        let labels = synth("deployment", 1, 1, &cap);
        let beacon = labels
            .episodes
            .iter()
            .find(|e| e.kind == EpisodeKind::Beacon)
            .expect("a beacon episode");
        let c2 = std::net::Ipv4Addr::from(beacon.target);
        let base = std::fs::read_to_string(with_host_profile(dir.path())).unwrap();
        for (name, extra, ignored) in [
            (
                "by-network",
                format!("beacon_ignore_hosts = [\"{c2}/30\", \"2001:db8::/32\"]"),
                true,
            ),
            (
                "other-port",
                "beacon_ignore_ports = [161, 123]".to_string(),
                false,
            ),
        ] {
            let cfg = dir.path().join(format!("{name}.toml"));
            assert!(base.contains("host_table = 16384"));
            std::fs::write(
                &cfg,
                base.replacen(
                    "host_table = 16384",
                    &format!("host_table = 16384\n{extra}"),
                    1,
                ),
            )
            .unwrap();
            let state = dir.path().join(name);
            let (_, st) = replay(&cap, &state, &["--shards", "1", "--config", s(&cfg)]);
            let (al, _) = alert_lines(&state, false);
            let beacon_lines = al
                .iter()
                .filter(|a| {
                    a.anomaly.extra.get("host_event").and_then(|h| h.as_str()) == Some("beacon")
                })
                .count();
            let host_alerts = al
                .iter()
                .filter(|a| a.anomaly.mode == AlertMode::Host)
                .count();
            eprintln!(
                "{name}: {beacon_lines} beacon lines, {host_alerts} host alerts, beacons {} ignored {}",
                st["detect.host_beacons"], st["detect.host_beacons_ignored"]
            );
            assert!(st["detect.host_beacons"] >= 1, "{name}");
            if ignored {
                assert_eq!(beacon_lines, 0, "{name}");
                assert!(st["detect.host_beacons_ignored"] >= 1, "{name}");
            } else {
                assert!(beacon_lines >= 1, "{name}");
                assert_eq!(st["detect.host_beacons_ignored"], 0, "{name}");
            }
            // The brute force and the scan: host alerts besides the beacon.
            assert!(
                host_alerts - beacon_lines >= 2,
                "{name}: {host_alerts} host alerts"
            );
        }
    }

    /// A host profile over 2 shards keyed by the 5-tuple loses beacons (a pair's
    /// connections spread over the shards): the run says so in one warning line and names
    /// the fix; with `key = "ip-pair"` or one shard it does not.
    #[test]
    fn host_profile_over_five_tuple_shards_warns() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = with_host_profile(dir.path());
        let text = std::fs::read_to_string(&cfg).unwrap();
        let ippair = dir.path().join("ip-pair.toml");
        let changed = text.replacen("key = \"five-tuple\"", "key = \"ip-pair\"", 1);
        assert_ne!(changed, text, "the default config names its key");
        std::fs::write(&ippair, changed).unwrap();
        let cap = common::pcaps_dir().join("basic/http-get.pcap");
        for (c, shards, warns) in [(&cfg, "2", true), (&ippair, "2", false), (&cfg, "1", false)] {
            let state = dir.path().join(format!("s{shards}{warns}"));
            let o = run(&[
                "replay",
                s(&cap),
                "--shards",
                shards,
                "--config",
                s(c),
                "--state-dir",
                s(&state),
            ]);
            ok(&o, "replay");
            let err = String::from_utf8_lossy(&o.stderr);
            let lines: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("beacons go unseen"))
                .collect();
            assert_eq!(
                lines.len(),
                usize::from(warns),
                "{shards} shards, {}: {err}",
                c.display()
            );
            if warns {
                assert!(lines[0].contains("key = \"ip-pair\""), "{err}");
            }
        }
    }

    /// The control for `flood_then_quiet`: the same capture with `learn_during_incidents =
    /// true` and no alert budget gives the alert storm the issue describes.
    #[test]
    fn without_hygiene_the_flood_storms() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("dep.pcap");
        let labels = synth("deployment", 1, 1, &cap);
        let cfg = dir.path().join("old.toml");
        let text = DEFAULT_CONFIG
            .replacen(
                "learn_during_incidents = false",
                "learn_during_incidents = true",
                1,
            )
            .replace("max_alerts_per_min = 10", "max_alerts_per_min = 0");
        assert!(text.contains("learn_during_incidents = true"));
        std::fs::write(&cfg, text).unwrap();
        let state = dir.path().join("state");
        replay(&cap, &state, &["--shards", "1", "--config", s(&cfg)]);
        let (_, flood_end) = span_ns(&labels, &labels.episodes[0]);
        let (next_start, _) = span_ns(&labels, &labels.episodes[1]);
        let (fa, _) = quiet_false_alerts(&state, &labels, 0, flood_end, next_start, false);
        eprintln!("without hygiene: {} false alerts after the flood", fa.len());
        assert!(fa.len() > 100, "no storm without hygiene: {}", fa.len());
    }

    /// Six hours of the deployment preset's benign background (~1 500 pps, streamed from
    /// `synth -o -` into `replay -`), default configuration plus the host profile: at
    /// most one alert per hour.
    #[test]
    fn six_benign_hours_at_most_one_alert_per_hour() {
        let hours = std::env::var("STREAMML_BENIGN_HOURS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6u32);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let stats = dir.path().join("stats.json");
        let mut gen = Command::new(BIN)
            .args(["synth", "--preset", "background", "--seed", "21", "-o", "-"])
            .args(["--minutes", &(hours * 60).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cfg = with_host_profile(dir.path());
        let out = Command::new(BIN)
            .args(["replay", "-", "--shards", "1", "--state-dir", s(&state)])
            .args(["--stats-json", s(&stats), "--config", s(&cfg)])
            .stdin(gen.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(gen.wait().unwrap().success());
        ok(&out, "replay -");
        let st: BTreeMap<String, u64> =
            serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
        let lines = alerts(&state);
        eprintln!(
            "{hours} benign hours: {} packets, {} alert lines: {:?}",
            st["flow.packets"],
            lines.len(),
            lines
                .iter()
                .map(|a| format!(
                    "{} {} {:.3}",
                    a.event_type, a.anomaly.profile, a.anomaly.score
                ))
                .collect::<Vec<_>>()
        );
        assert!(st["flow.packets"] > u64::from(hours) * 3_600 * 1_200);
        assert!(st["detect.host_scored"] > u64::from(hours) * 3_600 * 100);
        assert!(
            lines.len() as u32 <= hours,
            "{} alerts in {hours} benign hours",
            lines.len()
        );
    }

    /// The alert budget: a deliberately noisy flow profile (fixed threshold, no cooldown)
    /// with `max_alerts_per_min = 5` writes at most 5 anomaly lines per minute and one
    /// `anomaly_summary` per minute it held alerts back; the lines plus the suppressed
    /// counts equal the alerts of the same replay without a budget.
    #[test]
    fn alert_budget_summarises_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("benign.pcap");
        synth("benign", 10, 5, &cap);
        let mk = |budget: u32| {
            let p = dir.path().join(format!("b{budget}.toml"));
            let text = DEFAULT_CONFIG
                .replacen(
                    "quantile = 0.999\nquantile_window = 20000\nmin_score = 0.85\nrequire_out_of_range = true\ncooldown_s = 300",
                    "fixed = 0.6\ncooldown_s = 0",
                    1,
                )
                .replacen(
                    "max_alerts_per_min = 10\n",
                    &format!("max_alerts_per_min = {budget}\n"),
                    1,
                );
            assert!(text.contains(&format!("max_alerts_per_min = {budget}\n")));
            std::fs::write(&p, text).unwrap();
            p
        };
        let (free, budget) = (mk(0), mk(5));
        let s0 = dir.path().join("s0");
        let (_, st0) = replay(&cap, &s0, &["--shards", "1", "--config", s(&free)]);
        let s1 = dir.path().join("s1");
        let (_, st1) = replay(&cap, &s1, &["--shards", "1", "--config", s(&budget)]);
        let flows = |state: &Path| -> Vec<Alert> {
            alerts(state)
                .into_iter()
                .filter(|a| a.anomaly.profile == "flows")
                .collect()
        };
        let (a0, a1) = (flows(&s0), flows(&s1));
        assert!(
            a0.len() > 200,
            "the noisy profile is not noisy: {}",
            a0.len()
        );
        // Each summary: its minute (of the shard's clock) had spent the whole budget, and
        // no minute has two summaries.
        let mut minutes = std::collections::BTreeSet::new();
        let mut suppressed = 0u64;
        // Alert lines: an incident's first line and its updates (flow alerts naming the
        // incident's host join it as `anomaly_update`); both count against the budget.
        let is_line = |a: &Alert| a.event_type == "anomaly" || a.event_type == "anomaly_update";
        for a in a1.iter().filter(|a| !is_line(a)) {
            assert_eq!(a.event_type, "anomaly_summary");
            assert!(a.evidence.path.is_none());
            let x = &a.anomaly.extra;
            suppressed += x["suppressed"].as_u64().unwrap();
            assert_eq!(x["alerts_in_minute"], 5);
            assert!(minutes.insert(x["minute_start_ns"].as_u64().unwrap()));
        }
        assert!(!minutes.is_empty(), "the budget never held an alert back");
        let n1 = a1.iter().filter(|a| is_line(a)).count() as u64;
        assert_eq!(
            n1 + suppressed,
            a0.len() as u64,
            "lines + suppressed = unbudgeted"
        );
        assert_eq!(suppressed, st1["detect.alerts_over_budget"]);
        assert_eq!(st0["detect.alerts_over_budget"], 0);
        assert_eq!(
            st1["alerts.written"],
            st1["detect.alerts"] + st1["detect.alert_summaries"]
        );
    }

    /// One SYN flood over 2 shards (the labelled capture's: 20 s at 2 000 pps): both
    /// shards' window profiles alert on it, and the evidence writer merges them into one
    /// incident line (`incident_id`, `shards` [0, 1]) whose evidence holds both shards'
    /// packets: every flood packet of the capture in the line's span (no packet cap), not
    /// one shard's half.
    #[test]
    fn one_flood_over_two_shards_is_one_incident() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("lab.pcap");
        let labels = synth("labelled", 20, 1, &cap);
        let flood = labels
            .episodes
            .iter()
            .find(|e| e.kind == EpisodeKind::SynFlood)
            .unwrap()
            .clone();
        let cfg = dir.path().join("uncapped.toml");
        let text = DEFAULT_CONFIG.replacen("max_packets = 100000 ", "max_packets = 0 ", 1);
        assert_ne!(text, DEFAULT_CONFIG);
        std::fs::write(&cfg, text).unwrap();
        let state = dir.path().join("state");
        let (_, st) = replay(&cap, &state, &["--shards", "2", "--config", s(&cfg)]);
        let all = alerts(&state);
        let pk = check_evidence(&state, &all, true);
        let with_flood: Vec<(&Alert, &Vec<Pkt>)> = all
            .iter()
            .zip(&pk)
            .filter(|(_, p)| p.iter().any(|x| is_attack(&flood, labels.start_ns, x)))
            .collect();
        assert_eq!(
            with_flood.len(),
            1,
            "lines holding the flood: {:?}",
            with_flood
                .iter()
                .map(|(a, _)| (a.alert_id, a.event_type.clone(), a.anomaly.shard))
                .collect::<Vec<_>>()
        );
        let (a, p) = with_flood[0];
        assert_eq!(a.event_type, "anomaly");
        assert_eq!(a.incident_id, Some(a.alert_id));
        assert_eq!(
            a.anomaly.extra["shards"].as_array().unwrap().len(),
            2,
            "{a:?}"
        );
        assert!(st["alerts.incidents_merged"] >= 1, "{st:?}");
        // The capture's flood packets in the span the line's evidence covers.
        let w = a.anomaly.window.unwrap();
        let (from, to) = (w.start - 5_000_000_000, w.end + 5_000_000_000);
        let (_, frames) = common::read_pcap(&std::fs::read(&cap).unwrap());
        let in_span = frames
            .iter()
            .filter(|x| x.ts_ns >= from && x.ts_ns <= to && is_attack(&flood, labels.start_ns, x))
            .count();
        let in_file = p
            .iter()
            .filter(|x| is_attack(&flood, labels.start_ns, x))
            .count();
        eprintln!("flood packets in the span: {in_span}, in the incident's evidence: {in_file}");
        assert!(in_span > 1000);
        assert_eq!(in_file, in_span, "the evidence lacks one shard's packets");
    }

    /// Issue 13 items 3 and 6 on one replay: the deployment capture (a SYN flood, then
    /// quiet minutes) with the storm's configuration (`learn_during_incidents = true`, no
    /// alert budget: the `flows` profile raises thousands of alerts after the flood) and
    /// `max_files = 20`.
    /// - Retention: the flood's window incident keeps the file of its first line (holding
    ///   the flood's packets) and of its newest update; every incident opened by the window
    ///   profile keeps its newest file; deletions by reason add up to files written minus
    ///   files left.
    /// - Incidents: flow alerts that name the flood's target within its span are
    ///   `anomaly_update` lines of the flood's incident, not anomaly lines; a flow alert
    ///   that names none of an incident's hosts is not joined to it.
    #[test]
    fn alert_storm_keeps_incident_evidence_and_alerts_join_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("dep.pcap");
        let labels = synth("deployment", 1, 1, &cap);
        let flood = labels.episodes[0].clone();
        assert_eq!(flood.kind, EpisodeKind::SynFlood);
        let cfg = dir.path().join("storm.toml");
        let text = DEFAULT_CONFIG
            .replacen(
                "learn_during_incidents = false",
                "learn_during_incidents = true",
                1,
            )
            .replace("max_alerts_per_min = 10", "max_alerts_per_min = 0")
            .replacen("max_files = 10000 ", "max_files = 20 ", 1);
        assert!(text.contains("max_files = 20 "));
        std::fs::write(&cfg, text).unwrap();
        let state = dir.path().join("state");
        let (_, st) = replay(&cap, &state, &["--shards", "1", "--config", s(&cfg)]);
        let all = alerts(&state);
        let kept: Vec<String> = std::fs::read_dir(state.join("evidence"))
            .unwrap()
            .map(|e| format!("evidence/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        eprintln!(
            "{} alert lines, {} files kept; deleted superseded {}, oldest {}",
            all.len(),
            kept.len(),
            st["evidence.deleted_superseded"],
            st["evidence.deleted_oldest"]
        );
        assert!(all.len() > 500, "no storm: {} alerts", all.len());
        // Deletions by reason = files written - files left.
        assert_eq!(kept.len() as u64, st["evidence.files_kept"]);
        assert_eq!(kept.len(), 20);
        assert_eq!(
            st["evidence.files_written"] - kept.len() as u64,
            st["evidence.deleted_superseded"]
                + st["evidence.deleted_oldest"]
                + st["evidence.deleted_gone"]
                + st["retention.delete_errors"],
            "{st:?}"
        );
        assert!(st["evidence.deleted_superseded"] > 0 && st["evidence.deleted_oldest"] > 0);
        // The flood's window alert opened an incident naming its target, and its file
        // (holding the flood) is still there.
        let target = std::net::IpAddr::from(flood.target);
        let (t0, t1) = span_ns(&labels, &flood);
        let fl = all
            .iter()
            .find(|a| {
                a.anomaly.mode == AlertMode::Window
                    && a.ts_ns() >= t0
                    && a.ts_ns() <= t1 + 2_000_000_000
            })
            .expect("a window alert during the flood");
        assert_eq!(fl.event_type, "anomaly");
        let inc = fl.incident_id.unwrap();
        assert_eq!(inc, fl.alert_id);
        let hosts = fl.anomaly.extra["hosts"].as_array().expect("hosts");
        assert!(
            hosts
                .iter()
                .any(|h| h.as_str() == Some(&target.to_string())),
            "{hosts:?}"
        );
        let path = fl.evidence.path.clone().unwrap();
        assert!(
            kept.contains(&path),
            "the flood's evidence was deleted: {path}"
        );
        let (_, pk) = read_pcap_zst(&state.join(&path));
        assert!(
            pk.iter()
                .filter(|p| is_attack(&flood, labels.start_ns, p))
                .count()
                > 1000
        );
        // Every incident a window alert opened keeps its newest file.
        let mut newest: BTreeMap<u64, String> = BTreeMap::new();
        for a in &all {
            if let (Some(i), Some(p)) = (a.incident_id, &a.evidence.path) {
                newest.insert(i, p.clone());
            }
        }
        let mut checked = 0;
        for a in all
            .iter()
            .filter(|a| a.anomaly.mode == AlertMode::Window && a.event_type == "anomaly")
        {
            let p = &newest[&a.incident_id.unwrap()];
            assert!(
                kept.contains(p),
                "incident {:?}: newest file {p} deleted",
                a.incident_id
            );
            checked += 1;
        }
        assert!(checked >= 1);
        // Flow alerts naming the target in the flood's incident span are its updates.
        let joined: Vec<&Alert> = all
            .iter()
            .filter(|a| a.incident_id == Some(inc) && a.alert_id != inc)
            .collect();
        assert!(!joined.is_empty(), "no alert joined the flood's incident");
        for a in &joined {
            assert_eq!(a.event_type, "anomaly_update");
            let f = a.flow.as_ref().expect("a flow alert");
            assert!(f.src_ip == target || f.dest_ip == target, "{a:?}");
        }
        let near = |a: &Alert| a.ts_ns() >= t0 && a.ts_ns() <= t1 + 10_000_000_000;
        let naming_target = all
            .iter()
            .filter(|a| {
                near(a)
                    && a.flow
                        .as_ref()
                        .is_some_and(|f| f.src_ip == target || f.dest_ip == target)
            })
            .count();
        assert!(naming_target >= 1);
        // ... all of them updates (of the flood's incident, or of a newer open incident
        // that names their other host), none a new anomaly line.
        for a in all.iter().filter(|a| {
            near(a)
                && a.flow
                    .as_ref()
                    .is_some_and(|f| f.src_ip == target || f.dest_ip == target)
        }) {
            assert_eq!(a.event_type, "anomaly_update", "{a:?}");
            let opener = all
                .iter()
                .find(|o| Some(o.alert_id) == a.incident_id)
                .unwrap();
            let f = a.flow.as_ref().unwrap();
            let named = |ip: &std::net::IpAddr| {
                opener
                    .flow
                    .as_ref()
                    .is_some_and(|g| g.src_ip == *ip || g.dest_ip == *ip)
                    || opener.anomaly.extra.get("hosts").is_some_and(|h| {
                        h.as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x.as_str() == Some(&ip.to_string()))
                    })
            };
            assert!(
                named(&f.src_ip) || named(&f.dest_ip),
                "{a:?} joined {opener:?}"
            );
        }
        // Unrelated flow alerts in the same seconds stay out of it.
        let unrelated: Vec<&Alert> = all
            .iter()
            .filter(|a| {
                near(a)
                    && a.flow
                        .as_ref()
                        .is_some_and(|f| f.src_ip != target && f.dest_ip != target)
            })
            .collect();
        assert!(!unrelated.is_empty());
        assert!(unrelated.iter().all(|a| a.incident_id != Some(inc)));
        assert!(unrelated.iter().any(|a| a.event_type == "anomaly"));
        // Every update line was counted, and the lines are one per incident plus updates.
        let updates = all
            .iter()
            .filter(|a| a.event_type == "anomaly_update")
            .count() as u64;
        assert_eq!(updates, st["alerts.incidents_updated"]);
        let opened = all.iter().filter(|a| a.event_type == "anomaly").count() as u64;
        assert_eq!(opened, st["alerts.incidents_opened"]);
        eprintln!(
            "{opened} incidents, {updates} updates; {} joined the flood's",
            joined.len()
        );
    }

    /// A 60 s exfiltration (one TCP flow at 60 pps) raises a flow alert before it ends
    /// (`active_packets` / `active_interval_s` of the default `flows` profile), whose
    /// evidence holds its packets; with active scoring off the flow alerts only when it is
    /// exported, after its end. Flow profile only, so the window profile cannot stand in.
    #[test]
    fn exfiltration_alerts_before_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("lab.pcap");
        let labels = synth("labelled", 20, 4, &cap);
        let exfil = labels
            .episodes
            .iter()
            .position(|e| e.kind == EpisodeKind::Exfil)
            .unwrap();
        let (t0, t1) = span_ns(&labels, &labels.episodes[exfil]);
        let w0 = DEFAULT_CONFIG.find("# Window mode").unwrap();
        let f0 = DEFAULT_CONFIG.find("# Flow mode").unwrap();
        let flows_only = format!("{}{}", &DEFAULT_CONFIG[..w0], &DEFAULT_CONFIG[f0..]);
        let off = flows_only
            .replacen("active_packets = 1000", "active_packets = 0", 1)
            .replacen("active_interval_s = 30", "active_interval_s = 0", 1);
        assert_ne!(off, flows_only);
        let mut first_alert = Vec::new();
        for (name, text) in [("active", &flows_only), ("off", &off)] {
            let cfg = dir.path().join(format!("{name}.toml"));
            std::fs::write(&cfg, text).unwrap();
            let state = dir.path().join(name);
            let (_, st) = replay(&cap, &state, &["--shards", "1", "--config", s(&cfg)]);
            let al: Vec<Alert> = alerts(&state)
                .into_iter()
                .filter(|a| a.event_type == "anomaly")
                .collect();
            let pk = check_evidence(&state, &al, name == "active");
            let hit = al.iter().zip(&pk).find(|(_, p)| {
                p.iter()
                    .any(|x| is_attack(&labels.episodes[exfil], labels.start_ns, x))
            });
            let at = hit.map(|(a, _)| a.ts_ns());
            eprintln!(
                "{name}: exfil alert at {:?} s after its start (it lasts {:.0} s); active scores {}",
                at.map(|t| (t as f64 - t0 as f64) / 1e9),
                (t1 - t0) as f64 / 1e9,
                st["detect.flows_scored_active"]
            );
            first_alert.push(at);
        }
        // "Before it ends": at least 10 s of packet time before its last packet (an alert
        // at export is stamped with the flow's last packet, at the end).
        let before = t1 - 10_000_000_000;
        let active = first_alert[0].expect("no exfil alert with active scoring");
        assert!(
            active < before,
            "the active alert came in the last 10 s or later"
        );
        assert!(
            first_alert[1].is_none_or(|t| t >= before),
            "without active scoring the exfil alerted 10 s before its end"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Public captures of real attacks (issue 13), mixed into benign background
// ---------------------------------------------------------------------------------------

mod public_captures {
    use super::*;
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    /// The captures of tests/data/attacks (README.md there: sources and licences), their
    /// kind, and whether the default configuration, and the default configuration plus
    /// the opt-in host profile (config/host-profile.toml), detect them today. A capture
    /// marked `false` is replayed and reported, and must raise no false alert beyond the
    /// bound, but its detection is not required (see docs/detection.md, "Public attack
    /// captures"). When a profile learns to see one, flip its flag: the test then
    /// requires it.
    const CAPTURES: [(&str, &str, bool, bool); 7] = [
        ("synscan.pcap", "port scan", true, true),
        ("ftp-bruteforce.pcap", "brute force (FTP)", false, true),
        ("ssh-guess.pcap", "brute force (SSH)", false, true),
        ("dhcp-flood.pcap", "flood (DHCP)", false, false),
        ("dns-tunnel-iodine.pcap", "DNS tunnel", false, false),
        ("merlin-c2-quic.pcapng", "C2 over QUIC", false, false),
        ("trickbot.pcap", "malware exfiltration (HTTP)", false, false),
    ];

    /// The configurations the test runs: the built-in default, and the default followed by
    /// config/host-profile.toml. `STREAMML_PUBLIC_CONFIG` replaces both with that file
    /// (expectations: the default's column).
    fn configs(dir: &Path) -> Vec<(String, Option<PathBuf>, bool)> {
        if let Some(c) = std::env::var("STREAMML_PUBLIC_CONFIG")
            .ok()
            .filter(|c| !c.is_empty())
        {
            return vec![(c.clone(), Some(PathBuf::from(c)), false)];
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut text = std::fs::read_to_string(root.join("config/sensor.toml")).unwrap();
        text += &std::fs::read_to_string(root.join("config/host-profile.toml")).unwrap();
        let with_hosts = dir.join("with-hosts.toml");
        std::fs::write(&with_hosts, text).unwrap();
        vec![
            ("default".into(), None, false),
            ("default + hosts".into(), Some(with_hosts), true),
        ]
    }

    /// Seconds of benign background before the attack (the models' warm-up; see "Detection
    /// quality") and the background's length.
    const ATTACK_AT_S: u32 = 900;
    const MINUTES: u32 = 20;

    /// `--inject-addresses`: `STREAMML_INJECT_ADDRESSES` (remap or keep), else remap.
    fn addresses() -> String {
        std::env::var("STREAMML_INJECT_ADDRESSES").unwrap_or_else(|_| "remap".into())
    }

    fn attacks_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/attacks")
    }

    /// One injected capture, from the labels of `synth --inject`.
    #[derive(serde::Deserialize)]
    struct Injected {
        first_ns: u64,
        last_ns: u64,
        packets: u64,
        hosts: Vec<Ipv4Addr>,
    }

    /// Whether `p` is a packet of the injected capture: inside its span, and from or to one
    /// of its hosts (after remapping they lie in blocks the background never uses).
    fn is_injected(inj: &Injected, hosts: &BTreeSet<[u8; 4]>, p: &Pkt) -> bool {
        if p.ts_ns < inj.first_ns || p.ts_ns > inj.last_ns {
            return false;
        }
        endpoints(p).is_some_and(|(a, b, _, _)| hosts.contains(&a) || hosts.contains(&b))
    }

    /// The result of one capture over one background seed.
    struct Run {
        file: &'static str,
        kind: &'static str,
        config: String,
        seed: u64,
        packets: u64,
        /// Profiles and modes of the alerts whose evidence holds its packets.
        by: BTreeSet<String>,
        /// Seconds from its first packet to the first alert holding its packets.
        delay_s: Option<f64>,
        /// Its distinct packets in all evidence files.
        in_evidence: usize,
        /// Alert lines (and budget summaries) holding none of its packets.
        false_alerts: Vec<String>,
    }

    fn run_one(
        file: &'static str,
        kind: &'static str,
        (config_name, config): (&str, Option<&Path>),
        seed: u64,
        tshark: bool,
    ) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("mix.pcap");
        let labels = dir.path().join("mix.json");
        let inject = format!("{}@{ATTACK_AT_S}", attacks_dir().join(file).display());
        let o = run(&[
            "synth",
            "--preset",
            "background",
            "--minutes",
            &MINUTES.to_string(),
            "--seed",
            &seed.to_string(),
            "--inject",
            &inject,
            "--inject-addresses",
            &addresses(),
            "-o",
            s(&cap),
            "--labels",
            s(&labels),
        ]);
        ok(&o, "synth --inject");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&labels).unwrap()).expect("labels JSON");
        let injected: Vec<Injected> = serde_json::from_value(v["injected"].clone()).unwrap();
        assert_eq!(injected.len(), 1);
        let inj = &injected[0];
        let hosts: BTreeSet<[u8; 4]> = inj.hosts.iter().map(|a| a.octets()).collect();
        let state = dir.path().join("state");
        let extra: Vec<&str> = config.iter().flat_map(|c| ["--config", s(c)]).collect();
        replay(&cap, &state, &extra);
        std::fs::remove_file(&cap).unwrap();

        let all = alerts(&state);
        let (lines, pk) = alert_lines(&state, tshark);
        let mut run = Run {
            file,
            kind,
            config: config_name.to_string(),
            seed,
            packets: inj.packets,
            by: BTreeSet::new(),
            delay_s: None,
            in_evidence: 0,
            false_alerts: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for (a, p) in lines.iter().zip(&pk) {
            let hits: Vec<&Pkt> = p.iter().filter(|x| is_injected(inj, &hosts, x)).collect();
            if hits.is_empty() {
                run.false_alerts.push(format!(
                    "{} {} {} at {:+.0}s score {:.3}",
                    a.event_type,
                    a.anomaly.profile,
                    mode_name(a),
                    (a.ts_ns() as f64 - inj.first_ns as f64) / 1e9,
                    a.anomaly.score
                ));
                continue;
            }
            run.by
                .insert(format!("{} ({})", a.anomaly.profile, mode_name(a)));
            let d = (a.ts_ns() as f64 - inj.first_ns as f64) / 1e9;
            run.delay_s = Some(run.delay_s.map_or(d, |x: f64| x.min(d)));
            for x in hits {
                seen.insert((x.ts_ns, x.data.clone()));
            }
        }
        run.in_evidence = seen.len();
        for a in all.iter().filter(|a| a.event_type == "anomaly_summary") {
            run.false_alerts.push(format!(
                "summary of {} alerts",
                a.anomaly.extra["suppressed"]
            ));
        }
        run
    }

    fn mode_name(a: &Alert) -> &'static str {
        match a.anomaly.mode {
            AlertMode::Flow => "flow",
            AlertMode::Window => "window",
            AlertMode::Host => "host",
        }
    }

    fn table(runs: &[Run]) -> String {
        let mut t = String::from(
            "| capture | kind | packets | configuration | seed | detected | by | delay from its first packet | its packets in evidence | false alerts |\n|---|---|---:|---|---:|---|---|---:|---:|---:|\n",
        );
        for r in runs {
            t += &format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.file,
                r.kind,
                r.packets,
                r.config,
                r.seed,
                if r.by.is_empty() { "no" } else { "yes" },
                if r.by.is_empty() {
                    "-".to_string()
                } else {
                    r.by.iter().cloned().collect::<Vec<_>>().join(", ")
                },
                r.delay_s.map_or("-".into(), |d| format!("{d:.1} s")),
                r.in_evidence,
                r.false_alerts.len()
            );
        }
        t
    }

    /// `--inject` of a missing, empty, truncated, non-capture or non-Ethernet file, or
    /// without `@START_S`, or starting after the background ends: one line, exit 2, and no
    /// output file.
    #[test]
    fn bad_inject_is_one_line_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, b"").unwrap();
        let cut = dir.path().join("cut.pcap");
        let scan = std::fs::read(attacks_dir().join("synscan.pcap")).unwrap();
        std::fs::write(&cut, &scan[..100]).unwrap();
        let text = dir.path().join("text.pcap");
        std::fs::write(&text, b"not a capture at all\n").unwrap();
        let sll = common::pcaps_dir().join("linktypes/linux_dlt_sll2.pcap");
        let scan_path = attacks_dir().join("synscan.pcap");
        let cases = [
            (
                format!("{}@5", dir.path().join("missing.pcap").display()),
                "No such file",
            ),
            (format!("{}@5", empty.display()), "too short"),
            (format!("{}@5", cut.display()), "corrupt capture"),
            (format!("{}@5", text.display()), "not a pcap or pcapng"),
            (format!("{}@5", sll.display()), "only Ethernet"),
            (format!("{}@5", dir.path().display()), "not a regular file"),
            (scan_path.display().to_string(), "FILE@START_S"),
            (format!("{}@soon", scan_path.display()), "not a number"),
            (format!("{}@-3", scan_path.display()), "between 0 and"),
            (format!("{}@600", scan_path.display()), "after the end"),
        ];
        let out = dir.path().join("out.pcap");
        for (arg, want) in cases {
            let o = run(&[
                "synth",
                "--preset",
                "background",
                "--minutes",
                "1",
                "--inject",
                &arg,
                "-o",
                s(&out),
            ]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{arg}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{arg}: {err}");
            assert!(err.contains(want), "{arg}: {err}");
            assert!(!err.contains("panicked"), "{arg}: {err}");
            assert!(!out.exists(), "{arg}: output written");
        }
    }

    /// Every capture of tests/data/attacks, injected at 900 s into 20 minutes of the
    /// deployment background (~1 500 pps) for each seed of `STREAMML_PUBLIC_SEEDS`
    /// (default 1,2), replayed with the default configuration and with the default plus
    /// the host profile (addresses remapped unless `STREAMML_INJECT_ADDRESSES=keep`). Prints the table of
    /// docs/detection.md (also written to `STREAMML_PUBLIC_TABLE` if set). Requires: every
    /// capture marked detected has an alert whose evidence holds its packets, on every
    /// seed; no more than one false alert per hour of background over all runs.
    #[test]
    fn mixed_into_background() {
        // Every capture file is in the table (a new one is not silently skipped).
        let mut files: Vec<String> = std::fs::read_dir(attacks_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = CAPTURES.iter().map(|c| c.0.to_string()).collect();
        listed.sort();
        assert_eq!(files, listed, "tests/data/attacks vs CAPTURES");

        let seeds = seeds_from("STREAMML_PUBLIC_SEEDS", &[1, 2]);
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        for (name, config, hosts) in configs(dir.path()) {
            for (i, &(file, kind, by_default, with_hosts)) in CAPTURES.iter().enumerate() {
                let expect = if hosts { with_hosts } else { by_default };
                for (j, &seed) in seeds.iter().enumerate() {
                    let tshark = runs.is_empty() && i == 0 && j == 0;
                    let r = run_one(file, kind, (&name, config.as_deref()), seed, tshark);
                    eprintln!(
                        "{file} ({name}) seed {seed}: detected by {:?} after {:?} s, {} of {} packets in evidence; false alerts {:?}",
                        r.by, r.delay_s, r.in_evidence, r.packets, r.false_alerts
                    );
                    if expect && r.by.is_empty() {
                        failures.push(format!(
                            "{file} ({name}) seed {seed}: no alert holds its packets"
                        ));
                    }
                    runs.push(r);
                }
            }
        }
        let t = table(&runs);
        eprintln!("\n{t}");
        if let Ok(p) = std::env::var("STREAMML_PUBLIC_TABLE") {
            std::fs::write(p, &t).unwrap();
        }
        let n_false: usize = runs.iter().map(|r| r.false_alerts.len()).sum();
        let hours = runs.len() as f64 * f64::from(MINUTES) / 60.0;
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            n_false as f64 <= hours,
            "{n_false} false alerts in {hours:.1} hours of background"
        );
    }
}
