//! The counters add up (`stats::conservation`) for what the binary does on every capture in
//! tests/data/pcaps (malformed ones included: their frames must be decoded or dropped for
//! a named reason), for `flows` and `replay` with 1 and 3 shards, and for a labelled replay
//! with alerts and evidence. Nothing goes uncounted.

mod common;

use std::path::Path;
use std::process::Command;

use streamml_sensor::stats::{conservation, Snapshot};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

/// `flows --stats`: the counters it prints ("name value" lines on stderr); None when the
/// capture is refused.
fn flows_counters(cap: &Path, shards: &str, out: &Path) -> Option<Snapshot> {
    let o = Command::new(BIN)
        .args([
            "flows",
            &cap.to_string_lossy(),
            "--stats",
            "--shards",
            shards,
            "-o",
        ])
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("do not add up"), "{}: {err}", cap.display());
    let snap: Snapshot = err
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (!snap.is_empty()).then_some(snap)
}

fn replay_counters(cap: &Path, shards: &str, dir: &Path) -> Option<Snapshot> {
    let json = dir.join("stats.json");
    let _ = std::fs::remove_file(&json);
    let state = dir.join(format!("state-{shards}"));
    let o = Command::new(BIN)
        .args([
            "replay",
            &cap.to_string_lossy(),
            "--shards",
            shards,
            "--ring-mib",
            "8",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--stats-json")
        .arg(&json)
        .arg("--flows")
        .arg(dir.join("flows.csv"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("do not add up"), "{}: {err}", cap.display());
    let _ = std::fs::remove_dir_all(&state);
    serde_json::from_slice(&std::fs::read(&json).ok()?).ok()
}

#[test]
fn counters_add_up_on_every_capture() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for cap in common::captures(true) {
        for shards in ["1", "3"] {
            for (what, snap) in [
                (
                    "flows",
                    flows_counters(&cap, shards, &dir.path().join("f.csv")),
                ),
                ("replay", replay_counters(&cap, shards, dir.path())),
            ] {
                let Some(snap) = snap else { continue };
                let bad = conservation(&snap);
                assert!(
                    bad.is_empty(),
                    "{what} --shards {shards} {}: {bad:?}",
                    cap.display()
                );
                assert!(snap.contains_key("reader.frames") && snap.contains_key("flow.created"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 280, "{checked} runs checked");
}

#[test]
fn counters_add_up_with_alerts_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("l.pcap");
    let o = Command::new(BIN)
        .args([
            "synth",
            "--preset",
            "labelled",
            "--minutes",
            "20",
            "--seed",
            "7",
            "-o",
        ])
        .arg(&cap)
        .output()
        .unwrap();
    assert!(o.status.success());
    for shards in ["1", "2"] {
        let snap = replay_counters(&cap, shards, dir.path()).expect("stats");
        assert!(snap["detect.alerts"] >= 3, "{snap:?}");
        assert!(snap["evidence.files_written"] >= 3, "{snap:?}");
        let bad = conservation(&snap);
        assert!(bad.is_empty(), "--shards {shards}: {bad:?}");
    }
}
