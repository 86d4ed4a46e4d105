// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * streamml-sensor's XDP program: count, prefilter, sample, and redirect each frame to the
 * AF_XDP socket of its RX queue (XSKMAP slot = rx_queue_index).
 *
 * Per frame: one config lookup, one per-CPU counter lookup, at most three set lookups
 * (only for the prefilter sets that are active) and one XSKMAP redirect. Counters are
 * per queue and per CPU and reconcile:
 *   seen == filtered + sampled_out + redirected + redirect_failed
 * "redirect_failed" means the XSKMAP had no socket for the queue (no reader, or a queue
 * the sensor was not told to read). Drops after a successful redirect (socket ring full,
 * fill ring empty) are the kernel's and show in XDP_STATISTICS.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shared.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* How the program hands each frame's arrival time to user space, set before the program
 * is loaded (.rodata): a 0 makes the code that calls the helper dead to the verifier,
 * which then never sees the call. Some kernels refuse bpf_xdp_adjust_meta in XDP
 * programs ("program of this type cannot use helper"), so the loader tries, in order:
 *   use_xdp_meta = 1: struct sensor_meta in the XDP metadata in front of the frame;
 *   use_xdp_head = 1: struct sensor_meta pushed in front of the frame itself
 *                     (bpf_xdp_adjust_head), taken off again by the reader;
 *   both 0:           no per-frame time; the reader uses its batch read time.
 * (src/capture/xdp.rs) */
const volatile __u32 use_xdp_meta = 1;
const volatile __u32 use_xdp_head = 0;

struct queue_counters {
	__u64 c[CTR_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SENSOR_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sensor_config);
} sensor_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SENSOR_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct queue_counters);
} counters SEC(".maps");

/* Prefilter sets; keys in host byte order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SENSOR_MAX_FILTER_ENTRIES);
	__type(key, __u16);
	__type(value, __u8);
} filter_ethertype SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u8);
	__type(value, __u8);
} filter_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SENSOR_MAX_FILTER_ENTRIES);
	__type(key, __u16);
	__type(value, __u8);
} filter_port SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the prefilter and the flow sampler need from a frame. */
struct frame_info {
	__u32 src[4];
	__u32 dst[4];
	__u16 ethertype; /* after VLAN tags, host order */
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 has_ip;
	__u8 has_ports;
};

static __always_inline __u32 fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Symmetric: A->B and B->A give the same value. */
static __always_inline __u32 flow_hash(const struct frame_info *fi)
{
	__u32 a = fmix32(fi->src[0] ^ fi->src[1] ^ fi->src[2] ^ fi->src[3] ^
			 ((__u32)fi->sport * 0x9e3779b9));
	__u32 b = fmix32(fi->dst[0] ^ fi->dst[1] ^ fi->dst[2] ^ fi->dst[3] ^
			 ((__u32)fi->dport * 0x9e3779b9));
	return fmix32((a ^ b) + fi->proto);
}

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == 0 /* hop-by-hop */ || nh == 43 /* routing */ ||
	       nh == 60 /* destination options */ || nh == 44 /* fragment */;
}

/* Fills *fi as far as the frame allows; never fails (a short frame just has fewer
 * fields). */
static __always_inline void parse(struct xdp_md *ctx, struct frame_info *fi)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l4 = 0;
	__u16 proto;
	int frag_later = 0;

	if ((void *)(eth + 1) > end)
		return;
	proto = eth->h_proto;
	data = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr *vh = data;
			if ((void *)(vh + 1) > end)
				return;
			proto = vh->proto;
			data = vh + 1;
		}
	}
	fi->ethertype = bpf_ntohs(proto);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > end)
			return;
		if (ip->ihl < 5)
			return;
		fi->has_ip = 1;
		fi->src[0] = ip->saddr;
		fi->dst[0] = ip->daddr;
		fi->proto = ip->protocol;
		frag_later = (ip->frag_off & bpf_htons(0x1fff)) != 0;
		l4 = data + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data;
		__u8 nh;
		if ((void *)(ip6 + 1) > end)
			return;
		fi->has_ip = 1;
		__builtin_memcpy(fi->src, &ip6->saddr, 16);
		__builtin_memcpy(fi->dst, &ip6->daddr, 16);
		nh = ip6->nexthdr;
		l4 = ip6 + 1;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u8 *eh = l4;
			if (!is_ipv6_ext(nh))
				break;
			if ((void *)(eh + 8) > end)
				return;
			if (nh == 44) {
				/* fragment header: offset in bytes 2..3, top 13 bits */
				if ((((__u16)eh[2] << 8 | eh[3]) & 0xfff8) != 0)
					frag_later = 1;
				nh = eh[0];
				l4 = eh + 8;
			} else {
				nh = eh[0];
				l4 = eh + ((__u32)eh[1] + 1) * 8;
			}
		}
		fi->proto = nh;
		if (is_ipv6_ext(nh))
			return;
	} else {
		return;
	}

	if (frag_later)
		return;
	if (fi->proto == IPPROTO_TCP || fi->proto == IPPROTO_UDP || fi->proto == 132 /* SCTP */) {
		__u16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return;
		fi->sport = bpf_ntohs(ports[0]);
		fi->dport = bpf_ntohs(ports[1]);
		fi->has_ports = 1;
	}
}

/* 1 when the prefilter sets reject the frame. */
static __always_inline int filtered(__u32 flags, const struct frame_info *fi)
{
	if (flags & SENSOR_F_ETHERTYPE) {
		__u16 k = fi->ethertype;
		int hit = bpf_map_lookup_elem(&filter_ethertype, &k) != 0;
		if (hit == !!(flags & SENSOR_F_ETHERTYPE_DENY))
			return 1;
	}
	if (flags & SENSOR_F_PROTO) {
		int hit = 0;
		if (fi->has_ip) {
			__u8 k = fi->proto;
			hit = bpf_map_lookup_elem(&filter_proto, &k) != 0;
		}
		if (hit == !!(flags & SENSOR_F_PROTO_DENY))
			return 1;
	}
	if (flags & SENSOR_F_PORT) {
		int hit = 0;
		if (fi->has_ports) {
			__u16 s = fi->sport, d = fi->dport;
			hit = bpf_map_lookup_elem(&filter_port, &s) != 0 ||
			      bpf_map_lookup_elem(&filter_port, &d) != 0;
		}
		if (hit == !!(flags & SENSOR_F_PORT_DENY))
			return 1;
	}
	return 0;
}

SEC("xdp")
int streamml_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 q = ctx->rx_queue_index;
	__u32 slot = q < SENSOR_MAX_QUEUES ? q : SENSOR_MAX_QUEUES - 1;
	struct sensor_config *cfg = bpf_map_lookup_elem(&sensor_cfg, &zero);
	struct queue_counters *ctr = bpf_map_lookup_elem(&counters, &slot);
	__u32 flags, sample_bp;
	int miss;

	if (!cfg || !ctr)
		return XDP_PASS; /* cannot happen: array maps always have their slots */
	flags = cfg->flags;
	sample_bp = cfg->sample_bp;
	miss = (flags & SENSOR_F_PASS) ? XDP_PASS : XDP_DROP;
	ctr->c[CTR_SEEN]++;

	if (flags & (SENSOR_F_ETHERTYPE | SENSOR_F_PROTO | SENSOR_F_PORT | SENSOR_F_SAMPLE_BY_FLOW)) {
		struct frame_info fi = {};
		parse(ctx, &fi);
		if (filtered(flags, &fi)) {
			ctr->c[CTR_FILTERED]++;
			return miss;
		}
		if (sample_bp < 10000 && (flags & SENSOR_F_SAMPLE_BY_FLOW) &&
		    flow_hash(&fi) % 10000 >= sample_bp) {
			ctr->c[CTR_SAMPLED_OUT]++;
			return miss;
		}
	}
	if (sample_bp < 10000 && !(flags & SENSOR_F_SAMPLE_BY_FLOW) &&
	    bpf_get_prandom_u32() % 10000 >= sample_bp) {
		ctr->c[CTR_SAMPLED_OUT]++;
		return miss;
	}

	if (q >= SENSOR_MAX_QUEUES) {
		ctr->c[CTR_REDIRECT_FAILED]++;
		return miss;
	}
	__u64 len = (__u64)(ctx->data_end - ctx->data);
	int headed = 0;
	if (use_xdp_meta && (flags & SENSOR_F_TIMESTAMP)) {
		/* The arrival time, per frame: user space would otherwise know only when it
		 * read the RX batch. Drivers without metadata support fail the adjust; the
		 * reader then falls back to the batch time and counts it. */
		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct sensor_meta)) == 0) {
			struct sensor_meta *m = (void *)(long)ctx->data_meta;
			if ((void *)(m + 1) <= (void *)(long)ctx->data) {
				m->ts_ns = bpf_ktime_get_ns();
				m->magic = SENSOR_META_MAGIC;
				m->pad = 0;
			}
		}
	} else if (use_xdp_head && (flags & SENSOR_F_TIMESTAMP)) {
		/* The same header, pushed in front of the frame (every driver leaves at least
		 * XDP_PACKET_HEADROOM); removed again below if the frame is not redirected. */
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct sensor_meta)) == 0) {
			struct sensor_meta *m = (void *)(long)ctx->data;
			if ((void *)(m + 1) <= (void *)(long)ctx->data_end) {
				m->ts_ns = bpf_ktime_get_ns();
				m->magic = SENSOR_META_MAGIC;
				m->pad = SENSOR_HEAD_CHECK;
				headed = 1;
			} else {
				bpf_xdp_adjust_head(ctx, (int)sizeof(struct sensor_meta));
			}
		}
	}
	int act = bpf_redirect_map(&xsks_map, q, miss);
	if (act == XDP_REDIRECT) {
		ctr->c[CTR_REDIRECTED]++;
		ctr->c[CTR_REDIRECTED_BYTES] += len;
	} else {
		/* A frame that goes on to the stack (pass mode) must be as it came. */
		if (headed)
			bpf_xdp_adjust_head(ctx, (int)sizeof(struct sensor_meta));
		ctr->c[CTR_REDIRECT_FAILED]++;
	}
	return act;
}
