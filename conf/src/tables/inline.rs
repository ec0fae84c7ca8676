//! Tables written in the specification itself: `inline:{...}`, `static:...`,
//! and the rule lists of `cidr:{...}`, `regexp:{...}` and `pcre:{...}`.

use super::text::{KvTable, abbreviate};
use super::{Source, Table, TableKind};
use crate::error::Error;
use std::collections::HashMap;

/// Length in bytes of the balanced `{...}` group at the start of `s`, or
/// `None` when `s` does not start with `{` or the group is not closed.
pub(crate) fn balanced(s: &str) -> Option<usize> {
    if !s.starts_with('{') {
        return None;
    }
    let mut level = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => level += 1,
            '}' => {
                level -= 1;
                if level == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Postfix's extpar(): the text inside `{ }`, trimmed. The group must span
/// the whole of `s`.
pub(crate) fn strip_group(s: &str) -> Result<&str, String> {
    let s = s.trim();
    if !s.starts_with('{') {
        return Err(format!("no '{{' at start of text in \"{}\"", abbreviate(s)));
    }
    match balanced(s) {
        None => Err(format!("missing '}}' in \"{}\"", abbreviate(s))),
        Some(n) if n != s.len() => Err(format!("syntax error after '}}' in \"{}\"", abbreviate(s))),
        Some(n) => Ok(s[1..n - 1].trim()),
    }
}

/// Postfix's mystrtokq(): tokens separated by any of `seps`, except inside
/// `{ }`.
pub(crate) fn tokens<'a>(s: &'a str, seps: &[char]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut level = 0usize;
    let mut start = None;
    for (i, c) in s.char_indices() {
        if level == 0 && seps.contains(&c) {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
            continue;
        }
        if start.is_none() {
            start = Some(i);
        }
        match c {
            '{' => level += 1,
            '}' if level > 0 => level -= 1,
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

const COMMA_SPACE: &[char] = &[',', ' ', '\t', '\r', '\n'];
const SPACE: &[char] = &[' ', '\t', '\r', '\n'];

/// Postfix's split_qnameval(): `key = value` where the key may be quoted.
fn split_qnameval(s: &str) -> Result<(&str, &str), String> {
    let s = s.trim_start();
    if s.is_empty() {
        return Err("no key found; expected format: key = value".into());
    }
    let (mut in_quotes, mut escaped) = (false, false);
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if (c.is_whitespace() || c == '=') && !in_quotes {
            end = i;
            break;
        }
    }
    if in_quotes {
        return Err(format!("unbalanced '\"' in \"{}\"", abbreviate(s)));
    }
    let rest = s[end..].trim_start();
    let Some(value) = rest.strip_prefix('=') else {
        return Err(format!("missing '=' after name in \"{}\"", abbreviate(s)));
    };
    Ok((&s[..end], value.trim()))
}

/// The position of the first `=` outside double quotes.
fn unquoted_eq(s: &str) -> Option<usize> {
    let (mut in_quotes, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == '=' && !in_quotes {
            return Some(i);
        }
    }
    None
}

/// Parses `inline:{ ... }`. Items are `{ key = value }` (braces allow
/// spaces in the value) or, separated by commas, `key=value` and
/// `key = value`. As in Postfix, a later duplicate key replaces an earlier
/// one (recorded as a warning) and an empty table is an error.
pub(crate) fn parse_inline(name: &str, src: &Source) -> Result<KvTable, Vec<Error>> {
    let need = "need inline:{ name = value, ... } or inline:{ { name = value with spaces }, ... }";
    let inner =
        strip_group(name).map_err(|m| vec![src.open_error(format!("bad syntax: {m}; {need}"))])?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    for group in tokens(inner, &[',']) {
        let toks = tokens(group, SPACE);
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i];
            let next_plain = |j: usize| toks.get(j).filter(|n| !n.starts_with('{')).copied();
            if t.starts_with('{') {
                match strip_group(t).and_then(split_qnameval) {
                    Ok((k, v)) => pairs.push((k.into(), v.into())),
                    Err(m) => errors.push(src.open_error(format!("{m}; {need}"))),
                }
                i += 1;
            } else if let Some(pos) = unquoted_eq(t) {
                let (key, rest) = (&t[..pos], &t[pos + 1..]);
                if key.is_empty() {
                    errors.push(
                        src.open_error(format!("missing name before '=' in \"{t}\"; {need}")),
                    );
                    i += 1;
                } else if !rest.is_empty() {
                    pairs.push((key.into(), rest.into()));
                    i += 1;
                } else if let Some(v) = next_plain(i + 1).filter(|n| unquoted_eq(n).is_none()) {
                    pairs.push((key.into(), v.into()));
                    i += 2;
                } else {
                    pairs.push((key.into(), String::new()));
                    i += 1;
                }
            } else if let Some(eq) = toks.get(i + 1).and_then(|n| n.strip_prefix('=')) {
                if !eq.is_empty() {
                    pairs.push((t.into(), eq.into()));
                    i += 2;
                } else if let Some(v) = next_plain(i + 2) {
                    pairs.push((t.into(), v.into()));
                    i += 3;
                } else {
                    pairs.push((t.into(), String::new()));
                    i += 2;
                }
            } else {
                errors.push(src.open_error(format!(
                    "missing '=' after name \"{}\"; {need}",
                    abbreviate(t)
                )));
                i += 1;
            }
        }
    }
    if errors.is_empty() && pairs.is_empty() {
        errors.push(src.open_error(format!("empty table; {need}")));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut map = HashMap::new();
    let mut warnings = Vec::new();
    for (k, v) in pairs {
        let k = k.to_lowercase();
        if map.insert(k.clone(), v).is_some() {
            warnings.push(src.open_error(format!("duplicate entry \"{k}\"; the last one is used")));
        }
    }
    Ok(KvTable {
        name: src.table.clone(),
        map,
        warnings,
    })
}

/// `static:value`: every lookup returns the value.
#[derive(Debug)]
pub(crate) struct StaticTable {
    name: String,
    value: String,
}

impl Table for StaticTable {
    fn lookup(&self, _key: &str) -> Result<Option<String>, Error> {
        Ok(Some(self.value.clone()))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> TableKind {
        TableKind::KeyValue
    }
}

/// Parses `static:value` or `static:{ value with spaces }`.
pub(crate) fn parse_static(name: &str, src: &Source) -> Result<StaticTable, Vec<Error>> {
    let value = if name.trim_start().starts_with('{') {
        strip_group(name).map_err(|m| {
            vec![src.open_error(format!(
                "bad syntax: {m}; need static:value or static:{{ value with spaces }}"
            ))]
        })?
    } else {
        name
    };
    if value.is_empty() {
        return Err(vec![src.open_error(
            "empty value; need static:value or static:{ value with spaces }",
        )]);
    }
    Ok(StaticTable {
        name: src.table.clone(),
        value: value.to_string(),
    })
}

/// The rules of an inline `cidr:`, `regexp:` or `pcre:` table,
/// `{ {rule}, {rule} }`, as text with one rule per line (so that line N is
/// rule N).
pub(crate) fn inline_rules(name: &str, src: &Source) -> Result<String, Error> {
    let ty = src.table.split(':').next().unwrap_or("regexp");
    let need = format!("expected {{rule}} items, e.g. {ty}:{{ {{rule1}}, {{rule2}} }}");
    let inner =
        strip_group(name).map_err(|m| src.open_error(format!("bad syntax: {m}; {need}")))?;
    let mut text = String::new();
    for t in tokens(inner, COMMA_SPACE) {
        let rule = strip_group(t).map_err(|m| src.open_error(format!("{m}; {need}")))?;
        text.push_str(&rule.replace(['\n', '\r'], " "));
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Origin;
    use proptest::prelude::*;

    fn src(t: &str) -> Source {
        Source::inline(t, &Origin::CommandLine)
    }

    fn inline(s: &str) -> KvTable {
        parse_inline(s, &src("inline")).unwrap()
    }

    fn inline_err(s: &str) -> Vec<String> {
        parse_inline(s, &src(&format!("inline:{s}")))
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn inline_forms() {
        let t = inline("{ a = b, C=d e=f, {g = h i}, { \"q k\" = v }, empty =, x= y, k = v=w }");
        let get = |k: &str| t.lookup(k).unwrap();
        assert_eq!(get("a").as_deref(), Some("b"));
        assert_eq!(get("c").as_deref(), Some("d"));
        assert_eq!(get("E").as_deref(), Some("f"));
        assert_eq!(get("g").as_deref(), Some("h i"));
        assert_eq!(get("\"q k\"").as_deref(), Some("v"));
        assert_eq!(get("empty").as_deref(), Some(""));
        assert_eq!(get("x").as_deref(), Some("y"));
        assert_eq!(get("k").as_deref(), Some("v=w"));
        assert_eq!(get("b"), None);
        let t = inline("{ { root = * }, { postfix = * } }");
        assert_eq!(t.lookup("root").unwrap().as_deref(), Some("*"));
        let t = inline("{a=1, A=2}");
        assert_eq!(t.lookup("a").unwrap().as_deref(), Some("2"));
        assert!(t.warnings[0].to_string().contains("duplicate entry \"a\""));
    }

    #[test]
    fn inline_errors() {
        let e = inline_err("{}");
        assert_eq!(
            e,
            vec![
                "command line: table inline:{}: empty table; need inline:{ name = value, ... } or inline:{ { name = value with spaces }, ... }"
            ]
        );
        assert!(inline_err("{ a = b")[0].contains("missing '}'"));
        assert!(inline_err("a=b")[0].contains("no '{' at start"));
        assert!(inline_err("{a=b} x")[0].contains("syntax error after '}'"));
        let e = inline_err("{ lonely, =v, {nokey}, {\"x = y} }");
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("missing '=' after name \"lonely\""));
        assert!(e[1].contains("missing name before '='"));
        assert!(e[2].contains("missing '=' after name in \"nokey\""));
        assert!(e[3].contains("unbalanced"));
    }

    #[test]
    fn static_forms() {
        let t = parse_static("smtp:[relay]:587", &src("static")).unwrap();
        assert_eq!(
            t.lookup("anything").unwrap().as_deref(),
            Some("smtp:[relay]:587")
        );
        let t = parse_static("{ REJECT go away }", &src("static")).unwrap();
        assert_eq!(t.lookup("").unwrap().as_deref(), Some("REJECT go away"));
        assert!(parse_static("{ }", &src("static")).is_err());
        assert!(parse_static("{ x", &src("static")).is_err());
    }

    #[test]
    fn rule_lists() {
        assert_eq!(
            inline_rules("{ {/a/ b}, { /c d/ e f }\n{x} }", &src("regexp:{}")).unwrap(),
            "/a/ b\n/c d/ e f\nx\n"
        );
        let e = inline_rules("{ {/a/ b}, /c/ d }", &src("pcre:{..}")).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected {rule} items, e.g. pcre:{ {rule1}, {rule2} }"),
            "{e}"
        );
    }

    #[test]
    fn tokenizer() {
        assert_eq!(
            tokens(" a, {b c}, {d {e}} f ", COMMA_SPACE),
            vec!["a", "{b c}", "{d {e}}", "f"]
        );
        assert_eq!(tokens("} x", COMMA_SPACE), vec!["}", "x"]);
    }

    proptest! {
        #[test]
        fn inline_never_panics(s in "\\PC*") {
            let _ = parse_inline(&s, &src("inline"));
            let _ = parse_inline(&format!("{{{s}}}"), &src("inline"));
            let _ = parse_static(&s, &src("static"));
            let _ = inline_rules(&format!("{{{s}}}"), &src("cidr"));
        }

        #[test]
        fn inline_round_trip(entries in proptest::collection::btree_map("[a-z][a-z0-9.@_-]{0,10}", "[a-z0-9.@:\\[\\]_-]{1,12}", 1..10)) {
            let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            let t = inline(&format!("{{ {} }}", body.join(", ")));
            for (k, v) in &entries {
                let got = t.lookup(k).unwrap();
                prop_assert_eq!(got.as_deref(), Some(v.as_str()));
            }
        }
    }
}
