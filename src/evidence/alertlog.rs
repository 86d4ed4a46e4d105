//! Alerts: the serialisable [`Alert`] record (eve.json style) and the sinks it leaves the
//! sensor through. [`AlertLog`] appends one JSON line per alert to `alerts.jsonl` and
//! never leaves a partial line: each line goes out in a single `write(2)` on an
//! `O_APPEND` descriptor, and a short write is cut back with `ftruncate` to the length the
//! file had before. A file that ends in a partial line (power loss) is repaired on open.
//!
//! Example line (one line in the file; wrapped here):
//! ```text
//! {"timestamp":"2024-01-02T03:04:05.123456Z","event_type":"anomaly","alert_id":7,
//!  "src_ip":"198.18.0.1","src_port":40000,"dest_ip":"198.18.0.2","dest_port":443,"proto":"TCP",
//!  "anomaly":{"profile":"default","mode":"flow","score":0.97,"threshold":0.9,"shard":1,
//!             "ts_ns":1704164645123456789,"top_features":[{"name":"dst_port_entropy","value":0.1,"contribution":0.4}]},
//!  "evidence":{"path":"evidence/20240102T030405.123456Z_default_7.pcap.zst","packets":42,
//!              "dropped":false,"truncated":false}}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::time;

/// Which detector raised the alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMode {
    Flow,
    Window,
    /// A host event (mode `host`): the line names the host (`anomaly.host`) and the
    /// connection whose start was scored (the flow key).
    Host,
}

/// A flow's key in eve's field names (`src_ip`, `src_port`, `dest_ip`, `dest_port`,
/// `proto`). Flattened into the top level of the line, like Suricata does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowKey {
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    /// IP protocol number, written as eve's name ("TCP", "UDP", "ICMP", "IPv6-ICMP") or
    /// the number.
    #[serde(serialize_with = "ser_proto", deserialize_with = "de_proto")]
    pub proto: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

fn ser_proto<S: Serializer>(p: &u8, s: S) -> Result<S::Ok, S::Error> {
    match p {
        6 => s.serialize_str("TCP"),
        17 => s.serialize_str("UDP"),
        1 => s.serialize_str("ICMP"),
        58 => s.serialize_str("IPv6-ICMP"),
        132 => s.serialize_str("SCTP"),
        n => s.serialize_str(&n.to_string()),
    }
}

fn de_proto<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let s = String::deserialize(d)?;
    Ok(match s.as_str() {
        "TCP" => 6,
        "UDP" => 17,
        "ICMP" => 1,
        "IPv6-ICMP" => 58,
        "SCTP" => 132,
        other => other
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("unknown proto '{other}'")))?,
    })
}

/// A time window (window mode), packet time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpan {
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub start: u64,
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub end: u64,
}

/// One feature's share in a score (the explanation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureContribution {
    pub name: String,
    /// The feature's raw value.
    pub value: f64,
    /// Its contribution to the score (method defined by the detector).
    pub contribution: f64,
}

/// What the detector says (eve's per-event object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub profile: String,
    pub mode: AlertMode,
    pub score: f64,
    pub threshold: f64,
    pub shard: u32,
    /// Packet time of the alert in ns (exact; `timestamp` is rounded to µs).
    pub ts_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpan>,
    #[serde(default)]
    pub top_features: Vec<FeatureContribution>,
    /// Anything else the detector wants to record (kept in order, flattened).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What happened to the alert's evidence (filled in by the evidence writer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceInfo {
    /// Path of the evidence file relative to the state directory (`evidence/...`); absent
    /// when no file was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Packets in the evidence file.
    pub packets: u64,
    /// True when no evidence was collected because the evidence queue was full (or the
    /// writer had too many alerts pending).
    pub dropped: bool,
    /// True when the ring had already overwritten part of the requested span.
    pub truncated: bool,
    /// Why writing the evidence failed (disk full, permission ...), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One alert, as written to alerts.jsonl. Built by the detector ([`Alert::new`] and the
/// pub fields); `evidence` is filled in by the evidence writer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Packet time of the alert, RFC 3339 UTC (from `anomaly.ts_ns`).
    #[serde(serialize_with = "ser_ts_us", deserialize_with = "de_ts")]
    pub timestamp: u64,
    pub event_type: String,
    pub alert_id: u64,
    /// The incident this line belongs to (the evidence writer sets it): the `alert_id` of
    /// the incident's first alert. Window alerts of several shards with overlapping spans
    /// are one incident and one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<u64>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowKey>,
    pub anomaly: Anomaly,
    pub evidence: EvidenceInfo,
}

impl Alert {
    /// An alert with no flow key, no window and no features yet.
    pub fn new(
        alert_id: u64,
        ts_ns: u64,
        profile: &str,
        mode: AlertMode,
        score: f64,
        threshold: f64,
        shard: u32,
    ) -> Alert {
        Alert {
            timestamp: ts_ns,
            event_type: "anomaly".to_string(),
            alert_id,
            incident_id: None,
            flow: None,
            anomaly: Anomaly {
                profile: profile.to_string(),
                mode,
                score,
                threshold,
                shard,
                ts_ns,
                window: None,
                top_features: Vec::new(),
                extra: serde_json::Map::new(),
            },
            evidence: EvidenceInfo::default(),
        }
    }

    /// Packet time in ns.
    pub fn ts_ns(&self) -> u64 {
        self.anomaly.ts_ns
    }

    /// The JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("Alert serialises (no maps with non-string keys)")
    }
}

fn ser_ts_us<S: Serializer>(t: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time::rfc3339_us(*t))
}

fn ser_ts<S: Serializer>(t: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time::rfc3339_ns(*t))
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    time::parse_time(&s).map_err(serde::de::Error::custom)
}

/// Where alerts go. The file sink ([`AlertLog`]) is the first implementation; Kafka, NATS
/// or a syslog sink are additions behind the same trait (ARCHITECTURE.md "Outputs and the
/// fleet"). Sinks run in the evidence writer thread, never in a scorer.
pub trait Sink: Send {
    /// A short name for counters and log lines ("alerts.jsonl", "kafka" ...).
    fn name(&self) -> &str;
    /// Delivers one alert. An error is counted and logged by the caller; the sink must
    /// stay usable afterwards.
    fn send_alert(&mut self, alert: &Alert) -> std::io::Result<()>;
    /// Flushes buffered output (end of run).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `alerts.jsonl`: append-only, whole lines only. (Re)opens the file lazily, so a state
/// directory that was unwritable at start or became so later is retried on each alert.
pub struct AlertLog {
    path: PathBuf,
    file: Option<File>,
    line: Vec<u8>,
    /// Lines written.
    pub lines: u64,
    /// Bytes of a partial last line removed when the file was opened.
    pub repaired_bytes: u64,
    /// File offset up to which blocks are allocated (see [`AlertLog::reserve`]).
    reserved_to: u64,
}

/// Bytes kept allocated past the end of `alerts.jsonl` (~300 alert lines).
pub const ALERT_RESERVE: u64 = 256 * 1024;

impl AlertLog {
    /// A log at `path`; the file is opened (created) now if possible, else at the first
    /// alert.
    pub fn new(path: &Path) -> AlertLog {
        let mut log = AlertLog {
            path: path.to_path_buf(),
            file: None,
            line: Vec::with_capacity(1024),
            lines: 0,
            repaired_bytes: 0,
            reserved_to: 0,
        };
        let _ = log.ensure_open();
        log
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ensure_open(&mut self) -> std::io::Result<&File> {
        if self.file.is_none() {
            let mut f = OpenOptions::new()
                .append(true)
                .read(true)
                .create(true)
                .mode(0o644)
                .open(&self.path)?;
            self.repaired_bytes += repair_partial_line(&mut f)?;
            self.reserved_to = 0;
            self.file = Some(f);
            if let Ok(m) = self.file.as_ref().expect("just opened").metadata() {
                self.reserve(m.len());
            }
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    /// Closes the file and opens the one now at the path (creating it): after logrotate
    /// renamed alerts.jsonl, the next lines go to a new alerts.jsonl. On error the log
    /// stays closed and the next line retries.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.take() {
            // Give back the blocks reserved past the end of the old file.
            if let Ok(m) = f.metadata() {
                let _ = f.set_len(m.len());
            }
        }
        self.ensure_open().map(|_| ())
    }

    /// Keeps [`ALERT_RESERVE`] bytes allocated past the end of the file (fallocate with
    /// KEEP_SIZE: the file's length is unchanged, appends use the blocks), so that when
    /// evidence fills the disk the next few hundred alert lines still get written.
    /// Best effort: file systems without fallocate just do without.
    fn reserve(&mut self, len: u64) {
        if self.reserved_to >= len + ALERT_RESERVE / 2 {
            return;
        }
        let Some(f) = self.file.as_ref() else { return };
        use std::os::fd::AsRawFd;
        let ok = nix::fcntl::fallocate(
            f.as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            len as libc::off_t,
            ALERT_RESERVE as libc::off_t,
        )
        .is_ok();
        if ok {
            self.reserved_to = len + ALERT_RESERVE;
        }
    }

    /// Appends one line (the JSON of `alert` plus '\n') with a single write. On any
    /// failure the file is left as it was (a short write is truncated away) and the error
    /// is returned.
    pub fn append_line(&mut self, json: &[u8]) -> std::io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(json);
        self.line.push(b'\n');
        let line = std::mem::take(&mut self.line);
        let r = self.write_whole(&line);
        self.line = line;
        if r.is_ok() {
            self.lines += 1;
        }
        r
    }

    fn write_whole(&mut self, line: &[u8]) -> std::io::Result<()> {
        let f = self.ensure_open()?;
        let before = f.metadata()?.len();
        let mut fr: &File = f;
        match fr.write(line) {
            Ok(n) if n == line.len() => {
                self.reserve(before + n as u64);
                Ok(())
            }
            Ok(n) => {
                // Short write (disk full): cut the partial line off again (which also
                // frees whatever was reserved past the end).
                let cut = f.set_len(before);
                self.reserved_to = 0;
                let msg = format!(
                    "short write to {} ({n} of {} bytes){}",
                    self.path.display(),
                    line.len(),
                    match cut {
                        Ok(()) => String::new(),
                        Err(e) => format!("; truncating the partial line failed: {e}"),
                    }
                );
                Err(std::io::Error::other(msg))
            }
            Err(e) => {
                // Nothing should have been written; make sure.
                if let Ok(m) = f.metadata() {
                    if m.len() > before {
                        let _ = f.set_len(before);
                    }
                }
                // Reopen next time (the file may have been removed or remounted).
                self.file = None;
                Err(e)
            }
        }
    }
}

impl Sink for AlertLog {
    fn name(&self) -> &str {
        "alerts.jsonl"
    }

    fn send_alert(&mut self, alert: &Alert) -> std::io::Result<()> {
        let json = serde_json::to_vec(alert)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.append_line(&json)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

/// If `f` does not end with '\n', truncates it after its last '\n' (or to 0). Returns the
/// number of bytes removed.
fn repair_partial_line(f: &mut File) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    // Search backwards for the last newline, 64 KiB at a time.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            f.set_len(keep)?;
            return Ok(len - keep);
        }
        end = start;
    }
    f.set_len(0)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Alert {
        let mut a = Alert::new(
            7,
            1_704_164_645_123_456_789,
            "default",
            AlertMode::Flow,
            0.97,
            0.9,
            1,
        );
        a.flow = Some(FlowKey {
            src_ip: "198.18.0.1".parse().unwrap(),
            src_port: 40000,
            dest_ip: "198.18.0.2".parse().unwrap(),
            dest_port: 443,
            proto: 6,
            vlan: None,
        });
        a.anomaly.top_features.push(FeatureContribution {
            name: "dst_port_entropy".into(),
            value: 0.1,
            contribution: 0.4,
        });
        a.anomaly
            .extra
            .insert("model".into(), serde_json::json!("hst-v1"));
        a.evidence.path = Some("evidence/x.pcap.zst".into());
        a.evidence.packets = 42;
        a
    }

    /// Rotation: after a rename and `reopen`, the next line goes to a new file at the
    /// path; the renamed file keeps every line written before.
    #[test]
    fn reopen_after_rename_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut log = AlertLog::new(&path);
        log.append_line(b"{\"n\":1}").unwrap();
        let rotated = dir.path().join("alerts.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.append_line(b"{\"n\":2}").unwrap(); // still the renamed file
        log.reopen().unwrap();
        assert!(path.exists(), "reopen creates the file");
        log.append_line(b"{\"n\":3}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
        assert_eq!(log.lines, 3);
    }

    #[test]
    fn eve_shape_and_round_trip() {
        let a = sample();
        let line = a.to_json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2024-01-02T03:04:05.123456Z");
        assert_eq!(v["event_type"], "anomaly");
        assert_eq!(v["src_ip"], "198.18.0.1");
        assert_eq!(v["dest_port"], 443);
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["anomaly"]["mode"], "flow");
        assert_eq!(v["anomaly"]["model"], "hst-v1");
        assert_eq!(v["evidence"]["packets"], 42);
        assert!(v["evidence"].get("error").is_none());
        // Round trip, except that `timestamp` is kept to µs.
        let mut back: Alert = serde_json::from_str(&line).unwrap();
        assert_eq!(back.timestamp, 1_704_164_645_123_456_000);
        back.timestamp = a.timestamp;
        assert_eq!(back, a);
    }

    #[test]
    fn appends_whole_lines_and_repairs_partial_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("alerts.jsonl");
        std::fs::write(&p, b"{\"a\":1}\n{\"b\":").unwrap();
        let mut log = AlertLog::new(&p);
        assert_eq!(log.repaired_bytes, 5);
        log.send_alert(&sample()).unwrap();
        log.send_alert(&sample()).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "{\"a\":1}");
        for l in &lines[1..] {
            let _: Alert = serde_json::from_str(l).unwrap();
        }
        assert!(s.ends_with('\n'));
    }
}
