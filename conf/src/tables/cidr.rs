//! cidr_table(5): `network/prefix result` rules for IPv4 and IPv6, bare
//! addresses, `!` negation and `if`/`endif` blocks; the first match wins.

use super::text::{abbreviate, logical_lines, stray_errors};
use super::{Source, Table, TableKind};
use crate::error::Error;
use std::net::IpAddr;

use crate::net::Net;

/// Parses a rule's network, with Postfix's wording for what is wrong.
fn parse_net(pattern: &str) -> Result<Net, String> {
    Net::parse(pattern).map_err(|e| e.message(pattern, false))
}

#[derive(Debug)]
enum Rule {
    Match {
        net: Net,
        negate: bool,
        value: String,
    },
    /// Conditional block; `end` is the index of its `endif`, if any.
    If {
        net: Net,
        negate: bool,
        end: Option<usize>,
    },
    Endif,
}

/// A cidr table.
#[derive(Debug)]
pub(crate) struct CidrTable {
    name: String,
    rules: Vec<Rule>,
    warnings: Vec<Error>,
}

impl Table for CidrTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let Ok(addr) = key.parse::<IpAddr>() else {
            return Ok(None);
        };
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::Match { net, negate, value } => {
                    // Like Postfix, a rule of the other address family never matches,
                    // negated or not.
                    if net.same_family(addr) && net.contains_literal(addr) != *negate {
                        return Ok(Some(value.clone()));
                    }
                }
                Rule::If { net, negate, end } => {
                    if !(net.same_family(addr) && net.contains_literal(addr) != *negate) {
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

/// Strips `!` negations and white space, returning the rest and whether the
/// match is negated.
fn negations(mut p: &str) -> (&str, bool) {
    let mut negate = false;
    loop {
        if let Some(r) = p.strip_prefix('!') {
            negate = !negate;
            p = r;
        } else if p.starts_with(char::is_whitespace) {
            p = p.trim_start();
        } else {
            return (p, negate);
        }
    }
}

/// True when `p` starts with the keyword `kw` (any case) not followed by a
/// letter or digit.
pub(crate) fn keyword<'a>(p: &'a str, kw: &str) -> Option<&'a str> {
    let head = p.get(..kw.len())?;
    let rest = &p[kw.len()..];
    (head.eq_ignore_ascii_case(kw) && !rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
        .then_some(rest)
}

pub(crate) fn parse_cidr(text: &str, src: &Source) -> Result<CidrTable, Vec<Error>> {
    let (lines, stray) = logical_lines(text);
    let mut errors = Vec::new();
    stray_errors(&stray, src, &mut errors);
    let mut rules = Vec::new();
    let mut stack: Vec<(usize, usize)> = Vec::new(); // (rule index, line)
    let usage = "expected \"network/prefix result\", \"address result\", \"if network/prefix\" or \"endif\"";
    for l in lines {
        let p = l.text.trim_end();
        if let Some(rest) = keyword(p, "if") {
            let (pat, negate) = negations(rest);
            if pat.is_empty() {
                errors.push(src.err(l.line, format!("no address pattern after \"if\"; {usage}")));
                continue;
            }
            match parse_net(pat) {
                Ok(net) => {
                    stack.push((rules.len(), l.line));
                    rules.push(Rule::If {
                        net,
                        negate,
                        end: None,
                    });
                }
                Err(m) => errors.push(src.err(l.line, m)),
            }
        } else if let Some(rest) = keyword(p, "endif") {
            if !rest.trim().is_empty() {
                errors.push(src.err(l.line, "garbage after ENDIF (endif takes no arguments)"));
                continue;
            }
            let Some((at, _)) = stack.pop() else {
                errors.push(src.err(l.line, "ENDIF without IF"));
                continue;
            };
            let endif_at = rules.len();
            if let Some(Rule::If { end, .. }) = rules.get_mut(at) {
                *end = Some(endif_at);
            }
            rules.push(Rule::Endif);
        } else {
            let (rest, negate) = negations(p);
            let (pat, value) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            if pat.is_empty() {
                errors.push(src.err(l.line, format!("no address pattern; {usage}")));
                continue;
            }
            let net = match parse_net(pat) {
                Ok(n) => n,
                Err(m) => {
                    errors.push(src.err(l.line, m));
                    continue;
                }
            };
            if value.is_empty() {
                errors.push(src.err(
                    l.line,
                    format!("no lookup result after \"{}\"; {usage}", abbreviate(pat)),
                ));
                continue;
            }
            rules.push(Rule::Match {
                net,
                negate,
                value: value.to_string(),
            });
        }
    }
    let warnings = stack
        .iter()
        .map(|&(_, line)| src.err(line, "IF has no matching ENDIF"))
        .collect();
    if errors.is_empty() {
        Ok(CidrTable {
            name: src.table.clone(),
            rules,
            warnings,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Origin;
    use proptest::prelude::*;

    fn src() -> Source {
        Source::file(
            "cidr:/etc/postern/clients",
            "/etc/postern/clients".into(),
            &Origin::Default,
        )
    }

    fn table(t: &str) -> CidrTable {
        parse_cidr(t, &src()).unwrap()
    }

    fn errors(t: &str) -> Vec<String> {
        parse_cidr(t, &src())
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn first_match_wins_both_families() {
        let t = table(
            "# clients\n10.0.0.5 scanner\n10.0.0.0/8 lan\n[192.168.0.0]/16 home\n[172.16.0.0/12] docker\n\
             2001:db8::/32 v6net\n::1 loopback6\n0.0.0.0/0 world\n",
        );
        let get = |k: &str| t.lookup(k).unwrap();
        assert_eq!(get("10.0.0.5").as_deref(), Some("scanner"));
        assert_eq!(get("10.200.0.5").as_deref(), Some("lan"));
        assert_eq!(get("192.168.3.4").as_deref(), Some("home"));
        assert_eq!(get("172.31.255.255").as_deref(), Some("docker"));
        assert_eq!(get("2001:DB8:1::7").as_deref(), Some("v6net"));
        assert_eq!(get("::1").as_deref(), Some("loopback6"));
        assert_eq!(get("8.8.8.8").as_deref(), Some("world"));
        assert_eq!(get("2001:db9::1"), None, "IPv4 rules never match IPv6");
        assert_eq!(get("::ffff:10.0.0.5"), None);
        assert_eq!(get("not-an-address"), None);
        assert_eq!(get("010.0.0.5"), None);
    }

    #[test]
    fn negation_and_if_blocks() {
        let t = table(
            "if 10.0.0.0/8\n!10.1.0.0/16 not-ten-one\nendif\nif !192.168.0.0/16\n0.0.0.0/0 outside\nEndIf\n::/0 any6\n",
        );
        let get = |k: &str| t.lookup(k).unwrap();
        assert_eq!(get("10.2.3.4").as_deref(), Some("not-ten-one"));
        assert_eq!(
            get("10.1.3.4").as_deref(),
            Some("outside"),
            "falls through the first block"
        );
        assert_eq!(get("8.8.8.8").as_deref(), Some("outside"));
        assert_eq!(get("192.168.1.1"), None);
        assert_eq!(get("fe80::1").as_deref(), Some("any6"));
        // An unterminated IF hides the rest of the table when it does not match.
        let t = table("if 10.0.0.0/8\n10.0.0.1 a\n0.0.0.0/0 b\n");
        assert_eq!(t.lookup("10.0.0.1").unwrap().as_deref(), Some("a"));
        assert_eq!(t.lookup("9.9.9.9").unwrap(), None);
        assert!(t.warnings[0].to_string().starts_with(
            "/etc/postern/clients:1: table cidr:/etc/postern/clients: IF has no matching ENDIF"
        ));
    }

    #[test]
    fn host_bits_and_bad_rules_are_reported() {
        let e = errors(
            "10.0.0.1/8 x\n2001:db8::1/32 y\n10.0.0.0/33 z\n10.0.0.0/a z\n10.0.0.300 z\n10.0.0.0/8\nendif\nendif x\n[10.0.0.0 x\n",
        );
        assert_eq!(e.len(), 9, "{e:?}");
        assert_eq!(
            e[0],
            "/etc/postern/clients:1: table cidr:/etc/postern/clients: non-null host address bits in \"10.0.0.1/8\", perhaps you should use \"10.0.0.0/8\" instead"
        );
        assert!(
            e[1].contains("perhaps you should use \"2001:db8::/32\""),
            "{e:?}"
        );
        assert!(
            e[2].contains(":3: ")
                && e[2].contains("bad mask length in \"10.0.0.0/33\" (expected 0 to 32)")
        );
        assert!(e[3].contains("bad mask length"));
        assert!(e[4].contains("bad address \"10.0.0.300\""));
        assert!(e[5].contains(":6: ") && e[5].contains("no lookup result"));
        assert!(e[6].contains("ENDIF without IF"));
        assert!(e[7].contains("garbage after ENDIF"));
        assert!(e[8].contains("missing ']'"));
    }

    #[test]
    fn masks() {
        let t = table("0.0.0.0/0 all4\n::/0 all6\n");
        assert_eq!(t.lookup("1.2.3.4").unwrap().as_deref(), Some("all4"));
        assert_eq!(t.lookup("::").unwrap().as_deref(), Some("all6"));
    }

    proptest! {
        #[test]
        fn cidr_never_panics(s in "\\PC*") {
            if let Ok(t) = parse_cidr(&s, &src()) {
                let _ = t.lookup("10.1.2.3");
                let _ = t.lookup("::1");
            }
        }

        #[test]
        fn cidr_lines_never_panic(lines in proptest::collection::vec("(!|if |endif)?\\[?[0-9a-f:.]{0,20}\\]?(/[0-9]{0,3})? ?[a-z]{0,3}", 0..8)) {
            if let Ok(t) = parse_cidr(&lines.join("\n"), &src()) {
                let _ = t.lookup("192.0.2.1");
            }
        }

        #[test]
        fn prefix_matches_like_arithmetic(a in any::<u32>(), n in any::<u32>(), prefix in 0u32..=32) {
            let net = if prefix == 0 { 0 } else { n & (u32::MAX << (32 - prefix)) };
            let t = table(&format!("{}/{prefix} yes\n", std::net::Ipv4Addr::from(net)));
            let inside = prefix == 0 || (a ^ net) >> (32 - prefix) == 0;
            prop_assert_eq!(t.lookup(&std::net::Ipv4Addr::from(a).to_string()).unwrap().is_some(), inside);
        }
    }
}
