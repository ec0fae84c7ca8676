//! postcat: print a queue file as Postfix's postcat does: envelope records,
//! message headers and body, in labelled sections. `-q ID` finds the file
//! in the queue; `-e`, `-h`, `-b` select sections.

use crate::getopt::{self, Opt};
use queue::file::QueueFile;
use queue::layout::{Queue, QueueName};
use std::io::Write;
use std::path::PathBuf;

pub fn main(args: &[String]) -> i32 {
    let (opts, operands) = match getopt::parse(args, "bc:ehoqrsv") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postcat: fatal: {e}");
            return 64;
        }
    };
    let mut dir = None;
    let (mut by_id, mut env, mut hdr, mut body) = (false, false, false, false);
    for Opt::Flag(c, v) in opts {
        match c {
            'c' => dir = v.map(PathBuf::from),
            'q' => by_id = true,
            'e' => env = true,
            'h' => hdr = true,
            'b' => body = true,
            _ => {}
        }
    }
    if !(env || hdr || body) {
        env = true;
        hdr = true;
        body = true;
    }
    if operands.is_empty() {
        eprintln!(
            "postcat: fatal: usage: postcat [-bhe] -q queue_id ... | postcat [-bhe] file ..."
        );
        return 64;
    }
    let dir = conf::config_dir(dir.as_deref());
    let cfg = match queue::service::load_for_command("postcat", &dir, 78) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let q = Queue::new(&cfg.queue_directory);
    let mut status = 0;
    for op in &operands {
        let (label, path) = if by_id {
            match [
                QueueName::Incoming,
                QueueName::Active,
                QueueName::Deferred,
                QueueName::Hold,
                QueueName::Maildrop,
            ]
            .iter()
            .map(|qn| (format!("{}/{}", qn.as_str(), op), q.path(*qn, op)))
            .find(|(_, p)| p.exists())
            {
                Some(x) => x,
                None => {
                    eprintln!("postcat: fatal: open queue file {op}: No such file or directory");
                    status = 1;
                    continue;
                }
            }
        } else {
            (op.clone(), PathBuf::from(op))
        };
        match QueueFile::read(&path) {
            Ok(f) => {
                let text = render(&label, &f, env, hdr, body);
                let _ = std::io::stdout().write_all(&text);
            }
            Err(e) => {
                eprintln!("postcat: fatal: {}: {e}", path.display());
                status = 1;
            }
        }
    }
    status
}

/// The postcat text of one file, in Postfix's sections. As in Postfix, the
/// `*** ... ***` section lines come with the envelope (`-e`, or no
/// selection): `-h` alone prints just the header, `-b` alone just the body,
/// which starts with the empty line that ends the header.
///
/// The envelope records are named as Postfix names them where postern
/// keeps the same fact (`message_size` with Postfix's six fields: content
/// size, content offset, recipients, 0, content size, SMTPUTF8 flags;
/// `message_arrival_time`, `create_time`, `sender`, `original_recipient`,
/// `recipient`, `done_recipient`, and the `named_attribute`s
/// `rewrite_context`, `client_name`, `client_address`, `helo_name`, ...);
/// postern's own envelope attributes follow as `named_attribute` lines
/// under their postern names.
pub fn render(label: &str, f: &QueueFile, env: bool, hdr: bool, body: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let e = &f.envelope;
    let content = f.content();
    let split = body_start(content);
    let line = |out: &mut Vec<u8>, s: String| {
        out.extend_from_slice(s.as_bytes());
        out.push(b'\n');
    };
    if env {
        line(&mut out, format!("*** ENVELOPE RECORDS {label} ***"));
        let size = content.len();
        line(
            &mut out,
            format!(
                "message_size: {size:>15} {:>15} {:>15} {:>15} {size:>15} {:>15}",
                f.content_start,
                e.recipients.len(),
                0,
                smtputf8_flags(e, &content[..split])
            ),
        );
        let when = asctime(e.arrival);
        line(&mut out, format!("message_arrival_time: {when}"));
        line(&mut out, format!("create_time: {when}"));
        let local = matches!(e.attr("origin"), Some("pickup" | "sendmail" | "local"))
            || (e.attr("client_addr").is_none() && e.attr("uid").is_some());
        // Postfix's names for what postern records too.
        const POSTFIX_NAMES: &[(&str, &str)] = &[
            ("client_name", "client_name"),
            ("client_addr", "client_address"),
            ("client_port", "client_port"),
            ("helo", "helo_name"),
            ("sasl_method", "sasl_method"),
            ("sasl_username", "sasl_username"),
            ("envid", "dsn_envid"),
        ];
        for (k, v) in &e.attrs {
            if let Some((_, pf)) = POSTFIX_NAMES.iter().find(|(pk, _)| pk == k) {
                line(&mut out, format!("named_attribute: {pf}={v}"));
            }
        }
        if !local && let Some(p) = e.attr("protocol") {
            line(&mut out, format!("named_attribute: protocol_name={p}"));
        }
        line(
            &mut out,
            format!(
                "named_attribute: rewrite_context={}",
                if local { "local" } else { "remote" }
            ),
        );
        for (k, v) in &e.attrs {
            let mapped = POSTFIX_NAMES.iter().any(|(pk, _)| pk == k)
                || k == "fullname"
                || (k == "protocol" && !local);
            if !mapped {
                line(&mut out, format!("named_attribute: {k}={v}"));
            }
        }
        if let Some(name) = e.attr("fullname") {
            line(&mut out, format!("sender_fullname: {name}"));
        }
        line(&mut out, format!("sender: {}", e.sender));
        for r in &e.recipients {
            if let Some(o) = &r.orcpt {
                line(&mut out, format!("named_attribute: dsn_orig_rcpt={o}"));
                let orig = o.split_once(';').map(|(_, a)| a).unwrap_or(o);
                line(&mut out, format!("original_recipient: {orig}"));
            }
            if let Some(n) = &r.notify {
                line(&mut out, format!("named_attribute: dsn_notify={n}"));
            }
            let kind = if r.done {
                "done_recipient"
            } else {
                "recipient"
            };
            line(&mut out, format!("{kind}: {}", r.addr));
        }
        line(&mut out, format!("*** MESSAGE CONTENTS {label} ***"));
    }
    if hdr {
        out.extend_from_slice(&crlf_to_lf(&content[..split]));
    }
    if body {
        out.extend_from_slice(&crlf_to_lf(&content[split..]));
    }
    if env {
        line(&mut out, format!("*** HEADER EXTRACTED {label} ***"));
        line(&mut out, format!("*** MESSAGE FILE END {label} ***"));
    }
    out
}

/// Where the body starts: at the empty line that ends the header (which
/// postcat prints with the body), or where the header ends without one.
fn body_start(content: &[u8]) -> usize {
    let Some(end) = proto::header::header_end(content) else {
        return content.len();
    };
    let h = &content[..end];
    if h == b"\r\n" || h == b"\n" {
        0
    } else if h.ends_with(b"\r\n\r\n") || h.ends_with(b"\n\r\n") {
        end - 2
    } else if h.ends_with(b"\n\n") {
        end - 1
    } else {
        end
    }
}

/// Postfix's SMTPUTF8 flags as cleanup records them for a local
/// submission: 1 requested, 2 non-ASCII header, 4 non-ASCII sender.
fn smtputf8_flags(e: &queue::file::Envelope, header: &[u8]) -> u32 {
    let mut flags = 0;
    if !header.is_ascii() {
        flags |= 2;
    }
    if !e.sender.is_ascii() {
        flags |= 4;
    }
    if flags != 0 || e.attr("smtputf8").is_some() {
        flags |= 1;
    }
    flags
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn asctime(t: std::time::SystemTime) -> String {
    // "Sun Nov 22 05:50:00 2026", as Postfix prints it.
    let stamp = queue::time::mailq_stamp(t);
    let year = queue::time::rfc2822_date(t)
        .split_whitespace()
        .nth(3)
        .unwrap_or("")
        .to_string();
    format!("{stamp} {year}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::file::{Envelope, Recipient, encode_file};

    fn file(attrs: &[(&str, &str)], content: &[u8]) -> QueueFile {
        let env = Envelope {
            arrival: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_325_400),
            sender: "scan@contoso.com".into(),
            recipients: vec![Recipient {
                addr: "bob@contoso.com".into(),
                orcpt: Some("rfc822;bob@contoso.com".into()),
                ..Recipient::default()
            }],
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        QueueFile::parse(encode_file(&env, content)).unwrap()
    }

    fn text(f: &QueueFile, env: bool, hdr: bool, body: bool) -> String {
        String::from_utf8(render("deferred/ID", f, env, hdr, body)).unwrap()
    }

    #[test]
    fn sections_as_postfix_selects_them() {
        let f = file(
            &[("origin", "pickup"), ("uid", "0")],
            b"Subject: x\r\n\r\nbody\r\n",
        );
        assert_eq!(text(&f, false, true, false), "Subject: x\n");
        assert_eq!(text(&f, false, false, true), "\nbody\n");
        assert_eq!(text(&f, false, true, true), "Subject: x\n\nbody\n");
        let all = text(&f, true, true, true);
        let want_tail = "*** MESSAGE CONTENTS deferred/ID ***\nSubject: x\n\nbody\n*** HEADER EXTRACTED deferred/ID ***\n*** MESSAGE FILE END deferred/ID ***\n";
        assert!(all.ends_with(want_tail), "{all}");
        assert!(
            all.contains("named_attribute: rewrite_context=local\n"),
            "{all}"
        );
        assert!(all.contains("named_attribute: dsn_orig_rcpt=rfc822;bob@contoso.com\noriginal_recipient: bob@contoso.com\nrecipient: bob@contoso.com\n"), "{all}");
        let e = text(&f, true, false, false);
        assert!(e.ends_with("*** MESSAGE CONTENTS deferred/ID ***\n*** HEADER EXTRACTED deferred/ID ***\n*** MESSAGE FILE END deferred/ID ***\n"), "{e}");
        // No header/body separator: everything is header.
        let f = file(&[], b"Subject: only\r\n");
        assert_eq!(text(&f, false, false, true), "");
    }

    #[test]
    fn smtp_clients_get_postfix_attribute_names() {
        let f = file(
            &[
                ("origin", "smtpd"),
                ("client_name", "scanner.lan"),
                ("client_addr", "10.0.0.5"),
                ("helo", "scanner"),
                ("protocol", "ESMTP"),
                ("sasl_username", "scan"),
            ],
            b"Subject: x\r\n\r\nb\r\n",
        );
        let all = text(&f, true, false, false);
        for want in [
            "named_attribute: client_name=scanner.lan\n",
            "named_attribute: client_address=10.0.0.5\n",
            "named_attribute: helo_name=scanner\n",
            "named_attribute: protocol_name=ESMTP\n",
            "named_attribute: sasl_username=scan\n",
            "named_attribute: rewrite_context=remote\n",
            "named_attribute: origin=smtpd\n",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
        let size = all.lines().nth(1).unwrap();
        assert_eq!(
            size,
            format!(
                "message_size: {:>15} {:>15} {:>15} {:>15} {:>15} {:>15}",
                17, f.content_start, 1, 0, 17, 0
            )
        );
    }
}
