//! regexp_table(5) and pcre_table(5): `/pattern/flags result` rules,
//! `!/pattern/` negation, `if /pattern/` ... `endif` blocks, and `$1`,
//! `${1}`, `$$` substitution in results. See the module documentation of
//! [`crate::tables`] for what the `regex` crate does differently.

use super::cidr::keyword;
use super::text::{abbreviate, logical_lines, stray_errors};
use super::translate;
use super::{Source, Table, TableKind};
use crate::error::Error;
use regex::{Regex, RegexBuilder};

/// Which pattern syntax and flags a table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// regexp: POSIX regular expressions; flags i, m, x.
    Posix,
    /// pcre: Perl-compatible expressions; flags i, m, s, x, A, E, U, X.
    Pcre,
}

impl Flavor {
    fn flags(self) -> &'static str {
        match self {
            Flavor::Posix => "i (case-sensitive), m (newline-sensitive), x (basic syntax)",
            Flavor::Pcre => {
                "i (case-sensitive), m (multi-line), s (dot excludes newline), x (extended), \
                 A (anchored), E (dollar at end only), U (ungreedy), X (ignored)"
            }
        }
    }
}

/// A compiled pattern and its polarity.
#[derive(Debug)]
struct Pattern {
    re: Regex,
    negate: bool,
}

impl Pattern {
    fn matches(&self, key: &str) -> bool {
        self.re.is_match(key) != self.negate
    }
}

/// A piece of result text.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
}

#[derive(Debug)]
enum Rule {
    Match {
        first: Pattern,
        /// regexp tables only: `/pat1/!/pat2/` (match pat1 but not pat2).
        second: Option<Pattern>,
        result: Vec<Piece>,
        max_sub: usize,
    },
    If {
        pattern: Pattern,
        end: Option<usize>,
    },
    Endif,
}

/// A regexp or pcre table.
#[derive(Debug)]
pub(crate) struct RegexpTable {
    name: String,
    rules: Vec<Rule>,
    warnings: Vec<Error>,
}

impl Table for RegexpTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::Match {
                    first,
                    second,
                    result,
                    max_sub,
                } => {
                    if let Some(v) = try_match(key, first, second.as_ref(), result, *max_sub) {
                        return Ok(Some(v));
                    }
                }
                Rule::If { pattern, end } => {
                    if !pattern.matches(key) {
                        match end {
                            Some(e) => i = *e,
                            None => return Ok(None),
                        }
                    }
                }
                Rule::Endif => {}
            }
            i += 1;
        }
        Ok(None)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> TableKind {
        TableKind::Pattern
    }
    fn warnings(&self) -> &[Error] {
        &self.warnings
    }
}

fn try_match(
    key: &str,
    first: &Pattern,
    second: Option<&Pattern>,
    result: &[Piece],
    max_sub: usize,
) -> Option<String> {
    let second_ok = |k: &str| second.is_none_or(|p| p.matches(k));
    if max_sub == 0 {
        if !first.matches(key) || !second_ok(key) {
            return None;
        }
        return Some(expand(result, None));
    }
    // $n needs captures; rules with $n are never negated (checked at load).
    let caps = first.re.captures(key)?;
    if !second_ok(key) {
        return None;
    }
    Some(expand(result, Some(&caps)))
}

fn expand(result: &[Piece], caps: Option<&regex::Captures<'_>>) -> String {
    let mut out = String::new();
    for p in result {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Group(n) => {
                if let Some(m) = caps.and_then(|c| c.get(*n)) {
                    out.push_str(m.as_str());
                }
            }
        }
    }
    out
}

/// Parses result text as Postfix's mac_parse() does: `$$` is a dollar sign,
/// `$n`, `${n}` and `$(n)` are substitutions. Returns the pieces and the
/// largest group number.
fn parse_result(s: &str) -> Result<(Vec<Piece>, usize), String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut max = 0;
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            text.push('$');
            rest = r;
            continue;
        }
        let (name, r) = if let Some(close) = match after.chars().next() {
            Some('{') => Some('}'),
            Some('(') => Some(')'),
            _ => None,
        } {
            let open = if close == '}' { '{' } else { '(' };
            let mut level = 0usize;
            let mut end = None;
            for (i, c) in after.char_indices() {
                if c == open {
                    level += 1;
                } else if c == close {
                    level -= 1;
                    if level == 0 {
                        end = Some(i);
                        break;
                    }
                }
            }
            let end =
                end.ok_or_else(|| format!("truncated $ reference in \"{}\"", abbreviate(s)))?;
            (&after[1..end], &after[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            return Err(format!(
                "empty $ reference in \"{}\" (write $$ for a dollar sign)",
                abbreviate(s)
            ));
        }
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "non-numeric replacement index \"{name}\" (use $1, ${{1}} ... for matched text, $$ for a dollar sign)"
            ));
        }
        let n = match name.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "out-of-range replacement index \"{name}\" (groups are numbered from $1)"
                ));
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Group(n));
        max = max.max(n);
        rest = r;
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok((pieces, max))
}

/// A pattern as written: text between delimiters, flags, polarity.
struct RawPattern<'a> {
    text: &'a str,
    flags: &'a str,
    negate: bool,
}

/// Reads `!/pattern/flags` from the start of `p`; returns it and the rest.
fn get_pattern(p: &str, flavor: Flavor) -> Result<(RawPattern<'_>, &str), String> {
    let mut negate = false;
    let mut p = p;
    loop {
        if let Some(r) = p.strip_prefix('!') {
            negate = !negate;
            p = r;
        } else if p.starts_with(char::is_whitespace) {
            p = p.trim_start();
        } else {
            break;
        }
    }
    let mut chars = p.char_indices();
    let Some((_, delim)) = chars.next() else {
        return Err("no regular expression; expected /pattern/ result".into());
    };
    let start = delim.len_utf8();
    let mut end = None;
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let Some(end) = end else {
        return Err(format!(
            "no closing regular expression delimiter \"{delim}\" in \"{}\"",
            abbreviate(p)
        ));
    };
    let after = &p[end + delim.len_utf8()..];
    let flags_end = after
        .find(|c: char| c.is_whitespace() || (c == '!' && flavor == Flavor::Posix))
        .unwrap_or(after.len());
    Ok((
        RawPattern {
            text: &p[start..end],
            flags: &after[..flags_end],
            negate,
        },
        &after[flags_end..],
    ))
}

/// Compiles a pattern with Postfix's default flags toggled by `flags`.
fn compile(
    raw: &RawPattern<'_>,
    flavor: Flavor,
    warnings: &mut Vec<String>,
) -> Result<Pattern, String> {
    let (mut icase, mut newline, mut extended) = (true, false, true); // Posix defaults
    let (mut dotall, mut multiline, mut verbose, mut anchored, mut ungreedy) =
        (true, false, false, false, false);
    for f in raw.flags.chars() {
        match (flavor, f) {
            (_, 'i') => icase = !icase,
            (Flavor::Posix, 'm') => newline = !newline,
            (Flavor::Posix, 'x') => extended = !extended,
            (Flavor::Pcre, 'm') => multiline = !multiline,
            (Flavor::Pcre, 's') => dotall = !dotall,
            (Flavor::Pcre, 'x') => verbose = !verbose,
            (Flavor::Pcre, 'A') => anchored = !anchored,
            (Flavor::Pcre, 'E') => {} // $ already matches only at the very end.
            (Flavor::Pcre, 'U') => ungreedy = !ungreedy,
            (Flavor::Pcre, 'X') => {
                warnings.push("ignoring obsolete regular expression flag \"X\"".into())
            }
            _ => {
                return Err(format!(
                    "unknown regular expression flag \"{f}\"; allowed: {}",
                    flavor.flags()
                ));
            }
        }
    }
    let translated = match flavor {
        Flavor::Posix => translate::posix(raw.text, extended, newline),
        Flavor::Pcre => translate::pcre(raw.text).map(|t| {
            if anchored {
                // The newline ends a trailing `# comment` in verbose mode.
                format!("\\A(?:{t}{})", if verbose { "\n" } else { "" })
            } else {
                t
            }
        }),
    }
    .map_err(|m| format!("bad regular expression /{}/: {m}", abbreviate(raw.text)))?;
    let mut b = RegexBuilder::new(&translated);
    b.case_insensitive(icase);
    match flavor {
        Flavor::Posix => {
            b.multi_line(newline).dot_matches_new_line(!newline);
        }
        Flavor::Pcre => {
            b.multi_line(multiline)
                .dot_matches_new_line(dotall)
                .ignore_whitespace(verbose)
                .swap_greed(ungreedy);
        }
    }
    let re = b.build().map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(text.lines().last().unwrap_or("invalid"))
            .to_string();
        format!(
            "bad regular expression /{}/: {reason}",
            abbreviate(raw.text)
        )
    })?;
    Ok(Pattern {
        re,
        negate: raw.negate,
    })
}

pub(crate) fn parse_regexp(
    text: &str,
    src: &Source,
    flavor: Flavor,
) -> Result<RegexpTable, Vec<Error>> {
    let (lines, stray) = logical_lines(text);
    let mut errors = Vec::new();
    stray_errors(&stray, src, &mut errors);
    let mut warnings = Vec::new();
    let mut rules = Vec::new();
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for l in lines {
        let p = l.text.trim_end();
        let mut warn = Vec::new();
        match parse_line(p, flavor, &mut rules, &mut stack, l.line, &mut warn) {
            Ok(()) => {}
            Err(m) => errors.push(src.err(l.line, m)),
        }
        warnings.extend(warn.into_iter().map(|w| src.err(l.line, w)));
    }
    for &(_, line) in &stack {
        warnings.push(src.err(line, "IF has no matching ENDIF"));
    }
    if errors.is_empty() {
        Ok(RegexpTable {
            name: src.table.clone(),
            rules,
            warnings,
        })
    } else {
        Err(errors)
    }
}

fn parse_line(
    p: &str,
    flavor: Flavor,
    rules: &mut Vec<Rule>,
    stack: &mut Vec<(usize, usize)>,
    line: usize,
    warn: &mut Vec<String>,
) -> Result<(), String> {
    if !p.starts_with(|c: char| c.is_alphanumeric()) {
        let (first, rest) = get_pattern(p, flavor)?;
        let (second, rest) = if flavor == Flavor::Posix && rest.starts_with('!') {
            let (s, r) = get_pattern(rest, flavor)?;
            (Some(s), r)
        } else {
            (None, rest)
        };
        let result = rest.trim();
        if result.is_empty() {
            warn.push(
                "no replacement text: using empty string (a lookup that matches this rule fails)"
                    .into(),
            );
        }
        let (pieces, max_sub) = parse_result(result)?;
        if max_sub > 0 && first.negate {
            return Err("$number found in negative match replacement text".into());
        }
        let first_c = compile(&first, flavor, warn)?;
        let groups = first_c.re.captures_len() - 1;
        if max_sub > groups {
            return Err(format!(
                "out of range replacement index \"{max_sub}\": the pattern has {groups} group(s)"
            ));
        }
        let second = second.map(|s| compile(&s, flavor, warn)).transpose()?;
        rules.push(Rule::Match {
            first: first_c,
            second,
            result: pieces,
            max_sub,
        });
        Ok(())
    } else if let Some(rest) = keyword(p, "if") {
        let (raw, rest) = get_pattern(rest, flavor)?;
        if !rest.trim().is_empty() {
            warn.push(format!(
                "ignoring extra text after IF statement: \"{}\" (do not indent the lines between IF and ENDIF: \
                 indented lines continue the line before)",
                abbreviate(rest.trim())
            ));
        }
        let pattern = compile(&raw, flavor, warn)?;
        stack.push((rules.len(), line));
        rules.push(Rule::If { pattern, end: None });
        Ok(())
    } else if let Some(rest) = keyword(p, "endif") {
        let Some((at, _)) = stack.pop() else {
            return Err("ENDIF without matching IF".into());
        };
        if !rest.trim().is_empty() {
            warn.push("ignoring extra text after ENDIF".into());
        }
        let endif_at = rules.len();
        if let Some(Rule::If { end, .. }) = rules.get_mut(at) {
            *end = Some(endif_at);
        }
        rules.push(Rule::Endif);
        Ok(())
    } else {
        Err(format!(
            "unrecognized line \"{}\": expected /pattern/flags result, if /pattern/flags, or endif",
            abbreviate(p)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Origin;
    use proptest::prelude::*;

    fn src(ty: &str) -> Source {
        Source::file(
            &format!("{ty}:/etc/postern/rw"),
            "/etc/postern/rw".into(),
            &Origin::Default,
        )
    }

    fn table(t: &str, f: Flavor) -> RegexpTable {
        parse_regexp(t, &src("regexp"), f).unwrap()
    }

    fn errors(t: &str, f: Flavor) -> Vec<String> {
        parse_regexp(t, &src("regexp"), f)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn get(t: &RegexpTable, k: &str) -> Option<String> {
        t.lookup(k).unwrap()
    }

    #[test]
    fn posix_rules_substitution_and_case() {
        let t = table(
            "# rewrite\n/^(.*)@scanner\\.lan$/\t${1}@contoso.com\n/^root@(.+)$/ postmaster@$1 costs $$5\n\
             /^Exact$/i exact-case\n/^[[:digit:]]+$/ digits\n/^a/!/b$/ a-not-b\n!/@/ no-at\n",
            Flavor::Posix,
        );
        assert_eq!(
            get(&t, "Scan@SCANNER.lan").as_deref(),
            Some("Scan@contoso.com")
        );
        assert_eq!(get(&t, "root@x").as_deref(), Some("postmaster@x costs $5"));
        assert_eq!(get(&t, "Exact").as_deref(), Some("exact-case"));
        assert_eq!(
            get(&t, "EXACT").as_deref(),
            Some("no-at"),
            "the i flag turns case-insensitivity off"
        );
        assert_eq!(get(&t, "0123").as_deref(), Some("digits"));
        assert_eq!(get(&t, "a@c").as_deref(), Some("a-not-b"));
        assert_eq!(get(&t, "a@b"), None);
        assert_eq!(get(&t, "local").as_deref(), Some("no-at"));
    }

    #[test]
    fn if_endif_blocks() {
        let t = table(
            "if /@example\\.com$/\n/^sales@/ sales-team\nif !/^info@/\n/./ other\nendif\nendif\n/./ outside\n",
            Flavor::Posix,
        );
        assert_eq!(get(&t, "sales@example.com").as_deref(), Some("sales-team"));
        assert_eq!(get(&t, "bob@example.com").as_deref(), Some("other"));
        assert_eq!(get(&t, "info@example.com").as_deref(), Some("outside"));
        assert_eq!(get(&t, "x@elsewhere").as_deref(), Some("outside"));
    }

    #[test]
    fn pcre_flags_and_groups() {
        let t = table(
            "/^(?<u>[a-z]+)\\+\\w+@(.*)$/ $1@$2\n/^\\d{3}$/ three-digits\n/b/A anchored\n/^x.y$/ dotall\n\
             /^k\\nl$/s no-dotall\n/ a b c /x verbose\n/^(a+?)(a*)$/U ${1}|${2}\n/^(z)?q$/ [$1]\n/^m$/m multi\n",
            Flavor::Pcre,
        );
        assert_eq!(
            get(&t, "bob+tag@Example.com").as_deref(),
            Some("bob@Example.com")
        );
        assert_eq!(get(&t, "123").as_deref(), Some("three-digits"));
        assert_eq!(get(&t, "Bcd").as_deref(), Some("anchored"));
        assert_eq!(
            get(&t, "x\ny").as_deref(),
            Some("dotall"),
            "s is on by default in pcre tables"
        );
        assert_eq!(get(&t, "k\nl").as_deref(), Some("no-dotall"));
        assert_eq!(get(&t, "abc").as_deref(), Some("verbose"));
        assert_eq!(
            get(&t, "aaa").as_deref(),
            Some("aaa|"),
            "U swaps greediness"
        );
        assert_eq!(
            get(&t, "q").as_deref(),
            Some("[]"),
            "unmatched groups are empty"
        );
        assert_eq!(get(&t, "first\nm\nlast").as_deref(), Some("multi"));
    }

    #[test]
    fn other_delimiters_and_escapes() {
        let t = table(
            "#comment\n|a/b\\|c| slash\n/x\\/y/ escaped\n",
            Flavor::Posix,
        );
        assert_eq!(get(&t, "a/b|c").as_deref(), Some("slash"));
        assert_eq!(get(&t, "x/y").as_deref(), Some("escaped"));
    }

    #[test]
    fn every_bad_rule_is_reported() {
        let e = errors(
            "/a/q x\n/(a)/ $2\n!/(a)/ $1\n/a/ $x\n/a/ ${1\n/a(/ x\n/a x\nendif\nbogus line\n/(a)\\1/ x\n  indented\n",
            Flavor::Posix,
        );
        assert_eq!(e.len(), 10, "{e:#?}");
        assert!(e[0].starts_with("/etc/postern/rw:1: table regexp:/etc/postern/rw: unknown regular expression flag \"q\"; allowed: i"), "{e:?}");
        assert!(e[1].contains(":2: ") && e[1].contains("out of range replacement index \"2\""));
        assert!(e[2].contains("negative match"));
        assert!(e[3].contains("non-numeric replacement index \"x\""));
        assert!(e[4].contains("truncated $ reference"));
        assert!(
            e[5].contains(":6: ") && e[5].contains("bad regular expression /a(/"),
            "{e:?}"
        );
        assert!(e[6].contains("no closing regular expression delimiter \"/\""));
        assert!(e[7].contains("ENDIF without matching IF"));
        assert!(e[8].contains("unrecognized line \"bogus line\""));
        assert!(e[9].contains("back-references"));
        let e = errors("/a/s x\n/(?=a)/ y\n/a/ $0\n", Flavor::Posix);
        assert!(e[0].contains("unknown regular expression flag \"s\""));
        assert!(e[1].contains("bad regular expression"), "{e:?}");
        assert!(e[2].contains("numbered from $1"));
        let e = errors("/(?=a)/ y\n/a/!/b/ z\n", Flavor::Pcre);
        assert!(e[0].contains("look-ahead"), "{e:?}");
        assert!(
            e[1].contains("unknown regular expression flag \"!\""),
            "{e:?}"
        );
    }

    #[test]
    fn warnings_do_not_stop_the_table() {
        let t = table("if /a/\n  /b/ c\nendif x\n/e/\nif /z/\n", Flavor::Posix);
        let w: Vec<String> = t.warnings.iter().map(|e| e.to_string()).collect();
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(w[0].contains(":1: ") && w[0].contains("do not indent"));
        assert!(w[1].contains(":3: ") && w[1].contains("extra text after ENDIF"));
        assert!(w[2].contains(":4: ") && w[2].contains("no replacement text"));
        assert!(w[3].contains(":5: ") && w[3].contains("IF has no matching ENDIF"));
        assert_eq!(get(&t, "e").as_deref(), Some(""));
    }

    #[test]
    fn result_parsing() {
        assert_eq!(
            parse_result("a$1-${2}c$(3)$$d").unwrap(),
            (
                vec![
                    Piece::Text("a".into()),
                    Piece::Group(1),
                    Piece::Text("-".into()),
                    Piece::Group(2),
                    Piece::Text("c".into()),
                    Piece::Group(3),
                    Piece::Text("$d".into())
                ],
                3
            )
        );
        assert!(parse_result("$").unwrap_err().contains("empty $ reference"));
        assert!(
            parse_result("$1b")
                .unwrap_err()
                .contains("non-numeric replacement index \"1b\"")
        );
        assert!(
            parse_result("$99999999999999999999999")
                .unwrap_err()
                .contains("out-of-range")
        );
        assert!(parse_result("$0").unwrap_err().contains("numbered from $1"));
    }

    proptest! {
        #[test]
        fn regexp_never_panics(s in "\\PC*", pcre in any::<bool>()) {
            let f = if pcre { Flavor::Pcre } else { Flavor::Posix };
            if let Ok(t) = parse_regexp(&s, &src("regexp"), f) {
                let _ = t.lookup("user@example.com");
            }
        }

        #[test]
        fn rule_shaped_lines_never_panic(
            lines in proptest::collection::vec("(if |endif|!)?/[a-z().*+?$^\\\\{}\\[\\]|]{0,8}/[imsxAEUXq]{0,2}( [a-z$0-9{}()]{0,6})?", 0..8),
            pcre in any::<bool>(),
        ) {
            let f = if pcre { Flavor::Pcre } else { Flavor::Posix };
            if let Ok(t) = parse_regexp(&lines.join("\n"), &src("pcre"), f) {
                let _ = t.lookup("abc");
            }
        }
    }
}
