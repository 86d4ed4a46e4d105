//! IPFIX flow export (RFC 7011 protocol, RFC 7012 information elements, RFC 5103
//! bidirectional flows) over UDP, written here rather than taken from a crate: the Rust
//! IPFIX crates found parse messages (collectors) rather than export them, and an
//! exporter of fixed-length records is a few hundred lines that this module tests
//! against nfcapd itself.
//!
//! Each exported flow is one data record. Its key, times and counts use IANA elements
//! (forward = the flow's first packet's direction; the reverse counts are RFC 5103's
//! reverse elements, PEN 29305, which nfcapd stores as "out" packets and bytes); the
//! nfstream statistical features are enterprise-specific elements under
//! [`IpfixConfig::pen`] (default 32473, the PEN RFC 5612 reserves for documentation: a
//! site that keeps these records should register its own and set `ipfix.pen`). The table
//! of elements is [`ENTERPRISE_ELEMENTS`] (documented in docs/fleet.md).
//!
//! Templates (256 for IPv4 flows, 257 for IPv6) are sent in the first message, again
//! every `template_refresh_s` seconds and every `template_refresh_messages` messages
//! (RFC 7011 §8.4: over UDP a collector that restarts learns them again), and in the next
//! message after a send failed (a collector that refused a datagram has probably
//! restarted).
//!
//! Threads: scorers push [`ExportedFlow`]s (a copy of the flow's state, no allocation)
//! into one bounded channel with [`FlowExportSender::push`]; a full channel drops the
//! record and counts `sink.ipfix.dropped.queue_full` (live capture), or waits (replay,
//! where the run must be lossless and deterministic). The exporter thread encodes,
//! sends, and counts.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

use crate::flow::export::{Expiration, FlowRecord};
use crate::flow::features::{flag, FlowState};
use crate::stats::{self, Counter, Snapshot};

/// RFC 5612: the enterprise number for documentation use (the default PEN).
pub const PEN_DOCUMENTATION: u32 = 32473;
/// RFC 5103: reverse information elements.
pub const PEN_REVERSE: u32 = 29305;
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;

/// Exporter settings (`[ipfix]` in the configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct IpfixConfig {
    pub collector: SocketAddr,
    /// Templates re-sent at least this often (0: only at start and after errors).
    pub template_refresh_s: f64,
    /// Templates re-sent every this many messages (0: off).
    pub template_refresh_messages: u32,
    pub observation_domain: u32,
    /// Private enterprise number of the nfstream feature elements.
    pub pen: u32,
    /// Largest IPFIX message (one UDP datagram), bytes.
    pub max_message: usize,
    /// Flows waiting for the exporter (full: dropped and counted, live capture).
    pub queue: usize,
}

impl IpfixConfig {
    pub fn new(collector: SocketAddr) -> IpfixConfig {
        IpfixConfig {
            collector,
            template_refresh_s: 60.0,
            template_refresh_messages: 0,
            observation_domain: 1,
            pen: PEN_DOCUMENTATION,
            max_message: 1472,
            queue: 65536,
        }
    }
}

/// One flow on its way to the exporter (a copy of the table slot: no allocation).
#[derive(Clone, Copy, Debug)]
pub struct ExportedFlow {
    pub flow: FlowState,
    pub expiration: Expiration,
}

/// Counters the scorers update (several writers: atomic adds, only when dropping).
#[derive(Debug, Default)]
pub struct SenderCounters {
    pub dropped_queue_full: AtomicU64,
}

/// The scorers' handle (cheap to clone: one per scorer).
#[derive(Clone)]
pub struct FlowExportSender {
    tx: Sender<ExportedFlow>,
    blocking: bool,
    ctr: Arc<SenderCounters>,
}

impl FlowExportSender {
    /// Hands a flow to the exporter. Never blocks unless this sender was made blocking
    /// (replay).
    #[inline]
    pub fn push(&self, r: &FlowRecord<'_>) {
        let e = ExportedFlow {
            flow: *r.flow,
            expiration: r.expiration,
        };
        if self.blocking {
            // Only fails when the exporter is gone (it then counted its failure).
            let _ = self.tx.send(e);
        } else if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(e)
        {
            self.ctr.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A sender that waits for room instead of dropping (replay).
    pub fn blocking(mut self) -> FlowExportSender {
        self.blocking = true;
        self
    }
}

/// Counters of the exporter thread (single writer).
#[derive(Debug, Default)]
pub struct ExporterCounters {
    pub records: Counter,
    pub sent: Counter,
    pub messages: Counter,
    pub templates_sent: Counter,
    pub dropped_send_error: Counter,
    pub send_errors: Counter,
}

/// The exporter thread and its counters.
pub struct IpfixExporter {
    handle: Option<JoinHandle<()>>,
    ctr: Arc<ExporterCounters>,
    sender_ctr: Arc<SenderCounters>,
}

impl IpfixExporter {
    /// Opens the UDP socket (an error now is a start-up error) and starts the thread.
    /// The thread ends when every [`FlowExportSender`] is dropped, after sending what it
    /// holds.
    pub fn spawn(
        cfg: IpfixConfig,
        log: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> io::Result<(FlowExportSender, IpfixExporter)> {
        let bind: SocketAddr = if cfg.collector.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(cfg.collector)?;
        let (tx, rx) = bounded(cfg.queue.max(1));
        let ctr = Arc::new(ExporterCounters::default());
        let sender_ctr = Arc::new(SenderCounters::default());
        let c = ctr.clone();
        let handle = std::thread::Builder::new()
            .name("ipfix".into())
            .spawn(move || {
                let mut ex = Exporter::new(cfg, sock, c, log);
                ex.run(rx);
            })?;
        Ok((
            FlowExportSender {
                tx,
                blocking: false,
                ctr: sender_ctr.clone(),
            },
            IpfixExporter {
                handle: Some(handle),
                ctr,
                sender_ctr,
            },
        ))
    }

    /// The counters, readable while the thread runs.
    pub fn counters(&self) -> IpfixCounters {
        IpfixCounters {
            ctr: self.ctr.clone(),
            sender_ctr: self.sender_ctr.clone(),
        }
    }

    pub fn snapshot_into(&self, s: &mut Snapshot) {
        self.counters().snapshot_into(s)
    }

    /// Waits for the thread (every sender must be dropped) and returns the final counters.
    pub fn join(mut self) -> Snapshot {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut s = Snapshot::new();
        self.snapshot_into(&mut s);
        s
    }
}

/// A handle on the exporter's counters (for a metrics publisher).
#[derive(Clone)]
pub struct IpfixCounters {
    ctr: Arc<ExporterCounters>,
    sender_ctr: Arc<SenderCounters>,
}

impl IpfixCounters {
    pub fn snapshot_into(&self, s: &mut Snapshot) {
        let c = &self.ctr;
        stats::merge_into(
            s,
            [
                ("sink.ipfix.records", c.records.get()),
                ("sink.ipfix.sent", c.sent.get()),
                ("sink.ipfix.messages", c.messages.get()),
                ("sink.ipfix.templates_sent", c.templates_sent.get()),
                ("sink.ipfix.send_errors", c.send_errors.get()),
                ("sink.ipfix.dropped.send_error", c.dropped_send_error.get()),
                (
                    "sink.ipfix.dropped.queue_full",
                    self.sender_ctr.dropped_queue_full.load(Ordering::Relaxed),
                ),
            ],
        );
    }
}

/// Value of one element of a flow.
type ValueFn = fn(&FlowState, Expiration) -> Val;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val {
    U8(u8),
    U64(u64),
    F64(f64),
}

impl Val {
    fn len(self) -> u16 {
        match self {
            Val::U8(_) => 1,
            Val::U64(_) | Val::F64(_) => 8,
        }
    }
}

/// The nfstream features as enterprise elements: `(element id, nfstream column, value)`.
/// Element ids are stable; new ones are appended.
pub const ENTERPRISE_ELEMENTS: [(u16, &str, ValueFn); 54] = {
    use Val::*;
    [
        (1, "bidirectional_min_ps", |f, _| {
            U64(u64::from(f.bi_ps.min))
        }),
        (2, "bidirectional_mean_ps", |f, _| F64(f.bi_ps.mean)),
        (3, "bidirectional_stddev_ps", |f, _| F64(f.stddev_ps())),
        (4, "bidirectional_max_ps", |f, _| {
            U64(u64::from(f.bi_ps.max))
        }),
        (5, "src2dst_min_ps", |f, _| U64(u64::from(f.s2d.ps.min))),
        (6, "src2dst_mean_ps", |f, _| F64(f.s2d.ps.mean)),
        (7, "src2dst_stddev_ps", |f, _| F64(f.s2d.stddev_ps())),
        (8, "src2dst_max_ps", |f, _| U64(u64::from(f.s2d.ps.max))),
        (9, "dst2src_min_ps", |f, _| U64(u64::from(f.d2s.ps.min))),
        (10, "dst2src_mean_ps", |f, _| F64(f.d2s.ps.mean)),
        (11, "dst2src_stddev_ps", |f, _| F64(f.d2s.stddev_ps())),
        (12, "dst2src_max_ps", |f, _| U64(u64::from(f.d2s.ps.max))),
        (13, "bidirectional_min_piat_ms", |f, _| {
            U64(f.bi_piat_ms.min)
        }),
        (14, "bidirectional_mean_piat_ms", |f, _| {
            F64(f.bi_piat_ms.mean)
        }),
        (15, "bidirectional_stddev_piat_ms", |f, _| {
            F64(f.stddev_piat_ms())
        }),
        (16, "bidirectional_max_piat_ms", |f, _| {
            U64(f.bi_piat_ms.max)
        }),
        (17, "src2dst_min_piat_ms", |f, _| U64(f.s2d.piat_ms.min)),
        (18, "src2dst_mean_piat_ms", |f, _| F64(f.s2d.piat_ms.mean)),
        (19, "src2dst_stddev_piat_ms", |f, _| {
            F64(f.s2d.stddev_piat_ms())
        }),
        (20, "src2dst_max_piat_ms", |f, _| U64(f.s2d.piat_ms.max)),
        (21, "dst2src_min_piat_ms", |f, _| U64(f.d2s.piat_ms.min)),
        (22, "dst2src_mean_piat_ms", |f, _| F64(f.d2s.piat_ms.mean)),
        (23, "dst2src_stddev_piat_ms", |f, _| {
            F64(f.d2s.stddev_piat_ms())
        }),
        (24, "dst2src_max_piat_ms", |f, _| U64(f.d2s.piat_ms.max)),
        (25, "bidirectional_syn_packets", |f, _| U64(f.flags(0))),
        (26, "bidirectional_cwr_packets", |f, _| U64(f.flags(1))),
        (27, "bidirectional_ece_packets", |f, _| U64(f.flags(2))),
        (28, "bidirectional_urg_packets", |f, _| U64(f.flags(3))),
        (29, "bidirectional_ack_packets", |f, _| U64(f.flags(4))),
        (30, "bidirectional_psh_packets", |f, _| U64(f.flags(5))),
        (31, "bidirectional_rst_packets", |f, _| U64(f.flags(6))),
        (32, "bidirectional_fin_packets", |f, _| U64(f.flags(7))),
        (33, "src2dst_syn_packets", |f, _| {
            U64(u64::from(f.s2d.flags[0]))
        }),
        (34, "src2dst_cwr_packets", |f, _| {
            U64(u64::from(f.s2d.flags[1]))
        }),
        (35, "src2dst_ece_packets", |f, _| {
            U64(u64::from(f.s2d.flags[2]))
        }),
        (36, "src2dst_urg_packets", |f, _| {
            U64(u64::from(f.s2d.flags[3]))
        }),
        (37, "src2dst_ack_packets", |f, _| {
            U64(u64::from(f.s2d.flags[4]))
        }),
        (38, "src2dst_psh_packets", |f, _| {
            U64(u64::from(f.s2d.flags[5]))
        }),
        (39, "src2dst_rst_packets", |f, _| {
            U64(u64::from(f.s2d.flags[6]))
        }),
        (40, "src2dst_fin_packets", |f, _| {
            U64(u64::from(f.s2d.flags[7]))
        }),
        (41, "dst2src_syn_packets", |f, _| {
            U64(u64::from(f.d2s.flags[0]))
        }),
        (42, "dst2src_cwr_packets", |f, _| {
            U64(u64::from(f.d2s.flags[1]))
        }),
        (43, "dst2src_ece_packets", |f, _| {
            U64(u64::from(f.d2s.flags[2]))
        }),
        (44, "dst2src_urg_packets", |f, _| {
            U64(u64::from(f.d2s.flags[3]))
        }),
        (45, "dst2src_ack_packets", |f, _| {
            U64(u64::from(f.d2s.flags[4]))
        }),
        (46, "dst2src_psh_packets", |f, _| {
            U64(u64::from(f.d2s.flags[5]))
        }),
        (47, "dst2src_rst_packets", |f, _| {
            U64(u64::from(f.d2s.flags[6]))
        }),
        (48, "dst2src_fin_packets", |f, _| {
            U64(u64::from(f.d2s.flags[7]))
        }),
        (49, "src2dst_first_seen_ms", |f, _| U64(f.s2d.first_seen_ms)),
        (50, "src2dst_last_seen_ms", |f, _| U64(f.s2d.last_seen_ms)),
        (51, "dst2src_first_seen_ms", |f, _| U64(f.d2s.first_seen_ms)),
        (52, "dst2src_last_seen_ms", |f, _| U64(f.d2s.last_seen_ms)),
        (53, "expiration_id", |_, e| U8(e.id())),
        (54, "tunnel_id", |f, _| U8(f.key.tunnel_id)),
    ]
};

/// IANA elements of the record, before the enterprise ones: `(id, pen, length)`.
/// IPv4 and IPv6 differ only in the address elements.
fn iana_fields(v6: bool) -> [(u16, u32, u16); 16] {
    let (sa, da, al) = if v6 { (27, 28, 16) } else { (8, 12, 4) };
    [
        (sa, 0, al),         // sourceIPv{4,6}Address
        (da, 0, al),         // destinationIPv{4,6}Address
        (7, 0, 2),           // sourceTransportPort
        (11, 0, 2),          // destinationTransportPort
        (4, 0, 1),           // protocolIdentifier
        (60, 0, 1),          // ipVersion
        (58, 0, 2),          // vlanId
        (56, 0, 6),          // sourceMacAddress
        (80, 0, 6),          // destinationMacAddress
        (152, 0, 8),         // flowStartMilliseconds
        (153, 0, 8),         // flowEndMilliseconds
        (2, 0, 8),           // packetDeltaCount (forward)
        (1, 0, 8),           // octetDeltaCount (forward)
        (2, PEN_REVERSE, 8), // reversePacketDeltaCount
        (1, PEN_REVERSE, 8), // reverseOctetDeltaCount
        (6, 0, 2),           // tcpControlBits (both directions OR-ed)
    ]
}

/// flowEndReason (136) is written after the IANA block above; RFC 7012 values.
fn end_reason(e: Expiration) -> u8 {
    match e {
        Expiration::Idle => 1,
        Expiration::Active => 2,
        Expiration::Flush => 4,
        Expiration::Evicted => 5,
    }
}

/// The template set (id 2) with both templates.
pub fn template_set(pen: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // length, patched below
    let sample = FlowState::default();
    for (tid, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        let iana = iana_fields(v6);
        let n = iana.len() + 1 + ENTERPRISE_ELEMENTS.len();
        out.extend_from_slice(&tid.to_be_bytes());
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for (id, p, len) in iana {
            field_spec(out, id, p, len);
        }
        field_spec(out, 136, 0, 1); // flowEndReason
        for (id, _, v) in ENTERPRISE_ELEMENTS {
            field_spec(out, id, pen, v(&sample, Expiration::Idle).len());
        }
    }
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn field_spec(out: &mut Vec<u8>, id: u16, pen: u32, len: u16) {
    if pen == 0 {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&(id | 0x8000).to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&pen.to_be_bytes());
    }
}

/// The data record of one flow (the template of its IP version).
pub fn encode_record(f: &FlowState, e: Expiration, out: &mut Vec<u8>) {
    let k = &f.key;
    let v6 = k.ip_version == 6;
    if v6 {
        out.extend_from_slice(&k.src_ip);
        out.extend_from_slice(&k.dst_ip);
    } else {
        out.extend_from_slice(&k.src_ip[..4]);
        out.extend_from_slice(&k.dst_ip[..4]);
    }
    out.extend_from_slice(&k.src_port.to_be_bytes());
    out.extend_from_slice(&k.dst_port.to_be_bytes());
    out.push(k.protocol);
    out.push(k.ip_version);
    out.extend_from_slice(&k.vlan_id.to_be_bytes());
    out.extend_from_slice(&f.src_mac);
    out.extend_from_slice(&f.dst_mac);
    out.extend_from_slice(&f.first_seen_ms().to_be_bytes());
    out.extend_from_slice(&f.last_seen_ms.to_be_bytes());
    out.extend_from_slice(&f.s2d.packets.to_be_bytes());
    out.extend_from_slice(&f.s2d.bytes.to_be_bytes());
    out.extend_from_slice(&f.d2s.packets.to_be_bytes());
    out.extend_from_slice(&f.d2s.bytes.to_be_bytes());
    let mut flags = 0u16;
    for (i, bit) in flag::BITS.iter().enumerate() {
        if f.flags(i) > 0 {
            flags |= u16::from(*bit);
        }
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.push(end_reason(e));
    for (_, _, v) in ENTERPRISE_ELEMENTS {
        match v(f, e) {
            Val::U8(x) => out.push(x),
            Val::U64(x) => out.extend_from_slice(&x.to_be_bytes()),
            Val::F64(x) => out.extend_from_slice(&x.to_be_bytes()),
        }
    }
}

/// Length of a data record of the given IP version.
pub fn record_len(v6: bool) -> usize {
    let iana: usize = iana_fields(v6).iter().map(|f| usize::from(f.2)).sum();
    let sample = FlowState::default();
    let ent: usize = ENTERPRISE_ELEMENTS
        .iter()
        .map(|(_, _, v)| usize::from(v(&sample, Expiration::Idle).len()))
        .sum();
    iana + 1 + ent
}

const HEADER_LEN: usize = 16;

struct Exporter {
    cfg: IpfixConfig,
    sock: UdpSocket,
    ctr: Arc<ExporterCounters>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    msg: Vec<u8>,
    /// Records in `msg`, and the template id of its open data set (0: none).
    in_msg: u64,
    open_set: u16,
    set_start: usize,
    /// Data records sent (the header's sequence number).
    seq: u32,
    templates_due: bool,
    last_templates: Instant,
    messages_since_templates: u32,
    last_error_log: Option<Instant>,
    /// [`record_len`] of IPv4 and IPv6 records.
    record_len: [usize; 2],
    /// The template message's buffer.
    tmpl: Vec<u8>,
}

impl Exporter {
    fn new(
        cfg: IpfixConfig,
        sock: UdpSocket,
        ctr: Arc<ExporterCounters>,
        log: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Exporter {
        Exporter {
            msg: Vec::with_capacity(cfg.max_message.max(2048)),
            cfg,
            sock,
            ctr,
            log,
            in_msg: 0,
            open_set: 0,
            set_start: 0,
            seq: 0,
            templates_due: true,
            last_templates: Instant::now(),
            messages_since_templates: 0,
            last_error_log: None,
            record_len: [record_len(false), record_len(true)],
            tmpl: Vec::with_capacity(2048),
        }
    }

    fn run(&mut self, rx: Receiver<ExportedFlow>) {
        loop {
            match rx.try_recv() {
                Ok(e) => self.add(&e),
                Err(TryRecvError::Empty) => {
                    // Nothing waiting: send what is buffered, then nap. (Polling, so that
                    // a scorer's push never has to wake this thread: no syscall there.)
                    self.flush();
                    self.refresh_if_due();
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TryRecvError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }

    fn templates_needed(&self) -> bool {
        let by_count = self.cfg.template_refresh_messages > 0
            && self.messages_since_templates >= self.cfg.template_refresh_messages;
        let by_time = self.cfg.template_refresh_s > 0.0
            && self.last_templates.elapsed().as_secs_f64() >= self.cfg.template_refresh_s;
        self.templates_due || by_count || by_time
    }

    /// A message with the templates alone, when they are due and no data message is open.
    fn refresh_if_due(&mut self) {
        if self.in_msg == 0 && self.templates_needed() {
            self.send_templates();
        }
    }

    /// Sends the template set in a message of its own (both templates and one record
    /// would not fit a 1472-byte datagram).
    /// Leaves `msg` empty; a failed send leaves the templates due.
    fn send_templates(&mut self) {
        let mut t = std::mem::take(&mut self.tmpl);
        t.clear();
        t.resize(HEADER_LEN, 0);
        template_set(self.cfg.pen, &mut t);
        Self::header(&mut t, self.seq, self.cfg.observation_domain);
        self.last_templates = Instant::now();
        self.messages_since_templates = 0;
        match self.sock.send(&t) {
            Ok(_) => {
                self.templates_due = false;
                self.ctr.templates_sent.inc();
                self.ctr.messages.inc();
            }
            Err(e) => {
                self.ctr.send_errors.inc();
                self.templates_due = true;
                self.log_error(&e, 0);
            }
        }
        self.tmpl = t;
    }

    fn start_message(&mut self) {
        if self.templates_needed() {
            self.send_templates();
        }
        self.msg.clear();
        self.msg.resize(HEADER_LEN, 0);
        self.open_set = 0;
    }

    fn add(&mut self, e: &ExportedFlow) {
        self.ctr.records.inc();
        let v6 = e.flow.key.ip_version == 6;
        let tid = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
        let need = self.record_len[usize::from(v6)] + if self.open_set == tid { 0 } else { 4 };
        if self.msg.len() >= HEADER_LEN && self.msg.len() + need > self.cfg.max_message {
            self.flush();
        }
        if self.msg.len() < HEADER_LEN {
            self.start_message();
        }
        if self.open_set != tid {
            self.close_set();
            self.set_start = self.msg.len();
            self.msg.extend_from_slice(&tid.to_be_bytes());
            self.msg.extend_from_slice(&0u16.to_be_bytes());
            self.open_set = tid;
        }
        encode_record(&e.flow, e.expiration, &mut self.msg);
        self.in_msg += 1;
    }

    fn close_set(&mut self) {
        if self.open_set != 0 {
            let len = (self.msg.len() - self.set_start) as u16;
            self.msg[self.set_start + 2..self.set_start + 4].copy_from_slice(&len.to_be_bytes());
            self.open_set = 0;
        }
    }

    fn flush(&mut self) {
        if self.in_msg > 0 {
            self.send();
        }
    }

    /// Fills in the header of `buf` (`seq`: data records sent before it).
    fn header(buf: &mut [u8], seq: u32, domain: u32) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let len = buf.len() as u16;
        buf[0..2].copy_from_slice(&10u16.to_be_bytes());
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        buf[4..8].copy_from_slice(&now.to_be_bytes());
        buf[8..12].copy_from_slice(&seq.to_be_bytes());
        buf[12..16].copy_from_slice(&domain.to_be_bytes());
    }

    /// Sends the message in `msg`; whether it went out.
    ///
    /// A send that fails (on a connected UDP socket: the ICMP port-unreachable of an
    /// earlier datagram, i.e. the collector is or was down) marks the templates due and
    /// is tried once more, after a template message: the error may be stale (the
    /// collector is back), and then the records still arrive, templates first.
    fn send(&mut self) -> bool {
        self.close_set();
        let n = self.in_msg;
        Self::header(&mut self.msg, self.seq, self.cfg.observation_domain);
        let mut res = self.sock.send(&self.msg);
        if let Err(e) = &res {
            self.ctr.send_errors.inc();
            self.templates_due = true;
            self.log_error(e, n);
            if n > 0 {
                self.send_templates();
                Self::header(&mut self.msg, self.seq, self.cfg.observation_domain);
                res = self.sock.send(&self.msg);
                if res.is_err() {
                    self.ctr.send_errors.inc();
                }
            }
        }
        let ok = match res {
            Ok(_) => {
                self.ctr.sent.add(n);
                self.seq = self.seq.wrapping_add(n as u32);
                self.ctr.messages.inc();
                if n > 0 {
                    self.messages_since_templates += 1;
                }
                true
            }
            Err(_) => {
                self.ctr.dropped_send_error.add(n);
                self.templates_due = true;
                false
            }
        };
        self.msg.clear();
        self.in_msg = 0;
        self.open_set = 0;
        ok
    }

    /// One log line per 10 s at most.
    fn log_error(&mut self, e: &io::Error, n: u64) {
        let quiet = self
            .last_error_log
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if !quiet {
            self.last_error_log = Some(Instant::now());
            (self.log)(&format!(
                "ipfix: sending to {}: {e} (a message of {n} flow records; counted, capture goes on)",
                self.cfg.collector
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::FlowKey;

    fn flow(v6: bool) -> FlowState {
        let mut f = FlowState::default();
        let mut key = FlowKey {
            src_port: 40000,
            dst_port: 443,
            protocol: 6,
            ip_version: if v6 { 6 } else { 4 },
            ..FlowKey::default()
        };
        key.src_ip[..4].copy_from_slice(&[198, 18, 0, 1]);
        key.dst_ip[..4].copy_from_slice(&[198, 18, 0, 2]);
        f.start(key, [2; 6], [4; 6], 1_700_000_000_000, 60, 0x02);
        f
    }

    /// Walks a message: header, then sets; returns (template ids defined, data records
    /// per template) and checks every length adds up.
    /// `(set or template id, record length or count)` pairs.
    type Sets = Vec<(u16, usize)>;

    fn parse(msg: &[u8]) -> (Sets, Sets) {
        assert_eq!(u16::from_be_bytes([msg[0], msg[1]]), 10);
        assert_eq!(usize::from(u16::from_be_bytes([msg[2], msg[3]])), msg.len());
        let mut templates = Vec::new();
        let mut data = Vec::new();
        let mut lens = std::collections::HashMap::new();
        let mut p = HEADER_LEN;
        while p < msg.len() {
            let id = u16::from_be_bytes([msg[p], msg[p + 1]]);
            let len = usize::from(u16::from_be_bytes([msg[p + 2], msg[p + 3]]));
            assert!(len >= 4 && p + len <= msg.len());
            let body = &msg[p + 4..p + len];
            if id == 2 {
                let mut q = 0;
                while q < body.len() {
                    let tid = u16::from_be_bytes([body[q], body[q + 1]]);
                    let n = u16::from_be_bytes([body[q + 2], body[q + 3]]);
                    q += 4;
                    let mut rec = 0usize;
                    for _ in 0..n {
                        let fid = u16::from_be_bytes([body[q], body[q + 1]]);
                        rec += usize::from(u16::from_be_bytes([body[q + 2], body[q + 3]]));
                        q += if fid & 0x8000 != 0 { 8 } else { 4 };
                    }
                    lens.insert(tid, rec);
                    templates.push((tid, rec));
                }
            } else {
                let rec = lens
                    .get(&id)
                    .copied()
                    .unwrap_or_else(|| record_len(id == TEMPLATE_V6));
                assert_eq!(
                    body.len() % rec,
                    0,
                    "set {id}: {} bytes, records of {rec}",
                    body.len()
                );
                data.push((id, body.len() / rec));
            }
            p += len;
        }
        (templates, data)
    }

    #[test]
    fn templates_describe_the_records() {
        let mut t = Vec::new();
        template_set(PEN_DOCUMENTATION, &mut t);
        for v6 in [false, true] {
            let mut r = Vec::new();
            encode_record(&flow(v6), Expiration::Idle, &mut r);
            assert_eq!(r.len(), record_len(v6));
        }
        let mut msg = vec![0; HEADER_LEN];
        msg.extend_from_slice(&t);
        msg[0..2].copy_from_slice(&10u16.to_be_bytes());
        let l = msg.len() as u16;
        msg[2..4].copy_from_slice(&l.to_be_bytes());
        let (templates, _) = parse(&msg);
        assert_eq!(
            templates,
            vec![
                (TEMPLATE_V4, record_len(false)),
                (TEMPLATE_V6, record_len(true))
            ]
        );
    }

    /// The exporter over a real UDP socket: messages fit, sequence numbers count records,
    /// templates come first and again every `template_refresh_messages`.
    #[test]
    fn exports_over_udp_with_template_refresh() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut cfg = IpfixConfig::new(rx.local_addr().unwrap());
        cfg.template_refresh_messages = 3;
        cfg.template_refresh_s = 0.0;
        let (tx, ex) = IpfixExporter::spawn(cfg, Arc::new(|_: &str| {})).unwrap();
        let n = 40u64;
        for i in 0..n {
            let f = flow(i % 3 == 0);
            tx.push(&FlowRecord {
                flow: &f,
                splt: &[],
                splt_len: 0,
                expiration: Expiration::Idle,
            });
        }
        drop(tx);
        let snap = ex.join();
        assert_eq!(snap["sink.ipfix.records"], n);
        assert_eq!(snap["sink.ipfix.sent"], n);
        let messages = snap["sink.ipfix.messages"];
        let mut got = 0;
        let mut seq_expected = 0u32;
        let mut with_templates = Vec::new();
        let mut buf = [0u8; 65536];
        for m in 0..messages {
            let len = rx.recv(&mut buf).unwrap();
            let msg = &buf[..len];
            assert!(len <= 1472);
            assert_eq!(
                u32::from_be_bytes(msg[8..12].try_into().unwrap()),
                seq_expected
            );
            let (t, d) = parse(msg);
            if !t.is_empty() {
                with_templates.push(m);
            }
            let recs: usize = d.iter().map(|x| x.1).sum();
            got += recs as u64;
            seq_expected += recs as u32;
        }
        assert_eq!(got, n);
        // A template message first, then one before every 3 data messages.
        assert_eq!(with_templates[0], 0);
        let gaps: Vec<u64> = with_templates.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            !gaps.is_empty() && gaps.iter().all(|&g| g == 4),
            "{with_templates:?}"
        );
        assert_eq!(
            snap["sink.ipfix.templates_sent"],
            with_templates.len() as u64
        );
    }
}
