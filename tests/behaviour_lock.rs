//! The binary's outputs, locked, so that a refactoring cannot change what users get:
//! SHA-256 of
//! - `flows CAPTURE --shards N` for every capture in tests/data/pcaps outside malformed/,
//!   N = 1, 2, 4;
//! - `synth --preset labelled` and `replay` of it (alerts.jsonl, every evidence file's
//!   decompressed PCAP, `--flows` CSV) for the quick-start capture (seed 7, `--shards` 1
//!   and 2) and the detection tests' seeds (1, 4, 6; `--shards` 1).
//!
//! The lock is tests/golden/behaviour-lock.txt. A deliberate change of output regenerates
//! it (`STREAMML_LOCK_WRITE=1 cargo test --release --test behaviour_lock`) in the commit
//! that makes the change, which says why.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lock_path() -> PathBuf {
    repo().join("tests/golden/behaviour-lock.txt")
}

fn sha256(bytes: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn run(args: &[&str]) {
    let o = Command::new(BIN)
        .args(args)
        .output()
        .expect("run the sensor");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn current() -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut m = BTreeMap::new();
    let base = repo().join("tests/data/pcaps");
    for cap in common::captures(false) {
        let rel = cap
            .strip_prefix(&base)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for shards in ["1", "2", "4"] {
            let out = dir.path().join("f.csv");
            let _ = std::fs::remove_file(&out);
            let o = Command::new(BIN)
                .args([
                    "flows",
                    &cap.to_string_lossy(),
                    "--shards",
                    shards,
                    "-o",
                    &out.to_string_lossy(),
                ])
                .output()
                .expect("run the sensor");
            // A refused capture locks its exit code and message; a fault part-way, its
            // message and the flows written before it.
            let mut bytes = format!(
                "exit {:?}\n{}\n",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).replace(&*base.to_string_lossy(), "PCAPS")
            )
            .into_bytes();
            if let Ok(b) = std::fs::read(&out) {
                bytes.extend_from_slice(&b);
            }
            m.insert(format!("flows shards={shards} {rel}"), sha256(&bytes));
        }
    }
    for (seed, shard_counts) in [
        ("7", &["1", "2"][..]),
        ("1", &["1"]),
        ("4", &["1"]),
        ("6", &["1"]),
    ] {
        let cap = dir.path().join(format!("l{seed}.pcap"));
        run(&[
            "synth",
            "--preset",
            "labelled",
            "--minutes",
            "20",
            "--seed",
            seed,
            "-o",
            &cap.to_string_lossy(),
        ]);
        m.insert(
            format!("synth labelled seed={seed}"),
            sha256(&std::fs::read(&cap).unwrap()),
        );
        for shards in shard_counts {
            let state = dir.path().join(format!("s{seed}-{shards}"));
            let flows = dir.path().join(format!("s{seed}-{shards}.csv"));
            run(&[
                "replay",
                &cap.to_string_lossy(),
                "--state-dir",
                &state.to_string_lossy(),
                "--shards",
                shards,
                "--flows",
                &flows.to_string_lossy(),
            ]);
            let case = format!("replay seed={seed} shards={shards}");
            m.insert(
                format!("{case} alerts.jsonl"),
                sha256(&std::fs::read(state.join("alerts.jsonl")).unwrap()),
            );
            m.insert(
                format!("{case} flows.csv"),
                sha256(&std::fs::read(&flows).unwrap()),
            );
            let mut ev: Vec<_> = std::fs::read_dir(state.join("evidence"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            ev.sort();
            for p in ev {
                let pcap = zstd::decode_all(std::fs::File::open(&p).unwrap()).unwrap();
                m.insert(
                    format!(
                        "{case} evidence/{}",
                        p.file_name().unwrap().to_string_lossy()
                    ),
                    sha256(&pcap),
                );
            }
            std::fs::remove_file(&flows).unwrap();
        }
        std::fs::remove_file(&cap).unwrap();
    }
    m
}

#[test]
fn outputs_equal_the_locked_build() {
    let now = current();
    let text: String = now.iter().map(|(k, v)| format!("{v}  {k}\n")).collect();
    if std::env::var("STREAMML_LOCK_WRITE").is_ok_and(|v| v == "1") {
        std::fs::write(lock_path(), &text).unwrap();
        eprintln!("wrote {} entries to {}", now.len(), lock_path().display());
        return;
    }
    let locked: BTreeMap<String, String> = std::fs::read_to_string(lock_path())
        .expect("tests/golden/behaviour-lock.txt")
        .lines()
        .map(|l| {
            let (h, k) = l.split_once("  ").expect("HASH  CASE");
            (k.to_string(), h.to_string())
        })
        .collect();
    let mut diffs = Vec::new();
    for (k, v) in &locked {
        match now.get(k) {
            None => diffs.push(format!("missing now: {k}")),
            Some(n) if n != v => diffs.push(format!("changed: {k}")),
            _ => {}
        }
    }
    for k in now.keys().filter(|k| !locked.contains_key(*k)) {
        diffs.push(format!("new: {k}"));
    }
    assert!(
        diffs.is_empty(),
        "{} of {} outputs differ from the locked build:\n{}",
        diffs.len(),
        locked.len(),
        diffs.join("\n")
    );
}
