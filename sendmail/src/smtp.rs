//! `sendmail -bs`: an SMTP conversation on standard input and output, for
//! programs that talk SMTP to a local command. Each accepted message is
//! queued in maildrop/ exactly as a normal submission (durable before the
//! 250 reply) and the submitting user is the process's user.

use crate::options::Options;
use proto::command::{Command, parse_command};
use proto::data::{BareLf, DataReceiver, Feed};
use proto::reply::Reply;
use proto::status::EnhancedCode;
use queue::file::{Envelope, Recipient};
use queue::layout::{Queue, QueueName};
use std::io::{BufRead, Write};

fn reply(out: &mut impl Write, code: u16, enh: &str, text: &str) -> std::io::Result<()> {
    let r = Reply::new(code, EnhancedCode::parse(enh), text);
    out.write_all(&r.to_wire())?;
    out.flush()
}

/// Runs the session; returns the exit status.
pub fn run(cfg: &conf::Config, _opts: &Options) -> i32 {
    match session(
        cfg,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    ) {
        Ok(()) => 0,
        Err(e) => {
            queue::log::warning(&format!("-bs session: {e}"));
            crate::ex::TEMPFAIL
        }
    }
}

fn session(
    cfg: &conf::Config,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let host = &cfg.myhostname;
    reply(out, 220, "", &format!("{host} ESMTP {}", cfg.mail_name))?;
    let mut sender: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        while matches!(line.last(), Some(b'\n') | Some(b'\r')) {
            line.pop();
        }
        match parse_command(&line) {
            Ok(Command::Ehlo(_)) => {
                let text = format!(
                    "{host}\nPIPELINING\nSIZE {}\n8BITMIME\nENHANCEDSTATUSCODES\nDSN",
                    cfg.message_size_limit
                );
                out.write_all(&Reply::new(250, None, &text).to_wire())?;
                out.flush()?;
            }
            Ok(Command::Helo(_)) => reply(out, 250, "", host)?,
            Ok(Command::Mail { path, .. }) => {
                if sender.is_some() {
                    reply(out, 503, "5.5.1", "Error: nested MAIL command")?;
                } else {
                    sender = Some(match path {
                        proto::address::Path::Null => String::new(),
                        proto::address::Path::Mailbox(m) => m.to_string(),
                    });
                    reply(out, 250, "2.1.0", "Ok")?;
                }
            }
            Ok(Command::Rcpt { path, .. }) => match (&sender, path) {
                (None, _) => reply(out, 503, "5.5.1", "Error: need MAIL command")?,
                (_, proto::address::Path::Null) => {
                    reply(out, 501, "5.1.3", "Bad recipient address syntax")?
                }
                (Some(_), proto::address::Path::Mailbox(m)) => {
                    rcpts.push(m.to_string());
                    reply(out, 250, "2.1.5", "Ok")?;
                }
            },
            Ok(Command::Data) => {
                let Some(s) = sender.clone() else {
                    reply(out, 503, "5.5.1", "Error: need RCPT command")?;
                    continue;
                };
                if rcpts.is_empty() {
                    reply(out, 554, "5.5.1", "Error: no valid recipients")?;
                    continue;
                }
                reply(out, 354, "", "End data with <CR><LF>.<CR><LF>")?;
                let mut rx = DataReceiver::new(cfg.message_size_limit, BareLf::Normalize);
                let mut content = Vec::new();
                loop {
                    let buf = input.fill_buf()?;
                    if buf.is_empty() {
                        return Ok(());
                    }
                    match rx.feed(buf, &mut content) {
                        Feed::More => {
                            let n = buf.len();
                            input.consume(n);
                        }
                        Feed::End { consumed } => {
                            input.consume(consumed);
                            break;
                        }
                    }
                }
                if rx.too_big() {
                    reply(out, 552, "5.3.4", "Error: message file too big")?;
                } else {
                    let env = Envelope {
                        arrival: std::time::SystemTime::now(),
                        sender: s,
                        recipients: rcpts
                            .iter()
                            .map(|a| Recipient {
                                addr: a.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        attrs: vec![
                            ("origin".into(), "sendmail".into()),
                            ("uid".into(), uid.to_string()),
                        ],
                    };
                    let q = Queue::new(&cfg.queue_directory);
                    let name = queue::id::random_name();
                    let res = (|| {
                        let mut d =
                            queue::write::Draft::create(&q.dir(QueueName::Maildrop), 0o644)?;
                        d.write_envelope(&env)?;
                        d.write_content(&content)?;
                        d.finish()?.commit_as(&name)
                    })();
                    match res {
                        Ok(_) => {
                            queue::wake::wake(&q, "pickup", &[queue::wake::NEW_MAIL]);
                            reply(
                                out,
                                250,
                                "2.0.0",
                                &format!("Ok: queued as {}", &name[..12].to_ascii_uppercase()),
                            )?;
                        }
                        Err(e) => {
                            queue::log::warning(&format!("cannot queue message: {e}"));
                            reply(out, 451, "4.3.0", "Error: queue file write error")?;
                        }
                    }
                }
                sender = None;
                rcpts.clear();
            }
            Ok(Command::Rset) => {
                sender = None;
                rcpts.clear();
                reply(out, 250, "2.0.0", "Ok")?;
            }
            Ok(Command::Noop) => reply(out, 250, "2.0.0", "Ok")?,
            Ok(Command::Quit) => {
                reply(out, 221, "2.0.0", "Bye")?;
                return Ok(());
            }
            Ok(_) => reply(out, 502, "5.5.2", "Error: command not recognized")?,
            Err(e) => {
                out.write_all(&e.reply().to_wire())?;
                out.flush()?;
            }
        }
    }
}
