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
    /// Pending recipients: (original, address, reason).
    pub rcpts: Vec<(String, String, String)>,
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
    let mut indexed = std::collections::HashSet::new();
    let path = q.index_path();
    if path.exists() {
        let ix = Index::open_ro(&path).map_err(|e| e.to_string())?;
        let msgs = ix.messages().map_err(|e| e.to_string())?;
        let mut rcpts = ix.all_recipients().map_err(|e| e.to_string())?;
        for m in msgs {
            let Some(qn) = QueueName::parse(&m.queue) else {
                continue;
            };
            indexed.insert(m.id.clone());
            let rs = rcpts.remove(&m.id).unwrap_or_default();
            out.push(Entry {
                queue: qn,
                id: m.id,
                arrival: m.arrival / 1_000_000,
                size: m.size,
                sender: m.sender,
                rcpts: rs
                    .into_iter()
                    .filter(|r| !r.done)
                    .map(|r| {
                        let orig = r
                            .orcpt
                            .as_deref()
                            .and_then(|o| o.split_once(';').map(|(_, a)| a.to_string()))
                            .unwrap_or_else(|| r.addr.clone());
                        (orig, r.addr, r.reason.unwrap_or_default())
                    })
                    .collect(),
            });
        }
    }
    // Files the queue manager has not indexed yet.
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
            if indexed.contains(&name) {
                continue;
            }
            let Ok(f) = QueueFile::read(&q.path(qn, &name)) else {
                continue;
            };
            let e = &f.envelope;
            out.push(Entry {
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
                    .map(|r| {
                        (
                            r.orcpt
                                .as_deref()
                                .and_then(|o| o.split_once(';').map(|(_, a)| a.to_string()))
                                .unwrap_or_else(|| r.addr.clone()),
                            r.addr.clone(),
                            String::new(),
                        )
                    })
                    .collect(),
            });
        }
    }
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

/// Formats the queue as `postqueue -p` (mailq) does.
pub fn format_text(entries: &[Entry], empty_addr: &str) -> String {
    let mut s = String::new();
    let mut total: i64 = 0;
    for (n, e) in entries.iter().enumerate() {
        if n == 0 {
            s.push_str(&format!(
                "{:<11} {:>7} {:<20} {}\n",
                "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"
            ));
        } else {
            s.push('\n');
        }
        let mut id = e.id.clone();
        match e.queue {
            QueueName::Active => id.push('*'),
            QueueName::Hold => id.push('!'),
            _ => {}
        }
        let stamp = queue::time::mailq_stamp(queue::time::from_micros(e.arrival * 1_000_000));
        let sender = if e.sender.is_empty() {
            empty_addr
        } else {
            e.sender.as_str()
        };
        s.push_str(&format!(
            "{:<11} {:>7} {:>20.20} {}\n",
            id,
            e.size,
            format!("{stamp} "),
            sender
        ));
        let mut last_reason: Option<&str> = None;
        for (_, addr, reason) in &e.rcpts {
            if last_reason != Some(reason.as_str()) && !(last_reason.is_none() && reason.is_empty())
            {
                let shown = if reason.is_empty() {
                    "reason unavailable"
                } else {
                    reason.as_str()
                };
                let pad = 76usize.saturating_sub(shown.len());
                s.push_str(&format!("{:pad$}({shown})\n", ""));
            }
            last_reason = Some(reason.as_str());
            s.push_str(&format!("{:<11} {:>7} {:<20} {}\n", "", "", "", addr));
        }
        total += e.size;
    }
    if entries.is_empty() {
        s.push_str("Mail queue is empty\n");
    } else {
        let n = entries.len();
        s.push_str(&format!(
            "\n-- {} Kbytes in {} Request{}.\n",
            total / 1024,
            n,
            if n == 1 { "" } else { "s" }
        ));
    }
    s
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Formats the queue as `postqueue -j` does: one JSON object per line.
pub fn format_json(entries: &[Entry], empty_addr: &str) -> String {
    let mut s = String::new();
    for e in entries {
        let sender = if e.sender.is_empty() {
            empty_addr
        } else {
            e.sender.as_str()
        };
        s.push_str(&format!(
            "{{\"queue_name\": {}, \"queue_id\": {}, \"arrival_time\": {}, \"message_size\": {}, \"forced_expire\": false, \"sender\": {}, \"recipients\": [",
            json_str(e.queue.as_str()),
            json_str(&e.id),
            e.arrival,
            e.size,
            json_str(sender)
        ));
        for (i, (orig, addr, reason)) in e.rcpts.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!(
                "{{\"orig_address\": {}, \"address\": {}",
                json_str(orig),
                json_str(addr)
            ));
            if !reason.is_empty() {
                s.push_str(&format!(", \"delay_reason\": {}", json_str(reason)));
            }
            s.push('}');
        }
        s.push_str("]}\n");
    }
    s
}

fn print_list(cfg: &conf::Config, json: bool) -> i32 {
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

    #[test]
    fn text_layout_matches_postfix() {
        // SAFETY: single-threaded test of TZ-dependent formatting.
        unsafe { std::env::set_var("TZ", "UTC") };
        let e = vec![
            Entry {
                queue: QueueName::Deferred,
                id: "8F3A21C09B".into(),
                arrival: 1_795_325_400,
                size: 1234,
                sender: "scan@contoso.com".into(),
                rcpts: vec![
                    (
                        "bob@contoso.com".into(),
                        "bob@contoso.com".into(),
                        "connect to smtp.office365.com[52.98.1.2]:587: Connection refused".into(),
                    ),
                    (
                        "carol@contoso.com".into(),
                        "carol@contoso.com".into(),
                        "connect to smtp.office365.com[52.98.1.2]:587: Connection refused".into(),
                    ),
                ],
            },
            Entry {
                queue: QueueName::Active,
                id: "9A0B1C2D3E".into(),
                arrival: 1_795_325_460,
                size: 4096,
                sender: String::new(),
                rcpts: vec![("x@y".into(), "x@y".into(), String::new())],
            },
        ];
        let got = format_text(&e, "MAILER-DAEMON");
        let want = [
            "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
            "8F3A21C09B     1234 Sun Nov 22 05:30:00  scan@contoso.com",
            "            (connect to smtp.office365.com[52.98.1.2]:587: Connection refused)",
            "                                         bob@contoso.com",
            "                                         carol@contoso.com",
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
        let j = format_json(&e[..1], "MAILER-DAEMON");
        assert!(j.starts_with("{\"queue_name\": \"deferred\", \"queue_id\": \"8F3A21C09B\", \"arrival_time\": 1795325400, \"message_size\": 1234, \"forced_expire\": false, \"sender\": \"scan@contoso.com\", \"recipients\": [{\"orig_address\": \"bob@contoso.com\", \"address\": \"bob@contoso.com\", \"delay_reason\": \"connect to"), "{j}");
    }
}
