//! `streamml-sensor bench`: short `--synthetic` and `--generate` runs (each a few seconds)
//! whose JSON has every documented key filled and whose counters reconcile, a valid SVG
//! plot, an injected episode that alerts with evidence, the status line rewritten under a
//! pseudo-terminal and plain through a pipe, and the namespaces gone after a run and
//! after SIGINT. The `--generate` tests need root (netns, XDP) and run in CI.

#[path = "live/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::{tshark_packets, wait_timeout, SENSOR};
use serde_json::Value;

/// One bench run at a time (they measure; the machine has few cores).
static BENCH: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    BENCH.lock().unwrap_or_else(|p| p.into_inner())
}

struct Run {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `streamml-sensor bench ARGS` with stdout and stderr to files (stdout is not a
/// terminal), bounded.
fn bench(dir: &Path, args: &[&str], limit: Duration) -> Run {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let mut child = Command::new(SENSOR)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn the sensor");
    let status = wait_timeout(&mut child, limit);
    Run {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("the --json file")).expect("valid JSON")
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no number {k} in {v:#}"))
}

/// The documented keys (docs/bench.md's bench-keys block): (path, generate only, may be
/// null).
fn documented_keys() -> Vec<(String, bool, bool)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/bench.md"))
        .expect("docs/bench.md");
    let a = doc.find("<!-- bench-keys -->").expect("a bench-keys block");
    let b = doc.find("<!-- /bench-keys -->").expect("its end");
    let mut keys = Vec::new();
    for l in doc[a..b].lines().filter(|l| l.starts_with("- `")) {
        let head = l.split_once(": ").map_or(l, |(h, _)| h);
        let generate = head.contains("*generate*");
        let nullable = head.contains("*may be null*");
        for k in head.split('`').skip(1).step_by(2) {
            keys.push((k.to_string(), generate, nullable));
        }
    }
    assert!(keys.len() >= 25, "{keys:?}");
    keys
}

/// Every documented key is there; filled: not null (unless it may be), and a list or
/// object not empty.
fn assert_keys_filled(v: &Value, generate: bool) {
    for (k, gen_only, nullable) in documented_keys() {
        if gen_only && !generate {
            continue;
        }
        let mut cur = v;
        for part in k.split('.') {
            cur = cur
                .get(part)
                .unwrap_or_else(|| panic!("documented key {k} missing from the JSON"));
        }
        if nullable {
            continue;
        }
        assert!(!cur.is_null(), "{k} is null");
        if let Some(a) = cur.as_array() {
            assert!(!a.is_empty(), "{k} is empty");
        }
        if let Some(o) = cur.as_object() {
            assert!(!o.is_empty(), "{k} is empty");
        }
    }
    for stage in [
        "ts_to_reader",
        "ts_to_scorer",
        "scorer_per_packet",
        "hst_per_sample",
        "alert_to_evidence",
    ] {
        for f in [
            "samples", "p50_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns",
        ] {
            assert!(
                v["latency"][stage].get(f).is_some(),
                "latency.{stage}.{f} missing"
            );
        }
    }
}

/// The SVG is well-formed XML with an <svg> root and the plot's lines (Python's XML
/// parser, which CI has).
fn assert_svg(p: &Path) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.etree.ElementTree as E\n\
             r = E.parse(sys.argv[1]).getroot()\n\
             assert r.tag == '{http://www.w3.org/2000/svg}svg', r.tag\n\
             n = len(r.findall('.//{http://www.w3.org/2000/svg}polyline'))\n\
             print(n)",
        )
        .arg(p)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{} is not a valid SVG: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let n: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n >= 2, "{n} lines in the plot");
}

fn sum_prefix(m: &Value, f: impl Fn(&str) -> bool) -> u64 {
    m.as_object()
        .expect("an object")
        .iter()
        .filter(|(k, _)| f(k))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum()
}

fn assert_plain(stdout: &str) {
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "control characters on a pipe: {stdout:?}"
    );
    assert!(
        stdout.lines().filter(|l| l.starts_with("bench ")).count() >= 2,
        "no status lines: {stdout}"
    );
}

/// `--synthetic` at the pipeline's maximum: every frame generated reached a flow table or
/// is a named drop; the JSON has every documented key filled; the plot is an SVG; status
/// lines through a pipe are plain.
#[test]
fn synthetic_counters_reconcile_json_filled_plot_valid() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let (j, p) = (dir.path().join("b.json"), dir.path().join("b.svg"));
    let state = dir.path().join("state");
    let r = bench(
        dir.path(),
        &[
            "--synthetic",
            "--duration",
            "3",
            "--flows",
            "512",
            "--ring-mib",
            "16",
            "--state-dir",
            &state.to_string_lossy(),
            "--json",
            &j.to_string_lossy(),
            "--plot",
            &p.to_string_lossy(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status.and_then(|s| s.code()), Some(0), "{}", r.stderr);
    assert_plain(&r.stdout);
    assert!(r.stdout.contains("generated"), "{}", r.stdout);
    let v = json(&j);
    assert_keys_filled(&v, false);
    assert_eq!(v["mode"], "synthetic");
    let generated = u(&v, "generated");
    assert!(generated > 10_000, "{generated}");
    let path_drops = sum_prefix(&v["drops"], |k| {
        k.starts_with("decoder.") || k == "shard.ring_full"
    });
    assert_eq!(
        generated,
        u(&v, "received") + path_drops,
        "generated = received + drops"
    );
    assert_eq!(v["unaccounted"], 0);
    assert_eq!(u(&v["pipeline"], "reader.frames"), generated);
    let snap: streamml_sensor::stats::Snapshot =
        serde_json::from_value(v["pipeline"].clone()).unwrap();
    let bad = streamml_sensor::stats::conservation(&snap);
    assert!(bad.is_empty(), "{bad:?}");
    // At the maximum the reader waits for the scorers: nothing is dropped.
    assert_eq!(path_drops, 0);
    for stage in [
        "ts_to_reader",
        "ts_to_scorer",
        "scorer_per_packet",
        "hst_per_sample",
    ] {
        assert!(
            u(&v["latency"][stage], "samples") > 0,
            "{stage}: no samples"
        );
        let l = &v["latency"][stage];
        assert!(u(l, "p50_ns") <= u(l, "p99_ns") && u(l, "p99_ns") <= u(l, "max_ns"));
    }
    let shard_sum: u64 = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(s, "packets"))
        .sum();
    assert_eq!(shard_sum, u(&v, "received"));
    assert!(v["cpu_seconds"].as_object().unwrap().len() >= 2);
    assert!(u(&v, "rss_max_bytes") > 1 << 20);
    assert_svg(&p);
}

/// The window profile of the live anomaly test: 0.1 s windows, alerting quickly.
const EPISODE_CONFIG: &str = r#"
[sensor]
shards = 1

[evidence]
ring_mib = 32

[[profile]]
name = "flood"
mode = "window"
window_s = 0.1
window_features = ["packets", "syn_share", "udp_share", "distinct_flows", "new_flows"]
[profile.hst]
n_trees = 25
height = 8
window_size = 16
seed = 7
[profile.threshold]
fixed = 0.8
require_out_of_range = true
cooldown_s = 0
[profile.evidence]
pre_s = 0.3
post_s = 0.2
scope = "window"
"#;

/// An injected SYN flood in a `--synthetic` run at a fixed rate alerts, and its evidence
/// file (zstd PCAP, read by tshark) holds the flood's SYNs; the alert → evidence latency
/// has its sample; counters reconcile with the drops a fixed rate allows.
#[test]
fn synthetic_episode_alerts_with_evidence() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sensor.toml");
    std::fs::write(&cfg, EPISODE_CONFIG).unwrap();
    let j = dir.path().join("b.json");
    let state = dir.path().join("state");
    let r = bench(
        dir.path(),
        &[
            "--synthetic",
            "--config",
            &cfg.to_string_lossy(),
            "--rate",
            "20k",
            "--flows",
            "64",
            "--duration",
            "6",
            "--episode-start",
            "3.5",
            "--episode-duration",
            "1.5",
            "--episode-share",
            "0.5",
            "--state-dir",
            &state.to_string_lossy(),
            "--json",
            &j.to_string_lossy(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status.and_then(|s| s.code()), Some(0), "{}", r.stderr);
    let v = json(&j);
    let generated = u(&v, "generated");
    let path_drops = sum_prefix(&v["drops"], |k| {
        k.starts_with("decoder.") || k == "shard.ring_full"
    });
    assert_eq!(generated, u(&v, "received") + path_drops);
    assert!(
        u(&v["detection"], "detect.alerts") >= 1,
        "{:#}",
        v["detection"]
    );
    assert!(u(&v["detection"], "evidence.files_written") >= 1);
    assert!(u(&v["latency"]["alert_to_evidence"], "samples") >= 1);
    let alerts: Vec<Value> = std::fs::read_to_string(state.join("alerts.jsonl"))
        .expect("alerts.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with_syns = alerts.iter().find_map(|a| {
        let rel = a["evidence"]["path"].as_str()?;
        let pkts = tshark_packets(&state.join(rel));
        let syns = pkts
            .iter()
            .filter(|p| p.2 == "0x0002" && p.1.starts_with("198.18."))
            .count();
        (syns >= 50).then_some(syns)
    });
    assert!(
        with_syns.is_some(),
        "no evidence file with the flood's SYNs: {alerts:#?}"
    );
}

/// Under a pseudo-terminal (`script`) the status line is rewritten in place.
#[test]
fn status_line_rewritten_under_a_terminal() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cmd = format!(
        "{SENSOR} bench --synthetic --duration 3 --rate 50k --flows 16 --ring-mib 16 --state-dir {}",
        state.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("tty")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux)");
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let out = std::fs::read(dir.path().join("tty")).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
    let rewrites = out.matches("\r\x1b[K").count();
    assert!(rewrites >= 2, "{rewrites} in-place rewrites: {out:?}");
}

fn netns_left(pid: u32) -> Vec<String> {
    harness::run(&["ip", "netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&format!("smbench{pid}")))
        .map(str::to_string)
        .collect()
}

/// Spawns `bench ARGS` keeping its PID (for the namespace names and signals).
fn spawn_bench(dir: &Path, args: &[&str]) -> (std::process::Child, PathBuf) {
    let out = dir.join("stdout");
    let child = Command::new(SENSOR)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("spawn");
    (child, out)
}

fn assert_trial_reconciles(t: &Value) {
    // The kernel's `rx_fill_ring_empty_descs` and `rx_invalid_descs` name causes of frames
    // counted in `rx_dropped` (docs/bench.md): not summed again.
    let pre = sum_prefix(&t["drops"], |k| {
        matches!(k, "peer.tx_dropped" | "rx_dropped" | "rx_ring_full") || k.starts_with("xdp.")
    });
    assert_eq!(
        u(t, "sent"),
        u(t, "received") + pre,
        "sent = received + drops before the sockets: {t:#}"
    );
    assert_eq!(t["unaccounted"], 0, "{t:#}");
}

/// `--generate` at a fixed modest rate: one trial, every frame received (zero loss), the
/// JSON filled, the plot an SVG, the namespaces gone; then the zero-loss search: the first
/// trial at the generator's maximum, each later one at the middle of the bracket, every
/// trial's counters reconciled, the result the best zero-loss trial's rate.
#[test]
fn generate_fixed_rate_then_zero_loss_search() {
    let Some(_live) = harness::live() else { return };
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let (j, p) = (dir.path().join("g.json"), dir.path().join("g.svg"));
    let state = dir.path().join("state");
    let common = [
        "--generate",
        "--queues",
        "2",
        "--no-pin",
        "--ring-mib",
        "16",
        "--trial",
        "1",
        "--flows",
        "64",
    ];
    let mut args: Vec<&str> = common.to_vec();
    let (s, js, ps) = (
        state.to_string_lossy().into_owned(),
        j.to_string_lossy().into_owned(),
        p.to_string_lossy().into_owned(),
    );
    // --threaded-napi writes /sys/class/net/sens0/threaded of the sensor's namespace
    // (through a private sysfs: the process's /sys shows the host's interfaces).
    args.extend([
        "--threaded-napi",
        "--rate",
        "20k",
        "--state-dir",
        &s,
        "--json",
        &js,
        "--plot",
        &ps,
    ]);
    let (mut child, out) = spawn_bench(dir.path(), &args);
    let pid = child.id();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stdout}\n{stderr}");
    assert!(netns_left(pid).is_empty(), "left: {:?}", netns_left(pid));
    assert_plain(&stdout);
    let v = json(&j);
    assert_keys_filled(&v, true);
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1);
    let t = &trials[0];
    assert_trial_reconciles(t);
    // The generator paces 20 000 frames over the 1 s trial and stops at its end: the last
    // frame or two can miss the deadline on a busy machine (seen: 19 999). What must hold
    // exactly is the reconciliation above and below, not the count.
    let sent = u(t, "sent");
    assert!((19_800..=20_000).contains(&sent), "{t:#}");
    assert_eq!(t["zero_loss"], true, "at 20 kpps nothing is lost: {t:#}");
    assert_eq!(u(&v, "generated"), u(&v, "received"));
    let shard_sum: u64 = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(s, "packets"))
        .sum();
    assert_eq!(shard_sum, u(&v["pipeline"], "flow.packets"));
    assert!(u(&v["latency"]["ts_to_reader"], "samples") > 0);
    assert_svg(&p);

    // The search.
    let j2 = dir.path().join("s.json");
    let js2 = j2.to_string_lossy().into_owned();
    let s2 = dir.path().join("state2").to_string_lossy().into_owned();
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "--search",
        "--max-trials",
        "4",
        "--resolution",
        "0.2",
        "--state-dir",
        &s2,
        "--json",
        &js2,
    ]);
    let (mut child, out) = spawn_bench(dir.path(), &args);
    let pid = child.id();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stdout}");
    assert!(netns_left(pid).is_empty());
    let v = json(&j2);
    let trials = v["trials"].as_array().unwrap();
    assert!(!trials.is_empty() && trials.len() <= 4);
    assert_eq!(
        trials[0]["requested_pps"].as_f64(),
        Some(0.0),
        "first at max"
    );
    for t in trials {
        assert_trial_reconciles(t);
    }
    // Bisection: each later trial halves the bracket [best zero-loss rate, lowest lossy].
    let (mut lo, mut hi) = (0.0f64, trials[0]["offered_pps"].as_f64().unwrap());
    if trials[0]["zero_loss"] == true {
        lo = hi;
        assert_eq!(trials.len(), 1, "the generator's maximum passed: done");
    }
    for t in &trials[1..] {
        let r = t["requested_pps"].as_f64().unwrap();
        assert!(
            (r - (lo + hi) / 2.0).abs() < 1.0,
            "{r} not mid of {lo}..{hi}"
        );
        if t["zero_loss"] == true {
            lo = r
        } else {
            hi = r
        }
    }
    let best = trials
        .iter()
        .filter(|t| t["zero_loss"] == true)
        .map(|t| t["offered_pps"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let z = v["zero_loss_pps"].as_f64().expect("zero_loss_pps");
    // The best zero-loss trial (the search only goes up from a passing one).
    assert!(
        (z - best).abs() < 1e-6 || best == 0.0 && z == 0.0,
        "{z} vs {best}"
    );
}

/// A trial that loses frames still reconciles: 64-entry fill and RX rings at the
/// generator's maximum make the fill ring run empty (copy mode counts such a frame in both
/// `rx_dropped` and `rx_fill_ring_empty_descs`; it is one lost frame), and the trial is
/// not zero loss.
#[test]
fn generate_losses_reconcile() {
    let Some(_live) = harness::live() else { return };
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("l.json");
    let (s, js) = (
        dir.path().join("state").to_string_lossy().into_owned(),
        j.to_string_lossy().into_owned(),
    );
    let (mut child, out) = spawn_bench(
        dir.path(),
        &[
            "--generate",
            "--queues",
            "2",
            "--no-pin",
            "--ring-mib",
            "16",
            "--fill-size",
            "64",
            "--rx-size",
            "64",
            "--batch",
            "16",
            "--trial",
            "2",
            "--state-dir",
            &s,
            "--json",
            &js,
        ],
    );
    let pid = child.id();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stdout}");
    assert!(netns_left(pid).is_empty(), "left: {:?}", netns_left(pid));
    let v = json(&j);
    let t = &v["trials"][0];
    let lost = u(t, "sent") - u(t, "received");
    assert!(
        lost > 0,
        "64-frame rings at the generator's maximum lost nothing: {t:#}"
    );
    assert_eq!(t["zero_loss"], false, "{t:#}");
    assert_trial_reconciles(t);
    assert_eq!(v["unaccounted"], 0, "{v:#}");
}

/// `--generate --proto tcp-syn`: a SYN flood (every frame a SYN, 2 000 source ports per
/// queue): every frame received and reconciled, each port a flow of the flow table.
#[test]
fn generate_syn_flood_reconciles() {
    let Some(_live) = harness::live() else { return };
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("f.json");
    let (s, js) = (
        dir.path().join("state").to_string_lossy().into_owned(),
        j.to_string_lossy().into_owned(),
    );
    let (mut child, out) = spawn_bench(
        dir.path(),
        &[
            "--generate",
            "--proto",
            "tcp-syn",
            "--flows",
            "2000",
            "--rate",
            "20k",
            "--queues",
            "2",
            "--no-pin",
            "--ring-mib",
            "16",
            "--trial",
            "1",
            "--state-dir",
            &s,
            "--json",
            &js,
        ],
    );
    let pid = child.id();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stdout}");
    assert!(netns_left(pid).is_empty(), "left: {:?}", netns_left(pid));
    let v = json(&j);
    assert_eq!(v["settings"]["proto"], "tcp-syn", "{:#}", v["settings"]);
    let t = &v["trials"][0];
    assert_trial_reconciles(t);
    assert_eq!(t["zero_loss"], true, "at 20 kpps nothing is lost: {t:#}");
    // 2 queues x 2 000 source ports, ~10 000 SYNs each: every port is a flow.
    assert_eq!(
        u(&v["pipeline"], "flow.created"),
        4_000,
        "{:#}",
        v["pipeline"]
    );
}

/// SIGINT during a `--generate` trial: exit 130, the results so far printed, the
/// generator killed and the namespaces deleted.
#[test]
fn generate_sigint_tears_down() {
    let Some(_live) = harness::live() else { return };
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state").to_string_lossy().into_owned();
    let (mut child, out) = spawn_bench(
        dir.path(),
        &[
            "--generate",
            "--no-pin",
            "--ring-mib",
            "16",
            "--rate",
            "10k",
            "--trial",
            "20",
            "--state-dir",
            &s,
        ],
    );
    let pid = child.id();
    let t = Instant::now();
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("trial 1/1")
    {
        assert!(t.elapsed() < Duration::from_secs(20), "no trial started");
        if let Ok(Some(s)) = child.try_wait() {
            panic!(
                "bench ended early ({s}): {}",
                std::fs::read_to_string(dir.path().join("stderr")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    harness::run(&["kill", "-INT", &pid.to_string()]);
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "{stdout}\n{}",
        std::fs::read_to_string(dir.path().join("stderr")).unwrap()
    );
    assert!(stdout.contains("generated"), "no table: {stdout}");
    assert!(netns_left(pid).is_empty(), "left: {:?}", netns_left(pid));
    let gens = harness::run(&["ps", "-eo", "args"]);
    assert!(
        !gens.lines().any(|l| l.contains("streamml-pktgen")
            && l.contains("--count 100000 --pps 5000 --duration 20")),
        "the generator still runs"
    );
}

/// `--iface IF` (passive): capture while something else sends (here streamml-pktgen from
/// the harness's peer namespace): every frame the generator sent reached the sensor, and
/// the counters reconcile.
#[test]
fn passive_counts_what_an_external_generator_sends() {
    let Some(_live) = harness::live() else { return };
    let _g = lock();
    let pair = harness::VethPair::new(2);
    let j = pair.path("p.json");
    let out = pair.path("p.stdout");
    let state = pair.path("state");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &pair.ns_sensor, SENSOR, "bench", "--iface"])
        .arg(harness::SENSOR_IF)
        .args([
            "--queues",
            "2",
            "--no-pin",
            "--ring-mib",
            "16",
            "--duration",
            "4",
            "--status",
            "plain",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--json")
        .arg(&j)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(pair.path("p.stderr")).unwrap())
        .spawn()
        .expect("spawn");
    // Capture runs once the first status line is out.
    let t = Instant::now();
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("passive")
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "capture did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let g = pair.send(&[
        "--queues", "0,1", "--count", "5000", "--pps", "10000", "--flows", "16",
    ]);
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        std::fs::read_to_string(pair.path("p.stderr")).unwrap()
    );
    let v = json(&j);
    assert_keys_filled(&v, false);
    assert_eq!(v["mode"], "passive");
    assert_eq!(u(&v, "received"), g.sent, "{v:#}");
    assert_eq!(u(&v, "generated"), g.sent);
    assert_eq!(v["unaccounted"], 0);
    let lost = sum_prefix(&v["drops"], |k| {
        k.starts_with("xdp.") || k.starts_with("rx_") || k == "shard.ring_full"
    });
    assert_eq!(lost, 0, "{:#}", v["drops"]);
}
