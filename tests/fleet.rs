//! The fleet sinks against the real servers teams run, each started here on loopback
//! (Debian's packages, installed by scripts/deps.sh), never mocked:
//! - nfcapd (nfdump) receives the IPFIX export of replays; `nfdump -r` reads back the
//!   same flows as `streamml-sensor flows` writes (keys, packets, bytes, times), also
//!   across a collector restart mid-run;
//! - Prometheus scrapes `/metrics` during a replay; a PromQL query returns the packet
//!   counter of the stats JSON.
//!
//! Every server is a child of the test, killed by its PID when the test ends (also on
//! failure); every wait is bounded in time.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamml-sensor"))
}

fn need(tool: &str) -> PathBuf {
    for d in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = Path::new(d).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: run scripts/deps.sh (Debian package)")
}

/// A server this test started: SIGTERM, then SIGKILL, by its PID, when dropped.
struct Server {
    child: Child,
    name: &'static str,
}

impl Server {
    fn start(name: &'static str, cmd: &mut Command) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Server { child, name }
    }

    /// The sensor fed through its standard input.
    fn sensor(cmd: &mut Command, log: &Path) -> Server {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the sensor");
        Server {
            child,
            name: "streamml-sensor",
        }
    }

    fn stdin(&mut self) -> &mut std::process::ChildStdin {
        self.child.stdin.as_mut().expect("stdin is piped")
    }

    /// Closes standard input (end of the capture) and waits (bounded) for the exit.
    fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        wait_for("the sensor to exit", Duration::from_secs(60), || {
            self.child.try_wait().unwrap()
        })
    }

    /// SIGTERM and wait (bounded) for a clean exit (nfcapd writes its file then).
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it gives Some, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0): the body, if the status is 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then_some(())
        .or_else(|| head.starts_with("HTTP/1.0 200").then_some(()))?;
    Some(body.to_string())
}

/// A sample of a counter in the sensor's own `/metrics` text.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------
// IPFIX

/// nfcapd on 127.0.0.1:port writing into `dir`.
fn nfcapd(port: u16, dir: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let s = Server::start(
        "nfcapd",
        Command::new(need("nfcapd"))
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "3600"])
            .args(["-B", "8388608", "-w"])
            .arg(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    // Listening once its socket is in /proc/net/udp.
    wait_for("nfcapd's socket", Duration::from_secs(10), || {
        udp_rx_queue(port).map(|_| ())
    });
    s
}

/// The receive queue (bytes) of the UDP socket bound to 127.0.0.1:port, if one is.
fn udp_rx_queue(port: u16) -> Option<u64> {
    let t = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!("0100007F:{port:04X}");
    t.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1)? == &want).then(|| {
            let q = f.get(4)?.split(':').nth(1)?;
            u64::from_str_radix(q, 16).ok()
        })?
    })
}

/// One flow as both tools can show it: key, first and last packet (ms), packets and
/// bytes in each direction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowRow {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    first_ms: u64,
    last_ms: u64,
    pkts: (u64, u64),
    bytes: (u64, u64),
}

/// The rows of `streamml-sensor flows` (CSV) for the same fields.
fn flows_csv_rows(csv: &str) -> Vec<FlowRow> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let c = [
        col("src_ip"),
        col("dst_ip"),
        col("src_port"),
        col("dst_port"),
        col("protocol"),
        col("bidirectional_first_seen_ms"),
        col("bidirectional_last_seen_ms"),
        col("src2dst_packets"),
        col("dst2src_packets"),
        col("src2dst_bytes"),
        col("dst2src_bytes"),
    ];
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            FlowRow {
                src: f[c[0]].parse().unwrap(),
                dst: f[c[1]].parse().unwrap(),
                sport: f[c[2]].parse().unwrap(),
                dport: f[c[3]].parse().unwrap(),
                proto: f[c[4]].parse().unwrap(),
                first_ms: f[c[5]].parse().unwrap(),
                last_ms: f[c[6]].parse().unwrap(),
                pkts: (f[c[7]].parse().unwrap(), f[c[8]].parse().unwrap()),
                bytes: (f[c[9]].parse().unwrap(), f[c[10]].parse().unwrap()),
            }
        })
        .collect()
}

/// `nfdump -r` of every file nfcapd wrote in `dir`, as [`FlowRow`]s.
fn nfdump_rows(dir: &Path) -> Vec<FlowRow> {
    let mut rows = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("nfcapd.2")
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "nfcapd wrote no file in {}",
        dir.display()
    );
    for f in files {
        let out = Command::new(need("nfdump"))
            .env("TZ", "UTC")
            .args(["-6", "-q", "-N", "-o"])
            .arg("fmt:%tsr|%td|%sa|%da|%sp|%dp|%pr|%ipkt|%opkt|%ibyt|%obyt")
            .arg("-r")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nfdump -r {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for l in String::from_utf8(out.stdout).unwrap().lines() {
            let v: Vec<&str> = l.split('|').map(str::trim).collect();
            if v.len() != 11 {
                continue; // a summary line
            }
            let ms = |s: &str| -> u64 {
                let (a, b) = s.split_once('.').unwrap_or((s, "0"));
                let frac = format!("{b:0<3}");
                a.parse::<u64>().unwrap() * 1000 + frac[..3].parse::<u64>().unwrap()
            };
            let first = ms(v[0]);
            let proto = match v[6] {
                "TCP" => 6,
                "UDP" => 17,
                "ICMP" => 1,
                "ICMP6" => 58,
                p => p.parse().unwrap_or_else(|_| panic!("protocol {p}")),
            };
            // nfdump shows an ICMP flow's destination port as type.code.
            let port = |s: &str| -> u16 {
                match s.split_once('.') {
                    Some((t, c)) => t.parse::<u16>().unwrap() * 256 + c.parse::<u16>().unwrap(),
                    None => s.parse().unwrap(),
                }
            };
            rows.push(FlowRow {
                src: v[2].parse().unwrap(),
                dst: v[3].parse().unwrap(),
                sport: port(v[4]),
                dport: port(v[5]),
                proto,
                first_ms: first,
                last_ms: first + ms(v[1]),
                pkts: (v[7].parse().unwrap(), v[8].parse().unwrap()),
                bytes: (v[9].parse().unwrap(), v[10].parse().unwrap()),
            });
        }
    }
    rows.sort();
    rows
}

fn sorted(mut v: Vec<FlowRow>) -> Vec<FlowRow> {
    v.sort();
    v
}

fn flows_of(capture: &Path) -> Vec<FlowRow> {
    let out = bin().arg("flows").arg(capture).output().unwrap();
    assert!(out.status.success(), "flows {}", capture.display());
    flows_csv_rows(&String::from_utf8(out.stdout).unwrap())
}

fn stats_json(p: &Path) -> BTreeMap<String, u64> {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Replays of real captures (IPv4 and IPv6, TCP, UDP, ICMP, VLAN) exported to nfcapd:
/// `nfdump -r` shows exactly the flows `streamml-sensor flows` writes.
#[test]
fn ipfix_to_nfcapd_equals_flows_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let dir = tmp.path().join("nfcapd");
    let mut collector = nfcapd(port, &dir);
    let pcaps = common::pcaps_dir();
    let mut want = Vec::new();
    for rel in [
        "basic/dns-edns-ecs.pcap",
        "basic/443-curl.pcap",
        "basic/5-pings.pcap",
        "basic/wikipedia.pcap",
        "ipv6/http_ipv6.pcap",
        "ipv6/icmp6-ping.pcap",
        "anomaly/synscan.pcap",
        "large/1kxun.pcap",
    ] {
        let cap = pcaps.join(rel);
        let st = tmp.path().join(rel.replace('/', "_"));
        std::fs::create_dir_all(&st).unwrap();
        let out = bin()
            .arg("replay")
            .arg(&cap)
            .arg("--state-dir")
            .arg(&st)
            .arg("--ring-mib")
            .arg("8")
            .args(["--ipfix", &format!("127.0.0.1:{port}")])
            .arg("--stats-json")
            .arg(st.join("stats.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replay {rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = stats_json(&st.join("stats.json"));
        let flows = flows_of(&cap);
        assert_eq!(s["sink.ipfix.records"], flows.len() as u64, "{rel}");
        assert_eq!(s["sink.ipfix.sent"], flows.len() as u64, "{rel}");
        assert_eq!(s["sink.ipfix.dropped.queue_full"], 0, "{rel}");
        want.extend(flows);
    }
    // Everything sent has been read by nfcapd before it is stopped.
    wait_for(
        "nfcapd to drain its socket",
        Duration::from_secs(20),
        || (udp_rx_queue(port) == Some(0)).then_some(()),
    );
    collector.stop();
    let got = nfdump_rows(&dir);
    let want = sorted(want);
    assert!(want.len() > 2000, "{} flows", want.len());
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        panic!(
            "nfdump shows {} flows, flows {}; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// A µs PCAP (Ethernet) of `pkts`, each `shift_s` seconds later than recorded.
fn pcap_bytes(pkts: &[common::Pkt], shift_s: u64, with_header: bool) -> Vec<u8> {
    let mut b = Vec::new();
    if with_header {
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    for p in pkts {
        let ts_us = p.ts_ns / 1000 + shift_s * 1_000_000;
        b.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        b.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        b.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&p.orig_len.to_le_bytes());
        b.extend_from_slice(&p.data);
    }
    b
}

fn sink_metric(text: &str, what: &str) -> u64 {
    let series = if let Some(reason) = what.strip_prefix("dropped.") {
        format!("streamml_sink_dropped_total{{sink=\"ipfix\",reason=\"{reason}\"}}")
    } else {
        format!("streamml_sink_records_total{{sink=\"ipfix\",outcome=\"{what}\"}}")
    };
    metric(text, &series).unwrap_or(0)
}

/// The collector stops and a new one starts while the sensor runs: the flows exported
/// while one listened are all in its file (the new one decodes them: the exporter
/// re-sends its templates after the send errors of the gap), the ones of the gap are
/// counted, and nothing stalls. The capture comes in three parts, ten days apart, so
/// that each part's flows expire when the next part starts.
#[test]
fn ipfix_collector_restart_mid_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, mport) = (free_udp_port(), free_tcp_port());
    // (timestamps in order: every flow of a part has expired when the next part starts)
    let pkts = common::frames("basic/wikipedia.pcap");
    let day = 86_400;
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| pcap_bytes(&pkts, 10 * day * i, false))
        .collect();
    // The first packets of a part (enough for an IP packet to move the clock on, and one
    // behind it: the reader hands a record on once the next one has begun).
    let first_len = pcap_bytes(&pkts[..5], 0, false).len();
    let mut expect = Vec::new();
    for i in 0..3 {
        let f = tmp.path().join(format!("part{i}.pcap"));
        std::fs::write(&f, pcap_bytes(&pkts, 10 * day * i as u64, true)).unwrap();
        expect.push(sorted(flows_of(&f)));
    }
    let n: Vec<u64> = expect.iter().map(|e| e.len() as u64).collect();
    let d1 = tmp.path().join("nfcapd1");
    let d2 = tmp.path().join("nfcapd2");
    let mut c1 = nfcapd(port, &d1);
    let mut sensor = Server::sensor(
        bin()
            .args(["replay", "-", "--ring-mib", "8", "--state-dir"])
            .arg(tmp.path().join("state"))
            .args(["--ipfix", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{mport}")])
            .arg("--stats-json")
            .arg(tmp.path().join("stats.json")),
        &tmp.path().join("sensor.log"),
    );
    let metrics = || http_get(mport, "/metrics");
    // Part 0 and the first packet of part 1: part 0's flows expire and go out.
    let mut head = pcap_bytes(&[], 0, true);
    head.extend_from_slice(&parts[0]);
    head.extend_from_slice(&parts[1][..first_len]);
    sensor.stdin().write_all(&head).unwrap();
    sensor.stdin().flush().unwrap();
    wait_for("part 0's flows to be sent", Duration::from_secs(60), || {
        (sink_metric(&metrics()?, "sent") == n[0]).then_some(())
    });
    wait_for("nfcapd to read them", Duration::from_secs(20), || {
        (udp_rx_queue(port) == Some(0)).then_some(())
    });
    c1.stop();
    // Part 1 with no collector listening.
    sensor.stdin().write_all(&parts[1][first_len..]).unwrap();
    sensor.stdin().write_all(&parts[2][..first_len]).unwrap();
    sensor.stdin().flush().unwrap();
    let m = wait_for(
        "part 1's flows to be handled",
        Duration::from_secs(60),
        || {
            let m = metrics()?;
            (sink_metric(&m, "sent") + sink_metric(&m, "dropped.send_error") == n[0] + n[1])
                .then_some(m)
        },
    );
    assert!(
        sink_metric(&m, "send_errors") > 0,
        "no send error noticed:\n{m}"
    );
    // A new collector on the same port, then part 2.
    let mut c2 = nfcapd(port, &d2);
    sensor.stdin().write_all(&parts[2][first_len..]).unwrap();
    let status = sensor.finish();
    assert!(status.success(), "{status:?}");
    let s = stats_json(&tmp.path().join("stats.json"));
    let total = n[0] + n[1] + n[2];
    assert_eq!(s["sink.ipfix.records"], total);
    assert_eq!(
        s["sink.ipfix.sent"] + s["sink.ipfix.dropped.send_error"],
        total
    );
    assert!(s["sink.ipfix.templates_sent"] >= 2, "{s:?}");
    wait_for("nfcapd to read the rest", Duration::from_secs(20), || {
        (udp_rx_queue(port) == Some(0)).then_some(())
    });
    c2.stop();
    assert_eq!(nfdump_rows(&d1), expect[0], "the first collector's flows");
    assert_eq!(nfdump_rows(&d2), expect[2], "the second collector's flows");
}

// ---------------------------------------------------------------------------------------
// Prometheus

/// Prometheus on 127.0.0.1:port scraping 127.0.0.1:target every second.
fn prometheus(port: u16, target: u16, dir: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sensor\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let s = Server::start(
        "prometheus",
        Command::new(need("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    wait_for("prometheus to be ready", Duration::from_secs(60), || {
        http_get(port, "/-/ready").map(|_| ())
    });
    s
}

/// An instant PromQL query's single value (None until there is exactly one series).
fn promql(port: u16, query: &str) -> Option<u64> {
    let body = http_get(port, &format!("/api/v1/query?query={query}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Prometheus scrapes the sensor while it replays a capture from its standard input; at
/// the end a PromQL query gives the packet counter of the stats JSON.
#[test]
fn prometheus_scrapes_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (mport, pport) = (free_tcp_port(), free_tcp_port());
    let cap = common::pcaps_dir().join("anomaly/synscan.pcap");
    let bytes = std::fs::read(&cap).unwrap();
    let n = common::read_pcap(&bytes).1.len() as u64;
    let stats = tmp.path().join("stats.json");
    let mut sensor = Server::sensor(
        bin()
            .args(["replay", "-", "--ring-mib", "8", "--state-dir"])
            .arg(tmp.path().join("state"))
            .args(["--metrics-listen", &format!("127.0.0.1:{mport}")])
            .arg("--stats-json")
            .arg(&stats),
        &tmp.path().join("sensor.log"),
    );
    wait_for("the sensor's /metrics", Duration::from_secs(30), || {
        http_get(mport, "/metrics")
    });
    let _prom = prometheus(pport, mport, &tmp.path().join("prom"));
    // Half the capture, scraped while the run waits for more...
    let half = 24 + (bytes.len() - 24) / 2;
    sensor.stdin().write_all(&bytes[..half]).unwrap();
    let seen = wait_for("a scrape during the run", Duration::from_secs(60), || {
        promql(pport, "streamml_reader_frames_total").filter(|&v| v > 0)
    });
    assert!(
        seen < n,
        "{seen} of {n} packets before the rest was written"
    );
    // ...then the rest: every packet read, and scraped, before the input ends.
    sensor.stdin().write_all(&bytes[half..]).unwrap();
    sensor.stdin().flush().unwrap();
    wait_for(
        "the sensor to read every packet",
        Duration::from_secs(60),
        || {
            metric(
                &http_get(mport, "/metrics")?,
                "streamml_reader_frames_total",
            )
            .filter(|&v| v == n)
        },
    );
    let scraped = wait_for(
        "prometheus to scrape the last count",
        Duration::from_secs(60),
        || promql(pport, "streamml_reader_frames_total").filter(|&v| v == n),
    );
    // The per-shard series (label `shard`) add up to every decoded packet.
    let per_shard = wait_for(
        "the per-shard flow counters",
        Duration::from_secs(30),
        || {
            let decoded = promql(pport, "streamml_reader_decoded_total")?;
            promql(pport, "sum(streamml_shard_flow_packets_total)")
                .filter(|&v| v == decoded && v > 0)
        },
    );
    let status = sensor.finish();
    assert!(status.success(), "{status:?}");
    let s = stats_json(&stats);
    assert_eq!(s["reader.frames"], scraped);
    assert_eq!(s["flow.packets"], per_shard);
}

// ---------------------------------------------------------------------------------------
// NATS JetStream

/// nats-server with JetStream on 127.0.0.1:port, storing in `store`.
fn nats_server(port: u16, store: &Path, log: &Path) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let s = Server::start(
        "nats-server",
        Command::new(need("nats-server"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    wait_for("nats-server to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    s
}

/// The configuration of the NATS tests: one alert per flow (a fixed threshold of 0).
fn nats_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let p = dir.join("sensor.toml");
    std::fs::write(
        &p,
        format!(
            r#"[evidence]
ring_mib = 8
[nats]
server = "nats://127.0.0.1:{port}"
subject = "streamml.alerts"
create_stream = "ALERTS"
{extra}
[[profile]]
name = "every-flow"
mode = "flow"
[profile.hst]
n_trees = 5
height = 4
window_size = 1
[profile.threshold]
fixed = 0.0
require_out_of_range = false
cooldown_s = 0
max_alerts_per_min = 0
[profile.evidence]
pre_s = 0
post_s = 0
"#
        ),
    )
    .unwrap();
    p
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("base64 {c}"),
        }
    };
    let b: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for ch in b.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in ch.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..ch.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Every message of stream `name`: (Nats-Msg-Id, payload), read back through the
/// JetStream API of the server.
fn stream_messages(port: u16, name: &str) -> Vec<(String, serde_json::Value)> {
    use streamml_sensor::sink::nats::{Client, NatsConfig};
    let cfg = NatsConfig::new(format!("127.0.0.1:{port}").parse().unwrap());
    let mut c = Client::connect(&cfg, Duration::from_secs(5)).unwrap();
    let info = c
        .request(&format!("$JS.API.STREAM.INFO.{name}"), &[], b"")
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let (first, last) = (
        info["state"]["first_seq"].as_u64().unwrap(),
        info["state"]["last_seq"].as_u64().unwrap(),
    );
    let mut out = Vec::new();
    for seq in first..=last {
        let r = c
            .request(
                &format!("$JS.API.STREAM.MSG.GET.{name}"),
                &[],
                format!("{{\"seq\":{seq}}}").as_bytes(),
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let m = &v["message"];
        let hdrs = String::from_utf8(base64(m["hdrs"].as_str().unwrap_or(""))).unwrap();
        let id = hdrs
            .lines()
            .find_map(|l| l.strip_prefix("Nats-Msg-Id: "))
            .unwrap_or_else(|| panic!("message {seq} has no Nats-Msg-Id: {hdrs:?}"))
            .to_string();
        let data = base64(m["data"].as_str().unwrap());
        out.push((id, serde_json::from_slice(&data).unwrap()));
    }
    out
}

/// The alert ids of an alerts.jsonl, sorted.
fn alert_ids(path: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let a: serde_json::Value = serde_json::from_str(l).unwrap();
            a["alert_id"].as_u64().unwrap()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Each message id once, and the alerts they carry, sorted by alert id.
fn once_each(msgs: &[(String, serde_json::Value)]) -> Vec<u64> {
    let ids: std::collections::BTreeSet<&String> = msgs.iter().map(|m| &m.0).collect();
    assert_eq!(ids.len(), msgs.len(), "a message id twice in the stream");
    let mut v: Vec<u64> = msgs
        .iter()
        .map(|m| m.1["alert_id"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

fn nats_metric(text: &str, what: &str) -> u64 {
    metric(
        text,
        &format!("streamml_sink_records_total{{sink=\"nats\",outcome=\"{what}\"}}"),
    )
    .unwrap_or(0)
}

/// The server stops and starts again in the middle of a replay: every alert is in the
/// stream exactly once (one message per message id, one per alert of alerts.jsonl).
#[test]
fn nats_every_alert_once_across_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, mport) = (free_tcp_port(), free_tcp_port());
    let store = tmp.path().join("js");
    let nlog = tmp.path().join("nats.log");
    let mut server = nats_server(port, &store, &nlog);
    let cfg = nats_config(tmp.path(), port, "drain_timeout_s = 60");
    let pkts = common::frames("basic/wikipedia.pcap");
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| pcap_bytes(&pkts, 864_000 * i, false))
        .collect();
    let first_len = pcap_bytes(&pkts[..5], 0, false).len();
    let state = tmp.path().join("state");
    let mut sensor = Server::sensor(
        bin()
            .args(["replay", "-", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .args(["--metrics-listen", &format!("127.0.0.1:{mport}")])
            .arg("--stats-json")
            .arg(tmp.path().join("stats.json")),
        &tmp.path().join("sensor.log"),
    );
    let metrics = || http_get(mport, "/metrics");
    let mut head = pcap_bytes(&[], 0, true);
    head.extend_from_slice(&parts[0]);
    head.extend_from_slice(&parts[1][..first_len]);
    sensor.stdin().write_all(&head).unwrap();
    sensor.stdin().flush().unwrap();
    let acked = wait_for(
        "part 0's alerts acknowledged",
        Duration::from_secs(60),
        || {
            let m = metrics()?;
            let (sp, ack) = (nats_metric(&m, "spooled"), nats_metric(&m, "acked"));
            (sp > 0 && ack == sp).then_some(ack)
        },
    );
    server.stop();
    sensor.stdin().write_all(&parts[1][first_len..]).unwrap();
    sensor.stdin().write_all(&parts[2][..first_len]).unwrap();
    sensor.stdin().flush().unwrap();
    wait_for(
        "part 1's alerts spooled while the server is down",
        Duration::from_secs(60),
        || {
            let m = metrics()?;
            let errs = nats_metric(&m, "connect_errors") + nats_metric(&m, "publish_errors");
            (nats_metric(&m, "spooled") >= 2 * acked && errs > 0).then_some(())
        },
    );
    let _server = nats_server(port, &store, &nlog);
    sensor.stdin().write_all(&parts[2][first_len..]).unwrap();
    let status = sensor.finish();
    assert!(status.success(), "{status:?}");
    let s = stats_json(&tmp.path().join("stats.json"));
    let want = alert_ids(&state.join("alerts.jsonl"));
    assert!(want.len() >= 60, "{} alerts", want.len());
    assert_eq!(s["sink.nats.spooled"], want.len() as u64);
    assert_eq!(s["sink.nats.spool_pending"], 0, "{s:?}");
    assert_eq!(s["sink.nats.dropped.spool_full"], 0);
    let got = once_each(&stream_messages(port, "ALERTS"));
    assert_eq!(got, want);
}

/// The server is down for a whole replay: the spool keeps every alert; the next run
/// (with the server up) sends them, in order, before its own.
#[test]
fn nats_spool_holds_everything_while_the_server_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let state = tmp.path().join("state");
    let run = |cfg: &Path, cap: &Path, stats: &Path| {
        let out = bin()
            .arg("replay")
            .arg(cap)
            .arg("--config")
            .arg(cfg)
            .arg("--state-dir")
            .arg(&state)
            .arg("--stats-json")
            .arg(stats)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stats_json(stats)
    };
    let down = nats_config(tmp.path(), port, "drain_timeout_s = 0.2");
    let s1 = run(
        &down,
        &common::pcaps_dir().join("basic/wikipedia.pcap"),
        &tmp.path().join("s1.json"),
    );
    let want = alert_ids(&state.join("alerts.jsonl"));
    assert!(!want.is_empty());
    assert_eq!(s1["sink.nats.spooled"], want.len() as u64);
    assert_eq!(s1["sink.nats.acked"], 0);
    assert_eq!(s1["sink.nats.spool_pending"], want.len() as u64);
    assert!(s1["sink.nats.connect_errors"] > 0);
    // The server comes; a run with nothing to alert on drains the spool.
    let _server = nats_server(port, &tmp.path().join("js"), &tmp.path().join("nats.log"));
    std::fs::create_dir_all(tmp.path().join("up")).unwrap();
    let up = nats_config(&tmp.path().join("up"), port, "drain_timeout_s = 60");
    let s2 = run(
        &up,
        &common::pcaps_dir().join("formats/empty.pcap"),
        &tmp.path().join("s2.json"),
    );
    assert_eq!(s2["sink.nats.acked"], want.len() as u64, "{s2:?}");
    assert_eq!(s2["sink.nats.spool_pending"], 0);
    let msgs = stream_messages(port, "ALERTS");
    // In spool order, which is alerts.jsonl's order.
    let order: Vec<u64> = msgs
        .iter()
        .map(|m| m.1["alert_id"].as_u64().unwrap())
        .collect();
    let file_order: Vec<u64> = std::fs::read_to_string(state.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(order, file_order);
    assert_eq!(once_each(&msgs), want);
}

/// A small spool while the server is down: the oldest alerts are dropped and counted,
/// the newest kept, and the replay reads every packet.
#[test]
fn nats_small_spool_drops_oldest_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let cfg = nats_config(
        tmp.path(),
        port,
        "drain_timeout_s = 0\nspool_max_bytes = 16384",
    );
    let stats = tmp.path().join("stats.json");
    let out = bin()
        .arg("replay")
        .arg(common::pcaps_dir().join("large/1kxun.pcap"))
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--stats-json")
        .arg(&stats)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = stats_json(&stats);
    let alerts = s["detect.alerts"];
    assert!(alerts > 100, "{alerts} alerts");
    assert_eq!(s["reader.frames"], 1723);
    assert_eq!(s["sink.nats.spooled"], alerts);
    let dropped = s["sink.nats.dropped.spool_full"];
    assert!(dropped > 0, "{s:?}");
    assert_eq!(s["sink.nats.spool_pending"] + dropped, alerts);
    let spool: u64 = std::fs::read_dir(tmp.path().join("state/spool/nats"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(spool <= 16384 + 8192, "{spool} bytes in the spool");
}

/// Bad sink settings are one line and exit 2 at start-up, before any packet; a metrics
/// port in use too. (No name is resolved: every bad value fails before a lookup.)
#[test]
fn bad_sink_settings_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let cfg = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let port0 = cfg("a.toml", "[ipfix]\ncollector = \"127.0.0.1:0\"\n");
    let subject = cfg(
        "b.toml",
        "[nats]\nserver = \"127.0.0.1:4222\"\nsubject = \"a b\"\n",
    );
    let spool = cfg(
        "c.toml",
        "[nats]\nserver = \"127.0.0.1:4222\"\nspool_max_bytes = 1\n",
    );
    let unknown = cfg(
        "d.toml",
        "[metrics]\nlisten = \"127.0.0.1:9464\"\nport = 1\n",
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--ipfix".into(), "nohost".into()], "--ipfix"),
        (vec!["--ipfix".into(), "127.0.0.1:0".into()], "port 0"),
        (vec!["--nats".into(), "nats://:x".into()], "--nats"),
        (
            vec!["--metrics-listen".into(), "127.0.0.1:x".into()],
            "--metrics-listen",
        ),
        (
            vec!["--metrics-listen".into(), format!("127.0.0.1:{busy_port}")],
            "in use",
        ),
        (vec!["--config".into(), port0], "ipfix.collector"),
        (vec!["--config".into(), subject], "nats.subject"),
        (vec!["--config".into(), spool], "nats.spool_max_bytes"),
        (vec!["--config".into(), unknown], "port"),
    ];
    for (args, want) in cases {
        let out = bin()
            .arg("replay")
            .arg(common::pcaps_dir().join("basic/5-pings.pcap"))
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("streamml-sensor: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    drop(busy);
}
