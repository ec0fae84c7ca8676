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

/// The postcat text of one file.
pub fn render(label: &str, f: &QueueFile, env: bool, hdr: bool, body: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let e = &f.envelope;
    let content = f.content();
    let hend = proto::header::header_end(content).unwrap_or(content.len());
    if env {
        out.extend_from_slice(format!("*** ENVELOPE RECORDS {label} ***\n").as_bytes());
        out.extend_from_slice(format!("message_size: {:>15}\n", content.len()).as_bytes());
        out.extend_from_slice(format!("message_arrival_time: {}\n", asctime(e.arrival)).as_bytes());
        for (k, v) in &e.attrs {
            out.extend_from_slice(format!("named_attribute: {k}={v}\n").as_bytes());
        }
        out.extend_from_slice(format!("sender: {}\n", e.sender).as_bytes());
        for r in &e.recipients {
            if let Some(o) = &r.orcpt {
                out.extend_from_slice(
                    format!(
                        "original_recipient: {}\n",
                        o.split_once(';').map(|(_, a)| a).unwrap_or(o)
                    )
                    .as_bytes(),
                );
            }
            if r.done {
                out.extend_from_slice(format!("done_recipient: {}\n", r.addr).as_bytes());
            } else {
                out.extend_from_slice(format!("recipient: {}\n", r.addr).as_bytes());
            }
        }
    }
    if hdr {
        out.extend_from_slice(format!("*** MESSAGE CONTENTS {label} ***\n").as_bytes());
        out.extend_from_slice(&crlf_to_lf(&content[..hend]));
    }
    if body {
        if !hdr {
            out.extend_from_slice(format!("*** MESSAGE CONTENTS {label} ***\n").as_bytes());
        }
        let rest = &content[hend..];
        let rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .unwrap_or(rest);
        if hdr {
            out.push(b'\n');
        }
        out.extend_from_slice(&crlf_to_lf(rest));
    }
    if env {
        out.extend_from_slice(format!("*** HEADER EXTRACTED {label} ***\n").as_bytes());
    }
    out.extend_from_slice(format!("*** MESSAGE FILE END {label} ***\n").as_bytes());
    out
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
