//! Seeded mutation of configuration files (issue 17): config/sensor.toml (and every other
//! file under config/) and a few variants, mutated as a careless editor or a hostile user
//! would — bit flips, byte insertions and deletions, lines deleted, duplicated and
//! swapped, values replaced by extremes (0, -1, 1e308, 2^64, NaN, "", huge strings, other
//! types), keys added with extreme values, tables renamed, profiles multiplied, the file
//! cut short. Each mutant goes through the loader the binary uses
//! (`config::load_bytes`, with random command-line overrides) in-process: no panic, every
//! error one line naming the file, every accepted configuration builds its detectors and
//! flow table. A share of them also runs through the binary (`replay` and `flows`): exit
//! 0, 1 or 2, never a panic, a refusal is one line, every run within a hang bound.
//!
//! `STREAMML_SEED` and `STREAMML_CONFIG_MUTATIONS` (default 12000) and
//! `STREAMML_CONFIG_MUTANT_RUNS` (default 200) change the run; a failure names the seed
//! and the case and writes the mutant next to the test's temporary files.

mod common;

use common::XorShift;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use streamml_sensor::config::{self, Config, DetectorKind, Overrides};
use streamml_sensor::detect::detector::Detector;
use streamml_sensor::detect::hst::HstParams;
use streamml_sensor::flow::table::FlowTable;

const BIN: &str = env!("CARGO_BIN_EXE_streamml-sensor");

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Values written over a key's value: the extremes of every type, and other types.
fn extremes() -> Vec<String> {
    let mut v: Vec<String> = [
        "0",
        "-1",
        "1",
        "2",
        "10",
        "1e308",
        "-1e308",
        "1e-320",
        "0.0",
        "-0.0",
        "0.0005",
        "0.5",
        "1.5",
        "86400.5",
        "3600.5",
        "1e9",
        "1000000001",
        "18446744073709551616",
        "18446744073709551615",
        "9223372036854775807",
        "-9223372036854775808",
        "4294967295",
        "4294967296",
        "65535",
        "65536",
        "65537",
        "256",
        "257",
        "262145",
        "1073741824",
        "1073741825",
        "nan",
        "-nan",
        "inf",
        "-inf",
        "0x10",
        "0o7",
        "1_000",
        "\"\"",
        "\"x\"",
        "\"5\"",
        "\"tcp and and\"",
        "\"robust\"",
        "\"both\"",
        "\"flow\"",
        "\"\\u0000\"",
        "\"a\\nb\"",
        "true",
        "false",
        "[]",
        "[\"packets\"]",
        "[\"packets\", \"packets\"]",
        "[1, 2, 3]",
        "{}",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("\"{}\"", "a".repeat(200_000)));
    v.push(format!("[{}]", vec!["\"packets\""; 5000].join(", ")));
    v
}

/// Keys added with an extreme value under their table.
const KEYS: [(&str, &str); 24] = [
    ("[sensor]", "shards"),
    ("[sensor]", "ring_capacity"),
    ("[sensor]", "key"),
    ("[sensor]", "state_dir"),
    ("[flow]", "capacity"),
    ("[flow]", "splt"),
    ("[flow]", "idle_timeout_s"),
    ("[flow]", "active_timeout_s"),
    ("[evidence]", "ring_mib"),
    ("[evidence]", "snaplen"),
    ("[evidence]", "queue"),
    ("[evidence]", "max_bytes"),
    ("[profile.hst]", "n_trees"),
    ("[profile.hst]", "height"),
    ("[profile.hst]", "window_size"),
    ("[profile.threshold]", "quantile_window"),
    ("[profile.threshold]", "quantile"),
    ("[profile.threshold]", "fixed"),
    ("[profile.threshold]", "cooldown_s"),
    ("[profile.scaling]", "warmup"),
    ("[profile.scaling]", "log1p"),
    ("[profile.evidence]", "snaplen"),
    ("[profile.evidence]", "pre_s"),
    ("[[profile]]", "window_s"),
];

const TABLES: [&str; 10] = [
    "[sensor]",
    "[flow]",
    "[evidence]",
    "[[profile]]",
    "[profile.hst]",
    "[profile.threshold]",
    "[[sensor]]",
    "[profile]",
    "[nope]",
    "[profile.hst.deeper]",
];

/// Bytes that steer a TOML parser into its branches.
const INTERESTING: &[u8] = b"\"[]=\n#\\.-+e0 '{},\t\r\x00\xff\xc3_:";

/// The configurations mutated: every file under config/, and variants of sensor.toml
/// (both modes, a fixed threshold, minmax scaling, small rings) plus a minimal one.
/// `ring_mib = 256` becomes 8 everywhere: the binary's runs use a small file system.
fn bases() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml under {}", dir.display());
    let mut v: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let default = std::fs::read_to_string(dir.join("sensor.toml")).unwrap();
    v.push(default.replacen("mode = \"window\"", "mode = \"both\"", 1));
    v.push(
        default
            .replacen("quantile = 0.995", "fixed = 0.7", 1)
            .replacen("kind = \"robust\"", "kind = \"minmax\"", 1)
            .replacen(
                "require_out_of_range = true",
                "require_out_of_range = false",
                1,
            ),
    );
    v.push(
        "[flow]\nidle_timeout_s = 10\n\n[[profile]]\nname = \"p\"\nmode = \"flow\"\n\
         [profile.hst]\nn_trees = 5\nheight = 4\nwindow_size = 20\n\
         [profile.threshold]\nfixed = 0.9\n"
            .to_string(),
    );
    v.into_iter()
        .map(|s| s.replace("ring_mib = 256", "ring_mib = 8"))
        .collect()
}

/// The span of the value on the line starting at `start` (`key = VALUE  # comment`).
fn value_span(text: &[u8], start: usize) -> Option<(usize, usize)> {
    let end = text[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |e| start + e);
    let line = &text[start..end];
    let eq = line.iter().position(|&b| b == b'=')?;
    let mut a = start + eq + 1;
    while a < end && text[a] == b' ' {
        a += 1;
    }
    let mut b = text[a..end]
        .iter()
        .position(|&c| c == b'#')
        .map_or(end, |p| a + p);
    while b > a && text[b - 1] == b' ' {
        b -= 1;
    }
    Some((a, b))
}

fn line_starts(text: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        text.iter()
            .enumerate()
            .filter(|(i, &b)| b == b'\n' && i + 1 < text.len())
            .map(|(i, _)| i + 1),
    );
    v
}

fn line_end(text: &[u8], start: usize) -> usize {
    text[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |e| start + e + 1)
}

/// One mutation of `t`; returns its name.
fn mutate(rng: &mut XorShift, t: &mut Vec<u8>, extremes: &[String]) -> &'static str {
    let pos = |rng: &mut XorShift, t: &Vec<u8>| rng.below(t.len() + 1);
    match rng.below(16) {
        0 => {
            if !t.is_empty() {
                let i = rng.below(t.len());
                t[i] ^= 1 << rng.below(8);
            }
            "bit flip"
        }
        1 => {
            let i = pos(rng, t);
            let b = if rng.below(2) == 0 {
                *rng.pick(INTERESTING)
            } else {
                rng.next() as u8
            };
            t.insert(i, b);
            "byte insertion"
        }
        2 => {
            if !t.is_empty() {
                let i = rng.below(t.len());
                let n = (1 + rng.below(8)).min(t.len() - i);
                t.drain(i..i + n);
            }
            "byte deletion"
        }
        3 => {
            let starts = line_starts(t);
            let s = *rng.pick(&starts);
            let e = line_end(t, s);
            t.drain(s..e);
            "line deletion"
        }
        4 => {
            let starts = line_starts(t);
            let s = *rng.pick(&starts);
            let e = line_end(t, s);
            let line = t[s..e].to_vec();
            let at = *rng.pick(&starts);
            t.splice(at..at, line);
            "line duplication"
        }
        5 => {
            let mut lines: Vec<Vec<u8>> = t.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(a, b);
            *t = lines.join(&b'\n');
            "line swap"
        }
        6..=9 => {
            // A value replaced with an extreme.
            let starts: Vec<usize> = line_starts(t)
                .into_iter()
                .filter(|&s| value_span(t, s).is_some())
                .collect();
            if starts.is_empty() {
                return "value (none)";
            }
            let s = *rng.pick(&starts);
            let (a, b) = value_span(t, s).unwrap();
            let v = rng.pick(extremes).clone();
            t.splice(a..b, v.into_bytes());
            "extreme value"
        }
        10 => {
            // A key added (or set again) under its table with an extreme value.
            let (table, key) = *rng.pick(&KEYS);
            let v = rng.pick(extremes).clone();
            let line = format!("{key} = {v}\n").into_bytes();
            let needle = format!("{table}\n");
            let at = match find_all(t, needle.as_bytes()).as_slice() {
                [] => {
                    t.extend_from_slice(needle.as_bytes());
                    t.len()
                }
                found => *rng.pick(found) + needle.len(),
            };
            t.splice(at..at, line);
            "key added"
        }
        11 => {
            // A value's type changed: quoted, or put in an array.
            let starts: Vec<usize> = line_starts(t)
                .into_iter()
                .filter(|&s| value_span(t, s).is_some())
                .collect();
            if starts.is_empty() {
                return "type change (none)";
            }
            let s = *rng.pick(&starts);
            let (a, b) = value_span(t, s).unwrap();
            let old = String::from_utf8_lossy(&t[a..b]).into_owned();
            let new = match rng.below(3) {
                0 => format!("\"{}\"", old.replace('"', "")),
                1 => format!("[{old}]"),
                _ => format!("{{ v = {old} }}"),
            };
            t.splice(a..b, new.into_bytes());
            "type change"
        }
        12 => {
            // A table header renamed.
            let starts: Vec<usize> = line_starts(t)
                .into_iter()
                .filter(|&s| t.get(s) == Some(&b'['))
                .collect();
            if starts.is_empty() {
                return "table rename (none)";
            }
            let s = *rng.pick(&starts);
            let e = line_end(t, s);
            let new = format!("{}\n", rng.pick(&TABLES));
            t.splice(s..e, new.into_bytes());
            "table rename"
        }
        13 => {
            // The first profile (to the end of the file) repeated: up to 20 profiles.
            if let Some(&p) = find_all(t, b"[[profile]]").first() {
                let block = t[p..].to_vec();
                for _ in 0..1 + rng.below(20) {
                    if t.last() != Some(&b'\n') {
                        t.push(b'\n');
                    }
                    t.extend_from_slice(&block);
                }
            }
            "profiles repeated"
        }
        14 => {
            let i = rng.below(t.len() + 1);
            t.truncate(i);
            "cut short"
        }
        _ => match rng.below(4) {
            0 => {
                t.clear();
                "empty"
            }
            1 => {
                // Past the size limit.
                t.resize(config::MAX_CONFIG_BYTES + 1 + rng.below(100), b' ');
                "too large"
            }
            2 => {
                let i = pos(rng, t);
                t.splice(i..i, [0xc3, 0x28, 0xa0, 0xa1]);
                "invalid UTF-8"
            }
            _ => {
                t.splice(0..0, b"\xef\xbb\xbf".iter().copied());
                "byte order mark"
            }
        },
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return vec![];
    }
    (0..=hay.len() - needle.len())
        .filter(|&i| &hay[i..i + needle.len()] == needle)
        .collect()
}

/// Command-line overrides as a program could pass them (the binary's own are bounded by
/// clap first): mostly none, sometimes extremes.
fn overrides(rng: &mut XorShift) -> Overrides {
    let mut o = Overrides::default();
    if rng.below(6) != 0 {
        return o;
    }
    let big = [
        0u64,
        1,
        2,
        255,
        256,
        257,
        65536,
        1 << 30,
        (1 << 30) + 1,
        u64::MAX,
    ];
    match rng.below(7) {
        0 => o.shards = Some(*rng.pick(&big) as usize),
        1 => o.ring_mib = Some(*rng.pick(&big)),
        2 => o.flow_capacity = Some(*rng.pick(&big) as usize),
        3 => o.ring_capacity = Some(*rng.pick(&big) as usize),
        4 => {
            o.idle_timeout_s =
                Some(*rng.pick(&[0.0, -1.0, f64::NAN, f64::INFINITY, 1e308, 1e-300, 5.0]))
        }
        5 => o.seed = Some(rng.next()),
        _ => o.splt = Some(*rng.pick(&[0u16, 1, 255, u16::MAX])),
    }
    o
}

/// What an accepted configuration promises: within every bound, and the detectors and
/// the flow table it describes can be built (when small enough to build here).
fn check_accepted(cfg: &Config) -> bool {
    assert!(cfg.shards <= config::MAX_SHARDS);
    assert!((1..=config::MAX_RING_CAPACITY).contains(&cfg.ring_capacity));
    assert!((1..=config::MAX_FLOW_CAPACITY).contains(&cfg.capacity));
    assert!(cfg.ring_bytes >= 1 << 20 && cfg.ring_bytes <= config::MAX_RING_MIB << 20);
    assert!((1..=config::MAX_EVIDENCE_QUEUE).contains(&cfg.evidence_queue));
    assert!(cfg.profiles.len() <= config::MAX_PROFILES);
    cfg.flow_config().validate().expect("flow settings");
    if FlowTable::reserved_bytes(&cfg.flow_config()) <= 1 << 30 {
        // Address space only: the slots are touched as flows arrive. (Larger tables are
        // the run's memory check's to refuse.)
        FlowTable::new(cfg.flow_config()).expect("flow table of an accepted config");
    }
    let small = cfg.profiles.iter().all(|p| {
        HstParams {
            n_trees: p.n_trees as u32,
            height: p.height as u32,
            window_size: p.window_size as u32,
            seed: p.seed,
        }
        .memory_bytes()
            <= 8 << 20
    });
    if !small {
        return false;
    }
    for p in &cfg.profiles {
        for (on, kind) in [
            (p.mode.flow(), DetectorKind::Flow),
            (p.mode.window(), DetectorKind::Window),
        ] {
            if on {
                if let Err(e) = Detector::new(&p.detector_config(kind)) {
                    panic!("accepted profile {:?} builds no detector: {e}", p.name);
                }
            }
        }
    }
    true
}

/// Keeps a failing mutant for reproduction and fails, naming seed and case.
fn dump_mutant(seed: u64, i: usize, t: &[u8], why: &str) -> ! {
    let p = std::env::temp_dir().join(format!("streamml-config-mutant-{seed}-{i}.toml"));
    let _ = std::fs::write(&p, t);
    panic!(
        "seed {seed} case {i}: {why}; the mutant is in {}:\n{}",
        p.display(),
        String::from_utf8_lossy(&t[..t.len().min(4000)])
    );
}

enum Event {
    Start(usize, Vec<u8>),
    Done(&'static str),
}

#[test]
fn mutated_configs_never_panic_and_fail_on_one_line() {
    let seed = env_num("STREAMML_SEED", 0x5eed_c0f1);
    let n = env_num("STREAMML_CONFIG_MUTATIONS", 12_000) as usize;
    let bases = bases();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let extremes = extremes();
        let mut rng = XorShift::new(seed);
        let mut ops: BTreeMap<&'static str, u64> = BTreeMap::new();
        for i in 0..n {
            let mut t = rng.pick(&bases).clone().into_bytes();
            for _ in 0..1 + rng.below(3) {
                *ops.entry(mutate(&mut rng, &mut t, &extremes)).or_default() += 1;
            }
            let o = overrides(&mut rng);
            if tx.send(Event::Start(i, t.clone())).is_err() {
                return ops;
            }
            let r = catch_unwind(AssertUnwindSafe(|| {
                match config::load_bytes(&t, "mutant.toml", &o) {
                    Ok(cfg) => {
                        if check_accepted(&cfg) {
                            "accepted, detectors built"
                        } else {
                            "accepted"
                        }
                    }
                    Err(e) => {
                        let s = e.to_string();
                        assert!(
                            !s.contains('\n') && !s.contains('\r'),
                            "not one line: {s:?}"
                        );
                        assert!(s.starts_with("mutant.toml: "), "{s}");
                        // Not only a place: what is wrong there.
                        if let Some((_, after)) = s.split_once(", column ") {
                            let what = after.split_once(": ").map_or("", |(_, w)| w);
                            assert!(!what.trim().is_empty(), "{s}");
                        }
                        assert!(s.len() > "mutant.toml: ".len() + 3, "{s}");
                        "refused"
                    }
                }
            }));
            let outcome = r.unwrap_or("PANICKED");
            if tx.send(Event::Done(outcome)).is_err() {
                return ops;
            }
        }
        ops
    });
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let dump = |i: usize, t: &[u8], why: &str| dump_mutant(seed, i, t, why);
    for _ in 0..n {
        let (i, t) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Event::Start(i, t)) => (i, t),
            Ok(Event::Done(_)) => unreachable!("a start comes first"),
            Err(e) => panic!("seed {seed}: the worker stopped: {e}"),
        };
        // A generous hang bound per case (they take well under a millisecond each).
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Event::Done("PANICKED")) => dump(
                i,
                &t,
                "panicked (the loader, or a check of what it accepted)",
            ),
            Ok(Event::Done(o)) => *outcomes.entry(o).or_default() += 1,
            Ok(Event::Start(..)) => unreachable!("one case at a time"),
            Err(mpsc::RecvTimeoutError::Timeout) => dump(i, &t, "no answer within 30 s"),
            Err(e) => dump(i, &t, &format!("the worker died: {e}")),
        }
    }
    let ops = worker.join().expect("worker");
    eprintln!("seed {seed}: {n} mutated configs: {outcomes:?}; mutations {ops:?}");
    assert_eq!(outcomes.values().sum::<u64>(), n as u64);
    // The mutants reach both sides of the loader: many are refused, many accepted, and
    // detectors were built from accepted ones.
    let get = |k: &str| outcomes.get(k).copied().unwrap_or(0) as usize;
    assert!(get("refused") > n / 4, "{outcomes:?}");
    assert!(
        get("accepted") + get("accepted, detectors built") > n / 20,
        "{outcomes:?}"
    );
    assert!(get("accepted, detectors built") > n / 50, "{outcomes:?}");
    for op in [
        "bit flip",
        "byte insertion",
        "line deletion",
        "extreme value",
        "key added",
        "type change",
        "table rename",
        "profiles repeated",
        "too large",
        "invalid UTF-8",
    ] {
        assert!(ops.contains_key(op), "{op} never applied: {ops:?}");
    }
}

fn wait_timeout(child: &mut Child, t: Duration) -> Option<ExitStatus> {
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
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What one mutant did in the binary.
fn run_mutant(i: usize, cfg: &Path, dir: &Path, fs: &Path, capture: &str) -> Result<i32, String> {
    let state = fs.join(format!("s{i}"));
    let out = dir.join(format!("f{i}.csv"));
    let args: Vec<String> = if i.is_multiple_of(4) {
        vec![
            "flows".into(),
            "--config".into(),
            cfg.display().to_string(),
            capture.into(),
            "-o".into(),
            out.display().to_string(),
            "--sort-buffer-mib".into(),
            "16".into(),
        ]
    } else {
        vec![
            "replay".into(),
            capture.into(),
            "--config".into(),
            cfg.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    };
    // Under a 1 GiB address-space limit: what does not fit must be refused, not aborted.
    // stderr to a file: a pipe nobody reads while waiting would stall a long message.
    let err_path = dir.join(format!("e{i}.txt"));
    let err_file = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new("prlimit")
        .arg("--as=1073741824")
        .arg(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .map_err(|e| e.to_string())?;
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&out);
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    if err.len() > 4096 {
        return Err(format!("{args:?}: {} bytes on stderr", err.len()));
    }
    let Some(status) = status else {
        return Err(format!("{args:?}: still running after 60 s (killed)"));
    };
    let Some(code) = status.code() else {
        return Err(format!("{args:?}: ended by {status:?}: {err}"));
    };
    if !(0..=2).contains(&code) {
        return Err(format!("{args:?}: exit {code}: {err}"));
    }
    if err.contains("panicked") || err.contains("internal error") {
        return Err(format!("{args:?}: {err}"));
    }
    if code == 2 {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("streamml-sensor: warning: "))
            .collect();
        if lines.len() != 1 || !lines[0].starts_with("streamml-sensor: ") {
            return Err(format!("{args:?}: a refusal that is not one line: {err}"));
        }
    }
    Ok(code)
}

#[test]
fn mutated_configs_through_the_binary() {
    let seed = env_num("STREAMML_SEED", 0x5eed_c0f1) ^ 0xb1;
    let n = env_num("STREAMML_CONFIG_MUTANT_RUNS", 200) as usize;
    let d = tempfile::tempdir().unwrap();
    // Runs write their evidence rings to a small file system of their own: a mutant may
    // ask for any ring the bounds allow, and what does not fit is refused.
    let fs = d.path().join("fs");
    let _m = common::Mount::tmpfs(&fs, "96m");
    let capture = common::pcaps_dir()
        .join("basic/http-get.pcap")
        .to_string_lossy()
        .into_owned();
    let bases = bases();
    let extremes = extremes();
    let mut rng = XorShift::new(seed);
    let mut cases = Vec::with_capacity(n);
    for i in 0..n {
        let mut t = rng.pick(&bases).clone().into_bytes();
        // Fewer mutations than in-process, so that many mutants still run.
        for _ in 0..1 + rng.below(2) {
            mutate(&mut rng, &mut t, &extremes);
        }
        let p = d.path().join(format!("m{i}.toml"));
        std::fs::write(&p, &t).unwrap();
        cases.push((i, p));
    }
    // Two at a time (the machine has two cores).
    let (a, b): (Vec<_>, Vec<_>) = cases.into_iter().partition(|(i, _)| i % 2 == 0);
    let results: Vec<(usize, PathBuf, Result<i32, String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = [a, b]
            .into_iter()
            .map(|part| {
                let (dir, fs, capture) = (d.path(), fs.as_path(), capture.as_str());
                sc.spawn(move || {
                    part.into_iter()
                        .map(|(i, p)| {
                            let r = run_mutant(i, &p, dir, fs, capture);
                            (i, p, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, p, r) in results {
        match r {
            Ok(c) => *codes.entry(c).or_default() += 1,
            Err(e) => {
                let keep = std::env::temp_dir()
                    .join(format!("streamml-config-mutant-{seed}-bin-{i}.toml"));
                let _ = std::fs::copy(&p, &keep);
                failures.push(format!("seed {seed} case {i} ({}): {e}", keep.display()));
            }
        }
    }
    eprintln!("seed {seed}: {n} mutants through the binary: exit codes {codes:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Both runs and refusals happened.
    assert!(codes.get(&0).copied().unwrap_or(0) > n / 10, "{codes:?}");
    assert!(codes.get(&2).copied().unwrap_or(0) > n / 10, "{codes:?}");
}
