//! streamml-pktgen: a bounded traffic generator for the live tests and the capture
//! benchmark on veth pairs (the kernel's pktgen module is not available everywhere; see
//! packaging/pktgen/ for real boxes).
//!
//! One thread per TX queue, each with an AF_XDP socket in copy mode bound to that queue:
//! on veth, TX queue i of one end feeds RX queue i of the other, so the queue a frame
//! arrives on is chosen exactly. Frames are Ethernet/IPv4/UDP (or TCP SYN) with
//! addresses inside 198.18.0.0/15 only (refused otherwise); `--flows` distinct source
//! ports per queue, and each queue its own source address. Every run is bounded by
//! `--count` and `--duration`. Prints one JSON line with what was sent.
//!
//! "sent" counts frames the kernel completed (taken off the TX ring and handed to the
//! device); a frame the device then drops shows in its tx_dropped counter.

use std::io::Write;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use streamml_sensor::capture::gen::{build_frame, in_test_range, FrameSpec};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::{Socket, Umem};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "streamml-pktgen",
    about = "Bounded AF_XDP traffic generator for veth tests (198.18.0.0/15 only)"
)]
struct Args {
    /// Interface to send on (run inside the sending network namespace).
    #[arg(long)]
    iface: String,
    /// TX queues to send on, one thread each (e.g. 0 or 0,1).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    queues: Vec<u32>,
    /// Frames to send per queue (one number for all, or one per queue).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    count: Vec<u64>,
    /// Frames per second per queue (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pps: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Frame size in bytes (no FCS), at least 60 for UDP, 64 for TCP, at most 4000 (above
    /// 1514 the interface's MTU must allow it).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// First source address; queue i uses this + i.
    #[arg(long, default_value = "198.18.0.1")]
    src: Ipv4Addr,
    /// Destination address.
    #[arg(long, default_value = "198.19.0.1")]
    dst: Ipv4Addr,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:02", value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source MAC.
    #[arg(long, default_value = "02:00:00:00:00:01", value_parser = parse_mac)]
    src_mac: [u8; 6],
    /// Distinct flows (source ports 10000..10000+flows) per queue.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Destination port.
    #[arg(long, default_value_t = 5000)]
    dport: u16,
    /// udp, or tcp-syn (a SYN flood when --flows is large).
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp-syn"])]
    proto: String,
    /// UMEM frames (and TX ring size) per queue.
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Frames submitted per sendto.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Also write the frames that were sent to this pcap file (queue after queue, in send
    /// order, timestamps 1/pps apart), e.g. to replay them through `streamml-sensor flows`.
    #[arg(long, value_name = "FILE")]
    pcap_out: Option<std::path::PathBuf>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address"));
    }
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(m)
}

/// Writes one frame into `buf` (len = size): the frames of the bench mode's generator
/// (`streamml_sensor::capture::gen::build_frame`).
fn build(buf: &mut [u8], a: &Args, src: Ipv4Addr, sport: u16, seq: u32) {
    build_frame(
        buf,
        &FrameSpec {
            dst_mac: a.dst_mac,
            src_mac: a.src_mac,
            src,
            dst: a.dst,
            sport,
            dport: a.dport,
            tcp_syn: a.proto == "tcp-syn",
            seq,
        },
    );
}

#[derive(Debug, Default, serde::Serialize)]
struct QueueResult {
    queue: u32,
    requested: u64,
    sent: u64,
    elapsed_s: f64,
    /// sendto calls that returned an error other than EAGAIN/ENOBUFS/EBUSY.
    errors: u64,
}

fn send_queue(a: &Args, qi: usize) -> anyhow::Result<QueueResult> {
    let queue = a.queues[qi];
    let count = if a.count.len() == 1 {
        a.count[0]
    } else {
        a.count[qi]
    };
    let src = Ipv4Addr::from(u32::from(a.src) + qi as u32);
    let umem_cfg = UmemConfig::builder()
        .frame_size(
            FrameSize::new(if a.size > 2048 { 4096 } else { 2048 }).map_err(|e| anyhow!("{e}"))?,
        )
        .fill_queue_size(QueueSize::new(64).map_err(|e| anyhow!("{e}"))?)
        .comp_queue_size(QueueSize::new(a.frames).map_err(|e| anyhow!("--frames: {e}"))?)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let (umem, mut free) = Umem::new(
        umem_cfg,
        NonZeroU32::new(a.frames).ok_or_else(|| anyhow!("--frames 0"))?,
        false,
    )
    .map_err(|e| anyhow!("creating the UMEM: {e}"))?;
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(QueueSize::new(64).map_err(|e| anyhow!("{e}"))?)
        .tx_queue_size(QueueSize::new(a.frames).map_err(|e| anyhow!("{e}"))?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let ifc: Interface = a.iface.parse().map_err(|e| anyhow!("{e}"))?;
    let t_bind = Instant::now();
    let (mut tx, _rx, fqcq) = loop {
        // SAFETY: the UMEM is not shared.
        match unsafe { Socket::new(sock_cfg, &umem, &ifc, queue) } {
            Ok(v) => break v,
            Err(e) => {
                let busy = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .and_then(|e| e.raw_os_error())
                    == Some(libc::EBUSY);
                if busy && t_bind.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                bail!("{} queue {queue}: {e}{cause}", a.iface);
            }
        }
    };
    let (_fq, mut cq) = fqcq.ok_or_else(|| anyhow!("no completion ring"))?;
    let fd = tx.fd().as_raw_fd();
    // Copy-mode TX sends at most 32 frames per sendto unless raised (kernel >= 6.15).
    const XDP_MAX_TX_SKB_BUDGET: i32 = 9;
    let budget: u32 = 256;
    // SAFETY: budget outlives the call; failure (older kernel) is harmless.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            4,
        )
    };

    let mut frame = vec![0u8; a.size];
    let flows = a.flows.max(1);
    let mut comp = vec![FrameDesc::default(); a.frames as usize];
    let mut batch: Vec<FrameDesc> = Vec::with_capacity(a.batch as usize);
    let mut submitted = 0u64;
    let mut completed = 0u64;
    let mut errors = 0u64;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.duration);
    while completed < count {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // SAFETY: descriptors on the completion ring are this UMEM's frames.
        let n = unsafe { cq.consume(&mut comp) };
        completed += n as u64;
        free.extend_from_slice(&comp[..n]);
        let mut want = (count - submitted)
            .min(a.batch as u64)
            .min(free.len() as u64);
        if a.pps > 0 {
            let allowed = (a.pps as f64 * now.duration_since(t0).as_secs_f64()) as u64 + 1;
            want = want.min(allowed.saturating_sub(submitted));
        }
        if want == 0 {
            if submitted > completed {
                // nudge the kernel to process the TX ring
                if tx.needs_wakeup() && tx.wakeup().is_err() {
                    errors += 1;
                }
            }
            if a.pps > 0 && submitted < count {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        batch.clear();
        for _ in 0..want {
            let mut d = free.pop().expect("want <= free.len()");
            let seq = submitted as u32 + batch.len() as u32;
            let sport = 10000u16.wrapping_add((seq % flows) as u16);
            build(&mut frame, a, src, sport, seq);
            // SAFETY: d is a free frame of this UMEM (not on any ring).
            let mut data = unsafe { umem.data_mut(&mut d) };
            let mut c = data.cursor();
            c.set_pos(0);
            c.write_all(&frame)
                .context("frame larger than the UMEM frame")?;
            batch.push(d);
        }
        // SAFETY: the frames are this UMEM's and were just written; they return through
        // the completion ring.
        let put = unsafe { tx.produce(&batch) };
        if put < batch.len() {
            free.extend_from_slice(&batch[put..]);
        }
        submitted += put as u64;
        if tx.wakeup().is_err() {
            errors += 1;
        }
    }
    // Bounded wait for the last completions.
    let end = Instant::now() + Duration::from_secs(1);
    while completed < submitted && Instant::now() < end {
        let _ = tx.wakeup();
        // SAFETY: as above.
        let n = unsafe { cq.consume(&mut comp) };
        completed += n as u64;
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(QueueResult {
        queue,
        requested: count,
        sent: completed,
        elapsed_s: t0.elapsed().as_secs_f64(),
        errors,
    })
}

/// The frames each queue sent, regenerated (they are a function of queue and sequence
/// number), as a classic pcap with microsecond timestamps.
fn write_pcap(path: &std::path::Path, a: &Args, qs: &[QueueResult]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0u8; 8])?; // thiszone, sigfigs
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
    let t0_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as u64;
    let step_us = 1_000_000u64.checked_div(a.pps).unwrap_or(1).max(1);
    let flows = a.flows.max(1);
    let mut frame = vec![0u8; a.size];
    for (qi, q) in qs.iter().enumerate() {
        let src = Ipv4Addr::from(u32::from(a.src) + qi as u32);
        for seq in 0..q.sent {
            let seq = seq as u32;
            build(
                &mut frame,
                a,
                src,
                10000u16.wrapping_add((seq % flows) as u16),
                seq,
            );
            let t = t0_us + seq as u64 * step_us;
            w.write_all(&((t / 1_000_000) as u32).to_le_bytes())?;
            w.write_all(&((t % 1_000_000) as u32).to_le_bytes())?;
            w.write_all(&(frame.len() as u32).to_le_bytes())?;
            w.write_all(&(frame.len() as u32).to_le_bytes())?;
            w.write_all(&frame)?;
        }
    }
    w.flush()?;
    Ok(())
}

fn run(a: Args) -> anyhow::Result<()> {
    // Up to a 4096-byte UMEM frame; above 1514 the veth MTU must allow it.
    if a.size < 60 || a.size > 4000 {
        bail!("--size {}: must be in 60..=4000", a.size);
    }
    if a.count.len() != 1 && a.count.len() != a.queues.len() {
        bail!("--count: give one number or one per queue");
    }
    let last_src = Ipv4Addr::from(u32::from(a.src) + a.queues.len() as u32 - 1);
    for ip in [a.src, last_src, a.dst] {
        if !in_test_range(ip) {
            bail!("{ip}: only addresses in 198.18.0.0/15 may be generated");
        }
    }
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--duration {}: must be in (0, 600] seconds", a.duration);
    }
    if a.flows == 0 || a.flows > 50_000 {
        bail!("--flows {}: must be in 1..=50000", a.flows);
    }
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<QueueResult>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.queues.len())
            .map(|i| {
                let a = &a;
                s.spawn(move || send_queue(a, i))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("sender thread panicked")))
            })
            .collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let mut qs = Vec::new();
    for r in results {
        qs.push(r?);
    }
    let sent: u64 = qs.iter().map(|q| q.sent).sum();
    if let Some(p) = &a.pcap_out {
        write_pcap(p, &a, &qs).with_context(|| format!("writing {}", p.display()))?;
    }
    let out = serde_json::json!({
        "iface": a.iface,
        "sent": sent,
        "requested": qs.iter().map(|q| q.requested).sum::<u64>(),
        "elapsed_s": elapsed,
        "pps": sent as f64 / elapsed.max(1e-9),
        "size": a.size,
        "queues": qs,
    });
    println!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamml-pktgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_confined() {
        assert!(in_test_range("198.18.0.1".parse().unwrap()));
        assert!(in_test_range("198.19.255.254".parse().unwrap()));
        assert!(!in_test_range("198.20.0.1".parse().unwrap()));
        assert!(!in_test_range("10.0.0.1".parse().unwrap()));
    }

    fn csum_fold(mut s: u32) -> u16 {
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn csum_add(mut s: u32, b: &[u8]) -> u32 {
        for w in b.chunks(2) {
            s += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
        }
        s
    }

    #[test]
    fn checksums_verify() {
        let a = Args::parse_from(["x", "--iface", "v", "--proto", "tcp-syn"]);
        let mut f = vec![0u8; 64];
        build(&mut f, &a, a.src, 10001, 7);
        assert_eq!(
            csum_fold(csum_add(0, &f[14..34])),
            0,
            "IPv4 header checksum"
        );
        let mut p = csum_add(0, &f[26..34]);
        p += 6 + 20;
        assert_eq!(csum_fold(csum_add(p, &f[34..54])), 0, "TCP checksum");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 40, "IP total length");
    }
}
