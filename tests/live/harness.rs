//! Harness for the live tests: two private network namespaces joined by a veth pair, the
//! sensor running in one, the generator (streamml-pktgen) in the other. Everything is
//! torn down in `Drop`, also when a test fails: processes are killed by PID, then both
//! namespaces are deleted (which deletes the veth pair).
//!
//! Rules kept here: names unique per test; IPv6 disabled on both ends before link up (no
//! RS/MLD frames to spoil exact counts); addresses from 198.18.0.0/15 only; every wait is
//! bounded. Live tests take a global lock so they run one at a time (they share 2 cores).
//!
//! With CI=true a live test that cannot run (not root, no `ip`, no netns) fails; else it
//! prints why and returns.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const SENSOR: &str = env!("CARGO_BIN_EXE_streamml-sensor");
pub const PKTGEN: &str = env!("CARGO_BIN_EXE_streamml-pktgen");
/// A bare XDP_DROP program (bpf/xdp_drop.bpf.c), as a "foreign" program.
pub const XDP_DROP_OBJ: &str = concat!(env!("OUT_DIR"), "/xdp_drop.bpf.o");

/// Interface names inside the namespaces (the namespaces keep them apart).
pub const SENSOR_IF: &str = "sens0";
pub const PEER_IF: &str = "peer0";
pub const SENSOR_ADDR: &str = "198.19.0.1";
pub const PEER_ADDR: &str = "198.18.0.1";
pub const SENSOR_MAC: &str = "02:53:4d:00:00:01";
pub const PEER_MAC: &str = "02:53:4d:00:00:02";

static LIVE_LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion (bounded), returning stdout; panics with its stderr.
pub fn run(cmd: &[&str]) -> String {
    try_run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

pub fn try_run(cmd: &[&str]) -> Result<String, String> {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match status {
        Some(s) if s.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(s) => Err(format!(
            "{} failed ({s}): {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        None => Err(format!("{} timed out", cmd.join(" "))),
    }
}

/// Waits up to `t` for the child; kills it (by its PID) on timeout and returns None.
pub fn wait_timeout(child: &mut Child, t: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + t;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The environment check and the one-at-a-time lock. None: skip, only when the user
/// opted out with STREAMML_SKIP_LIVE=1; a machine where the live tests cannot run (not
/// root, no `ip`) fails them, with one line saying why.
pub fn live() -> Option<MutexGuard<'static, ()>> {
    if std::env::var("STREAMML_SKIP_LIVE").is_ok_and(|v| v == "1") {
        eprintln!("skipping live test: STREAMML_SKIP_LIVE=1");
        return None;
    }
    let why = if euid() != 0 {
        Some("not running as root".to_string())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` command (iproute2) is missing".to_string())
    } else {
        None
    };
    if let Some(why) = why {
        panic!("live test cannot run: {why} (run as root, or set STREAMML_SKIP_LIVE=1 to skip the live tests)");
    }
    Some(LIVE_LOCK.lock().unwrap_or_else(|p| p.into_inner()))
}

fn euid() -> u32 {
    // /proc/self/status "Uid: real effective ..."
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Two namespaces and a veth pair between them.
pub struct VethPair {
    pub ns_sensor: String,
    pub ns_peer: String,
    pub queues: u32,
    pub sensor_mac: String,
    pub dir: tempfile::TempDir,
}

impl VethPair {
    /// `queues` RX and TX queues on both ends.
    pub fn new(queues: u32) -> VethPair {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("smlt{}x{n}", std::process::id());
        let mut pair = VethPair {
            ns_sensor: format!("{base}s"),
            ns_peer: format!("{base}p"),
            queues,
            sensor_mac: String::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        // From here on, Drop cleans up whatever got created.
        let q = queues.to_string();
        run(&["ip", "netns", "add", &pair.ns_sensor]);
        run(&["ip", "netns", "add", &pair.ns_peer]);
        for ns in [&pair.ns_sensor, &pair.ns_peer] {
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        run(&[
            "ip",
            "link",
            "add",
            SENSOR_IF,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &pair.ns_sensor,
            "type",
            "veth",
            "peer",
            "name",
            PEER_IF,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &pair.ns_peer,
        ]);
        for (ns, ifc) in [(&pair.ns_sensor, SENSOR_IF), (&pair.ns_peer, PEER_IF)] {
            // belt and braces: per-interface too (created after the defaults were set)
            let _ = try_run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifc}.disable_ipv6=1"),
            ]);
        }
        run(&[
            "ip",
            "-n",
            &pair.ns_sensor,
            "addr",
            "add",
            &format!("{SENSOR_ADDR}/15"),
            "dev",
            SENSOR_IF,
        ]);
        run(&[
            "ip",
            "-n",
            &pair.ns_peer,
            "addr",
            "add",
            &format!("{PEER_ADDR}/15"),
            "dev",
            PEER_IF,
        ]);
        // Fixed MACs: frames (and flow rows) are the same whichever pair carried them.
        run(&[
            "ip",
            "-n",
            &pair.ns_sensor,
            "link",
            "set",
            SENSOR_IF,
            "address",
            SENSOR_MAC,
        ]);
        run(&[
            "ip",
            "-n",
            &pair.ns_peer,
            "link",
            "set",
            PEER_IF,
            "address",
            PEER_MAC,
        ]);
        run(&["ip", "-n", &pair.ns_sensor, "link", "set", SENSOR_IF, "up"]);
        run(&["ip", "-n", &pair.ns_peer, "link", "set", PEER_IF, "up"]);
        pair.sensor_mac = link_mac(&pair.ns_sensor, SENSOR_IF);
        // Static neighbours: no ARP frames to spoil exact counts when a stack answers
        // (pass mode: ICMP port unreachable for the generator's UDP).
        let peer_mac = link_mac(&pair.ns_peer, PEER_IF);
        run(&[
            "ip",
            "-n",
            &pair.ns_sensor,
            "neigh",
            "replace",
            PEER_ADDR,
            "lladdr",
            &peer_mac,
            "dev",
            SENSOR_IF,
            "nud",
            "permanent",
        ]);
        run(&[
            "ip",
            "-n",
            &pair.ns_peer,
            "neigh",
            "replace",
            SENSOR_ADDR,
            "lladdr",
            &pair.sensor_mac,
            "dev",
            PEER_IF,
            "nud",
            "permanent",
        ]);
        pair
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ip link show` of the sensor's interface.
    pub fn ip_link(&self) -> String {
        run(&[
            "ip",
            "-n",
            &self.ns_sensor,
            "link",
            "show",
            "dev",
            SENSOR_IF,
        ])
    }

    /// Whether an XDP program is attached to the sensor's interface (per `ip link`).
    pub fn has_xdp(&self) -> bool {
        let l = self.ip_link();
        l.contains("prog/xdp") || l.contains(" xdp")
    }

    /// A counter of the peer's interface, e.g. "tx_dropped".
    pub fn peer_stat(&self, name: &str) -> u64 {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns_peer,
            "cat",
            &format!("/sys/class/net/{PEER_IF}/statistics/{name}"),
        ])
        .trim()
        .parse()
        .expect("a number")
    }

    /// A counter from the sensor namespace's /proc/net/snmp, e.g. ("Udp", "NoPorts").
    pub fn sensor_snmp(&self, proto: &str, field: &str) -> u64 {
        let s = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns_sensor,
            "cat",
            "/proc/net/snmp",
        ]);
        let mut lines = s.lines().filter(|l| l.starts_with(&format!("{proto}:")));
        let names: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        let vals: Vec<&str> = lines.next().expect("values").split_whitespace().collect();
        let i = names.iter().position(|n| *n == field).expect("field");
        vals[i].parse().expect("number")
    }

    /// Sends frames from the peer namespace with streamml-pktgen; returns its JSON report.
    /// Panics if it fails or runs past its own --duration bound plus a margin.
    pub fn send(&self, args: &[&str]) -> Generated {
        let mut cmd = vec![
            "ip",
            "netns",
            "exec",
            &self.ns_peer,
            PKTGEN,
            "--iface",
            PEER_IF,
        ];
        let mac_arg = self.sensor_mac.clone();
        cmd.extend_from_slice(&["--dst-mac", &mac_arg, "--dst", SENSOR_ADDR]);
        if !args.contains(&"--src") {
            cmd.extend_from_slice(&["--src", PEER_ADDR]);
        }
        cmd.extend_from_slice(args);
        if !args.contains(&"--duration") {
            cmd.extend_from_slice(&["--duration", "20"]);
        }
        let out = run(&cmd);
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("pktgen output {out:?}: {e}"));
        Generated {
            sent: v["sent"].as_u64().expect("sent"),
            requested: v["requested"].as_u64().expect("requested"),
            per_queue: v["queues"]
                .as_array()
                .expect("queues")
                .iter()
                .map(|q| {
                    (
                        q["queue"].as_u64().unwrap() as u32,
                        q["sent"].as_u64().unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// The state directory the harness gives the sensor (unless a test passes its own).
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Starts the sensor on the sensor end and waits until it reports that it captures.
    /// `--no-pin`, `--report-interval 0`, `--stats-json`, `--state-dir` (one per pair)
    /// and `--ring-mib 16` are added unless given.
    pub fn start_sensor(&self, args: &[&str]) -> Sensor {
        match self.try_start_sensor(args) {
            Ok(s) => s,
            Err((status, err)) => panic!("sensor did not start ({status:?}):\n{err}"),
        }
    }

    /// Like `start_sensor`, but a sensor that exits before it is ready is an Err with its
    /// exit status and stderr.
    pub fn try_start_sensor(&self, args: &[&str]) -> Result<Sensor, (Option<ExitStatus>, String)> {
        self.try_start_sensor_env(&[], args)
    }

    /// `start_sensor` with extra environment variables (e.g. `STREAMML_REFUSE`).
    pub fn start_sensor_env(&self, env: &[(&str, &str)], args: &[&str]) -> Sensor {
        match self.try_start_sensor_env(env, args) {
            Ok(s) => s,
            Err((status, err)) => panic!("sensor did not start ({status:?}):\n{err}"),
        }
    }

    /// `try_start_sensor` with extra environment variables.
    pub fn try_start_sensor_env(
        &self,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Sensor, (Option<ExitStatus>, String)> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let stats = self.path(&format!("stats{n}.json"));
        let stats_s = stats.to_string_lossy().into_owned();
        let mut cmd: Vec<&str> = vec![
            "netns",
            "exec",
            &self.ns_sensor,
            SENSOR,
            "--iface",
            SENSOR_IF,
        ];
        if !args.contains(&"--pin") {
            cmd.push("--no-pin");
        }
        if !args.contains(&"--report-interval") {
            cmd.extend_from_slice(&["--report-interval", "0"]);
        }
        if !args.contains(&"--stats-json") {
            cmd.extend_from_slice(&["--stats-json", &stats_s]);
        }
        let state = self.state_dir().to_string_lossy().into_owned();
        if !args.contains(&"--state-dir") {
            cmd.extend_from_slice(&["--state-dir", &state]);
        }
        if !args.contains(&"--ring-mib") {
            cmd.extend_from_slice(&["--ring-mib", "16"]);
        }
        cmd.extend(args.iter().filter(|a| **a != "--pin"));
        let mut child = Command::new("ip")
            .args(&cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the sensor");
        // `ip netns exec` execs the command: this PID is the sensor's.
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let ready = l.contains("capturing on");
                    let mut g = log.lock().unwrap();
                    g.push_str(&l);
                    g.push('\n');
                    drop(g);
                    if ready {
                        let _ = tx.send(());
                    }
                }
            });
        }
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                return Ok(Sensor {
                    child: Some(child),
                    log,
                    stats,
                });
            }
            if let Ok(Some(s)) = child.try_wait() {
                // let the reader thread collect the rest
                std::thread::sleep(Duration::from_millis(50));
                let err = log.lock().unwrap().clone();
                return Err((Some(s), err));
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                let err = log.lock().unwrap().clone();
                return Err((None, err));
            }
        }
    }

    /// Runs the sensor expecting it to fail at startup; returns (exit code, stderr).
    pub fn sensor_fails(&self, prefix: &[&str], args: &[&str]) -> (i32, String) {
        let mut cmd: Vec<&str> = vec!["netns", "exec", &self.ns_sensor];
        cmd.extend_from_slice(prefix);
        cmd.push(SENSOR);
        cmd.extend_from_slice(args);
        let state = self.state_dir().to_string_lossy().into_owned();
        cmd.extend_from_slice(&["--state-dir", &state, "--ring-mib", "4"]);
        cmd.extend_from_slice(&["--no-pin", "--duration", "5"]);
        let mut child = Command::new("ip")
            .args(&cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let status = wait_timeout(&mut child, Duration::from_secs(15));
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = status.and_then(|s| s.code()).unwrap_or(-1);
        (code, err)
    }
}

fn link_mac(ns: &str, ifc: &str) -> String {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{ifc}/address"),
    ])
    .trim()
    .to_string()
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair (and any XDP program on it).
        let _ = try_run(&["ip", "netns", "del", &self.ns_sensor]);
        let _ = try_run(&["ip", "netns", "del", &self.ns_peer]);
    }
}

/// What the generator reported.
#[derive(Debug, Clone)]
pub struct Generated {
    pub sent: u64,
    pub requested: u64,
    pub per_queue: Vec<(u32, u64)>,
}

/// A running sensor. Dropping it kills it (SIGKILL by PID) if it still runs.
pub struct Sensor {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    pub stats: PathBuf,
}

/// How a sensor ended.
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub stderr: String,
    pub stats: Option<serde_json::Value>,
}

impl Sensor {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        run(&["kill", sig, &self.pid().to_string()]);
    }

    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGHUP, then waits (bounded) for the stats file to show `packets` frames.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    pub fn read_stats(&self) -> Option<serde_json::Value> {
        read_json(&self.stats)
    }

    /// SIGTERM and wait (bounded) for exit.
    pub fn stop(mut self) -> Stopped {
        self.signal("-TERM");
        self.finish()
    }

    /// Waits (bounded) for the sensor to exit by itself.
    pub fn wait_exit(mut self) -> Stopped {
        self.finish()
    }

    /// SIGKILL and wait.
    pub fn kill9(mut self) -> Stopped {
        self.signal("-KILL");
        self.finish()
    }

    fn finish(&mut self) -> Stopped {
        let mut child = self.child.take().expect("running");
        let status = wait_timeout(&mut child, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(50)); // stderr reader catches up
        Stopped {
            status,
            stderr: self.log.lock().unwrap().clone(),
            stats: read_json(&self.stats),
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn read_json(p: &Path) -> Option<serde_json::Value> {
    let s = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(&s).ok()
}

/// `v[a][b]...` as u64 (a number indexes an array), panicking with the document on a
/// missing key.
pub fn num(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        cur = match (cur.as_array(), k.parse::<usize>()) {
            (Some(a), Ok(i)) => a.get(i).unwrap_or(&serde_json::Value::Null),
            _ => &cur[*k],
        };
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"))
}

/// Flow rows without the columns that depend on when frames were captured (ids, times,
/// durations, inter-arrival times), sorted: what must agree between live and replay.
pub fn timeless_flows(csv: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("CSV header").split(',').collect();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            !(**c == "id" || c.contains("seen") || c.contains("duration") || c.contains("piat"))
        })
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<String> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            keep.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
        })
        .collect();
    rows.sort();
    rows
}

/// Equal row sets, reporting the first difference instead of both sets.
pub fn assert_same_flows(what: &str, got: &[String], want: &[String]) {
    assert_eq!(got.len(), want.len(), "{what}: number of flows");
    if let Some((g, w)) = got.iter().zip(want).find(|(g, w)| g != w) {
        panic!("{what}: first differing flow\n got: {g}\nwant: {w}");
    }
}

pub fn replay_flows(pcap: &std::path::Path, out: &std::path::Path) -> String {
    run(&[
        SENSOR,
        "flows",
        &pcap.to_string_lossy(),
        "-o",
        &out.to_string_lossy(),
    ]);
    std::fs::read_to_string(out).expect("replay flows")
}

/// One evidence file through `zstd -dc FILE | tshark -r -`: per packet (epoch time,
/// source address, TCP flags or empty). Panics if either command fails or warns.
pub fn tshark_packets(path: &std::path::Path) -> Vec<(f64, String, String)> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            "set -o pipefail; zstd -q -dc \"$1\" | tshark -r - -T fields \
             -e frame.time_epoch -e ip.src -e tcp.flags",
        )
        .arg("bash")
        .arg(path)
        .output()
        .expect("bash, zstd and tshark are installed (scripts/deps.sh)");
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("Running as user \"root\""))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success() && stderr.is_empty(),
        "zstd | tshark on {}: {stderr}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().expect("epoch time"),
                f.get(1).unwrap_or(&"").to_string(),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// SIGHUP until the stats file shows `reader.frames == n` (every frame in the evidence
/// rings); bounded.
pub fn wait_frames(sensor: &Sensor, n: u64) {
    let t = std::time::Instant::now();
    loop {
        sensor.sighup();
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Some(v) = sensor.read_stats() {
            if v["pipeline"]["reader.frames"].as_u64() == Some(n) {
                return;
            }
        }
        assert!(
            t.elapsed().as_secs() < 10,
            "reader.frames never reached {n}: {:?}",
            sensor.read_stats()
        );
    }
}

/// `streamml-sensor evidence recover` on the pair's state directory: the packets of the
/// output, counted by tshark.
pub fn recover_count(pair: &VethPair, name: &str) -> u64 {
    recover(pair, name).len() as u64
}

/// `evidence recover` of the pair's state directory into `name`: its packets as tshark
/// reads them.
pub fn recover(pair: &VethPair, name: &str) -> Vec<(f64, String, String)> {
    let out = pair.path(name);
    run(&[
        SENSOR,
        "evidence",
        "recover",
        "--state-dir",
        &pair.state_dir().to_string_lossy(),
        "-o",
        &out.to_string_lossy(),
    ]);
    tshark_packets(&out)
}

/// The live run's counters add up (`stats::conservation` on the stats JSON's `pipeline`),
/// and every frame the sockets delivered went through a reader.
pub fn assert_conserved(st: &serde_json::Value) {
    let snap: streamml_sensor::stats::Snapshot =
        serde_json::from_value(st["pipeline"].clone()).expect("pipeline counters");
    let bad = streamml_sensor::stats::conservation(&snap);
    assert!(bad.is_empty(), "counters do not add up: {bad:?}\n{st:#}");
    assert_eq!(
        st["packets_received"].as_u64(),
        snap.get("reader.frames").copied(),
        "frames received vs read"
    );
}
