//! `streamml-sensor synth`: a deterministic synthetic capture (benign traffic, optional
//! attack episodes), for tests, benchmarks and the quick start.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{non_negative_seconds, positive_seconds};
use crate::capture::inject;
use crate::capture::synth::{Episode, EpisodeKind, SynthConfig, SynthSource};
use crate::output::{check_output, OutputFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthPreset {
    /// Benign traffic only.
    Benign,
    /// The benchmark capture: ~1M packets, ~100k flows.
    Bench,
    /// Benign background with one episode of each attack kind.
    Labelled,
    /// ~55 minutes at ~1 500 pps: a SYN flood followed by 12 quiet minutes, then a
    /// low-rate brute force, an infected host's slow outbound scan and C2 beaconing
    /// (`--minutes` is ignored).
    Deployment,
    /// The deployment preset's benign background alone (~1 500 pps), `--minutes` long.
    Background,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long, value_enum, default_value = "benign")]
    pub preset: SynthPreset,
    #[arg(long, default_value = "1")]
    pub seed: u64,
    /// Length of the capture in minutes (benign and labelled presets).
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    pub minutes: f64,
    /// Stop after this many packets.
    #[arg(long)]
    pub max_packets: Option<u64>,
    /// Write nanosecond timestamps.
    #[arg(long)]
    pub nanos: bool,
    /// Start the capture this many seconds after the default start time (to continue an
    /// earlier capture of `--minutes M`: `--start-s 60*M`).
    #[arg(long, value_name = "SECONDS", value_parser = non_negative_seconds)]
    pub start_s: Option<f64>,
    /// Add an attack episode: `KIND:START_S:DURATION_S[:RATE_PPS]`, KIND one of syn_flood,
    /// port_scan, udp_flood, exfil; START_S from the start of the capture. Repeatable.
    /// Without a rate, the labelled preset's rate for that kind (60 for kinds other than
    /// syn_flood, port_scan, udp_flood).
    #[arg(long, value_name = "KIND:START:DURATION[:PPS]", value_parser = parse_episode)]
    pub episode: Vec<Episode>,
    /// Mix a recorded capture (pcap or pcapng, Ethernet) into the generated traffic: its
    /// packets are retimed to start START_S seconds after the start of the capture (their
    /// relative timing kept) and merged in time order. Repeatable. See
    /// `--inject-addresses` and docs/detection.md ("Public attack captures").
    #[arg(long, value_name = "FILE@START_S")]
    pub inject: Vec<crate::capture::inject::Injection>,
    /// What happens to the injected packets' IPv4 addresses: `remap` moves them into the
    /// background's address plan (private ones to 198.18.96.0/20, public ones to
    /// 198.19.96.0/20, checksums updated), `keep` leaves them.
    #[arg(long, value_enum, default_value = "remap")]
    pub inject_addresses: crate::capture::inject::AddressMode,
    /// Where to write the episodes (attack kind, start, duration, addresses) as JSON.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Output pcap file (`-`: standard output, e.g. into `replay -`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match a.preset {
        SynthPreset::Benign => SynthConfig {
            seed: a.seed,
            duration_s: a.minutes * 60.0,
            ..SynthConfig::default()
        },
        SynthPreset::Bench => SynthConfig::bench_capture(a.seed),
        SynthPreset::Labelled => SynthConfig::labelled(a.seed, a.minutes),
        SynthPreset::Deployment => SynthConfig::deployment(a.seed),
        SynthPreset::Background => SynthConfig {
            episodes: Vec::new(),
            duration_s: a.minutes * 60.0,
            ..SynthConfig::deployment(a.seed)
        },
    };
    if let Some(s) = a.start_s {
        cfg.start_ns = cfg.start_ns.saturating_add((s * 1e9).round() as u64);
    }
    let n = cfg.episodes.len();
    for (i, e) in a.episode.iter().enumerate() {
        let mut e = e.clone();
        // Addresses as the labelled preset gives them (198.18.200+i.x -> 198.19.0.x).
        e.attacker = [198, 18, 200 + ((n + i) % 50) as u8, 7 + i as u8];
        e.target = match e.kind {
            EpisodeKind::Exfil => [198, 19, 250, 9],
            _ => [198, 19, 0, 10 + i as u8],
        };
        cfg.episodes.push(e);
    }
    if a.max_packets.is_some() {
        cfg.max_packets = a.max_packets;
    }
    let stdout = a.output.as_os_str() == "-";
    // Both outputs checked before anything is generated.
    if !stdout {
        check_output(&a.output, &[])?;
    }
    if let Some(lp) = &a.labels {
        check_output(lp, &[])?;
    }
    // Injected captures are read (and checked) before anything is written.
    let mut loaded = Vec::new();
    let mut remapper = inject::Remapper::default();
    for inj in &a.inject {
        inject::check_input(&inj.path)?;
        if inj.start_s >= cfg.duration_s {
            anyhow::bail!(
                "--inject {}@{}: starts at or after the end of the capture ({} s)",
                inj.path.display(),
                inj.start_s,
                cfg.duration_s
            );
        }
        loaded.push(inject::load(
            inj,
            cfg.start_ns,
            a.inject_addresses,
            &mut remapper,
        )?);
    }
    if let Some(lp) = &a.labels {
        let injected: Vec<&inject::InjectedLabel> = loaded.iter().map(|l| &l.label).collect();
        let j = serde_json::json!({
            "seed": cfg.seed,
            "start_ns": cfg.start_ns,
            "duration_s": cfg.duration_s,
            "episodes": cfg.episodes,
            "injected": injected,
            "inject_addresses": a.inject_addresses,
        });
        let mut f = OutputFile::create(lp, &[])?;
        f.w.write_all(&serde_json::to_vec_pretty(&j)?)
            .with_context(|| format!("writing {}", lp.display()))?;
        f.commit()?;
    }
    let max_packets = cfg.max_packets;
    let mut src = inject::MixSource::new(SynthSource::new(cfg), loaded, max_packets);
    if stdout {
        let w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let n = crate::capture::synth::write_pcap(&mut src, w, a.nanos, |_| {})
            .context("writing to standard output")?;
        eprintln!("wrote {n} packets to standard output");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = OutputFile::create(&a.output, &[])?;
    let n = crate::capture::synth::write_pcap(&mut src, &mut out.w, a.nanos, |_| {})
        .with_context(|| format!("writing {}", a.output.display()))?;
    out.commit()?;
    eprintln!("wrote {n} packets to {}", a.output.display());
    Ok(ExitCode::SUCCESS)
}

/// `KIND:START_S:DURATION_S[:RATE_PPS]` (see `--episode`).
fn parse_episode(s: &str) -> Result<Episode, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(3..=4).contains(&parts.len()) {
        return Err("expected KIND:START_S:DURATION_S[:RATE_PPS]".into());
    }
    let kind = EpisodeKind::ALL
        .into_iter()
        .find(|k| k.name() == parts[0])
        .ok_or_else(|| {
            let names: Vec<&str> = EpisodeKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown kind {:?} (one of {})", parts[0], names.join(", "))
        })?;
    let num = |what: &str, v: &str, lo: f64, hi: f64| -> Result<f64, String> {
        let x: f64 = v
            .parse()
            .map_err(|_| format!("{what} {v:?}: not a number"))?;
        if !x.is_finite() || x < lo || x > hi {
            return Err(format!("{what} {v}: must be between {lo} and {hi}"));
        }
        Ok(x)
    };
    let start_s = num("start", parts[1], 0.0, 1e7)?;
    let duration_s = num("duration", parts[2], 0.001, 1e7)?;
    // Not an exhaustive match: kinds added later default to the exfil rate.
    let default_rate = [
        (EpisodeKind::SynFlood, 2000.0),
        (EpisodeKind::PortScan, 500.0),
        (EpisodeKind::UdpFlood, 1500.0),
    ]
    .into_iter()
    .find(|(k, _)| *k == kind)
    .map_or(60.0, |(_, r)| r);
    let rate_pps = match parts.get(3) {
        Some(v) => num("rate", v, 0.001, 1e7)?,
        None => default_rate,
    };
    Ok(Episode {
        kind,
        start_s,
        duration_s,
        rate_pps,
        attacker: [0; 4],
        target: [0; 4],
    })
}
