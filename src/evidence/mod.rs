//! Evidence: the per-shard mmap packet ring, the PCAP+zstd evidence files, the alert log,
//! retention, the state directory, and `evidence recover`.
//!
//! Architecture invariants:
//! - A reader only ever calls [`ring::EvidenceRing::append`] and a scorer the non-blocking
//!   [`writer::AlertSender`] methods: no lock, no syscall, no allocation per packet.
//! - Disk trouble (ENOSPC, EACCES, EROFS) is a counter and a rate-limited log line in the
//!   evidence writer thread, never a stopped pipeline; a file appears under its final name
//!   only when complete, and alerts.jsonl only ever receives whole lines.
//! - `unsafe` lives in `ring.rs` only.

pub mod alertlog;
pub mod file;
pub mod recover;
pub mod retention;
pub mod ring;
pub mod statedir;
pub mod time;
pub mod writer;

pub use alertlog::{
    Alert, AlertLog, AlertMode, EvidenceInfo, FeatureContribution, FlowKey, Sink, WindowSpan,
};
pub use ring::{EvidenceRing, RingConfig, RingReader};
pub use statedir::StateDir;
pub use writer::{AlertSender, EvidenceRequest, EvidenceWriter, Scope, WriterConfig};
