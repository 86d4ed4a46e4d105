//! Optional features and their fallbacks, on a real veth pair in private namespaces.
//!
//! No optional feature may stop capture. For each one the sensor is made to meet a
//! refusal, really where this kernel or veth refuses it (XDP metadata on some kernels,
//! zero-copy on veth) and forced with `STREAMML_REFUSE` for the others, and capture must
//! still be complete: received == sent, flows equal to a replay of the same frames, and
//! the fallback named in the stats JSON's `mode`.

#[path = "live/harness.rs"]
mod harness;

use harness::{assert_same_flows, num, recover, replay_flows, timeless_flows, VethPair};

/// What one capture run under refusals gave.
struct Run {
    stats: serde_json::Value,
    stderr: String,
}

impl Run {
    fn mode(&self) -> &serde_json::Value {
        &self.stats["mode"]
    }

    /// The fallback entry of `feature` in `mode.fallbacks`, if any.
    fn fallback(&self, feature: &str) -> Option<&serde_json::Value> {
        self.mode()["fallbacks"]
            .as_array()
            .expect("mode.fallbacks is an array")
            .iter()
            .find(|f| f["feature"] == feature)
    }

    /// The fallback of `feature` must be there, forced by STREAMML_REFUSE, using `using`.
    fn assert_forced(&self, feature: &str, using: &str) {
        let f = self
            .fallback(feature)
            .unwrap_or_else(|| panic!("no {feature} fallback in {:#}", self.mode()));
        assert_eq!(f["using"], using, "{f}");
        // the same path as a real refusal: the forced one takes the kernel's answer's
        // place at the end of the reason
        assert!(
            f["reason"]
                .as_str()
                .unwrap()
                .ends_with(&format!("refused by STREAMML_REFUSE={feature}")),
            "{f}"
        );
        // and the start-up line says so
        assert!(
            self.stderr.contains(&format!("{feature}: using {using}")),
            "{}",
            self.stderr
        );
    }
}

/// Starts the sensor on a 2-queue pair with `STREAMML_REFUSE=refuse` and `args`, sends
/// varied traffic on both queues (TCP SYNs over many flows on one, UDP on the other) and
/// checks that capture was complete: received == sent, nothing dropped anywhere, and the
/// live flows equal the flows of a replay of the frames that were sent.
fn capture_complete(refuse: &str, args: &[&str]) -> Run {
    let pair = VethPair::new(2);
    let flows_out = pair.path("live.csv");
    let mut a: Vec<&str> = vec!["--flows-out"];
    let flows_s = flows_out.to_string_lossy().into_owned();
    a.push(&flows_s);
    a.extend_from_slice(args);
    let sensor = pair.start_sensor_env(&[("STREAMML_REFUSE", refuse)], &a);
    let (p0, p1) = (pair.path("sent0.pcap"), pair.path("sent1.pcap"));
    let g0 = pair.send(&[
        "--queues",
        "0",
        "--count",
        "3000",
        "--pps",
        "20000",
        "--flows",
        "41",
        "--proto",
        "tcp-syn",
        "--pcap-out",
        &p0.to_string_lossy(),
    ]);
    let g1 = pair.send(&[
        "--queues",
        "1",
        "--count",
        "2000",
        "--pps",
        "20000",
        "--flows",
        "7",
        "--size",
        "700",
        "--src",
        "198.18.0.9",
        "--pcap-out",
        &p1.to_string_lossy(),
    ]);
    let sent = g0.sent + g1.sent;
    assert_eq!(
        sent, 5000,
        "the generator sent less than asked: {g0:?} {g1:?}"
    );
    let stopped = sensor.stop();
    assert_eq!(
        stopped.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        stopped.stderr
    );
    let st = stopped.stats.expect("stats JSON");
    assert_eq!(num(&st, &["packets_received"]), sent, "{st:#}");
    harness::assert_conserved(&st);
    assert_eq!(num(&st, &["decoded"]), sent, "{st:#}");
    for (k, v) in st["drops"].as_object().expect("drops") {
        assert_eq!(v.as_u64(), Some(0), "drop counter {k}: {st:#}");
    }
    let live = timeless_flows(&std::fs::read_to_string(&flows_out).expect("live flows"));
    let mut want = timeless_flows(&replay_flows(&p0, &pair.path("r0.csv")));
    want.extend(timeless_flows(&replay_flows(&p1, &pair.path("r1.csv"))));
    want.sort();
    assert_eq!(want.len(), 48, "41 TCP + 7 UDP flows");
    assert_same_flows(&format!("STREAMML_REFUSE={refuse}"), &live, &want);
    Run {
        stats: st,
        stderr: stopped.stderr,
    }
}

/// XDP metadata refused (really, on kernels whose verifier refuses
/// `bpf_xdp_adjust_meta` in XDP programs; forced here so every kernel runs this path):
/// the program pushes the timestamp in front of the frame instead, and the reader takes
/// it off (the flows and packet counts prove the frames are intact).
#[test]
fn xdp_meta_refused_timestamps_from_headroom() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("xdp_meta", &[]);
    r.assert_forced("xdp_meta", "xdp_head");
    assert_eq!(r.mode()["timestamps"], "xdp", "{:#}", r.mode());
    assert_eq!(r.mode()["timestamp_carrier"], "headroom", "{:#}", r.mode());
    for q in ["0", "1"] {
        assert_eq!(
            num(&r.stats, &["queues", q, "no_xdp_timestamp"]),
            0,
            "{:#}",
            r.stats
        );
    }
    // bytes received are the frames' own: 3000 x 64 + 2000 x 700
    assert_eq!(num(&r.stats, &["bytes_received"]), 3000 * 64 + 2000 * 700);
}

/// Both XDP carriers refused: frames carry their RX batch's read time, `mode` says
/// "batch", capture is complete.
#[test]
fn xdp_timestamps_refused_batch_time() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("xdp_meta,xdp_head", &[]);
    r.assert_forced("xdp_meta", "xdp_head");
    r.assert_forced("xdp_head", "batch");
    assert_eq!(r.mode()["timestamps"], "batch", "{:#}", r.mode());
    assert_eq!(r.mode()["timestamp_carrier"], "none", "{:#}", r.mode());
}

/// Native XDP refused: the program runs in generic (SKB) mode.
#[test]
fn native_refused_skb_mode() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("native", &[]);
    r.assert_forced("native", "skb");
    assert_eq!(r.mode()["attach"], "skb", "{:#}", r.mode());
}

/// Zero-copy refused (veth refuses it for real too): copy mode.
#[test]
fn zero_copy_refused_copy_mode() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("zero_copy", &[]);
    r.assert_forced("zero_copy", "copy");
    assert_eq!(r.mode()["bind"], "copy", "{:#}", r.mode());
}

/// need_wakeup refused: bound without XDP_USE_NEED_WAKEUP.
#[test]
fn need_wakeup_refused_bound_without() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("need_wakeup", &[]);
    r.assert_forced("need_wakeup", "off");
    assert_eq!(r.mode()["need_wakeup"], false, "{:#}", r.mode());
}

/// Busy polling asked for and refused: interrupt-driven reading.
#[test]
fn busy_poll_refused_interrupt_driven() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("busy_poll", &["--busy-poll", "50"]);
    r.assert_forced("busy_poll", "off");
    assert_eq!(r.mode()["busy_poll_us"], 0, "{:#}", r.mode());
    // not refused, it is obtained (veth accepts the socket options)
    let r = capture_complete("", &["--busy-poll", "50"]);
    assert!(r.fallback("busy_poll").is_none(), "{:#}", r.mode());
    assert_eq!(r.mode()["busy_poll_us"], 50, "{:#}", r.mode());
}

/// The driver does not answer ETHTOOL_GCHANNELS: the queues are counted in /sys, and
/// both are read.
#[test]
fn channels_refused_queues_from_sys() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("channels", &[]);
    let f = r.fallback("channels").expect("channels fallback");
    assert_eq!(f["reason"], "refused by STREAMML_REFUSE=channels");
    assert!(
        f["using"]
            .as_str()
            .unwrap()
            .starts_with("2 (counted in /sys/class/net/sens0/queues)"),
        "{f}"
    );
    assert_eq!(r.mode()["queues"], 2);
}

/// Everything refused at once still captures everything.
#[test]
fn all_refused_at_once() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete(
        "xdp_meta,xdp_head,native,zero_copy,need_wakeup,busy_poll,channels",
        &["--busy-poll", "20"],
    );
    for (f, using) in [
        ("xdp_meta", "xdp_head"),
        ("xdp_head", "batch"),
        ("native", "skb"),
        ("zero_copy", "copy"),
        ("need_wakeup", "off"),
        ("busy_poll", "off"),
    ] {
        r.assert_forced(f, using);
    }
}

/// More queues asked for than the interface has: the sensor reads all it has (RSS
/// spreads traffic only over those), says so, and misses nothing.
#[test]
fn more_queues_than_the_nic_has() {
    let Some(_g) = harness::live() else { return };
    let r = capture_complete("", &["--queues", "4"]);
    let f = r.fallback("queues").expect("queues fallback");
    assert_eq!(f["using"], "2", "{f}");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("--queues 4 but the interface has 2 RX queues"),
        "{f}"
    );
    assert_eq!(r.mode()["queues"], 2);
}

/// An unknown feature name in STREAMML_REFUSE is a one-line start-up error.
#[test]
fn unknown_refused_feature_is_an_error() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let err = match pair.try_start_sensor_env(&[("STREAMML_REFUSE", "warp_drive")], &[]) {
        Ok(_) => panic!("started with an unknown feature"),
        Err((status, err)) => {
            assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
            err
        }
    };
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("streamml-sensor: STREAMML_REFUSE: unknown feature \"warp_drive\""),
        "{err}"
    );
}

/// Timestamps by capability, with the defaults: where the kernel takes XDP metadata the
/// frames carry per-frame XDP times through it; where it refuses the helper (the verifier
/// says "cannot use helper"), the headroom carrier takes over and the frames still carry
/// per-frame XDP times; the reason is in `mode.fallbacks`. Either way every frame has its
/// own time: paced frames keep distinct, strictly increasing timestamps in the evidence,
/// inside the wall-clock span of the send, though the reader naps and reads several per
/// RX batch. With both carriers refused (forced), frames of a batch share the batch's
/// time: timestamps do not decrease, stay inside the span, and `mode` says "batch".
#[test]
fn timestamps_per_capability() {
    let Some(_g) = harness::live() else { return };
    for refuse in ["", "xdp_meta,xdp_head"] {
        let pair = VethPair::new(1);
        let sensor = pair.start_sensor_env(&[("STREAMML_REFUSE", refuse)], &["--queues", "1"]);
        let t0 = now_s();
        let g = pair.send(&["--queues", "0", "--count", "1000", "--pps", "2000"]);
        let t1 = now_s();
        harness::wait_frames(&sensor, g.sent);
        let stopped = sensor.stop();
        assert_eq!(
            stopped.status.and_then(|s| s.code()),
            Some(0),
            "{}",
            stopped.stderr
        );
        let st = stopped.stats.expect("stats");
        let mode = &st["mode"];
        assert_eq!(num(&st, &["packets_received"]), g.sent);
        let ts: Vec<f64> = recover(&pair, "ts.pcap.zst").iter().map(|p| p.0).collect();
        assert_eq!(ts.len() as u64, g.sent);
        assert!(
            ts[0] >= t0 - 1.0 && ts[ts.len() - 1] <= t1 + 1.0,
            "timestamps {}..{} outside the send {t0}..{t1}",
            ts[0],
            ts[ts.len() - 1]
        );
        let meta_fallback = mode["fallbacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feature"] == "xdp_meta")
            .cloned();
        if refuse.is_empty() {
            assert_eq!(mode["timestamps"], "xdp", "{mode:#}");
            assert_eq!(num(&st, &["queues", "0", "no_xdp_timestamp"]), 0, "{st:#}");
            match &meta_fallback {
                None => assert_eq!(mode["timestamp_carrier"], "metadata", "{mode:#}"),
                Some(f) => {
                    // the kernel refused the helper: its verifier's words are the reason
                    assert_eq!(mode["timestamp_carrier"], "headroom", "{mode:#}");
                    assert!(
                        f["reason"]
                            .as_str()
                            .unwrap()
                            .starts_with("the kernel refused it: "),
                        "{f}"
                    );
                }
            }
            for w in ts.windows(2) {
                assert!(w[1] > w[0], "timestamps not strictly increasing: {w:?}");
            }
            eprintln!(
                "kernel: XDP timestamps through {} ({})",
                mode["timestamp_carrier"],
                meta_fallback
                    .map(|f| f["reason"].to_string())
                    .unwrap_or_else(|| "metadata granted".into())
            );
        } else {
            assert_eq!(mode["timestamps"], "batch", "{mode:#}");
            for w in ts.windows(2) {
                assert!(w[1] >= w[0], "timestamps decrease: {w:?}");
            }
        }
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sets the MTU of both ends of the pair.
fn set_mtu(pair: &VethPair, mtu: u32) {
    let m = mtu.to_string();
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "set",
        harness::SENSOR_IF,
        "mtu",
        &m,
    ]);
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_peer,
        "link",
        "set",
        harness::PEER_IF,
        "mtu",
        &m,
    ]);
}

/// An MTU that a 2048-byte UMEM frame does not hold: the sensor takes 4096-byte frames
/// by itself and captures 2900-byte frames completely.
#[test]
fn mtu_3000_takes_4096_byte_frames() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    set_mtu(&pair, 3000);
    let out = pair.path("live.csv");
    let sensor = pair.start_sensor(&["--flows-out", &out.to_string_lossy()]);
    let pcap = pair.path("sent.pcap");
    let g = pair.send(&[
        "--count",
        "2000",
        "--pps",
        "20000",
        "--size",
        "2900",
        "--flows",
        "5",
        "--pcap-out",
        &pcap.to_string_lossy(),
    ]);
    assert_eq!(g.sent, 2000);
    let st = sensor.stop().stats.expect("stats");
    let mode = &st["mode"];
    assert_eq!(mode["frame_size"], 4096, "{mode:#}");
    assert!(
        !mode["fallbacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["feature"] == "jumbo"),
        "{mode:#}"
    );
    assert_eq!(num(&st, &["packets_received"]), 2000, "{st:#}");
    assert_eq!(num(&st, &["bytes_received"]), 2000 * 2900, "{st:#}");
    let live = timeless_flows(&std::fs::read_to_string(&out).unwrap());
    let want = timeless_flows(&replay_flows(&pcap, &pair.path("r.csv")));
    assert_same_flows("MTU 3000", &live, &want);
}

/// An MTU beyond any UMEM frame (9000): the sensor still starts (native XDP is refused
/// for such an MTU on veth: SKB mode), says which frames it cannot take, captures the
/// frames that fit and counts every longer one as the kernel's rx_dropped: nothing is
/// lost silently.
#[test]
fn jumbo_mtu_longer_frames_are_counted() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    set_mtu(&pair, 9000);
    let sensor = pair.start_sensor(&[]);
    let g = pair.send(&["--count", "1000", "--pps", "20000", "--size", "1400"]);
    assert_eq!(g.sent, 1000);
    // 40 UDP datagrams in 7042-byte frames from the peer's stack (bounded by count).
    harness::run(&[
        "ip",
        "netns",
        "exec",
        &pair.ns_peer,
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(40): s.sendto(b'x'*7000,(sys.argv[1],9))",
        harness::SENSOR_ADDR,
    ]);
    // wait (bounded) until the XDP program has seen all of them
    let t = std::time::Instant::now();
    while t.elapsed().as_secs() < 5 {
        sensor.sighup();
        std::thread::sleep(std::time::Duration::from_millis(100));
        if sensor
            .read_stats()
            .is_some_and(|v| v["xdp"]["seen"] == 1040)
        {
            break;
        }
    }
    let st = sensor.stop().stats.expect("stats");
    let mode = &st["mode"];
    let f = mode["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "jumbo")
        .unwrap_or_else(|| panic!("no jumbo fallback: {mode:#}"));
    assert!(f["reason"].as_str().unwrap().starts_with("MTU 9000"), "{f}");
    assert_eq!(mode["frame_size"], 4096);
    assert_eq!(num(&st, &["packets_received"]), 1000, "{st:#}");
    assert_eq!(num(&st, &["drops", "rx_dropped"]), 40, "{st:#}");
    assert_eq!(num(&st, &["xdp", "seen"]), 1040, "{st:#}");
}
