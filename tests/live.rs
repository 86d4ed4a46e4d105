//! Live capture tests: the sensor on one end of a veth pair in a private namespace, the
//! generator on the other. They run as root (CI runs them); with CI=true they fail when
//! they cannot run. See tests/live/harness.rs.

#[path = "live/harness.rs"]
mod harness;

use harness::{
    assert_same_flows, num, recover_count, replay_flows, timeless_flows, tshark_packets,
    wait_frames, VethPair,
};

/// At a modest rate every frame sent arrives: received == sent, exactly, and the XDP
/// counters agree.
#[test]
fn received_equals_sent_at_modest_rate() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    let g = pair.send(&[
        "--queues", "0,1", "--count", "15000", "--pps", "25000", "--flows", "50",
    ]);
    assert_eq!(
        g.sent, g.requested,
        "generator could not send everything: {g:?}"
    );
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats JSON written");
    assert_eq!(pair.peer_stat("tx_dropped"), 0, "the peer dropped frames");
    assert_eq!(num(&st, &["packets_received"]), g.sent, "{st:#}");
    assert_eq!(num(&st, &["bytes_received"]), g.sent * 64);
    harness::assert_conserved(&st);
    assert_eq!(num(&st, &["xdp", "seen"]), g.sent);
    assert_eq!(num(&st, &["xdp", "redirected"]), g.sent);
    for k in [
        "rx_dropped",
        "rx_ring_full",
        "rx_invalid_descs",
        "xdp.redirect_failed",
    ] {
        assert_eq!(num(&st, &["drops", k]), 0, "{k}");
    }
    assert_eq!(st["mode"]["attach"], "native");
    assert_eq!(st["mode"]["bind"], "copy");
}

/// With two queues both receive, each exactly what was sent on its queue (frames are
/// steered: the peer's TX queue i feeds our RX queue i).
#[test]
fn two_queues_both_receive() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&["--queues", "2"]);
    let g = pair.send(&["--queues", "0,1", "--count", "7000,3000", "--pps", "20000"]);
    assert_eq!(g.sent, 10_000);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    let qs = st["queues"].as_array().expect("queues");
    assert_eq!(qs.len(), 2);
    for (q, sent) in &g.per_queue {
        let qr = &qs[*q as usize];
        assert_eq!(num(qr, &["queue"]), *q as u64);
        assert_eq!(num(qr, &["packets_received"]), *sent, "queue {q}: {qr:#}");
        assert_eq!(num(qr, &["xdp", "redirected"]), *sent, "queue {q}");
    }
    assert_eq!(num(&st, &["packets_received"]), 10_000);
}

/// Sampling 50% keeps 50% ± 5% of 40k frames, and the XDP counters reconcile.
#[test]
fn sampling_half_keeps_half_and_counters_reconcile() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&["--sample", "50"]);
    let g = pair.send(&[
        "--queues", "0,1", "--count", "20000", "--pps", "30000", "--flows", "100",
    ]);
    assert_eq!(g.sent, 40_000);
    let st = sensor.stop().stats.expect("stats");
    let x = |k: &str| num(&st, &["xdp", k]);
    assert_eq!(x("seen"), g.sent);
    assert_eq!(
        x("seen"),
        x("sampled_out") + x("filtered") + x("redirected") + x("redirect_failed"),
        "{st:#}"
    );
    for q in st["queues"].as_array().unwrap() {
        let y = |k: &str| num(q, &["xdp", k]);
        assert_eq!(
            y("seen"),
            y("sampled_out") + y("filtered") + y("redirected") + y("redirect_failed")
        );
    }
    let got = num(&st, &["packets_received"]);
    assert_eq!(got, x("redirected"), "nothing lost after the redirect");
    let share = got as f64 / g.sent as f64;
    assert!(
        (0.45..=0.55).contains(&share),
        "kept {share:.4} of {}",
        g.sent
    );
    assert_eq!(num(&st, &["drops", "xdp.sampled_out"]), x("sampled_out"));
    assert_eq!(st["mode"]["sample_percent"], 50.0);
}

/// The prefilter keeps only the listed IP protocol; the rest is counted as filtered.
#[test]
fn prefilter_keeps_only_listed_protocol() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&["--keep-proto", "6"]);
    let udp = pair.send(&["--queues", "0", "--count", "3000", "--pps", "20000"]);
    let tcp = pair.send(&[
        "--queues", "1", "--count", "2000", "--pps", "20000", "--proto", "tcp-syn", "--flows",
        "500",
    ]);
    let st = sensor.stop().stats.expect("stats");
    assert_eq!(num(&st, &["xdp", "seen"]), udp.sent + tcp.sent);
    assert_eq!(num(&st, &["xdp", "filtered"]), udp.sent);
    assert_eq!(num(&st, &["packets_received"]), tcp.sent);
    assert_eq!(num(&st, &["drops", "xdp.filtered"]), udp.sent);
}

/// A port drop-list filters frames to that port, whatever the protocol.
#[test]
fn prefilter_drops_listed_port() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&["--drop-port", "80,443"]);
    let web = pair.send(&[
        "--queues", "0", "--count", "1500", "--pps", "20000", "--proto", "tcp-syn", "--dport",
        "443",
    ]);
    let other = pair.send(&[
        "--queues", "1", "--count", "2500", "--pps", "20000", "--dport", "53",
    ]);
    let st = sensor.stop().stats.expect("stats");
    assert_eq!(num(&st, &["xdp", "filtered"]), web.sent);
    assert_eq!(num(&st, &["packets_received"]), other.sent);
}

/// Consume mode drops what the sensor does not take; pass mode hands it to the stack
/// (seen here as UDP datagrams to a closed port in the sensor's namespace).
#[test]
fn pass_mode_hands_untaken_frames_to_the_stack() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);

    let sensor = pair.start_sensor(&["--keep-proto", "6", "--xdp-action", "consume"]);
    let before = pair.sensor_snmp("Udp", "NoPorts");
    let g = pair.send(&["--queues", "0", "--count", "500", "--pps", "10000"]);
    let st = sensor.stop().stats.expect("stats");
    assert_eq!(num(&st, &["xdp", "filtered"]), g.sent);
    assert_eq!(
        pair.sensor_snmp("Udp", "NoPorts"),
        before,
        "consume mode let frames through"
    );

    let sensor = pair.start_sensor(&["--keep-proto", "6", "--xdp-action", "pass"]);
    let before = pair.sensor_snmp("Udp", "NoPorts");
    let g = pair.send(&["--queues", "0", "--count", "500", "--pps", "10000"]);
    let st = sensor.stop().stats.expect("stats");
    assert_eq!(num(&st, &["xdp", "filtered"]), g.sent);
    assert_eq!(
        pair.sensor_snmp("Udp", "NoPorts") - before,
        g.sent,
        "pass mode"
    );
    assert_eq!(st["mode"]["xdp_action"], "pass");
}

/// SIGTERM: exit 0, the final counters written, no XDP program left on the interface.
#[test]
fn sigterm_detaches_and_exits_zero() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    assert!(
        pair.has_xdp(),
        "attached while running:\n{}",
        pair.ip_link()
    );
    assert!(
        pair.ip_link().contains("streamml_xdp")
            || harness::run(&[
                "ip",
                "-n",
                &pair.ns_sensor,
                "-d",
                "link",
                "show",
                "dev",
                harness::SENSOR_IF
            ])
            .contains("streamml_xdp")
    );
    let g = pair.send(&["--queues", "0,1", "--count", "1000", "--pps", "20000"]);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    assert!(
        !pair.has_xdp(),
        "XDP program left after SIGTERM:\n{}",
        pair.ip_link()
    );
    assert_eq!(
        num(&stopped.stats.expect("stats"), &["packets_received"]),
        g.sent
    );
    assert!(stopped.stderr.contains("summary:"), "{}", stopped.stderr);
}

/// After SIGKILL the program stays attached; the next start recognises it as ours,
/// replaces it and captures exactly; its SIGTERM leaves nothing behind.
#[test]
fn restart_after_kill9_replaces_leftover() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let first = pair.start_sensor(&[]);
    let stopped = first.kill9();
    assert!(stopped.status.is_some());
    assert!(
        pair.has_xdp(),
        "a killed sensor leaves its program:\n{}",
        pair.ip_link()
    );

    let second = pair.start_sensor(&[]);
    assert!(
        second
            .stderr()
            .contains("replaced a leftover XDP program streamml_xdp"),
        "{}",
        second.stderr()
    );
    let g = pair.send(&["--queues", "0,1", "--count", "2000", "--pps", "20000"]);
    let stopped = second.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    assert_eq!(num(&st, &["packets_received"]), g.sent);
    assert_eq!(st["replaced_program"]["ours"], true);
    assert!(!pair.has_xdp(), "{}", pair.ip_link());
}

/// Stop and start again at once: the new binds succeed (EBUSY is retried).
#[test]
fn immediate_restart_binds() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    for _ in 0..3 {
        let s = pair.start_sensor(&[]);
        let st = s.stop();
        assert_eq!(st.status.and_then(|s| s.code()), Some(0), "{}", st.stderr);
    }
    let s = pair.start_sensor(&[]);
    let g = pair.send(&["--queues", "0,1", "--count", "500", "--pps", "20000"]);
    assert_eq!(num(&s.stop().stats.unwrap(), &["packets_received"]), g.sent);
}

/// SIGHUP writes the counters so far and capture goes on.
#[test]
fn sighup_writes_stats_and_keeps_capturing() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    let a = pair.send(&["--queues", "0", "--count", "1200", "--pps", "20000"]);
    sensor.sighup();
    let t = std::time::Instant::now();
    let snap = loop {
        if let Some(v) = sensor.read_stats() {
            break v;
        }
        assert!(t.elapsed().as_secs() < 10, "no stats after SIGHUP");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(num(&snap, &["packets_received"]), a.sent);
    let b = pair.send(&["--queues", "1", "--count", "800", "--pps", "20000"]);
    let stopped = sensor.stop();
    assert_eq!(stopped.status.and_then(|s| s.code()), Some(0));
    assert_eq!(
        num(&stopped.stats.unwrap(), &["packets_received"]),
        a.sent + b.sent
    );
}

/// Another XDP program is refused (one line, exit 2, left in place) unless --force.
#[test]
fn foreign_program_refused_unless_forced() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "set",
        "dev",
        harness::SENSOR_IF,
        "xdpgeneric",
        "obj",
        harness::XDP_DROP_OBJ,
        "sec",
        "xdp",
    ]);
    let (code, err) = pair.sensor_fails(&[], &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("another XDP program is attached (xdp_drop_bench"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(
        pair.ip_link().contains("xdp_drop_bench"),
        "{}",
        pair.ip_link()
    );

    let sensor = pair.start_sensor(&["--force"]);
    assert!(sensor
        .stderr()
        .contains("replaced another XDP program xdp_drop_bench"));
    let g = pair.send(&["--queues", "0,1", "--count", "500", "--pps", "20000"]);
    let stopped = sensor.stop();
    assert_eq!(num(&stopped.stats.unwrap(), &["packets_received"]), g.sent);
    assert!(!pair.has_xdp(), "{}", pair.ip_link());
}

/// A second sensor on the same interface is refused; the first keeps capturing.
#[test]
fn second_sensor_on_same_interface_refused() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let first = pair.start_sensor(&[]);
    let (code, err) = pair.sensor_fails(&[], &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("another streamml-sensor (pid {})", first.pid())),
        "{err}"
    );
    let g = pair.send(&["--queues", "0,1", "--count", "500", "--pps", "20000"]);
    assert_eq!(
        num(&first.stop().stats.unwrap(), &["packets_received"]),
        g.sent
    );
}

/// Start-up errors are one line each, exit code 2.
#[test]
fn startup_errors_are_one_line() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let cases: Vec<(Vec<&str>, Vec<&str>, &str)> = vec![
        (
            vec![],
            vec!["--iface", "nosuch0"],
            "nosuch0: no such interface",
        ),
        (
            vec![],
            vec!["--iface", harness::SENSOR_IF, "--sample", "101"],
            "--sample 101: must be a percentage in 0..=100",
        ),
        (
            vec![
                "setpriv",
                "--bounding-set",
                "-net_admin,-bpf,-sys_admin",
                "--inh-caps",
                "-net_admin,-bpf,-sys_admin",
            ],
            vec!["--iface", harness::SENSOR_IF],
            "sens0: missing privileges: need CAP_NET_ADMIN, CAP_BPF",
        ),
        (
            vec![
                "setpriv",
                "--bounding-set",
                "-net_raw",
                "--inh-caps",
                "-net_raw",
            ],
            vec!["--iface", harness::SENSOR_IF],
            "sens0: missing privileges: need CAP_NET_RAW",
        ),
    ];
    for (prefix, args, want) in cases {
        let (code, err) = pair.sensor_fails(&prefix, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("streamml-sensor: {want}")),
            "{args:?}: {err}"
        );
    }
    // A bad configuration: one line naming file and key, before anything is attached.
    let profile = "[[profile]]\nname = \"p\"\nmode = \"window\"\n";
    for (body, want) in [
        (
            format!("{profile}window_s = 0\n[profile.threshold]\nfixed = 0.9\n"),
            "profile \"p\": window_s = 0: must be > 0",
        ),
        (
            format!("{profile}filter = \"tcp and and\"\n[profile.threshold]\nfixed = 0.9\n"),
            "profile \"p\": filter = \"tcp and and\"",
        ),
        (
            format!("{profile}[profile.threshold]\nfixed = 1.5\n"),
            "profile \"p\": threshold.fixed = 1.5: must be within [0, 1]",
        ),
    ] {
        let cfg = pair.path("bad.toml");
        std::fs::write(&cfg, body).unwrap();
        let cfg_s = cfg.to_string_lossy().into_owned();
        let (code, err) =
            pair.sensor_fails(&[], &["--iface", harness::SENSOR_IF, "--config", &cfg_s]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("streamml-sensor: {cfg_s}: {want}")),
            "{err}"
        );
        assert!(!pair.has_xdp());
    }
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "set",
        harness::SENSOR_IF,
        "down",
    ]);
    let (code, err) = pair.sensor_fails(&[], &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "streamml-sensor: sens0: interface is down (ip link set sens0 up)"
    );
    assert!(
        !pair.has_xdp(),
        "a failed start left a program:\n{}",
        pair.ip_link()
    );
}

/// Live flows equal the flows of a replay of the same frames, with 2 queues and with 1.
#[test]
fn live_flows_equal_replay_flows_one_and_two_queues() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let (pcap, live2) = (pair.path("sent.pcap"), pair.path("live2.csv"));
    let sensor = pair.start_sensor(&["--flows-out", &live2.to_string_lossy()]);
    let g = pair.send(&[
        "--queues",
        "0,1",
        "--count",
        "4000,3000",
        "--pps",
        "20000",
        "--flows",
        "37",
        "--proto",
        "tcp-syn",
        "--pcap-out",
        &pcap.to_string_lossy(),
    ]);
    assert_eq!(g.sent, 7000);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.unwrap();
    assert_eq!(num(&st, &["packets_received"]), 7000);
    harness::assert_conserved(&st);
    assert_eq!(num(&st, &["pipeline", "shard.ring_full"]), 0);
    let live2 = std::fs::read_to_string(&live2).expect("live flows");
    // Numbered in sorted order like `flows`: ids 0, 1, 2, ...
    let ids: Vec<u64> = live2
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().expect("id"))
        .collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    let live2 = timeless_flows(&live2);
    let replay = timeless_flows(&replay_flows(&pcap, &pair.path("replay.csv")));
    assert_eq!(replay.len(), 74, "37 flows per queue");
    assert_same_flows("2-queue live vs replay", &live2, &replay);
    assert_eq!(num(&st, &["pipeline", "flows.written"]), 74);

    // The same frames through a one-queue pair and a one-queue sensor.
    let pair1 = VethPair::new(1);
    let live1 = pair1.path("live1.csv");
    let sensor = pair1.start_sensor(&["--flows-out", &live1.to_string_lossy()]);
    for (src, count) in [("198.18.0.1", "4000"), ("198.18.0.2", "3000")] {
        let mut args = vec![
            "--queues", "0", "--count", count, "--pps", "20000", "--flows", "37", "--proto",
            "tcp-syn",
        ];
        args.extend_from_slice(&["--src", src]);
        pair1.send(&args);
    }
    let st = sensor.stop().stats.unwrap();
    assert_eq!(num(&st, &["packets_received"]), 7000);
    assert_eq!(st["queues"].as_array().unwrap().len(), 1);
    let live1 = timeless_flows(&std::fs::read_to_string(&live1).expect("live flows"));
    assert_same_flows("1-queue live vs replay", &live1, &replay);
}

/// A SYN flood from the peer (one SYN per source port) shows as one single-SYN flow per
/// port in the live flow output (alerts: `syn_flood_raises_alert_with_evidence`).
#[test]
fn syn_flood_shows_as_flows() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let out = pair.path("flood.csv");
    let sensor = pair.start_sensor(&[
        "--flows-out",
        &out.to_string_lossy(),
        "--flows-format",
        "csv",
    ]);
    let g = pair.send(&[
        "--queues", "0,1", "--count", "5000", "--pps", "25000", "--flows", "5000", "--proto",
        "tcp-syn", "--dport", "80",
    ]);
    assert_eq!(g.sent, 10_000);
    let st = sensor.stop().stats.expect("stats");
    assert_eq!(num(&st, &["packets_received"]), 10_000);
    let csv = std::fs::read_to_string(&out).expect("flows");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|c| *c == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let (syn, pkts, dport) = (
        col("bidirectional_syn_packets"),
        col("bidirectional_packets"),
        col("dst_port"),
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 10_000, "one flow per (source address, port)");
    assert!(rows
        .iter()
        .all(|r| r[syn] == "1" && r[pkts] == "1" && r[dport] == "80"));
    assert_eq!(num(&st, &["pipeline", "flows.written"]), 10_000);
}

/// Generic (SKB) mode works too, and says so in the stats.
#[test]
fn skb_mode_captures() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&["--xdp-mode", "skb"]);
    assert!(pair.ip_link().contains("xdpgeneric"), "{}", pair.ip_link());
    let g = pair.send(&["--queues", "0,1", "--count", "2000", "--pps", "10000"]);
    let st = sensor.stop().stats.expect("stats");
    assert_eq!(st["mode"]["attach"], "skb");
    assert_eq!(num(&st, &["xdp", "seen"]), g.sent);
    assert_eq!(num(&st, &["packets_received"]), g.sent, "{st:#}");
    // generic XDP carries the program's timestamps into the UMEM too (either carrier)
    assert_eq!(st["mode"]["timestamps"], "xdp", "{st:#}");
    for q in 0..2 {
        let qs = q.to_string();
        assert_eq!(num(&st, &["queues", &qs, "no_xdp_timestamp"]), 0, "{st:#}");
    }
    assert!(!pair.has_xdp());
}

/// A device without native XDP (ifb): `native` is refused in one line, `auto` falls back
/// to SKB mode and says so.
#[test]
fn native_refused_without_driver_support_auto_falls_back() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "add",
        "dum0",
        "type",
        "ifb",
    ]);
    harness::run(&["ip", "-n", &pair.ns_sensor, "link", "set", "dum0", "up"]);
    let (code, err) = pair.sensor_fails(&[], &["--iface", "dum0", "--xdp-mode", "native"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim(),
        "streamml-sensor: dum0: the driver has no native XDP support; use --xdp-mode skb (or auto)"
    );
    let (code, err) = pair.sensor_fails(
        &[],
        &["--iface", "dum0", "--zero-copy", "on", "--xdp-mode", "skb"],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("zero-copy is not supported here"), "{err}");

    let mut cmd = vec![
        "netns",
        "exec",
        &pair.ns_sensor,
        harness::SENSOR,
        "--iface",
        "dum0",
    ];
    let state = pair.state_dir().to_string_lossy().into_owned();
    cmd.extend_from_slice(&["--no-pin", "--duration", "0.3", "--report-interval", "0"]);
    cmd.extend_from_slice(&["--state-dir", &state, "--ring-mib", "4"]);
    let out = std::process::Command::new("ip")
        .args(&cmd)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("native: using skb (the driver has no native XDP support (EOPNOTSUPP))"),
        "{err}"
    );
    assert!(err.contains("XDP skb mode"), "{err}");
    let link = harness::run(&["ip", "-n", &pair.ns_sensor, "link", "show", "dum0"]);
    assert!(!link.contains("xdp"), "{link}");
}

/// The interface going away ends the run with one line and exit code 2, not a hang.
#[test]
fn interface_disappearing_ends_the_run() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "del",
        harness::SENSOR_IF,
    ]);
    let t = std::time::Instant::now();
    let stopped = sensor.wait_exit();
    assert!(t.elapsed().as_secs() < 10);
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        stopped.stderr
    );
    let last = stopped
        .stderr
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        last, "streamml-sensor: sens0: the interface disappeared",
        "{}",
        stopped.stderr
    );
}

/// Unwritable output paths fail at start-up, before anything is attached.
#[test]
fn unwritable_outputs_fail_at_startup() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    for flag in ["--flows-out", "--stats-json"] {
        for (path, why) in [
            (
                "/nonexistent-dir/x",
                "directory /nonexistent-dir does not exist",
            ),
            (
                "/dev/null",
                "is a character device; outputs must be regular files",
            ),
        ] {
            let (code, err) = pair.sensor_fails(&[], &["--iface", harness::SENSOR_IF, flag, path]);
            assert_eq!(code, 2, "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert_eq!(
                err.trim(),
                format!("streamml-sensor: {flag}: {path}: {why}")
            );
            assert!(!pair.has_xdp());
        }
    }
    assert!(std::fs::metadata("/dev/null")
        .map(|m| std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()))
        .unwrap());
}

/// The detection configuration of the anomaly tests: one window profile with short
/// windows and a small HST reference window (warm after ~2 s of traffic), alerting on a
/// fixed score with a feature beyond its learned range and no cooldown (a noisy benign
/// window must not mask the flood); one flow profile so that flows are scored too; two
/// shards, so that a window's evidence is the packets of its shard from both readers'
/// rings.
const ANOMALY_CONFIG: &str = r#"
[sensor]
shards = 2

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

[[profile]]
name = "flows"
filter = "tcp or udp"
mode = "flow"
[profile.hst]
window_size = 64
seed = 8
[profile.threshold]
fixed = 0.95
require_out_of_range = true
cooldown_s = 60
[profile.evidence]
pre_s = 0
post_s = 0.2
scope = "flow"
"#;

fn alert_lines(state: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert line {l}: {e}")))
        .collect()
}

/// An anomaly on live traffic: benign UDP from the peer on both queues, then a SYN flood
/// (from both queues, 5000 source ports each). The flood's windows alert (window mode,
/// profile "flood"); the evidence file is written while the sensor still runs (after
/// the post-trigger span, although traffic has stopped), reads in tshark, holds the
/// alert's packet count, flood SYNs from both queues' readers merged in time order, and
/// packets from before the alert.
#[test]
fn syn_flood_raises_alert_with_evidence() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let cfg = pair.path("sensor.toml");
    std::fs::write(&cfg, ANOMALY_CONFIG).unwrap();
    // A 32 MiB evidence ring per queue (the harness's 4 MiB would bound the reader->shard
    // rings to ~2k entries, 50 ms of this flood: a scorer descheduled that long on a
    // 2-core VM shared with the sender drops, counted, a few frames; seen in CI runs).
    let sensor = pair.start_sensor(&[
        "--config",
        &cfg.to_string_lossy(),
        "--queues",
        "2",
        "--ring-mib",
        "32",
    ]);
    // Benign background: 16 UDP flows, 2 x 1000 packets/s for 4 s (~40 windows of 0.1 s
    // per shard: past the scaler's and the trees' warm-up of 16 windows).
    let bg = pair.send(&[
        "--queues", "0,1", "--count", "4000", "--pps", "1000", "--flows", "8",
    ]);
    assert_eq!(bg.sent, 8000);
    let wall_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    let flood_start = wall_ns();
    let flood = pair.send(&[
        "--queues", "0,1", "--count", "5000", "--pps", "20000", "--flows", "5000", "--proto",
        "tcp-syn", "--dport", "80",
    ]);
    assert_eq!(flood.sent, 10_000);
    // The evidence is written once the post-trigger span (0.3 s) has passed in the
    // shards' clocks, which idle readers keep moving: wait for it while capture runs.
    let state = pair.state_dir();
    let t = std::time::Instant::now();
    let alert = loop {
        // A window alert at the flood's time (a noisy benign window may alert too).
        let found = alert_lines(&state).into_iter().find(|a| {
            a["anomaly"]["profile"] == "flood"
                && a["anomaly"]["ts_ns"].as_u64().unwrap_or(0) > flood_start
                && a["evidence"]["path"].as_str().is_some()
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            t.elapsed().as_secs() < 20,
            "no flood alert with evidence after 20 s; alerts: {:?}\n{}",
            alert_lines(&state),
            sensor.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    assert_eq!(num(&st, &["packets_received"]), bg.sent + flood.sent);
    harness::assert_conserved(&st);

    assert_eq!(alert["event_type"], "anomaly", "{alert:#}");
    assert_eq!(alert["anomaly"]["mode"], "window", "{alert:#}");
    let rel = alert["evidence"]["path"].as_str().unwrap();
    let pkts = tshark_packets(&state.join(rel));
    assert_eq!(
        pkts.len() as u64,
        alert["evidence"]["packets"].as_u64().unwrap(),
        "{alert:#}"
    );
    let syn: Vec<_> = pkts.iter().filter(|p| p.2 == "0x0002").collect();
    assert!(syn.len() >= 100, "{} SYNs in {rel}: {alert:#}", syn.len());
    for src in [harness::PEER_ADDR, "198.18.0.2"] {
        assert!(
            syn.iter().any(|p| p.1 == src),
            "no flood SYN from {src} (that queue's ring) in {rel}"
        );
    }
    assert!(
        pkts.windows(2).all(|w| w[0].0 <= w[1].0),
        "{rel}: not in time order"
    );
    // The alert's time is its window's end; the window is 0.1 s long.
    let window_start = (num(&alert, &["anomaly", "ts_ns"]) - 100_000_000) as f64 / 1e9;
    assert!(
        pkts.iter().any(|p| p.0 < window_start),
        "{rel}: no pre-trigger packet"
    );
    assert!(!alert["evidence"]["dropped"].as_bool().unwrap_or(false));

    let d = |k: &str| num(&st, &["detection", k]);
    let e = |k: &str| num(&st, &["evidence", k]);
    assert!(d("detect.alerts") >= 1, "{st:#}");
    assert!(d("detect.windows_scored") >= 32, "{st:#}");
    assert!(d("detect.flows_scored") >= 10_000, "{st:#}");
    assert!(e("evidence.files_written") >= 1, "{st:#}");
    assert_eq!(num(&st, &["drops", "evidence.dropped_queue_full"]), 0);
    assert_eq!(num(&st, &["drops", "shard.ring_full"]), 0);
    assert_eq!(
        d("alerts.written"),
        alert_lines(&state).len() as u64,
        "{st:#}"
    );
    assert!(
        stopped.stderr.contains("detect windows"),
        "{}",
        stopped.stderr
    );
}

/// The evidence rings survive kill -9: `evidence recover` then returns every frame the
/// sensor had read; a new start continues the rings (saying how many packets of the
/// earlier run it kept) and a later recovery holds both runs' frames.
#[test]
fn evidence_rings_survive_kill9_and_recover() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    let a = pair.send(&[
        "--queues", "0,1", "--count", "1500", "--pps", "20000", "--flows", "20",
    ]);
    wait_frames(&sensor, a.sent);
    let stopped = sensor.kill9();
    assert!(stopped.status.is_some());
    assert_eq!(recover_count(&pair, "first.pcap.zst"), a.sent);

    let sensor = pair.start_sensor(&[]);
    for q in 0..2 {
        let want = format!("shard-{q}.ring: kept 1500 packets of an earlier run");
        assert!(sensor.stderr().contains(&want), "{}", sensor.stderr());
    }
    let b = pair.send(&["--queues", "0,1", "--count", "500", "--pps", "20000"]);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats");
    assert_eq!(st["setup"]["rings"][0]["opened"], "resumed", "{st:#}");
    assert_eq!(num(&st, &["setup", "rings", "1", "earlier_records"]), 1500);
    assert_eq!(recover_count(&pair, "both.pcap.zst"), a.sent + b.sent);
}

/// A replay pointed at a running live sensor's state directory is refused in one line
/// naming the sensor's PID (it would overwrite the sensor's evidence rings); the sensor
/// keeps capturing and its rings keep every frame.
#[test]
fn replay_into_live_state_dir_is_refused() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    let a = pair.send(&["--queues", "0,1", "--count", "600", "--pps", "20000"]);
    wait_frames(&sensor, a.sent);
    let cap = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pcaps/basic/http-get.pcap");
    let state = pair.state_dir();
    let err = harness::try_run(&[
        harness::SENSOR,
        "replay",
        &cap.to_string_lossy(),
        "--state-dir",
        &state.to_string_lossy(),
    ])
    .expect_err("replay into a live sensor's state directory must fail");
    let pid = format!("(pid {})", sensor.pid());
    assert!(
        err.contains("in use by another streamml-sensor") && err.contains(&pid),
        "{err}"
    );
    let b = pair.send(&["--queues", "0,1", "--count", "400", "--pps", "20000"]);
    wait_frames(&sensor, a.sent + b.sent);
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    assert_eq!(recover_count(&pair, "all.pcap.zst"), a.sent + b.sent);
}

/// A stats file that cannot be written mid-capture is a side failure: logged and counted
/// (`stats.write_errors`), capture goes on, and once the path is writable again the final
/// stats are there with every frame.
#[test]
fn unwritable_stats_do_not_stop_capture() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let sensor = pair.start_sensor(&[]);
    // A directory where the stats file goes: an output must be a regular file, so the
    // write is refused (even for root).
    let tmp = sensor.stats.clone();
    let _ = std::fs::remove_file(&tmp);
    std::fs::create_dir(&tmp).unwrap();
    let a = pair.send(&["--queues", "0,1", "--count", "500", "--pps", "20000"]);
    sensor.sighup();
    let t = std::time::Instant::now();
    while !sensor.stderr().contains("--stats-json") && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        sensor.stderr().contains("(capture goes on)"),
        "{}",
        sensor.stderr()
    );
    let b = pair.send(&["--queues", "0,1", "--count", "700", "--pps", "20000"]);
    std::fs::remove_dir(&tmp).unwrap();
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("final stats");
    assert_eq!(num(&st, &["packets_received"]), a.sent + b.sent);
    assert_eq!(num(&st, &["pipeline", "stats.write_errors"]), 1, "{st:#}");
}

/// A Prometheus (Debian's package) in the sensor's namespace scrapes a live run's
/// `/metrics`; PromQL (promtool, also Prometheus's) gives the packet counters of the
/// stats JSON once the generator is done.
#[test]
fn prometheus_scrapes_a_live_run() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let ns = pair.ns_sensor.clone();
    harness::run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    // The namespace is the test's own: fixed ports are free there.
    let sensor = pair.start_sensor(&["--metrics-listen", "127.0.0.1:19464"]);
    let dir = pair.path("prom");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sensor\n    static_configs:\n      - targets: ['127.0.0.1:19464']\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    // `ip netns exec` execs Prometheus: the child's PID is Prometheus's, killed on drop.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Killed(
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:19090")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/deps.sh installs it)"),
    );
    let query = |q: &str| -> Option<u64> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "promtool", "query", "instant"])
            .args(["http://127.0.0.1:19090", q])
            .output()
            .ok()?;
        // `name{labels} => VALUE @[time]`
        let s = String::from_utf8_lossy(&out.stdout);
        let mut vals = s
            .lines()
            .filter_map(|l| l.split(" => ").nth(1)?.split(' ').next()?.parse().ok());
        let v = vals.next()?;
        vals.next().is_none().then_some(v)
    };
    let g = pair.send(&["--count", "5000", "--pps", "20000", "--flows", "20"]);
    let t0 = std::time::Instant::now();
    let scraped = loop {
        if let Some(v) = query("streamml_reader_frames_total").filter(|&v| v == g.sent) {
            break v;
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "Prometheus never showed {} frames: {:?}",
            g.sent,
            query("streamml_reader_frames_total")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let received = query("streamml_capture_packets_received_total");
    let per_queue = query("sum(streamml_queue_packets_received_total)");
    let mode = query("count(streamml_capture_mode_info{bind=\"copy\"})");
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats JSON written");
    assert_eq!(num(&st, &["pipeline", "reader.frames"]), scraped, "{st:#}");
    assert_eq!(received, Some(num(&st, &["packets_received"])));
    assert_eq!(per_queue, received);
    assert_eq!(mode, Some(1));
}
