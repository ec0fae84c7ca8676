//! Exchange Online's reply texts (OFFICE365.md §2, §5, §7) and the dates
//! and ids they carry.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::{EnhancedCode, Reply};

use super::config::{FakeConfig, Profile};
use super::oauth::TokenError;
use super::script::parse_reply;

// ---- the catalogue of §5, verbatim ------------------------------------------
//
// Each constant is the exact text of OFFICE365.md §5 (or §3/§4.2) without
// the variable ` [host time id]` suffix; where the document shows `...`,
// the constant stops there. Script them with
// `Action::text(replies::X).with_suffix()` (or `Action::exo(replies::X)`),
// e.g. `fake.on_mailbox("a@b", Phase::DataEnd, Action::exo(replies::SUBMISSION_QUOTA))`.

/// Bad password or token (§5 row 1).
pub const AUTH_UNSUCCESSFUL: &str = "535 5.7.3 Authentication unsuccessful";
/// SMTP AUTH disabled for the tenant.
pub const SMTP_AUTH_DISABLED_TENANT: &str = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.";
/// SMTP AUTH disabled for the mailbox (the rest of the text was not
/// captured; modelled on the tenant form [U]).
pub const SMTP_AUTH_DISABLED_MAILBOX: &str = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.";
/// Basic auth blocked by policy or retired.
pub const BASIC_AUTH_DISABLED: &str =
    "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.";
/// Security defaults on.
pub const SECURITY_DEFAULTS: &str = "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.";
/// Conditional Access blocks legacy auth.
pub const CONDITIONAL_ACCESS: &str = "535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator.";
/// Wrong password.
pub const BAD_CREDENTIALS: &str =
    "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect.";
/// Entra smart lockout.
pub const ACCOUNT_LOCKED: &str =
    "535 5.7.139 Authentication unsuccessful, account locked. Contact your administrator.";
/// Account problem.
pub const ACCOUNT_ISSUE: &str =
    "535 5.7.139 Authentication unsuccessful, account has an issue. Contact your administrator.";
/// ADFS unreachable.
pub const FEDERATED_STS_UNREACHABLE: &str =
    "535 5.7.139 Authentication unsuccessful, federated STS service was unreachable.";
/// ADFS without HTTPS.
pub const FEDERATED_STS_NOT_HTTPS: &str =
    "535 5.7.139 Authentication unsuccessful, the federated STS URL does not support HTTPS.";
/// Basic auth retired for the tenant.
pub const BASIC_AUTH_RETIRED: &str =
    "550 5.7.30 Basic authentication is not supported for Client Submission.";
/// AUTH over TLS 1.0/1.1.
pub const TLS_TOO_OLD: &str = "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls.";
/// Legacy endpoint without the tenant opt-in (text after the code [S]).
pub const TLS_LEGACY_NOT_ALLOWED: &str =
    "421 4.7.67 TLS 1.0 and 1.1 are not supported by your organization";
/// Mechanism not offered.
pub const UNRECOGNIZED_AUTH: &str = "504 5.7.4 Unrecognized authentication type";
/// MAIL without AUTH.
pub const NOT_AUTHENTICATED: &str = "530 5.7.57 Client not authenticated to send mail.";
/// MAIL without AUTH, older text.
pub const NOT_AUTHENTICATED_OLD: &str =
    "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM";
/// Header From not allowed.
pub const SEND_AS_DENIED: &str =
    "550 5.7.60 SMTP; Client does not have permissions to send as this sender";
/// Send-as denied, STOREDRV form.
pub const SEND_AS_DENIED_STOREDRV: &str = "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message Cannot submit message.";
/// Continuous mailbox-full errors.
pub const THROTTLED_MAILBOX_FULL: &str =
    "550 5.2.251 Sender throttled due to continuous mailbox full errors.";
/// Continuous send-as errors.
pub const THROTTLED_SEND_AS: &str =
    "550 5.2.252 Sender throttled due to continuous send as denied errors.";
/// Continuous invalid-licence errors.
pub const THROTTLED_LICENSE: &str =
    "550 5.2.253 Sender throttled due to continuous invalid license errors.";
/// Continuous too-many-recipients errors.
pub const THROTTLED_TOO_MANY_RECIPIENTS: &str =
    "550 5.2.254 Sender throttled due to continuous too many recipients errors.";
/// Continuous invalid-recipient errors.
pub const THROTTLED_INVALID_RECIPIENTS: &str =
    "550 5.2.255 Sender throttled due to continuous invalid recipients errors.";
/// More than 3 sessions per mailbox, older text.
pub const CONCURRENCY_OLD: &str = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded";
/// More than 3 sessions per mailbox, current text (without `[Hostname=..]`).
pub const CONCURRENCY: &str = "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.";
/// Recipient rate limit, long form.
pub const SUBMISSION_QUOTA: &str = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message The message can't be submitted because the sender's submission quota was exceeded.";
/// Recipient rate limit, short form.
pub const SUBMISSION_QUOTA_SHORT: &str =
    "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException";
/// Recipient rate limit as an NDR.
pub const RRL_NDR: &str = "550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients";
/// Restricted sender (outbound spam).
pub const BAD_OUTBOUND_SENDER: &str = "550 5.1.8 Access denied, bad outbound sender";
/// Mailbox full (Sent Items).
pub const MAILBOX_FULL: &str = "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded";
/// App without FullAccess on the mailbox (the middle of the text was not
/// captured; `MapiExceptionLogonFailed` ends it [O9]).
pub const LOGON_FAILURE: &str = "430 4.2.0 STOREDRV; mailbox logon failure; Failed to process message due to a transient exception with message MapiExceptionLogonFailed";
/// mx: relay not attributed to the tenant.
pub const TENANT_ATTRIBUTION: &str = "550 5.7.64 TenantAttribution; Relay Access Denied";
/// mx: attributed, but the sender domain is not accepted.
pub const RELAY_DENIED_ATTR36: &str = "550 5.7.64 Relay Access Denied ATTR36";
/// mx: wrong region.
pub const WRONG_REGION: &str = "451 4.4.62 Mail sent to the wrong Office 365 region. ATTR35.";
/// mx: RejectDirectSend.
pub const DIRECT_SEND_REJECTED: &str = "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources";
/// mx: resource forest overloaded (at connect).
pub const FOREST_CONCURRENCY: &str = "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel.";
/// Service-side temporary error.
pub const PRX4: &str = "451 4.7.0 Temporary server error. Please try again later. PRX4";
/// mx: recipient not in the tenant (directory-based edge blocking).
pub const RECIPIENT_REJECTED: &str = "550 5.4.1 Recipient address rejected: Access denied. For more information see https://aka.ms/EXOSmtpErrors";
/// Tenant outbound block.
pub const TENANT_THRESHOLD: &str = "550 5.7.705 Access denied, tenant has exceeded threshold.";
/// Low-reputation IP.
pub const IP_NOT_ACCEPTED: &str = "550 5.7.708 Access denied, traffic not accepted from this IP.";
/// Volume from non-accepted domains.
pub const UNREGISTERED_DOMAIN: &str =
    "550 5.7.750 Client blocked from sending from unregistered domain";
/// Tenant external recipient rate limit (NDR).
pub const TERRL: &str = "550 5.7.233 Your message can't be sent because your tenant exceeded its daily limit for sending email to external recipients (tenant external recipient rate limit)";
/// onmicrosoft.com sender limit (NDR).
pub const MOERA: &str = "550 5.7.236 Your message can't be sent because your tenant has exceeded its daily limit for sending email to external recipients from your tenant's onmicrosoft.com domains";
/// Multiple From without Sender.
pub const MULTIPLE_FROM: &str =
    "550 5.1.20 Multiple From addresses are not allowed without Sender address";
/// No valid From.
pub const NOT_RFC5322: &str = "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant and include a valid From address";
/// External forwarding blocked.
pub const EXTERNAL_FORWARDING: &str =
    "550 5.7.520 Access denied, Your organization does not allow external forwarding";
/// Header too big.
pub const HEADER_TOO_BIG: &str = "552 5.3.4 Header size exceeds fixed maximum size";
/// HVE: token about to expire.
pub const HVE_TOKEN_EXPIRES_SOON: &str = "535 5.7.142 Token will expire soon";
/// HVE: expired token.
pub const HVE_TOKEN_EXPIRED: &str = "535 5.7.143 Expired token";
/// HVE: missing API permission.
pub const HVE_BAD_PERMISSIONS: &str =
    "535 5.7.144 XOAUTH2 authentication failed. Invalid API permissions";
/// HVE: app not allowed for the account.
pub const HVE_APP_NOT_ALLOWED: &str =
    "550 5.7.240 The application is not allowed for use with this High Volume Email account";
/// HVE: external recipient (the real text is unknown [U]).
pub const HVE_EXTERNAL_RECIPIENT: &str =
    "550 5.7.1 External recipients are not allowed for this High Volume Email account";
/// Recipients per message over the limit (the real reply is unknown [U]).
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Too many recipients";

/// The 550 5.7.606 banned-IP reply for `ip`.
pub fn banned_ip_text(ip: &str) -> String {
    format!(
        "550 5.7.606 Access denied, banned sending IP [{ip}]. To request removal from this list please visit https://sender.office.com/ and follow the directions."
    )
}

/// The 451 4.7.500 graylisting reply for `ip`.
pub fn server_busy_text(ip: &str) -> String {
    format!("451 4.7.500 Server busy. Please try again later from [{ip}].")
}

/// The newer `554 5.2.252 SendAsDenied` text for `auth` sending as `from`.
pub fn send_as_denied_new_text(auth: &str, from: &str) -> String {
    format!(
        "554 5.2.252 SendAsDenied; {auth} not allowed to send as {from}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message."
    )
}

/// `text` (one of the constants) followed by the error suffix.
pub fn with_suffix(cfg: &FakeConfig, text: &str) -> Reply {
    let mut r = parse_reply(text);
    append_suffix(cfg, &mut r);
    r
}

/// Appends ` [<HOST> <time> <id>]` to the last line of `r`.
pub fn append_suffix(cfg: &FakeConfig, r: &mut Reply) {
    let sfx = suffix(cfg);
    match r.lines.last_mut() {
        Some(l) => l.push_str(&sfx),
        None => r.lines.push(sfx.trim_start().to_string()),
    }
}

/// `550 5.7.60 SMTP; Client does not have permissions to send as this sender [...]`.
pub fn send_as_denied(cfg: &FakeConfig) -> Reply {
    with_suffix(cfg, SEND_AS_DENIED)
}

/// `554 5.2.0 ...SubmissionQuotaExceededException; ... [Hostname=HOST]`
/// (the STOREDRV replies end with `[Hostname=...]`, as the 432 does).
pub fn submission_quota(cfg: &FakeConfig) -> Reply {
    let mut r = parse_reply(SUBMISSION_QUOTA);
    if let Some(l) = r.lines.last_mut() {
        l.push_str(&format!(" [Hostname={}]", cfg.hostname));
    }
    r
}

/// `550 5.7.64 TenantAttribution; Relay Access Denied [...]`.
pub fn tenant_attribution(cfg: &FakeConfig) -> Reply {
    with_suffix(cfg, TENANT_ATTRIBUTION)
}

/// `550 5.7.64 Relay Access Denied ATTR36 [...]`.
pub fn relay_denied_attr36(cfg: &FakeConfig) -> Reply {
    with_suffix(cfg, RELAY_DENIED_ATTR36)
}

/// `550 5.7.68 TenantInboundAttribution; ... [...]`.
pub fn direct_send_rejected(cfg: &FakeConfig) -> Reply {
    with_suffix(cfg, DIRECT_SEND_REJECTED)
}

/// `550 5.4.1 Recipient address rejected: Access denied. ... [...]`.
pub fn recipient_rejected(cfg: &FakeConfig) -> Reply {
    with_suffix(cfg, RECIPIENT_REJECTED)
}

/// The reply to a refused XOAUTH2 attempt: `535 5.7.3 Authentication
/// unsuccessful [...]` on submission; on HVE the specific codes of §4.2
/// (which 5.5.12x means which malformation is not documented [U]).
pub fn xoauth2_refused(cfg: &FakeConfig, err: &TokenError) -> Reply {
    if let TokenError::Refused(r) = err {
        return r.clone();
    }
    if cfg.profile != Profile::Hve {
        return auth_token_refused(cfg);
    }
    match err {
        TokenError::Malformed(what) => {
            let (detail, text) = match *what {
                "base64" | "terminator" => (121, "Invalid XOAUTH2 argument"),
                "user" => (122, "XOAUTH2 argument missing user"),
                "auth" => (123, "XOAUTH2 argument missing Bearer"),
                _ => (124, "XOAUTH2 argument missing token"),
            };
            Reply::new(501, e(5, 5, detail), &format!("{text}{}", suffix(cfg)))
        }
        TokenError::Expired { .. } => with_suffix(cfg, HVE_TOKEN_EXPIRED),
        TokenError::ExpiresSoon { .. } => with_suffix(cfg, HVE_TOKEN_EXPIRES_SOON),
        TokenError::Permission(_) => with_suffix(cfg, HVE_BAD_PERMISSIONS),
        TokenError::AppNotAllowed(_) => with_suffix(cfg, HVE_APP_NOT_ALLOWED),
        _ => auth_token_refused(cfg),
    }
}

/// `454 4.7.0 Temporary authentication failure` (ACS could not reach the
/// token service; the real reply is unknown [U]).
pub fn temp_auth_failure(cfg: &FakeConfig) -> Reply {
    Reply::new(
        454,
        e(4, 7, 0),
        &format!("Temporary authentication failure{}", suffix(cfg)),
    )
}

/// `550 5.7.1 Sender is not a provisioned MailFrom address` (acs; the real
/// reply is unknown [U]).
pub fn acs_sender_refused(cfg: &FakeConfig) -> Reply {
    Reply::new(
        550,
        e(5, 7, 1),
        &format!(
            "Sender is not a provisioned MailFrom address{}",
            suffix(cfg)
        ),
    )
}

/// `452 4.5.3 Too many recipients`.
pub fn too_many_recipients() -> Reply {
    parse_reply(TOO_MANY_RECIPIENTS)
}

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
