//! Postfix match lists, as mynetworks, relay_domains and mydestination use
//! them (Postfix's namadr_list, domain_list and string_list):
//!
//! - items separated by commas or white space; `!item` negates (the first
//!   matching item decides, so order matters);
//! - `/file/name` reads more items from a file (one or more per line, `#`
//!   comments, continuation lines start with white space), negated as a
//!   whole by `!/file/name`;
//! - `type:table` looks the name (and, for client lists, the address) up in
//!   a lookup table: any result is a match;
//! - in client lists, `a.b.c.d`, `a.b.c.d/n`, `[ipv6]`, `[ipv6]/n` (and,
//!   unlike Postfix, which wants brackets, bare IPv6 forms) match
//!   addresses; anything else is a host or domain name;
//! - names match themselves, and with parent matching (the parameter is in
//!   `parent_domain_matches_subdomains`) also their subdomains; without it
//!   only `.domain` items match subdomains.
//!
//! [`super::ClientList`] (clients.rs) adds the `permit_mynetworks`,
//! `permit_sasl_authenticated` and `permit_inet_interfaces` items of
//! local_header_rewrite_clients.

use conf::tables::{Table, TableKind};
use conf::values::split_list;
use conf::{Error, Origin};
use std::net::IpAddr;
use std::path::Path;

/// How a list matches, after Postfix's three list types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// string_list (mydestination, virtual_alias_domains): exact strings,
    /// tables looked up with the string itself.
    Strings,
    /// domain_list (relay_domains): names and their subdomains.
    Domains,
    /// namadr_list (mynetworks): client host names and addresses.
    Clients,
}

pub(crate) use conf::net::{Net, normalize};

/// Parses `addr`, `addr/len`, `[addr]`, `[addr]/len` or `[addr/len]`.
/// `Ok(None)` when the text does not look like an address at all (it is
/// then a host name); `Err` when it looks like one but is wrong, with the
/// reason.
pub(crate) fn parse_net(pattern: &str) -> Result<Option<Net>, String> {
    let addr_chars = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/' | b'[' | b']'))
    };
    let bracketed = pattern.starts_with('[');
    let digits_and_dots = pattern
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'/'));
    if !bracketed && !pattern.contains(['/', ':']) && !digits_and_dots {
        return Ok(None);
    }
    if !addr_chars(pattern) {
        return if pattern.contains('/') || bracketed {
            Err(format!(
                "bad network pattern \"{pattern}\" (expected a.b.c.d/n or [ipv6]/n)"
            ))
        } else {
            Ok(None)
        };
    }
    Net::parse(pattern)
        .map(Some)
        .map_err(|e| e.message(pattern, true))
}

#[derive(Debug)]
enum Pattern {
    /// A host, domain or string, lower-cased.
    Text(String),
    /// An address or network (client lists only).
    Net(Net),
    /// A lookup table.
    Table(Box<dyn Table>),
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) negate: bool,
    pattern: Pattern,
}

/// A parsed list. See the module documentation.
#[derive(Debug)]
pub(crate) struct MatchList {
    kind: ListKind,
    parent: bool,
    entries: Vec<Entry>,
}

/// Nesting limit for `/file/name` items (a file naming itself).
const MAX_FILE_DEPTH: usize = 8;

impl MatchList {
    /// Parses `items` (the split value of parameter `param`, set at
    /// `origin`). `parent` says whether `param` is listed in
    /// parent_domain_matches_subdomains.
    ///
    /// # Errors
    /// Every bad item: unreadable files, tables that do not open, malformed
    /// networks (with Postfix's wording for non-null host bits).
    pub(crate) fn build(
        kind: ListKind,
        param: &str,
        items: &[String],
        parent: bool,
        origin: &Origin,
    ) -> Result<MatchList, Vec<Error>> {
        let mut list = MatchList {
            kind,
            parent,
            entries: Vec::new(),
        };
        let mut errors = Vec::new();
        for item in items {
            list.add(param, item, false, origin, 0, &mut errors);
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    /// An empty list, which matches nothing.
    pub(crate) fn empty(kind: ListKind) -> MatchList {
        MatchList {
            kind,
            parent: false,
            entries: Vec::new(),
        }
    }

    fn add(
        &mut self,
        param: &str,
        item: &str,
        negate: bool,
        origin: &Origin,
        depth: usize,
        errors: &mut Vec<Error>,
    ) {
        match parse_entry(self.kind, param, item, negate, origin, depth, errors) {
            Parsed::One(e) => self.entries.push(e),
            Parsed::Many(items) => self.entries.extend(items),
            Parsed::Bad => {}
        }
    }

    /// string_list match of `s` (compared in lower case).
    ///
    /// # Errors
    /// A table lookup failed.
    pub(crate) fn match_string(&self, s: &str) -> Result<bool, Error> {
        let s = s.to_lowercase();
        for e in &self.entries {
            let hit = match &e.pattern {
                Pattern::Text(t) => *t == s,
                Pattern::Table(t) => lookup(t.as_ref(), &s, true)?.is_some(),
                Pattern::Net(_) => false,
            };
            if hit {
                return Ok(!e.negate);
            }
        }
        Ok(false)
    }

    /// domain_list match of a host or domain name.
    ///
    /// # Errors
    /// A table lookup failed.
    pub(crate) fn match_domain(&self, name: &str) -> Result<bool, Error> {
        self.match_client(Some(name), None)
    }

    /// namadr_list match: each item is tried against the client's name,
    /// then its address; the first item that matches either decides.
    ///
    /// # Errors
    /// A table lookup failed.
    pub(crate) fn match_client(
        &self,
        name: Option<&str>,
        addr: Option<IpAddr>,
    ) -> Result<bool, Error> {
        let name = name.map(str::to_lowercase);
        let addr = addr.map(normalize);
        for e in &self.entries {
            if entry_matches(e, self.parent, name.as_deref(), addr)? {
                return Ok(!e.negate);
            }
        }
        Ok(false)
    }
}

pub(crate) fn entry_matches(
    e: &Entry,
    parent: bool,
    name: Option<&str>,
    addr: Option<IpAddr>,
) -> Result<bool, Error> {
    if let Some(name) = name
        && match_hostname(&e.pattern, parent, name)?
    {
        return Ok(true);
    }
    if let Some(addr) = addr {
        return match &e.pattern {
            Pattern::Net(n) => Ok(n.contains(addr)),
            Pattern::Table(t) => Ok(lookup(t.as_ref(), &addr.to_string(), true)?.is_some()),
            Pattern::Text(_) => Ok(false),
        };
    }
    Ok(false)
}

/// Postfix match_hostname(): exact, then parent domains.
fn match_hostname(p: &Pattern, parent: bool, name: &str) -> Result<bool, Error> {
    match p {
        Pattern::Net(_) => Ok(false),
        Pattern::Text(t) => {
            if t == name {
                return Ok(true);
            }
            if parent {
                Ok(name.len() > t.len() + 1
                    && name.ends_with(t.as_str())
                    && name.as_bytes()[name.len() - t.len() - 1] == b'.')
            } else {
                Ok(t.starts_with('.') && name.len() > t.len() && name.ends_with(t.as_str()))
            }
        }
        Pattern::Table(t) => {
            let mut entry = name;
            let mut first = true;
            while !entry.is_empty() {
                if (first || t.kind() == TableKind::KeyValue)
                    && lookup(t.as_ref(), entry, true)?.is_some()
                {
                    return Ok(true);
                }
                first = false;
                let skip = entry.chars().next().map_or(0, char::len_utf8);
                let Some(dot) = entry[skip..].find('.').map(|d| d + skip) else {
                    break;
                };
                entry = if parent {
                    &entry[dot + 1..]
                } else {
                    &entry[dot..]
                };
            }
            Ok(false)
        }
    }
}

/// One table lookup; `full` keys go to every table, partial keys only to
/// key/value tables.
pub(crate) fn lookup(t: &dyn Table, key: &str, full: bool) -> Result<Option<String>, Error> {
    if key.is_empty() || (!full && t.kind() == TableKind::Pattern) {
        return Ok(None);
    }
    t.lookup(key)
}

pub(crate) enum Parsed {
    One(Entry),
    Many(Vec<Entry>),
    Bad,
}

/// True for `type:name` items (Postfix: not `[...` and contains `:`),
/// except bare IPv6 addresses and networks in client lists.
fn is_table(kind: ListKind, item: &str) -> bool {
    if item.starts_with('[') || !item.contains(':') {
        return false;
    }
    !(kind == ListKind::Clients && matches!(parse_net(item), Ok(Some(_))))
}

pub(crate) fn parse_entry(
    kind: ListKind,
    param: &str,
    item: &str,
    negate_init: bool,
    origin: &Origin,
    depth: usize,
    errors: &mut Vec<Error>,
) -> Parsed {
    let bad = |value: &str, allowed: String| Error::BadValue {
        origin: origin.clone(),
        name: param.to_string(),
        value: value.to_string(),
        allowed,
    };
    let mut negate = negate_init;
    let mut s = item;
    while let Some(rest) = s.strip_prefix('!') {
        negate = !negate;
        s = rest;
    }
    if s.is_empty() {
        errors.push(bad(item, "no pattern after '!'".into()));
        return Parsed::Bad;
    }
    if s.starts_with('/') {
        if depth >= MAX_FILE_DEPTH {
            errors.push(bad(
                s,
                format!("files nested more than {MAX_FILE_DEPTH} deep (does a file name itself?)"),
            ));
            return Parsed::Bad;
        }
        return match read_items(Path::new(s)) {
            Ok(lines) => {
                let mut out = Vec::new();
                for (line, text) in lines {
                    let o = Origin::File {
                        path: s.into(),
                        line,
                    };
                    for it in split_list(&text) {
                        match parse_entry(kind, param, &it, negate, &o, depth + 1, errors) {
                            Parsed::One(e) => out.push(e),
                            Parsed::Many(v) => out.extend(v),
                            Parsed::Bad => {}
                        }
                    }
                }
                Parsed::Many(out)
            }
            Err(e) => {
                errors.push(bad(s, format!("cannot read {s}: {e}")));
                Parsed::Bad
            }
        };
    }
    if is_table(kind, s) {
        return match conf::tables::open(s, origin) {
            Ok(t) => Parsed::One(Entry {
                negate,
                pattern: Pattern::Table(t),
            }),
            Err(e) => {
                errors.extend(e);
                Parsed::Bad
            }
        };
    }
    if kind == ListKind::Clients {
        match parse_net(s) {
            Ok(Some(net)) => {
                return Parsed::One(Entry {
                    negate,
                    pattern: Pattern::Net(net),
                });
            }
            Ok(None) => {}
            Err(why) => {
                errors.push(bad(s, why));
                return Parsed::Bad;
            }
        }
    }
    Parsed::One(Entry {
        negate,
        pattern: Pattern::Text(s.to_lowercase()),
    })
}

/// The logical lines of a list file with their line numbers: `#` comments
/// and empty lines skipped, lines starting with white space continue the
/// previous one (Postfix readlline()).
fn read_items(path: &Path) -> std::io::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            last.1.push(' ');
            last.1.push_str(trimmed);
            continue;
        }
        out.push((i + 1, raw.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn list(kind: ListKind, items: &str, parent: bool) -> MatchList {
        MatchList::build(
            kind,
            "mynetworks",
            &split_list(items),
            parent,
            &Origin::Default,
        )
        .unwrap()
    }

    fn errors(items: &str) -> Vec<String> {
        MatchList::build(
            ListKind::Clients,
            "mynetworks",
            &split_list(items),
            true,
            &Origin::Default,
        )
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect()
    }

    #[test]
    fn networks_addresses_and_negation() {
        let l = list(
            ListKind::Clients,
            "127.0.0.0/8, [::1]/128 !10.0.0.7 10.0.0.0/24 192.168.1.5 [2001:db8::]/32 fe80::/10",
            true,
        );
        let m = |a: &str| l.match_client(Some("unknown"), Some(ip(a))).unwrap();
        for (addr, want) in [
            ("127.0.0.1", true),
            ("127.255.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.6", true),
            ("10.0.0.7", false),
            ("10.0.1.7", false),
            ("192.168.1.5", true),
            ("192.168.1.6", false),
            ("2001:db8:1::5", true),
            ("2001:db9::5", false),
            ("fe80::1", true),
            ("8.8.8.8", false),
        ] {
            assert_eq!(m(addr), want, "{addr}");
        }
        // Order matters: a later exclusion cannot undo an earlier match.
        let l = list(ListKind::Clients, "10.0.0.0/24 !10.0.0.7", true);
        assert!(l.match_client(None, Some(ip("10.0.0.7"))).unwrap());
    }

    #[test]
    fn host_bits_and_junk_are_errors() {
        let e = errors("10.0.0.5/24");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains(r#"non-null host address bits in "10.0.0.5/24", perhaps you should use "10.0.0.0/24" instead"#),
            "{e:?}"
        );
        let e = errors("[2001:db8::1]/32");
        assert!(
            e[0].contains(r#"perhaps you should use "[2001:db8::]/32" instead"#),
            "{e:?}"
        );
        assert!(errors("10.0.0.0/33")[0].contains("bad mask length"));
        assert!(errors("10.0.0")[0].contains("bad address"));
        assert!(errors("10.0.0.0/x")[0].contains("bad network pattern"));
        assert!(errors("[::1")[0].contains("missing ']'"));
        assert!(errors("!")[0].contains("no pattern after '!'"));
        assert!(errors("/nonexistent/postern/networks")[0].contains("cannot read"));
        assert_eq!(
            errors("10.0.0.5/24 10.0.0.6/24 ok.example").len(),
            2,
            "every error is reported"
        );
    }

    #[test]
    fn host_names_with_and_without_parent_matching() {
        let p = list(ListKind::Clients, "example.com .example.org", true);
        let d = list(ListKind::Clients, "example.com .example.org", false);
        let a = Some(ip("192.0.2.1"));
        assert!(p.match_client(Some("Host.Example.com"), a).unwrap());
        assert!(!d.match_client(Some("host.example.com"), a).unwrap());
        assert!(d.match_client(Some("example.com"), a).unwrap());
        assert!(d.match_client(Some("a.b.example.org"), a).unwrap());
        assert!(!d.match_client(Some("example.org"), a).unwrap());
        assert!(!p.match_client(Some("badexample.com"), a).unwrap());
        assert!(!p.match_client(Some("unknown"), a).unwrap());
    }

    #[test]
    fn files_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nets");
        std::fs::write(
            &f,
            "# trusted\n10.1.0.0/16\n  192.0.2.9\n\n!10.2.0.1 10.2.0.0/16\n",
        )
        .unwrap();
        let cidr = dir.path().join("nets.cidr");
        std::fs::write(&cidr, "172.16.0.0/12 anything\n").unwrap();
        let h = dir.path().join("hosts");
        std::fs::write(&h, "trusted.example ok\n10.9.9.9 ok\n").unwrap();
        let l = list(
            ListKind::Clients,
            &format!(
                "{}, cidr:{} hash:{}",
                f.display(),
                cidr.display(),
                h.display()
            ),
            true,
        );
        let m = |n: &str, a: &str| l.match_client(Some(n), Some(ip(a))).unwrap();
        assert!(m("unknown", "10.1.2.3"));
        assert!(m("unknown", "192.0.2.9"), "continuation line");
        assert!(!m("unknown", "10.2.0.1"));
        assert!(m("unknown", "10.2.0.2"));
        assert!(m("unknown", "172.20.1.1"));
        assert!(m("unknown", "10.9.9.9"));
        assert!(
            m("mx.trusted.example", "192.0.2.200"),
            "parent lookup in hash table"
        );
        assert!(!m("unknown", "192.0.2.200"));
        let neg = list(
            ListKind::Clients,
            &format!("!{} 10.0.0.0/8", f.display()),
            true,
        );
        assert!(!neg.match_client(None, Some(ip("10.1.0.1"))).unwrap());
        assert!(
            neg.match_client(None, Some(ip("10.2.0.1"))).unwrap(),
            "double negation"
        );
        // A file with a bad entry names the file and line.
        std::fs::write(&f, "10.0.0.0/8\n10.0.0.1/8\n").unwrap();
        let e = errors(&f.display().to_string());
        assert!(
            e[0].starts_with(&format!("{}:2: bad value for mynetworks", f.display())),
            "{e:?}"
        );
    }

    #[test]
    fn string_and_domain_lists() {
        let s = list(
            ListKind::Strings,
            "relay.example, localhost, inline:{ Other.Example = x }",
            false,
        );
        assert!(s.match_string("LOCALHOST").unwrap());
        assert!(s.match_string("other.example").unwrap());
        assert!(!s.match_string("sub.relay.example").unwrap());
        assert!(!s.match_string("10.0.0.1").unwrap());
        let d = list(
            ListKind::Domains,
            "contoso.test !bad.fabrikam.test fabrikam.test",
            true,
        );
        assert!(d.match_domain("contoso.test").unwrap());
        assert!(d.match_domain("a.b.contoso.test").unwrap());
        assert!(!d.match_domain("xcontoso.test").unwrap());
        assert!(!d.match_domain("bad.fabrikam.test").unwrap());
        assert!(d.match_domain("ok.fabrikam.test").unwrap());
        let t = list(
            ListKind::Domains,
            "inline:{ .sub.test = x, top.test = y }",
            false,
        );
        assert!(t.match_domain("a.sub.test").unwrap());
        assert!(!t.match_domain("sub.test").unwrap());
        assert!(t.match_domain("top.test").unwrap());
        assert!(!t.match_domain("a.top.test").unwrap());
    }

    proptest::proptest! {
        #[test]
        fn parsing_and_matching_never_panic(items in "[0-9a-f:./\\[\\]!, x]{0,40}", addr in proptest::prelude::any::<u128>(), v4 in proptest::prelude::any::<bool>()) {
            let a = if v4 { IpAddr::V4(std::net::Ipv4Addr::from(addr as u32)) } else { IpAddr::V6(std::net::Ipv6Addr::from(addr)) };
            if let Ok(l) = MatchList::build(ListKind::Clients, "mynetworks", &split_list(&items), true, &Origin::Default) {
                let _ = l.match_client(Some(&items), Some(a));
            }
            let _ = parse_net(&items);
        }
    }
}
