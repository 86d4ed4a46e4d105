//! Warm restart through the binary (issue 13, item 5): the models a replay saves into the
//! state directory's `models/` are loaded by the next replay with that state directory,
//! so an attack 10 s after the restart is detected; the same capture replayed cold (an
//! empty state directory) raises nothing, because the detectors are still warming up —
//! which is what makes the warm case mean something. Also: a replay stopped by SIGTERM
//! part-way saves its models; damaged checkpoints (a flipped byte, a cut file, a foreign
//! file) give one warning line each naming the file and the cause, a cold start, exit 0;
//! a changed configuration or shard count is a cold start with one line saying so.
//!
//! Captures: 10 minutes of `synth --preset benign` (the default configuration's window
//! profile needs ~450 one-second windows before it may alert), then 30 s continuing its
//! clock (`--start-s 600`) with a SYN flood from 10 s to 15 s (`--episode syn_flood:10:5`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{read_pcap_zst, Pkt};
use streamml_sensor::capture::synth::Episode;
use streamml_sensor::capture::LinkType;
use streamml_sensor::engine::models;
use streamml_sensor::evidence::{Alert, AlertMode};
use streamml_sensor::wire::{self, DecodeOptions};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

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

/// The two captures, made once for every test of this file.
struct Fixture {
    _dir: tempfile::TempDir,
    benign: PathBuf,
    attack: PathBuf,
    start_ns: u64,
    episode: Episode,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let benign = dir.path().join("benign.pcap");
        let attack = dir.path().join("attack.pcap");
        let labels = dir.path().join("attack.json");
        ok(
            &run(&[
                "synth",
                "--preset",
                "benign",
                "--minutes",
                "10",
                "--seed",
                "5",
                "-o",
                s(&benign),
            ]),
            "synth benign",
        );
        ok(
            &run(&[
                "synth",
                "--preset",
                "benign",
                "--minutes",
                "0.5",
                "--seed",
                "6",
                "--start-s",
                "600",
                "--episode",
                "syn_flood:10:5",
                "-o",
                s(&attack),
                "--labels",
                s(&labels),
            ]),
            "synth attack",
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&labels).unwrap()).unwrap();
        let mut eps: Vec<Episode> = serde_json::from_value(v["episodes"].clone()).unwrap();
        assert_eq!(eps.len(), 1);
        Fixture {
            _dir: dir,
            benign,
            attack,
            start_ns: v["start_ns"].as_u64().unwrap(),
            episode: eps.remove(0),
        }
    })
}

/// `replay CAPTURE --state-dir STATE --shards 1 [extra]`: stderr and final counters.
fn replay(capture: &Path, state: &Path, extra: &[&str]) -> (String, BTreeMap<String, u64>) {
    let stats = tempfile::NamedTempFile::new().unwrap();
    let mut args = vec![
        "replay",
        s(capture),
        "--state-dir",
        s(state),
        "--shards",
        "1",
        "--stats-json",
        s(stats.path()),
    ];
    args.extend_from_slice(extra);
    let err = ok(&run(&args), "replay");
    let st = serde_json::from_slice(&std::fs::read(stats.path()).unwrap()).unwrap();
    (err, st)
}

fn alerts(state: &Path) -> Vec<Alert> {
    common::alerts(&state.join("alerts.jsonl"))
}

/// A SYN of the flood: to the target, from the spoofed block 198.18.128.0/17, inside the
/// episode (src/capture/synth.rs).
fn is_flood_syn(f: &Fixture, p: &Pkt) -> bool {
    let e = &f.episode;
    let t0 = f.start_ns + (e.start_s * 1e9) as u64;
    let t1 = t0 + (e.duration_s * 1e9) as u64;
    if p.ts_ns < t0 || p.ts_ns > t1 {
        return false;
    }
    let Ok(m) = wire::decode(
        &p.data,
        p.orig_len,
        LinkType::Ethernet,
        &DecodeOptions {
            decode_tunnels: true,
        },
    ) else {
        return false;
    };
    m.ip_version == 4
        && m.dst_ip[..4] == e.target
        && m.protocol == 6
        && m.tcp_flags & 0x12 == 0x02
        && m.src_ip[0] == 198
        && m.src_ip[1] == 18
        && m.src_ip[2] >= 128
}

/// The alerts whose evidence file holds flood SYNs.
fn attack_alerts(f: &Fixture, state: &Path) -> Vec<Alert> {
    alerts(state)
        .into_iter()
        .filter(|a| {
            a.evidence.path.as_ref().is_some_and(|rel| {
                let (_, pk) = read_pcap_zst(&state.join(rel));
                pk.iter().any(|p| is_flood_syn(f, p))
            })
        })
        .collect()
}

/// Warm: a window alert within 3 s of the flood's start whose evidence holds its SYNs.
fn assert_detected(f: &Fixture, state: &Path, stderr: &str) {
    let t0 = f.start_ns + (f.episode.start_s * 1e9) as u64;
    let hits = attack_alerts(f, state);
    assert!(
        hits.iter().any(|a| a.anomaly.mode == AlertMode::Window
            && a.ts_ns() >= t0
            && a.ts_ns() <= t0 + 3_000_000_000),
        "no window alert holding the flood within 3 s of its start: {:?}\n{stderr}",
        alerts(state)
    );
}

fn model_files(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Run 1 reads 10 minutes of benign traffic to its end and saves the models (periodic
/// checkpoints at 300 s of packet time and the final one); run 2, with the same state
/// directory, starts warm and alerts on a SYN flood 10 s in. The same run 2 cold raises
/// no alert at all.
#[test]
fn warm_restart_detects_an_attack_10s_in_and_cold_does_not() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let warm = dir.path().join("warm");
    let (err1, st1) = replay(&f.benign, &warm, &[]);
    assert!(
        err1.contains("profile traffic: cold start: no checkpoint"),
        "{err1}"
    );
    assert_eq!(st1["models.cold_start"], 2, "{st1:?}");
    // Two profiles x (the checkpoint at 300 s + the final one) at least.
    assert!(st1["models.saved"] >= 4, "{st1:?}");
    assert_eq!(st1["models.save_errors"], 0);
    assert_eq!(model_files(&warm), ["flows.0.hstck", "traffic.0.hstck"]);
    assert!(alerts(&warm).is_empty(), "benign run 1 alerted");

    let (err2, st2) = replay(&f.attack, &warm, &[]);
    assert_eq!(st2["models.loaded"], 2, "{st2:?}\n{err2}");
    assert_eq!(st2["models.cold_start"], 0);
    assert!(err2.contains("profile traffic: warm start"), "{err2}");
    assert!(err2.contains("profile flows: warm start"), "{err2}");
    assert_detected(f, &warm, &err2);

    let cold = dir.path().join("cold");
    let (err3, st3) = replay(&f.attack, &cold, &[]);
    assert_eq!(st3["models.cold_start"], 2, "{st3:?}");
    assert!(
        alerts(&cold).is_empty(),
        "a cold run alerted 10 s in: {:?}\n{err3}",
        alerts(&cold)
    );
}

/// A replay stopped by SIGTERM part-way (its input, standard input, still open) ends as
/// if the capture ended there — and saves its models: the next run starts warm and
/// detects the flood.
#[test]
fn sigterm_mid_replay_saves_the_models() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let stats = dir.path().join("stats.json");
    let mut child = Command::new(BIN)
        .args([
            "replay",
            "-",
            "--state-dir",
            s(&state),
            "--shards",
            "1",
            "--stats-json",
            s(&stats),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // All of it goes into the pipe; the replay has read all but the pipe's buffer.
    stdin.write_all(&std::fs::read(&f.benign).unwrap()).unwrap();
    stdin.flush().unwrap();
    // SIGTERM by PID while the input is still open: the run is not at its end.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "{err}");
    let st: BTreeMap<String, u64> =
        serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert!(st["models.saved"] >= 2, "{st:?}\n{err}");
    assert_eq!(model_files(&state), ["flows.0.hstck", "traffic.0.hstck"]);

    let (err2, st2) = replay(&f.attack, &state, &[]);
    assert_eq!(st2["models.loaded"], 2, "{st2:?}\n{err2}");
    assert_detected(f, &state, &err2);
}

/// Periodic checkpoints survive a crash: a replay with `checkpoint_interval_s = 60`
/// reading the benign capture from standard input is killed with SIGKILL once both
/// profiles' files hold a checkpoint taken at 540 s of packet time or later (polled,
/// bounded); the next run starts warm from them and detects the flood.
#[test]
fn periodic_checkpoints_survive_kill9() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("sensor.toml");
    let text = include_str!("../config/sensor.toml").replacen(
        "checkpoint_interval_s = 300 ",
        "checkpoint_interval_s = 60 ",
        1,
    );
    assert!(text.contains("checkpoint_interval_s = 60 "));
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "replay",
            "-",
            "--config",
            s(&cfg),
            "--state-dir",
            s(&state),
            "--shards",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&f.benign).unwrap()).unwrap();
    stdin.flush().unwrap();
    let benign_start = f.start_ns - 600_000_000_000;
    let clock = |name: &str| {
        std::fs::read(state.join("models").join(name))
            .ok()
            .and_then(|b| models::head(&b).ok())
            .map_or(0, |h| h.clock_ns)
    };
    let t = std::time::Instant::now();
    while ["traffic.0.hstck", "flows.0.hstck"]
        .iter()
        .any(|n| clock(n) < benign_start + 540_000_000_000)
    {
        assert!(
            t.elapsed().as_secs() < 120,
            "no checkpoint at 540 s after 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, by PID
    child.wait().unwrap();
    drop(stdin);

    let (err, st) = replay(&f.attack, &state, &[]);
    assert_eq!(st["models.loaded"], 2, "{st:?}\n{err}");
    assert_detected(f, &state, &err);
}

/// Damaged checkpoints: each one a single warning line naming the file and the cause, the
/// profile cold (no alert on the flood), exit 0. A changed configuration or shard count:
/// one line each, cold. The files are rewritten at the end of each run.
#[test]
fn damaged_or_foreign_checkpoints_give_one_warning_and_a_cold_start() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    replay(&f.benign, &base, &[]);
    let saved: Vec<(String, Vec<u8>)> = model_files(&base)
        .into_iter()
        .map(|n| {
            let b = std::fs::read(base.join("models").join(&n)).unwrap();
            (n, b)
        })
        .collect();
    assert!(saved.iter().all(|(_, b)| b.len() > 100_000), "sizes");
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "flipped byte",
            |b| {
                let n = b.len() / 2;
                b[n] ^= 0x10;
            },
            "checksum mismatch",
        ),
        ("cut short", |b| b.truncate(b.len() / 3), "truncated"),
        (
            "not a checkpoint",
            |b| *b = b"PK\x03\x04 a zip, not a model".to_vec(),
            "bad magic",
        ),
    ];
    for (what, damage, cause) in cases {
        let state = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(state.join("models")).unwrap();
        for (n, b) in &saved {
            let mut b = b.clone();
            damage(&mut b);
            std::fs::write(state.join("models").join(n), b).unwrap();
        }
        let (err, st) = replay(&f.attack, &state, &[]);
        let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 2, "{what}: one line per file:\n{err}");
        for (n, _) in &saved {
            let path = state.join("models").join(n);
            let line = warnings
                .iter()
                .find(|l| l.contains(s(&path)))
                .unwrap_or_else(|| panic!("{what}: no warning naming {n}:\n{err}"));
            assert!(line.contains(cause), "{what}: {line}");
            assert!(line.contains("starts cold"), "{what}: {line}");
        }
        assert_eq!(st["models.corrupt"], 2, "{what}: {st:?}");
        assert_eq!(st["models.cold_start"], 2, "{what}: {st:?}");
        assert_eq!(st["models.loaded"], 0, "{what}: {st:?}");
        assert!(
            attack_alerts(f, &state).is_empty(),
            "{what}: a cold start detected the flood 10 s in"
        );
        assert!(!err.contains("panick"), "{err}");
    }

    // Another configuration (every profile's seed) or another shard count: cold, said.
    for (extra, why) in [
        (&["--seed", "99"][..], "cold start: configuration changed"),
        (
            &["--shards", "2"][..],
            "cold start: shard count changed (checkpoint 1, now 2)",
        ),
    ] {
        let state = dir.path().join(format!("changed{}", extra[1]));
        std::fs::create_dir_all(state.join("models")).unwrap();
        for (n, b) in &saved {
            std::fs::write(state.join("models").join(n), b).unwrap();
        }
        let mut args = vec!["replay", s(&f.attack), "--state-dir", s(&state)];
        if extra[0] == "--seed" {
            args.extend_from_slice(&["--shards", "1"]);
        }
        args.extend_from_slice(extra);
        let err = ok(&run(&args), "replay");
        for p in ["traffic", "flows"] {
            assert!(
                err.contains(&format!("profile {p}: {why}")),
                "{extra:?}: {err}"
            );
        }
        assert!(!err.contains("warning"), "{err}");
    }
}

/// The host profile (config/host-profile.toml appended to the default configuration) is
/// checkpointed like the others — `models/hosts.0.hstck`, holding its host detector — and
/// the next run with the same configuration starts it warm; a changed host feature list
/// starts it cold (its hash covers `host_features`). Its tables are not saved.
#[test]
fn host_profile_is_checkpointed_and_restored() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n{}",
        include_str!("../config/sensor.toml"),
        include_str!("../config/host-profile.toml")
    );
    let cfg = dir.path().join("hosts.toml");
    std::fs::write(&cfg, &text).unwrap();
    let state = dir.path().join("state");
    let (err1, st1) = replay(&f.benign, &state, &["--config", s(&cfg)]);
    assert!(
        err1.contains("profile hosts: cold start: no checkpoint"),
        "{err1}"
    );
    assert!(st1["detect.host_scored"] > 10_000, "{st1:?}");
    assert_eq!(
        model_files(&state),
        ["flows.0.hstck", "hosts.0.hstck", "traffic.0.hstck"]
    );
    let (err2, st2) = replay(&f.attack, &state, &["--config", s(&cfg)]);
    assert!(err2.contains("profile hosts: warm start"), "{err2}");
    assert_eq!(st2["models.loaded"], 3, "{st2:?}\n{err2}");
    // Another host feature list: that profile cold, the others warm.
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, text.replacen("\"src_pkts_1\", ", "", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&changed).unwrap(), text);
    let (err3, st3) = replay(&f.attack, &state, &["--config", s(&changed)]);
    assert!(
        err3.contains("profile hosts: cold start: configuration changed"),
        "{err3}"
    );
    assert_eq!(st3["models.loaded"], 2, "{st3:?}\n{err3}");
}
