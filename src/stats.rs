//! Named counters. Each counter has exactly one writer thread (the owner of the state it
//! counts); the stats/report thread reads with `Relaxed` loads. A single writer makes an
//! increment a plain load + store — no locked instruction on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter, readable from any thread.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the owning thread may call this (single-writer contract).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A snapshot of named counters: `name → value`, sorted by name.
pub type Snapshot = BTreeMap<String, u64>;

/// Adds `(name, value)` pairs into a snapshot (summing values that share a name, e.g. the
/// same counter from several shards).
pub fn merge_into<'a>(snap: &mut Snapshot, items: impl IntoIterator<Item = (&'a str, u64)>) {
    for (k, v) in items {
        *snap.entry(k.to_string()).or_insert(0) += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_merge() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
        let mut s = Snapshot::new();
        merge_into(&mut s, [("a", 1), ("b", 2)]);
        merge_into(&mut s, [("a", 3)]);
        assert_eq!(s["a"], 4);
        assert_eq!(s["b"], 2);
    }
}
