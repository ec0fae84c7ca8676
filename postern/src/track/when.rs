//! Times for `postern log --since/--until` and its output, in local time.
//!
//! Accepted: `now`, `today`, `yesterday`; relative ages `30m`, `2h`, `7d`,
//! `1w` (also `2h ago`); ISO 8601 `2026-11-22`, `2026-11-22 05:30`,
//! `2026-11-22T05:30:00`, with optional `Z` or `+01:00`; syslog and mailq
//! stamps as Postfix prints them, `Nov 22 05:30:00`, `Nov 22`,
//! `Sun Nov 22 05:30:00` (the most recent such date); a time of today
//! `05:30`; and `@SECONDS` since the epoch.
//!
//! An `--until` value covers the unit it names: `--until 2026-11-22` ends
//! at the end of that day, `--until 05:30` at 05:31:00.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Broken-down local time, as written by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
}

/// How much an `--until` value covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Instant,
    Second,
    Minute,
    Day,
}

/// Parses a time; `until` extends it to the end of the unit it names.
/// Returns microseconds since the epoch.
///
/// # Errors
/// Text that is no time, in words.
pub fn parse(text: &str, now: SystemTime, until: bool) -> Result<i64, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "bad time \"{text}\": use e.g. 2h, 7d, today, 2026-11-22, \"2026-11-22 05:30\", \"Nov 22 05:30:00\" or @1795325400"
        )
    };
    let now_us = micros(now);
    let lower = s.to_ascii_lowercase();
    if lower == "now" {
        return Ok(now_us);
    }
    if let Some(secs) = s.strip_prefix('@') {
        let v: f64 = secs.parse().map_err(|_| bad())?;
        return Ok((v * 1e6) as i64);
    }
    if let Some(d) = relative(&lower) {
        return Ok(now_us - d.as_micros() as i64);
    }
    let today = civil_of(now_us);
    let (civil, unit, offset) = if lower == "today" || lower == "yesterday" {
        let mut c = Civil {
            hour: 0,
            min: 0,
            sec: 0,
            ..today
        };
        if lower == "yesterday" {
            c = add_days(c, -1);
        }
        (c, Unit::Day, None)
    } else if let Some(x) = iso(s) {
        x
    } else if let Some((c, u)) = syslog(&lower, today, now_us) {
        (c, u, None)
    } else if let Some((h, m, sec, u)) = clock(s) {
        (
            Civil {
                hour: h,
                min: m,
                sec,
                ..today
            },
            u,
            None,
        )
    } else {
        return Err(bad());
    };
    if civil.month == 0 || civil.month > 12 || civil.day == 0 || civil.day > 31 {
        return Err(bad());
    }
    if civil.hour > 23 || civil.min > 59 || civil.sec > 60 {
        return Err(bad());
    }
    let end = if until {
        match unit {
            Unit::Instant => civil,
            Unit::Second => add_secs(civil, 1),
            Unit::Minute => add_secs(civil, 60),
            Unit::Day => add_days(civil, 1),
        }
    } else {
        civil
    };
    let secs = match offset {
        Some(off) => utc_seconds(end) - off,
        None => local_seconds(end).ok_or_else(bad)?,
    };
    let frac = if unit == Unit::Instant {
        iso_fraction(s)
    } else {
        0
    };
    Ok(secs * 1_000_000 + frac)
}

/// `2h`, `7d`, `1.5h`, `2h ago`, `-2h`.
fn relative(s: &str) -> Option<Duration> {
    let s = s.strip_suffix(" ago").unwrap_or(s).trim();
    let s = s.strip_prefix('-').unwrap_or(s);
    let unit = s.chars().last()?;
    let n: f64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let mult = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        'w' => 7.0 * 86400.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(n * mult))
}

/// ISO 8601 date, date and time, with an optional zone (seconds east).
fn iso(s: &str) -> Option<(Civil, Unit, Option<i64>)> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i32 = s.get(0..4)?.parse().ok()?;
    let month: u32 = s.get(5..7)?.parse().ok()?;
    let day: u32 = s.get(8..10)?.parse().ok()?;
    let mut c = Civil {
        year,
        month,
        day,
        hour: 0,
        min: 0,
        sec: 0,
    };
    let rest = &s[10..];
    if rest.is_empty() {
        return Some((c, Unit::Day, None));
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock_part, zone) = split_zone(rest)?;
    let (h, m, sec, unit) = clock(clock_part)?;
    c.hour = h;
    c.min = m;
    c.sec = sec;
    let unit = if clock_part.contains('.') {
        Unit::Instant
    } else {
        unit
    };
    Some((c, unit, zone))
}

/// Splits `05:30:00+01:00` into the clock and the zone offset (seconds).
fn split_zone(s: &str) -> Option<(&str, Option<i64>)> {
    if let Some(c) = s.strip_suffix(['Z', 'z']) {
        return Some((c, Some(0)));
    }
    if let Some(i) = s.rfind(['+', '-']) {
        let (c, z) = s.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i64 = digits[..2].parse().ok()?;
        let m: i64 = digits[2..].parse().ok()?;
        return Some((c, Some(sign * (h * 3600 + m * 60))));
    }
    Some((s, None))
}

/// `05:30`, `05:30:00`, `05:30:00.123`.
fn clock(s: &str) -> Option<(u32, u32, u32, Unit)> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str| -> Option<u32> {
        (!p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    match parts.as_slice() {
        [h, m] => Some((num(h)?, num(m)?, 0, Unit::Minute)),
        [h, m, sec] => {
            let whole = sec.split('.').next()?;
            if let Some(f) = sec.split_once('.').map(|x| x.1)
                && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            Some((num(h)?, num(m)?, num(whole)?, Unit::Second))
        }
        _ => None,
    }
}

/// The fractional seconds of an ISO time, in microseconds.
fn iso_fraction(s: &str) -> i64 {
    let Some((_, f)) = s.split_once('.') else {
        return 0;
    };
    let digits: String = f
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .take(6)
        .collect();
    format!("{digits:0<6}").parse().unwrap_or(0)
}

/// `nov 22 05:30:00`, `nov 22 05:30`, `nov 22`, `sun nov 22 05:30:00`
/// (lower case): the latest such time not after tomorrow.
fn syslog(s: &str, today: Civil, now_us: i64) -> Option<(Civil, Unit)> {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    if words.len() >= 3 && ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&words[0]) {
        words.remove(0);
    }
    let (mon, day, time) = match words.as_slice() {
        [m, d] => (*m, *d, None),
        [m, d, t] => (*m, *d, Some(*t)),
        _ => return None,
    };
    let month = MONTHS
        .iter()
        .position(|m| mon.starts_with(m) && mon.len() >= 3)? as u32
        + 1;
    let day: u32 = day.parse().ok()?;
    let (hour, min, sec, unit) = match time {
        Some(t) => clock(t)?,
        None => (0, 0, 0, Unit::Day),
    };
    let mut c = Civil {
        year: today.year,
        month,
        day,
        hour,
        min,
        sec,
    };
    // Syslog stamps have no year: a date in the future is last year's.
    if local_seconds(c).is_some_and(|t| t * 1_000_000 > now_us + 86_400_000_000) {
        c.year -= 1;
    }
    Some((c, unit))
}

fn add_secs(c: Civil, n: i64) -> Civil {
    civil_of_utc((utc_seconds(c) + n) * 1_000_000)
}

fn add_days(c: Civil, n: i64) -> Civil {
    add_secs(c, n * 86400)
}

/// Seconds since the epoch of `c` read as UTC (pure arithmetic).
fn utc_seconds(c: Civil) -> i64 {
    // Days from civil, after Howard Hinnant's algorithm.
    let y = i64::from(c.year) - i64::from(c.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(c.month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(c.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86400 + i64::from(c.hour) * 3600 + i64::from(c.min) * 60 + i64::from(c.sec)
}

fn civil_of_utc(us: i64) -> Civil {
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        min: (rem % 3600 / 60) as u32,
        sec: (rem % 60) as u32,
    }
}

/// Seconds since the epoch of local time `c` (mktime; `None` if it has no
/// representation).
fn local_seconds(c: Civil) -> Option<i64> {
    // SAFETY: a zeroed tm is valid; mktime reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = c.year - 1900;
    tm.tm_mon = c.month as i32 - 1;
    tm.tm_mday = c.day as i32;
    tm.tm_hour = c.hour as i32;
    tm.tm_min = c.min as i32;
    tm.tm_sec = c.sec as i32;
    tm.tm_isdst = -1;
    // SAFETY: tm is a live, initialised local.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

/// Local broken-down time and UTC offset (seconds east) of `us`.
fn local_tm(us: i64) -> (Civil, i64) {
    let secs = us.div_euclid(1_000_000) as libc::time_t;
    // SAFETY: a zeroed tm is a valid out-parameter for localtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return (civil_of_utc(us), 0);
    }
    (
        Civil {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            min: tm.tm_min as u32,
            sec: tm.tm_sec as u32,
        },
        tm.tm_gmtoff,
    )
}

fn civil_of(us: i64) -> Civil {
    local_tm(us).0
}

fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// `2026-11-22 05:30:00` in local time (the table).
pub fn table(us: i64) -> String {
    let c = civil_of(us);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

/// `2026-11-22T05:30:00+01:00`: ISO 8601 in local time with its offset
/// (CSV and JSON).
pub fn iso8601(us: i64) -> String {
    let (c, off) = local_tm(us);
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.min,
        c.sec,
        off / 3600,
        off % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        fn tzset();
    }

    /// 2026-11-22 05:30:00 UTC, a Sunday.
    const NOW: u64 = 1_795_325_400;

    #[test]
    fn forms() {
        // SAFETY: tests in this module read TZ only through libc in this thread.
        unsafe { std::env::set_var("TZ", "UTC") };
        // SAFETY: tzset only re-reads TZ.
        unsafe { tzset() };
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let p = |s: &str| parse(s, now, false).unwrap() / 1_000_000;
        let u = |s: &str| parse(s, now, true).unwrap() / 1_000_000;
        let n = 1_795_325_400;
        assert_eq!(p("now"), n);
        assert_eq!(p("2h"), n - 7200);
        assert_eq!(p("2h ago"), n - 7200);
        assert_eq!(p("7d"), n - 7 * 86400);
        assert_eq!(p("1w"), n - 7 * 86400);
        assert_eq!(p("30m"), n - 1800);
        assert_eq!(p("@1795325400"), n);
        assert_eq!(p("today"), n - 5 * 3600 - 1800);
        assert_eq!(p("yesterday"), n - 86400 - 5 * 3600 - 1800);
        assert_eq!(u("yesterday"), n - 5 * 3600 - 1800);
        assert_eq!(p("2026-11-22"), n - 5 * 3600 - 1800);
        assert_eq!(u("2026-11-22"), n - 5 * 3600 - 1800 + 86400);
        assert_eq!(p("2026-11-22 05:30"), n);
        assert_eq!(u("2026-11-22 05:30"), n + 60);
        assert_eq!(p("2026-11-22T05:30:00"), n);
        assert_eq!(u("2026-11-22T05:30:00"), n + 1);
        assert_eq!(p("2026-11-22T06:30:00+01:00"), n);
        assert_eq!(p("2026-11-22T05:30:00Z"), n);
        assert_eq!(
            parse("2026-11-22T05:30:00.25Z", now, true).unwrap(),
            n * 1_000_000 + 250_000
        );
        assert_eq!(p("Nov 22 05:30:00"), n);
        assert_eq!(p("Sun Nov 22 05:30:00"), n);
        assert_eq!(p("nov 22"), n - 5 * 3600 - 1800);
        assert_eq!(u("Nov 22 05:30"), n + 60);
        assert_eq!(p("05:30"), n);
        // A syslog date later than tomorrow is last year's.
        assert_eq!(p("Dec 25"), p("2025-12-25"));
        for bad in [
            "",
            "soon",
            "2026-13-01",
            "25:00",
            "Foo 22",
            "2026-11-22X",
            "3x",
        ] {
            assert!(parse(bad, now, false).is_err(), "{bad}");
        }
        assert_eq!(table(n * 1_000_000), "2026-11-22 05:30:00");
        assert_eq!(iso8601(n * 1_000_000), "2026-11-22T05:30:00+00:00");
    }

    #[test]
    fn civil_round_trips() {
        for us in [
            0i64,
            951_782_400_000_000,
            1_795_325_400_000_000,
            -86_400_000_000,
        ] {
            assert_eq!(utc_seconds(civil_of_utc(us)) * 1_000_000, us);
        }
    }
}
