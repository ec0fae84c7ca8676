//! A list of tables searched in order (Postfix maps(3)), with the address
//! search of mail_addr_find(3) and the transport_maps search of
//! trivial-rewrite's transport.c.

use super::{Table, TableKind, open, open_aliases, table_error};
use crate::error::{Error, Origin};

/// The lookup tables of one `*_maps` parameter, searched in order.
#[derive(Debug)]
pub struct Maps {
    tables: Vec<Box<dyn Table>>,
    origin: Origin,
}

/// How [`Maps::find_address`] derives partial keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrSearch {
    /// `recipient_delimiter`: any of these characters separates a user name
    /// from an address extension (`user+ext`); empty disables the
    /// extension-stripped lookups.
    pub recipient_delimiter: String,
    /// True when the address's domain is local to this machine
    /// (`$myorigin`, `$mydestination`, `$inet_interfaces`): then the bare
    /// local part is looked up too.
    pub local_domain: bool,
}

/// Which parent domains [`Maps::find_domain`] tries after the domain itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParentMatch {
    /// Only the domain itself.
    None,
    /// `.example.com` entries match subdomains of example.com: for
    /// `a.b.example.com` the keys `a.b.example.com`, `.b.example.com`,
    /// `.example.com`, `.com`. Postfix's default for transport_maps.
    #[default]
    DotDomain,
    /// `example.com` entries also match subdomains (the parameter is listed
    /// in `parent_domain_matches_subdomains`): `a.b.example.com`,
    /// `b.example.com`, `example.com`, `com`.
    Domain,
}

/// Which tables a key is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// A full key: every table.
    Full,
    /// A partial key (address without extension, `@domain`, local part,
    /// domain): key/value tables only.
    Partial,
}

impl Maps {
    /// Opens every table of `specs` (a `*_maps` parameter value, e.g.
    /// `cfg.transport_maps`); `origin` is where the parameter was set.
    ///
    /// # Errors
    /// Every error of every table.
    pub fn open(specs: &[String], origin: &Origin) -> Result<Maps, Vec<Error>> {
        let mut tables = Vec::new();
        let mut errors = Vec::new();
        for spec in specs {
            match open(spec, origin) {
                Ok(t) => tables.push(t),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Maps::from_tables(tables, origin))
        } else {
            Err(errors)
        }
    }

    /// Opens the tables of `alias_maps` or `alias_database` with
    /// [`open_aliases`] (aliases(5) format for hash and the other file types).
    ///
    /// # Errors
    /// Every error of every table.
    pub fn open_aliases(specs: &[String], origin: &Origin) -> Result<Maps, Vec<Error>> {
        let mut tables = Vec::new();
        let mut errors = Vec::new();
        for spec in specs {
            match open_aliases(spec, origin) {
                Ok(t) => tables.push(t),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Maps::from_tables(tables, origin))
        } else {
            Err(errors)
        }
    }

    /// Maps with no tables: every search finds nothing.
    pub fn empty() -> Maps {
        Maps::from_tables(Vec::new(), &Origin::Default)
    }

    /// Builds maps from tables already open.
    pub fn from_tables(tables: Vec<Box<dyn Table>>, origin: &Origin) -> Maps {
        Maps {
            tables,
            origin: origin.clone(),
        }
    }

    /// True when there are no tables.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The tables, in search order.
    pub fn tables(&self) -> &[Box<dyn Table>] {
        &self.tables
    }

    /// The warnings of all tables.
    pub fn warnings(&self) -> impl Iterator<Item = &Error> {
        self.tables.iter().flat_map(|t| t.warnings().iter())
    }

    /// Looks `key` up in every table in order; the first match wins.
    ///
    /// # Errors
    /// A failed lookup, or a table that returns an empty value (Postfix
    /// treats that as a configuration error: tables must return no result
    /// for "not found").
    pub fn find(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.search(key, Keys::Full)?.map(|(v, _)| v))
    }

    /// maps_find(): the value and the key as the matching table saw it
    /// (lower case for key/value tables).
    fn search(&self, key: &str, keys: Keys) -> Result<Option<(String, String)>, Error> {
        if key.is_empty() {
            return Ok(None);
        }
        for t in &self.tables {
            if keys == Keys::Partial && t.kind() == TableKind::Pattern {
                continue;
            }
            if let Some(value) = t.lookup(key)? {
                if value.is_empty() {
                    return Err(table_error(
                        &self.origin,
                        t.name(),
                        format!(
                            "lookup of \"{key}\" returns an empty string result; \
                             a table must return no result when a key is not found"
                        ),
                    ));
                }
                let matched = match t.kind() {
                    TableKind::KeyValue => key.to_lowercase(),
                    TableKind::Pattern => key.to_string(),
                };
                return Ok(Some((value, matched)));
            }
        }
        Ok(None)
    }

    /// Postfix's address search (mail_addr_find) for `addr` in external
    /// (quoted) form, e.g. `user+ext@example.com`:
    ///
    /// 1. `user+ext@example.com` (every table),
    /// 2. `user@example.com` when `recipient_delimiter` splits off an
    ///    extension,
    /// 3. `user+ext`, then `user`, only when `opts.local_domain`,
    /// 4. `@example.com`.
    ///
    /// Pattern tables (regexp, pcre, cidr) get only the first key; key/value
    /// tables compare keys in lower case. As in Postfix, `postmaster`,
    /// `mailer-daemon`, `double-bounce` and (with `-` among the delimiters)
    /// `owner-*` and `*-request` are never split. Returns the value and the
    /// key that matched; when that key lacks the extension of `addr`, the
    /// extension was stripped (see `propagate_unmatched_extensions`).
    ///
    /// # Errors
    /// As [`Maps::find`].
    pub fn find_address(
        &self,
        addr: &str,
        opts: &AddrSearch,
    ) -> Result<Option<(String, String)>, Error> {
        let at = addr.rfind('@');
        let bare = strip_extension(addr, &opts.recipient_delimiter);
        if let Some(r) = self.search(addr, Keys::Full)? {
            return Ok(Some(r));
        }
        if let Some(b) = &bare
            && let Some(r) = self.search(b, Keys::Partial)?
        {
            return Ok(Some(r));
        }
        let Some(at) = at else {
            return Ok(None);
        };
        if opts.local_domain {
            if let Some(r) = self.search(&addr[..at], Keys::Partial)? {
                return Ok(Some(r));
            }
            if let Some(b) = &bare
                && let Some(bat) = b.rfind('@')
                && let Some(r) = self.search(&b[..bat], Keys::Partial)?
            {
                return Ok(Some(r));
            }
        }
        self.search(&addr[at..], Keys::Partial)
    }

    /// Looks up `domain`, then its parents as `parents` says (key/value
    /// tables only). Returns the value and the key that matched.
    ///
    /// # Errors
    /// As [`Maps::find`].
    pub fn find_domain(
        &self,
        domain: &str,
        parents: ParentMatch,
    ) -> Result<Option<(String, String)>, Error> {
        let mut name = domain;
        while !name.is_empty() {
            if let Some(r) = self.search(name, Keys::Partial)? {
                return Ok(Some(r));
            }
            // The next dot after the first character (a leading dot of a
            // `.domain` form is not a separator).
            let first_len = name.chars().next().map_or(0, char::len_utf8);
            let Some(dot) = name[first_len..].find('.').map(|d| d + first_len) else {
                break;
            };
            name = match parents {
                ParentMatch::None => break,
                ParentMatch::DotDomain => &name[dot..],
                ParentMatch::Domain => &name[dot + 1..],
            };
        }
        Ok(None)
    }

    /// The transport_maps search of Postfix's trivial-rewrite for a
    /// recipient `addr`, with Postfix's defaults (no `recipient_delimiter`,
    /// `.domain` parent entries): see [`Maps::find_transport_with`].
    ///
    /// # Errors
    /// As [`Maps::find`].
    pub fn find_transport(&self, addr: &str) -> Result<Option<String>, Error> {
        self.find_transport_with(addr, "", ParentMatch::DotDomain)
    }

    /// The transport_maps search of Postfix's trivial-rewrite for a
    /// recipient `addr`: the full address (every table), the address without
    /// extension (when `recipient_delimiter` splits one off), the domain and
    /// its parents (per `parents`: [`ParentMatch::Domain`] when
    /// `parent_domain_matches_subdomains` lists transport_maps, else
    /// [`ParentMatch::DotDomain`]), and finally the `*` wildcard entry (every
    /// table).
    ///
    /// # Errors
    /// As [`Maps::find`].
    pub fn find_transport_with(
        &self,
        addr: &str,
        recipient_delimiter: &str,
        parents: ParentMatch,
    ) -> Result<Option<String>, Error> {
        if addr.is_empty() {
            return Ok(None);
        }
        if let Some((v, _)) = self.search(addr, Keys::Full)? {
            return Ok(Some(v));
        }
        if let Some(b) = strip_extension(addr, recipient_delimiter)
            && let Some((v, _)) = self.search(&b, Keys::Partial)?
        {
            return Ok(Some(v));
        }
        if let Some(at) = addr.rfind('@')
            && let Some((v, _)) = self.find_domain(&addr[at + 1..], parents)?
        {
            return Ok(Some(v));
        }
        Ok(self.search("*", Keys::Full)?.map(|(v, _)| v))
    }
}

/// The address without its extension (`user+ext@domain` → `user@domain`),
/// or `None` when there is none to strip (Postfix strip_addr()/split_addr()).
fn strip_extension(addr: &str, delimiters: &str) -> Option<String> {
    if delimiters.is_empty() {
        return None;
    }
    let (local, domain) = match addr.rfind('@') {
        Some(at) => (&addr[..at], &addr[at..]),
        None => (addr, ""),
    };
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
    Some(format!("{}{domain}", &local[..pos]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn maps(specs: &[&str]) -> Maps {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        Maps::open(&specs, &Origin::Default).unwrap()
    }

    fn opts(delim: &str, local: bool) -> AddrSearch {
        AddrSearch {
            recipient_delimiter: delim.into(),
            local_domain: local,
        }
    }

    #[test]
    fn first_table_with_a_match_wins() {
        let m = maps(&["inline:{a=1}", "inline:{a=2, b=3}", "static:fallback"]);
        assert_eq!(m.find("A").unwrap().as_deref(), Some("1"));
        assert_eq!(m.find("b").unwrap().as_deref(), Some("3"));
        assert_eq!(m.find("zzz").unwrap().as_deref(), Some("fallback"));
        assert_eq!(m.find("").unwrap(), None);
        assert!(!m.is_empty());
        assert!(Maps::open(&[], &Origin::Default).unwrap().is_empty());
    }

    #[test]
    fn open_collects_errors_of_all_tables() {
        let specs = vec!["inline:{}".to_string(), "unix:x".into(), "static:ok".into()];
        assert_eq!(Maps::open(&specs, &Origin::Default).unwrap_err().len(), 2);
    }

    #[test]
    fn empty_results_are_configuration_errors() {
        let m = maps(&["inline:{ a = }"]);
        let e = m.find("a").unwrap_err().to_string();
        assert!(
            e.contains("table inline:{ a = }: lookup of \"a\" returns an empty string result"),
            "{e}"
        );
    }

    #[test]
    fn address_search_order() {
        let all = maps(&[
            "inline:{ user+ext@example.com=full, user@example.com=noext, user+ext=localext, user=local, @example.com=atdomain }",
        ]);
        let step = |m: &Maps, a: &str, o: &AddrSearch| m.find_address(a, o).unwrap();
        assert_eq!(
            step(&all, "User+Ext@Example.com", &opts("+", true)),
            Some(("full".into(), "user+ext@example.com".into()))
        );
        let no_full = maps(&[
            "inline:{ user@example.com=noext, user+ext=localext, user=local, @example.com=atdomain }",
        ]);
        assert_eq!(
            step(&no_full, "user+ext@example.com", &opts("+", true))
                .unwrap()
                .0,
            "noext"
        );
        assert_eq!(
            step(&no_full, "user+ext@example.com", &opts("", true))
                .unwrap()
                .0,
            "localext"
        );
        let local = maps(&["inline:{ user+ext=localext, user=local, @example.com=atdomain }"]);
        assert_eq!(
            step(&local, "user+ext@example.com", &opts("+", true))
                .unwrap()
                .0,
            "localext"
        );
        assert_eq!(
            step(&local, "user+ext@example.com", &opts("+", false))
                .unwrap()
                .0,
            "atdomain"
        );
        let bare = maps(&["inline:{ user=local, @example.com=atdomain }"]);
        assert_eq!(
            step(&bare, "user+ext@example.com", &opts("+-", true)),
            Some(("local".into(), "user".into()))
        );
        assert_eq!(
            step(&bare, "user+ext@example.com", &opts("", true))
                .unwrap()
                .0,
            "atdomain"
        );
        assert_eq!(step(&bare, "other@elsewhere.com", &opts("+", true)), None);
        assert_eq!(step(&bare, "user", &opts("+", true)).unwrap().0, "local");
    }

    #[test]
    fn pattern_tables_get_only_the_full_address() {
        let m = maps(&[
            "regexp:{ {/^user@example\\.com$/ re-noext}, {/^@example/ re-at} }",
            "inline:{@example.com=kv}",
        ]);
        let o = opts("+", true);
        assert_eq!(
            m.find_address("user+x@example.com", &o).unwrap().unwrap().0,
            "kv"
        );
        assert_eq!(
            m.find_address("user@example.com", &o).unwrap(),
            Some(("re-noext".into(), "user@example.com".into()))
        );
    }

    #[test]
    fn unsplittable_local_parts() {
        assert_eq!(strip_extension("a+b@x", "+"), Some("a@x".into()));
        assert_eq!(strip_extension("a-b+c@x", "+-"), Some("a@x".into()));
        assert_eq!(strip_extension("+b@x", "+"), None);
        assert_eq!(strip_extension("a+b", "+"), Some("a".into()));
        assert_eq!(strip_extension("a@x+y", "+"), None);
        assert_eq!(strip_extension("Postmaster@x", "+"), None);
        assert_eq!(strip_extension("owner-list@x", "-"), None);
        assert_eq!(
            strip_extension("owner-list+x@x", "+"),
            Some("owner-list@x".into())
        );
        assert_eq!(strip_extension("list-request@x", "-"), None);
        assert_eq!(strip_extension("list-foo@x", "-"), Some("list@x".into()));
    }

    #[test]
    fn domain_and_parent_search() {
        let m = maps(&["inline:{ .example.com=dot, example.org=bare, com=tld }"]);
        assert_eq!(
            m.find_domain("a.b.example.com", ParentMatch::DotDomain)
                .unwrap(),
            Some(("dot".into(), ".example.com".into()))
        );
        assert_eq!(
            m.find_domain("example.com", ParentMatch::DotDomain)
                .unwrap(),
            None,
            "\".com\" is not \"com\""
        );
        assert_eq!(
            m.find_domain("example.com", ParentMatch::Domain)
                .unwrap()
                .unwrap()
                .0,
            "tld"
        );
        assert_eq!(
            m.find_domain("x.example.org", ParentMatch::DotDomain)
                .unwrap(),
            None
        );
        assert_eq!(
            m.find_domain("x.example.org", ParentMatch::Domain)
                .unwrap()
                .unwrap()
                .0,
            "bare"
        );
        assert_eq!(
            m.find_domain("x.example.org", ParentMatch::None).unwrap(),
            None
        );
        assert_eq!(
            m.find_domain("example.org", ParentMatch::None)
                .unwrap()
                .unwrap()
                .0,
            "bare"
        );
        assert_eq!(m.find_domain("a.net", ParentMatch::Domain).unwrap(), None);
    }

    #[test]
    fn transport_search_order() {
        let m = maps(&[
            "inline:{ bob+x@example.com=full, alice@example.com=noext, example.com=domain, .sub.example.net=parent }",
            "regexp:{ {/^carol@/ regexp}, {/^\\*$/ regexp-star} }",
        ]);
        let t = |a: &str| {
            m.find_transport_with(a, "+", ParentMatch::DotDomain)
                .unwrap()
        };
        assert_eq!(t("bob+x@example.com").as_deref(), Some("full"));
        assert_eq!(t("alice+y@example.com").as_deref(), Some("noext"));
        assert_eq!(t("carol@example.com").as_deref(), Some("regexp"));
        assert_eq!(t("dave@example.com").as_deref(), Some("domain"));
        assert_eq!(t("dave@a.sub.example.net").as_deref(), Some("parent"));
        assert_eq!(
            t("dave@sub.example.net").as_deref(),
            Some("regexp-star"),
            "the domain itself needs its own entry"
        );
        assert_eq!(t("").as_deref(), None);
        let w = maps(&["inline:{ example.com=domain, *=wildcard }"]);
        assert_eq!(
            w.find_transport("x@other.org").unwrap().as_deref(),
            Some("wildcard")
        );
        assert_eq!(
            w.find_transport("x@Example.COM").unwrap().as_deref(),
            Some("domain")
        );
        assert_eq!(
            m.find_transport("alice+y@example.com").unwrap().as_deref(),
            Some("domain"),
            "no recipient_delimiter by default"
        );
        assert_eq!(Maps::empty().find_transport("a@b").unwrap(), None);
    }

    proptest! {
        #[test]
        fn searches_never_panic(addr in "\\PC{0,30}", delim in "[+\\-=é]{0,2}", local in any::<bool>()) {
            let m = maps(&["inline:{a=1, @b=2, .c=3}", "regexp:{ {/x/ 4} }"]);
            let _ = m.find_address(&addr, &opts(&delim, local));
            let _ = m.find_transport_with(&addr, &delim, ParentMatch::DotDomain);
            let _ = m.find_domain(&addr, ParentMatch::Domain);
            let _ = strip_extension(&addr, &delim);
        }
    }
}
