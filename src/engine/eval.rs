//! `streamml-sensor eval-windows`: detection quality on the labelled generator. For each
//! seed, a labelled capture is generated, its window-mode feature stream is scored by the
//! sensor's detector (the config's first window profile, score-then-learn, one shard),
//! and the ROC-AUC is computed over the windows after the trees' warm-up — the same
//! windows `scripts/river_window_auc.py` scores with River's usual pipeline.

use std::sync::Arc;

use anyhow::bail;

use crate::capture::synth::{EpisodeKind, SynthConfig, SynthSource};
use crate::config::Config;
use crate::engine::pipeline::{self, PipelineConfig};
use crate::engine::scorer::{ScoredWindow, ScorerSetup};
use crate::shard::FullPolicy;
use crate::wire::DecodeOptions;

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
        latency: None,
        models: None,
        flow_export: None,
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
    let workers = crate::engine::builder::scorers(&setup).map_err(anyhow::Error::msg)?;
    let res = pipeline::run(&mut src, &pcfg, workers);
    if let Some(f) = res.failed.first() {
        return Err(pipeline::RunFailed(f.to_string()).into());
    }
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
