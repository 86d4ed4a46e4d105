//! Feature names of both detector modes, their defaults, and which ones the robust scaler
//! passes through log1p by default (counts and sizes: heavy-tailed; shares: already in
//! [0, 1]).

/// Window-mode features: one vector per shard, per profile, per window.
pub const WINDOW_FEATURES: [&str; 21] = [
    "packets",
    "bytes",
    "mean_size",
    "stddev_size",
    "distinct_src_ips",
    "distinct_dst_ips",
    "distinct_dst_ports",
    "distinct_flows",
    "entropy_dst_ports",
    "entropy_src_ips",
    "syn_share",
    "synack_share",
    "rst_share",
    "fin_share",
    "icmp_share",
    "udp_share",
    "new_flows",
    "mean_closed_flow_duration_s",
    "top_src_share",
    "top_dst_port_share",
    "top_flow_bytes",
];

pub const WINDOW_LOG1P_DEFAULT: [bool; 21] = [
    true, true, true, true, true, true, true, true, false, false, false, false, false, false,
    false, false, true, true, false, false, true,
];

pub const DEFAULT_WINDOW_FEATURES: [&str; 15] = [
    "packets",
    "bytes",
    "mean_size",
    "distinct_src_ips",
    "distinct_dst_ips",
    "distinct_dst_ports",
    "distinct_flows",
    "entropy_dst_ports",
    "syn_share",
    "rst_share",
    "udp_share",
    "icmp_share",
    "new_flows",
    "top_src_share",
    "top_flow_bytes",
];

/// Flow-mode features: nfstream column names (plus two derived ratios), one vector per
/// exported flow.
pub const FLOW_FEATURES: [&str; 20] = [
    "bidirectional_duration_ms",
    "bidirectional_packets",
    "bidirectional_bytes",
    "src2dst_packets",
    "src2dst_bytes",
    "dst2src_packets",
    "dst2src_bytes",
    "bidirectional_mean_ps",
    "bidirectional_stddev_ps",
    "bidirectional_max_ps",
    "src2dst_mean_ps",
    "dst2src_mean_ps",
    "bidirectional_mean_piat_ms",
    "bidirectional_stddev_piat_ms",
    "bidirectional_syn_packets",
    "bidirectional_rst_packets",
    "bidirectional_fin_packets",
    "bidirectional_psh_packets",
    "src2dst_bytes_share",
    "bytes_per_second",
];

pub const FLOW_LOG1P_DEFAULT: [bool; 20] = [
    true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true,
    true, true, false, true,
];

pub const DEFAULT_FLOW_FEATURES: [&str; 12] = [
    "bidirectional_duration_ms",
    "bidirectional_packets",
    "bidirectional_bytes",
    "src2dst_packets",
    "dst2src_packets",
    "src2dst_bytes",
    "dst2src_bytes",
    "bidirectional_mean_ps",
    "bidirectional_mean_piat_ms",
    "bidirectional_syn_packets",
    "bidirectional_rst_packets",
    "src2dst_bytes_share",
];

/// Fills `out[k]` with flow feature `idx[k]` ([`FLOW_FEATURES`]) of an exported flow.
pub fn flow_values(f: &crate::flow::FlowState, idx: &[usize], out: &mut [f64]) {
    use crate::flow::features::flag;
    let packets = f.packets() as f64;
    let bytes = f.bytes() as f64;
    let dur_ms = f.duration_ms() as f64;
    for (o, &i) in out.iter_mut().zip(idx) {
        *o = match i {
            0 => dur_ms,
            1 => packets,
            2 => bytes,
            3 => f.s2d.packets as f64,
            4 => f.s2d.bytes as f64,
            5 => f.d2s.packets as f64,
            6 => f.d2s.bytes as f64,
            7 => f.bi_ps.mean,
            8 => f.stddev_ps(),
            9 => f64::from(f.bi_ps.max),
            10 => f.s2d.ps.mean,
            11 if f.d2s.packets > 0 => f.d2s.ps.mean,
            11 => 0.0,
            12 if f.packets() > 1 => f.bi_piat_ms.mean,
            12 => 0.0,
            13 => f.stddev_piat_ms(),
            14 => f.flags(flag::SYN) as f64,
            15 => f.flags(flag::RST) as f64,
            16 => f.flags(flag::FIN) as f64,
            17 => f.flags(flag::PSH) as f64,
            18 if bytes > 0.0 => f.s2d.bytes as f64 / bytes,
            18 => 0.0,
            19 => bytes / (dur_ms / 1000.0).max(0.001),
            _ => 0.0,
        };
    }
}

/// Host-mode features ([`crate::detect::host`]): one vector per host event (a connection
/// start by its initiator, the *source* host). `_5`, `_1`, `_0.1`, `_0.01`: the decay rate
/// λ per second of the damped statistic (weights halve after 1/λ s).
pub const HOST_FEATURES: [&str; 27] = [
    "src_pkts_5",
    "src_pkts_1",
    "src_pkts_0.1",
    "src_pkts_0.01",
    "src_size_mean_5",
    "src_size_std_5",
    "src_size_mean_1",
    "src_size_std_1",
    "src_size_mean_0.1",
    "src_size_std_0.1",
    "src_size_mean_0.01",
    "src_size_std_0.01",
    "src_conns_1",
    "src_conns_0.1",
    "src_conns_0.01",
    "src_distinct_dsts",
    "src_distinct_ports",
    "src_half_open",
    "src_rst_ratio",
    "src_unreach_ratio",
    "pair_conns_0.01",
    "pair_iat_mean_0.01",
    "pair_iat_cv_0.01",
    "sock_conns_1",
    "sock_conns_0.1",
    "service_rarity",
    "dst_rarity",
];

const _: () = assert!(HOST_FEATURES.len() == crate::detect::host::N_HOST_VALUES);

/// Counts, rates and sizes through log1p; ratios, the CV and the rarities (already
/// logarithms) not.
pub const HOST_LOG1P_DEFAULT: [bool; HOST_FEATURES.len()] = [
    true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true,
    true, false, false, false, true, true, false, true, true, false, false,
];

pub const DEFAULT_HOST_FEATURES: [&str; 11] = [
    "src_pkts_1",
    "src_size_mean_0.01",
    "src_distinct_dsts",
    "src_distinct_ports",
    "src_half_open",
    "src_rst_ratio",
    "pair_conns_0.01",
    "pair_iat_cv_0.01",
    "sock_conns_0.1",
    "service_rarity",
    "dst_rarity",
];
