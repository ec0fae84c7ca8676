//! Delivery status notifications (RFC 3464): bounces, delay warnings and
//! the postmaster's copies. A notification is itself a queued message (null
//! envelope sender) written durably to incoming/ before the original
//! recipients are marked done, so a crash in between can only duplicate it.

use conf::Config;
use queue::file::{Envelope, Recipient};
use queue::id::QueueId;
use queue::layout::{Queue, QueueName};
use std::time::SystemTime;

/// What kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Delivery failed for good.
    Failed,
    /// Delivery is delayed; still being retried.
    Delayed,
}

/// One recipient's line in a notification.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Final recipient.
    pub rcpt: String,
    /// Original recipient (`rfc822;addr`), if known.
    pub orcpt: Option<String>,
    /// Enhanced status code.
    pub dsn: String,
    /// The full reason as logged.
    pub reason: String,
    /// The server that answered, for Remote-MTA.
    pub remote_mta: Option<String>,
    /// The server's reply, for Diagnostic-Code.
    pub diagnostic: Option<String>,
}

impl Failure {
    /// A failure decided locally (no server answered).
    pub fn local(rcpt: &str, dsn: &str, reason: &str) -> Failure {
        Failure {
            rcpt: rcpt.to_string(),
            orcpt: None,
            dsn: dsn.to_string(),
            reason: reason.to_string(),
            remote_mta: None,
            diagnostic: None,
        }
    }
}

/// The original message a notification is about.
#[derive(Debug)]
pub struct Original<'a> {
    /// Its queue ID.
    pub id: &'a str,
    /// Its envelope.
    pub env: &'a Envelope,
    /// Its content.
    pub content: &'a [u8],
}

/// Who receives a notification, and as what.
#[derive(Debug, Clone)]
pub struct Addressing {
    /// Envelope sender of the notification (empty = `<>`).
    pub sender: String,
    /// Envelope recipient.
    pub to: String,
    /// True for the postmaster's copy (headers of the original only).
    pub postmaster_copy: bool,
}

/// Builds the notification's content.
pub fn build(
    cfg: &Config,
    kind: Kind,
    orig: &Original<'_>,
    failures: &[Failure],
    to: &Addressing,
    new_id: QueueId,
) -> Vec<u8> {
    let now = SystemTime::now();
    let host = &cfg.myhostname;
    let boundary = format!(
        "{}.{}/{}",
        new_id,
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        host
    );
    let subject = match (kind, to.postmaster_copy) {
        (Kind::Failed, false) => "Undelivered Mail Returned to Sender",
        (Kind::Failed, true) => "Postmaster Copy: Undelivered Mail",
        (Kind::Delayed, false) => "Delayed Mail (still being retried)",
        (Kind::Delayed, true) => "Postmaster Warning: Delayed Mail",
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\r\n"
    ));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!(
        "To: {}\r\n",
        if to.to.is_empty() {
            "MAILER-DAEMON"
        } else {
            &to.to
        }
    ));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    ));
    m.push_str("Content-Transfer-Encoding: 8bit\r\n");
    m.push_str(&format!(
        "Message-Id: <{}.{}@{}>\r\n",
        queue::time::message_id_stamp(now),
        new_id,
        host
    ));
    m.push_str(&format!("Date: {}\r\n", queue::time::rfc2822_date(now)));
    m.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    // Human-readable part.
    m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    m.push_str(&format!("This is the mail system at host {host}.\r\n\r\n"));
    match kind {
        Kind::Failed => {
            m.push_str("Your message could not be delivered to one or more recipients.\r\n");
            m.push_str("The details are below; the returned message is attached.\r\n\r\n");
        }
        Kind::Delayed => {
            let until = cfg.maximal_queue_lifetime;
            m.push_str("Your message could not be delivered yet. It is still in the queue\r\n");
            m.push_str(&format!(
                "and delivery will be retried for up to {} in total.\r\nYou do not need to send it again.\r\n\r\n",
                human_duration(until)
            ));
        }
    }
    m.push_str("If you need help, contact your postmaster and include this report.\r\n\r\n");
    m.push_str("                   The mail system\r\n\r\n");
    for f in failures {
        let line = format!("<{}>: {}", f.rcpt, f.reason);
        m.push_str(&wrap(&line, 76, "    "));
        m.push_str("\r\n");
        if let Some(help) = queue::explain::explain(f.diagnostic.as_deref().unwrap_or(&f.reason)) {
            m.push_str("\r\n");
            m.push_str(&wrap(&format!("What this means: {help}"), 76, "    "));
            m.push_str("\r\n");
        }
        m.push_str("\r\n");
    }

    // Machine-readable part.
    m.push_str(&format!("--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"));
    m.push_str(&format!("Reporting-MTA: dns; {host}\r\n"));
    m.push_str(&format!("X-Postern-Queue-ID: {}\r\n", orig.id));
    m.push_str(&format!(
        "X-Postern-Sender: rfc822; {}\r\n",
        orig.env.sender
    ));
    if let Some(envid) = orig.env.attr("envid") {
        m.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        queue::time::rfc2822_date(orig.env.arrival)
    ));
    for f in failures {
        m.push_str("\r\n");
        m.push_str(&format!("Final-Recipient: rfc822; {}\r\n", f.rcpt));
        if let Some(o) = &f.orcpt {
            m.push_str(&format!("Original-Recipient: {o}\r\n"));
        }
        m.push_str(&format!(
            "Action: {}\r\n",
            if kind == Kind::Failed {
                "failed"
            } else {
                "delayed"
            }
        ));
        m.push_str(&format!("Status: {}\r\n", f.dsn));
        if let Some(r) = &f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {r}\r\n"));
        }
        let diag = match &f.diagnostic {
            Some(d) => format!("Diagnostic-Code: smtp; {d}"),
            None => format!("Diagnostic-Code: X-Postern; {}", f.reason),
        };
        m.push_str(&wrap(&diag, 78, "    "));
        m.push_str("\r\n");
        if kind == Kind::Delayed {
            let until = orig.env.arrival + cfg.maximal_queue_lifetime;
            m.push_str(&format!(
                "Will-Retry-Until: {}\r\n",
                queue::time::rfc2822_date(until)
            ));
        }
    }
    m.push_str("\r\n");

    // The original, or its headers.
    let hend = proto::header::header_end(orig.content).unwrap_or(orig.content.len());
    let headers_only = to.postmaster_copy
        || kind == Kind::Delayed
        || orig.env.ret() == Some(queue::file::Ret::Hdrs)
        || orig.content.len() as i64 > cfg.bounce_size_limit;
    let mut out = m.into_bytes();
    if headers_only {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(&orig.content[..hend]);
        if !orig.content[..hend].ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    } else {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(orig.content);
        if !orig.content.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Writes a notification into incoming/; returns its queue ID.
///
/// # Errors
/// The file cannot be written (the caller keeps the recipients deferred).
pub fn queue_notification(
    cfg: &Config,
    q: &Queue,
    kind: Kind,
    orig: &Original<'_>,
    failures: &[Failure],
    to: &Addressing,
) -> std::io::Result<QueueId> {
    let mut id = QueueId::now();
    for _ in 0..100 {
        let content = build(cfg, kind, orig, failures, to, id);
        let env = Envelope {
            arrival: SystemTime::now(),
            sender: to.sender.clone(),
            recipients: vec![Recipient {
                addr: to.to.clone(),
                ..Default::default()
            }],
            attrs: vec![
                ("origin".into(), "bounce".into()),
                ("bounce_of".into(), orig.id.to_string()),
                ("protocol".into(), "local".into()),
            ],
        };
        let mut d = queue::write::Draft::create(&q.dir(QueueName::Incoming), 0o600)?;
        d.write_envelope(&env)?;
        d.write_content(&content)?;
        match d.finish()?.commit_as_id(id) {
            Ok(()) => return Ok(id),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id = id.next(),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free queue ID"))
}

/// Wraps `text` at `width` columns at spaces; continuation lines start with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push_str("\r\n");
            line = indent.to_string();
        } else if !line.is_empty() && line != indent {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86400) && s >= 86400 {
        let n = s / 86400;
        format!("{n} day{}", if n == 1 { "" } else { "s" })
    } else if s.is_multiple_of(3600) && s >= 3600 {
        let n = s / 3600;
        format!("{n} hour{}", if n == 1 { "" } else { "s" })
    } else {
        format!("{s} seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_is_multipart_report_with_the_exact_reply() {
        let main = conf::MainCf::parse(
            "myhostname = relay.contoso.com\n",
            std::path::Path::new("m"),
        )
        .unwrap();
        let cfg = Config::build(&main, &[]).unwrap();
        let env = Envelope {
            arrival: SystemTime::now(),
            sender: "scan@contoso.com".into(),
            recipients: vec![],
            attrs: vec![],
        };
        let reply = "550 5.7.60 SMTP; Client does not have permissions to send as this sender [AM0PR01MB1234.eurprd01.prod.exchangelabs.com 2026-11-22T05:50:00.123Z 08DE2A6028D26C22]";
        let failures = vec![Failure {
            rcpt: "bob@contoso.com".into(),
            orcpt: Some("rfc822;bob@contoso.com".into()),
            dsn: "5.7.60".into(),
            reason: format!(
                "host smtp.office365.com[52.98.1.2] said: {reply} (in reply to end of DATA command)"
            ),
            remote_mta: Some("smtp.office365.com".into()),
            diagnostic: Some(reply.into()),
        }];
        let content = b"Subject: scan\r\n\r\nbody\r\n";
        let out = build(
            &cfg,
            Kind::Failed,
            &Original {
                id: "8F3A21C09B00",
                env: &env,
                content,
            },
            &failures,
            &Addressing {
                sender: String::new(),
                to: "scan@contoso.com".into(),
                postmaster_copy: false,
            },
            QueueId::now(),
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Content-Type: message/delivery-status\r\n"));
        assert!(text.contains("Status: 5.7.60\r\n"));
        assert!(text.contains("Action: failed\r\n"));
        assert!(text.contains("Remote-MTA: dns; smtp.office365.com\r\n"));
        // The exact reply survives (folded lines joined back with spaces).
        let unfolded = text.replace("\r\n    ", " ");
        assert!(
            unfolded.contains(&format!("Diagnostic-Code: smtp; {reply}")),
            "{text}"
        );
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: scan\r\n\r\nbody\r\n"));
        assert!(text.trim_end().ends_with("--"));
    }

    #[test]
    fn wrapping() {
        let w = wrap("aaa bbb ccc ddd", 8, "  ");
        assert_eq!(w, "aaa bbb\r\n  ccc\r\n  ddd");
    }
}
