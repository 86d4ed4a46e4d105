//! The Prometheus endpoint: `GET /metrics` in the text exposition format (OpenMetrics),
//! rendered with `prometheus-client` from the latest counter snapshot a run published.
//!
//! The run's control thread (live capture's main loop, replay's publisher) calls
//! [`MetricsHub::publish`] a few times a second; a scrape renders that snapshot. Nothing
//! here touches a packet: the snapshot is made from the stages' `Relaxed` counters.
//!
//! Names: counter `a.b_c` becomes `streamml_a_b_c_total`; the decoder's drop reasons are
//! one family, `streamml_decoder_dropped_total{reason="ipv4.trunc_pkt"}`; every sink's
//! counters are `streamml_sink_records_total{sink, outcome}` (sent, acked, spooled, ...)
//! and `streamml_sink_dropped_total{sink, reason}`; per-queue counters of live capture
//! carry a `queue` label. `flow.active` is a gauge. `streamml_build_info{version}` and
//! (live) `streamml_capture_mode_info{attach, bind, timestamps, carrier}` are info metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::stats::Snapshot;

/// Labels of one series.
pub type Labels = Vec<(String, String)>;

/// What a scrape shows: the last published snapshot and the run's fixed facts.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub counters: Snapshot,
    /// Per-label series: `(family name without prefix, labels, value)`, e.g. live
    /// capture's per-queue packets.
    pub labelled: Vec<(String, Labels, u64)>,
    /// Info metrics: `(name, labels)`, each rendered as `streamml_<name>_info{..} 1`.
    pub info: Vec<(String, Labels)>,
}

/// The latest snapshot, shared between the run and the HTTP thread.
#[derive(Debug, Default)]
pub struct MetricsHub {
    state: Mutex<Published>,
}

impl MetricsHub {
    pub fn new(info: Vec<(String, Labels)>) -> Arc<MetricsHub> {
        Arc::new(MetricsHub {
            state: Mutex::new(Published {
                info,
                ..Published::default()
            }),
        })
    }

    /// Replaces the counters a scrape shows.
    pub fn publish(&self, counters: Snapshot, labelled: Vec<(String, Labels, u64)>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.counters = counters;
        s.labelled = labelled;
    }

    /// Adds an info metric (e.g. the capture mode, known once capture started).
    pub fn add_info(&self, name: &str, labels: Labels) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.info.push((name.to_string(), labels));
    }

    pub fn render(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        render(&s)
    }
}

/// Appends one shard's counters as series with a `shard` label
/// (`streamml_shard_flow_packets_total{shard="0"}`); gauges are left out (their sum is in
/// the unlabelled family).
pub fn per_shard(shard: usize, counters: &Snapshot, out: &mut Vec<(String, Labels, u64)>) {
    for (k, &v) in counters {
        if !GAUGES.contains(&k.as_str()) {
            out.push((
                format!("shard.{k}"),
                vec![("shard".into(), shard.to_string())],
                v,
            ));
        }
    }
}

/// Counters that are gauges (a level, not a count of events).
const GAUGES: [&str; 1] = ["flow.active"];

fn metric_name(counter: &str) -> String {
    counter
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Renders one snapshot in the OpenMetrics text format.
pub fn render(p: &Published) -> String {
    let mut reg = Registry::with_prefix("streamml");
    let decoder = Family::<Labels, Counter>::default();
    let sink_records = Family::<Labels, Counter>::default();
    let sink_dropped = Family::<Labels, Counter>::default();
    for (k, &v) in &p.counters {
        if let Some(reason) = k.strip_prefix("decoder.") {
            decoder
                .get_or_create(&vec![("reason".into(), reason.into())])
                .inc_by(v);
        } else if let Some(rest) = k.strip_prefix("sink.") {
            // sink.<name>.<outcome> or sink.<name>.dropped.<reason>
            let (name, what) = rest.split_once('.').unwrap_or((rest, "count"));
            if let Some(reason) = what.strip_prefix("dropped.") {
                sink_dropped
                    .get_or_create(&vec![
                        ("sink".into(), name.into()),
                        ("reason".into(), reason.into()),
                    ])
                    .inc_by(v);
            } else {
                sink_records
                    .get_or_create(&vec![
                        ("sink".into(), name.into()),
                        ("outcome".into(), what.into()),
                    ])
                    .inc_by(v);
            }
        } else if GAUGES.contains(&k.as_str()) {
            reg.register(
                metric_name(k),
                format!("sensor gauge {k}"),
                ConstGauge::new(v as i64),
            );
        } else {
            reg.register(
                metric_name(k),
                format!("sensor counter {k}"),
                ConstCounter::new(v),
            );
        }
    }
    reg.register(
        "decoder_dropped",
        "frames the decoder dropped, by reason",
        decoder,
    );
    reg.register(
        "sink_records",
        "records handled by each fleet sink, by outcome",
        sink_records,
    );
    reg.register(
        "sink_dropped",
        "records each fleet sink lost, by reason",
        sink_dropped,
    );
    let mut families: std::collections::BTreeMap<&str, Family<Labels, Counter>> =
        Default::default();
    for (name, labels, v) in &p.labelled {
        families
            .entry(name.as_str())
            .or_default()
            .get_or_create(labels)
            .inc_by(*v);
    }
    for (name, fam) in families {
        reg.register(metric_name(name), format!("sensor counter {name}"), fam);
    }
    reg.register(
        "build",
        "the sensor's version",
        Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );
    for (name, labels) in &p.info {
        reg.register(metric_name(name), name.clone(), Info::new(labels.clone()));
    }
    let mut out = String::new();
    encode(&mut out, &reg).expect("formatting into a String");
    out
}

/// The HTTP thread serving `GET /metrics` (nothing else: other paths 404, other methods
/// 405). Stopped and joined when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    handle: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (a bind that fails is an error now, at start-up) and serves `hub`.
    pub fn start(addr: SocketAddr, hub: Arc<MetricsHub>) -> anyhow::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow::anyhow!("--metrics-listen {addr}: not an IP socket"))?;
        let server = Arc::new(server);
        let srv = server.clone();
        let handle = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&srv, &hub))?;
        Ok(MetricsServer {
            server,
            handle: Some(handle),
            addr: bound,
        })
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(server: &tiny_http::Server, hub: &MetricsHub) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = if path != "/metrics" {
            tiny_http::Response::from_string("not found: only /metrics is served\n")
                .with_status_code(404)
        } else if *req.method() != tiny_http::Method::Get
            && *req.method() != tiny_http::Method::Head
        {
            tiny_http::Response::from_string("method not allowed\n").with_status_code(405)
        } else {
            let ct = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
            )
            .expect("a valid header");
            tiny_http::Response::from_string(hub.render()).with_header(ct)
        };
        // A client that went away is not our problem.
        let _ = req.respond(resp);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_reasons_sinks_and_info() {
        let mut c = Snapshot::new();
        c.insert("reader.frames".into(), 1234);
        c.insert("flow.active".into(), 7);
        c.insert("decoder.ipv4.trunc_pkt".into(), 3);
        c.insert("sink.ipfix.sent".into(), 10);
        c.insert("sink.ipfix.dropped.queue_full".into(), 2);
        let p = Published {
            counters: c,
            labelled: vec![(
                "queue.packets".into(),
                vec![("queue".into(), "0".into())],
                99,
            )],
            info: vec![("capture_mode".into(), vec![("bind".into(), "copy".into())])],
        };
        let t = render(&p);
        for want in [
            "streamml_reader_frames_total 1234\n",
            "# TYPE streamml_flow_active gauge\n",
            "streamml_flow_active 7\n",
            "streamml_decoder_dropped_total{reason=\"ipv4.trunc_pkt\"} 3\n",
            "streamml_sink_records_total{sink=\"ipfix\",outcome=\"sent\"} 10\n",
            "streamml_sink_dropped_total{sink=\"ipfix\",reason=\"queue_full\"} 2\n",
            "streamml_queue_packets_total{queue=\"0\"} 99\n",
            "streamml_capture_mode_info{bind=\"copy\"} 1\n",
            "streamml_build_info{version=",
            "# EOF\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }

    #[test]
    fn serves_only_get_metrics() {
        use std::io::{Read, Write};
        let hub = MetricsHub::new(vec![]);
        let mut c = Snapshot::new();
        c.insert("reader.frames".into(), 5);
        hub.publish(c, vec![]);
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), hub).unwrap();
        let get = |req: &str| {
            let mut s = std::net::TcpStream::connect(srv.local_addr()).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
        assert!(ok.contains("streamml_reader_frames_total 5"), "{ok}");
        let nf = get("GET /other HTTP/1.0\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.0 404"), "{nf}");
        let post = get("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.0 405"), "{post}");
    }
}
