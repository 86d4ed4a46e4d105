//! `streamml-sensor eval-windows`: window-mode detection quality on labelled captures of
//! the generator (ROC-AUC per seed; see `engine::eval`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::capture::synth::SynthConfig;
use crate::detect::features::WINDOW_FEATURES;
use crate::engine::eval::{evaluate, score_labelled};
use crate::output::{check_output, OutputFile};

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

/// `streamml-sensor eval-windows`.
pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::config::load_with(a.config.as_deref(), &Default::default())?;
    let Some(profile) = cfg.profiles.iter().position(|p| p.mode.window()) else {
        bail!("{}: no profile with mode window or both", cfg.source);
    };
    if let Some(p) = &a.out {
        check_output(p, &[])?;
    }
    let mut csv = match &a.features_csv {
        Some(p) => Some(OutputFile::create(p, &[])?),
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
    if let Some(w) = csv {
        w.commit()?;
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
        let mut f = OutputFile::create(p, &[])?;
        f.w.write_all(&serde_json::to_vec_pretty(&j)?)
            .with_context(|| format!("writing {}", p.display()))?;
        f.commit()?;
    }
    Ok(ExitCode::SUCCESS)
}
