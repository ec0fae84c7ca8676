//! `$name` expansion with Postfix's forms: `$name`, `${name}`, `$(name)`,
//! `${name?text}`, `${name?{text}}`, `${name:text}`, `${name:{text}}`,
//! `${name?{text1}:{text2}}`, relational `${{a} == {b} ? {x} : {y}}`, and
//! `$$` for a literal dollar sign.

/// Depth at which expansion gives up (a loop such as `a = $b`, `b = $a`).
const MAX_DEPTH: usize = 100;

/// Expands `value`, looking names up with `lookup`, which returns the raw
/// (unexpanded) value of a parameter or `None` when it is undefined. Lookup
/// results are expanded in turn. Undefined names expand to nothing.
///
/// # Errors
/// A malformed reference (unbalanced braces, empty name) or a reference loop,
/// described in words.
pub fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    expand_depth(value, lookup, 0)
}

fn expand_depth(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_DEPTH {
        return Err("parameter reference loop (a value refers to itself through $name)".into());
    }
    let b = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            // Copy the run of ordinary characters (keeps UTF-8 intact).
            let start = i;
            while i < b.len() && b[i] != b'$' {
                i += 1;
            }
            out.push_str(&value[start..i]);
            continue;
        }
        if i + 1 < b.len() && b[i + 1] == b'$' {
            out.push('$');
            i += 2;
            continue;
        }
        i += 1;
        if i < b.len() && (b[i] == b'{' || b[i] == b'(') {
            let (open, close) = if b[i] == b'{' {
                (b'{', b'}')
            } else {
                (b'(', b')')
            };
            let mut level = 1;
            let start = i + 1;
            let mut j = start;
            while j < b.len() {
                if b[j] == open {
                    level += 1;
                } else if b[j] == close {
                    level -= 1;
                    if level == 0 {
                        break;
                    }
                }
                j += 1;
            }
            if level != 0 {
                return Err(format!("truncated macro reference: \"{value}\""));
            }
            let inner = &value[start..j];
            out.push_str(&expand_braced(inner, lookup, depth)?);
            i = j + 1;
        } else {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if start == i {
                return Err(format!("empty macro name: \"{value}\""));
            }
            let name = &value[start..i];
            if let Some(v) = lookup(name) {
                out.push_str(&expand_depth(&v, lookup, depth + 1)?);
            }
        }
    }
    Ok(out)
}

/// Removes `{ }` around text and the white space around the braces.
fn unbrace(s: &str) -> &str {
    let t = s.trim();
    if t.starts_with('{') && t.ends_with('}') && t.len() >= 2 {
        &t[1..t.len() - 1]
    } else {
        s
    }
}

/// Finds the end of a `{...}` group starting at `s[0] == '{'`; returns the
/// index just past the closing brace.
fn group_end(s: &str) -> Option<usize> {
    let mut level = 0;
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

fn expand_braced(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    let t = inner.trim_start();
    if t.starts_with('{') {
        return relational(t, lookup, depth);
    }
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    let name = &t[..name_end];
    if name.is_empty() {
        return Err(format!("empty macro name: \"${{{inner}}}\""));
    }
    let rest = &t[name_end..];
    let val = match lookup(name) {
        Some(v) => expand_depth(&v, lookup, depth + 1)?,
        None => String::new(),
    };
    if rest.is_empty() {
        return Ok(val);
    }
    // The name ends at any character that cannot be in one, which may be
    // a multi-byte one (`${name€}`): split off a whole character, never a
    // byte, or a bad main.cf would panic every program that reads it.
    let mut chars = rest.chars();
    let op = chars.next().unwrap_or(' ');
    let text = chars.as_str();
    match op {
        '?' => {
            // ${name?text}, ${name?{t1}}, ${name?{t1}:{t2}}, ${name?{t1}:t2}
            let tt = text.trim_start();
            let (t1, t2) = if tt.starts_with('{') {
                let end =
                    group_end(tt).ok_or_else(|| format!("unbalanced braces in \"{inner}\""))?;
                let after = tt[end..].trim_start();
                if let Some(else_part) = after.strip_prefix(':') {
                    (&tt[..end], Some(else_part))
                } else if after.is_empty() {
                    (&tt[..end], None)
                } else {
                    return Err(format!("unexpected text after {{...}} in \"{inner}\""));
                }
            } else {
                (text, None)
            };
            if !val.is_empty() {
                expand_depth(unbrace(t1), lookup, depth + 1)
            } else if let Some(t2) = t2 {
                expand_depth(unbrace(t2), lookup, depth + 1)
            } else {
                Ok(String::new())
            }
        }
        ':' => {
            if val.is_empty() {
                expand_depth(unbrace(text), lookup, depth + 1)
            } else {
                Ok(String::new())
            }
        }
        _ => Err(format!(
            "unexpected '{}' after parameter name in \"${{{inner}}}\"",
            op
        )),
    }
}

/// `{a} op {b} ? {x} : {y}` with op one of == != < <= > >=.
fn relational(
    t: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    let bad = || format!("bad relational expression \"{t}\"");
    let e1 = group_end(t).ok_or_else(bad)?;
    let a = expand_depth(unbrace(&t[..e1]), lookup, depth + 1)?;
    let rest = t[e1..].trim_start();
    let ops = ["==", "!=", "<=", ">=", "<", ">"];
    let op = ops.iter().find(|o| rest.starts_with(**o)).ok_or_else(bad)?;
    let rest = rest[op.len()..].trim_start();
    if !rest.starts_with('{') {
        return Err(bad());
    }
    let e2 = group_end(rest).ok_or_else(bad)?;
    let bv = expand_depth(unbrace(&rest[..e2]), lookup, depth + 1)?;
    let rest = rest[e2..].trim_start();
    let rest = rest.strip_prefix('?').ok_or_else(bad)?.trim_start();
    let e3 = group_end(rest).ok_or_else(bad)?;
    let yes = &rest[..e3];
    let rest = rest[e3..].trim_start();
    let no = match rest.strip_prefix(':') {
        Some(r) => Some(r.trim()),
        None if rest.is_empty() => None,
        None => return Err(bad()),
    };
    let numeric = !a.is_empty()
        && !bv.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
        && bv.bytes().all(|c| c.is_ascii_digit());
    let ord = if numeric {
        let x: u128 = a.parse().unwrap_or(0);
        let y: u128 = bv.parse().unwrap_or(0);
        x.cmp(&y)
    } else {
        a.cmp(&bv)
    };
    use std::cmp::Ordering::*;
    let truth = match *op {
        "==" => ord == Equal,
        "!=" => ord != Equal,
        "<" => ord == Less,
        "<=" => ord != Greater,
        ">" => ord == Greater,
        ">=" => ord != Less,
        _ => return Err(bad()),
    };
    if truth {
        expand_depth(unbrace(yes), lookup, depth + 1)
    } else if let Some(n) = no {
        expand_depth(unbrace(n), lookup, depth + 1)
    } else {
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ex(v: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        expand(v, &|n| m.get(n).cloned())
    }

    /// Found by the `maincf` fuzz target: a multi-byte character right
    /// after a name in `${...}` made expansion slice inside it and panic,
    /// so one bad main.cf line crashed every program reading main.cf.
    #[test]
    fn fuzz_multibyte_character_after_name() {
        let crash = "${myo\u{fffd}\u{fffd}gin?{yes}:{no}} $$ $(myd\0\u{8}omain)";
        let err = ex(crash, &[("myo", "x")]).unwrap_err();
        assert!(
            err.contains("unexpected '\u{fffd}' after parameter name"),
            "{err}"
        );
        assert!(ex("${a€}", &[]).unwrap_err().contains("unexpected '€'"));
        assert_eq!(ex("${a?€}", &[("a", "1")]), Ok("€".to_string()));
    }

    #[test]
    fn forms() {
        let vars = [
            ("host", "mx.example.com"),
            ("dom", "example.com"),
            ("empty", ""),
            ("ref", "$host"),
        ];
        assert_eq!(ex("$host", &vars).unwrap(), "mx.example.com");
        assert_eq!(ex("${host}x", &vars).unwrap(), "mx.example.comx");
        assert_eq!(ex("$(dom)", &vars).unwrap(), "example.com");
        assert_eq!(
            ex("localhost.$dom, $ref", &vars).unwrap(),
            "localhost.example.com, mx.example.com"
        );
        assert_eq!(ex("${host?yes}", &vars).unwrap(), "yes");
        assert_eq!(ex("${empty?yes}", &vars).unwrap(), "");
        assert_eq!(
            ex("${undefined:fallback $dom}", &vars).unwrap(),
            "fallback example.com"
        );
        assert_eq!(ex("${host:fallback}", &vars).unwrap(), "");
        assert_eq!(ex("${host?{a}:{b}}", &vars).unwrap(), "a");
        assert_eq!(ex("${empty?{a}:{b}}", &vars).unwrap(), "b");
        assert_eq!(ex("${empty?{a}:b}", &vars).unwrap(), "b");
        assert_eq!(ex("${host? { $dom } }", &vars).unwrap(), " example.com ");
        assert_eq!(ex("$$5", &vars).unwrap(), "$5");
        assert_eq!(ex("$nothing-here", &vars).unwrap(), "-here");
    }

    #[test]
    fn relational_expressions() {
        let vars = [("level", "2")];
        assert_eq!(
            ex("${{$level} < {3} ? {old} : {new}}", &vars).unwrap(),
            "old"
        );
        assert_eq!(ex("${{$level} >= {10} ? {x} : {y}}", &vars).unwrap(), "y");
        assert_eq!(ex("${{abc} == {abc} ? {same}}", &vars).unwrap(), "same");
    }

    #[test]
    fn errors() {
        assert!(ex("${host", &[]).is_err());
        assert!(ex("$", &[]).is_err());
        assert!(ex("${}", &[]).is_err());
        let e = ex("$a", &[("a", "$b"), ("b", "$a")]).unwrap_err();
        assert!(e.contains("loop"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = ex(&s, &[("a", "x"), ("b", "$a$a")]);
        }
    }
}
