//! The checkpoint codec of [`HalfSpaceTrees`]: every field, validated on load.

use super::*;

impl HalfSpaceTrees {
    /// Appends the model to a checkpoint payload: params, names, limits, every split as
    /// exact bits, the non-zero `(l, r)` masses per tree, counter and warm flag.
    pub fn encode(&self, w: &mut Writer) {
        let p = self.params;
        w.u32(p.n_trees);
        w.u32(p.height);
        w.u32(p.window_size);
        w.u64(p.seed);
        w.bool(self.built_from_seed);
        w.u32(self.counter);
        w.bool(self.warm);
        w.u32(self.names.len() as u32);
        for (name, (lo, hi)) in self.names.iter().zip(&self.limits) {
            w.str(name);
            w.f64(*lo);
            w.f64(*hi);
        }
        for t in 0..self.n_trees {
            for i in 0..self.nb {
                let a = self.branch_at(t, i);
                w.u32(self.feat[a] as u32);
                w.f64(self.thr[a]);
            }
        }
        for t in 0..self.n_trees {
            let nonzero: Vec<usize> = (0..self.n_nodes())
                .filter(|&i| self.r_mass(t, i) != 0 || self.l_mass(t, i) != 0)
                .collect();
            w.u32(nonzero.len() as u32);
            for i in nonzero {
                w.u32(i as u32);
                w.u32(self.l_mass(t, i));
                w.u32(self.r_mass(t, i));
            }
        }
    }

    /// Reads what [`encode`](Self::encode) wrote, re-validating every invariant so a
    /// corrupt or hand-made payload is an error, never a panic or a silently wrong model.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CheckpointError> {
        let params = HstParams {
            n_trees: r.u32("n_trees")?,
            height: r.u32("height")?,
            window_size: r.u32("window_size")?,
            seed: r.u64("seed")?,
        };
        params.validate().map_err(|e| corrupt(e.to_string()))?;
        let built_from_seed = r.bool("built_from_seed")?;
        let counter = r.u32("counter")?;
        let warm = r.bool("warm")?;
        if counter >= params.window_size {
            return Err(corrupt(format!(
                "counter = {counter} is not below window_size = {}",
                params.window_size
            )));
        }
        let d = r.count("n_features", 4 + 16)?;
        let mut names = Vec::with_capacity(d);
        let mut limits = Vec::with_capacity(d);
        for _ in 0..d {
            let name = r.str("feature name")?;
            let lo = r.f64("limit lo")?;
            let hi = r.f64("limit hi")?;
            limits.push((name.clone(), (lo, hi)));
            names.push(name);
        }
        let space = FeatureSpace::new(&names, limits).map_err(|e| corrupt(e.to_string()))?;
        let need = (params.n_trees as usize)
            .saturating_mul((1usize << params.height) - 1)
            .saturating_mul(12);
        if r.remaining() < need {
            return Err(corrupt(format!(
                "{} trees of height {} need {need} bytes of splits, {} left",
                params.n_trees,
                params.height,
                r.remaining()
            )));
        }
        let mut m = Self::empty(params, space, built_from_seed);
        for t in 0..m.n_trees {
            for i in 0..m.nb {
                let f = r.u32("split feature")?;
                let thr = r.f64("split threshold")?;
                let pruned = thr.is_nan() && f == 0;
                if !pruned && (f as usize >= d || !thr.is_finite()) {
                    return Err(corrupt(format!(
                        "tree {t} branch {i}: feature {f} threshold {thr}"
                    )));
                }
                let a = m.branch_at(t, i);
                m.feat[a] = f as u16;
                m.thr[a] = thr;
            }
        }
        // Masses go in as path counters (a complete picture to check), then to the mode the
        // model wants.
        m.set_counting(Counting::PathCounters);
        let w = params.window_size;
        for t in 0..m.n_trees {
            let n = r.count("non-zero node count", 12)?;
            let mut last: Option<u32> = None;
            for _ in 0..n {
                let i = r.u32("node index")?;
                let l = r.u32("l_mass")?;
                let rm = r.u32("r_mass")?;
                if last.is_some_and(|p| i <= p) || i as usize >= m.n_nodes() {
                    return Err(corrupt(format!(
                        "tree {t}: node index {i} out of order or out of range"
                    )));
                }
                last = Some(i);
                if l > w || rm > w {
                    return Err(corrupt(format!(
                        "tree {t} node {i}: mass ({l}, {rm}) exceeds window_size {w}"
                    )));
                }
                let i = i as usize;
                if i < m.nb {
                    let a = m.branch_at(t, i);
                    m.inner_l[a] = l;
                    m.inner_r[a] = rm;
                } else {
                    let j = m.leaf_at(t, i);
                    m.leaf_l[j] = l;
                    m.leaf_r[j] = rm;
                }
            }
            m.check_tree_masses(t, counter, warm)?;
        }
        m.counter = counter;
        m.warm = warm;
        m.set_counting(Counting::auto(&params));
        Ok(m)
    }

    /// The invariants a consistent model satisfies (§4): a branch's masses are its children's
    /// sums, the root's `l` is the counter, the root's `r` is `w` once warm and 0 before.
    fn check_tree_masses(&self, t: usize, counter: u32, warm: bool) -> Result<(), CheckpointError> {
        for i in 0..self.nb {
            let (a, b) = (2 * i + 1, 2 * i + 2);
            let l_ok = self.l_mass(t, i) == self.l_mass(t, a) + self.l_mass(t, b);
            let r_ok = self.r_mass(t, i) == self.r_mass(t, a) + self.r_mass(t, b);
            if !(l_ok && r_ok) {
                return Err(corrupt(format!(
                    "tree {t} node {i}: masses are not the sum of its children's"
                )));
            }
        }
        let want_r = if warm { self.params.window_size } else { 0 };
        if self.l_mass(t, 0) != counter || self.r_mass(t, 0) != want_r {
            return Err(corrupt(format!(
                "tree {t}: root masses ({}, {}) disagree with counter {counter} and warm = {warm}",
                self.l_mass(t, 0),
                self.r_mass(t, 0)
            )));
        }
        Ok(())
    }
}
