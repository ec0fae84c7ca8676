//! aliases(5) source files: `name: value, value2`, with continuation lines.

use super::Source;
use super::text::{KvTable, abbreviate, insert_first, logical_lines, stray_errors};
use crate::error::Error;
use std::collections::HashMap;

/// Splits an alias value into its items at commas outside double quotes and
/// parentheses (RFC 822 comments), trimming each and dropping empty ones:
/// `a, "|/usr/bin/x a,b", :include:/etc/list` gives three items.
pub fn split_alias_value(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut scan = Scanner::default();
    for (i, c) in value.char_indices() {
        if scan.plain(c) && c == ',' {
            push_item(&mut items, &value[start..i]);
            start = i + 1;
        }
    }
    push_item(&mut items, &value[start..]);
    items
}

fn push_item(items: &mut Vec<String>, s: &str) {
    let t = s.trim();
    if !t.is_empty() {
        items.push(t.to_string());
    }
}

/// Tracks quotes, backslash escapes and comment nesting; `plain` is true
/// for a character that is outside all of them.
#[derive(Default)]
struct Scanner {
    in_quotes: bool,
    escaped: bool,
    comment: usize,
}

impl Scanner {
    fn plain(&mut self, c: char) -> bool {
        if self.escaped {
            self.escaped = false;
            return false;
        }
        match c {
            '\\' => {
                self.escaped = true;
                false
            }
            '"' if self.comment == 0 => {
                self.in_quotes = !self.in_quotes;
                false
            }
            '(' if !self.in_quotes => {
                self.comment += 1;
                false
            }
            ')' if !self.in_quotes && self.comment > 0 => {
                self.comment -= 1;
                false
            }
            _ => !self.in_quotes && self.comment == 0,
        }
    }
}

/// Parses aliases(5) text. Keys (alias names) are stored in lower case;
/// values are normalized to `item, item`.
pub(crate) fn parse_aliases(text: &str, src: &Source) -> Result<KvTable, Vec<Error>> {
    let (lines, stray) = logical_lines(text);
    let mut errors = Vec::new();
    stray_errors(&stray, src, &mut errors);
    let mut warnings = Vec::new();
    let mut map = HashMap::new();
    let mut first_line = HashMap::new();
    for l in lines {
        match parse_alias_line(&l.text) {
            Ok((key, value)) => insert_first(
                &mut map,
                &mut first_line,
                key,
                value,
                l.line,
                src,
                &mut warnings,
            ),
            Err(m) => errors.push(src.err(l.line, m)),
        }
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

/// One `name: value` entry, as postalias(1) accepts it.
fn parse_alias_line(line: &str) -> Result<(String, String), String> {
    let need_pair = || {
        format!(
            "need name: value pair, e.g. \"root: admin@example.com\" (got \"{}\")",
            abbreviate(line)
        )
    };
    let mut scan = Scanner::default();
    let mut colon = None;
    let mut bad_key_char = None;
    for (i, c) in line.char_indices() {
        if !scan.plain(c) {
            continue;
        }
        match c {
            ':' => {
                colon = Some(i);
                break;
            }
            ',' => return Err(need_pair()),
            '@' | '%' => bad_key_char = bad_key_char.or(Some(c)),
            _ => {}
        }
    }
    let Some(colon) = colon else {
        return Err(need_pair());
    };
    let key = line[..colon].trim();
    let items = split_alias_value(&line[colon + 1..]);
    if key.is_empty() || items.is_empty() {
        return Err(need_pair());
    }
    if let Some(c) = bad_key_char {
        return Err(format!(
            "alias name \"{key}\" must be local and have no domain ('{c}' is not allowed); \
             use virtual_alias_maps for user@domain"
        ));
    }
    Ok((key.to_lowercase(), items.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Origin;
    use crate::tables::Table;
    use proptest::prelude::*;

    fn src() -> Source {
        Source::file("hash:/etc/aliases", "/etc/aliases".into(), &Origin::Default)
    }

    #[test]
    fn alias_entries() {
        let t = parse_aliases(
            "# aliases\nPostmaster: root\nroot: admin@example.com,ops@example.com ,\n\t\"|/usr/bin/logger -t mail\"\n\
             list: :include:/etc/postern/list\narchive: /var/mail/archive\n\"quoted name\": x\n\
             weird: \"a,b\" (comment, here), c\nroot: ignored\n",
            &src(),
        )
        .unwrap();
        let get = |k: &str| t.lookup(k).unwrap();
        assert_eq!(get("postmaster").as_deref(), Some("root"));
        assert_eq!(
            get("ROOT").as_deref(),
            Some("admin@example.com, ops@example.com, \"|/usr/bin/logger -t mail\"")
        );
        assert_eq!(get("list").as_deref(), Some(":include:/etc/postern/list"));
        assert_eq!(get("archive").as_deref(), Some("/var/mail/archive"));
        assert_eq!(get("\"quoted name\"").as_deref(), Some("x"));
        assert_eq!(get("weird").as_deref(), Some("\"a,b\" (comment, here), c"));
        assert_eq!(t.warnings.len(), 1);
        assert!(
            t.warnings[0]
                .to_string()
                .starts_with("/etc/aliases:9: table hash:/etc/aliases: duplicate entry: \"root\"")
        );
    }

    #[test]
    fn bad_alias_lines() {
        let errs = parse_aliases(
            "nocolon value\nuser@example.com: x\na, b: c\nempty:\n: novalue\nok: fine\n",
            &src(),
        )
        .unwrap_err();
        let e: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e[0].starts_with("/etc/aliases:1: table hash:/etc/aliases: need name: value pair"));
        assert!(
            e[1].contains(":2: ") && e[1].contains("must be local"),
            "{e:?}"
        );
        assert!(e[2].contains(":3: ") && e[2].contains("need name: value"));
        assert!(e[3].contains(":4: ") && e[4].contains(":5: "));
    }

    #[test]
    fn value_items() {
        assert_eq!(
            split_alias_value(" a ,, \"b, c\" ,d\\,e , (x, y) f"),
            vec!["a", "\"b, c\"", "d\\,e", "(x, y) f"]
        );
        assert!(split_alias_value(" , ").is_empty());
    }

    proptest! {
        #[test]
        fn aliases_never_panic(s in "\\PC*") {
            let _ = parse_aliases(&s, &src());
            let _ = split_alias_value(&s);
        }

        #[test]
        fn truncated_aliases_never_panic(cut in 0usize..120) {
            let text = "root: a, \"b c\" (x),\n  d\n\"q\\\"n\": é\n";
            let cut: String = text.chars().take(cut).collect();
            let _ = parse_aliases(&cut, &src());
        }
    }
}
