//! `streamml-sensor bench`: sizes a box. `--synthetic` (the in-process generator through
//! the pipeline, no NIC: the pipeline's ceiling per scorer core, detection on) or
//! `--generate` (a private namespace pair and veth, streamml-pktgen on the far end, live
//! capture on the near end: one trial at a fixed rate or the generator's maximum, or
//! `--search` for the zero-loss rate), or `--iface IF` (passive: live capture while an
//! external generator sends). A status line once a second (rewritten in place on
//! a terminal, plain lines otherwise), a table at the end, `--json FILE`, `--plot FILE.svg`.
//! Long form: docs/bench.md.

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::live::LiveArgs;
use crate::capture::gen::{FrameSizes, GenConfig, GenEpisode};
use crate::config::{self, Overrides};
use crate::engine::bench::{
    self, BenchReport, GenerateJob, PassiveJob, Progress, RateMode, SyntheticJob,
};
use crate::engine::pipeline;
use crate::evidence::statedir::{self, StateDir};
use crate::output::{check_output, OutputFile};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The in-process generator feeds the pipeline (no NIC).
    #[arg(long, conflicts_with = "generate")]
    pub synthetic: bool,
    /// A private namespace and veth pair; streamml-pktgen sends, live capture receives.
    #[arg(long)]
    pub generate: bool,
    /// Frame size in bytes (60..=1514), or `imix` (7:4:1 of 64, 576, 1500; --synthetic).
    #[arg(long, default_value = "64")]
    pub size: String,
    /// Distinct flows (UDP source ports), 1..=50000.
    #[arg(long, default_value_t = 1024)]
    pub flows: u32,
    /// `--generate`: what streamml-pktgen sends: UDP datagrams, or TCP SYNs (with many
    /// `--flows`, a SYN flood: every flow a half-open connection the flow table keeps).
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp-syn"])]
    pub proto: String,
    /// Offered frames/s in total (e.g. 500000, 1.5M, 200k), or `max`.
    #[arg(long, default_value = "max")]
    pub rate: String,
    /// `--synthetic`: stop after this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// `--generate`: seconds per trial.
    #[arg(long, default_value = "2", value_parser = super::positive_seconds)]
    pub trial: f64,
    /// `--generate`: RFC 2544 zero-loss search (binary search on the offered rate).
    #[arg(long, requires = "generate")]
    pub search: bool,
    /// `--search`: stop when the bracket is within this fraction of its upper end.
    #[arg(long, default_value_t = 0.05)]
    pub resolution: f64,
    /// `--search`: at most this many trials (the first at the generator's maximum).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_trials: u32,
    /// `--synthetic`: inject a SYN flood starting this many seconds into the run.
    #[arg(long, value_name = "S", value_parser = super::non_negative_seconds)]
    pub episode_start: Option<f64>,
    /// The episode's length in seconds.
    #[arg(long, default_value = "3", value_parser = super::positive_seconds)]
    pub episode_duration: f64,
    /// The share of frames in the episode that are flood SYNs, (0, 1].
    #[arg(long, default_value_t = 0.25)]
    pub episode_share: f64,
    /// Write everything measured as JSON (docs/bench.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw offered vs received rate, p99 latency and the search's steps as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The status line: `auto` (rewritten in place on a terminal, plain lines otherwise),
    /// `line` or `plain`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "line", "plain"])]
    pub status: String,
    /// Live capture's options (--queues, --config, --shards, --state-dir, --duration ...).
    #[command(flatten)]
    pub live: LiveArgs,
}

/// "1.5M", "200k", "500000" → frames/s; "max" → None.
pub fn parse_rate(s: &str) -> Result<Option<f64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("--rate {s}: a number of frames/s (e.g. 500k, 1.5M) or max"))?;
    let v = v * mult;
    if !(1.0..=1e9).contains(&v) {
        return Err(format!("--rate {s}: must be between 1 and 1e9 frames/s"));
    }
    Ok(Some(v))
}

fn parse_sizes(s: &str) -> Result<FrameSizes, String> {
    if s.eq_ignore_ascii_case("imix") {
        return Ok(FrameSizes::Imix);
    }
    s.trim()
        .parse()
        .map(FrameSizes::Fixed)
        .map_err(|_| format!("--size {s}: a frame size in bytes or imix"))
}

/// Prints the status: on a terminal one line rewritten in place (`\r`, clear to the end
/// of the line); otherwise one plain line per update.
struct Status {
    in_place: bool,
    drawn: bool,
}

impl Status {
    fn new(mode: &str) -> Status {
        Status {
            in_place: match mode {
                "line" => true,
                "plain" => false,
                _ => std::io::stdout().is_terminal(),
            },
            drawn: false,
        }
    }

    fn text(p: &Progress) -> String {
        format!(
            "bench {:6.1} s | {} | offered {:>9} | received {:>9} | drops {} | p99 {} | cpu {:.0} %",
            p.t_s,
            p.phase,
            rate(p.offered_pps),
            rate(p.received_pps),
            p.drops,
            dur_ns(p.p99_ns),
            p.cpu_pct
        )
    }

    fn show(&mut self, p: &Progress) {
        let mut o = std::io::stdout().lock();
        let line = Status::text(p);
        let _ = if self.in_place {
            self.drawn = true;
            write!(o, "\r\x1b[K{line}")
        } else {
            writeln!(o, "{line}")
        };
        let _ = o.flush();
    }

    fn end(&mut self) {
        if self.in_place && self.drawn {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o);
            let _ = o.flush();
        }
    }
}

fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else {
        format!("{:.1} kpps", pps / 1e3)
    }
}

fn dur_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// The table at the end.
fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "bench {}: {} cores ({}), kernel {}, load {:.2}",
        r.mode, r.machine.cores, r.machine.cpu_model, r.machine.kernel, r.machine.load_average
    );
    let _ = writeln!(
        s,
        "  generated {}  received {}  unaccounted {}  in {:.2} s",
        r.generated, r.received, r.unaccounted, r.duration_s
    );
    let _ = writeln!(
        s,
        "  received {} ({:.2} Gbit/s), {} per scorer core ({} shard(s))",
        rate(r.received_pps),
        r.received_bps / 1e9,
        rate(r.pps_per_scorer_core),
        r.shards.len().max(1)
    );
    let _ = writeln!(
        s,
        "  per CPU second: scorers {}, readers {}",
        rate(r.pps_per_scorer_cpu_second),
        rate(r.pps_per_reader_cpu_second)
    );
    if let Some(z) = r.zero_loss_pps {
        let _ = writeln!(s, "  zero-loss rate {}", rate(z));
    }
    for t in &r.trials {
        let lost: u64 = t
            .drops
            .iter()
            .filter(|(k, _)| {
                k.starts_with("xdp.")
                    || k.starts_with("rx_")
                    || k.starts_with("decoder.")
                    || *k == "peer.tx_dropped"
                    || *k == "shard.ring_full"
            })
            .map(|(_, v)| v)
            .sum();
        let _ = writeln!(
            s,
            "  trial {:>2}: offered {:>10} sent {:>10} received {:>10} lost {:>8} {}",
            t.n,
            rate(t.offered_pps),
            t.sent,
            t.received,
            lost,
            if t.zero_loss { "zero loss" } else { "LOSS" }
        );
    }
    let _ = writeln!(
        s,
        "  {:<18} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "latency", "samples", "p50", "p99", "p99.9", "max"
    );
    for (k, p) in &r.latency {
        let _ = writeln!(
            s,
            "  {:<18} {:>8} {:>10} {:>10} {:>10} {:>10}",
            k,
            p.samples,
            dur_ns(p.p50_ns),
            dur_ns(p.p99_ns),
            dur_ns(p.p999_ns),
            dur_ns(p.max_ns)
        );
    }
    let drops: Vec<String> = r
        .drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        s,
        "  drops: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(" ")
        }
    );
    let cpu: Vec<String> = r
        .cpu_seconds
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k}={v:.2}"))
        .collect();
    let _ = writeln!(
        s,
        "  cpu s: {} (process {:.2}); max RSS {:.0} MiB",
        cpu.join(" "),
        r.cpu_seconds_process,
        r.rss_max_bytes as f64 / (1 << 20) as f64
    );
    let d = &r.detection;
    let _ = writeln!(
        s,
        "  detection: windows {} flows {} alerts {} evidence files {}",
        d.get("detect.windows_scored").unwrap_or(&0),
        d.get("detect.flows_scored").unwrap_or(&0),
        d.get("detect.alerts").unwrap_or(&0),
        d.get("evidence.files_written").unwrap_or(&0)
    );
    s
}

use std::fmt::Write as _;

fn plot(r: &BenchReport) -> String {
    use crate::output::plot::{svg, Band, Chart};
    let offered: Vec<_> = r.timeline.iter().map(|p| (p.t_s, p.offered_pps)).collect();
    let received: Vec<_> = r.timeline.iter().map(|p| (p.t_s, p.received_pps)).collect();
    let p99: Vec<_> = r
        .timeline
        .iter()
        .map(|p| (p.t_s, p.p99_ns as f64 / 1e3))
        .collect();
    let bands: Vec<Band> = r
        .trials
        .iter()
        .map(|t| Band {
            from_s: t.start_s,
            to_s: t.end_s,
            label: format!(
                "{:.2} M {}",
                t.offered_pps / 1e6,
                if t.zero_loss { "ok" } else { "loss" }
            ),
            ok: t.zero_loss,
        })
        .collect();
    let title = format!(
        "streamml-sensor bench --{}: {}",
        r.mode,
        match r.zero_loss_pps {
            Some(z) => format!("zero-loss {}", rate(z)),
            None => format!("received {}", rate(r.received_pps)),
        }
    );
    svg(&Chart {
        title: &title,
        offered: &offered,
        received: &received,
        p99_us: &p99,
        bands: &bands,
    })
}

fn write_file(p: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = OutputFile::create(p, &[])?;
    f.w.write_all(bytes)
        .with_context(|| format!("writing {}", p.display()))?;
    f.commit()?;
    Ok(())
}

/// Where streamml-pktgen is: STREAMML_PKTGEN, else next to this executable.
fn pktgen_path() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMML_PKTGEN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("streamml-pktgen")))
        .unwrap_or_else(|| PathBuf::from("streamml-pktgen"))
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let passive = a.live.iface.is_some();
    if usize::from(a.synthetic) + usize::from(a.generate) + usize::from(passive) != 1 {
        bail!("bench: give one of --synthetic, --generate or --iface IF (see streamml-sensor bench --help)");
    }
    if a.proto != "udp" && !a.generate {
        bail!(
            "--proto {}: only with --generate (streamml-pktgen's frames)",
            a.proto
        );
    }
    let sizes = parse_sizes(&a.size).map_err(anyhow::Error::msg)?;
    let rate_pps = parse_rate(&a.rate).map_err(anyhow::Error::msg)?;
    if !(a.resolution > 0.0 && a.resolution < 1.0) {
        bail!("--resolution {}: must be in (0, 1)", a.resolution);
    }
    for p in [&a.json, &a.plot].into_iter().flatten() {
        check_output(p, &[])?;
    }
    let settings = serde_json::json!({
        "size": a.size,
        "flows": a.flows,
        "proto": a.proto,
        "rate": a.rate,
        "count": a.count,
        "duration_s": a.live.duration,
        "trial_s": a.trial,
        "search": a.search,
        "resolution": a.resolution,
        "max_trials": a.max_trials,
        "episode_start_s": a.episode_start,
        "config": a.live.config,
    });
    // --generate: SIGINT/SIGTERM are taken by the capture loop (sigtimedwait), so they
    // are blocked before the first thread starts (threads inherit the mask); otherwise
    // the status printer would take the default action and skip the teardown.
    let _signals = (a.generate || passive).then(crate::engine::live::Signals::block);
    let mut status = Status::new(&a.status);
    let (tx, rx) = std::sync::mpsc::channel::<Progress>();
    let progress: Box<dyn FnMut(&Progress) + Send> = Box::new(move |p: &Progress| {
        let _ = tx.send(p.clone());
    });
    // Status lines are printed by this thread's helper as they come.
    let printer = std::thread::Builder::new()
        .name("bench-print".into())
        .spawn(move || {
            for p in rx {
                status.show(&p);
            }
            status.end();
        })
        .context("starting the status printer")?;
    let report = if a.synthetic {
        crate::capture::interrupt::install().context("installing signal handlers")?;
        let cfg = config::load_with(
            a.live.config.as_deref(),
            &Overrides {
                seed: a.live.seed,
                ring_mib: a.live.ring_mib,
                idle_timeout_s: a.live.idle_timeout,
                active_timeout_s: a.live.active_timeout,
                flow_capacity: a.live.flow_capacity,
                ring_capacity: a.live.ring_capacity,
                shards: a.live.shards,
                state_dir: a.live.state_dir.clone(),
                ..Overrides::default()
            },
        )?;
        let root = statedir::resolve(cfg.state_dir.as_deref())?;
        let (state, _lock) = StateDir::create_locked(&root)?;
        let shards = if cfg.shards > 0 {
            cfg.shards
        } else {
            crate::engine::limits::auto_shards(pipeline::default_shards(1), &cfg.flow_config())
        };
        let gen = GenConfig {
            sizes,
            flows: a.flows,
            rate_pps,
            duration: Duration::from_secs_f64(a.live.duration.unwrap_or(10.0)),
            count: a.count,
            episode: a.episode_start.map(|s| GenEpisode {
                start_s: s,
                duration_s: a.episode_duration,
                share: a.episode_share,
                target: Ipv4Addr::new(198, 19, 0, 80),
            }),
            ..GenConfig::default()
        };
        gen.validate().map_err(anyhow::Error::msg)?;
        bench::run_synthetic(
            SyntheticJob {
                gen,
                cfg,
                shards,
                state,
                stop: Some(|| crate::capture::interrupt::requested().is_some()),
                settings,
            },
            progress,
        )?
    } else if passive {
        let work = tempfile::tempdir().context("a work directory")?;
        bench::run_passive(
            PassiveJob {
                live: a.live.options()?,
                duration: Duration::from_secs_f64(a.live.duration.unwrap_or(10.0)),
                work: work.path().to_path_buf(),
                settings,
            },
            progress,
        )?
    } else {
        let FrameSizes::Fixed(size) = sizes else {
            bail!("--size imix: --generate sends one frame size (streamml-pktgen)");
        };
        if !(60..=1514).contains(&size) {
            bail!("--size {size}: must be in 60..=1514");
        }
        if a.episode_start.is_some() {
            bail!("--episode-start: only with --synthetic");
        }
        let rate = if a.search {
            RateMode::Search {
                resolution: a.resolution,
                max_trials: a.max_trials,
            }
        } else {
            match rate_pps {
                Some(r) => RateMode::Fixed(r),
                None => RateMode::Max,
            }
        };
        let mut live_args_iface = LiveArgsWithIface(&a.live);
        let live = live_args_iface.options()?;
        let work = tempfile::tempdir().context("a work directory")?;
        let job = GenerateJob {
            live,
            queues: a.live.queues.unwrap_or(2),
            size,
            flows: a.flows,
            proto: a.proto.clone(),
            trial: Duration::from_secs_f64(a.trial),
            rate,
            pktgen: pktgen_path(),
            work: work.path().to_path_buf(),
            settings,
        };
        bench::run_generate(job, progress)?
    };
    let _ = printer.join();
    print!("{}", table(&report));
    if let Some(p) = &a.json {
        let mut s = serde_json::to_vec_pretty(&report)?;
        s.push(b'\n');
        write_file(p, &s).context("--json")?;
    }
    if let Some(p) = &a.plot {
        write_file(p, plot(&report).as_bytes()).context("--plot")?;
    }
    if let Some(sig) = report.interrupted_by_signal {
        super::warn(&format!(
            "interrupted by {}: the results cover the run up to it",
            crate::capture::interrupt::signal_name(sig)
        ));
        return Ok(ExitCode::from((128 + sig).clamp(0, 255) as u8));
    }
    Ok(ExitCode::SUCCESS)
}

/// Live options for the lab's interface (the interface name is replaced by the engine).
struct LiveArgsWithIface<'a>(&'a LiveArgs);

impl LiveArgsWithIface<'_> {
    fn options(&mut self) -> anyhow::Result<crate::engine::live::LiveOptions> {
        let mut la = self.0.clone();
        la.iface = Some(crate::capture::netns::SENSOR_IF.into());
        la.options()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max"), Ok(None));
        assert_eq!(parse_rate("1.5M"), Ok(Some(1.5e6)));
        assert_eq!(parse_rate("200k"), Ok(Some(2e5)));
        assert_eq!(parse_rate("500000"), Ok(Some(5e5)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("x").is_err());
        assert!(parse_rate("-5").is_err());
    }
}
