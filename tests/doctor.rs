//! `streamml-sensor doctor` on a real 2-queue veth in a test namespace: the JSON holds
//! every key the README documents, with values true to the setup, and its timestamp
//! verdict is the one the sensor then obtains (and the one bpftool gets from the kernel
//! for the same object file).

#[path = "live/harness.rs"]
mod harness;

use std::process::Command;

use harness::VethPair;

/// `doctor` in the sensor's namespace; (exit code, stdout, stderr).
fn doctor(pair: &VethPair, args: &[&str]) -> (i32, String, String) {
    let mut cmd = vec!["netns", "exec", &pair.ns_sensor, harness::SENSOR, "doctor"];
    cmd.extend_from_slice(args);
    let out = Command::new("ip").args(&cmd).output().expect("run doctor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn doctor_json(pair: &VethPair, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, out, err) = doctor(pair, &a);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("doctor JSON: {e}\n{out}\n{err}"));
    (code, v)
}

/// The dotted keys the README's doctor section lists (lines "- `a.b.c`: ...").
fn documented_keys() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- doctor-keys -->")
        .expect("README has a <!-- doctor-keys --> list");
    let end = readme[start..]
        .find("<!-- /doctor-keys -->")
        .expect("end of the doctor key list")
        + start;
    // "- `a.b`, `a.c`: text": every key before the first ": "
    let keys: Vec<String> = readme[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .flat_map(|l| {
            let head = l.split(": ").next().unwrap_or(l);
            head.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(keys.len() >= 20, "too few documented keys: {keys:?}");
    keys
}

fn get<'a>(v: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    dotted
        .split('.')
        .try_fold(v, |cur, k| cur.as_object()?.get(k))
}

/// Whether this kernel loads the sensor's XDP object with its defaults
/// (`use_xdp_meta = 1`): bpftool's independent answer to the metadata question.
fn bpftool_takes_metadata_variant(pair: &VethPair) -> bool {
    let obj = concat!(env!("OUT_DIR"), "/sensor.bpf.o");
    let fs = pair.path("bpffs");
    std::fs::create_dir_all(&fs).unwrap();
    let fs_s = fs.to_string_lossy().into_owned();
    harness::run(&["mount", "-t", "bpf", "bpf", &fs_s]);
    let pin = fs.join("p");
    let out = Command::new("bpftool")
        .args(["prog", "load", obj, &pin.to_string_lossy(), "type", "xdp"])
        .output()
        .expect("bpftool is installed (scripts/deps.sh)");
    let ok = out.status.success();
    let _ = std::fs::remove_file(&pin);
    harness::run(&["umount", &fs_s]);
    if !ok {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bpf_xdp_adjust_meta"),
            "bpftool refused the object for another reason:\n{err}"
        );
    }
    ok
}

#[test]
fn doctor_on_a_two_queue_veth() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let (code, r) = doctor_json(&pair, &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 0, "no blocking problem expected: {r:#}");

    // every documented key is there
    for k in documented_keys() {
        assert!(
            get(&r, &k).is_some(),
            "README documents {k}, doctor has none:\n{r:#}"
        );
    }
    // values true to the setup
    let i = &r["interface"];
    assert_eq!(i["name"], harness::SENSOR_IF);
    assert_eq!(i["driver"], "veth");
    assert_eq!(i["up"], true);
    assert_eq!(i["rx_queues"], 2);
    assert_eq!(i["channels"]["rx"], 2, "{i:#}");
    assert_eq!(i["channels"]["max_rx"], 2, "{i:#}");
    assert_eq!(i["mtu"], 1500);
    assert_eq!(i["mtu_fits"], true);
    assert_eq!(i["native_xdp"]["available"], true, "{i:#}");
    assert_eq!(i["zero_copy"]["available"], false, "{i:#}");
    assert_eq!(i["attached_program"], serde_json::Value::Null);
    assert_eq!(r["kernel"]["af_xdp"]["available"], true);
    assert_eq!(r["privileges"]["euid"], 0);
    assert_eq!(r["privileges"]["missing"], serde_json::json!([]));
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(r["cpu"]["cores"], cores);
    assert_eq!(r["would_use"]["queues"], 2);
    assert_eq!(r["would_use"]["attach"], "native");
    assert_eq!(r["would_use"]["bind"], "copy");
    assert_eq!(r["would_use"]["readers"], 2);
    assert_eq!(
        r["would_use"]["scorer_shards"],
        cores.saturating_sub(2).max(1)
    );

    // the metadata verdict: bpftool's, and then the sensor's own
    let meta = r["timestamps"]["xdp_meta"]["available"]
        .as_bool()
        .expect("a verdict as root");
    assert_eq!(
        meta,
        bpftool_takes_metadata_variant(&pair),
        "{:#}",
        r["timestamps"]
    );
    let sensor = pair.start_sensor(&[]);
    let st = sensor.stop().stats.expect("stats");
    let mode = &st["mode"];
    assert_eq!(
        mode["timestamp_carrier"], r["timestamps"]["carrier"],
        "{mode:#}"
    );
    assert_eq!(
        mode["timestamps"], r["timestamps"]["timestamps"],
        "{mode:#}"
    );
    assert_eq!(mode["attach"], r["would_use"]["attach"]);
    assert_eq!(mode["bind"], r["would_use"]["bind"]);
    assert_eq!(mode["queues"], r["would_use"]["queues"]);
    assert_eq!(mode["frame_size"], r["would_use"]["frame_size"]);
    assert_eq!(mode["shards"], r["would_use"]["scorer_shards"]);
    let meta_fallback = mode["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "xdp_meta");
    assert_eq!(meta_fallback.is_none(), meta, "{mode:#}");
    if let Some(f) = meta_fallback {
        assert_eq!(f["reason"], r["timestamps"]["xdp_meta"]["reason"]);
    }

    // the text form says the same
    let (code, text, _) = doctor(&pair, &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 0);
    assert!(
        text.contains("interface    sens0 (driver veth), up, MTU 1500"),
        "{text}"
    );
    assert!(
        text.contains("zero-copy no (the driver does not advertise xsk_zerocopy)"),
        "{text}"
    );
    assert!(
        text.contains("would use    2 queue(s), XDP native, AF_XDP copy"),
        "{text}"
    );
}

/// Blocking problems make doctor exit 1 and name the fix; a bad interface is one line.
#[test]
fn doctor_names_problems_and_fixes() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(2);
    let (code, _, err) = doctor(&pair, &["--iface", "nosuch0"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim(), "streamml-sensor: nosuch0: no such interface");

    // MTU beyond what a UMEM frame holds
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "set",
        harness::SENSOR_IF,
        "mtu",
        "9000",
    ]);
    let (code, r) = doctor_json(&pair, &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["interface"]["mtu_fits"], false);
    let p = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["problem"].as_str().unwrap().starts_with("MTU 9000"))
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(p["severity"], "blocking");
    let fix = p["fix"].as_str().unwrap();
    assert!(fix.starts_with("ip link set sens0 mtu "), "{fix}");

    // the fix it names works
    let mut cmd: Vec<&str> = vec!["-n", &pair.ns_sensor];
    cmd.extend(fix.split(' ').skip(1));
    harness::run(&[&["ip"][..], &cmd].concat());
    let (code, r) = doctor_json(&pair, &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["interface"]["mtu_fits"], true);
    assert_eq!(r["interface"]["frame_size"], 4096);

    // interface down
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "set",
        harness::SENSOR_IF,
        "down",
    ]);
    let (code, text, _) = doctor(&pair, &["--iface", harness::SENSOR_IF]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("blocking     sens0 is down\n             fix: ip link set sens0 up"),
        "{text}"
    );

    // more queues asked for than there are
    harness::run(&[
        "ip",
        "-n",
        &pair.ns_sensor,
        "link",
        "set",
        harness::SENSOR_IF,
        "up",
    ]);
    let (_, r) = doctor_json(&pair, &["--iface", harness::SENSOR_IF, "--queues", "1"]);
    assert!(
        r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["severity"] == "warning"
                && p["problem"].as_str().unwrap().contains("--queues 1 of 2")),
        "{r:#}"
    );
    assert_eq!(r["would_use"]["queues"], 1);
}

/// Without capabilities: doctor still reports, names what is missing and the unit line.
#[test]
fn doctor_without_privileges() {
    let Some(_g) = harness::live() else { return };
    let pair = VethPair::new(1);
    let (code, out, err) = doctor(&pair, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let mut cmd = vec![
        "netns",
        "exec",
        &pair.ns_sensor,
        "setpriv",
        "--bounding-set",
        "-net_admin,-bpf,-sys_admin",
        "--inh-caps",
        "-net_admin,-bpf,-sys_admin",
        harness::SENSOR,
        "doctor",
        "--json",
    ];
    cmd.extend_from_slice(&["--iface", harness::SENSOR_IF]);
    let out = Command::new("ip").args(&cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["privileges"]["missing"],
        serde_json::json!(["CAP_NET_ADMIN", "CAP_BPF"])
    );
    assert_eq!(
        r["timestamps"]["xdp_meta"]["available"],
        serde_json::Value::Null
    );
    let p = &r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["severity"] == "blocking")
        .unwrap()["fix"];
    assert!(
        p.as_str()
            .unwrap()
            .contains("AmbientCapabilities=CAP_NET_ADMIN"),
        "{p}"
    );
}
