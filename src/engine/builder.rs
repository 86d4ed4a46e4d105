//! Building the running parts, the same for every run (flows, replay, live, eval, the
//! benches): the scorer shards on their threads, each draining one ring per reader, and
//! the scorers themselves from one setup.

use std::thread::JoinHandle;

use super::scorer::{Scorer, ScorerSetup};
use crate::shard::{self, Producer, ShardWorker};

/// The scorer shards' threads.
pub struct Shards<W> {
    handles: Vec<JoinHandle<W>>,
}

/// A shard thread that panicked: its number and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPanicked {
    pub shard: usize,
    pub message: String,
}

impl std::fmt::Display for ShardPanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scorer shard {} failed: {}", self.shard, self.message)
    }
}

/// Starts one thread per worker (shard s runs `workers[s]`), each draining one bounded
/// ring of `ring_capacity` messages per reader. Returns the producers, one `Vec` per reader
/// with one producer per shard (what a [`crate::shard::Router`] takes). With `cores`, shard
/// s is pinned to `cores[s % cores.len()]`.
pub fn spawn_shards<W>(
    workers: Vec<W>,
    readers: usize,
    ring_capacity: usize,
    cores: &[usize],
) -> std::io::Result<(Vec<Vec<Producer>>, Shards<W>)>
where
    W: ShardWorker + Send + 'static,
{
    let mut producers: Vec<Vec<Producer>> = (0..readers).map(|_| Vec::new()).collect();
    let mut handles = Vec::with_capacity(workers.len());
    for (s, mut w) in workers.into_iter().enumerate() {
        let mut consumers = Vec::with_capacity(readers);
        for p in producers.iter_mut() {
            let (tx, rx) = shard::ring(ring_capacity);
            p.push(tx);
            consumers.push(rx);
        }
        let core = (!cores.is_empty()).then(|| cores[s % cores.len()]);
        handles.push(
            std::thread::Builder::new()
                .name(format!("scorer-{s}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(core_affinity::CoreId { id: c });
                    }
                    shard::run_shard(&mut consumers, &mut w);
                    w
                })?,
        );
    }
    Ok((producers, Shards { handles }))
}

impl<W> Shards<W> {
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Whether every shard thread has ended.
    pub fn all_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Waits for every shard (the readers must have dropped their producers). A shard that
    /// panicked is an error; the others' workers are still returned, in shard order, so
    /// that the run can drain and report before it fails.
    pub fn join(self) -> (Vec<W>, Vec<ShardPanicked>) {
        let mut ok = Vec::with_capacity(self.handles.len());
        let mut failed = Vec::new();
        for (shard, h) in self.handles.into_iter().enumerate() {
            match h.join() {
                Ok(w) => ok.push(w),
                Err(p) => failed.push(ShardPanicked {
                    shard,
                    message: panic_message(&*p),
                }),
            }
        }
        (ok, failed)
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_string()
    }
}

/// One scorer per shard from one setup, stopping at the first that cannot be built.
pub fn scorers(setup: &ScorerSetup) -> Result<Vec<Scorer>, String> {
    (0..setup.shards)
        .map(|s| Scorer::new(s, setup.clone()))
        .collect()
}
