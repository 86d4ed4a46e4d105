//! Loader for the project's own XDP program (`bpf/sensor.bpf.c`, embedded through the
//! libbpf-rs skeleton that build.rs generates): load, configure (sampling, prefilter sets,
//! consume or pass), attach in native or SKB mode, register AF_XDP sockets in its XSKMAP,
//! read its per-queue per-CPU counters, detach.
//!
//! Why not libxdp's dispatcher: it fails with EPERM on the machines this was built on
//! (ARCHITECTURE.md), so the program is attached on its own through netlink and the
//! sockets are bound with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD`.
//!
//! A netlink-attached program outlives a process killed with SIGKILL. The program is
//! named [`PROG_NAME`]; at start an attached program of that name is taken for a
//! leftover of an earlier run and replaced, anything else is refused unless forced.
//! Detach only removes the program if it is still ours (`XDP_FLAGS_REPLACE` with our fd).
#![allow(unsafe_code)] // libbpf calls; every block has a SAFETY comment

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};

use super::probe::{Fallback, Feature, Refused};

#[allow(
    clippy::all,
    dead_code,
    unused_imports,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/sensor.skel.rs"));
}
use skel::{SensorSkel, SensorSkelBuilder};

/// Name of the XDP program as the kernel reports it (`bpftool prog`, `ip link`). Also
/// what marks a program on an interface as a leftover of an earlier run.
pub const PROG_NAME: &str = "streamml_xdp";

/// The environment variable that makes the sensor behave as if the kernel or the driver
/// had refused optional features (a comma list of [`crate::capture::probe::Feature`]
/// names): every fallback path can be exercised on any machine.
pub const REFUSE_ENV: &str = "STREAMML_REFUSE";

/// Mirrors of the constants in `bpf/shared.h` (checked against the header by a test).
pub const MAX_QUEUES: u32 = 256;
mod ctr {
    pub const SEEN: usize = 0;
    pub const FILTERED: usize = 1;
    pub const SAMPLED_OUT: usize = 2;
    pub const REDIRECTED: usize = 3;
    pub const REDIRECT_FAILED: usize = 4;
    pub const REDIRECTED_BYTES: usize = 5;
    pub const MAX: usize = 6;
}
mod flag {
    pub const PASS: u32 = 1 << 0;
    pub const SAMPLE_BY_FLOW: u32 = 1 << 1;
    pub const ETHERTYPE: u32 = 1 << 2;
    pub const ETHERTYPE_DENY: u32 = 1 << 3;
    pub const PROTO: u32 = 1 << 4;
    pub const PROTO_DENY: u32 = 1 << 5;
    pub const PORT: u32 = 1 << 6;
    pub const PORT_DENY: u32 = 1 << 7;
    pub const TIMESTAMP: u32 = 1 << 8;
}
/// `SENSOR_META_MAGIC`: marks the XDP metadata (`struct sensor_meta`: u64 CLOCK_MONOTONIC
/// nanoseconds, u32 magic, u32 pad) in front of a frame the program timestamped.
pub const META_MAGIC: u32 = 0x4c4d_5453;
/// `SENSOR_HEAD_CHECK`: `sensor_meta.pad` when the header was pushed in front of the frame.
pub const HEAD_CHECK: u32 = 0xb3b2_abac;
/// `sizeof(struct sensor_meta)`.
pub const META_LEN: usize = 16;
/// Size limit of each prefilter set (SENSOR_MAX_FILTER_ENTRIES).
pub const MAX_FILTER_ENTRIES: usize = 1024;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to SKB mode when the driver has none.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode: works on every interface, slower, copies.
    Skb,
}

/// What happens to frames the sensor does not take (filtered, sampled out, no socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAction {
    /// Dropped (a sensor on a tap or mirror port: nothing else wants them).
    Consume,
    /// Passed on to the host's stack (a sensor on a live host). Frames redirected to the
    /// sensor are still taken: AF_XDP cannot hand a copy to the stack.
    Pass,
}

/// How frames are sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleBy {
    /// Each frame independently at random.
    Packet,
    /// By a symmetric hash of addresses and ports: whole flows are kept or dropped.
    Flow,
}

/// One prefilter set: a keep-list (only listed values pass) or a drop-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSet<T> {
    pub values: Vec<T>,
    pub deny: bool,
}

/// Settings of the XDP program; can be re-applied while it runs.
#[derive(Clone, Debug)]
pub struct XdpSettings {
    /// 0..=100; 100 keeps everything.
    pub sample_percent: f64,
    pub sample_by: SampleBy,
    pub action: XdpAction,
    pub ethertype: Option<FilterSet<u16>>,
    pub proto: Option<FilterSet<u8>>,
    pub port: Option<FilterSet<u16>>,
    /// Timestamp every redirected frame in the XDP program (metadata in front of it).
    pub timestamps: bool,
}

impl Default for XdpSettings {
    fn default() -> Self {
        XdpSettings {
            sample_percent: 100.0,
            sample_by: SampleBy::Packet,
            action: XdpAction::Consume,
            ethertype: None,
            proto: None,
            port: None,
            timestamps: true,
        }
    }
}

/// The mode the program was actually attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attached {
    Native,
    Skb,
}

impl Attached {
    fn flags(self) -> u32 {
        match self {
            Attached::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            Attached::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Attached::Native => "native",
            Attached::Skb => "skb",
        }
    }
}

/// The XDP program's counters for one queue (or summed), over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XdpCounters {
    pub seen: u64,
    pub filtered: u64,
    pub sampled_out: u64,
    pub redirected: u64,
    pub redirect_failed: u64,
    pub redirected_bytes: u64,
}

impl XdpCounters {
    pub fn add(&mut self, o: &XdpCounters) {
        self.seen += o.seen;
        self.filtered += o.filtered;
        self.sampled_out += o.sampled_out;
        self.redirected += o.redirected;
        self.redirect_failed += o.redirect_failed;
        self.redirected_bytes += o.redirected_bytes;
    }
    /// seen == filtered + sampled_out + redirected + redirect_failed.
    pub fn reconciles(&self) -> bool {
        self.seen == self.filtered + self.sampled_out + self.redirected + self.redirect_failed
    }
}

/// An XDP program found on the interface before ours was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingProgram {
    pub id: u32,
    /// None when its name could not be read (BPF_PROG_GET_FD_BY_ID needs CAP_SYS_ADMIN).
    pub name: Option<String>,
    pub mode: Attached,
    /// The id a sensor recorded when it attached the program (see
    /// [`ExistingProgram::with_record`]): how a sensor without CAP_SYS_ADMIN, which cannot
    /// read the program's name, still knows the leftover of a killed run for its own.
    pub recorded: bool,
}

impl ExistingProgram {
    pub fn is_ours(&self) -> bool {
        self.name.as_deref() == Some(PROG_NAME) || self.recorded
    }

    /// Marks the program as ours when its id is the one a sensor recorded on attaching it
    /// (program ids are unique until the next boot, and the record lives in /run).
    pub fn with_record(mut self, recorded_id: Option<u32>) -> ExistingProgram {
        self.recorded = recorded_id == Some(self.id);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP program failed: {0}")]
    Load(String),
    #[error("{iface}: {what}: {err}")]
    Map {
        iface: String,
        what: &'static str,
        err: String,
    },
    #[error("{iface}: the driver has no native XDP support; use --xdp-mode skb (or auto)")]
    NoNativeXdp { iface: String },
    #[error("{iface}: no XDP support: {err}")]
    NoXdp { iface: String, err: String },
    #[error("{iface}: another XDP program is attached ({}, id {}, {} mode); refusing to replace it without --force", .existing.name.as_deref().unwrap_or("name unreadable"), .existing.id, .existing.mode.name())]
    Foreign {
        iface: String,
        existing: ExistingProgram,
    },
    #[error("{iface}: attaching the XDP program in {mode} mode failed: {err}")]
    Attach {
        iface: String,
        mode: &'static str,
        err: String,
    },
    #[error("{iface}: querying the attached XDP program failed: {err}")]
    Query { iface: String, err: String },
    #[error("invalid XDP setting: {0}")]
    Setting(String),
}

/// What `attach` did.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub mode: Attached,
    /// A program that was on the interface and got replaced.
    pub replaced: Option<ExistingProgram>,
    /// Auto mode fell back to SKB mode; the native attempt's error.
    pub native_error: Option<String>,
}

/// The loaded (and maybe attached) sensor program. Detaches itself when dropped.
pub struct SensorProgram {
    skel: SensorSkel<'static>,
    iface: String,
    ifindex: i32,
    attached: Option<Attached>,
    /// How the loaded variant carries frame times (see [`LoadReport`]).
    carrier: TsCarrier,
    /// The id of the program an earlier run recorded as its own ([`ExistingProgram::with_record`]).
    recorded_id: Option<u32>,
}

/// libbpf's own messages (warnings and the kernel's extended ack) are kept here instead of
/// going to stderr, so that an error stays one line; the last ones are added to a load
/// error, where they carry the verifier's reason.
static LIBBPF_LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn libbpf_log(_level: libbpf_rs::PrintLevel, msg: String) {
    if let Ok(mut v) = LIBBPF_LOG.lock() {
        for l in msg.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if v.len() >= 256 {
                v.remove(0);
            }
            v.push(l.to_string());
        }
    }
}

fn clear_libbpf_log() {
    if let Ok(mut v) = LIBBPF_LOG.lock() {
        v.clear();
    }
}

/// The verifier's reason for refusing the last load: the line naming a helper the
/// program may not use, else the last line of the verifier's log.
fn verifier_reason() -> Option<String> {
    let v = LIBBPF_LOG.lock().ok()?;
    if let Some(l) = v
        .iter()
        .find(|l| l.contains("cannot use helper") || l.contains("unknown func"))
    {
        return Some(format!("the kernel refused it: {}", l.trim()));
    }
    let end = v.iter().position(|l| l.contains("END PROG LOAD LOG"))?;
    v[..end]
        .iter()
        .rev()
        .find(|l| {
            !l.starts_with("verification time")
                && !l.starts_with("processed ")
                && !l.starts_with("stack depth")
        })
        .map(|l| format!("the kernel refused it: {}", l.trim()))
}

fn libbpf_log_tail() -> String {
    let tail = LIBBPF_LOG
        .lock()
        .map(|v| {
            v.iter()
                .rev()
                .take(2)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default();
    match verifier_reason() {
        Some(r) => format!("{r} / {tail}"),
        None => tail,
    }
}

fn os_err(code: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(code.abs())
}

/// The XDP program attached to `ifindex`, if any.
pub fn query_attached(iface: &str, ifindex: i32) -> Result<Option<ExistingProgram>, XdpError> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: opts is a valid, sized bpf_xdp_query_opts that outlives the call.
    let ret = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    if ret != 0 {
        return Err(XdpError::Query {
            iface: iface.into(),
            err: os_err(ret).to_string(),
        });
    }
    let (id, mode) = if opts.drv_prog_id != 0 {
        (opts.drv_prog_id, Attached::Native)
    } else if opts.skb_prog_id != 0 {
        (opts.skb_prog_id, Attached::Skb)
    } else if opts.prog_id != 0 {
        // hardware offload or a mode we do not know: report it as native
        (opts.prog_id, Attached::Native)
    } else {
        return Ok(None);
    };
    Ok(Some(ExistingProgram {
        id,
        name: prog_name(id),
        mode,
        recorded: false,
    }))
}

/// NETDEV_XDP_ACT_* bits of the driver's XDP features (linux/netdev.h).
pub mod xdp_act {
    pub const BASIC: u64 = 1 << 0;
    pub const REDIRECT: u64 = 1 << 1;
    pub const NDO_XMIT: u64 = 1 << 2;
    pub const XSK_ZEROCOPY: u64 = 1 << 3;
    pub const HW_OFFLOAD: u64 = 1 << 4;
    pub const RX_SG: u64 = 1 << 5;
    pub const NDO_XMIT_SG: u64 = 1 << 6;
}

/// The XDP features the driver of `ifindex` advertises (netlink `netdev` family, kernel
/// 6.3+): None when the kernel cannot say.
pub fn xdp_features(ifindex: i32) -> Option<u64> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: opts is a valid, sized bpf_xdp_query_opts that outlives the call.
    let ret = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    (ret == 0 && opts.feature_flags != 0).then_some(opts.feature_flags)
}

/// The kernel's name of program `id`, None if it cannot be read.
fn prog_name(id: u32) -> Option<String> {
    // SAFETY: plain syscall wrapper; a negative return is an error code.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a zeroed bpf_prog_info of `len` bytes (no pointers set, so the
    // kernel fills only the fixed fields).
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if ret != 0 {
        return None;
    }
    let bytes: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// How each frame's arrival time reaches user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TsCarrier {
    /// In the XDP metadata in front of the frame (`bpf_xdp_adjust_meta`).
    Metadata,
    /// In a header pushed in front of the frame (`bpf_xdp_adjust_head`), which the
    /// reader takes off.
    Headroom,
    /// Not at all: the reader uses the time it read the frame's RX batch.
    None,
}

impl TsCarrier {
    pub fn name(self) -> &'static str {
        match self {
            TsCarrier::Metadata => "metadata",
            TsCarrier::Headroom => "headroom",
            TsCarrier::None => "none",
        }
    }
}

/// What loading the program obtained.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub carrier: TsCarrier,
    /// Each timestamp carrier that was tried and refused, with the verifier's reason (or
    /// that the refusal was forced): what it fell back to and why.
    pub fallbacks: Vec<Fallback>,
}

/// How to load the program: carriers to behave as if the kernel had refused them (tests,
/// `STREAMML_REFUSE`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    pub refuse_xdp_meta: bool,
    pub refuse_xdp_head: bool,
}

impl SensorProgram {
    /// Loads the embedded program into the kernel (not attached yet) and applies
    /// `settings`. With timestamps asked for, it first loads the variant that writes XDP
    /// metadata, then the one that pushes a header in front of the frame, then the one
    /// without per-frame times: a kernel that refuses a helper (some refuse
    /// `bpf_xdp_adjust_meta` in XDP programs) gets a variant in which the verifier never
    /// sees the call. The report says what was obtained and why the others were not.
    pub fn load(
        iface: &str,
        ifindex: i32,
        settings: &XdpSettings,
        opts: LoadOptions,
    ) -> Result<(Self, LoadReport), XdpError> {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, libbpf_log)));
        let mut fallbacks = Vec::new();
        let mut loaded = None;
        if settings.timestamps {
            let tries = [
                (
                    TsCarrier::Metadata,
                    Feature::XdpMeta,
                    opts.refuse_xdp_meta,
                    "xdp_head",
                ),
                (
                    TsCarrier::Headroom,
                    Feature::XdpHead,
                    opts.refuse_xdp_head,
                    "batch",
                ),
            ];
            for (carrier, feature, refused, next) in tries {
                if refused {
                    fallbacks.push(Fallback::new(feature, next, Refused::reason(feature)));
                    continue;
                }
                match Self::load_variant(carrier) {
                    Ok(s) => {
                        loaded = Some((s, carrier));
                        break;
                    }
                    Err(e) => {
                        let why = verifier_reason().unwrap_or_else(|| e.to_string());
                        fallbacks.push(Fallback::new(feature, next, why));
                    }
                }
            }
        }
        let (skel, carrier) = match loaded {
            Some(v) => v,
            None => (Self::load_variant(TsCarrier::None)?, TsCarrier::None),
        };
        let prog = SensorProgram {
            skel,
            iface: iface.into(),
            ifindex,
            attached: None,
            carrier,
            recorded_id: None,
        };
        prog.apply(settings)?;
        Ok((prog, LoadReport { carrier, fallbacks }))
    }

    /// Opens and loads the skeleton with the `.rodata` switches of `carrier`.
    fn load_variant(carrier: TsCarrier) -> Result<SensorSkel<'static>, XdpError> {
        clear_libbpf_log();
        // The skeleton borrows its object storage for its whole life; one small leak per
        // load (one to three per process start).
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = SensorSkelBuilder::default()
            .open(storage)
            .map_err(|e| XdpError::Load(e.to_string()))?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| XdpError::Load("the program's .rodata is not mapped".into()))?;
        rodata.use_xdp_meta = u32::from(carrier == TsCarrier::Metadata);
        rodata.use_xdp_head = u32::from(carrier == TsCarrier::Headroom);
        open.load()
            .map_err(|e| XdpError::Load(format!("{e} ({})", libbpf_log_tail())))
    }

    /// Whether the kernel loads the variant that carries frame times through `carrier`,
    /// and if not, the verifier's reason. Loads and unloads the program; attaches nothing.
    pub fn probe_carrier(carrier: TsCarrier) -> Result<(), String> {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, libbpf_log)));
        match Self::load_variant(carrier) {
            Ok(skel) => {
                drop(skel);
                Ok(())
            }
            Err(e) => Err(verifier_reason().unwrap_or_else(|| e.to_string())),
        }
    }

    /// How the loaded program carries frame times.
    pub fn carrier(&self) -> TsCarrier {
        self.carrier
    }

    fn map_err(&self, what: &'static str) -> impl Fn(libbpf_rs::Error) -> XdpError + '_ {
        move |e| XdpError::Map {
            iface: self.iface.clone(),
            what,
            err: e.to_string(),
        }
    }

    /// Writes sampling, action and prefilter sets into the program's maps. Safe while
    /// attached: the program reads the config once per frame.
    pub fn apply(&self, s: &XdpSettings) -> Result<(), XdpError> {
        if !(0.0..=100.0).contains(&s.sample_percent) || s.sample_percent.is_nan() {
            return Err(XdpError::Setting(format!(
                "sample rate {} is not a percentage in 0..=100",
                s.sample_percent
            )));
        }
        let maps = &self.skel.maps;
        let mut flags = 0;
        if s.action == XdpAction::Pass {
            flags |= flag::PASS;
        }
        if s.sample_by == SampleBy::Flow {
            flags |= flag::SAMPLE_BY_FLOW;
        }
        if s.timestamps && self.carrier != TsCarrier::None {
            flags |= flag::TIMESTAMP;
        }
        fn fill<K: Copy, M: MapCore>(
            map: &M,
            set: &Option<FilterSet<K>>,
            key: fn(K) -> Vec<u8>,
            on: u32,
            deny: u32,
            flags: &mut u32,
        ) -> Result<(), libbpf_rs::Error> {
            // clear the old contents
            let old: Vec<Vec<u8>> = map.keys().collect();
            for k in old {
                let _ = map.delete(&k);
            }
            if let Some(set) = set {
                if set.values.len() > MAX_FILTER_ENTRIES {
                    return Err(libbpf_rs::Error::from(std::io::Error::other(format!(
                        "more than {} entries",
                        MAX_FILTER_ENTRIES
                    ))));
                }
                for &v in &set.values {
                    map.update(&key(v), &[1u8], MapFlags::ANY)?;
                }
                *flags |= on;
                if set.deny {
                    *flags |= deny;
                }
            }
            Ok(())
        }
        fill(
            &maps.filter_ethertype,
            &s.ethertype,
            |v: u16| v.to_ne_bytes().to_vec(),
            flag::ETHERTYPE,
            flag::ETHERTYPE_DENY,
            &mut flags,
        )
        .map_err(self.map_err("setting the EtherType filter"))?;
        fill(
            &maps.filter_proto,
            &s.proto,
            |v: u8| vec![v],
            flag::PROTO,
            flag::PROTO_DENY,
            &mut flags,
        )
        .map_err(self.map_err("setting the IP protocol filter"))?;
        fill(
            &maps.filter_port,
            &s.port,
            |v: u16| v.to_ne_bytes().to_vec(),
            flag::PORT,
            flag::PORT_DENY,
            &mut flags,
        )
        .map_err(self.map_err("setting the port filter"))?;

        let sample_bp = (s.sample_percent * 100.0).round() as u32;
        let mut cfg = [0u8; 8];
        cfg[..4].copy_from_slice(&sample_bp.to_ne_bytes());
        cfg[4..].copy_from_slice(&flags.to_ne_bytes());
        maps.sensor_cfg
            .update(&0u32.to_ne_bytes(), &cfg, MapFlags::ANY)
            .map_err(self.map_err("writing the program's config"))?;
        Ok(())
    }

    /// Attaches the program to the interface. A leftover of an earlier run (a program
    /// named [`PROG_NAME`]) is replaced; another program only with `force`.
    /// With `refuse_native`, a native attach fails as on a driver without XDP support
    /// (tests of the fallback; `STREAMML_REFUSE=native`).
    pub fn attach(
        &mut self,
        mode: AttachMode,
        force: bool,
        refuse_native: bool,
    ) -> Result<AttachReport, XdpError> {
        let existing =
            query_attached(&self.iface, self.ifindex)?.map(|e| e.with_record(self.recorded_id));
        if let Some(ex) = &existing {
            if !ex.is_ours() && !force {
                return Err(XdpError::Foreign {
                    iface: self.iface.clone(),
                    existing: ex.clone(),
                });
            }
            // Native and generic programs cannot be on one interface at once; removing
            // the old one first also makes a mode change work.
            // SAFETY: plain syscall wrapper; null opts are allowed.
            let ret = unsafe {
                libbpf_sys::bpf_xdp_detach(self.ifindex, ex.mode.flags(), std::ptr::null())
            };
            if ret != 0 {
                return Err(XdpError::Attach {
                    iface: self.iface.clone(),
                    mode: ex.mode.name(),
                    err: format!(
                        "removing the program already attached (id {}): {}",
                        ex.id,
                        os_err(ret)
                    ),
                });
            }
        }
        let mut native_error = None;
        let got = match mode {
            AttachMode::Native => {
                self.try_attach(Attached::Native, refuse_native)?;
                Attached::Native
            }
            AttachMode::Skb => {
                self.try_attach(Attached::Skb, false)?;
                Attached::Skb
            }
            AttachMode::Auto => match self.try_attach(Attached::Native, refuse_native) {
                Ok(()) => Attached::Native,
                Err(e) => {
                    native_error = Some(match e {
                        XdpError::NoNativeXdp { .. } => {
                            "the driver has no native XDP support (EOPNOTSUPP)".to_string()
                        }
                        XdpError::Attach { err, .. } => format!("native attach: {err}"),
                        other => other.to_string(),
                    });
                    self.try_attach(Attached::Skb, false)?;
                    Attached::Skb
                }
            },
        };
        self.attached = Some(got);
        Ok(AttachReport {
            mode: got,
            replaced: existing,
            native_error,
        })
    }

    fn try_attach(&self, m: Attached, refuse_native: bool) -> Result<(), XdpError> {
        if refuse_native && m == Attached::Native {
            return Err(XdpError::Attach {
                iface: self.iface.clone(),
                mode: m.name(),
                err: Refused::reason(Feature::Native),
            });
        }
        let fd = self.skel.progs.streamml_xdp.as_fd().as_raw_fd();
        // UPDATE_IF_NOEXIST: whatever was there has been removed above; if something got
        // attached in between we fail rather than replace it.
        let flags = m.flags() | libbpf_sys::XDP_FLAGS_UPDATE_IF_NOEXIST;
        // SAFETY: plain syscall wrapper; null opts are allowed.
        let ret = unsafe { libbpf_sys::bpf_xdp_attach(self.ifindex, fd, flags, std::ptr::null()) };
        if ret == 0 {
            return Ok(());
        }
        let err = os_err(ret);
        Err(match (m, err.raw_os_error()) {
            (Attached::Native, Some(libc::EOPNOTSUPP)) => XdpError::NoNativeXdp {
                iface: self.iface.clone(),
            },
            (Attached::Skb, Some(libc::EOPNOTSUPP)) | (_, Some(libc::ENOSYS)) => XdpError::NoXdp {
                iface: self.iface.clone(),
                err: err.to_string(),
            },
            _ => XdpError::Attach {
                iface: self.iface.clone(),
                mode: m.name(),
                err: err.to_string(),
            },
        })
    }

    /// The id of the program an earlier run recorded on attaching it: a program attached
    /// with that id is a leftover to replace, even when its name cannot be read.
    pub fn set_recorded_id(&mut self, id: Option<u32>) {
        self.recorded_id = id;
    }

    /// The mode the program is attached in, if it is.
    pub fn attached(&self) -> Option<Attached> {
        self.attached
    }

    /// The program's id in the kernel.
    pub fn prog_id(&self) -> Option<u32> {
        let fd = self.skel.progs.streamml_xdp.as_fd().as_raw_fd();
        let mut info = libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: as in prog_name.
        let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
        (ret == 0).then_some(info.id)
    }

    /// Puts an AF_XDP socket into the XSKMAP slot of its queue: from now on the program
    /// redirects that queue's frames to it.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::Setting(format!(
                "queue {queue} is beyond the {MAX_QUEUES} queues the program supports"
            )));
        }
        self.skel
            .maps
            .xsks_map
            .update(
                &queue.to_ne_bytes(),
                &(fd as u32).to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(self.map_err("registering an AF_XDP socket in the XSKMAP"))
    }

    /// Removes the socket of `queue` from the XSKMAP (frames of that queue then count as
    /// redirect_failed).
    pub fn unregister_socket(&self, queue: u32) {
        let _ = self.skel.maps.xsks_map.delete(&queue.to_ne_bytes());
    }

    /// Counters of queues `0..nqueues` (each summed over CPUs), plus the slot of the last
    /// queue the program supports for queues beyond it.
    pub fn counters(&self, nqueues: u32) -> Result<Vec<XdpCounters>, XdpError> {
        let mut out = Vec::with_capacity(nqueues as usize);
        for q in 0..nqueues.min(MAX_QUEUES) {
            out.push(self.counters_of(q)?);
        }
        Ok(out)
    }

    /// Counters of all queue slots, summed (frames on queues the sensor does not read
    /// included).
    pub fn counters_total(&self) -> Result<XdpCounters, XdpError> {
        let mut t = XdpCounters::default();
        for q in 0..MAX_QUEUES {
            t.add(&self.counters_of(q)?);
        }
        Ok(t)
    }

    fn counters_of(&self, q: u32) -> Result<XdpCounters, XdpError> {
        let per_cpu = self
            .skel
            .maps
            .counters
            .lookup_percpu(&q.to_ne_bytes(), MapFlags::ANY)
            .map_err(self.map_err("reading the XDP counters"))?
            .unwrap_or_default();
        let mut c = [0u64; ctr::MAX];
        for v in per_cpu {
            for (i, slot) in c.iter_mut().enumerate() {
                let b = &v[i * 8..i * 8 + 8];
                *slot += u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            }
        }
        Ok(XdpCounters {
            seen: c[ctr::SEEN],
            filtered: c[ctr::FILTERED],
            sampled_out: c[ctr::SAMPLED_OUT],
            redirected: c[ctr::REDIRECTED],
            redirect_failed: c[ctr::REDIRECT_FAILED],
            redirected_bytes: c[ctr::REDIRECTED_BYTES],
        })
    }

    /// Removes the program from the interface, if it is still the one attached there
    /// (XDP_FLAGS_REPLACE with our fd: a program someone attached after us stays).
    pub fn detach(&mut self) -> Result<(), XdpError> {
        let Some(m) = self.attached.take() else {
            return Ok(());
        };
        let fd = self.skel.progs.streamml_xdp.as_fd().as_raw_fd();
        let opts = libbpf_sys::bpf_xdp_attach_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_xdp_attach_opts>() as libbpf_sys::size_t,
            old_prog_fd: fd,
            ..Default::default()
        };
        // SAFETY: opts is a valid, sized bpf_xdp_attach_opts that outlives the call.
        let ret = unsafe {
            libbpf_sys::bpf_xdp_attach(
                self.ifindex,
                -1,
                m.flags() | libbpf_sys::XDP_FLAGS_REPLACE,
                &opts,
            )
        };
        match ret {
            0 => Ok(()),
            // ENODEV: the interface is gone (its namespace was deleted), nothing to do.
            r if -r == libc::ENODEV => Ok(()),
            r => Err(XdpError::Attach {
                iface: self.iface.clone(),
                mode: m.name(),
                err: format!("detaching: {}", os_err(r)),
            }),
        }
    }
}

impl Drop for SensorProgram {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("streamml-sensor: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust mirrors of bpf/shared.h must match the header.
    #[test]
    fn constants_match_shared_h() {
        let h = include_str!("../../bpf/shared.h");
        let val = |name: &str| -> u32 {
            let line = h
                .lines()
                .find(|l| {
                    let l = l.trim_start();
                    l.starts_with(name) && l[name.len()..].starts_with([' ', '\t'])
                })
                .unwrap_or_else(|| panic!("{name} not in shared.h"));
            let rhs = line
                .split_once('=')
                .map(|(_, r)| r)
                .unwrap_or_else(|| line.trim_start()[name.len()..].trim());
            let rhs = rhs.split("/*").next().unwrap_or(rhs);
            let rhs = rhs.trim().trim_end_matches(',').trim();
            if let Some(hex) = rhs.strip_prefix("0x") {
                u32::from_str_radix(hex, 16).unwrap()
            } else if let Some(shift) = rhs.strip_prefix("1 << ") {
                1 << shift.trim().parse::<u32>().unwrap()
            } else {
                rhs.parse().unwrap()
            }
        };
        assert_eq!(val("#define SENSOR_MAX_QUEUES"), MAX_QUEUES);
        assert_eq!(
            val("#define SENSOR_MAX_FILTER_ENTRIES") as usize,
            MAX_FILTER_ENTRIES
        );
        assert_eq!(val("CTR_SEEN") as usize, ctr::SEEN);
        assert_eq!(val("CTR_FILTERED") as usize, ctr::FILTERED);
        assert_eq!(val("CTR_SAMPLED_OUT") as usize, ctr::SAMPLED_OUT);
        assert_eq!(val("CTR_REDIRECTED") as usize, ctr::REDIRECTED);
        assert_eq!(val("CTR_REDIRECT_FAILED") as usize, ctr::REDIRECT_FAILED);
        assert_eq!(val("CTR_REDIRECTED_BYTES") as usize, ctr::REDIRECTED_BYTES);
        assert_eq!(val("CTR_MAX") as usize, ctr::MAX);
        assert_eq!(val("SENSOR_F_PASS"), flag::PASS);
        assert_eq!(val("SENSOR_F_SAMPLE_BY_FLOW"), flag::SAMPLE_BY_FLOW);
        assert_eq!(val("SENSOR_F_ETHERTYPE"), flag::ETHERTYPE);
        assert_eq!(val("SENSOR_F_ETHERTYPE_DENY"), flag::ETHERTYPE_DENY);
        assert_eq!(val("SENSOR_F_PROTO"), flag::PROTO);
        assert_eq!(val("SENSOR_F_PROTO_DENY"), flag::PROTO_DENY);
        assert_eq!(val("SENSOR_F_PORT"), flag::PORT);
        assert_eq!(val("SENSOR_F_PORT_DENY"), flag::PORT_DENY);
        assert_eq!(val("SENSOR_F_TIMESTAMP"), flag::TIMESTAMP);
        assert_eq!(val("#define SENSOR_META_MAGIC"), META_MAGIC);
        assert_eq!(val("#define SENSOR_META_LEN") as usize, META_LEN);
        assert_eq!(val("#define SENSOR_HEAD_CHECK"), HEAD_CHECK);
        // the skeleton's view of the shared struct
        assert_eq!(std::mem::size_of::<skel::types::sensor_config>(), 8);
        assert_eq!(
            std::mem::size_of::<skel::types::queue_counters>(),
            8 * ctr::MAX
        );
    }
}
