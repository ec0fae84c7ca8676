//! Scripted replies and faults: what a test wants the fake to do instead of
//! its normal reply at a given [`Phase`].
//!
//! For each phase the fake asks, in order: the one-shot queue
//! ([`FakeSmartHost::script`](super::FakeSmartHost::script)), the actions
//! bound to this session ([`FakeSmartHost::script_sessions`](super::FakeSmartHost::script_sessions)),
//! those of the session's mailbox ([`FakeSmartHost::on_mailbox`](super::FakeSmartHost::on_mailbox);
//! at AUTH, the mailbox trying), at RCPT the per-address action
//! ([`FakeSmartHost::on_rcpt`](super::FakeSmartHost::on_rcpt)), the
//! persistent per-phase action ([`FakeSmartHost::always`](super::FakeSmartHost::always)),
//! then the hook ([`FakeSmartHost::set_hook`](super::FakeSmartHost::set_hook)).
//! The first [`Action`] found wins; none means the normal behaviour.
//!
//! The fake's own checks come first where Exchange makes them first: the
//! per-mailbox concurrency limit at the end of data (`432 4.3.2`), AUTH
//! before TLS or with an unoffered mechanism (`504 5.7.4`), AUTH over old
//! TLS (`421 4.7.66`), and sequence errors (`503 5.5.2`) are not scripted.
//! Everything else—greeting, EHLO, STARTTLS, the AUTH verdict, MAIL, RCPT,
//! DATA, BDAT chunks, end of data, RSET, QUIT—can be replaced; a scripted
//! reply at the end of data also replaces the send-as and recipient budget
//! refusals.
//!
//! The exact texts of OFFICE365.md §5 are constants in
//! [`replies`](super::replies); [`Action::exo`] sends one with Exchange's
//! ` [host time id]` suffix.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::{Reply, ReplyParser};

use super::config::TlsVersion;

/// A point in the session where the fake replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The greeting.
    Connect,
    /// EHLO or HELO.
    Ehlo,
    /// STARTTLS (the `220` before the handshake).
    Starttls,
    /// AUTH, once the credentials are in (the `235`/`535`).
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO, once per address.
    Rcpt,
    /// The DATA command (the `354`).
    Data,
    /// A BDAT command (its reply for chunks that are not LAST).
    Bdat,
    /// The end of the message: final dot or BDAT LAST.
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

/// What the fake knows when it asks for an [`Action`].
#[derive(Debug, Clone)]
pub struct Event {
    /// Where in the session.
    pub phase: Phase,
    /// The session (1 for the first connection, 2 for the next, ...).
    pub session: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The EHLO/HELO name, once given.
    pub helo: Option<String>,
    /// The TLS version, once TLS is up.
    pub tls: Option<TlsVersion>,
    /// The authenticated user; at [`Phase::Auth`], the user trying.
    pub auth_user: Option<String>,
    /// MAIL FROM address (without brackets), once given.
    pub mail_from: Option<String>,
    /// At [`Phase::Rcpt`]: the recipient being added.
    pub rcpt: Option<String>,
    /// Recipients accepted so far in this transaction.
    pub rcpts: Vec<String>,
    /// At [`Phase::DataEnd`]: the message as received (dot-unstuffed).
    pub content: Option<Arc<Vec<u8>>>,
    /// At [`Phase::DataEnd`]: the first header `From:` address (lower case).
    pub p2_sender: Option<String>,
    /// Messages this session had accepted before this one.
    pub accepted_in_session: usize,
}

/// What to do instead of the normal reply. Build with [`Action::reply`],
/// [`Action::normal`], [`Action::disconnect`] or [`Action::drop_mid_data`],
/// then refine with [`Action::then_close`] and [`Action::after`].
///
/// A scripted reply with code below 400 counts as success: the session goes
/// on as after the normal reply (e.g. a scripted `235` authenticates, a
/// scripted `250` at [`Phase::DataEnd`] accepts the message); 4xx and 5xx
/// count as refusal.
#[derive(Debug, Clone, Default)]
pub struct Action {
    pub(crate) reply: Option<Reply>,
    pub(crate) delay: Duration,
    pub(crate) close: bool,
    pub(crate) silent: bool,
    pub(crate) drop_after: Option<u64>,
    pub(crate) suffix: bool,
}

impl Action {
    /// Sends `reply` instead of the normal one.
    pub fn reply(reply: Reply) -> Action {
        Action {
            reply: Some(reply),
            ..Action::default()
        }
    }

    /// Sends a reply given as wire text, e.g.
    /// `"550 5.7.60 SMTP; Client does not have permissions to send as this sender"`;
    /// `\n` separates the lines of a multi-line reply.
    ///
    /// # Panics
    /// When `text` is not a reply (a bug in the test).
    pub fn text(text: &str) -> Action {
        Action::reply(parse_reply(text))
    }

    /// Sends `text` with Exchange's error suffix ` [<HOST> <time> <id>]`
    /// appended when the reply goes out, e.g.
    /// `Action::exo(replies::SUBMISSION_QUOTA)`.
    ///
    /// # Panics
    /// When `text` is not a reply.
    pub fn exo(text: &str) -> Action {
        Action::text(text).with_suffix()
    }

    /// Appends Exchange's error suffix to the reply when it goes out.
    pub fn with_suffix(mut self) -> Action {
        self.suffix = true;
        self
    }

    /// The normal reply (useful with [`Action::after`] or
    /// [`Action::then_close`]).
    pub fn normal() -> Action {
        Action::default()
    }

    /// Closes the connection without replying.
    pub fn disconnect() -> Action {
        Action {
            silent: true,
            ..Action::default()
        }
    }

    /// At [`Phase::Data`] or [`Phase::Bdat`]: sends the normal reply, then
    /// closes the connection without a word once `bytes` bytes of message
    /// content have arrived.
    pub fn drop_mid_data(bytes: u64) -> Action {
        Action {
            drop_after: Some(bytes),
            ..Action::default()
        }
    }

    /// Closes the connection right after the reply (e.g. `421 ...`).
    pub fn then_close(mut self) -> Action {
        self.close = true;
        self
    }

    /// Waits `delay` before replying (a slow server).
    pub fn after(mut self, delay: Duration) -> Action {
        self.delay = delay;
        self
    }
}

/// Decides an [`Action`] per event; `None` leaves the decision to the fake.
pub type Hook = Arc<dyn Fn(&Event) -> Option<Action> + Send + Sync>;

/// Parses a reply written as text for [`Action::text`].
///
/// # Panics
/// When `text` is not a reply.
pub fn parse_reply(text: &str) -> Reply {
    let mut wire = String::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let (code, rest) = l.split_at(l.len().min(3));
        let rest = rest.strip_prefix([' ', '-']).unwrap_or(rest);
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        wire.push_str(&format!("{code}{sep}{rest}\r\n"));
    }
    let mut p = ReplyParser::new();
    p.feed(wire.as_bytes());
    match p.next_reply() {
        Ok(Some(r)) => r,
        other => panic!("not an SMTP reply: {text:?} ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reply_text() {
        let r =
            parse_reply("550 5.7.60 SMTP; Client does not have permissions to send as this sender");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.unwrap().to_string(), "5.7.60");
        assert_eq!(
            r.one_line(),
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        );
        let m = parse_reply("451 4.7.0 first\n451 4.7.0 second");
        assert_eq!(m.lines, vec!["first", "second"]);
    }
}
