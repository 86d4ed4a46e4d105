//! UTC time formatting and parsing for alerts, file names and `--since/--until`. Packet
//! time is nanoseconds since the Unix epoch; no time zone database is involved.

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ns: u64,
}

fn parts(ts_ns: u64) -> Parts {
    let secs = ts_ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    Parts {
        y,
        mo,
        d,
        h: sod / 3600,
        mi: sod % 3600 / 60,
        s: sod % 60,
        ns: ts_ns % 1_000_000_000,
    }
}

/// RFC 3339 UTC with microseconds, as eve.json writes them: `2024-01-02T03:04:05.123456Z`.
pub fn rfc3339_us(ts_ns: u64) -> String {
    let p = parts(ts_ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        p.y,
        p.mo,
        p.d,
        p.h,
        p.mi,
        p.s,
        p.ns / 1000
    )
}

/// RFC 3339 UTC with nanoseconds: `2024-01-02T03:04:05.123456789Z`.
pub fn rfc3339_ns(ts_ns: u64) -> String {
    let p = parts(ts_ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ns
    )
}

/// Compact UTC for file names (no colons): `20240102T030405.123456Z`.
pub fn compact_utc(ts_ns: u64) -> String {
    let p = parts(ts_ns);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
        p.y,
        p.mo,
        p.d,
        p.h,
        p.mi,
        p.s,
        p.ns / 1000
    )
}

/// Parses a point in time into ns since the epoch: epoch seconds (`1700000000`,
/// `1700000000.25`) or RFC 3339 (`2024-01-02T03:04:05Z`, optional fraction, `Z` or a
/// `+HH:MM`/`-HH:MM` offset; a space may replace the `T`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty time".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_epoch(t).ok_or_else(|| format!("'{s}' is not a valid epoch time"));
    }
    parse_rfc3339(t).ok_or_else(|| {
        format!("'{s}' is neither RFC 3339 (2024-01-02T03:04:05Z) nor epoch seconds")
    })
}

fn parse_epoch(t: &str) -> Option<u64> {
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    if int.is_empty() || frac.len() > 9 || frac.contains('.') {
        return None;
    }
    let secs: u64 = int.parse().ok()?;
    let mut ns = 0u64;
    if !frac.is_empty() {
        ns = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

fn num(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_rfc3339(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let y = num(&b[0..4])? as i64;
    let mo = num(&b[5..7])? as u32;
    let d = num(&b[8..10])? as u32;
    let h = num(&b[11..13])?;
    let mi = num(&b[14..16])?;
    let sec = num(&b[17..19])?;
    let mut i = 19;
    let mut ns = 0u64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let digits = &b[start..end];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        ns = num(digits)? * 10u64.pow(9 - digits.len() as u32);
        i = end;
    }
    let offset_s: i64 = match b.get(i..)? {
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = num(&[*h1, *h2])? as i64;
            let om = num(&[*m1, *m2])? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let mdays = [
        31,
        28 + u32::from(is_leap(y)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > mdays[mo as usize - 1]
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64 - offset_s;
    if secs < 0 {
        return None;
    }
    (secs as u64).checked_mul(1_000_000_000)?.checked_add(ns)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        // 2009-02-13T23:31:30Z is epoch 1234567890.
        let t = 1_234_567_890_123_456_789u64;
        assert_eq!(rfc3339_us(t), "2009-02-13T23:31:30.123456Z");
        assert_eq!(rfc3339_ns(t), "2009-02-13T23:31:30.123456789Z");
        assert_eq!(compact_utc(t), "20090213T233130.123456Z");
        assert_eq!(parse_time("2009-02-13T23:31:30.123456789Z"), Ok(t));
        assert_eq!(parse_time("2009-02-14T00:31:30.123456789+01:00"), Ok(t));
        assert_eq!(parse_time("1234567890.123456789"), Ok(t));
        assert_eq!(parse_time("1234567890"), Ok(1_234_567_890_000_000_000));
        assert_eq!(
            parse_time("2000-02-29 00:00:00Z"),
            Ok(951_782_400_000_000_000)
        );
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        for bad in [
            "",
            "2009-02-30T00:00:00Z",
            "2009-02-13T23:31:30",
            "12x",
            "1.2.3",
            "2009-13-01T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
