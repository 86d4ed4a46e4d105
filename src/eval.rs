//! `streamml-sensor eval-windows`: detection quality on the labelled generator. For each
//! seed, a labelled capture is generated, its window-mode feature stream is scored by the
//! sensor's detector (the config's first window profile, score-then-learn, one shard),
//! and the ROC-AUC is computed over the windows after the trees' warm-up — the same
//! windows `scripts/river_window_auc.py` scores with River's usual pipeline.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use crate::capture::synth::{EpisodeKind, SynthConfig, SynthSource};
use crate::config::Config;
use crate::detect::features::WINDOW_FEATURES;
use crate::pipeline::{self, PipelineConfig};
use crate::scorer::{ScoredWindow, Scorer, ScorerSetup};
use crate::shard::FullPolicy;
use crate::wire::DecodeOptions;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Seeds of the labelled captures (and of the trees: profile seed + capture seed).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
    pub seeds: Vec<u64>,
    /// Minutes of traffic per capture.
    #[arg(long, default_value = "20")]
    pub minutes: f64,
    /// Configuration file (default: the embedded one); its first window profile is used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Windows excluded from the AUC at the start (River's window_size).
    #[arg(long, default_value = "250")]
    pub warmup: usize,
    /// Write every window's raw features and label (input of scripts/river_window_auc.py).
    #[arg(long, value_name = "FILE")]
    pub features_csv: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// ROC-AUC by rank sum; ties get the average rank. NaN without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = v.len();
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for x in &v[i..=j] {
            if x.1 {
                rank_sum += r;
            }
        }
        i = j + 1;
    }
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = n as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// One labelled window.
#[derive(Clone, Debug)]
pub struct LabelledWindow {
    pub w: ScoredWindow,
    /// The episode kind the window overlaps, if any.
    pub kind: Option<EpisodeKind>,
}

/// Scores the window stream of one labelled capture with profile `profile` of `cfg`.
pub fn score_labelled(
    cfg: &Config,
    profile: usize,
    synth: SynthConfig,
) -> anyhow::Result<Vec<LabelledWindow>> {
    let mut cfg = cfg.clone();
    let mut p = cfg.profiles[profile].clone();
    p.index = 0;
    p.mode = crate::config::Mode::Window;
    cfg.profiles = vec![p];
    let cfg = Arc::new(cfg);
    let episodes = synth.episodes.clone();
    let start_ns = synth.start_ns;
    let mut src = SynthSource::new(synth);
    let setup = ScorerSetup {
        cfg: cfg.clone(),
        shards: 1,
        key_mode: cfg.key,
        sender: None,
        blocking: true,
        window_filters: vec![None],
        flow_output: None,
        keep_windows: true,
    };
    let pcfg = PipelineConfig {
        shards: 1,
        ring_capacity: 1 << 14,
        key_mode: cfg.key,
        policy: FullPolicy::Wait,
        decode: DecodeOptions {
            decode_tunnels: cfg.decode_tunnels,
        },
    };
    let workers = pipeline::build_workers(1, |s| Scorer::new(s, setup.clone()))
        .map_err(anyhow::Error::msg)?;
    let res = pipeline::run(&mut src, &pcfg, workers);
    if let Some(e) = res.source_error {
        bail!("generator: {e}");
    }
    let mut out = Vec::new();
    for w in res.workers {
        for sw in w.scored_windows() {
            let kind = episodes
                .iter()
                .find(|e| {
                    let s = start_ns + (e.start_s * 1e9) as u64;
                    let t = s + (e.duration_s * 1e9) as u64;
                    sw.vector.start_ns < t && sw.vector.end_ns > s
                })
                .map(|e| e.kind);
            out.push(LabelledWindow {
                w: sw.clone(),
                kind,
            });
        }
    }
    out.sort_by_key(|x| x.w.vector.start_ns);
    Ok(out)
}

/// Per-seed result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub auc: f64,
    pub windows: usize,
    pub anomalous: usize,
    pub per_kind: std::collections::BTreeMap<String, f64>,
    /// Windows that alerted, by kind ("benign" for none).
    pub alerts: std::collections::BTreeMap<String, u64>,
}

pub fn evaluate(ws: &[LabelledWindow], warmup: usize, seed: u64) -> SeedResult {
    let tail = &ws[warmup.min(ws.len())..];
    let scores: Vec<f64> = tail.iter().map(|x| x.w.score).collect();
    let labels: Vec<bool> = tail.iter().map(|x| x.kind.is_some()).collect();
    let mut per_kind = std::collections::BTreeMap::new();
    for k in EpisodeKind::ALL {
        let sel: Vec<&LabelledWindow> = tail
            .iter()
            .filter(|x| x.kind.is_none() || x.kind == Some(k))
            .collect();
        let s: Vec<f64> = sel.iter().map(|x| x.w.score).collect();
        let l: Vec<bool> = sel.iter().map(|x| x.kind.is_some()).collect();
        per_kind.insert(k.name().to_string(), roc_auc(&s, &l));
    }
    let mut alerts = std::collections::BTreeMap::new();
    for x in ws {
        if x.w.alerted {
            *alerts
                .entry(x.kind.map_or("benign", |k| k.name()).to_string())
                .or_insert(0) += 1;
        }
    }
    SeedResult {
        seed,
        auc: roc_auc(&scores, &labels),
        windows: tail.len(),
        anomalous: labels.iter().filter(|l| **l).count(),
        per_kind,
        alerts,
    }
}

/// `streamml-sensor eval-windows`.
pub fn eval_command(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::replay::load_config(a.config.as_deref(), None, None)?;
    let Some(profile) = cfg.profiles.iter().position(|p| p.mode.window()) else {
        bail!("{}: no profile with mode window or both", cfg.source);
    };
    let mut csv = match &a.features_csv {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    if let Some(w) = &mut csv {
        // The profile's features only: River scores the same feature stream.
        write!(w, "seed,window_start_ns,label,kind,score")?;
        for &i in &cfg.profiles[profile].window_features {
            write!(w, ",{}", WINDOW_FEATURES[i])?;
        }
        writeln!(w)?;
    }
    let mut results = Vec::new();
    for &seed in &a.seeds {
        let mut c = cfg.clone();
        c.profiles[profile].seed = c.profiles[profile].seed.wrapping_add(seed);
        let ws = score_labelled(&c, profile, SynthConfig::labelled(seed, a.minutes))?;
        if let Some(w) = &mut csv {
            for x in &ws {
                write!(
                    w,
                    "{seed},{},{},{},{}",
                    x.w.vector.start_ns,
                    u8::from(x.kind.is_some()),
                    x.kind.map_or("benign", |k| k.name()),
                    x.w.score
                )?;
                for &i in &cfg.profiles[profile].window_features {
                    write!(w, ",{}", x.w.vector.values[i])?;
                }
                writeln!(w)?;
            }
        }
        let r = evaluate(&ws, a.warmup, seed);
        eprintln!(
            "seed {seed}: ROC-AUC {:.4} over {} windows ({} anomalous); per kind {:?}; alerted windows {:?}",
            r.auc, r.windows, r.anomalous, r.per_kind, r.alerts
        );
        results.push(r);
    }
    let mean = results.iter().map(|r| r.auc).sum::<f64>() / results.len().max(1) as f64;
    eprintln!("mean ROC-AUC over {} seeds: {mean:.4}", results.len());
    if let Some(w) = &mut csv {
        w.flush()?;
    }
    if let Some(p) = &a.out {
        let j = serde_json::json!({
            "profile": cfg.profiles[profile].name,
            "features": cfg.profiles[profile].window_features.iter().map(|&i| WINDOW_FEATURES[i]).collect::<Vec<_>>(),
            "minutes": a.minutes,
            "warmup": a.warmup,
            "mean_auc": mean,
            "seeds": results,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&j)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_basics() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.9], &[false, false, true]), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.2, 0.1], &[false, false, true]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), 0.5);
        assert!(roc_auc(&[0.5], &[true]).is_nan());
    }
}
