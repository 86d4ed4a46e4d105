//! Configuration: the TOML file (`config/sensor.toml` is the default, embedded in the
//! binary and installed as /etc/streamml/sensor.toml) is read into [`RawConfig`], CLI flags
//! override it, and [`RawConfig::validate`] turns it into a [`Config`] exactly once. Every
//! error names the file and the key: `sensor.toml: profile "scan": window_s = 0: must be > 0`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::detect::detector::{DetectorConfig, DetectorKind, ScalingKind};
pub use crate::detect::threshold::Threshold;
pub use crate::flow::table::Accounting;
use crate::shard::KeyMode;

/// The default configuration shipped with the sensor.
pub const DEFAULT_CONFIG: &str = include_str!("../config/sensor.toml");

#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub msg: String,
}

/// `FILE: MESSAGE` on one line: control characters (a newline in a path, a filter string
/// or a key) are shown escaped, and a message quoting a huge value shows its start and
/// its end (where the reason is).
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            one_line_text(&self.file),
            one_line_text(&clip(&self.msg, 300, 200))
        )
    }
}

/// `s` with at most `head` + `tail` characters: `HEAD ... (N characters) ... TAIL`.
fn clip(s: &str, head: usize, tail: usize) -> String {
    let n = s.chars().count();
    if n <= head + tail + 40 {
        return s.to_string();
    }
    let h: String = s.chars().take(head).collect();
    let t: String = s.chars().skip(n - tail).collect();
    format!("{h} ... ({} characters) ... {t}", n - head - tail)
}

impl std::error::Error for ConfigError {}

/// `s` with every control character escaped (`\n`, `\u{1b}`): text that is one line.
pub fn one_line_text(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Bounds. Each is documented beside its key in config/sensor.toml and in the README's
// configuration table; a value beyond one is an error naming the key (exit 2).

/// Largest configuration file: reading stops one byte past it, so `/dev/zero`, a huge
/// file or an endless FIFO is refused at once instead of filling memory.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Most scorer shards (`sensor.shards`, `--shards` of every command). More shards than
/// cores is allowed: the threads share the cores, and the output is the same.
pub const MAX_SHARDS: usize = 256;
/// Largest reader-to-shard queue (`sensor.ring_capacity`, `--ring-capacity`): `flows`,
/// `replay` and live capture never use more (they cap it at 16384 or at 1/16 of what the
/// evidence ring holds).
pub const MAX_RING_CAPACITY: usize = 65536;
/// Largest flow table per shard (`flow.capacity`): slot numbers stay within 32 bits.
pub const MAX_FLOW_CAPACITY: usize = crate::flow::table::MAX_CAPACITY;
/// Largest evidence ring per reader, MiB (`evidence.ring_mib`, `--ring-mib`): 64 GiB.
pub const MAX_RING_MIB: u64 = 65536;
/// Largest snaplen (`evidence.snaplen`, `profile.evidence.snaplen`): pcap's maximum.
pub const MAX_SNAPLEN: u32 = crate::evidence::ring::MAX_SNAPLEN;
/// Smallest snaplen.
pub const MIN_SNAPLEN: u32 = 64;
/// Longest alert queue of the evidence writer (`evidence.queue`).
pub const MAX_EVIDENCE_QUEUE: usize = 65536;
/// Longest timeout or cooldown, seconds (`flow.*_timeout_s`, `threshold.cooldown_s`, the
/// command line's seconds): about 31 years.
pub const MAX_SECONDS: f64 = 1e9;
/// Shortest and longest window (`profile.window_s`), seconds.
pub const MIN_WINDOW_S: f64 = 0.001;
pub const MAX_WINDOW_S: f64 = 86400.0;
/// Most recent scores a running quantile covers (`threshold.quantile_window`).
pub const MAX_QUANTILE_WINDOW: usize = 1 << 20;
/// The largest file header and index of an evidence ring, bytes (4096 index entries).
const RING_MAX_HEADER: u64 = 4096 + 4097 * 32 + 4096;

/// Detection mode of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Flow,
    Window,
    Both,
    /// Host behaviour: one sample per connection start, per source host
    /// (`detect::host`).
    Host,
}

impl Mode {
    pub fn host(self) -> bool {
        matches!(self, Mode::Host)
    }
    pub fn flow(self) -> bool {
        matches!(self, Mode::Flow | Mode::Both)
    }
    pub fn window(self) -> bool {
        matches!(self, Mode::Window | Mode::Both)
    }
}

/// Evidence scope: the packets of the alerting flow, or all of the window's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Flow,
    Window,
    /// Host mode: every packet from or to the alerting host in the span.
    Host,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSensor {
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub shards: usize,
    #[serde(default = "d_ring")]
    pub ring_capacity: usize,
    #[serde(default)]
    pub key: KeyMode,
    /// Learn from traffic during an incident (a window alert of the shard, until 10 s
    /// after its last anomalous window): false (the default) keeps a flood or a scan
    /// from becoming the new normal; true is the behaviour before learning hygiene.
    #[serde(default)]
    pub learn_during_incidents: bool,
    /// Seconds of packet time between model checkpoints (0: only when the run stops).
    #[serde(default = "d_checkpoint")]
    pub checkpoint_interval_s: f64,
}

fn d_ring() -> usize {
    65536
}

fn d_checkpoint() -> f64 {
    300.0
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    #[serde(default = "d_idle")]
    pub idle_timeout_s: f64,
    #[serde(default = "d_active")]
    pub active_timeout_s: f64,
    #[serde(default = "d_capacity")]
    pub capacity: usize,
    #[serde(default)]
    pub accounting: Accounting,
    #[serde(default)]
    pub splt: u16,
    #[serde(default = "d_true")]
    pub decode_tunnels: bool,
}

fn d_idle() -> f64 {
    120.0
}
fn d_active() -> f64 {
    1800.0
}
fn d_capacity() -> usize {
    1 << 20
}
fn d_true() -> bool {
    true
}

impl Default for RawFlow {
    fn default() -> Self {
        RawFlow {
            idle_timeout_s: d_idle(),
            active_timeout_s: d_active(),
            capacity: d_capacity(),
            accounting: Accounting::Link,
            splt: 0,
            decode_tunnels: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    /// Size of each packet ring (one per reader) in MiB.
    #[serde(default = "d_ring_mib")]
    pub ring_mib: u64,
    /// Bytes kept per packet in the ring.
    #[serde(default = "d_snaplen")]
    pub snaplen: u32,
    #[serde(default = "d_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "d_max_files")]
    pub max_files: u64,
    /// Alerts waiting for the evidence writer; beyond it evidence is dropped (counted).
    #[serde(default = "d_queue")]
    pub queue: usize,
}

fn d_ring_mib() -> u64 {
    256
}
fn d_snaplen() -> u32 {
    1514
}
fn d_max_bytes() -> u64 {
    1 << 30
}
fn d_max_files() -> u64 {
    10_000
}
fn d_queue() -> usize {
    1024
}

impl Default for RawEvidence {
    fn default() -> Self {
        RawEvidence {
            ring_mib: d_ring_mib(),
            snaplen: d_snaplen(),
            max_bytes: d_max_bytes(),
            max_files: d_max_files(),
            queue: d_queue(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHst {
    #[serde(default = "d_trees")]
    pub n_trees: usize,
    #[serde(default = "d_height")]
    pub height: usize,
    #[serde(default = "d_wsize")]
    pub window_size: usize,
    #[serde(default = "d_seed")]
    pub seed: u64,
}

fn d_trees() -> usize {
    25
}
fn d_height() -> usize {
    8
}
fn d_wsize() -> usize {
    250
}
fn d_seed() -> u64 {
    42
}

impl Default for RawHst {
    fn default() -> Self {
        RawHst {
            n_trees: d_trees(),
            height: d_height(),
            window_size: d_wsize(),
            seed: d_seed(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaling {
    #[serde(default)]
    pub kind: ScalingKind,
    /// Features passed through log1p before scaling (robust mode; default: all counts).
    pub log1p: Option<Vec<String>>,
    /// Samples (flows or windows) before anything may alert, on top of the HST warm-up.
    #[serde(default)]
    pub warmup: u64,
}

impl Default for RawScaling {
    fn default() -> Self {
        RawScaling {
            kind: ScalingKind::Robust,
            log1p: None,
            warmup: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    /// A fixed score in [0,1]; mutually exclusive with `quantile`.
    pub fixed: Option<f64>,
    /// A running quantile of recent scores, e.g. 0.999.
    pub quantile: Option<f64>,
    /// How many recent scores the running quantile covers.
    #[serde(default = "d_qwin")]
    pub quantile_window: usize,
    /// Minimum score to alert at all when using a quantile (guards flat score streams).
    #[serde(default)]
    pub min_score: f64,
    /// Seconds during which the same flow key (flow mode) or the same profile+shard
    /// (window mode) does not raise another alert.
    #[serde(default = "d_cooldown")]
    pub cooldown_s: f64,
    /// Also require at least one feature outside the range the robust scaler learned
    /// (clamped to 0 or 1): the sample is not only in a sparse region of the trees but
    /// beyond anything recently seen on some axis.
    #[serde(default)]
    pub require_out_of_range: bool,
    /// Alert budget per shard: at most this many alerts of the profile per minute of
    /// packet time; the rest are counted and reported by one summary line per minute
    /// (`event_type` "anomaly_summary"). 0 = no budget.
    #[serde(default = "d_budget")]
    pub max_alerts_per_min: u32,
}

fn d_budget() -> u32 {
    10
}

fn d_qwin() -> usize {
    2000
}
fn d_cooldown() -> f64 {
    60.0
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfileEvidence {
    #[serde(default = "d_pre")]
    pub pre_s: f64,
    #[serde(default = "d_post")]
    pub post_s: f64,
    #[serde(default = "d_snaplen")]
    pub snaplen: u32,
    pub scope: Option<Scope>,
    /// Most packets written into one evidence file.
    #[serde(default = "d_max_pkts")]
    pub max_packets: u64,
}

fn d_pre() -> f64 {
    5.0
}
fn d_post() -> f64 {
    5.0
}
fn d_max_pkts() -> u64 {
    100_000
}

impl Default for RawProfileEvidence {
    fn default() -> Self {
        RawProfileEvidence {
            pre_s: d_pre(),
            post_s: d_post(),
            snaplen: d_snaplen(),
            scope: None,
            max_packets: d_max_pkts(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: String,
    /// tcpdump-syntax packet filter; empty: every packet.
    #[serde(default)]
    pub filter: String,
    pub mode: Mode,
    /// Window length in seconds (window mode).
    #[serde(default = "d_window")]
    pub window_s: f64,
    /// Window-mode features (names from `detect::features::WINDOW_FEATURES`).
    pub window_features: Option<Vec<String>>,
    /// Flow-mode features (nfstream column names, see `detect::features::FLOW_FEATURES`).
    pub flow_features: Option<Vec<String>>,
    /// Host-mode features (`detect::features::HOST_FEATURES`).
    pub host_features: Option<Vec<String>>,
    /// Host mode: host samples scored per second per shard (token bucket of packet
    /// time, burst one second's worth); the rest are counted, not scored.
    #[serde(default = "d_host_rate")]
    pub host_rate: f64,
    /// Host mode: hosts tracked per shard (pairs and sockets: twice as many), least
    /// recently used evicted beyond it.
    #[serde(default = "d_host_table")]
    pub host_table: usize,
    /// Host mode: beacons from or to these addresses or networks are not alerted (known
    /// pollers: monitoring, backup, update servers); counted.
    #[serde(default)]
    pub beacon_ignore_hosts: Vec<String>,
    /// Host mode: beacons whose connections go to these destination ports are not
    /// alerted; counted.
    #[serde(default)]
    pub beacon_ignore_ports: Vec<i64>,
    #[serde(default)]
    pub hst: RawHst,
    #[serde(default)]
    pub scaling: RawScaling,
    pub threshold: RawThreshold,
    #[serde(default)]
    pub evidence: RawProfileEvidence,
    /// Flow mode: also score a flow while it is active, every this many of its packets
    /// (0 = off). Such scores are not learnt; a flow alerts at most once.
    #[serde(default)]
    pub active_packets: u32,
    /// Flow mode: also score a flow while it is active, every this many seconds of its
    /// age (checked at its packets; 0 = off).
    #[serde(default)]
    pub active_interval_s: f64,
}

fn d_window() -> f64 {
    1.0
}
fn d_host_rate() -> f64 {
    500.0
}
fn d_host_table() -> usize {
    16384
}

/// An address or a network (`10.1.0.0/16`, `2001:db8::/32`, or one address): a
/// `beacon_ignore_hosts` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub len: u8,
}

impl IpNet {
    /// `ADDR` or `ADDR/LEN`; bits below the prefix are ignored.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(IpNet { addr, len })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let (a, b, bits) = match (self.addr, ip) {
            (V4(a), V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            (V6(a), V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.len);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Largest `host_table` (hosts per shard).
pub const MAX_HOST_TABLE: usize = 1 << 24;
/// Largest `host_rate` (host samples per second per shard).
pub const MAX_HOST_RATE: f64 = 1e7;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `HOST:PORT`, or `PORT` alone (127.0.0.1). Absent: no endpoint.
    pub listen: Option<String>,
}

/// `[ipfix]`: flow export to an IPFIX collector.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpfix {
    /// `HOST:PORT` of the collector (UDP). Absent: no export.
    pub collector: Option<String>,
    #[serde(default = "d_refresh_s")]
    pub template_refresh_s: f64,
    #[serde(default)]
    pub template_refresh_messages: u32,
    #[serde(default = "d_one")]
    pub observation_domain: u32,
    #[serde(default = "d_pen")]
    pub pen: u32,
    #[serde(default = "d_ipfix_queue")]
    pub queue: usize,
}

fn d_refresh_s() -> f64 {
    60.0
}
fn d_one() -> u32 {
    1
}
fn d_pen() -> u32 {
    crate::sink::ipfix::PEN_DOCUMENTATION
}
fn d_ipfix_queue() -> usize {
    65536
}

impl Default for RawIpfix {
    fn default() -> Self {
        RawIpfix {
            collector: None,
            template_refresh_s: d_refresh_s(),
            template_refresh_messages: 0,
            observation_domain: 1,
            pen: d_pen(),
            queue: d_ipfix_queue(),
        }
    }
}

/// `[nats]`: alerts to NATS JetStream.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    /// `nats://HOST:PORT` or `HOST:PORT`. Absent: no NATS sink.
    pub server: Option<String>,
    #[serde(default = "d_subject")]
    pub subject: String,
    #[serde(default)]
    pub create_stream: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    #[serde(default = "d_spool")]
    pub spool_max_bytes: u64,
    #[serde(default = "d_drain")]
    pub drain_timeout_s: f64,
}

fn d_subject() -> String {
    "streamml.alerts".into()
}
fn d_spool() -> u64 {
    64 << 20
}
fn d_drain() -> f64 {
    5.0
}

impl Default for RawNats {
    fn default() -> Self {
        RawNats {
            server: None,
            subject: d_subject(),
            create_stream: String::new(),
            user: None,
            password: None,
            token: None,
            spool_max_bytes: d_spool(),
            drain_timeout_s: d_drain(),
        }
    }
}

/// Resolves `HOST:PORT` (or `PORT` alone / `:PORT` when `default_host` is given) to one
/// socket address.
pub fn parse_socket_addr(s: &str, default_host: Option<&str>) -> Result<SocketAddr, String> {
    let t = s.trim();
    let full = match default_host {
        Some(h) if t.parse::<u16>().is_ok() => format!("{h}:{t}"),
        Some(h) if t.starts_with(':') => format!("{h}{t}"),
        _ => t.to_string(),
    };
    if !full.contains(':') {
        return Err(format!("\"{t}\": not HOST:PORT"));
    }
    use std::net::ToSocketAddrs;
    match full.to_socket_addrs() {
        Ok(mut a) => a
            .next()
            .ok_or_else(|| format!("\"{t}\": the name has no address")),
        Err(e) => Err(format!("\"{t}\": not HOST:PORT ({e})")),
    }
}

/// The configuration file as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub sensor: Option<RawSensor>,
    #[serde(default)]
    pub flow: RawFlow,
    #[serde(default)]
    pub evidence: RawEvidence,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub ipfix: RawIpfix,
    #[serde(default)]
    pub nats: RawNats,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<RawProfile>,
}

/// A validated profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub index: usize,
    pub name: String,
    pub filter: String,
    pub mode: Mode,
    pub window_ns: u64,
    pub window_features: Vec<usize>,
    pub flow_features: Vec<usize>,
    pub host_features: Vec<usize>,
    pub log1p_host: Vec<bool>,
    /// Host samples scored per second per shard.
    pub host_rate: f64,
    /// Hosts per shard.
    pub host_table: usize,
    /// Beacons from or to these are not alerted (counted).
    pub beacon_ignore_hosts: Vec<IpNet>,
    /// Beacons to these destination ports are not alerted (counted).
    pub beacon_ignore_ports: Vec<u16>,
    pub n_trees: usize,
    pub height: usize,
    pub window_size: usize,
    pub seed: u64,
    pub scaling: ScalingKind,
    /// Per selected feature (same order as the feature list): apply log1p.
    pub log1p_window: Vec<bool>,
    pub log1p_flow: Vec<bool>,
    pub warmup: u64,
    pub threshold: Threshold,
    pub require_out_of_range: bool,
    pub cooldown_ns: u64,
    /// Alerts per minute per shard (0: unlimited).
    pub max_alerts_per_min: u32,
    /// Score active flows every this many packets (0: off).
    pub active_packets: u32,
    /// Score active flows every this many ms of age (0: off).
    pub active_interval_ms: u64,
    pub pre_ns: u64,
    pub post_ns: u64,
    pub snaplen: u32,
    pub scope_flow: Scope,
    pub scope_window: Scope,
    pub scope_host: Scope,
    pub max_evidence_packets: u64,
}

impl Config {
    /// The flow table's settings (timeouts rounded to the nearest millisecond).
    pub fn flow_config(&self) -> crate::flow::table::FlowConfig {
        let ms = |ns: u64| (ns.saturating_add(500_000) / 1_000_000).max(1);
        crate::flow::table::FlowConfig {
            idle_timeout_ms: ms(self.idle_timeout_ns),
            active_timeout_ms: ms(self.active_timeout_ns),
            capacity: self.capacity,
            splt: self.splt,
            accounting: self.accounting,
        }
    }
}

impl Config {
    /// The start-up warning of a configuration that detects nothing (no `[[profile]]`):
    /// `replay` and live capture print it; the run goes on metering flows.
    /// A host profile over several shards keyed by the 5-tuple: a host pair's connections
    /// spread over the shards, so each shard's pair statistics see a fraction of them and
    /// beaconing goes unseen (docs/detection.md, "Sharding caveat").
    pub fn host_sharding_warning(&self, shards: usize) -> Option<String> {
        let host = self.profiles.iter().find(|p| p.mode.host())?;
        (shards > 1 && self.key == KeyMode::FiveTuple).then(|| {
            format!(
                "profile {}: mode host over {shards} shards with key \"five-tuple\": a host pair's connections spread over the shards, so beacons go unseen; set [sensor] key = \"ip-pair\" (or --shards 1)",
                host.name
            )
        })
    }

    pub fn no_detection_warning(&self) -> Option<String> {
        self.profiles.is_empty().then(|| {
            format!(
                "{} has no [[profile]]: detection is off, only flows are metered",
                one_line_text(&self.source)
            )
        })
    }
}

impl Profile {
    /// What the detector of `kind` needs from this profile.
    pub fn detector_config(&self, kind: DetectorKind) -> DetectorConfig {
        let (features, log1p) = match kind {
            DetectorKind::Flow => (&self.flow_features, &self.log1p_flow),
            DetectorKind::Window => (&self.window_features, &self.log1p_window),
            DetectorKind::Host => (&self.host_features, &self.log1p_host),
        };
        DetectorConfig {
            name: self.name.clone(),
            kind,
            features: features.clone(),
            log1p: log1p.clone(),
            n_trees: self.n_trees,
            height: self.height,
            window_size: self.window_size,
            seed: self.seed,
            scaling: self.scaling,
            warmup: self.warmup,
            threshold: self.threshold,
            require_out_of_range: self.require_out_of_range,
        }
    }
}

/// The validated configuration handed inward.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: String,
    pub state_dir: Option<PathBuf>,
    pub shards: usize,
    pub ring_capacity: usize,
    pub key: KeyMode,
    pub learn_during_incidents: bool,
    /// Packet time between model checkpoints into `models/` (0: only at the end of a run).
    pub checkpoint_interval_ns: u64,
    pub idle_timeout_ns: u64,
    pub active_timeout_ns: u64,
    pub capacity: usize,
    pub accounting: Accounting,
    pub splt: u16,
    pub decode_tunnels: bool,
    pub ring_bytes: u64,
    pub ring_snaplen: u32,
    pub evidence_max_bytes: u64,
    pub evidence_max_files: u64,
    pub evidence_queue: usize,
    pub profiles: Vec<Profile>,
    /// `[metrics] listen`: where `/metrics` is served (None: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// `[ipfix]`: the flow exporter (None: no export).
    pub ipfix: Option<crate::sink::ipfix::IpfixConfig>,
    /// `[nats]`: the alert sink (None: none).
    pub nats: Option<crate::sink::nats::NatsConfig>,
}

/// Most profiles a sensor runs (the reader marks each packet with a profile bitmask).
pub const MAX_PROFILES: usize = 16;

fn secs_to_ns(v: f64) -> u64 {
    (v * 1e9).round() as u64
}

impl RawConfig {
    /// Parses TOML text; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let mut msg = one_line(&e.to_string());
            // toml says nothing but the place for some characters (a control character
            // in a comment): name the character.
            if e.message().trim().is_empty() {
                let c = e
                    .span()
                    .and_then(|sp| text.get(sp.start..))
                    .and_then(|rest| rest.chars().next());
                match c {
                    Some(c) => msg.push_str(&format!(": unexpected character {c:?}")),
                    None => msg.push_str(": unexpected end of file"),
                }
            }
            ConfigError {
                file: file.to_string(),
                msg,
            }
        })
    }

    /// Reads (at most [`MAX_CONFIG_BYTES`], see [`read_config_file`]) and parses a file.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let file = path.display().to_string();
        let bytes = read_config_file(path).map_err(|msg| ConfigError {
            file: file.clone(),
            msg,
        })?;
        Self::parse(&config_text(&bytes, &file)?, &file)
    }

    /// The configuration as the sensor runs it, for `check-config`: every key with its
    /// value, defaults filled in (the `[sensor]` table, each profile's feature lists);
    /// an evidence `scope` left out stays out (it follows each detector's mode).
    pub fn effective(mut self) -> RawConfig {
        self.sensor.get_or_insert_with(|| RawSensor {
            state_dir: None,
            shards: 0,
            ring_capacity: d_ring(),
            key: KeyMode::FiveTuple,
            learn_during_incidents: false,
            checkpoint_interval_s: d_checkpoint(),
        });
        let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        for p in &mut self.profiles {
            if p.window_features.is_none() {
                p.window_features = names(&crate::detect::features::DEFAULT_WINDOW_FEATURES);
            }
            if p.flow_features.is_none() {
                p.flow_features = names(&crate::detect::features::DEFAULT_FLOW_FEATURES);
            }
            if p.host_features.is_none() && p.mode.host() {
                p.host_features = names(&crate::detect::features::DEFAULT_HOST_FEATURES);
            }
        }
        self
    }

    /// The embedded default configuration.
    pub fn default_config() -> RawConfig {
        Self::parse(DEFAULT_CONFIG, "default sensor.toml").expect("embedded config parses")
    }

    /// Checks every value and resolves names; `file` names the source in errors.
    pub fn validate(self, file: &str) -> Result<Config, ConfigError> {
        let err = |msg: String| ConfigError {
            file: file.to_string(),
            msg,
        };
        let sensor = self.sensor.clone().unwrap_or(RawSensor {
            state_dir: None,
            shards: 0,
            ring_capacity: d_ring(),
            key: KeyMode::FiveTuple,
            learn_during_incidents: false,
            checkpoint_interval_s: d_checkpoint(),
        });
        let pos = |key: &str, v: f64| -> Result<(), ConfigError> {
            if !v.is_finite() || v <= 0.0 {
                Err(err(format!("{key} = {v}: must be > 0")))
            } else {
                Ok(())
            }
        };
        let within = |key: &str, v: u64, lo: u64, hi: u64| -> Result<(), ConfigError> {
            if v < lo || v > hi {
                Err(err(format!("{key} = {v}: must be between {lo} and {hi}")))
            } else {
                Ok(())
            }
        };
        if sensor.shards > MAX_SHARDS {
            return Err(err(format!(
                "sensor.shards = {}: at most {MAX_SHARDS} (0: cores minus readers)",
                sensor.shards
            )));
        }
        if sensor.ring_capacity == 0 {
            return Err(err("sensor.ring_capacity = 0: must be > 0".into()));
        }
        within(
            "sensor.ring_capacity",
            sensor.ring_capacity as u64,
            1,
            MAX_RING_CAPACITY as u64,
        )?;
        let ck = sensor.checkpoint_interval_s;
        if !ck.is_finite() || ck < 0.0 || (ck > 0.0 && ck < 1.0) || ck > MAX_SECONDS {
            return Err(err(format!(
                "sensor.checkpoint_interval_s = {ck}: must be 0 (only at stop) or between 1 and {MAX_SECONDS:e}"
            )));
        }
        pos("flow.idle_timeout_s", self.flow.idle_timeout_s)?;
        pos("flow.active_timeout_s", self.flow.active_timeout_s)?;
        for (key, v) in [
            ("flow.idle_timeout_s", self.flow.idle_timeout_s),
            ("flow.active_timeout_s", self.flow.active_timeout_s),
        ] {
            if v > MAX_SECONDS {
                return Err(err(format!("{key} = {v}: at most {MAX_SECONDS:e} s")));
            }
        }
        if self.flow.capacity == 0 {
            return Err(err("flow.capacity = 0: must be > 0".into()));
        }
        within(
            "flow.capacity",
            self.flow.capacity as u64,
            1,
            MAX_FLOW_CAPACITY as u64,
        )?;
        if self.evidence.ring_mib == 0 {
            return Err(err("evidence.ring_mib = 0: must be > 0".into()));
        }
        within("evidence.ring_mib", self.evidence.ring_mib, 1, MAX_RING_MIB)?;
        if self.evidence.snaplen < MIN_SNAPLEN {
            return Err(err(format!(
                "evidence.snaplen = {}: must be at least {MIN_SNAPLEN}",
                self.evidence.snaplen
            )));
        }
        within(
            "evidence.snaplen",
            self.evidence.snaplen.into(),
            MIN_SNAPLEN.into(),
            MAX_SNAPLEN.into(),
        )?;
        // A ring holds at least 8 packets of snaplen bytes after its header.
        let ring_min = RING_MAX_HEADER
            + 8 * crate::evidence::ring::record_len(self.evidence.snaplen)
                .max(crate::evidence::ring::MIN_DATA_LEN / 8);
        if (self.evidence.ring_mib << 20) < ring_min {
            return Err(err(format!(
                "evidence.ring_mib = {}: too small for evidence.snaplen = {} (at least {} MiB)",
                self.evidence.ring_mib,
                self.evidence.snaplen,
                ring_min.div_ceil(1 << 20)
            )));
        }
        within(
            "evidence.queue",
            self.evidence.queue as u64,
            1,
            MAX_EVIDENCE_QUEUE as u64,
        )?;
        if self.profiles.len() > MAX_PROFILES {
            return Err(err(format!(
                "{} profiles: at most {MAX_PROFILES} are supported",
                self.profiles.len()
            )));
        }
        let mut profiles = Vec::new();
        for (i, p) in self.profiles.into_iter().enumerate() {
            let name = p.name.clone();
            let perr = |msg: String| err(format!("profile \"{name}\": {msg}"));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(format!(
                    "profile name \"{name}\": use letters, digits, '-' and '_' only"
                )));
            }
            if profiles.iter().any(|q: &Profile| q.name == name) {
                return Err(perr("duplicate profile name".into()));
            }
            if !p.window_s.is_finite() || p.window_s <= 0.0 {
                return Err(perr(format!("window_s = {}: must be > 0", p.window_s)));
            }
            if !(MIN_WINDOW_S..=MAX_WINDOW_S).contains(&p.window_s) {
                return Err(perr(format!(
                    "window_s = {}: must be between {MIN_WINDOW_S} and {MAX_WINDOW_S}",
                    p.window_s
                )));
            }
            if p.hst.height == 0 || p.hst.height > 20 {
                return Err(perr(format!(
                    "hst.height = {}: must be between 1 and 20",
                    p.hst.height
                )));
            }
            if p.hst.n_trees == 0 || p.hst.n_trees > 1000 {
                return Err(perr(format!(
                    "hst.n_trees = {}: must be between 1 and 1000",
                    p.hst.n_trees
                )));
            }
            if p.hst.window_size == 0 || p.hst.window_size > 65535 {
                return Err(perr(format!(
                    "hst.window_size = {}: must be between 1 and 65535",
                    p.hst.window_size
                )));
            }
            // The trees' own limits (window_size·2^height below 2^32, at most 4 GiB of
            // arrays), named with the profile's keys.
            crate::detect::hst::HstParams {
                n_trees: p.hst.n_trees as u32,
                height: p.hst.height as u32,
                window_size: p.hst.window_size as u32,
                seed: p.hst.seed,
            }
            .validate()
            .map_err(|e| perr(format!("hst: {e}")))?;
            let threshold = match (p.threshold.fixed, p.threshold.quantile) {
                (Some(f), None) => {
                    if !(0.0..=1.0).contains(&f) {
                        return Err(perr(format!(
                            "threshold.fixed = {f}: must be within [0, 1]"
                        )));
                    }
                    Threshold::Fixed(f)
                }
                (None, Some(q)) => {
                    if !(q > 0.0 && q < 1.0) {
                        return Err(perr(format!(
                            "threshold.quantile = {q}: must be within (0, 1)"
                        )));
                    }
                    if p.threshold.quantile_window < 10 {
                        return Err(perr(format!(
                            "threshold.quantile_window = {}: must be at least 10",
                            p.threshold.quantile_window
                        )));
                    }
                    if p.threshold.quantile_window > MAX_QUANTILE_WINDOW {
                        return Err(perr(format!(
                            "threshold.quantile_window = {}: at most {MAX_QUANTILE_WINDOW}",
                            p.threshold.quantile_window
                        )));
                    }
                    if !(0.0..=1.0).contains(&p.threshold.min_score) {
                        return Err(perr(format!(
                            "threshold.min_score = {}: must be within [0, 1]",
                            p.threshold.min_score
                        )));
                    }
                    Threshold::Quantile {
                        q,
                        window: p.threshold.quantile_window,
                        min_score: p.threshold.min_score,
                    }
                }
                (Some(_), Some(_)) => {
                    return Err(perr(
                        "threshold: set either fixed or quantile, not both".into(),
                    ))
                }
                (None, None) => return Err(perr("threshold: set fixed or quantile".into())),
            };
            if !p.threshold.cooldown_s.is_finite() || p.threshold.cooldown_s < 0.0 {
                return Err(perr(format!(
                    "threshold.cooldown_s = {}: must be >= 0",
                    p.threshold.cooldown_s
                )));
            }
            if p.threshold.cooldown_s > MAX_SECONDS {
                return Err(perr(format!(
                    "threshold.cooldown_s = {}: at most {MAX_SECONDS:e} s",
                    p.threshold.cooldown_s
                )));
            }
            if !p.active_interval_s.is_finite()
                || p.active_interval_s < 0.0
                || p.active_interval_s > MAX_SECONDS
            {
                return Err(perr(format!(
                    "active_interval_s = {}: must be within [0, {MAX_SECONDS:e}] (0 = off)",
                    p.active_interval_s
                )));
            }
            if (p.active_packets > 0 || p.active_interval_s > 0.0) && !p.mode.flow() {
                return Err(perr(
                    "active_packets / active_interval_s: only for mode \"flow\" or \"both\"".into(),
                ));
            }
            if p.threshold.max_alerts_per_min > 1_000_000 {
                return Err(perr(format!(
                    "threshold.max_alerts_per_min = {}: at most 1000000 (0 = no budget)",
                    p.threshold.max_alerts_per_min
                )));
            }
            for (k, v) in [
                ("evidence.pre_s", p.evidence.pre_s),
                ("evidence.post_s", p.evidence.post_s),
            ] {
                if !v.is_finite() || !(0.0..=3600.0).contains(&v) {
                    return Err(perr(format!("{k} = {v}: must be within [0, 3600]")));
                }
            }
            if p.evidence.snaplen < MIN_SNAPLEN || p.evidence.snaplen > MAX_SNAPLEN {
                return Err(perr(format!(
                    "evidence.snaplen = {}: must be between {MIN_SNAPLEN} and {MAX_SNAPLEN}",
                    p.evidence.snaplen
                )));
            }
            let resolve = |key: &str,
                           names: Option<Vec<String>>,
                           known: &[&str],
                           default: &[&str]|
             -> Result<Vec<usize>, ConfigError> {
                let names: Vec<String> =
                    names.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
                if names.is_empty() {
                    return Err(perr(format!("{key} = []: list at least one feature")));
                }
                let mut out = Vec::new();
                for n in &names {
                    match known.iter().position(|k| k == n) {
                        Some(ix) if !out.contains(&ix) => out.push(ix),
                        Some(_) => return Err(perr(format!("{key}: \"{n}\" listed twice"))),
                        None => {
                            return Err(perr(format!(
                                "{key}: unknown feature \"{n}\" (known: {})",
                                known.join(", ")
                            )))
                        }
                    }
                }
                Ok(out)
            };
            let window_features = resolve(
                "window_features",
                p.window_features.clone(),
                &crate::detect::features::WINDOW_FEATURES,
                &crate::detect::features::DEFAULT_WINDOW_FEATURES,
            )?;
            let flow_features = resolve(
                "flow_features",
                p.flow_features.clone(),
                &crate::detect::features::FLOW_FEATURES,
                &crate::detect::features::DEFAULT_FLOW_FEATURES,
            )?;
            let host_features = resolve(
                "host_features",
                p.host_features.clone(),
                &crate::detect::features::HOST_FEATURES,
                &crate::detect::features::DEFAULT_HOST_FEATURES,
            )?;
            if p.host_features.is_some() && !p.mode.host() {
                return Err(perr("host_features: only for mode \"host\"".into()));
            }
            if !p.host_rate.is_finite() || p.host_rate < 1.0 || p.host_rate > MAX_HOST_RATE {
                return Err(perr(format!(
                    "host_rate = {}: must be between 1 and {MAX_HOST_RATE:e} samples/s",
                    p.host_rate
                )));
            }
            if p.host_table < 16 || p.host_table > MAX_HOST_TABLE {
                return Err(perr(format!(
                    "host_table = {}: must be between 16 and {MAX_HOST_TABLE}",
                    p.host_table
                )));
            }
            if !p.mode.host() && !p.beacon_ignore_hosts.is_empty() {
                return Err(perr("beacon_ignore_hosts: only for mode \"host\"".into()));
            }
            if !p.mode.host() && !p.beacon_ignore_ports.is_empty() {
                return Err(perr("beacon_ignore_ports: only for mode \"host\"".into()));
            }
            let mut beacon_ignore_hosts = Vec::with_capacity(p.beacon_ignore_hosts.len());
            for h in &p.beacon_ignore_hosts {
                beacon_ignore_hosts.push(IpNet::parse(h).ok_or_else(|| {
                    perr(format!(
                        "beacon_ignore_hosts: {h:?}: not an address or network (e.g. \"198.51.100.7\", \"10.0.0.0/8\", \"2001:db8::/32\")"
                    ))
                })?);
            }
            let mut beacon_ignore_ports = Vec::with_capacity(p.beacon_ignore_ports.len());
            for &port in &p.beacon_ignore_ports {
                beacon_ignore_ports.push(u16::try_from(port).map_err(|_| {
                    perr(format!(
                        "beacon_ignore_ports: {port}: not a port (0..65535)"
                    ))
                })?);
            }
            if p.evidence.scope == Some(Scope::Host) && !p.mode.host() {
                return Err(perr(
                    "evidence.scope = \"host\": only for mode \"host\"".into(),
                ));
            }
            let log1p_host: Vec<bool> = match &p.scaling.log1p {
                None => host_features
                    .iter()
                    .map(|&i| crate::detect::features::HOST_LOG1P_DEFAULT[i])
                    .collect(),
                Some(list) => host_features
                    .iter()
                    .map(|&i| {
                        list.iter()
                            .any(|x| x == crate::detect::features::HOST_FEATURES[i])
                    })
                    .collect(),
            };
            let (log1p_window, log1p_flow) = match &p.scaling.log1p {
                None => (
                    window_features
                        .iter()
                        .map(|&i| crate::detect::features::WINDOW_LOG1P_DEFAULT[i])
                        .collect(),
                    flow_features
                        .iter()
                        .map(|&i| crate::detect::features::FLOW_LOG1P_DEFAULT[i])
                        .collect(),
                ),
                Some(list) => {
                    for n in list {
                        if !crate::detect::features::WINDOW_FEATURES.contains(&n.as_str())
                            && !crate::detect::features::FLOW_FEATURES.contains(&n.as_str())
                            && !crate::detect::features::HOST_FEATURES.contains(&n.as_str())
                        {
                            return Err(perr(format!("scaling.log1p: unknown feature \"{n}\"")));
                        }
                    }
                    let has = |n: &str| list.iter().any(|x| x == n);
                    (
                        window_features
                            .iter()
                            .map(|&i| has(crate::detect::features::WINDOW_FEATURES[i]))
                            .collect(),
                        flow_features
                            .iter()
                            .map(|&i| has(crate::detect::features::FLOW_FEATURES[i]))
                            .collect(),
                    )
                }
            };
            if p.scaling.kind == ScalingKind::MinMax && p.threshold.require_out_of_range {
                return Err(perr(
                    "threshold.require_out_of_range: only with scaling.kind = \"robust\"".into(),
                ));
            }
            if p.scaling.kind == ScalingKind::MinMax && p.scaling.log1p.is_some() {
                return Err(perr(
                    "scaling.log1p: only with kind = \"robust\" (minmax is River's exact scaler)"
                        .into(),
                ));
            }
            if !p.filter.trim().is_empty() {
                crate::filter::compile(&p.filter, crate::wire::LinkType::Ethernet)
                    .map_err(|e| perr(format!("filter = \"{}\": {e}", p.filter)))?;
            }
            profiles.push(Profile {
                index: i,
                name: p.name,
                filter: p.filter,
                mode: p.mode,
                window_ns: secs_to_ns(p.window_s).max(1),
                window_features,
                flow_features,
                host_features,
                log1p_host,
                host_rate: p.host_rate,
                host_table: p.host_table,
                beacon_ignore_hosts,
                beacon_ignore_ports,
                n_trees: p.hst.n_trees,
                height: p.hst.height,
                window_size: p.hst.window_size,
                seed: p.hst.seed,
                scaling: p.scaling.kind,
                log1p_window,
                log1p_flow,
                warmup: p.scaling.warmup,
                threshold,
                require_out_of_range: p.threshold.require_out_of_range,
                cooldown_ns: secs_to_ns(p.threshold.cooldown_s),
                max_alerts_per_min: p.threshold.max_alerts_per_min,
                active_packets: p.active_packets,
                active_interval_ms: secs_to_ns(p.active_interval_s) / 1_000_000,
                pre_ns: secs_to_ns(p.evidence.pre_s),
                post_ns: secs_to_ns(p.evidence.post_s),
                snaplen: p.evidence.snaplen,
                scope_flow: p.evidence.scope.unwrap_or(Scope::Flow),
                scope_window: p.evidence.scope.unwrap_or(Scope::Window),
                scope_host: p.evidence.scope.unwrap_or(Scope::Host),
                max_evidence_packets: p.evidence.max_packets,
            });
        }
        let metrics_listen = match &self.metrics.listen {
            None => None,
            Some(a) => Some(
                parse_socket_addr(a, Some("127.0.0.1"))
                    .map_err(|m| err(format!("metrics.listen = {m}")))?,
            ),
        };
        let ix = &self.ipfix;
        let ipfix = match &ix.collector {
            None => None,
            Some(a) => {
                let addr = parse_socket_addr(a, None)
                    .map_err(|m| err(format!("ipfix.collector = {m}")))?;
                if addr.port() == 0 {
                    return Err(err(format!("ipfix.collector = \"{a}\": port 0")));
                }
                if !(ix.template_refresh_s.is_finite()
                    && (0.0..=MAX_SECONDS).contains(&ix.template_refresh_s))
                {
                    return Err(err(format!(
                        "ipfix.template_refresh_s = {}: must be in 0..1e9 (0 = only at start and after errors)",
                        ix.template_refresh_s
                    )));
                }
                if ix.pen == 0 {
                    return Err(err(
                        "ipfix.pen = 0: must be a private enterprise number > 0".into(),
                    ));
                }
                if !(1..=1 << 20).contains(&ix.queue) {
                    return Err(err(format!(
                        "ipfix.queue = {}: must be in 1..1048576",
                        ix.queue
                    )));
                }
                let mut c = crate::sink::ipfix::IpfixConfig::new(addr);
                c.template_refresh_s = ix.template_refresh_s;
                c.template_refresh_messages = ix.template_refresh_messages;
                c.observation_domain = ix.observation_domain;
                c.pen = ix.pen;
                c.queue = ix.queue;
                Some(c)
            }
        };
        let nx = &self.nats;
        let nats = match &nx.server {
            None => None,
            Some(a) => {
                let hostport = a.trim().strip_prefix("nats://").unwrap_or(a.trim());
                let addr = parse_socket_addr(hostport, None)
                    .map_err(|m| err(format!("nats.server = {m}")))?;
                let subject_ok = |s: &str| {
                    !s.is_empty()
                        && s.split('.').all(|t| !t.is_empty())
                        && !s.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
                };
                if !subject_ok(&nx.subject) {
                    return Err(err(format!(
                        "nats.subject = {:?}: not a subject (dot-separated tokens, no spaces or wildcards)",
                        nx.subject
                    )));
                }
                if !nx
                    .create_stream
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(err(format!(
                        "nats.create_stream = {:?}: letters, digits, '-' and '_' only",
                        nx.create_stream
                    )));
                }
                if !(4096..=1 << 40).contains(&nx.spool_max_bytes) {
                    return Err(err(format!(
                        "nats.spool_max_bytes = {}: must be in 4096..2^40",
                        nx.spool_max_bytes
                    )));
                }
                if !(nx.drain_timeout_s.is_finite() && (0.0..=3600.0).contains(&nx.drain_timeout_s))
                {
                    return Err(err(format!(
                        "nats.drain_timeout_s = {}: must be in 0..3600",
                        nx.drain_timeout_s
                    )));
                }
                let mut c = crate::sink::nats::NatsConfig::new(addr);
                c.subject = nx.subject.clone();
                c.create_stream = nx.create_stream.clone();
                c.user = nx.user.clone();
                c.password = nx.password.clone();
                c.token = nx.token.clone();
                c.spool_max_bytes = nx.spool_max_bytes;
                c.drain_timeout_s = nx.drain_timeout_s;
                Some(c)
            }
        };
        Ok(Config {
            nats,
            metrics_listen,
            ipfix,
            source: file.to_string(),
            state_dir: sensor.state_dir,
            shards: sensor.shards,
            ring_capacity: sensor.ring_capacity,
            key: sensor.key,
            learn_during_incidents: sensor.learn_during_incidents,
            checkpoint_interval_ns: secs_to_ns(sensor.checkpoint_interval_s),
            idle_timeout_ns: secs_to_ns(self.flow.idle_timeout_s),
            active_timeout_ns: secs_to_ns(self.flow.active_timeout_s),
            capacity: self.flow.capacity,
            accounting: self.flow.accounting,
            splt: self.flow.splt,
            decode_tunnels: self.flow.decode_tunnels,
            ring_bytes: self.evidence.ring_mib << 20,
            ring_snaplen: self.evidence.snaplen,
            evidence_max_bytes: self.evidence.max_bytes,
            evidence_max_files: self.evidence.max_files,
            evidence_queue: self.evidence.queue,
            profiles,
        })
    }
}

fn one_line(s: &str) -> String {
    // toml's errors are multi-line with a caret diagram; keep the location and message.
    let mut parts: Vec<&str> = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect();
    parts.dedup();
    parts
        .into_iter()
        .filter(|l| !l.contains(" | "))
        .collect::<Vec<_>>()
        .join(": ")
}

/// Loads a config file, or the embedded default when `path` is None.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_with(path, &Overrides::default())
}

/// Command-line settings that override the configuration: applied to the raw
/// configuration before it is validated, so every value goes through the same checks
/// whichever way it came.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Every profile's tree seed: profile i gets `seed + i`.
    pub seed: Option<u64>,
    pub ring_mib: Option<u64>,
    pub idle_timeout_s: Option<f64>,
    pub active_timeout_s: Option<f64>,
    pub accounting: Option<Accounting>,
    pub key: Option<KeyMode>,
    pub flow_capacity: Option<usize>,
    pub ring_capacity: Option<usize>,
    pub shards: Option<usize>,
    pub state_dir: Option<PathBuf>,
    pub splt: Option<u16>,
    pub decode_tunnels: Option<bool>,
    /// `--metrics-listen ADDR`
    pub metrics_listen: Option<String>,
    /// `--ipfix HOST:PORT`
    pub ipfix: Option<String>,
    /// `--nats HOST:PORT`
    pub nats: Option<String>,
}

impl RawConfig {
    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(s) = o.seed {
            for (i, p) in self.profiles.iter_mut().enumerate() {
                p.hst.seed = s.wrapping_add(i as u64);
            }
        }
        let sensor = self.sensor.get_or_insert_with(|| RawSensor {
            state_dir: None,
            shards: 0,
            ring_capacity: d_ring(),
            key: KeyMode::FiveTuple,
            learn_during_incidents: false,
            checkpoint_interval_s: d_checkpoint(),
        });
        if let Some(v) = o.shards {
            sensor.shards = v;
        }
        if let Some(v) = o.ring_capacity {
            sensor.ring_capacity = v;
        }
        if let Some(v) = o.key {
            sensor.key = v;
        }
        if let Some(v) = &o.state_dir {
            sensor.state_dir = Some(v.clone());
        }
        if let Some(v) = o.ring_mib {
            self.evidence.ring_mib = v;
        }
        if let Some(v) = o.idle_timeout_s {
            self.flow.idle_timeout_s = v;
        }
        if let Some(v) = o.active_timeout_s {
            self.flow.active_timeout_s = v;
        }
        if let Some(v) = o.accounting {
            self.flow.accounting = v;
        }
        if let Some(v) = o.flow_capacity {
            self.flow.capacity = v;
        }
        if let Some(v) = o.splt {
            self.flow.splt = v;
        }
        if let Some(v) = o.decode_tunnels {
            self.flow.decode_tunnels = v;
        }
        if let Some(v) = &o.metrics_listen {
            self.metrics.listen = Some(v.clone());
        }
        if let Some(v) = &o.ipfix {
            self.ipfix.collector = Some(v.clone());
        }
        if let Some(v) = &o.nats {
            self.nats.server = Some(v.clone());
        }
    }
}

/// The one configuration path: the file (or the embedded default), the command line's
/// overrides, then validation (errors name file and key). A file that cannot be read is
/// named with the option: `--config PATH: why`.
pub fn load_with(path: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
    match path {
        Some(p) => {
            let name = p.display().to_string();
            let bytes = read_config_file(p).map_err(|msg| ConfigError {
                file: format!("--config {name}"),
                msg,
            })?;
            if bytes.len() > MAX_CONFIG_BYTES {
                return Err(ConfigError {
                    file: format!("--config {name}"),
                    msg: too_large(),
                });
            }
            load_bytes(&bytes, &name, o)
        }
        None => {
            let mut raw = RawConfig::default_config();
            raw.apply(o);
            raw.validate("default sensor.toml")
        }
    }
}

/// [`load_with`] after the file was read: its bytes (UTF-8 TOML of at most
/// [`MAX_CONFIG_BYTES`]), named `name` in errors.
pub fn load_bytes(bytes: &[u8], name: &str, o: &Overrides) -> Result<Config, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError {
            file: name.to_string(),
            msg: too_large(),
        });
    }
    let mut raw = RawConfig::parse(&config_text(bytes, name)?, name)?;
    raw.apply(o);
    raw.validate(name)
}

fn too_large() -> String {
    format!(
        "larger than {} MiB, the most a configuration file may be",
        MAX_CONFIG_BYTES >> 20
    )
}

/// The bytes of a configuration file as text; not UTF-8 is an error naming the line.
fn config_text(bytes: &[u8], name: &str) -> Result<String, ConfigError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError {
            file: name.to_string(),
            msg: format!(
                "not UTF-8 text: byte 0x{:02x} at offset {at} (line {line})",
                bytes[at]
            ),
        }
    })
}

/// Reads at most [`MAX_CONFIG_BYTES`] + 1 bytes of `path` (one more than allowed, so that
/// the caller can tell a file that is too large). Opening never blocks: a FIFO that no
/// process writes is an error at once instead of a start-up that waits forever; a FIFO
/// (or pipe) with a writer is read like a file. The error is one line without the path.
pub fn read_config_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("is a directory, not a configuration file".into());
    }
    let mut buf = Vec::new();
    if meta.file_type().is_fifo() {
        // Non-blocking: 0 bytes means no writer (and nothing buffered); WouldBlock means a
        // writer that has not written yet.
        let mut chunk = [0u8; 4096];
        match f.read(&mut chunk) {
            Ok(0) => return Err("a FIFO with no writer: nothing to read".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    nix::fcntl::fcntl(
        f.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| std::io::Error::from(e).to_string())?;
    let room = (MAX_CONFIG_BYTES + 1).saturating_sub(buf.len()) as u64;
    (&mut f)
        .take(room)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_networks_parse_and_match() {
        let n = IpNet::parse("198.18.4.0/22").unwrap();
        assert!(n.contains("198.18.7.255".parse().unwrap()));
        assert!(!n.contains("198.18.8.0".parse().unwrap()));
        assert!(!n.contains("::ffff:198.18.4.1".parse().unwrap()));
        let one = IpNet::parse(" 10.1.2.3 ").unwrap();
        assert_eq!(one.len, 32);
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for all in ["0.0.0.0/0", "::/0"] {
            let n = IpNet::parse(all).unwrap();
            assert_eq!(n.contains("1.2.3.4".parse().unwrap()), all == "0.0.0.0/0");
            assert_eq!(n.contains("::1".parse().unwrap()), all == "::/0");
        }
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "x",
            "10.0.0.0/",
            "10.0.0/8",
            "/8",
            "",
        ] {
            assert_eq!(IpNet::parse(bad), None, "{bad}");
        }
    }

    fn with_profile(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[profile]]\nname = \"p\"\nmode = \"window\"\n{extra}\n[profile.threshold]\nfixed = 0.9\n"
        );
        RawConfig::parse(&text, "t.toml")?.validate("t.toml")
    }

    #[test]
    fn default_config_is_valid() {
        let c = load(None).unwrap();
        assert_eq!(c.profiles.len(), 2);
        assert_eq!(c.idle_timeout_ns, 120_000_000_000);
    }

    #[test]
    fn errors_name_the_key() {
        let e = with_profile("window_s = 0").unwrap_err().to_string();
        assert_eq!(e, "t.toml: profile \"p\": window_s = 0: must be > 0");
        let e = with_profile("window_s = -1").unwrap_err().to_string();
        assert!(e.contains("window_s = -1"), "{e}");
        let e = with_profile("[profile.hst]\nheight = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hst.height = 0"), "{e}");
        let e = with_profile("window_features = [\"packets\", \"nope\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown feature \"nope\""), "{e}");
        let text = "[[profile]]\nname = \"p\"\nmode = \"flow\"\n[profile.threshold]\nfixed = 1.5\n";
        let e = RawConfig::parse(text, "t.toml")
            .unwrap()
            .validate("t.toml")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("threshold.fixed = 1.5: must be within [0, 1]"),
            "{e}"
        );
        let text =
            "[[profile]]\nname = \"p\"\nmode = \"flow\"\n[profile.threshold]\nquantile = 1.0\n";
        let e = RawConfig::parse(text, "t.toml")
            .unwrap()
            .validate("t.toml")
            .unwrap_err();
        assert!(e.to_string().contains("threshold.quantile = 1"), "{e}");
        let e = RawConfig::parse("[flow]\nidle_timeout_s = 0\n", "t.toml")
            .unwrap()
            .validate("t.toml")
            .unwrap_err();
        assert!(e.to_string().contains("flow.idle_timeout_s = 0"), "{e}");
        // Unknown keys are rejected with their name, on one line.
        let e = RawConfig::parse("[flow]\nidle_timeout = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timeout") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn file_limits_and_odd_bytes_are_one_line() {
        let o = Overrides::default();
        let e = load_bytes(b"# a\0comment\n", "t.toml", &o)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.toml: TOML parse error at line 1, column 4: unexpected character '\\0'"
        );
        let e = load_bytes(&vec![b' '; MAX_CONFIG_BYTES + 1], "t.toml", &o)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml: larger than 1 MiB"), "{e}");
        assert!(load_bytes(&vec![b' '; MAX_CONFIG_BYTES], "t.toml", &o).is_ok());
        let e = load_bytes(b"[flow]\ncapacity = 1\xff\n", "t.toml", &o)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.toml: not UTF-8 text: byte 0xff at offset 19 (line 2)");
        let long = format!("[flow]\ncapacity = \"{}\"\n", "a".repeat(200_000));
        let e = load_bytes(long.as_bytes(), "t.toml", &o)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 700 && e.ends_with("expected usize"), "{e}");
        assert!(e.contains("(199"), "{e}");
        let e = with_profile("filter = \"tcp\\nand\"")
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains('\n') && e.contains("filter = \"tcp\\nand\""),
            "{e}"
        );
        // Overrides beyond the bounds are refused by the same checks.
        for (o, want) in [
            (
                Overrides {
                    shards: Some(usize::MAX),
                    ..Overrides::default()
                },
                "sensor.shards = 18446744073709551615: at most 256 (0: cores minus readers)",
            ),
            (
                Overrides {
                    ring_mib: Some(u64::MAX),
                    ..Overrides::default()
                },
                "evidence.ring_mib = 18446744073709551615: must be between 1 and 65536",
            ),
        ] {
            let e = load_with(None, &o).unwrap_err().to_string();
            assert_eq!(e, format!("default sensor.toml: {want}"));
        }
        let e = RawConfig::parse("[evidence]\nring_mib = 1\nsnaplen = 262144\n", "t")
            .unwrap()
            .validate("t")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t: evidence.ring_mib = 1: too small for evidence.snaplen = 262144 (at least 3 MiB)"
        );
        let e = with_profile("[profile.hst]\nheight = 20\nwindow_size = 8192")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profile \"p\": hst: window_size = 8192 with height = 20"),
            "{e}"
        );
    }

    #[test]
    fn bad_filter_is_named() {
        let e = with_profile("filter = \"tcp and and port\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profile \"p\"") && e.contains("filter = \"tcp and and port\""),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn filter_masks() {
        let text = "[[profile]]\nname = \"a\"\nmode = \"window\"\nfilter = \"udp\"\n[profile.threshold]\nfixed = 0.9\n\
                    [[profile]]\nname = \"b\"\nmode = \"window\"\n[profile.threshold]\nfixed = 0.9\n";
        let c = RawConfig::parse(text, "t").unwrap().validate("t").unwrap();
        let mut f =
            crate::filter::ProfileFilters::new(c.profiles.iter().map(|p| p.filter.as_str()));
        let mut src = crate::capture::pcap::PcapFileSource::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/pcaps/basic/dns-edns-ecs.pcap"),
        )
        .unwrap();
        use crate::capture::PacketSource;
        let (mut udp, mut all) = (0, 0);
        while let Some(fr) = src.next_frame().unwrap() {
            let m = f.mask(fr.data, fr.link);
            assert!(m & 2 != 0);
            all += 1;
            udp += (m & 1) as u32;
        }
        assert!(udp > 0 && udp < all, "{udp} {all}");
    }
}
