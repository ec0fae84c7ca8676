//! One mail transaction on an open session (Postfix's smtp_xfer()): MAIL
//! FROM with SIZE, BODY, SMTPUTF8, RET and ENVID; RCPT TO with NOTIFY and
//! ORCPT; DATA with the content dot-stuffed and long lines broken. With
//! PIPELINING, MAIL, every RCPT and DATA go out in one write and the replies
//! are read in order; without it, one command at a time.
//!
//! Every recipient ends with an [`Outcome`]. The session's state afterwards
//! is reported too: clean (reusable as is), needing RSET (a rejected
//! transaction), or broken (close it).

use crate::chat::{Chat, ChatError};
use crate::outcome::Outcome;
use crate::session::Session;
use crate::settings::Settings;
use proto::command::xtext_encode;
use proto::{Command, DotStuffer, Mailbox, Path, Reply};
use queue::deliver::RcptRequest;
use queue::log;

/// What the transaction sends.
#[derive(Debug)]
pub struct Job<'a> {
    /// Queue ID, for log lines.
    pub queue_id: &'a str,
    /// Envelope sender; empty for `<>`.
    pub sender: &'a str,
    /// Recipients of this request.
    pub recipients: &'a [RcptRequest],
    /// Message content (CRLF line ends, not dot-stuffed).
    pub content: &'a [u8],
    /// `body` envelope attribute: `8BITMIME` or `7BIT`.
    pub body: Option<&'a str>,
    /// DSN ENVID.
    pub envid: Option<&'a str>,
    /// DSN RET (`FULL` or `HDRS`).
    pub ret: Option<&'a str>,
    /// The sender asked for SMTPUTF8.
    pub smtputf8: bool,
}

/// How the session stands after the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Ready for the next MAIL FROM.
    Clean,
    /// A transaction was refused or failed at the end: RSET before reuse.
    NeedsRset,
    /// The connection failed or is in an unknown state: close it.
    Broken,
}

/// The result of a transaction.
#[derive(Debug)]
pub struct TxResult {
    /// One outcome per recipient, in request order.
    pub outcomes: Vec<Outcome>,
    /// The session's state.
    pub after: After,
    /// The session failed before the server answered anything (a cached
    /// session that had died): the caller may retry on a new connection.
    pub dead_on_arrival: bool,
}

/// A path for MAIL FROM / RCPT TO, quoted as RFC 5321 requires.
fn wire_path(addr: &str) -> Path {
    if addr.is_empty() {
        return Path::Null;
    }
    match Mailbox::parse(addr) {
        Ok(m) => Path::Mailbox(m),
        Err(_) => match addr.rsplit_once('@') {
            Some((l, d)) => Path::Mailbox(Mailbox::new(l, Some(d.to_string()))),
            None => Path::Mailbox(Mailbox::new(addr, None)),
        },
    }
}

fn needs_utf8(job: &Job<'_>) -> bool {
    !job.sender.is_ascii() || job.recipients.iter().any(|r| !r.addr.is_ascii())
}

/// The MAIL FROM command for the server's extensions.
pub fn mail_command(s: &Session, job: &Job<'_>) -> Command {
    let mut params = Vec::new();
    if s.has("SIZE") {
        params.push(("SIZE".to_string(), Some(job.content.len().to_string())));
    }
    if s.has("8BITMIME") {
        match job.body.map(str::to_ascii_uppercase).as_deref() {
            Some("8BITMIME") => params.push(("BODY".into(), Some("8BITMIME".into()))),
            Some("7BIT") => params.push(("BODY".into(), Some("7BIT".into()))),
            _ => {}
        }
    }
    if s.has("DSN") {
        if let Some(e) = job.envid.filter(|e| !e.is_empty()) {
            params.push(("ENVID".into(), Some(xtext_encode(e))));
        }
        if let Some(r) = job.ret.filter(|r| !r.is_empty()) {
            params.push(("RET".into(), Some(r.to_ascii_uppercase())));
        }
    }
    if job.smtputf8 && s.has("SMTPUTF8") {
        params.push(("SMTPUTF8".into(), None));
    }
    Command::Mail {
        path: wire_path(job.sender),
        params,
    }
}

/// The RCPT TO command for one recipient.
pub fn rcpt_command(s: &Session, r: &RcptRequest) -> Command {
    let mut params = Vec::new();
    if s.has("DSN") {
        if let Some(n) = r.notify.as_deref().filter(|n| !n.is_empty()) {
            params.push(("NOTIFY".into(), Some(n.to_ascii_uppercase())));
        }
        if let Some(o) = r.orcpt.as_deref().filter(|o| !o.is_empty()) {
            let (kind, addr) = o.split_once(';').unwrap_or(("rfc822", o));
            params.push((
                "ORCPT".into(),
                Some(format!("{kind};{}", xtext_encode(addr))),
            ));
        }
    }
    Command::Rcpt {
        path: wire_path(&r.addr),
        params,
    }
}

/// Breaks lines longer than the limit with `<CR><LF><SPACE>` (Postfix's
/// smtp_line_length_limit), incrementally.
#[derive(Debug)]
struct LineBreaker {
    limit: usize,
    column: usize,
    broke: bool,
}

impl LineBreaker {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.limit == 0 {
            out.extend_from_slice(chunk);
            return;
        }
        for &b in chunk {
            if self.column >= self.limit && b != b'\r' && b != b'\n' {
                out.extend_from_slice(b"\r\n ");
                self.column = 1;
                self.broke = true;
            }
            out.push(b);
            self.column = if b == b'\r' || b == b'\n' {
                0
            } else {
                self.column + 1
            };
        }
    }
}

/// Runs the transaction for every recipient of `job`.
pub async fn run(s: &mut Session, settings: &Settings, job: &Job<'_>) -> TxResult {
    let t = settings.timeouts;
    let peer = s.chat.peer.clone();
    let n = job.recipients.len();
    let all = |o: Outcome| vec![o; n];
    if let Some(limit) = s.ehlo.as_ref().and_then(|e| e.size()).filter(|l| *l > 0)
        && job.content.len() as u64 > limit
    {
        let o = Outcome::local(
            "5.3.4",
            format!(
                "message size {} exceeds size limit {limit} of server {}",
                job.content.len(),
                peer.namaddr()
            ),
        );
        return TxResult {
            outcomes: all(o),
            after: After::Clean,
            dead_on_arrival: false,
        };
    }
    if job.smtputf8 && !s.has("SMTPUTF8") && needs_utf8(job) {
        let o = Outcome::local(
            "5.6.7",
            format!(
                "message requires SMTPUTF8, but no server was found that supports SMTPUTF8. The last attempted server was {}",
                peer.namaddr()
            ),
        );
        return TxResult {
            outcomes: all(o),
            after: After::Clean,
            dead_on_arrival: false,
        };
    }
    let pipelining = s.has("PIPELINING");
    let mail = mail_command(s, job).to_wire();
    let rcpts: Vec<Vec<u8>> = job
        .recipients
        .iter()
        .map(|r| rcpt_command(s, r).to_wire())
        .collect();
    let chat = &mut s.chat;
    let broken = |chat: &Chat, e: &ChatError, while_: &str, dead: bool| TxResult {
        outcomes: all(chat.failure(e, while_)),
        after: After::Broken,
        dead_on_arrival: dead,
    };

    // MAIL FROM (and with PIPELINING everything up to DATA).
    let mut batch = mail.clone();
    if pipelining {
        for r in &rcpts {
            batch.extend_from_slice(r);
        }
        batch.extend_from_slice(&Command::Data.to_wire());
    }
    if let Err(e) = chat.send(&batch, t.mail).await {
        return broken(chat, &e, "sending MAIL FROM", true);
    }
    let mail_reply = match chat.reply(t.mail).await {
        Ok(r) => r,
        Err(e) => return broken(chat, &e, "sending MAIL FROM", true),
    };
    if mail_reply.code == 421 {
        // The server is closing the session; on a cached session it had
        // given up on the session while it was idle.
        return TxResult {
            outcomes: all(Outcome::rejected(&peer, &mail_reply, "MAIL FROM command")),
            after: After::Broken,
            dead_on_arrival: s.uses > 0,
        };
    }
    let chat = &mut s.chat;
    let mail_failed = (!mail_reply.is_positive())
        .then(|| Outcome::rejected(&peer, &mail_reply, "MAIL FROM command"));

    // RCPT TO. From here on an I/O failure keeps the replies already
    // received (a refused MAIL FROM applies to everybody).
    let lost = |chat: &Chat, outcomes: Vec<Option<Outcome>>, e: &ChatError, while_: &str| {
        match &mail_failed {
            Some(o) => TxResult {
                outcomes: all(o.clone()),
                after: After::Broken,
                dead_on_arrival: false,
            },
            None => fail_rest(chat, outcomes, e, while_),
        }
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut accepted = 0usize;
    if pipelining || mail_failed.is_none() {
        for (i, cmd) in rcpts.iter().enumerate() {
            if !pipelining && let Err(e) = chat.send(cmd, t.rcpt).await {
                return lost(chat, outcomes, &e, "sending RCPT TO");
            }
            let r = match chat.reply(t.rcpt).await {
                Ok(r) => r,
                Err(e) => return lost(chat, outcomes, &e, "sending RCPT TO"),
            };
            if r.code == 421 {
                // The server closes the session: every recipient not yet
                // answered gets this reply.
                let o = mail_failed
                    .clone()
                    .unwrap_or_else(|| Outcome::rejected(&peer, &r, "RCPT TO command"));
                let outcomes = outcomes
                    .into_iter()
                    .map(|x| x.unwrap_or_else(|| o.clone()))
                    .collect();
                return TxResult {
                    outcomes,
                    after: After::Broken,
                    dead_on_arrival: false,
                };
            }
            if mail_failed.is_some() {
                continue;
            }
            if r.is_positive() {
                accepted += 1;
            } else {
                outcomes[i] = Some(Outcome::rejected(&peer, &r, "RCPT TO command"));
            }
        }
    }
    if let Some(o) = &mail_failed {
        outcomes = vec![Some(o.clone()); n];
    }
    let go = mail_failed.is_none() && accepted > 0;

    // DATA.
    let data_reply: Option<Reply> = if pipelining {
        match chat.reply(t.data_init).await {
            Ok(r) => Some(r),
            Err(e) => return lost(chat, outcomes, &e, "sending DATA command"),
        }
    } else if go {
        match chat.command(&Command::Data, t.data_init).await {
            Ok(r) => Some(r),
            Err(e) => return lost(chat, outcomes, &e, "sending DATA command"),
        }
    } else {
        None
    };
    let finish = |outcomes: Vec<Option<Outcome>>, after: After| {
        let outcomes = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::local("4.3.0", "mail transaction ended without a result")
                })
            })
            .collect();
        TxResult {
            outcomes,
            after,
            dead_on_arrival: false,
        }
    };
    let Some(data_reply) = data_reply else {
        return finish(outcomes, After::NeedsRset);
    };
    if data_reply.code != 354 {
        if go {
            let o = Outcome::rejected(&peer, &data_reply, "DATA command");
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(o.clone());
            }
        }
        let after = if data_reply.code == 421 {
            After::Broken
        } else {
            After::NeedsRset
        };
        return finish(outcomes, after);
    }
    if !go {
        // The server accepted DATA although no recipient was accepted:
        // send an empty message so the dialogue stays in step; its reply
        // decides nothing.
        if let Err(e) = chat.send(b".\r\n", t.data_xfer).await {
            let _ = e;
            return finish(outcomes, After::Broken);
        }
        let after = match chat.reply(t.data_done).await {
            Ok(_) => After::NeedsRset,
            Err(_) => After::Broken,
        };
        return finish(outcomes, after);
    }

    // The content.
    let mut breaker = LineBreaker {
        limit: settings.line_length_limit,
        column: 0,
        broke: false,
    };
    let mut stuffer = DotStuffer::new();
    let mut broken_lines = Vec::with_capacity(70_000);
    let mut wire = Vec::with_capacity(80_000);
    for chunk in job.content.chunks(64 * 1024) {
        broken_lines.clear();
        wire.clear();
        breaker.push(chunk, &mut broken_lines);
        stuffer.push(&broken_lines, &mut wire);
        if let Err(e) = chat.send(&wire, t.data_xfer).await {
            return fail_rest(chat, outcomes, &e, "sending message body");
        }
    }
    wire.clear();
    stuffer.finish(&mut wire);
    if breaker.broke {
        log::info(&format!(
            "{}: breaking line > {} bytes with <CR><LF>SPACE",
            job.queue_id, settings.line_length_limit
        ));
    }
    if let Err(e) = chat.send(&wire, t.data_xfer).await {
        return fail_rest(chat, outcomes, &e, "sending message body");
    }
    let end = match chat.reply(t.data_done).await {
        Ok(r) => r,
        Err(e) => {
            return fail_rest(
                chat,
                outcomes,
                &e,
                "sending end of data -- message may be sent more than once",
            );
        }
    };
    let (o, after) = if end.is_positive() {
        (Outcome::sent(&peer, &end), After::Clean)
    } else {
        // After 421 the server closes the session.
        let after = if end.code == 421 {
            After::Broken
        } else {
            After::NeedsRset
        };
        (Outcome::rejected(&peer, &end, "end of DATA command"), after)
    };
    for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
        *slot = Some(o.clone());
    }
    finish(outcomes, after)
}

/// The accepted recipients fail with the I/O error; rejected ones keep
/// their reply.
fn fail_rest(chat: &Chat, outcomes: Vec<Option<Outcome>>, e: &ChatError, while_: &str) -> TxResult {
    let f = chat.failure(e, while_);
    TxResult {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| f.clone()))
            .collect(),
        after: After::Broken,
        dead_on_arrival: false,
    }
}

/// Sends RSET; true when the server agreed and the session may be reused.
pub async fn rset(s: &mut Session, settings: &Settings) -> bool {
    matches!(
        s.chat.command(&Command::Rset, settings.timeouts.quit).await,
        Ok(r) if r.is_positive()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaks(limit: usize, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut b = LineBreaker {
            limit,
            column: 0,
            broke: false,
        };
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain([input.len()].iter()) {
            b.push(&input[prev..c], &mut out);
            prev = c;
        }
        out
    }

    #[test]
    fn long_lines_are_broken_with_crlf_space() {
        assert_eq!(
            breaks(4, b"abcd\r\nabcdefghij\r\n", &[]),
            b"abcd\r\nabcd\r\n efg\r\n hij\r\n"
        );
        assert_eq!(
            breaks(4, b"abcdefghij\r\n", &[3, 4, 5]),
            b"abcd\r\n efg\r\n hij\r\n"
        );
        assert_eq!(breaks(0, b"abcdefghij", &[]), b"abcdefghij");
        assert_eq!(breaks(4, b"abcd", &[]), b"abcd");
    }

    #[test]
    fn paths_are_quoted_for_the_wire() {
        assert_eq!(wire_path("").to_string(), "<>");
        assert_eq!(
            wire_path("bob@example.com").to_string(),
            "<bob@example.com>"
        );
        assert_eq!(
            wire_path("john doe@example.com").to_string(),
            "<\"john doe\"@example.com>"
        );
    }
}
