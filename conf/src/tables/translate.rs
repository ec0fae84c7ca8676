//! Translation of POSIX (regexp:) and PCRE (pcre:) pattern syntax into the
//! `regex` crate's syntax. Constructs with no equivalent are errors.

/// A POSIX character class name allowed in `[[:name:]]`.
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
    "upper", "xdigit",
];

/// Escapes one character for use inside a `regex` class or pattern.
fn push_literal(out: &mut String, c: char) {
    // `\<` and `\>` are word boundaries (and invalid in classes); `<` and
    // `>` need no escape.
    if c.is_ascii_punctuation() && c != '<' && c != '>' {
        out.push('\\');
    }
    out.push(c);
}

/// One element of a bracket expression.
enum Item {
    Char(char),
    Class(String),
    /// Text already in `regex` syntax (PCRE escapes such as `\d`).
    Raw(String),
}

/// Parses a POSIX bracket expression starting after `[` at `chars[i]`;
/// returns the `regex` class and the index after the closing `]`. With
/// `posix`, a backslash is an ordinary character; otherwise (PCRE) it
/// escapes the next character. `newline_excluded` adds `\n` to negated sets
/// (POSIX REG_NEWLINE).
fn bracket(
    chars: &[char],
    mut i: usize,
    posix: bool,
    newline_excluded: bool,
) -> Result<(String, usize), String> {
    let mut negate = false;
    if chars.get(i) == Some(&'^') {
        negate = true;
        i += 1;
    }
    let mut items: Vec<Item> = Vec::new();
    let mut ranges: Vec<usize> = Vec::new(); // indexes of items followed by '-'
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("unmatched [ in bracket expression".into());
        };
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let item = if c == '[' && matches!(chars.get(i + 1), Some(':' | '=' | '.')) {
            let kind = chars[i + 1];
            let start = i + 2;
            let mut j = start;
            while j + 1 < chars.len() && !(chars[j] == kind && chars[j + 1] == ']') {
                j += 1;
            }
            if j + 1 >= chars.len() {
                return Err(format!("unterminated [{kind} in bracket expression"));
            }
            let name: String = chars[start..j].iter().collect();
            i = j + 2;
            if kind == ':' {
                if !POSIX_CLASSES.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown character class [:{name}:]; known: {}",
                        POSIX_CLASSES.join(", ")
                    ));
                }
                Item::Class(name)
            } else {
                let mut it = name.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => Item::Char(c),
                    _ => {
                        return Err(format!(
                            "multi-character collating element [{kind}{name}{kind}] is not supported"
                        ));
                    }
                }
            }
        } else if c == '\\' && !posix {
            let (raw, next) = pcre_escape(chars, i)?;
            i = next;
            Item::Raw(raw)
        } else {
            i += 1;
            Item::Char(c)
        };
        items.push(item);
        // A '-' between two items makes a range; first or last it is literal.
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            ranges.push(items.len() - 1);
            i += 1;
        }
    }
    let mut out = String::from("[");
    if negate {
        out.push('^');
        if newline_excluded {
            out.push_str("\\n");
        }
    }
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Char(c) => push_literal(&mut out, *c),
            Item::Class(name) => {
                out.push_str("[:");
                out.push_str(name);
                out.push_str(":]");
            }
            Item::Raw(r) => out.push_str(r),
        }
        if ranges.contains(&n) {
            if let (Item::Char(a), Some(Item::Char(b))) = (item, items.get(n + 1))
                && a > b
            {
                return Err(format!("invalid range end in [{a}-{b}]"));
            }
            out.push('-');
        }
    }
    out.push(']');
    Ok((out, i))
}

/// A PCRE escape at `chars[i]` (a backslash), copied with its arguments
/// (`\x{41}`, `\x41`, `\p{L}`); returns the text and the index after it.
fn pcre_escape(chars: &[char], i: usize) -> Result<(String, usize), String> {
    let Some(&c) = chars.get(i + 1) else {
        return Err("trailing backslash".into());
    };
    let mut end = i + 2;
    match c {
        'x' | 'p' | 'P' if chars.get(end) == Some(&'{') => {
            while end < chars.len() && chars[end] != '}' {
                end += 1;
            }
            end = (end + 1).min(chars.len());
        }
        'x' => {
            while end < chars.len() && end < i + 4 && chars[end].is_ascii_hexdigit() {
                end += 1;
            }
        }
        'p' | 'P' => end = (end + 1).min(chars.len()),
        'Z' => return Err("\\Z is not supported; use $ (which matches only at the end)".into()),
        'G' | 'K' => return Err(format!("\\{c} is not supported")),
        '1'..='9' => return Err("back-references (\\1 ... \\9) are not supported".into()),
        _ => {}
    }
    Ok((chars[i..end].iter().collect(), end))
}

/// Translates a POSIX extended (or, with `extended == false`, basic)
/// regular expression. `newline` is POSIX REG_NEWLINE (the `m` flag).
pub(crate) fn posix(pattern: &str, extended: bool, newline: bool) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    // True where `*` is literal and, in basic expressions, `^` is an anchor.
    let mut at_start = true;
    while i < chars.len() {
        let c = chars[i];
        let was_start = at_start;
        at_start = false;
        match c {
            '[' => {
                let (class, next) = bracket(&chars, i + 1, true, newline)?;
                out.push_str(&class);
                i = next;
                continue;
            }
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return Err("trailing backslash".into());
                };
                i += 2;
                match n {
                    '(' | ')' | '{' | '}' | '|' | '+' | '?' if !extended => {
                        out.push(n);
                        at_start = matches!(n, '(' | '|');
                    }
                    '1'..='9' => {
                        return Err("back-references (\\1 ... \\9) are not supported".into());
                    }
                    '<' => out.push_str("\\b{start}"),
                    '>' => out.push_str("\\b{end}"),
                    '`' => out.push_str("\\A"),
                    '\'' => out.push_str("\\z"),
                    'w' | 'W' | 's' | 'S' | 'b' | 'B' => {
                        out.push('\\');
                        out.push(n);
                    }
                    // glibc treats other escaped characters as themselves.
                    _ => push_literal(&mut out, n),
                }
                continue;
            }
            '*' if was_start => out.push_str("\\*"),
            '(' | ')' | '|' | '+' | '?' | '{' | '}' if !extended => push_literal(&mut out, c),
            '^' if !extended => {
                if was_start {
                    out.push('^');
                    at_start = true;
                } else {
                    out.push_str("\\^");
                }
            }
            '$' if !extended => {
                let rest = &chars[i + 1..];
                if rest.is_empty()
                    || rest.starts_with(&['\\', ')'])
                    || rest.starts_with(&['\\', '|'])
                {
                    out.push('$');
                } else {
                    out.push_str("\\$");
                }
            }
            '{' => {
                // An interval {n}, {n,} or {n,m}; otherwise a literal brace.
                let rest: String = chars[i..].iter().take_while(|&&c| c != '}').collect();
                let body = &rest[1..];
                let valid = chars.len() > i + rest.chars().count()
                    && !body.is_empty()
                    && body.split(',').count() <= 2
                    && body.split(',').next().is_some_and(|d| !d.is_empty())
                    && body.chars().all(|c| c.is_ascii_digit() || c == ',');
                if valid && !was_start {
                    out.push_str(&rest);
                    out.push('}');
                    i += rest.chars().count() + 1;
                    continue;
                }
                out.push_str("\\{");
            }
            '}' => out.push_str("\\}"),
            '(' | '|' => {
                out.push(c);
                at_start = true;
            }
            '^' => {
                out.push('^');
                at_start = true;
            }
            // Characters special only to the regex crate's verbose mode or classes.
            '#' | '&' | '~' | '-' => push_literal(&mut out, c),
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Translates a PCRE pattern: `\Q...\E` quoting, `(?#...)` comments and
/// PCRE bracket syntax are converted; unsupported constructs are errors.
pub(crate) fn pcre(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if chars.get(i + 1) == Some(&'Q') => {
                let mut j = i + 2;
                while j < chars.len() && !(chars[j] == '\\' && chars.get(j + 1) == Some(&'E')) {
                    push_literal(&mut out, chars[j]);
                    j += 1;
                }
                // Skip the closing \E when there is one.
                i = if j < chars.len() { j + 2 } else { j };
            }
            '\\' if chars.get(i + 1) == Some(&'E') => i += 2,
            '\\' => {
                let (raw, next) = pcre_escape(&chars, i)?;
                out.push_str(&raw);
                i = next;
            }
            '[' => {
                let (class, next) = bracket(&chars, i + 1, false, false)?;
                out.push_str(&class);
                i = next;
            }
            '(' if chars.get(i + 1) == Some(&'?') && chars.get(i + 2) == Some(&'#') => {
                let mut j = i + 3;
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("missing ) after (?# comment".into());
                }
                i = j + 1;
            }
            '(' if chars.get(i + 1) == Some(&'?')
                && matches!(
                    chars.get(i + 2),
                    Some('=' | '!' | '>' | '|' | '(' | 'R' | '&' | '+' | '0'..='9')
                )
                || chars.get(i + 1) == Some(&'?')
                    && chars.get(i + 2) == Some(&'<')
                    && matches!(chars.get(i + 3), Some('=' | '!')) =>
            {
                return Err(
                    "look-ahead, look-behind, atomic groups, recursion and conditionals are not supported"
                        .into(),
                );
            }
            '(' if chars.get(i + 1) == Some(&'*') => {
                return Err("(*VERB) control sequences are not supported".into());
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(translated: &str, s: &str) -> bool {
        regex::Regex::new(translated).unwrap().is_match(s)
    }

    #[test]
    fn posix_extended() {
        assert_eq!(posix("^a.b$", true, false).unwrap(), "^a.b$");
        assert_eq!(posix("[\\.]", true, false).unwrap(), "[\\\\\\.]");
        assert!(m(&posix("^[\\.]$", true, false).unwrap(), "\\"));
        assert!(m(&posix("^[]a]$", true, false).unwrap(), "]"));
        assert!(m(&posix("^[^]a]$", true, false).unwrap(), "b"));
        assert!(!m(&posix("^[^]a]$", true, false).unwrap(), "]"));
        assert!(m(&posix("^[a-c-]+$", true, false).unwrap(), "ab-c"));
        assert!(m(
            &posix("^[[:digit:][:upper:]]+$", true, false).unwrap(),
            "A1"
        ));
        assert!(m(&posix("^[[.-.]]$", true, false).unwrap(), "-"));
        assert!(m(&posix("^a{2,3}$", true, false).unwrap(), "aaa"));
        assert!(m(&posix("^a{x}$", true, false).unwrap(), "a{x}"));
        assert!(m(&posix("^[&~]+#$", true, false).unwrap(), "&~#"));
        assert!(m(&posix("\\<word\\>", true, false).unwrap(), "a word here"));
        assert!(!m(&posix("\\<word\\>", true, false).unwrap(), "swordfish"));
        assert!(
            m(&posix("^\\d$", true, false).unwrap(), "d"),
            "glibc: \\d is a plain d"
        );
        assert!(m(&posix("^a\\/b$", true, false).unwrap(), "a/b"));
        assert!(m(&posix("*a", true, false).unwrap(), "*a"));
        assert!(
            posix("(a)\\1", true, false)
                .unwrap_err()
                .contains("back-references")
        );
        assert!(
            posix("[a", true, false)
                .unwrap_err()
                .contains("unmatched [")
        );
        assert!(
            posix("[[:foo:]]", true, false)
                .unwrap_err()
                .contains("unknown character class")
        );
        assert!(
            posix("[z-a]", true, false)
                .unwrap_err()
                .contains("invalid range")
        );
        assert!(posix("a\\", true, false).is_err());
        assert!(m(&posix("^[^x]$", true, false).unwrap(), "\n"));
        assert!(!m(&posix("^[^x]$", true, true).unwrap(), "\n"));
    }

    #[test]
    fn posix_basic() {
        let t = posix("^\\(a\\|b\\)\\{2\\}+?(x)|$", false, false).unwrap();
        assert_eq!(t, "^(a|b){2}\\+\\?\\(x\\)\\|$");
        assert!(m(&t, "ab+?(x)|"));
        assert!(m(&posix("^*a^b$c$", false, false).unwrap(), "*a^b$c"));
        assert!(m(&posix("\\(^a$\\)", false, false).unwrap(), "a"));
    }

    #[test]
    fn pcre_syntax() {
        assert_eq!(pcre("^\\d+\\.\\w$").unwrap(), "^\\d+\\.\\w$");
        assert!(m(&pcre("^\\Qa.b*\\E$").unwrap(), "a.b*"));
        assert!(!m(&pcre("^\\Qa.b*\\E$").unwrap(), "axb"));
        assert!(m(&pcre("^a(?# comment )b$").unwrap(), "ab"));
        assert!(m(&pcre("^[[a\\]&&-]+$").unwrap(), "[]a&-"));
        assert!(m(&pcre("^[\\x41-\\x{5A}]$").unwrap(), "Q"));
        assert!(m(&pcre("^(?<user>[^@]+)@").unwrap(), "bob@x"));
        for bad in [
            "a(?=b)",
            "(?<=a)b",
            "(?!x)",
            "(?>a)",
            "(a)\\1",
            "a\\Z",
            "(*UTF)a",
            "(?(1)a|b)",
            "(?R)",
        ] {
            assert!(pcre(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn translation_never_panics(s in "\\PC{0,30}", ext in any::<bool>(), nl in any::<bool>()) {
            if let Ok(t) = posix(&s, ext, nl) {
                let _ = regex::Regex::new(&t);
            }
            if let Ok(t) = pcre(&s) {
                let _ = regex::Regex::new(&t);
            }
        }

        #[test]
        fn literals_match_themselves(s in "[ -~]{0,20}") {
            // Every printable character in a one-character bracket expression
            // (`[]]` included; `^` escaped instead, as `[^]` opens a negated
            // set) matches literally.
            let mut pat = String::from("^");
            for c in s.chars() {
                match c {
                    c if c.is_ascii_alphanumeric() => pat.push(c),
                    '^' => pat.push_str("\\^"),
                    c => { pat.push('['); pat.push(c); pat.push(']') }
                }
            }
            pat.push('$');
            let t = posix(&pat, true, false).unwrap();
            prop_assert!(m(&t, &s), "{} -> {}", pat, t);
        }
    }
}
