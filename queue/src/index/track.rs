//! Message tracking: the compliance record of every accepted message and
//! every delivery attempt, kept in the index beside the queue tables.
//!
//! Unlike `messages` and `recipients`, which mirror the queue and lose a
//! message's rows when it leaves, these tables keep history until
//! `tracking_retention_time` has passed:
//!
//! - `track_messages`: one row per accepted message (queue ID, arrival,
//!   client, SASL user, submitting uid, sender, envelope recipients, size,
//!   Message-ID, optionally Subject), keyed by the queue ID as a number.
//! - `track_attempts`: one row per recipient per delivery attempt (time,
//!   recipient, relay, delay, DSN, status, the reply).
//!
//! qmgr writes both inside the batched transaction it commits at most
//! every 10 ms (no extra commit or fsync per message); `postern log`
//! reads them through a read-only connection while qmgr runs (WAL).
//! Pruning deletes in bounded batches so the queue manager never stalls.
//!
//! Each index costs the queue manager CPU time per delivery (a million
//! deliveries are also a million random insertions into each index on an
//! address), so the tables carry only what the searches need: time,
//! sender, Message-ID, recipient and queue ID. Nothing is updated once
//! written: what became of a message is in its attempts, and a message
//! without attempts that is still in the queue is shown as `queued` (the
//! queue mirror says which).
//!
//! [`query`] holds the searches and the summary of `postern log`, [`keys`]
//! their search keys; [`words`] decodes RFC 2047 encoded words in subjects.

mod keys;
mod query;
mod words;

pub use keys::Match;
pub use query::{Summary, SummaryRow, TrackQuery, TrackRow};
pub use words::decode_words;

use super::{Batch, IndexError};
use crate::file::Envelope;
use rusqlite::params;

/// The tracking tables and their indexes (created with the rest of the
/// schema; `IF NOT EXISTS` upgrades an older index in place). Queue IDs
/// are stored as numbers ([`qid_key`]): the message's row ID, so that a
/// message needs no separate index for it and attempts join it directly.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS track_messages (
    qid INTEGER PRIMARY KEY,
    arrival INTEGER NOT NULL,
    client_name TEXT,
    client_addr TEXT,
    sasl_user TEXT COLLATE NOCASE,
    uid INTEGER,
    origin TEXT,
    sender TEXT NOT NULL COLLATE NOCASE,
    recipients TEXT NOT NULL,
    nrcpt INTEGER NOT NULL,
    size INTEGER NOT NULL,
    message_id TEXT,
    subject TEXT
);
CREATE INDEX IF NOT EXISTS track_messages_arrival ON track_messages(arrival);
CREATE INDEX IF NOT EXISTS track_messages_sender ON track_messages(sender);
CREATE INDEX IF NOT EXISTS track_messages_message_id ON track_messages(message_id);
CREATE TABLE IF NOT EXISTS track_attempts (
    qid INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    rcpt TEXT NOT NULL COLLATE NOCASE,
    orig_rcpt TEXT,
    relay TEXT NOT NULL,
    delay REAL NOT NULL,
    dsn TEXT NOT NULL,
    status TEXT NOT NULL,
    reply TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS track_attempts_qid ON track_attempts(qid);
CREATE INDEX IF NOT EXISTS track_attempts_rcpt ON track_attempts(rcpt, ts);
CREATE INDEX IF NOT EXISTS track_attempts_ts ON track_attempts(ts);
";

/// The integer key of a queue ID: its value, with its length (10 to 12
/// hex digits) in bits 48 to 51, so that [`qid_text`] gives it back.
/// `None` for a string that is not a queue ID.
pub fn qid_key(id: &str) -> Option<i64> {
    if !crate::id::is_valid(id) {
        return None;
    }
    let v = u64::from_str_radix(id, 16).ok()?;
    Some(((id.len() as u64) << 48 | v) as i64)
}

/// The queue ID of a [`qid_key`].
pub fn qid_text(key: i64) -> String {
    let len = ((key >> 48) & 0xf) as usize;
    let v = key & 0xffff_ffff_ffff;
    format!("{v:0len$X}")
}

/// Longest Subject kept (characters).
pub const MAX_SUBJECT: usize = 500;
/// Longest reply kept (characters).
pub const MAX_REPLY: usize = 2000;

/// What became of a recipient in one attempt (`queued`: no attempt yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackStatus {
    /// Accepted, not attempted yet (only in query results).
    Queued,
    /// Accepted by the next hop.
    Sent,
    /// Temporary failure; retried later.
    Deferred,
    /// Permanent failure; returned to the sender.
    Bounced,
    /// Retried until `maximal_queue_lifetime` and returned to the sender.
    Expired,
}

impl TrackStatus {
    /// Every status, in the order `postern log --status` lists them.
    pub const ALL: [TrackStatus; 5] = [
        TrackStatus::Queued,
        TrackStatus::Sent,
        TrackStatus::Deferred,
        TrackStatus::Bounced,
        TrackStatus::Expired,
    ];

    /// The word stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackStatus::Queued => "queued",
            TrackStatus::Sent => "sent",
            TrackStatus::Deferred => "deferred",
            TrackStatus::Bounced => "bounced",
            TrackStatus::Expired => "expired",
        }
    }

    /// Parses a stored or typed word (case-insensitive).
    pub fn parse(s: &str) -> Option<TrackStatus> {
        TrackStatus::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for TrackStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepted message as tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedMessage {
    /// Queue ID.
    pub queue_id: String,
    /// Arrival, microseconds since the epoch.
    pub arrival: i64,
    /// SMTP client host name (smtpd only).
    pub client_name: Option<String>,
    /// SMTP client address (smtpd only).
    pub client_addr: Option<String>,
    /// SASL user the SMTP client authenticated as.
    pub sasl_user: Option<String>,
    /// Submitting user (sendmail, the drop folder).
    pub uid: Option<i64>,
    /// How it came in: `smtpd`, `pickup`, `bounce`.
    pub origin: Option<String>,
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// Content size in bytes.
    pub size: i64,
    /// Message-ID header, with its angle brackets.
    pub message_id: Option<String>,
    /// Subject header, decoded (only with `tracking_subject = yes`).
    pub subject: Option<String>,
}

impl TrackedMessage {
    /// The record of a queued message from its envelope and content.
    /// `with_subject` follows `tracking_subject`.
    pub fn from_queue_file(
        queue_id: &str,
        env: &Envelope,
        content: &[u8],
        with_subject: bool,
    ) -> TrackedMessage {
        let (message_id, subject) = header_fields(content);
        TrackedMessage {
            queue_id: queue_id.to_string(),
            arrival: crate::time::micros(env.arrival),
            client_name: env.attr("client_name").map(str::to_string),
            client_addr: env.attr("client_addr").map(str::to_string),
            sasl_user: env.attr("sasl_username").map(str::to_string),
            uid: env.attr("uid").and_then(|u| u.parse().ok()),
            origin: env.attr("origin").map(str::to_string),
            sender: env.sender.clone(),
            recipients: env.recipients.iter().map(|r| r.addr.clone()).collect(),
            size: content.len() as i64,
            message_id,
            subject: if with_subject { subject } else { None },
        }
    }
}

/// One recipient's outcome in one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedAttempt {
    /// Queue ID.
    pub queue_id: String,
    /// When the outcome was known, microseconds since the epoch.
    pub ts: i64,
    /// Recipient.
    pub rcpt: String,
    /// Original recipient (before alias rewriting), if different.
    pub orig_rcpt: Option<String>,
    /// The server that answered (`host[addr]:port`), or `none`.
    pub relay: String,
    /// Seconds from arrival to the outcome (Postfix's `delay=`).
    pub delay: f64,
    /// Enhanced status code.
    pub dsn: String,
    /// Sent, deferred, bounced or expired (never queued).
    pub status: TrackStatus,
    /// The reply or reason, as logged.
    pub reply: String,
}

/// A change to the tracking tables, applied inside a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum TrackOp {
    /// An accepted message (ignored when its queue ID is recorded already).
    Message(Box<TrackedMessage>),
    /// A delivery attempt.
    Attempt(Box<TrackedAttempt>),
    /// Forget up to `limit` messages and up to `limit` attempts older than
    /// `before` (microseconds).
    Prune {
        /// Cut-off time.
        before: i64,
        /// Largest number of rows deleted from each table.
        limit: i64,
    },
}

impl Batch<'_> {
    /// Applies one tracking change.
    ///
    /// # Errors
    /// Statement errors.
    pub fn track(&self, op: &TrackOp) -> Result<(), IndexError> {
        match op {
            TrackOp::Message(m) => self.track_message(m),
            TrackOp::Attempt(a) => self.track_attempt(a),
            TrackOp::Prune { before, limit } => self.track_prune(*before, *limit).map(|_| ()),
        }
    }

    /// Records an accepted message once (a second record of the same queue
    /// ID, e.g. on a retry or after a restart, is ignored).
    ///
    /// # Errors
    /// Statement errors.
    pub fn track_message(&self, m: &TrackedMessage) -> Result<(), IndexError> {
        // Queue IDs come from the queue's own file names; anything else is
        // not a message of this queue.
        let Some(qid) = qid_key(&m.queue_id) else {
            return Ok(());
        };
        self.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO track_messages (qid, arrival, client_name, client_addr,
                    sasl_user, uid, origin, sender, recipients, nrcpt, size, message_id, subject)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    qid,
                    m.arrival,
                    m.client_name,
                    m.client_addr,
                    m.sasl_user,
                    m.uid,
                    m.origin,
                    m.sender,
                    m.recipients.join("\n"),
                    m.recipients.len() as i64,
                    m.size,
                    m.message_id,
                    m.subject.as_deref().map(|s| clean(s, MAX_SUBJECT)),
                ])
            })
            .map_err(self.err("track message"))?;
        Ok(())
    }

    /// Records one recipient's attempt.
    ///
    /// # Errors
    /// Statement errors.
    pub fn track_attempt(&self, a: &TrackedAttempt) -> Result<(), IndexError> {
        let Some(qid) = qid_key(&a.queue_id) else {
            return Ok(());
        };
        self.tx
            .prepare_cached(
                "INSERT INTO track_attempts (qid, ts, rcpt, orig_rcpt, relay, delay, dsn, status, reply)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    qid,
                    a.ts,
                    a.rcpt,
                    a.orig_rcpt,
                    a.relay,
                    a.delay,
                    a.dsn,
                    a.status.as_str(),
                    clean(&a.reply, MAX_REPLY),
                ])
            })
            .map_err(self.err("track attempt"))?;
        Ok(())
    }

    /// Deletes up to `limit` messages and up to `limit` attempts older than
    /// `before`, oldest first; returns how many rows went.
    ///
    /// # Errors
    /// Statement errors.
    pub fn track_prune(&self, before: i64, limit: i64) -> Result<usize, IndexError> {
        let a = self
            .tx
            .prepare_cached(
                "DELETE FROM track_attempts WHERE rowid IN
                   (SELECT rowid FROM track_attempts WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
            )
            .and_then(|mut st| st.execute(params![before, limit]))
            .map_err(self.err("prune tracked attempts"))?;
        let m = self
            .tx
            .prepare_cached(
                "DELETE FROM track_messages WHERE qid IN
                   (SELECT qid FROM track_messages WHERE arrival < ?1 ORDER BY arrival LIMIT ?2)",
            )
            .and_then(|mut st| st.execute(params![before, limit]))
            .map_err(self.err("prune tracked messages"))?;
        Ok(a + m)
    }
}

/// Message-ID and decoded Subject of a message's header block.
pub fn header_fields(content: &[u8]) -> (Option<String>, Option<String>) {
    let end = proto::header::header_end(content).unwrap_or(content.len());
    let mut mid = None;
    let mut subject = None;
    for h in proto::header::parse_headers(&content[..end]) {
        if mid.is_none() && h.is("message-id") {
            mid = Some(h.value());
        } else if subject.is_none() && h.is("subject") {
            subject = Some(decode_words(&h.value()));
        }
    }
    (mid, subject)
}

/// Control characters become spaces (a subject or reply must not move the
/// cursor of the terminal that shows it); at most `max` characters stay.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::Recipient;

    #[test]
    fn queue_ids_as_numbers_round_trip() {
        for id in [
            "8F3A21C09B00",
            "0123456789AB",
            "00000000000A",
            "ABCDEF0123",
            "FFFFFFFFFFF",
        ] {
            assert_eq!(qid_text(qid_key(id).unwrap()), id);
        }
        assert!(qid_key("8F3A21C09B00").unwrap() < qid_key("8F3A21C09B01").unwrap());
        for bad in ["", "8f3a21c09b00", "XYZ", "0123456789ABC"] {
            assert_eq!(qid_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_record_comes_from_the_queue_file() {
        let env = Envelope {
            arrival: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000),
            sender: "scan@contoso.com".into(),
            recipients: vec![Recipient {
                addr: "bob@contoso.com".into(),
                ..Default::default()
            }],
            attrs: vec![
                ("origin".into(), "smtpd".into()),
                ("client_name".into(), "scanner.lan".into()),
                ("client_addr".into(), "10.0.0.5".into()),
                ("sasl_username".into(), "scan@contoso.com".into()),
            ],
        };
        let content =
            b"Message-Id: <1@x>\r\nSubject: =?utf-8?q?Caf=C3=A9?= =?utf-8?B?IGJvbg==?= ok\r\n\r\nbody\r\n";
        let m = TrackedMessage::from_queue_file("ABCDEF012345", &env, content, true);
        assert_eq!(m.message_id.as_deref(), Some("<1@x>"));
        assert_eq!(m.subject.as_deref(), Some("Café bon ok"));
        assert_eq!(m.client_addr.as_deref(), Some("10.0.0.5"));
        assert_eq!(m.sasl_user.as_deref(), Some("scan@contoso.com"));
        assert_eq!(m.size, content.len() as i64);
        assert_eq!(m.arrival, 1_795_000_000_000_000);
        let m = TrackedMessage::from_queue_file("ABCDEF012345", &env, content, false);
        assert_eq!(m.subject, None, "tracking_subject = no");
    }
}
