//! The command line as a user meets it: real captures in, files out, one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamml-sensor"))
}

fn pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("running streamml-sensor")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run with exactly one line on stderr, containing every `needle`.
fn assert_one_line_error(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected failure, got {:?}", o.status);
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("streamml-sensor: "), "{e:?}");
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
}

#[test]
fn bad_command_lines_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = pcaps().join("basic/http-get.pcap");
    let good = good.to_str().unwrap();
    assert_one_line_error(
        &run(&["flows", "/nonexistent/x.pcap"]),
        &["/nonexistent/x.pcap", "No such file"],
    );
    assert_one_line_error(
        &run(&["flows", dir.path().to_str().unwrap()]),
        &["is a directory"],
    );
    assert_one_line_error(&run(&["flows", good, "--format", "xml"]), &["xml"]);
    for bad in ["0", "-5", "nan", "abc", "inf"] {
        let o = run(&["flows", good, "--idle-timeout", bad]);
        assert_one_line_error(&o, &["--idle-timeout"]);
        assert_eq!(o.status.code(), Some(2));
        let o = run(&["flows", good, "--active-timeout", bad]);
        assert_one_line_error(&o, &["--active-timeout"]);
    }
    assert_one_line_error(&run(&["flows", good, "--shards", "0"]), &["--shards"]);
    assert_one_line_error(&run(&["flows"]), &["CAPTURE"]);
    assert_one_line_error(&run(&["frobnicate"]), &["frobnicate"]);
    let not_cap = dir.path().join("notes.txt");
    std::fs::write(&not_cap, "hello, not a capture at all").unwrap();
    assert_one_line_error(
        &run(&["flows", not_cap.to_str().unwrap()]),
        &["not a pcap or pcapng file"],
    );
    // A link type the sensor does not decode (LINKTYPE_USER0, 147): a pcap header and
    // one record.
    let user0 = dir.path().join("user0.pcap");
    let mut b = Vec::new();
    for v in [
        0xa1b2_c3d4u32,
        0x0004_0002,
        0,
        0,
        65535,
        147,
        1_700_000_000,
        0,
        4,
        4,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0x45, 0, 0, 20]);
    std::fs::write(&user0, b).unwrap();
    assert_one_line_error(
        &run(&["flows", user0.to_str().unwrap()]),
        &["user0.pcap", "unsupported link type 147"],
    );
    // An unwritable output path.
    let o = run(&["flows", good, "-o", "/nonexistent-dir/flows.csv"]);
    assert_one_line_error(&o, &["/nonexistent-dir/flows.csv"]);
}

#[test]
fn flows_output_is_identical_for_any_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("synth.pcap");
    let o = run(&[
        "synth",
        "--preset",
        "labelled",
        "--minutes",
        "6",
        "--seed",
        "3",
        "-o",
        cap.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut inputs = vec![cap];
    for p in [
        "large/1kxun.pcap",
        "ipv6/http_ipv6.pcap",
        "vlan/vlan-collisions.pcap",
        "tunnels/gtp-u.pcap",
    ] {
        inputs.push(pcaps().join(p));
    }
    for input in &inputs {
        for fmt in ["csv", "jsonl"] {
            let mut outs = vec![];
            for shards in ["1", "2", "4"] {
                let out = dir.path().join(format!("f{shards}.{fmt}"));
                let o = run(&[
                    "flows",
                    input.to_str().unwrap(),
                    "--shards",
                    shards,
                    "--format",
                    fmt,
                    "--splt",
                    "5",
                    "--idle-timeout",
                    "30",
                    "-o",
                    out.to_str().unwrap(),
                ]);
                assert!(o.status.success(), "{}", stderr(&o));
                outs.push(std::fs::read(&out).unwrap());
            }
            assert!(outs[0].len() > 100);
            assert!(
                outs[0] == outs[1] && outs[0] == outs[2],
                "{} {fmt}: shard counts disagree",
                input.display()
            );
        }
    }
    // Every flow still open at the end of input (long timeouts) and a 1 MiB sort buffer:
    // with one shard on a machine with a spare core, half of the final flush is formatted
    // on a second thread into its own sorter, and both sorters spill runs to disk; the
    // output must still equal that of 2 and 4 shards.
    let mut outs = vec![];
    for shards in ["1", "2", "4"] {
        let out = dir.path().join(format!("long{shards}.csv"));
        let o = run(&[
            "flows",
            inputs[0].to_str().unwrap(),
            "--shards",
            shards,
            "--idle-timeout",
            "3600",
            "--active-timeout",
            "7200",
            "--sort-buffer-mib",
            "1",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push(std::fs::read(&out).unwrap());
    }
    let rows = outs[0].iter().filter(|&&b| b == b'\n').count();
    assert!(
        rows > 4096 + 1,
        "only {rows} lines: the split flush needs 4096 open flows"
    );
    assert!(
        outs[0] == outs[1] && outs[0] == outs[2],
        "flush split across threads: shard counts disagree"
    );
}

#[test]
fn flows_are_sorted_and_numbered() {
    let o = run(&["flows", pcaps().join("large/1kxun.pcap").to_str().unwrap()]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let fs = header
        .iter()
        .position(|c| *c == "bidirectional_first_seen_ms")
        .unwrap();
    let mut prev = 0u64;
    let mut n = 0;
    for (i, l) in lines.enumerate() {
        let cols: Vec<&str> = l.split(',').collect();
        assert_eq!(cols[0], i.to_string());
        let t: u64 = cols[fs].parse().unwrap();
        assert!(t >= prev);
        prev = t;
        n += 1;
    }
    assert!(n > 100, "{n}");
}

#[test]
fn cut_short_capture_keeps_earlier_flows_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(pcaps().join("basic/http-get.pcap")).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &full[..full.len() - 20]).unwrap();
    let out = dir.path().join("flows.csv");
    let o = run(&["flows", cut.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("cut.pcap") && e.contains("offset"), "{e}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}"); // header + the one flow
                                                   // 13 of 14 packets were accounted.
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    let p = header
        .iter()
        .position(|c| *c == "bidirectional_packets")
        .unwrap();
    assert_eq!(row[p], "13");
}

#[test]
fn synth_is_deterministic_and_tshark_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.pcap");
    let b = dir.path().join("b.pcap");
    for p in [&a, &b] {
        let o = run(&[
            "synth",
            "--minutes",
            "1",
            "--seed",
            "9",
            "-o",
            p.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(x.len() > 10_000);
    assert_eq!(x, y);
    let t = Command::new("tshark")
        .args(["-r", a.to_str().unwrap(), "-q", "-z", "io,stat,0"])
        .output()
        .expect("tshark is installed by scripts/deps.sh");
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let warn = String::from_utf8_lossy(&t.stderr);
    assert!(
        !warn.contains("appears to be damaged") && !warn.contains("cut short"),
        "{warn}"
    );
}

/// Two sensors never share a state directory: while one holds it (here `flock`, standing
/// in for a running sensor: the same lock), a replay into it stops with one line naming
/// the directory and the holder's PID, exit 2, and writes nothing; once the holder is gone
/// (killed, as a crashed sensor would be) the same replay runs.
#[test]
fn state_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = state.join("lock");
    std::fs::write(&lock, "4242\n").unwrap();
    // --no-fork: flock execs sleep itself, so killing this PID releases the lock
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock (util-linux)");
    // wait until flock holds it: `flock --nonblock` fails while it does
    let t0 = std::time::Instant::now();
    while Command::new("flock")
        .args(["--nonblock", "--shared"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(t0.elapsed().as_secs() < 10, "flock did not take the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cap = pcaps().join("basic/http-get.pcap");
    let args = [
        "replay",
        cap.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let o = run(&args);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_one_line_error(
        &o,
        &[
            "in use by another streamml-sensor",
            "(pid 4242)",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        !state.join("ring").exists(),
        "wrote into a directory in use"
    );
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(state.join("ring").join("shard-0.ring").exists());
    // the lock file now names the replay (gone by now), not the old holder
    assert_ne!(std::fs::read_to_string(&lock).unwrap().trim(), "4242");
}

/// A scorer shard that breaks (a bug, injected with STREAMML_FAULT) ends the run with exit
/// code 1 after the other stages drained: one line for the panic, one for the failed run,
/// the alert log still whole lines, no half-written flow output; never a crash of the
/// binary.
#[test]
fn broken_scorer_ends_the_run_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("l.pcap");
    let o = run(&[
        "synth",
        "--preset",
        "labelled",
        "--minutes",
        "12",
        "--seed",
        "3",
        "-o",
        cap.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let state = dir.path().join("state");
    let flows = dir.path().join("flows.csv");
    let o = bin()
        .env("STREAMML_FAULT", "scorer-panic")
        .args([
            "replay",
            cap.to_str().unwrap(),
            "--shards",
            "2",
            "--state-dir",
            state.to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    // (The start-up lines of warm restart, "models: profile P: cold start: ...", aside.)
    let lines: Vec<&str> = e
        .trim_end()
        .lines()
        .filter(|l| !l.starts_with("streamml-sensor: models: profile "))
        .collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with("streamml-sensor: internal error: thread 'scorer-0' panicked at ")
            && lines[0].ends_with(": injected fault (STREAMML_FAULT=scorer-panic)"),
        "{e}"
    );
    assert_eq!(
        lines[1],
        "streamml-sensor: scorer shard 0 failed: injected fault (STREAMML_FAULT=scorer-panic)"
    );
    assert!(!flows.exists() && !dir.path().join("flows.csv.tmp").exists());
    let log = std::fs::read_to_string(state.join("alerts.jsonl")).unwrap_or_default();
    for l in log.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
}

/// `flows` reads the configuration like every command (`--config`), and its options
/// override the file: a file setting idle_timeout_s = 5 gives what `--idle-timeout 5`
/// gives, and an option beats the file.
#[test]
fn flows_honours_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cap = pcaps().join("basic/dns-edns-ecs.pcap");
    let cap = cap.to_str().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[flow]\nidle_timeout_s = 5\n").unwrap();
    let out = |name: &str, args: &[&str]| -> String {
        let p = dir.path().join(name);
        let mut a = vec!["flows", cap, "-o", p.to_str().unwrap()];
        a.extend_from_slice(args);
        let o = run(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(p).unwrap()
    };
    let default = out("d.csv", &[]);
    let by_file = out("f.csv", &["--config", cfg.to_str().unwrap()]);
    let by_flag = out("o.csv", &["--idle-timeout", "5"]);
    assert_eq!(by_file, by_flag);
    assert_ne!(by_file, default, "the capture has gaps longer than 5 s");
    let flag_wins = out(
        "w.csv",
        &["--config", cfg.to_str().unwrap(), "--idle-timeout", "120"],
    );
    assert_eq!(flag_wins, default);
    // and a bad file is one line naming file and key
    std::fs::write(&cfg, "[flow]\ncapacity = 0\n").unwrap();
    assert_one_line_error(
        &run(&["flows", cap, "--config", cfg.to_str().unwrap()]),
        &["c.toml", "flow.capacity = 0"],
    );
}
