//! Queueing one message into maildrop/. The file is created under a random,
//! unguessable name (others cannot list maildrop/), fsynced, renamed into
//! place and made durable before sendmail exits 0. Rewriting, header fixes
//! and alias expansion happen later, in pickup, with the daemons' rights.

use crate::ex;
use crate::options::Options;
use proto::header;
use queue::file::{Envelope, Recipient};
use queue::layout::{Queue, QueueName};
use queue::log;
use std::io::BufReader;

/// Reads the message, writes it to maildrop/, wakes pickup; returns the exit status.
pub fn run(cfg: &conf::Config, opts: &Options) -> i32 {
    let uid = nix::unistd::getuid().as_raw();
    let sender = match &opts.sender {
        Some(s) => parse_sender(s),
        None => match login_name(uid) {
            Some(n) => n,
            None => log::fatal(ex::OSERR, &format!("no login name found for user ID {uid}")),
        },
    };
    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(64 * 1024, stdin.lock());
    let read = match crate::read::read_message(&mut input, opts.dot_ends, cfg.message_size_limit) {
        Ok(r) => r,
        Err(e) => log::fatal(
            ex::DATAERR,
            &format!("{sender}({uid}): error reading input: {e}"),
        ),
    };
    if read.too_big {
        log::fatal(
            ex::DATAERR,
            &format!(
                "{sender}({uid}): message too large: it exceeds message_size_limit ({} bytes)",
                cfg.message_size_limit
            ),
        );
    }
    let mut rcpts: Vec<String> = Vec::new();
    for a in &opts.recipients {
        rcpts.extend(split_addresses(a));
    }
    if opts.extract {
        rcpts.extend(extract_recipients(&read.content));
    }
    if rcpts.is_empty() {
        let why = if opts.extract {
            "No recipient addresses found in message header"
        } else {
            "Recipient addresses must be specified on the command line or via the -t option"
        };
        log::fatal(ex::USAGE, &format!("{sender}({uid}): {why}"));
    }
    let mut env = Envelope {
        arrival: std::time::SystemTime::now(),
        sender,
        recipients: rcpts
            .into_iter()
            .map(|addr| Recipient {
                addr,
                notify: opts.notify.clone(),
                ..Default::default()
            })
            .collect(),
        attrs: vec![
            ("origin".into(), "sendmail".into()),
            ("uid".into(), uid.to_string()),
        ],
    };
    if let Some(f) = &opts.full_name {
        env.set_attr("fullname", f.clone());
    }
    if opts.extract {
        env.set_attr("extract", "yes");
    }
    if let Some(v) = &opts.envid {
        env.set_attr("envid", v.clone());
    }
    if let Some(v) = &opts.ret {
        env.set_attr("ret", v.clone());
    }
    if let Some(v) = &opts.body {
        env.set_attr("body", v.clone());
    }
    let q = Queue::new(&cfg.queue_directory);
    let dir = q.dir(QueueName::Maildrop);
    let result = (|| -> std::io::Result<std::path::PathBuf> {
        let mut d = queue::write::Draft::create(&dir, 0o644)?;
        d.write_envelope(&env)?;
        d.write_content(&read.content)?;
        d.finish()?.commit_as(&queue::id::random_name())
    })();
    match result {
        Ok(path) => {
            if opts.verbose {
                log::info(&format!("queued as {}", path.display()));
            }
            queue::wake::wake(&q, "pickup", &[queue::wake::NEW_MAIL]);
            0
        }
        Err(e) => {
            // A full queue file system is temporary (EX_TEMPFAIL): say so
            // rather than suggest that the queue is missing.
            let full = e.kind() == std::io::ErrorKind::StorageFull
                || e.raw_os_error() == Some(libc::EDQUOT);
            let hint = if full {
                "the queue file system is full; nothing was queued, try again later"
            } else {
                "is the queue created ('postern start' creates it)?"
            };
            log::fatal(
                ex::TEMPFAIL,
                &format!(
                    "{}({uid}): cannot queue the message in {}: {e}; {hint}",
                    env.sender,
                    dir.display()
                ),
            )
        }
    }
}

/// `-f` value: the first address of an address list, without brackets; `<>` is the null sender.
fn parse_sender(s: &str) -> String {
    let t = s.trim();
    if t.is_empty() || t == "<>" {
        return String::new();
    }
    header::parse_address_list(t)
        .into_iter()
        .next()
        .map(|a| a.address)
        .unwrap_or_else(|| t.trim_matches(|c| c == '<' || c == '>').to_string())
}

/// A command-line recipient may be a list (`a@x, b@y`) or a display form.
fn split_addresses(s: &str) -> Vec<String> {
    let list: Vec<String> = header::parse_address_list(s)
        .into_iter()
        .map(|a| a.address)
        .filter(|a| !a.is_empty())
        .collect();
    if list.is_empty() && !s.trim().is_empty() {
        vec![s.trim().to_string()]
    } else {
        list
    }
}

/// Recipients from To/Cc/Bcc, or from Resent-To/Cc/Bcc when the message has
/// Resent- headers (it is being re-sent), as Postfix's sendmail -t does.
pub fn extract_recipients(content: &[u8]) -> Vec<String> {
    let end = header::header_end(content).unwrap_or(content.len());
    let headers = header::parse_headers(&content[..end]);
    let resent = headers
        .iter()
        .any(|h| h.name.len() > 7 && h.name[..7].eq_ignore_ascii_case("resent-"));
    let wanted: &[&str] = if resent {
        &["resent-to", "resent-cc", "resent-bcc"]
    } else {
        &["to", "cc", "bcc"]
    };
    let mut out = Vec::new();
    for h in &headers {
        if wanted.iter().any(|w| h.name.eq_ignore_ascii_case(w)) {
            for a in header::parse_address_list(&h.value()) {
                if !a.address.is_empty() {
                    out.push(a.address);
                }
            }
        }
    }
    out
}

/// The login name of `uid`.
fn login_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction() {
        let m = b"From: a@x\r\nTo: Bob <bob@contoso.com>, carol@contoso.com\r\nCc: dave@x\r\nBcc: eve@x\r\nSubject: s\r\n\r\nTo: not@header\r\n";
        assert_eq!(
            extract_recipients(m),
            vec!["bob@contoso.com", "carol@contoso.com", "dave@x", "eve@x"]
        );
        let m = b"To: old@x\r\nResent-To: new@x\r\nResent-From: me@x\r\n\r\nbody\r\n";
        assert_eq!(extract_recipients(m), vec!["new@x"]);
        assert!(extract_recipients(b"Subject: none\r\n\r\n").is_empty());
    }

    #[test]
    fn senders_and_lists() {
        assert_eq!(parse_sender("<>"), "");
        assert_eq!(parse_sender("Cron <cron@host>"), "cron@host");
        assert_eq!(parse_sender("plain@host"), "plain@host");
        assert_eq!(split_addresses("a@x, b@y"), vec!["a@x", "b@y"]);
        assert_eq!(split_addresses("root"), vec!["root"]);
    }
}
