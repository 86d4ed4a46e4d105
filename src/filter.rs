//! Per-profile packet filters in tcpdump syntax, compiled by libpcap and run on each
//! frame by the reader (which holds the bytes). The reader marks each packet with a
//! bitmask of the profiles whose filter it matched; scorers only see the mask.
//!
//! libpcap is the right tool here: its compiler is the reference for the syntax people
//! already know, and `pcap_offline_filter` runs the compiled BPF in user space with no
//! syscall. An empty filter matches everything without running any BPF.
#![allow(unsafe_code)] // libpcap's filter program; every block has a SAFETY comment

use pcap::{BpfProgram, Capture, Linktype};

use crate::wire::LinkType;

/// Compiles `expr` for a link type; the error is libpcap's message.
pub fn compile(expr: &str, link: LinkType) -> Result<BpfProgram, String> {
    let cap = Capture::dead(Linktype(link.to_linktype() as i32)).map_err(|e| e.to_string())?;
    cap.compile(expr, true).map_err(|e| {
        let s = e.to_string();
        s.trim_start_matches("libpcap error: ").to_string()
    })
}

/// The compiled filters of all profiles, per link type (compiled on first use). Not
/// `Send`: each reader thread builds its own.
pub struct ProfileFilters {
    exprs: Vec<String>,
    all_mask: u16,
    /// Profiles with an empty filter always match.
    always: u16,
    by_link: Vec<(LinkType, Vec<Option<BpfProgram>>)>,
}

impl ProfileFilters {
    /// The filter expression of each profile, in profile order ("" matches everything).
    pub fn new<'a>(exprs: impl IntoIterator<Item = &'a str>) -> Self {
        let exprs: Vec<String> = exprs.into_iter().map(|e| e.trim().to_string()).collect();
        let mut always = 0u16;
        for (i, e) in exprs.iter().enumerate() {
            if e.is_empty() {
                always |= 1 << i;
            }
        }
        let all_mask = if exprs.is_empty() {
            0
        } else {
            (((1u32 << exprs.len()) - 1) & 0xffff) as u16
        };
        ProfileFilters {
            exprs,
            all_mask,
            always,
            by_link: Vec::new(),
        }
    }

    /// True when no profile has a filter (the mask is constant).
    pub fn trivial(&self) -> bool {
        self.always == self.all_mask
    }

    pub fn all_mask(&self) -> u16 {
        self.all_mask
    }

    /// Bitmask of the profiles whose filter matches `frame`.
    #[inline]
    pub fn mask(&mut self, frame: &[u8], link: LinkType) -> u16 {
        if self.trivial() {
            return self.all_mask;
        }
        let ix = match self.by_link.iter().position(|(l, _)| *l == link) {
            Some(i) => i,
            None => {
                let progs = self
                    .exprs
                    .iter()
                    .map(|e| {
                        if e.is_empty() {
                            None
                        } else {
                            // Validated at startup for Ethernet; a link type where the
                            // expression makes no sense matches nothing.
                            compile(e, link).ok()
                        }
                    })
                    .collect();
                self.by_link.push((link, progs));
                self.by_link.len() - 1
            }
        };
        let mut m = self.always;
        for (i, p) in self.by_link[ix].1.iter().enumerate() {
            if let Some(p) = p {
                if p.filter(frame) {
                    m |= 1 << i;
                }
            }
        }
        m
    }
}

/// A compiled filter that evidence writers on other threads may run on ring records.
/// libpcap's `pcap_offline_filter` only reads the program; the mutex makes the sharing
/// obviously sound at a cost that only matters off the hot path (evidence copy-out).
pub struct SharedFilter {
    prog: std::sync::Mutex<SendProgram>,
}

struct SendProgram(BpfProgram);

// SAFETY: a `bpf_program` is a heap array of instructions owned by this value; moving it
// to another thread is sound, and every use goes through the mutex above.
#[allow(unsafe_code)]
unsafe impl Send for SendProgram {}

impl SharedFilter {
    pub fn new(expr: &str, link: LinkType) -> Result<SharedFilter, String> {
        Ok(SharedFilter {
            prog: std::sync::Mutex::new(SendProgram(compile(expr, link)?)),
        })
    }

    pub fn matches(&self, frame: &[u8]) -> bool {
        match self.prog.lock() {
            Ok(p) => p.0.filter(frame),
            Err(p) => p.into_inner().0.filter(frame),
        }
    }
}
