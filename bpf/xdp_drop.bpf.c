// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * The baseline for the live-capture benchmark (benches/live_capture.sh) and a "foreign"
 * program for the tests that check the sensor refuses to replace what is not its own:
 * drop every frame, nothing else. veth counts the drops per RX queue in `ethtool -S`
 * (rx_queue_N_xdp_drops).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_drop_bench(struct xdp_md *ctx)
{
	return XDP_DROP;
}
