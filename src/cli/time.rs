//! Times on the command line: RFC 3339 timestamps in and out, and short durations
//! (`30m`, `1h`, `2d`) in.
//!
//! Written by hand on the calendar helpers the signature schemes already have
//! (`scheme::canonical`), so the CLI needs no date crate.

use prost_types::{Duration, Timestamp};

use crate::scheme::canonical::{civil_from_days, days_from_civil};

/// `2026-11-22T10:48:47.301Z`: UTC, milliseconds when there are any (the store keeps
/// milliseconds), nanoseconds only if a timestamp carries finer ones.
pub fn format_ts(t: &Timestamp) -> String {
    let (y, m, d) = civil_from_days(t.seconds.div_euclid(86_400));
    let rem = t.seconds.rem_euclid(86_400);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    match t.nanos {
        0 => format!("{base}Z"),
        n if n % 1_000_000 == 0 => format!("{base}.{:03}Z", n / 1_000_000),
        n => format!("{base}.{n:09}Z"),
    }
}

fn num(s: &str, what: &str) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} '{s}'"));
    }
    s.parse().map_err(|_| format!("bad {what} '{s}'"))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`.
pub fn parse_ts(s: &str) -> Result<Timestamp, String> {
    let err = || format!("'{s}' is not an RFC 3339 time (e.g. 2030-01-31T12:00:00Z)");
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(err());
    }
    let part =
        |r: std::ops::Range<usize>, what: &str| s.get(r).ok_or_else(err).and_then(|p| num(p, what));
    let (y, mo, d) = (
        part(0..4, "year")?,
        part(5..7, "month")?,
        part(8..10, "day")?,
    );
    let (h, mi, se) = (
        part(11..13, "hour")?,
        part(14..16, "minute")?,
        part(17..19, "second")?,
    );
    let mo = u32::try_from(mo).map_err(|_| err())?;
    let d = u32::try_from(d).map_err(|_| err())?;
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return Err(err()),
    };
    if d == 0 || d > days_in_month || h > 23 || mi > 59 || se > 60 {
        return Err(err());
    }
    let mut rest = s.get(19..).ok_or_else(err)?;
    let mut nanos = 0i32;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return Err(err());
        }
        let digits = frac.get(..n).ok_or_else(err)?;
        let scaled = format!("{digits:0<9}");
        nanos = scaled.parse().map_err(|_| err())?;
        rest = frac.get(n..).ok_or_else(err)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return Err(err());
            }
            let oh = num(rest.get(1..3).ok_or_else(err)?, "offset")?;
            let om = num(rest.get(4..6).ok_or_else(err)?, "offset")?;
            if oh > 23 || om > 59 {
                return Err(err());
            }
            let o = oh * 3600 + om * 60;
            if rb[0] == b'-' { -o } else { o }
        }
    };
    // A leap second is read as the next second's start; the store has no leap seconds.
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Ok(Timestamp { seconds, nanos })
}

/// Parses `90s`, `30m`, `1h`, `2d`, or a sum such as `1h30m`; `0` is no time.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("'{s}' is not a duration (e.g. 30m, 1h, 2d, 1h30m)");
    if s.trim() == "0" {
        return Ok(Duration::default());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: i64 = digits.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
        any = true;
    }
    if !any || !digits.is_empty() {
        return Err(err());
    }
    Ok(Duration {
        seconds: total,
        nanos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_offsets_apply() {
        let t = parse_ts("2026-11-22T10:48:47.301Z").unwrap();
        assert_eq!(t.seconds, 1_795_344_527);
        assert_eq!(t.nanos, 301_000_000);
        assert_eq!(format_ts(&t), "2026-11-22T10:48:47.301Z");
        let z = parse_ts("2030-01-31T12:00:00Z").unwrap();
        assert_eq!(format_ts(&z), "2030-01-31T12:00:00Z");
        assert_eq!(parse_ts("2030-01-31T14:00:00+02:00").unwrap(), z);
        assert_eq!(parse_ts("2030-01-31T11:30:00-00:30").unwrap(), z);
        assert_eq!(format_ts(&Timestamp::default()), "1970-01-01T00:00:00Z");
        for bad in [
            "2030-01-31",
            "2030-02-30T00:00:00Z",
            "2030-01-31T12:00:00",
            "2030-01-31T24:00:00Z",
            "2030-01-31T12:00:00.Z",
            "2030-01-31T12:00:00+0200",
            "tomorrow",
        ] {
            assert!(parse_ts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap().seconds, 1800);
        assert_eq!(parse_duration("1h").unwrap().seconds, 3600);
        assert_eq!(parse_duration("2d").unwrap().seconds, 172_800);
        assert_eq!(parse_duration("1h30m").unwrap().seconds, 5400);
        assert_eq!(parse_duration("0").unwrap().seconds, 0);
        for bad in ["", "h", "10", "5w", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
