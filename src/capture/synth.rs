//! Deterministic synthetic traffic: benign background (HTTPS/HTTP sessions, DNS, NTP,
//! pings between clients in 198.18.0.0/16 and servers in 198.19.0.0/16) plus optional
//! labelled attack episodes (SYN flood, port scan, UDP flood, slow exfiltration over one
//! long TCP flow). The same config and seed always give the same frames, byte for byte.
//!
//! Used by the benchmark capture script, the bench mode (as a [`PacketSource`]), the
//! labelled detection tests, and the live tests' sender. Every address is inside
//! 198.18.0.0/15 (RFC 2544 benchmarking space).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{CaptureError, Frame, LinkType, PacketSource};
use crate::wire::tcp_flags::{ACK, FIN, PSH, RST, SYN};

/// 2026-01-01T00:00:00Z in ns.
pub const DEFAULT_START_NS: u64 = 1_767_225_600 * 1_000_000_000;

/// SplitMix64: tiny, fast, and good enough for traffic shapes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi] (inclusive).
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// Exponential with the given mean.
    #[inline]
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }
}

/// Attack kinds of the labelled generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    SynFlood,
    PortScan,
    UdpFlood,
    Exfil,
    /// Low-rate brute force: short login sessions (telnet) from one host to one service,
    /// `rate_pps` new sessions per second.
    BruteForce,
    /// An infected host's outbound scan: SYNs to random external hosts on telnet/HTTP
    /// ports at `rate_pps` probes per second, mostly unanswered.
    SlowScan,
    /// C2 beaconing: one short TLS-like session to the same external host every
    /// `1 / rate_pps` seconds (±5 % jitter).
    Beacon,
}

impl EpisodeKind {
    /// The volume attacks of the `labelled` preset.
    pub const ALL: [EpisodeKind; 4] = [
        EpisodeKind::SynFlood,
        EpisodeKind::PortScan,
        EpisodeKind::UdpFlood,
        EpisodeKind::Exfil,
    ];
    /// The low-and-slow attacks of the `deployment` preset.
    pub const STEALTHY: [EpisodeKind; 3] = [
        EpisodeKind::BruteForce,
        EpisodeKind::SlowScan,
        EpisodeKind::Beacon,
    ];
    pub fn name(self) -> &'static str {
        match self {
            EpisodeKind::SynFlood => "syn_flood",
            EpisodeKind::PortScan => "port_scan",
            EpisodeKind::UdpFlood => "udp_flood",
            EpisodeKind::Exfil => "exfil",
            EpisodeKind::BruteForce => "brute_force",
            EpisodeKind::SlowScan => "slow_scan",
            EpisodeKind::Beacon => "beacon",
        }
    }
    /// Label carried by this kind's packets (0 is benign).
    pub fn label(self) -> u8 {
        match self {
            EpisodeKind::SynFlood => 1,
            EpisodeKind::PortScan => 2,
            EpisodeKind::UdpFlood => 3,
            EpisodeKind::Exfil => 4,
            EpisodeKind::BruteForce => 5,
            EpisodeKind::SlowScan => 6,
            EpisodeKind::Beacon => 7,
        }
    }
}

/// One attack episode.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    pub kind: EpisodeKind,
    /// Seconds after the start of the capture.
    pub start_s: f64,
    pub duration_s: f64,
    /// Attack packets per second.
    pub rate_pps: f64,
    pub attacker: [u8; 4],
    pub target: [u8; 4],
}

/// Generator settings.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    pub start_ns: u64,
    pub duration_s: f64,
    /// New benign flows per second.
    pub flow_rate: f64,
    pub clients: u32,
    pub servers: u32,
    pub episodes: Vec<Episode>,
    /// Stop after this many frames (None: at the end of `duration_s`).
    pub max_packets: Option<u64>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            start_ns: DEFAULT_START_NS,
            duration_s: 60.0,
            flow_rate: 100.0,
            clients: 500,
            servers: 50,
            episodes: Vec::new(),
            max_packets: None,
        }
    }
}

impl SynthConfig {
    /// The benchmark capture: about 1M packets in about 100k flows.
    pub fn bench_capture(seed: u64) -> Self {
        SynthConfig {
            seed,
            duration_s: 300.0,
            flow_rate: 440.0,
            clients: 20_000,
            servers: 2_000,
            max_packets: Some(1_000_000),
            ..SynthConfig::default()
        }
    }

    /// A labelled capture: benign background with one episode of each kind, spaced out.
    /// `minutes` of traffic; episodes start after a 5-minute benign warm-up.
    pub fn labelled(seed: u64, minutes: f64) -> Self {
        let mut rng = Rng::new(seed ^ 0xA77AC4);
        let total = minutes * 60.0;
        let mut episodes = Vec::new();
        let kinds = EpisodeKind::ALL;
        // Ten minutes of benign traffic first: the sensor learns the network before it
        // may alert (HST warm-up plus a settled threshold).
        let first = 600.0f64.min(total / 2.0);
        let gap = (total - first) / kinds.len() as f64;
        for (i, &kind) in kinds.iter().enumerate() {
            let start = first + gap * i as f64 + rng.f64() * gap * 0.3;
            let (dur, rate): (f64, f64) = match kind {
                EpisodeKind::SynFlood => (20.0, 2000.0),
                EpisodeKind::PortScan => (30.0, 500.0),
                EpisodeKind::UdpFlood => (20.0, 1500.0),
                EpisodeKind::Exfil => (60.0, 60.0),
                _ => unreachable!("labelled uses the volume kinds"),
            };
            let attacker = [198, 18, 200 + i as u8, rng.range(1, 254) as u8];
            let target = match kind {
                EpisodeKind::Exfil => [198, 19, 250, rng.range(1, 254) as u8],
                _ => [198, 19, 0, rng.range(1, 40) as u8],
            };
            episodes.push(Episode {
                kind,
                start_s: start,
                duration_s: dur.min(gap * 0.6),
                rate_pps: rate,
                attacker,
                target,
            });
        }
        SynthConfig {
            seed,
            duration_s: total,
            flow_rate: 60.0,
            clients: 400,
            servers: 40,
            episodes,
            ..SynthConfig::default()
        }
    }
}

impl SynthConfig {
    /// A deployment-like capture at ~1 500 packets/s of benign background: a 15-minute
    /// benign warm-up, a 5 s SYN flood at 20 000 pps (~100 000 one-packet flows) followed
    /// by 12 minutes of benign traffic only, then the low-and-slow attacks, each alone and
    /// 4–6 minutes apart: a telnet brute force (12–16 sessions of ~40 packets from one host
    /// within 3–4 s), an infected client's outbound scan (2–4 probes/s for 2 minutes) and
    /// C2 beaconing (every 20–60 s for 10 minutes), then 5 minutes of benign traffic.
    /// About 55 minutes in all.
    pub fn deployment(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0xDE910E);
        let mut episodes = Vec::new();
        let mut t = 900.0 + rng.f64() * 60.0;
        episodes.push(Episode {
            kind: EpisodeKind::SynFlood,
            start_s: t,
            duration_s: 5.0,
            rate_pps: 20_000.0,
            attacker: [198, 18, 200, rng.range(1, 254) as u8],
            target: [198, 19, 0, rng.range(1, 40) as u8],
        });
        // The quiet period after the flood: 12 minutes with no attack.
        t += 5.0 + 720.0;
        let bf_sessions = rng.range(12, 16) as f64;
        let bf_dur = 3.0 + rng.f64();
        episodes.push(Episode {
            kind: EpisodeKind::BruteForce,
            start_s: t,
            duration_s: bf_dur,
            rate_pps: bf_sessions / bf_dur,
            attacker: [198, 18, 201, rng.range(1, 254) as u8],
            target: [198, 19, 0, rng.range(1, 40) as u8],
        });
        t += 240.0 + rng.f64() * 120.0;
        // The infected host is one of the ordinary clients.
        let client = 256 + rng.range(0, 999) as u32;
        let infected = [198, 18, (client >> 8) as u8, (client & 0xff) as u8 | 1];
        episodes.push(Episode {
            kind: EpisodeKind::SlowScan,
            start_s: t,
            duration_s: 120.0,
            rate_pps: 2.0 + rng.f64() * 2.0,
            attacker: infected,
            target: [198, 19, 128, 0],
        });
        t += 240.0 + rng.f64() * 120.0;
        let period = 20.0 + rng.f64() * 40.0;
        episodes.push(Episode {
            kind: EpisodeKind::Beacon,
            start_s: t,
            duration_s: 600.0,
            rate_pps: 1.0 / period,
            attacker: infected,
            target: [198, 19, 250, rng.range(1, 254) as u8],
        });
        t += 600.0 + 300.0;
        SynthConfig {
            seed,
            duration_s: t,
            flow_rate: 170.0,
            clients: 1000,
            servers: 100,
            episodes,
            ..SynthConfig::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Https,
    Http,
    Dns,
    Ntp,
    Ping,
    // attacks
    SynFlood,
    PortScan,
    UdpFlood,
    Exfil,
    /// Starts brute-force sessions.
    BruteForce,
    /// One brute-force login session.
    BruteSession,
    SlowScan,
    /// Starts beacon sessions.
    Beacon,
    /// One beacon session.
    BeaconSession,
}

/// One generator "actor": a benign flow or an attack episode.
#[derive(Clone, Debug)]
struct Actor {
    kind: Kind,
    label: u8,
    cli: [u8; 4],
    srv: [u8; 4],
    cport: u16,
    sport: u16,
    /// Step in the flow's script.
    step: u32,
    /// Remaining request/response exchanges (TCP) or echo pairs (ping).
    exchanges: u32,
    /// Remaining server data packets in the current response.
    resp_left: u32,
    rtt_ns: u64,
    end_ns: u64,
    rate_pps: f64,
}

/// What the next frame looks like.
#[derive(Clone, Copy, Debug)]
struct PktSpec {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    flags: u8,
    payload: u16,
    icmp_type: u8,
}

/// The generator. Implements [`PacketSource`] (Ethernet frames).
pub struct SynthSource {
    cfg: SynthConfig,
    rng: Rng,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    actors: Vec<Option<Actor>>,
    free: Vec<usize>,
    next_flow_ns: u64,
    end_ns: u64,
    emitted: u64,
    seq: u64,
    buf: Vec<u8>,
    last_label: u8,
}

const MAX_FRAME: usize = 1514;

impl SynthSource {
    pub fn new(cfg: SynthConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let end_ns = cfg.start_ns + (cfg.duration_s * 1e9) as u64;
        let mut s = SynthSource {
            next_flow_ns: cfg.start_ns + (rng.exp(1.0 / cfg.flow_rate.max(1e-9)) * 1e9) as u64,
            rng,
            heap: BinaryHeap::new(),
            actors: Vec::new(),
            free: Vec::new(),
            end_ns,
            emitted: 0,
            seq: 0,
            buf: vec![0u8; MAX_FRAME],
            last_label: 0,
            cfg,
        };
        for ep in s.cfg.episodes.clone() {
            let start = s.cfg.start_ns + (ep.start_s * 1e9) as u64;
            let kind = match ep.kind {
                EpisodeKind::SynFlood => Kind::SynFlood,
                EpisodeKind::PortScan => Kind::PortScan,
                EpisodeKind::UdpFlood => Kind::UdpFlood,
                EpisodeKind::Exfil => Kind::Exfil,
                EpisodeKind::BruteForce => Kind::BruteForce,
                EpisodeKind::SlowScan => Kind::SlowScan,
                EpisodeKind::Beacon => Kind::Beacon,
            };
            let a = Actor {
                kind,
                label: ep.kind.label(),
                cli: ep.attacker,
                srv: ep.target,
                cport: 40000 + (s.rng.next_u64() % 20000) as u16,
                sport: match ep.kind {
                    EpisodeKind::Exfil | EpisodeKind::Beacon => 443,
                    EpisodeKind::SynFlood => 80,
                    EpisodeKind::BruteForce => 23,
                    _ => 1,
                },
                step: 0,
                exchanges: 0,
                resp_left: 0,
                rtt_ns: 20_000_000,
                end_ns: start + (ep.duration_s * 1e9) as u64,
                rate_pps: ep.rate_pps,
            };
            s.schedule(start, a);
        }
        s
    }

    /// Label of the frame last returned: 0 benign, else [`EpisodeKind::label`].
    pub fn last_label(&self) -> u8 {
        self.last_label
    }

    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    fn schedule(&mut self, at: u64, a: Actor) {
        let idx = match self.free.pop() {
            Some(i) => {
                self.actors[i] = Some(a);
                i
            }
            None => {
                self.actors.push(Some(a));
                self.actors.len() - 1
            }
        };
        self.seq += 1;
        // (time, seq) keeps the order total and deterministic; the actor index rides in
        // the low bits of the tie-breaker.
        self.heap.push(Reverse((at, (self.seq << 24) | idx as u64)));
    }

    fn client_ip(&mut self) -> [u8; 4] {
        let i = self.rng.range(0, u64::from(self.cfg.clients.max(1)) - 1) as u32 + 256;
        [198, 18, (i >> 8) as u8, (i & 0xff) as u8 | 1]
    }

    fn server_ip(&mut self) -> ([u8; 4], u64) {
        // Zipf-ish popularity: square of a uniform favours low indices.
        let u = self.rng.f64();
        let i = ((u * u) * f64::from(self.cfg.servers.max(1))) as u32 + 1;
        // Per-server RTT between 1 and 60 ms, a pure function of the index.
        let rtt = 1_000_000 + u64::from(i.wrapping_mul(2_654_435_761) % 59) * 1_000_000;
        ([198, 19, (i >> 8) as u8, (i & 0xff) as u8], rtt)
    }

    fn new_benign(&mut self, now: u64) {
        let r = self.rng.f64();
        let kind = if r < 0.45 {
            Kind::Https
        } else if r < 0.50 {
            Kind::Http
        } else if r < 0.88 {
            Kind::Dns
        } else if r < 0.94 {
            Kind::Ntp
        } else {
            Kind::Ping
        };
        let cli = self.client_ip();
        let (mut srv, rtt) = self.server_ip();
        let sport = match kind {
            Kind::Https => 443,
            Kind::Http => 80,
            Kind::Dns => {
                srv = [198, 19, 0, 53];
                53
            }
            Kind::Ntp => 123,
            _ => 0,
        };
        let exchanges = match kind {
            Kind::Https | Kind::Http => 1 + self.rng.exp(1.0) as u32,
            Kind::Ping => self.rng.range(1, 4) as u32,
            _ => 1,
        };
        let a = Actor {
            kind,
            label: 0,
            cli,
            srv,
            cport: self.rng.range(32768, 60999) as u16,
            sport,
            step: 0,
            exchanges,
            resp_left: 0,
            rtt_ns: rtt,
            end_ns: u64::MAX,
            rate_pps: 0.0,
        };
        self.schedule(now, a);
    }

    /// Produces the actor's next packet and when its following one is due (None: done).
    fn step(&mut self, a: &mut Actor, now: u64) -> (PktSpec, Option<u64>) {
        let c2s = |a: &Actor, flags: u8, payload: u16| PktSpec {
            src: a.cli,
            dst: a.srv,
            sport: a.cport,
            dport: a.sport,
            proto: 6,
            flags,
            payload,
            icmp_type: 0,
        };
        let s2c = |a: &Actor, flags: u8, payload: u16| PktSpec {
            src: a.srv,
            dst: a.cli,
            sport: a.sport,
            dport: a.cport,
            proto: 6,
            flags,
            payload,
            icmp_type: 0,
        };
        let half = a.rtt_ns / 2;
        let jitter = |rng: &mut Rng, base: u64| base + rng.range(0, base / 4 + 1000);
        match a.kind {
            Kind::Https | Kind::Http => {
                // Phases: 0 SYN, 1 SYN-ACK, 2 ACK, 3 request, 4 response data (a run),
                // 5 client ACK (then think time, back to 3), 6 FIN, 7 FIN-ACK, 8 last ACK.
                match a.step {
                    0 => {
                        a.step = 1;
                        (c2s(a, SYN, 0), Some(now + jitter(&mut self.rng, half)))
                    }
                    1 => {
                        a.step = 2;
                        (
                            s2c(a, SYN | ACK, 0),
                            Some(now + jitter(&mut self.rng, half)),
                        )
                    }
                    2 => {
                        a.step = 3;
                        (
                            c2s(a, ACK, 0),
                            Some(now + self.rng.range(100_000, 5_000_000)),
                        )
                    }
                    3 => {
                        a.step = 4;
                        a.resp_left = self.rng.range(1, 4) as u32;
                        let len = self.rng.range(80, 700) as u16;
                        (
                            c2s(a, PSH | ACK, len),
                            Some(now + jitter(&mut self.rng, half)),
                        )
                    }
                    4 => {
                        a.resp_left -= 1;
                        let (len, next) = if a.resp_left == 0 {
                            a.step = 5;
                            (
                                self.rng.range(100, 1460) as u16,
                                now + jitter(&mut self.rng, half),
                            )
                        } else {
                            (1460, now + self.rng.range(10_000, 200_000))
                        };
                        (s2c(a, PSH | ACK, len), Some(next))
                    }
                    5 => {
                        a.exchanges = a.exchanges.saturating_sub(1);
                        let next = if a.exchanges > 0 {
                            a.step = 3;
                            now + (self.rng.exp(0.5) * 1e9) as u64 + 1_000_000
                        } else {
                            a.step = 6;
                            now + self.rng.range(1_000_000, 100_000_000)
                        };
                        (c2s(a, ACK, 0), Some(next))
                    }
                    6 => {
                        a.step = 7;
                        (
                            c2s(a, FIN | ACK, 0),
                            Some(now + jitter(&mut self.rng, half)),
                        )
                    }
                    7 => {
                        a.step = 8;
                        (
                            s2c(a, FIN | ACK, 0),
                            Some(now + jitter(&mut self.rng, half)),
                        )
                    }
                    _ => (c2s(a, ACK, 0), None),
                }
            }
            Kind::Dns => {
                a.step += 1;
                let mut p = c2s(a, 0, self.rng.range(28, 60) as u16);
                p.proto = 17;
                if a.step == 1 {
                    (p, Some(now + jitter(&mut self.rng, 2 * half)))
                } else {
                    let mut r = s2c(a, 0, self.rng.range(60, 400) as u16);
                    r.proto = 17;
                    (r, None)
                }
            }
            Kind::Ntp => {
                a.step += 1;
                let mut p = if a.step == 1 {
                    c2s(a, 0, 48)
                } else {
                    s2c(a, 0, 48)
                };
                p.proto = 17;
                (
                    p,
                    if a.step == 1 {
                        Some(now + jitter(&mut self.rng, 2 * half))
                    } else {
                        None
                    },
                )
            }
            Kind::Ping => {
                a.step += 1;
                let req = a.step % 2 == 1;
                let mut p = if req { c2s(a, 0, 56) } else { s2c(a, 0, 56) };
                p.proto = 1;
                p.sport = 0;
                p.dport = 0;
                p.icmp_type = if req { 8 } else { 0 };
                let next = if req {
                    Some(now + jitter(&mut self.rng, 2 * half))
                } else if a.step / 2 < a.exchanges {
                    Some(now + 1_000_000_000)
                } else {
                    None
                };
                (p, next)
            }
            Kind::SynFlood => {
                // Spoofed sources from 198.18.128.0/17, random ports, SYN to the target.
                let src = [
                    198,
                    18,
                    128 | self.rng.range(0, 127) as u8,
                    self.rng.range(1, 254) as u8,
                ];
                let p = PktSpec {
                    src,
                    dst: a.srv,
                    sport: self.rng.range(1024, 65535) as u16,
                    dport: a.sport,
                    proto: 6,
                    flags: SYN,
                    payload: 0,
                    icmp_type: 0,
                };
                (p, self.next_attack(a, now))
            }
            Kind::PortScan => {
                // SYN to a new port each time; closed ports answer RST-ACK (step odd).
                a.step += 1;
                if a.step % 2 == 1 {
                    a.sport = (self.rng.range(1, 65535)) as u16;
                    (c2s(a, SYN, 0), Some(now + 200_000))
                } else {
                    let open = self.rng.f64() < 0.05;
                    let p = s2c(a, if open { SYN | ACK } else { RST | ACK }, 0);
                    (p, self.next_attack(a, now).map(|t| t.max(now + 1)))
                }
            }
            Kind::UdpFlood => {
                let p = PktSpec {
                    src: a.cli,
                    dst: a.srv,
                    sport: self.rng.range(1024, 65535) as u16,
                    dport: self.rng.range(1, 65535) as u16,
                    proto: 17,
                    flags: 0,
                    payload: self.rng.range(512, 1400) as u16,
                    icmp_type: 0,
                };
                (p, self.next_attack(a, now))
            }
            Kind::Exfil => {
                a.step += 1;
                if a.step == 1 {
                    (c2s(a, SYN, 0), Some(now + half))
                } else if a.step == 2 {
                    (s2c(a, SYN | ACK, 0), Some(now + half))
                } else if a.step.is_multiple_of(4) {
                    // server ACK every few segments
                    (s2c(a, ACK, 0), self.next_attack(a, now))
                } else {
                    (c2s(a, PSH | ACK, 1400), self.next_attack(a, now))
                }
            }
            Kind::BruteForce | Kind::Beacon => {
                // A spawner: starts one session (whose SYN is this packet) and schedules
                // the next start.
                let brute = a.kind == Kind::BruteForce;
                let s = Actor {
                    kind: if brute {
                        Kind::BruteSession
                    } else {
                        Kind::BeaconSession
                    },
                    cport: self.rng.range(32768, 60999) as u16,
                    step: 1,
                    // Brute force: login prompt, user, password, "Login incorrect" rounds.
                    exchanges: if brute {
                        self.rng.range(10, 14) as u32
                    } else {
                        1
                    },
                    resp_left: 0,
                    end_ns: u64::MAX,
                    ..a.clone()
                };
                let syn = c2s(&s, SYN, 0);
                let first = now + half;
                self.schedule(first, s);
                let next = if brute {
                    self.next_attack(a, now)
                } else {
                    // Period with ±5 % jitter.
                    let period = 1e9 / a.rate_pps.max(1e-6);
                    let t = now + (period * (0.95 + 0.1 * self.rng.f64())) as u64;
                    (t < a.end_ns).then_some(t)
                };
                (syn, next)
            }
            Kind::BruteSession | Kind::BeaconSession => {
                // 1 SYN-ACK, 2 ACK, then exchanges of (3 server line, 4 client line,
                // 5 server ACK), then 6 server FIN, 7 client FIN, 8 server ACK.
                let brute = a.kind == Kind::BruteSession;
                let think = |rng: &mut Rng| {
                    if brute {
                        rng.range(5_000_000, 40_000_000)
                    } else {
                        rng.range(1_000_000, 10_000_000)
                    }
                };
                match a.step {
                    1 => {
                        a.step = 2;
                        (s2c(a, SYN | ACK, 0), Some(now + half))
                    }
                    2 => {
                        a.step = 3;
                        (c2s(a, ACK, 0), Some(now + think(&mut self.rng)))
                    }
                    3 => {
                        a.step = 4;
                        let len = if brute {
                            self.rng.range(8, 40)
                        } else {
                            self.rng.range(200, 400)
                        } as u16;
                        (s2c(a, PSH | ACK, len), Some(now + half))
                    }
                    4 => {
                        a.step = 5;
                        let len = if brute {
                            self.rng.range(4, 16)
                        } else {
                            self.rng.range(150, 300)
                        } as u16;
                        (c2s(a, PSH | ACK, len), Some(now + half))
                    }
                    5 => {
                        a.exchanges = a.exchanges.saturating_sub(1);
                        a.step = if a.exchanges > 0 { 3 } else { 6 };
                        (s2c(a, ACK, 0), Some(now + think(&mut self.rng)))
                    }
                    6 => {
                        a.step = 7;
                        (s2c(a, FIN | ACK, 0), Some(now + half))
                    }
                    7 => {
                        a.step = 8;
                        (c2s(a, FIN | ACK, 0), Some(now + half))
                    }
                    _ => (s2c(a, ACK, 0), None),
                }
            }
            Kind::SlowScan => {
                // A SYN to a random external host on a telnet/HTTP port; ~1 in 10 answered
                // with RST-ACK (the answer sent right after, as a separate step).
                a.step += 1;
                if a.step % 2 == 1 {
                    a.srv = [
                        198,
                        19,
                        128 | self.rng.range(0, 127) as u8,
                        self.rng.range(1, 254) as u8,
                    ];
                    a.sport = [23, 23, 2323, 80][self.rng.range(0, 3) as usize];
                    a.cport = self.rng.range(32768, 60999) as u16;
                    let answered = self.rng.f64() < 0.1;
                    let next = if answered {
                        Some(now + half)
                    } else {
                        a.step += 1;
                        self.next_attack(a, now)
                    };
                    (c2s(a, SYN, 0), next)
                } else {
                    (s2c(a, RST | ACK, 0), self.next_attack(a, now))
                }
            }
        }
    }

    fn next_attack(&mut self, a: &Actor, now: u64) -> Option<u64> {
        let gap = self.rng.exp(1e9 / a.rate_pps.max(1e-3)) as u64 + 1;
        let t = now + gap;
        (t < a.end_ns).then_some(t)
    }

    fn write_frame(&mut self, p: &PktSpec) -> usize {
        let l4_len = match p.proto {
            6 => 20,
            17 => 8,
            _ => 8,
        } + p.payload as usize;
        let ip_len = (20 + l4_len).min(MAX_FRAME - 14);
        let b = &mut self.buf;
        // Ethernet: locally administered MACs derived from the IPs.
        b[0..6].copy_from_slice(&[0x02, 0x00, p.dst[0], p.dst[1], p.dst[2], p.dst[3]]);
        b[6..12].copy_from_slice(&[0x02, 0x00, p.src[0], p.src[1], p.src[2], p.src[3]]);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(self.emitted as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64;
        ip[9] = p.proto;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&p.src);
        ip[16..20].copy_from_slice(&p.dst);
        let c = checksum(&ip[..20], 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let l4 = &mut b[34..14 + ip_len];
        match p.proto {
            6 => {
                l4[0..2].copy_from_slice(&p.sport.to_be_bytes());
                l4[2..4].copy_from_slice(&p.dport.to_be_bytes());
                l4[4..8].copy_from_slice(&(self.emitted as u32).to_be_bytes());
                l4[8..12].copy_from_slice(&0u32.to_be_bytes());
                l4[12] = 5 << 4;
                l4[13] = p.flags;
                l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
                l4[16..20].copy_from_slice(&[0, 0, 0, 0]);
            }
            17 => {
                l4[0..2].copy_from_slice(&p.sport.to_be_bytes());
                l4[2..4].copy_from_slice(&p.dport.to_be_bytes());
                l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                l4[6..8].copy_from_slice(&[0, 0]);
            }
            _ => {
                l4[0] = p.icmp_type;
                l4[1] = 0;
                l4[2..4].copy_from_slice(&[0, 0]);
                l4[4..6].copy_from_slice(&(p.sport ^ 0x1234).to_be_bytes());
                l4[6..8].copy_from_slice(&(self.emitted as u16).to_be_bytes());
            }
        }
        let hl = if p.proto == 6 { 20 } else { 8 };
        // Payload: a cheap deterministic pattern.
        for (i, x) in l4[hl..].iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(31).wrapping_add(p.sport as u8);
        }
        // Transport checksum with the pseudo-header (ICMP: none).
        let sum = match p.proto {
            6 | 17 => {
                let mut ph = [0u8; 12];
                ph[0..4].copy_from_slice(&p.src);
                ph[4..8].copy_from_slice(&p.dst);
                ph[9] = p.proto;
                ph[10..12].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                checksum(l4, sum_words(&ph))
            }
            _ => checksum(l4, 0),
        };
        let off = match p.proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
        let sum = if p.proto == 17 && sum == 0 {
            0xffff
        } else {
            sum
        };
        l4[off..off + 2].copy_from_slice(&sum.to_be_bytes());
        // Minimum Ethernet frame (without FCS) is 60 bytes.
        let len = 14 + ip_len;
        if len < 60 {
            b[len..60].fill(0);
            60
        } else {
            len
        }
    }
}

fn sum_words(b: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [x] = it.remainder() {
        s += u32::from(*x) << 8;
    }
    s
}

/// Internet checksum of `b` plus an initial partial sum.
pub fn checksum(b: &[u8], init: u32) -> u16 {
    let mut s = init as u64 + sum_words(b) as u64;
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

impl PacketSource for SynthSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            if let Some(max) = self.cfg.max_packets {
                if self.emitted >= max {
                    return Ok(None);
                }
            }
            let next_actor = self.heap.peek().map(|Reverse((t, _))| *t);
            // Start new benign flows that are due before the next scheduled packet.
            if self.next_flow_ns < self.end_ns && next_actor.is_none_or(|t| self.next_flow_ns <= t)
            {
                let now = self.next_flow_ns;
                self.new_benign(now);
                self.next_flow_ns +=
                    (self.rng.exp(1.0 / self.cfg.flow_rate.max(1e-9)) * 1e9) as u64 + 1;
                continue;
            }
            let Some(Reverse((now, tag))) = self.heap.pop() else {
                return Ok(None);
            };
            // The capture ends at its duration, cutting flows in flight (as a real
            // capture does).
            if now >= self.end_ns {
                return Ok(None);
            }
            let idx = (tag & 0xff_ffff) as usize;
            let Some(mut a) = self.actors[idx].take() else {
                continue;
            };
            self.free.push(idx);
            let (spec, next) = self.step(&mut a, now);
            self.last_label = a.label;
            if let Some(t) = next {
                self.schedule(t, a);
            }
            let len = self.write_frame(&spec);
            let index = self.emitted;
            self.emitted += 1;
            return Ok(Some(Frame {
                ts_ns: now,
                orig_len: len as u32,
                data: &self.buf[..len],
                link: LinkType::Ethernet,
                index,
            }));
        }
    }
}

/// Writes `frames` of a source as a classic little-endian pcap with µs timestamps (ns
/// with `nanos`). Returns the number of frames written.
pub fn write_pcap<W: std::io::Write>(
    src: &mut dyn PacketSource,
    w: W,
    nanos: bool,
    mut on_frame: impl FnMut(&Frame<'_>),
) -> Result<u64, CaptureError> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::{DataLink, TsResolution};
    let hdr = PcapHeader {
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: if nanos {
            TsResolution::NanoSecond
        } else {
            TsResolution::MicroSecond
        },
        ..PcapHeader::default()
    };
    // pcap-file calls every I/O error "Error reading bytes": give the OS's words.
    let werr = |e: pcap_file::PcapError| match e {
        pcap_file::PcapError::IoError(io) => CaptureError::Other(io.to_string()),
        other => CaptureError::Other(other.to_string()),
    };
    let mut pw = PcapWriter::with_header(w, hdr).map_err(werr)?;
    let mut n = 0;
    while let Some(f) = src.next_frame()? {
        on_frame(&f);
        let ts = std::time::Duration::from_nanos(if nanos {
            f.ts_ns
        } else {
            f.ts_ns / 1000 * 1000
        });
        pw.write_packet(&PcapPacket::new(ts, f.orig_len, f.data))
            .map_err(werr)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(cfg: SynthConfig) -> Vec<(u64, Vec<u8>, u8)> {
        let mut s = SynthSource::new(cfg);
        let mut v = vec![];
        while let Some(f) = s.next_frame().unwrap() {
            let (t, d) = (f.ts_ns, f.data.to_vec());
            v.push((t, d, s.last_label()));
        }
        v
    }

    #[test]
    fn deterministic_time_ordered_and_checksummed() {
        let cfg = SynthConfig {
            duration_s: 20.0,
            flow_rate: 50.0,
            ..SynthConfig::default()
        };
        let a = collect(cfg.clone());
        let b = collect(cfg);
        assert_eq!(a, b);
        assert!(a.len() > 2000, "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
        for (_, f, _) in &a {
            // IPv4 header checksum verifies to zero.
            assert_eq!(checksum(&f[14..34], 0), 0);
            assert!(f.len() >= 60 && f.len() <= 1514);
        }
    }

    #[test]
    fn deployment_episodes_have_their_shapes() {
        let cfg = SynthConfig::deployment(5);
        let eps = cfg.episodes.clone();
        let v = collect(cfg.clone());
        let secs = cfg.duration_s;
        let pps = v.len() as f64 / secs;
        assert!((1300.0..1800.0).contains(&pps), "background {pps} pps");
        let count = |k: EpisodeKind| v.iter().filter(|x| x.2 == k.label()).count();
        // Flood: ~20 000 pps for 5 s.
        let flood = count(EpisodeKind::SynFlood);
        assert!((90_000..110_000).contains(&flood), "{flood}");
        // Brute force: >= 10 sessions (SYNs to port 23 from the attacker), < 1 % of traffic.
        let bf = &eps[1];
        let syns = v
            .iter()
            .filter(|x| x.2 == 5 && x.1[26..30] == bf.attacker && x.1[47] == SYN)
            .count();
        assert!(syns >= 10, "{syns} sessions");
        assert!((count(EpisodeKind::BruteForce) as f64) < 0.01 * v.len() as f64);
        // Slow scan: < 5 probes/s on average.
        let probes = v.iter().filter(|x| x.2 == 6 && x.1[47] == SYN).count();
        assert!(
            probes as f64 / eps[2].duration_s < 5.0 && probes > 100,
            "{probes}"
        );
        // Beacons: one session per period, all to the same host.
        let beacons = v.iter().filter(|x| x.2 == 7 && x.1[47] == SYN).count();
        let expect = eps[3].duration_s * eps[3].rate_pps;
        assert!(
            (beacons as f64 - expect).abs() <= 2.0,
            "{beacons} vs {expect}"
        );
        // Nothing of an episode after the flood for 10 minutes.
        let flood_end = DEFAULT_START_NS + ((eps[0].start_s + eps[0].duration_s) * 1e9) as u64;
        let quiet_end = flood_end + 600_000_000_000;
        assert!(!v
            .iter()
            .any(|x| x.0 > flood_end && x.0 < quiet_end && x.2 != 0));
    }

    #[test]
    fn labelled_episodes_are_present() {
        let cfg = SynthConfig::labelled(3, 12.0);
        let eps = cfg.episodes.clone();
        let v = collect(cfg);
        for k in EpisodeKind::ALL {
            let n = v.iter().filter(|x| x.2 == k.label()).count();
            assert!(n > 1000, "{k:?}: {n}");
        }
        // Attack packets fall inside their episode's span.
        let start = v[0].0.min(DEFAULT_START_NS);
        for (t, _, l) in &v {
            if *l != 0 {
                let ep = eps.iter().find(|e| e.kind.label() == *l).unwrap();
                let s = start + (ep.start_s * 1e9) as u64;
                let e = s + (ep.duration_s * 1e9) as u64;
                assert!(*t >= s && *t <= e);
            }
        }
        // Everything stays inside 198.18.0.0/15.
        for (_, f, _) in &v {
            for ip in [&f[26..30], &f[30..34]] {
                assert!(ip[0] == 198 && (ip[1] == 18 || ip[1] == 19), "{ip:?}");
            }
        }
    }
}
