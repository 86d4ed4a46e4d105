//! Alerts to NATS JetStream, at least once, through an on-disk spool that survives a
//! server outage and a sensor restart.
//!
//! Every alert is first appended to the spool (`<state>/spool/nats/`, JSON lines in
//! segment files) by the evidence writer thread; the `nats` thread publishes the spool in
//! order, one record at a time, each with a `Nats-Msg-Id` header, and removes a record
//! only once JetStream has acknowledged it (a `PubAck`). A record whose ack was lost is
//! sent again with the same id, and the stream's duplicate window drops the copy: in the
//! stream, each alert once. While the server is down or slow the spool grows, up to
//! `spool_max_bytes`; past that the oldest segment is dropped and its unsent records are
//! counted (`sink.nats.dropped.spool_full`). Nothing here ever waits for the server on
//! the evidence writer's or a scorer's thread.
//!
//! The client is written here on the NATS text protocol (INFO/CONNECT/PING/PONG, SUB,
//! HPUB, MSG/HMSG): the sink needs publish-with-ack on one thread, and the maintained
//! Rust client (async-nats) would bring tokio and a TLS stack into a sensor that has
//! neither. TLS is not supported yet; user/password and token authentication are.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::evidence::alertlog::{Alert, Sink};
use crate::stats::{self, Counter, Snapshot};

/// `[nats]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct NatsConfig {
    pub server: SocketAddr,
    /// Subject alerts are published to.
    pub subject: String,
    /// JetStream stream to create at start (capturing `subject`) when it does not exist;
    /// empty: the operator manages the stream.
    pub create_stream: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Bound of the on-disk spool, bytes.
    pub spool_max_bytes: u64,
    /// At the end of a run, how long to keep publishing what is spooled.
    pub drain_timeout_s: f64,
    /// How long to wait for one publish ack.
    pub ack_timeout_s: f64,
}

impl NatsConfig {
    pub fn new(server: SocketAddr) -> NatsConfig {
        NatsConfig {
            server,
            subject: "streamml.alerts".into(),
            create_stream: String::new(),
            user: None,
            password: None,
            token: None,
            spool_max_bytes: 64 << 20,
            drain_timeout_s: 5.0,
            ack_timeout_s: 2.0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Spool

struct Segment {
    first_seq: u64,
    records: u64,
    bytes: u64,
}

/// JSON lines in segment files named by the sequence number of their first record;
/// `acked` holds the sequence number of the first record not yet acknowledged.
pub struct Spool {
    dir: PathBuf,
    segs: VecDeque<Segment>,
    /// Next sequence number to append.
    next_seq: u64,
    /// First record not acknowledged, and its byte offset in the first segment.
    cursor_seq: u64,
    cursor_off: u64,
    total_bytes: u64,
    max_bytes: u64,
    seg_bytes: u64,
    out: Option<File>,
    /// Unsent records dropped to keep the bound.
    pub dropped: u64,
    /// Random per spool: message ids are `<epoch>-<seq>`, unique across spools.
    pub epoch: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, recovering what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let epoch_path = dir.join("epoch");
        let epoch = match fs::read_to_string(&epoch_path) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("{}: not a number", epoch_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let e = t ^ (u64::from(std::process::id()) << 32);
                write_atomic(&epoch_path, e.to_string().as_bytes())?;
                e
            }
            Err(e) => return Err(e),
        };
        let acked: u64 = match fs::read_to_string(dir.join("acked")) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(_) => 0,
        };
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".jsonl")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segs = VecDeque::new();
        let mut total = 0;
        for f in firsts {
            let path = seg_path(dir, f);
            let (records, bytes) = count_lines(&path)?;
            if f + records <= acked {
                let _ = fs::remove_file(&path);
                continue;
            }
            total += bytes;
            segs.push_back(Segment {
                first_seq: f,
                records,
                bytes,
            });
        }
        let next_seq = segs
            .back()
            .map_or(acked, |s: &Segment| s.first_seq + s.records)
            .max(acked);
        let mut sp = Spool {
            dir: dir.to_path_buf(),
            segs,
            next_seq,
            cursor_seq: acked,
            cursor_off: 0,
            total_bytes: total,
            max_bytes,
            seg_bytes: (max_bytes / 8).clamp(4096, 4 << 20),
            out: None,
            dropped: 0,
            epoch,
        };
        // Position the cursor in the first segment.
        if let Some(s) = sp.segs.front() {
            if sp.cursor_seq < s.first_seq {
                sp.cursor_seq = s.first_seq;
            }
            let skip = sp.cursor_seq - s.first_seq;
            sp.cursor_off = offset_of_line(&seg_path(dir, s.first_seq), skip)?;
        }
        Ok(sp)
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.next_seq - self.cursor_seq
    }

    /// Appends one record (a line without '\n'); drops the oldest segment while the
    /// spool is over its bound. Returns the records dropped.
    pub fn append(&mut self, line: &[u8]) -> io::Result<u64> {
        let need_new = match self.segs.back() {
            None => true,
            Some(s) => s.bytes >= self.seg_bytes || self.out.is_none(),
        };
        if need_new {
            let path = seg_path(&self.dir, self.next_seq);
            self.out = Some(OpenOptions::new().create(true).append(true).open(&path)?);
            self.segs.push_back(Segment {
                first_seq: self.next_seq,
                records: 0,
                bytes: 0,
            });
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.out.as_mut().expect("opened above").write_all(&buf)?;
        let s = self.segs.back_mut().expect("pushed above");
        s.records += 1;
        s.bytes += buf.len() as u64;
        self.total_bytes += buf.len() as u64;
        self.next_seq += 1;
        let mut dropped = 0;
        while self.total_bytes > self.max_bytes && self.segs.len() > 1 {
            let s = self.segs.pop_front().expect("more than one");
            let end = s.first_seq + s.records;
            if self.cursor_seq < end {
                dropped += end - self.cursor_seq.max(s.first_seq);
                self.cursor_seq = end;
                self.cursor_off = 0;
            }
            self.total_bytes -= s.bytes;
            let _ = fs::remove_file(seg_path(&self.dir, s.first_seq));
        }
        if dropped > 0 {
            self.dropped += dropped;
            self.write_acked()?;
        }
        Ok(dropped)
    }

    /// The first unacknowledged record: (sequence number, line).
    pub fn peek(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            let Some(s) = self.segs.front() else {
                return Ok(None);
            };
            if self.cursor_seq >= s.first_seq + s.records {
                if self.segs.len() == 1 {
                    return Ok(None); // the segment being appended to, all sent
                }
                let s = self.segs.pop_front().expect("checked");
                self.total_bytes -= s.bytes;
                let _ = fs::remove_file(seg_path(&self.dir, s.first_seq));
                self.cursor_off = 0;
                continue;
            }
            let mut f = File::open(seg_path(&self.dir, s.first_seq))?;
            f.seek(SeekFrom::Start(self.cursor_off))?;
            let mut line = Vec::new();
            BufReader::new(f).read_until(b'\n', &mut line)?;
            if line.last() != Some(&b'\n') {
                return Err(io::Error::other("spool segment ends in a partial line"));
            }
            line.pop();
            return Ok(Some((self.cursor_seq, line)));
        }
    }

    /// Marks the record `seq` (the one [`Spool::peek`] gave) acknowledged.
    pub fn ack(&mut self, seq: u64, len: usize) -> io::Result<()> {
        if seq != self.cursor_seq {
            return Ok(()); // dropped meanwhile
        }
        self.cursor_seq += 1;
        self.cursor_off += len as u64 + 1;
        self.write_acked()
    }

    fn write_acked(&self) -> io::Result<()> {
        write_atomic(
            &self.dir.join("acked"),
            self.cursor_seq.to_string().as_bytes(),
        )
    }
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.jsonl"))
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

/// Whole lines of a segment and their bytes (a partial last line, from a crash, is cut).
fn count_lines(path: &Path) -> io::Result<(u64, u64)> {
    let mut b = Vec::new();
    File::open(path)?.read_to_end(&mut b)?;
    let whole = b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    if whole < b.len() {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(whole as u64)?;
    }
    let n = b[..whole].iter().filter(|&&c| c == b'\n').count() as u64;
    Ok((n, whole as u64))
}

fn offset_of_line(path: &Path, line: u64) -> io::Result<u64> {
    if line == 0 {
        return Ok(0);
    }
    let mut b = Vec::new();
    File::open(path)?.read_to_end(&mut b)?;
    let mut seen = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            seen += 1;
            if seen == line {
                return Ok(i as u64 + 1);
            }
        }
    }
    Ok(b.len() as u64)
}

// ---------------------------------------------------------------------------------------
// Client

/// A NATS connection that can publish with a reply subject and read the replies.
pub struct Client {
    stream: TcpStream,
    rd: BufReader<TcpStream>,
    inbox: String,
    next_reply: u64,
}

/// A reply to a request: status (HMSG status line, e.g. 503 no responders) and payload.
#[derive(Debug)]
pub struct Reply {
    pub status: Option<u16>,
    pub payload: Vec<u8>,
}

impl Client {
    pub fn connect(cfg: &NatsConfig, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&cfg.server, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut rd = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        rd.read_line(&mut line)?;
        if !line.starts_with("INFO ") {
            return Err(io::Error::other(format!(
                "not a NATS server (it said {:?})",
                line.trim()
            )));
        }
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
            "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "name": "streamml-sensor",
            "protocol": 1,
        });
        if let Some(u) = &cfg.user {
            connect["user"] = u.clone().into();
        }
        if let Some(p) = &cfg.password {
            connect["pass"] = p.clone().into();
        }
        if let Some(t) = &cfg.token {
            connect["auth_token"] = t.clone().into();
        }
        let inbox = format!(
            "_INBOX.streamml.{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        );
        let mut c = Client {
            stream,
            rd,
            inbox,
            next_reply: 0,
        };
        let hello = format!("CONNECT {connect}\r\nPING\r\nSUB {}.* 1\r\n", c.inbox);
        c.stream.write_all(hello.as_bytes())?;
        loop {
            line.clear();
            c.rd.read_line(&mut line)?;
            match line.trim_end() {
                "PONG" => break,
                "+OK" | "" => {}
                l if l.starts_with("-ERR") => {
                    return Err(io::Error::other(format!(
                        "server refused: {}",
                        &l[4..].trim()
                    )))
                }
                l if l.starts_with("INFO ") => {}
                "PING" => c.stream.write_all(b"PONG\r\n")?,
                l => return Err(io::Error::other(format!("unexpected {l:?}"))),
            }
        }
        Ok(c)
    }

    /// Publishes `payload` to `subject` with headers and waits for the reply.
    pub fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> io::Result<Reply> {
        self.next_reply += 1;
        let reply = format!("{}.{}", self.inbox, self.next_reply);
        let mut h = String::from("NATS/1.0\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        let mut msg = format!(
            "HPUB {subject} {reply} {} {}\r\n{h}",
            h.len(),
            h.len() + payload.len()
        )
        .into_bytes();
        msg.extend_from_slice(payload);
        msg.extend_from_slice(b"\r\n");
        self.stream.write_all(&msg)?;
        self.read_reply(&reply)
    }

    fn read_reply(&mut self, reply: &str) -> io::Result<Reply> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.rd.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let l = line.trim_end();
            let f: Vec<&str> = l.split(' ').collect();
            match f[0] {
                "PING" => self.stream.write_all(b"PONG\r\n")?,
                "PONG" | "+OK" | "" | "INFO" => {}
                "-ERR" => {
                    return Err(io::Error::other(format!(
                        "server error: {}",
                        &l[4..].trim()
                    )))
                }
                "MSG" | "HMSG" => {
                    let hmsg = f[0] == "HMSG";
                    let total: usize = f
                        .last()
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| io::Error::other(format!("bad {l:?}")))?;
                    let hdr_len: usize = if hmsg {
                        f[f.len() - 2]
                            .parse()
                            .map_err(|_| io::Error::other(format!("bad {l:?}")))?
                    } else {
                        0
                    };
                    let subject = f.get(1).copied().unwrap_or("").to_string();
                    let mut body = vec![0u8; total + 2];
                    self.rd.read_exact(&mut body)?;
                    body.truncate(total);
                    if subject != reply {
                        continue; // a late reply to an earlier request
                    }
                    let status = if hmsg {
                        let h = String::from_utf8_lossy(&body[..hdr_len]);
                        h.lines()
                            .next()
                            .and_then(|s| s.split_whitespace().nth(1))
                            .and_then(|c| c.parse().ok())
                    } else {
                        None
                    };
                    return Ok(Reply {
                        status,
                        payload: body[hdr_len..].to_vec(),
                    });
                }
                _ => return Err(io::Error::other(format!("unexpected {l:?}"))),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sink

/// Counters of the NATS sink (`sink.nats.*`).
#[derive(Debug, Default)]
pub struct NatsCounters {
    /// Written by the evidence writer thread.
    pub spooled: Counter,
    pub dropped_spool_full: Counter,
    pub dropped_spool_error: Counter,
    /// Written by the nats thread.
    pub sent: Counter,
    pub acked: Counter,
    pub duplicates: Counter,
    pub connect_errors: Counter,
    pub publish_errors: Counter,
    pub nacked: Counter,
    pub spool_read_errors: Counter,
}

impl NatsCounters {
    pub fn snapshot_into(&self, s: &mut Snapshot) {
        stats::merge_into(
            s,
            [
                ("sink.nats.spooled", self.spooled.get()),
                ("sink.nats.sent", self.sent.get()),
                ("sink.nats.acked", self.acked.get()),
                ("sink.nats.duplicates", self.duplicates.get()),
                ("sink.nats.connect_errors", self.connect_errors.get()),
                ("sink.nats.publish_errors", self.publish_errors.get()),
                ("sink.nats.nacked", self.nacked.get()),
                ("sink.nats.spool_read_errors", self.spool_read_errors.get()),
                (
                    "sink.nats.dropped.spool_full",
                    self.dropped_spool_full.get(),
                ),
                (
                    "sink.nats.dropped.spool_error",
                    self.dropped_spool_error.get(),
                ),
            ],
        );
    }
}

/// The evidence writer's side: appends each alert to the spool.
pub struct NatsSink {
    spool: Arc<Mutex<Spool>>,
    ctr: Arc<NatsCounters>,
    wake: std::thread::Thread,
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        "nats"
    }

    fn send_alert(&mut self, alert: &Alert) -> io::Result<()> {
        let json = serde_json::to_vec(alert).map_err(io::Error::other)?;
        let r = self
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&json);
        match r {
            Ok(dropped) => {
                self.ctr.spooled.inc();
                self.ctr.dropped_spool_full.add(dropped);
                self.wake.unpark();
                Ok(())
            }
            Err(e) => {
                self.ctr.dropped_spool_error.inc();
                Err(e)
            }
        }
    }
}

/// The publishing thread.
pub struct NatsPublisher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    ctr: Arc<NatsCounters>,
    spool: Arc<Mutex<Spool>>,
}

impl NatsPublisher {
    /// Opens the spool under `spool_dir` (an error is a start-up error), starts the
    /// thread, and returns the sink to give the evidence writer.
    pub fn start(
        cfg: NatsConfig,
        spool_dir: &Path,
        log: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> io::Result<(NatsSink, NatsPublisher)> {
        let spool = Arc::new(Mutex::new(Spool::open(spool_dir, cfg.spool_max_bytes)?));
        let ctr = Arc::new(NatsCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sp, c, st) = (spool.clone(), ctr.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("nats".into())
            .spawn(move || run(cfg, sp, c, st, log))?;
        let wake = handle.thread().clone();
        Ok((
            NatsSink {
                spool: spool.clone(),
                ctr: ctr.clone(),
                wake,
            },
            NatsPublisher {
                stop,
                handle: Some(handle),
                ctr,
                spool,
            },
        ))
    }

    pub fn counters(&self) -> Arc<NatsCounters> {
        self.ctr.clone()
    }

    /// Ends the thread: it publishes what is spooled for at most `drain_timeout_s`, and
    /// the rest stays in the spool for the next run. Returns the final counters, with
    /// `sink.nats.spool_pending`.
    pub fn finish(mut self) -> Snapshot {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        let mut s = Snapshot::new();
        self.ctr.snapshot_into(&mut s);
        let pending = self
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending();
        s.insert("sink.nats.spool_pending".into(), pending);
        s
    }
}

fn run(
    cfg: NatsConfig,
    spool: Arc<Mutex<Spool>>,
    ctr: Arc<NatsCounters>,
    stop: Arc<AtomicBool>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) {
    let mut client: Option<Client> = None;
    let mut backoff = Duration::from_millis(50);
    let mut drain_deadline: Option<Instant> = None;
    let mut last_log: Option<Instant> = None;
    let mut stream_ready = cfg.create_stream.is_empty();
    let mut say = |msg: String| {
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            last_log = Some(Instant::now());
            log(&msg);
        }
    };
    let epoch = spool.lock().unwrap_or_else(|p| p.into_inner()).epoch;
    let ack_timeout = Duration::from_secs_f64(cfg.ack_timeout_s.max(0.01));
    loop {
        if stop.load(Ordering::Relaxed) {
            let d = *drain_deadline.get_or_insert_with(|| {
                Instant::now() + Duration::from_secs_f64(cfg.drain_timeout_s.max(0.0))
            });
            let pending = spool.lock().unwrap_or_else(|p| p.into_inner()).pending();
            if pending == 0 || Instant::now() >= d {
                return;
            }
        }
        let rec = spool.lock().unwrap_or_else(|p| p.into_inner()).peek();
        let (seq, line) = match rec {
            Ok(Some(r)) => r,
            Ok(None) => {
                std::thread::park_timeout(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                ctr.spool_read_errors.inc();
                say(format!("nats: reading the spool: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if client.is_none() {
            match Client::connect(&cfg, ack_timeout) {
                Ok(c) => {
                    client = Some(c);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    ctr.connect_errors.inc();
                    say(format!(
                        "nats: connecting to {}: {e} (alerts stay spooled; retrying)",
                        cfg.server
                    ));
                    std::thread::park_timeout(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        if !stream_ready {
            match create_stream(c, &cfg) {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    say(format!("nats: creating stream {}: {e}", cfg.create_stream));
                    client = None;
                    std::thread::park_timeout(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let id = format!("{epoch:x}-{seq}");
        ctr.sent.inc();
        match c.request(&cfg.subject, &[("Nats-Msg-Id", &id)], &line) {
            Ok(r) => {
                let ack: serde_json::Value =
                    serde_json::from_slice(&r.payload).unwrap_or(serde_json::Value::Null);
                if r.status.is_none() && ack.get("seq").is_some() && ack.get("error").is_none() {
                    ctr.acked.inc();
                    if ack["duplicate"] == serde_json::Value::Bool(true) {
                        ctr.duplicates.inc();
                    }
                    let _ = spool
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .ack(seq, line.len());
                    backoff = Duration::from_millis(50);
                } else {
                    // No stream for the subject (503), or JetStream refused: retried.
                    ctr.nacked.inc();
                    say(format!(
                        "nats: publish to {} not acknowledged (status {:?}: {}); retrying",
                        cfg.subject,
                        r.status,
                        String::from_utf8_lossy(&r.payload)
                    ));
                    std::thread::park_timeout(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            Err(e) => {
                ctr.publish_errors.inc();
                say(format!(
                    "nats: publishing to {}: {e} (retrying)",
                    cfg.server
                ));
                client = None;
                std::thread::park_timeout(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Creates the stream capturing `cfg.subject` (file storage, 2-minute duplicate
/// window); an existing stream is fine.
fn create_stream(c: &mut Client, cfg: &NatsConfig) -> io::Result<()> {
    let name = &cfg.create_stream;
    let body = serde_json::json!({
        "name": name, "subjects": [cfg.subject], "storage": "file",
        "duplicate_window": 120_000_000_000u64,
    });
    let r = c.request(
        &format!("$JS.API.STREAM.CREATE.{name}"),
        &[],
        body.to_string().as_bytes(),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
    match v.get("error") {
        None if r.status.is_none() => Ok(()),
        // 10058: a stream of that name already exists (with another configuration)
        Some(e) if e["err_code"] == 10058 => Ok(()),
        _ => Err(io::Error::other(format!(
            "status {:?}: {}",
            r.status,
            String::from_utf8_lossy(&r.payload)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_keeps_order_across_reopen_and_drops_oldest_past_its_bound() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        for i in 0..10 {
            s.append(format!("r{i}").as_bytes()).unwrap();
        }
        let (q, l) = s.peek().unwrap().unwrap();
        assert_eq!((q, l.as_slice()), (0, &b"r0"[..]));
        s.ack(0, l.len()).unwrap();
        let (q, l) = s.peek().unwrap().unwrap();
        s.ack(q, l.len()).unwrap();
        let epoch = s.epoch;
        drop(s);
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.epoch, epoch);
        assert_eq!(s.pending(), 8);
        let (q, l) = s.peek().unwrap().unwrap();
        assert_eq!((q, l.as_slice()), (2, &b"r2"[..]));
        // A small bound: segments of 4 KiB, at most 8 KiB in all.
        let d2 = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d2.path(), 8192).unwrap();
        let line = vec![b'x'; 100];
        let mut dropped = 0;
        for _ in 0..1000 {
            dropped += s.append(&line).unwrap();
        }
        assert!(dropped > 0);
        assert_eq!(s.pending() + dropped, 1000);
        assert!(s.total_bytes <= 8192 + 4096, "{}", s.total_bytes);
        let (q, _) = s.peek().unwrap().unwrap();
        assert_eq!(q, dropped, "the oldest went first");
    }
}
