/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Types and constants shared by the XDP program (sensor.bpf.c) and user space
 * (src/capture/xdp.rs). The Rust side sees the structs through the skeleton's `types`
 * module; the constants are mirrored there and checked by a unit test.
 */
#ifndef STREAMML_SHARED_H
#define STREAMML_SHARED_H

/* Highest number of RX queues the XSKMAP and the per-queue counters cover. Frames on a
 * queue >= this are counted in the last slot and cannot be redirected. */
#define SENSOR_MAX_QUEUES 256

/* Per-queue, per-CPU counters. For every queue:
 *   seen == filtered + sampled_out + redirected + redirect_failed */
enum sensor_counter {
	CTR_SEEN = 0,
	CTR_FILTERED = 1,
	CTR_SAMPLED_OUT = 2,
	CTR_REDIRECTED = 3,
	CTR_REDIRECT_FAILED = 4,
	/* Not part of the sum above: bytes of the frames that were redirected. */
	CTR_REDIRECTED_BYTES = 5,
	CTR_MAX = 6,
};

/* sensor_config.flags */
enum sensor_flags {
	/* Frames the sensor does not take (filtered, sampled out, no socket) go on to the
	 * host's stack (XDP_PASS) instead of being dropped (XDP_DROP). */
	SENSOR_F_PASS = 1 << 0,
	/* Sample by a symmetric hash of the IP addresses and ports (whole flows kept or
	 * dropped) instead of per packet at random. */
	SENSOR_F_SAMPLE_BY_FLOW = 1 << 1,
	/* Each prefilter set is active when its bit is set; its _DENY bit turns it from a
	 * keep-list (only listed values pass) into a drop-list (listed values are filtered). */
	SENSOR_F_ETHERTYPE = 1 << 2,
	SENSOR_F_ETHERTYPE_DENY = 1 << 3,
	SENSOR_F_PROTO = 1 << 4,
	SENSOR_F_PROTO_DENY = 1 << 5,
	SENSOR_F_PORT = 1 << 6,
	SENSOR_F_PORT_DENY = 1 << 7,
	/* Write a struct sensor_meta in front of every redirected frame (XDP metadata). */
	SENSOR_F_TIMESTAMP = 1 << 8,
};

/* XDP metadata in front of a redirected frame's data (at data - sizeof), copied into the
 * UMEM with the frame in copy mode, written in place in zero-copy mode. */
struct sensor_meta {
	/* bpf_ktime_get_ns(): CLOCK_MONOTONIC when the program ran. */
	__u64 ts_ns;
	/* SENSOR_META_MAGIC: the program wrote this frame's metadata. */
	__u32 magic;
	__u32 pad;
};
#define SENSOR_META_MAGIC 0x4c4d5453 /* "STML" little-endian */
/* sensor_meta.pad when the header is pushed in front of the frame (use_xdp_head): a
 * second word for the reader to tell the header from frame bytes. */
#define SENSOR_HEAD_CHECK 0xb3b2abac
#define SENSOR_META_LEN 16
_Static_assert(sizeof(struct sensor_meta) == SENSOR_META_LEN, "sensor_meta layout");

/* The single entry of the `sensor_cfg` array map. User space may rewrite it at any time;
 * the program reads it once per frame. */
struct sensor_config {
	/* Keep a frame when (random or flow hash) % 10000 < sample_bp: basis points, so
	 * 10000 keeps everything and 5000 keeps half. Percent on the command line. */
	__u32 sample_bp;
	__u32 flags;
};

/* Maximum entries of each prefilter set. */
#define SENSOR_MAX_FILTER_ENTRIES 1024

#endif
