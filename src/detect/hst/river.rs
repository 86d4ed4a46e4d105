//! Trees built exactly as River builds them (its random splits, from the seed).

use super::*;

/// Recursive state of River's `make_padded_tree` for one tree.
pub(super) struct Builder<'a> {
    pub(super) rng: &'a mut Mt19937,
    /// Current cell, in River's sorted feature order.
    pub(super) lo: &'a mut [f64],
    pub(super) hi: &'a mut [f64],
    pub(super) cum: &'a mut [f64],
    /// Sorted position → caller's feature index.
    pub(super) order: &'a [usize],
    pub(super) height: u32,
    /// Per heap index within the tree: (caller's feature index, threshold).
    pub(super) tree: &'a mut [(u16, f64)],
}

impl Builder<'_> {
    /// Pre-order: this node, the left subtree, the right subtree (§3).
    pub(super) fn build(&mut self, idx: usize, depth: u32) {
        if depth == self.height {
            return;
        }
        let d = self.lo.len();
        // rng.choices(population, weights): cumulative widths left to right, then a right
        // bisection of random()·total over cum[..d-1].
        let mut acc = 0.0;
        for f in 0..d {
            acc += self.hi[f] - self.lo[f];
            self.cum[f] = acc;
        }
        let total = self.cum[d - 1] + 0.0;
        let u = self.rng.random() * total;
        let f = self.cum[..d - 1].partition_point(|&c| !(u < c));
        // rng.uniform(a + p(b−a), b − p(b−a)) = a' + (b' − a')·random()
        let (a, b) = (self.lo[f], self.hi[f]);
        let lo_p = a + PADDING * (b - a);
        let hi_p = b - PADDING * (b - a);
        let thr = lo_p + (hi_p - lo_p) * self.rng.random();
        self.tree[idx] = (self.order[f] as u16, thr);
        let save = self.hi[f];
        self.hi[f] = thr;
        self.build(2 * idx + 1, depth + 1);
        self.hi[f] = save;
        let save = self.lo[f];
        self.lo[f] = thr;
        self.build(2 * idx + 2, depth + 1);
        self.lo[f] = save;
    }
}
