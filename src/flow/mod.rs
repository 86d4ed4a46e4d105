//! Bidirectional flow table with nfstream-compatible features.
//!
//! - [`key`]: the flow key, the symmetric packet match, the symmetric hashes.
//! - [`features`]: per-flow state and nfstream's statistics, bit-identical.
//! - [`table`]: the per-shard table (slab, open-addressing index, LRU, timeouts).
//! - [`export`]: [`FlowRecord`], nfstream's columns, CSV / JSON lines, the output order.
//!
//! Architecture invariant: a table is owned by one shard thread and uses the packet
//! timestamps as its only clock, so a replay gives the same flows every time. Differences
//! from nfstream are listed in docs/flow-vs-nfstream.md.

pub mod export;
pub mod features;
pub mod key;
pub mod table;

pub use export::{Expiration, FlowRecord, SORT_KEY_LEN};
pub use features::{FlowState, SpltEntry};
pub use key::{symmetric_hash, FlowKey, KeyMode};
pub use table::{Accounting, FlowConfig, FlowCounters, FlowTable};
