//! Live capture's command line (`streamml-sensor --iface IF ...`): the options, checked and
//! turned into the engine's [`LiveOptions`] and the configuration with its overrides.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::ValueEnum;

use super::{
    flow_capacity, non_negative_seconds, positive_seconds, ring_capacity, ring_mib, shard_count,
    AccountingArg, KeyArg, OutFormat,
};
use crate::capture::afxdp::{Idle, XskConfig, ZeroCopy};
use crate::capture::probe::Refused;
use crate::capture::xdp::{
    AttachMode, FilterSet, SampleBy, TsCarrier, XdpAction, XdpSettings, MAX_QUEUES,
};
use crate::config::{self, Overrides};
use crate::engine::live::{Ended, LiveOptions, ReloadGap, ReloadSource};

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachModeArg {
    /// Native (driver) mode, falling back to SKB mode when the driver has none.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode: works on every interface, slower, copies.
    Skb,
}

/// `--zero-copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ZeroCopyArg {
    /// Try zero-copy; where the driver refuses it, copy mode (the reason is reported).
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// `--sample-by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SampleByArg {
    /// Each frame independently at random.
    Packet,
    /// By a symmetric hash of addresses and ports: whole flows are kept or dropped.
    Flow,
}

/// `--xdp-action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpActionArg {
    /// Dropped (a sensor on a tap or mirror port: nothing else wants them).
    Consume,
    /// Passed on to the host's stack (a sensor on a live host). Frames redirected to the
    /// sensor are still taken: AF_XDP cannot hand a copy to the stack.
    Pass,
}

/// `--idle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdleArg {
    /// Check the ring again at once (burns a core: for readers with a core of their own).
    Spin,
    /// Sleep in poll() until the socket has frames.
    Poll,
    /// Spin for a short while, then yield, then poll().
    Adaptive,
    /// Sleep while the ring is empty, for an interval adapted to the rate (10 µs to
    /// --nap-us); after --yield-rounds empty naps, poll(). The reader then takes full
    /// batches and leaves the core to others (interrupt coalescing done by the reader).
    Nap,
}

impl From<AttachModeArg> for AttachMode {
    fn from(a: AttachModeArg) -> Self {
        match a {
            AttachModeArg::Auto => AttachMode::Auto,
            AttachModeArg::Native => AttachMode::Native,
            AttachModeArg::Skb => AttachMode::Skb,
        }
    }
}

impl From<ZeroCopyArg> for ZeroCopy {
    fn from(a: ZeroCopyArg) -> Self {
        match a {
            ZeroCopyArg::Auto => ZeroCopy::Auto,
            ZeroCopyArg::On => ZeroCopy::On,
            ZeroCopyArg::Off => ZeroCopy::Off,
        }
    }
}

impl From<SampleByArg> for SampleBy {
    fn from(a: SampleByArg) -> Self {
        match a {
            SampleByArg::Packet => SampleBy::Packet,
            SampleByArg::Flow => SampleBy::Flow,
        }
    }
}

impl From<XdpActionArg> for XdpAction {
    fn from(a: XdpActionArg) -> Self {
        match a {
            XdpActionArg::Consume => XdpAction::Consume,
            XdpActionArg::Pass => XdpAction::Pass,
        }
    }
}

impl From<IdleArg> for Idle {
    fn from(a: IdleArg) -> Self {
        match a {
            IdleArg::Spin => Idle::Spin,
            IdleArg::Poll => Idle::Poll,
            IdleArg::Adaptive => Idle::Adaptive,
            IdleArg::Nap => Idle::Nap,
        }
    }
}

/// Options of the live mode. Flattened into the top-level command line.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Live capture (no subcommand)")]
pub struct LiveArgs {
    /// Interface to capture on (live mode).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// RX queues to read, 0..N-1, at most 256 [default: the interface's RX/combined
    /// channel count].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUEUES as i64))]
    pub queues: Option<u32>,
    /// Where the XDP program runs.
    #[arg(long, value_enum, default_value_t = AttachModeArg::Auto)]
    pub xdp_mode: AttachModeArg,
    /// AF_XDP zero-copy: auto tries it and falls back to copy mode.
    #[arg(long, value_enum, default_value_t = ZeroCopyArg::Auto)]
    pub zero_copy: ZeroCopyArg,
    /// Percentage of frames (or flows, with --sample-by flow) to keep, 0-100.
    #[arg(long, value_name = "PCT", default_value_t = 100.0)]
    pub sample: f64,
    /// Sample frames independently or whole flows (symmetric hash of addresses and ports).
    #[arg(long, value_enum, default_value_t = SampleByArg::Packet)]
    pub sample_by: SampleByArg,
    /// Frames the sensor does not take: dropped (tap port) or passed to the host's stack.
    #[arg(long, value_enum, default_value_t = XdpActionArg::Consume)]
    pub xdp_action: XdpActionArg,
    /// Timestamp frames when their RX batch is read instead of in the XDP program (per
    /// frame, through XDP metadata; the default).
    #[arg(long)]
    pub no_xdp_timestamps: bool,
    /// Keep only these EtherTypes (after VLAN tags), e.g. 0x0800,0x86dd.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_u16, conflicts_with = "drop_ethertype")]
    pub keep_ethertype: Vec<u16>,
    /// Filter out these EtherTypes.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_u16)]
    pub drop_ethertype: Vec<u16>,
    /// Keep only these IP protocols, e.g. 6,17.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "drop_proto"
    )]
    pub keep_proto: Vec<u8>,
    /// Filter out these IP protocols.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub drop_proto: Vec<u8>,
    /// Keep only TCP/UDP/SCTP frames with a source or destination port in this list.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "drop_port"
    )]
    pub keep_port: Vec<u16>,
    /// Filter out TCP/UDP/SCTP frames with a source or destination port in this list.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub drop_port: Vec<u16>,
    /// Replace an XDP program that is not ours.
    #[arg(long)]
    pub force: bool,
    /// Cores for the reader threads, e.g. 0-3 or 2,3 (queue i on the i-th, cycling); each
    /// one this process may run on (see `taskset -p $$`).
    #[arg(long, value_name = "LIST", value_parser = parse_core_list)]
    pub reader_cores: Option<CoreList>,
    /// Do not pin reader threads (where cores are shared).
    #[arg(long)]
    pub no_pin: bool,
    /// UMEM frame size: 2048 or 4096 [default: 2048, or 4096 when the interface's MTU
    /// needs it].
    #[arg(long, value_parser = frame_size)]
    pub frame_size: Option<u32>,
    /// Fill ring entries = UMEM frames per queue: a power of two, 64 to 65536. 32768
    /// frames of 2 KiB: 64 MiB per queue, ~20 ms at 1.5 Mpps per queue for a reader that
    /// is not scheduled.
    #[arg(long, default_value_t = 32768, value_parser = xsk_ring_size)]
    pub fill_size: u32,
    /// RX ring entries per queue: a power of two, 64 to 65536.
    #[arg(long, default_value_t = 32768, value_parser = xsk_ring_size)]
    pub rx_size: u32,
    /// Frames taken from the RX ring at a time: 1 to the smaller of --rx-size and
    /// --fill-size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_XSK_RING as i64))]
    pub batch: u32,
    /// What a reader does when its ring is empty.
    #[arg(long, value_enum, default_value_t = IdleArg::Nap)]
    pub idle: IdleArg,
    /// Adaptive idle: empty-ring checks (~10-20 ns each) before yielding the core (0: yield
    /// at once).
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub spin_rounds: u32,
    /// Adaptive idle: sched_yield() calls before sleeping in poll(); nap idle: naps in a
    /// row before sleeping in poll() (0: poll() at once).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub yield_rounds: u32,
    /// Nap idle: the longest nap, microseconds, 10 to 1000000 (naps adapt to the rate
    /// below this; for no naps at all use --idle spin or poll).
    #[arg(long, value_name = "USECS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(MIN_NAP_US as i64..=MAX_NAP_US as i64))]
    pub nap_us: u32,
    /// Bind without XDP_USE_NEED_WAKEUP.
    #[arg(long)]
    pub no_need_wakeup: bool,
    /// Busy polling: SO_BUSY_POLL microseconds, at most 1000000 (0 = off).
    #[arg(long, value_name = "USECS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_BUSY_POLL_US as i64))]
    pub busy_poll: u32,
    /// Run the interface's NAPI in kernel threads (/sys/class/net/IF/threaded) while
    /// capturing; restored at exit.
    #[arg(long)]
    pub threaded_napi: bool,
    /// Seconds between stats lines, at most 1e9 (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = non_negative_seconds)]
    pub report_interval: f64,
    /// Write the final counters as JSON to this file (also on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, or PORT alone for
    /// 127.0.0.1; overrides [metrics] listen).
    #[arg(long, value_name = "ADDR", value_parser = super::metrics_addr)]
    pub metrics_listen: Option<String>,
    /// Export every flow as IPFIX over UDP to this collector (overrides [ipfix] collector).
    #[arg(long, value_name = "HOST:PORT", value_parser = super::ipfix_addr)]
    pub ipfix: Option<String>,
    /// Publish alerts to NATS JetStream at this server (nats://HOST:PORT; overrides
    /// [nats] server), spooled in the state directory until acknowledged.
    #[arg(long, value_name = "URL", value_parser = super::nats_addr)]
    pub nats: Option<String>,
    /// Stop after this many seconds (> 0, at most 1e9) [default: run until SIGINT or
    /// SIGTERM].
    #[arg(long, value_name = "SECS", value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Configuration file: detection profiles, flow, shard and evidence settings
    /// [default: the embedded sensor.toml]. The flags below override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory: alerts.jsonl, evidence/, ring/ (one evidence ring per queue)
    /// [default: sensor.state_dir from the config, else as `replay` resolves it].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Override every profile's tree seed (profile i gets SEED + i).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Size of each queue's evidence ring in MiB, 1 to 65536; every ring must fit the
    /// free space of the state directory [default: evidence.ring_mib].
    #[arg(long, value_name = "MIB", value_parser = ring_mib)]
    pub ring_mib: Option<u64>,
    /// Write the flows to this file at exit, sorted and numbered like `flows`.
    #[arg(long, value_name = "FILE")]
    pub flows_out: Option<PathBuf>,
    /// Format of --flows-out.
    #[arg(long, value_enum, default_value = "csv")]
    pub flows_format: OutFormat,
    /// Flow idle timeout in seconds [default: flow.idle_timeout_s, 120].
    #[arg(long, value_name = "S", value_parser = positive_seconds)]
    pub idle_timeout: Option<f64>,
    /// Flow active timeout in seconds [default: flow.active_timeout_s, 1800].
    #[arg(long, value_name = "S", value_parser = positive_seconds)]
    pub active_timeout: Option<f64>,
    /// What a packet's size counts in flows: link, ip, transport or payload
    /// [default: flow.accounting, link].
    #[arg(long, value_enum)]
    pub accounting: Option<AccountingArg>,
    /// Shard key: 5-tuple (balance) or ip-pair [default: sensor.key, 5-tuple].
    #[arg(long, value_enum)]
    pub key: Option<KeyArg>,
    /// Scorer shards, 1 to 256; more than the cores is allowed (a warning: the threads
    /// share them) [default: sensor.shards, else cores minus readers, at least 1].
    #[arg(long, value_name = "S", value_parser = shard_count)]
    pub shards: Option<usize>,
    /// Flow-table capacity per shard, 1 to 2^30 (least recently seen flow evicted beyond
    /// it); the tables at full capacity must fit the memory available
    /// [default: flow.capacity, 1048576].
    #[arg(long, value_name = "N", value_parser = flow_capacity)]
    pub flow_capacity: Option<usize>,
    /// Entries of each reader-to-shard ring, 1 to 65536 [default: sensor.ring_capacity,
    /// 65536].
    #[arg(long, value_name = "N", value_parser = ring_capacity)]
    pub ring_capacity: Option<usize>,
}

/// A list of CPU core ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

/// Largest XSK fill and RX ring (`--fill-size`, `--rx-size`): 65536 entries (with 4 KiB
/// frames a 256 MiB UMEM per queue).
pub const MAX_XSK_RING: u32 = 65536;
/// Smallest XSK fill and RX ring.
pub const MIN_XSK_RING: u32 = 64;
/// `--nap-us` bounds: a nap shorter than 10 µs costs more than it saves (the reader's
/// shortest nap), one longer than a second leaves the fill ring to overflow.
pub const MIN_NAP_US: u32 = 10;
pub const MAX_NAP_US: u32 = 1_000_000;
/// Longest `--busy-poll`, microseconds.
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

/// An XSK ring size: a power of two (the kernel's rule) in 64..=65536.
fn xsk_ring_size(s: &str) -> Result<u32, String> {
    let v = super::bounded_u64(s, MIN_XSK_RING.into(), MAX_XSK_RING.into())? as u32;
    if !v.is_power_of_two() {
        return Err(format!(
            "'{s}' must be a power of two between {MIN_XSK_RING} and {MAX_XSK_RING}"
        ));
    }
    Ok(v)
}

/// `--frame-size`: 2048 or 4096 (the kernel's aligned UMEM chunks).
fn frame_size(s: &str) -> Result<u32, String> {
    match s.trim() {
        "2048" => Ok(2048),
        "4096" => Ok(4096),
        _ => Err(format!(
            "'{s}' must be 2048 or 4096 (the kernel's aligned UMEM chunks)"
        )),
    }
}

/// `0-3,8` for a sorted list of cores.
fn core_ranges(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cores[i].to_string()
        } else {
            format!("{}-{}", cores[i], cores[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a 16-bit number"))
}

/// "0-3,6" -> [0,1,2,3,6]
pub fn parse_core_list(s: &str) -> Result<CoreList, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("{x:?} in core list {s:?} is not a core number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("bad core range {part:?}"));
                }
                v.extend(a..=b);
            }
            None => v.push(num(part)?),
        }
    }
    if v.is_empty() {
        return Err(format!("empty core list {s:?}"));
    }
    Ok(CoreList(v))
}

impl LiveArgs {
    fn xdp_settings(&self) -> XdpSettings {
        fn set<T: Clone>(keep: &[T], drop: &[T]) -> Option<FilterSet<T>> {
            if !keep.is_empty() {
                Some(FilterSet {
                    values: keep.to_vec(),
                    deny: false,
                })
            } else if !drop.is_empty() {
                Some(FilterSet {
                    values: drop.to_vec(),
                    deny: true,
                })
            } else {
                None
            }
        }
        XdpSettings {
            sample_percent: self.sample,
            sample_by: self.sample_by.into(),
            action: self.xdp_action.into(),
            ethertype: set(&self.keep_ethertype, &self.drop_ethertype),
            proto: set(&self.keep_proto, &self.drop_proto),
            port: set(&self.keep_port, &self.drop_port),
            timestamps: !self.no_xdp_timestamps,
        }
    }

    fn xsk_config(&self) -> XskConfig {
        XskConfig {
            frame_size: self.frame_size.unwrap_or(2048),
            fill_size: self.fill_size,
            rx_size: self.rx_size,
            batch: self.batch,
            zero_copy: self.zero_copy.into(),
            need_wakeup: !self.no_need_wakeup,
            busy_poll_us: self.busy_poll,
            idle: self.idle.into(),
            spin_rounds: self.spin_rounds,
            yield_rounds: self.yield_rounds,
            nap_us: self.nap_us,
            ts_carrier: if self.no_xdp_timestamps {
                TsCarrier::None
            } else {
                TsCarrier::Metadata
            },
            ebusy_retry: Duration::from_secs(2),
            refused: Refused::none(),
        }
    }

    /// Checks what no value parser can see alone (options against each other and against
    /// this machine). Runs before the configuration is read, the interface looked at or
    /// anything created: a bad option is its own error, whatever else is wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=100.0).contains(&self.sample) {
            bail!("--sample {}: must be a percentage in 0..=100", self.sample);
        }
        let ring = self.rx_size.min(self.fill_size);
        if self.batch > ring {
            bail!(
                "--batch {}: at most the smaller of --rx-size ({}) and --fill-size ({})",
                self.batch,
                self.rx_size,
                self.fill_size
            );
        }
        if let Some(CoreList(list)) = &self.reader_cores {
            let mut allowed: Vec<usize> = core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect();
            allowed.sort_unstable();
            if !allowed.is_empty() {
                if let Some(c) = list.iter().find(|c| !allowed.contains(c)) {
                    bail!(
                        "--reader-cores: core {c} is not one this process may run on (cores {})",
                        core_ranges(&allowed)
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks the options that name themselves in their errors, loads the configuration
    /// with the options that override it, and builds the engine's options.
    pub fn options(&self) -> anyhow::Result<LiveOptions> {
        let Some(iface) = self.iface.clone() else {
            bail!("--iface is required for live capture");
        };
        self.validate()?;
        let overrides = Overrides {
            seed: self.seed,
            ring_mib: self.ring_mib,
            idle_timeout_s: self.idle_timeout,
            active_timeout_s: self.active_timeout,
            accounting: self.accounting.map(Into::into),
            key: self.key.map(Into::into),
            flow_capacity: self.flow_capacity,
            ring_capacity: self.ring_capacity,
            shards: self.shards,
            state_dir: self.state_dir.clone(),
            metrics_listen: self.metrics_listen.clone(),
            ipfix: self.ipfix.clone(),
            nats: self.nats.clone(),
            ..Overrides::default()
        };
        let cfg = config::load_with(self.config.as_deref(), &overrides)?;
        Ok(LiveOptions {
            iface,
            queues: self.queues,
            xdp_mode: self.xdp_mode.into(),
            force: self.force,
            xdp: self.xdp_settings(),
            xsk: self.xsk_config(),
            frame_size_auto: self.frame_size.is_none(),
            reader_cores: self.reader_cores.as_ref().map(|c| c.0.clone()),
            pin: !self.no_pin,
            threaded_napi: self.threaded_napi,
            report_interval: self.report_interval,
            stats_json: self.stats_json.clone(),
            duration: self.duration,
            cfg,
            flows_out: self.flows_out.clone(),
            flows_jsonl: self.flows_format == OutFormat::Jsonl,
            hooks: crate::engine::live::LiveHooks::default(),
            reload: Some(ReloadSource {
                path: self.config.clone(),
                overrides,
            }),
            metrics: None,
            // Set by the image before this one when it stopped for a reload.
            reloaded_from: std::env::var(ReloadGap::ENV)
                .ok()
                .and_then(|v| ReloadGap::decode(&v)),
        })
    }
}

/// Live capture until a signal or `--duration`.
pub fn run(args: &LiveArgs) -> anyhow::Result<()> {
    let mut o = args.options()?;
    let metrics = super::start_metrics(o.cfg.metrics_listen, Vec::new())?;
    o.metrics = metrics.as_ref().map(|m| m.0.clone());
    match crate::engine::live::run(o)? {
        Ended::Stopped => Ok(()),
        Ended::Reload(gap) => {
            drop(metrics);
            Err(reexec(gap))
        }
    }
}

/// SIGHUP with a changed configuration: the run has stopped as at SIGTERM (models saved,
/// XDP program detached, locks released); the same binary image (`/proc/self/exe`, also
/// after a package upgrade replaced the file) is executed again with the same arguments,
/// in the same process (same PID for systemd), and starts warm. Returns only on failure.
fn reexec(gap: ReloadGap) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    let e = cmd
        .args(args.iter().skip(1))
        .env(ReloadGap::ENV, gap.encode())
        .exec();
    anyhow::Error::new(e).context("reload: executing /proc/self/exe again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists() {
        assert_eq!(parse_core_list("0-3,6").unwrap().0, vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_core_list("2").unwrap().0, vec![2]);
        assert!(parse_core_list("3-1").is_err());
        assert!(parse_core_list("x").is_err());
        assert!(parse_core_list("").is_err());
    }

    #[test]
    fn bounded_values() {
        assert_eq!(xsk_ring_size("4096"), Ok(4096));
        for bad in ["0", "63", "100", "131072", "2147483648", "-1", "x"] {
            assert!(xsk_ring_size(bad).is_err(), "{bad}");
        }
        assert_eq!(frame_size("4096"), Ok(4096));
        assert!(frame_size("1024").is_err());
        assert_eq!(core_ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    #[test]
    fn u16_values() {
        assert_eq!(parse_u16("0x0800"), Ok(0x0800));
        assert_eq!(parse_u16("2048"), Ok(2048));
        assert!(parse_u16("0x10000").is_err());
    }
}
