//! Where an address goes, as Postfix's trivial-rewrite resolves it for the
//! SMTP server, and what is "an authorized destination".
//!
//! [`Destinations::resolve`] repeats the resolver loop of trivial-rewrite:
//! the address (in internal, unquoted form) is rewritten in the "local"
//! context (source route stripped; `site!user` and `user%site` turned into
//! `user@site`; `@$myorigin` appended to bare names), then every local
//! domain (`$mydestination`, or an address literal of this host) is stripped
//! off and the rest resolved again, so `user%other@localhost` and
//! `"user@other"@localhost` resolve to `user@other`. What is left is
//! classified: local, virtual alias domain, relay domain, or other. An
//! address whose local part still holds a routing operator (`@`, `%`, `!`)
//! is marked *routed*.
//!
//! An authorized destination ([`Destinations::authorized`]) is a local,
//! virtual alias or relay domain, never a routed address; an address
//! literal of this host counts as local only when `$mydestination` lists
//! it (postern delivers nothing locally). The policy is
//! stricter still (eval/checks.rs): a recipient whose local part holds `@`,
//! `%` or `!`, or that came with a source route, is never authorized, so the
//! relay tricks `user%other@relay`, `"user@other"@relay`, `user@other@relay`,
//! `other!user@relay` and `<@relay:user@other>` are refused wherever they
//! point (Postfix accepts such an address when it resolves, through a local
//! domain, to an authorized one).

use super::networks::{ListKind, MatchList, normalize};
use conf::{Config, Error, Origin};
use std::net::IpAddr;
use std::sync::Arc;

/// The address class of a resolved recipient (Postfix RESOLVE_CLASS_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `$mydestination` or an address literal of this host.
    Local,
    /// `$virtual_alias_domains`.
    Alias,
    /// `$relay_domains`.
    Relay,
    /// Anything else.
    Default,
}

/// The result of [`Destinations::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The resolved address in internal form, lower-cased, always with
    /// `@domain`.
    pub addr: String,
    /// Its class.
    pub class: Class,
    /// The local part holds a routing operator (`@`, `%`, `!`).
    pub routed: bool,
}

impl Resolved {
    /// The domain of the resolved address.
    pub(crate) fn domain(&self) -> &str {
        self.addr.rfind('@').map_or("", |at| &self.addr[at + 1..])
    }

    /// The local part of the resolved address.
    pub(crate) fn local(&self) -> &str {
        self.addr
            .rfind('@')
            .map_or(self.addr.as_str(), |at| &self.addr[..at])
    }
}

/// The domain lists and rewriting parameters that decide where mail goes.
#[derive(Debug)]
pub(crate) struct Destinations {
    mydestination: MatchList,
    relay_domains: MatchList,
    virtual_alias_domains: MatchList,
    /// This host's addresses (inet_interfaces, proxy_interfaces).
    own_addrs: Arc<Vec<IpAddr>>,
    myorigin: String,
    myhostname: String,
    mydomain: String,
    append_at_myorigin: bool,
    append_dot_mydomain: bool,
    empty_address_recipient: String,
}

fn origin(cfg: &Config, name: &str) -> Origin {
    cfg.resolver.raw(name).map(|(_, o)| o).unwrap_or_default()
}

/// True when `param` is listed in parent_domain_matches_subdomains.
pub(crate) fn parent_style(cfg: &Config, param: &str) -> bool {
    cfg.parent_domain_matches_subdomains
        .iter()
        .any(|p| p.eq_ignore_ascii_case(param))
}

impl Destinations {
    /// Reads mydestination, relay_domains, virtual_alias_domains (default
    /// `$virtual_alias_maps`) and the rewriting parameters.
    ///
    /// # Errors
    /// Every bad list item or table.
    pub(crate) fn new(
        cfg: &Config,
        own_addrs: Arc<Vec<IpAddr>>,
    ) -> Result<Destinations, Vec<Error>> {
        let mut errors = Vec::new();
        let mut list = |kind, name: &str, items: &[String]| {
            MatchList::build(
                kind,
                name,
                items,
                parent_style(cfg, name),
                &origin(cfg, name),
            )
            .unwrap_or_else(|e| {
                errors.extend(e);
                MatchList::empty(kind)
            })
        };
        let mydestination = list(ListKind::Strings, "mydestination", &cfg.mydestination);
        let relay_domains = list(ListKind::Domains, "relay_domains", &cfg.relay_domains);
        let virtual_alias_domains = list(
            ListKind::Strings,
            "virtual_alias_domains",
            &cfg.virtual_alias_domains,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Destinations {
            mydestination,
            relay_domains,
            virtual_alias_domains,
            own_addrs,
            myorigin: cfg.myorigin.clone(),
            myhostname: cfg.myhostname.clone(),
            mydomain: cfg.mydomain.clone(),
            append_at_myorigin: cfg.append_at_myorigin,
            append_dot_mydomain: cfg.append_dot_mydomain,
            empty_address_recipient: cfg.empty_address_recipient.clone(),
        })
    }

    /// Postfix resolve_local(): `domain` is in $mydestination, or is an
    /// address literal of this host.
    ///
    /// # Errors
    /// A table lookup failed.
    pub(crate) fn is_local(&self, domain: &str) -> Result<bool, Error> {
        let d = domain.strip_suffix('.').unwrap_or(domain);
        if d.is_empty() || d.ends_with('.') {
            return Ok(false);
        }
        if self.mydestination.match_string(d)? {
            return Ok(true);
        }
        if let Some(inner) = d.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
            && let Some(ip) = literal_addr(inner)
        {
            return Ok(self.own_addrs.contains(&normalize(ip)));
        }
        Ok(false)
    }

    /// The class of a domain that is not local.
    fn class(&self, domain: &str) -> Result<Class, Error> {
        if self.virtual_alias_domains.match_string(domain)? {
            return Ok(Class::Alias);
        }
        if self.relay_domains.match_domain(domain)? {
            return Ok(Class::Relay);
        }
        Ok(Class::Default)
    }

    /// trivial-rewrite's rewrite_tree() in the local context, on an
    /// internal-form address.
    fn rewrite(&self, addr: &str) -> String {
        let mut a = addr.to_string();
        if a.starts_with('@')
            && let Some(colon) = route_end(&a)
            && colon + 1 < a.len()
        {
            a.drain(..=colon);
        }
        if a.is_empty() || a == "@" {
            return String::new();
        }
        if !a.contains('@') {
            if let Some(bang) = a.find('!') {
                a = format!("{}@{}", &a[bang + 1..], &a[..bang]);
            } else if let Some(pct) = a.rfind('%') {
                a.replace_range(pct..=pct, "@");
            } else if self.append_at_myorigin && !self.myorigin.is_empty() {
                a = format!("{a}@{}", self.myorigin);
            }
        }
        if self.append_dot_mydomain
            && !self.mydomain.is_empty()
            && let Some(at) = a.rfind('@')
            && at + 1 < a.len()
            && !a[at + 1..].starts_with('[')
            && !a[at + 1..].contains('.')
        {
            a = format!("{a}.{}", self.mydomain);
        }
        strip_trailing_dot(&mut a);
        a
    }

    /// Resolves an internal-form address (see the module documentation).
    ///
    /// # Errors
    /// A table lookup failed.
    pub(crate) fn resolve(&self, addr: &str) -> Result<Resolved, Error> {
        let mut a = self.rewrite(addr);
        let mut saved_domain: Option<String> = None;
        let mut local = false;
        let max = addr.len() + 100;
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > max {
                // Cannot happen for a finite address: each round removes a
                // domain or an operator. Treat as undeliverable anywhere.
                return Ok(Resolved {
                    addr: a.to_lowercase(),
                    class: Class::Default,
                    routed: true,
                });
            }
            if a.contains('@') {
                strip_trailing_dot(&mut a);
            }
            if let Some(at) = a.rfind('@') {
                let domain = &a[at + 1..];
                if !domain.is_empty() && !self.is_local(domain)? {
                    break;
                }
                saved_domain = Some(domain.to_string());
                a.truncate(at);
            }
            if a.contains(['@', '!', '%']) {
                a = self.rewrite(&a);
                continue;
            }
            if a.is_empty() {
                a = self.empty_address_recipient.clone();
                continue;
            }
            if saved_domain.is_none() {
                a = format!("{a}@{}", self.myhostname);
                continue;
            }
            local = true;
            break;
        }
        if local && let Some(d) = &saved_domain {
            a = format!("{a}@{d}");
        }
        let at = a.rfind('@').unwrap_or(0);
        let domain = if a.contains('@') { &a[at + 1..] } else { "" };
        let valid = if let Some(inner) = domain.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        {
            literal_addr(inner).is_some()
        } else {
            valid_hostname(domain)
        };
        let first_op = a.find(['@', '!', '%']).unwrap_or(a.len());
        let routed = a.get(first_op + 1..) != Some(domain);
        // An address literal of this host is a local domain for the
        // stripping above (as Postfix's resolve_local()), but postern has
        // no local delivery: the queue manager sends only $mydestination
        // to local_transport, so `user@[own address]` would go out through
        // default_transport and the relayhost. Authorizing it was an open
        // relay (found by tests/tests/smtpd_relay.rs open_relay_battery);
        // it is local only when mydestination lists the literal itself.
        let own_literal_only =
            local && domain.starts_with('[') && !self.mydestination.match_string(domain)?;
        let class = if !valid || own_literal_only {
            Class::Default
        } else if local {
            Class::Local
        } else {
            self.class(domain)?
        };
        Ok(Resolved {
            addr: a.to_lowercase(),
            class,
            routed,
        })
    }

    /// Postfix permit_auth_destination(): the resolved address is local, in
    /// a virtual alias domain or in a relay domain, and not routed.
    pub(crate) fn authorized(r: &Resolved) -> bool {
        !r.routed && matches!(r.class, Class::Local | Class::Alias | Class::Relay)
    }
}

/// The internal (unquoted) form of an address as a client wrote it, and
/// whether it had a source route: `"user@other"@relay` becomes
/// `user@other@relay`, `@a,@b:user@c` becomes `user@c` (routed).
pub(crate) fn internal_form(external: &str) -> (String, bool) {
    let mut s = external;
    let mut routed = false;
    if s.starts_with('@')
        && let Some(colon) = route_end(s)
    {
        s = &s[colon + 1..];
        routed = true;
    }
    let mut out = String::with_capacity(s.len());
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    (out, routed)
}

/// Index of the `:` that ends a source route (`@a,@b:`), outside `[...]`.
fn route_end(s: &str) -> Option<usize> {
    let mut literal = false;
    for (i, c) in s.char_indices() {
        match c {
            '[' => literal = true,
            ']' => literal = false,
            ':' if !literal => return Some(i),
            '"' => return None,
            _ => {}
        }
    }
    None
}

/// Strips one trailing dot at the end of the domain, but not `..` or `@.`.
fn strip_trailing_dot(a: &mut String) {
    let b = a.as_bytes();
    if b.len() >= 2 && b[b.len() - 1] == b'.' && b[b.len() - 2] != b'.' && b[b.len() - 2] != b'@' {
        a.pop();
    }
}

/// The address inside an address literal: `1.2.3.4` or `IPv6:addr`
/// (Postfix valid_mailhost_addr(), which also takes a bare IPv6 address).
pub(crate) fn literal_addr(inner: &str) -> Option<IpAddr> {
    let (v6, text) = match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => (true, &inner[5..]),
        _ => (inner.contains(':'), inner),
    };
    if v6 {
        text.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        text.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// Postfix valid_hostaddr(): a bare IPv4 or IPv6 address.
pub(crate) fn valid_hostaddr(s: &str) -> bool {
    if s.contains(':') {
        s.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        s.parse::<std::net::Ipv4Addr>().is_ok()
    }
}

/// Postfix valid_hostname(): labels of letters, digits, `-` and `_` (not
/// starting or ending with `-`, at most 63 characters), not all numeric,
/// at most 255 characters. Non-ASCII letters are accepted (SMTPUTF8
/// domains; Postfix checks their A-label form).
pub(crate) fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut non_numeric = false;
    for label in name.split('.') {
        if label.is_empty()
            || label.chars().count() > 63
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return false;
        }
        for c in label.chars() {
            if c.is_ascii_digit() {
                continue;
            }
            if c.is_alphanumeric() || c == '_' || c == '-' {
                non_numeric = true;
            } else {
                return false;
            }
        }
    }
    non_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(extra: &str) -> Destinations {
        let text = format!(
            "myhostname = relay.example.net\nmydomain = example.net\nmydestination = $myhostname, localhost\n{extra}"
        );
        let main =
            conf::MainCf::parse(&text, std::path::Path::new("/etc/postern/main.cf")).unwrap();
        let cfg = Config::build(&main, &[]).unwrap();
        Destinations::new(&cfg, Arc::new(vec!["192.0.2.25".parse().unwrap()])).unwrap()
    }

    fn res(d: &Destinations, ext: &str) -> (String, Class, bool) {
        let (int, _) = internal_form(ext);
        let r = d.resolve(&int).unwrap();
        (r.addr, r.class, r.routed)
    }

    #[test]
    fn internal_forms() {
        assert_eq!(
            internal_form("\"user@other\"@relay"),
            ("user@other@relay".into(), false)
        );
        assert_eq!(internal_form("\"a\\\"b\"@x"), ("a\"b@x".into(), false));
        assert_eq!(internal_form("@a,@b:user@c"), ("user@c".into(), true));
        assert_eq!(internal_form("@[1.2.3.4]:u@c"), ("u@c".into(), true));
        assert_eq!(internal_form("user@c"), ("user@c".into(), false));
    }

    #[test]
    fn resolution_table() {
        let d = dest("relay_domains = contoso.test\nvirtual_alias_domains = alias.test\n");
        use Class::*;
        for (ext, want_addr, want_class, want_routed) in [
            (
                "user@relay.example.net",
                "user@relay.example.net",
                Local,
                false,
            ),
            ("User@LOCALHOST.", "user@localhost", Local, false),
            ("user", "user@relay.example.net", Local, false),
            ("postmaster@localhost", "postmaster@localhost", Local, false),
            // Our own address literal is not a local destination unless
            // mydestination lists it (see resolve()).
            ("user@[192.0.2.25]", "user@[192.0.2.25]", Default, false),
            ("user@[192.0.2.26]", "user@[192.0.2.26]", Default, false),
            ("user@contoso.test", "user@contoso.test", Relay, false),
            (
                "user@sub.contoso.test",
                "user@sub.contoso.test",
                Relay,
                false,
            ),
            ("user@alias.test", "user@alias.test", Alias, false),
            ("user@other.example", "user@other.example", Default, false),
            (
                "user%other.example@localhost",
                "user@other.example",
                Default,
                false,
            ),
            (
                "\"user@other.example\"@localhost",
                "user@other.example",
                Default,
                false,
            ),
            (
                "other.example!user@localhost",
                "user@other.example",
                Default,
                false,
            ),
            (
                "user@other.example@localhost",
                "user@other.example",
                Default,
                false,
            ),
            ("user%other.example", "user@other.example", Default, false),
            ("other.example!user", "user@other.example", Default, false),
            (
                "user%contoso.test@localhost",
                "user@contoso.test",
                Relay,
                false,
            ),
            (
                "user%other.example@contoso.test",
                "user%other.example@contoso.test",
                Relay,
                true,
            ),
            (
                "\"user@other.example\"@contoso.test",
                "user@other.example@contoso.test",
                Relay,
                true,
            ),
            (
                "other.example!user@contoso.test",
                "other.example!user@contoso.test",
                Relay,
                true,
            ),
            (
                "a%b%other.example@localhost",
                "a%b@other.example",
                Default,
                true,
            ),
            ("user@1.2.3.4", "user@1.2.3.4", Default, false),
            ("user@", "user@", Default, false),
            ("\"\"@localhost", "mailer-daemon@localhost", Local, false),
        ] {
            assert_eq!(
                res(&d, ext),
                (want_addr.to_string(), want_class, want_routed),
                "{ext}"
            );
        }
    }

    #[test]
    fn own_literal_is_local_only_when_listed() {
        let d = dest("mydestination = $myhostname, [192.0.2.25]\n");
        assert_eq!(
            res(&d, "user@[192.0.2.25]"),
            ("user@[192.0.2.25]".to_string(), Class::Local, false)
        );
        let d = dest("");
        assert_eq!(
            res(&d, "user%other.example@[192.0.2.25]"),
            ("user@other.example".to_string(), Class::Default, false)
        );
    }

    #[test]
    fn hostname_validity() {
        for (n, ok) in [
            ("example.com", true),
            ("a_b.example", true),
            ("xn--bcher-kva.example", true),
            ("bücher.example", true),
            ("-a.example", false),
            ("a-.example", false),
            ("a..b", false),
            ("1.2.3.4", false),
            ("", false),
            ("a b", false),
        ] {
            assert_eq!(valid_hostname(n), ok, "{n}");
        }
        assert_eq!(literal_addr("IPv6:::1"), Some("::1".parse().unwrap()));
        assert_eq!(literal_addr("10.1.2.3"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(literal_addr("example"), None);
    }

    proptest::proptest! {
        #[test]
        fn resolve_never_panics(a in "[a-z@%!\".:\\[\\]0-9]{0,30}") {
            let d = dest("relay_domains = contoso.test\n");
            let (int, _) = internal_form(&a);
            let _ = d.resolve(&int);
        }
    }
}
