//! Reading and waiting on the `maillog_file`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use regex::Regex;

/// How often the log is re-read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// What to look for in a log line: a substring or a regular expression.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// The line contains this text.
    Text(String),
    /// The line matches this expression.
    Regex(Regex),
}

impl Pattern {
    /// True when `line` matches.
    pub fn matches(&self, line: &str) -> bool {
        match self {
            Pattern::Text(t) => line.contains(t.as_str()),
            Pattern::Regex(r) => r.is_match(line),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Text(t) => write!(f, "{t:?}"),
            Pattern::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Pattern {
        Pattern::Text(s.to_string())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Pattern {
        Pattern::Text(s)
    }
}

impl From<Regex> for Pattern {
    fn from(r: Regex) -> Pattern {
        Pattern::Regex(r)
    }
}

impl From<&Regex> for Pattern {
    fn from(r: &Regex) -> Pattern {
        Pattern::Regex(r.clone())
    }
}

/// A regular-expression [`Pattern`].
///
/// # Panics
/// When `re` does not compile (a bug in the test).
pub fn re(re: &str) -> Pattern {
    Pattern::Regex(Regex::new(re).unwrap_or_else(|e| panic!("bad regex {re:?}: {e}")))
}

/// A position in the log: waits from a mark see only lines written after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMark(pub u64);

/// The log from `mark` on (empty when the file does not exist yet).
pub fn read_from(path: &Path, mark: LogMark) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (mark.0 as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The current end of the log.
pub fn mark(path: &Path) -> LogMark {
    LogMark(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = lines[skip..].join("\n");
    out.push('\n');
    out
}

/// Polls the log until every pattern has `count` matching lines after
/// `mark`, or `check` fails, or `timeout` passes. Returns the first line
/// matching the first pattern.
///
/// # Errors
/// Timeout (the message holds the log's tail), or `check`'s error.
pub fn wait(
    path: &Path,
    mark: LogMark,
    patterns: &[(Pattern, usize)],
    timeout: Duration,
    mut check: impl FnMut() -> Result<()>,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = read_from(path, mark);
        let done = patterns
            .iter()
            .all(|(p, n)| text.lines().filter(|l| p.matches(l)).count() >= *n);
        if done {
            let first = patterns
                .first()
                .and_then(|(p, _)| text.lines().find(|l| p.matches(l)))
                .unwrap_or("");
            return Ok(first.to_string());
        }
        check()?;
        if Instant::now() >= deadline {
            let what: Vec<String> = patterns
                .iter()
                .map(|(p, n)| {
                    if *n == 1 {
                        p.to_string()
                    } else {
                        format!("{n} x {p}")
                    }
                })
                .collect();
            bail!(
                "timed out after {timeout:?} waiting for {} in {}\n--- log (last 60 lines):\n{}",
                what.join(" and "),
                path.display(),
                tail(&read_from(path, LogMark(0)), 60)
            );
        }
        std::thread::sleep(POLL);
    }
}
