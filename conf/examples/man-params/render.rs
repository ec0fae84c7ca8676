//! Builds the generated PARAMETERS region of postern.cf(5) from the
//! parameter registry ([`conf::PARAMS`]) and the hand-written extra
//! paragraphs in `man/postern.cf.5.extra`.
//!
//! Shared by the `man-params` example (which prints or rewrites the page)
//! and by `tests/manpage.rs` (which fails when the page is out of date), so
//! both always agree on what the page must say.
//!
//! The page keeps everything outside the region as written by hand. The
//! region lies between the lines [`BEGIN`] and [`END`] and holds one `.TP`
//! entry per parameter, in alphabetical order:
//!
//! ```text
//! .TP
//! .B maximal_queue_lifetime
//! Default: \fB5d\fR
//! .br
//! Value: a time (s, m, h, d, w; bare numbers in 'd').
//! .br
//! Time a message may stay in the queue before it is bounced as undeliverable.
//! .IP
//! <the extra paragraphs for this parameter, if any>
//! ```

// The example and the test each use part of this module.
#![allow(dead_code)]

use conf::params::{Kind, ParamDef, computed_default};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The line that opens the generated region.
pub const BEGIN: &str = ".\\\" BEGIN GENERATED PARAMETERS (from conf/src/params.rs and man/postern.cf.5.extra; do not edit by hand)";
/// The line that closes the generated region.
pub const END: &str = ".\\\" END GENERATED PARAMETERS";
/// Prefix of the lines that start an entry in the extras file.
pub const EXTRA_KEY: &str = "@@ ";

/// The workspace root (the parent of the `conf` crate).
pub fn workspace_root() -> PathBuf {
    let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    conf.parent().map(PathBuf::from).unwrap_or(conf)
}

/// The page: `man/man5/postern.cf.5`.
pub fn page_path() -> PathBuf {
    workspace_root()
        .join("man")
        .join("man5")
        .join("postern.cf.5")
}

/// The hand-written extra paragraphs: `man/postern.cf.5.extra`.
pub fn extras_path() -> PathBuf {
    workspace_root().join("man").join("postern.cf.5.extra")
}

/// Every registry parameter, sorted as the page lists them (by name,
/// ignoring case, so `smtp_tls_CAfile` sits among the other `smtp_tls_*`).
pub fn sorted_params() -> Vec<&'static ParamDef> {
    let mut v: Vec<&'static ParamDef> = conf::PARAMS.iter().collect();
    v.sort_by_key(|p| (p.name.to_ascii_lowercase(), p.name));
    v
}

/// Escapes plain text for a roff text line: backslashes, hyphens (so that
/// values such as `loopback-only` copy and paste as typed), a leading
/// control character, and anything outside ASCII.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", c as u32)),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// The `Default:` line of a parameter, exactly as the page shows it.
pub fn default_line(p: &ParamDef) -> String {
    if p.default.is_empty() {
        if computed_default(p.name).is_some() {
            "Default: computed at run time (\\fBpostconf \\-d\\fR shows the value)".to_string()
        } else {
            "Default: empty".to_string()
        }
    } else {
        format!("Default: \\fB{}\\fR", escape(p.default))
    }
}

/// The `Value:` line (what the parameter accepts), or `None` for free text.
pub fn value_line(p: &ParamDef) -> Option<String> {
    match p.kind {
        Kind::Text => None,
        k => Some(format!("Value: {}.", escape(&k.describe()))),
    }
}

/// Parses the extras file: a header (ignored) and then entries, each a line
/// `@@ name` followed by roff text up to the next `@@` line or the end.
///
/// # Errors
/// A duplicate or empty entry, an entry name that is not a parameter
/// name, or an entry that starts with a paragraph macro (the generator
/// supplies the `.IP` that opens it).
pub fn parse_extras(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, usize, Vec<&str>)> = None;
    for (i, l) in text.lines().enumerate() {
        if let Some(name) = l
            .strip_prefix(EXTRA_KEY)
            .or_else(|| (l == "@@").then_some(""))
        {
            finish_extra(current.take(), &mut out)?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "line {}: \"{l}\": expected \"@@ parameter_name\"",
                    i + 1
                ));
            }
            current = Some((name.to_string(), i + 1, Vec::new()));
        } else if let Some((_, _, lines)) = &mut current {
            lines.push(l);
        }
    }
    finish_extra(current.take(), &mut out)?;
    Ok(out)
}

/// Checks one extras entry (name, line, text lines) and adds it to `out`.
fn finish_extra(
    cur: Option<(String, usize, Vec<&str>)>,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let Some((name, line, mut lines)) = cur else {
        return Ok(());
    };
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|l| l.trim().is_empty()) {
        lines.remove(0);
    }
    if lines.is_empty() {
        return Err(format!("line {line}: entry \"{name}\" has no text"));
    }
    if lines.iter().any(|l| l.trim().is_empty()) {
        return Err(format!(
            "line {line}: entry \"{name}\" has a blank line; separate paragraphs with .IP (a blank line is a roff paragraph break that mandoc warns about)"
        ));
    }
    if lines.iter().any(|l| l.starts_with("Default: ")) {
        return Err(format!(
            "line {line}: entry \"{name}\" has a line starting with \"Default: \", which marks parameter entries; reword it"
        ));
    }
    let first = lines[0].trim_start();
    for m in [".PP", ".LP", ".P", ".IP", ".TP", ".SH", ".SS"] {
        if first == m || first.starts_with(&format!("{m} ")) {
            return Err(format!(
                "line {line}: entry \"{name}\" starts with {m}; leave it out, the generator opens the paragraph with .IP"
            ));
        }
    }
    if out.insert(name.clone(), lines.join("\n")).is_some() {
        return Err(format!(
            "line {line}: parameter \"{name}\" has a second entry"
        ));
    }
    Ok(())
}

/// One parameter's entry.
pub fn entry(p: &ParamDef, extra: Option<&str>) -> String {
    let mut s = String::new();
    s.push_str(".TP\n");
    s.push_str(&format!(".B {}\n", p.name));
    s.push_str(&default_line(p));
    s.push('\n');
    if let Some(v) = value_line(p) {
        s.push_str(".br\n");
        s.push_str(&v);
        s.push('\n');
    }
    s.push_str(".br\n");
    s.push_str(&escape(p.doc));
    s.push('\n');
    if let Some(x) = extra {
        s.push_str(".IP\n");
        s.push_str(x);
        s.push('\n');
    }
    s
}

/// The whole region, markers included.
///
/// # Errors
/// An extras entry for a parameter the registry does not know (stale text).
pub fn region(extras: &BTreeMap<String, String>) -> Result<String, String> {
    let stale: Vec<&str> = extras
        .keys()
        .filter(|k| conf::params::param(k).is_none())
        .map(String::as_str)
        .collect();
    if !stale.is_empty() {
        return Err(format!(
            "man/postern.cf.5.extra has entries for parameters that conf::PARAMS does not know: {}",
            stale.join(", ")
        ));
    }
    let mut s = String::new();
    s.push_str(BEGIN);
    s.push('\n');
    for p in sorted_params() {
        s.push_str(&entry(p, extras.get(p.name).map(String::as_str)));
    }
    s.push_str(END);
    s.push('\n');
    Ok(s)
}

/// Replaces the region of `page` with `region`.
///
/// # Errors
/// The page lacks the markers (or has them out of order).
pub fn splice(page: &str, region: &str) -> Result<String, String> {
    let begin = page.find(&format!("{BEGIN}\n")).ok_or_else(|| {
        if page.trim().is_empty() {
            "the page is empty: was the output redirected onto it? Restore it (git checkout man/man5/postern.cf.5) and use --write".to_string()
        } else {
            format!("the page has no line \"{BEGIN}\"")
        }
    })?;
    let end_rel = page[begin..]
        .find(&format!("{END}\n"))
        .ok_or_else(|| format!("the page has no line \"{END}\" after the BEGIN marker"))?;
    let end = begin + end_rel + END.len() + 1;
    Ok(format!("{}{}{}", &page[..begin], region, &page[end..]))
}

/// The page as it must be: `page` with its region rebuilt from the registry
/// and `extras_text`.
///
/// # Errors
/// As [`parse_extras`], [`region`] and [`splice`].
pub fn regenerate(page: &str, extras_text: &str) -> Result<String, String> {
    let extras = parse_extras(extras_text).map_err(|e| format!("man/postern.cf.5.extra: {e}"))?;
    splice(page, &region(&extras)?)
}
