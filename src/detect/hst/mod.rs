//! Half-Space Trees (Tan, Ting & Liu, IJCAI 2011) with River 0.26.1's exact semantics.
//!
//! The specification is `hst.md` (shared design folder); section numbers below refer to it.
//! Parity with River is proven by `tests/hst_golden.rs` on River's own exported trees and
//! scores, and the trees built here from a seed are bit-identical to River's (§3, §10.3).
//!
//! # Layout: the forest as one heap
//! Every tree is complete, so it is stored with implicit heap indexing. The whole forest is
//! itself one heap: tree `t`'s root sits at heap index `P − 1 + t`, where `P` is the smallest
//! power of two `>= n_trees`, as if the trees hung below `log2 P` virtual levels. Then the
//! children of *any* node `a` are `2a + 1` (taken when `x < threshold`) and `2a + 2`, for
//! every tree at once: a walk needs no per-tree base, just `a = 2a + 1 + !(x < t)`. Depth `k`
//! of all trees is one contiguous block (`2^k·P − 1 ..`), trees in order, so the top levels of
//! all trees share cache lines; the `P − n_trees` missing trees are holes at the end of each
//! block that nothing ever touches.
//!
//! All arrays are allocated once at construction; nothing allocates afterwards.
//! * hot, per branch: `thr` (f64) and `feat` (u16), separate so both index without a shift;
//! * hot, per leaf: `leaf_term` (what a walk adds to the raw score on reaching that leaf) and
//!   `leaf_l` (the latest-window count);
//! * cold: the reference masses `inner_r`, `leaf_r`, read at a pivot, by accessors, by the
//!   missing-feature walk and by the checkpoint.
//!
//! # The score without a stop test
//! River's score walk adds `r·2^depth` at each node and stops after a node whose `r` is below
//! `0.1·w` (§6). `r` changes only at a pivot, so the pivot precomputes what each walk will
//! add: a node contributes `r·2^depth` if every strict ancestor has `r >= 0.1·w`, else 0.
//! Since the walk of a complete vector always runs to a leaf, the whole path's sum is stored
//! at the leaf (`leaf_term`), and the branch visits read only `thr` and `feat`. The raw score
//! of a sample is the sum over trees of the `leaf_term` it reaches: exactly River's.
//!
//! # Counting (§5, §11)
//! Every learn walk increments `l` on a whole root-to-leaf path, so a branch's `l` is always
//! the sum of its leaves' `l`. With complete vectors nothing reads a branch's `l` during a
//! window, so [`Counting::LeafOnly`] counts at the leaves only and rebuilds the branch masses
//! at the pivot, level by level (each level is a pairwise sum of the one below, across all
//! trees at once). Missing-feature routing reads a child's `l`, which leaf-only mode computes
//! by summing that child's leaves. Deep trees use [`Counting::PathCounters`]: `l` on every
//! node, per-node terms summed along the walk, and a pivot that visits only the nodes that
//! carry mass instead of 2^(h+1) counters per tree. Both modes give identical results.
#![allow(unsafe_code)]
// the tree kernel's unchecked node walks; every block has a SAFETY comment

// `!(x < t)` is the routing rule on purpose: River sends NaN right, and `NaN >= t` is false.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::checkpoint::{corrupt, CheckpointError, Reader, Writer};
use super::mt19937::Mt19937;

/// Calls `$call` with the const `$G` equal to the runtime `$g` (1..=MAX_GROUP).
macro_rules! by_lanes {
    ($g:expr, $G:ident, $call:expr) => {
        match $g {
            1 => {
                const $G: usize = 1;
                $call
            }
            2 => {
                const $G: usize = 2;
                $call
            }
            3 => {
                const $G: usize = 3;
                $call
            }
            4 => {
                const $G: usize = 4;
                $call
            }
            5 => {
                const $G: usize = 5;
                $call
            }
            6 => {
                const $G: usize = 6;
                $call
            }
            7 => {
                const $G: usize = 7;
                $call
            }
            8 => {
                const $G: usize = 8;
                $call
            }
            9 => {
                const $G: usize = 9;
                $call
            }
            10 => {
                const $G: usize = 10;
                $call
            }
            11 => {
                const $G: usize = 11;
                $call
            }
            12 => {
                const $G: usize = 12;
                $call
            }
            13 => {
                const $G: usize = 13;
                $call
            }
            14 => {
                const $G: usize = 14;
                $call
            }
            15 => {
                const $G: usize = 15;
                $call
            }
            _ => {
                const $G: usize = 16;
                $call
            }
        }
    };
}

/// A split is never placed in the outer 15 % of a cell (§1).
pub const PADDING: f64 = 0.15;
/// Largest supported height. 2^21 − 1 nodes per tree is already tens of MB per tree.
pub const MAX_HEIGHT: u32 = 20;
/// Largest supported number of trees.
pub const MAX_TREES: u32 = 4096;
/// Largest model, in bytes of arrays: bigger parameter sets are an error, not an abort on a
/// failed allocation.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// Largest number of features (feature indices are u16 in the hot arrays).
pub const MAX_FEATURES: usize = u16::MAX as usize;

/// River's constructor arguments (§1). The sensor always passes an explicit seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HstParams {
    pub n_trees: u32,
    pub height: u32,
    pub window_size: u32,
    pub seed: u64,
}

impl HstParams {
    /// River's defaults (10 trees, height 8, window 250) with an explicit seed.
    pub const fn river_defaults(seed: u64) -> Self {
        HstParams {
            n_trees: 10,
            height: 8,
            window_size: 250,
            seed,
        }
    }

    /// Checks the ranges this implementation supports. Each error starts with the
    /// parameter's name.
    pub fn validate(&self) -> Result<(), HstError> {
        if self.n_trees == 0 || self.n_trees > MAX_TREES {
            return Err(HstError::Param(format!(
                "n_trees = {}: must be in 1..={MAX_TREES}",
                self.n_trees
            )));
        }
        if self.height == 0 || self.height > MAX_HEIGHT {
            return Err(HstError::Param(format!(
                "height = {}: must be in 1..={MAX_HEIGHT}",
                self.height
            )));
        }
        if self.window_size == 0 {
            return Err(HstError::Param("window_size = 0: must be >= 1".into()));
        }
        // A node's term r·2^depth with r <= w is kept in a u32.
        if (self.window_size as u64) << self.height > u32::MAX as u64 {
            return Err(HstError::Param(format!(
                "window_size = {} with height = {}: window_size·2^height must be below 2^32",
                self.window_size, self.height
            )));
        }
        if self.memory_bytes() > MAX_MODEL_BYTES {
            return Err(HstError::Param(format!(
                "n_trees = {} with height = {}: the trees need {} MiB, more than the {} MiB allowed",
                self.n_trees,
                self.height,
                self.memory_bytes() >> 20,
                MAX_MODEL_BYTES >> 20
            )));
        }
        // The raw score must stay an exact integer in an f64 (§6.3).
        if self.max_score_u128() >= 1u128 << 53 {
            return Err(HstError::Param(format!(
                "n_trees = {}: n_trees·window_size·(2^(height+1)−1) = {} exceeds 2^53",
                self.n_trees,
                self.max_score_u128()
            )));
        }
        Ok(())
    }

    /// Bytes of the arrays a model with these parameters allocates (about; the feature names
    /// and a scaler come on top). Trees are laid out for the next power of two of `n_trees`.
    pub fn memory_bytes(&self) -> u64 {
        let p2 = (self.n_trees.max(1) as u64).next_power_of_two();
        let slots = p2 << self.height.min(MAX_HEIGHT + 1);
        // Per branch slot: thr 8, feat 2, inner_r 4, and 8 of scratch (leaf-only) or 8 of
        // inner_l + inner_term (path counters); per leaf slot: leaf_term 8, leaf_l 4, leaf_r 4.
        slots * (8 + 2 + 4 + 8) + slots * (8 + 4 + 4)
    }

    fn max_score_u128(&self) -> u128 {
        self.n_trees as u128 * self.window_size as u128 * ((1u128 << (self.height + 1)) - 1)
    }

    /// `T·w·(2^(h+1)−1)`, River's `_max_score`.
    pub fn max_score(&self) -> u64 {
        self.max_score_u128() as u64
    }
}

/// How the latest-window masses are kept (see the module docs). Results are identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Count at the leaves only; branch masses are rebuilt at each pivot.
    LeafOnly,
    /// Count on every node of the path; the pivot touches only nodes that carry mass.
    PathCounters,
}

impl Counting {
    /// Leaf-only when rebuilding a tree at the pivot (about 2^(h+1) operations) costs less
    /// than the path increments it saves over a window (w·h).
    pub fn auto(params: &HstParams) -> Counting {
        if (1u64 << (params.height + 1)) <= params.window_size as u64 * params.height as u64 {
            Counting::LeafOnly
        } else {
            Counting::PathCounters
        }
    }
}

/// Errors from building or feeding a model. One line each, naming the offending item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HstError {
    #[error("{0}")]
    Param(String),
    #[error("no features: a model needs at least one")]
    NoFeatures,
    #[error("{0} features: at most {MAX_FEATURES} are supported")]
    TooManyFeatures(usize),
    #[error("feature {0:?} is listed twice")]
    DuplicateFeature(String),
    #[error("limits for {name:?}: [{lo}, {hi}]: need finite lo < hi")]
    BadLimits { name: String, lo: f64, hi: f64 },
    #[error("limits for {0:?} are given twice")]
    DuplicateLimits(String),
    #[error("input has {got} values, the model has {expected} features")]
    Dim { expected: usize, got: usize },
    #[error("imported trees: {0}")]
    Import(String),
}

/// The result of scoring one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// River's integer raw score (`Σ r·2^depth` over the trees' walks). `None` until the
    /// first window is complete (warm-up), when River returns 0. Lower is more anomalous.
    pub raw: Option<u64>,
    /// `1 − raw/max_score` as f64, bit-identical to River; 0.0 during warm-up.
    /// High is anomalous; the value lies in `[0, 1 − 1/(2^(h+1)−1)]`.
    pub score: f64,
}

impl Score {
    pub const WARMUP: Score = Score {
        raw: None,
        score: 0.0,
    };
}

/// Threshold of a branch that a pruned import did not include. NaN routes every value right
/// and never equals a real threshold (limits are finite), so it marks the slot.
const PRUNED: f64 = f64::NAN;

/// Half-Space Trees: see the module documentation.
#[derive(Debug, Clone)]
pub struct HalfSpaceTrees {
    params: HstParams,
    /// True when the trees were built here from the seed (River-exact), false if imported.
    built_from_seed: bool,
    n_trees: usize,
    /// Trees per heap level: the smallest power of two `>= n_trees`.
    p2: usize,
    /// Trees walked together (interleaved): `n_trees` split into equal groups of at most
    /// `MAX_GROUP`, so 25 trees walk as 13 + 12, not 16 + 9.
    group: usize,
    height: u32,
    /// Smallest integer `r` with `!(r < 0.1·w)`: River's size limit as an integer.
    r_min: u32,
    max_score: u64,
    names: Vec<String>,
    limits: Vec<(f64, f64)>,
    /// Branches per tree, `2^h − 1`.
    nb: usize,
    /// Leaves per tree, `2^h`.
    nl: usize,
    /// Heap index of the first leaf of tree 0, `2^h·P − 1`; branch arrays have this length.
    leaf0: usize,
    thr: Vec<f64>,
    feat: Vec<u16>,
    /// Path-counter mode: what a walk adds at each branch. Empty in leaf-only mode.
    inner_term: Vec<u32>,
    /// Path-counter mode: branch `l`. Empty in leaf-only mode.
    inner_l: Vec<u32>,
    /// Leaf-only mode: the path's whole sum; path-counter mode: the leaf's own term.
    leaf_term: Vec<u64>,
    leaf_l: Vec<u32>,
    inner_r: Vec<u32>,
    leaf_r: Vec<u32>,
    /// Leaf-only mode: scratch for the pivot's top-down pass, allocated once. Empty in
    /// path-counter mode.
    scratch_cum: Vec<u64>,
    counting: Counting,
    /// `learn_one` calls in the current window, `0..w`.
    counter: u32,
    /// False until the first pivot (River's `_first_window`, negated).
    warm: bool,
}

/// The feature set and limits, validated and in the caller's order.
struct FeatureSpace {
    names: Vec<String>,
    limits: Vec<(f64, f64)>,
}

impl FeatureSpace {
    fn new<S, K, L>(names: &[S], limits: L) -> Result<Self, HstError>
    where
        S: AsRef<str>,
        K: AsRef<str>,
        L: IntoIterator<Item = (K, (f64, f64))>,
    {
        if names.is_empty() {
            return Err(HstError::NoFeatures);
        }
        if names.len() > MAX_FEATURES {
            return Err(HstError::TooManyFeatures(names.len()));
        }
        let names: Vec<String> = names.iter().map(|s| s.as_ref().to_owned()).collect();
        let mut sorted: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(HstError::DuplicateFeature(w[0].to_owned()));
        }
        let mut lim = vec![(0.0, 1.0); names.len()];
        let given: Vec<(String, (f64, f64))> = limits
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v))
            .collect();
        for (n, (k, (lo, hi))) in given.iter().enumerate() {
            if given[..n].iter().any(|(k2, _)| k2 == k) {
                return Err(HstError::DuplicateLimits(k.clone()));
            }
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(HstError::BadLimits {
                    name: k.clone(),
                    lo: *lo,
                    hi: *hi,
                });
            }
            // A limit for a feature the model does not have is ignored, as in River (§2).
            if let Some(i) = names.iter().position(|n| n == k) {
                lim[i] = (*lo, *hi);
            }
        }
        Ok(FeatureSpace { names, limits: lim })
    }
}

/// Heap depth of node `i` (within one tree).
#[inline]
fn depth_of(i: usize) -> u32 {
    usize::BITS - 1 - (i + 1).leading_zeros()
}

impl HalfSpaceTrees {
    /// Builds River-identical trees from `params.seed` (§3, §10.3).
    ///
    /// `names` fixes the features and the order of the input vectors; River's tree builder
    /// sees them sorted by name (byte order), exactly as River sorts the first sample's keys,
    /// so the trees equal River's for the same seed whatever order the caller uses.
    /// `limits` maps a feature name to `(lo, hi)`; features without an entry get `[0, 1]`,
    /// entries for unknown names are ignored (as River does), `lo >= hi` is an error.
    pub fn new<S, K, L>(params: HstParams, names: &[S], limits: L) -> Result<Self, HstError>
    where
        S: AsRef<str>,
        K: AsRef<str>,
        L: IntoIterator<Item = (K, (f64, f64))>,
    {
        params.validate()?;
        let space = FeatureSpace::new(names, limits)?;
        let mut m = Self::empty(params, space, true);
        m.build_river_trees();
        Ok(m)
    }

    /// Uses trees exported from River instead of building them: `splits[t][i]` is branch
    /// `i` of tree `t` (heap order) as `(feature index into names, threshold)`, or `None`
    /// for a branch a pruned export left out (no walk may need it).
    /// `params.seed` is kept for information only.
    pub fn from_splits<S, K, L>(
        params: HstParams,
        names: &[S],
        limits: L,
        splits: &[Vec<Option<(u32, f64)>>],
    ) -> Result<Self, HstError>
    where
        S: AsRef<str>,
        K: AsRef<str>,
        L: IntoIterator<Item = (K, (f64, f64))>,
    {
        params.validate()?;
        let space = FeatureSpace::new(names, limits)?;
        let mut m = Self::empty(params, space, false);
        if splits.len() != m.n_trees {
            return Err(HstError::Import(format!(
                "{} trees given, n_trees = {}",
                splits.len(),
                m.n_trees
            )));
        }
        let d = m.names.len() as u32;
        for (t, tree) in splits.iter().enumerate() {
            if tree.len() != m.nb {
                return Err(HstError::Import(format!(
                    "tree {t} has {} branches, height {} needs {}",
                    tree.len(),
                    m.height,
                    m.nb
                )));
            }
            for (i, s) in tree.iter().enumerate() {
                let a = m.branch_at(t, i);
                match *s {
                    Some((f, thr)) => {
                        if f >= d || !thr.is_finite() {
                            return Err(HstError::Import(format!(
                                "tree {t} branch {i}: feature {f}, threshold {thr}: need a \
                                 feature below {d} and a finite threshold"
                            )));
                        }
                        m.feat[a] = f as u16;
                        m.thr[a] = thr;
                    }
                    None => {
                        m.feat[a] = 0;
                        m.thr[a] = PRUNED;
                    }
                }
            }
        }
        Ok(m)
    }

    fn empty(params: HstParams, space: FeatureSpace, built_from_seed: bool) -> Self {
        let n_trees = params.n_trees as usize;
        let p2 = n_trees.next_power_of_two();
        let nb = (1usize << params.height) - 1;
        let nl = 1usize << params.height;
        let leaf0 = (nl * p2) - 1;
        let size_limit = 0.1 * params.window_size as f64;
        // Smallest integer r with !(r < size_limit); exact for every w (§6).
        let mut r_min = size_limit.ceil() as u32;
        while r_min > 0 && !(((r_min - 1) as f64) < size_limit) {
            r_min -= 1;
        }
        while (r_min as f64) < size_limit {
            r_min += 1;
        }
        let mut m = HalfSpaceTrees {
            params,
            built_from_seed,
            n_trees,
            p2,
            group: n_trees.div_ceil(n_trees.div_ceil(MAX_GROUP)),
            height: params.height,
            r_min,
            max_score: params.max_score(),
            names: space.names,
            limits: space.limits,
            nb,
            nl,
            leaf0,
            thr: vec![PRUNED; leaf0],
            feat: vec![0; leaf0],
            inner_term: Vec::new(),
            inner_l: Vec::new(),
            leaf_term: vec![0; nl * p2],
            leaf_l: vec![0; nl * p2],
            inner_r: vec![0; leaf0],
            leaf_r: vec![0; nl * p2],
            scratch_cum: Vec::new(),
            counting: Counting::LeafOnly,
            counter: 0,
            warm: false,
        };
        m.set_counting(Counting::auto(&params));
        m
    }

    /// River's `make_padded_tree` with Python's `random.Random(seed)` (§3, §10.3).
    fn build_river_trees(&mut self) {
        let d = self.names.len();
        // River sorts the first sample's keys; the RNG sees that order.
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| self.names[a].as_bytes().cmp(self.names[b].as_bytes()));
        let mut rng = Mt19937::from_python_seed(self.params.seed);
        let mut lo: Vec<f64> = vec![0.0; d];
        let mut hi: Vec<f64> = vec![0.0; d];
        let mut cum: Vec<f64> = vec![0.0; d];
        let mut tree: Vec<(u16, f64)> = vec![(0, PRUNED); self.nb];
        for t in 0..self.n_trees {
            for (s, &u) in order.iter().enumerate() {
                (lo[s], hi[s]) = self.limits[u];
            }
            let mut b = Builder {
                rng: &mut rng,
                lo: &mut lo,
                hi: &mut hi,
                cum: &mut cum,
                order: &order,
                height: self.height,
                tree: &mut tree,
            };
            b.build(0, 0);
            for (i, &(f, thr)) in tree.iter().enumerate() {
                let a = self.branch_at(t, i);
                self.feat[a] = f;
                self.thr[a] = thr;
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Geometry
    // ----------------------------------------------------------------------------------

    /// Forest heap index of branch `i` (heap order within its tree) of tree `t`.
    #[inline]
    fn branch_at(&self, t: usize, i: usize) -> usize {
        debug_assert!(t < self.n_trees && i < self.nb);
        let k = depth_of(i);
        ((self.p2 + t) << k) - 1 + (i - ((1 << k) - 1))
    }

    /// Leaf slot of leaf `i` (`nb <= i < nb + nl`, heap order within its tree) of tree `t`.
    #[inline]
    fn leaf_at(&self, t: usize, i: usize) -> usize {
        debug_assert!(t < self.n_trees && i >= self.nb && i < self.nb + self.nl);
        t * self.nl + (i - self.nb)
    }

    /// Forest heap index of the first node of depth `k` of tree 0.
    #[inline]
    fn level_start(&self, k: u32) -> usize {
        (self.p2 << k) - 1
    }

    // ----------------------------------------------------------------------------------
    // Accessors
    // ----------------------------------------------------------------------------------

    pub fn params(&self) -> HstParams {
        self.params
    }
    /// True when the trees were built here from the seed (River-exact), false if imported.
    pub fn built_from_seed(&self) -> bool {
        self.built_from_seed
    }
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }
    pub fn n_features(&self) -> usize {
        self.names.len()
    }
    /// Per feature, the `(lo, hi)` the trees were built with.
    pub fn limits(&self) -> &[(f64, f64)] {
        &self.limits
    }
    pub fn max_score(&self) -> u64 {
        self.max_score
    }
    /// `learn_one` calls since the last pivot.
    pub fn counter(&self) -> u32 {
        self.counter
    }
    /// True once the first window is complete: scores are real from then on.
    pub fn is_warm(&self) -> bool {
        self.warm
    }
    pub fn counting(&self) -> Counting {
        self.counting
    }
    /// Branches per tree (`2^h − 1`).
    pub fn n_branches(&self) -> usize {
        self.nb
    }
    /// Nodes per tree (`2^(h+1) − 1`).
    pub fn n_nodes(&self) -> usize {
        self.nb + self.nl
    }

    /// Branch `i` of tree `t` as `(feature index, threshold)`, `None` if a pruned import
    /// left it out or `i` is not a branch.
    pub fn split(&self, t: usize, i: usize) -> Option<(u32, f64)> {
        if t >= self.n_trees || i >= self.nb {
            return None;
        }
        let a = self.branch_at(t, i);
        if self.thr[a].is_nan() {
            None
        } else {
            Some((self.feat[a] as u32, self.thr[a]))
        }
    }

    /// Latest-window mass of node `i` (heap index within the tree, branch or leaf) of tree `t`.
    pub fn l_mass(&self, t: usize, i: usize) -> u32 {
        if i >= self.nb {
            return self.leaf_l[self.leaf_at(t, i)];
        }
        match self.counting {
            Counting::PathCounters => self.inner_l[self.branch_at(t, i)],
            Counting::LeafOnly => {
                let span = self.height - depth_of(i);
                let first = ((i + 1) << span) - 1;
                let j = self.leaf_at(t, first);
                self.leaf_l[j..j + (1 << span)].iter().sum()
            }
        }
    }

    /// Reference-window mass of node `i` of tree `t`.
    pub fn r_mass(&self, t: usize, i: usize) -> u32 {
        if i >= self.nb {
            self.leaf_r[self.leaf_at(t, i)]
        } else {
            self.inner_r[self.branch_at(t, i)]
        }
    }

    /// Switches the counting mode; the model's behaviour does not change.
    pub fn set_counting(&mut self, counting: Counting) {
        match counting {
            Counting::PathCounters => {
                if self.inner_l.len() != self.leaf0 {
                    // Materialise branch l from the leaves, level by level.
                    let mut il = vec![0u32; self.leaf0];
                    for k in (0..self.height).rev() {
                        let (s, n) = (self.level_start(k), self.n_trees << k);
                        for q in 0..n {
                            il[s + q] = if k + 1 == self.height {
                                self.leaf_l[2 * q] + self.leaf_l[2 * q + 1]
                            } else {
                                let c = self.level_start(k + 1) + 2 * q;
                                il[c] + il[c + 1]
                            };
                        }
                    }
                    self.inner_l = il;
                }
                self.inner_term = vec![0; self.leaf0];
                self.scratch_cum = Vec::new();
            }
            Counting::LeafOnly => {
                self.inner_l = Vec::new();
                self.inner_term = Vec::new();
                self.scratch_cum = vec![0; self.leaf0];
            }
        }
        self.counting = counting;
        self.compute_terms();
    }

    fn check_dim(&self, got: usize) -> Result<(), HstError> {
        if got != self.names.len() {
            return Err(HstError::Dim {
                expected: self.names.len(),
                got,
            });
        }
        Ok(())
    }

    #[inline]
    fn score_of_raw(&self, raw: u64) -> Score {
        Score {
            raw: Some(raw),
            score: 1.0 - raw as f64 / self.max_score as f64,
        }
    }

    #[inline]
    fn warm_score(&self, raw: u64) -> Score {
        if self.warm {
            self.score_of_raw(raw)
        } else {
            Score::WARMUP
        }
    }

    // ----------------------------------------------------------------------------------
    // Complete vectors: the sensor's path
    // ----------------------------------------------------------------------------------

    /// River's `score_one` (§6). Does not change the model.
    pub fn score_one(&self, x: &[f64]) -> Result<Score, HstError> {
        self.check_dim(x.len())?;
        if !self.warm {
            return Ok(Score::WARMUP);
        }
        Ok(self.score_of_raw(self.score_walk(x)))
    }

    /// River's `learn_one` (§5), including the pivot after every `w`-th call.
    pub fn learn_one(&mut self, x: &[f64]) -> Result<(), HstError> {
        self.check_dim(x.len())?;
        self.walk::<false>(x);
        self.count_learned(1);
        Ok(())
    }

    /// `score_one(x)` then `learn_one(x)` in one walk per tree (§11). Identical to the two
    /// calls: the score reads only what the last pivot fixed, which learning does not change.
    pub fn score_and_learn(&mut self, x: &[f64]) -> Result<Score, HstError> {
        self.check_dim(x.len())?;
        let raw = self.walk::<true>(x);
        let s = self.warm_score(raw);
        self.count_learned(1);
        Ok(s)
    }

    /// `score_and_learn` over `n = out.len()` samples stored row-major in `xs`
    /// (`xs.len() == n·d`). Identical to calling it per sample in order: between two pivots
    /// the walks commute (scores read only the frozen reference, learning only adds), so each
    /// run of samples up to the next pivot is walked in an interleaved batch.
    pub fn score_and_learn_batch(&mut self, xs: &[f64], out: &mut [Score]) -> Result<(), HstError> {
        let d = self.names.len();
        if xs.len() != out.len() * d {
            return Err(HstError::Dim {
                expected: out.len() * d,
                got: xs.len(),
            });
        }
        let mut done = 0;
        while done < out.len() {
            let room = (self.params.window_size - self.counter) as usize;
            let n = room.min(out.len() - done);
            self.fused_segment(&xs[done * d..(done + n) * d], &mut out[done..done + n]);
            self.count_learned(n as u32);
            done += n;
        }
        Ok(())
    }

    /// Rows `k` are scored with `a[k]` and learned with `b[k]` if `differs[k]`, else with
    /// `a[k]` (fused). Same result as per-sample score-then-learn in order; used by
    /// [`ScaledHst`], whose scaler makes the learn-time vector differ now and then.
    fn score_then_learn_rows(&mut self, a: &[f64], b: &[f64], differs: &[bool], out: &mut [Score]) {
        let d = self.names.len();
        let mut done = 0;
        while done < out.len() {
            let room = (self.params.window_size - self.counter) as usize;
            let end = done + room.min(out.len() - done);
            // Inside [done, end) the walks commute: fused runs, and the odd row walked twice.
            let mut k = done;
            while k < end {
                if differs[k] {
                    let raw = self
                        .score_one(&a[k * d..(k + 1) * d])
                        .map_or(0, |s| s.raw.unwrap_or(0));
                    self.walk::<false>(&b[k * d..(k + 1) * d]);
                    out[k] = self.warm_score(raw);
                    k += 1;
                } else {
                    let run = differs[k..end].iter().position(|&x| x).unwrap_or(end - k);
                    self.fused_segment(&a[k * d..(k + run) * d], &mut out[k..k + run]);
                    k += run;
                }
            }
            self.count_learned((end - done) as u32);
            done = end;
        }
    }

    /// Fused score+learn of complete rows that all lie before the next pivot.
    fn fused_segment(&mut self, xs: &[f64], out: &mut [Score]) {
        let d = self.names.len();
        debug_assert_eq!(xs.len(), out.len() * d);
        for (row, o) in xs.chunks_exact(d).zip(out.iter_mut()) {
            let raw = self.walk::<true>(row);
            *o = self.warm_score(raw);
        }
    }

    /// One walk per tree for a complete row of length `d`: with `LEARN` it increments the
    /// latest-window masses, with `SCORE` it returns the raw score. Trees go in groups of up
    /// to `MAX_GROUP`, each group's walks interleaved level by level (see `walk_lanes`).
    #[inline]
    fn walk<const SCORE: bool>(&mut self, x: &[f64]) -> u64 {
        // SAFETY: `&mut self`: the kernel may write the counters.
        unsafe { self.walk_raw::<SCORE, true>(x) }
    }

    /// Raw score of a complete row without changing anything.
    #[inline]
    fn score_walk(&self, x: &[f64]) -> u64 {
        // SAFETY: without LEARN the kernel writes nothing, so shared access suffices.
        unsafe { self.walk_raw::<true, false>(x) }
    }

    /// # Safety
    /// With `LEARN` the caller holds `&mut self` (the kernel writes the counters).
    #[inline]
    unsafe fn walk_raw<const SCORE: bool, const LEARN: bool>(&self, x: &[f64]) -> u64 {
        assert_eq!(x.len(), self.names.len());
        let mut raw = 0u64;
        let mut t0 = 0;
        while t0 < self.n_trees {
            let g = self.group.min(self.n_trees - t0);
            let k = Kernel {
                thr: self.thr.as_ptr(),
                feat: self.feat.as_ptr(),
                inner_term: self.inner_term.as_ptr(),
                inner_l: self.inner_l.as_ptr().cast_mut(),
                leaf_term: self.leaf_term.as_ptr(),
                leaf_l: self.leaf_l.as_ptr().cast_mut(),
                x: x.as_ptr(),
                height: self.height,
                leaf0: self.leaf0,
            };
            let root = self.p2 - 1 + t0;
            // SAFETY: `root..root + g` are roots of real trees (t0 + g <= n_trees <= P), so
            // every branch index stays below leaf0 and every leaf slot below n_trees·2^h (the
            // arrays' lengths); the row has d values and every `feat` entry is below d
            // (checked by every constructor); `inner_*` have leaf0 entries in path-counter
            // mode, the only mode that reads them; writes happen only with LEARN, when the
            // caller holds `&mut self`.
            raw += unsafe {
                if self.counting == Counting::PathCounters {
                    by_lanes!(g, G, walk_lanes::<G, true, SCORE, LEARN>(k, root))
                } else {
                    by_lanes!(g, G, walk_lanes::<G, false, SCORE, LEARN>(k, root))
                }
            };
            t0 += g;
        }
        raw
    }

    /// Advances the window counter by `n` learned samples (never past a pivot).
    fn count_learned(&mut self, n: u32) {
        self.counter += n;
        debug_assert!(self.counter <= self.params.window_size);
        if self.counter == self.params.window_size {
            self.pivot();
        }
    }

    // ----------------------------------------------------------------------------------
    // Vectors with missing features (parity mode): River's walks, literally
    // ----------------------------------------------------------------------------------

    /// Child of branch `i` of tree `t` for a possibly missing value: a missing feature goes
    /// to the child with the larger latest-window mass `l`, ties left (§5).
    #[inline]
    fn route_partial(&self, t: usize, i: usize, x: &[Option<f64>]) -> usize {
        let a = self.branch_at(t, i);
        match x[self.feat[a] as usize] {
            Some(v) => {
                debug_assert!(
                    !self.thr[a].is_nan(),
                    "walk reached branch {i} of tree {t}, which the pruned import left out"
                );
                2 * i + 1 + (!(v < self.thr[a])) as usize
            }
            None => {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                if self.l_mass(t, l) < self.l_mass(t, r) {
                    r
                } else {
                    l
                }
            }
        }
    }

    /// `score_one` for a sample where `None` means the feature is absent (River's missing
    /// key; it is not NaN).
    pub fn score_one_partial(&self, x: &[Option<f64>]) -> Result<Score, HstError> {
        self.score_one_partial_per_tree(x, &mut [])
    }

    /// [`score_one_partial`](Self::score_one_partial) that also writes each tree's raw score
    /// into `per_tree` (if it has `n_trees` entries; pass `&mut []` to skip). During warm-up
    /// `per_tree` is left untouched. This is River's `_walk_score`, step for step.
    pub fn score_one_partial_per_tree(
        &self,
        x: &[Option<f64>],
        per_tree: &mut [u64],
    ) -> Result<Score, HstError> {
        self.check_dim(x.len())?;
        if !self.warm {
            return Ok(Score::WARMUP);
        }
        let mut raw = 0u64;
        for t in 0..self.n_trees {
            let (mut s, mut i, mut stopped) = (0u64, 0usize, false);
            for k in 0..self.height {
                let r = self.r_mass(t, i);
                s += (r as u64) << k;
                if r < self.r_min {
                    stopped = true;
                    break;
                }
                i = self.route_partial(t, i, x);
            }
            if !stopped {
                s += (self.r_mass(t, i) as u64) << self.height;
            }
            if let Some(p) = per_tree.get_mut(t) {
                *p = s;
            }
            raw += s;
        }
        Ok(self.score_of_raw(raw))
    }

    /// `learn_one` for a sample where `None` means the feature is absent.
    pub fn learn_one_partial(&mut self, x: &[Option<f64>]) -> Result<(), HstError> {
        self.check_dim(x.len())?;
        let path = self.counting == Counting::PathCounters;
        for t in 0..self.n_trees {
            let mut i = 0usize;
            for _ in 0..self.height {
                // River increments the node, then reads the children's l to route; the
                // children are incremented only when the walk reaches them.
                if path {
                    let a = self.branch_at(t, i);
                    self.inner_l[a] += 1;
                }
                i = self.route_partial(t, i, x);
            }
            let j = self.leaf_at(t, i);
            self.leaf_l[j] += 1;
        }
        self.count_learned(1);
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Pivot and terms
    // ----------------------------------------------------------------------------------

    /// End of a window (§5.3): `r = l`, `l = 0` everywhere, then the walk terms.
    fn pivot(&mut self) {
        match self.counting {
            Counting::LeafOnly => {
                // Leaves: swap the buffers and clear the new latest window.
                std::mem::swap(&mut self.leaf_l, &mut self.leaf_r);
                self.leaf_l[..self.n_trees * self.nl].fill(0);
                // Branches: each level is the pairwise sum of the level below, for all trees
                // at once (children of level offset q are offsets 2q and 2q+1).
                for k in (0..self.height).rev() {
                    let s = self.level_start(k);
                    let n = self.n_trees << k;
                    if k + 1 == self.height {
                        let (dst, src) = (&mut self.inner_r[s..s + n], &self.leaf_r[..2 * n]);
                        for (r, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                            *r = c[0] + c[1];
                        }
                    } else {
                        let below_start = self.level_start(k + 1) - (s + n);
                        let (lo, hi) = self.inner_r.split_at_mut(s + n);
                        let below = &hi[below_start..][..2 * n];
                        for (r, c) in lo[s..].iter_mut().zip(below.chunks_exact(2)) {
                            *r = c[0] + c[1];
                        }
                    }
                }
                self.compute_leaf_sums_sparse();
            }
            Counting::PathCounters => self.pivot_sparse(),
        }
        self.counter = 0;
        self.warm = true;
    }

    /// Leaf-only mode's pivot: the path sums at the leaves, by a depth-first walk of the
    /// region where River walks on (`r >= r_min`: at most `w / r_min = 10` nodes per level
    /// per tree, whatever the height). Below a node where River stops every leaf gets the
    /// same sum, and a subtree's leaves are contiguous, so that is one `fill`.
    fn compute_leaf_sums_sparse(&mut self) {
        debug_assert_eq!(self.counting, Counting::LeafOnly);
        let (h, r_min, leaf0) = (self.height, self.r_min, self.leaf0);
        // (heap index, depth, sum of the terms above). Pop one, push two: at most h + 1
        // entries are pending.
        let mut stack = [(0usize, 0u32, 0u64); MAX_HEIGHT as usize + 2];
        for t in 0..self.n_trees {
            stack[0] = (self.p2 - 1 + t, 0, 0);
            let mut sp = 1;
            while sp > 0 {
                sp -= 1;
                let (a, k, base) = stack[sp];
                if a >= leaf0 {
                    let j = a - leaf0;
                    self.leaf_term[j] = base + ((self.leaf_r[j] as u64) << h);
                    continue;
                }
                let r = self.inner_r[a];
                let sum = base + ((r as u64) << k);
                if r >= r_min {
                    stack[sp] = (2 * a + 2, k + 1, sum);
                    stack[sp + 1] = (2 * a + 1, k + 1, sum);
                    sp += 2;
                } else {
                    let span = h - k;
                    let first = ((a + 1) << span) - 1 - leaf0;
                    self.leaf_term[first..first + (1 << span)].fill(sum);
                }
            }
        }
    }

    /// Recomputes every walk term from the reference masses, level by level from the roots:
    /// a node's term is `r·2^k` if River walks on past all its ancestors (each has
    /// `r >= r_min`), else 0. Leaf-only mode stores the path's running sum at the leaf.
    ///
    /// It runs every window, so it is written to vectorize: per node one u64, the running
    /// sum with bit 63 set when River stops at or above the node (sums stay below 2^53).
    fn compute_terms(&mut self) {
        const STOP: u64 = 1 << 63;
        let (h, r_min, t) = (self.height, self.r_min, self.n_trees);
        let mut pass = std::mem::take(&mut self.scratch_cum);
        pass.resize(self.leaf0, 0);
        let path = self.counting == Counting::PathCounters;
        let s0 = self.level_start(0);
        for (p, &r) in pass[s0..s0 + t].iter_mut().zip(&self.inner_r[s0..s0 + t]) {
            *p = r as u64 | (((r < r_min) as u64) << 63);
        }
        if path {
            self.inner_term[s0..s0 + t].copy_from_slice(&self.inner_r[s0..s0 + t]);
        }
        for k in 1..h {
            let (ps, s, n) = (self.level_start(k - 1), self.level_start(k), t << (k - 1));
            let (lo, hi) = pass.split_at_mut(s);
            let parent = &lo[ps..ps + n];
            let kid = &mut hi[..2 * n];
            let r = &self.inner_r[s..s + 2 * n];
            for q in 0..2 * n {
                let p = parent[q / 2];
                let walks_on = (p >> 63).wrapping_sub(1); // all ones unless stopped above
                let term = ((r[q] as u64) << k) & walks_on;
                let stop = (p & STOP) | (((r[q] < r_min) as u64) << 63);
                kid[q] = ((p & !STOP) + term) | stop;
            }
            if path {
                let term = &mut self.inner_term[s..s + 2 * n];
                for q in 0..2 * n {
                    let walks_on = ((parent[q / 2] >> 63) as u32).wrapping_sub(1);
                    term[q] = (r[q] << k) & walks_on;
                }
            }
        }
        let ps = self.level_start(h - 1);
        let n = t << (h - 1);
        let parent = &pass[ps..ps + n];
        let (lt, lr) = (&mut self.leaf_term[..2 * n], &self.leaf_r[..2 * n]);
        for q in 0..2 * n {
            let p = parent[q / 2];
            let walks_on = (p >> 63).wrapping_sub(1);
            let term = ((lr[q] as u64) << h) & walks_on;
            lt[q] = if path { term } else { (p & !STOP) + term };
        }
        if !path {
            self.scratch_cum = pass;
        }
    }

    /// Path-counter mode: only nodes with mass in the latest or the reference window can
    /// change, and they form a subtree containing the root (a parent's mass is the sum of
    /// its children's), so a depth-first walk that skips empty nodes visits at most about
    /// `2·w·(h+1)` nodes per tree instead of all `2^(h+1) − 1`.
    fn pivot_sparse(&mut self) {
        let (h, r_min, leaf0) = (self.height, self.r_min, self.leaf0);
        // (heap index, depth, River walks this far). Pop one, push two: at most h + 1
        // entries are pending.
        let mut stack = [(0usize, 0u32, false); MAX_HEIGHT as usize + 2];
        for t in 0..self.n_trees {
            let mut sp = 1;
            stack[0] = (self.p2 - 1 + t, 0, true);
            while sp > 0 {
                sp -= 1;
                let (a, k, alive) = stack[sp];
                if a < leaf0 {
                    let (l, r_old) = (self.inner_l[a], self.inner_r[a]);
                    if l == 0 && r_old == 0 {
                        continue; // the whole subtree is empty in both windows
                    }
                    self.inner_r[a] = l;
                    self.inner_l[a] = 0;
                    self.inner_term[a] = if alive { l << k } else { 0 };
                    let child_alive = alive && l >= r_min;
                    stack[sp] = (2 * a + 2, k + 1, child_alive);
                    stack[sp + 1] = (2 * a + 1, k + 1, child_alive);
                    sp += 2;
                } else {
                    let j = a - leaf0;
                    let l = self.leaf_l[j];
                    self.leaf_r[j] = l;
                    self.leaf_l[j] = 0;
                    self.leaf_term[j] = if alive { (l as u64) << h } else { 0 };
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Checkpoint
    // ----------------------------------------------------------------------------------
}

mod codec;
mod kernel;
mod river;
mod scaled;

use kernel::{walk_lanes, Kernel, MAX_GROUP};
use river::Builder;
pub use scaled::ScaledHst;

#[cfg(test)]
mod drift_tests;
#[cfg(test)]
mod tests;
