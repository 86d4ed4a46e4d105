//! The sensor as an installed service: the .deb (built, checked by lintian, installed,
//! run as the `streamml` user with exactly the unit's capabilities, purged), each of
//! those capabilities shown needed, log rotation under traffic, `check-config`, and the
//! README's live quick start. The live parts run as root in private namespaces (see
//! tests/live/harness.rs); with CI=true they fail when they cannot run.

#[path = "live/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{num, run, try_run, wait_timeout, VethPair, SENSOR, SENSOR_IF};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// stdout, stderr and exit code of a command (bounded: 60 s).
fn output(cmd: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.join(" ")));
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("output");
    (
        status.and_then(|s| s.code()).unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------
// check-config

/// `check-config` prints the effective configuration: every section with defaults filled
/// in, and its own output read back gives the same configuration (a fixed point).
#[test]
fn check_config_prints_the_effective_configuration() {
    let (code, out, err) = output(&[SENSOR, "check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# default sensor.toml: valid; the effective configuration"),
        "{out}"
    );
    for key in [
        "[sensor]",
        "ring_capacity = 65536",
        "[flow]",
        "idle_timeout_s = 120.0",
        "[evidence]",
        "[[profile]]",
        "name = \"traffic\"",
        "name = \"flows\"",
        "window_features = [",
        "[profile.threshold]",
    ] {
        assert!(out.contains(key), "{key} missing from:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("effective.toml");
    std::fs::write(&f, &out).unwrap();
    let (code, again, err) = output(&[SENSOR, "check-config", &f.to_string_lossy()], &[]);
    assert_eq!(code, 0, "{err}");
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&out));
    // A file with only a profile: the sections it leaves out are printed with defaults.
    let small = dir.path().join("small.toml");
    std::fs::write(
        &small,
        "[[profile]]\nname = \"p\"\nmode = \"flow\"\n[profile.threshold]\nfixed = 0.9\n",
    )
    .unwrap();
    let (code, out, err) = output(&[SENSOR, "check-config", &small.to_string_lossy()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[sensor]") && out.contains("capacity = 1048576"),
        "{out}"
    );
    assert!(
        out.contains("fixed = 0.9") && out.contains("cooldown_s = 60.0"),
        "{out}"
    );
}

/// A bad configuration: check-config fails with exactly the line (and exit code) the
/// sensor gives when it starts with that file.
#[test]
fn check_config_errors_are_the_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let profile = "[[profile]]\nname = \"p\"\nmode = \"window\"\n";
    for (i, body) in [
        format!("{profile}window_s = 0\n[profile.threshold]\nfixed = 0.9\n"),
        format!("{profile}filter = \"tcp and and\"\n[profile.threshold]\nfixed = 0.9\n"),
        format!("{profile}[profile.threshold]\nfixed = 1.5\n"),
        "[flow]\nidle_timeout = 3\n".to_string(),
        "[sensor\n".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let f = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&f, body).unwrap();
        let fs = f.to_string_lossy().into_owned();
        let (code, out, err) = output(&[SENSOR, "check-config", &fs], &[]);
        assert_eq!(code, 2, "{body}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("streamml-sensor: {fs}")), "{err}");
        // The sensor reads the configuration before it looks at the interface.
        let (scode, _, serr) = output(&[SENSOR, "--iface", "nosuch0", "--config", &fs], &[]);
        assert_eq!((scode, serr.as_str()), (2, err.as_str()), "{body}");
    }
    let missing = dir.path().join("nosuch.toml");
    let ms = missing.to_string_lossy().into_owned();
    let (code, _, err) = output(&[SENSOR, "check-config", &ms], &[]);
    let (scode, _, serr) = output(&[SENSOR, "--iface", "nosuch0", "--config", &ms], &[]);
    assert_eq!((code, err.as_str()), (scode, serr.as_str()));
    assert_eq!(code, 2);
}

// ---------------------------------------------------------------------------------------
// Log rotation

/// Every scored window alerts (threshold 0): a steady stream of alert lines while traffic
/// flows.
const EVERY_WINDOW_ALERTS: &str = r#"
[sensor]
shards = 1

[evidence]
ring_mib = 8

[[profile]]
name = "every"
mode = "window"
window_s = 0.05
window_features = ["packets", "bytes"]
[profile.hst]
n_trees = 5
height = 4
window_size = 4
[profile.threshold]
fixed = 0.0
cooldown_s = 0
max_alerts_per_min = 0
[profile.evidence]
pre_s = 0
post_s = 0
scope = "window"
"#;

fn lines_of(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l}: {e}", p.display())))
        .collect()
}

/// Waits (bounded: 20 s) until `p` holds at least `n` alert lines.
fn wait_lines(p: &Path, n: usize, what: &str) {
    let t = Instant::now();
    while lines_of(p).len() < n {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what}: {} has {} lines, waited for {n}",
            p.display(),
            lines_of(p).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rotation as logrotate does it, under traffic: alerts.jsonl is renamed while alerts
/// are being written, then SIGHUP; the sensor goes on writing into a new alerts.jsonl.
/// The renamed file and the new one together hold every alert line the sensor counted
/// (`alerts.written`), each whole, none twice.
#[test]
fn rotation_under_traffic_loses_no_alert_line() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let cfg = pair.path("every.toml");
    std::fs::write(&cfg, EVERY_WINDOW_ALERTS).unwrap();
    let sensor = pair.start_sensor(&["--config", &cfg.to_string_lossy()]);
    let state = pair.state_dir();
    let log = state.join("alerts.jsonl");
    let rotated = state.join("alerts.jsonl.1");
    let sent = std::thread::scope(|s| {
        let gen = s.spawn(|| pair.send(&["--count", "10000", "--pps", "2000", "--flows", "20"]));
        wait_lines(&log, 10, "before the rotation");
        std::fs::rename(&log, &rotated).unwrap();
        sensor.sighup();
        wait_lines(&log, 10, "after the rotation");
        let before = lines_of(&rotated).len();
        let g = gen.join().expect("generator thread");
        // Traffic went on after the rotation: alerts kept coming into the new file.
        assert!(lines_of(&log).len() >= 10 && before >= 10);
        g.sent
    });
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped
            .stderr
            .contains(&format!("reopened {}", log.display())),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats JSON");
    assert_eq!(num(&st, &["packets_received"]), sent);
    let (old, new) = (lines_of(&rotated), lines_of(&log));
    let written = num(&st, &["detection", "alerts.written"]);
    assert_eq!(
        old.len() as u64 + new.len() as u64,
        written,
        "lines before ({}) + after ({}) the rotation vs alerts.written",
        old.len(),
        new.len()
    );
    assert_eq!(num(&st, &["detection", "alerts.write_errors"]), 0);
    let mut ids: Vec<u64> = old
        .iter()
        .chain(&new)
        .map(|a| a["alert_id"].as_u64().expect("alert_id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, written, "an alert line written twice");
    // The rotated file was closed: nothing was appended to it after the new one began.
    let last_old = old
        .iter()
        .map(|a| a["anomaly"]["ts_ns"].as_u64().unwrap())
        .max();
    let first_new = new
        .iter()
        .map(|a| a["anomaly"]["ts_ns"].as_u64().unwrap())
        .min();
    assert!(last_old <= first_new, "{last_old:?} > {first_new:?}");
}

/// The package's logrotate snippet (packaging/debian/logrotate) run by logrotate itself,
/// twice, under traffic, with its path pointed at the test's state directory and its
/// postrotate signal sent to the test's sensor: the rotated files (the older one
/// compressed) and the current one hold every alert line, each once.
#[test]
fn packaged_logrotate_snippet_rotates_under_traffic_losing_nothing() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let cfg = pair.path("every.toml");
    std::fs::write(&cfg, EVERY_WINDOW_ALERTS).unwrap();
    let sensor = pair.start_sensor(&["--config", &cfg.to_string_lossy()]);
    let state = pair.state_dir();
    let log = state.join("alerts.jsonl");
    let snippet = std::fs::read_to_string(repo().join("packaging/debian/logrotate")).unwrap();
    assert!(snippet.contains("/var/lib/streamml/*/alerts.jsonl {"));
    // The path, and the postrotate script (systemctl kill --signal=HUP ...) -> kill -HUP.
    let mut conf = String::new();
    let mut in_script = false;
    for l in snippet.lines() {
        let t = l.trim();
        if t == "endscript" {
            in_script = false;
        }
        if in_script {
            continue;
        }
        conf.push_str(&l.replace("/var/lib/streamml/*/alerts.jsonl", &log.to_string_lossy()));
        conf.push('\n');
        if t == "postrotate" {
            conf.push_str(&format!("        kill -HUP {}\n", sensor.pid()));
            in_script = true;
        }
    }
    let conf_path = pair.path("logrotate.conf");
    std::fs::write(&conf_path, &conf).unwrap();
    let lr_state = pair.path("logrotate.state");
    let rotate = || {
        run(&[
            "logrotate",
            "-f",
            "-s",
            &lr_state.to_string_lossy(),
            &conf_path.to_string_lossy(),
        ])
    };
    let sent = std::thread::scope(|s| {
        let gen = s.spawn(|| pair.send(&["--count", "10000", "--pps", "2000", "--flows", "20"]));
        wait_lines(&log, 10, "before the first rotation");
        rotate();
        wait_lines(&log, 10, "after the first rotation");
        rotate();
        wait_lines(&log, 10, "after the second rotation");
        gen.join().expect("generator thread").sent
    });
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats JSON");
    assert_eq!(num(&st, &["packets_received"]), sent);
    // delaycompress: the newest rotated file stays plain, the one before is compressed.
    let one = lines_of(&state.join("alerts.jsonl.1"));
    let two_gz = state.join("alerts.jsonl.2.gz");
    let two: Vec<serde_json::Value> = run(&["zcat", &two_gz.to_string_lossy()])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole alert line"))
        .collect();
    let cur = lines_of(&log);
    assert!(!one.is_empty() && !two.is_empty() && !cur.is_empty());
    let written = num(&st, &["detection", "alerts.written"]);
    assert_eq!(
        (two.len() + one.len() + cur.len()) as u64,
        written,
        "lines in alerts.jsonl.2.gz ({}), .1 ({}) and alerts.jsonl ({}) vs alerts.written",
        two.len(),
        one.len(),
        cur.len()
    );
    let mut ids: Vec<u64> = two
        .iter()
        .chain(&one)
        .chain(&cur)
        .map(|a| a["alert_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, written);
}

// ---------------------------------------------------------------------------------------
// The package

const UNIT: &str = "/lib/systemd/system/streamml-sensor@.service";
const INSTALLED: &str = "/usr/bin/streamml-sensor";

/// The package installed for the test, purged when the test ends (also when it fails).
struct Installed;

impl Installed {
    fn is_installed() -> bool {
        try_run(&["dpkg-query", "-W", "-f=${Status}", "streamml-sensor"])
            .is_ok_and(|s| s.contains("install ok installed"))
    }

    fn purge() {
        // A package left by an earlier (failed) run of this test goes first, with the
        // per-interface configuration the test adds (dpkg leaves files it did not install).
        let _ = std::fs::remove_file(format!("/etc/streamml/{SENSOR_IF}.toml"));
        let _ = try_run(&["dpkg", "--purge", "streamml-sensor"]);
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        Installed::purge();
    }
}

/// The capabilities of a `Key=CAP_A CAP_B` line of the unit, as setpriv names them.
fn unit_caps(unit: &str, key: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"));
    line[key.len() + 1..]
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// `ip netns exec NS env ... setpriv` as the streamml user with exactly `caps` (inheritable,
/// ambient and bounding set; no new privileges, like the unit's NoNewPrivileges=yes).
fn as_streamml(ns: &str, caps: &[String], env: &[&str]) -> Vec<String> {
    let set = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut v: Vec<String> = ["ip", "netns", "exec", ns, "env"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // What systemd sets for the unit's RuntimeDirectory=.
    v.push("RUNTIME_DIRECTORY=/run/streamml-sensor".into());
    v.extend(env.iter().map(|s| s.to_string()));
    v.extend(
        [
            "setpriv",
            "--reuid",
            "streamml",
            "--regid",
            "streamml",
            "--init-groups",
            "--no-new-privs",
            "--inh-caps",
            &set,
            "--ambient-caps",
            &set,
            "--bounding-set",
            &set,
            INSTALLED,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

/// The installed sensor, started as the streamml user; returns once it captures, or Err
/// with its exit code and stderr.
struct Service {
    child: std::process::Child,
    log: Arc<Mutex<String>>,
}

impl Service {
    fn start(cmd: &[String]) -> Result<Service, (i32, String)> {
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let ready = l.contains("capturing on");
                    log.lock().unwrap().push_str(&format!("{l}\n"));
                    if ready {
                        let _ = tx.send(());
                    }
                }
            });
        }
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                return Ok(Service { child, log });
            }
            if let Ok(Some(s)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                let err = log.lock().unwrap().clone();
                return Err((s.code().unwrap_or(-1), err));
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                return Err((-1, log.lock().unwrap().clone()));
            }
        }
    }

    /// Signals and waits (bounded) for the exit: (exit code, stderr).
    fn end(self, sig: &str) -> (i32, String) {
        let pid = self.child.id();
        self.end_pid(sig, pid)
    }

    /// Signals the process's first child (the sensor under strace) and waits for the
    /// process to exit.
    fn end_child(self, sig: &str) -> (i32, String) {
        let id = self.child.id();
        let kids = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap();
        let pid = kids
            .split_whitespace()
            .next()
            .expect("a child")
            .parse()
            .unwrap();
        self.end_pid(sig, pid)
    }

    fn end_pid(mut self, sig: &str, pid: u32) -> (i32, String) {
        run(&["kill", sig, &pid.to_string()]);
        let st = wait_timeout(&mut self.child, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(50));
        (
            st.and_then(|s| s.code()).unwrap_or(-1),
            self.log.lock().unwrap().clone(),
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stat -c '%U:%G %a'` of a path.
fn owner_mode(p: &str) -> String {
    run(&["stat", "-c", "%U:%G %a", p]).trim().to_string()
}

/// The lintian warnings docs/packaging.md lists (between `<!-- lintian-warnings -->`
/// markers, one `tag` per line).
fn documented_lintian_warnings() -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/packaging.md")).unwrap();
    let a = doc.find("<!-- lintian-warnings -->").expect("marker");
    let b = doc.find("<!-- /lintian-warnings -->").expect("end marker");
    let mut v: Vec<String> = doc[a..b]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The .deb from build to purge: lintian (no errors; the warnings are the documented
/// ones), install, `--version`, the man pages, completions, `systemd-analyze verify` and
/// the exposure score (the README's), owners and modes, the unit's own command (ExecStart=)
/// run as the streamml user with exactly the unit's capabilities on a veth pair (packets
/// and an alert with evidence; the per-interface configuration, then sensor.toml), every
/// system call it makes allowed by the unit's filter, each capability dropped in turn (the start fails with one line
/// naming it; and without the sensor's own check, the kernel refuses too), a restart
/// after kill -9 (the leftover XDP program is replaced without CAP_SYS_ADMIN), then purge
/// and what is left.
#[test]
fn deb_installs_runs_as_streamml_with_the_units_capabilities_and_purges() {
    let Some(_g) = harness::live() else { return };
    Installed::purge();
    // Build.
    let (code, out, err) = output(
        &[
            "bash",
            &repo().join("packaging/build-deb.sh").to_string_lossy(),
        ],
        &[("STREAMML_BIN", SENSOR)],
    );
    assert_eq!(code, 0, "build-deb.sh: {err}");
    let deb = repo().join(out.trim());
    assert!(deb.is_file(), "{out}");
    let deb_s = deb.to_string_lossy().into_owned();

    // lintian: no error; every warning is one docs/packaging.md lists.
    let (_, lint, lint_err) = output(&["lintian", "--tag-display-limit", "0", &deb_s], &[]);
    let errors: Vec<&str> = lint.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{lint}{lint_err}");
    let mut warnings: Vec<String> = lint
        .lines()
        .filter(|l| l.starts_with("W:"))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    warnings.sort();
    warnings.dedup();
    eprintln!("lintian:\n{lint}");
    assert_eq!(
        warnings,
        documented_lintian_warnings(),
        "lintian warnings vs docs/packaging.md:\n{lint}"
    );

    // Install.
    let _installed = Installed;
    run(&["dpkg", "-i", &deb_s]);
    assert!(Installed::is_installed());
    let version = format!("streamml-sensor {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(run(&[INSTALLED, "--version"]), version);
    let (code, man, err) = output(
        &["man", "-P", "cat", "streamml-sensor"],
        &[("MANWIDTH", "100")],
    );
    assert_eq!(code, 0, "man streamml-sensor: {err}");
    assert!(
        man.contains("--iface") && man.contains("check-config"),
        "{man}"
    );
    let (code, man, err) = output(&["man", "-P", "cat", "streamml-sensor-check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(man.contains("effective configuration"), "{man}");
    run(&[
        "bash",
        "-c",
        "source /usr/share/bash-completion/completions/streamml-sensor && complete -p streamml-sensor",
    ]);
    for f in [
        "/usr/share/zsh/vendor-completions/_streamml-sensor",
        "/usr/share/fish/vendor_completions.d/streamml-sensor.fish",
    ] {
        assert!(
            std::fs::read_to_string(f).unwrap().contains("check-config"),
            "{f}"
        );
    }
    run(&["logrotate", "-d", "/etc/logrotate.d/streamml-sensor"]);
    run(&[INSTALLED, "check-config", "/etc/streamml/sensor.toml"]);

    // The unit: an instance verifies; its exposure score is the README's.
    let units = tempfile::tempdir().unwrap();
    let inst = units.path().join("streamml-sensor@ens1f0.service");
    std::os::unix::fs::symlink(UNIT, &inst).unwrap();
    let inst_s = inst.to_string_lossy().into_owned();
    let (code, out, err) = output(&["systemd-analyze", "verify", &inst_s], &[]);
    assert_eq!(code, 0, "systemd-analyze verify: {out}{err}");
    assert!(err.trim().is_empty(), "systemd-analyze verify warns: {err}");
    let (_, sec, err) = output(
        &[
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            &inst_s,
        ],
        &[],
    );
    let score = sec
        .lines()
        .chain(err.lines())
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|r| r.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no exposure level in:\n{sec}{err}"))
        .to_string();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure level {score} ")),
        "the README does not give the exposure score {score}:\n{sec}"
    );

    // Owners and modes.
    for (path, want) in [
        (INSTALLED, "root:root 755"),
        (UNIT, "root:root 644"),
        ("/etc/streamml/sensor.toml", "root:root 644"),
        ("/etc/default/streamml-sensor", "root:root 644"),
        ("/etc/logrotate.d/streamml-sensor", "root:root 644"),
        ("/usr/lib/tmpfiles.d/streamml-sensor.conf", "root:root 644"),
        ("/usr/share/man/man1/streamml-sensor.1.gz", "root:root 644"),
        ("/var/lib/streamml", "streamml:streamml 750"),
        ("/run/streamml-sensor", "streamml:streamml 755"),
    ] {
        assert_eq!(owner_mode(path), want, "{path}");
    }
    let pw = run(&["getent", "passwd", "streamml"]);
    let f: Vec<&str> = pw.trim().split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {pw}");
    assert_eq!(f[6], "/usr/sbin/nologin", "{pw}");

    // The installed binary as streamml with exactly the unit's capabilities.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let caps = unit_caps(&unit, "AmbientCapabilities");
    assert_eq!(caps, unit_caps(&unit, "CapabilityBoundingSet"));
    let pair = VethPair::new(1);
    // The unit's own command line (its ExecStart=, specifiers and $$ resolved as systemd
    // does), with the environment systemd gives it: the state directory as
    // StateDirectory=streamml/IF makes it, and a per-interface configuration, which the
    // command prefers to sensor.toml.
    let state = format!("/var/lib/streamml/{SENSOR_IF}");
    run(&[
        "install", "-d", "-o", "streamml", "-g", "streamml", "-m", "0750", &state,
    ]);
    let iface_cfg = format!("/etc/streamml/{SENSOR_IF}.toml");
    std::fs::write(&iface_cfg, ANOMALY_CONFIG).unwrap();
    let exec = unit_exec_start(&unit, SENSOR_IF);
    let stats = format!("/run/streamml-sensor/{SENSOR_IF}.stats.json");
    let state_env = format!("STATE_DIRECTORY={state}");
    let with = |caps: &[String], env: &[&str]| {
        let mut e = vec![
            state_env.as_str(),
            "STREAMML_ARGS=--no-pin --report-interval 0 --ring-mib 32",
        ];
        e.extend_from_slice(env);
        let mut c = as_streamml(&pair.ns_sensor, caps, &e);
        assert_eq!(c.pop().as_deref(), Some(INSTALLED));
        c.extend(["/bin/sh".to_string(), "-c".to_string(), exec.clone()]);
        c
    };
    let svc = Service::start(&with(&caps, &[])).unwrap_or_else(|(c, e)| {
        panic!("the installed sensor did not start as streamml ({c}):\n{e}")
    });
    let bg = pair.send(&["--count", "4000", "--pps", "1000", "--flows", "8"]);
    let flood = pair.send(&[
        "--count", "5000", "--pps", "20000", "--flows", "5000", "--proto", "tcp-syn", "--dport",
        "80",
    ]);
    let alerts = Path::new(&state).join("alerts.jsonl");
    let t = Instant::now();
    let alert = loop {
        if let Some(a) = lines_of(&alerts)
            .into_iter()
            .find(|a| a["evidence"]["path"].as_str().is_some())
        {
            break a;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no alert with evidence after 20 s:\n{}",
            svc.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, err) = svc.end("-TERM");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("profiles [flood]"), "not {iface_cfg}: {err}");
    let st = harness::read_json(Path::new(&stats)).expect("stats");
    assert_eq!(
        num(&st, &["packets_received"]),
        bg.sent + flood.sent,
        "{st:#}"
    );
    assert!(num(&st, &["detection", "detect.alerts"]) >= 1);
    let ev = Path::new(&state).join(alert["evidence"]["path"].as_str().unwrap());
    let ev_s = ev.to_string_lossy().into_owned();
    assert!(
        owner_mode(&ev_s).starts_with("streamml:streamml "),
        "{ev_s}"
    );
    assert_eq!(
        harness::tshark_packets(&ev).len() as u64,
        alert["evidence"]["packets"].as_u64().unwrap()
    );
    assert!(
        !pair.has_xdp(),
        "XDP left after SIGTERM:\n{}",
        pair.ip_link()
    );

    // Each capability is needed: without it the start fails, one line naming it; and
    // without the sensor's own check the kernel refuses the start too.
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let name = format!("CAP_{}", drop.to_uppercase());
        match Service::start(&with(&fewer, &[])) {
            Ok(s) => panic!("started without {name}:\n{}", s.end("-TERM").1),
            Err((code, err)) => {
                assert_eq!(code, 2, "{err}");
                assert_eq!(err.lines().count(), 1, "{err}");
                assert_eq!(
                    err.trim(),
                    format!("streamml-sensor: {SENSOR_IF}: missing privileges: need {name} (run as root or grant them, e.g. with setcap)")
                );
            }
        }
        match Service::start(&with(&fewer, &["STREAMML_SKIP_PRIVILEGE_CHECK=1"])) {
            Ok(s) => panic!(
                "the kernel let the sensor start without {name}:\n{}",
                s.end("-TERM").1
            ),
            Err((code, err)) => {
                // Past the check the start goes further (it may say that it kept the
                // earlier runs' ring records) and ends with the kernel's refusal.
                assert_eq!(code, 2, "{err}");
                let last = err.lines().last().unwrap_or_default();
                assert!(
                    [
                        "Operation not permitted",
                        "Permission denied",
                        "No buffer space"
                    ]
                    .iter()
                    .any(|e| last.contains(e)),
                    "without {name}: {err}"
                );
                assert!(!err.contains("run as root or grant them"), "{err}");
            }
        }
        assert!(
            !pair.has_xdp(),
            "a failed start left XDP:\n{}",
            pair.ip_link()
        );
    }

    // The unit's SystemCallFilter= allows every system call the sensor makes: a run under
    // strace (as streamml with the unit's capabilities, with traffic, then SIGTERM).
    let trace = format!("{state}/strace.txt");
    let mut cmd = with(&caps, &[]);
    let at = cmd.iter().position(|a| a == "/bin/sh").unwrap();
    for (i, a) in ["strace", "-f", "-qq", "-c", "-o", &trace]
        .iter()
        .enumerate()
    {
        cmd.insert(at + i, a.to_string());
    }
    let svc = Service::start(&cmd).unwrap_or_else(|(c, e)| panic!("under strace ({c}):\n{e}"));
    pair.send(&["--count", "2000", "--pps", "2000", "--flows", "8"]);
    let (code, err) = svc.end_child("-TERM");
    assert_eq!(code, 0, "{err}");
    let used = strace_syscalls(&std::fs::read_to_string(&trace).unwrap());
    assert!(
        used.len() > 20 && used.contains(&"bpf".to_string()),
        "{used:?}"
    );
    let allowed = unit_syscalls(&unit);
    let refused: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        refused.is_empty(),
        "system calls the unit's SystemCallFilter= refuses: {refused:?}"
    );

    // Without a configuration of its own, the instance runs with sensor.toml.
    std::fs::remove_file(&iface_cfg).unwrap();
    let svc = Service::start(&with(&caps, &[])).expect("start with sensor.toml");
    let (code, err) = svc.end("-TERM");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("profiles [traffic, flows]"), "{err}");

    // kill -9, then a restart with the same capabilities replaces the leftover program
    // (its name cannot be read without CAP_SYS_ADMIN; the id recorded in
    // /run/streamml-sensor says it is ours).
    let svc = Service::start(&with(&caps, &[])).expect("start");
    let (_, _) = svc.end("-KILL");
    assert!(pair.has_xdp(), "kill -9 leaves the program attached");
    let svc = Service::start(&with(&caps, &[]))
        .unwrap_or_else(|(c, e)| panic!("restart after kill -9 ({c}):\n{e}"));
    let (code, err) = svc.end("-TERM");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("replaced a leftover XDP program"), "{err}");
    assert!(!pair.has_xdp());
    drop(pair);

    // Purge: the files, the state and the runtime directory go; the user stays.
    run(&["dpkg", "--purge", "streamml-sensor"]);
    assert!(!Installed::is_installed());
    for p in [
        INSTALLED,
        UNIT,
        "/etc/streamml",
        "/etc/default/streamml-sensor",
        "/etc/logrotate.d/streamml-sensor",
        "/usr/lib/tmpfiles.d/streamml-sensor.conf",
        "/usr/share/doc/streamml-sensor",
        "/usr/share/man/man1/streamml-sensor.1.gz",
        "/usr/share/bash-completion/completions/streamml-sensor",
        "/var/lib/streamml",
    ] {
        assert!(!Path::new(p).exists(), "{p} is left after purge");
    }
    // The package's runtime directory (owned by streamml) is gone. On a shared machine a
    // sensor run by root elsewhere may have created /run/streamml-sensor again since (its
    // lock directory): that one is root's.
    let run_dir = Path::new("/run/streamml-sensor");
    assert!(
        !run_dir.exists() || owner_mode("/run/streamml-sensor").starts_with("root:root "),
        "/run/streamml-sensor is left after purge: {}",
        owner_mode("/run/streamml-sensor")
    );
    assert!(try_run(&["getent", "passwd", "streamml"]).is_ok());
}

/// The unit's `ExecStart=/bin/sh -c '...'` script for instance `inst`, as systemd hands
/// it to the shell: `%i`/`%I` replaced by the instance, `$$` by `$`.
fn unit_exec_start(unit: &str, inst: &str) -> String {
    let line = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart=");
    let rest = line
        .strip_prefix("ExecStart=/bin/sh -c '")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not a /bin/sh -c '...' line: {line}"));
    rest.replace("%i", inst)
        .replace("%I", inst)
        .replace("$$", "$")
}

/// The system call names of an `strace -c` summary.
fn strace_syscalls(summary: &str) -> Vec<String> {
    let mut v: Vec<String> = summary
        .lines()
        .skip_while(|l| !l.starts_with("------"))
        .skip(1)
        .take_while(|l| !l.starts_with("------"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The system calls the unit's `SystemCallFilter=` lines allow (allow lists only: groups
/// expanded with `systemd-analyze syscall-filter`).
fn unit_syscalls(unit: &str) -> std::collections::BTreeSet<String> {
    let listing = run(&["systemd-analyze", "syscall-filter", "--no-pager"]);
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut cur = None;
    for l in listing.lines() {
        if l.starts_with('@') {
            cur = Some(l.trim().to_string());
            groups.entry(l.trim().to_string()).or_default();
        } else if let (Some(g), t) = (&cur, l.trim()) {
            if !t.is_empty() && !t.starts_with('#') {
                groups.get_mut(g).unwrap().push(t.to_string());
            }
        }
    }
    fn expand(
        name: &str,
        groups: &std::collections::BTreeMap<String, Vec<String>>,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        match groups.get(name) {
            Some(members) if name.starts_with('@') => {
                for m in members {
                    expand(m, groups, out);
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for l in unit.lines() {
        if let Some(v) = l.strip_prefix("SystemCallFilter=") {
            assert!(!v.starts_with('~'), "a deny list: extend unit_syscalls");
            for name in v.split_whitespace() {
                expand(name, &groups, &mut out);
            }
        }
    }
    assert!(out.contains("read") && out.contains("bpf"), "{out:?}");
    out
}

/// As in tests/live.rs: a window profile that learns in ~2 s of traffic and alerts on a
/// SYN flood.
const ANOMALY_CONFIG: &str = r#"
[sensor]
shards = 1

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
window_size = 16
seed = 7
[profile.threshold]
fixed = 0.8
require_out_of_range = true
cooldown_s = 0
[profile.evidence]
pre_s = 0.5
post_s = 0.3
scope = "window"
"#;

// ---------------------------------------------------------------------------------------
// The quick start

/// The namespaces `ip netns list` shows.
fn netns_list() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The two namespaces a quickstart run announced (`== namespaces A (...) and B (...)`).
fn demo_namespaces(out: &str) -> Vec<String> {
    let l = out
        .lines()
        .find(|l| l.starts_with("== namespaces "))
        .unwrap_or_else(|| panic!("no namespace line in:\n{out}"));
    let w: Vec<&str> = l.split_whitespace().collect();
    vec![w[2].to_string(), w[6].to_string()]
}

/// `streamml-sensor` processes that run `demo0` of this quickstart (by the state dir).
fn sensors_on(state: &Path) -> Vec<String> {
    let s = state.to_string_lossy();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("streamml-sensor") && cmd.contains(&*s) && !cmd.contains("quickstart") {
                v.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    v
}

fn quickstart_cmd(dir: &Path) -> Command {
    let bins = Path::new(SENSOR).parent().unwrap().to_path_buf();
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/quickstart.sh"))
        .env("STREAMML_BIN_DIR", bins)
        .env("STREAMML_DEMO_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The README's first command: live capture on a private veth pair with the embedded
/// default configuration; the injected attack (and only it) alerts, with an evidence file
/// that tshark reads; afterwards no namespace, veth pair, XDP program or sensor is left.
#[test]
fn quickstart_alerts_on_the_attack_and_leaves_nothing_behind() {
    let Some(_g) = harness::live() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut child = quickstart_cmd(dir.path()).spawn().expect("bash");
    let status = wait_timeout(&mut child, Duration::from_secs(120));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stdout}\n{stderr}");
    let left: Vec<String> = demo_namespaces(&stdout)
        .into_iter()
        .filter(|n| netns_list().contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let state = dir.path().join("state");
    assert!(sensors_on(&state).is_empty(), "{:?}", sensors_on(&state));
    // The alert lines the script printed are the attack's: the bulk flow to port 443.
    let alerts = lines_of(&state.join("alerts.jsonl"));
    assert!(!alerts.is_empty(), "{stdout}");
    for a in &alerts {
        assert_eq!(
            a["src_ip"], "198.18.7.7",
            "a benign flow alerted: {a:#}\n{stdout}"
        );
        assert_eq!(a["dest_port"], 443, "{a:#}");
    }
    let a = &alerts[0];
    let rel = a["evidence"]["path"].as_str().expect("evidence");
    assert!(stdout.contains(rel), "{stdout}");
    assert!(stdout.contains("tshark -r -"), "{stdout}");
    let pkts = harness::tshark_packets(&state.join(rel));
    assert_eq!(
        pkts.len() as u64,
        a["evidence"]["packets"].as_u64().unwrap()
    );
    assert!(pkts.iter().all(|p| p.1 == "198.18.7.7"), "{rel}");
}

/// Ctrl-C in the middle of the quick start (SIGINT to its process group, as a terminal
/// sends it): the script stops the sensor and removes both namespaces.
#[test]
fn quickstart_interrupted_cleans_up() {
    let Some(_g) = harness::live() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = quickstart_cmd(dir.path());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("bash");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.starts_with("== benign traffic") {
                let _ = tx.send(());
            }
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let started = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    let pgid = format!("-{}", child.id());
    let _ = try_run(&["kill", "-INT", "--", &pgid]);
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let out = reader.join().unwrap();
    assert!(started, "the quick start never reached its traffic:\n{out}");
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{out}");
    let left: Vec<String> = demo_namespaces(&out)
        .into_iter()
        .filter(|n| netns_list().contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left after Ctrl-C: {left:?}");
    let state = dir.path().join("state");
    assert!(sensors_on(&state).is_empty(), "{:?}", sensors_on(&state));
}
