//! streamml-sensor: a network anomaly-detection sensor.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md in the repository):
//! `capture` (where frames come from) → `wire` (zero-copy parsing into [`wire::PacketMeta`])
//! → `shard` (symmetric hash, SPSC rings to scorer threads) → `flow` (bidirectional flow
//! table with nfstream-compatible features) → `detect` (scaling, Half-Space Trees,
//! thresholds) → `evidence` (mmap packet ring, PCAP+zstd writer, alert log).
//!
//! Architecture invariants:
//! - `wire` is pure: no I/O, no allocation, never panics on any input.
//! - Readers never block on scorers: a full ring is a counted drop (live capture) or
//!   back-pressure (file replay, where dropping would only lose data for nothing).
//! - `flow` and `detect` use packet timestamps as their only clock, so a replay is
//!   deterministic.
#![deny(unsafe_code)] // allowed only in the modules that need it (docs/architecture.md)
#![deny(unsafe_op_in_unsafe_fn)]

pub mod capture;
pub mod cmd;
pub mod config;
pub mod detect;
pub mod engine;
pub mod evidence;
pub mod filter;
pub mod flow;
pub mod output;
pub mod shard;
pub mod sink;
pub mod stats;
pub mod wire;
