//! Time formats: syslog stamps, RFC 5322 dates and mailq's arrival column,
//! in local time as Postfix prints them.

use std::time::{SystemTime, UNIX_EPOCH};

fn strftime(t: SystemTime, fmt: &str) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: zeroed tm is a valid out-parameter; localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return String::new();
    }
    let cfmt = match std::ffi::CString::new(fmt) {
        Ok(c) => c,
        Err(_) => return String::new(),
    };
    let mut buf = [0u8; 128];
    // SAFETY: buf is writable for its length; strftime NUL-terminates within it.
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            cfmt.as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `Nov 22 05:50:00` (day padded with a space), as in syslog lines.
pub fn syslog_stamp(t: SystemTime) -> String {
    strftime(t, "%b %e %H:%M:%S")
}

/// `Sun, 22 Nov 2026 05:50:00 +0000 (UTC)`, as Postfix writes Date: headers.
pub fn rfc2822_date(t: SystemTime) -> String {
    // RFC 5322 day and month names are English; strftime's %a/%b follow the
    // C locale, which these programs never change.
    // Postfix uses %e, so early days of the month get two spaces ("Mon,  2 Nov").
    strftime(t, "%a, %e %b %Y %H:%M:%S %z (%Z)")
}

/// `Sun Nov 22 05:50:00`: the arrival column of mailq (asctime's first 19 characters).
pub fn mailq_stamp(t: SystemTime) -> String {
    strftime(t, "%a %b %e %H:%M:%S")
}

/// `20261122055000`: GMT stamp used in generated Message-IDs.
pub fn message_id_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: as in strftime above, with gmtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals.
    if unsafe { libc::gmtime_r(&secs, &mut tm) }.is_null() {
        return "0".into();
    }
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Microseconds since the epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The time `us` microseconds after the epoch.
pub fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64)
}

/// `Nov 02 05:50:00` (two-digit day), as Postfix writes maillog_file lines.
pub fn file_stamp(t: SystemTime) -> String {
    strftime(t, "%b %d %H:%M:%S")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        // SAFETY: tests in this process do not depend on TZ concurrently.
        unsafe { std::env::set_var("TZ", "UTC") };
        let t = UNIX_EPOCH + Duration::from_secs(1_795_325_400); // 2026-11-22 05:30:00 UTC
        assert_eq!(syslog_stamp(t), "Nov 22 05:30:00");
        assert_eq!(rfc2822_date(t), "Sun, 22 Nov 2026 05:30:00 +0000 (UTC)");
        assert_eq!(mailq_stamp(t), "Sun Nov 22 05:30:00");
        assert_eq!(message_id_stamp(t), "20261122053000");
        let t2 = UNIX_EPOCH + Duration::from_secs(1_793_590_200); // 2026-11-02 03:30:00 UTC
        assert_eq!(syslog_stamp(t2), "Nov  2 03:30:00");
        assert_eq!(rfc2822_date(t2), "Mon,  2 Nov 2026 03:30:00 +0000 (UTC)");
        assert_eq!(from_micros(micros(t)), t);
    }
}
