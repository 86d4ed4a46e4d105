//! Online scaling of feature vectors to [0, 1] in front of Half-Space Trees.
//!
//! Two scalers (see `docs/hst.md` for the reasoning and the measurements):
//!
//! * [`MinMaxScaler`]: River 0.26.1's `preprocessing.MinMaxScaler`, exactly (hst.md §8). It is
//!   the parity mode: with it the sensor reproduces River's pipeline bit for bit. It is a poor
//!   default: one extreme value rescales every later input, so the trees' masses, collected
//!   under the old scale, no longer match the traffic, and normal samples score as anomalous
//!   for up to two windows (hst.md §13).
//! * [`RobustScaler`]: the sensor's default. Per feature: optional `log1p`, then a linear map
//!   fitted on quantiles of a sliding history (5 % and 95 % by default, nearest rank, plus a
//!   margin), then
//!   clamped to [0, 1]. An outlier moves a quantile by at most one rank, so a burst shorter
//!   than 5 % of the history does not move the scale at all; the parameters change only at
//!   refits (every `refit_every` samples, the HST window by default), so between refits the
//!   score-time and learn-time vectors are identical and the fused HST walk applies.
//!
//! Both take and produce plain `&[f64]` vectors in the model's feature order. The calling
//! pattern is River's pipeline: `transform` (score time, with the statistics before the
//! sample), then `learn`, which returns whether the statistics changed; if they did, the
//! learn-time vector is `transform` again.

use super::checkpoint::{corrupt, CheckpointError, Reader, Writer};

/// River's `MinMaxScaler`: running min and max over the whole stream, no window.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxScaler {
    min: Vec<f64>,
    max: Vec<f64>,
}

impl MinMaxScaler {
    /// `d` features, min = +∞ and max = −∞ (never seen).
    pub fn new(d: usize) -> Self {
        MinMaxScaler {
            min: vec![f64::INFINITY; d],
            max: vec![f64::NEG_INFINITY; d],
        }
    }
    pub fn n_features(&self) -> usize {
        self.min.len()
    }
    pub fn min(&self) -> &[f64] {
        &self.min
    }
    pub fn max(&self) -> &[f64] {
        &self.max
    }

    /// `stats.Min.update` / `stats.Max.update`: `if v < min`, `if v > max`; NaN never
    /// updates. Returns true if any statistic changed.
    pub fn learn(&mut self, x: &[f64]) -> bool {
        let mut changed = false;
        for ((&v, lo), hi) in x.iter().zip(&mut self.min).zip(&mut self.max) {
            if v < *lo {
                *lo = v;
                changed = true;
            }
            if v > *hi {
                *hi = v;
                changed = true;
            }
        }
        changed
    }

    /// `(v − min) / (max − min)`, or exactly 0.0 when the span is 0. Written as River
    /// writes it (a subtraction, then a division) so every bit matches. A feature never
    /// seen gives NaN (span −∞), as in River.
    pub fn transform(&self, x: &[f64], out: &mut [f64]) {
        for (((o, &v), &lo), &hi) in out.iter_mut().zip(x).zip(&self.min).zip(&self.max) {
            let span = hi - lo;
            *o = if span != 0.0 { (v - lo) / span } else { 0.0 };
        }
    }

    /// `transform(x)` with the statistics before `x`, then `learn(x)`, in one pass (the
    /// features are independent, so this equals the two calls). Returns `learn`'s result.
    pub fn transform_learn(&mut self, x: &[f64], out: &mut [f64]) -> bool {
        let mut changed = false;
        for (((o, &v), lo), hi) in out.iter_mut().zip(x).zip(&mut self.min).zip(&mut self.max) {
            let span = *hi - *lo;
            *o = if span != 0.0 { (v - *lo) / span } else { 0.0 };
            if v < *lo {
                *lo = v;
                changed = true;
            }
            if v > *hi {
                *hi = v;
                changed = true;
            }
        }
        changed
    }

    /// `learn` for a sample with absent features (`None`): they are not counted.
    pub fn learn_partial(&mut self, x: &[Option<f64>]) -> bool {
        let mut changed = false;
        for (j, v) in x.iter().enumerate() {
            if let Some(v) = *v {
                if v < self.min[j] {
                    self.min[j] = v;
                    changed = true;
                }
                if v > self.max[j] {
                    self.max[j] = v;
                    changed = true;
                }
            }
        }
        changed
    }

    /// `transform` for a sample with absent features: they stay absent.
    pub fn transform_partial(&self, x: &[Option<f64>], out: &mut [Option<f64>]) {
        for (j, (o, v)) in out.iter_mut().zip(x).enumerate() {
            *o = v.map(|v| {
                let span = self.max[j] - self.min[j];
                if span != 0.0 {
                    (v - self.min[j]) / span
                } else {
                    0.0
                }
            });
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u32(self.min.len() as u32);
        for (lo, hi) in self.min.iter().zip(&self.max) {
            w.f64(*lo);
            w.f64(*hi);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, CheckpointError> {
        let d = r.count("minmax feature count", 16)?;
        let mut s = MinMaxScaler::new(d);
        for j in 0..d {
            s.min[j] = r.f64("minmax min")?;
            s.max[j] = r.f64("minmax max")?;
        }
        Ok(s)
    }
}

/// Settings of the [`RobustScaler`]. Defaults: see [`RobustConfig::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct RobustConfig {
    /// Per feature: apply `sign(v)·ln(1 + |v|)` before scaling. Counts and byte totals
    /// span orders of magnitude; a flood at 10× the normal rate is then a shift of ln 10.
    pub log1p: Vec<bool>,
    /// Values kept per feature for the quantiles (a sliding window of samples).
    pub history: u32,
    /// Samples between refits once warm. Use the HST window size so the scale changes at
    /// most once per HST window.
    pub refit_every: u32,
    /// Samples before the first full fit; [`RobustScaler::is_warm`] is false until then.
    /// Before it, provisional fits at 1, 2, 4, 8, … samples keep the output usable.
    pub warmup: u32,
    /// Lower and upper quantile of the fit.
    pub q_lo: f64,
    pub q_hi: f64,
    /// Room on each side, in units of the quantile span. With 3.0 (the default) the central
    /// 90 % of the history maps to the middle seventh of [0, 1], and a value is clamped to
    /// 0 or 1 when it lies more than three spans beyond a quantile. Normal traffic is then
    /// concentrated, so most tree splits fall between it and the extremes (see docs/hst.md
    /// for the measurements behind the choice).
    pub margin: f64,
    /// Smallest span, relative to `max(1, |q_lo|, |q_hi|)`, so a feature that was constant
    /// in the history still maps a change to the edge instead of dividing by zero.
    pub min_rel_span: f64,
}

impl RobustConfig {
    /// Defaults for `d` features and an HST window `window`: no log1p, history 4·window,
    /// refit and warm-up every `window`, quantiles 5 % / 95 %, margin 3, min span 1 %.
    pub fn new(d: usize, window: u32) -> Self {
        RobustConfig {
            log1p: vec![false; d],
            history: window.saturating_mul(4).max(1),
            refit_every: window.max(1),
            warmup: window.max(1),
            q_lo: 0.05,
            q_hi: 0.95,
            margin: 3.0,
            min_rel_span: 0.01,
        }
    }

    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), String> {
        if self.log1p.is_empty() {
            return Err("log1p: one flag per feature is needed (no features)".into());
        }
        if self.history == 0 || self.history > 1 << 24 {
            return Err(format!("history = {}: must be in 1..=2^24", self.history));
        }
        let ring_bytes = (self.log1p.len() as u64) * (self.history as u64) * 8;
        if ring_bytes > 1 << 30 {
            return Err(format!(
                "history = {}: {} features × {} values need {} MiB, more than 1024 MiB",
                self.history,
                self.log1p.len(),
                self.history,
                ring_bytes >> 20
            ));
        }
        if self.refit_every == 0 {
            return Err("refit_every = 0: must be >= 1".into());
        }
        if self.warmup == 0 {
            return Err("warmup = 0: must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&self.q_lo)
            || !(0.0..=1.0).contains(&self.q_hi)
            || self.q_lo >= self.q_hi
        {
            return Err(format!(
                "q_lo = {}, q_hi = {}: need 0 <= q_lo < q_hi <= 1",
                self.q_lo, self.q_hi
            ));
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(format!("margin = {}: must be finite and >= 0", self.margin));
        }
        if !(self.min_rel_span.is_finite() && self.min_rel_span > 0.0) {
            return Err(format!(
                "min_rel_span = {}: must be finite and > 0",
                self.min_rel_span
            ));
        }
        Ok(())
    }
}

/// `sign(v)·ln(1 + |v|)`: monotone, odd, identity-like near 0; NaN stays NaN.
#[inline]
pub fn signed_log1p(v: f64) -> f64 {
    if v < 0.0 {
        -(-v).ln_1p()
    } else {
        v.ln_1p()
    }
}

/// The sensor's default scaler: see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustScaler {
    cfg: RobustConfig,
    /// Per feature, a ring of the last `history` finite (log-transformed) values.
    ring: Vec<f64>,
    ring_len: Vec<u32>,
    ring_head: Vec<u32>,
    /// Output = clamp((v' − lo) · inv, 0, 1). `inv = 0` before the first fit: 0.5 is output.
    lo: Vec<f64>,
    inv: Vec<f64>,
    fitted: bool,
    /// Samples learned.
    seen: u64,
    /// Samples learned since the last refit, once warm.
    since_fit: u32,
    warm: bool,
    /// Scratch for the quantile selection (`history` values), allocated once.
    scratch: Vec<f64>,
}

impl RobustScaler {
    pub fn new(cfg: RobustConfig) -> Result<Self, String> {
        cfg.validate()?;
        let d = cfg.log1p.len();
        let h = cfg.history as usize;
        Ok(RobustScaler {
            ring: vec![0.0; d * h],
            ring_len: vec![0; d],
            ring_head: vec![0; d],
            lo: vec![0.0; d],
            inv: vec![0.0; d],
            fitted: false,
            seen: 0,
            since_fit: 0,
            warm: false,
            scratch: vec![0.0; h],
            cfg,
        })
    }
    pub fn config(&self) -> &RobustConfig {
        &self.cfg
    }
    pub fn n_features(&self) -> usize {
        self.cfg.log1p.len()
    }
    /// True once the first full fit (after `warmup` samples) is done.
    pub fn is_warm(&self) -> bool {
        self.warm
    }
    /// Per feature `(lo, hi)` in the (log-)transformed domain that maps to [0, 1].
    pub fn range(&self, j: usize) -> (f64, f64) {
        (self.lo[j], self.lo[j] + 1.0 / self.inv[j])
    }

    #[inline]
    fn pre(&self, j: usize, v: f64) -> f64 {
        if self.cfg.log1p[j] {
            signed_log1p(v)
        } else {
            v
        }
    }

    /// Maps `x` to [0, 1] with the current fit. NaN stays NaN (HST sends it right).
    pub fn transform(&self, x: &[f64], out: &mut [f64]) {
        if !self.fitted {
            out.iter_mut()
                .zip(x)
                .for_each(|(o, v)| *o = if v.is_nan() { *v } else { 0.5 });
            return;
        }
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = ((self.pre(j, v) - self.lo[j]) * self.inv[j]).clamp(0.0, 1.0);
        }
    }

    /// Adds `x` to the history; refits when due. Returns true if the fit changed (then the
    /// learn-time vector differs from the score-time one).
    pub fn learn(&mut self, x: &[f64]) -> bool {
        for (j, &v) in x.iter().enumerate() {
            let v = self.pre(j, v);
            self.push(j, v);
        }
        self.count_sample()
    }

    /// `transform(x)` with the current fit, then `learn(x)`, transforming each value once.
    pub fn transform_learn(&mut self, x: &[f64], out: &mut [f64]) -> bool {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            let v = self.pre(j, v);
            *o = if !self.fitted {
                if v.is_nan() {
                    v
                } else {
                    0.5
                }
            } else {
                ((v - self.lo[j]) * self.inv[j]).clamp(0.0, 1.0)
            };
            self.push(j, v);
        }
        self.count_sample()
    }

    /// Appends a (log-transformed) value to feature `j`'s history; non-finite values are
    /// not history.
    #[inline]
    fn push(&mut self, j: usize, v: f64) {
        if !v.is_finite() {
            return;
        }
        let h = self.cfg.history;
        let head = self.ring_head[j];
        self.ring[j * h as usize + head as usize] = v;
        self.ring_head[j] = if head + 1 == h { 0 } else { head + 1 };
        if self.ring_len[j] < h {
            self.ring_len[j] += 1;
        }
    }

    /// Counts a learned sample and refits when due; true if it refitted.
    fn count_sample(&mut self) -> bool {
        self.seen += 1;
        let refit = if self.warm {
            self.since_fit += 1;
            self.since_fit == self.cfg.refit_every
        } else if self.seen == self.cfg.warmup as u64 {
            self.warm = true;
            true
        } else {
            self.seen.is_power_of_two()
        };
        if refit {
            self.since_fit = 0;
            self.refit();
        }
        refit
    }

    fn refit(&mut self) {
        let h = self.cfg.history as usize;
        for j in 0..self.n_features() {
            let n = self.ring_len[j] as usize;
            if n == 0 {
                continue; // only non-finite values so far: keep the previous fit
            }
            let s = &mut self.scratch[..n];
            s.copy_from_slice(&self.ring[j * h..j * h + n]);
            let (ql, qh) = quantile_pair(s, self.cfg.q_lo, self.cfg.q_hi);
            let floor = self.cfg.min_rel_span * 1f64.max(ql.abs()).max(qh.abs());
            let span = (qh - ql).max(floor);
            let lo = ql - self.cfg.margin * span;
            let hi = qh + self.cfg.margin * span;
            self.lo[j] = lo;
            self.inv[j] = 1.0 / (hi - lo);
        }
        self.fitted = true;
    }

    fn encode(&self, w: &mut Writer) {
        let c = &self.cfg;
        w.u32(c.log1p.len() as u32);
        for &b in &c.log1p {
            w.bool(b);
        }
        w.u32(c.history);
        w.u32(c.refit_every);
        w.u32(c.warmup);
        w.f64(c.q_lo);
        w.f64(c.q_hi);
        w.f64(c.margin);
        w.f64(c.min_rel_span);
        for j in 0..self.n_features() {
            w.u32(self.ring_len[j]);
            w.u32(self.ring_head[j]);
            w.f64(self.lo[j]);
            w.f64(self.inv[j]);
        }
        for &v in &self.ring {
            w.f64(v);
        }
        w.bool(self.fitted);
        w.u64(self.seen);
        w.u32(self.since_fit);
        w.bool(self.warm);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, CheckpointError> {
        let d = r.count("robust feature count", 1)?;
        let mut log1p = Vec::with_capacity(d);
        for _ in 0..d {
            log1p.push(r.bool("log1p flag")?);
        }
        let cfg = RobustConfig {
            log1p,
            history: r.u32("history")?,
            refit_every: r.u32("refit_every")?,
            warmup: r.u32("warmup")?,
            q_lo: r.f64("q_lo")?,
            q_hi: r.f64("q_hi")?,
            margin: r.f64("margin")?,
            min_rel_span: r.f64("min_rel_span")?,
        };
        cfg.validate()
            .map_err(|e| corrupt(format!("robust scaler: {e}")))?;
        let ring_bytes = d.saturating_mul(cfg.history as usize).saturating_mul(8);
        if r.remaining() < ring_bytes {
            return Err(corrupt(format!(
                "robust scaler history needs {ring_bytes} bytes, {} left",
                r.remaining()
            )));
        }
        let mut s = RobustScaler::new(cfg).map_err(|e| corrupt(format!("robust scaler: {e}")))?;
        for j in 0..d {
            s.ring_len[j] = r.u32("ring length")?;
            s.ring_head[j] = r.u32("ring head")?;
            s.lo[j] = r.f64("lo")?;
            s.inv[j] = r.f64("inv")?;
            if s.ring_len[j] > s.cfg.history || s.ring_head[j] >= s.cfg.history {
                return Err(corrupt(format!(
                    "robust scaler feature {j}: ring state out of range"
                )));
            }
        }
        for v in s.ring.iter_mut() {
            *v = r.f64("history value")?;
        }
        s.fitted = r.bool("fitted")?;
        s.seen = r.u64("seen")?;
        s.since_fit = r.u32("since_fit")?;
        s.warm = r.bool("warm")?;
        if s.since_fit >= s.cfg.refit_every {
            return Err(corrupt("robust scaler: since_fit is not below refit_every"));
        }
        Ok(s)
    }
}

/// Nearest-rank quantiles `(q_lo, q_hi)` of `s` (non-empty, no NaN, reordered): the order
/// statistics at `floor(q_lo·(n−1))` and `ceil(q_hi·(n−1))`, the outer ranks, so the fitted
/// range is never narrower than the interpolated one. Two selections, the second on the
/// part left of the first: about 2n comparisons.
fn quantile_pair(s: &mut [f64], q_lo: f64, q_hi: f64) -> (f64, f64) {
    let last = s.len() - 1;
    let k_hi = ((q_hi * last as f64).ceil() as usize).min(last);
    let k_lo = ((q_lo * last as f64).floor() as usize).min(k_hi);
    let (left, &mut hi, _) = s.select_nth_unstable_by(k_hi, f64::total_cmp);
    let lo = if k_lo == k_hi {
        hi
    } else {
        *left.select_nth_unstable_by(k_lo, f64::total_cmp).1
    };
    (lo, hi)
}

/// The scaler in front of a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaler {
    /// Inputs are used as they are (already in the trees' limits).
    Identity,
    /// River's `MinMaxScaler` (parity mode).
    MinMax(MinMaxScaler),
    /// The sensor's default.
    Robust(RobustScaler),
}

impl Scaler {
    /// `None` for `Identity`.
    pub fn n_features(&self) -> Option<usize> {
        match self {
            Scaler::Identity => None,
            Scaler::MinMax(s) => Some(s.n_features()),
            Scaler::Robust(s) => Some(s.n_features()),
        }
    }
    pub fn transform(&self, x: &[f64], out: &mut [f64]) {
        match self {
            Scaler::Identity => out.copy_from_slice(x),
            Scaler::MinMax(s) => s.transform(x, out),
            Scaler::Robust(s) => s.transform(x, out),
        }
    }
    /// `transform(x, out)` then `learn(x)` in one pass; true if the transform changed
    /// (then `out` is the score-time vector and the learn-time one needs a new `transform`).
    pub fn transform_learn(&mut self, x: &[f64], out: &mut [f64]) -> bool {
        match self {
            Scaler::Identity => {
                out.copy_from_slice(x);
                false
            }
            Scaler::MinMax(s) => s.transform_learn(x, out),
            Scaler::Robust(s) => s.transform_learn(x, out),
        }
    }

    /// Learns `x`; true if the transform changed.
    pub fn learn(&mut self, x: &[f64]) -> bool {
        match self {
            Scaler::Identity => false,
            Scaler::MinMax(s) => s.learn(x),
            Scaler::Robust(s) => s.learn(x),
        }
    }
    /// False while the scaler's output is still settling (robust warm-up). River's scaler
    /// has no warm-up: the HST warm-up covers it.
    pub fn is_warm(&self) -> bool {
        match self {
            Scaler::Identity | Scaler::MinMax(_) => true,
            Scaler::Robust(s) => s.is_warm(),
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        match self {
            Scaler::Identity => w.u8(0),
            Scaler::MinMax(s) => {
                w.u8(1);
                s.encode(w);
            }
            Scaler::Robust(s) => {
                w.u8(2);
                s.encode(w);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CheckpointError> {
        match r.u8("scaler kind")? {
            0 => Ok(Scaler::Identity),
            1 => Ok(Scaler::MinMax(MinMaxScaler::decode(r)?)),
            2 => Ok(Scaler::Robust(RobustScaler::decode(r)?)),
            k => Err(corrupt(format!("unknown scaler kind {k}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_first_sample_and_constant_feature() {
        let mut s = MinMaxScaler::new(2);
        let mut out = [0.0; 2];
        s.transform(&[3.0, 7.0], &mut out);
        assert!(
            out[0].is_nan() && out[1].is_nan(),
            "never seen: NaN as in River"
        );
        assert!(s.learn(&[3.0, 7.0]));
        s.transform(&[3.0, 7.0], &mut out);
        assert_eq!(out, [0.0, 0.0], "span 0 gives exactly 0.0");
        assert!(s.learn(&[5.0, 7.0]));
        s.transform(&[4.0, 9.0], &mut out);
        assert_eq!(
            out,
            [0.5, 0.0],
            "feature 1 still constant: its change is invisible"
        );
        assert!(!s.learn(&[4.0, f64::NAN]), "nothing new, NaN ignored");
    }

    #[test]
    fn minmax_keeps_rivers_rounding() {
        // (v − min)/span, not (v − min)·(1/span): these differ in the last bit.
        let mut s = MinMaxScaler::new(1);
        s.learn(&[0.1]);
        s.learn(&[0.7]);
        let mut out = [0.0];
        s.transform(&[0.3], &mut out);
        assert_eq!(out[0].to_bits(), ((0.3 - 0.1) / (0.7 - 0.1f64)).to_bits());
    }

    /// The fused pass equals `transform` then `learn`, bit for bit, for every scaler.
    #[test]
    fn transform_learn_equals_the_two_calls() {
        let mut rc = RobustConfig::new(3, 8);
        rc.log1p = vec![true, false, true];
        for mut a in [
            Scaler::Identity,
            Scaler::MinMax(MinMaxScaler::new(3)),
            Scaler::Robust(RobustScaler::new(rc).unwrap()),
        ] {
            let mut b = a.clone();
            let mut st = 3u64;
            for k in 0..200 {
                st = st
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (st >> 11) as f64 / (1u64 << 53) as f64;
                let x = [
                    u * 1e4,
                    -3.0 + u,
                    if k % 17 == 0 { f64::NAN } else { u * u },
                ];
                let (mut oa, mut ob) = ([0.0; 3], [0.0; 3]);
                let ca = a.transform_learn(&x, &mut oa);
                b.transform(&x, &mut ob);
                let cb = b.learn(&x);
                assert_eq!(ca, cb);
                assert_eq!(oa.map(f64::to_bits), ob.map(f64::to_bits), "sample {k}");
            }
            assert_eq!(a, b);
        }
    }

    #[test]
    fn quantile_pair_takes_the_outer_ranks() {
        // n = 21: ranks floor(0.05·20) = 1 and ceil(0.95·20) = 19.
        let mut v: Vec<f64> = (0..21).rev().map(|i| (i * i) as f64).collect();
        assert_eq!(quantile_pair(&mut v, 0.05, 0.95), (1.0, 361.0));
        // n = 10: ranks floor(0.45) = 0 and ceil(8.55) = 9: the extremes.
        let mut v: Vec<f64> = vec![5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0];
        assert_eq!(quantile_pair(&mut v, 0.05, 0.95), (1.0, 10.0));
        assert_eq!(quantile_pair(&mut [5.0], 0.05, 0.95), (5.0, 5.0));
        assert_eq!(quantile_pair(&mut [2.0, 2.0, 2.0], 0.5, 0.5), (2.0, 2.0));
    }

    #[test]
    fn robust_config_errors_name_the_field() {
        let mut c = RobustConfig::new(3, 250);
        c.q_lo = 0.9;
        c.q_hi = 0.1;
        assert!(c.validate().unwrap_err().contains("q_lo"));
        let mut c = RobustConfig::new(3, 250);
        c.history = 0;
        assert!(c.validate().unwrap_err().contains("history"));
        assert!(RobustConfig::new(0, 250)
            .validate()
            .unwrap_err()
            .contains("log1p"));
    }

    #[test]
    fn robust_one_extreme_does_not_move_the_scale() {
        let mut c = RobustConfig::new(1, 100);
        c.log1p = vec![true];
        let mut s = RobustScaler::new(c).unwrap();
        let normal = |k: u64| 1000.0 + ((k * 7919) % 200) as f64;
        for k in 0..400 {
            s.learn(&[normal(k)]);
        }
        assert!(s.is_warm());
        let before = s.range(0);
        s.learn(&[1e9]);
        for k in 0..199 {
            s.learn(&[normal(k)]);
        }
        // Two refits happened with the extreme inside the history: the 5 %/95 % quantiles
        // did not move by more than one rank's worth.
        let after = s.range(0);
        assert!((before.0 - after.0).abs() < 0.01 && (before.1 - after.1).abs() < 0.01);
        let mut out = [0.0];
        s.transform(&[1e9], &mut out);
        assert_eq!(out[0], 1.0, "the extreme is clamped to the edge");
        s.transform(&[normal(3)], &mut out);
        assert!(
            out[0] > 0.3 && out[0] < 0.7,
            "normal stays in the middle: {}",
            out[0]
        );
    }

    #[test]
    fn robust_learn_reports_refits_only() {
        let mut s = RobustScaler::new(RobustConfig::new(2, 10)).unwrap();
        let changed: Vec<bool> = (0..25).map(|k| s.learn(&[k as f64, 1.0])).collect();
        // provisional fits at 1, 2, 4, 8, the warm fit at 10, then every 10
        let at: Vec<usize> = changed
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .map(|(k, _)| k + 1)
            .collect();
        assert_eq!(at, vec![1, 2, 4, 8, 10, 20]);
        assert!(s.is_warm());
        let mut out = [0.0; 2];
        s.transform(&[1e12, -1e12], &mut out);
        assert_eq!(out, [1.0, 0.0]);
    }
}
