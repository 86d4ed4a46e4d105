//! Optional features of the data path, what the kernel and the NIC granted, and the
//! fallback taken for each one they refused.
//!
//! No optional feature may stop capture: each has a fallback, tried when the kernel or
//! the driver refuses the feature, and the reason is kept for the start-up line, the
//! stats JSON (`mode.fallbacks`) and `doctor`. Every fallback can be exercised on any
//! machine: `STREAMML_REFUSE=xdp_meta,native,...` makes the sensor behave as if the
//! kernel had refused those features (the same code path as a real refusal).

use std::fmt;

use serde::Serialize;

pub use super::xdp::REFUSE_ENV;

/// An optional feature the live data path uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Per-frame arrival times written by the XDP program into XDP metadata
    /// (`bpf_xdp_adjust_meta`). Fallback: the time the reader read the RX batch.
    XdpMeta,
    /// The same per-frame times in a header the XDP program pushes in front of the frame
    /// (`bpf_xdp_adjust_head`), where XDP metadata is refused. Fallback: batch read time.
    XdpHead,
    /// The XDP program in the driver (native mode). Fallback: generic (SKB) mode.
    Native,
    /// AF_XDP zero-copy. Fallback: copy mode.
    ZeroCopy,
    /// `XDP_USE_NEED_WAKEUP` (the driver sleeps until woken). Fallback: bound without it.
    NeedWakeup,
    /// `SO_BUSY_POLL` / `SO_PREFER_BUSY_POLL` (only when `--busy-poll` asks for it).
    /// Fallback: interrupt-driven (no busy polling).
    BusyPoll,
    /// As many RX queues as `--queues` asked for. Fallback: the queues the NIC has.
    Channels,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::XdpMeta,
        Feature::XdpHead,
        Feature::Native,
        Feature::ZeroCopy,
        Feature::NeedWakeup,
        Feature::BusyPoll,
        Feature::Channels,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Feature::XdpMeta => "xdp_meta",
            Feature::XdpHead => "xdp_head",
            Feature::Native => "native",
            Feature::ZeroCopy => "zero_copy",
            Feature::NeedWakeup => "need_wakeup",
            Feature::BusyPoll => "busy_poll",
            Feature::Channels => "channels",
        }
    }

    pub fn from_name(s: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == s)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Features to treat as refused by the kernel (from [`REFUSE_ENV`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused(u32);

impl Refused {
    pub fn none() -> Refused {
        Refused(0)
    }

    /// Parses a comma list of feature names ("" = none).
    pub fn parse(s: &str) -> Result<Refused, String> {
        let mut r = Refused(0);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f = Feature::from_name(part).ok_or_else(|| {
                format!(
                    "{REFUSE_ENV}: unknown feature {part:?} (known: {})",
                    Feature::ALL.map(Feature::name).join(", ")
                )
            })?;
            r.0 |= 1 << f as u32;
        }
        Ok(r)
    }

    /// From the environment; unset or empty = none.
    pub fn from_env() -> Result<Refused, String> {
        match std::env::var(REFUSE_ENV) {
            Ok(v) => Refused::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(Refused(0)),
            Err(e) => Err(format!("{REFUSE_ENV}: {e}")),
        }
    }

    pub fn has(self, f: Feature) -> bool {
        self.0 & (1 << f as u32) != 0
    }

    /// The reason given for a forced refusal.
    pub fn reason(f: Feature) -> String {
        format!("refused by {REFUSE_ENV}={}", f.name())
    }
}

/// A feature that was wanted and not obtained, with what was used instead and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fallback {
    pub feature: &'static str,
    /// What is used instead (e.g. "batch", "skb", "copy").
    pub using: String,
    /// Why: the kernel's or the driver's answer, or the option that turned it off.
    pub reason: String,
}

impl Fallback {
    pub fn new(f: Feature, using: impl Into<String>, reason: impl Into<String>) -> Fallback {
        Fallback {
            feature: f.name(),
            using: using.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: using {} ({})",
            self.feature, self.using, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_names_round_trip() {
        let all = Feature::ALL.map(Feature::name).join(",");
        let r = Refused::parse(&all).unwrap();
        for f in Feature::ALL {
            assert!(r.has(f), "{f}");
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        let r = Refused::parse(" xdp_meta , ").unwrap();
        assert!(r.has(Feature::XdpMeta));
        assert!(!r.has(Feature::Native));
        assert_eq!(Refused::parse("").unwrap(), Refused::none());
        let e = Refused::parse("xdp_meta,warp").unwrap_err();
        assert!(e.contains("\"warp\"") && e.contains("need_wakeup"), "{e}");
    }
}
