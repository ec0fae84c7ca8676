//! Address lists in header values (`To:`, `Cc:`, `From:`, ...), RFC 5322
//! 3.4 with the obsolete forms of 4.4, tolerant of garbage.

/// One address from a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAddress {
    /// The display name (phrase before `<...>`, or an old-style trailing
    /// comment: `a@b (Name)`), unquoted; encoded words are left as is.
    pub display_name: Option<String>,
    /// The bare address `local@domain`, no brackets; a quoted local part
    /// keeps its quotes.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Atom(String),
    /// Decoded content of a quoted string.
    Quoted(String),
    /// `[...]`, brackets included.
    Literal(String),
    /// Decoded content of a comment.
    Comment(String),
    Special(char),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Whitespace (or a comment) came before it.
    space: bool,
}

const SPECIALS: &[char] = &['<', '>', '@', ',', ';', ':', '.'];

fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    let mut space = false;
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            space = true;
            continue;
        }
        let kind = match c {
            '(' => {
                chars.next();
                let mut depth = 1;
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => text.extend(chars.next()),
                        '(' => {
                            depth += 1;
                            text.push(c);
                        }
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                            text.push(c);
                        }
                        _ => text.push(c),
                    }
                }
                Kind::Comment(text)
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => text.extend(chars.next()),
                        '"' => break,
                        _ => text.push(c),
                    }
                }
                Kind::Quoted(text)
            }
            '[' => {
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    text.push(c);
                    match c {
                        '\\' => text.extend(chars.next()),
                        ']' => break,
                        _ => {}
                    }
                }
                Kind::Literal(text)
            }
            _ if SPECIALS.contains(&c) => {
                chars.next();
                Kind::Special(c)
            }
            _ => {
                let mut text = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || SPECIALS.contains(&c) || matches!(c, '(' | '"' | '[') {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
                Kind::Atom(text)
            }
        };
        let is_comment = matches!(kind, Kind::Comment(_));
        out.push(Token { kind, space });
        // A comment separates tokens like whitespace does.
        space = is_comment;
    }
    out
}

/// Parses an address-list header value into its addresses, in order.
///
/// Handles display names (atoms, quoted strings, encoded words left as
/// is), `<angle>` addresses with obsolete source routes (dropped), bare
/// addr-specs, comments (nested, with escapes), groups (`team: a@b, c@d;`,
/// `undisclosed-recipients:;` gives nothing), and empty items or trailing
/// commas. Items with no address (`<>`, garbage with no text) are
/// skipped. Never fails; unterminated quotes, comments and brackets run to
/// the end of the value.
pub fn parse_address_list(value: &str) -> Vec<HeaderAddress> {
    let mut out = Vec::new();
    let mut item: Vec<Token> = Vec::new();
    let mut angle = false;
    let mut in_group = false;
    for tok in tokenize(value) {
        match tok.kind {
            Kind::Special('<') if !angle => {
                angle = true;
                item.push(tok);
            }
            Kind::Special('>') if angle => {
                angle = false;
                item.push(tok);
            }
            Kind::Special(',') if !angle => flush(&mut item, &mut out),
            Kind::Special(';') if !angle => {
                flush(&mut item, &mut out);
                in_group = false;
            }
            Kind::Special(':') if !angle && !in_group && !has_address_part(&item) => {
                // "name:" starts a group; the name is not an address.
                item.clear();
                in_group = true;
            }
            _ => item.push(tok),
        }
    }
    flush(&mut item, &mut out);
    out
}

/// True if the item already has an `@` or `<`, so a `:` cannot start a
/// group.
fn has_address_part(item: &[Token]) -> bool {
    item.iter()
        .any(|t| matches!(t.kind, Kind::Special('@') | Kind::Special('<')))
}

fn flush(item: &mut Vec<Token>, out: &mut Vec<HeaderAddress>) {
    let tokens = std::mem::take(item);
    if let Some(a) = build(&tokens) {
        out.push(a);
    }
}

fn build(tokens: &[Token]) -> Option<HeaderAddress> {
    match tokens.iter().position(|t| t.kind == Kind::Special('<')) {
        Some(open) => {
            let inner = &tokens[open + 1..];
            let close = inner
                .iter()
                .position(|t| t.kind == Kind::Special('>'))
                .unwrap_or(inner.len());
            let inner = &inner[..close];
            // Obsolete route "@a,@b:" before the address.
            let start = inner
                .iter()
                .rposition(|t| t.kind == Kind::Special(':'))
                .map_or(0, |p| p + 1);
            let address = addr_spec(&inner[start..]);
            if address.is_empty() {
                return None;
            }
            Some(HeaderAddress {
                display_name: phrase(&tokens[..open]),
                address,
            })
        }
        None => {
            let address = addr_spec(tokens);
            if address.is_empty() {
                return None;
            }
            // Old style "a@b (Name)": a comment at the end names the owner.
            let display_name = match tokens.last().map(|t| &t.kind) {
                Some(Kind::Comment(c)) if !c.trim().is_empty() => Some(c.trim().to_string()),
                _ => None,
            };
            Some(HeaderAddress {
                display_name,
                address,
            })
        }
    }
}

/// The tokens of an address without whitespace or comments.
fn addr_spec(tokens: &[Token]) -> String {
    let mut s = String::new();
    for t in tokens {
        match &t.kind {
            Kind::Atom(a) | Kind::Literal(a) => s.push_str(a),
            Kind::Quoted(q) => {
                s.push('"');
                for c in q.chars() {
                    if c == '"' || c == '\\' {
                        s.push('\\');
                    }
                    s.push(c);
                }
                s.push('"');
            }
            Kind::Special(c) if !matches!(c, '<' | '>') => s.push(*c),
            Kind::Special(_) | Kind::Comment(_) => {}
        }
    }
    s
}

/// A display name: words separated by single spaces where the value had
/// whitespace; `None` if empty.
fn phrase(tokens: &[Token]) -> Option<String> {
    let mut s = String::new();
    for t in tokens {
        let text = match &t.kind {
            Kind::Atom(a) | Kind::Quoted(a) | Kind::Literal(a) => a.as_str(),
            Kind::Special(c) => {
                let mut b = [0; 4];
                let text = c.encode_utf8(&mut b);
                if t.space && !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(text);
                continue;
            }
            Kind::Comment(_) => continue,
        };
        if t.space && !s.is_empty() {
            s.push(' ');
        }
        s.push_str(text);
    }
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Pair = (Option<String>, String);

    fn list(v: &str) -> Vec<Pair> {
        parse_address_list(v)
            .into_iter()
            .map(|a| (a.display_name, a.address))
            .collect()
    }

    fn a(name: Option<&str>, addr: &str) -> Pair {
        (name.map(str::to_string), addr.to_string())
    }

    #[test]
    fn table() {
        let table: Vec<(&str, Vec<Pair>)> = vec![
            ("a@b", vec![a(None, "a@b")]),
            ("a@b, c@d", vec![a(None, "a@b"), a(None, "c@d")]),
            (
                "John Doe <jd@example.com>",
                vec![a(Some("John Doe"), "jd@example.com")],
            ),
            (
                "\"Doe, John\" <jd@x>, b@y",
                vec![a(Some("Doe, John"), "jd@x"), a(None, "b@y")],
            ),
            (
                "John Q. Public <jqp@x>",
                vec![a(Some("John Q. Public"), "jqp@x")],
            ),
            ("<a@b>", vec![a(None, "a@b")]),
            (
                "jd@example.com (John Doe)",
                vec![a(Some("John Doe"), "jd@example.com")],
            ),
            ("jd(comment)@example.com", vec![a(None, "jd@example.com")]),
            ("A (nested (deep) \\) x) <a@b>", vec![a(Some("A"), "a@b")]),
            (
                "\"john doe\"@example.com",
                vec![a(None, "\"john doe\"@example.com")],
            ),
            ("\"a\\\"b\"@c", vec![a(None, "\"a\\\"b\"@c")]),
            ("undisclosed-recipients:;", vec![]),
            (
                "team: a@b, C <c@d>;, e@f",
                vec![a(None, "a@b"), a(Some("C"), "c@d"), a(None, "e@f")],
            ),
            ("<@r1,@r2:a@b>", vec![a(None, "a@b")]),
            ("x <@r1:a@b>", vec![a(Some("x"), "a@b")]),
            (
                "=?utf-8?q?J=C3=B6rg?= <j@x>",
                vec![a(Some("=?utf-8?q?J=C3=B6rg?="), "j@x")],
            ),
            ("a@b,,, ,c@d,", vec![a(None, "a@b"), a(None, "c@d")]),
            ("user@[192.0.2.1]", vec![a(None, "user@[192.0.2.1]")]),
            ("a @ b . c", vec![a(None, "a@b.c")]),
            ("<>", vec![]),
            ("Name <a@b", vec![a(Some("Name"), "a@b")]),
            (
                "\"unterminated <a@b>",
                vec![a(None, "\"unterminated <a@b>\"")],
            ),
            ("(only a comment)", vec![]),
            ("root", vec![a(None, "root")]),
            ("", vec![]),
        ];
        for (input, want) in table {
            assert_eq!(list(input), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-z<>@,;:.\"()\\[\\]\\\\ ]{0,60}|\\PC{0,60}") {
            for addr in parse_address_list(&s) {
                prop_assert!(!addr.address.is_empty());
                prop_assert!(!addr.address.contains(['<', '>']) || addr.address.contains('"') || addr.address.contains('['));
            }
        }

        #[test]
        fn simple_lists_round_trip(addrs in proptest::collection::vec(("[A-Z][a-z]{0,6}( [A-Z][a-z]{0,6})?", "[a-z0-9.]{1,8}@[a-z]{1,8}\\.com"), 0..5)) {
            let value = addrs.iter().map(|(n, a)| format!("{n} <{a}>")).collect::<Vec<_>>().join(", ");
            let got: Vec<(String, String)> = parse_address_list(&value)
                .into_iter()
                .map(|h| (h.display_name.unwrap_or_default(), h.address))
                .collect();
            prop_assert_eq!(got, addrs);
        }
    }
}
