//! `streamml-sensor doctor`: the report of `capture::doctor`, as text or JSON.

use std::process::ExitCode;

use crate::capture::doctor::{diagnose, DoctorReport};

/// Options of `doctor`.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The interface the sensor would capture on.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Print the report as JSON (keys documented in the README).
    #[arg(long)]
    pub json: bool,
    /// The --queues the sensor would be started with [default: all the interface has].
    #[arg(long, value_name = "N")]
    pub queues: Option<u32>,
}

/// The report as text, one fact per line.
pub fn text(r: &DoctorReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let k = &r.kernel;
    let _ = writeln!(
        s,
        "kernel       {}; BTF {} (not needed); AF_XDP {}",
        k.release,
        if k.btf { "yes" } else { "no" },
        k.af_xdp.text()
    );
    let t = &r.timestamps;
    let _ = writeln!(
        s,
        "timestamps   XDP metadata {}; headroom {}; the sensor uses {} ({})",
        t.xdp_meta.text(),
        t.xdp_head.text(),
        t.timestamps,
        t.carrier.name()
    );
    let p = &r.privileges;
    let _ = writeln!(
        s,
        "privileges   euid {}; held: {}; missing: {}; memlock {} (UMEMs need {} MiB)",
        p.euid,
        if p.capabilities.is_empty() {
            "none".into()
        } else {
            p.capabilities.join(" ")
        },
        if p.missing.is_empty() {
            "none".into()
        } else {
            p.missing.join(" ")
        },
        p.memlock_limit
            .map(|l| format!("{} KiB", l / 1024))
            .unwrap_or_else(|| "unlimited".into()),
        p.memlock_needed >> 20
    );
    let _ = writeln!(
        s,
        "cores        {}: {} reader(s) + {} scorer shard(s) by default",
        r.cpu.cores, r.cpu.readers, r.cpu.scorer_shards
    );
    if let Some(i) = &r.interface {
        let _ = writeln!(
            s,
            "interface    {} (driver {}), {}, MTU {} (longest frame {} B of {} B UMEM frames: {})",
            i.name,
            i.driver.as_deref().unwrap_or("?"),
            if i.up { "up" } else { "DOWN" },
            i.mtu,
            i.max_frame_bytes,
            i.frame_size,
            if i.mtu_fits { "fits" } else { "DOES NOT FIT" }
        );
        let ch = match &i.channels {
            Some(c) => format!(
                "rx {} tx {} combined {} (max rx {} tx {} combined {})",
                c.rx, c.tx, c.combined, c.max_rx, c.max_tx, c.max_combined
            ),
            None => "not reported by the driver".into(),
        };
        let _ = writeln!(s, "  channels   {ch}; {} RX queue(s)", i.rx_queues);
        let _ = writeln!(
            s,
            "  XDP        native {}; zero-copy {}; multi-buffer {}; features: {}",
            i.native_xdp.text(),
            i.zero_copy.text(),
            i.multi_buffer.text(),
            i.xdp_features
                .as_ref()
                .map(|f| f.join(" "))
                .unwrap_or_else(|| "unknown".into())
        );
        let _ = writeln!(
            s,
            "  NUMA/IRQs  node {}; {}",
            i.numa_node
                .map(|n| n.to_string())
                .unwrap_or_else(|| "n/a".into()),
            if i.irqs.is_empty() {
                "no MSI IRQs (virtual device)".to_string()
            } else {
                i.irqs
                    .iter()
                    .map(|q| format!("{}->{}", q.irq, q.affinity))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        );
        let rss = match &i.rss_hash_fields {
            Some(m) => m
                .iter()
                .map(|(k, v)| {
                    let f: Vec<&str> = v
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    format!("{k}: {}", f.join("+"))
                })
                .collect::<Vec<_>>()
                .join("; "),
            None => "not readable".into(),
        };
        let _ = writeln!(s, "  RSS hash   {rss}");
        if let Some(a) = &i.attached_program {
            let _ = writeln!(s, "  attached   {a}");
        }
    }
    if let Some(w) = &r.would_use {
        let _ = writeln!(
            s,
            "would use    {} queue(s), XDP {}, AF_XDP {}, timestamps {} ({}), {} B frames, {} reader(s), {} scorer shard(s)",
            w.queues,
            w.attach,
            w.bind,
            w.timestamps,
            w.timestamp_carrier.name(),
            w.frame_size,
            w.readers,
            w.scorer_shards
        );
    }
    if r.problems.is_empty() {
        let _ = writeln!(s, "problems     none");
    } else {
        for p in &r.problems {
            let _ = writeln!(
                s,
                "{:<12} {}\n             fix: {}",
                p.severity, p.problem, p.fix
            );
        }
    }
    s
}

/// `doctor`: prints the report; exit 1 when a blocking problem was found.
pub fn run(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let r = diagnose(args.iface.as_deref(), args.queues)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", text(&r));
    }
    Ok(if r.problems.iter().any(|p| p.severity == "blocking") {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
