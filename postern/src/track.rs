//! `postern log`: searches the message tracking record that the queue
//! manager keeps in the queue index (every accepted message, every
//! delivery attempt; see `queue::index::track`), and `postern log
//! --summary` counts it per SASL user and per client, as pflogsumm does
//! from a log file.
//!
//! The index is opened read-only, so the command works while postern runs
//! (SQLite WAL: readers see the last commit and never block the writer).
//! Like mailq, it reads as `mail_owner`: root drops to that account, and
//! other users cannot read the index (mode 0600).
//!
//! Exit status: 0 when something matched, 1 when nothing did, 64 for a
//! usage error, 75 when the index cannot be read, 77 without permission.

mod format;
mod when;

use queue::index::Index;
use queue::index::track::{Match, TrackQuery, TrackStatus};
use queue::layout::Queue;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

const USAGE: &str =
    "usage: postern log [--sender ADDR] [--recipient ADDR] [--id QUEUE_ID] [--message-id ID]
                   [--sasl-user USER] [--client NAME|ADDR] [--status LIST]
                   [--since TIME] [--until TIME] [--limit N] [--csv | --json]
       postern log --summary [--since TIME] [--until TIME] [--csv | --json]
ADDR: an address, @domain, or a pattern with *; LIST: queued,sent,deferred,bounced,expired
TIME: 2h, 7d, today, yesterday, 2026-11-22, \"2026-11-22 05:30\", \"Nov 22 05:30:00\", @EPOCH";

/// Rows shown when `--limit` is not given.
const DEFAULT_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Csv,
    Json,
}

#[derive(Debug)]
struct Args {
    query: TrackQuery,
    summary: bool,
    output: Output,
    limit: usize,
}

fn parse_args(args: &[String], now: SystemTime) -> Result<Args, String> {
    let mut a = Args {
        query: TrackQuery::default(),
        summary: false,
        output: Output::Table,
        limit: DEFAULT_LIMIT,
    };
    let mut formats = 0;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("option {name} needs a value"))
        };
        let q = &mut a.query;
        match name {
            "--sender" | "--from" | "-f" => q.sender = Some(Match::parse(&value()?)),
            "--recipient" | "--to" | "-t" => q.recipient = Some(Match::parse(&value()?)),
            "--id" | "--queue-id" | "-i" => {
                let v = value()?;
                if !queue::id::is_valid(&v.to_ascii_uppercase()) {
                    return Err(format!("bad queue ID \"{v}\": 10 to 12 hex characters"));
                }
                q.queue_id = Some(v.to_ascii_uppercase());
            }
            "--message-id" | "-m" => q.message_id = Some(value()?),
            "--sasl-user" | "--user" | "-u" => q.sasl_user = Some(Match::parse(&value()?)),
            "--client" => q.client = Some(Match::parse(&value()?)),
            "--status" | "-s" => {
                for w in value()?.split([',', ' ']).filter(|w| !w.is_empty()) {
                    if w.eq_ignore_ascii_case("all") {
                        continue;
                    }
                    let s = TrackStatus::parse(w).ok_or_else(|| {
                        format!(
                            "unknown status \"{w}\": use queued, sent, deferred, bounced or expired"
                        )
                    })?;
                    if !q.statuses.contains(&s) {
                        q.statuses.push(s);
                    }
                }
            }
            "--since" => q.since = Some(when::parse(&value()?, now, false)?),
            "--until" => q.until = Some(when::parse(&value()?, now, true)?),
            "--limit" | "-n" => {
                let v = value()?;
                a.limit = v
                    .parse()
                    .map_err(|_| format!("bad limit \"{v}\": a whole number (0: no limit)"))?;
            }
            "--csv" => {
                a.output = Output::Csv;
                formats += 1;
            }
            "--json" => {
                a.output = Output::Json;
                formats += 1;
            }
            "--summary" => a.summary = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
        i += 1;
    }
    if formats > 1 {
        return Err("give only one of --csv and --json".into());
    }
    let q = &a.query;
    if a.summary
        && (q.sender.is_some()
            || q.recipient.is_some()
            || q.queue_id.is_some()
            || q.message_id.is_some()
            || q.sasl_user.is_some()
            || q.client.is_some()
            || !q.statuses.is_empty())
    {
        return Err("--summary takes only --since, --until and an output format".into());
    }
    if let (Some(s), Some(u)) = (q.since, q.until)
        && s >= u
    {
        return Err("--since must be earlier than --until".into());
    }
    Ok(a)
}

/// `postern [-c DIR] log ...`.
pub fn main(dir: &Path, args: &[String]) -> i32 {
    let a = match parse_args(args, SystemTime::now()) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("postern log: fatal: {e}\n{USAGE}");
            return 64;
        }
    };
    let cfg = match queue::service::load_for_command("postern log", dir, 78) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // As mailq: root reads as mail_owner, so that SQLite never creates
    // files in the queue that the daemons cannot open.
    if let Err(e) = queue::service::drop_privileges(&cfg) {
        eprintln!("postern log: fatal: {e}");
        return 77;
    }
    let path = Queue::new(&cfg.queue_directory).index_path();
    if !path.exists() {
        eprintln!(
            "postern log: no tracking records: {} does not exist (the queue manager creates it)",
            path.display()
        );
        return 1;
    }
    if let Err(e) = std::fs::File::open(&path) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            eprintln!(
                "postern log: fatal: cannot read {}: permission denied; run postern log as root or {}",
                path.display(),
                cfg.mail_owner
            );
            return 77;
        }
        eprintln!("postern log: fatal: cannot read {}: {e}", path.display());
        return 75;
    }
    let ix = match Index::open_ro(&path) {
        Ok(ix) => ix,
        Err(e) => {
            eprintln!("postern log: fatal: {e}");
            return 75;
        }
    };
    match ix.track_ready() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "postern log: no tracking records yet: restart postern so that the queue manager adds them to {}",
                path.display()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("postern log: fatal: {e}");
            return 75;
        }
    }
    if cfg.tracking_retention_time.is_zero() {
        eprintln!("postern log: warning: tracking_retention_time = 0: nothing new is recorded");
    }
    let (text, found) = if a.summary {
        match ix.track_summary(a.query.since, a.query.until) {
            Ok(s) => {
                let text = match a.output {
                    Output::Table => format::summary_table(&s, a.query.since, a.query.until),
                    Output::Csv => format::summary_csv(&s),
                    Output::Json => format::summary_json(&s),
                };
                (text, s.total.messages > 0)
            }
            Err(e) => {
                eprintln!("postern log: fatal: {e}");
                return 75;
            }
        }
    } else {
        let mut q = a.query.clone();
        q.limit = (a.limit > 0).then_some(a.limit + 1);
        let mut rows = match ix.track_query(&q) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("postern log: fatal: {e}");
                return 75;
            }
        };
        if a.limit > 0 && rows.len() > a.limit {
            rows.remove(0);
            eprintln!(
                "postern log: showing the newest {} matching rows; --limit 0 shows all",
                a.limit
            );
        }
        if rows.is_empty() && a.output == Output::Table {
            eprintln!("postern log: no matching messages");
            return 1;
        }
        let text = match a.output {
            Output::Table => format::table(&rows),
            Output::Csv => format::csv(&rows),
            Output::Json => format::json(&rows),
        };
        (text, !rows.is_empty())
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => 74,
        _ if found => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        parse_args(&v, SystemTime::now())
    }

    #[test]
    fn options() {
        let a = args(&[
            "--sender",
            "a@b.com",
            "--to=@c.com",
            "--id",
            "8f3a21c09b00",
            "--status",
            "bounced,expired",
            "--since",
            "2h",
            "--limit",
            "0",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.query.sender, Some(Match::Exact("a@b.com".into())));
        assert_eq!(a.query.recipient, Some(Match::Domain("@c.com".into())));
        assert_eq!(a.query.queue_id.as_deref(), Some("8F3A21C09B00"));
        assert_eq!(
            a.query.statuses,
            vec![TrackStatus::Bounced, TrackStatus::Expired]
        );
        assert!(a.query.since.is_some());
        assert_eq!(a.limit, 0);
        assert_eq!(a.output, Output::Json);
        for bad in [
            &["--status", "lost"][..],
            &["--csv", "--json"],
            &["--summary", "--sender", "x"],
            &["--id", "nothex"],
            &["--since"],
            &["--bogus"],
            &["--since", "1h", "--until", "2h"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
