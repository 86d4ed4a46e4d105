//! Alert thresholds: a fixed score, or a running quantile of the most recent scores
//! (sliding window of N scores, O(log B) per update and query with a Fenwick tree over
//! B = 65536 score bins of width 2^-16). The current score is compared with the quantile
//! of the scores *before* it, then added.

use crate::detect::checkpoint::{corrupt, CheckpointError, Reader, Writer};

/// A validated threshold: fixed, or a running quantile of recent scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Fixed(f64),
    Quantile {
        q: f64,
        window: usize,
        min_score: f64,
    },
}

const BINS: usize = 1 << 16;

#[inline]
fn bin(score: f64) -> usize {
    let s = if score.is_nan() {
        0.0
    } else {
        score.clamp(0.0, 1.0)
    };
    ((s * BINS as f64) as usize).min(BINS - 1)
}

/// Sliding-window quantile over the last `cap` scores.
#[derive(Clone)]
pub struct RunningQuantile {
    q: f64,
    ring: Vec<u16>,
    head: usize,
    len: usize,
    tree: Vec<u32>,
}

impl RunningQuantile {
    pub fn new(q: f64, cap: usize) -> Self {
        RunningQuantile {
            q,
            ring: vec![0; cap.max(1)],
            head: 0,
            len: 0,
            tree: vec![0; BINS + 1],
        }
    }

    fn tree_add(&mut self, b: usize, d: i32) {
        let mut i = b + 1;
        while i <= BINS {
            self.tree[i] = (self.tree[i] as i64 + i64::from(d)) as u32;
            i += i & i.wrapping_neg();
        }
    }

    /// Number of scores seen in the window.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the window is full.
    pub fn full(&self) -> bool {
        self.len == self.ring.len()
    }

    pub fn push(&mut self, score: f64) {
        let b = bin(score);
        if self.len == self.ring.len() {
            let old = self.ring[self.head] as usize;
            self.tree_add(old, -1);
        } else {
            self.len += 1;
        }
        self.ring[self.head] = b as u16;
        self.head = (self.head + 1) % self.ring.len();
        self.tree_add(b, 1);
    }

    /// The q-quantile (upper edge of its bin), or None when empty.
    pub fn quantile(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        // Smallest bin whose cumulative count reaches ceil(q * len).
        let target = ((self.q * self.len as f64).ceil() as u32).max(1);
        let mut pos = 0usize;
        let mut rem = target;
        let mut step = BINS;
        while step > 0 {
            let next = pos + step;
            if next <= BINS && self.tree[next] < rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        Some(((pos + 1) as f64 / BINS as f64).min(1.0))
    }
}

/// Decides whether a score alerts.
#[derive(Clone)]
pub struct Thresholder {
    kind: Threshold,
    rq: Option<RunningQuantile>,
}

impl Thresholder {
    pub fn new(kind: Threshold) -> Self {
        let rq = match kind {
            Threshold::Quantile { q, window, .. } => Some(RunningQuantile::new(q, window)),
            Threshold::Fixed(_) => None,
        };
        Thresholder { kind, rq }
    }

    /// The configured threshold.
    pub fn kind(&self) -> Threshold {
        self.kind
    }

    /// Feeds one post-warm-up score; returns `(alert, threshold in force)`. A quantile
    /// threshold alerts only once it has seen enough scores for the quantile to mean
    /// something: `max(100, 1 / (1 - q))` (one expected score above it), capped at its window.
    pub fn check(&mut self, score: f64) -> (bool, f64) {
        match self.kind {
            Threshold::Fixed(t) => (score >= t, t),
            Threshold::Quantile { min_score, .. } => {
                let rq = self.rq.as_mut().expect("quantile state");
                let need = match self.kind {
                    Threshold::Quantile { q, window, .. } => {
                        ((1.0 / (1.0 - q)).ceil() as usize).max(100).min(window)
                    }
                    Threshold::Fixed(_) => 0,
                };
                let (alert, t) = match (rq.len() >= need, rq.quantile()) {
                    (true, Some(qv)) => {
                        let t = qv.max(min_score);
                        (score > t, t)
                    }
                    (_, qv) => (false, qv.unwrap_or(1.0).max(min_score)),
                };
                // An alerting score enters the history clipped to the threshold, so a
                // recurring attack does not raise the bar for the next one.
                rq.push(if alert { t } else { score });
                (alert, t)
            }
        }
    }
}

impl Thresholder {
    /// Appends the threshold's state to a checkpoint payload: its kind and, for a quantile
    /// threshold, the scores of its window (as their 16-bit bins, oldest first).
    pub fn encode(&self, w: &mut Writer) {
        match &self.rq {
            None => w.u8(0),
            Some(rq) => {
                w.u8(1);
                w.u32(rq.ring.len() as u32);
                w.u32(rq.len as u32);
                // Oldest first: the ring from where the next score would go, backwards by len.
                let cap = rq.ring.len();
                let first = (rq.head + cap - rq.len) % cap;
                for k in 0..rq.len {
                    w.u32(u32::from(rq.ring[(first + k) % cap]));
                }
            }
        }
    }

    /// Restores what [`encode`](Self::encode) wrote into this thresholder (built from the
    /// same configuration). A state that does not fit it — another kind, another window —
    /// is an error and leaves `self` unchanged.
    pub fn decode_into(&mut self, r: &mut Reader<'_>) -> Result<(), CheckpointError> {
        let kind = r.u8("threshold kind")?;
        match (kind, &mut self.rq) {
            (0, None) => Ok(()),
            (1, Some(rq)) => {
                let cap = r.u32("quantile window")? as usize;
                if cap != rq.ring.len() {
                    return Err(corrupt(format!(
                        "quantile window {cap} in the checkpoint, {} configured",
                        rq.ring.len()
                    )));
                }
                let len = r.u32("quantile scores")? as usize;
                if len > cap {
                    return Err(corrupt(format!(
                        "{len} quantile scores in a window of {cap}"
                    )));
                }
                let mut fresh = RunningQuantile::new(rq.q, cap);
                for _ in 0..len {
                    let b = r.u32("quantile score bin")?;
                    if b as usize >= BINS {
                        return Err(corrupt(format!("quantile score bin {b} out of range")));
                    }
                    fresh.push((f64::from(b) + 0.5) / BINS as f64);
                }
                *rq = fresh;
                Ok(())
            }
            (k, _) => Err(corrupt(format!(
                "threshold kind {k} does not match the configured threshold"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_quantile_matches_sorting() {
        let mut rq = RunningQuantile::new(0.99, 500);
        let mut all = vec![];
        let mut x = 12345u64;
        for _ in 0..3000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let s = (x >> 11) as f64 / (1u64 << 53) as f64;
            rq.push(s);
            all.push(s);
            let mut w: Vec<f64> = all[all.len().saturating_sub(500)..].to_vec();
            w.sort_by(f64::total_cmp);
            let k = ((0.99 * w.len() as f64).ceil() as usize).max(1) - 1;
            let got = rq.quantile().unwrap();
            // Exact up to the bin width.
            assert!(
                got >= w[k] && got - w[k] <= 1.0 / 65536.0 + 1e-12,
                "{got} {}",
                w[k]
            );
        }
    }

    #[test]
    fn quantile_threshold_waits_for_a_full_window() {
        let mut t = Thresholder::new(Threshold::Quantile {
            q: 0.9,
            window: 10,
            min_score: 0.5,
        });
        for _ in 0..10 {
            assert!(!t.check(0.99).0);
        }
        // (window 10 < 100: the window caps the minimum)
        // Window full of 0.99: 0.995 is above the 90th percentile.
        assert!(t.check(0.995).0);
        assert!(!t.check(0.3).0);
        let mut f = Thresholder::new(Threshold::Fixed(0.8));
        assert!(f.check(0.8).0 && !f.check(0.79).0);
    }
}

#[cfg(test)]
mod recurring {
    use super::*;

    #[test]
    fn a_recurring_attack_still_alerts() {
        let mut t = Thresholder::new(Threshold::Quantile {
            q: 0.99,
            window: 1000,
            min_score: 0.5,
        });
        let mut x = 3u64;
        let mut benign = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            0.3 + 0.2 * ((x >> 11) as f64 / (1u64 << 53) as f64)
        };
        for _ in 0..500 {
            t.check(benign());
        }
        // Three attacks of 30 samples each, 100 benign samples apart: each one alerts,
        // although together they are 9% of the history.
        for _ in 0..3 {
            let hits = (0..30).filter(|_| t.check(0.95).0).count();
            assert!(hits > 0);
            for _ in 0..100 {
                t.check(benign());
            }
        }
    }
}
