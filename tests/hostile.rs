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

// ---------------------------------------------------------------------------------------
// Configuration and limits (issue 17, items 3 and 7): a bad configuration or option is one
// line and exit 2, before anything is allocated, created or attached.

#[path = "live/harness.rs"]
mod harness;

use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs the sensor (optionally under `prlimit --as=BYTES`), killing it past a generous
/// hang bound; returns its output and how long it took.
fn run_bounded(as_limit: Option<u64>, args: &[&str]) -> (Output, Duration) {
    let mut cmd = match as_limit {
        Some(b) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--as={b}")).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    // stderr to a file: a pipe nobody reads while waiting would stall a long message.
    let err = tempfile::tempfile().unwrap();
    let t = Instant::now();
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .expect("running the sensor");
    let status = harness::wait_timeout(&mut child, Duration::from_secs(60));
    let took = t.elapsed();
    assert!(
        status.is_some(),
        "{args:?}: still running after 60 s (killed)"
    );
    (output_of(status.unwrap(), err), took)
}

fn output_of(status: std::process::ExitStatus, mut err: std::fs::File) -> Output {
    use std::io::{Read, Seek};
    let mut stderr = Vec::new();
    err.rewind().unwrap();
    err.read_to_end(&mut stderr).unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr,
    }
}

fn pcap() -> String {
    cap("basic/http-get.pcap")
}

/// The sensor in the pair's sensor namespace with exactly `args` (bounded): exit code
/// and stderr.
fn sensor_in(pair: &harness::VethPair, args: &[&str]) -> (Option<i32>, String) {
    let err = tempfile::tempfile().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &pair.ns_sensor, BIN])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap();
    let status = harness::wait_timeout(&mut child, Duration::from_secs(30));
    assert!(
        status.is_some(),
        "{args:?}: still running after 30 s (killed)"
    );
    let out = output_of(status.unwrap(), err);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--config /dev/zero`, a 10 GiB (sparse) file and an endless pipe are refused after
/// 1 MiB, under a 512 MiB address-space limit (reading them whole would need more), in
/// every command that reads a configuration.
#[test]
fn endless_or_huge_config_fails_fast_under_a_memory_limit() {
    let d = tempfile::tempdir().unwrap();
    let huge = d.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let state = d.path().join("state");
    let (input, st) = (pcap(), state.to_str().unwrap().to_string());
    for cfg in ["/dev/zero", huge.to_str().unwrap()] {
        let want = format!("streamml-sensor: --config {cfg}: larger than 1 MiB");
        for args in [
            vec!["flows", "--config", cfg, &input],
            vec!["replay", "--config", cfg, &input, "--state-dir", &st],
            vec!["--iface", "nosuch0", "--config", cfg],
        ] {
            let (o, took) = run_bounded(Some(512 << 20), &args);
            refused(&o, &want);
            assert!(err(&o).starts_with(&want), "{}", err(&o));
            assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
        }
    }
    assert!(!state.join("ring").exists(), "replay went on");
    // A pipe whose writer never stops (bash process substitution).
    let o = Command::new("prlimit")
        .arg("--as=536870912")
        .arg("bash")
        .arg("-c")
        .arg(format!(
            "exec '{BIN}' flows --config <(yes 'shards = 1') '{}'",
            pcap()
        ))
        .output()
        .unwrap();
    refused(&o, "larger than 1 MiB");
}

/// A FIFO nobody writes is an error at once (not a start-up that waits forever), a
/// directory is named as such, and bytes that are not UTF-8 are named by offset and line.
#[test]
fn config_that_is_not_a_text_file_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let bin = d.path().join("bin.toml");
    std::fs::write(&bin, b"[flow]\ncapacity = 10\xff\xfe\n").unwrap();
    let input = pcap();
    let (o, took) = run_bounded(None, &["flows", "--config", fifo.to_str().unwrap(), &input]);
    refused(&o, "a FIFO with no writer: nothing to read");
    assert!(took < Duration::from_secs(20));
    refused(
        &run(&["flows", "--config", d.path().to_str().unwrap(), &input]),
        "is a directory, not a configuration file",
    );
    refused(
        &run(&["flows", "--config", bin.to_str().unwrap(), &input]),
        "not UTF-8 text: byte 0xff at offset 20 (line 2)",
    );
}

/// An evidence ring larger than the free space of its file system is refused before a
/// byte of it is allocated: one line naming the need and what is free, and no ring file.
#[test]
fn ring_larger_than_free_space_is_refused_before_anything_is_allocated() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("small");
    let _m = common::Mount::tmpfs(&mnt, "64m");
    let state = mnt.join("state");
    let s = state.to_str().unwrap();
    let input = pcap();
    let cfg = d.path().join("big-ring.toml");
    std::fs::write(&cfg, "[evidence]\nring_mib = 1000\n").unwrap();
    for args in [
        vec!["replay", &input, "--state-dir", s, "--ring-mib", "128"],
        vec![
            "replay",
            &input,
            "--state-dir",
            s,
            "--config",
            cfg.to_str().unwrap(),
        ],
    ] {
        let o = run(&args);
        refused(&o, "evidence ring: ");
        let e = err(&o);
        assert!(
            e.contains(" MiB needed in ") && e.contains("64 MiB free there"),
            "{e}"
        );
        let left: Vec<_> = std::fs::read_dir(state.join("ring"))
            .map(|r| r.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    // The bound itself, before any file system is looked at.
    refused(
        &run(&["replay", &input, "--state-dir", s, "--ring-mib", "1000000"]),
        "'1000000' must be between 1 and 65536",
    );
    std::fs::write(&cfg, "[evidence]\nring_mib = 1000000\n").unwrap();
    refused(
        &run(&[
            "replay",
            &input,
            "--state-dir",
            s,
            "--config",
            cfg.to_str().unwrap(),
        ]),
        "evidence.ring_mib = 1000000: must be between 1 and 65536",
    );
    // What fits, runs (and keeps its ring).
    let o = run(&["replay", &input, "--state-dir", s, "--ring-mib", "16"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(state.join("ring/shard-0.ring").exists());
}

/// `--shards` is at most 256 for every command and `sensor.shards` too; 256 shards run
/// and give the output of one.
#[test]
fn shards_have_one_bound_for_every_command() {
    let d = tempfile::tempdir().unwrap();
    let input = cap("large/1kxun.pcap");
    let s = d.path().join("state");
    let s = s.to_str().unwrap();
    for n in ["257", "99999999999"] {
        let want = format!("'{n}' must be between 1 and 256");
        let (o, took) = run_bounded(None, &["flows", "--shards", n, &input]);
        refused(&o, &want);
        assert!(err(&o).contains("--shards"), "{}", err(&o));
        assert!(took < Duration::from_secs(20));
        refused(
            &run(&["replay", &input, "--shards", n, "--state-dir", s]),
            "--shards",
        );
        refused(&run(&["--iface", "nosuch0", "--shards", n]), &want);
    }
    let cfg = d.path().join("shards.toml");
    std::fs::write(&cfg, "[sensor]\nshards = 99999999999\n").unwrap();
    let c = cfg.to_str().unwrap();
    let want = format!("{c}: sensor.shards = 99999999999: at most 256");
    refused(&run(&["flows", "--config", c, &input]), &want);
    refused(
        &run(&["replay", &input, "--config", c, "--state-dir", s]),
        &want,
    );
    refused(&run(&["--iface", "nosuch0", "--config", c]), &want);
    let out = |shards: &str| {
        let p = d.path().join(format!("f{shards}.csv"));
        let o = run(&[
            "flows",
            &input,
            "--shards",
            shards,
            "--capacity",
            "4096",
            "-o",
            p.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", err(&o));
        std::fs::read(p).unwrap()
    };
    assert_eq!(out("256"), out("1"));
}

/// Flow tables that cannot fit the memory available are refused before they are
/// reserved, naming the need (capacity x shards x bytes per flow) and what there is; the
/// same under an address-space limit.
#[test]
fn flow_tables_beyond_memory_are_refused_before_allocation() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("state");
    let s = s.to_str().unwrap();
    let input = pcap();
    let (o, took) = run_bounded(
        None,
        &[
            "flows",
            &input,
            "--shards",
            "256",
            "--capacity",
            "1073741824",
        ],
    );
    refused(&o, "memory: the run needs up to ");
    let e = err(&o);
    assert!(
        e.contains("flow tables 256 x 1073741824 flows x ")
            && e.contains("(MemAvailable); lower --capacity"),
        "{e}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let cfg = d.path().join("big.toml");
    std::fs::write(
        &cfg,
        "[sensor]\nshards = 64\n[flow]\ncapacity = 1073741824\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    refused(
        &run(&["replay", &input, "--config", c, "--state-dir", s]),
        "memory: the run needs up to ",
    );
    assert!(!Path::new(s).join("ring/shard-0.ring").exists());
    refused(
        &run(&["--iface", "nosuch0", "--config", c]),
        "nosuch0: no such interface",
    );
    // Under a 512 MiB address-space limit the default tables (1M flows per shard) do not
    // fit: refused with the limit named, not an abort on a failed allocation.
    let (o, _) = run_bounded(Some(512 << 20), &["flows", &input, "--shards", "2"]);
    refused(&o, "RLIMIT_AS leaves");
    // Smaller tables run under the same limit.
    let (o, _) = run_bounded(
        Some(512 << 20),
        &["flows", &input, "--shards", "2", "--capacity", "10000"],
    );
    assert!(o.status.success(), "{}", err(&o));
}

/// A configuration without profiles runs (flows are metered) and says at start-up that
/// detection is off.
#[test]
fn zero_profiles_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("empty.toml");
    std::fs::write(
        &cfg,
        "# nothing but defaults\n[flow]\nidle_timeout_s = 30\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let want = format!(
        "streamml-sensor: warning: {c} has no [[profile]]: detection is off, only flows are metered"
    );
    let s = d.path().join("state");
    let flows = d.path().join("flows.csv");
    let o = run(&[
        "replay",
        &cap("large/1kxun.pcap"),
        "--config",
        c,
        "--state-dir",
        s.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--ring-mib",
        "8",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let e = err(&o);
    assert_eq!(
        e.lines().find(|l| l.contains("warning")),
        Some(want.as_str()),
        "{e}"
    );
    assert!(e.lines().next().unwrap().contains("warning"), "{e}");
    assert_eq!(e.matches("warning:").count(), 1, "{e}");
    assert!(std::fs::read_to_string(&flows).unwrap().lines().count() > 10);
    // The default configuration has profiles: no warning.
    let o = run(&[
        "replay",
        &cap("basic/http-get.pcap"),
        "--state-dir",
        s.to_str().unwrap(),
        "--ring-mib",
        "8",
    ]);
    assert!(
        o.status.success() && !err(&o).contains("warning"),
        "{}",
        err(&o)
    );
    // `flows` never detects: nothing to warn about.
    let o = run(&["flows", &pcap(), "--config", c]);
    assert!(o.status.success() && err(&o).is_empty(), "{}", err(&o));
    // Live capture, on a veth pair: the warning, then capture runs. More shards than
    // cores is allowed, and said.
    let Some(_g) = harness::live() else { return };
    let pair = harness::VethPair::new(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = (cores + 1).to_string();
    let sensor = pair.start_sensor(&["--config", c, "--shards", &shards]);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let lines: Vec<&str> = stopped.stderr.lines().collect();
    let at = |p: &dyn Fn(&str) -> bool| lines.iter().position(|l| p(l));
    let warned = at(&|l| l == want);
    let capturing = at(&|l| l.starts_with("streamml-sensor: capturing on"));
    assert!(warned.is_some() && warned < capturing, "{}", stopped.stderr);
    let shards_warning = format!(
        "streamml-sensor: warning: {shards} scorer shards on {cores} cores: the threads share the cores"
    );
    let warned = at(&|l| l.starts_with(&shards_warning));
    assert!(warned.is_some() && warned < capturing, "{}", stopped.stderr);
}

/// Every bad live option is refused, one line, exit 2, before the configuration is read,
/// the interface looked at or anything created: with an interface that does not exist the
/// error is the option's; on a real one no XDP program is attached and no state
/// directory made.
#[test]
fn bad_live_options_are_refused_before_anything_is_attached() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let not_a_core = if cores < 99 { 99 } else { 1 << 20 }.to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--batch", "0"], "'0' for '--batch".into()),
        (
            vec!["--batch", "128", "--rx-size", "64"],
            "--batch 128: at most the smaller of --rx-size (64) and --fill-size (32768)".into(),
        ),
        (vec!["--nap-us", "0"], "'0' for '--nap-us".into()),
        (
            vec!["--reader-cores", &not_a_core],
            format!("--reader-cores: core {not_a_core} is not one this process may run on"),
        ),
        (vec!["--duration", "0"], "'0' for '--duration".into()),
        (vec!["--duration", "nan"], "'nan' for '--duration".into()),
        (
            vec!["--duration", "1e300"],
            "'1e300' for '--duration".into(),
        ),
        (
            vec!["--report-interval", "inf"],
            "'inf' for '--report-interval".into(),
        ),
        (
            vec!["--rx-size", "2147483648"],
            "'2147483648' for '--rx-size".into(),
        ),
        (
            vec!["--rx-size", "1000"],
            "'1000' must be a power of two".into(),
        ),
        (
            vec!["--fill-size", "131072"],
            "'131072' for '--fill-size".into(),
        ),
        (
            vec!["--frame-size", "1024"],
            "'1024' for '--frame-size".into(),
        ),
        (vec!["--queues", "257"], "'257' for '--queues".into()),
        (
            vec!["--busy-poll", "4000000000"],
            "'4000000000' for '--busy-poll".into(),
        ),
        (vec!["--ring-mib", "0"], "'0' for '--ring-mib".into()),
        (
            vec!["--flow-capacity", "0"],
            "'0' for '--flow-capacity".into(),
        ),
        (
            vec!["--ring-capacity", "65537"],
            "'65537' for '--ring-capacity".into(),
        ),
        (
            vec!["--sample", "NaN"],
            "--sample NaN: must be a percentage".into(),
        ),
    ];
    let d = tempfile::tempdir().unwrap();
    // The option is checked before the configuration file is read.
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "this is not toml").unwrap();
    for (opt, want) in &cases {
        let mut args = vec!["--iface", "nosuch0", "--config", cfg.to_str().unwrap()];
        args.extend(opt);
        let o = run(&args);
        refused(&o, want);
        assert!(!err(&o).contains("nosuch0"), "{opt:?}: {}", err(&o));
    }
    let Some(_g) = harness::live() else { return };
    let pair = harness::VethPair::new(2);
    let state = pair.state_dir();
    for (opt, want) in &cases {
        let mut args = vec!["--iface", harness::SENSOR_IF, "--no-pin"];
        args.extend(opt);
        args.extend(["--state-dir", state.to_str().unwrap()]);
        let (code, e) = sensor_in(&pair, &args);
        assert_eq!(code, Some(2), "{opt:?}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{opt:?}: {e}");
        assert!(e.contains(want.as_str()), "{opt:?}: {e}");
        assert!(
            !pair.has_xdp(),
            "{opt:?} attached a program:\n{}",
            pair.ip_link()
        );
        assert!(!state.exists(), "{opt:?} made the state directory");
    }
}

/// Live capture: every queue's ring must fit, before the first is created (two queues
/// of 40 MiB on 64 MiB: each would fit alone).
#[test]
fn live_rings_must_all_fit_before_the_first_is_created() {
    let Some(_g) = harness::live() else { return };
    let pair = harness::VethPair::new(2);
    let mnt = pair.path("small");
    let _m = common::Mount::tmpfs(&mnt, "64m");
    let state = mnt.join("state");
    let s = state.to_str().unwrap();
    let (code, e) = sensor_in(
        &pair,
        &[
            "--iface",
            harness::SENSOR_IF,
            "--no-pin",
            "--queues",
            "2",
            "--state-dir",
            s,
            "--ring-mib",
            "40",
            "--duration",
            "5",
        ],
    );
    assert_eq!(code, Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.starts_with("streamml-sensor: evidence rings: 2 x 40 MiB = 80 MiB needed in ")
            && e.contains("64 MiB free there"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(state.join("ring"))
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!pair.has_xdp());
}

/// Errors print the operating system's message once, and a stderr that cannot be
/// written does not turn an error into an abort.
#[test]
fn errors_say_the_os_message_once() {
    let o = run(&["flows", "/nonexistent/x.pcap"]);
    refused(
        &o,
        "/nonexistent/x.pcap: No such file or directory (os error 2)",
    );
    assert_eq!(err(&o).matches("os error").count(), 1, "{}", err(&o));
    let o = run(&["replay", &pcap(), "--state-dir", "/proc/nope/state"]);
    refused(&o, "/proc/nope/state");
    assert_eq!(err(&o).matches("os error").count(), 1, "{}", err(&o));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let st = Command::new(BIN)
        .args(["flows", "/nonexistent/x.pcap"])
        .stderr(full)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2), "{st:?}");
}
