//! Warm restart in live capture (issue 13, item 5): the sensor on a veth pair in private
//! namespaces (tests/live/harness.rs) learns benign traffic, is stopped with SIGTERM (by
//! PID), started again with the same state directory, and a SYN flood ~10 s after the
//! restart raises a window alert whose evidence holds the flood. Then the checkpoint is
//! damaged (one flipped byte) and the same sequence is run again: one warning line naming
//! the file, a cold start, no alert (the detectors are still warming up), exit 0.
//!
//! The default profiles need ~450 s of traffic before they may alert; for CI time this
//! test's profile is smaller, the same in the warm and the cold run: 0.1-s windows, trees
//! with a 100-window mass window (10 s), a quantile threshold over 100 scores (another
//! 10 s). Cold, nothing can alert before ~20 s of traffic; the flood comes at ~10 s.

#[path = "live/harness.rs"]
mod harness;

use harness::{num, tshark_packets, VethPair};

const CONFIG: &str = r#"
[sensor]
shards = 1
checkpoint_interval_s = 5

[flow]
idle_timeout_s = 30

[evidence]
ring_mib = 8
queue = 64

[[profile]]
name = "flood"
mode = "window"
window_s = 0.1
window_features = ["packets", "syn_share", "udp_share", "distinct_flows", "new_flows"]
[profile.hst]
n_trees = 25
height = 8
window_size = 100
seed = 7
[profile.threshold]
quantile = 0.99
quantile_window = 100
min_score = 0.6
require_out_of_range = true
cooldown_s = 0
[profile.evidence]
pre_s = 0.5
post_s = 0.3
scope = "window"
"#;

fn alert_lines(state: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert line {l}: {e}")))
        .collect()
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Benign UDP (8 flows at 500 packets/s) for `secs` seconds.
fn benign(pair: &VethPair, secs: u64) {
    let n = (500 * secs).to_string();
    let g = pair.send(&[
        "--count",
        &n,
        "--pps",
        "500",
        "--flows",
        "8",
        "--duration",
        "60",
    ]);
    assert_eq!(g.sent, 500 * secs);
}

/// The restarted run: 10 s of benign traffic, a SYN flood (5000 SYNs from 5000 source
/// ports in 0.25 s), 2 s of benign traffic (so the flood's windows close on packet time),
/// SIGTERM. Returns the flood's start (wall clock), the stop's stderr and stats.
fn restarted_run(pair: &VethPair, cfg: &str) -> (u64, harness::Stopped) {
    let sensor = pair.start_sensor(&["--config", cfg, "--queues", "1"]);
    benign(pair, 10);
    let flood_start = wall_ns();
    let flood = pair.send(&[
        "--count", "5000", "--pps", "20000", "--flows", "5000", "--proto", "tcp-syn", "--dport",
        "80",
    ]);
    assert_eq!(flood.sent, 5000);
    benign(pair, 2);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    (flood_start, stopped)
}

#[test]
fn sigterm_restart_detects_a_flood_10s_later_and_a_damaged_checkpoint_starts_cold() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let cfg = pair.path("sensor.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let state = pair.state_dir();
    let ckpt = state.join("models/flood.0.hstck");

    // Run 1: learn 25 s of benign traffic (250 windows: past the trees' and the
    // threshold's warm-up), stop with SIGTERM: the models are saved.
    let sensor = pair.start_sensor(&["--config", &cfg, "--queues", "1"]);
    assert!(
        sensor
            .stderr()
            .contains("profile flood: cold start: no checkpoint"),
        "{}",
        sensor.stderr()
    );
    benign(&pair, 25);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    assert!(num(&st, &["detection", "models.saved"]) >= 1, "{st:#}");
    assert_eq!(num(&st, &["detection", "models.save_errors"]), 0);
    assert!(alert_lines(&state).is_empty(), "benign run 1 alerted");
    let saved = std::fs::read(&ckpt).expect("checkpoint written at SIGTERM");

    // Run 2: warm; the flood 10 s after the start alerts, its SYNs in the evidence.
    let (flood_start, stopped) = restarted_run(&pair, &cfg);
    assert!(
        stopped.stderr.contains("profile flood: warm start"),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    assert_eq!(num(&st, &["detection", "models.loaded"]), 1, "{st:#}");
    let alert = alert_lines(&state)
        .into_iter()
        .find(|a| {
            a["anomaly"]["ts_ns"].as_u64().unwrap_or(0) > flood_start
                && a["evidence"]["path"].as_str().is_some()
        })
        .unwrap_or_else(|| {
            panic!(
                "no alert on the flood after the restart: {:?}\n{}",
                alert_lines(&state),
                stopped.stderr
            )
        });
    assert_eq!(alert["anomaly"]["mode"], "window", "{alert:#}");
    let pkts = tshark_packets(&state.join(alert["evidence"]["path"].as_str().unwrap()));
    let syn = pkts.iter().filter(|p| p.2 == "0x0002").count();
    assert!(syn >= 100, "{syn} flood SYNs in the evidence: {alert:#}");

    // Run 3: the checkpoint (as run 1 saved it) with one byte flipped: one warning line
    // naming it, a cold start, no alert on the same flood, exit 0.
    let mut bad = saved;
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&ckpt, &bad).unwrap();
    std::fs::write(state.join("alerts.jsonl"), b"").unwrap();
    let (_, stopped) = restarted_run(&pair, &cfg);
    let warnings: Vec<&str> = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stopped.stderr);
    assert!(
        warnings[0].contains(&*ckpt.to_string_lossy())
            && warnings[0].contains("checksum mismatch")
            && warnings[0].contains("starts cold"),
        "{}",
        warnings[0]
    );
    let st = stopped.stats.expect("stats");
    assert_eq!(num(&st, &["detection", "models.corrupt"]), 1, "{st:#}");
    assert_eq!(num(&st, &["detection", "models.cold_start"]), 1, "{st:#}");
    assert!(
        num(&st, &["detection", "detect.windows_scored"]) >= 100,
        "the flood's windows were scored: {st:#}"
    );
    assert!(
        alert_lines(&state).is_empty(),
        "a cold start alerted 10 s in: {:?}",
        alert_lines(&state)
    );
}

/// SIGHUP reloads the configuration: unchanged, one line and nothing else; invalid, one
/// line and the running configuration stays; changed (a profile added), the sensor stops
/// as at SIGTERM and starts again in the same process with the new configuration — the
/// unchanged profile warm from the models it had just saved, the new one cold.
#[test]
fn sighup_reloads_a_changed_configuration_keeping_unchanged_models() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let cfg_path = pair.path("sensor.toml");
    std::fs::write(&cfg_path, CONFIG).unwrap();
    let cfg = cfg_path.to_string_lossy().into_owned();
    let sensor = pair.start_sensor(&["--config", &cfg, "--queues", "1"]);
    let pid = sensor.pid();
    benign(&pair, 2);
    let wait_for = |what: &str, n: usize| {
        let t = std::time::Instant::now();
        while sensor.stderr().matches(what).count() < n {
            assert!(
                t.elapsed().as_secs() < 20,
                "no {n} x {what:?} after 20 s:\n{}",
                sensor.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    sensor.sighup();
    wait_for("reload: configuration unchanged", 1);
    std::fs::write(&cfg_path, CONFIG.replace("window_s = 0.1", "window_s = -1")).unwrap();
    sensor.sighup();
    wait_for("keeping the running configuration", 1);
    let bad = sensor
        .stderr()
        .lines()
        .find(|l| l.contains("keeping the running configuration"))
        .unwrap()
        .to_string();
    assert!(bad.contains("window_s"), "{bad}");
    let added = format!(
        "{CONFIG}\n[[profile]]\nname = \"extra\"\nmode = \"flow\"\n[profile.hst]\nwindow_size = 64\n[profile.threshold]\nfixed = 0.99\n"
    );
    std::fs::write(&cfg_path, added).unwrap();
    // Traffic goes on through the reload (1 000 frames/s for 4 s, the SIGHUP 1 s in):
    // every frame is captured by the first run, by the second, or counted as arriving
    // during the pause in between.
    let (through, run1) = std::thread::scope(|s| {
        let gen = s.spawn(|| {
            pair.send(&[
                "--count",
                "4000",
                "--pps",
                "1000",
                "--flows",
                "8",
                "--duration",
                "60",
            ])
        });
        std::thread::sleep(std::time::Duration::from_secs(1));
        sensor.sighup();
        wait_for("capturing on", 2);
        // The first run's final stats (the second writes none before it stops).
        let run1 = sensor.read_stats().expect("the first run's stats");
        (gen.join().unwrap(), run1)
    });
    assert_eq!(through.sent, 4000);
    let err = sensor.stderr();
    let paused = err
        .lines()
        .find(|l| l.contains("reload: capture paused"))
        .unwrap_or_else(|| panic!("no pause line:\n{err}"))
        .to_string();
    assert!(
        paused.contains("frames reached") && paused.contains("not captured"),
        "{paused}"
    );
    assert!(err.contains("reload: configuration changed"), "{err}");
    let after = &err[err.find("reload: configuration changed").unwrap()..];
    assert!(after.contains("profile flood: warm start"), "{after}");
    assert!(
        after.contains("profile extra: cold start: no checkpoint"),
        "{after}"
    );
    assert!(
        after.contains(&format!("pid {pid}")),
        "same process: {after}"
    );
    benign(&pair, 1);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    assert_eq!(num(&st, &["detection", "models.loaded"]), 1, "{st:#}");
    // Every frame sent (2 s and 1 s of benign traffic at 500/s, 4 000 through the reload)
    // is in one of: the first run, the pause, the second run.
    let pause_ms = st["reload"]["pause_ms"].as_f64().expect("reload.pause_ms");
    let uncaptured = num(&st, &["reload", "frames_uncaptured"]);
    let during = num(&st, &["reload", "frames_during_attach"]);
    let (r1, r2) = (
        num(&run1, &["packets_received"]),
        num(&st, &["packets_received"]),
    );
    eprintln!(
        "reload: paused {pause_ms:.1} ms, {uncaptured} frames uncaptured, {during} during the attach; run 1 {r1}, run 2 {r2}"
    );
    assert!(pause_ms > 0.0 && pause_ms < 20_000.0, "{st:#}");
    assert!(
        uncaptured > 0,
        "1 000 frames/s through a pause of {pause_ms} ms: {st:#}"
    );
    let sent = 1000 + 4000 + 500;
    let seen = r1 + uncaptured + r2;
    // Not captured for sure: the pause; maybe: the frames that came during the attach
    // syscall; plus frames in flight at the detach, counted by the interface and neither
    // captured nor in the pause (veth frees the frames queued for XDP when the program
    // goes: seen 0-4 at 1 000 frames/s; 20 allowed, a busy CI machine delays NAPI).
    assert!(
        seen <= sent && sent <= seen + during + 20,
        "sent {sent}, run 1 {r1} + pause {uncaptured} + run 2 {r2} = {seen} (+ {during} during the attach)"
    );
    assert!(run1["reload"].is_null(), "the first run was not a reload");
}
