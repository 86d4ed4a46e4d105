//! The scoring kernel: the trees walked interleaved, in groups, over the arena.

/// Most trees walked together by one `walk_lanes` call.
pub(super) const MAX_GROUP: usize = 16;

/// Where a walk reads and writes, as raw pointers (see `walk_lanes` for the contract).
/// Passed by value: loaded into registers once, never re-read after a store.
#[derive(Clone, Copy)]
pub(super) struct Kernel {
    pub(super) thr: *const f64,
    pub(super) feat: *const u16,
    pub(super) inner_term: *const u32,
    pub(super) inner_l: *mut u32,
    pub(super) leaf_term: *const u64,
    pub(super) leaf_l: *mut u32,
    pub(super) x: *const f64,
    pub(super) height: u32,
    pub(super) leaf0: usize,
}

/// The hot kernel: the walks of `G` consecutive trees (roots `root..root+G`) for one row,
/// interleaved level by level so the `G` independent chains (load feature → load x[feature]
/// → compare with the threshold → next index) overlap in the CPU. Branch-free:
/// `a = 2a + 1 + !(x < t)`. Increments the latest-window counters; with `SCORE`, returns
/// the sum of what the walks add. Without `LEARN` it writes nothing (the `*mut` pointers may
/// then come from shared references).
///
/// # Safety
/// The lanes are real trees: for `h` levels from `root..root+G` every index stays below
/// `leaf0`, which `thr`, `feat` (and `inner_*` if `PATH`) cover, and ends on a leaf slot that
/// `leaf_term` and `leaf_l` cover; `x` holds more values than any `feat` entry.
#[inline(always)]
pub(super) unsafe fn walk_lanes<
    const G: usize,
    const PATH: bool,
    const SCORE: bool,
    const LEARN: bool,
>(
    k: Kernel,
    root: usize,
) -> u64 {
    let mut a: [usize; G] = std::array::from_fn(|l| root + l);
    let mut acc = 0u64;
    for _ in 0..k.height {
        for a in a.iter_mut() {
            let i = *a;
            debug_assert!(i < k.leaf0);
            // SAFETY: on a branch level i < leaf0; feature indices are below the row length.
            unsafe {
                let t = *k.thr.add(i);
                let v = *k.x.add(*k.feat.add(i) as usize);
                if PATH {
                    if SCORE {
                        acc += *k.inner_term.add(i) as u64;
                    }
                    if LEARN {
                        *k.inner_l.add(i) += 1;
                    }
                }
                *a = 2 * i + 1 + (!(v < t)) as usize;
            }
        }
    }
    for &a in &a {
        let j = a - k.leaf0;
        // SAFETY: after `height` levels `a` is a leaf of a real tree.
        unsafe {
            if SCORE {
                acc += *k.leaf_term.add(j);
            }
            if LEARN {
                *k.leaf_l.add(j) += 1;
            }
        }
    }
    acc
}
