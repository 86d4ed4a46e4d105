//! `streamml-sensor doctor [--iface IF] [--json]`: what this kernel and NIC offer and what
//! the sensor would use, without capturing; each problem that would stop or weaken capture
//! with the command that fixes it. What an operator runs first on a new sensor box.
//!
//! Nothing here disturbs traffic: the XDP program is loaded (to ask the verifier which
//! timestamp carrier it takes) but never attached, no AF_XDP socket is bound (zero-copy
//! binds reset a queue on some drivers); the driver's XDP features come from the kernel's
//! netlink `netdev` family (6.3+), the rest from ioctls, /sys and /proc.

use serde::Serialize;

use super::sys::{
    driver_name, effective_caps, euid, frame_size_for, iface_info, iface_mtu, irqs, kernel_release,
    max_frame_bytes, memlock_limit, numa_node, probe_af_xdp, rss_hash_fields, IrqReport, CAP_BPF,
    CAP_IPC_LOCK, CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON, CAP_SYS_ADMIN, L2_OVERHEAD,
};
use super::xdp::{self, xdp_act, SensorProgram, TsCarrier};

/// A yes/no answer that may be unknown, with the reason when it is not yes.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// true, false, or null when this kernel cannot say.
    pub available: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verdict {
    fn yes() -> Verdict {
        Verdict {
            available: Some(true),
            reason: None,
        }
    }
    fn no(reason: impl Into<String>) -> Verdict {
        Verdict {
            available: Some(false),
            reason: Some(reason.into()),
        }
    }
    fn unknown(reason: impl Into<String>) -> Verdict {
        Verdict {
            available: None,
            reason: Some(reason.into()),
        }
    }
    pub fn word(&self) -> &'static str {
        match self.available {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
    }
    /// "yes", "no (reason)" or "unknown (reason)".
    pub fn text(&self) -> String {
        match &self.reason {
            Some(r) => format!("{} ({r})", self.word()),
            None => self.word().to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct KernelReport {
    /// `uname -r`.
    pub release: String,
    /// /sys/kernel/btf/vmlinux exists. The sensor's program does not need it (no CO-RE).
    pub btf: bool,
    pub btf_needed: bool,
    /// AF_XDP sockets can be created.
    pub af_xdp: Verdict,
}

#[derive(Debug, Serialize)]
pub struct TimestampReport {
    /// The verifier takes `bpf_xdp_adjust_meta` in the sensor's program.
    pub xdp_meta: Verdict,
    /// The verifier takes `bpf_xdp_adjust_head` (the headroom carrier).
    pub xdp_head: Verdict,
    /// What the sensor will use: "xdp" or "batch".
    pub timestamps: &'static str,
    /// "metadata", "headroom" or "none".
    pub carrier: TsCarrier,
}

#[derive(Debug, Serialize)]
pub struct PrivilegeReport {
    pub euid: u32,
    /// Of the capabilities the sensor uses, those held (effective set).
    pub capabilities: Vec<&'static str>,
    /// Those it needs and lacks.
    pub missing: Vec<&'static str>,
    /// RLIMIT_MEMLOCK in bytes (null: unlimited).
    pub memlock_limit: Option<u64>,
    /// Locked memory the UMEMs need with the defaults on this interface.
    pub memlock_needed: u64,
}

#[derive(Debug, Serialize)]
pub struct CpuReport {
    /// Cores this process may run on.
    pub cores: usize,
    /// Reader threads the defaults give (one per queue).
    pub readers: u32,
    /// Scorer shards the defaults give (cores minus readers, at least 1).
    pub scorer_shards: usize,
}

#[derive(Debug, Serialize)]
pub struct ChannelReport {
    pub rx: u32,
    pub tx: u32,
    pub combined: u32,
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_combined: u32,
}

#[derive(Debug, Serialize)]
pub struct InterfaceReport {
    pub name: String,
    pub ifindex: i32,
    pub up: bool,
    /// ETHTOOL_GDRVINFO's driver name.
    pub driver: Option<String>,
    pub mtu: u32,
    /// ETHTOOL_GCHANNELS, null when the driver does not answer.
    pub channels: Option<ChannelReport>,
    /// RX queues the sensor sees (channels, else /sys/class/net/IF/queues).
    pub rx_queues: u32,
    /// The driver's XDP features by name (null: the kernel cannot say, before 6.3).
    pub xdp_features: Option<Vec<&'static str>>,
    pub native_xdp: Verdict,
    pub zero_copy: Verdict,
    /// XDP multi-buffer (frames larger than a page).
    pub multi_buffer: Verdict,
    /// UMEM frame size the sensor would use, and the longest frame it holds.
    pub frame_size: u32,
    pub max_frame_bytes: u32,
    /// MTU + Ethernet header + two VLAN tags fit in a UMEM frame.
    pub mtu_fits: bool,
    /// /sys/class/net/IF/device/numa_node (null: no device or not NUMA).
    pub numa_node: Option<i32>,
    /// The device's MSI IRQs and where they may run (empty for virtual devices).
    pub irqs: Vec<IrqReport>,
    /// RSS hash fields per flow type (ETHTOOL_GRXFH), null when not readable.
    pub rss_hash_fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// An XDP program already attached (the sensor replaces its own leftovers only).
    pub attached_program: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct WouldUse {
    pub queues: u32,
    /// "native" or "skb".
    pub attach: &'static str,
    /// "zero-copy" or "copy".
    pub bind: &'static str,
    pub timestamps: &'static str,
    pub timestamp_carrier: TsCarrier,
    pub frame_size: u32,
    pub readers: u32,
    pub scorer_shards: usize,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// "blocking" (the sensor cannot start or loses frames), "warning" (it runs, worse),
    /// or "info".
    pub severity: &'static str,
    pub problem: String,
    /// The command or unit line that fixes it.
    pub fix: String,
}

/// The `doctor --json` document.
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub kernel: KernelReport,
    pub timestamps: TimestampReport,
    pub privileges: PrivilegeReport,
    pub cpu: CpuReport,
    pub interface: Option<InterfaceReport>,
    pub would_use: Option<WouldUse>,
    pub problems: Vec<Problem>,
}

/// The sensor's default UMEM frames per queue (`--fill-size`).
const DEFAULT_FILL: u64 = 32768;
fn feature_names(bits: u64) -> Vec<&'static str> {
    [
        (xdp_act::BASIC, "basic"),
        (xdp_act::REDIRECT, "redirect"),
        (xdp_act::NDO_XMIT, "ndo_xmit"),
        (xdp_act::XSK_ZEROCOPY, "xsk_zerocopy"),
        (xdp_act::HW_OFFLOAD, "hw_offload"),
        (xdp_act::RX_SG, "rx_sg"),
        (xdp_act::NDO_XMIT_SG, "ndo_xmit_sg"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| *n)
    .collect()
}

const UNIT_CAPS: &str =
    "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_IPC_LOCK";

/// Gathers the report. Errors only for a bad --iface (no such interface).
pub fn diagnose(iface: Option<&str>, queues_asked: Option<u32>) -> anyhow::Result<DoctorReport> {
    let mut problems = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let af_xdp = match probe_af_xdp() {
        Ok(()) => Verdict::yes(),
        Err(e) => Verdict::no(format!("{e:#}")),
    };
    if af_xdp.available == Some(false) {
        problems.push(Problem {
            severity: "blocking",
            problem: format!("AF_XDP sockets: {}", af_xdp.reason.clone().unwrap_or_default()),
            fix: "a kernel built with CONFIG_XDP_SOCKETS=y (every major distribution's is), run as root or with the capabilities below".into(),
        });
    }
    let kernel = KernelReport {
        release: kernel_release(),
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        btf_needed: false,
        af_xdp,
    };

    // Privileges first: loading the program to ask the verifier needs them.
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut held = Vec::new();
    let mut missing = Vec::new();
    for (c, name, needed) in [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN", true),
        (CAP_NET_RAW, "CAP_NET_RAW", true),
        (CAP_BPF, "CAP_BPF", !has(CAP_SYS_ADMIN)),
        (CAP_PERFMON, "CAP_PERFMON", !has(CAP_SYS_ADMIN)),
        (CAP_IPC_LOCK, "CAP_IPC_LOCK", false),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN", false),
    ] {
        if has(c) {
            held.push(name);
        } else if needed {
            missing.push(name);
        }
    }

    let info = match iface {
        Some(i) => Some(iface_info(i)?),
        None => None,
    };

    let can_load = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let (xdp_meta, xdp_head) = if can_load {
        let v = |c| match SensorProgram::probe_carrier(c) {
            Ok(()) => Verdict::yes(),
            Err(why) => Verdict::no(why),
        };
        (v(TsCarrier::Metadata), v(TsCarrier::Headroom))
    } else {
        let why = "needs CAP_BPF to ask the verifier";
        (Verdict::unknown(why), Verdict::unknown(why))
    };
    let carrier = if xdp_meta.available == Some(true) {
        TsCarrier::Metadata
    } else if xdp_head.available == Some(true) {
        TsCarrier::Headroom
    } else {
        TsCarrier::None
    };
    let timestamps = TimestampReport {
        xdp_meta,
        xdp_head,
        timestamps: if carrier == TsCarrier::None {
            "batch"
        } else {
            "xdp"
        },
        carrier,
    };

    let queues = match (&info, queues_asked) {
        (Some(i), Some(q)) => q.min(i.rx_queues),
        (Some(i), None) => i.rx_queues,
        (None, Some(q)) => q,
        (None, None) => 1,
    };
    let mtu = iface.and_then(iface_mtu).unwrap_or(1500);
    let frame_size = frame_size_for(mtu, carrier);
    let memlock_needed = u64::from(queues) * DEFAULT_FILL * u64::from(frame_size);
    let memlock = memlock_limit();
    if !missing.is_empty() {
        problems.push(Problem {
            severity: "blocking",
            problem: format!("missing capabilities: {}", missing.join(", ")),
            fix: format!("run as root, or: setcap cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon,cap_ipc_lock+ep $(command -v streamml-sensor); in a systemd unit: {UNIT_CAPS}"),
        });
    }
    if !has(CAP_IPC_LOCK) && memlock.is_some_and(|l| l < memlock_needed) {
        problems.push(Problem {
            severity: "blocking",
            problem: format!(
                "locked-memory limit {} KiB is below the {} MiB the UMEMs need, and CAP_IPC_LOCK is not held",
                memlock.unwrap_or(0) / 1024,
                memlock_needed >> 20
            ),
            fix: "LimitMEMLOCK=infinity in the unit (or ulimit -l unlimited), or grant CAP_IPC_LOCK".into(),
        });
    }
    let privileges = PrivilegeReport {
        euid: euid(),
        capabilities: held,
        missing,
        memlock_limit: memlock,
        memlock_needed,
    };

    let readers = queues;
    let scorer_shards = cores.saturating_sub(readers as usize).max(1);
    let cpu = CpuReport {
        cores,
        readers,
        scorer_shards,
    };
    if (readers as usize) >= cores {
        problems.push(Problem {
            severity: "warning",
            problem: format!(
                "{readers} reader thread(s) and at least one scorer on {cores} core(s): readers and scorers share cores"
            ),
            fix: format!(
                "fewer queues (ethtool -L {} combined {}) or a box with more cores",
                iface.unwrap_or("IF"),
                cores.saturating_sub(1).max(1)
            ),
        });
    }

    let (interface, would_use) = match info {
        None => (None, None),
        Some(info) => {
            let iface = info.name.clone();
            if !info.up {
                problems.push(Problem {
                    severity: "blocking",
                    problem: format!("{iface} is down"),
                    fix: format!("ip link set {iface} up"),
                });
            }
            let feats = xdp::xdp_features(info.ifindex);
            let (native_xdp, zero_copy, multi_buffer) = match feats {
                Some(f) => (
                    if f & xdp_act::BASIC != 0 && f & xdp_act::REDIRECT != 0 {
                        Verdict::yes()
                    } else {
                        Verdict::no("the driver does not advertise XDP basic + redirect")
                    },
                    if f & xdp_act::XSK_ZEROCOPY != 0 {
                        Verdict::yes()
                    } else {
                        Verdict::no("the driver does not advertise xsk_zerocopy")
                    },
                    if f & xdp_act::RX_SG != 0 {
                        Verdict::yes()
                    } else {
                        Verdict::no("the driver does not advertise rx_sg")
                    },
                ),
                None => {
                    let why = "this kernel does not report the driver's XDP features (6.3+ does); the sensor tries and falls back";
                    (
                        Verdict::unknown(why),
                        Verdict::unknown(why),
                        Verdict::unknown(why),
                    )
                }
            };
            let max_frame = max_frame_bytes(frame_size, carrier);
            let mtu_fits = mtu + L2_OVERHEAD <= max_frame;
            if !mtu_fits {
                let fit = max_frame_bytes(4096, carrier) - L2_OVERHEAD;
                problems.push(Problem {
                    severity: "blocking",
                    problem: format!(
                        "MTU {mtu}: frames up to {} bytes do not fit the largest UMEM frame ({max_frame} bytes); longer frames are dropped by the kernel (counted as rx_dropped)",
                        mtu + L2_OVERHEAD
                    ),
                    fix: format!("ip link set {iface} mtu {fit}"),
                });
            }
            if info.channels_fallback.is_some() {
                problems.push(Problem {
                    severity: "info",
                    problem: format!(
                        "{iface}: the driver does not report its channels; {} RX queue(s) counted in /sys",
                        info.rx_queues
                    ),
                    fix: "none needed".into(),
                });
            }
            let channels = info.channels.map(|c| ChannelReport {
                rx: c.rx,
                tx: c.tx,
                combined: c.combined,
                max_rx: c.max_rx,
                max_tx: c.max_tx,
                max_combined: c.max_combined,
            });
            if let Some(c) = &channels {
                let max = c.max_combined.max(c.max_rx);
                let cur = c.combined.max(c.rx);
                if max > cur && (cur as usize) < cores.saturating_sub(1) {
                    problems.push(Problem {
                        severity: "info",
                        problem: format!(
                            "{iface} uses {cur} of {max} channels while {cores} cores could read more"
                        ),
                        fix: format!(
                            "ethtool -L {iface} combined {}",
                            max.min(cores.saturating_sub(1).max(1) as u32)
                        ),
                    });
                }
            }
            if let Some(q) = queues_asked {
                if q > info.rx_queues {
                    problems.push(Problem {
                        severity: "info",
                        problem: format!(
                            "--queues {q} but {iface} has {} RX queue(s): the sensor reads those it has",
                            info.rx_queues
                        ),
                        fix: format!("ethtool -L {iface} combined {q}"),
                    });
                } else if q < info.rx_queues {
                    problems.push(Problem {
                        severity: "warning",
                        problem: format!(
                            "--queues {q} of {}: frames RSS puts on the other queues are not captured (counted as xdp.redirect_failed)",
                            info.rx_queues
                        ),
                        fix: format!("ethtool -L {iface} combined {q}, or omit --queues"),
                    });
                }
            }
            let attached = super::xdp::query_attached(&iface, info.ifindex)
                .ok()
                .flatten()
                .map(|ex| {
                    if !ex.is_ours() {
                        problems.push(Problem {
                            severity: "blocking",
                            problem: format!(
                                "{iface} has another XDP program attached ({}, id {})",
                                ex.name.as_deref().unwrap_or("name unreadable"),
                                ex.id
                            ),
                            fix: format!(
                                "remove it (ip link set {iface} xdp off) or start the sensor with --force"
                            ),
                        });
                    }
                    serde_json::json!({"id": ex.id, "name": ex.name, "mode": ex.mode.name(), "ours": ex.is_ours()})
                });
            let attach = if native_xdp.available == Some(false) {
                "skb"
            } else {
                "native"
            };
            let bind = if zero_copy.available == Some(true) {
                "zero-copy"
            } else {
                "copy"
            };
            let r = InterfaceReport {
                driver: driver_name(&iface),
                mtu,
                channels,
                rx_queues: info.rx_queues,
                xdp_features: feats.map(feature_names),
                native_xdp,
                zero_copy,
                multi_buffer,
                frame_size,
                max_frame_bytes: max_frame,
                mtu_fits,
                numa_node: numa_node(&iface),
                irqs: irqs(&iface),
                rss_hash_fields: rss_hash_fields(&iface),
                attached_program: attached,
                name: iface,
                ifindex: info.ifindex,
                up: info.up,
            };
            let w = WouldUse {
                queues,
                attach,
                bind,
                timestamps: timestamps.timestamps,
                timestamp_carrier: carrier,
                frame_size,
                readers,
                scorer_shards,
            };
            (Some(r), Some(w))
        }
    };
    if timestamps.carrier == TsCarrier::None && can_load {
        problems.push(Problem {
            severity: "warning",
            problem: "the verifier takes neither XDP timestamp carrier: frames get their RX batch's read time (up to one nap, 2 ms, coarser)".into(),
            fix: "a kernel that allows bpf_xdp_adjust_meta or bpf_xdp_adjust_head in XDP programs".into(),
        });
    }
    Ok(DoctorReport {
        kernel,
        timestamps,
        privileges,
        cpu,
        interface,
        would_use,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_feature_names() {
        assert_eq!(
            feature_names(xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::RX_SG),
            vec!["basic", "redirect", "rx_sg"]
        );
    }
}
