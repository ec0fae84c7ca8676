//! Parsers for parameter values: booleans, integers, times, sizes, lists and
//! choices, each with a description of what it allows for error messages and
//! the manual.

use std::time::Duration;

/// Splits a Postfix list value on commas and white space. Text inside `{ }`
/// stays together (braces may nest), so `inline:{ a = b, c = d }` is one item.
/// Outer braces of a whole item are kept; use [`strip_braces`] where Postfix
/// strips them.
pub fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut level = 0usize;
    for c in value.chars() {
        match c {
            '{' => {
                level += 1;
                cur.push(c);
            }
            '}' if level > 0 => {
                level -= 1;
                cur.push(c);
            }
            ',' | ' ' | '\t' | '\r' | '\n' if level == 0 => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

/// Removes one pair of enclosing braces and the white space just inside them:
/// `{ text }` becomes `text`. Other input is returned unchanged.
pub fn strip_braces(s: &str) -> &str {
    let t = s.trim();
    if t.len() >= 2 && t.starts_with('{') && t.ends_with('}') {
        t[1..t.len() - 1].trim()
    } else {
        s
    }
}

/// Parses `yes`/`no` (also `true`/`false`), case-insensitively.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err("expected yes or no".into()),
    }
}

/// Parses a decimal integer, optionally bounded.
pub fn parse_int(s: &str, min: i64, max: i64) -> Result<i64, String> {
    let t = s.trim();
    let v: i64 = t
        .parse()
        .map_err(|_| format!("expected a whole number between {min} and {max}"))?;
    if v < min || v > max {
        return Err(format!("expected a whole number between {min} and {max}"));
    }
    Ok(v)
}

/// Parses a Postfix time value: a number followed by an optional unit
/// `s` (seconds), `m` (minutes), `h` (hours), `d` (days) or `w` (weeks).
/// Without a unit, `default_unit` applies. Postfix 3 also accepts a
/// sequence such as `1h30m`; so does this.
pub fn parse_time(s: &str, default_unit: char) -> Result<Duration, String> {
    let err = || {
        format!(
            "expected a time such as 300s, 5m, 1h, 5d or 1w (a bare number is in units of '{default_unit}')"
        )
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut any = false;
    let unit_secs = |u: char| -> Option<u64> {
        match u {
            's' => Some(1),
            'm' => Some(60),
            'h' => Some(3600),
            'd' => Some(86400),
            'w' => Some(7 * 86400),
            _ => None,
        }
    };
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let mult = unit_secs(c.to_ascii_lowercase()).ok_or_else(err)?;
            if num.is_empty() {
                return Err(err());
            }
            let n: u64 = num.parse().map_err(|_| err())?;
            total = total
                .checked_add(n.checked_mul(mult).ok_or_else(err)?)
                .ok_or_else(err)?;
            num.clear();
            any = true;
        }
    }
    if !num.is_empty() {
        let mult = unit_secs(default_unit).ok_or_else(err)?;
        let n: u64 = num.parse().map_err(|_| err())?;
        total = total
            .checked_add(n.checked_mul(mult).ok_or_else(err)?)
            .ok_or_else(err)?;
        any = true;
    }
    if !any || total > 100 * 365 * 86400 {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Parses a size in bytes. Postfix takes plain numbers; `k`, `m` and `g`
/// suffixes (powers of 1024) are accepted as a convenience.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let err = || "expected a size in bytes such as 10240000 (k, m, g suffixes allowed)".to_string();
    let (digits, mult) = match t.chars().last() {
        Some('k') | Some('K') => (&t[..t.len() - 1], 1024u64),
        Some('m') | Some('M') => (&t[..t.len() - 1], 1024 * 1024),
        Some('g') | Some('G') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(mult).ok_or_else(err)
}

/// Formats a duration as Postfix prints times: whole seconds with an `s` suffix.
pub fn format_time(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_and_space_but_not_inside_braces() {
        assert_eq!(split_list("a, b,,c\n\td"), vec!["a", "b", "c", "d"]);
        assert_eq!(
            split_list("inline:{ a = b, c = d }, hash:/x"),
            vec!["inline:{ a = b, c = d }", "hash:/x"]
        );
        assert_eq!(split_list("{a, {b c}} d"), vec!["{a, {b c}}", "d"]);
        assert!(split_list("  , ").is_empty());
        assert_eq!(strip_braces("{ x y }"), "x y");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("300s", 's').unwrap().as_secs(), 300);
        assert_eq!(parse_time("5d", 's').unwrap().as_secs(), 5 * 86400);
        assert_eq!(parse_time("4", 'h').unwrap().as_secs(), 4 * 3600);
        assert_eq!(parse_time("1h30m", 's').unwrap().as_secs(), 5400);
        assert_eq!(parse_time("0", 's').unwrap().as_secs(), 0);
        assert!(parse_time("5x", 's').is_err());
        assert!(parse_time("", 's').is_err());
        assert!(parse_time("m", 's').is_err());
        assert!(parse_time("99999999999999999999d", 's').is_err());
    }

    #[test]
    fn bools_ints_sizes() {
        assert!(parse_bool("YES").unwrap());
        assert!(!parse_bool("no").unwrap());
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_int("20", 0, 100).unwrap(), 20);
        assert!(parse_int("-1", 0, 100).is_err());
        assert_eq!(parse_size("10240000").unwrap(), 10240000);
        assert_eq!(parse_size("10m").unwrap(), 10 * 1024 * 1024);
        assert!(parse_size("ten").is_err());
    }
}
