//! Exchange Online's reply texts (OFFICE365.md §2, §5, §7) and the dates
//! and ids they carry.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::{EnhancedCode, Reply};

use super::config::FakeConfig;

fn e(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(class, subject, detail))
}

/// 16 random upper-case hex digits, like Exchange's session ids.
pub fn hex_id() -> String {
    let mut b = [0u8; 8];
    // rand_bytes fails only when OpenSSL's RNG cannot be seeded, which
    // would break every TLS test anyway.
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL RNG");
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The error suffix ` [<HOST> <ISO-8601 ms Z> <16 hex>]` (§7).
pub fn suffix(cfg: &FakeConfig) -> String {
    format!(" [{} {} {}]", cfg.hostname, iso_now(), hex_id())
}

/// `220 <HOST> Microsoft ESMTP MAIL Service ready at <RFC 1123> [<hex>]`.
pub fn greeting(cfg: &FakeConfig) -> Reply {
    let mut text = format!(
        "{} Microsoft ESMTP MAIL Service ready at {}",
        cfg.hostname,
        rfc1123_now()
    );
    if cfg.greeting_id {
        text.push_str(&format!(" [{}]", hex_id()));
    }
    Reply::new(220, None, &text)
}

/// The EHLO reply of §2; `tls` selects the after-STARTTLS form.
pub fn ehlo(cfg: &FakeConfig, peer_ip: &str, tls: bool) -> Reply {
    let mut lines = vec![
        format!("{} Hello [{peer_ip}]", cfg.hostname),
        format!("SIZE {}", cfg.max_size),
        "PIPELINING".into(),
        "DSN".into(),
        "ENHANCEDSTATUSCODES".into(),
    ];
    if !tls && cfg.offers_starttls() {
        lines.push("STARTTLS".into());
    }
    if (tls || !cfg.auth_requires_tls) && !cfg.auth_mechanisms.is_empty() {
        lines.push(format!("AUTH {}", cfg.auth_mechanisms.join(" ")));
    }
    lines.extend(
        ["8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"]
            .iter()
            .map(|s| s.to_string()),
    );
    Reply {
        code: 250,
        enhanced: None,
        lines,
    }
}

/// HELO: one line, no extensions.
pub fn helo(cfg: &FakeConfig, peer_ip: &str) -> Reply {
    Reply::new(250, None, &format!("{} Hello [{peer_ip}]", cfg.hostname))
}

/// `220 2.0.0 SMTP server ready`.
pub fn starttls_ready() -> Reply {
    Reply::new(220, e(2, 0, 0), "SMTP server ready")
}

/// `235 2.7.0 Authentication successful`.
pub fn auth_ok() -> Reply {
    Reply::new(235, e(2, 7, 0), "Authentication successful")
}

/// `535 5.7.139 Authentication unsuccessful, the user credentials were incorrect. [...]`.
pub fn auth_bad_credentials(cfg: &FakeConfig) -> Reply {
    Reply::new(
        535,
        e(5, 7, 139),
        &format!(
            "Authentication unsuccessful, the user credentials were incorrect.{}",
            suffix(cfg)
        ),
    )
}

/// `535 5.7.3 Authentication unsuccessful [...]` (XOAUTH2 refused).
pub fn auth_token_refused(cfg: &FakeConfig) -> Reply {
    Reply::new(
        535,
        e(5, 7, 3),
        &format!("Authentication unsuccessful{}", suffix(cfg)),
    )
}

/// `504 5.7.4 Unrecognized authentication type`.
pub fn auth_unrecognized() -> Reply {
    Reply::new(504, e(5, 7, 4), "Unrecognized authentication type")
}

/// `421 4.7.66 TLS 1.0 and 1.1 are not supported. ...` (AUTH over old TLS).
pub fn tls_too_old(cfg: &FakeConfig) -> Reply {
    Reply::new(
        421,
        e(4, 7, 66),
        &format!(
            "TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls.{}",
            suffix(cfg)
        ),
    )
}

/// `530 5.7.57 Client not authenticated to send mail. [...]`.
pub fn not_authenticated(cfg: &FakeConfig) -> Reply {
    Reply::new(
        530,
        e(5, 7, 57),
        &format!("Client not authenticated to send mail.{}", suffix(cfg)),
    )
}

/// `250 2.1.0 Sender OK`.
pub fn sender_ok() -> Reply {
    Reply::new(250, e(2, 1, 0), "Sender OK")
}

/// `250 2.1.5 Recipient OK`.
pub fn recipient_ok() -> Reply {
    Reply::new(250, e(2, 1, 5), "Recipient OK")
}

/// `354 Start mail input; end with <CRLF>.<CRLF>`.
pub fn start_input() -> Reply {
    Reply::new(354, None, "Start mail input; end with <CRLF>.<CRLF>")
}

/// `250 2.0.0 OK <id> [Hostname=HOST]`; `id` includes the angle brackets.
pub fn queued(cfg: &FakeConfig, id: &str) -> Reply {
    Reply::new(
        250,
        e(2, 0, 0),
        &format!("OK {id} [Hostname={}]", cfg.hostname),
    )
}

/// A new `<16hex@HOST>` id for [`queued`].
pub fn message_id(cfg: &FakeConfig) -> String {
    format!("<{}@{}>", hex_id(), cfg.hostname)
}

/// `250 2.0.0 <n> bytes received` after a BDAT chunk that is not LAST
/// (the real text was never captured, §6.6).
pub fn chunk_ok(size: u64) -> Reply {
    Reply::new(250, e(2, 0, 0), &format!("{size} bytes received"))
}

/// `432 4.3.2 Concurrent connections limit exceeded. ...` (§3).
pub fn concurrency_exceeded(cfg: &FakeConfig) -> Reply {
    Reply::new(
        432,
        e(4, 3, 2),
        &format!(
            "Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname={}]",
            cfg.hostname
        ),
    )
}

/// `552 5.3.4 Message size exceeds fixed maximum message size`.
pub fn too_big() -> Reply {
    Reply::new(
        552,
        e(5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}

/// `250 2.0.0 Resetting`.
pub fn resetting() -> Reply {
    Reply::new(250, e(2, 0, 0), "Resetting")
}

/// `250 2.0.0 OK` (NOOP).
pub fn ok() -> Reply {
    Reply::new(250, e(2, 0, 0), "OK")
}

/// `221 2.0.0 Service closing transmission channel`.
pub fn closing() -> Reply {
    Reply::new(221, e(2, 0, 0), "Service closing transmission channel")
}

/// `500 5.3.3 Unrecognized command`.
pub fn unrecognized() -> Reply {
    Reply::new(500, e(5, 3, 3), "Unrecognized command")
}

/// `501 5.5.4 Invalid arguments`.
pub fn invalid_arguments() -> Reply {
    Reply::new(501, e(5, 5, 4), "Invalid arguments")
}

/// `503 5.5.2 <text>` (bad sequence; the texts are guesses, §7 marks them unverified).
pub fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, e(5, 5, 2), text)
}

/// `252 2.1.5 Cannot VRFY user`.
pub fn cannot_vrfy() -> Reply {
    Reply::new(252, e(2, 1, 5), "Cannot VRFY user")
}

/// `451 4.7.0 Timeout waiting for client input`.
pub fn timeout() -> Reply {
    Reply::new(451, e(4, 7, 0), "Timeout waiting for client input")
}

/// `500 5.3.3 Line too long`.
pub fn line_too_long() -> Reply {
    Reply::new(500, e(5, 3, 3), "Line too long")
}

/// `501 5.5.2 Cannot Decode response` (malformed SASL data).
pub fn cannot_decode() -> Reply {
    Reply::new(501, e(5, 5, 2), "Cannot Decode response")
}

/// `501 5.0.0 Authentication aborted` (the client sent `*`).
pub fn auth_aborted() -> Reply {
    Reply::new(501, e(5, 0, 0), "Authentication aborted")
}

/// Seconds and milliseconds since the epoch.
fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_millis())
}

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `Sun, 23 Nov 2025 11:12:20 +0000` for `secs` since the epoch.
pub fn rfc1123(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let t = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[m as usize - 1],
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// `2024-03-20T10:27:56.998Z`.
pub fn iso8601(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let t = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

fn rfc1123_now() -> String {
    rfc1123(now().0)
}

fn iso_now() -> String {
    let (s, ms) = now();
    iso8601(s, ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc1123(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        // The O11 session: Sun, 23 Nov 2025 11:12:20 +0000.
        assert_eq!(rfc1123(1_763_896_340), "Sun, 23 Nov 2025 11:12:20 +0000");
        assert_eq!(iso8601(1_710_930_476, 998), "2024-03-20T10:27:56.998Z");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn hex_ids() {
        let id = hex_id();
        assert_eq!(id.len(), 16);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
    }
}
