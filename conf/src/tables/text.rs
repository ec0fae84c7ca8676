//! Reading table source text the way Postfix's readllines() does, and the
//! postmap(1) input format: `key whitespace value`.

use super::{Source, Table, TableKind};
use crate::error::Error;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// One logical line: physical lines joined, comments and blank lines dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine {
    /// 1-based number of the physical line where the logical line starts.
    pub line: usize,
    /// The text, continuation lines appended as written (their leading
    /// white space separates them from the text before).
    pub text: String,
}

/// Splits text into logical lines with Postfix's rules: a line whose first
/// non-blank character is `#`, or that is blank, is skipped without ending
/// the current logical line; a line that starts with white space continues
/// the current logical line. Returns the lines and the numbers of the
/// physical lines that start with white space but continue nothing (Postfix
/// warns and drops them).
pub(crate) fn logical_lines(text: &str) -> (Vec<LogicalLine>, Vec<usize>) {
    let mut lines: Vec<LogicalLine> = Vec::new();
    let mut stray = Vec::new();
    let mut open = false;
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            match lines.last_mut() {
                Some(last) if open => last.text.push_str(raw),
                _ => stray.push(i + 1),
            }
            continue;
        }
        lines.push(LogicalLine {
            line: i + 1,
            text: raw.to_string(),
        });
        open = true;
    }
    (lines, stray)
}

/// Reads a table source file. Lines that are not valid UTF-8 are returned
/// as errors (Postfix ignores them with a warning) and replaced by blank
/// lines, so that the rest of the file can still be checked.
///
/// # Errors
/// The file cannot be read: one error naming the table and where it is
/// configured.
pub(crate) fn read_source(path: &Path, src: &Source) -> Result<(String, Vec<Error>), Vec<Error>> {
    let bytes = std::fs::read(path).map_err(|e| {
        vec![src.open_error(format!(
            "cannot read {}: {e} (postern reads the text source file, the one postmap would compile)",
            path.display()
        ))]
    })?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok((s, Vec::new())),
        Err(e) => {
            let bytes = e.into_bytes();
            let mut errors = Vec::new();
            let mut out = String::with_capacity(bytes.len());
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                match std::str::from_utf8(line) {
                    Ok(l) => out.push_str(l),
                    Err(_) => errors
                        .push(src.err(i + 1, "line is not valid UTF-8; save the file as UTF-8")),
                }
            }
            Ok((out, errors))
        }
    }
}

/// Combines the UTF-8 errors of [`read_source`] with the result of parsing
/// the text, listing all errors in line order.
pub(crate) fn with_read_errors<T>(
    read: Vec<Error>,
    parsed: Result<T, Vec<Error>>,
) -> Result<T, Vec<Error>> {
    match parsed {
        Ok(t) if read.is_empty() => Ok(t),
        Ok(_) => Err(read),
        Err(mut e) => {
            e.extend(read);
            e.sort_by_key(|e| match e {
                Error::Table {
                    origin: crate::error::Origin::File { line, .. },
                    ..
                } => *line,
                _ => 0,
            });
            Err(e)
        }
    }
}

/// Reports lines that start with white space but continue nothing.
pub(crate) fn stray_errors(stray: &[usize], src: &Source, errors: &mut Vec<Error>) {
    for &line in stray {
        errors.push(src.err(
            line,
            "line starts with white space but does not continue an entry \
             (only continuation lines may be indented)",
        ));
    }
}

/// A key/value table held in memory: hash, btree, lmdb, cdb, dbm, sdbm and
/// texthash sources, alias files, and `inline:` tables. Keys are stored and
/// looked up in lower case.
#[derive(Debug)]
pub(crate) struct KvTable {
    pub name: String,
    pub map: HashMap<String, String>,
    pub warnings: Vec<Error>,
}

impl Table for KvTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.map.get(&key.to_lowercase()).cloned())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> TableKind {
        TableKind::KeyValue
    }
    fn warnings(&self) -> &[Error] {
        &self.warnings
    }
}

/// Adds `key` (already lower case) unless present; a duplicate keeps the
/// first value and records a warning, as postmap does.
pub(crate) fn insert_first(
    map: &mut HashMap<String, String>,
    first_line: &mut HashMap<String, usize>,
    key: String,
    value: String,
    line: usize,
    src: &Source,
    warnings: &mut Vec<Error>,
) {
    match map.entry(key) {
        Entry::Occupied(o) => {
            // Postfix's wording; as in postmap, the first entry is used.
            warnings.push(src.err(line, format!("duplicate entry: \"{}\"", o.key())));
        }
        Entry::Vacant(v) => {
            first_line.insert(v.key().clone(), line);
            v.insert(value);
        }
    }
}

/// Splits a postmap(1) input line at the first white space outside double
/// quotes (a backslash escapes the next character). Returns key and value,
/// or what is wrong.
pub(crate) fn split_key_value(line: &str) -> Result<(&str, &str), String> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c.is_whitespace() && !in_quotes {
            end = i;
            break;
        }
    }
    if in_quotes {
        return Err("unbalanced '\"' in the key; line ignored".into());
    }
    let key = &line[..end];
    let value = line[end..].trim();
    // The line is not quoted back: in a password table it may hold a
    // password, and this message goes to the log and to postern check.
    if key.is_empty() || value.is_empty() {
        return Err(format!(
            "expected format: key whitespace value (the line has {} and no value)",
            if key.is_empty() { "no key" } else { "a key" }
        ));
    }
    Ok((key, value))
}

/// Parses postmap(1) input text into a key/value table.
pub(crate) fn parse_postmap(text: &str, src: &Source) -> Result<KvTable, Vec<Error>> {
    let (lines, stray) = logical_lines(text);
    let mut errors = Vec::new();
    stray_errors(&stray, src, &mut errors);
    let mut warnings = Vec::new();
    let mut map = HashMap::new();
    let mut first_line = HashMap::new();
    for l in lines {
        let (key, value) = match split_key_value(&l.text) {
            Ok(kv) => kv,
            Err(m) => {
                errors.push(src.err(l.line, m));
                continue;
            }
        };
        if key.ends_with(':') {
            warnings.push(src.err(
                l.line,
                "record is in \"key: value\" format; is this an alias file? \
                 (tables use \"key value\"; alias_maps files use \"name: value\")",
            ));
        }
        insert_first(
            &mut map,
            &mut first_line,
            key.to_lowercase(),
            value.to_string(),
            l.line,
            src,
            &mut warnings,
        );
    }
    if errors.is_empty() {
        Ok(KvTable {
            name: src.table.clone(),
            map,
            warnings,
        })
    } else {
        Err(errors)
    }
}

/// The first 60 characters of `s`, for messages.
pub(crate) fn abbreviate(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().nth(60).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Origin;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn src() -> Source {
        Source::file(
            "hash:/etc/postern/transport",
            PathBuf::from("/etc/postern/transport"),
            &Origin::Default,
        )
    }

    #[test]
    fn logical_lines_follow_readllines() {
        let (l, stray) = logical_lines(" stray\n# c\na b\n  c\n# inner\n\n\td\ne f\r\n   # x\n");
        assert_eq!(stray, vec![1]);
        assert_eq!(
            l,
            vec![
                LogicalLine {
                    line: 3,
                    text: "a b  c\td".into()
                },
                LogicalLine {
                    line: 8,
                    text: "e f".into()
                },
            ]
        );
    }

    #[test]
    fn key_value_split() {
        assert_eq!(split_key_value("a  b c ").unwrap(), ("a", "b c"));
        assert_eq!(split_key_value("\"a b\" c").unwrap(), ("\"a b\"", "c"));
        assert_eq!(split_key_value("a\\ b c").unwrap(), ("a\\ b", "c"));
        assert!(
            split_key_value("lonely")
                .unwrap_err()
                .contains("key whitespace value")
        );
        assert!(
            split_key_value("\"open c")
                .unwrap_err()
                .contains("unbalanced")
        );
    }

    #[test]
    fn postmap_format() {
        let t = parse_postmap(
            "# transport\nExample.COM smtp:[mx.example.com]:25\nexample.com relay:dup\nfoo: bar\nmulti a,\n  b\n",
            &src(),
        )
        .unwrap();
        assert_eq!(
            t.lookup("EXAMPLE.com").unwrap().as_deref(),
            Some("smtp:[mx.example.com]:25")
        );
        assert_eq!(t.lookup("multi").unwrap().as_deref(), Some("a,  b"));
        assert_eq!(t.lookup("foo:").unwrap().as_deref(), Some("bar"));
        assert_eq!(t.lookup("nope").unwrap(), None);
        let w: Vec<String> = t.warnings().iter().map(|e| e.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("/etc/postern/transport:3: table hash:/etc/postern/transport: duplicate entry: \"example.com\""), "{w:?}");
        assert!(
            w[1].contains(":4: ") && w[1].contains("alias file"),
            "{w:?}"
        );
    }

    #[test]
    fn every_bad_line_is_reported() {
        let errs = parse_postmap(
            "  indented\ngood value\nkeyonly\n\"unbalanced x\nok v\n",
            &src(),
        )
        .unwrap_err();
        let e: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("/etc/postern/transport:1: table hash:/etc/postern/transport: line starts with white space"));
        assert!(
            e[1].starts_with("/etc/postern/transport:3: ")
                && e[1].contains(
                    "expected format: key whitespace value (the line has a key and no value)"
                )
                && !e[1].contains("keyonly"),
            "a bad line must not be quoted back (it may hold a password): {e:?}"
        );
        assert!(e[2].starts_with("/etc/postern/transport:4: ") && e[2].contains("unbalanced"));
    }

    proptest! {
        #[test]
        fn postmap_never_panics(s in "\\PC*") {
            let _ = parse_postmap(&s, &src());
        }

        #[test]
        fn truncated_postmap_never_panics(cut in 0usize..200) {
            let text = "a b\n\"q k\" v\n  cont\n# c\nb\\ c d é\n";
            let cut: String = text.chars().take(cut).collect();
            let _ = parse_postmap(&cut, &src());
        }

        #[test]
        fn postmap_round_trip(entries in proptest::collection::btree_map("[a-z0-9.@-]{1,12}", "[ -~]{0,20}[!-~]", 0..20)) {
            let mut text = String::new();
            for (k, v) in &entries {
                text.push_str(&format!("{k}\t{v}\n"));
            }
            let t = parse_postmap(&text, &src()).unwrap();
            for (k, v) in &entries {
                let got = t.lookup(&k.to_uppercase()).unwrap();
                prop_assert_eq!(got.as_deref(), Some(v.trim()));
            }
        }
    }
}
