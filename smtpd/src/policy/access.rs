//! check_*_access: the keys Postfix looks up in an access table, in order,
//! and what a result means (access(5)).
//!
//! Search orders (key/value tables get every key; pattern tables — regexp,
//! pcre, cidr — only the first, "full" one):
//!
//! - host and HELO names ([`find_domain`]): the name, then its parent
//!   domains (`.parent` entries, or bare `parent` when smtpd_access_maps is
//!   in parent_domain_matches_subdomains); not for numeric names;
//! - client addresses ([`find_addr`]): `1.2.3.4`, `1.2.3`, `1.2`, `1`, and
//!   for IPv6 the address cut at each `:` from the right;
//! - clients ([`find_client`]): the host name search, then the address
//!   search;
//! - mail addresses ([`find_mail`]): `user+ext@domain`, `user@domain`
//!   (with recipient_delimiter), the domain and its parents, then
//!   `user+ext@` and `user@`.

use super::networks::lookup;
use super::relay::valid_hostaddr;
use conf::Error;
use conf::tables::Table;

/// A table hit: the value found, if any.
pub(crate) type Hit = Option<String>;

/// Postfix check_domain_access(): the name, then its parents.
///
/// # Errors
/// A lookup failed.
pub(crate) fn find_domain(t: &dyn Table, domain: &str, parent: bool) -> Result<Hit, Error> {
    let mut name = domain;
    let mut full = true;
    while !name.is_empty() {
        if let Some(v) = lookup(t, name, full)? {
            return Ok(Some(v));
        }
        // No subdomain magic for numeric host names.
        if valid_hostaddr(domain) {
            break;
        }
        let skip = name.chars().next().map_or(0, char::len_utf8);
        let Some(dot) = name[skip..].find('.').map(|d| d + skip) else {
            break;
        };
        name = if parent {
            &name[dot + 1..]
        } else {
            &name[dot..]
        };
        full = false;
    }
    Ok(None)
}

/// Postfix check_addr_access(): the address, then shorter prefixes cut at
/// `.` (IPv4) or `:` (IPv6).
///
/// # Errors
/// A lookup failed.
pub(crate) fn find_addr(t: &dyn Table, addr: &str) -> Result<Hit, Error> {
    let delim = if addr.contains(':') { ':' } else { '.' };
    let mut key = addr;
    let mut full = true;
    loop {
        if let Some(v) = lookup(t, key, full)? {
            return Ok(Some(v));
        }
        full = false;
        match key.rfind(delim) {
            Some(i) => key = &key[..i],
            None => return Ok(None),
        }
    }
}

/// Postfix check_namadr_access(): the host name search, then the address
/// search.
///
/// # Errors
/// A lookup failed.
pub(crate) fn find_client(
    t: &dyn Table,
    name: &str,
    addr: &str,
    parent: bool,
) -> Result<Hit, Error> {
    if let Some(v) = find_domain(t, name, parent)? {
        return Ok(Some(v));
    }
    find_addr(t, addr)
}

/// Postfix check_mail_access() with mail_addr_find(): `addr` is the
/// resolved address (internal form, lower case, with `@domain`).
///
/// # Errors
/// A lookup failed.
pub(crate) fn find_mail(
    t: &dyn Table,
    addr: &str,
    parent: bool,
    delimiters: &str,
) -> Result<Hit, Error> {
    let Some(at) = addr.rfind('@') else {
        return lookup(t, &quote_local(addr), true);
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    let full = format!("{}@{domain}", quote_local(local));
    if let Some(v) = lookup(t, &full, true)? {
        return Ok(Some(v));
    }
    let bare_local = strip_extension(local, delimiters);
    if let Some(b) = &bare_local
        && let Some(v) = lookup(t, &format!("{}@{domain}", quote_local(b)), false)?
    {
        return Ok(Some(v));
    }
    let mut name = domain;
    while !name.is_empty() {
        if let Some(v) = lookup(t, name, false)? {
            return Ok(Some(v));
        }
        let skip = name.chars().next().map_or(0, char::len_utf8);
        let Some(dot) = name[skip..].find('.').map(|d| d + skip) else {
            break;
        };
        name = if parent {
            &name[dot + 1..]
        } else {
            &name[dot..]
        };
    }
    if let Some(v) = lookup(t, &format!("{}@", quote_local(local)), false)? {
        return Ok(Some(v));
    }
    if let Some(b) = &bare_local {
        return lookup(t, &format!("{}@", quote_local(b)), false);
    }
    Ok(None)
}

/// The local part as it is written in a table key (quoted when it is not
/// a dot-atom), as Postfix's external query form.
pub(crate) fn quote_local(local: &str) -> String {
    if local.is_empty() {
        return String::new();
    }
    proto::address::Mailbox::new(local, None).quoted_local()
}

/// Postfix strip_addr(): the local part without its address extension
/// (`user+ext` → `user`), or `None` when there is none to strip.
fn strip_extension(local: &str, delimiters: &str) -> Option<String> {
    if delimiters.is_empty() {
        return None;
    }
    let lower = local.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "postmaster" | "mailer-daemon" | "double-bounce"
    ) {
        return None;
    }
    if delimiters.contains('-')
        && (lower.starts_with("owner-") || (lower.len() > 8 && lower.ends_with("-request")))
    {
        return None;
    }
    let pos = local.find(|c| delimiters.contains(c))?;
    if pos == 0 {
        return None;
    }
    Some(local[..pos].to_string())
}

/// What an access table result says (access(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// `OK`, `RELAY`, or an all-numeric value.
    Ok,
    /// `DUNNO`.
    Dunno,
    /// `REJECT [text]`: access_map_reject_code, default DSN 5.7.1.
    Reject(String),
    /// `DEFER [text]`: access_map_defer_code, default DSN 4.7.1.
    Defer(String),
    /// `DEFER_IF_PERMIT [text]`.
    DeferIfPermit(String),
    /// `DEFER_IF_REJECT [text]`.
    DeferIfReject(String),
    /// `4NN text` or `5NN text`.
    Code(u16, String),
    /// `WARN [text]`: log only.
    Warn(String),
    /// `INFO [text]`: log only.
    Info(String),
    /// A Postfix action postern does not implement (HOLD, DISCARD, FILTER,
    /// REDIRECT, BCC, PREPEND, HANGUP): logged and ignored.
    Unsupported(String),
    /// A value naming a lookup table: a configuration error.
    TableInValue,
    /// Anything else: a list of restrictions to evaluate.
    Restrictions(String),
}

/// Parses a table result as Postfix's check_table_result() does.
pub(crate) fn parse_action(value: &str) -> Action {
    let cmd_end = value.find([' ', '\t']).unwrap_or(value.len());
    let cmd = &value[..cmd_end];
    let text = value[cmd_end..].trim_start_matches([' ', '\t']).to_string();
    let is = |w: &str| cmd.eq_ignore_ascii_case(w);
    if is("DUNNO") {
        return Action::Dunno;
    }
    if is("REJECT") {
        return Action::Reject(text);
    }
    if is("DEFER") {
        return Action::Defer(text);
    }
    if is("INFO") {
        return Action::Info(text);
    }
    if is("WARN") {
        return Action::Warn(text);
    }
    for a in [
        "HANGUP", "FILTER", "HOLD", "DISCARD", "REDIRECT", "BCC", "PREPEND",
    ] {
        if is(a) {
            return Action::Unsupported(a.to_string());
        }
    }
    if is("DEFER_IF_PERMIT") {
        return Action::DeferIfPermit(text);
    }
    if is("DEFER_IF_REJECT") {
        return Action::DeferIfReject(text);
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Action::Ok;
    }
    let b = cmd.as_bytes();
    if b.len() == 3
        && !text.is_empty()
        && matches!(b[0], b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
    {
        let code =
            u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0');
        return Action::Code(code, text);
    }
    if is("OK") || is("RELAY") {
        return Action::Ok;
    }
    if value.contains(':') {
        return Action::TableInValue;
    }
    Action::Restrictions(value.to_string())
}

/// Postfix dsn_split(): an optional enhanced status code at the start of
/// `text`, else `default`; and the rest of the text.
pub(crate) fn dsn_split<'a>(default: &str, text: &'a str) -> (String, &'a str) {
    let t = text.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    if proto::status::EnhancedCode::parse(&t[..end]).is_some() {
        (t[..end].to_string(), t[end..].trim_start())
    } else {
        (default.to_string(), t)
    }
}

/// Postfix smtpd_dsn_fix(): an address DSN (`X.1.Y`) is mapped to the
/// sender or recipient variant, or to `4.0.0` for other reply classes.
/// The class digit is fixed later from the reply code.
pub(crate) fn dsn_fix(dsn: &str, reply_class: &str) -> String {
    let Some(detail) = dsn.get(1..).and_then(|r| r.strip_prefix(".1.")) else {
        return dsn.to_string();
    };
    let (sender, rcpt) = match detail {
        "1" => ("4.1.7", "4.1.1"),
        "2" => ("4.1.8", "4.1.2"),
        "3" => ("4.1.7", "4.1.3"),
        "4" => ("4.1.7", "4.1.4"),
        "5" => ("4.1.0", "4.1.5"),
        "6" => ("4.1.7", "4.1.6"),
        "7" => ("4.1.7", "4.1.3"),
        "8" => ("4.1.8", "4.1.2"),
        _ => ("4.1.0", "4.1.0"),
    };
    match reply_class {
        super::eval::SENDER => sender.to_string(),
        super::eval::RECIPIENT => rcpt.to_string(),
        _ => "4.0.0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conf::Origin;

    fn open(spec: &str) -> Box<dyn Table> {
        conf::tables::open(spec, &Origin::Default).unwrap()
    }

    /// A table that records every key it is asked for.
    #[derive(Debug, Default)]
    struct Spy {
        keys: std::sync::Mutex<Vec<String>>,
        pattern: bool,
    }

    impl Table for Spy {
        fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
            self.keys.lock().unwrap().push(key.to_string());
            Ok(None)
        }
        fn name(&self) -> &str {
            "spy:keys"
        }
        fn kind(&self) -> conf::tables::TableKind {
            if self.pattern {
                conf::tables::TableKind::Pattern
            } else {
                conf::tables::TableKind::KeyValue
            }
        }
    }

    fn keys(f: impl Fn(&dyn Table), pattern: bool) -> Vec<String> {
        let s = Spy {
            pattern,
            ..Spy::default()
        };
        f(&s);
        s.keys.into_inner().unwrap()
    }

    #[test]
    fn search_orders() {
        let k = keys(
            |t| {
                let _ = find_mail(t, "user+ext@a.b.example", false, "+");
            },
            false,
        );
        assert_eq!(
            k,
            [
                "user+ext@a.b.example",
                "user@a.b.example",
                "a.b.example",
                ".b.example",
                ".example",
                "user+ext@",
                "user@"
            ]
        );
        let k = keys(
            |t| {
                let _ = find_mail(t, "user@a.b.example", true, "");
            },
            false,
        );
        assert_eq!(
            k,
            [
                "user@a.b.example",
                "a.b.example",
                "b.example",
                "example",
                "user@"
            ]
        );
        let k = keys(
            |t| {
                let _ = find_mail(t, "john doe@x.example", true, "");
            },
            false,
        );
        assert_eq!(
            k,
            [
                "\"john doe\"@x.example",
                "x.example",
                "example",
                "\"john doe\"@"
            ]
        );
        let k = keys(
            |t| {
                let _ = find_mail(t, "user+ext@a.example", true, "+");
            },
            true,
        );
        assert_eq!(
            k,
            ["user+ext@a.example"],
            "pattern tables get only the full address"
        );
        let k = keys(
            |t| {
                let _ = find_client(t, "mail.example.com", "192.0.2.10", false);
            },
            false,
        );
        assert_eq!(
            k,
            [
                "mail.example.com",
                ".example.com",
                ".com",
                "192.0.2.10",
                "192.0.2",
                "192.0",
                "192"
            ]
        );
        let k = keys(
            |t| {
                let _ = find_client(t, "unknown", "2001:db8::1", true);
            },
            false,
        );
        assert_eq!(
            k,
            ["unknown", "2001:db8::1", "2001:db8:", "2001:db8", "2001"]
        );
        let k = keys(
            |t| {
                let _ = find_client(t, "mail.example.com", "192.0.2.10", true);
            },
            true,
        );
        assert_eq!(k, ["mail.example.com", "192.0.2.10"]);
        let k = keys(
            |t| {
                let _ = find_domain(t, "10.1.2.3", true);
            },
            false,
        );
        assert_eq!(k, ["10.1.2.3"], "no parent search for numeric names");
    }

    #[test]
    fn lookups_in_real_tables() {
        let t = open("inline:{ example.com = OK, .example.org = REJECT, user@ = DUNNO }");
        assert_eq!(
            find_mail(t.as_ref(), "a@example.com", false, "")
                .unwrap()
                .as_deref(),
            Some("OK")
        );
        assert_eq!(
            find_mail(t.as_ref(), "a@sub.example.com", false, "").unwrap(),
            None
        );
        assert_eq!(
            find_mail(t.as_ref(), "a@sub.example.com", true, "")
                .unwrap()
                .as_deref(),
            Some("OK")
        );
        assert_eq!(
            find_mail(t.as_ref(), "a@x.example.org", false, "")
                .unwrap()
                .as_deref(),
            Some("REJECT")
        );
        assert_eq!(
            find_mail(t.as_ref(), "user@elsewhere.test", false, "")
                .unwrap()
                .as_deref(),
            Some("DUNNO")
        );
        let c = open("cidr:{ {192.0.2.0/24 REJECT}, {2001:db8::/32 OK} }");
        assert_eq!(
            find_client(c.as_ref(), "unknown", "192.0.2.7", true)
                .unwrap()
                .as_deref(),
            Some("REJECT")
        );
        assert_eq!(
            find_client(c.as_ref(), "unknown", "2001:db8::7", true)
                .unwrap()
                .as_deref(),
            Some("OK")
        );
        assert_eq!(
            find_client(c.as_ref(), "unknown", "198.51.100.1", true).unwrap(),
            None
        );
    }

    #[test]
    fn actions() {
        use Action::*;
        for (v, want) in [
            ("OK", Ok),
            ("relay", Ok),
            ("12345", Ok),
            ("550", Ok),
            ("DUNNO whatever", Dunno),
            ("REJECT", Reject(String::new())),
            ("reject go away", Reject("go away".into())),
            ("DEFER 4.7.2 later", Defer("4.7.2 later".into())),
            ("550 5.7.0 no thanks", Code(550, "5.7.0 no thanks".into())),
            ("451 busy", Code(451, "busy".into())),
            ("WARN hmm", Warn("hmm".into())),
            ("INFO fyi", Info("fyi".into())),
            ("HOLD", Unsupported("HOLD".into())),
            ("DEFER_IF_PERMIT x", DeferIfPermit("x".into())),
            ("defer_if_reject", DeferIfReject(String::new())),
            ("check_client_access hash:/x", TableInValue),
            (
                "permit_mynetworks, reject",
                Restrictions("permit_mynetworks, reject".into()),
            ),
            ("650 x", Restrictions("650 x".into())),
        ] {
            assert_eq!(parse_action(v), want, "{v}");
        }
        assert_eq!(
            dsn_split("5.7.1", " 5.1.1 no such user"),
            ("5.1.1".into(), "no such user")
        );
        assert_eq!(
            dsn_split("5.7.1", "no such user"),
            ("5.7.1".into(), "no such user")
        );
        assert_eq!(dsn_fix("5.1.1", super::super::eval::SENDER), "4.1.7");
        assert_eq!(dsn_fix("5.1.8", super::super::eval::RECIPIENT), "4.1.2");
        assert_eq!(dsn_fix("5.1.1", super::super::eval::HELO), "4.0.0");
        assert_eq!(dsn_fix("5.7.1", super::super::eval::SENDER), "5.7.1");
        assert_eq!(strip_extension("Owner-list", "-"), None);
        assert_eq!(strip_extension("a+b", "+"), Some("a".into()));
    }
}
