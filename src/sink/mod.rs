//! Fleet outputs: what leaves the sensor for a team's existing tools, each on its own
//! thread, fed off the hot path.
//!
//! - [`metrics`]: a Prometheus `/metrics` endpoint over the stats counters;
//! - [`ipfix`]: every exported flow as an IPFIX record (RFC 7011) over UDP to a collector
//!   (nfcapd, pmacct, ntopng...);
//!
//! Rule shared by every sink: a failing or slow sink never stalls capture. A scorer hands
//! its records over a bounded lock-free ring and drops (counted by reason) when it is
//! full; the sink thread counts what it sent and what it lost, by reason, as
//! `sink.<name>.*` counters (stats JSON and `/metrics`).

pub mod ipfix;
pub mod metrics;
pub mod nats;
