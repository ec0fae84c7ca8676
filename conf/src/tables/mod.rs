//! Postfix lookup tables, named `type:name` as in main.cf.
//!
//! | type | source |
//! |---|---|
//! | `texthash:/path` | postmap(1) input text, read directly |
//! | `hash:`, `btree:`, `lmdb:`, `cdb:`, `dbm:`, `sdbm:` | the same text source at the given path: what a Postfix admin feeds to postmap, never the compiled `.db` |
//! | `inline:{ key = value, { key2 = value with spaces } }` | the specification itself |
//! | `static:value`, `static:{ value with spaces }` | every lookup returns the value |
//! | `cidr:/path`, `cidr:{ {rule}, ... }` | cidr_table(5) |
//! | `regexp:/path`, `regexp:{ {rule}, ... }` | regexp_table(5) |
//! | `pcre:/path`, `pcre:{ {rule}, ... }` | pcre_table(5), run by the `regex` crate (see below) |
//! | `proxy:type:name` | opens `type:name` (postern has no proxymap; the tables are read at start) |
//!
//! Tables are read once, when opened; daemons restart to pick up changes.
//! [`open`] returns every malformed line as an [`Error::Table`] naming the
//! file, the line and the table, so `postern check` can list all of them.
//! Problems Postfix accepts with a warning (a duplicate key keeps the first
//! value, an `if` without `endif`, a rule without result text) do not stop the
//! table from opening: they are listed by [`Table::warnings`]. Lines Postfix
//! skips are errors.
//!
//! **Regular expressions.** Both `regexp:` and `pcre:` tables run on the
//! `regex` crate, which guarantees linear-time matching. `regexp:` patterns
//! are POSIX extended expressions (basic ones with the `x` flag) translated to
//! that syntax, including bracket expressions (`[[:alpha:]\]` has a literal
//! backslash, as in POSIX). Not supported, and reported as errors when a
//! table is opened: back-references (`\1`), look-ahead and look-behind,
//! atomic groups, recursion, conditionals, `\K`, `\Z`, `\G`, callouts and
//! `(*VERB)`s. Differences in what matches: alternatives are tried
//! leftmost-first (POSIX prefers the longest match, which can change what `$n`
//! captures), `$` matches only at the very end of the key (PCRE also before a
//! final newline, as with its `E` flag), and possessive quantifiers
//! (`a++`) act as greedy ones.
//!
//! [`Maps`] searches a list of tables in order, with the address and domain
//! search orders of Postfix's mail_addr_find() and transport_maps.

mod aliases;
mod cidr;
mod inline;
mod maps;
mod regexp;
mod text;
mod translate;

pub use aliases::split_alias_value;
pub use maps::{AddrSearch, Maps, ParentMatch};

pub(crate) use inline::{strip_group, tokens};
pub(crate) use text::logical_lines;

use crate::error::{Error, Origin};
use std::path::PathBuf;

/// What a table matches, which decides what keys an address search sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Exact keys (hash, texthash, inline, static, alias files): such tables
    /// also get partial keys (`user@domain` without extension, `@domain`,
    /// parent domains).
    KeyValue,
    /// Patterns matched against the whole string (regexp, pcre, cidr): such
    /// tables get only the full key of an address search.
    Pattern,
}

/// An open lookup table.
pub trait Table: Send + Sync + std::fmt::Debug {
    /// The value for `key`, or `None` when the table has no match. Key/value
    /// tables compare keys case-insensitively; pattern tables see the key as
    /// given.
    ///
    /// # Errors
    /// A lookup that cannot be completed (none of postern's in-memory tables
    /// fail; the signature leaves room for tables that can).
    fn lookup(&self, key: &str) -> Result<Option<String>, Error>;
    /// The table as configured, e.g. `hash:/etc/postern/transport`.
    fn name(&self) -> &str;
    /// Whether the table matches exact keys or patterns.
    fn kind(&self) -> TableKind;
    /// Problems found when the table was read that Postfix only warns about,
    /// each naming file, line and table.
    fn warnings(&self) -> &[Error] {
        &[]
    }
}

/// Table types [`open`] accepts.
pub const SUPPORTED_TYPES: &[&str] = &[
    "texthash", "hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "inline", "static", "cidr",
    "regexp", "pcre", "proxy",
];

/// Types whose source is a postmap(1) (or, for alias maps, postalias(1))
/// input file.
const FILE_KV_TYPES: &[&str] = &["hash", "btree", "lmdb", "cdb", "dbm", "sdbm"];

/// Where a table's text comes from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The table as named in the configuration.
    pub table: String,
    /// The file read, or `None` for inline tables.
    pub path: Option<PathBuf>,
    /// Where the table was named (a main.cf line, a master.cf override...).
    pub origin: Origin,
}

impl Source {
    pub(crate) fn file(table: &str, path: PathBuf, origin: &Origin) -> Source {
        Source {
            table: table.to_string(),
            path: Some(path),
            origin: origin.clone(),
        }
    }

    pub(crate) fn inline(table: &str, origin: &Origin) -> Source {
        Source {
            table: table.to_string(),
            path: None,
            origin: origin.clone(),
        }
    }

    /// An error at `line` of the source (the rule number for inline tables).
    pub(crate) fn err(&self, line: usize, message: impl Into<String>) -> Error {
        let message = message.into();
        match &self.path {
            Some(path) => Error::Table {
                origin: Origin::File {
                    path: path.clone(),
                    line,
                },
                table: self.table.clone(),
                message,
            },
            None => Error::Table {
                origin: self.origin.clone(),
                table: self.table.clone(),
                message: format!("rule {line}: {message}"),
            },
        }
    }

    /// An error about the table as a whole, located where it was named.
    pub(crate) fn open_error(&self, message: impl Into<String>) -> Error {
        table_error(&self.origin, &self.table, message)
    }
}

pub(crate) fn table_error(origin: &Origin, table: &str, message: impl Into<String>) -> Error {
    Error::Table {
        origin: origin.clone(),
        table: table.to_string(),
        message: message.into(),
    }
}

/// Splits `type:name`.
fn split_spec<'a>(spec: &'a str, origin: &Origin) -> Result<(&'a str, &'a str), Error> {
    let allowed = || {
        format!(
            "expected type:name, e.g. hash:/etc/postern/transport; types: {}",
            SUPPORTED_TYPES.join(", ")
        )
    };
    let Some((ty, name)) = spec.split_once(':') else {
        return Err(table_error(origin, spec, allowed()));
    };
    if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(table_error(origin, spec, allowed()));
    }
    if name.trim().is_empty() {
        return Err(table_error(
            origin,
            spec,
            format!("missing table name after \"{ty}:\"; {}", allowed()),
        ));
    }
    Ok((ty, name))
}

/// Opens the table named by `spec` (`type:name`); `origin` is where it was
/// configured.
///
/// # Errors
/// An unknown type, an unreadable file, and every malformed line.
pub fn open(spec: &str, origin: &Origin) -> Result<Box<dyn Table>, Vec<Error>> {
    open_as(spec, spec.trim(), origin, false)
}

/// Opens a table of `alias_maps`: for the file-based key/value types (hash,
/// btree, lmdb, cdb, dbm, sdbm) the source is in aliases(5) format (`name:
/// value, value2`, see [`split_alias_value`]); other types are opened as by
/// [`open`]. Values such as `|command`, `/file` and `:include:/file` are
/// returned as text; the caller decides what it supports.
///
/// # Errors
/// As [`open`].
pub fn open_aliases(spec: &str, origin: &Origin) -> Result<Box<dyn Table>, Vec<Error>> {
    open_as(spec, spec.trim(), origin, true)
}

fn open_as(
    display: &str,
    spec: &str,
    origin: &Origin,
    alias_format: bool,
) -> Result<Box<dyn Table>, Vec<Error>> {
    let display = display.trim();
    let (ty, name) = split_spec(spec, origin).map_err(|e| vec![e])?;
    let file_source = || Source::file(display, PathBuf::from(name.trim()), origin);
    match ty {
        "proxy" => open_as(display, name, origin, alias_format),
        t if t == "texthash" || FILE_KV_TYPES.contains(&t) => {
            let src = file_source();
            let path = src.path.clone().unwrap_or_default();
            let (text, read_errors) = text::read_source(&path, &src)?;
            let parsed = if alias_format && t != "texthash" {
                aliases::parse_aliases(&text, &src)
            } else {
                text::parse_postmap(&text, &src)
            };
            Ok(Box::new(text::with_read_errors(read_errors, parsed)?))
        }
        "inline" => Ok(Box::new(inline::parse_inline(
            name,
            &Source::inline(display, origin),
        )?)),
        "static" => Ok(Box::new(inline::parse_static(
            name,
            &Source::inline(display, origin),
        )?)),
        "cidr" => {
            let (text, src, read_errors) = rules_source(name, display, origin)?;
            let parsed = cidr::parse_cidr(&text, &src);
            Ok(Box::new(text::with_read_errors(read_errors, parsed)?))
        }
        "regexp" | "pcre" => {
            let (text, src, read_errors) = rules_source(name, display, origin)?;
            let flavor = if ty == "pcre" {
                regexp::Flavor::Pcre
            } else {
                regexp::Flavor::Posix
            };
            let parsed = regexp::parse_regexp(&text, &src, flavor);
            Ok(Box::new(text::with_read_errors(read_errors, parsed)?))
        }
        _ => Err(vec![table_error(
            origin,
            display,
            format!(
                "unsupported table type \"{ty}\"; postern supports: {}",
                SUPPORTED_TYPES.join(", ")
            ),
        )]),
    }
}

/// The rule text of a cidr, regexp or pcre table: the file, or the rules of
/// the inline form `{ {rule}, {rule} }`, one per line. Also returns the
/// lines of a file that are not UTF-8.
fn rules_source(
    name: &str,
    display: &str,
    origin: &Origin,
) -> Result<(String, Source, Vec<Error>), Vec<Error>> {
    let name = name.trim();
    if name.starts_with('{') {
        let src = Source::inline(display, origin);
        let text = inline::inline_rules(name, &src).map_err(|e| vec![e])?;
        Ok((text, src, Vec::new()))
    } else {
        let src = Source::file(display, PathBuf::from(name), origin);
        let (text, read_errors) = text::read_source(std::path::Path::new(name), &src)?;
        Ok((text, src, read_errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn origin() -> Origin {
        Origin::File {
            path: "/etc/postern/main.cf".into(),
            line: 7,
        }
    }

    fn errs(spec: &str) -> Vec<String> {
        open(spec, &origin())
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn file_types_read_the_text_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("transport");
        std::fs::write(&p, "example.com smtp:[mx]:25\n").unwrap();
        for ty in [
            "texthash",
            "hash",
            "btree",
            "lmdb",
            "cdb",
            "dbm",
            "sdbm",
            "proxy:hash",
        ] {
            let spec = format!("{ty}:{}", p.display());
            let t = open(&spec, &origin()).unwrap();
            assert_eq!(t.name(), spec);
            assert_eq!(t.kind(), TableKind::KeyValue);
            assert_eq!(
                t.lookup("Example.com").unwrap().as_deref(),
                Some("smtp:[mx]:25")
            );
        }
    }

    #[test]
    fn alias_files_use_alias_format_but_texthash_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("aliases");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "root: admin@example.com,\n  ops@example.com").unwrap();
        drop(f);
        let t = open_aliases(&format!("hash:{}", p.display()), &origin()).unwrap();
        assert_eq!(
            t.lookup("ROOT").unwrap().as_deref(),
            Some("admin@example.com, ops@example.com")
        );
        let t = open_aliases(&format!("texthash:{}", p.display()), &origin()).unwrap();
        assert_eq!(t.lookup("root").unwrap(), None);
        assert!(t.lookup("root:").unwrap().is_some());
        let t = open_aliases("inline:{root=bob}", &origin()).unwrap();
        assert_eq!(t.lookup("root").unwrap().as_deref(), Some("bob"));
    }

    #[test]
    fn unknown_types_and_bad_specs() {
        let e = errs("unix:passwd.byname");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("/etc/postern/main.cf:7: table unix:passwd.byname: unsupported table type \"unix\"; postern supports: texthash, hash,"),
            "{e:?}"
        );
        assert!(errs("/etc/postern/transport")[0].contains("expected type:name"));
        assert!(errs("hash:")[0].contains("missing table name"));
        let e = errs("hash:/nonexistent/postern/transport");
        assert!(
            e[0].starts_with("/etc/postern/main.cf:7: table hash:/nonexistent/postern/transport: cannot read /nonexistent/postern/transport:"),
            "{e:?}"
        );
    }

    #[test]
    fn every_error_of_a_file_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad");
        std::fs::write(&p, b"a\nb c\n\xff\xfe x\nd\n").unwrap();
        let e = errs(&format!("hash:{}", p.display()));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains(":1: ") && e[0].contains("key whitespace value"),
            "{e:?}"
        );
        assert!(
            e[1].contains(":3: ") && e[1].contains("not valid UTF-8"),
            "{e:?}"
        );
        assert!(
            e[2].contains(":4: ") && e[2].contains("key whitespace value"),
            "{e:?}"
        );
        // A file whose only problem is encoding still fails to open.
        std::fs::write(&p, b"a b\n\xff x\n").unwrap();
        assert_eq!(
            errs(&format!("regexp:{}", p.display())).len(),
            2,
            "line 1 is not a rule either"
        );
        assert_eq!(errs(&format!("texthash:{}", p.display())).len(), 1);
    }

    #[test]
    fn inline_rule_tables() {
        let t = open("cidr:{ {10.0.0.0/8 lan}, {::1 local} }", &origin()).unwrap();
        assert_eq!(t.kind(), TableKind::Pattern);
        assert_eq!(t.lookup("10.1.2.3").unwrap().as_deref(), Some("lan"));
        let t = open(
            "regexp:{ {/^(.*)@old\\.example$/ $1@new.example}, {/x/ y} }",
            &origin(),
        )
        .unwrap();
        assert_eq!(
            t.lookup("Bob@OLD.example").unwrap().as_deref(),
            Some("Bob@new.example")
        );
        let t = open("pcre:{{/^a/ b}}", &origin()).unwrap();
        assert_eq!(t.lookup("abc").unwrap().as_deref(), Some("b"));
        let e = errs("regexp:{ {/ok/ x}, /bad/ y }");
        assert!(e[0].contains("expected {rule}"), "{e:?}");
        let e = errs("regexp:{ {/ok/ x}, {nope} }");
        assert!(
            e[0].starts_with("/etc/postern/main.cf:7: table regexp:{ {/ok/ x}, {nope} }: rule 2: "),
            "{e:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics(ty in "(inline|static|cidr|regexp|pcre|proxy:inline|unix|)", name in "\\PC{0,40}") {
            let _ = open(&format!("{ty}:{name}"), &Origin::Default);
            let _ = open(&format!("{ty}:{{{name}}}"), &Origin::Default);
            let _ = open_aliases(&format!("{ty}:{{{name}}}"), &Origin::Default);
        }
    }
}
