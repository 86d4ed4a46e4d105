//! AF_XDP source: one socket per RX queue, each with its own UMEM, read through xsk-rs.
//!
//! Frame ownership (xsk-rs's safety rule, which this module keeps): a frame descriptor
//! handed to the fill ring belongs to the kernel until it comes back through the RX ring;
//! descriptors of one UMEM are never used with another. Here the UMEM has exactly as many
//! frames as the fill ring has slots, all of them start in the fill ring, and a frame read
//! from the RX ring goes back to the fill ring once the caller is done with it: frames of
//! one RX batch are lent out one by one by [`PacketSource::next_frame`] (each valid until
//! the next call) and the whole batch is recycled in one `produce` when the next batch is
//! fetched. The kernel publishes how far it has read the fill ring lazily, so the ring can
//! look full although we hold frames; those wait in a preallocated stash and go back
//! first at the next chance. Nothing is allocated or locked per frame.
//!
//! When the RX ring is empty the reader waits according to its [`Idle`] strategy. Once
//! the stop flag is set, `next_frame` keeps returning frames until the RX ring is empty and
//! then returns `Ok(None)`: stop after the XDP program no longer redirects, and the rings
//! are drained.
#![allow(unsafe_code)] // UMEM frames lent by the kernel (xsk-rs); every block has a SAFETY comment

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue, Umem};

use super::probe::{Fallback, Feature, Refused};
use super::xdp::TsCarrier;
use super::{xdp, CaptureError, Frame, LinkType, Next, PacketSource};

/// Zero-copy request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopy {
    /// Try zero-copy; where the driver refuses it, copy mode (the reason is reported).
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// What a reader does when its RX ring is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Idle {
    /// Check the ring again at once (burns a core: for readers with a core of their own).
    Spin,
    /// Sleep in poll() until the socket has frames.
    Poll,
    /// Spin for a short while, then yield, then poll().
    Adaptive,
    /// Sleep while the ring is empty, for an interval sized so that a nap lets about
    /// 1/16 to 1/4 of the fill ring accumulate (halved when more came, doubled when
    /// fewer, between 10 µs and `nap_us`); after `yield_rounds` empty naps in a row,
    /// sleep in poll(). The reader then takes full batches and leaves the core to others
    /// (interrupt coalescing, done by the reader) instead of spinning on a few frames at
    /// a time. Frames of a batch share its timestamp, so timestamps get up to one nap
    /// coarser.
    Nap,
}

/// Socket and UMEM settings of one queue's reader.
#[derive(Clone, Debug)]
pub struct XskConfig {
    /// UMEM frame size in bytes: a power of two, at least 2048.
    pub frame_size: u32,
    /// Fill ring entries, which is also the number of UMEM frames. Power of two.
    pub fill_size: u32,
    /// RX ring entries. Power of two.
    pub rx_size: u32,
    /// Frames taken from the RX ring at a time.
    pub batch: u32,
    pub zero_copy: ZeroCopy,
    /// Bind with XDP_USE_NEED_WAKEUP (the driver may sleep; wake it through the socket).
    pub need_wakeup: bool,
    /// SO_BUSY_POLL microseconds (with SO_PREFER_BUSY_POLL and a budget of `batch`); 0 is off.
    pub busy_poll_us: u32,
    pub idle: Idle,
    /// Adaptive idle: empty-ring checks before yielding, then yields before poll().
    pub spin_rounds: u32,
    pub yield_rounds: u32,
    /// Nap idle: the longest nap, microseconds.
    pub nap_us: u32,
    /// Where the XDP program puts each frame's timestamp (`xdp::META_MAGIC`), if anywhere.
    pub ts_carrier: TsCarrier,
    /// How long a bind that fails with EBUSY is retried (the previous socket on the queue
    /// may still be going away).
    pub ebusy_retry: Duration,
    /// Features to treat as refused (tests of the fallbacks; `STREAMML_REFUSE`).
    pub refused: Refused,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 2048,
            fill_size: 32768,
            rx_size: 32768,
            batch: 64,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
            busy_poll_us: 0,
            idle: Idle::Nap,
            spin_rounds: 500,
            yield_rounds: 50,
            nap_us: 2000,
            ts_carrier: TsCarrier::Metadata,
            ebusy_retry: Duration::from_secs(2),
            refused: Refused::none(),
        }
    }
}

/// How the socket was bound, as XDP_OPTIONS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindMode {
    Copy,
    ZeroCopy,
}

impl BindMode {
    pub fn name(self) -> &'static str {
        match self {
            BindMode::Copy => "copy",
            BindMode::ZeroCopy => "zero-copy",
        }
    }
}

/// The kernel's per-socket counters (getsockopt XDP_STATISTICS), kernel names kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
}

impl KernelStats {
    pub fn add(&mut self, o: &KernelStats) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
    }
}

/// Reads XDP_STATISTICS of an AF_XDP socket.
pub fn kernel_stats(fd: RawFd) -> io::Result<KernelStats> {
    let mut s = libc::xdp_statistics {
        rx_dropped: 0,
        rx_invalid_descs: 0,
        tx_invalid_descs: 0,
        rx_ring_full: 0,
        rx_fill_ring_empty_descs: 0,
        tx_ring_empty_descs: 0,
    };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: s is a writable xdp_statistics of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut s as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(KernelStats {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
    })
}

fn bind_mode(fd: RawFd) -> io::Result<BindMode> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: opts is a writable xdp_options of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        BindMode::ZeroCopy
    } else {
        BindMode::Copy
    })
}

fn setsockopt_u32(fd: RawFd, level: i32, name: i32, v: u32) -> io::Result<()> {
    // SAFETY: v is a u32 that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const SO_BUSY_POLL: i32 = 46;
const SO_PREFER_BUSY_POLL: i32 = 69;
const SO_BUSY_POLL_BUDGET: i32 = 70;

/// Counters one reader publishes (single writer, `Relaxed`), read by the stats thread.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Frames read from the RX ring.
    pub packets: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Non-empty RX batches.
    pub batches: AtomicU64,
    /// Wakeup/poll syscalls made while idle or for need_wakeup.
    pub syscalls: AtomicU64,
    /// Frames without a valid XDP timestamp in front (timestamped with their batch's
    /// read time instead); 0 unless the driver refuses XDP metadata.
    pub no_xdp_timestamp: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("{iface} queue {queue}: {what}: {err}")]
    Setup {
        iface: String,
        queue: u32,
        what: &'static str,
        err: String,
    },
    #[error("{iface} queue {queue}: zero-copy is not supported here (EOPNOTSUPP); use --zero-copy auto or off")]
    NoZeroCopy { iface: String, queue: u32 },
    #[error("{iface} queue {queue}: the kernel has no AF_XDP socket support (CONFIG_XDP_SOCKETS)")]
    NoAfXdp { iface: String, queue: u32 },
    #[error("{iface} queue {queue}: still busy after retrying the bind for {waited_ms} ms (is another AF_XDP program reading it?)")]
    Busy {
        iface: String,
        queue: u32,
        waited_ms: u128,
    },
}

/// The root cause's OS error number of a socket-creation error, if any.
fn os_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        cur = c.source();
    }
    None
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// One queue's AF_XDP socket as a [`PacketSource`].
pub struct AfXdpSource {
    queue: u32,
    // Field order is drop order: queues (which hold the socket) before the UMEM.
    rx: RxQueue,
    fq: FillQueue,
    _tx: TxQueue,
    _cq: CompQueue,
    umem: Umem,
    fd: RawFd,
    mode: BindMode,
    /// The current RX batch: `batch[pos..n]` not yet returned.
    batch: Vec<FrameDesc>,
    n: usize,
    pos: usize,
    /// Frames read and done with that did not fit into the fill ring yet.
    stash: Vec<FrameDesc>,
    batch_ts_ns: u64,
    index: u64,
    idle: Idle,
    spin_rounds: u32,
    yield_rounds: u32,
    nap: NapState,
    ts_carrier: TsCarrier,
    /// UMEM chunk size.
    frame_size: usize,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC at the last batch, to convert XDP timestamps.
    mono_to_real_ns: i64,
    /// CLOCK_MONOTONIC at the last batch read: a valid XDP timestamp is not after it.
    batch_mono_ns: u64,
    need_wakeup: bool,
    busy_poll: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<QueueStats>,
    /// Bind attempts that failed with EBUSY before the one that worked.
    pub ebusy_retries: u32,
    /// Optional features this socket did not get, and why.
    pub fallbacks: Vec<Fallback>,
}

// SAFETY: xsk-rs's queues and UMEM hold raw ring pointers into memory owned by the
// socket; moving the whole set to another thread (the reader) is what xsk-rs's own
// multi-threaded example does. Nothing here is shared: the source has one owner.
unsafe impl Send for AfXdpSource {}

impl AfXdpSource {
    /// Creates the UMEM, binds a socket to `iface` queue `queue` (no XDP program is
    /// loaded by libxdp; register [`AfXdpSource::fd`] in the sensor's XSKMAP) and fills
    /// the fill ring.
    pub fn open(
        iface: &str,
        queue: u32,
        cfg: &XskConfig,
        stop: Arc<AtomicBool>,
        stats: Arc<QueueStats>,
    ) -> Result<Self, XskError> {
        let setup = |what: &'static str, err: String| XskError::Setup {
            iface: iface.into(),
            queue,
            what,
            err,
        };
        let qs =
            |v: u32, what: &'static str| QueueSize::new(v).map_err(|e| setup(what, e.to_string()));
        if cfg.batch == 0 || cfg.batch > cfg.fill_size || cfg.batch > cfg.rx_size {
            return Err(setup(
                "batch size",
                format!("{} must be in 1..=min(fill, rx ring size)", cfg.batch),
            ));
        }
        let umem_cfg = UmemConfig::builder()
            .frame_size(
                FrameSize::new(cfg.frame_size).map_err(|e| setup("frame size", e.to_string()))?,
            )
            .fill_queue_size(qs(cfg.fill_size, "fill ring size")?)
            .comp_queue_size(qs(64, "completion ring size")?)
            .frame_headroom(0)
            .build()
            .map_err(|e| setup("UMEM config", e.to_string()))?;
        let frames = NonZeroU32::new(cfg.fill_size).expect("checked power of two, not 0");
        let ifc: Interface = iface
            .parse()
            .map_err(|e: std::ffi::NulError| setup("interface name", e.to_string()))?;
        let rx_size = qs(cfg.rx_size, "RX ring size")?;
        let tx_size = qs(64, "TX ring size")?;

        // Optional bind features, dropped one at a time when the kernel or the driver
        // refuses them: zero-copy first (auto), then need_wakeup. Every attempt gets a
        // fresh UMEM: libxdp's state after a failed bind on a UMEM is not worth trusting.
        let mut fallbacks = Vec::new();
        let mut want_zc = cfg.zero_copy != ZeroCopy::Off;
        let mut want_nw = cfg.need_wakeup;
        let t0 = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let mut retries = 0;
        let (umem, descs, tx, rx, fq, cq) = loop {
            let mut bind = BindFlags::empty();
            bind |= if want_zc {
                BindFlags::XDP_ZEROCOPY
            } else {
                BindFlags::XDP_COPY
            };
            if want_nw {
                bind |= BindFlags::XDP_USE_NEED_WAKEUP;
            }
            // A forced refusal fails the attempt as the kernel would have.
            let forced = if want_zc && cfg.refused.has(Feature::ZeroCopy) {
                Some((Feature::ZeroCopy, libc::EOPNOTSUPP))
            } else if want_nw && cfg.refused.has(Feature::NeedWakeup) {
                Some((Feature::NeedWakeup, libc::EINVAL))
            } else {
                None
            };
            let res: Result<std::convert::Infallible, (Option<i32>, String)> = match forced {
                Some((f, errno)) => Err((Some(errno), Refused::reason(f))),
                None => {
                    let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| {
                        let mut msg = chain(&e);
                        if os_errno(&e) == Some(libc::ENOMEM) || os_errno(&e) == Some(libc::EPERM) {
                            msg.push_str(
                                " (locked memory: needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK)",
                            );
                        }
                        setup("creating the UMEM", msg)
                    })?;
                    let sock_cfg = SocketConfig::builder()
                        .rx_queue_size(rx_size)
                        .tx_queue_size(tx_size)
                        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                        .bind_flags(bind)
                        .build();
                    // SAFETY: the UMEM is not shared with another socket, so the
                    // shared-UMEM precondition of Socket::new does not apply.
                    match unsafe { Socket::new(sock_cfg, &umem, &ifc, queue) } {
                        Ok((tx, rx, Some((fq, cq)))) => break (umem, descs, tx, rx, fq, cq),
                        Ok((_, _, None)) => {
                            return Err(setup(
                                "binding the AF_XDP socket",
                                "no fill/completion ring returned".into(),
                            ))
                        }
                        Err(e) => Err((os_errno(&e), chain(&e))),
                    }
                }
            };
            let (errno, msg) = match res {
                Ok(never) => match never {},
                Err(e) => e,
            };
            match errno {
                // The previous socket on this queue may still be going away: retry with
                // backoff for a bounded time.
                Some(libc::EBUSY) if t0.elapsed() < cfg.ebusy_retry => {
                    retries += 1;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Some(libc::EBUSY) => {
                    return Err(XskError::Busy {
                        iface: iface.into(),
                        queue,
                        waited_ms: t0.elapsed().as_millis(),
                    })
                }
                Some(libc::EAFNOSUPPORT) => {
                    return Err(XskError::NoAfXdp {
                        iface: iface.into(),
                        queue,
                    })
                }
                _ if want_zc && cfg.zero_copy == ZeroCopy::Auto => {
                    fallbacks.push(Fallback::new(
                        Feature::ZeroCopy,
                        "copy",
                        format!("zero-copy bind: {msg}"),
                    ));
                    want_zc = false;
                }
                Some(libc::EOPNOTSUPP) if want_zc => {
                    return Err(XskError::NoZeroCopy {
                        iface: iface.into(),
                        queue,
                    })
                }
                Some(libc::EINVAL) if want_nw => {
                    fallbacks.push(Fallback::new(
                        Feature::NeedWakeup,
                        "off",
                        format!("bind with XDP_USE_NEED_WAKEUP: {msg}"),
                    ));
                    want_nw = false;
                }
                Some(libc::EINVAL) => {
                    return Err(setup(
                        "binding the AF_XDP socket",
                        format!("{msg} (is queue {queue} beyond the interface's queues?)"),
                    ))
                }
                _ => return Err(setup("binding the AF_XDP socket", msg)),
            }
        };
        let mut fq = fq;
        let fd = rx.fd().as_raw_fd();
        let mode = bind_mode(fd).map_err(|e| setup("reading XDP_OPTIONS", e.to_string()))?;
        let mut busy_poll = cfg.busy_poll_us > 0;
        if busy_poll {
            let res = if cfg.refused.has(Feature::BusyPoll) {
                Err(Refused::reason(Feature::BusyPoll))
            } else {
                setsockopt_u32(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)
                    .map_err(|e| format!("SO_PREFER_BUSY_POLL: {e}"))
                    .and_then(|_| {
                        setsockopt_u32(fd, libc::SOL_SOCKET, SO_BUSY_POLL, cfg.busy_poll_us)
                            .map_err(|e| format!("SO_BUSY_POLL: {e}"))
                    })
                    .and_then(|_| {
                        setsockopt_u32(fd, libc::SOL_SOCKET, SO_BUSY_POLL_BUDGET, cfg.batch)
                            .map_err(|e| format!("SO_BUSY_POLL_BUDGET: {e}"))
                    })
            };
            if let Err(reason) = res {
                // Undo what was set; interrupt-driven reading works everywhere.
                let _ = setsockopt_u32(fd, libc::SOL_SOCKET, SO_BUSY_POLL, 0);
                let _ = setsockopt_u32(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, 0);
                fallbacks.push(Fallback::new(Feature::BusyPoll, "off", reason));
                busy_poll = false;
            }
        }
        // SAFETY: the descriptors are this UMEM's own frames and none is in use.
        let filled = unsafe { fq.produce(&descs) };
        if filled != descs.len() {
            return Err(setup(
                "filling the fill ring",
                format!("{filled} of {} frames accepted", descs.len()),
            ));
        }
        let mut batch = descs;
        batch.truncate(cfg.batch as usize);
        Ok(AfXdpSource {
            queue,
            rx,
            fq,
            _tx: tx,
            _cq: cq,
            umem,
            fd,
            mode,
            batch,
            stash: Vec::with_capacity(cfg.fill_size as usize),
            n: 0,
            pos: 0,
            batch_ts_ns: 0,
            index: 0,
            idle: cfg.idle,
            spin_rounds: cfg.spin_rounds,
            yield_rounds: cfg.yield_rounds,
            nap: NapState::new(cfg.nap_us, cfg.fill_size),
            ts_carrier: cfg.ts_carrier,
            frame_size: cfg.frame_size as usize,
            mono_to_real_ns: 0,
            batch_mono_ns: 0,
            need_wakeup: want_nw,
            busy_poll,
            stop,
            stats,
            ebusy_retries: retries,
            fallbacks,
        })
    }

    /// The socket's file descriptor (for the XSKMAP and XDP_STATISTICS).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Copy or zero-copy, as the kernel reports it.
    pub fn bind_mode(&self) -> BindMode {
        self.mode
    }

    /// Bound with XDP_USE_NEED_WAKEUP.
    pub fn need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    /// Busy polling is on.
    pub fn busy_poll(&self) -> bool {
        self.busy_poll
    }

    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        kernel_stats(self.fd)
    }

    /// recvfrom(MSG_DONTWAIT): wakes the driver (need_wakeup) or runs a busy-poll round.
    #[inline]
    fn kick(&self) {
        // SAFETY: a zero-length receive with no buffer and no address.
        unsafe {
            libc::recvfrom(
                self.fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        self.stats.syscalls.fetch_add(1, Relaxed);
    }

    /// Gives the frames of the finished batch back to the fill ring. The kernel publishes
    /// its fill-ring consumer index lazily, so the ring can look full although we hold
    /// frames: what does not fit waits in `stash` and goes first next time.
    #[inline]
    fn recycle(&mut self) {
        if !self.stash.is_empty() {
            self.flush_stash();
        }
        if self.n > 0 {
            let n = self.n;
            let room = if self.stash.is_empty() {
                self.fq.nb_free(n as u32) as usize
            } else {
                0 // keep the order simple: older frames first
            };
            let k = room.min(n);
            // SAFETY: these descriptors came from this socket's RX ring (so they are this
            // UMEM's frames) and the caller's borrow of the last one ended with this call.
            let put = if k > 0 {
                unsafe { self.fq.produce(&self.batch[..k]) }
            } else {
                0
            };
            // capacity is fill_size, the stash can never outgrow it: no allocation
            self.stash.extend_from_slice(&self.batch[put..n]);
            self.n = 0;
            self.pos = 0;
        }
        if self.need_wakeup && self.fq.needs_wakeup() {
            self.kick();
        }
    }

    #[cold]
    fn flush_stash(&mut self) {
        let room = self.fq.nb_free(self.stash.len() as u32) as usize;
        let k = room.min(self.stash.len());
        if k == 0 {
            return;
        }
        // SAFETY: stashed descriptors are frames of this UMEM that we own.
        let put = unsafe { self.fq.produce(&self.stash[..k]) };
        self.stash.drain(..put);
    }

    /// One attempt to get a batch from the RX ring; returns its size.
    #[inline]
    fn fetch(&mut self) -> usize {
        // SAFETY: the descriptors written belong to this socket's UMEM.
        let got = unsafe { self.rx.consume(&mut self.batch) };
        if got > 0 {
            self.n = got;
            self.pos = 0;
            self.batch_ts_ns = now_ns();
            if self.ts_carrier != TsCarrier::None {
                self.batch_mono_ns = mono_ns();
                self.mono_to_real_ns = self.batch_ts_ns as i64 - self.batch_mono_ns as i64;
            }
            let mut bytes: usize = self.batch[..got].iter().map(|d| d.lengths().data()).sum();
            if self.ts_carrier == TsCarrier::Headroom {
                // each frame's pushed header; given back for a frame without one
                bytes = bytes.saturating_sub(got * xdp::META_LEN);
            }
            self.stats.packets.fetch_add(got as u64, Relaxed);
            self.stats.bytes.fetch_add(bytes as u64, Relaxed);
            self.stats.batches.fetch_add(1, Relaxed);
            self.nap.got = self.nap.got.saturating_add(got as u32);
        }
        got
    }

    /// Waits for the RX ring to have frames, at most until `deadline` (None: no limit).
    fn wait(&mut self, deadline: Option<Instant>) -> Result<Wait, CaptureError> {
        let mut spins: u32 = 0;
        // Check the deadline after every sleep in poll(), else every 64 spins.
        let mut slept = false;
        loop {
            if self.fetch() > 0 {
                return Ok(Wait::Frames);
            }
            if self.stop.load(Relaxed) {
                // Drain: the ring was empty after the stop flag was seen.
                return Ok(if self.fetch() > 0 {
                    Wait::Frames
                } else {
                    Wait::Stopped
                });
            }
            if !self.stash.is_empty() {
                self.flush_stash();
            }
            if self.busy_poll || (self.need_wakeup && self.fq.needs_wakeup()) {
                self.kick();
            }
            spins = spins.saturating_add(1);
            if let Some(d) = deadline {
                if (slept || spins.is_multiple_of(64)) && Instant::now() >= d {
                    return Ok(Wait::Idle);
                }
            }
            slept = false;
            let poll_ms = |max: i32| match deadline {
                Some(d) => {
                    (d.saturating_duration_since(Instant::now()).as_millis() as i32).clamp(1, max)
                }
                None => max,
            };
            match self.idle {
                Idle::Spin => std::hint::spin_loop(),
                Idle::Poll => {
                    let ms = poll_ms(100);
                    self.poll(ms)?;
                    slept = true;
                }
                Idle::Nap => {
                    if spins <= self.yield_rounds {
                        self.stats.syscalls.fetch_add(1, Relaxed);
                        let us = self.nap.next(spins == 1);
                        std::thread::sleep(Duration::from_micros(u64::from(us)));
                    } else {
                        let ms = poll_ms(10);
                        self.poll(ms)?;
                    }
                    slept = true;
                }
                Idle::Adaptive => {
                    if spins < self.spin_rounds {
                        std::hint::spin_loop();
                    } else if spins < self.spin_rounds.saturating_add(self.yield_rounds) {
                        std::thread::yield_now();
                    } else {
                        let ms = poll_ms(10);
                        self.poll(ms)?;
                        slept = true;
                    }
                }
            }
        }
    }

    /// The next frame, or [`Next::Idle`] when none came before `deadline` (so the caller
    /// can advance its clock), or [`Next::End`] once stopped and drained. Frames of one RX
    /// batch share one timestamp, taken when the batch was read.
    #[inline]
    pub fn next_or_idle(&mut self, deadline: Option<Instant>) -> Result<Next<'_>, CaptureError> {
        if self.pos >= self.n {
            self.recycle();
            match self.wait(deadline)? {
                Wait::Frames => {}
                Wait::Idle => return Ok(Next::Idle),
                Wait::Stopped => return Ok(Next::End),
            }
        }
        let desc = self.batch[self.pos];
        self.pos += 1;
        self.index += 1;
        // SAFETY: desc came from this socket's RX ring, so it is a frame of this UMEM
        // holding a received packet, and it stays out of the fill ring until the caller's
        // borrow of the returned slice ends (the next call).
        let mut data = unsafe { self.umem.data(&desc) }.contents();
        let ts_ns = match self.ts_carrier {
            TsCarrier::Metadata => self.frame_time(&desc, data),
            TsCarrier::Headroom => match self.head_time(data) {
                Some(ts) => {
                    data = &data[xdp::META_LEN..];
                    ts
                }
                None => {
                    self.stats.no_xdp_timestamp.fetch_add(1, Relaxed);
                    self.stats.bytes.fetch_add(xdp::META_LEN as u64, Relaxed);
                    self.batch_ts_ns
                }
            },
            TsCarrier::None => self.batch_ts_ns,
        };
        Ok(Next::Frame(Frame {
            ts_ns,
            orig_len: data.len() as u32,
            data,
            link: LinkType::Ethernet,
            index: self.index - 1,
        }))
    }

    /// The frame's arrival time from the XDP program's metadata in front of it, converted
    /// to CLOCK_REALTIME; the batch's read time when there is none (counted).
    #[inline]
    fn frame_time(&self, desc: &FrameDesc, data: &[u8]) -> u64 {
        // Every RX frame starts at least XDP_PACKET_HEADROOM (256) bytes into its UMEM
        // chunk (copy and zero-copy alike); check anyway, the read must stay in the chunk.
        if (desc.addr() % self.frame_size) < xdp::META_LEN {
            self.stats.no_xdp_timestamp.fetch_add(1, Relaxed);
            return self.batch_ts_ns;
        }
        let mut meta = [0u8; xdp::META_LEN];
        // SAFETY: the META_LEN bytes before the frame's data lie in the same UMEM chunk
        // (checked above), inside the UMEM mapping that `data` borrows from; the chunk is
        // ours until the frame goes back to the fill ring (after the caller's borrow),
        // so the kernel does not write it meanwhile. It is plain memory: any bytes are a
        // valid [u8; N]. The pointer is derived from `data`'s, which points into the
        // mapping (an allocation made outside Rust), and stays inside it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr().wrapping_sub(xdp::META_LEN),
                meta.as_mut_ptr(),
                xdp::META_LEN,
            );
        }
        let ts = u64::from_ne_bytes(meta[..8].try_into().unwrap_or_default());
        let magic = u32::from_ne_bytes(meta[8..12].try_into().unwrap_or_default());
        // A stale header from an earlier frame in this chunk would also carry the magic,
        // but the program writes one in front of every frame it redirects, or (driver
        // without metadata) never. The age bound catches a driver that fails the
        // adjustment only sometimes.
        if magic != xdp::META_MAGIC
            || ts > self.batch_mono_ns
            || self.batch_mono_ns - ts > MAX_META_AGE_NS
        {
            self.stats.no_xdp_timestamp.fetch_add(1, Relaxed);
            return self.batch_ts_ns;
        }
        (ts as i64 + self.mono_to_real_ns) as u64
    }

    /// The arrival time from the header the XDP program pushed in front of the frame
    /// (`TsCarrier::Headroom`), converted to CLOCK_REALTIME; None when the frame has no
    /// such header (the program could not push it: no headroom). The header is told from
    /// frame bytes by two words (magic and check, bytes 8..16: a source MAC's last four
    /// bytes and an EtherType 0xb2b3 that does not exist) and a time within the batch's.
    #[inline]
    fn head_time(&self, data: &[u8]) -> Option<u64> {
        let h = data.get(..xdp::META_LEN)?;
        let ts = u64::from_ne_bytes(h[..8].try_into().ok()?);
        let magic = u32::from_ne_bytes(h[8..12].try_into().ok()?);
        let check = u32::from_ne_bytes(h[12..16].try_into().ok()?);
        if magic != xdp::META_MAGIC
            || check != xdp::HEAD_CHECK
            || ts > self.batch_mono_ns
            || self.batch_mono_ns - ts > MAX_META_AGE_NS
        {
            return None;
        }
        Some((ts as i64 + self.mono_to_real_ns) as u64)
    }

    fn poll(&mut self, timeout_ms: i32) -> Result<(), CaptureError> {
        self.stats.syscalls.fetch_add(1, Relaxed);
        self.rx
            .poll(timeout_ms)
            .map(|_| ())
            .map_err(|e| CaptureError::Other(format!("queue {}: poll: {e}", self.queue)))
    }
}

/// Oldest an XDP timestamp may be when its batch is read (older: not this frame's).
const MAX_META_AGE_NS: u64 = 10_000_000_000;

/// CLOCK_MONOTONIC in nanoseconds (what bpf_ktime_get_ns() reads; vDSO, no syscall).
#[inline]
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds (vDSO, no syscall).
#[inline]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The nap idle strategy's interval: adapted so that one nap lets between `lo` and `hi`
/// frames accumulate in the RX ring (what the reader drained between the end of the
/// previous nap and the ring running empty again).
#[derive(Debug)]
struct NapState {
    cur_us: u32,
    max_us: u32,
    /// Frames fetched since the last nap ended.
    got: u32,
    lo: u32,
    hi: u32,
}

/// Shortest nap, microseconds (below this the sleep's own cost dominates).
const NAP_MIN_US: u32 = 10;

impl NapState {
    fn new(max_us: u32, fill_size: u32) -> NapState {
        let max_us = max_us.max(NAP_MIN_US);
        NapState {
            cur_us: NAP_MIN_US.max(max_us / 8),
            max_us,
            got: 0,
            lo: (fill_size / 16).max(1),
            hi: (fill_size / 4).max(2),
        }
    }

    /// The next nap's length. `first` is true for the first nap after frames were
    /// taken (what came since the last nap judges its length); later naps in a row
    /// found the ring empty and keep the interval.
    fn next(&mut self, first: bool) -> u32 {
        if first {
            if self.got > self.hi {
                self.cur_us = (self.cur_us / 2).max(NAP_MIN_US);
            } else if self.got < self.lo {
                self.cur_us = self.cur_us.saturating_mul(2).min(self.max_us);
            }
        }
        self.got = 0;
        self.cur_us
    }
}

enum Wait {
    Frames,
    Idle,
    Stopped,
}

impl PacketSource for AfXdpSource {
    /// The next frame; blocks (per the idle strategy) while the ring is empty; `Ok(None)`
    /// once the stop flag is set and the ring is drained.
    #[inline]
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.next_or_idle(None)? {
            Next::Frame(f) => Ok(Some(f)),
            Next::Idle => unreachable!("no deadline, no idle"),
            Next::End => Ok(None),
        }
    }

    #[inline]
    fn next_or_idle(&mut self, deadline: Option<Instant>) -> Result<Next<'_>, CaptureError> {
        AfXdpSource::next_or_idle(self, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nap_adapts_to_what_accumulates() {
        // fill ring 8192: aim for 512..=2048 frames per nap, naps within 10..=2000 µs
        let mut n = NapState::new(2000, 8192);
        assert_eq!(n.cur_us, 250);
        // few frames per nap: the nap doubles up to the maximum
        n.got = 100;
        assert_eq!(n.next(true), 500);
        for _ in 0..10 {
            n.got = 100;
            n.next(true);
        }
        assert_eq!(n.cur_us, 2000);
        // later naps in a row (ring still empty) keep the interval and forget nothing new
        assert_eq!(n.next(false), 2000);
        // in range: unchanged
        n.got = 1000;
        assert_eq!(n.next(true), 2000);
        // too many: halves down to the minimum
        for _ in 0..20 {
            n.got = 5000;
            n.next(true);
        }
        assert_eq!(n.cur_us, NAP_MIN_US);
        // what was counted is consumed by the decision
        assert_eq!(n.got, 0);
        // a maximum below the minimum is raised to it
        assert_eq!(NapState::new(0, 8192).max_us, NAP_MIN_US);
    }
}
