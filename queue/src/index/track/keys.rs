//! Search keys of `postern log`: an address matched exactly, by domain or
//! by a `*` pattern, ignoring case, in Rust and as SQL conditions.

use rusqlite::ToSql;

/// How a text search key matches: exactly (ignoring case), by domain
/// (`@example.com`), or as a pattern with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Equal, ignoring ASCII case.
    Exact(String),
    /// Ends with `@domain` (the value keeps its `@`), ignoring case.
    Domain(String),
    /// A pattern where `*` matches any run of characters, ignoring case.
    Pattern(String),
}

impl Match {
    /// Reads a search key: `*` makes a pattern, a leading `@` a domain,
    /// `<>` the null sender; angle brackets around an address are dropped.
    pub fn parse(key: &str) -> Match {
        let k = key.trim();
        let k = if k == "<>" {
            ""
        } else {
            k.strip_prefix('<')
                .and_then(|s| s.strip_suffix('>'))
                .unwrap_or(k)
        };
        if k.contains('*') {
            Match::Pattern(k.to_string())
        } else if k.starts_with('@') && k.len() > 1 {
            Match::Domain(k.to_string())
        } else {
            Match::Exact(k.to_string())
        }
    }

    /// True when `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Match::Exact(k) => value.eq_ignore_ascii_case(k),
            Match::Domain(d) => {
                value.len() >= d.len()
                    && value.as_bytes()[value.len() - d.len()..].eq_ignore_ascii_case(d.as_bytes())
            }
            Match::Pattern(p) => glob(&p.to_ascii_lowercase(), &value.to_ascii_lowercase()),
        }
    }

    /// An SQL condition on `column` with its parameters. For a column
    /// declared `COLLATE NOCASE` (`nocase`), a pattern's literal prefix
    /// also becomes a range, so that an index on it narrows the search.
    pub(super) fn sql(&self, column: &str, nocase: bool) -> (String, Vec<Box<dyn ToSql>>) {
        let like = |pattern: String| -> (String, Vec<Box<dyn ToSql>>) {
            let cond = if nocase {
                format!("{column} LIKE ? ESCAPE '\\'")
            } else {
                format!("{column} COLLATE NOCASE LIKE ? ESCAPE '\\'")
            };
            (cond, vec![Box::new(pattern)])
        };
        match self {
            Match::Exact(k) if nocase => (format!("{column} = ?"), vec![Box::new(k.clone())]),
            Match::Exact(k) => (
                format!("{column} = ? COLLATE NOCASE"),
                vec![Box::new(k.clone())],
            ),
            Match::Domain(d) => like(format!("%{}", like_escape(d))),
            Match::Pattern(p) => {
                let (cond, mut args) = like(like_escape(p).replace('*', "%"));
                match self.prefix_range() {
                    Some((lo, hi)) if nocase => {
                        args.insert(0, Box::new(hi));
                        args.insert(0, Box::new(lo));
                        (format!("{column} >= ? AND {column} < ? AND {cond}"), args)
                    }
                    _ => (cond, args),
                }
            }
        }
    }

    /// For a pattern with a literal ASCII prefix, the range of values
    /// (in a `NOCASE` column) that start with it: everything that starts
    /// with the prefix sorts in [prefix, prefix with its last byte raised).
    pub(super) fn prefix_range(&self) -> Option<(String, String)> {
        let Match::Pattern(p) = self else {
            return None;
        };
        let prefix = p.split('*').next().unwrap_or("").to_ascii_lowercase();
        let last = *prefix.as_bytes().last()?;
        if !prefix.is_ascii() || last >= 0x7e {
            return None;
        }
        let mut hi = prefix.clone().into_bytes();
        if let Some(b) = hi.last_mut() {
            *b += 1;
        }
        Some((prefix, String::from_utf8(hi).ok()?))
    }
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `*`-only glob matching (both sides already in one case).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(Match::parse("<A@B.com>").matches("a@b.COM"));
        assert!(Match::parse("@b.com").matches("x@B.com"));
        assert!(!Match::parse("@b.com").matches("x@sub.b.comx"));
        assert!(Match::parse("scan*@*.com").matches("scanner@x.com"));
        assert!(!Match::parse("scan*@*.com").matches("xscanner@x.com"));
        assert!(Match::parse("*").matches(""));
        assert_eq!(Match::parse("<>"), Match::Exact(String::new()));
    }
}
