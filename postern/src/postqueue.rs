//! postqueue: `-p` (mailq) and `-j` list the queue in Postfix's layouts from
//! the index (plus new files the queue manager has not indexed yet);
//! `-f`, `-s site` and `-i id` ask the queue manager to deliver now.

use crate::getopt::{self, Opt};
use queue::file::QueueFile;
use queue::index::Index;
use queue::layout::{Queue, QueueName};
use std::io::Write;
use std::path::PathBuf;

/// One queued message as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Queue the file is in.
    pub queue: QueueName,
    /// Queue ID (or maildrop file name).
    pub id: String,
    /// Arrival, seconds since the epoch.
    pub arrival: i64,
    /// Content size.
    pub size: i64,
    /// Sender (empty for <>).
    pub sender: String,
    /// Pending recipients: (address, deferral reason or empty), in
    /// showq's order (see [`showq_order`]).
    pub rcpts: Vec<(String, String)>,
}

/// Orders recipients as Postfix's showq lists them: first those with a
/// deferral reason, as its defer logfile has them (one delivery attempt
/// writes its recipients together, so recipients with the same reason are
/// adjacent; groups in the order of their first recipient in the
/// envelope), then those without a reason, in envelope order.
pub fn showq_order(rcpts: Vec<(String, String)>) -> Vec<(String, String)> {
    // One reason (or none) for all: nothing to reorder (the usual case).
    if rcpts.windows(2).all(|w| w[0].1 == w[1].1) {
        return rcpts;
    }
    let mut reasons: Vec<String> = Vec::new();
    for (_, r) in &rcpts {
        if !r.is_empty() && !reasons.contains(r) {
            reasons.push(r.clone());
        }
    }
    let rank = |r: &str| reasons.iter().position(|x| x == r).unwrap_or(reasons.len());
    let mut keyed: Vec<(usize, (String, String))> =
        rcpts.into_iter().map(|x| (rank(&x.1), x)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, x)| x).collect()
}

/// An address as showq prints it (Postfix's quote_822_local plus
/// printable): the local part in double quotes when it is not a
/// dot-atom (RFC 5322 specials, white space, empty or doubled dots), and
/// control characters as `?`. UTF-8 is shown as is.
pub fn external(addr: &str) -> String {
    let mut out = String::with_capacity(addr.len() + 2);
    push_external(&mut out, addr);
    out
}

/// [`external`] appended to `out`.
fn push_external(out: &mut String, addr: &str) {
    let (local, domain) = match addr.rfind('@') {
        Some(i) => (&addr[..i], &addr[i..]),
        None => (addr, ""),
    };
    let atext =
        |c: char| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|a| !a.is_empty() && a.chars().all(atext));
    let start = out.len();
    if dot_atom || local.is_empty() {
        out.push_str(local);
    } else {
        out.push('"');
        for c in local.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push_str(domain);
    if out[start..].contains(|c: char| c.is_control()) {
        let shown: String = out[start..]
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        out.truncate(start);
        out.push_str(&shown);
    }
}

pub fn main(args: &[String]) -> i32 {
    let (opts, rest) = match getopt::parse(args, "c:fi:jps:v") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postqueue: fatal: {e}");
            return 64;
        }
    };
    if !rest.is_empty() {
        eprintln!(
            "postqueue: fatal: usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"
        );
        return 64;
    }
    let mut dir: Option<PathBuf> = None;
    let mut mode: Option<(char, Option<String>)> = None;
    for Opt::Flag(c, v) in opts {
        match c {
            'c' => dir = v.map(PathBuf::from),
            'v' => {}
            _ => {
                if mode.is_some() {
                    eprintln!("postqueue: fatal: specify only one of -f, -i, -j, -p, -s");
                    return 64;
                }
                mode = Some((c, v));
            }
        }
    }
    let dir = conf::config_dir(dir.as_deref());
    let cfg = match queue::service::load_for_command("postqueue", &dir, 78) {
        Ok(c) => c,
        Err(code) => return code,
    };
    queue::log::init(
        &cfg,
        "postqueue",
        queue::log::Options {
            stderr_name: Some("postqueue".into()),
            verbose_stderr: false,
        },
    );
    // Root reads the queue as mail_owner, so that SQLite never creates
    // files in the queue that the daemons cannot open.
    if nix::unistd::geteuid().is_root()
        && let Err(e) = queue::service::drop_privileges(&cfg)
    {
        eprintln!("postqueue: fatal: {e}");
        return 77;
    }
    match mode {
        Some(('p', _)) => print_list(&cfg, false),
        Some(('j', _)) => print_list(&cfg, true),
        Some(('f', _)) => flush(&cfg, &[queue::wake::FLUSH]),
        Some(('s', Some(site))) => {
            let mut t = vec![queue::wake::FLUSH];
            t.extend_from_slice(site.as_bytes());
            flush(&cfg, &t)
        }
        Some(('i', Some(id))) => {
            let mut t = vec![b'Q'];
            t.extend_from_slice(id.as_bytes());
            flush(&cfg, &t)
        }
        _ => {
            eprintln!(
                "postqueue: fatal: usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"
            );
            64
        }
    }
}

/// Sends a flush request to the queue manager.
pub fn flush(cfg: &conf::Config, trigger: &[u8]) -> i32 {
    let q = Queue::new(&cfg.queue_directory);
    if queue::wake::wake(&q, "qmgr", trigger) {
        0
    } else {
        eprintln!("postqueue: fatal: Cannot flush mail queue - mail system is down");
        69
    }
}

/// Reads the whole queue, in mailq order.
///
/// # Errors
/// The queue cannot be read (permissions).
pub fn collect(cfg: &conf::Config) -> Result<Vec<Entry>, String> {
    let q = Queue::new(&cfg.queue_directory);
    let mut out = Vec::new();
    let path = q.index_path();
    if path.exists() {
        let ix = Index::open_ro(&path).map_err(|e| e.to_string())?;
        let msgs = ix.messages().map_err(|e| e.to_string())?;
        let mut rcpts = ix.all_recipients().map_err(|e| e.to_string())?;
        for m in msgs {
            let Some(qn) = QueueName::parse(&m.queue) else {
                continue;
            };
            let rs = rcpts.remove(&m.id).unwrap_or_default();
            out.push(Entry {
                queue: qn,
                id: m.id,
                arrival: m.arrival / 1_000_000,
                size: m.size,
                sender: m.sender,
                rcpts: showq_order(
                    rs.into_iter()
                        .filter(|r| !r.done)
                        .map(|r| (r.addr, r.reason.unwrap_or_default()))
                        .collect(),
                ),
            });
        }
    }
    // Files the queue manager has not indexed yet (a sorted list rather
    // than a hash set: no copy of 100,000 IDs, no hashing).
    let mut indexed: Vec<&str> = out.iter().map(|e: &Entry| e.id.as_str()).collect();
    indexed.sort_unstable();
    let mut unindexed: Vec<Entry> = Vec::new();
    for qn in [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
    ] {
        let names = match q.list(qn) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(format!(
                    "cannot read {}: permission denied; run mailq as root or {}",
                    q.dir(qn).display(),
                    cfg.mail_owner
                ));
            }
            Err(_) => continue,
        };
        for name in names {
            if indexed.binary_search(&name.as_str()).is_ok() {
                continue;
            }
            let Ok(f) = QueueFile::read(&q.path(qn, &name)) else {
                continue;
            };
            let e = &f.envelope;
            unindexed.push(Entry {
                queue: qn,
                id: if qn == QueueName::Maildrop {
                    name[..name.len().min(12)].to_ascii_uppercase()
                } else {
                    name.clone()
                },
                arrival: e
                    .arrival
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
                size: (f.content_end - f.content_start) as i64,
                sender: e.sender.clone(),
                rcpts: e
                    .recipients
                    .iter()
                    .filter(|r| !r.done)
                    .map(|r| (r.addr.clone(), String::new()))
                    .collect(),
            });
        }
    }
    out.extend(unindexed);
    let order = |q: QueueName| match q {
        QueueName::Maildrop => 0,
        QueueName::Incoming => 1,
        QueueName::Active => 2,
        QueueName::Deferred => 3,
        QueueName::Hold => 4,
        QueueName::Corrupt => 5,
    };
    out.sort_by(|a, b| (order(a.queue), a.arrival, &a.id).cmp(&(order(b.queue), b.arrival, &b.id)));
    Ok(out)
}

/// "%-11s %7s %-20s %s" with three empty fields: the recipients' indent.
const RCPT_INDENT: &str = "                                         ";

/// Formats the queue as `postqueue -p` (mailq) does.
pub fn format_text(entries: &[Entry], empty_addr: &str) -> String {
    let mut s = String::with_capacity(160 * entries.len() + 80);
    write_text(&mut s, entries, empty_addr);
    s
}

/// [`format_text`] into `s`.
pub fn write_text(s: &mut String, entries: &[Entry], empty_addr: &str) {
    use std::fmt::Write as _;
    let mut total: i64 = 0;
    let mut id = String::with_capacity(16);
    // The arrival stamp of the previous message: messages queued in the
    // same second share it.
    let mut stamp: (i64, String) = (i64::MIN, String::new());
    for (n, e) in entries.iter().enumerate() {
        if n == 0 {
            // showq_compat.c's "%-11s %7s %-20s %s" of the four headings.
            s.push_str("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
        } else {
            s.push('\n');
        }
        id.clear();
        id.push_str(&e.id);
        match e.queue {
            QueueName::Active => id.push('*'),
            QueueName::Hold => id.push('!'),
            _ => {}
        }
        if stamp.0 != e.arrival {
            stamp = (
                e.arrival,
                queue::time::mailq_stamp(queue::time::from_micros(e.arrival * 1_000_000)),
            );
        }
        // asctime()'s first 20 characters: the stamp and a space.
        let _ = write!(s, "{:<11} {:>7} {:<19.19}  ", id, e.size, stamp.1);
        if e.sender.is_empty() {
            s.push_str(empty_addr);
        } else {
            push_external(s, &e.sender);
        }
        s.push('\n');
        // Postfix prints a reason line when the reason changes, "(reason
        // unavailable)" when a recipient without one follows one with.
        let mut last: &str = "";
        for (addr, reason) in &e.rcpts {
            if reason != last {
                let shown = if reason.is_empty() {
                    "reason unavailable"
                } else {
                    reason.as_str()
                };
                let pad = 76usize.saturating_sub(shown.len());
                let _ = writeln!(s, "{:pad$}({shown})", "");
                last = reason;
            }
            s.push_str(RCPT_INDENT);
            push_external(s, addr);
            s.push('\n');
        }
        total += e.size;
    }
    if entries.is_empty() {
        s.push_str("Mail queue is empty\n");
    } else {
        let n = entries.len();
        let _ = writeln!(
            s,
            "\n-- {} Kbytes in {} Request{}.",
            total / 1024,
            n,
            if n == 1 { "" } else { "s" }
        );
    }
}

/// A JSON string as Postfix's postqueue writes it (json_quote): `"` and
/// `\\` escaped, control characters as `\\b \\f \\n \\r \\t` or `\\uXXXX`
/// (upper-case hex), everything else, UTF-8 included, as is.
fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats the queue as `postqueue -j` does: one JSON object per line, with
/// Postfix 3.7's keys (`queue_name`, `queue_id`, `arrival_time`,
/// `message_size`, `forced_expire`, `sender`, `recipients` with `address`
/// and, when deferred, `delay_reason`).
pub fn format_json(entries: &[Entry], empty_addr: &str) -> String {
    let mut s = String::with_capacity(220 * entries.len());
    write_json(&mut s, entries, empty_addr);
    s
}

/// [`format_json`] into `s`.
pub fn write_json(s: &mut String, entries: &[Entry], empty_addr: &str) {
    use std::fmt::Write as _;
    for e in entries {
        let sender = if e.sender.is_empty() {
            empty_addr.to_string()
        } else {
            external(&e.sender)
        };
        s.push_str("{\"queue_name\": ");
        json_str(s, e.queue.as_str());
        s.push_str(", \"queue_id\": ");
        json_str(s, &e.id);
        let _ = write!(
            s,
            ", \"arrival_time\": {}, \"message_size\": {}, \"forced_expire\": false, \"sender\": ",
            e.arrival, e.size
        );
        json_str(s, &sender);
        s.push_str(", \"recipients\": [");
        for (i, (addr, reason)) in e.rcpts.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str("{\"address\": ");
            json_str(s, &external(addr));
            if !reason.is_empty() {
                s.push_str(", \"delay_reason\": ");
                json_str(s, reason);
            }
            s.push('}');
        }
        s.push_str("]}\n");
    }
}

fn print_list(cfg: &conf::Config, json: bool) -> i32 {
    // The index also holds the message tracking records (senders,
    // recipients, subjects), so it is private to root and mail_owner;
    // Postfix lets anyone list the queue, postern does not.
    let index = Queue::new(&cfg.queue_directory).index_path();
    if let Err(e) = std::fs::File::open(&index)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        eprintln!(
            "postqueue: fatal: User {user}({uid}) is not allowed to view the mail queue: only root and {} can read {}; run mailq with sudo",
            cfg.mail_owner,
            index.display()
        );
        return 77;
    }
    let entries = match collect(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("postqueue: fatal: {e}");
            return 75;
        }
    };
    let text = if json {
        format_json(&entries, &cfg.empty_address_recipient)
    } else {
        format_text(&entries, &cfg.empty_address_recipient)
    };
    // The process exits next: freeing 100,000 entries one by one would
    // only cost time.
    std::mem::forget(entries);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 74,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, why: &str) -> (String, String) {
        (a.to_string(), why.to_string())
    }

    #[test]
    fn text_layout_matches_postfix() {
        // SAFETY: single-threaded test of TZ-dependent formatting.
        unsafe { std::env::set_var("TZ", "UTC") };
        let refused = "connect to smtp.office365.com[52.98.1.2]:587: Connection refused";
        let e = vec![
            Entry {
                queue: QueueName::Deferred,
                id: "8F3A21C09B".into(),
                arrival: 1_795_325_400,
                size: 1234,
                sender: "scan@contoso.com".into(),
                rcpts: vec![
                    r("bob@contoso.com", refused),
                    r("carol@contoso.com", refused),
                    r("dave@contoso.com", ""),
                ],
            },
            Entry {
                queue: QueueName::Active,
                id: "9A0B1C2D3E".into(),
                arrival: 1_795_325_460,
                size: 4096,
                sender: String::new(),
                rcpts: vec![r("x@y", "")],
            },
        ];
        let got = format_text(&e, "MAILER-DAEMON");
        let want = [
            "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
            "8F3A21C09B     1234 Sun Nov 22 05:30:00  scan@contoso.com",
            "            (connect to smtp.office365.com[52.98.1.2]:587: Connection refused)",
            "                                         bob@contoso.com",
            "                                         carol@contoso.com",
            "                                                          (reason unavailable)",
            "                                         dave@contoso.com",
            "",
            "9A0B1C2D3E*    4096 Sun Nov 22 05:31:00  MAILER-DAEMON",
            "                                         x@y",
            "",
            "-- 5 Kbytes in 2 Requests.",
            "",
        ]
        .join("\n");
        assert_eq!(got, want);
        assert_eq!(format_text(&[], "MAILER-DAEMON"), "Mail queue is empty\n");
        let j = format_json(&e[1..], "MAILER-DAEMON");
        assert_eq!(
            j,
            "{\"queue_name\": \"active\", \"queue_id\": \"9A0B1C2D3E\", \"arrival_time\": 1795325460, \"message_size\": 4096, \"forced_expire\": false, \"sender\": \"MAILER-DAEMON\", \"recipients\": [{\"address\": \"x@y\"}]}\n"
        );
    }

    #[test]
    fn recipients_are_grouped_by_reason_as_showq_does() {
        let got = showq_order(vec![
            r("a@x", "A"),
            r("b@x", ""),
            r("c@x", "B"),
            r("d@x", "A"),
        ]);
        assert_eq!(
            got,
            vec![r("a@x", "A"), r("d@x", "A"), r("c@x", "B"), r("b@x", "")]
        );
    }

    #[test]
    fn addresses_are_quoted_and_json_escaped_as_postfix_does() {
        assert_eq!(
            external("john smith@example.com"),
            "\"john smith\"@example.com"
        );
        assert_eq!(external("a.b@example.com"), "a.b@example.com");
        assert_eq!(external(".a@x"), "\".a\"@x");
        assert_eq!(external("jörg@exämple.test"), "jörg@exämple.test");
        assert_eq!(external("say\"hi\"@x"), "\"say\\\"hi\\\"\"@x");
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\td\u{1}é/");
        assert_eq!(s, "\"a\\\"b\\\\c\\td\\u0001é/\"");
    }
}
