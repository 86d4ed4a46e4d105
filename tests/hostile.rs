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

// ---------------------------------------------------------------------------------------
// Damaged evidence rings: `evidence recover` recovers every readable ring, reports each
// unreadable one, and never writes a damaged record as a packet.

use common::{frames, read_pcap_zst, Pkt, XorShift};

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

// ---------------------------------------------------------------------------------------
// Seeded mutation run over ring files (the ring counterpart of the frame mutation run in
// tests/wire_captures.rs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use streamml_sensor::capture::LinkType;
use streamml_sensor::evidence::recover::{exit_code, recover as recover_lib, RecoverOptions};
use streamml_sensor::evidence::ring::{End, RecordBuf, RingConfig, RingReader, Start};
use streamml_sensor::evidence::EvidenceRing;

/// A ring written by the library's writer from a real capture's frames, with unique
/// timestamps (`t0 + i µs`): its file bytes and every packet ever appended, by time.
fn written_ring(
    dir: &Path,
    name: &str,
    rel: &str,
    n: usize,
    t0: u64,
) -> (Vec<u8>, BTreeMap<u64, Pkt>) {
    let p = dir.join(name);
    let snaplen = 512usize;
    let mut ring = EvidenceRing::create(
        &p,
        &RingConfig {
            size_bytes: 64 * 1024,
            snaplen: snaplen as u32,
            shard: 0,
        },
    )
    .unwrap();
    let mut all = BTreeMap::new();
    for (i, f) in frames(rel).iter().cycle().take(n).enumerate() {
        let ts = t0 + i as u64 * 1000;
        ring.append(ts, f.orig_len, LinkType::Ethernet, i as u64, &f.data);
        let data = f.data[..f.data.len().min(snaplen)].to_vec();
        let orig_len = f.orig_len.max(data.len() as u32);
        all.insert(
            ts,
            Pkt {
                ts_ns: ts,
                orig_len,
                data,
            },
        );
    }
    drop(ring);
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    (b, all)
}

/// File offsets of the records between tail and head (following wrap markers).
fn live_records(b: &[u8]) -> Vec<usize> {
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let header_len = u32_at(b, 12) as u64;
    let d = u64_at(24);
    let (head, mut pos) = (u64_at(128), u64_at(144));
    let mut v = Vec::new();
    while pos < head {
        let phys = pos % d;
        let at = (header_len + phys) as usize;
        if u64_at(at) == u64::MAX {
            pos += d - phys;
            continue;
        }
        v.push(at);
        pos += (40 + u64::from(u32_at(b, at + 28)) + 7) & !7;
    }
    v
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    7,
    8,
    40,
    4096,
    65_536,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    u64::MAX - 7,
    u64::MAX,
];

/// One random mutation of the ring bytes `b` (in place). `recs`: record offsets of the
/// unmutated ring.
fn mutate_ring(rng: &mut XorShift, b: &mut Vec<u8>, recs: &[usize]) {
    let header_len = u32_at(b, 12) as usize;
    let len = b.len();
    // Aim at the file header, the index, the records' headers and the data area.
    let pick = |rng: &mut XorShift| -> usize {
        match rng.below(6) {
            0 => rng.below(160),
            1 => 4096 + rng.below(header_len - 4096),
            2 | 3 => recs[rng.below(recs.len())] + rng.below(40),
            _ => header_len + rng.below(len - header_len),
        }
    };
    let value = |rng: &mut XorShift, cur: u64| -> u64 {
        match rng.below(4) {
            0 => INTERESTING[rng.below(INTERESTING.len())],
            1 => rng.next(),
            2 => cur.wrapping_add(8 * (rng.below(5) as u64)).wrapping_sub(16),
            _ => cur ^ (1 << rng.below(64)),
        }
    };
    let set = |b: &mut Vec<u8>, at: usize, width: usize, v: u64| {
        if at + width <= b.len() {
            b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
    };
    let get = |b: &[u8], at: usize, width: usize| -> u64 {
        let mut x = [0u8; 8];
        if at + width <= b.len() {
            x[..width].copy_from_slice(&b[at..at + width]);
        }
        u64::from_le_bytes(x)
    };
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            return;
        }
        match rng.below(12) {
            0..=2 => {
                let at = pick(rng).min(b.len() - 1);
                b[at] ^= 1 << rng.below(8);
            }
            3 => {
                let at = pick(rng).min(b.len() - 1);
                b[at] = rng.next() as u8;
            }
            4 => {
                // Truncation: anywhere, a little, or into the header.
                let n = b.len();
                let to = match rng.below(3) {
                    0 => rng.below(n),
                    1 => n - 1 - rng.below(8192.min(n)),
                    _ => rng.below(4200.min(n)),
                };
                b.truncate(to);
            }
            5 => {
                let k = 1 + rng.below(8192);
                let fill = rng.below(2) == 0;
                for _ in 0..k {
                    b.push(if fill { rng.next() as u8 } else { 0 });
                }
            }
            6 | 7 => {
                // A file header field: version, header_len, file_len, data_len, snaplen,
                // shard, index_len, chunk_shift, salt, head, head_seq, tail,
                // overwritten_max_ts; then, half the time, a recomputed header CRC (a
                // header that lies consistently).
                let (at, w) = [
                    (8, 4),
                    (12, 4),
                    (16, 8),
                    (24, 8),
                    (32, 4),
                    (36, 4),
                    (40, 4),
                    (44, 4),
                    (48, 8),
                    (128, 8),
                    (136, 8),
                    (144, 8),
                    (152, 8),
                ][rng.below(13)];
                let v = value(rng, get(b, at, w));
                set(b, at, w, v);
                if rng.below(2) == 0 && b.len() >= 68 {
                    let c = crc32c::crc32c(&b[..64]);
                    b[64..68].copy_from_slice(&c.to_le_bytes());
                }
            }
            8 | 9 => {
                // A record header field: seq, ts, flow hash, orig_len, cap_len, link,
                // hcheck, check.
                let r = recs[rng.below(recs.len())];
                let (off, w) = [
                    (0, 8),
                    (8, 8),
                    (16, 8),
                    (24, 4),
                    (28, 4),
                    (32, 2),
                    (34, 2),
                    (36, 4),
                ][rng.below(8)];
                let v = value(rng, get(b, r + off, w));
                set(b, r + off, w, v);
            }
            10 => {
                // A stretch zeroed or overwritten with bytes from elsewhere (a lost page,
                // an older lap, a record duplicated).
                let at = pick(rng).min(b.len() - 1);
                let n = (1 + rng.below(4096)).min(b.len() - at);
                if rng.below(2) == 0 {
                    b[at..at + n].fill(0);
                } else {
                    let from = rng.below(b.len() - n + 1);
                    let chunk = b[from..from + n].to_vec();
                    b[at..at + n].copy_from_slice(&chunk);
                }
            }
            _ => {
                // An index entry {seq, pos, max_ts_before}.
                let e = 4096 + 32 * rng.below((header_len - 4096) / 32);
                let f = 8 * rng.below(3);
                let v = value(rng, get(b, e + f, 8));
                set(b, e + f, 8, v);
            }
        }
    }
}

/// Keeps the ring file of a failing case: the base ring's salt is random, so the seed alone
/// does not reproduce a case.
struct KeepOnPanic<'a>(&'a Path, u64, u64);

impl Drop for KeepOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!(
                "streamml-ring-mutation-seed{}-case{}.ring",
                self.1, self.2
            ));
            if std::fs::copy(self.0, &keep).is_ok() {
                eprintln!("the failing case's ring file: {}", keep.display());
            }
        }
    }
}

/// The kind of an unreadable ring's reason (`RingError::reason`).
fn reason_kind(why: &str) -> &'static str {
    [
        ("not an evidence ring file (bad magic)", "bad magic"),
        ("ring layout version ", "version"),
        ("truncated: ", "truncated"),
        ("damaged file header", "header CRC"),
        ("inconsistent header (", "geometry"),
        ("inconsistent head ", "head/tail"),
        ("file is ", "longer"),
    ]
    .iter()
    .find(|(p, _)| why.starts_with(p))
    .map_or("other", |&(_, k)| k)
}

/// Aborts the test process when a case runs longer than `limit`: a hang fails the run
/// instead of stalling it.
struct Watchdog {
    started_ms: Arc<AtomicU64>,
    case: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    t0: Instant,
}

impl Watchdog {
    fn spawn(limit: Duration, seed: u64) -> Watchdog {
        let w = Watchdog {
            started_ms: Arc::new(AtomicU64::new(u64::MAX)),
            case: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicBool::new(false)),
            t0: Instant::now(),
        };
        let (s, c, d, t0) = (w.started_ms.clone(), w.case.clone(), w.done.clone(), w.t0);
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let st = s.load(Ordering::Relaxed);
                let now = t0.elapsed().as_millis() as u64;
                if st != u64::MAX && now.saturating_sub(st) > limit.as_millis() as u64 {
                    eprintln!(
                        "ring mutation case {} (seed {seed}) still running after {limit:?}: a hang",
                        c.load(Ordering::Relaxed)
                    );
                    std::process::abort();
                }
            }
        });
        w
    }
    fn start(&self, case: u64) {
        self.case.store(case, Ordering::Relaxed);
        self.started_ms
            .store(self.t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn stop(&self) {
        self.started_ms.store(u64::MAX, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The binary on a state directory, killed if it runs longer than `limit`: (exit code,
/// stderr).
fn recover_bin_bounded(state: &Path, out: &Path, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let mut c = Command::new(BIN)
        .args(["evidence", "recover", "--state-dir"])
        .arg(state)
        .arg("-o")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let st = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            c.kill().unwrap();
            c.wait().unwrap();
            panic!("evidence recover still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut e = String::new();
    c.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    (st.code(), e)
}

/// Seeded mutations of a real ring file (written by the library's writer from a real
/// capture, wrapped several times): bit flips, byte sets, truncations, extensions, file
/// header fields set to extreme values (half of them with the header CRC recomputed, so
/// the geometry checks are reached), record header fields, zeroed or copied stretches,
/// index entries. A third of the cases also hold an intact second ring. Each mutated ring
/// is also read the live sensor's way (`copy_range` from a time, a sequence number and
/// the oldest record, through the index): no panic, no hang, no record that differs.
///
/// Every case runs `evidence recover`'s library entry point in-process — the function
/// `cmd/evidence.rs` calls, with the exit code it maps the result to (`exit_code`, or 2
/// for an error) — under `catch_unwind` and a watchdog (30 s per case aborts the run: a
/// hang). Every 40th case also runs the binary, whose exit code must be the same. In
/// both: no panic, no hang, exit codes 0/1/2 only; 1 exactly when a ring was unreadable
/// and another read; every recovered packet equals the packet appended with its
/// timestamp, byte for byte; an error leaves no output. Seeded (STREAMML_SEED), sized by
/// STREAMML_RING_MUTATIONS (default 10 000 cases, 250 of them through the binary). The
/// ring's salt is random, so a failing case's file is kept in the temp directory.
#[test]
fn mutated_rings_never_panic_hang_or_recover_a_damaged_packet() {
    let seed: u64 = std::env::var("STREAMML_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0006);
    let n: u64 = std::env::var("STREAMML_RING_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    // tmpfs when there is one: recover fsyncs its output.
    let d = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let (base, mut originals) = written_ring(d.path(), "a.ring", "large/1kxun.pcap", 600, 1 << 60);
    let (second, second_pkts) =
        written_ring(d.path(), "b.ring", "basic/443-curl.pcap", 40, 1 << 61);
    assert_eq!(live_records(&second).len(), 40, "the second ring holds all");
    originals.extend(second_pkts);
    let recs = live_records(&base);
    assert!(
        recs.len() > 50 && u64::from_le_bytes(base[144..152].try_into().unwrap()) > 0,
        "the base ring wrapped"
    );
    let state = d.path().join("state");
    let ring_dir = state.join("ring");
    std::fs::create_dir_all(&ring_dir).unwrap();
    let (r0, r1) = (ring_dir.join("shard-0.ring"), ring_dir.join("shard-1.ring"));
    let out = d.path().join("out.pcap.zst");
    let out_bin = d.path().join("out-bin.pcap.zst");
    let mut rng = XorShift::new(seed);
    let dog = Watchdog::spawn(Duration::from_secs(30), seed);
    let mut codes = [0u64; 3];
    let (mut with_corrupt, mut with_torn, mut via_binary) = (0u64, 0u64, 0u64);
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let mut buf = Vec::with_capacity(base.len() + 8192);
    for case in 0..n {
        buf.clear();
        buf.extend_from_slice(&base);
        mutate_ring(&mut rng, &mut buf, &recs);
        std::fs::write(&r0, &buf).unwrap();
        let _keep = KeepOnPanic(&r0, seed, case);
        let two = rng.below(3) == 0;
        if two {
            std::fs::write(&r1, &second).unwrap();
        } else {
            let _ = std::fs::remove_file(&r1);
        }
        let _ = std::fs::remove_file(&out);
        let opts = RecoverOptions {
            state_dir: state.clone(),
            output: out.clone(),
            ..RecoverOptions::default()
        };
        dog.start(case);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recover_lib(&opts)));
        dog.stop();
        let res = res.unwrap_or_else(|_| panic!("recover panicked: seed {seed} case {case}"));
        // The live sensor's path on the same file: copies that start from the index (a
        // time or a sequence number) instead of the tail.
        let t_lo = *originals.keys().next().unwrap();
        let (from_ts, from_seq) = (t_lo + 1000 * rng.below(700) as u64, rng.below(700) as u64);
        dog.start(case);
        let copied = std::panic::catch_unwind(|| {
            let mut got = Vec::new();
            if let Ok(rd) = RingReader::open_readonly(&r0) {
                let mut out = RecordBuf::new();
                for from in [Start::TsNs(from_ts), Start::Seq(from_seq), Start::Oldest] {
                    rd.copy_range(from, End::HEAD, |_| true, &mut out);
                    got.extend(
                        out.iter()
                            .map(|v| (v.ts_ns(), v.orig_len(), v.data.to_vec())),
                    );
                }
            }
            got
        });
        dog.stop();
        for (ts, orig_len, data) in
            copied.unwrap_or_else(|_| panic!("copy_range panicked: seed {seed} case {case}"))
        {
            let p = Pkt {
                ts_ns: ts,
                orig_len,
                data,
            };
            assert_eq!(
                originals.get(&ts),
                Some(&p),
                "seed {seed} case {case}: copy_range returned a record that differs"
            );
        }
        let code = match &res {
            Ok(rep) => {
                let code = exit_code(rep);
                assert_eq!(
                    code == 1,
                    !rep.unreadable.is_empty(),
                    "seed {seed} case {case}"
                );
                for (_, why) in &rep.unreadable {
                    *reasons.entry(reason_kind(why)).or_default() += 1;
                }
                assert!(code == 0 || two, "seed {seed} case {case}: 1 with one ring");
                with_corrupt += u64::from(rep.corrupt > 0);
                with_torn += u64::from(rep.torn > 0);
                let (_, pk) = read_pcap_zst(&out);
                assert_eq!(pk.len() as u64, rep.packets, "seed {seed} case {case}");
                for p in &pk {
                    assert_eq!(
                        originals.get(&p.ts_ns),
                        Some(p),
                        "seed {seed} case {case}: a recovered packet differs from the one appended"
                    );
                }
                if code == 1 {
                    // The mutated ring was unreadable: the intact one, whole.
                    assert_eq!(pk.len(), 40, "seed {seed} case {case}");
                }
                code
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(!msg.contains('\n'), "seed {seed} case {case}: {msg}");
                assert!(!out.exists(), "seed {seed} case {case}: output left");
                if let Some(r) = msg.strip_prefix("no readable ring: ") {
                    for one in r.split("; ") {
                        let why = one.split_once(".ring: ").map_or(one, |x| x.1);
                        *reasons.entry(reason_kind(why)).or_default() += 1;
                    }
                }
                2
            }
        };
        codes[code as usize] += 1;
        if case % 40 == 0 {
            via_binary += 1;
            let _ = std::fs::remove_file(&out_bin);
            let (bc, e) = recover_bin_bounded(&state, &out_bin, Duration::from_secs(30));
            assert_eq!(
                bc,
                Some(i32::from(code)),
                "seed {seed} case {case}: binary and library disagree: {e}"
            );
            assert!(
                !e.contains("panicked") && !e.contains("internal error"),
                "seed {seed} case {case}: {e}"
            );
            if let Ok(rep) = &res {
                assert!(
                    e.contains(&format!("recovered {} packets", rep.packets)),
                    "seed {seed} case {case}: {e}"
                );
            } else {
                assert_eq!(
                    e.trim_end().lines().count(),
                    1,
                    "seed {seed} case {case}: {e}"
                );
            }
        }
    }
    drop(dog);
    eprintln!(
        "seed {seed}: {n} mutated rings ({via_binary} through the binary): exit codes {codes:?}, \
         {with_corrupt} with corrupt records, {with_torn} with torn ones, unreadable: {reasons:?}"
    );
    // The mutations reach every outcome and every check of a ring file.
    assert!(codes.iter().all(|&c| c > 0), "exit codes {codes:?}");
    assert!(with_corrupt > n / 20 && with_torn > 0);
    for kind in [
        "bad magic",
        "version",
        "truncated",
        "header CRC",
        "geometry",
        "head/tail",
        "longer",
    ] {
        assert!(
            reasons.contains_key(kind),
            "no case ended as '{kind}': {reasons:?}"
        );
    }
}
