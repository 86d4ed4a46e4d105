//! Live capture: `streamml-sensor --iface IF [--queues N] ...`.
//!
//! Startup checks the interface and privileges first (one clear line per failure), loads
//! the XDP program, binds one AF_XDP socket per queue and registers it, attaches the
//! program, and starts one reader thread per queue (pinned unless `--no-pin`). The main
//! thread waits for signals and prints a stats line every `--report-interval` seconds.
//!
//! Shutdown (SIGINT, SIGTERM, `--duration`, or a reader failing): detach the XDP program
//! so no new frames arrive, let each reader drain its RX ring, collect the final counters,
//! print the summary, write `--stats-json`, exit 0 (2 on failure). The program is also
//! detached when startup fails half-way or on panic (the loader detaches in `Drop`); a
//! program left by SIGKILL is recognised by name and replaced by the next start.
//! SIGHUP prints a stats line and rewrites the `--stats-json` file with the counters so
//! far; capture goes on.
//!
//! The pipeline is the one replay uses: each reader decodes its frames in place
//! ([`crate::wire::decode`]) and routes the `PacketMeta` over a bounded SPSC ring to the
//! scorer shard of its symmetric flow hash (a full ring drops and counts,
//! `shard.ring_full`); each shard meters flows in its own table; exported flows go through
//! a bounded channel to one writer thread (`--flows-out`; a full channel drops the line and
//! counts `flows.output_dropped`). When a queue is idle its reader sends clock ticks, so
//! flows still expire. At shutdown readers drain, shards flush every flow, the writer
//! finishes the file.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use super::afxdp::{now_ns, Next};
use super::afxdp::{AfXdpSource, BindMode, Idle, KernelStats, QueueStats, XskConfig, ZeroCopy};
use super::xdp::{
    AttachMode, Attached, FilterSet, SampleBy, SensorProgram, XdpAction, XdpCounters, XdpSettings,
    MAX_QUEUES,
};
use crate::cli::{positive_seconds, AccountingArg, KeyArg, OutFormat};
use crate::flow::export::FlowRecord;
use crate::flow::table::{Accounting, FlowConfig, FlowCounters, FlowTable};
use crate::pipeline::{ReaderCounters, TICK_NS};
use crate::shard::{self, FullPolicy, KeyMode, Router, RouterCounters, ShardWorker};
use crate::stats::{self, Counter, Snapshot};
use crate::wire::{self, DecodeOptions, WireError};

/// Options of the live mode. Flattened into the top-level command line by `cli.rs`.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Live capture (no subcommand)")]
pub struct LiveArgs {
    /// Interface to capture on (live mode).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// RX queues to read, 0..N-1 [default: the interface's RX/combined channel count].
    #[arg(long, value_name = "N")]
    pub queues: Option<u32>,
    /// Where the XDP program runs.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
    /// AF_XDP zero-copy: auto tries it and falls back to copy mode.
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,
    /// Percentage of frames (or flows, with --sample-by flow) to keep, 0-100.
    #[arg(long, value_name = "PCT", default_value_t = 100.0)]
    pub sample: f64,
    /// Sample frames independently or whole flows (symmetric hash of addresses and ports).
    #[arg(long, value_enum, default_value_t = SampleBy::Packet)]
    pub sample_by: SampleBy,
    /// Frames the sensor does not take: dropped (tap port) or passed to the host's stack.
    #[arg(long, value_enum, default_value_t = XdpAction::Consume)]
    pub xdp_action: XdpAction,
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
    /// Cores for the reader threads, e.g. 0-3 or 2,3 (queue i on the i-th, cycling).
    #[arg(long, value_name = "LIST", value_parser = parse_core_list)]
    pub reader_cores: Option<CoreList>,
    /// Do not pin reader threads (where cores are shared).
    #[arg(long)]
    pub no_pin: bool,
    /// UMEM frame size (power of two, >= 2048).
    #[arg(long, default_value_t = 2048)]
    pub frame_size: u32,
    /// Fill ring entries = UMEM frames per queue (power of two).
    #[arg(long, default_value_t = 8192)]
    pub fill_size: u32,
    /// RX ring entries per queue (power of two).
    #[arg(long, default_value_t = 8192)]
    pub rx_size: u32,
    /// Frames taken from the RX ring at a time.
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// What a reader does when its ring is empty.
    #[arg(long, value_enum, default_value_t = Idle::Adaptive)]
    pub idle: Idle,
    /// Adaptive idle: empty-ring checks (~10-20 ns each) before yielding the core.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub spin_rounds: u32,
    /// Adaptive idle: sched_yield() calls before sleeping in poll().
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub yield_rounds: u32,
    /// Bind without XDP_USE_NEED_WAKEUP.
    #[arg(long)]
    pub no_need_wakeup: bool,
    /// Busy polling: SO_BUSY_POLL microseconds (0 = off).
    #[arg(long, value_name = "USECS", default_value_t = 0)]
    pub busy_poll: u32,
    /// Run the interface's NAPI in kernel threads (/sys/class/net/IF/threaded) while
    /// capturing; restored at exit.
    #[arg(long)]
    pub threaded_napi: bool,
    /// Seconds between stats lines (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub report_interval: f64,
    /// Write the final counters as JSON to this file (also on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Write exported flows to this file (as they are exported; ids in export order).
    #[arg(long, value_name = "FILE")]
    pub flows_out: Option<PathBuf>,
    /// Format of --flows-out.
    #[arg(long, value_enum, default_value = "csv")]
    pub flows_format: OutFormat,
    /// Flow idle timeout in seconds (nfstream's idle_timeout).
    #[arg(long, value_name = "S", default_value = "120", value_parser = positive_seconds)]
    pub idle_timeout: f64,
    /// Flow active timeout in seconds (nfstream's active_timeout).
    #[arg(long, value_name = "S", default_value = "1800", value_parser = positive_seconds)]
    pub active_timeout: f64,
    /// What a packet's size counts in flows: link (frame), ip, transport or payload.
    #[arg(long, value_enum, default_value = "link")]
    pub accounting: AccountingArg,
    /// Shard key: 5-tuple (balance) or ip-pair.
    #[arg(long, value_enum, default_value = "5-tuple")]
    pub key: KeyArg,
    /// Scorer shards [default: cores minus readers, at least 1].
    #[arg(long, value_name = "S")]
    pub shards: Option<usize>,
    /// Flow-table capacity per shard (least recently seen flow evicted beyond it).
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    pub flow_capacity: usize,
    /// Entries of each reader-to-shard ring.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub ring_capacity: usize,
}

/// A list of CPU core ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

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

// ---------------------------------------------------------------------------------------
// Interface and privilege checks

const IFF_UP: i16 = 0x1;
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    /// ifr_flags (short) or ifr_data (pointer), padded to the kernel's 24-byte union.
    data: [u64; 3],
}

fn ifreq(iface: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 3],
    };
    r.name[..iface.len()].copy_from_slice(iface.as_bytes());
    r
}

fn control_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; a non-negative return is a new fd we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn iface_exists(name: &str) -> bool {
    std::ffi::CString::new(name)
        // SAFETY: a valid C string.
        .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)
        .unwrap_or(false)
}

/// Facts about the interface the sensor needs before it starts.
#[derive(Debug, Clone)]
pub struct IfaceInfo {
    pub name: String,
    pub ifindex: i32,
    pub up: bool,
    /// RX queues (ethtool RX + combined channels; /sys queues/rx-* if ethtool cannot say).
    pub rx_queues: u32,
}

/// Looks the interface up: index, flags, RX queue count.
pub fn iface_info(name: &str) -> anyhow::Result<IfaceInfo> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0', ' ']) {
        bail!("{name:?}: not a valid interface name");
    }
    let cname = std::ffi::CString::new(name).expect("checked for NUL");
    // SAFETY: cname is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        bail!("{name}: no such interface");
    }
    let sock = control_socket().with_context(|| format!("{name}: control socket"))?;
    let mut req = ifreq(name);
    // SAFETY: req is an ifreq-sized buffer with the name set; SIOCGIFFLAGS writes a short.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if r != 0 {
        bail!(
            "{name}: reading interface flags: {}",
            std::io::Error::last_os_error()
        );
    }
    let flags = i16::from_ne_bytes([req.data[0] as u8, (req.data[0] >> 8) as u8]);
    let up = flags & IFF_UP != 0;

    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut req = ifreq(name);
    req.data[0] = (&mut ch as *mut EthtoolChannels) as u64;
    // SAFETY: ifr_data points at an ethtool_channels that outlives the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
    let from_ethtool = if r == 0 {
        Some(ch.rx_count + ch.combined_count).filter(|&n| n > 0)
    } else {
        None
    };
    let rx_queues = match from_ethtool {
        Some(n) => n,
        None => std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1),
    };
    Ok(IfaceInfo {
        name: name.into(),
        ifindex: ifindex as i32,
        up,
        rx_queues,
    })
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Names the capabilities the sensor lacks, or Ok. `umem_bytes` is the locked memory the
/// UMEMs need (CAP_IPC_LOCK, or a RLIMIT_MEMLOCK that large).
pub fn check_privileges(umem_bytes: u64) -> anyhow::Result<()> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // cannot tell; the syscalls will say
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_IPC_LOCK) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: lim is a writable rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < umem_bytes {
            let want = libc::rlimit {
                rlim_cur: umem_bytes.max(lim.rlim_cur) + (1 << 20),
                rlim_max: lim.rlim_max.max(umem_bytes + (1 << 20)),
            };
            // SAFETY: want is a valid rlimit; raising needs CAP_SYS_RESOURCE.
            if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) } != 0 {
                missing.push("CAP_IPC_LOCK");
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "missing privileges: need {} (run as root or grant them, e.g. with setcap)",
            missing.join(", ")
        )
    }
}

fn probe_af_xdp() -> anyhow::Result<()> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => {
                bail!("the kernel has no AF_XDP socket support (CONFIG_XDP_SOCKETS)")
            }
            Some(libc::EPERM) => bail!(
                "missing privileges: need CAP_NET_RAW (creating an AF_XDP socket failed: {e})"
            ),
            _ => bail!("creating an AF_XDP socket failed: {e}"),
        }
    }
    // SAFETY: fd is ours.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// An exclusive flock per (network namespace, interface): a second sensor on the same
/// interface is refused instead of stealing the first one's XDP program.
struct IfaceLock {
    _file: File,
    path: PathBuf,
}

impl IfaceLock {
    fn take(iface: &str) -> anyhow::Result<IfaceLock> {
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        let dir = Path::new("/run/streamml-sensor");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{netns}-{iface}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "{iface}: another streamml-sensor (pid {}) is capturing on it",
                pid.trim()
            );
        }
        f.set_len(0)?;
        write!(f, "{}", std::process::id())?;
        Ok(IfaceLock { _file: f, path })
    }
}

impl Drop for IfaceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// /sys/class/net/IF/threaded set to 1 while capturing, the old value restored on drop.
struct ThreadedNapi {
    path: PathBuf,
    old: String,
}

impl ThreadedNapi {
    fn enable(iface: &str) -> anyhow::Result<ThreadedNapi> {
        let path = PathBuf::from(format!("/sys/class/net/{iface}/threaded"));
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("{iface}: threaded NAPI: reading {}", path.display()))?
            .trim()
            .to_string();
        std::fs::write(&path, "1")
            .with_context(|| format!("{iface}: threaded NAPI: writing 1 to {}", path.display()))?;
        Ok(ThreadedNapi { path, old })
    }
}

impl Drop for ThreadedNapi {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

// ---------------------------------------------------------------------------------------
// Readers

struct Reader {
    queue: u32,
    core: Option<usize>,
    bind: BindMode,
    ebusy_retries: u32,
    stats: Arc<QueueStats>,
    rc: Arc<ReaderCounters>,
    router: Arc<RouterCounters>,
    /// dup of the socket fd, for XDP_STATISTICS while the reader runs and after it ends.
    stats_fd: OwnedFd,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How long a reader waits on an empty queue before it sends the shards a clock tick.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// The reader loop: decode in place, route to the shard, recycle (by asking for the next
/// frame). Ticks carry the clock forward to every shard, from frames or while idle.
fn reader_loop(
    mut src: AfXdpSource,
    router: Router,
    rc: Arc<ReaderCounters>,
    opts: DecodeOptions,
) -> anyhow::Result<()> {
    let mut next_tick = 0u64;
    let mut idle_deadline = Instant::now() + IDLE_TICK;
    loop {
        match src
            .next_or_idle(Some(idle_deadline))
            .map_err(|e| anyhow!(e))?
        {
            Next::Frame(f) => {
                rc.frames.inc();
                rc.bytes.add(u64::from(f.orig_len));
                match wire::decode(f.data, f.orig_len, f.link, &opts) {
                    Ok(m) => {
                        rc.decoded.inc();
                        // all profiles: live detection is not wired in yet (flows only)
                        router.route(f.ts_ns, &m, u16::MAX);
                    }
                    Err(e) => rc.count_err(e),
                }
                if f.ts_ns >= next_tick {
                    router.tick(f.ts_ns);
                    next_tick = f.ts_ns.saturating_add(TICK_NS);
                    idle_deadline = Instant::now() + IDLE_TICK;
                }
            }
            Next::Idle => {
                let now = now_ns();
                router.tick(now);
                next_tick = now.saturating_add(TICK_NS);
                idle_deadline = Instant::now() + IDLE_TICK;
            }
            Next::End => break,
        }
    }
    Ok(()) // dropping the router closes this reader's rings
}

/// Counters of one live shard beyond its flow table's.
#[derive(Debug, Default)]
struct ShardOutCounters {
    exported: Counter,
    output_dropped: Counter,
}

/// A live scorer shard: meters flows and hands each exported flow, formatted, to the
/// writer thread without ever waiting for it.
struct LiveFlowWorker {
    table: FlowTable,
    out: Option<crossbeam_channel::Sender<Vec<u8>>>,
    jsonl: bool,
    ids: Arc<AtomicU64>,
    ctr: Arc<ShardOutCounters>,
}

impl LiveFlowWorker {
    fn emit(
        out: &Option<crossbeam_channel::Sender<Vec<u8>>>,
        jsonl: bool,
        ids: &AtomicU64,
        ctr: &ShardOutCounters,
        r: FlowRecord<'_>,
    ) {
        ctr.exported.inc();
        let Some(tx) = out else { return };
        let id = ids.fetch_add(1, Relaxed);
        let mut line = Vec::with_capacity(768);
        if jsonl {
            r.write_jsonl(&mut line, id);
        } else {
            r.write_csv(&mut line, id);
        }
        if tx.try_send(line).is_err() {
            ctr.output_dropped.inc();
        }
    }
}

impl ShardWorker for LiveFlowWorker {
    #[inline]
    fn on_packet(&mut self, rec: &shard::PacketRecord) {
        let (out, jsonl, ids, ctr) = (&self.out, self.jsonl, &*self.ids, &*self.ctr);
        self.table.update(rec.ts_ns, &rec.meta, &mut |r| {
            Self::emit(out, jsonl, ids, ctr, r)
        });
    }

    fn on_tick(&mut self, now_ns: u64) {
        let (out, jsonl, ids, ctr) = (&self.out, self.jsonl, &*self.ids, &*self.ctr);
        self.table
            .advance(now_ns, &mut |r| Self::emit(out, jsonl, ids, ctr, r));
    }

    fn finish(&mut self) {
        let (out, jsonl, ids, ctr) = (&self.out, self.jsonl, &*self.ids, &*self.ctr);
        self.table
            .flush(&mut |r| Self::emit(out, jsonl, ids, ctr, r));
        self.out = None; // the writer ends when every shard has finished
    }
}

struct Shard {
    flow: Arc<FlowCounters>,
    out: Arc<ShardOutCounters>,
    handle: Option<JoinHandle<()>>,
}

/// Writer thread of `--flows-out`: appends lines as they come, flushes every second. A
/// write error is logged once and counted; the sensor goes on.
fn flow_writer(
    path: PathBuf,
    file: File,
    header: Option<String>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    written: Arc<Counter>,
    errors: Arc<Counter>,
) {
    let mut w = Some(std::io::BufWriter::with_capacity(1 << 20, file));
    let fail = |e: std::io::Error, w: &mut Option<std::io::BufWriter<File>>| {
        log(format_args!(
            "{}: {e}; flows are no longer written",
            path.display()
        ));
        errors.inc();
        *w = None;
    };
    if let (Some(h), Some(f)) = (header, w.as_mut()) {
        if let Err(e) = f.write_all(h.as_bytes()) {
            fail(e, &mut w);
        }
    }
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                if let Some(f) = w.as_mut() {
                    match f.write_all(&line) {
                        Ok(()) => written.inc(),
                        Err(e) => fail(e, &mut w),
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if let Some(f) = w.as_mut() {
                    if let Err(e) = f.flush() {
                        fail(e, &mut w);
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(f) = w.as_mut() {
        if let Err(e) = f.flush().and_then(|_| f.get_ref().sync_all()) {
            fail(e, &mut w);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stats

/// Per-queue part of the stats JSON.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub queue: u32,
    pub core: Option<usize>,
    pub bind: BindMode,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub batches: u64,
    pub syscalls: u64,
    pub ebusy_retries: u32,
    pub xdp: XdpCounters,
    pub kernel: KernelStats,
    pub decoded: u64,
}

/// How capture actually runs.
#[derive(Debug, Serialize, Clone)]
pub struct ModeReport {
    /// "native" or "skb": where the XDP program runs.
    pub attach: Attached,
    /// "copy" or "zero-copy" as XDP_OPTIONS reports (the first queue's; all are bound alike).
    pub bind: BindMode,
    pub zero_copy_requested: ZeroCopy,
    pub xdp_action: XdpAction,
    pub sample_percent: f64,
    pub sample_by: SampleBy,
    pub idle: Idle,
    pub need_wakeup: bool,
    pub busy_poll_us: u32,
    pub threaded_napi: bool,
    pub pinned: bool,
}

/// The `--stats-json` document. Schema in docs/live.md.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub interface: String,
    pub duration_s: f64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub mode: ModeReport,
    pub xdp: XdpCounters,
    pub kernel: KernelStats,
    pub decoded: u64,
    pub drops: serde_json::Map<String, serde_json::Value>,
    pub queues: Vec<QueueReport>,
    /// Every named counter of the pipeline after the sockets (reader.*, decoder.*,
    /// shard.*, flow.*, flows.*), summed over readers and shards.
    pub pipeline: Snapshot,
    pub replaced_program: Option<serde_json::Value>,
}

/// The parts of the pipeline after the readers, for the stats.
struct Pipeline {
    shards: Vec<Shard>,
    flows_written: Arc<Counter>,
    flows_write_errors: Arc<Counter>,
    writer: Option<JoinHandle<()>>,
}

fn collect(
    iface: &str,
    prog: &SensorProgram,
    readers: &[Reader],
    pipe: &Pipeline,
    mode: &ModeReport,
    started: Instant,
    replaced: &Option<serde_json::Value>,
) -> anyhow::Result<StatsReport> {
    let xdp_q = prog.counters(readers.len() as u32)?;
    let xdp_total = prog.counters_total()?;
    let mut kernel = KernelStats::default();
    let mut snap = Snapshot::new();
    let mut queues = Vec::with_capacity(readers.len());
    let (mut pkts, mut bytes, mut decoded) = (0, 0, 0);
    for (r, x) in readers.iter().zip(xdp_q) {
        let k = super::afxdp::kernel_stats(r.stats_fd.as_raw_fd()).unwrap_or_default();
        kernel.add(&k);
        let q = QueueReport {
            queue: r.queue,
            core: r.core,
            bind: r.bind,
            packets_received: r.stats.packets.load(Relaxed),
            bytes_received: r.stats.bytes.load(Relaxed),
            batches: r.stats.batches.load(Relaxed),
            syscalls: r.stats.syscalls.load(Relaxed),
            ebusy_retries: r.ebusy_retries,
            xdp: x,
            kernel: k,
            decoded: r.rc.decoded.get(),
        };
        r.rc.snapshot_into(&mut snap);
        stats::merge_into(&mut snap, r.router.named());
        pkts += q.packets_received;
        bytes += q.bytes_received;
        decoded += q.decoded;
        queues.push(q);
    }
    for sh in &pipe.shards {
        stats::merge_into(&mut snap, sh.flow.named());
        stats::merge_into(
            &mut snap,
            [
                ("flows.exported", sh.out.exported.get()),
                ("flows.output_dropped", sh.out.output_dropped.get()),
            ],
        );
    }
    stats::merge_into(
        &mut snap,
        [
            ("flows.written", pipe.flows_written.get()),
            ("flows.write_errors", pipe.flows_write_errors.get()),
        ],
    );
    let mut drops = serde_json::Map::new();
    let mut put = |k: &str, v: u64| {
        drops.insert(k.to_string(), serde_json::Value::from(v));
    };
    put("xdp.filtered", xdp_total.filtered);
    put("xdp.sampled_out", xdp_total.sampled_out);
    put("xdp.redirect_failed", xdp_total.redirect_failed);
    put("rx_dropped", kernel.rx_dropped);
    put("rx_invalid_descs", kernel.rx_invalid_descs);
    put("rx_ring_full", kernel.rx_ring_full);
    put("rx_fill_ring_empty_descs", kernel.rx_fill_ring_empty_descs);
    for e in WireError::ALL {
        put(e.name(), snap.get(e.name()).copied().unwrap_or(0));
    }
    for k in ["shard.ring_full", "flow.evicted", "flows.output_dropped"] {
        put(k, snap.get(k).copied().unwrap_or(0));
    }
    Ok(StatsReport {
        interface: iface.into(),
        duration_s: started.elapsed().as_secs_f64(),
        packets_received: pkts,
        bytes_received: bytes,
        mode: mode.clone(),
        xdp: xdp_total,
        kernel,
        decoded,
        drops,
        queues,
        pipeline: snap,
        replaced_program: replaced.clone(),
    })
}

fn write_json(path: &Path, r: &StatsReport) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    std::fs::write(&tmp, s).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn line(r: &StatsReport, prev: Option<(&StatsReport, f64)>) -> String {
    let rate = match prev {
        Some((p, dt)) if dt > 0.0 => format!(
            " ({:.1} kpps)",
            (r.packets_received - p.packets_received) as f64 / dt / 1e3
        ),
        _ => String::new(),
    };
    let per_q: Vec<String> = r
        .queues
        .iter()
        .map(|q| format!("q{}={}", q.queue, q.packets_received))
        .collect();
    format!(
        "{}: rx {} frames{} {} bytes [{}] | xdp seen {} redirected {} sampled_out {} filtered {} redirect_failed {} | kernel rx_dropped {} rx_ring_full {} rx_fill_ring_empty_descs {} rx_invalid_descs {}",
        r.interface,
        r.packets_received,
        rate,
        r.bytes_received,
        per_q.join(" "),
        r.xdp.seen,
        r.xdp.redirected,
        r.xdp.sampled_out,
        r.xdp.filtered,
        r.xdp.redirect_failed,
        r.kernel.rx_dropped,
        r.kernel.rx_ring_full,
        r.kernel.rx_fill_ring_empty_descs,
        r.kernel.rx_invalid_descs,
    )
}

// ---------------------------------------------------------------------------------------
// Signals

struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and in threads spawned after),
    /// so they are taken only by `wait`.
    fn block() -> Signals {
        // SAFETY: sigset manipulation on a local set, then pthread_sigmask on it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// The next signal within `timeout`, if any.
    fn wait(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: set and ts are valid; info may be null.
        let s = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (s > 0).then_some(s)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: unblocks the set blocked in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

// ---------------------------------------------------------------------------------------
// Run

fn log(msg: impl std::fmt::Display) {
    eprintln!("streamml-sensor: {msg}");
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
            sample_by: self.sample_by,
            action: self.xdp_action,
            ethertype: set(&self.keep_ethertype, &self.drop_ethertype),
            proto: set(&self.keep_proto, &self.drop_proto),
            port: set(&self.keep_port, &self.drop_port),
        }
    }

    fn xsk_config(&self) -> XskConfig {
        XskConfig {
            frame_size: self.frame_size,
            fill_size: self.fill_size,
            rx_size: self.rx_size,
            batch: self.batch,
            zero_copy: self.zero_copy,
            need_wakeup: !self.no_need_wakeup,
            busy_poll_us: self.busy_poll,
            idle: self.idle,
            spin_rounds: self.spin_rounds,
            yield_rounds: self.yield_rounds,
            ebusy_retry: Duration::from_secs(2),
        }
    }
}

/// Runs live capture until a stop signal (or `--duration`). Errors are meant to be printed
/// as one line (`{:#}`).
pub fn run(args: &LiveArgs) -> anyhow::Result<()> {
    let iface = args
        .iface
        .as_deref()
        .ok_or_else(|| anyhow!("--iface is required for live capture"))?;
    if !(0.0..=100.0).contains(&args.sample) {
        bail!("--sample {}: must be a percentage in 0..=100", args.sample);
    }
    if !args.report_interval.is_finite() || args.report_interval < 0.0 {
        bail!("--report-interval {}: must be >= 0", args.report_interval);
    }
    let info = iface_info(iface)?;
    if !info.up {
        bail!("{iface}: interface is down (ip link set {iface} up)");
    }
    let queues = args.queues.unwrap_or(info.rx_queues);
    if queues == 0 {
        bail!("--queues 0: need at least one queue");
    }
    if queues > info.rx_queues {
        bail!(
            "{iface}: --queues {queues} but the interface has only {} RX queue{}",
            info.rx_queues,
            if info.rx_queues == 1 { "" } else { "s" }
        );
    }
    if queues > MAX_QUEUES {
        bail!("--queues {queues}: at most {MAX_QUEUES} are supported");
    }
    let xsk = args.xsk_config();
    for (name, v) in [
        ("--fill-size", xsk.fill_size),
        ("--rx-size", xsk.rx_size),
        ("--frame-size", xsk.frame_size),
    ] {
        if !v.is_power_of_two() {
            bail!("{name} {v}: must be a power of two");
        }
    }
    if xsk.frame_size < 2048 {
        bail!("--frame-size {}: must be at least 2048", xsk.frame_size);
    }
    let umem_bytes = queues as u64 * xsk.fill_size as u64 * xsk.frame_size as u64;
    check_privileges(umem_bytes).with_context(|| iface.to_string())?;
    probe_af_xdp()?;
    let _lock = IfaceLock::take(iface)?;
    if let Some(p) = &args.stats_json {
        // Fail now, not after the capture, if the stats cannot be written.
        let tmp = p.with_extension("json.tmp");
        File::create(&tmp)
            .and_then(|_| std::fs::remove_file(&tmp))
            .with_context(|| format!("--stats-json {}", p.display()))?;
    }
    // Opened now so that an unwritable path fails before anything is set up.
    let mut flows_file = match &args.flows_out {
        Some(p) => Some(File::create(p).with_context(|| format!("--flows-out {}", p.display()))?),
        None => None,
    };

    let cores: Option<Vec<usize>> = if args.no_pin {
        None
    } else {
        Some(match &args.reader_cores {
            Some(c) => c.0.clone(),
            None => core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect(),
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
    };

    // Refuse a foreign program before touching anything.
    if let Some(ex) = super::xdp::query_attached(iface, info.ifindex)? {
        if !ex.is_ours() && !args.force {
            return Err(super::xdp::XdpError::Foreign {
                iface: iface.into(),
                existing: ex,
            }
            .into());
        }
    }

    let settings = args.xdp_settings();
    let mut prog = SensorProgram::load(iface, info.ifindex, &settings)?;

    // Signals are blocked before any thread exists, so every thread inherits the mask.
    let signals = Signals::block();
    let stop = Arc::new(AtomicBool::new(false));

    // Sockets first, then the program: no frame is redirected to an empty XSKMAP slot.
    let mut sources = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let stats = Arc::new(QueueStats::default());
        let src = AfXdpSource::open(iface, q, &xsk, stop.clone(), stats.clone())?;
        prog.register_socket(q, src.fd())?;
        sources.push((src, stats));
    }
    let report = prog.attach(args.xdp_mode, args.force)?;
    if let Some(e) = &report.native_error {
        log(format_args!(
            "{iface}: native XDP unavailable ({e}); using SKB mode"
        ));
    }
    let replaced = report.replaced.as_ref().map(|ex| {
        log(format_args!(
            "{iface}: replaced {} XDP program {} (id {}, {} mode)",
            if ex.is_ours() { "a leftover" } else { "another" },
            ex.name.as_deref().unwrap_or("?"),
            ex.id,
            ex.mode.name()
        ));
        serde_json::json!({"id": ex.id, "name": ex.name, "mode": ex.mode.name(), "ours": ex.is_ours()})
    });
    let napi = if args.threaded_napi {
        Some(ThreadedNapi::enable(iface)?)
    } else {
        None
    };

    let bind = sources[0].0.bind_mode();
    if args.zero_copy == ZeroCopy::Auto {
        log(format_args!(
            "{iface}: AF_XDP bound in {} mode",
            bind.name()
        ));
    }
    let mode = ModeReport {
        attach: report.mode,
        bind,
        zero_copy_requested: args.zero_copy,
        xdp_action: args.xdp_action,
        sample_percent: args.sample,
        sample_by: args.sample_by,
        idle: args.idle,
        need_wakeup: !args.no_need_wakeup,
        busy_poll_us: args.busy_poll,
        threaded_napi: args.threaded_napi,
        pinned: cores.is_some(),
    };

    // The pipeline: S shards, each draining one ring per reader; one flow writer.
    let nq = sources.len();
    let nshards = args
        .shards
        .unwrap_or_else(|| crate::pipeline::default_shards(nq))
        .max(1);
    let flow_cfg = FlowConfig {
        capacity: args.flow_capacity,
        accounting: match args.accounting {
            AccountingArg::Link => Accounting::Link,
            AccountingArg::Ip => Accounting::Ip,
            AccountingArg::Transport => Accounting::Transport,
            AccountingArg::Payload => Accounting::Payload,
        },
        ..FlowConfig::default()
    }
    .with_timeouts_secs(args.idle_timeout, args.active_timeout);
    flow_cfg.validate().map_err(anyhow::Error::msg)?;
    let jsonl = args.flows_format == OutFormat::Jsonl;
    let flows_written = Arc::new(Counter::new());
    let flows_write_errors = Arc::new(Counter::new());
    let (flow_tx, writer) = match &args.flows_out {
        Some(path) => {
            let file = flows_file.take().expect("opened at start-up");
            let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1 << 16);
            let header = (!jsonl).then(|| FlowRecord::csv_header(flow_cfg.splt));
            let (w, e, path) = (
                flows_written.clone(),
                flows_write_errors.clone(),
                path.clone(),
            );
            let h = std::thread::Builder::new()
                .name("flow-writer".into())
                .spawn(move || flow_writer(path, file, header, rx, w, e))
                .context("spawning the flow writer")?;
            (Some(tx), Some(h))
        }
        None => (None, None),
    };
    let reader_cores: Vec<usize> = cores
        .as_ref()
        .map(|c| (0..nq).map(|i| c[i % c.len()]).collect())
        .unwrap_or_default();
    let scorer_cores: Vec<usize> = cores
        .as_ref()
        .map(|c| {
            c.iter()
                .copied()
                .filter(|x| !reader_cores.contains(x))
                .collect()
        })
        .unwrap_or_default();
    let key_mode = match args.key {
        KeyArg::FiveTuple => KeyMode::FiveTuple,
        KeyArg::IpPair => KeyMode::IpPair,
    };
    let ids = Arc::new(AtomicU64::new(0));
    let mut producers: Vec<Vec<shard::Producer>> = (0..nq).map(|_| Vec::new()).collect();
    let mut shards = Vec::with_capacity(nshards);
    for sidx in 0..nshards {
        let mut consumers = Vec::with_capacity(nq);
        for p in producers.iter_mut() {
            let (tx, rx) = shard::ring(args.ring_capacity);
            p.push(tx);
            consumers.push(rx);
        }
        let table = FlowTable::new(flow_cfg).map_err(anyhow::Error::msg)?;
        let flow = table.counters().clone();
        let out_ctr = Arc::new(ShardOutCounters::default());
        let mut worker = LiveFlowWorker {
            table,
            out: flow_tx.clone(),
            jsonl,
            ids: ids.clone(),
            ctr: out_ctr.clone(),
        };
        let core = (!scorer_cores.is_empty()).then(|| scorer_cores[sidx % scorer_cores.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("scorer-{sidx}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id: c });
                }
                shard::run_shard(&consumers, &mut worker);
            })
            .context("spawning a scorer thread")?;
        shards.push(Shard {
            flow,
            out: out_ctr,
            handle: Some(handle),
        });
    }
    drop(flow_tx); // the shards hold the only senders now
    let mut pipe = Pipeline {
        shards,
        flows_written,
        flows_write_errors,
        writer,
    };

    let decode_opts = DecodeOptions::default();
    let mut readers = Vec::with_capacity(nq);
    for (i, ((src, stats), prods)) in sources.into_iter().zip(producers).enumerate() {
        let queue = src.queue();
        let core = reader_cores.get(i).copied();
        // SAFETY: dup(2) of a valid fd; the result is a new fd we own.
        let dup = unsafe { libc::fcntl(src.fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            bail!(
                "dup of the AF_XDP socket: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: dup is a fresh fd.
        let stats_fd = unsafe { OwnedFd::from_raw_fd(dup) };
        let router = Router::new(prods, FullPolicy::Drop, key_mode);
        let router_ctr = router.counters.clone();
        let rc = Arc::new(ReaderCounters::default());
        let rc2 = rc.clone();
        let bind = src.bind_mode();
        let ebusy_retries = src.ebusy_retries;
        let handle = std::thread::Builder::new()
            .name(format!("xsk-q{queue}"))
            .spawn(move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        log(format_args!("queue {queue}: could not pin to core {c}"));
                    }
                }
                reader_loop(src, router, rc2, decode_opts)
            })
            .context("spawning a reader thread")?;
        readers.push(Reader {
            queue,
            core,
            bind,
            ebusy_retries,
            stats,
            rc,
            router: router_ctr,
            stats_fd,
            handle: Some(handle),
        });
    }

    let started = Instant::now();
    log(format_args!(
        "capturing on {iface}: {queues} queue{}, XDP {} mode, AF_XDP {} mode, sample {}%, pid {}",
        if queues == 1 { "" } else { "s" },
        report.mode.name(),
        bind.name(),
        args.sample,
        std::process::id()
    ));

    // Main loop: signals, reports, reader health, --duration.
    let interval =
        (args.report_interval > 0.0).then(|| Duration::from_secs_f64(args.report_interval));
    let deadline = args
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut next_report = interval.map(|i| Instant::now() + i);
    let mut prev: Option<(StatsReport, Instant)> = None;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(200);
        if let Some(t) = next_report {
            wake = wake.min(t);
        }
        if let Some(d) = deadline {
            if now >= d {
                break;
            }
            wake = wake.min(d);
        }
        match signals.wait(wake.saturating_duration_since(now)) {
            Some(libc::SIGINT) | Some(libc::SIGTERM) => break,
            Some(libc::SIGHUP) => {
                let r = collect(iface, &prog, &readers, &pipe, &mode, started, &replaced)?;
                log(line(&r, None));
                if let Some(p) = &args.stats_json {
                    write_json(p, &r)?;
                }
            }
            _ => {}
        }
        if !iface_exists(iface) {
            failure = Some(anyhow!("{iface}: the interface disappeared"));
            break;
        }
        if let Some(r) = readers
            .iter_mut()
            .find(|r| r.handle.as_ref().is_some_and(|h| h.is_finished()))
        {
            let res = r.handle.take().expect("checked").join();
            failure = Some(match res {
                Ok(Err(e)) => e.context(format!("{iface} queue {}", r.queue)),
                Ok(Ok(())) => anyhow!("{iface} queue {}: reader stopped", r.queue),
                Err(_) => anyhow!("{iface} queue {}: reader panicked", r.queue),
            });
            break;
        }
        if let (Some(t), Some(i)) = (next_report, interval) {
            if Instant::now() >= t {
                let r = collect(iface, &prog, &readers, &pipe, &mode, started, &replaced)?;
                let pr = prev.as_ref().map(|(p, at)| (p, at.elapsed().as_secs_f64()));
                log(line(&r, pr));
                prev = Some((r, Instant::now()));
                next_report = Some(t + i);
            }
        }
    }

    // Shutdown: no new frames, drain, final counters.
    drop(napi);
    let detach = prog.detach();
    std::thread::sleep(Duration::from_millis(20)); // in-flight NAPI polls finish
    stop.store(true, Relaxed);
    for r in &mut readers {
        if let Some(h) = r.handle.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e.context(format!("{iface} queue {}", r.queue)));
                }
                Err(_) => {
                    failure.get_or_insert(anyhow!("{iface} queue {}: reader panicked", r.queue));
                }
            }
        }
    }
    // Readers are gone, so are their rings' producers: shards drain, flush their flows
    // and drop their senders; then the writer finishes the file.
    for sh in &mut pipe.shards {
        if let Some(h) = sh.handle.take() {
            if h.join().is_err() {
                failure.get_or_insert(anyhow!("a scorer shard panicked"));
            }
        }
    }
    if let Some(h) = pipe.writer.take() {
        if h.join().is_err() {
            failure.get_or_insert(anyhow!("the flow writer panicked"));
        }
    }
    let r = collect(iface, &prog, &readers, &pipe, &mode, started, &replaced)?;
    log(format_args!(
        "summary: {} | {:.1} kpps average over {:.1} s",
        line(&r, None),
        r.packets_received as f64 / r.duration_s.max(1e-9) / 1e3,
        r.duration_s
    ));
    if let Some(p) = &args.stats_json {
        write_json(p, &r)?;
    }
    drop(signals);
    detach?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
    fn u16_values() {
        assert_eq!(parse_u16("0x0800"), Ok(0x0800));
        assert_eq!(parse_u16("2048"), Ok(2048));
        assert!(parse_u16("0x10000").is_err());
    }

    #[test]
    fn missing_interface_is_one_line() {
        let e = iface_info("nosuchif0").unwrap_err();
        assert_eq!(format!("{e:#}"), "nosuchif0: no such interface");
    }
}
