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
//!
//! Use from a shard:
//! - [`FlowTable::new`] once (it reserves all the memory the table will ever use);
//! - per packet [`FlowTable::update`] / [`FlowTable::update_tagged`], or, for a burst of
//!   records popped from a ring, [`FlowTable::update_batch`], which prefetches and is 2–3×
//!   faster when the table does not fit in the CPU caches (benches/flow.rs);
//! - on every clock tick [`FlowTable::advance`], so idle flows leave a shard that gets no
//!   packets; at the end of the input [`FlowTable::flush`];
//! - flows leave through the `emit` callback as a borrowed [`FlowRecord`]: format it
//!   ([`FlowRecord::write_csv`], [`FlowRecord::write_jsonl`]) or copy `*r.flow` there.
//!
//! The table forces its clock monotonic, as nfstream's meter does. nfstream's meter sees
//! every packet; a shard sees only its own, so for the output not to depend on the number
//! of shards the reader must make timestamps monotonic before routing
//! (`ts = max(ts, newest ts so far)`), as nfstream's single clock would.

pub mod export;
pub mod features;
pub mod key;
pub mod table;

pub use export::{Expiration, FlowRecord, SORT_KEY_LEN};
pub use features::{FlowState, SpltEntry};
pub use key::{symmetric_hash, FlowKey, KeyMode};
pub use table::{Accounting, FlowConfig, FlowCounters, FlowTable};
