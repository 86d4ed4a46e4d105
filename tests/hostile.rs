//! Bad input never destroys anything: the binary run as a careless or hostile user would.
//! Outputs: devices, FIFOs, directories, links and the input itself are refused and left
//! as they were; two runs writing one file leave one run's whole file; an unusable output
//! fails before the first packet.

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
