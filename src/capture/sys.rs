//! The interface and the process as the kernel sees them: interface index, flags, MTU,
//! channels, driver, RSS, NUMA and IRQs (ioctls, /sys, /proc), the capabilities and the
//! locked-memory limit, and what a UMEM frame holds. Used by live capture at start and by
//! `doctor`; nothing here captures or changes the interface.
#![allow(unsafe_code)] // ioctls and libc calls on the interface; every block has a SAFETY comment

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context};
use serde::Serialize;

use super::probe::{Fallback, Feature, Refused};
use super::xdp::{self, TsCarrier};

pub const IFF_UP: i16 = 0x1;
pub const SIOCETHTOOL: libc::c_ulong = 0x8946;
pub const ETHTOOL_GCHANNELS: u32 = 0x3c;

#[repr(C)]
#[derive(Default)]
pub struct EthtoolChannels {
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
pub struct IfReq {
    pub name: [u8; libc::IFNAMSIZ],
    /// ifr_flags (short) or ifr_data (pointer), padded to the kernel's 24-byte union.
    pub data: [u64; 3],
}

pub fn ifreq(iface: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 3],
    };
    r.name[..iface.len()].copy_from_slice(iface.as_bytes());
    r
}

pub fn control_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; a non-negative return is a new fd we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// RX queues as /sys lists them (rx-0, rx-1, ...), at least 1.
pub fn sys_rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

pub fn iface_exists(name: &str) -> bool {
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
    /// ethtool's channel counts, when the driver answers ETHTOOL_GCHANNELS.
    pub channels: Option<Channels>,
    /// Set when the queues were counted in /sys because ethtool could not say.
    pub channels_fallback: Option<Fallback>,
}

/// ETHTOOL_GCHANNELS: current and maximum channel counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Channels {
    pub rx: u32,
    pub tx: u32,
    pub combined: u32,
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_combined: u32,
}

/// Looks the interface up: index, flags, RX queue count.
pub fn iface_info(name: &str) -> anyhow::Result<IfaceInfo> {
    iface_info_with(name, Refused::none())
}

/// [`iface_info`]; with `channels` refused, as if the driver did not answer
/// ETHTOOL_GCHANNELS.
pub fn iface_info_with(name: &str, refused: Refused) -> anyhow::Result<IfaceInfo> {
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
    let asked = !refused.has(Feature::Channels)
        // SAFETY: ifr_data points at an ethtool_channels that outlives the call.
        && unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } == 0;
    let (channels, why_not) = if refused.has(Feature::Channels) {
        (None, Refused::reason(Feature::Channels))
    } else if asked {
        let c = Channels {
            rx: ch.rx_count,
            tx: ch.tx_count,
            combined: ch.combined_count,
            max_rx: ch.max_rx,
            max_tx: ch.max_tx,
            max_combined: ch.max_combined,
        };
        if c.rx + c.combined > 0 {
            (Some(c), String::new())
        } else {
            (
                Some(c),
                "ETHTOOL_GCHANNELS reports no RX channels".to_string(),
            )
        }
    } else {
        (
            None,
            format!("ETHTOOL_GCHANNELS: {}", std::io::Error::last_os_error()),
        )
    };
    let (rx_queues, channels_fallback) = match channels.filter(|c| c.rx + c.combined > 0) {
        Some(c) => (c.rx + c.combined, None),
        None => {
            let n = sys_rx_queues(name);
            (
                n,
                Some(Fallback::new(
                    Feature::Channels,
                    format!("{n} (counted in /sys/class/net/{name}/queues)"),
                    why_not,
                )),
            )
        }
    };
    Ok(IfaceInfo {
        name: name.into(),
        ifindex: ifindex as i32,
        up,
        rx_queues,
        channels,
        channels_fallback,
    })
}

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// `STREAMML_SKIP_PRIVILEGE_CHECK=1` skips [`check_privileges`], so that a test can show
/// that the kernel itself refuses the start without each capability the check asks for.
pub const SKIP_PRIVILEGE_CHECK_ENV: &str = "STREAMML_SKIP_PRIVILEGE_CHECK";

pub fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Names the capabilities the sensor lacks, or Ok. `umem_bytes` is the locked memory the
/// UMEMs need (CAP_IPC_LOCK, or a RLIMIT_MEMLOCK that large).
///
/// Needed, each shown by tests/package.rs (the service's capabilities, one dropped at a
/// time, and with [`SKIP_PRIVILEGE_CHECK_ENV`] the kernel refusing too):
/// CAP_NET_ADMIN (attach XDP; XDP program type), CAP_NET_RAW (AF_XDP sockets), CAP_BPF
/// (load the program, create its maps), CAP_PERFMON (the verifier refuses the program's
/// pointer arithmetic without it: "pointer -= pointer prohibited"), CAP_IPC_LOCK (the
/// UMEMs, unless RLIMIT_MEMLOCK covers them). CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON, as in the kernel.
pub fn check_privileges(umem_bytes: u64) -> anyhow::Result<()> {
    if std::env::var_os(SKIP_PRIVILEGE_CHECK_ENV).is_some_and(|v| v == "1") {
        return Ok(());
    }
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
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
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

pub fn probe_af_xdp() -> anyhow::Result<()> {
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

/// What AF_XDP keeps in front of every frame in its UMEM chunk (XDP_PACKET_HEADROOM).
pub const XDP_HEADROOM: u32 = 256;
/// Ethernet header plus two VLAN tags (mirror and trunk ports carry them).
pub const L2_OVERHEAD: u32 = 14 + 8;

/// The longest frame a UMEM chunk of `frame_size` holds with `carrier`.
pub fn max_frame_bytes(frame_size: u32, carrier: TsCarrier) -> u32 {
    let head = if carrier == TsCarrier::Headroom {
        xdp::META_LEN as u32
    } else {
        0
    };
    frame_size.saturating_sub(XDP_HEADROOM + head)
}

/// The UMEM frame size for `mtu`: 2048 where it fits, else 4096 (the largest aligned
/// chunk; larger frames need multi-buffer AF_XDP, which the sensor does not use).
pub fn frame_size_for(mtu: u32, carrier: TsCarrier) -> u32 {
    if mtu + L2_OVERHEAD <= max_frame_bytes(2048, carrier) {
        2048
    } else {
        4096
    }
}

/// The interface's MTU (/sys/class/net/IF/mtu, through [`with_netns_sysfs`]).
pub fn iface_mtu(iface: &str) -> Option<u32> {
    with_netns_sysfs(iface, |sys| {
        std::fs::read_to_string(sys.join("class/net").join(iface).join("mtu"))
    })
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// The interface's received-frames counter (/sys/class/net/IF/statistics/rx_packets,
/// through [`with_netns_sysfs`]): what reached it, captured or not.
pub fn iface_rx_packets(iface: &str) -> Option<u64> {
    with_netns_sysfs(iface, |sys| {
        std::fs::read_to_string(
            sys.join("class/net")
                .join(iface)
                .join("statistics/rx_packets"),
        )
    })
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, across
/// an exec (the reload's pause is measured from one image to the next).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed utsname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let b: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a writable rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

pub const ETHTOOL_GDRVINFO: u32 = 0x3;
pub const ETHTOOL_GRXFH: u32 = 0x29;

pub fn driver_name(iface: &str) -> Option<String> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], five u32 counts: 196 bytes.
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    let sock = control_socket().ok()?;
    let mut req = ifreq(iface);
    req.data[0] = info.as_mut_ptr() as u64;
    // SAFETY: ifr_data points at a buffer the size of struct ethtool_drvinfo that
    // outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } != 0 {
        return None;
    }
    let name: Vec<u8> = info[4..36]
        .iter()
        .take_while(|&&c| c != 0)
        .copied()
        .collect();
    (!name.is_empty()).then(|| String::from_utf8_lossy(&name).into_owned())
}

/// RSS hash fields for TCP/UDP over IPv4/IPv6 (ETHTOOL_GRXFH).
pub fn rss_hash_fields(iface: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let sock = control_socket().ok()?;
    let mut out = serde_json::Map::new();
    for (name, flow_type) in [("tcp4", 1u32), ("udp4", 2), ("tcp6", 5), ("udp6", 6)] {
        // struct ethtool_rxnfc: cmd, flow_type, u64 data, then a rule spec the kernel
        // does not read for GRXFH; the buffer is the struct's full size (192 bytes) and
        // 8-aligned.
        let mut buf = [0u64; 24];
        buf[0] = u64::from(ETHTOOL_GRXFH) | (u64::from(flow_type) << 32);
        let mut req = ifreq(iface);
        req.data[0] = buf.as_mut_ptr() as u64;
        // SAFETY: ifr_data points at an ethtool_rxnfc-sized, aligned buffer that outlives
        // the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } != 0 {
            return None;
        }
        let bits = buf[1];
        let names: Vec<serde_json::Value> = [
            (1 << 1, "l2_dst"),
            (1 << 2, "vlan"),
            (1 << 3, "l3_proto"),
            (1 << 4, "ip_src"),
            (1 << 5, "ip_dst"),
            (1 << 6, "l4_src_port"),
            (1 << 7, "l4_dst_port"),
        ]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| serde_json::Value::from(*n))
        .collect();
        out.insert(name.into(), serde_json::Value::Array(names));
    }
    Some(out)
}

pub fn numa_node(iface: &str) -> Option<i32> {
    let v: i32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/device/numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v >= 0).then_some(v)
}

pub fn irqs(iface: &str) -> Vec<IrqReport> {
    let mut v: Vec<IrqReport> =
        std::fs::read_dir(format!("/sys/class/net/{iface}/device/msi_irqs"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                    .map(|irq| IrqReport {
                        irq,
                        affinity: std::fs::read_to_string(format!(
                            "/proc/irq/{irq}/smp_affinity_list"
                        ))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "?".into()),
                    })
                    .collect()
            })
            .unwrap_or_default();
    v.sort_by_key(|r| r.irq);
    v
}

#[derive(Debug, Serialize)]
pub struct IrqReport {
    pub irq: u32,
    /// /proc/irq/N/smp_affinity_list.
    pub affinity: String,
}

/// Runs `f` with the root of a sysfs that shows the calling thread's network namespace
/// (`/sys/class/net/...` below it). Normally that is `/sys`. A thread that entered another
/// network namespace with setns (`bench --generate`: see `capture::netns::enter`) still
/// sees the `/sys` mounted for the namespace it came from, where its interface is absent:
/// then a helper thread (in the caller's network namespace, which new threads inherit)
/// unshares its filesystem attributes and mount namespace, mounts a sysfs of its own there
/// (private: nothing else sees it) and runs `f` on it; the mount goes with the thread.
pub fn with_netns_sysfs<T: Send>(
    iface: &str,
    f: impl FnOnce(&std::path::Path) -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let sys = std::path::Path::new("/sys");
    if sys.join("class/net").join(iface).exists() {
        return f(sys);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare for this thread only (CLONE_FS detaches its cwd/root from
            // the process's, which CLONE_NEWNS requires in a threaded process).
            if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let root = c"/";
            // SAFETY: valid C strings; MS_REC|MS_PRIVATE only changes propagation in the
            // new mount namespace, so the mount below is not seen outside it.
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let dir = tempfile::Builder::new()
                .prefix("streamml-sysfs")
                .tempdir()?;
            let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes())
                .map_err(std::io::Error::other)?;
            let fstype = c"sysfs";
            // SAFETY: valid C strings; a fresh sysfs shows the mounting thread's netns.
            let r = unsafe {
                libc::mount(
                    fstype.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let out = f(dir.path());
            // SAFETY: unmounting what this thread mounted, in its own mount namespace.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            out
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("sysfs helper thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_one_line() {
        let e = iface_info("nosuchif0").unwrap_err();
        assert_eq!(format!("{e:#}"), "nosuchif0: no such interface");
    }

    #[test]
    fn frame_sizes_for_mtus() {
        assert_eq!(max_frame_bytes(2048, TsCarrier::Metadata), 1792);
        assert_eq!(max_frame_bytes(2048, TsCarrier::Headroom), 1776);
        assert_eq!(frame_size_for(1500, TsCarrier::Headroom), 2048);
        assert_eq!(frame_size_for(1770, TsCarrier::Metadata), 2048);
        assert_eq!(frame_size_for(1771, TsCarrier::Metadata), 4096);
        assert_eq!(frame_size_for(9000, TsCarrier::None), 4096);
    }
}
