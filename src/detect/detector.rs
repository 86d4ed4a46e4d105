//! One detector: a profile's feature vector → scaler → Half-Space Trees (score, then
//! learn) → threshold → verdict with an explanation. One per profile, mode and shard,
//! owned by the shard's scorer thread.
//!
//! Explanations: for an alerting vector, each feature in turn is set to its typical
//! (scaled) value — an exponentially weighted mean of what the model learned — and the
//! vector is re-scored without learning. The features whose replacement lowers the score
//! most drove the alert. Costs d extra tree walks per alert, nothing per normal sample.

use crate::detect::checkpoint::{corrupt, CheckpointError, Reader, Writer};
use crate::detect::hst::{HalfSpaceTrees, HstParams, ScaledHst};
use crate::detect::scale::{MinMaxScaler, RobustConfig, RobustScaler, Scaler};
use crate::detect::threshold::{Threshold, Thresholder};

/// Weight of a new sample in the typical-value average.
const TYPICAL_ALPHA: f64 = 0.02;

/// `require_out_of_range`: an alert needs a feature more than this many spans (robust
/// scaler's 5-95 % span) beyond the range the scaler learned. It was "clamped to the edge",
/// i.e. beyond the scaler's margin of 3 spans; on log1p counts that is x700 past the 95th
/// percentile, so a 60 s exfil flow (3 600 packets, 4 MB, where benign flows peak at ~60
/// packets) passed only when an earlier flood had squeezed the fit: 8 of 10 labelled seeds.
/// With 2 spans (x80 on log1p counts): 20 of 20 seeds, still no benign alert in 6 h of
/// `--preset benign` (docs/detection.md).
const GATE_SPANS: f64 = 2.0;

/// One feature's part in an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    /// Index into the detector's feature list.
    pub feature: usize,
    /// The feature's value in the alerting sample (raw units).
    pub value: f64,
    /// Its typical value (raw units, weighted mean of learned samples).
    pub typical: f64,
    /// Score drop when this feature alone is set to its typical value.
    pub contribution: f64,
}

/// The result of one observed sample that crossed the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub score: f64,
    pub threshold: f64,
    pub top: Vec<Contribution>,
}

/// Which feature list a detector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectorKind {
    Flow,
    Window,
    /// Host events (mode `host`).
    Host,
}

/// Feature scaling in front of the trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScalingKind {
    /// River's MinMaxScaler, exactly (parity mode; drifts after one extreme value).
    MinMax,
    /// The sensor's default: log1p, then a robust, slowly adapting range with clamping.
    #[default]
    Robust,
}

/// What a detector needs: its features, the trees, the scaling and the threshold (the
/// configuration builds it from a profile).
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// The profile's name, for error messages.
    pub name: String,
    pub kind: DetectorKind,
    /// Indices into the feature list of `kind` ([`FLOW_FEATURES`](crate::detect::features::FLOW_FEATURES) or
    /// [`WINDOW_FEATURES`](crate::detect::features::WINDOW_FEATURES)).
    pub features: Vec<usize>,
    /// Per selected feature: apply log1p before scaling.
    pub log1p: Vec<bool>,
    pub n_trees: usize,
    pub height: usize,
    pub window_size: usize,
    pub seed: u64,
    pub scaling: ScalingKind,
    /// Samples before the threshold sees scores (beyond the model's own warm-up).
    pub warmup: u64,
    pub threshold: Threshold,
    pub require_out_of_range: bool,
}

/// Clone: a copy for a checkpoint, taken at a tick and encoded off the scorer thread.
#[derive(Clone)]
pub struct Detector {
    model: ScaledHst,
    thr: Thresholder,
    /// Samples scored so far.
    pub seen: u64,
    /// Samples scored after warm-up (those the threshold saw).
    pub scored: u64,
    extra_warmup: u64,
    typical_raw: Vec<f64>,
    typical_scaled: Vec<f64>,
    scaled: Vec<f64>,
    probe: Vec<f64>,
    /// Highest score seen (for reports).
    pub max_score: f64,
    require_out_of_range: bool,
    gate: (f64, f64),
    /// Scores over the threshold with every feature inside the learned range.
    pub gated: u64,
    /// Samples scored but not learnt ([`Learn`]).
    pub not_learnt: u64,
}

/// Whether [`Detector::observe_with`] learns the sample after scoring it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    Always,
    /// Score only (the sample belongs to an open incident).
    Never,
    /// Learn unless it alerts (a window that alerted is not the new normal).
    UnlessAlerting,
}

impl Detector {
    pub fn new(p: &DetectorConfig) -> Result<Detector, String> {
        let (idx, log1p, kind) = (&p.features, &p.log1p, p.kind);
        let names: Vec<&str> = idx
            .iter()
            .map(|&i| match kind {
                DetectorKind::Flow => crate::detect::features::FLOW_FEATURES[i],
                DetectorKind::Window => crate::detect::features::WINDOW_FEATURES[i],
                DetectorKind::Host => crate::detect::features::HOST_FEATURES[i],
            })
            .collect();
        let d = names.len();
        let params = HstParams {
            n_trees: p.n_trees as u32,
            height: p.height as u32,
            window_size: p.window_size as u32,
            seed: p.seed,
        };
        let hst = HalfSpaceTrees::new(params, &names, std::iter::empty::<(&str, (f64, f64))>())
            .map_err(|e| format!("profile \"{}\": hst: {e}", p.name))?;
        let mut gate = (0.0, 1.0);
        let scaler = match p.scaling {
            ScalingKind::MinMax => Scaler::MinMax(MinMaxScaler::new(d)),
            ScalingKind::Robust => {
                let mut rc = RobustConfig::new(d, p.window_size as u32);
                // The learned 5-95 % range maps to [m, m + 1] / (2m + 1); one span is
                // 1 / (2m + 1) of [0, 1].
                let (m, g) = (rc.margin, GATE_SPANS.min(rc.margin));
                gate = ((m - g) / (2.0 * m + 1.0), (m + 1.0 + g) / (2.0 * m + 1.0));
                rc.log1p = log1p.clone();
                Scaler::Robust(
                    RobustScaler::new(rc)
                        .map_err(|e| format!("profile \"{}\": scaling: {e}", p.name))?,
                )
            }
        };
        let model =
            ScaledHst::new(scaler, hst).map_err(|e| format!("profile \"{}\": {e}", p.name))?;
        Ok(Detector {
            model,
            thr: Thresholder::new(p.threshold),
            seen: 0,
            scored: 0,
            extra_warmup: p.warmup,
            typical_raw: vec![f64::NAN; d],
            typical_scaled: vec![f64::NAN; d],
            scaled: vec![0.0; d],
            probe: vec![0.0; d],
            max_score: 0.0,
            require_out_of_range: p.require_out_of_range,
            gate,
            gated: 0,
            not_learnt: 0,
        })
    }

    pub fn n_features(&self) -> usize {
        self.typical_raw.len()
    }

    /// True once scores may alert (scaler, trees and the profile's extra warm-up done).
    pub fn is_warm(&self) -> bool {
        self.model.is_warm() && self.seen > self.extra_warmup
    }

    /// Scores `x` (then learns it). Returns the score, and a verdict when it alerts.
    ///
    /// The score is computed first without learning; only an alerting sample is explained
    /// (against the same reference window it was scored with) before it is learned.
    pub fn observe(&mut self, x: &[f64]) -> (f64, Option<Verdict>) {
        self.observe_with(x, Learn::Always)
    }

    /// [`observe`](Self::observe) with a say in what is learnt: an incident must not
    /// become the new normal (learning hygiene). A sample not learnt is still scored and
    /// counted in `not_learnt`.
    pub fn observe_with(&mut self, x: &[f64], learn: Learn) -> (f64, Option<Verdict>) {
        self.seen += 1;
        let warm_before = self.is_warm();
        let s = match self.model.score_one(x) {
            Ok(s) => s,
            Err(_) => return (0.0, None), // dimension fixed at construction: unreachable
        };
        self.scaled.copy_from_slice(self.model.last_scaled());
        let mut verdict = None;
        if warm_before && s.raw.is_some() {
            self.scored += 1;
            if s.score > self.max_score {
                self.max_score = s.score;
            }
            let (alert, t) = self.thr.check(s.score);
            if alert {
                if self.require_out_of_range
                    && !self
                        .scaled
                        .iter()
                        .any(|&v| v <= self.gate.0 || v >= self.gate.1)
                {
                    self.gated += 1;
                } else {
                    verdict = Some(Verdict {
                        score: s.score,
                        threshold: t,
                        top: self.explain(s.score, x),
                    });
                }
            }
        }
        let skip = match learn {
            Learn::Always => false,
            Learn::Never => true,
            Learn::UnlessAlerting => verdict.is_some(),
        };
        if skip {
            self.not_learnt += 1;
        } else {
            let _ = self.model.learn_one(x);
            self.update_typical(x);
        }
        (s.score, verdict)
    }

    fn update_typical(&mut self, x: &[f64]) {
        for (j, (&v, &sv)) in x.iter().zip(&self.scaled).enumerate() {
            if v.is_finite() {
                let t = &mut self.typical_raw[j];
                *t = if t.is_nan() {
                    v
                } else {
                    *t + TYPICAL_ALPHA * (v - *t)
                };
            }
            if sv.is_finite() {
                let t = &mut self.typical_scaled[j];
                *t = if t.is_nan() {
                    sv
                } else {
                    *t + TYPICAL_ALPHA * (sv - *t)
                };
            }
        }
    }

    fn explain(&mut self, score: f64, x: &[f64]) -> Vec<Contribution> {
        let d = x.len();
        let mut out: Vec<Contribution> = Vec::with_capacity(d);
        #[allow(clippy::needless_range_loop)] // j indexes three arrays and the model
        for j in 0..d {
            self.probe.copy_from_slice(&self.scaled);
            if self.typical_scaled[j].is_finite() {
                self.probe[j] = self.typical_scaled[j];
            }
            let s = self
                .model
                .hst()
                .score_one(&self.probe)
                .map(|s| s.score)
                .unwrap_or(score);
            out.push(Contribution {
                feature: j,
                value: x[j],
                typical: self.typical_raw[j],
                contribution: score - s,
            });
        }
        out.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then(a.feature.cmp(&b.feature))
        });
        out.truncate(3);
        out
    }

    /// The checkpoint of the model (scaler + trees).
    pub fn model(&self) -> &ScaledHst {
        &self.model
    }

    pub fn set_model(&mut self, m: ScaledHst) {
        self.model = m;
    }
}

/// Layout version of [`Detector::encode_state`]'s payload (inside the checkpoint container).
const STATE_LAYOUT: u32 = 1;

impl Detector {
    /// Appends everything the detector has learned to a checkpoint payload, so that a
    /// detector restored from it ([`Detector::decode_state_into`]) scores and learns the
    /// next sample exactly as this one would: the trees and the scaler, the threshold's
    /// score window, the counters that gate warm-up (`seen`, `scored`) and the typical
    /// values explanations use. Not saved: scratch buffers and report-only counters'
    /// meaning beyond their values (`max_score`, `gated` continue).
    pub fn encode_state(&self, w: &mut Writer) {
        w.u32(STATE_LAYOUT);
        self.model.hst().encode(w);
        self.model.scaler().encode(w);
        self.thr.encode(w);
        w.u64(self.seen);
        w.u64(self.scored);
        w.f64(self.max_score);
        w.u64(self.gated);
        w.u32(self.typical_raw.len() as u32);
        for (&a, &b) in self.typical_raw.iter().zip(&self.typical_scaled) {
            w.f64(a);
            w.f64(b);
        }
    }

    /// Restores a state written by [`Detector::encode_state`] into this detector, built
    /// from the same configuration. Everything is decoded and checked first (the trees'
    /// and scaler's own invariants, then that their shape is this detector's: features,
    /// trees, height, window, seed, threshold window); on any error `self` is unchanged
    /// (still cold) and the error says what did not fit.
    pub fn decode_state_into(&mut self, r: &mut Reader<'_>) -> Result<(), CheckpointError> {
        let layout = r.u32("detector state layout")?;
        if layout != STATE_LAYOUT {
            return Err(corrupt(format!(
                "detector state layout {layout} (this build reads {STATE_LAYOUT})"
            )));
        }
        let hst = HalfSpaceTrees::decode(r)?;
        let scaler = Scaler::decode(r)?;
        let cur = self.model.hst();
        if hst.params() != cur.params() || hst.feature_names() != cur.feature_names() {
            return Err(corrupt(format!(
                "trees {:?} over {:?} do not match the configured {:?} over {:?}",
                hst.params(),
                hst.feature_names(),
                cur.params(),
                cur.feature_names()
            )));
        }
        if std::mem::discriminant(&scaler) != std::mem::discriminant(self.model.scaler())
            || scaler.n_features() != self.model.scaler().n_features()
        {
            return Err(corrupt(
                "scaler kind or size does not match the configuration",
            ));
        }
        if let (Scaler::Robust(a), Scaler::Robust(b)) = (&scaler, self.model.scaler()) {
            if a.config() != b.config() {
                return Err(corrupt(
                    "robust scaler settings do not match the configuration",
                ));
            }
        }
        let model = ScaledHst::new(scaler, hst)
            .map_err(|e| corrupt(format!("scaler and trees disagree: {e}")))?;
        let mut thr = Thresholder::new(self.thr.kind());
        thr.decode_into(r)?;
        let seen = r.u64("seen")?;
        let scored = r.u64("scored")?;
        let max_score = r.f64("max_score")?;
        let gated = r.u64("gated")?;
        let d = r.count("typical values", 16)?;
        if d != self.typical_raw.len() {
            return Err(corrupt(format!(
                "{d} typical values for {} features",
                self.typical_raw.len()
            )));
        }
        let mut raw = Vec::with_capacity(d);
        let mut scaled = Vec::with_capacity(d);
        for _ in 0..d {
            raw.push(r.f64("typical value")?);
            scaled.push(r.f64("typical scaled value")?);
        }
        if scored > seen {
            return Err(corrupt(format!("scored = {scored} exceeds seen = {seen}")));
        }
        self.model = model;
        self.thr = thr;
        self.seen = seen;
        self.scored = scored;
        self.max_score = max_score;
        self.gated = gated;
        self.typical_raw = raw;
        self.typical_scaled = scaled;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Profile, RawConfig};

    fn profile(extra: &str) -> Profile {
        let text = format!(
            "[[profile]]\nname = \"t\"\nmode = \"window\"\nwindow_features = [\"packets\", \"bytes\", \"syn_share\"]\n\
             [profile.hst]\nn_trees = 10\nheight = 6\nwindow_size = 50\nseed = 3\n{extra}"
        );
        RawConfig::parse(&text, "t")
            .unwrap()
            .validate("t")
            .unwrap()
            .profiles
            .remove(0)
    }

    #[test]
    fn flags_an_outlier_and_explains_it() {
        let p = profile("[profile.threshold]\nquantile = 0.99\nquantile_window = 100\n");
        assert!(matches!(p.threshold, Threshold::Quantile { .. }));
        let mut d = Detector::new(&p.detector_config(DetectorKind::Window)).unwrap();
        let mut x = 7u64;
        let mut rnd = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut alerts = 0;
        for _ in 0..600 {
            let v = [
                100.0 + 20.0 * rnd(),
                50_000.0 + 10_000.0 * rnd(),
                0.02 * rnd(),
            ];
            alerts += d.observe(&v).1.is_some() as u32;
        }
        assert!(d.is_warm());
        // Noise with q = 0.99 and alert scores clipped in the history: a bounded rate.
        assert!(alerts <= 60, "{alerts}");
        // A SYN flood window: many packets, small, mostly SYN.
        let (s, v) = d.observe(&[2000.0, 120_000.0, 0.95]);
        let v = v.expect("the flood window alerts");
        assert!(s > 0.5);
        assert!(
            v.top.iter().any(|c| c.feature == 0 || c.feature == 2),
            "{:?}",
            v.top
        );
        assert!(v.top[0].contribution > 0.0);
    }

    /// A detector restored from another's checkpoint behaves exactly as the original
    /// continued: same scores, same verdicts, for the next thousand samples; a damaged or
    /// mismatched state is an error and leaves the target cold.
    #[test]
    fn restored_state_continues_bit_for_bit() {
        let p = profile("[profile.threshold]\nquantile = 0.99\nquantile_window = 100\n");
        let cfg = p.detector_config(DetectorKind::Window);
        let mut a = Detector::new(&cfg).unwrap();
        let mut x = 11u64;
        let mut rnd = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut sample = move |k: u32| {
            let spike = if k.is_multiple_of(97) { 30.0 } else { 1.0 };
            [
                spike * (100.0 + 20.0 * rnd()),
                50_000.0 + 10_000.0 * rnd(),
                0.02 * rnd(),
            ]
        };
        for k in 0..400 {
            a.observe(&sample(k));
        }
        assert!(a.is_warm());
        let mut w = Writer::new();
        a.encode_state(&mut w);
        let bytes = w.finish();
        let mut b = Detector::new(&cfg).unwrap();
        assert!(!b.is_warm());
        let mut r = Reader::open(&bytes).unwrap();
        b.decode_state_into(&mut r).unwrap();
        r.finish().unwrap();
        assert!(b.is_warm());
        let mut alerts = 0;
        for k in 400..1400 {
            let v = sample(k);
            let (sa, va) = a.observe(&v);
            let (sb, vb) = b.observe(&v);
            assert_eq!(sa.to_bits(), sb.to_bits(), "sample {k}");
            assert_eq!(va, vb, "sample {k}");
            alerts += va.is_some() as u32;
        }
        assert!(alerts > 0, "the spikes alert");
        assert_eq!((a.seen, a.scored, a.gated), (b.seen, b.scored, b.gated));

        // Another configuration (other trees): refused, target untouched.
        let other = profile("[profile.threshold]\nquantile = 0.99\nquantile_window = 50\n");
        let mut c = Detector::new(&other.detector_config(DetectorKind::Window)).unwrap();
        let e = c
            .decode_state_into(&mut Reader::open(&bytes).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("quantile window"), "{e}");
        assert!(!c.is_warm() && c.seen == 0);
        // Every truncation of the payload is an error, never a panic.
        let payload_len = bytes.len() - 28;
        for cut in (0..payload_len).step_by(97) {
            let mut c = Detector::new(&cfg).unwrap();
            let mut r = Reader::over_payload(&bytes[24..24 + cut]);
            assert!(c.decode_state_into(&mut r).is_err(), "cut {cut}");
            assert_eq!(c.seen, 0);
        }
    }
}
