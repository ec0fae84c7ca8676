//! RFC 5321 envelope addresses: reverse- and forward-paths (`<a@b>`, `<>`)
//! and the mailboxes inside them, with SMTPUTF8 (RFC 6531) UTF-8 allowed.
//!
//! Parsing is as lenient as Postfix where that is harmless (dots anywhere
//! in an unquoted local part, a missing domain, source routes) and strict
//! where it protects the relay (control characters, stray `@`, `<`, `>`,
//! quotes, over-long parts).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The longest path, including the angle brackets (RFC 5321 4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// The longest local part as written, quotes included (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL: usize = 64;
/// The longest domain (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// The longest domain label (RFC 1035).
pub const MAX_LABEL: usize = 63;

/// Why an address was refused. Each message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing at all.
    #[error("empty address")]
    Empty,
    /// A path without its `<` or `>`, or with a stray one inside.
    #[error("unbalanced angle brackets in {0:?}")]
    Unbalanced(String),
    /// Text after the closing `>`.
    #[error("unexpected text after '>': {0:?}")]
    TrailingGarbage(String),
    /// A control character (including CR, LF, NUL, TAB, DEL).
    #[error("control character {0:?} in address")]
    ControlChar(char),
    /// `@domain` with nothing before it, or `""@domain`.
    #[error("empty local part")]
    EmptyLocalPart,
    /// A character that needs quoting in an unquoted local part.
    #[error("character {0:?} is not allowed in an unquoted local part")]
    BadLocalChar(char),
    /// A quoted local part without its closing `"`.
    #[error("unterminated quoted string in local part")]
    UnterminatedQuote,
    /// Text between the closing `"` of a quoted local part and the `@`.
    #[error("unexpected text after quoted local part: {0:?}")]
    AfterQuote(String),
    /// `a@b@c`.
    #[error("more than one unquoted '@' in address")]
    MultipleAt,
    /// `a@` with nothing after the `@`.
    #[error("empty domain after '@'")]
    EmptyDomain,
    /// A domain that is not a sequence of letter-digit-hyphen (or UTF-8)
    /// labels.
    #[error("invalid domain {domain:?}: {why}")]
    BadDomain {
        /// The domain as given.
        domain: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An address literal that is not `[IPv4]`, `[IPv6:addr]` or
    /// `[tag:text]`.
    #[error("invalid address literal {0:?}")]
    BadAddressLiteral(String),
    /// A malformed source route (`@r1,@r2:` prefix).
    #[error("invalid source route {0:?}")]
    BadRoute(String),
    /// A length limit was exceeded.
    #[error("{part} is {len} octets long, more than the {max} allowed")]
    TooLong {
        /// "path", "local part", "domain" or "domain label".
        part: &'static str,
        /// Its length in octets.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A reverse- or forward-path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Path {
    /// `<>`: the null sender of bounces.
    Null,
    /// `<mailbox>`.
    Mailbox(Mailbox),
}

/// A mailbox `local@domain`. `local` is stored decoded (without quotes or
/// backslash escapes); `domain` is as given (address literals with their
/// brackets), `None` for a bare `postmaster`-style address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The decoded local part, never empty when parsed.
    pub local: String,
    /// The domain or address literal, e.g. `example.com`, `[192.0.2.1]`.
    pub domain: Option<String>,
}

/// Parses a path: `<a@b>`, `<>`, `<@r1,@r2:a@b>` (route dropped, RFC 5321
/// appendix C), `<postmaster>` (no domain).
///
/// # Errors
/// An [`AddressError`] saying what is wrong.
pub fn parse_path(s: &str) -> Result<Path, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    check_controls(s)?;
    if s.len() > MAX_PATH {
        return Err(AddressError::TooLong {
            part: "path",
            len: s.len(),
            max: MAX_PATH,
        });
    }
    let Some(inner) = s.strip_prefix('<') else {
        return Err(AddressError::Unbalanced(s.to_string()));
    };
    let close = path_end(inner).ok_or_else(|| AddressError::Unbalanced(s.to_string()))?;
    let after = &inner[close + 1..];
    if !after.is_empty() {
        return Err(AddressError::TrailingGarbage(after.to_string()));
    }
    let inner = &inner[..close];
    if inner.is_empty() {
        return Ok(Path::Null);
    }
    let mailbox = match inner.strip_prefix('@') {
        Some(_) => {
            let colon =
                route_end(inner).ok_or_else(|| AddressError::BadRoute(inner.to_string()))?;
            check_route(&inner[..colon])?;
            &inner[colon + 1..]
        }
        None => inner,
    };
    Mailbox::parse(mailbox).map(Path::Mailbox)
}

/// Index in `s` of the first `>` outside a quoted string; `None` if there
/// is none or a `<` comes first.
pub(crate) fn path_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            '<' if !quoted => return None,
            _ => {}
        }
    }
    None
}

/// Index of the `:` ending a source route, skipping `[...]` literals.
fn route_end(s: &str) -> Option<usize> {
    let mut in_literal = false;
    for (i, c) in s.char_indices() {
        match c {
            '[' => in_literal = true,
            ']' => in_literal = false,
            ':' if !in_literal => return Some(i),
            '"' => return None,
            _ => {}
        }
    }
    None
}

/// `@d1,@d2` (without the colon).
fn check_route(route: &str) -> Result<(), AddressError> {
    for hop in route.split(',') {
        let domain = hop
            .strip_prefix('@')
            .ok_or_else(|| AddressError::BadRoute(route.to_string()))?;
        check_domain(domain).map_err(|_| AddressError::BadRoute(route.to_string()))?;
    }
    Ok(())
}

fn check_controls(s: &str) -> Result<(), AddressError> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(AddressError::ControlChar(c)),
        None => Ok(()),
    }
}

/// RFC 5322 atext, extended with UTF-8 (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
}

impl Mailbox {
    /// A mailbox from its parts (not validated).
    pub fn new(local: impl Into<String>, domain: Option<String>) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain,
        }
    }

    /// Parses a bare address without angle brackets: `a@b`,
    /// `"john doe"@example.com`, `user@[192.0.2.1]`, `postmaster`.
    ///
    /// # Errors
    /// An [`AddressError`] saying what is wrong.
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        check_controls(s)?;
        let (local, raw_len, rest) = if let Some(q) = s.strip_prefix('"') {
            let (local, used) = parse_quoted(q)?;
            let rest = &q[used..];
            if !rest.is_empty() && !rest.starts_with('@') {
                return Err(AddressError::AfterQuote(rest.to_string()));
            }
            (local, used + 1, rest)
        } else {
            let end = s.find('@').unwrap_or(s.len());
            let local = &s[..end];
            if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
                return Err(AddressError::BadLocalChar(c));
            }
            (local.to_string(), end, &s[end..])
        };
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if raw_len > MAX_LOCAL {
            return Err(AddressError::TooLong {
                part: "local part",
                len: raw_len,
                max: MAX_LOCAL,
            });
        }
        let domain = match rest.strip_prefix('@') {
            None => None,
            Some(d) => {
                check_domain(d)?;
                Some(d.to_string())
            }
        };
        let m = Mailbox { local, domain };
        // The limit holds for the form we print, store and send onwards
        // too: an unquoted local part that is not a dot-string (`a..b`,
        // `.a`) is printed quoted, two octets longer. Accepting 63 or 64
        // such octets would queue an address that no longer parses once
        // printed (the smtp client then sent it mangled).
        let printed = m.quoted_local().len();
        if printed > MAX_LOCAL {
            return Err(AddressError::TooLong {
                part: "local part",
                len: printed,
                max: MAX_LOCAL,
            });
        }
        // And printed in a path, `<local@domain>` must fit MAX_PATH: a bare
        // address (`MAIL FROM:a@b`, no brackets) is measured nowhere else.
        let path = printed + m.domain.as_ref().map_or(0, |d| d.len() + 1) + 2;
        if path > MAX_PATH {
            return Err(AddressError::TooLong {
                part: "path",
                len: path,
                max: MAX_PATH,
            });
        }
        Ok(m)
    }

    /// True when the local part contains `%`, `!` or `@`, the characters of
    /// sender-specified routing (`user%host@relay`, `host!user@relay`,
    /// `"user@host"@relay`) that relay checks must look at.
    pub fn has_routing_chars(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    /// Lower-cases the domain in place (Unicode-aware, for UTF-8 domains).
    pub fn lowercase_domain(&mut self) {
        if let Some(d) = &mut self.domain {
            *d = d.to_lowercase();
        }
    }

    /// True when the address is not pure ASCII, so sending it needs
    /// SMTPUTF8.
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii() || self.domain.as_deref().is_some_and(|d| !d.is_ascii())
    }

    /// The local part as it must be written: unchanged when it is a valid
    /// dot-string, else quoted with `"` and `\` escaped.
    pub fn quoted_local(&self) -> String {
        if is_dot_string(&self.local) {
            return self.local.clone();
        }
        let mut q = String::with_capacity(self.local.len() + 2);
        q.push('"');
        for c in self.local.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    }
}

/// Atom *("." Atom).
fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext))
}

/// Parses the body of a quoted string (after the opening quote); returns
/// the decoded text and the bytes used including the closing quote.
fn parse_quoted(s: &str) -> Result<(String, usize), AddressError> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => return Err(AddressError::UnterminatedQuote),
            },
            _ => out.push(c),
        }
    }
    Err(AddressError::UnterminatedQuote)
}

/// Checks a domain name or address literal.
fn check_domain(d: &str) -> Result<(), AddressError> {
    if d.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if d.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong {
            part: "domain",
            len: d.len(),
            max: MAX_DOMAIN,
        });
    }
    if d.contains('@') {
        return Err(AddressError::MultipleAt);
    }
    if d.starts_with('[') {
        return check_literal(d);
    }
    let bad = |why| AddressError::BadDomain {
        domain: d.to_string(),
        why,
    };
    for label in d.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(AddressError::TooLong {
                part: "domain label",
                len: label.len(),
                max: MAX_LABEL,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("label starts or ends with '-'"));
        }
        // Underscores are not LDH but common in internal host names;
        // Postfix accepts them too.
        let ok = |c: char| {
            c.is_ascii_alphanumeric()
                || c == '-'
                || c == '_'
                || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
        };
        if !label.chars().all(ok) {
            return Err(bad("only letters, digits, '-' and '_' are allowed"));
        }
    }
    Ok(())
}

/// `[192.0.2.1]`, `[IPv6:2001:db8::1]`, `[tag:text]` (RFC 5321 4.1.3).
fn check_literal(d: &str) -> Result<(), AddressError> {
    let bad = || AddressError::BadAddressLiteral(d.to_string());
    let inner = d
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(bad)?;
    if inner
        .get(..5)
        .is_some_and(|tag| tag.eq_ignore_ascii_case("IPv6:"))
    {
        return inner[5..]
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad());
    }
    if inner.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return inner.parse::<Ipv4Addr>().map(|_| ()).map_err(|_| bad());
    }
    let (tag, content) = inner.split_once(':').ok_or_else(bad)?;
    let tag_ok = !tag.is_empty()
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !tag.ends_with('-');
    // RFC 5321 dcontent also allows `<`, `>` and `"`, but a path cannot
    // hold them: `<a@[x:>]>` ends at the first `>`, and in
    // `<a@[x:"]>` the quote hides the closing `>`. A bare
    // `MAIL FROM:a@[x:<]` was accepted and then relayed as a path no one
    // can read (both found by fuzzing). They are refused like stray
    // brackets elsewhere.
    let content_ok = !content.is_empty()
        && content.bytes().all(|b| {
            (33..=126).contains(&b) && !matches!(b, b'[' | b'\\' | b']' | b'<' | b'>' | b'"')
        });
    if tag_ok && content_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

impl fmt::Display for Mailbox {
    /// `local@domain`, the local part quoted only when it must be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted_local())?;
        if let Some(d) = &self.domain {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Mailbox {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::parse(s)
    }
}

impl Path {
    /// True for `<>`.
    pub fn is_null(&self) -> bool {
        matches!(self, Path::Null)
    }

    /// The mailbox, `None` for `<>`.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            Path::Null => None,
            Path::Mailbox(m) => Some(m),
        }
    }

    /// The address without brackets: `""` for `<>`, else `local@domain`
    /// (what Postfix logs between `from=<` and `>`).
    pub fn address(&self) -> String {
        self.mailbox().map(Mailbox::to_string).unwrap_or_default()
    }
}

impl fmt::Display for Path {
    /// The wire form with angle brackets: `<>` or `<local@domain>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Null => f.write_str("<>"),
            Path::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl FromStr for Path {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_path(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mb(local: &str, domain: Option<&str>) -> Path {
        Path::Mailbox(Mailbox::new(local, domain.map(str::to_string)))
    }

    #[test]
    fn accepted_paths() {
        let table: &[(&str, Path, &str)] = &[
            ("<>", Path::Null, "<>"),
            ("<a@b>", mb("a", Some("b")), "<a@b>"),
            (
                "<John.Doe@Example.COM>",
                mb("John.Doe", Some("Example.COM")),
                "<John.Doe@Example.COM>",
            ),
            ("<@r1,@r2:a@b>", mb("a", Some("b")), "<a@b>"),
            ("<@[IPv6:::1]:a@b>", mb("a", Some("b")), "<a@b>"),
            (
                "<\"john doe\"@example.com>",
                mb("john doe", Some("example.com")),
                "<\"john doe\"@example.com>",
            ),
            ("<\"a@b\"@c>", mb("a@b", Some("c")), "<\"a@b\"@c>"),
            ("<\"a\\\"b\"@c>", mb("a\"b", Some("c")), "<\"a\\\"b\"@c>"),
            ("<\"a>b\"@c>", mb("a>b", Some("c")), "<\"a>b\"@c>"),
            ("<\"plain\"@c>", mb("plain", Some("c")), "<plain@c>"),
            ("<a..b.@c>", mb("a..b.", Some("c")), "<\"a..b.\"@c>"),
            (
                "<user@[192.0.2.1]>",
                mb("user", Some("[192.0.2.1]")),
                "<user@[192.0.2.1]>",
            ),
            (
                "<u@[IPv6:2001:db8::1]>",
                mb("u", Some("[IPv6:2001:db8::1]")),
                "<u@[IPv6:2001:db8::1]>",
            ),
            (
                "<u@[x-tag:stuff]>",
                mb("u", Some("[x-tag:stuff]")),
                "<u@[x-tag:stuff]>",
            ),
            ("<postmaster>", mb("postmaster", None), "<postmaster>"),
            ("<root>", mb("root", None), "<root>"),
            (
                "<jörg@bücher.example>",
                mb("jörg", Some("bücher.example")),
                "<jörg@bücher.example>",
            ),
            (
                "<a+tag=x/y@host_name.lan>",
                mb("a+tag=x/y", Some("host_name.lan")),
                "<a+tag=x/y@host_name.lan>",
            ),
            (
                "<user%host!x@relay>",
                mb("user%host!x", Some("relay")),
                "<user%host!x@relay>",
            ),
        ];
        for (input, want, display) in table {
            let got = parse_path(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&got, want, "{input}");
            assert_eq!(got.to_string(), *display, "{input}");
            assert_eq!(parse_path(display).as_ref(), Ok(want), "reparse {display}");
        }
    }

    /// Found by the `address` fuzz target: accepted addresses whose printed
    /// form did not parse back. A 63-octet unquoted local part that is not
    /// a dot-string prints quoted as 65 octets (and the smtp client then
    /// sent `"\"Q..\""@...`); a bare address was never measured as a path;
    /// `<` or `>` in an address literal cannot be inside a path.
    #[test]
    fn fuzz_printed_address_parses_back() {
        let crash =
            b"Q..\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xf8\xa1";
        let text = String::from_utf8_lossy(crash);
        assert!(matches!(
            Mailbox::parse(&text),
            Err(AddressError::TooLong {
                part: "local part",
                len: 65,
                max: 64
            })
        ));
        for local in [
            format!("Q..{}", "x".repeat(61)),
            format!(".{}", "x".repeat(63)),
        ] {
            assert_eq!(local.len(), 64);
            assert!(Mailbox::parse(&format!("{local}@example.com")).is_err());
            assert!(parse_path(&format!("<{local}@example.com>")).is_err());
        }
        // Found next: a bare address (no brackets) was never measured as a
        // path, so one over 256 octets was accepted and sent as `<...>`.
        let domain = ["abcdefghi"; 25].join("."); // 249 octets
        let bare = format!("useeeeeeeeeeee@{domain}");
        assert!(matches!(
            Mailbox::parse(&bare),
            Err(AddressError::TooLong {
                part: "path",
                len: 266,
                max: 256
            })
        ));
        assert!(parse_path(&format!("<{bare}>")).is_err());
        assert!(Mailbox::parse(&format!("abcd@{domain}")).is_ok()); // 256 as a path
        // Found later: `<`, `>` or `"` in a general address literal printed
        // as a path that does not parse (`<99@[V:<]>`, `<99@[1:1"w]>`).
        for bare in [
            "99@[V:<]",
            "a@[x:>]",
            "99@[111111:1111111111111\"w]",
            "a@[x:\"]",
        ] {
            assert!(Mailbox::parse(bare).is_err(), "{bare}");
        }
        assert!(Mailbox::parse("a@[x-tag:st=uff]").is_ok());
        // Still accepted: 62 octets that print as 64, and 64 that need no quotes.
        let m = Mailbox::parse(&format!("a..{}@b", "x".repeat(59))).unwrap();
        assert_eq!(Mailbox::parse(&m.to_string()), Ok(m));
        assert!(Mailbox::parse(&format!("{}@b", "x".repeat(64))).is_ok());
    }

    #[test]
    fn rejected_paths() {
        let long_local = format!("<{}@b>", "x".repeat(65));
        let long_label = format!("<a@{}.com>", "x".repeat(64));
        let long_path = format!("<a@{}>", ["abcdefghi"; 26].join("."));
        let long_domain = format!("a@{}", ["abcdefghi"; 26].join("."));
        let table: Vec<(&str, AddressError)> = vec![
            ("", AddressError::Empty),
            ("a@b", AddressError::Unbalanced("a@b".into())),
            ("<a@b", AddressError::Unbalanced("<a@b".into())),
            ("<<a@b>>", AddressError::Unbalanced("<<a@b>>".into())),
            ("<a@b>>", AddressError::TrailingGarbage(">".into())),
            ("<a@b> x", AddressError::TrailingGarbage(" x".into())),
            ("<a@b@c>", AddressError::MultipleAt),
            ("<@b>", AddressError::BadRoute("@b".into())),
            ("<@r1,r2:a@b>", AddressError::BadRoute("@r1,r2".into())),
            ("<@r1..x:a@b>", AddressError::BadRoute("@r1..x".into())),
            ("<@b:>", AddressError::Empty),
            ("<\"\"@b>", AddressError::EmptyLocalPart),
            ("<a@>", AddressError::EmptyDomain),
            ("<a b@c>", AddressError::BadLocalChar(' ')),
            ("<a\"b@c>", AddressError::Unbalanced("<a\"b@c>".into())),
            ("<a(b)@c>", AddressError::BadLocalChar('(')),
            ("<\"ab@c>", AddressError::Unbalanced("<\"ab@c>".into())),
            ("<\"ab\"x@c>", AddressError::AfterQuote("x@c".into())),
            ("<a@b\r\n>", AddressError::ControlChar('\r')),
            ("<a\0@b>", AddressError::ControlChar('\0')),
            ("<a@b\n.c>", AddressError::ControlChar('\n')),
            ("<\"a\tb\"@c>", AddressError::ControlChar('\t')),
            (
                "<a@[300.1.1.1]>",
                AddressError::BadAddressLiteral("[300.1.1.1]".into()),
            ),
            (
                "<a@[IPv6:zz::1]>",
                AddressError::BadAddressLiteral("[IPv6:zz::1]".into()),
            ),
            (
                "<a@[1.2.3.4>",
                AddressError::BadAddressLiteral("[1.2.3.4".into()),
            ),
            ("<a@[]>", AddressError::BadAddressLiteral("[]".into())),
            (
                "<a@[abcé:x]>",
                AddressError::BadAddressLiteral("[abcé:x]".into()),
            ),
            (
                "<a@[IPv6é]>",
                AddressError::BadAddressLiteral("[IPv6é]".into()),
            ),
            (
                long_local.as_str(),
                AddressError::TooLong {
                    part: "local part",
                    len: 65,
                    max: 64,
                },
            ),
            (
                long_label.as_str(),
                AddressError::TooLong {
                    part: "domain label",
                    len: 64,
                    max: 63,
                },
            ),
            (
                long_path.as_str(),
                AddressError::TooLong {
                    part: "path",
                    len: 263,
                    max: 256,
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse_path(input), Err(want), "{input:?}");
        }
        assert!(matches!(
            Mailbox::parse(&long_domain),
            Err(AddressError::TooLong { part: "domain", .. })
        ));
        assert_eq!(
            Mailbox::parse("a\"b@c"),
            Err(AddressError::BadLocalChar('"'))
        );
        for bad_domain in [
            "a@b..c", "a@-b.c", "a@b-.c", "a@b c", "a@.b", "a@b.", "a@b,c",
        ] {
            assert!(
                matches!(
                    Mailbox::parse(bad_domain),
                    Err(AddressError::BadDomain { .. })
                ),
                "{bad_domain}"
            );
        }
    }

    #[test]
    fn mailbox_helpers() {
        let mut m = Mailbox::parse("Jörg@BÜCHER.Example").unwrap();
        assert!(m.needs_smtputf8());
        m.lowercase_domain();
        assert_eq!(m.domain.as_deref(), Some("bücher.example"));
        assert_eq!(m.local, "Jörg");
        assert!(!Mailbox::parse("a@b").unwrap().needs_smtputf8());
        assert!(Mailbox::parse("a%b@c").unwrap().has_routing_chars());
        assert!(Mailbox::parse("a!b@c").unwrap().has_routing_chars());
        assert!(Mailbox::parse("\"a@b\"@c").unwrap().has_routing_chars());
        assert!(!Mailbox::parse("a.b@c").unwrap().has_routing_chars());
        assert_eq!(Path::Null.address(), "");
        assert!(Path::Null.is_null());
        assert_eq!(parse_path("<\"x y\"@z>").unwrap().address(), "\"x y\"@z");
        assert_eq!("a@b".parse::<Mailbox>().unwrap().to_string(), "a@b");
        assert_eq!("<>".parse::<Path>().unwrap(), Path::Null);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            AddressError::TooLong {
                part: "local part",
                len: 70,
                max: 64
            }
            .to_string(),
            "local part is 70 octets long, more than the 64 allowed"
        );
        assert_eq!(
            Mailbox::parse("a@b c").unwrap_err().to_string(),
            "invalid domain \"b c\": only letters, digits, '-' and '_' are allowed"
        );
    }

    fn arb_mailbox() -> impl Strategy<Value = Mailbox> {
        let local = prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-z0-9]{1,5}){0,2}",
            "[ -~]{1,20}",
            "[a-zé.ü]{1,10}",
        ];
        let domain = prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9_]{1,8}){0,3}".prop_map(Some),
            Just(None),
            (0u8..=255, 0u8..=255).prop_map(|(a, b)| Some(format!("[10.0.{a}.{b}]"))),
            Just(Some("[IPv6:2001:db8::1]".to_string())),
            "[a-zäöü]{1,10}\\.de".prop_map(Some),
        ];
        (local, domain).prop_map(|(l, d)| Mailbox::new(l, d))
    }

    proptest! {
        #[test]
        fn display_round_trips(m in arb_mailbox()) {
            let text = m.to_string();
            prop_assume!(m.quoted_local().len() <= MAX_LOCAL);
            prop_assert_eq!(Mailbox::parse(&text), Ok(m.clone()));
            prop_assert_eq!(parse_path(&format!("<{text}>")), Ok(Path::Mailbox(m.clone())));
            prop_assert_eq!(parse_path(&format!("<@relay.example,@[192.0.2.1]:{text}>")), Ok(Path::Mailbox(m)));
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,40}|[<>@\"\\\\\\[\\]:,. a-zé€\\x00\\r\\n]{0,40}|<?a@\\[[IPv6:é€0-9a-f.]{0,12}\\]?>?") {
            let _ = parse_path(&s);
            let _ = Mailbox::parse(&s);
        }

        #[test]
        fn parsed_never_contains_controls(s in "[<>@\"\\\\\\[\\]:,. a-z\\x00\\r\\n]{0,30}") {
            if let Ok(Path::Mailbox(m)) = parse_path(&s) {
                prop_assert!(!m.to_string().contains(['\r', '\n', '\0']));
                prop_assert_eq!(parse_path(&format!("<{m}>")), Ok(Path::Mailbox(m)));
            }
        }
    }
}
