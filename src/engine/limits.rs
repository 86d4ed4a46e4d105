//! What a run needs from the machine, checked before anything is allocated or created:
//! memory (the flow tables at full capacity, the detectors' trees, the queues, live
//! capture's UMEM) against `MemAvailable` and `RLIMIT_AS`, and the evidence rings against
//! the free space of the file system that holds them. A refusal is one line naming what is
//! needed, what there is, and the settings that lower the need.
//!
//! Flow tables reserve their slots up front and touch pages as flows arrive, so a table
//! that does not fit would not fail at start: it would be killed by the kernel when
//! traffic fills it. The capacity is the bound a deployer sets on memory; it is checked
//! whole.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::{Config, Threshold};
use crate::detect::hst::HstParams;
use crate::flow::table::{FlowConfig, FlowTable};

/// Address space a thread takes besides the heap (its stack and guard), for `RLIMIT_AS`.
const THREAD_ADDRESS_SPACE: u64 = 8 << 20;
/// Address space for everything not counted (libraries, allocator slack, buffers).
const ADDRESS_SPACE_HEADROOM: u64 = 96 << 20;

/// The memory a run needs, by part.
#[derive(Clone, Debug, Default)]
pub struct MemoryNeed {
    /// (what, bytes) of memory the run may fill.
    pub parts: Vec<(String, u64)>,
    /// Files mapped into the address space (the evidence rings): page cache, not the
    /// process's memory, but they count against `RLIMIT_AS`.
    pub mapped: u64,
    /// Threads the run starts.
    pub threads: u64,
}

impl MemoryNeed {
    pub fn add(&mut self, what: impl Into<String>, bytes: u64) {
        if bytes > 0 {
            self.parts.push((what.into(), bytes));
        }
    }

    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |a, (_, b)| a.saturating_add(*b))
    }

    /// `flow tables 1 x 1048576 flows x 560 B = 560 MiB, detectors 3 MiB, ...`
    fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|(w, b)| format!("{w} {}", bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The flow tables of `shards` shards, each at its full capacity.
    pub fn flow_tables(&mut self, flow: &FlowConfig, shards: usize) {
        let per_table = FlowTable::reserved_bytes(flow) as u64;
        let per_flow = per_table / flow.capacity.max(1) as u64;
        self.add(
            format!(
                "flow tables {shards} x {} flows x {per_flow} B =",
                flow.capacity
            ),
            per_table.saturating_mul(shards as u64),
        );
    }

    /// Each reader's queue to each shard.
    pub fn shard_queues(&mut self, readers: usize, shards: usize, capacity: usize) {
        let slot = std::mem::size_of::<crate::shard::Msg>() as u64;
        self.add(
            "shard queues",
            (readers as u64)
                .saturating_mul(shards as u64)
                .saturating_mul(capacity as u64)
                .saturating_mul(slot),
        );
    }

    /// Every profile's detectors (trees, scaler history, running quantile) in every shard.
    pub fn detectors(&mut self, cfg: &Config, shards: usize) {
        let mut per_shard = 0u64;
        for p in &cfg.profiles {
            let kinds =
                u64::from(p.mode.flow()) + u64::from(p.mode.window()) + u64::from(p.mode.host());
            let trees = HstParams {
                n_trees: p.n_trees as u32,
                height: p.height as u32,
                window_size: p.window_size as u32,
                seed: p.seed,
            }
            .memory_bytes();
            let features = p
                .window_features
                .len()
                .max(p.flow_features.len())
                .max(p.host_features.len()) as u64;
            let history = features * 4 * p.window_size as u64 * 8;
            let quantile = match p.threshold {
                Threshold::Quantile { window, .. } => window as u64 * 2 + (1 << 18),
                Threshold::Fixed(_) => 0,
            };
            // The window accumulator's four distinct-count tables.
            let windows = if p.mode.window() { 4 << 20 } else { 0 };
            // A host profile's tables (hosts, 2x pairs, 2x sockets) and sketches.
            let hosts = if p.mode.host() {
                crate::detect::host::HostState::memory_bytes(p.host_table)
            } else {
                0
            };
            per_shard = per_shard
                .saturating_add(kinds.saturating_mul(trees + history + quantile))
                .saturating_add(windows)
                .saturating_add(hosts);
        }
        self.add("detectors", per_shard.saturating_mul(shards as u64));
    }
}

/// `512 KiB`, `256 MiB`, `1.5 GiB`.
pub fn bytes(b: u64) -> String {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;
    if b >= 10 * G {
        format!("{} GiB", b / G)
    } else if b >= G {
        format!("{:.1} GiB", b as f64 / G as f64)
    } else if b >= M {
        format!("{} MiB", b.div_ceil(M))
    } else {
        format!("{} KiB", b.div_ceil(K))
    }
}

/// The automatic shard count (`sensor.shards = 0`): `wanted` (cores minus the readers),
/// lowered until the flow tables at full capacity take at most half of `MemAvailable`, so
/// that the default configuration runs on a many-core box with little free memory
/// instead of being refused; at least 1 (a table that does not fit even then is refused
/// by [`check_memory`] with its fix). An explicit `--shards` is never changed.
pub fn auto_shards(wanted: usize, flow: &FlowConfig) -> usize {
    let per_table = (FlowTable::reserved_bytes(flow) as u64).max(1);
    match mem_available() {
        Some(avail) => wanted.min((avail / 2 / per_table) as usize).max(1),
        None => wanted.max(1),
    }
}

/// `MemAvailable` of /proc/meminfo, bytes (None where it cannot be read).
pub fn mem_available() -> Option<u64> {
    meminfo_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    let l = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = l[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb.saturating_mul(1024))
}

/// (`RLIMIT_AS`, address space in use now), bytes, when the limit is set.
fn address_space() -> Option<(u64, u64)> {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS).ok()?;
    if soft == nix::sys::resource::RLIM_INFINITY {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let used = meminfo_field(&status, "VmSize:").unwrap_or(0);
    Some((soft, used))
}

/// Refuses a run whose memory does not fit what the machine has available, or whose
/// address space does not fit `RLIMIT_AS`. `lower` names the settings that lower the need.
pub fn check_memory(need: &MemoryNeed, lower: &str) -> anyhow::Result<()> {
    let total = need.total();
    if let Some(avail) = mem_available() {
        if total > avail {
            bail!(
                "memory: the run needs up to {} ({}), more than the {} available (MemAvailable); lower {lower}",
                bytes(total),
                need.describe(),
                bytes(avail)
            );
        }
    }
    if let Some((limit, used)) = address_space() {
        let want = total
            .saturating_add(need.mapped)
            .saturating_add(need.threads.saturating_mul(THREAD_ADDRESS_SPACE))
            .saturating_add(ADDRESS_SPACE_HEADROOM);
        let left = limit.saturating_sub(used);
        if want > left {
            bail!(
                "memory: the run needs up to {} of address space ({}{}), more than the {} RLIMIT_AS leaves (ulimit -v {}); lower {lower}",
                bytes(want),
                need.describe(),
                if need.mapped > 0 {
                    format!(", evidence rings mapped {}", bytes(need.mapped))
                } else {
                    String::new()
                },
                bytes(left),
                limit >> 10
            );
        }
    }
    Ok(())
}

/// Refuses evidence rings of `ring_bytes` each at `rings` (in `dir`) that the file system
/// cannot hold, before any of them is created: the space a ring file already holds there
/// is reused (a ring continued or re-created in place), the rest must be free
/// (`f_bavail`, what an unprivileged writer may use).
pub fn check_ring_space(dir: &Path, rings: &[PathBuf], ring_bytes: u64) -> anyhow::Result<()> {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(()); // cannot tell; creating the rings will say
    };
    #[allow(clippy::unnecessary_cast)] // fsblkcnt_t and c_ulong are not u64 everywhere
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    let n = rings.len() as u64;
    let total = ring_bytes.saturating_mul(n);
    let held = rings.iter().fold(0u64, |a, p| {
        let b = std::fs::metadata(p).map_or(0, |m| m.blocks() * 512);
        a.saturating_add(b.min(ring_bytes))
    });
    let need = total - held;
    if need > free {
        bail!(
            "evidence ring{}: {}{} needed in {}{}, {} free there; lower evidence.ring_mib (--ring-mib) or free space",
            if n == 1 { "" } else { "s" },
            if n == 1 {
                String::new()
            } else {
                format!("{n} x {} = ", bytes(ring_bytes))
            },
            bytes(total),
            dir.display(),
            if held > 0 {
                format!(" ({} of it held by the ring files there)", bytes(held))
            } else {
                String::new()
            },
            bytes(free)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print() {
        let t = "MemTotal:       24000000 kB\nMemAvailable:   123 kB\n";
        assert_eq!(meminfo_field(t, "MemAvailable:"), Some(123 * 1024));
        assert_eq!(meminfo_field(t, "Nope:"), None);
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(100), "1 KiB");
    }

    /// The automatic shard count keeps the tables within half of what is available, and
    /// is at least 1.
    #[test]
    fn auto_shards_fit_memory() {
        let avail = mem_available().expect("MemAvailable on Linux");
        let mut flow = crate::config::load(None).unwrap().flow_config();
        let per = FlowTable::reserved_bytes(&flow) as u64;
        let fit = (avail / 2 / per) as usize;
        // (MemAvailable moves while other tests run: within a table or two)
        let r = auto_shards(fit + 1000, &flow);
        assert!(r >= 1 && r.abs_diff(fit.max(1)) <= 2, "{r} vs {fit}");
        assert_eq!(auto_shards(1, &flow), 1);
        // a table bigger than all the memory: still 1 (check_memory refuses it later)
        flow.capacity = 1 << 30;
        assert!(FlowTable::reserved_bytes(&flow) as u64 > avail / 2);
        assert_eq!(auto_shards(64, &flow), 1);
    }

    #[test]
    fn need_adds_up() {
        let cfg = crate::config::load(None).unwrap();
        let mut n = MemoryNeed::default();
        n.flow_tables(&cfg.flow_config(), 2);
        n.detectors(&cfg, 2);
        n.shard_queues(1, 2, 1024);
        assert_eq!(n.parts.len(), 3);
        let one = FlowTable::reserved_bytes(&cfg.flow_config()) as u64;
        assert!(n.total() > 2 * one);
        let mut none = MemoryNeed::default();
        none.add("nothing", 0);
        assert!(none.parts.is_empty());
        assert!(check_memory(&none, "x").is_ok());
        let mut huge = MemoryNeed::default();
        huge.add("everything", u64::MAX);
        let e = check_memory(&huge, "it").unwrap_err().to_string();
        assert!(
            e.starts_with("memory: the run needs") && e.ends_with("lower it"),
            "{e}"
        );
    }

    #[test]
    fn ring_space_counts_what_is_held() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r");
        assert!(check_ring_space(d.path(), std::slice::from_ref(&p), 1 << 20).is_ok());
        let e = check_ring_space(d.path(), &[p.clone(), p], u64::MAX / 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("evidence rings: 2 x ") && e.contains("free there"),
            "{e}"
        );
    }
}
