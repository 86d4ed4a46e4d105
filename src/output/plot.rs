//! A small SVG line chart for the bench mode's `--plot` (written by hand: two panels of
//! polylines, axes and labels need no plotting crate, and plotters with its SVG backend
//! alone still brings a font stack and a dozen crates into a sensor's build).
//!
//! Top panel: offered and received frames/s over time, with each search step (trial) as
//! a shaded band labelled with its rate and outcome; bottom panel: p99 latency over time.

use std::fmt::Write;

/// One series point: (seconds, value).
pub type Point = (f64, f64);

/// A shaded time span with a label (a search step).
pub struct Band {
    pub from_s: f64,
    pub to_s: f64,
    pub label: String,
    /// Green when it passed, red when not.
    pub ok: bool,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub offered: &'a [Point],
    pub received: &'a [Point],
    /// p99 latency in microseconds.
    pub p99_us: &'a [Point],
    pub bands: &'a [Band],
}

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

struct Panel {
    top: f64,
    height: f64,
    t_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (t / self.t_max).clamp(0.0, 1.0)
    }
    fn y(&self, v: f64) -> f64 {
        self.top + self.height * (1.0 - (v / self.y_max).clamp(0.0, 1.0))
    }

    fn axes(&self, out: &mut String, label: &str) {
        let (x0, x1) = (LEFT, W - RIGHT);
        let (y0, y1) = (self.top, self.top + self.height);
        let _ = writeln!(
            out,
            r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            x1 - x0,
            y1 - y0
        );
        for i in 0..=4 {
            let v = self.y_max * f64::from(i) / 4.0;
            let y = self.y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                x0 - 4.0,
                y + 4.0,
                fmt_si(v)
            );
        }
        for i in 0..=5 {
            let t = self.t_max * f64::from(i) / 5.0;
            let x = self.x(t);
            let _ = writeln!(
                out,
                r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t:.0} s</text>"##,
                y1 + 14.0
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="16" y="{:.1}" font-size="12" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"##,
            self.top + self.height / 2.0,
            self.top + self.height / 2.0,
            esc(label)
        );
    }

    fn line(&self, out: &mut String, pts: &[Point], color: &str, name: &str) {
        if pts.is_empty() {
            return;
        }
        let mut d = String::new();
        for (t, v) in pts {
            let _ = write!(d, "{:.1},{:.1} ", self.x(*t), self.y(*v));
        }
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"##,
            d.trim_end(),
            esc(name)
        );
    }
}

/// The chart as an SVG document.
pub fn svg(c: &Chart<'_>) -> String {
    let t_max = c
        .offered
        .iter()
        .chain(c.received)
        .chain(c.p99_us)
        .map(|p| p.0)
        .chain(c.bands.iter().map(|b| b.to_s))
        .fold(1.0f64, f64::max);
    let rate_max = nice_max(
        c.offered
            .iter()
            .chain(c.received)
            .map(|p| p.1)
            .fold(0.0, f64::max),
    );
    let lat_max = nice_max(c.p99_us.iter().map(|p| p.1).fold(0.0, f64::max));
    let rates = Panel {
        top: 50.0,
        height: 280.0,
        t_max,
        y_max: rate_max,
    };
    let lat = Panel {
        top: 380.0,
        height: 140.0,
        t_max,
        y_max: lat_max,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"##,
        W / 2.0,
        esc(c.title)
    );
    for b in c.bands {
        let (x0, x1) = (rates.x(b.from_s), rates.x(b.to_s));
        let fill = if b.ok { "#2a2" } else { "#d33" };
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{}" fill="{fill}" fill-opacity="0.12"/><text x="{:.1}" y="{}" font-size="10" text-anchor="middle" fill="{fill}">{}</text>"##,
            rates.top,
            (x1 - x0).max(1.0),
            rates.height,
            (x0 + x1) / 2.0,
            rates.top + 12.0,
            esc(&b.label)
        );
    }
    rates.axes(&mut out, "frames/s");
    rates.line(&mut out, c.offered, "#1f77b4", "offered");
    rates.line(&mut out, c.received, "#ff7f0e", "received");
    lat.axes(&mut out, "p99 µs");
    lat.line(&mut out, c.p99_us, "#9467bd", "p99 latency");
    let _ = writeln!(
        out,
        r##"<g font-size="12"><rect x="{}" y="34" width="12" height="3" fill="#1f77b4"/><text x="{}" y="40">offered</text><rect x="{}" y="34" width="12" height="3" fill="#ff7f0e"/><text x="{}" y="40">received</text><rect x="{}" y="34" width="12" height="3" fill="#9467bd"/><text x="{}" y="40">p99 frame → reader latency</text></g>"##,
        LEFT + 4.0,
        LEFT + 20.0,
        LEFT + 90.0,
        LEFT + 106.0,
        LEFT + 180.0,
        LEFT + 196.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_the_series_and_bands_and_escapes_text() {
        let s = svg(&Chart {
            title: "a <b> & c",
            offered: &[(0.0, 1e6), (1.0, 2e6)],
            received: &[(0.0, 1e6), (1.0, 1.5e6)],
            p99_us: &[(0.0, 12.0), (1.0, 30.0)],
            bands: &[Band {
                from_s: 0.0,
                to_s: 1.0,
                label: "1.00 Mpps lost".into(),
                ok: false,
            }],
        });
        assert!(s.starts_with("<?xml"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 3);
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        assert!(s.contains("1.00 Mpps lost"));
        assert_eq!(nice_max(3.3e6), 5e6);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
